//! Kafka consumer groups as [`ConsumerGroups`]: a subscription's group
//! (`kafka.topic_prefix` + subscription name) has one member per node that
//! has consumers of it connected. Kafka balances the partitions among the
//! members and keeps the committed offsets; a member that stops
//! heartbeating (a dead node) loses its partitions to the others after the
//! session timeout.
//!
//! A member only wants the assignment: its partitions are paused right
//! after they are assigned, so the group consumer fetches no records (the
//! log reads them, through its cache, like every other read).

use super::{KafkaLog, kafka_error};
use crate::log::{ConsumerGroups, GroupListener, GroupMembership, LogError, Source, blocking};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How long a member may go without heartbeats before Kafka hands its
/// partitions to the other members (unless `kafka.settings` says
/// otherwise).
const SESSION_TIMEOUT_MS: &str = "10000";
/// How often the member thread serves the group protocol.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a member may hold only some partitions before it checks
/// whether it is alone in its group (and then rejoins).
const STRANDED_AFTER: Duration = Duration::from_secs(15);
/// How long a leaving member waits for its partitions to be revoked
/// (and their offsets committed) before closing anyway.
const LEAVE_DEADLINE: Duration = Duration::from_secs(10);

/// The Kafka (topic, partition) of each source, and back.
#[derive(Debug, Clone)]
struct SourceMap {
    names: Vec<(String, i32)>,
    index: HashMap<(String, i32), usize>,
}

impl SourceMap {
    fn new(log: &KafkaLog, sources: &[Source]) -> SourceMap {
        let names: Vec<(String, i32)> = sources
            .iter()
            .map(|(topic, partition)| (log.kafka_name(topic), *partition as i32))
            .collect();
        let index = names
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, name)| (name, i))
            .collect();
        SourceMap { names, index }
    }

    fn indexes(&self, list: &TopicPartitionList) -> Vec<usize> {
        list.elements()
            .iter()
            .filter_map(|e| {
                self.index
                    .get(&(e.topic().to_string(), e.partition()))
                    .copied()
            })
            .collect()
    }

    fn list(&self, offsets: &[(usize, u64)]) -> Result<TopicPartitionList, LogError> {
        let mut list = TopicPartitionList::new();
        for &(index, offset) in offsets {
            let Some((topic, partition)) = self.names.get(index) else {
                continue;
            };
            list.add_partition_offset(topic, *partition, Offset::Offset(offset as i64))
                .map_err(|e| kafka_error("offsets to commit", e))?;
        }
        Ok(list)
    }

    fn all(&self) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in &self.names {
            list.add_partition(topic, *partition);
        }
        list
    }

    /// The committed offset of each source in `list` (`None` where none).
    fn committed(&self, list: &TopicPartitionList) -> Vec<(usize, Option<u64>)> {
        list.elements()
            .iter()
            .filter_map(|e| {
                let index = *self.index.get(&(e.topic().to_string(), e.partition()))?;
                let offset = match e.offset() {
                    Offset::Offset(offset) if offset >= 0 => Some(offset as u64),
                    _ => None,
                };
                Some((index, offset))
            })
            .collect()
    }
}

/// Relays a member's rebalances to its listener.
struct MemberContext {
    group: String,
    /// The Kafka topics the member subscribes to.
    topics: Vec<String>,
    sources: SourceMap,
    listener: Weak<dyn GroupListener>,
    timeout: Duration,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let Some(listener) = self.listener.upgrade() else {
            return;
        };
        let floors = listener.revoked(&self.sources.indexes(revoked));
        if floors.is_empty() {
            return;
        }
        let committed = self.sources.list(&floors).and_then(|list| {
            consumer
                .commit(&list, CommitMode::Sync)
                .map_err(|e| kafka_error("commit", e))
        });
        match committed {
            Ok(()) => {
                tracing::info!(group = %self.group, partitions = floors.len(), "partitions revoked; offsets committed")
            }
            Err(error) => {
                tracing::warn!(group = %self.group, %error, "partitions revoked; committing their offsets failed (their un-committed progress is delivered again)")
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(assigned) = rebalance else {
            return;
        };
        if let Err(error) = consumer.pause(assigned) {
            tracing::warn!(group = %self.group, %error, "cannot pause the assigned partitions");
        }
        let committed = match consumer.committed_offsets((*assigned).clone(), self.timeout) {
            Ok(list) => self.sources.committed(&list),
            Err(error) => {
                tracing::warn!(group = %self.group, %error, "cannot read committed offsets; starting the assigned partitions at the subscription's start position");
                self.sources
                    .indexes(assigned)
                    .into_iter()
                    .map(|i| (i, None))
                    .collect()
            }
        };
        tracing::info!(group = %self.group, partitions = committed.len(), "partitions assigned");
        if let Some(listener) = self.listener.upgrade() {
            listener.assigned(&committed);
        }
    }
}

/// A running membership: a consumer served by its own thread.
struct KafkaMembership {
    consumer: Arc<BaseConsumer<MemberContext>>,
    stop: Arc<AtomicBool>,
}

impl GroupMembership for KafkaMembership {
    fn commit(&self, offsets: &[(usize, u64)]) -> Result<(), LogError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let list = self.consumer.context().sources.list(offsets)?;
        blocking(|| self.consumer.commit(&list, CommitMode::Sync))
            .map_err(|e| kafka_error(&format!("commit for {}", self.consumer.context().group), e))
    }
}

