//! Authentication: with `auth.tokens` configured, calls to Publisher,
//! Subscriber and Admin must carry `authorization: Bearer <token>` matching
//! one of the configured SHA-256 hashes (and not past its expiry); with
//! mutual TLS, a call without a token is made by the subject common name of
//! its verified client certificate. The principal goes into the request's
//! extensions for authorization and quotas. Health checks stay open.
//! Without tokens or mutual TLS, everything is allowed, as `anonymous`.

use crate::audit::AuthFailures;
use crate::config::{AuthConfig, format_rfc3339_ms, parse_rfc3339_ms};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Status};

/// Who made a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub String);

impl Principal {
    /// The caller when authentication is off.
    pub fn anonymous() -> Principal {
        Principal("anonymous".into())
    }
}

/// A configured token: who presents it and until when.
#[derive(Debug)]
struct Token {
    principal: String,
    expires_ms: Option<i64>,
}

/// The token and certificate check, as a tonic interceptor.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    /// SHA-256 of a token → whose it is.
    tokens: Arc<HashMap<[u8; 32], Token>>,
    /// Verified client certificates name principals (mutual TLS).
    certificates: bool,
    /// Where failed authentications are counted and audited.
    failures: Option<Arc<AuthFailures>>,
}

/// Why a call could not be authenticated.
#[derive(Debug)]
struct Refusal {
    /// What the caller gets.
    status: Status,
    /// A short reason for the metric and the audit record.
    reason: &'static str,
    /// The principal the credentials named, when they named one (an
    /// expired token's).
    principal: Option<String>,
}

impl Refusal {
    fn new(reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status: Status::unauthenticated(message),
            reason,
            principal: None,
        }
    }
}

/// The hex SHA-256 of a token, as `auth.tokens[].sha256` wants it.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Authenticator {
    /// From the config; `mutual_tls` says client certificates are verified
    /// (their subject CN is then a principal). Errors name the bad entry.
    pub fn new(config: &AuthConfig, mutual_tls: bool) -> Result<Authenticator, String> {
        let mut tokens = HashMap::new();
        for (n, entry) in config.tokens.iter().enumerate() {
            let hash = decode_hash(&entry.sha256).ok_or_else(|| {
                format!(
                    "auth.tokens[{n}] ({}): sha256 must be 64 hex digits; make one with `switchyard token-hash`",
                    entry.principal
                )
            })?;
            let expires_ms = match &entry.expires {
                Some(text) => Some(parse_rfc3339_ms(text).ok_or_else(|| {
                    format!(
                        "auth.tokens[{n}] ({}): expires must be an RFC 3339 time such as 2027-01-31T00:00:00Z",
                        entry.principal
                    )
                })?),
                None => None,
            };
            tokens.insert(
                hash,
                Token {
                    principal: entry.principal.clone(),
                    expires_ms,
                },
            );
        }
        Ok(Authenticator {
            tokens: Arc::new(tokens),
            certificates: mutual_tls,
            failures: None,
        })
    }

    /// Counts and audits each failed authentication in `failures`.
    pub fn with_failures(mut self, failures: Arc<AuthFailures>) -> Authenticator {
        self.failures = Some(failures);
        self
    }

    /// Whether calls must authenticate.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || self.certificates
    }

    fn token_principal(&self, header: &str, now_ms: i64) -> Result<Principal, Refusal> {
        let token = header.strip_prefix("Bearer ").ok_or_else(|| {
            Refusal::new(
                "malformed authorization",
                "the authorization header must be `Bearer <token>`",
            )
        })?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let entry = self
            .tokens
            .get(&hash)
            .ok_or_else(|| Refusal::new("unknown token", "unknown or revoked token"))?;
        if let Some(expires) = entry.expires_ms.filter(|&at| at <= now_ms) {
            return Err(Refusal {
                principal: Some(entry.principal.clone()),
                ..Refusal::new(
                    "expired token",
                    format!(
                        "the token of principal \"{}\" expired at {}; ask for a new one",
                        entry.principal,
                        format_rfc3339_ms(expires)
                    ),
                )
            });
        }
        Ok(Principal(entry.principal.clone()))
    }

    /// Who made `request`, from its token or its client certificate.
    fn authenticate(&self, request: &Request<()>) -> Result<Principal, Refusal> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap_or_default().to_string());
        match header {
            Some(header) => self.token_principal(&header, crate::model::now_unix_ms()),
            None => self
                .certificates
                .then(|| request.peer_certs())
                .flatten()
                .and_then(|certs| certs.first().and_then(|c| certificate_common_name(c)))
                .map(Principal)
                .ok_or_else(|| {
                    Refusal::new(
                        "no credentials",
                        if self.certificates {
                            "this broker requires a bearer token or a client certificate with a subject common name"
                        } else {
                            "this broker requires a bearer token: send `authorization: Bearer <token>` (SDK: Client::with_token; CLI: SWITCHYARD_TOKEN)"
                        },
                    )
                }),
        }
    }
}

