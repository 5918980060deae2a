//! Routing rules: operator-owned YAML → validated, compiled [`RuleSet`] →
//! the topics (and the names of the rules that chose them) for each event.
//!
//! Rule file shape:
//!
//! ```yaml
//! rules:
//!   - name: orders-to-billing       # unique across all rule files
//!     description: Paid orders are billed
//!     bus: default                  # optional, default "default"
//!     enabled: true                 # optional, default true
//!     pattern:                      # EventBridge-style event pattern
//!       type: ["com.example.order.placed"]
//!       data:
//!         currency: ["EUR", "USD"]
//!     targets:
//!       - topic: billing
//! ```

pub mod dry_run;
mod matcher;
mod operators;
mod pattern;
mod view;

pub use pattern::{
    Explanation, MAX_DEPTH, MAX_OR_ALTERNATIVES, MAX_PATTERN_BYTES, MAX_VALUES, Pattern,
    PatternError,
};
pub use view::{event_view, event_view_with};

use crate::model::{NameError, TopicName, validate_name};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The bus that always exists.
pub const DEFAULT_BUS: &str = "default";

/// Why rules could not be loaded. Every variant names the file; semantic
/// errors also name the rule and the field.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("cannot read rules file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Malformed YAML or unknown / mistyped fields.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line where the problem is.
        line: usize,
        /// What is wrong, with its location.
        message: String,
    },
    /// A rule is well-formed YAML but not a valid rule.
    #[error("{}:{line}: rule '{rule}': field '{field}': {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line where the rule starts (its `name:`).
        line: usize,
        /// The rule's name.
        rule: String,
        /// The offending field, e.g. `pattern.data.total`.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "default_bus")]
    bus: String,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    #[serde(deserialize_with = "crate::config::strict_json::deserialize")]
    pattern: serde_json::Value,
    targets: Vec<TargetSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetSpec {
    topic: String,
}

fn default_bus() -> String {
    DEFAULT_BUS.to_string()
}

fn enabled_by_default() -> bool {
    true
}

/// One validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name; reported with every event it routes.
    pub name: String,
    /// What the rule is for.
    pub description: String,
    /// The bus whose events it sees.
    pub bus: String,
    /// Disabled rules are listed but route nothing.
    pub enabled: bool,
    /// The pattern as written (JSON).
    pub pattern_json: serde_json::Value,
    /// The compiled pattern.
    pub pattern: Pattern,
    /// Topics that receive matching events.
    pub targets: Vec<TopicName>,
    /// The file the rule came from.
    pub file: PathBuf,
    /// The line of the file where the rule starts.
    pub line: usize,
}

/// Where one event goes: target topic → names of the rules that sent it
/// there (sorted, without duplicates).
pub type Routes = BTreeMap<TopicName, Vec<String>>;

/// All rules, ready to match: each bus's enabled rules compiled into one
/// matcher (an index over their literal fields).
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    buses: BTreeSet<String>,
    /// bus → (its matcher, position in `rules` of each compiled pattern).
    matchers: HashMap<String, (matcher::Matcher, Vec<usize>)>,
}

