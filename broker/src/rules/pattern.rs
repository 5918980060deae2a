//! Event patterns with Amazon EventBridge's semantics: parsing and
//! validation into a typed tree, evaluation against an event (the
//! reference interpreter), and explanations of why a pattern did or did
//! not match.
//!
//! A pattern is an object. Each field names a key of the event and holds
//! either a nested pattern (for a nested object of the event) or a list of
//! value matchers: literals (exact match of strings, numbers, booleans,
//! null) and operators (`prefix`, `suffix`, `equals-ignore-case`,
//! `wildcard`, `anything-but`, `numeric`, `exists`, `cidr`). `$or` holds a
//! list of alternative patterns. Every field must match; a list matches
//! when any of its matchers accepts any leaf value of the field (an array
//! in the event matches if any element does); a nested pattern on an array
//! of objects matches if it matches one element as a whole.

use super::operators::{Bound, Cidr, Literal, NumericRange, Operator, Wildcard};
use serde_json::{Map, Value};

/// Deepest nesting of pattern objects accepted.
pub const MAX_DEPTH: usize = 10;
/// Most matchers in one value list.
pub const MAX_VALUES: usize = 256;
/// Largest pattern, as compact JSON (EventBridge's PutRule limit).
pub const MAX_PATTERN_BYTES: usize = 4096;
/// Most alternatives in one `$or`.
pub const MAX_OR_ALTERNATIVES: usize = 256;

/// A compiled event pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    fields: Vec<Field>,
    any_of: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq)]
struct Field {
    key: String,
    matcher: Matcher,
}

#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Leaf {
        operators: Vec<Operator>,
        source: Vec<Value>,
    },
    Nested(Pattern),
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

/// One line of an explanation: a field of the pattern and whether (and
/// why) the event satisfied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Dotted path of the field, e.g. `data.total` or `$or[1].type`.
    pub path: String,
    /// Whether the field matched.
    pub matched: bool,
    /// What was compared.
    pub detail: String,
}

const OPERATORS: &str =
    "prefix, suffix, equals-ignore-case, wildcard, anything-but, numeric, exists, cidr";

impl Pattern {
    /// Validates and compiles a pattern. An empty or invalid pattern is an
    /// error, never "match everything".
    pub fn compile(pattern: &Value) -> Result<Pattern, PatternError> {
        let size = pattern.to_string().len();
        if size > MAX_PATTERN_BYTES {
            return Err(PatternError::at(
                &[],
                format!("pattern is {size} bytes of JSON, over the limit of {MAX_PATTERN_BYTES}"),
            ));
        }
        compile_object(pattern, &mut Vec::new())
    }

    /// True when the event (a JSON object) matches.
    pub fn matches(&self, event: &Value) -> bool {
        self.matches_object(event.as_object())
    }

    fn matches_object(&self, object: Option<&Map<String, Value>>) -> bool {
        self.fields.iter().all(|field| {
            field
                .matcher
                .matches(object.and_then(|o| o.get(&field.key)))
        }) && (self.any_of.is_empty() || self.any_of.iter().any(|alt| alt.matches_object(object)))
    }

    /// Says for every field whether the event matched it, and why.
    pub fn explain(&self, event: &Value) -> Vec<Explanation> {
        let mut lines = Vec::new();
        self.explain_object(event.as_object(), "", &mut lines);
        lines
    }

