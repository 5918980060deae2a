//! The flow history: every step of every event — published, delivered per
//! attempt, nacked, dead-lettered, redriven, acked — is recorded once,
//! found by correlation id, event id or trace id, printed by
//! `switchyard flow`, and still there after a restart; a whole order saga
//! is recorded completely (step counts equal the broker's counters).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;
use support::*;
use switchyard_sdk::proto;

const CONFIG: &str = "
topics:
  - name: orders
    partitions: 2
  - name: orders.dlq
    partitions: 1
subscriptions:
  - name: billing
    topic: orders
    max_attempts: 2
    dead_letter_topic: orders.dlq
    backoff: {initial: 10ms, max: 10ms, jitter: 0.0}
flow:
  correlation: data.order
";

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn order_event(id: &str, order: &str) -> proto::CloudEvent {
    let mut event = event(id, "order.placed", id, serde_json::json!({"order": order}));
    event.extensions.insert(
        "traceparent".into(),
        format!("00-{TRACE}-00f067aa0ba902b7-01"),
    );
    event
}

async fn flow(admin: &switchyard_sdk::Admin, query: &str) -> Vec<proto::FlowEvent> {
    admin
        .clone()
        .get_flow(proto::GetFlowRequest {
            query: query.into(),
            limit: 0,
        })
        .await
        .expect("get flow")
        .into_inner()
        .events
}

