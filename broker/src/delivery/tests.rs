//! Subscriptions over a real embedded log: delivery, credits, the ack
//! floor, redelivery on disconnect and durable offsets across reopen.

use super::*;
use crate::config::{BackoffConfig, StorageConfig};
use crate::log::EmbeddedLog;
use crate::model::StoredEvent;
use bytes::Bytes;

fn spec(name: &str, max_in_flight: u32) -> SubscriptionConfig {
    SubscriptionConfig {
        name: name.into(),
        topic: "orders".into(),
        max_in_flight,
        ack_deadline: Duration::from_secs(30),
        start: StartPosition::Earliest,
        max_attempts: None,
        backoff: BackoffConfig::default(),
        dead_letter_topic: None,
        ordering: Default::default(),
        rate_limit: None,
        filter: None,
        push: None,
    }
}

fn open(dir: &Path) -> (Arc<dyn EventLog>, Subscriptions) {
    let log: Arc<dyn EventLog> =
        Arc::new(EmbeddedLog::open(dir, &StorageConfig::default()).expect("log"));
    let subs = Subscriptions::open(
        dir,
        Arc::clone(&log),
        DeliveryConfig::default(),
        Default::default(),
        no_flow(&log),
    )
    .expect("subs");
    (log, subs)
}

async fn publish(log: &Arc<dyn EventLog>, count: usize) {
    let topic = TopicName::new("orders").expect("valid");
    let payloads = (0..count)
        .map(|i| {
            StoredEvent {
                bus: "default".into(),
                rules: vec![format!("r{i}")],
                ..Default::default()
            }
            .to_bytes()
        })
        .collect::<Vec<Bytes>>();
    log.append(&topic, 0, payloads).await.expect("append");
}

fn ids(batch: &[Delivery]) -> Vec<String> {
    batch.iter().map(|d| d.id.clone()).collect()
}

/// The ids without their consumer part: `partition.offset.attempt.epoch`.
fn places(batch: &[Delivery]) -> Vec<String> {
    batch
        .iter()
        .map(|d| {
            d.id.rsplit_once('.')
                .map_or(d.id.clone(), |(place, _)| place.to_string())
        })
        .collect()
}

#[tokio::test]
async fn credits_acks_and_durable_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (log, subs) = open(dir.path());
        log.create_topic(&TopicName::new("orders").expect("valid"), 1)
            .expect("topic");
        let sub = subs.create(spec("billing", 3)).expect("create");
        publish(&log, 5).await;
        let consumer = sub.connect(0).expect("connect");
        let first = consumer.next_batch().await.expect("batch");
        assert_eq!(
            places(&first),
            vec!["0.0.1.0", "0.1.1.0", "0.2.1.0"],
            "limited by 3 credits"
        );
        assert_eq!(first[1].record.rules, vec!["r1"]);
        // Ack 1 and 2 but not 0: credits free up, the floor stays at 0.
        consumer
            .settle(&ids(&first)[1..], &[], &[])
            .expect("settle");
        let second = consumer.next_batch().await.expect("batch");
        assert_eq!(places(&second), vec!["0.3.1.0", "0.4.1.0"]);
        subs.flush();
        assert_eq!(sub.describe().expect("describe").partitions[0].committed, 0);
        consumer
            .settle(&[first[0].id.clone()], &[], &[])
            .expect("settle");
        subs.flush();
        let described = sub.describe().expect("describe");
        assert_eq!(described.partitions[0].committed, 3);
        assert_eq!(described.partitions[0].lag, 2);
        assert_eq!(described.partitions[0].in_flight, 2);
        // Disconnect with 3 and 4 unacked.
        drop(consumer);
        log.close();
    }
    let (_log, subs) = open(dir.path());
    let sub = subs.get("billing").expect("reloaded");
    let consumer = sub.connect(10).expect("connect");
    let batch = consumer.next_batch().await.expect("batch");
    assert_eq!(
        places(&batch),
        vec!["0.3.1.0", "0.4.1.0"],
        "unacked events come again after a restart"
    );
}

#[tokio::test]
async fn disconnect_redelivers_to_another_consumer_with_a_higher_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, subs) = open(dir.path());
    log.create_topic(&TopicName::new("orders").expect("valid"), 1)
        .expect("topic");
    let sub = subs.create(spec("billing", 10)).expect("create");
    publish(&log, 2).await;
    let a = sub.connect(0).expect("connect");
    let b = sub.connect(0).expect("connect");
    assert_eq!(a.next_batch().await.expect("batch").len(), 2);
    drop(a);
    let batch = b.next_batch().await.expect("batch");
    assert_eq!(places(&batch), vec!["0.0.2.0", "0.1.2.0"]);
}

#[tokio::test]
async fn nack_redelivers_after_the_delay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = open(dir.path());
    log.create_topic(&TopicName::new("orders").expect("valid"), 1)
        .expect("topic");
    let subs = Subscriptions::open(
        dir.path(),
        Arc::clone(&log),
        DeliveryConfig::default(),
        Default::default(),
        no_flow(&log),
    )
    .expect("subs");
    let mut fast = spec("billing", 10);
    fast.backoff.initial = Duration::from_millis(50);
    let sub = subs.create(fast).expect("create");
    publish(&log, 1).await;
    let consumer = sub.connect(0).expect("connect");
    let first = consumer.next_batch().await.expect("batch");
    let nack = NackRequest {
        delivery_id: first[0].id.clone(),
        reason: "boom".into(),
        delay: None,
        dead_letter: false,
    };
    consumer.settle(&[], &[nack], &[]).expect("nack");
    let again = consumer.next_batch().await.expect("batch");
    assert_eq!(places(&again), vec!["0.0.2.0"]);
}

#[tokio::test]
async fn latest_start_skips_existing_events_and_bad_specs_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, subs) = open(dir.path());
    log.create_topic(&TopicName::new("orders").expect("valid"), 1)
        .expect("topic");
    publish(&log, 3).await;
    let mut latest = spec("tail", 10);
    latest.start = StartPosition::Latest;
    let sub = subs.create(latest.clone()).expect("create");
    assert_eq!(sub.describe().expect("describe").partitions[0].committed, 3);
    assert!(
        subs.create(latest.clone()).is_ok(),
        "same definition again is a no-op"
    );
    latest.max_in_flight = 5;
    assert!(matches!(
        subs.create(latest),
        Err(DeliveryError::SubscriptionExists(_))
    ));
    let mut missing_topic = spec("x", 1);
    missing_topic.topic = "nope".into();
    assert!(
        matches!(subs.create(missing_topic), Err(DeliveryError::TopicNotFound(t)) if t == "nope")
    );
    assert!(matches!(
        subs.create(spec("y", 0)),
        Err(DeliveryError::InvalidSpec { field, .. }) if field == "max_in_flight"
    ));
    assert!(matches!(
        subs.get("nope"),
        Err(DeliveryError::SubscriptionNotFound(_))
    ));
    subs.delete("tail").expect("delete");
    assert!(matches!(
        sub.describe(),
        Err(DeliveryError::SubscriptionNotFound(_))
    ));
}

/// A flow history that records nothing (these tests look at delivery only).
fn no_flow(log: &Arc<dyn EventLog>) -> Arc<crate::flow::Flow> {
    let config = crate::config::FlowConfig {
        enabled: false,
        ..Default::default()
    };
    Arc::new(crate::flow::Flow::open(Arc::clone(log), &config).expect("flow"))
}