    fn explain_object(
        &self,
        object: Option<&Map<String, Value>>,
        prefix: &str,
        lines: &mut Vec<Explanation>,
    ) {
        for field in &self.fields {
            let path = format!("{prefix}{}", field.key);
            let value = object.and_then(|o| o.get(&field.key));
            match &field.matcher {
                Matcher::Nested(pattern) => match value {
                    Some(Value::Object(inner)) => {
                        pattern.explain_object(Some(inner), &format!("{path}."), lines)
                    }
                    Some(Value::Array(_)) => {
                        let matched = field.matcher.matches(value);
                        lines.push(Explanation {
                            path,
                            matched,
                            detail: if matched {
                                "an element of the array matches the nested pattern".into()
                            } else {
                                "no element of the array matches the nested pattern".into()
                            },
                        });
                    }
                    _ => pattern.explain_object(None, &format!("{path}."), lines),
                },
                Matcher::Leaf { source, .. } => {
                    let mut leaves = Vec::new();
                    for_each_leaf(value, &mut |leaf| {
                        leaves.push(leaf.to_string());
                        false
                    });
                    let matched = field.matcher.matches(value);
                    let expected = Value::Array(source.clone());
                    let detail = match (leaves.is_empty(), matched) {
                        (true, true) => format!("field has no value, as {expected} allows"),
                        (true, false) => format!(
                            "field is missing (or has no scalar value); expected {expected}"
                        ),
                        (false, true) => format!("value {} matches {expected}", leaves.join(", ")),
                        (false, false) => {
                            format!("value {} does not match {expected}", leaves.join(", "))
                        }
                    };
                    lines.push(Explanation {
                        path,
                        matched,
                        detail,
                    });
                }
            }
        }
        if !self.any_of.is_empty() {
            let matched: Vec<usize> = (0..self.any_of.len())
                .filter(|&i| self.any_of[i].matches_object(object))
                .collect();
            lines.push(Explanation {
                path: format!("{prefix}$or"),
                matched: !matched.is_empty(),
                detail: if matched.is_empty() {
                    format!("none of the {} alternatives matches", self.any_of.len())
                } else {
                    format!("alternative(s) {matched:?} match")
                },
            });
            for (i, alternative) in self.any_of.iter().enumerate() {
                alternative.explain_object(object, &format!("{prefix}$or[{i}]."), lines);
            }
        }
    }

    /// A field every match depends on, holding only literals: its path and
    /// values. An event can only match if it has one of these values at
    /// that path, so the compiled matcher can index the pattern by them.
    pub(crate) fn anchor(&self) -> Option<(Vec<&str>, Vec<&Literal>)> {
        let mut best: Option<(Vec<&str>, Vec<&Literal>)> = None;
        self.collect_anchor(&mut Vec::new(), &mut best);
        best
    }

    fn collect_anchor<'a>(
        &'a self,
        path: &mut Vec<&'a str>,
        best: &mut Option<(Vec<&'a str>, Vec<&'a Literal>)>,
    ) {
        for field in &self.fields {
            path.push(&field.key);
            match &field.matcher {
                Matcher::Nested(pattern) => pattern.collect_anchor(path, best),
                Matcher::Leaf { operators, .. } => {
                    let literals: Option<Vec<&Literal>> = operators
                        .iter()
                        .map(|op| match op {
                            Operator::Exact(literal) => Some(literal),
                            _ => None,
                        })
                        .collect();
                    if let Some(literals) = literals
                        && best.as_ref().is_none_or(|(_, b)| literals.len() < b.len())
                    {
                        *best = Some((path.clone(), literals));
                    }
                }
            }
            path.pop();
        }
    }
}

impl Matcher {
    fn matches(&self, value: Option<&Value>) -> bool {
        match self {
            Matcher::Leaf { operators, .. } => {
                let mut any_leaf = false;
                let hit = for_each_leaf(value, &mut |leaf| {
                    any_leaf = true;
                    operators.iter().any(|op| op.matches(leaf))
                });
                hit || (!any_leaf && operators.iter().any(Operator::matches_absent))
            }
            Matcher::Nested(pattern) => {
                let mut any_object = false;
                let hit = for_each_object(value, &mut |object| {
                    any_object = true;
                    pattern.matches_object(Some(object))
                });
                hit || (!any_object && pattern.matches_object(None))
            }
        }
    }
}

/// Calls `f` on every scalar value of `value` (itself, or the elements of
/// arrays, recursively) until it returns true.
pub(crate) fn for_each_leaf(value: Option<&Value>, f: &mut impl FnMut(&Value) -> bool) -> bool {
    match value {
        None | Some(Value::Object(_)) => false,
        Some(Value::Array(items)) => items.iter().any(|item| for_each_leaf(Some(item), f)),
        Some(scalar) => f(scalar),
    }
}

