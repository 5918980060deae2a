//! The Kafka backend against librdkafka's built-in mock cluster, for
//! failures a real broker cannot be made to produce on demand.

use super::KafkaLog;
use crate::config::KafkaConfig;
use crate::log::{EventLog, LogError};
use crate::model::TopicName;
use bytes::Bytes;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::time::Duration;

fn payloads(texts: &[&str]) -> Vec<Bytes> {
    texts.iter().map(|t| Bytes::from(t.to_string())).collect()
}

/// A mock cluster with the one-partition topic `orders`, a log connected
/// to it, and the topic's name.
fn mock_log() -> (
    MockCluster<'static, DefaultProducerContext>,
    KafkaLog,
    TopicName,
) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let log = KafkaLog::connect(&KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        timeout: Duration::from_secs(10),
        ..KafkaConfig::default()
    })
    .expect("connect");
    // The mock cluster does not serve CreateTopics; the log finds the
    // topic by its metadata.
    cluster
        .create_topic("switchyard.orders", 1, 1)
        .expect("mock topic");
    let topic = TopicName::new("orders").expect("valid");
    assert_eq!(log.topic(&topic).expect("metadata").partitions, 1);
    (cluster, log, topic)
}

/// Appends a, then b and c while the cluster refuses the next produce
/// requests with `refusals`; returns what the second append gave.
async fn append_through(
    cluster: &MockCluster<'static, DefaultProducerContext>,
    log: &KafkaLog,
    topic: &TopicName,
    refusals: &[RDKafkaRespErr],
) -> Result<Vec<u64>, LogError> {
    let first = log.append(topic, 0, payloads(&["a"])).await;
    assert_eq!(first.expect("append"), vec![0]);
    cluster.request_errors(RDKafkaApiKey::Produce, refusals);
    log.append(topic, 0, payloads(&["b", "c"])).await
}

/// Checks that b and c, refused with `refusals`, land when sent again,
/// that appends go on after it, and whether the producer was `replaced`.
async fn assert_sent_again(refusals: &[RDKafkaRespErr], replaced: bool) {
    let (cluster, log, topic) = mock_log();
    // Held, so that a replacement cannot reuse its address.
    let before = log.producers.current();
    let refused = append_through(&cluster, &log, &topic, refusals).await;
    assert_eq!(refused.expect("sent again"), vec![1, 2]);
    let later = log.append(&topic, 0, payloads(&["d"])).await;
    assert_eq!(later.expect("appends go on"), vec![3]);
    let read: Vec<Bytes> = log
        .read(&topic, 0, 0, 10)
        .expect("read")
        .into_iter()
        .map(|record| record.payload)
        .collect();
    assert_eq!(read, payloads(&["a", "b", "c", "d"]));
    let after = log.producers.current();
    assert_eq!(
        after.client().native_ptr() != before.client().native_ptr(),
        replaced,
        "whether a new producer took over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_refused_for_a_fenced_producer_are_sent_again() {
    // Fenced: a newer epoch of the producer's id exists (seen from tansu
    // under load). librdkafka gives the producer a new epoch.
    assert_sent_again(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_refused_again_after_its_new_epoch_is_replaced() {
    // tansu 0.6 under load kept fencing a producer after its epoch bump:
    // a fresh producer (a new id) takes over.
    let fenced = RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED;
    assert_sent_again(&[fenced, fenced], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_failed_for_good_is_replaced() {
    // A sequence gap the broker reports: librdkafka cannot tell what was
    // written and fails the producer for good; a fresh one takes over.
    assert_sent_again(
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_refused_for_themselves_are_not_sent_again() {
    let (cluster, log, topic) = mock_log();
    let refused = append_through(
        &cluster,
        &log,
        &topic,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD],
    )
    .await;
    let error = refused.expect_err("refused once, reported");
    assert!(error.to_string().contains("InvalidRecord"), "{error}");
}
