//! Two broker nodes over one Kafka-protocol broker (tansu): any node takes
//! publishes, subscriptions defined through one node exist on the other,
//! a subscription's partitions are split between the nodes its consumers
//! are connected to, and when a node dies mid-stream its partitions move
//! to the survivor: everything is delivered and acked, nothing is lost.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use support::*;
use switchyard_sdk::proto;

const PARTITIONS: u32 = 4;
const EVENTS: usize = 120;

/// Two nodes' directories, each with a config for the shared cluster.
fn node_dirs(tansu: &Tansu) -> [tempfile::TempDir; 2] {
    [(); 2].map(|()| {
        let dir = tempfile::tempdir().expect("tempdir");
        node_config(dir.path(), tansu);
        dir
    })
}

/// A node's config: the shared cluster, a short session timeout so a dead
/// node's partitions move within seconds.
fn node_config(dir: &Path, tansu: &Tansu) {
    write_config(
        dir,
        &format!(
            "{}
topics:
  - name: orders
    partitions: {PARTITIONS}
subscriptions:
  - name: billing
    topic: orders
    ack_deadline: 30s
",
            kafka_backend_yaml(
                &tansu.brokers,
                "cluster.",
                &[("session.timeout.ms", "6000")]
            )
        ),
        ORDER_RULES,
    );
}

async fn publish(node: &BrokerProcess, ids: impl Iterator<Item = usize>) {
    let events = ids
        .map(|i| {
            event(
                &format!("e{i}"),
                "order.placed",
                &format!("customer-{i}"),
                serde_json::json!({"n": i}),
            )
        })
        .collect();
    publish_stored(&node.client().await, events).await;
}

/// What one node's consumer saw.
#[derive(Default)]
struct Seen {
    partitions: BTreeSet<u32>,
    acked: BTreeSet<String>,
}