fn for_each_object(value: Option<&Value>, f: &mut impl FnMut(&Map<String, Value>) -> bool) -> bool {
    match value {
        Some(Value::Object(object)) => f(object),
        Some(Value::Array(items)) => items.iter().any(|item| for_each_object(Some(item), f)),
        _ => false,
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
    let mut pattern = Pattern {
        fields: Vec::with_capacity(object.len()),
        any_of: Vec::new(),
    };
    for (key, value) in object {
        path.push(key.clone());
        if key == "$or" {
            pattern.any_of = compile_or(value, path)?;
        } else {
            let matcher = match value {
                Value::Object(_) => Matcher::Nested(compile_object(value, path)?),
                Value::Array(values) => Matcher::Leaf {
                    operators: compile_values(values, path)?,
                    source: values.clone(),
                },
                _ => {
                    return Err(PatternError::at(
                        path,
                        format!("expected a list of values, e.g. [{value}], or a nested object"),
                    ));
                }
            };
            pattern.fields.push(Field {
                key: key.clone(),
                matcher,
            });
        }
        path.pop();
    }
    Ok(pattern)
}

fn compile_or(value: &Value, path: &mut Vec<String>) -> Result<Vec<Pattern>, PatternError> {
    let Value::Array(alternatives) = value else {
        return Err(PatternError::at(
            path,
            "$or takes a list of patterns, e.g. [{a: [1]}, {b: [2]}]",
        ));
    };
    if alternatives.len() < 2 || alternatives.len() > MAX_OR_ALTERNATIVES {
        return Err(PatternError::at(
            path,
            format!("$or needs between 2 and {MAX_OR_ALTERNATIVES} alternatives"),
        ));
    }
    alternatives
        .iter()
        .enumerate()
        .map(|(i, alternative)| {
            path.push(i.to_string());
            let compiled = compile_object(alternative, path);
            path.pop();
            compiled
        })
        .collect()
}

fn compile_values(values: &[Value], path: &[String]) -> Result<Vec<Operator>, PatternError> {
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
            Value::Object(object) => compile_operator(object, path),
            Value::Array(_) => Err(PatternError::at(path, "lists of lists are not allowed")),
            scalar => Literal::from_json(scalar)
                .map(Operator::Exact)
                .ok_or_else(|| PatternError::at(path, format!("number {scalar} is out of range"))),
        })
        .collect()
}

fn string_arg<'a>(
    value: &'a Value,
    operator: &str,
    path: &[String],
) -> Result<&'a str, PatternError> {
    value.as_str().ok_or_else(|| {
        PatternError::at(path, format!("\"{operator}\" takes a string, not {value}"))
    })
}

/// The string of `{"equals-ignore-case": "..."}`, lower-cased.
fn ignore_case_arg(
    value: &Value,
    operator: &str,
    path: &[String],
) -> Result<Option<String>, PatternError> {
    match value {
        Value::Object(inner) if inner.len() == 1 => match inner.get("equals-ignore-case") {
            Some(text) => Ok(Some(
                string_arg(text, "equals-ignore-case", path)?.to_lowercase(),
            )),
            None => Err(PatternError::at(
                path,
                format!("\"{operator}\" takes a string or {{\"equals-ignore-case\": string}}"),
            )),
        },
        _ => Ok(None),
    }
}

fn compile_operator(
    object: &Map<String, Value>,
    path: &[String],
) -> Result<Operator, PatternError> {
    let mut entries = object.iter();
    let (Some((name, argument)), None) = (entries.next(), entries.next()) else {
        return Err(PatternError::at(
            path,
            format!("an operator object has exactly one key ({OPERATORS})"),
        ));
    };
    Ok(match name.as_str() {
        "prefix" => match ignore_case_arg(argument, name, path)? {
            Some(lower) => Operator::PrefixIgnoreCase(lower),
            None => Operator::Prefix(string_arg(argument, name, path)?.to_string()),
        },
        "suffix" => match ignore_case_arg(argument, name, path)? {
            Some(lower) => Operator::SuffixIgnoreCase(lower),
            None => Operator::Suffix(string_arg(argument, name, path)?.to_string()),
        },
        "equals-ignore-case" => {
            Operator::EqualsIgnoreCase(string_arg(argument, name, path)?.to_lowercase())
        }
        "wildcard" => Operator::Wildcard(
            Wildcard::parse(string_arg(argument, name, path)?)
                .map_err(|e| PatternError::at(path, e))?,
        ),
        "cidr" => Operator::Cidr(
            Cidr::parse(string_arg(argument, name, path)?)
                .map_err(|e| PatternError::at(path, e))?,
        ),
        "exists" => match argument {
            Value::Bool(exists) => Operator::Exists(*exists),
            other => {
                return Err(PatternError::at(
                    path,
                    format!("\"exists\" takes true or false, not {other}"),
                ));
            }
        },
        "numeric" => Operator::Numeric(compile_numeric(argument, path)?),
        "anything-but" => Operator::AnythingBut(compile_anything_but(argument, path)?),
        other => {
            return Err(PatternError::at(
                path,
                format!("unknown operator \"{other}\"; the operators are {OPERATORS}"),
            ));
        }
    })
}

