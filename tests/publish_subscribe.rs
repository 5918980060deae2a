//! End to end through the real binary: publish → route → durable topic →
//! subscription stream → ack, with credits, shared consumers, and resume.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use support::*;
use switchyard_sdk::proto;

const CONFIG: &str = "
topics:
  - name: orders
    partitions: 4
subscriptions:
  - name: billing
    topic: orders
    max_in_flight: 500
  - name: shipping
    topic: orders
    max_in_flight: 5
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_arrive_once_in_partition_order_and_stay_acked() {
    let (_dir, broker) = start_broker(CONFIG, ORDER_RULES);
    let client = broker.client().await;
    let mut published = HashSet::new();
    for batch in 0..20 {
        let events: Vec<_> = (0..500)
            .map(|i| {
                let n = batch * 500 + i;
                event(
                    &format!("e{n}"),
                    "order.placed",
                    &format!("k{}", n % 50),
                    serde_json::json!({ "seq": n }),
                )
            })
            .collect();
        for result in client
            .publish_batch("default", events)
            .await
            .expect("publish")
        {
            let published_event = result.expect("stored");
            assert_eq!(published_event.rules, vec!["orders"]);
            assert_eq!(published_event.offsets.len(), 1);
            published.insert(published_event.id);
        }
    }
    assert_eq!(published.len(), 10_000);

    let mut stream = RawStream::open(&broker.url, "billing", 500)
        .await
        .expect("open");
    let mut received = HashSet::new();
    let mut last_offset: BTreeMap<u32, u64> = BTreeMap::new();
    let mut last_seq_per_key: BTreeMap<String, u64> = BTreeMap::new();
    let mut pending_acks = Vec::new();
    while received.len() < 10_000 {
        let delivery = stream.next().await.expect("delivery");
        assert_eq!(delivery.attempt, 1, "no failures, so no redeliveries");
        assert_eq!(delivery.rules, vec!["orders"]);
        if let Some(previous) = last_offset.insert(delivery.partition, delivery.offset) {
            assert!(delivery.offset > previous, "per-partition order");
        }
        let event = delivery.event.clone().expect("event");
        let key = event.extensions["partitionkey"].clone();
        let seq: u64 = match event.data {
            Some(proto::cloud_event::Data::BinaryData(bytes)) => {
                serde_json::from_slice::<serde_json::Value>(&bytes).expect("json")["seq"]
                    .as_u64()
                    .expect("seq")
            }
            other => panic!("unexpected data {other:?}"),
        };
        if let Some(previous) = last_seq_per_key.insert(key, seq) {
            assert!(seq > previous, "events of one key arrive in publish order");
        }
        assert!(received.insert(event.id), "delivered once");
        pending_acks.push(delivery.delivery_id);
        if pending_acks.len() >= 100 {
            stream.ack(std::mem::take(&mut pending_acks)).await;
        }
    }
    stream.ack(pending_acks).await;
    assert_eq!(received, published);

    let mut admin = broker.admin().await;
    until_fully_committed(&admin, "billing").await;
    let description = describe(&mut admin, "billing").await;
    assert_eq!(description.total_lag, 0);
    assert_eq!(
        description
            .partitions
            .iter()
            .map(|p| p.end_offset)
            .sum::<u64>(),
        10_000
    );
    drop(stream);

    // A second run receives nothing old: the first thing it gets is an
    // event published after it connected.
    let mut again = RawStream::open(&broker.url, "billing", 10)
        .await
        .expect("reopen");
    client
        .publish(
            "default",
            event(
                "sentinel",
                "order.placed",
                "k0",
                serde_json::json!({"seq": 0}),
            ),
        )
        .await
        .expect("sentinel");
    let first = again.next().await.expect("delivery");
    assert_eq!(first.event.expect("event").id, "sentinel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_of_one_subscription_share_its_events() {
    let (_dir, broker) = start_broker(CONFIG, ORDER_RULES);
    let client = broker.client().await;
    let seen: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut runs = Vec::new();
    for consumer in 0..2 {
        let seen = Arc::clone(&seen);
        let stop = Arc::clone(&stop);
        let subscription = client.subscribe("shipping").max_in_flight(5);
        runs.push(tokio::spawn(async move {
            subscription
                .run_until(
                    move |delivery| {
                        let seen = Arc::clone(&seen);
                        async move {
                            tokio::task::yield_now().await;
                            seen.lock()
                                .expect("lock")
                                .push((consumer, delivery.event.id));
                            Ok::<(), String>(())
                        }
                    },
                    async move { stop.notified().await },
                )
                .await
        }));
    }
    let mut admin = broker.admin().await;
    eventually("both consumers connected", || {
        let mut admin = admin.clone();
        async move { describe(&mut admin, "shipping").await.consumers == 2 }
    })
    .await;
    let events: Vec<_> = (0..400)
        .map(|n| {
            event(
                &format!("s{n}"),
                "order.placed",
                &format!("k{n}"),
                serde_json::json!({}),
            )
        })
        .collect();
    client
        .publish_batch("default", events)
        .await
        .expect("publish");
    eventually("all 400 handled", || {
        let seen = Arc::clone(&seen);
        async move { seen.lock().expect("lock").len() >= 400 }
    })
    .await;
    until_fully_committed(&admin, "shipping").await;
    stop.notify_waiters();
    for run in runs {
        run.await.expect("join").expect("clean stop");
    }
    let seen = seen.lock().expect("lock").clone();
    let ids: HashSet<&String> = seen.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), 400, "every event handled");
    assert_eq!(seen.len(), 400, "no event handled twice");
    for consumer in 0..2 {
        assert!(
            seen.iter().any(|(c, _)| *c == consumer),
            "consumer {consumer} got a share"
        );
    }
    assert_eq!(
        describe(&mut admin, "shipping").await.consumers,
        0,
        "streams closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_deliveries_come_again_after_a_reconnect() {
    let (_dir, broker) = start_broker(CONFIG, ORDER_RULES);
    let client = broker.client().await;
    let events: Vec<_> = (0..10)
        .map(|n| {
            event(
                &format!("r{n}"),
                "order.placed",
                "one-key",
                serde_json::json!({}),
            )
        })
        .collect();
    client
        .publish_batch("default", events)
        .await
        .expect("publish");
    let mut stream = RawStream::open(&broker.url, "billing", 100)
        .await
        .expect("open");
    let mut first = Vec::new();
    for _ in 0..10 {
        first.push(stream.next().await.expect("delivery"));
    }
    stream
        .ack(first[..5].iter().map(|d| d.delivery_id.clone()).collect())
        .await;
    let admin = broker.admin().await;
    eventually("five acked", || {
        let mut admin = admin.clone();
        async move { describe(&mut admin, "billing").await.total_lag == 5 }
    })
    .await;
    drop(stream);
    let mut stream = RawStream::open(&broker.url, "billing", 100)
        .await
        .expect("reopen");
    for expected in &first[5..] {
        let delivery = stream.next().await.expect("redelivery");
        assert_eq!(delivery.offset, expected.offset);
        assert_eq!(delivery.partition, expected.partition);
        assert_eq!(delivery.attempt, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republishing_an_event_is_flagged_as_a_duplicate() {
    let (_dir, broker) = start_broker(CONFIG, ORDER_RULES);
    let client = broker.client().await;
    let original = event("dup-1", "order.placed", "k", serde_json::json!({}));
    let first = client
        .publish("default", original.clone())
        .await
        .expect("publish");
    let second = client
        .publish("default", original.clone())
        .await
        .expect("publish again");
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(second.offsets, first.offsets, "points at the stored copy");
    let both = client
        .publish_batch(
            "default",
            vec![event("dup-2", "order.placed", "k", serde_json::json!({})); 2],
        )
        .await
        .expect("batch");
    assert!(!both[0].as_ref().expect("stored").duplicate);
    assert!(both[1].as_ref().expect("flagged").duplicate);
    let mut admin = broker.admin().await;
    let end: u64 = describe(&mut admin, "billing")
        .await
        .partitions
        .iter()
        .map(|p| p.end_offset)
        .sum();
    assert_eq!(end, 2, "each id stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_handler_gets_batches_and_only_its_failures_come_again() {
    let (_dir, broker) = start_broker(CONFIG, ORDER_RULES);
    let client = broker.client().await;
    let events = (0..12)
        .map(|n| {
            event(
                &format!("b{n}"),
                "order.placed",
                &format!("k{n}"),
                serde_json::json!({"n": n}),
            )
        })
        .collect();
    client
        .publish_batch("default", events)
        .await
        .expect("publish");
    // Each batch the handler got: (event id, attempt) per delivery.
    type Batches = Vec<Vec<(String, u32)>>;
    let seen: Arc<Mutex<Batches>> = Arc::default();
    let recorded = Arc::clone(&seen);
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let done = Arc::new(Mutex::new(Some(done)));
    let handled = client
        .subscribe("billing")
        .max_in_flight(20)
        .run_batches_until(
            4,
            std::time::Duration::from_millis(100),
            move |batch: Vec<switchyard_sdk::Received>| {
                let recorded = Arc::clone(&recorded);
                let done = Arc::clone(&done);
                async move {
                    let mut failures = switchyard_sdk::BatchFailures::new();
                    for received in &batch {
                        if received.event.id == "b7" && received.attempt == 1 {
                            failures = failures.fail(received, "not yet");
                        }
                    }
                    let mut seen = recorded.lock().expect("seen");
                    seen.push(
                        batch
                            .iter()
                            .map(|r| (r.event.id.clone(), r.attempt))
                            .collect(),
                    );
                    let count: usize = seen.iter().map(Vec::len).sum();
                    if count == 13
                        && let Some(done) = done.lock().expect("done").take()
                    {
                        let _ = done.send(());
                    }
                    if failures.is_empty() {
                        Ok(())
                    } else {
                        Err(failures)
                    }
                }
            },
            async move {
                let _ = tokio::time::timeout(TIMEOUT, finished).await;
            },
        );
    handled.await.expect("run");
    let seen = seen.lock().expect("seen").clone();
    assert!(seen.iter().all(|batch| batch.len() <= 4), "{seen:?}");
    assert!(
        seen.iter().any(|batch| batch.len() > 1),
        "batched: {seen:?}"
    );
    let deliveries: Vec<&(String, u32)> = seen.iter().flatten().collect();
    assert_eq!(
        deliveries.len(),
        13,
        "12 events, one of them twice: {seen:?}"
    );
    assert!(
        deliveries.contains(&&("b7".to_string(), 2)),
        "only the failed one came again"
    );
    let admin = broker.admin().await;
    until_fully_committed(&admin, "billing").await;
}
