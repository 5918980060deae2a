//! Event patterns. This version implements EventBridge's exact matching:
//! a pattern is an object whose leaves are lists of allowed values
//! (strings, numbers, booleans, null) and whose inner objects match nested
//! fields. Every field of the pattern must match; a leaf matches when the
//! event's value (or, for an array, any of its elements) equals one of the
//! listed values. Numbers compare as numbers (`5` equals `5.0`).
//!
//! Content-filter operators (`prefix`, `numeric`, `anything-but`, ...) are
//! refused with a clear error until the rules engine adds them.

use serde_json::Value;

/// Deepest nesting of pattern objects accepted.
pub const MAX_DEPTH: usize = 10;
/// Most values in one leaf list.
pub const MAX_VALUES: usize = 256;

/// A compiled event pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    fields: Vec<(String, Matcher)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Values(Vec<Literal>),
    Nested(Pattern),
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    String(String),
    Number(f64),
    Bool(bool),
    Null,
}

/// Why a pattern is invalid, with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", self.field_path("pattern"))]
pub struct PatternError {
    /// Field names from the pattern root to the problem.
    pub path: Vec<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl PatternError {
    fn at(path: &[String], message: impl Into<String>) -> Self {
        Self {
            path: path.to_vec(),
            message: message.into(),
        }
    }

    /// The dotted field path, e.g. `pattern.data.total`.
    pub fn field_path(&self, root: &str) -> String {
        std::iter::once(root)
            .chain(self.path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(".")
    }
}

impl Pattern {
    /// Validates and compiles a pattern. An empty pattern is an error, not
    /// "match everything".
    pub fn compile(pattern: &Value) -> Result<Pattern, PatternError> {
        let compiled = compile_object(pattern, &mut Vec::new())?;
        Ok(compiled)
    }

    /// True when the event view matches every field of the pattern.
    pub fn matches(&self, event: &Value) -> bool {
        let Value::Object(event) = event else {
            return false;
        };
        self.fields
            .iter()
            .all(|(key, matcher)| event.get(key).is_some_and(|value| matcher.matches(value)))
    }
}

fn compile_object(value: &Value, path: &mut Vec<String>) -> Result<Pattern, PatternError> {
    let Value::Object(object) = value else {
        return Err(PatternError::at(
            path,
            "a pattern must be an object of fields, e.g. {type: [\"order.placed\"]}",
        ));
    };
    if object.is_empty() {
        return Err(PatternError::at(
            path,
            "an empty pattern is not allowed: name at least one field",
        ));
    }
    if path.len() >= MAX_DEPTH {
        return Err(PatternError::at(
            path,
            format!("patterns may nest at most {MAX_DEPTH} levels"),
        ));
    }
    let mut fields = Vec::with_capacity(object.len());
    for (key, value) in object {
        path.push(key.clone());
        let matcher = match value {
            Value::Object(_) => Matcher::Nested(compile_object(value, path)?),
            Value::Array(values) => Matcher::Values(compile_values(values, path)?),
            _ => {
                return Err(PatternError::at(
                    path,
                    format!("expected a list of values, e.g. [{value}], or a nested object"),
                ));
            }
        };
        path.pop();
        fields.push((key.clone(), matcher));
    }
    Ok(Pattern { fields })
}

fn compile_values(values: &[Value], path: &[String]) -> Result<Vec<Literal>, PatternError> {
    if values.is_empty() {
        return Err(PatternError::at(
            path,
            "an empty list matches nothing; list at least one value",
        ));
    }
    if values.len() > MAX_VALUES {
        return Err(PatternError::at(
            path,
            format!("at most {MAX_VALUES} values per field"),
        ));
    }
    values
        .iter()
        .map(|value| match value {
            Value::String(s) => Ok(Literal::String(s.clone())),
            Value::Number(n) => n
                .as_f64()
                .map(Literal::Number)
                .ok_or_else(|| PatternError::at(path, format!("number {n} is out of range"))),
            Value::Bool(b) => Ok(Literal::Bool(*b)),
            Value::Null => Ok(Literal::Null),
            Value::Object(_) => Err(PatternError::at(
                path,
                format!(
                    "content-filter operators like {value} are not supported yet; list exact values"
                ),
            )),
            Value::Array(_) => Err(PatternError::at(path, "lists of lists are not allowed")),
        })
        .collect()
}

impl Matcher {
    fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (_, Value::Array(items)) => items
                .iter()
                .any(|item| !item.is_array() && self.matches(item)),
            (Matcher::Nested(pattern), Value::Object(_)) => pattern.matches(value),
            (Matcher::Nested(_), _) => false,
            (Matcher::Values(literals), value) => {
                literals.iter().any(|literal| literal.matches(value))
            }
        }
    }
}

