//! One contract for both storage backends: the same checks of the
//! `EventLog` trait run against the embedded log and against the Kafka
//! backend on a real Kafka-protocol broker (tansu). Where a backend
//! differs, the check says so (see "Differences" in docs/kafka.md).

mod support;

use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use switchyard_broker::config::{KafkaConfig, StorageConfig};
use switchyard_broker::log::kafka::KafkaLog;
use switchyard_broker::log::{EmbeddedLog, EventLog, GroupListener, LogError, Source};
use switchyard_broker::model::{CloudEvent, DeadLetter, StoredEvent, TopicName};

fn stored(id: &str) -> StoredEvent {
    StoredEvent {
        event: Some(CloudEvent {
            id: id.into(),
            source: "/contract".into(),
            spec_version: "1.0".into(),
            r#type: "entry.posted".into(),
            data_content_type: Some("application/json".into()),
            extensions: [("partitionkey".to_string(), "k".to_string())].into(),
            data: Some(switchyard_proto::v1::cloud_event::Data::TextData(format!(
                "{{\"id\":\"{id}\"}}"
            ))),
            ..CloudEvent::default()
        }),
        bus: "default".into(),
        rules: vec!["ledger".into()],
        dead_letter: None,
    }
}

fn name(text: &str) -> TopicName {
    TopicName::new(text).expect("valid name")
}

fn decode(payload: &Bytes) -> StoredEvent {
    StoredEvent::from_bytes(payload).expect("a stored event")
}

/// The checks every backend must pass.
async fn contract(log: Arc<dyn EventLog>) {
    let topic = name("ledger");
    let info = log.create_topic(&topic, 2).expect("create");
    assert_eq!(info.partitions, 2);
    assert!(matches!(
        log.create_topic(&topic, 2),
        Err(LogError::TopicExists(_))
    ));
    assert!(matches!(
        log.topic(&name("nope")),
        Err(LogError::TopicNotFound(_))
    ));
    assert!(
        log.topics()
            .iter()
            .any(|t| t.name == topic && t.partitions == 2)
    );
    assert!(matches!(
        log.read(&topic, 2, 0, 1),
        Err(LogError::NoSuchPartition { .. })
    ));

    // Appends resolve with each record's offset, in order.
    let appended = log.appended(&topic).expect("notify");
    let notified = appended.notified();
    let events: Vec<StoredEvent> = (0..3).map(|n| stored(&format!("e{n}"))).collect();
    let offsets = log
        .append(
            &topic,
            1,
            events.iter().map(StoredEvent::to_bytes).collect(),
        )
        .await
        .expect("append");
    assert_eq!(offsets, vec![0, 1, 2]);
    tokio::time::timeout(Duration::from_secs(10), notified)
        .await
        .expect("readers are woken by an append");
    let more = log
        .append(&topic, 1, vec![stored("e3").to_bytes()])
        .await
        .expect("append");
    assert_eq!(more, vec![3]);

    // Reads return what was stored, from any offset, within the end.
    let records = log.read(&topic, 1, 0, 10).expect("read");
    assert_eq!(
        records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    for (record, n) in records.iter().zip(0..) {
        assert_eq!(decode(&record.payload), stored(&format!("e{n}")));
        assert!(record.timestamp_ms > 0);
    }
    let middle = log.read(&topic, 1, 2, 1).expect("read");
    assert_eq!(middle.len(), 1);
    assert_eq!(middle[0].offset, 2);
    assert!(log.read(&topic, 1, 4, 10).expect("at the end").is_empty());
    assert!(
        log.read(&topic, 0, 0, 10)
            .expect("empty partition")
            .is_empty()
    );
    let offsets = log.offsets(&topic, 1).expect("offsets");
    assert_eq!((offsets.start, offsets.end), (0, 4));

    // Offsets by time: before everything → the first; the future → the end.
    assert_eq!(log.offset_for_time(&topic, 1, 0).expect("time"), 0);
    let future = switchyard_broker::model::now_unix_ms() + 3_600_000;
    assert_eq!(log.offset_for_time(&topic, 1, future).expect("time"), 4);

    // Dead-letter metadata and every data variant survive.
    let mut dead = stored("d1");
    dead.dead_letter = Some(DeadLetter {
        source_topic: "ledger".into(),
        attempts: 5,
        last_reason: "boom".into(),
        ..DeadLetter::default()
    });
    let dlq = name("ledger.dlq");
    log.create_topic(&dlq, 1).expect("create");
    log.append(&dlq, 0, vec![dead.to_bytes()])
        .await
        .expect("append");
    assert_eq!(
        decode(&log.read(&dlq, 0, 0, 1).expect("read")[0].payload),
        dead
    );

    // Internal topics hold other payloads, byte for byte.
    let internal = name("__contract.done");
    log.create_topic(&internal, 1).expect("create");
    log.append(&internal, 0, vec![Bytes::from_static(b"\x00done\xff")])
        .await
        .expect("append");
    assert_eq!(
        &log.read(&internal, 0, 0, 1).expect("read")[0].payload[..],
        b"\x00done\xff"
    );

    // Truncation drops records below the offset (the embedded log in
    // whole segments, so maybe none); what stays is readable.
    let start = log.truncate_before(&topic, 1, 2).expect("truncate");
    assert!(start <= 2, "{start}");
    let rest = log.read(&topic, 1, start, 10).expect("read");
    assert_eq!(rest.first().map(|r| r.offset), Some(start));
    assert_eq!(rest.last().map(|r| r.offset), Some(3));

    log.delete_topic(&dlq).expect("delete");
    assert!(matches!(log.topic(&dlq), Err(LogError::TopicNotFound(_))));
    log.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_log_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path(), &StorageConfig::default()).expect("open");
    contract(Arc::new(log)).await;
}

