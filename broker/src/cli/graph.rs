//! `switchyard graph`: the choreography map — event type → rule → topic →
//! subscription (→ dead-letter topic) — from the rules and subscriptions a
//! running broker has, as Graphviz DOT or Mermaid.

use super::admin::admin;
use super::{Connection, Failure};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use switchyard_sdk::proto;

/// Flags of `graph`.
#[derive(Debug, clap::Args)]
pub(crate) struct GraphArgs {
    #[command(flatten)]
    connection: Connection,
    /// Output format: `dot` (render with `dot -Tsvg`) or `mermaid` (paste
    /// into Markdown).
    #[arg(long, value_enum, default_value_t = Format::Dot)]
    format: Format,
}

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Graphviz DOT.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}

/// What a node is; decides its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    EventType,
    Rule,
    Topic,
    Subscription,
}

/// A node: what it is and its name.
type Node = (Kind, String);

/// The map: nodes (kind, name) and edges between them.
#[derive(Debug, Default, PartialEq)]
struct Choreography {
    nodes: BTreeSet<Node>,
    /// (from, to, label): a labelled edge is drawn dashed.
    edges: BTreeSet<(Node, Node, &'static str)>,
}

impl Choreography {
    fn build(rules: &[proto::Rule], subscriptions: &[proto::Subscription]) -> Choreography {
        let mut map = Choreography::default();
        for rule in rules.iter().filter(|r| r.enabled) {
            let rule_node = (Kind::Rule, rule.name.clone());
            for event_type in event_types(rule) {
                map.edge((Kind::EventType, event_type), rule_node.clone(), "");
            }
            for topic in &rule.targets {
                map.edge(rule_node.clone(), (Kind::Topic, topic.clone()), "");
            }
        }
        for subscription in subscriptions {
            let node = (Kind::Subscription, subscription.name.clone());
            map.edge((Kind::Topic, subscription.topic.clone()), node.clone(), "");
            if !subscription.dead_letter_topic.is_empty() {
                let dead = (Kind::Topic, subscription.dead_letter_topic.clone());
                map.edge(node, dead, "dead letters");
            }
        }
        map
    }

    fn edge(&mut self, from: Node, to: Node, label: &'static str) {
        self.nodes.insert(from.clone());
        self.nodes.insert(to.clone());
        self.edges.insert((from, to, label));
    }

    /// A stable identifier for a node (its position).
    fn id(&self, node: &Node) -> usize {
        self.nodes.iter().position(|n| n == node).unwrap_or(0)
    }

    fn dot(&self) -> String {
        let mut out = String::from("digraph switchyard {\n  rankdir=LR;\n");
        for (i, (kind, name)) in self.nodes.iter().enumerate() {
            let (shape, prefix) = match kind {
                Kind::EventType => ("ellipse", ""),
                Kind::Rule => ("diamond", "rule "),
                Kind::Topic => ("cylinder", "topic "),
                Kind::Subscription => ("box", "subscription "),
            };
            let _ = writeln!(
                out,
                "  n{i} [shape={shape}, label={:?}];",
                format!("{prefix}{name}")
            );
        }
        for (from, to, label) in &self.edges {
            let (a, b) = (self.id(from), self.id(to));
            match *label {
                "" => {
                    let _ = writeln!(out, "  n{a} -> n{b};");
                }
                label => {
                    let _ = writeln!(out, "  n{a} -> n{b} [style=dashed, label={label:?}];");
                }
            }
        }
        out.push_str("}\n");
        out
    }

    fn mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for (i, (kind, name)) in self.nodes.iter().enumerate() {
            let name = name.replace('"', "#quot;");
            let node = match kind {
                Kind::EventType => format!("n{i}([\"{name}\"])"),
                Kind::Rule => format!("n{i}{{\"rule {name}\"}}"),
                Kind::Topic => format!("n{i}[(\"topic {name}\")]"),
                Kind::Subscription => format!("n{i}[[\"{name}\"]]"),
            };
            let _ = writeln!(out, "  {node}");
        }
        for (from, to, label) in &self.edges {
            let (a, b) = (self.id(from), self.id(to));
            match *label {
                "" => {
                    let _ = writeln!(out, "  n{a} --> n{b}");
                }
                label => {
                    let _ = writeln!(out, "  n{a} -. {label} .-> n{b}");
                }
            }
        }
        out
    }
}

