//! The compiled matcher: all enabled rules of one bus in one structure.
//!
//! Most rules pin some field to literal values (`type: [...]`,
//! `source: [...]`). Each rule is indexed under one such field (its
//! anchor): field path → value → rules. Matching an event looks up the
//! event's values at the few indexed paths, which yields the candidate
//! rules, and runs only those (plus the rules without an anchor) through
//! the pattern interpreter. The cost per event grows with the number of
//! candidates, not with the number of rules. The interpreter decides every
//! match, so the index can only narrow the work, never change a result.

use super::operators::Literal;
use super::pattern::{Pattern, for_each_leaf};
use serde_json::Value;
use std::collections::HashMap;

/// Rules indexed by the literal values of one field path.
#[derive(Debug, Default)]
struct PathIndex {
    path: Vec<String>,
    strings: HashMap<String, Vec<u32>>,
    numbers: HashMap<u64, Vec<u32>>,
    booleans: [Vec<u32>; 2],
    nulls: Vec<u32>,
}

impl PathIndex {
    fn insert(&mut self, literal: &Literal, rule: u32) {
        match literal {
            Literal::String(s) => self.strings.entry(s.clone()).or_default().push(rule),
            Literal::Number(n) => self.numbers.entry(number_key(*n)).or_default().push(rule),
            Literal::Bool(b) => self.booleans[usize::from(*b)].push(rule),
            Literal::Null => self.nulls.push(rule),
        }
    }

    fn lookup(&self, value: &Value) -> &[u32] {
        let found = match value {
            Value::String(s) => self.strings.get(s.as_str()),
            Value::Number(n) => n.as_f64().and_then(|n| self.numbers.get(&number_key(n))),
            Value::Bool(b) => Some(&self.booleans[usize::from(*b)]),
            Value::Null => Some(&self.nulls),
            Value::Array(_) | Value::Object(_) => None,
        };
        found.map_or(&[], Vec::as_slice)
    }
}

/// Numbers are keyed by their bits, with -0.0 folded into 0.0.
fn number_key(n: f64) -> u64 {
    if n == 0.0 { 0 } else { n.to_bits() }
}

/// Calls `f` on every scalar at `path` in `value`, descending into arrays.
fn leaves_at(value: &Value, path: &[String], f: &mut impl FnMut(&Value)) {
    match (path.split_first(), value) {
        (None, _) => {
            for_each_leaf(Some(value), &mut |leaf| {
                f(leaf);
                false
            });
        }
        (Some((key, rest)), Value::Object(object)) => {
            if let Some(inner) = object.get(key) {
                leaves_at(inner, rest, f);
            }
        }
        (Some(_), Value::Array(items)) => {
            for item in items {
                leaves_at(item, path, f);
            }
        }
        (Some(_), _) => {}
    }
}

/// The compiled form of a list of patterns.
#[derive(Debug, Default)]
pub(crate) struct Matcher {
    patterns: Vec<Pattern>,
    indexes: Vec<PathIndex>,
    unanchored: Vec<u32>,
}

impl Matcher {
    /// Compiles patterns; `matches` reports positions in this list.
    pub(crate) fn new(patterns: Vec<Pattern>) -> Matcher {
        let mut indexes: Vec<PathIndex> = Vec::new();
        let mut unanchored = Vec::new();
        for (id, pattern) in patterns.iter().enumerate() {
            let id = id as u32;
            match pattern.anchor() {
                Some((path, literals)) => {
                    let position = indexes
                        .iter()
                        .position(|i| i.path.iter().eq(path.iter().copied()));
                    let index = match position {
                        Some(position) => &mut indexes[position],
                        None => {
                            indexes.push(PathIndex {
                                path: path.iter().map(|s| s.to_string()).collect(),
                                ..PathIndex::default()
                            });
                            let last = indexes.len() - 1;
                            &mut indexes[last]
                        }
                    };
                    for literal in literals {
                        index.insert(literal, id);
                    }
                }
                None => unanchored.push(id),
            }
        }
        Matcher {
            patterns,
            indexes,
            unanchored,
        }
    }