impl Literal {
    fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (Literal::String(expected), Value::String(actual)) => expected == actual,
            (Literal::Number(expected), Value::Number(actual)) => {
                actual.as_f64() == Some(*expected)
            }
            (Literal::Bool(expected), Value::Bool(actual)) => expected == actual,
            (Literal::Null, Value::Null) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn matches(pattern: Value, event: Value) -> bool {
        Pattern::compile(&pattern)
            .expect("valid pattern")
            .matches(&event)
    }

    #[test]
    fn exact_values_of_every_type() {
        assert!(matches(json!({"a": ["x"]}), json!({"a": "x"})));
        assert!(!matches(json!({"a": ["x"]}), json!({"a": "X"})));
        assert!(matches(json!({"a": [5]}), json!({"a": 5.0})));
        assert!(!matches(json!({"a": ["5"]}), json!({"a": 5})));
        assert!(matches(json!({"a": [true]}), json!({"a": true})));
        assert!(matches(json!({"a": [null]}), json!({"a": null})));
        assert!(!matches(json!({"a": [null]}), json!({})));
    }

    #[test]
    fn every_field_must_match_and_nesting_works() {
        let pattern = json!({"type": ["t"], "data": {"region": ["eu", "uk"]}});
        assert!(matches(
            pattern.clone(),
            json!({"type": "t", "data": {"region": "uk", "x": 1}})
        ));
        assert!(!matches(
            pattern.clone(),
            json!({"type": "t", "data": {"region": "us"}})
        ));
        assert!(!matches(pattern.clone(), json!({"type": "t"})));
        assert!(!matches(pattern, json!({"type": "t", "data": "eu"})));
    }

    #[test]
    fn arrays_in_the_event_match_if_any_element_matches() {
        assert!(matches(
            json!({"tags": ["vip"]}),
            json!({"tags": ["new", "vip"]})
        ));
        assert!(!matches(json!({"tags": ["vip"]}), json!({"tags": []})));
        assert!(matches(
            json!({"items": {"sku": ["a"]}}),
            json!({"items": [{"sku": "b"}, {"sku": "a"}]})
        ));
    }

    #[test]
    fn invalid_patterns_are_errors_with_paths() {
        let err = |p: Value| Pattern::compile(&p).expect_err("invalid").to_string();
        assert!(err(json!({})).contains("empty pattern"));
        assert!(err(json!([])).contains("must be an object"));
        assert!(err(json!({"data": {"n": 5}})).starts_with("pattern.data.n:"));
        assert!(err(json!({"a": []})).contains("empty list"));
        assert!(err(json!({"a": [{"prefix": "x"}]})).contains("not supported yet"));
    }

    /// A plain reference interpreter over the raw JSON pattern: the oracle
    /// for the compiled matcher.
    fn reference(pattern: &Value, event: &Value) -> bool {
        let (Value::Object(p), Value::Object(e)) = (pattern, event) else {
            return false;
        };
        p.iter().all(|(key, want)| {
            let Some(got) = e.get(key) else { return false };
            let candidates: Vec<&Value> = match got {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            candidates.iter().any(|got| match want {
                Value::Array(allowed) => allowed.iter().any(|a| match (a, got) {
                    (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
                    _ => a == *got,
                }),
                nested => reference(nested, got),
            })
        })
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            prop::sample::select(vec!["a", "b", "c"]).prop_map(|s| json!(s)),
            (0i64..3).prop_map(|n| json!(n)),
            any::<bool>().prop_map(|b| json!(b)),
            Just(Value::Null),
        ]
    }

    fn event_value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map(prop::sample::select(vec!["x", "y"]), inner, 0..3)
                    .prop_map(|m| json!(m)),
            ]
        })
    }

    fn pattern_value() -> impl Strategy<Value = Value> {
        let leaf = prop::collection::vec(scalar(), 1..3).prop_map(Value::Array);
        leaf.prop_recursive(3, 8, 2, |inner| {
            prop::collection::btree_map(prop::sample::select(vec!["x", "y"]), inner, 1..3)
                .prop_map(|m| json!(m))
        })
    }

    proptest! {
        #[test]
        fn compiled_matcher_agrees_with_reference(
            pattern in prop::collection::btree_map(prop::sample::select(vec!["x", "y"]), pattern_value(), 1..3),
            event in prop::collection::btree_map(prop::sample::select(vec!["x", "y"]), event_value(), 0..3),
        ) {
            let pattern = json!(pattern);
            let event = json!(event);
            let compiled = Pattern::compile(&pattern).expect("generated patterns are valid");
            prop_assert_eq!(compiled.matches(&event), reference(&pattern, &event));
        }
    }
}