impl RuleSet {
    /// Loads rule files; `extra_buses` are buses declared without rules.
    pub fn load(files: &[PathBuf], extra_buses: &[String]) -> Result<RuleSet, RulesError> {
        let mut rules = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
                path: path.clone(),
                source,
            })?;
            rules.extend(parse_rules(&text, path)?);
        }
        Self::from_rules(rules, extra_buses)
    }

    /// Builds a set from parsed rules, checking that names are unique.
    pub fn from_rules(rules: Vec<Rule>, extra_buses: &[String]) -> Result<RuleSet, RulesError> {
        let mut seen: BTreeMap<&str, &Path> = BTreeMap::new();
        for rule in &rules {
            if let Some(first) = seen.insert(&rule.name, &rule.file) {
                return Err(RulesError::Invalid {
                    path: rule.file.clone(),
                    line: rule.line,
                    rule: rule.name.clone(),
                    field: "name".into(),
                    message: format!(
                        "a rule with this name is already defined in {}; rule names must be unique",
                        first.display()
                    ),
                });
            }
        }
        let mut buses: BTreeSet<String> = rules.iter().map(|r| r.bus.clone()).collect();
        buses.insert(DEFAULT_BUS.to_string());
        buses.extend(extra_buses.iter().cloned());
        let mut by_bus: HashMap<String, (Vec<Pattern>, Vec<usize>)> = HashMap::new();
        for (position, rule) in rules.iter().enumerate().filter(|(_, r)| r.enabled) {
            let entry = by_bus.entry(rule.bus.clone()).or_default();
            entry.0.push(rule.pattern.clone());
            entry.1.push(position);
        }
        let matchers = by_bus
            .into_iter()
            .map(|(bus, (patterns, positions))| (bus, (matcher::Matcher::new(patterns), positions)))
            .collect();
        Ok(RuleSet {
            rules,
            buses,
            matchers,
        })
    }

    /// Every bus events may be published on.
    pub fn buses(&self) -> impl Iterator<Item = &str> {
        self.buses.iter().map(String::as_str)
    }

    /// True when events may be published on `bus`.
    pub fn has_bus(&self, bus: &str) -> bool {
        self.buses.contains(bus)
    }

    /// All rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every topic some rule targets.
    pub fn target_topics(&self) -> BTreeSet<TopicName> {
        self.rules
            .iter()
            .flat_map(|r| r.targets.iter().cloned())
            .collect()
    }

    /// The enabled rules of `bus` that match the event view, in file order.
    pub fn matching<'a>(
        &'a self,
        bus: &str,
        view: &serde_json::Value,
    ) -> impl Iterator<Item = &'a Rule> + 'a {
        self.matched(self.matchers.get(bus).into_iter(), view)
    }

    /// The enabled rules of any bus that match the event view, in file
    /// order (what `switchyard rules test` reports without `--bus`).
    pub fn matching_any_bus<'a>(
        &'a self,
        view: &serde_json::Value,
    ) -> impl Iterator<Item = &'a Rule> + 'a {
        self.matched(self.matchers.values(), view)
    }

    fn matched<'a, 'm>(
        &'a self,
        matchers: impl Iterator<Item = &'m (matcher::Matcher, Vec<usize>)>,
        view: &serde_json::Value,
    ) -> impl Iterator<Item = &'a Rule> + 'a {
        let mut positions: Vec<usize> = matchers
            .flat_map(|(matcher, positions)| {
                matcher
                    .matches(view)
                    .into_iter()
                    .map(|id| positions[id as usize])
            })
            .collect();
        positions.sort_unstable();
        positions
            .into_iter()
            .map(move |position| &self.rules[position])
    }

    /// The enabled rules of `bus` that match the event view, grouped by
    /// target topic.
    pub fn route(&self, bus: &str, view: &serde_json::Value) -> Routes {
        let mut routes = Routes::new();
        for rule in self.rules.iter().filter(|r| r.enabled && r.bus == bus) {
            if rule.pattern.matches(view) {
                for topic in &rule.targets {
                    routes
                        .entry(topic.clone())
                        .or_default()
                        .push(rule.name.clone());
                }
            }
        }
        for names in routes.values_mut() {
            names.sort_unstable();
            names.dedup();
        }
        routes
    }
}

/// Parses one rules file; `path` names it in errors.
pub fn parse_rules(text: &str, path: &Path) -> Result<Vec<Rule>, RulesError> {
    let file: RuleFile = if text.trim().is_empty() {
        RuleFile { rules: Vec::new() }
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| RulesError::Parse {
            path: path.to_path_buf(),
            line: e.location().map_or(1, |l| l.line()),
            message: e.to_string(),
        })?
    };
    let mut from = 0;
    file.rules
        .into_iter()
        .map(|spec| {
            let line = rule_line(text, &spec.name, &mut from);
            compile_rule(spec, path, line)
        })
        .collect()
}

/// Most bytes of rules YAML taken from the network (a dry run's
/// candidate rules): ten thousand typical rules.
pub const MAX_UNTRUSTED_RULES_BYTES: usize = 4 << 20;

/// Deepest nesting of `[`/`{` collections in rules YAML taken from the
/// network: a pattern may nest 10 levels (EventBridge's limit) inside a
/// rule file's own few levels, so 32 leaves room, while YAML parsing time
/// grows with the square of the depth.
pub const MAX_UNTRUSTED_RULES_DEPTH: usize = 32;

/// Parses rules that arrive over the network, named `label` in errors:
/// refuses text over [`MAX_UNTRUSTED_RULES_BYTES`] or nested deeper than
/// [`MAX_UNTRUSTED_RULES_DEPTH`] before parsing, so a hostile request
/// costs no more than a linear scan.
pub fn parse_untrusted_rules(text: &str, label: &str) -> Result<Vec<Rule>, RulesError> {
    let refuse = |line: usize, message: String| RulesError::Parse {
        path: PathBuf::from(label),
        line,
        message,
    };
    if text.len() > MAX_UNTRUSTED_RULES_BYTES {
        return Err(refuse(
            1,
            format!(
                "{} bytes of rules; at most {MAX_UNTRUSTED_RULES_BYTES} are taken in one request",
                text.len()
            ),
        ));
    }
    if let Some(line) = nested_deeper_than(text, MAX_UNTRUSTED_RULES_DEPTH) {
        return Err(refuse(
            line,
            format!(
                "collections nested more than {MAX_UNTRUSTED_RULES_DEPTH} deep; patterns nest at most 10 levels"
            ),
        ));
    }
    parse_rules(text, Path::new(label))
}