fn kafka_config(tansu: &Tansu, prefix: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: tansu.brokers.clone(),
        topic_prefix: prefix.into(),
        timeout: Duration::from_secs(20),
        settings: TANSU_SETTINGS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..KafkaConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_backend_keeps_the_contract() {
    let tansu = Tansu::start();
    let log = KafkaLog::connect(&kafka_config(&tansu, "contract.")).expect("connect");
    contract(Arc::new(log)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_nodes_read_what_other_nodes_appended() {
    let tansu = Tansu::start();
    let node_a = Arc::new(KafkaLog::connect(&kafka_config(&tansu, "shared.")).expect("connect"));
    let node_b = KafkaLog::connect(&kafka_config(&tansu, "shared.")).expect("connect");
    let topic = name("orders");
    node_a.create_topic(&topic, 1).expect("create");
    assert_eq!(
        node_b.topic(&topic).expect("b sees the topic").partitions,
        1
    );
    assert!(node_a.read(&topic, 0, 0, 10).expect("empty").is_empty());
    let batch = ["from-b", "and-b", "also-b"].map(|id| stored(id).to_bytes());
    let offsets = node_b
        .append(&topic, 0, batch.to_vec())
        .await
        .expect("append on b");
    assert_eq!(offsets, vec![0, 1, 2]);
    // Node A learns of it within a watermark refresh.
    let start = std::time::Instant::now();
    let records = loop {
        let records = node_a.read(&topic, 0, 0, 10).expect("read on a");
        if records.len() == 3 {
            break records;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "node a never saw node b's record"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(decode(&records[0].payload), stored("from-b"));
}

/// Records what a group membership was told.
#[derive(Default)]
struct Recorder {
    assigned: std::sync::Mutex<Vec<(usize, Option<u64>)>>,
    revoked: std::sync::atomic::AtomicBool,
    /// What `revoked` hands back to be committed.
    floors: Vec<(usize, u64)>,
}

impl GroupListener for Recorder {
    fn assigned(&self, sources: &[(usize, Option<u64>)]) {
        self.assigned
            .lock()
            .expect("recorder")
            .extend_from_slice(sources);
    }

    fn revoked(&self, _sources: &[usize]) -> Vec<(usize, u64)> {
        self.revoked
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.floors.clone()
    }
}

/// Polls until `recorder` was assigned `count` sources; returns them sorted.
async fn assigned(recorder: &Recorder, count: usize) -> Vec<(usize, Option<u64>)> {
    let start = std::time::Instant::now();
    loop {
        let mut sources = recorder.assigned.lock().expect("recorder").clone();
        if sources.len() >= count {
            sources.sort();
            return sources;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "the group never assigned every partition: {sources:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rejoining_a_group_waits_until_its_previous_member_left() {
    let tansu = Tansu::start();
    let log = KafkaLog::connect(&kafka_config(&tansu, "rejoin.")).expect("connect");
    let topic = name("orders");
    log.create_topic(&topic, 2).expect("create");
    let sources: Vec<Source> = vec![(topic.clone(), 0), (topic, 1)];
    let groups = log.groups().expect("the Kafka log has consumer groups");

    let first = Arc::new(Recorder {
        floors: vec![(0, 7), (1, 3)],
        ..Recorder::default()
    });
    let listener: Arc<dyn GroupListener> = first.clone();
    let membership = groups
        .join("billing", &sources, Arc::downgrade(&listener))
        .expect("join");
    assert_eq!(assigned(&first, 2).await, vec![(0, None), (1, None)]);

    // A subscriber that reconnects at once: the node leaves and joins
    // again straight away. The new member joins only after the old one
    // handed its partitions back and committed their offsets, so it is
    // never a second member beside it and starts where it stopped.
    drop(membership);
    let second = Arc::new(Recorder::default());
    let listener: Arc<dyn GroupListener> = second.clone();
    let _membership = groups
        .join("billing", &sources, Arc::downgrade(&listener))
        .expect("join again");
    assert!(
        first.revoked.load(std::sync::atomic::Ordering::SeqCst),
        "the second join returned before the first member gave up its partitions"
    );
    assert_eq!(assigned(&second, 2).await, vec![(0, Some(7)), (1, Some(3))]);
}