/// The steps of event `id` in `events`, as "step" or "step:subscription:attempt".
fn steps_of(events: &[proto::FlowEvent], id: &str) -> Vec<String> {
    events
        .iter()
        .find(|e| e.id == id)
        .map(|e| {
            e.steps
                .iter()
                .map(|s| match s.step.as_str() {
                    "delivered" => format!("delivered:{}", s.attempt),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

const PAID: [&str; 3] = ["published", "delivered:1", "acked"];
const FAILED_THEN_REDRIVEN: [&str; 9] = [
    "published",
    "delivered:1",
    "nacked",
    "delivered:2",
    "nacked",
    "dead_lettered",
    "redriven",
    "delivered:1",
    "acked",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_of_a_flow_is_recorded_once_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), CONFIG, ORDER_RULES);
    let mut broker = BrokerProcess::start(dir.path());
    let client = broker.client().await;
    for (id, order) in [("paid", "o-1"), ("failing", "o-1"), ("other", "o-2")] {
        client
            .publish("default", order_event(id, order))
            .await
            .expect("publish");
    }
    let mut stream = RawStream::open(&broker.url, "billing", 10)
        .await
        .expect("open");
    let mut settled = 0;
    while settled < 4 {
        let delivery = stream.next().await.expect("delivery");
        let id = delivery.event.as_ref().expect("event").id.clone();
        if id == "failing" {
            stream.nack(delivery.delivery_id, "card declined").await;
        } else {
            stream.ack(vec![delivery.delivery_id]).await;
        }
        settled += 1;
    }
    let admin = broker.admin().await;
    until_dead_letters(&admin, "billing", 1).await;
    assert_eq!(redrive_all(&admin, "billing").await, 1);
    let again = stream.next().await.expect("redelivery");
    assert_eq!(again.event.as_ref().expect("event").id, "failing");
    stream.ack(vec![again.delivery_id]).await;

    eventually("the flow of o-1 is complete", || async {
        let events = flow(&admin, "o-1").await;
        steps_of(&events, "failing") == FAILED_THEN_REDRIVEN
    })
    .await;
    let by_correlation = flow(&admin, "o-1").await;
    let ids: Vec<&str> = by_correlation.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["paid", "failing"], "o-2's event is not in o-1's flow");
    assert_eq!(steps_of(&by_correlation, "paid"), PAID);
    let published = &by_correlation[0].steps[0];
    assert_eq!(published.publisher, "anonymous");
    assert_eq!(published.rules, ["orders"]);
    assert_eq!(published.trace_id, TRACE);
    assert_eq!(published.correlation, "o-1");
    let dead = by_correlation[1]
        .steps
        .iter()
        .find(|s| s.step == "dead_lettered")
        .expect("dead-lettered step");
    assert_eq!(dead.dead_letter_topic, "orders.dlq");
    assert_eq!(dead.reason, "card declined");

    let by_event = flow(&admin, "other").await;
    assert_eq!(by_event.len(), 1);
    assert_eq!(steps_of(&by_event, "other"), PAID);
    assert_eq!(
        flow(&admin, TRACE).await.len(),
        3,
        "all three share the trace"
    );

    let tree = broker.cli(&["flow", "o-1"]);
    assert!(tree.starts_with("flow o-1: 2 event(s)"), "{tree}");
    assert!(tree.contains("order.placed  /tests failing"), "{tree}");
    assert!(
        tree.contains("dead-lettered by billing to orders.dlq: card declined"),
        "{tree}"
    );

    drop(stream);
    broker.stop();
    let broker = BrokerProcess::start(dir.path());
    let admin = broker.admin().await;
    let after = flow(&admin, "o-1").await;
    assert_eq!(steps_of(&after, "failing"), FAILED_THEN_REDRIVEN);
    assert_eq!(steps_of(&after, "paid"), PAID);
}

/// Counts of steps by kind over the flows of orders 1..=6, each event once;
/// in the broker's terms: an event published for later is `scheduled`, and
/// is `routed` when it fires, as one published for now is at once.
async fn saga_step_counts(admin: &switchyard_sdk::Admin) -> BTreeMap<String, u64> {
    let mut events = BTreeMap::new();
    for n in 1..=6 {
        for event in flow(admin, &format!("order-{n}")).await {
            events.insert((event.source.clone(), event.id.clone()), event);
        }
    }
    let mut counts = BTreeMap::new();
    for step in events.values().flat_map(|e| &e.steps) {
        let kind = match step.step.as_str() {
            "published" if step.scheduled_for_unix_ms > 0 => "scheduled",
            "published" | "fired" => "routed",
            other => other,
        };
        *counts.entry(kind.to_string()).or_default() += 1;
    }
    counts
}

/// The same transitions as counted by the broker's own metrics.
fn counted_by_metrics(broker: &BrokerProcess) -> BTreeMap<String, u64> {
    let metrics = broker.metrics();
    [
        ("routed", "switchyard_events_published_total"),
        ("scheduled", "switchyard_events_scheduled_total"),
        ("delivered", "switchyard_deliveries_total"),
        ("acked", "switchyard_acks_total"),
        ("nacked", "switchyard_nacks_total"),
        ("dead_lettered", "switchyard_dead_letters_total"),
    ]
    .into_iter()
    .map(|(step, metric)| (step.to_string(), metric_total(&metrics, metric) as u64))
    .filter(|(_, count)| *count > 0)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_saga_run_is_recorded_every_hop_once_per_attempt() {
    // The order saga of examples/order-saga (flow.correlation: subject, the
    // order id), every path: completed, retried, declined and compensated,
    // out of stock, payment deadline passed, dead-lettered.
    let (_dir, broker) = start_saga_broker(&[]);
    let client = broker.client().await;
    let admin = broker.admin().await;
    let saga = run_saga(&client, 6, Duration::from_millis(1500)).await;

    // Every transition the broker counted is in the flows of the six
    // orders, exactly once (the flow writer is asynchronous: poll).
    eventually("the flows hold what the counters counted", || async {
        let recorded = saga_step_counts(&admin).await;
        let counted = counted_by_metrics(&broker);
        let same = counted
            .iter()
            .all(|(step, count)| recorded.get(step) == Some(count));
        if !same {
            eprintln!("recorded {recorded:?}\ncounted  {counted:?}");
        }
        same
    })
    .await;
    let recorded = saga_step_counts(&admin).await;
    assert!(
        recorded["nacked"] >= 1 && recorded["dead_lettered"] == 1,
        "{recorded:?}"
    );
    // Per event and subscription, deliveries are attempts 1, 2, ... once each.
    for n in 1..=6 {
        for event in flow(&admin, &format!("order-{n}")).await {
            let mut attempts: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
            for step in event.steps.iter().filter(|s| s.step == "delivered") {
                attempts
                    .entry(&step.subscription)
                    .or_default()
                    .push(step.attempt);
            }
            for (subscription, mut seen) in attempts {
                seen.sort_unstable();
                let expected: Vec<u32> = (1..=seen.len() as u32).collect();
                assert_eq!(seen, expected, "{} to {subscription}", event.id);
            }
        }
    }
    saga.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_flow_is_reported_not_invented() {
    let (_dir, broker) = start_broker(CONFIG, ORDER_RULES);
    assert!(
        flow(&broker.admin().await, "nothing-like-it")
            .await
            .is_empty()
    );
    let output = std::process::Command::new(binary())
        .args(["flow", "nothing-like-it"])
        .env("SWITCHYARD_URL", &broker.url)
        .output()
        .expect("run switchyard");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no flow found for \"nothing-like-it\""),
        "{stderr}"
    );
}