fn decode_hash(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(hash)
}

/// The subject common name of a DER certificate.
pub fn certificate_common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(name.to_string())
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if !self.enabled() {
            request.extensions_mut().insert(Principal::anonymous());
            return Ok(request);
        }
        match self.authenticate(&request) {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                Ok(request)
            }
            Err(refusal) => {
                if let Some(failures) = &self.failures {
                    failures.record(
                        request.remote_addr(),
                        refusal.principal.as_deref(),
                        refusal.reason,
                        refusal.status.message(),
                    );
                }
                Err(refusal.status)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;
    use tonic::service::Interceptor;

    fn authenticator() -> Authenticator {
        Authenticator::new(
            &AuthConfig {
                tokens: vec![TokenConfig {
                    principal: "orders".into(),
                    sha256: token_hash("s3cret"),
                    quota: None,
                    expires: None,
                }],
                ..AuthConfig::default()
            },
            false,
        )
        .expect("config")
    }

    fn call(header: Option<&str>) -> Result<Request<()>, Status> {
        let mut request = Request::new(());
        if let Some(value) = header {
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("ascii"));
        }
        authenticator().call(request)
    }

    #[test]
    fn tokens_map_to_principals_and_anything_else_is_unauthenticated() {
        let allowed = call(Some("Bearer s3cret")).expect("known token");
        assert_eq!(
            allowed.extensions().get::<Principal>(),
            Some(&Principal("orders".into()))
        );
        for header in [
            None,
            Some("Bearer wrong"),
            Some("Basic s3cret"),
            Some("s3cret"),
        ] {
            let status = call(header).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{header:?}");
        }
        let open = Authenticator::default()
            .call(Request::new(()))
            .expect("no tokens configured: open");
        assert_eq!(
            open.extensions().get::<Principal>(),
            Some(&Principal::anonymous())
        );
        let bad = Authenticator::new(
            &AuthConfig {
                tokens: vec![TokenConfig {
                    principal: "x".into(),
                    sha256: "abc".into(),
                    quota: None,
                    expires: None,
                }],
                ..AuthConfig::default()
            },
            false,
        )
        .expect_err("short hash");
        assert!(bad.contains("auth.tokens[0] (x)"), "{bad}");
    }

    #[test]
    fn expired_tokens_are_refused_naming_the_principal_and_the_time() {
        let config = |expires: &str| AuthConfig {
            tokens: vec![TokenConfig {
                principal: "billing".into(),
                sha256: token_hash("t"),
                quota: None,
                expires: Some(expires.into()),
            }],
            ..AuthConfig::default()
        };
        let auth = Authenticator::new(&config("2026-01-01T00:00:00Z"), false).expect("config");
        let at = parse_rfc3339_ms("2026-01-01T00:00:00Z").expect("time");
        assert_eq!(
            auth.token_principal("Bearer t", at - 1)
                .expect("still valid"),
            Principal("billing".into())
        );
        let expired = auth.token_principal("Bearer t", at).expect_err("expired");
        assert_eq!(expired.reason, "expired token");
        assert_eq!(expired.principal.as_deref(), Some("billing"));
        let expired = expired.status;
        assert_eq!(expired.code(), tonic::Code::Unauthenticated);
        assert!(
            expired
                .message()
                .contains("\"billing\" expired at 2026-01-01T00:00:00"),
            "{}",
            expired.message()
        );
        let bad = Authenticator::new(&config("next tuesday"), false).expect_err("bad time");
        assert!(bad.contains("RFC 3339"), "{bad}");
    }

    #[test]
    fn mutual_tls_without_a_token_and_without_a_certificate_is_unauthenticated() {
        let mut auth = Authenticator::new(&AuthConfig::default(), true).expect("config");
        assert!(auth.enabled());
        let status = auth.call(Request::new(())).expect_err("no certificate");
        assert!(status.message().contains("client certificate"), "{status}");
    }
}
