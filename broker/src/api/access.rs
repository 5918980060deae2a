//! Authorization: per-principal grants (`auth.acl`) decide each call, and
//! denied calls and administrative changes go to the audit log.
//!
//! A grant is `ACTION:RESOURCE`, `*` matching any run of characters in
//! the resource (and in the entry's principal):
//!
//! | action      | resource            | calls                                                      |
//! |-------------|---------------------|------------------------------------------------------------|
//! | `publish`   | bus                 | Publish, CancelScheduled                                   |
//! | `subscribe` | subscription        | Subscribe, DescribeSubscription, ListDeadLetters (with event data) |
//! | `redrive`   | subscription        | RedriveDeadLetters, SeekSubscription                       |
//! | `manage`    | `topic/NAME`, `subscription/NAME`, `schema/FILE` | Create/Delete Topic and Subscription, RegisterSchema |
//! | `view`      | `topics`, `subscriptions`, `rules`, `schemas`, `scheduled`, `flows` | the List calls, GetFlow, DryRunRules (`rules`), DescribeSubscription and ListDeadLetters without event data (`subscriptions`) |
//! | `read`      | `topic/NAME`, `bus/NAME` | event data: a new subscription's topic, dry-run samples, dead letters |
//! | `write`     | `topic/NAME`        | a subscription's dead letters into a topic not its own (`SUB.dlq`) |
//!
//! A subscription is a read and write path, so creating one needs more
//! than `manage:subscription/NAME`: `read:topic/T` for its topic, and for a
//! dead-letter topic other than its own `NAME.dlq`, `write:topic/D` (and
//! `manage:topic/D` when that topic does not exist yet). Event data is
//! readable with `read:topic/T` for a topic that holds it or
//! `read:bus/B` for the bus it was published on; without, views show the
//! attributes only.
//!
//! Rules change only through their files (reloads are audited as
//! `ReloadRules`), so no call manages them. Without `auth.acl` entries
//! every authenticated principal may do everything.

use super::auth::Principal;
use crate::audit::{AuditEntry, AuditLog, Outcome};
use crate::config::AclEntry;
use std::sync::Arc;
use tonic::{Request, Status};

/// What a call does, as ACLs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Publish on a bus (and cancel its scheduled events).
    Publish,
    /// Receive and inspect a subscription's deliveries.
    Subscribe,
    /// Move a subscription's position: redrive dead letters, seek.
    Redrive,
    /// Create and delete topics, subscriptions and schemas.
    Manage,
    /// List topics, subscriptions, rules, schemas, scheduled events; read
    /// flow histories; describe subscriptions (without event data).
    View,
    /// Read event data: of a topic (`topic/NAME`), or of everything
    /// published on a bus (`bus/NAME`).
    Read,
    /// Append to a topic directly (`topic/NAME`): a subscription's dead
    /// letters into a topic that is not its own.
    Write,
}

impl Action {
    /// The name used in grants.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Redrive => "redrive",
            Action::Manage => "manage",
            Action::View => "view",
            Action::Read => "read",
            Action::Write => "write",
        }
    }

    fn parse(text: &str) -> Option<Action> {
        [
            Action::Publish,
            Action::Subscribe,
            Action::Redrive,
            Action::Manage,
            Action::View,
            Action::Read,
            Action::Write,
        ]
        .into_iter()
        .find(|a| a.as_str() == text)
    }
}

#[derive(Debug, Clone)]
struct Grant {
    principal: String,
    action: Action,
    resource: String,
}

/// The compiled `auth.acl`.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    grants: Vec<Grant>,
    enforced: bool,
}

impl Acl {
    /// Compiles the entries; errors name the entry and the bad grant.
    pub fn new(entries: &[AclEntry]) -> Result<Acl, String> {
        let mut grants = Vec::new();
        for (n, entry) in entries.iter().enumerate() {
            if entry.principal.is_empty() {
                return Err(format!(
                    "auth.acl[{n}].principal: name a principal, or * for all"
                ));
            }
            for (m, text) in entry.allow.iter().enumerate() {
                let (action, resource) = text
                    .split_once(':')
                    .and_then(|(action, resource)| Some((Action::parse(action)?, resource)))
                    .filter(|(_, resource)| !resource.is_empty())
                    .ok_or_else(|| {
                        format!(
                            "auth.acl[{n}].allow[{m}]: \"{text}\" must be ACTION:RESOURCE with ACTION one of publish, subscribe, redrive, manage, view, read, write (e.g. \"publish:orders\", \"manage:topic/*\")"
                        )
                    })?;
                grants.push(Grant {
                    principal: entry.principal.clone(),
                    action,
                    resource: resource.to_string(),
                });
            }
        }
        Ok(Acl {
            grants,
            enforced: !entries.is_empty(),
        })
    }

