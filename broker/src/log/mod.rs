//! Durable, partitioned, append-only topic logs behind the [`EventLog`]
//! trait. The embedded implementation stores segment files under the data
//! directory; a Kafka implementation can plug in behind the same trait.

mod embedded;
pub mod kafka;
mod partition;
mod record;
mod segment;

pub use embedded::{EmbeddedLog, verify};
pub use partition::PartitionCheck;

use crate::model::TopicName;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Notify;

/// One record read back from a topic partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Position in the partition, from 0, without gaps.
    pub offset: u64,
    /// When the broker appended it (ms since the Unix epoch).
    pub timestamp_ms: i64,
    /// The stored bytes.
    pub payload: Bytes,
}

/// A topic and its partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: TopicName,
    /// Number of partitions, fixed at creation.
    pub partitions: u32,
}

/// The readable range of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The oldest retained offset.
    pub start: u64,
    /// The offset the next appended record gets (= durable end).
    pub end: u64,
}

/// Errors of the log layer.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Stored data failed validation somewhere a torn write cannot explain.
    #[error(
        "corrupt log segment {path} at byte {position}: {reason}. Nothing was changed; \
         restore the file from a replica or backup, or move the damaged segment aside to \
         accept the loss of its records"
    )]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the bad record.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The topic does not exist.
    #[error("topic '{0}' not found")]
    TopicNotFound(String),
    /// The topic exists already.
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    /// The partition number is not below the topic's partition count.
    #[error("topic '{topic}' has {partitions} partitions; partition {partition} does not exist")]
    NoSuchPartition {
        /// The topic.
        topic: String,
        /// The requested partition.
        partition: u32,
        /// Its partition count.
        partitions: u32,
    },
    /// A partition count of zero or above the maximum.
    #[error("a topic needs between 1 and {max} partitions, not {requested}")]
    InvalidPartitions {
        /// What was asked for.
        requested: u32,
        /// The maximum.
        max: u32,
    },
    /// An earlier write failed and the partition is refusing appends.
    #[error("append failed: {0}")]
    Failed(String),
    /// The log is shutting down.
    #[error("the log is closed")]
    Closed,
    /// A Kafka operation failed (the Kafka backend).
    #[error("kafka: {context}: {message}")]
    Kafka {
        /// What was being done, e.g. `producing to switchyard.orders`.
        context: String,
        /// What librdkafka or the cluster said.
        message: String,
    },
}

impl LogError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        LogError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// Storage of topics: what the broker needs from a log, whatever backs it.
pub trait EventLog: std::fmt::Debug + Send + Sync + 'static {
    /// Creates a topic with `partitions` partitions.
    fn create_topic(&self, name: &TopicName, partitions: u32) -> Result<TopicInfo, LogError>;
    /// Deletes a topic and its data.
    fn delete_topic(&self, name: &TopicName) -> Result<(), LogError>;
    /// All topics, sorted by name.
    fn topics(&self) -> Vec<TopicInfo>;
    /// One topic.
    fn topic(&self, name: &TopicName) -> Result<TopicInfo, LogError>;
    /// Appends records to a partition; resolves with the offset each
    /// record got, in order, once they are durable (per the fsync policy;
    /// with Kafka, once acknowledged). Records of one call are in order but
    /// need not be adjacent: another node may append between them.
    fn append(
        &self,
        topic: &TopicName,
        partition: u32,
        payloads: Vec<Bytes>,
    ) -> BoxFuture<'static, Result<Vec<u64>, LogError>>;
    /// Reads up to `max_records` durable records from offset `from` on.
    fn read(
        &self,
        topic: &TopicName,
        partition: u32,
        from: u64,
        max_records: usize,
    ) -> Result<Vec<LogRecord>, LogError>;
    /// The readable range of a partition.
    fn offsets(&self, topic: &TopicName, partition: u32) -> Result<PartitionOffsets, LogError>;
    /// Deletes the oldest records of a partition that are all below
    /// `offset`, in whole segments (the one being written stays); returns
    /// the new start. For logs whose old records are known to be done with
    /// (the schedule), whatever the retention settings.
    fn truncate_before(
        &self,
        topic: &TopicName,
        partition: u32,
        offset: u64,
    ) -> Result<u64, LogError>;
    /// The first offset appended at or after `timestamp_ms` (ms since the
    /// Unix epoch); the end offset when none was.
    fn offset_for_time(
        &self,
        topic: &TopicName,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<u64, LogError>;
    /// Notified after every durable append to any partition of the topic.
    fn appended(&self, topic: &TopicName) -> Result<Arc<Notify>, LogError>;
    /// Flushes and stops all writers; appends fail afterwards.
    fn close(&self);
    /// How several broker nodes share subscriptions over this log; `None`
    /// for a log only one node uses (the embedded one): that node owns
    /// every partition and keeps committed offsets itself.
    fn groups(&self) -> Option<&dyn ConsumerGroups> {
        None
    }
}

