//! Bearer-token authentication: with `auth.tokens` configured, every call
//! to Publisher, Subscriber and Admin must carry `authorization: Bearer
//! <token>` matching one of the configured SHA-256 hashes; the principal it
//! names goes into the request's extensions (for authorization). Health
//! checks stay open. Without tokens, everything is allowed.

use crate::config::AuthConfig;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Status};

/// Who made a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub String);

/// The token check, as a tonic interceptor.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    /// SHA-256 of a token → its principal; empty: authentication is off.
    principals: Arc<HashMap<[u8; 32], String>>,
}

/// The hex SHA-256 of a token, as `auth.tokens[].sha256` wants it.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Authenticator {
    /// From the config; errors name the entry whose hash is malformed.
    pub fn new(config: &AuthConfig) -> Result<Authenticator, String> {
        let mut principals = HashMap::new();
        for (n, entry) in config.tokens.iter().enumerate() {
            let hash = decode_hash(&entry.sha256).ok_or_else(|| {
                format!(
                    "auth.tokens[{n}] ({}): sha256 must be 64 hex digits; make one with `switchyard token-hash`",
                    entry.principal
                )
            })?;
            principals.insert(hash, entry.principal.clone());
        }
        Ok(Authenticator {
            principals: Arc::new(principals),
        })
    }

    /// Whether calls must authenticate.
    pub fn enabled(&self) -> bool {
        !self.principals.is_empty()
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

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if !self.enabled() {
            return Ok(request);
        }
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "this broker requires a bearer token: send `authorization: Bearer <token>` (SDK: Client::with_token; CLI: SWITCHYARD_TOKEN)",
                )
            })?;
        let token = header.strip_prefix("Bearer ").ok_or_else(|| {
            Status::unauthenticated("the authorization header must be `Bearer <token>`")
        })?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let principal = self
            .principals
            .get(&hash)
            .ok_or_else(|| Status::unauthenticated("unknown or revoked token"))?
            .clone();
        request.extensions_mut().insert(Principal(principal));
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;
    use tonic::service::Interceptor;

    fn authenticator() -> Authenticator {
        Authenticator::new(&AuthConfig {
            tokens: vec![TokenConfig {
                principal: "orders".into(),
                sha256: token_hash("s3cret"),
                quota: None,
            }],
        })
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
        assert!(
            Authenticator::default().call(Request::new(())).is_ok(),
            "no tokens configured: open"
        );
        let bad = Authenticator::new(&AuthConfig {
            tokens: vec![TokenConfig {
                principal: "x".into(),
                sha256: "abc".into(),
                quota: None,
            }],
        })
        .expect_err("short hash");
        assert!(bad.contains("auth.tokens[0] (x)"), "{bad}");
    }
}