/// The 1-based line where YAML `text` first nests flow collections (`[`,
/// `{`) or block levels (indentation steps) more than `max` deep, if it
/// does. Quoted strings and comments do not count. A cheap upper bound,
/// not a parser: it may count a plain scalar's bracket, never misses one.
pub fn nested_deeper_than(text: &str, max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let content = line.trim_start_matches([' ', '-']);
        if depth == 0 && !content.is_empty() && !content.starts_with('#') {
            let indent = line.len() - line.trim_start_matches(' ').len();
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
            // `- - x` opens a sequence per dash on one line.
            let dashes = line[indent..line.len() - content.len()]
                .matches('-')
                .count();
            if indents.len() + dashes > max {
                return Some(index + 1);
            }
        }
        // A quote opens a string and `#` a comment only where a token
        // starts (YAML: `a'b` and `a#b` are plain text).
        let mut quote: Option<char> = None;
        let mut escaped = false;
        let mut token_start = true;
        for c in line.chars() {
            match quote {
                Some('"') if escaped => escaped = false,
                Some('"') if c == '\\' => escaped = true,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '"' | '\'' if token_start => quote = Some(c),
                    '#' if token_start => break,
                    '[' | '{' => {
                        depth += 1;
                        if depth + indents.len() > max {
                            return Some(index + 1);
                        }
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                },
            }
            token_start =
                quote.is_none() && matches!(c, ' ' | '\t' | '[' | '{' | ',' | ':' | '-' | '?');
        }
    }
    None
}

/// The 1-based line of the `name: NAME` that starts a rule, searching from
/// line index `from` on (rules come in file order); the file's first line
/// when the name cannot be found (e.g. flow-style YAML).
fn rule_line(text: &str, name: &str, from: &mut usize) -> usize {
    let found = text.lines().enumerate().skip(*from).find(|(_, line)| {
        let line = line.trim_start().trim_start_matches('-').trim_start();
        line.strip_prefix("name:")
            .map(|rest| rest.trim().trim_matches(|c| c == '"' || c == '\''))
            .is_some_and(|rest| rest == name)
    });
    match found {
        Some((index, _)) => {
            *from = index + 1;
            index + 1
        }
        None => 1,
    }
}