fn event_id(delivery: &proto::Delivery) -> String {
    delivery.event.as_ref().expect("event").id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_shared_and_a_dead_nodes_partitions_move_without_loss() {
    let tansu = Tansu::start();
    let [dir_a, dir_b] = node_dirs(&tansu);
    let node_a = BrokerProcess::start(dir_a.path());
    let mut node_b = BrokerProcess::start(dir_b.path());

    // Either node takes publishes.
    publish(&node_a, 0..EVENTS / 2).await;
    publish(&node_b, EVENTS / 2..EVENTS).await;

    // A consumer on A takes deliveries but holds them (5 credits), so the
    // events are still there when B's consumer joins and the partitions
    // are split.
    let mut on_a = RawStream::open(&node_a.url, "billing", 5)
        .await
        .expect("open on A");
    for _ in 0..5 {
        on_a.next().await.expect("a delivery on A");
    }
    let mut on_b = RawStream::open(&node_b.url, "billing", 5)
        .await
        .expect("open on B");
    let mut seen: BTreeMap<&str, Seen> = BTreeMap::new();
    let mut b_unacked = 0;
    // Both consume and ack until B acked 20 events and holds 5 unacked
    // ones; then B dies.
    while seen.get("B").map_or(0, |s| s.acked.len()) < 20 || b_unacked < 5 {
        tokio::select! {
            delivery = on_a.next() => {
                let delivery = delivery.expect("a delivery on A");
                let a = seen.entry("A").or_default();
                a.partitions.insert(delivery.partition);
                a.acked.insert(event_id(&delivery));
                on_a.ack(vec![delivery.delivery_id]).await;
            }
            delivery = on_b.next() => {
                let delivery = delivery.expect("a delivery on B");
                let b = seen.entry("B").or_default();
                b.partitions.insert(delivery.partition);
                if b.acked.len() < 20 {
                    b.acked.insert(event_id(&delivery));
                    on_b.ack(vec![delivery.delivery_id]).await;
                } else {
                    b_unacked += 1;
                }
            }
        }
    }
    let b_partitions = seen["B"].partitions.clone();
    node_b.kill();
    drop(on_b);

    // A's consumer gets the rest, including B's partitions and B's
    // unacked deliveries.
    let mut after_kill = BTreeSet::new();
    let mut all_acked: BTreeSet<String> = seen.values().flat_map(|s| s.acked.clone()).collect();
    while all_acked.len() < EVENTS {
        let delivery = on_a.next().await.expect("a delivery on A after B died");
        after_kill.insert(delivery.partition);
        all_acked.insert(event_id(&delivery));
        on_a.ack(vec![delivery.delivery_id]).await;
    }
    let expected: BTreeSet<String> = (0..EVENTS).map(|i| format!("e{i}")).collect();
    assert_eq!(all_acked, expected, "every published event acked");
    assert!(
        !b_partitions.is_empty() && b_partitions.is_subset(&after_kill),
        "B's partitions {b_partitions:?} moved to A (A delivered from {after_kill:?} after the kill)"
    );
    assert!(
        b_partitions.len() < PARTITIONS as usize,
        "B delivered from {b_partitions:?} only: the partitions were split while both nodes were up"
    );
    let admin = node_a.admin().await;
    until_fully_committed(&admin, "billing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_created_or_deleted_through_one_node_follow_on_the_other() {
    let tansu = Tansu::start();
    let [dir_a, dir_b] = node_dirs(&tansu);
    let node_a = BrokerProcess::start(dir_a.path());
    let node_b = BrokerProcess::start(dir_b.path());
    let mut admin_a = node_a.admin().await;
    let admin_b = node_b.admin().await;

    admin_a
        .create_subscription(proto::CreateSubscriptionRequest {
            subscription: Some(proto::Subscription {
                name: "audit".into(),
                topic: "orders".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("create on A");
    eventually("audit known on B", || {
        let mut admin = admin_b.clone();
        async move {
            admin
                .describe_subscription(proto::DescribeSubscriptionRequest {
                    name: "audit".into(),
                })
                .await
                .is_ok()
        }
    })
    .await;

    // Published through A, delivered by B.
    publish(&node_a, 0..3).await;
    let mut on_b = RawStream::open(&node_b.url, "audit", 10)
        .await
        .expect("open on B");
    let mut ids = BTreeSet::new();
    while ids.len() < 3 {
        let delivery = on_b.next().await.expect("delivery");
        ids.insert(event_id(&delivery));
        on_b.ack(vec![delivery.delivery_id]).await;
    }
    // The flow history is shared too: A sees what B delivered.
    eventually("A's flow of e0 shows B's delivery and ack", || {
        let admin = admin_a.clone();
        async move {
            let flow = admin
                .clone()
                .get_flow(proto::GetFlowRequest {
                    query: "e0".into(),
                    limit: 0,
                })
                .await
                .expect("get flow")
                .into_inner();
            let steps: Vec<(String, String)> = flow
                .events
                .iter()
                .flat_map(|e| &e.steps)
                .map(|s| (s.step.clone(), s.subscription.clone()))
                .collect();
            steps.contains(&("delivered".into(), "audit".into()))
                && steps.contains(&("acked".into(), "audit".into()))
        }
    })
    .await;

    admin_b
        .clone()
        .delete_subscription(proto::DeleteSubscriptionRequest {
            name: "audit".into(),
        })
        .await
        .expect("delete on B");
    eventually("audit gone on A", || {
        let mut admin = admin_a.clone();
        async move {
            admin
                .describe_subscription(proto::DescribeSubscriptionRequest {
                    name: "audit".into(),
                })
                .await
                .is_err_and(|e| e.code() == tonic::Code::NotFound)
        }
    })
    .await;
}

fn scheduled(id: &str, delay: std::time::Duration) -> proto::CloudEvent {
    switchyard_sdk::Event::new("/tests", "order.placed")
        .id(id)
        .partition_key(id)
        .deliver_after(delay)
        .json(&serde_json::json!({"order": id}))
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_fires_scheduled_events_and_another_takes_over_when_it_dies() {
    use std::time::Duration;
    let tansu = Tansu::start();
    let [dir_a, dir_b] = node_dirs(&tansu);
    let node_a = BrokerProcess::start(dir_a.path());
    node_a
        .client()
        .await
        .publish("default", scheduled("s1", Duration::from_secs(4)))
        .await
        .expect("schedule through A");
    let node_b = BrokerProcess::start(dir_b.path());
    let mut on_b = RawStream::open(&node_b.url, "billing", 10)
        .await
        .expect("open on B");
    let first = on_b.next().await.expect("s1 fired");
    assert_eq!(event_id(&first), "s1");
    on_b.ack(vec![first.delivery_id]).await;
    // Fired by one node only: nothing else comes.
    let again = tokio::time::timeout(Duration::from_secs(3), on_b.next()).await;
    assert!(again.is_err(), "s1 fired twice: {again:?}");

    drop(on_b);

    // The owner dies; the other node fires what comes next.
    let (mut owner, survivor) = if owns_schedule(&node_a) {
        (node_a, node_b)
    } else {
        (node_b, node_a)
    };
    assert!(!owns_schedule(&survivor), "one owner at a time");
    let mut on_survivor = RawStream::open(&survivor.url, "billing", 10)
        .await
        .expect("open on the survivor");
    owner.kill();
    survivor
        .client()
        .await
        .publish("default", scheduled("s2", Duration::from_secs(1)))
        .await
        .expect("schedule through the survivor");
    let second = on_survivor
        .next()
        .await
        .expect("s2 fired after the owner died");
    assert_eq!(event_id(&second), "s2");
    assert!(
        owns_schedule(&survivor),
        "the survivor took the schedule over"
    );
}

/// Whether the node's log says it fires scheduled events now.
fn owns_schedule(node: &BrokerProcess) -> bool {
    node.log()
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|entry| entry["fields"]["message"].as_str().map(str::to_string))
        .find(|message| message.contains("fires scheduled events"))
        .is_some_and(|message| message == "this node now fires scheduled events")
}