/// One source of a subscription: a topic's partition.
pub type Source = (TopicName, u32);

/// Consumer groups: each subscription is a group whose members are the
/// nodes that have consumers of it connected; the group balances the
/// partitions among them and stores the committed offsets (Kafka's
/// consumer groups). Groups are named by their subscription.
pub trait ConsumerGroups: Send + Sync {
    /// Makes this node a member of the subscription's group for `sources`; `listener`
    /// hears of each assignment and revocation until the returned
    /// membership is dropped (which leaves the group, in the background).
    fn join(
        &self,
        subscription: &str,
        sources: &[Source],
        listener: std::sync::Weak<dyn GroupListener>,
    ) -> Result<Box<dyn GroupMembership>, LogError>;
    /// The group's committed offset of each source (`None`: never
    /// committed).
    fn committed(
        &self,
        subscription: &str,
        sources: &[Source],
    ) -> Result<Vec<Option<u64>>, LogError>;
    /// Commits offsets for a group this node is not a member of; refused
    /// by Kafka while other nodes are members.
    fn commit_idle(&self, subscription: &str, offsets: &[(Source, u64)]) -> Result<(), LogError>;
    /// Deletes the group and its committed offsets.
    fn delete(&self, subscription: &str) -> Result<(), LogError>;
}

/// Told by a membership what this node owns. Sources are given by their
/// index in the `sources` the membership was joined with.
pub trait GroupListener: Send + Sync {
    /// This node now delivers these sources, from the committed offset
    /// given (`None`: the group never committed one).
    fn assigned(&self, sources: &[(usize, Option<u64>)]);
    /// This node stops delivering these sources; returns the offset to
    /// commit for each before they move (the contiguous ack floor).
    fn revoked(&self, sources: &[usize]) -> Vec<(usize, u64)>;
}

/// A node's membership of a consumer group.
pub trait GroupMembership: Send + Sync {
    /// Commits offsets of sources this node owns (by index).
    fn commit(&self, offsets: &[(usize, u64)]) -> Result<(), LogError>;
}

/// Runs blocking work (a librdkafka call, a wait on a log future) without
/// stalling the async workers: through `block_in_place` on a multi-thread
/// runtime, directly elsewhere.
pub(crate) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

#[cfg(test)]
mod tests;

/// Visits the records of one partition in order, from `from` (or the
/// oldest retained one) to the end at the time of the call, reading them
/// in chunks; `visit` may stop early.
pub fn scan(
    log: &dyn EventLog,
    topic: &TopicName,
    partition: u32,
    from: u64,
    mut visit: impl FnMut(&LogRecord) -> std::ops::ControlFlow<()>,
) -> Result<(), LogError> {
    let offsets = log.offsets(topic, partition)?;
    let mut from = from.max(offsets.start);
    while from < offsets.end {
        let records = log.read(topic, partition, from, 4096)?;
        let Some(last) = records.last() else { break };
        from = last.offset + 1;
        for record in &records {
            if visit(record).is_break() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The records at `offsets` (ascending) of one partition, reading each run
/// of consecutive offsets with one read; offsets no longer there (past the
/// retention) are left out.
pub fn read_offsets(
    log: &dyn EventLog,
    topic: &TopicName,
    partition: u32,
    offsets: &[u64],
) -> Result<Vec<LogRecord>, LogError> {
    let mut found = Vec::with_capacity(offsets.len());
    let mut rest = offsets;
    while let Some(&first) = rest.first() {
        let run = rest
            .iter()
            .enumerate()
            .take_while(|&(i, &o)| o == first + i as u64)
            .count();
        let mut records = log
            .read(topic, partition, first, run)?
            .into_iter()
            .peekable();
        for &offset in &rest[..run] {
            // Both are in offset order: skip to this offset's record.
            while records.next_if(|r| r.offset < offset).is_some() {}
            if let Some(record) = records.next_if(|r| r.offset == offset) {
                found.push(record);
            }
        }
        rest = &rest[run..];
    }
    Ok(found)
}