/// The event types a rule listens to, from its pattern's `type` field:
/// exact values, `prefix*`, `*suffix`, or a summary of other matchers;
/// `any type on <bus>` when the pattern does not look at the type.
fn event_types(rule: &proto::Rule) -> Vec<String> {
    let pattern: serde_json::Value = serde_json::from_str(&rule.pattern_json).unwrap_or_default();
    let Some(matchers) = pattern.get("type").and_then(|t| t.as_array()) else {
        return vec![format!("any type on {}", rule.bus)];
    };
    matchers
        .iter()
        .map(|matcher| match matcher {
            serde_json::Value::String(exact) => exact.clone(),
            serde_json::Value::Object(op) => match (op.get("prefix"), op.get("suffix")) {
                (Some(serde_json::Value::String(prefix)), _) => format!("{prefix}*"),
                (_, Some(serde_json::Value::String(suffix))) => format!("*{suffix}"),
                _ => format!("type {matcher}"),
            },
            other => format!("type {other}"),
        })
        .collect()
}

/// Prints the map of the broker at `--url`.
pub(super) async fn run(args: GraphArgs) -> Result<(), Failure> {
    let mut admin = admin(&args.connection).await?;
    let rules = admin
        .list_rules(proto::ListRulesRequest::default())
        .await?
        .into_inner()
        .rules;
    let subscriptions = admin
        .list_subscriptions(proto::ListSubscriptionsRequest::default())
        .await?
        .into_inner()
        .subscriptions;
    let map = Choreography::build(&rules, &subscriptions);
    print!(
        "{}",
        match args.format {
            Format::Dot => map.dot(),
            Format::Mermaid => map.mermaid(),
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, pattern: &str, targets: &[&str]) -> proto::Rule {
        proto::Rule {
            name: name.into(),
            bus: "default".into(),
            pattern_json: pattern.into(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            enabled: true,
            ..Default::default()
        }
    }

    fn sample() -> Choreography {
        let rules = [
            rule("paid", r#"{"type":["payment.succeeded"]}"#, &["shipments"]),
            rule("stock", r#"{"type":[{"prefix":"stock."}]}"#, &["inventory"]),
            rule("audit", r#"{"source":["/shop"]}"#, &["audit"]),
        ];
        let subscriptions = [proto::Subscription {
            name: "shipping".into(),
            topic: "shipments".into(),
            dead_letter_topic: "shipping.dlq".into(),
            ..Default::default()
        }];
        Choreography::build(&rules, &subscriptions)
    }

    #[test]
    fn maps_types_rules_topics_subscriptions_and_dead_letters() {
        let dot = sample().dot();
        for expected in [
            r#"label="payment.succeeded""#,
            r#"label="stock.*""#,
            r#"label="any type on default""#,
            r#"[shape=diamond, label="rule paid"]"#,
            r#"[shape=cylinder, label="topic shipping.dlq"]"#,
            r#"[shape=box, label="subscription shipping"]"#,
            r#"[style=dashed, label="dead letters"]"#,
        ] {
            assert!(dot.contains(expected), "{expected} in\n{dot}");
        }
        assert_eq!(dot.matches(" -> ").count(), 8, "{dot}");
    }

    #[test]
    fn mermaid_has_the_same_edges() {
        let mermaid = sample().mermaid();
        assert!(mermaid.starts_with("flowchart LR\n"));
        assert_eq!(mermaid.matches(" --> ").count(), 7, "{mermaid}");
        assert_eq!(mermaid.matches(" -. dead letters .-> ").count(), 1);
        assert!(mermaid.contains(r#"{"rule paid"}"#), "{mermaid}");
    }
}
