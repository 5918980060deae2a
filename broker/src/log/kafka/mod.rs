//! The Kafka backend of [`EventLog`]: Switchyard topics are Kafka topics
//! (named `kafka.topic_prefix` + name), appends go through an idempotent
//! producer with `acks=all` and resolve once Kafka acknowledged them,
//! records travel in the CloudEvents Kafka binding ([`binding`]).
//!
//! Reads are served from a bounded per-partition cache of recent records
//! (filled by this node's appends and by fetches), so the delivery loop's
//! reads of records it just appended, and its re-reads for redelivery, do
//! not each cost a round trip; a miss fetches from Kafka with a consumer
//! that belongs to no group. Watermarks are cached for
//! [`WATERMARK_TTL`] and refreshed by a background poller, which also
//! wakes readers when records appended by other nodes arrive.

pub mod binding;
mod group;
mod producer;

use super::{ConsumerGroups, EventLog, LogError, LogRecord, PartitionOffsets, TopicInfo, blocking};
use crate::config::KafkaConfig;
use crate::model::TopicName;
use bytes::Bytes;
use futures::future::BoxFuture;
use producer::Producers;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long a cached watermark is trusted before asking Kafka again.
pub const WATERMARK_TTL: Duration = Duration::from_millis(200);
/// Most records kept per partition in the read cache.
pub const CACHE_RECORDS: usize = 16_384;

/// The Kafka-backed log.
pub struct KafkaLog {
    config: KafkaConfig,
    /// Connection settings every client starts from.
    base: ClientConfig,
    /// Appends go through it ([`producer`]).
    producers: Arc<Producers>,
    admin: AdminClient<DefaultClientContext>,
    /// Fetches on cache misses, watermarks, offsets by time, metadata.
    reader: Mutex<BaseConsumer>,
    topics: RwLock<HashMap<TopicName, TopicInfo>>,
    /// Per topic this node has touched, the state of each partition.
    partitions: RwLock<HashMap<TopicName, Vec<Arc<PartitionState>>>>,
    notifies: RwLock<HashMap<TopicName, Arc<Notify>>>,
    /// Per consumer group, a client for its offsets ([`group`]).
    group_clients: Mutex<HashMap<String, Arc<BaseConsumer>>>,
    /// Per consumer group, disconnected once this node's latest member of
    /// it has left the group ([`group`]).
    departures: Mutex<HashMap<String, std::sync::mpsc::Receiver<()>>>,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("brokers", &self.config.brokers)
            .field("topic_prefix", &self.config.topic_prefix)
            .finish_non_exhaustive()
    }
}

/// What this node knows of one partition.
#[derive(Debug, Default)]
struct PartitionState {
    cache: Mutex<BTreeMap<u64, LogRecord>>,
    watermarks: Mutex<Option<(PartitionOffsets, Instant)>>,
}

impl PartitionState {
    fn remember(&self, records: impl IntoIterator<Item = LogRecord>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for record in records {
            cache.insert(record.offset, record);
        }
        while cache.len() > CACHE_RECORDS {
            cache.pop_first();
        }
    }

    fn cached(&self, from: u64, max: usize) -> Vec<LogRecord> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = from;
        cache
            .range(from..)
            .take(max)
            .take_while(|(offset, _)| {
                let contiguous = **offset == next;
                next += 1;
                contiguous
            })
            .map(|(_, record)| record.clone())
            .collect()
    }

    /// Raises the cached end after local appends.
    fn appended_up_to(&self, end: u64) {
        let mut watermarks = self.watermarks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((offsets, _)) = watermarks.as_mut() {
            offsets.end = offsets.end.max(end);
        }
    }
}

fn kafka_error(context: &str, error: impl std::fmt::Display) -> LogError {
    LogError::Kafka {
        context: context.to_string(),
        message: error.to_string(),
    }
}

impl KafkaLog {
    /// Connects to `config.brokers` (clients connect lazily; this fails
    /// only on invalid settings).
    pub fn connect(config: &KafkaConfig) -> Result<KafkaLog, LogError> {
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", &config.brokers);
        for (key, value) in &config.settings {
            base.set(key, value);
        }
        let mut producer = base.clone();
        producer
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", config.timeout.as_millis().to_string());
        let mut reader = base.clone();
        reader
            .set("group.id", "switchyard-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest");
        let create =
            |what: &str, e: KafkaError| kafka_error(&format!("cannot create the {what}"), e);
        Ok(KafkaLog {
            producers: Arc::new(Producers::new(producer).map_err(|e| create("producer", e))?),
            admin: base.create().map_err(|e| create("admin client", e))?,
            reader: Mutex::new(reader.create().map_err(|e| create("reader", e))?),
            config: config.clone(),
            base,
            topics: RwLock::default(),
            partitions: RwLock::default(),
            notifies: RwLock::default(),
            group_clients: Mutex::default(),
            departures: Mutex::default(),
        })
    }