impl Drop for KafkaMembership {
    /// Leaves the group in the background: the member thread unsubscribes,
    /// which revokes (and commits) the partitions, then closes.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Serves the group protocol until `stop`, then leaves the group.
fn run_member(consumer: Arc<BaseConsumer<MemberContext>>, stop: Arc<AtomicBool>) {
    let mut whole_since = Instant::now();
    let sources = consumer.context().sources.names.len();
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(POLL_INTERVAL) {
            // Paused partitions deliver nothing; a record fetched before
            // the pause is the log's to read, not ours.
            None | Some(Ok(_)) => {}
            Some(Err(error)) => {
                tracing::debug!(group = %consumer.context().group, %error, "group consumer");
            }
        }
        if consumer.assignment().is_ok_and(|a| a.count() >= sources) {
            whole_since = Instant::now();
        } else if whole_since.elapsed() > STRANDED_AFTER {
            whole_since = Instant::now();
            rejoin_if_stranded(&consumer);
        }
    }
    consumer.unsubscribe();
    let deadline = Instant::now() + LEAVE_DEADLINE;
    while Instant::now() < deadline
        && consumer
            .assignment()
            .is_ok_and(|assigned| assigned.count() > 0)
    {
        let _ = consumer.poll(POLL_INTERVAL);
    }
    tracing::info!(group = %consumer.context().group, "left the consumer group");
}

/// Rejoins when this member is the group's only one yet does not hold
/// every partition: a generation that formed while a dead member was
/// still counted can leave the survivor with part of them or nothing
/// (tansu 0.6 does this after a crash); a fresh join forms a new
/// generation it leads. Kafka never needs it; it costs one DescribeGroups
/// per check.
fn rejoin_if_stranded(consumer: &BaseConsumer<MemberContext>) {
    let context = consumer.context();
    let Ok(groups) = consumer.fetch_group_list(Some(&context.group), context.timeout) else {
        return;
    };
    let lone = groups
        .groups()
        .iter()
        .find(|g| g.name() == context.group)
        .is_some_and(|g| g.members().len() <= 1);
    if !lone {
        return;
    }
    tracing::warn!(group = %context.group, "the only member of its group does not hold every partition; rejoining");
    consumer.unsubscribe();
    let topics: Vec<&str> = context.topics.iter().map(String::as_str).collect();
    if let Err(error) = consumer.subscribe(&topics) {
        tracing::error!(group = %context.group, %error, "rejoining the group failed");
    }
}

impl KafkaLog {
    /// The Kafka group id of a subscription: `kafka.topic_prefix` + name.
    fn group_id(&self, subscription: &str) -> String {
        format!("{}{subscription}", self.config.topic_prefix)
    }

    /// A consumer of `group` with manual commits that never joins it, for
    /// reading and setting its offsets; kept per group (describe and the
    /// lag metrics ask often).
    fn group_client(&self, group: &str) -> Result<Arc<BaseConsumer>, LogError> {
        let mut clients = self.group_clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(group) {
            return Ok(Arc::clone(client));
        }
        let mut config: ClientConfig = self.base.clone();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false");
        let client: Arc<BaseConsumer> = Arc::new(
            config
                .create()
                .map_err(|e| kafka_error("cannot create a group client", e))?,
        );
        clients.insert(group.to_string(), Arc::clone(&client));
        Ok(client)
    }