    /// Whether entries are configured (otherwise everything is allowed).
    pub fn enforced(&self) -> bool {
        self.enforced
    }

    /// Whether `principal` may do `action` on `resource`.
    pub fn allows(&self, principal: &str, action: Action, resource: &str) -> bool {
        !self.enforced
            || self.grants.iter().any(|g| {
                g.action == action
                    && glob_matches(&g.principal, principal)
                    && glob_matches(&g.resource, resource)
            })
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of
/// characters (greedy with backtracking to the last star: linear in
/// practice, never exponential).
fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star_p, star_t)) = star {
            pi = star_p + 1;
            ti = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Who made `request` (set by the authenticator).
pub fn caller<T>(request: &Request<T>) -> Principal {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::anonymous)
}

/// The ACL and the audit log, shared by the services.
#[derive(Debug)]
pub struct Access {
    acl: Acl,
    audit: Arc<AuditLog>,
}

impl Access {
    /// Decides with `acl`, records in `audit`.
    pub fn new(acl: Acl, audit: Arc<AuditLog>) -> Self {
        Self { acl, audit }
    }

    /// The caller of `request`, if allowed to do `action` on `resource`;
    /// otherwise PERMISSION_DENIED naming all three, and an audit record.
    pub fn check<T>(
        &self,
        request: &Request<T>,
        operation: &str,
        action: Action,
        resource: &str,
    ) -> Result<Principal, Status> {
        let principal = caller(request);
        self.authorize(&principal, operation, action, resource)?;
        Ok(principal)
    }

    /// Like [`Access::check`], for a caller already known.
    pub fn authorize(
        &self,
        principal: &Principal,
        operation: &str,
        action: Action,
        resource: &str,
    ) -> Result<(), Status> {
        if self.acl.allows(&principal.0, action, resource) {
            return Ok(());
        }
        let verb = action.as_str();
        let message = format!(
            "principal \"{}\" may not {verb} {resource}: no auth.acl entry grants it \"{verb}:{resource}\"",
            principal.0
        );
        Err(self.deny(principal, operation, (action, resource), message))
    }

    /// Audits a denial of `grant` (the one a call needed, or the first of
    /// those that would do) and returns it as PERMISSION_DENIED.
    fn deny(
        &self,
        principal: &Principal,
        operation: &str,
        (action, resource): (Action, &str),
        message: String,
    ) -> Status {
        self.audit.record(&AuditEntry {
            remote: None,
            principal: &principal.0,
            operation,
            action: action.as_str(),
            resource,
            outcome: Outcome::Denied,
            detail: &message,
        });
        Status::permission_denied(message)
    }

    /// Whether `principal` may do `action` on `resource`, without an
    /// audit record: for what a call shows, not whether it runs.
    pub fn allows(&self, principal: &Principal, action: Action, resource: &str) -> bool {
        self.acl.allows(&principal.0, action, resource)
    }

    /// The caller of `request`, if any of `grants` allows it; otherwise
    /// PERMISSION_DENIED naming each grant that would, and an audit record.
    pub fn check_any<T>(
        &self,
        request: &Request<T>,
        operation: &str,
        grants: &[(Action, &str)],
    ) -> Result<Principal, Status> {
        let principal = caller(request);
        if grants
            .iter()
            .any(|&(action, resource)| self.acl.allows(&principal.0, action, resource))
        {
            return Ok(principal);
        }
        let wanted: Vec<String> = grants
            .iter()
            .map(|(action, resource)| format!("\"{}:{resource}\"", action.as_str()))
            .collect();
        let message = format!(
            "principal \"{}\" may not {operation}: no auth.acl entry grants it {}",
            principal.0,
            wanted.join(" or ")
        );
        let first = grants.first().copied().unwrap_or((Action::View, ""));
        Err(self.deny(&principal, operation, first, message))
    }