    fn kafka_name(&self, topic: &TopicName) -> String {
        format!("{}{}", self.config.topic_prefix, topic.as_str())
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new().operation_timeout(Some(self.config.timeout))
    }

    fn partition(
        &self,
        topic: &TopicName,
        partition: u32,
    ) -> Result<Arc<PartitionState>, LogError> {
        let pick = |states: &[Arc<PartitionState>]| {
            states
                .get(partition as usize)
                .cloned()
                .ok_or_else(|| LogError::NoSuchPartition {
                    topic: topic.to_string(),
                    partition,
                    partitions: states.len() as u32,
                })
        };
        if let Some(states) = self
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
        {
            return pick(states);
        }
        let count = self.topic(topic)?.partitions;
        let mut partitions = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        pick(
            partitions
                .entry(topic.clone())
                .or_insert_with(|| (0..count).map(|_| Arc::default()).collect()),
        )
    }

    fn notify(&self, topic: &TopicName) -> Arc<Notify> {
        if let Some(notify) = self
            .notifies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
        {
            return Arc::clone(notify);
        }
        let mut notifies = self.notifies.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(notifies.entry(topic.clone()).or_default())
    }

    /// Asks Kafka for the topics under our prefix and caches them.
    fn refresh_topics(&self, only: Option<&TopicName>) -> Result<(), LogError> {
        let name = only.map(|t| self.kafka_name(t));
        let metadata = blocking(|| {
            self.reader
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .fetch_metadata(name.as_deref(), self.config.timeout)
        })
        .map_err(|e| kafka_error("metadata", e))?;
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        for topic in metadata.topics() {
            let Some(name) = topic.name().strip_prefix(&self.config.topic_prefix) else {
                continue;
            };
            let Ok(name) = TopicName::new(name) else {
                continue;
            };
            if topic.error().is_some() || topic.partitions().is_empty() {
                topics.remove(&name);
                continue;
            }
            let partitions = topic.partitions().len() as u32;
            topics.insert(name.clone(), TopicInfo { name, partitions });
        }
        Ok(())
    }

    fn fetch(
        &self,
        topic: &TopicName,
        partition: u32,
        from: u64,
        max: usize,
        end: u64,
    ) -> Result<Vec<LogRecord>, LogError> {
        let name = self.kafka_name(topic);
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&name, partition as i32, Offset::Offset(from as i64))
            .map_err(|e| kafka_error("assign", e))?;
        reader
            .assign(&assignment)
            .map_err(|e| kafka_error("assign", e))?;
        let deadline = Instant::now() + self.config.timeout;
        let mut records = Vec::new();
        let mut next = from;
        while records.len() < max && next < end {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(kafka_error(
                    &format!("reading {name}/{partition} from {from}"),
                    "timed out",
                ));
            }
            match reader.poll(remaining.min(Duration::from_millis(100))) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(kafka_error(&format!("reading {name}/{partition}"), e)),
                Some(Ok(message)) => {
                    let offset = message.offset() as u64;
                    if offset < next {
                        continue;
                    }
                    let headers: Vec<(String, Vec<u8>)> = message
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let payload =
                        binding::from_kafka(&headers, message.payload()).map_err(|e| {
                            kafka_error(&format!("{name}/{partition} at offset {offset}"), e)
                        })?;
                    records.push(LogRecord {
                        offset,
                        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
                        payload,
                    });
                    next = offset + 1;
                }
            }
        }
        let _ = reader.unassign();
        Ok(records)
    }

    fn watermarks(
        &self,
        topic: &TopicName,
        partition: u32,
        fresh: bool,
    ) -> Result<PartitionOffsets, LogError> {
        let state = self.partition(topic, partition)?;
        if !fresh
            && let Some((offsets, at)) = *state.watermarks.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < WATERMARK_TTL
        {
            return Ok(offsets);
        }
        let name = self.kafka_name(topic);
        let deadline = Instant::now() + self.config.timeout;
        let (low, high) = blocking(|| {
            loop {
                let fetched = self
                    .reader
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .fetch_watermarks(&name, partition as i32, self.config.timeout);
                match fetched {
                    // A topic just created may not be in the client's metadata
                    // yet: ask again until the timeout.
                    Err(e) if is_not_yet_known(&e) && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    other => break other,
                }
            }
        })
        .map_err(|e| kafka_error(&format!("watermarks of {name}/{partition}"), e))?;
        let mut offsets = PartitionOffsets {
            start: low.max(0) as u64,
            end: high.max(0) as u64,
        };
        // A known end never moves backwards (this node's appends raise it
        // before the cluster's metadata may show them).
        let mut cached = state.watermarks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((old, _)) = *cached {
            offsets.end = offsets.end.max(old.end);
        }
        let grew = cached.is_some_and(|(old, _)| offsets.end > old.end);
        *cached = Some((offsets, Instant::now()));
        drop(cached);
        if grew {
            self.notify(topic).notify_waiters();
        }
        Ok(offsets)
    }

    /// Refreshes every known partition's watermarks every
    /// [`WATERMARK_TTL`], waking readers of topics that grew (records
    /// appended through other nodes). Runs until `shutdown`.
    pub async fn poll_watermarks(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(WATERMARK_TTL);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let known: Vec<(TopicName, u32)> = self
                .partitions
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .flat_map(|(topic, states)| (0..states.len() as u32).map(|p| (topic.clone(), p)))
                .collect();
            let this = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || {
                for (topic, partition) in known {
                    let _ = this.watermarks(&topic, partition, true);
                }
            })
            .await;
        }
    }
}

