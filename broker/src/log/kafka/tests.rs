//! The Kafka backend against librdkafka's built-in mock cluster, for
//! failures a real broker cannot be made to produce on demand.

use super::KafkaLog;
use crate::config::KafkaConfig;
use crate::log::{EventLog, LogError};
use crate::model::TopicName;
use bytes::Bytes;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
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
/// request with `refusal`; returns what the second append gave.
async fn append_through(
    cluster: &MockCluster<'static, DefaultProducerContext>,
    log: &KafkaLog,
    topic: &TopicName,
    refusal: RDKafkaRespErr,
) -> Result<Vec<u64>, LogError> {
    let first = log.append(topic, 0, payloads(&["a"])).await;
    assert_eq!(first.expect("append"), vec![0]);
    cluster.request_errors(RDKafkaApiKey::Produce, &[refusal]);
    log.append(topic, 0, payloads(&["b", "c"])).await
}

/// Checks that b and c, refused with `refusal`, land on the second try,
/// and that appends go on after it.
async fn assert_sent_again(refusal: RDKafkaRespErr) {
    let (cluster, log, topic) = mock_log();
    let refused = append_through(&cluster, &log, &topic, refusal).await;
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_refused_for_a_fenced_producer_are_sent_again() {
    // Fenced: a newer epoch of the producer's id exists (seen from tansu
    // under load). librdkafka gives the producer a new epoch.
    assert_sent_again(RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_failed_for_good_is_replaced() {
    // A sequence gap the broker reports: librdkafka cannot tell what was
    // written and fails the producer for good; a fresh one takes over.
    assert_sent_again(RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_refused_for_themselves_are_not_sent_again() {
    let (cluster, log, topic) = mock_log();
    let refused = append_through(
        &cluster,
        &log,
        &topic,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD,
    )
    .await;
    let error = refused.expect_err("refused once, reported");
    assert!(error.to_string().contains("InvalidRecord"), "{error}");
}