fn compile_rule(spec: RuleSpec, path: &Path, line: usize) -> Result<Rule, RulesError> {
    let invalid = |field: &str, message: String| RulesError::Invalid {
        path: path.to_path_buf(),
        line,
        rule: spec.name.clone(),
        field: field.to_string(),
        message,
    };
    let name_error = |field: &str, e: NameError| invalid(field, e.to_string());
    if spec.name.trim().is_empty() {
        return Err(invalid("name", "a rule needs a non-empty name".into()));
    }
    validate_name("bus", &spec.bus).map_err(|e| name_error("bus", e))?;
    if spec.targets.is_empty() {
        return Err(invalid(
            "targets",
            "a rule needs at least one target, e.g. `- topic: orders`".into(),
        ));
    }
    let targets = spec
        .targets
        .iter()
        .map(|t| TopicName::user(t.topic.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| name_error("targets", e))?;
    let pattern = Pattern::compile(&spec.pattern)
        .map_err(|e| invalid(&e.field_path("pattern"), e.message))?;
    Ok(Rule {
        name: spec.name.clone(),
        description: spec.description,
        bus: spec.bus,
        enabled: spec.enabled,
        pattern_json: spec.pattern,
        pattern,
        targets,
        file: path.to_path_buf(),
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deep_nesting_from_the_network_is_refused_before_parsing() {
        let flow = format!("rules: {}{}", "[".repeat(64 * 1024), "]".repeat(64 * 1024));
        let block: String = (0..40).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
        let dashes = format!("rules:\n{}x\n", "- ".repeat(40));
        for text in [flow, block, dashes] {
            let error = parse_untrusted_rules(&text, "candidate rules").expect_err("too deep");
            assert!(error.to_string().contains("nested more than 32"), "{error}");
        }
        let big = format!("# {}\n", "x".repeat(MAX_UNTRUSTED_RULES_BYTES));
        let error = parse_untrusted_rules(&big, "candidate rules").expect_err("too big");
        assert!(error.to_string().contains("at most"), "{error}");
    }

    #[test]
    fn quoted_and_commented_brackets_do_not_count_but_plain_quotes_hide_none() {
        let quoted = format!("a: \"{}\" # {}\n", "[".repeat(100), "{".repeat(100));
        assert_eq!(nested_deeper_than(&quoted, 4), None);
        // An apostrophe inside plain text opens no string.
        let plain = format!("a: [it's, {}]\n", "[".repeat(10));
        assert_eq!(nested_deeper_than(&plain, 4), Some(1));
        let rules = "rules:\n  - name: r # it's [fine]\n    pattern: {type: [\"a[\"], data: {x: [{prefix: 'b{'}]}}\n    targets: [{topic: t}]\n";
        assert_eq!(nested_deeper_than(rules, MAX_UNTRUSTED_RULES_DEPTH), None);
        assert_eq!(
            parse_untrusted_rules(rules, "candidate rules")
                .expect("valid")
                .len(),
            1
        );
    }

    const RULES: &str = r#"
rules:
  - name: eu-orders
    pattern:
      type: ["order.placed"]
      data:
        region: ["eu"]
    targets:
      - topic: orders
  - name: all-orders
    pattern:
      type: ["order.placed", "order.cancelled"]
    targets:
      - topic: orders
      - topic: audit
  - name: off
    enabled: false
    pattern:
      type: ["order.placed"]
    targets:
      - topic: never
  - name: other-bus
    bus: payments
    pattern:
      type: ["order.placed"]
    targets:
      - topic: payments
"#;

    fn set() -> RuleSet {
        let rules = parse_rules(RULES, Path::new("rules.yaml")).expect("valid");
        RuleSet::from_rules(rules, &[]).expect("unique")
    }

    fn topics(routes: &Routes) -> Vec<(&str, Vec<&str>)> {
        routes
            .iter()
            .map(|(t, r)| (t.as_str(), r.iter().map(String::as_str).collect()))
            .collect()
    }

    #[test]
    fn routes_to_every_matching_rules_targets() {
        let view = json!({"type": "order.placed", "data": {"region": "eu"}});
        assert_eq!(
            topics(&set().route("default", &view)),
            vec![
                ("audit", vec!["all-orders"]),
                ("orders", vec!["all-orders", "eu-orders"])
            ]
        );
        let view = json!({"type": "order.placed", "data": {"region": "us"}});
        assert_eq!(
            topics(&set().route("default", &view)),
            vec![
                ("audit", vec!["all-orders"]),
                ("orders", vec!["all-orders"])
            ]
        );
    }

    #[test]
    fn only_enabled_rules_of_the_bus_apply() {
        let view = json!({"type": "order.placed"});
        assert_eq!(
            topics(&set().route("payments", &view)),
            vec![("payments", vec!["other-bus"])]
        );
        assert!(set().has_bus("payments"));
        assert!(set().has_bus("default"));
        assert!(!set().has_bus("nope"));
    }

    #[test]
    fn malformed_yaml_names_file_and_line() {
        let err = parse_rules(
            "rules:\n  - name: a\n    pattern: {type: [x]\n",
            Path::new("r.yaml"),
        )
        .expect_err("malformed");
        let text = err.to_string();
        assert!(text.starts_with("r.yaml:4: "), "{text}");
        assert!(text.contains("line"), "{text}");
    }

    #[test]
    fn semantic_errors_name_file_rule_and_field() {
        let err = parse_rules(
            "rules:\n  - name: bad\n    pattern:\n      data:\n        total: 5\n    targets: [{topic: t}]\n",
            Path::new("r.yaml"),
        )
        .expect_err("leaf must be a list");
        let text = err.to_string();
        assert!(
            text.contains("r.yaml:2: rule 'bad': field 'pattern.data.total':"),
            "{text}"
        );
    }

    #[test]
    fn duplicate_rule_names_are_refused() {
        let mut rules = parse_rules(RULES, Path::new("a.yaml")).expect("valid");
        rules.extend(parse_rules(RULES, Path::new("b.yaml")).expect("valid"));
        let err = RuleSet::from_rules(rules, &[]).expect_err("duplicate");
        assert!(err.to_string().contains("a.yaml"), "{err}");
    }

    #[test]
    fn rules_need_targets_and_valid_topic_names() {
        let err = parse_rules(
            "rules:\n  - name: x\n    pattern: {type: [a]}\n    targets: []\n",
            Path::new("r"),
        )
        .expect_err("no targets");
        assert!(err.to_string().contains("targets"), "{err}");
        let err = parse_rules(
            "rules:\n  - name: x\n    pattern: {type: [a]}\n    targets: [{topic: 'a/b'}]\n",
            Path::new("r"),
        )
        .expect_err("bad topic");
        assert!(err.to_string().contains("targets"), "{err}");
    }

    #[test]
    fn the_shipped_sample_rules_load() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules.yaml");
        let set = RuleSet::load(&[path], &[]).expect("deploy/rules.yaml is valid");
        assert!(!set.rules().is_empty());
    }
}