    /// Waits until this node's previous member of `group` (one that is
    /// leaving) has left, so that a node is never two members of a group
    /// at once: a join that overlaps the leave (a subscriber that
    /// reconnects at once) can leave the new member without partitions
    /// until a later rebalance (tansu 0.6 keeps counting the departed
    /// member for tens of seconds), and would read committed offsets
    /// older than the ones the leaving member commits.
    fn await_departure(&self, group: &str) {
        let previous = self
            .departures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(group);
        let Some(left) = previous else {
            return;
        };
        // The member thread leaves within LEAVE_DEADLINE once stopped;
        // the margin covers closing the consumer.
        if let Err(RecvTimeoutError::Timeout) = blocking(|| left.recv_timeout(LEAVE_DEADLINE * 2)) {
            tracing::warn!(
                group,
                "the previous member of the group is still leaving; joining beside it"
            );
        }
    }
}

impl ConsumerGroups for KafkaLog {
    fn join(
        &self,
        subscription: &str,
        sources: &[Source],
        listener: Weak<dyn GroupListener>,
    ) -> Result<Box<dyn GroupMembership>, LogError> {
        let group = &self.group_id(subscription);
        self.await_departure(group);
        let map = SourceMap::new(self, sources);
        let mut topics: Vec<String> = map.names.iter().map(|(t, _)| t.clone()).collect();
        topics.dedup();
        let mut config = self.base.clone();
        if config.get("session.timeout.ms").is_none() {
            config.set("session.timeout.ms", SESSION_TIMEOUT_MS);
        }
        if config.get("heartbeat.interval.ms").is_none() {
            config.set("heartbeat.interval.ms", "1000");
        }
        // The rebalance timeout: how long a rebalance waits for members
        // that do not rejoin (dead ones). Members poll every 100 ms, so it
        // can be short; Kafka wants it no shorter than the session timeout.
        if config.get("max.poll.interval.ms").is_none() {
            let session: u64 = config
                .get("session.timeout.ms")
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(10_000);
            config.set("max.poll.interval.ms", (session * 2).to_string());
        }
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        let context = MemberContext {
            group: group.to_string(),
            topics: topics.clone(),
            sources: map,
            listener,
            timeout: self.config.timeout,
        };
        let consumer: BaseConsumer<MemberContext> = config
            .create_with_context(context)
            .map_err(|e| kafka_error("cannot create a group member", e))?;
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| kafka_error(&format!("joining group {group}"), e))?;
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_consumer, thread_stop) = (Arc::clone(&consumer), Arc::clone(&stop));
        // Dropped when the member thread ends, after its consumer closed.
        let (left_tx, left_rx) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name(format!("group-{group}"))
            .spawn(move || {
                run_member(thread_consumer, thread_stop);
                drop(left_tx);
            })
            .map_err(|e| kafka_error("cannot start the group member thread", e))?;
        self.departures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(group.to_string(), left_rx);
        tracing::info!(group, "joining the consumer group");
        Ok(Box::new(KafkaMembership { consumer, stop }))
    }

    fn committed(
        &self,
        subscription: &str,
        sources: &[Source],
    ) -> Result<Vec<Option<u64>>, LogError> {
        let group = &self.group_id(subscription);
        let map = SourceMap::new(self, sources);
        let client = self.group_client(group)?;
        let list = blocking(|| client.committed_offsets(map.all(), self.config.timeout))
            .map_err(|e| kafka_error(&format!("committed offsets of {group}"), e))?;
        let mut committed = vec![None; sources.len()];
        for (index, offset) in map.committed(&list) {
            committed[index] = offset;
        }
        Ok(committed)
    }

    fn commit_idle(&self, subscription: &str, offsets: &[(Source, u64)]) -> Result<(), LogError> {
        let group = &self.group_id(subscription);
        let sources: Vec<Source> = offsets.iter().map(|(s, _)| s.clone()).collect();
        let map = SourceMap::new(self, &sources);
        let indexed: Vec<(usize, u64)> = offsets
            .iter()
            .enumerate()
            .map(|(i, (_, offset))| (i, *offset))
            .collect();
        let list = map.list(&indexed)?;
        let client = self.group_client(group)?;
        blocking(|| client.commit(&list, CommitMode::Sync)).map_err(|e| {
            kafka_error(
                &format!("committing offsets of {group} (refused while consumers of it are connected to other nodes)"),
                e,
            )
        })
    }

    fn delete(&self, subscription: &str) -> Result<(), LogError> {
        let group = &self.group_id(subscription);
        self.group_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(group);
        let results = super::admin_call(self.admin.delete_groups(&[group], &self.options()))
            .map_err(|e| kafka_error(&format!("deleting group {group}"), e))?;
        for result in results {
            if let Err((_, code)) = result {
                return Err(kafka_error(&format!("deleting group {group}"), code));
            }
        }
        Ok(())
    }
}