fn compile_numeric(argument: &Value, path: &[String]) -> Result<NumericRange, PatternError> {
    let usage = "\"numeric\" takes [\"<op>\", number] or [\">\"|\">=\", low, \"<\"|\"<=\", high], with op one of = < <= > >=";
    let Value::Array(items) = argument else {
        return Err(PatternError::at(path, usage));
    };
    if items.is_empty() || items.len() % 2 != 0 || items.len() > 4 {
        return Err(PatternError::at(path, usage));
    }
    let mut range = NumericRange {
        lower: None,
        upper: None,
    };
    let mut equals = false;
    for pair in items.chunks(2) {
        let (Some(op), Some(value)) =
            (pair[0].as_str(), pair[1].as_f64().filter(|v| v.is_finite()))
        else {
            return Err(PatternError::at(path, usage));
        };
        let slot = match op {
            "=" => {
                equals = true;
                range.lower = Some(Bound {
                    value,
                    inclusive: true,
                });
                range.upper = Some(Bound {
                    value,
                    inclusive: true,
                });
                continue;
            }
            ">" | ">=" => &mut range.lower,
            "<" | "<=" => &mut range.upper,
            _ => return Err(PatternError::at(path, usage)),
        };
        if slot.is_some() {
            return Err(PatternError::at(
                path,
                format!("{usage}; a bound is given twice"),
            ));
        }
        *slot = Some(Bound {
            value,
            inclusive: op.ends_with('='),
        });
    }
    if equals && items.len() > 2 {
        return Err(PatternError::at(
            path,
            "\"=\" cannot be combined with another comparison",
        ));
    }
    if let (Some(low), Some(high)) = (range.lower, range.upper)
        && !equals
        && low.value >= high.value
    {
        return Err(PatternError::at(
            path,
            "the lower bound of a numeric range must be below the upper bound",
        ));
    }
    Ok(range)
}

fn compile_anything_but(argument: &Value, path: &[String]) -> Result<Vec<Operator>, PatternError> {
    let exact = |value: &Value| match value {
        Value::String(_) | Value::Number(_) => Literal::from_json(value)
            .map(Operator::Exact)
            .ok_or_else(|| PatternError::at(path, format!("number {value} is out of range"))),
        other => Err(PatternError::at(
            path,
            format!("\"anything-but\" lists strings or numbers, not {other}"),
        )),
    };
    match argument {
        Value::String(_) | Value::Number(_) => Ok(vec![exact(argument)?]),
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_VALUES => {
            let all_strings = items.iter().all(Value::is_string);
            let all_numbers = items.iter().all(Value::is_number);
            if !all_strings && !all_numbers {
                return Err(PatternError::at(
                    path,
                    "\"anything-but\" lists only strings or only numbers",
                ));
            }
            items.iter().map(exact).collect()
        }
        Value::Object(inner) if inner.len() == 1 => {
            let (name, value) = inner
                .iter()
                .next()
                .ok_or_else(|| PatternError::at(path, "empty anything-but"))?;
            if !matches!(
                name.as_str(),
                "prefix" | "suffix" | "equals-ignore-case" | "wildcard"
            ) {
                return Err(PatternError::at(
                    path,
                    format!(
                        "\"anything-but\" combines with prefix, suffix, equals-ignore-case or wildcard, not \"{name}\""
                    ),
                ));
            }
            let texts: Vec<&str> = match value {
                Value::String(text) => vec![text.as_str()],
                Value::Array(items) if !items.is_empty() && items.len() <= MAX_VALUES => items
                    .iter()
                    .map(|item| string_arg(item, name, path))
                    .collect::<Result<_, _>>()?,
                other => {
                    return Err(PatternError::at(
                        path,
                        format!(
                            "\"anything-but\": {{\"{name}\": ...}} takes a string or a list of strings, not {other}"
                        ),
                    ));
                }
            };
            texts
                .into_iter()
                .map(|text| match name.as_str() {
                    "prefix" => Ok(Operator::Prefix(text.to_string())),
                    "suffix" => Ok(Operator::Suffix(text.to_string())),
                    "equals-ignore-case" => Ok(Operator::EqualsIgnoreCase(text.to_lowercase())),
                    _ => Wildcard::parse(text)
                        .map(Operator::Wildcard)
                        .map_err(|e| PatternError::at(path, e)),
                })
                .collect()
        }
        other => Err(PatternError::at(
            path,
            format!(
                "\"anything-but\" takes a string, a number, a list, or {{prefix|suffix|equals-ignore-case|wildcard: ...}}, not {other}"
            ),
        )),
    }
}

#[cfg(test)]
mod tests;