    /// Records an allowed change and how it ended: done (with what
    /// changed, when it says more than the operation) or failed. `action`
    /// names what was done: the grant checked (`manage`), or a finer verb
    /// (`seek`, checked as `redrive`).
    pub fn record(
        &self,
        principal: &Principal,
        operation: &str,
        action: &str,
        resource: &str,
        outcome: Result<&str, &Status>,
    ) {
        let (outcome, detail) = match outcome {
            Ok(what) => (Outcome::Done, what),
            Err(status) => (Outcome::Failed, status.message()),
        };
        self.audit.record(&AuditEntry {
            principal: &principal.0,
            remote: None,
            operation,
            action,
            resource,
            outcome,
            detail,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn acl() -> Acl {
        Acl::new(&[
            AclEntry {
                principal: "orders".into(),
                allow: vec![
                    "publish:orders".into(),
                    "subscribe:orders-*".into(),
                    "redrive:orders-payments".into(),
                ],
            },
            AclEntry {
                principal: "ops-*".into(),
                allow: vec!["manage:topic/*".into(), "view:*".into()],
            },
            AclEntry {
                principal: "*".into(),
                allow: vec!["view:rules".into()],
            },
            AclEntry {
                principal: "reader".into(),
                allow: vec!["read:topic/orders".into(), "write:topic/*.dlq".into()],
            },
        ])
        .expect("valid")
    }

    #[test]
    fn each_action_is_allowed_by_its_grant_and_denied_without_one() {
        let acl = acl();
        let cases = [
            ("orders", Action::Publish, "orders", true),
            ("orders", Action::Publish, "payments", false),
            ("orders", Action::Subscribe, "orders-shipping", true),
            ("orders", Action::Subscribe, "payments-audit", false),
            ("orders", Action::Redrive, "orders-payments", true),
            ("orders", Action::Redrive, "orders-shipping", false),
            ("orders", Action::Manage, "topic/orders", false),
            ("ops-alice", Action::Manage, "topic/orders", true),
            ("ops-alice", Action::Manage, "subscription/x", false),
            ("ops-alice", Action::View, "subscriptions", true),
            ("ops-alice", Action::Publish, "orders", false),
            ("orders", Action::View, "rules", true),
            ("orders", Action::View, "topics", false),
            ("stranger", Action::View, "rules", true),
            ("reader", Action::Read, "topic/orders", true),
            ("reader", Action::Read, "topic/payments", false),
            ("reader", Action::Read, "bus/default", false),
            ("reader", Action::Write, "topic/orders.dlq", true),
            ("reader", Action::Write, "topic/orders", false),
        ];
        for (principal, action, resource, allowed) in cases {
            assert_eq!(
                acl.allows(principal, action, resource),
                allowed,
                "{principal} {action:?} {resource}"
            );
        }
        assert!(
            Acl::new(&[])
                .expect("empty")
                .allows("anyone", Action::Manage, "topic/x"),
            "no entries: not enforced"
        );
    }

    #[test]
    fn malformed_grants_name_their_entry() {
        for bad in ["publish", "delete:topic/x", "publish:", ":x"] {
            let error = Acl::new(&[AclEntry {
                principal: "p".into(),
                allow: vec!["view:*".into(), bad.into()],
            }])
            .expect_err(bad);
            assert!(error.contains("auth.acl[0].allow[1]"), "{error}");
        }
    }

    #[test]
    fn denials_name_principal_action_and_resource_and_are_audited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let audit = Arc::new(AuditLog::open(&path, crate::audit::ROTATE_BYTES).expect("open"));
        let access = Access::new(acl(), audit);
        let mut request = Request::new(());
        request.extensions_mut().insert(Principal("orders".into()));
        let status = access
            .check(&request, "Publish", Action::Publish, "payments")
            .expect_err("denied");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        for part in ["\"orders\"", "publish", "payments", "publish:payments"] {
            assert!(status.message().contains(part), "{}", status.message());
        }
        assert!(
            access
                .check(&request, "Publish", Action::Publish, "orders")
                .is_ok()
        );
        let text = std::fs::read_to_string(&path).expect("audit");
        assert_eq!(text.lines().count(), 1, "only the denial: {text}");
        assert!(text.contains("\"outcome\":\"denied\""), "{text}");
    }

    fn naive(pattern: &[u8], text: &[u8]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some((b'*', rest)) => (0..=text.len()).any(|i| naive(rest, &text[i..])),
            Some((c, rest)) => text.first() == Some(c) && naive(rest, &text[1..]),
        }
    }

    proptest! {
        #[test]
        fn glob_agrees_with_the_recursive_definition(
            pattern in "[ab*]{0,8}",
            text in "[ab]{0,10}",
        ) {
            prop_assert_eq!(
                glob_matches(&pattern, &text),
                naive(pattern.as_bytes(), text.as_bytes())
            );
        }
    }
}