/// Whether `error` says the cluster (or the client's metadata) does not
/// know the topic or partition yet.
fn is_not_yet_known(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::LeaderNotAvailable
        )
    )
}

/// Waits for a librdkafka admin future (completed by librdkafka's own
/// thread) without stalling the async workers.
fn admin_call<F: std::future::Future>(future: F) -> F::Output {
    blocking(|| futures::executor::block_on(future))
}

/// Like [`admin_call`], made once more when the connection to the broker
/// broke under the request (librdkafka reconnects by itself, but a request
/// in flight is lost; tansu, for one, drops the connection when a request
/// it does not implement arrives on it). Returns whether it was retried.
fn admin_call_retried<T, F: std::future::Future<Output = KafkaResult<T>>>(
    call: impl Fn() -> F,
) -> (KafkaResult<T>, bool) {
    match admin_call(call()) {
        Err(KafkaError::AdminOp(RDKafkaErrorCode::BrokerTransportFailure)) => {
            tracing::warn!(
                "the connection to Kafka broke under an admin request; sending it again"
            );
            (admin_call(call()), true)
        }
        other => (other, false),
    }
}

impl EventLog for KafkaLog {
    fn create_topic(&self, name: &TopicName, partitions: u32) -> Result<TopicInfo, LogError> {
        if partitions == 0 || partitions > super::MAX_PARTITIONS {
            return Err(LogError::InvalidPartitions {
                requested: partitions,
                max: super::MAX_PARTITIONS,
            });
        }
        let kafka_name = self.kafka_name(name);
        let topic = NewTopic::new(
            &kafka_name,
            partitions as i32,
            TopicReplication::Fixed(self.config.replication_factor),
        );
        let (results, retried) =
            admin_call_retried(|| self.admin.create_topics([&topic], &self.options()));
        for result in results.map_err(|e| kafka_error("create topic", e))? {
            match result {
                Ok(_) => {}
                // The first request may have been done before the break.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if retried => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    return Err(LogError::TopicExists(name.to_string()));
                }
                Err((topic, code)) => return Err(kafka_error(&format!("create {topic}"), code)),
            }
        }
        let info = TopicInfo {
            name: name.clone(),
            partitions,
        };
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), info.clone());
        Ok(info)
    }

    fn delete_topic(&self, name: &TopicName) -> Result<(), LogError> {
        self.topic(name)?;
        let kafka_name = self.kafka_name(name);
        let results = admin_call(self.admin.delete_topics(&[&kafka_name], &self.options()))
            .map_err(|e| kafka_error("delete topic", e))?;
        for result in results {
            if let Err((topic, code)) = result {
                return Err(kafka_error(&format!("delete {topic}"), code));
            }
        }
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        Ok(())
    }

    fn topics(&self) -> Vec<TopicInfo> {
        if let Err(error) = self.refresh_topics(None) {
            tracing::warn!(%error, "listing Kafka topics failed; showing the known ones");
        }
        let mut topics: Vec<TopicInfo> = self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    fn topic(&self, name: &TopicName) -> Result<TopicInfo, LogError> {
        if let Some(info) = self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(info.clone());
        }
        self.refresh_topics(Some(name))?;
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::TopicNotFound(name.to_string()))
    }

    fn append(
        &self,
        topic: &TopicName,
        partition: u32,
        payloads: Vec<Bytes>,
    ) -> BoxFuture<'static, Result<Vec<u64>, LogError>> {
        let state = match self.partition(topic, partition) {
            Ok(state) => state,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let kafka_name = self.kafka_name(topic);
        let raw = topic.as_str().starts_with("__");
        // Handed to the producer before returning, so that appends to a
        // partition are sent in the order they were called.
        let producer = self.producers.current();
        let sent = producer::send(&producer, &kafka_name, partition, raw, &payloads);
        let producers = Arc::clone(&self.producers);
        let notify = self.notify(topic);
        Box::pin(async move {
            let mut landed = producer::landed(sent).await;
            let mut producer = producer;
            for resend in 0..producer::RESENDS {
                let failed: Vec<usize> =
                    (0..landed.len()).filter(|&i| landed[i].is_err()).collect();
                let errors = landed.iter().filter_map(|result| result.as_ref().err());
                if failed.is_empty() {
                    break;
                }
                let Some(next) = producers.recover(&producer, errors, resend > 0) else {
                    break;
                };
                let again = failed.iter().map(|&i| &payloads[i]);
                let sent = producer::send(&next, &kafka_name, partition, raw, again);
                for (i, result) in failed.into_iter().zip(producer::landed(sent).await) {
                    landed[i] = result;
                }
                producer = next;
            }
            let now = crate::model::now_unix_ms();
            let mut offsets = Vec::with_capacity(landed.len());
            let mut records = Vec::with_capacity(landed.len());
            for (result, payload) in landed.into_iter().zip(payloads) {
                let (offset, timestamp_ms) =
                    result.map_err(|e| kafka_error(&format!("producing to {kafka_name}"), e))?;
                offsets.push(offset);
                records.push(LogRecord {
                    offset,
                    timestamp_ms: timestamp_ms.unwrap_or(now),
                    payload,
                });
            }
            if let Some(last) = offsets.iter().max() {
                state.appended_up_to(last + 1);
            }
            state.remember(records);
            notify.notify_waiters();
            Ok(offsets)
        })
    }

    fn read(
        &self,
        topic: &TopicName,
        partition: u32,
        from: u64,
        max_records: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        let state = self.partition(topic, partition)?;
        // Cached for at most WATERMARK_TTL, raised by this node's appends and
        // refreshed by the poller: a caught-up reader asks Kafka no more often.
        let offsets = self.watermarks(topic, partition, false)?;
        let from = from.max(offsets.start);
        let cached = state.cached(from, max_records);
        if !cached.is_empty() {
            return Ok(cached);
        }
        if from >= offsets.end || max_records == 0 {
            return Ok(Vec::new());
        }
        let fetched = blocking(|| {
            self.fetch(
                topic,
                partition,
                from,
                max_records.min(CACHE_RECORDS),
                offsets.end,
            )
        })?;
        state.remember(fetched.iter().cloned());
        Ok(fetched)
    }

    fn offsets(&self, topic: &TopicName, partition: u32) -> Result<PartitionOffsets, LogError> {
        self.watermarks(topic, partition, false)
    }

    fn truncate_before(
        &self,
        topic: &TopicName,
        partition: u32,
        offset: u64,
    ) -> Result<u64, LogError> {
        let state = self.partition(topic, partition)?;
        let mut before = TopicPartitionList::new();
        before
            .add_partition_offset(
                &self.kafka_name(topic),
                partition as i32,
                Offset::Offset(offset as i64),
            )
            .map_err(|e| kafka_error("delete records", e))?;
        let result = admin_call(self.admin.delete_records(&before, &self.options()))
            .map_err(|e| kafka_error("delete records", e))?;
        let start = result
            .elements()
            .first()
            .and_then(|e| e.offset().to_raw())
            .map_or(offset, |raw| raw.max(0) as u64);
        state
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&o, _| o >= start);
        *state.watermarks.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(start)
    }

    /// A binary search over record timestamps (log2 n reads, mostly
    /// cached): Kafka's ListOffsets by time is not relied on, as tansu
    /// answers it wrongly for times after the last record.
    fn offset_for_time(
        &self,
        topic: &TopicName,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<u64, LogError> {
        let offsets = self.watermarks(topic, partition, true)?;
        let (mut low, mut high) = (offsets.start, offsets.end);
        while low < high {
            let middle = low + (high - low) / 2;
            match self.read(topic, partition, middle, 1)?.first() {
                Some(record) if record.timestamp_ms < timestamp_ms => low = record.offset + 1,
                Some(_) => high = middle,
                None => return Ok(low),
            }
        }
        Ok(low)
    }

    fn appended(&self, topic: &TopicName) -> Result<Arc<Notify>, LogError> {
        self.topic(topic)?;
        Ok(self.notify(topic))
    }

    fn close(&self) {
        if let Err(error) = self.producers.flush(self.config.timeout) {
            tracing::error!(%error, "flushing the Kafka producer failed");
        }
    }

    fn groups(&self) -> Option<&dyn ConsumerGroups> {
        Some(self)
    }
}

#[cfg(test)]
mod tests;
