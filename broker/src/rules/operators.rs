//! Leaf matchers: what one element of a pattern's value list can be, and
//! how it tests one scalar value of the event. Nothing here allocates while
//! matching.

use serde_json::{Number, Value};
use std::net::IpAddr;

/// A literal value of a pattern (exact matching).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    String(String),
    /// Numbers compare as numbers: `5` equals `5.0`.
    Number(f64),
    Bool(bool),
    Null,
}

impl Literal {
    pub(crate) fn from_json(value: &Value) -> Option<Literal> {
        Some(match value {
            Value::String(s) => Literal::String(s.clone()),
            Value::Number(n) => Literal::Number(n.as_f64()?),
            Value::Bool(b) => Literal::Bool(*b),
            Value::Null => Literal::Null,
            Value::Array(_) | Value::Object(_) => return None,
        })
    }

    pub(crate) fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (Literal::String(expected), Value::String(actual)) => expected == actual,
            (Literal::Number(expected), Value::Number(actual)) => number(actual) == Some(*expected),
            (Literal::Bool(expected), Value::Bool(actual)) => expected == actual,
            (Literal::Null, Value::Null) => true,
            _ => false,
        }
    }
}

pub(crate) fn number(n: &Number) -> Option<f64> {
    n.as_f64().filter(|f| f.is_finite())
}

/// One bound of a numeric range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bound {
    pub(crate) value: f64,
    pub(crate) inclusive: bool,
}

/// `{"numeric": [">", 0, "<=", 5]}` and friends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NumericRange {
    pub(crate) lower: Option<Bound>,
    pub(crate) upper: Option<Bound>,
}

impl NumericRange {
    fn contains(&self, x: f64) -> bool {
        let above = self.lower.is_none_or(|b| {
            if b.inclusive {
                x >= b.value
            } else {
                x > b.value
            }
        });
        let below = self.upper.is_none_or(|b| {
            if b.inclusive {
                x <= b.value
            } else {
                x < b.value
            }
        });
        above && below
    }
}

/// A `wildcard` pattern split at its unescaped `*`s: the value must start
/// with the first part, end with the last, and contain the others in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Wildcard {
    parts: Vec<String>,
}

impl Wildcard {
    /// Parses `dir/*.png`; `\*` is a literal star and `\\` a backslash.
    pub(crate) fn parse(pattern: &str) -> Result<Wildcard, String> {
        let mut parts = vec![String::new()];
        let mut chars = pattern.chars().peekable();
        let mut previous_star = false;
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    if previous_star {
                        return Err(format!(
                            "wildcard {pattern:?} has consecutive '*' characters; one '*' already matches any run of characters"
                        ));
                    }
                    parts.push(String::new());
                    previous_star = true;
                    continue;
                }
                '\\' => match chars.next() {
                    Some(escaped @ ('*' | '\\')) => push(&mut parts, escaped),
                    _ => {
                        return Err(format!(
                            "wildcard {pattern:?} has a '\\' that escapes nothing; write \\* for a literal star and \\\\ for a backslash"
                        ));
                    }
                },
                other => push(&mut parts, other),
            }
            previous_star = false;
        }
        Ok(Wildcard { parts })
    }

    fn matches(&self, value: &str) -> bool {
        let (first, rest) = self
            .parts
            .split_first()
            .map_or(("", &[][..]), |(f, r)| (f.as_str(), r));
        let Some(mut remaining) = value.strip_prefix(first) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return remaining.is_empty();
        };
        for part in middle {
            match remaining.find(part.as_str()) {
                Some(at) => remaining = &remaining[at + part.len()..],
                None => return false,
            }
        }
        remaining.ends_with(last.as_str())
    }
}

fn push(parts: &mut [String], c: char) {
    if let Some(last) = parts.last_mut() {
        last.push(c);
    }
}

/// An IPv4 or IPv6 network, `10.0.0.0/24` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub(crate) fn parse(text: &str) -> Result<Cidr, String> {
        let error =
            || format!("cidr {text:?} is not a network like \"10.0.0.0/24\" or \"2001:db8::/32\"");
        let (address, prefix) = text.split_once('/').ok_or_else(error)?;
        let network: IpAddr = address.parse().map_err(|_| error())?;
        let prefix: u8 = prefix.parse().map_err(|_| error())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("cidr {text:?} has a prefix longer than {max} bits"));
        }
        Ok(Cidr { network, prefix })
    }

    fn contains(&self, value: &str) -> bool {
        let Ok(address) = value.parse::<IpAddr>() else {
            return false;
        };
        match (self.network, address) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// One element of a pattern's value list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operator {
    /// A literal: exact match.
    Exact(Literal),
    /// `{"prefix": "us-"}`.
    Prefix(String),
    /// `{"prefix": {"equals-ignore-case": "us-"}}` (stored lower-case).
    PrefixIgnoreCase(String),
    /// `{"suffix": ".png"}`.
    Suffix(String),
    /// `{"suffix": {"equals-ignore-case": ".png"}}` (stored lower-case).
    SuffixIgnoreCase(String),
    /// `{"equals-ignore-case": "alice"}` (stored lower-case).
    EqualsIgnoreCase(String),
    /// `{"wildcard": "dir/*.png"}`.
    Wildcard(Wildcard),
    /// `{"numeric": [">", 0, "<=", 5]}`.
    Numeric(NumericRange),
    /// `{"cidr": "10.0.0.0/24"}`.
    Cidr(Cidr),
    /// `{"exists": true | false}`: true matches any present leaf value,
    /// false matches a field with no leaf value.
    Exists(bool),
    /// `{"anything-but": ...}`: matches a present leaf value that none of
    /// the inner operators match.
    AnythingBut(Vec<Operator>),
}

