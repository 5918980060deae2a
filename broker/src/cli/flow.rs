//! `switchyard flow ID`: what happened to a business flow — every event of
//! it (found by event id, trace id or correlation id) with each recorded
//! step, as a tree with times relative to the flow's first step.

use super::admin::admin;
use super::{Connection, Failure};
use std::fmt::Write as _;
use switchyard_broker::config::format_rfc3339_ms;
use switchyard_sdk::proto;

/// Flags of `flow`.
#[derive(Debug, clap::Args)]
pub(crate) struct FlowArgs {
    #[command(flatten)]
    connection: Connection,
    /// An event id, a trace id (32 hex digits, as Jaeger shows it) or a
    /// correlation id (the broker's `flow.correlation`, e.g. an order id).
    query: String,
    /// Most events shown.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Print the flow as JSON (one object per event) instead of a tree.
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(args: FlowArgs) -> Result<(), Failure> {
    let flow = admin(&args.connection)
        .await?
        .get_flow(proto::GetFlowRequest {
            query: args.query.clone(),
            limit: args.limit,
        })
        .await?
        .into_inner();
    if flow.events.is_empty() {
        return Err(anyhow::anyhow!(
            "no flow found for {:?}: give an event id, a trace id or a correlation id (is flow.correlation set on the broker? recorded steps are kept for flow.retention)",
            args.query
        )
        .into());
    }
    if args.json {
        for event in &flow.events {
            println!("{}", event_json(event));
        }
    } else {
        print!("{}", render(&args.query, &flow));
    }
    Ok(())
}

fn position(p: &proto::FlowPosition) -> String {
    format!("{}/{}@{}", p.topic, p.partition, p.offset)
}

/// One step as a line of text.
fn describe(step: &proto::FlowStep) -> String {
    let targets = step
        .targets
        .iter()
        .map(position)
        .collect::<Vec<_>>()
        .join(", ");
    match step.step.as_str() {
        "published" => {
            let mut line = format!(
                "published on {} by {}; rules [{}]",
                step.bus,
                step.publisher,
                step.rules.join(", ")
            );
            if step.scheduled_for_unix_ms > 0 {
                let _ = write!(
                    line,
                    "; scheduled for {}",
                    format_rfc3339_ms(step.scheduled_for_unix_ms)
                );
            } else {
                let _ = write!(line, " → {targets}");
            }
            line
        }
        "fired" => format!("fired; rules [{}] → {targets}", step.rules.join(", ")),
        "delivered" => format!(
            "delivered to {} (attempt {})",
            step.subscription, step.attempt
        ),
        "acked" => format!("acked by {}", step.subscription),
        "nacked" => format!("nacked by {}: {}", step.subscription, step.reason),
        "dead_lettered" => format!(
            "dead-lettered by {} to {}: {}",
            step.subscription, step.dead_letter_topic, step.reason
        ),
        "redriven" => format!("redriven to {} → {targets}", step.subscription),
        other => other.to_string(),
    }
}

/// The flow as a tree: one branch per event, one leaf per step.
fn render(query: &str, flow: &proto::Flow) -> String {
    let times = || {
        flow.events
            .iter()
            .flat_map(|e| &e.steps)
            .map(|s| s.at_unix_ms)
    };
    let start = times().min().unwrap_or_default();
    let end = times().max().unwrap_or(start);
    let mut out = format!(
        "flow {query}: {} event(s) from {} over {} ms\n",
        flow.events.len(),
        format_rfc3339_ms(start),
        end - start
    );
    for event in &flow.events {
        let event_type = event
            .steps
            .iter()
            .find(|s| !s.event_type.is_empty())
            .map_or("?", |s| s.event_type.as_str());
        let trace = event
            .steps
            .iter()
            .find(|s| !s.trace_id.is_empty())
            .map(|s| format!("  trace {}", s.trace_id))
            .unwrap_or_default();
        let _ = writeln!(out, "{event_type}  {} {}{trace}", event.source, event.id);
        for (i, step) in event.steps.iter().enumerate() {
            let branch = if i + 1 == event.steps.len() {
                "└─"
            } else {
                "├─"
            };
            let _ = writeln!(
                out,
                "  {branch} +{:>6} ms  {}",
                step.at_unix_ms - start,
                describe(step)
            );
        }
    }
    out
}

fn event_json(event: &proto::FlowEvent) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = event
        .steps
        .iter()
        .map(|s| {
            serde_json::json!({
                "at": format_rfc3339_ms(s.at_unix_ms),
                "step": s.step,
                "text": describe(s),
                "subscription": s.subscription,
                "attempt": s.attempt,
                "position": s.position.as_ref().map(position),
            })
        })
        .collect();
    serde_json::json!({"source": event.source, "id": event.id, "steps": steps})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(at: i64, kind: &str) -> proto::FlowStep {
        proto::FlowStep {
            at_unix_ms: at,
            step: kind.into(),
            subscription: "billing".into(),
            attempt: 1,
            ..Default::default()
        }
    }

    #[test]
    fn a_flow_renders_as_a_tree_with_relative_times() {
        let published = proto::FlowStep {
            bus: "default".into(),
            event_type: "order.placed".into(),
            publisher: "shop".into(),
            rules: vec!["orders".into()],
            targets: vec![proto::FlowPosition {
                topic: "orders".into(),
                partition: 1,
                offset: 7,
            }],
            ..step(1_000, "published")
        };
        let flow = proto::Flow {
            events: vec![proto::FlowEvent {
                source: "/shop".into(),
                id: "e1".into(),
                steps: vec![published, step(1_004, "delivered"), step(1_010, "acked")],
            }],
        };
        let text = render("1234", &flow);
        assert!(text.starts_with("flow 1234: 1 event(s) from "), "{text}");
        assert!(text.contains("over 10 ms"), "{text}");
        assert!(text.contains("order.placed  /shop e1"), "{text}");
        assert!(
            text.contains(
                "├─ +     0 ms  published on default by shop; rules [orders] → orders/1@7"
            ),
            "{text}"
        );
        assert!(
            text.contains("├─ +     4 ms  delivered to billing (attempt 1)"),
            "{text}"
        );
        assert!(text.contains("└─ +    10 ms  acked by billing"), "{text}");
    }
}
