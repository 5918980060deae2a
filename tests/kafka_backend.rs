//! The broker on the Kafka backend (`backend: kafka`) against a real
//! Kafka-protocol broker (tansu): events become Kafka records in the
//! CloudEvents binary content mode that a plain Kafka consumer can read,
//! and topics and acked progress survive a broker crash.

mod support;

use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use std::path::Path;
use std::time::Duration;
use support::*;

fn config(dir: &Path, tansu: &Tansu) {
    write_config(
        dir,
        &format!(
            "{}
topics:
  - name: orders
    partitions: 1
subscriptions:
  - name: billing
    topic: orders
",
            kafka_backend_yaml(&tansu.brokers, "sy.", &[])
        ),
        ORDER_RULES,
    );
}

async fn publish(broker: &BrokerProcess, ids: &[&str]) {
    let client = broker.client().await;
    let events = ids
        .iter()
        .map(|id| {
            let mut event = event(
                id,
                "order.placed",
                "customer-7",
                serde_json::json!({"order": id}),
            );
            event.subject = Some(format!("orders/{id}"));
            event
        })
        .collect();
    publish_stored(&client, events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_kafka_records_that_plain_consumers_can_read() {
    let tansu = Tansu::start();
    let dir = tempfile::tempdir().expect("tempdir");
    config(dir.path(), &tansu);
    let broker = BrokerProcess::start(dir.path());
    publish(&broker, &["o1", "o2"]).await;

    let mut stream = RawStream::open(&broker.url, "billing", 10)
        .await
        .expect("open");
    let first = stream.next().await.expect("delivery");
    assert_eq!(first.event.as_ref().map(|e| e.id.as_str()), Some("o1"));
    assert_eq!(first.rules, vec!["orders".to_string()]);

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &tansu.brokers)
        .set("group.id", "plain-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset("sy.orders", 0, rdkafka::Offset::Beginning)
        .expect("assign");
    consumer.assign(&assignment).expect("assign");
    let start = std::time::Instant::now();
    let message = loop {
        assert!(start.elapsed() < TIMEOUT, "no record in sy.orders");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => break message.detach(),
            _ => continue,
        }
    };
    let header = |name: &str| {
        message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
    };
    assert_eq!(header("ce_id").as_deref(), Some("o1"));
    assert_eq!(header("ce_type").as_deref(), Some("order.placed"));
    assert_eq!(header("ce_specversion").as_deref(), Some("1.0"));
    assert_eq!(header("ce_subject").as_deref(), Some("orders/o1"));
    assert_eq!(header("ce_partitionkey").as_deref(), Some("customer-7"));
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(message.key(), Some(&b"customer-7"[..]));
    let data: serde_json::Value =
        serde_json::from_slice(message.payload().expect("a value")).expect("JSON data");
    assert_eq!(data, serde_json::json!({"order": "o1"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_acked_progress_survive_a_broker_crash() {
    let tansu = Tansu::start();
    let dir = tempfile::tempdir().expect("tempdir");
    config(dir.path(), &tansu);
    let mut broker = BrokerProcess::start(dir.path());
    publish(&broker, &["a", "b", "c", "d", "e"]).await;
    let mut stream = RawStream::open(&broker.url, "billing", 10)
        .await
        .expect("open");
    let first = stream.next().await.expect("delivery");
    let second = stream.next().await.expect("delivery");
    stream
        .ack(vec![first.delivery_id, second.delivery_id])
        .await;
    let admin = broker.admin().await;
    eventually("two acked durably", || {
        let mut admin = admin.clone();
        async move { describe(&mut admin, "billing").await.partitions[0].committed_offset == 2 }
    })
    .await;
    drop(stream);
    broker.kill();

    let broker = BrokerProcess::start(dir.path());
    let mut admin = broker.admin().await;
    let partition = describe(&mut admin, "billing").await.partitions[0].clone();
    assert_eq!(partition.end_offset, 5, "every acked publish is in Kafka");
    assert_eq!(partition.committed_offset, 2, "acked progress held");
    let mut stream = RawStream::open(&broker.url, "billing", 10)
        .await
        .expect("open");
    for (offset, id) in [(2, "c"), (3, "d"), (4, "e")] {
        let delivery = stream.next().await.expect("delivery");
        assert_eq!(delivery.offset, offset);
        assert_eq!(delivery.event.expect("event").id, id);
    }
}