impl Operator {
    /// Whether this operator accepts the scalar event value `value`.
    pub(crate) fn matches(&self, value: &Value) -> bool {
        match self {
            Operator::Exact(literal) => literal.matches(value),
            Operator::Exists(exists) => *exists,
            Operator::AnythingBut(excluded) => !excluded.iter().any(|op| op.matches(value)),
            Operator::Numeric(range) => match value {
                Value::Number(n) => number(n).is_some_and(|x| range.contains(x)),
                _ => false,
            },
            _ => {
                let Value::String(text) = value else {
                    return false;
                };
                self.matches_str(text)
            }
        }
    }

    fn matches_str(&self, text: &str) -> bool {
        match self {
            Operator::Prefix(prefix) => text.starts_with(prefix.as_str()),
            Operator::Suffix(suffix) => text.ends_with(suffix.as_str()),
            Operator::PrefixIgnoreCase(prefix) => {
                let mut lowered = text.chars().flat_map(char::to_lowercase);
                prefix.chars().all(|c| lowered.next() == Some(c))
            }
            Operator::SuffixIgnoreCase(suffix) => {
                let mut lowered = text.chars().rev().flat_map(|c| c.to_lowercase().rev());
                suffix.chars().rev().all(|c| lowered.next() == Some(c))
            }
            Operator::EqualsIgnoreCase(expected) => text
                .chars()
                .flat_map(char::to_lowercase)
                .eq(expected.chars()),
            Operator::Wildcard(wildcard) => wildcard.matches(text),
            Operator::Cidr(cidr) => cidr.contains(text),
            Operator::Exact(_)
            | Operator::Exists(_)
            | Operator::AnythingBut(_)
            | Operator::Numeric(_) => false,
        }
    }

    /// Whether this operator accepts a field that has no leaf value.
    pub(crate) fn matches_absent(&self) -> bool {
        matches!(self, Operator::Exists(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wildcards_follow_eventbridge() {
        let w = |p: &str| Wildcard::parse(p).expect("valid");
        assert!(w("dir/*.png").matches("dir/a/b.png"));
        assert!(w("dir/*.png").matches("dir/.png"));
        assert!(!w("dir/*.png").matches("dir/a.jpg"));
        assert!(w("*/lib/*").matches("/usr/lib/x"));
        assert!(w("a*b*c").matches("abc"));
        assert!(!w("a*b*c").matches("acb"));
        assert!(w("exact").matches("exact"));
        assert!(!w("exact").matches("exactly"));
        assert!(w(r"lit\*eral*").matches("lit*eral-x"));
        assert!(!w(r"lit\*eral").matches("litXeral"));
        assert!(w(r"back\\slash").matches(r"back\slash"));
        assert!(Wildcard::parse("a**b").is_err());
        assert!(Wildcard::parse(r"a\b").is_err());
        assert!(w("*").matches(""));
    }

    #[test]
    fn cidr_matches_v4_and_v6() {
        let c = |p: &str| Cidr::parse(p).expect("valid");
        assert!(c("10.0.0.0/24").contains("10.0.0.255"));
        assert!(!c("10.0.0.0/24").contains("10.0.1.0"));
        assert!(c("0.0.0.0/0").contains("8.8.8.8"));
        assert!(c("2001:db8::/32").contains("2001:db8:1::1"));
        assert!(!c("2001:db8::/32").contains("2001:db9::1"));
        assert!(!c("10.0.0.0/8").contains("::1"));
        assert!(!c("10.0.0.0/8").contains("not an ip"));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0.0").is_err());
    }

    #[test]
    fn case_insensitive_operators_fold_case() {
        assert!(Operator::EqualsIgnoreCase("alice".into()).matches(&json!("ALICE")));
        assert!(!Operator::EqualsIgnoreCase("alice".into()).matches(&json!("ALICES")));
        assert!(Operator::PrefixIgnoreCase("eventb".into()).matches(&json!("EventBridge")));
        assert!(!Operator::PrefixIgnoreCase("eventb".into()).matches(&json!("Even")));
        assert!(Operator::SuffixIgnoreCase(".png".into()).matches(&json!("CAT.PNG")));
        assert!(!Operator::SuffixIgnoreCase(".png".into()).matches(&json!("png")));
    }

    #[test]
    fn numeric_ranges_compare_numbers_only() {
        let range = NumericRange {
            lower: Some(Bound {
                value: 0.0,
                inclusive: false,
            }),
            upper: Some(Bound {
                value: 5.0,
                inclusive: true,
            }),
        };
        let op = Operator::Numeric(range);
        assert!(op.matches(&json!(5)));
        assert!(op.matches(&json!(0.5)));
        assert!(!op.matches(&json!(0)));
        assert!(!op.matches(&json!(5.000001)));
        assert!(!op.matches(&json!("3")), "strings are not numbers");
    }
}