    /// Positions of the patterns the event matches, ascending.
    pub(crate) fn matches(&self, event: &Value) -> Vec<u32> {
        let mut candidates: Vec<u32> = self.unanchored.clone();
        for index in &self.indexes {
            leaves_at(event, &index.path, &mut |leaf| {
                candidates.extend_from_slice(index.lookup(leaf))
            });
        }
        candidates.sort_unstable();
        candidates.dedup();
        candidates.retain(|&id| self.patterns[id as usize].matches(event));
        candidates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn compile(patterns: &[Value]) -> Matcher {
        Matcher::new(
            patterns
                .iter()
                .map(|p| Pattern::compile(p).expect("valid"))
                .collect(),
        )
    }

    #[test]
    fn indexes_literal_fields_and_still_runs_unanchored_rules() {
        let matcher = compile(&[
            json!({"type": ["a"]}),
            json!({"type": ["b"], "data": {"n": [{"numeric": [">", 1]}]}}),
            json!({"data": {"n": [{"numeric": [">", 1]}]}}),
            json!({"data": {"tags": ["vip"]}}),
            json!({"type": [5]}),
        ]);
        assert_eq!(matcher.unanchored, vec![2]);
        assert_eq!(matcher.matches(&json!({"type": "a"})), vec![0]);
        assert_eq!(
            matcher.matches(&json!({"type": "b", "data": {"n": 2}})),
            vec![1, 2]
        );
        assert_eq!(
            matcher.matches(&json!({"type": "b", "data": {"n": 0}})),
            Vec::<u32>::new()
        );
        assert_eq!(
            matcher.matches(&json!({"data": [{"tags": ["x", "vip"]}]})),
            vec![3]
        );
        assert_eq!(matcher.matches(&json!({"type": 5.0})), vec![4]);
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            prop::sample::select(vec!["x", "xy", "y", "X", "10.0.0.1", ""]).prop_map(|s| json!(s)),
            (-2i64..3).prop_map(|n| json!(n)),
            Just(json!(1.5)),
            any::<bool>().prop_map(|b| json!(b)),
            Just(Value::Null),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from)
    }

    fn operator() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => scalar(),
            1 => Just(json!({"prefix": "x"})),
            1 => Just(json!({"suffix": {"equals-ignore-case": "Y"}})),
            1 => Just(json!({"equals-ignore-case": "x"})),
            1 => Just(json!({"wildcard": "*y"})),
            1 => Just(json!({"anything-but": "x"})),
            1 => Just(json!({"anything-but": [1, 2]})),
            1 => Just(json!({"anything-but": {"prefix": "x"}})),
            1 => Just(json!({"numeric": [">", 0, "<=", 1.5]})),
            1 => Just(json!({"numeric": ["=", -1]})),
            1 => any::<bool>().prop_map(|b| json!({"exists": b})),
            1 => Just(json!({"cidr": "10.0.0.0/8"})),
        ]
    }

    fn pattern() -> impl Strategy<Value = Value> {
        let leaf = prop::collection::vec(operator(), 1..3).prop_map(Value::Array);
        let field = leaf.prop_recursive(2, 8, 2, |inner| {
            prop::collection::btree_map(key(), inner, 1..3).prop_map(|m| json!(m))
        });
        let object = prop::collection::btree_map(key(), field, 1..3).boxed();
        (
            object.clone(),
            prop::option::weighted(0.2, prop::collection::vec(object, 2..3)),
        )
            .prop_map(|(fields, or)| {
                let mut pattern = json!(fields);
                if let (Some(alternatives), Value::Object(map)) = (or, &mut pattern) {
                    map.insert("$or".into(), json!(alternatives));
                }
                pattern
            })
    }

    fn event() -> impl Strategy<Value = Value> {
        let value = scalar().prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..3).prop_map(|m| json!(m)),
            ]
        });
        prop::collection::btree_map(key(), value, 0..4).prop_map(|m| json!(m))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The compiled matcher returns exactly the patterns the reference
        /// interpreter matches.
        #[test]
        fn compiled_matcher_agrees_with_the_interpreter(
            patterns in prop::collection::vec(pattern(), 1..12),
            events in prop::collection::vec(event(), 1..8),
        ) {
            let compiled: Vec<Pattern> = patterns.iter().map(|p| Pattern::compile(p).expect("generated patterns are valid")).collect();
            let matcher = Matcher::new(compiled.clone());
            for event in &events {
                let expected: Vec<u32> = (0..compiled.len() as u32).filter(|&i| compiled[i as usize].matches(event)).collect();
                prop_assert_eq!(matcher.matches(event), expected, "event {}", event);
            }
        }
    }
}
