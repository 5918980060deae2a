//! Names of topics, subscriptions and buses: validated once, then trusted.

use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name {name:?}: {reason}")]
pub struct NameError {
    /// What the name was for ("topic", "subscription", "bus").
    pub kind: &'static str,
    /// The name as given.
    pub name: String,
    /// What is wrong and how to fix it.
    pub reason: &'static str,
}

/// Longest name accepted (Kafka's topic-name limit, so names map 1:1 later).
pub(crate) const MAX_NAME_LEN: usize = 249;

/// Checks a topic, subscription or bus name: 1 to 249 characters of
/// `A-Z a-z 0-9 . _ -`, and not `.` or `..` (names become directory names).
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    let error = |reason| NameError {
        kind,
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(error("it is empty; give a name like \"orders\""));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(error("it is longer than 249 characters"));
    }
    if name == "." || name == ".." {
        return Err(error("\".\" and \"..\" are reserved"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(error("use only letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String);

        impl $ty {
            /// Validates and wraps a name.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                validate_name($kind, &name)?;
                Ok(Self(name))
            }

            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// The name of a topic: a durable, partitioned log of events.
    TopicName,
    "topic"
);
/// Prefix of the broker's internal topics (e.g. `__scheduled`).
const INTERNAL_PREFIX: &str = "__";

impl TopicName {
    /// A topic name that users may create, target from rules, subscribe to
    /// or delete: not one of the broker's internal topics (`__` prefix).
    pub fn user(name: impl Into<String>) -> Result<TopicName, NameError> {
        let name = name.into();
        if name.starts_with(INTERNAL_PREFIX) {
            return Err(NameError {
                kind: "topic",
                name,
                reason: "names starting with \"__\" are reserved for the broker's internal topics",
            });
        }
        if name.starts_with('.') {
            return Err(NameError {
                kind: "topic",
                name,
                reason: "names starting with \".\" are reserved for the broker's own files",
            });
        }
        TopicName::new(name)
    }
}

name_type!(
    /// The name of a subscription: a consumer group on one topic.
    SubscriptionName,
    "subscription"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["orders", "orders.v1", "dead_letter-2", "A"] {
            assert!(TopicName::new(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn internal_topics_are_reserved() {
        assert!(TopicName::new("__scheduled").is_ok(), "the broker may");
        let err = TopicName::user("__scheduled").expect_err("users may not");
        assert!(err.to_string().contains("reserved"), "{err}");
        assert!(TopicName::user("orders").is_ok());
    }

    #[test]
    fn refuses_names_that_are_not_safe_paths() {
        for name in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(250)] {
            let err = TopicName::new(name).expect_err(name);
            assert_eq!(err.kind, "topic");
        }
    }
}
