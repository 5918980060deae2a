//! Picking one node among several that share a log, for work exactly one
//! of them should do (firing scheduled events). Every node appends a
//! heartbeat — its id — to the internal topic `__leases` each tick and
//! reads the others'; the holder is the node with the lowest id among
//! those heard from within [`LEASE`]. A node that dies stops heartbeating
//! and the next lowest takes over a lease later.
//!
//! Liveness is judged by this node's clock (when it read a heartbeat), not
//! by record timestamps, so clock skew between nodes does not matter;
//! heartbeats older than [`LEASE`] by their timestamp are ignored when a
//! node starts and reads the backlog. A node that hears of others claims
//! the lease only [`CLAIM_AFTER`] after it started heartbeating, so that
//! the holder it replaces (a higher id) has read its heartbeats and stepped
//! back first: the hand-over leaves the work undone for a moment rather
//! than done twice. A node alone claims at once. Should two nodes still
//! both believe they hold it (both starting in the same second, or a node
//! stalled for longer than a tick), the work must be safe to repeat (it
//! is: firing is at-least-once).

use crate::log::{EventLog, LogError, blocking, scan};
use crate::model::{TopicName, now_unix_ms};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The internal topic heartbeats go to.
const TOPIC: &str = "__leases";
/// How long a node counts as alive after its last heartbeat.
pub const LEASE: Duration = Duration::from_secs(5);
/// How long a node heartbeats before it may hold the lease: longer than
/// other nodes take to read its first heartbeat (they tick every second).
pub const CLAIM_AFTER: Duration = Duration::from_secs(3);

/// This node's view of who is alive.
#[derive(Debug)]
pub struct Lease {
    log: Arc<dyn EventLog>,
    topic: TopicName,
    /// This node's id (random per process).
    node: u64,
    /// Where reading goes on.
    next: u64,
    /// When each node's latest heartbeat was read.
    seen: HashMap<u64, Instant>,
    /// From when this node may hold the lease.
    eligible_at: Instant,
}

impl Lease {
    /// Creates the heartbeat topic when missing; this node gets a fresh
    /// random id.
    pub fn open(log: Arc<dyn EventLog>) -> Result<Lease, LogError> {
        let topic = TopicName::new(TOPIC).map_err(|e| LogError::Failed(e.to_string()))?;
        if let Err(LogError::TopicNotFound(_)) = log.topic(&topic) {
            log.create_topic(&topic, 1)?;
        }
        let node = u64::from_le_bytes(
            uuid::Uuid::new_v4().as_bytes()[..8]
                .try_into()
                .unwrap_or_default(),
        );
        Ok(Lease {
            log,
            topic,
            node,
            next: 0,
            seen: HashMap::new(),
            eligible_at: Instant::now() + CLAIM_AFTER,
        })
    }

    /// Sends this node's heartbeat, reads everyone's since the last tick
    /// and says whether this node holds the lease.
    pub fn tick(&mut self) -> Result<bool, LogError> {
        let beat = self.log.append(
            &self.topic,
            0,
            vec![self.node.to_le_bytes().to_vec().into()],
        );
        blocking(|| futures::executor::block_on(beat))?;
        let now = Instant::now();
        let oldest_ms = now_unix_ms() - LEASE.as_millis() as i64;
        let mut next = self.next;
        let seen = &mut self.seen;
        scan(self.log.as_ref(), &self.topic, 0, self.next, |record| {
            next = record.offset + 1;
            if let Ok(id) = <[u8; 8]>::try_from(record.payload.as_ref())
                && record.timestamp_ms >= oldest_ms
            {
                seen.insert(u64::from_le_bytes(id), now);
            }
            ControlFlow::Continue(())
        })?;
        self.next = next;
        self.seen.retain(|_, at| now.duration_since(*at) < LEASE);
        self.seen.insert(self.node, now);
        let alone = self.seen.len() == 1;
        Ok(self.holder() == self.node && (alone || now >= self.eligible_at))
    }

    /// The node holding the lease, as far as this node knows.
    fn holder(&self) -> u64 {
        self.seen.keys().copied().min().unwrap_or(self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use crate::log::EmbeddedLog;

    #[tokio::test(flavor = "multi_thread")]
    async fn the_lowest_live_node_holds_the_lease_and_a_silent_one_loses_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log: Arc<dyn EventLog> =
            Arc::new(EmbeddedLog::open(dir.path(), &StorageConfig::default()).expect("log"));
        let mut first = Lease::open(Arc::clone(&log)).expect("lease");
        let mut second = Lease::open(Arc::clone(&log)).expect("lease");
        if first.node > second.node {
            std::mem::swap(&mut first, &mut second);
        }
        // The higher node runs alone: it holds the lease at once.
        assert!(second.tick().expect("tick"), "alone, it holds the lease");
        // The lower one joins: it waits CLAIM_AFTER, and the higher one
        // steps back as soon as it hears of it — a gap, never two holders.
        assert!(!first.tick().expect("tick"), "not before CLAIM_AFTER");
        assert!(!second.tick().expect("tick"), "a lower node is alive");
        first.eligible_at = Instant::now();
        assert!(first.tick().expect("tick"), "the lowest holds it");
        assert!(!second.tick().expect("tick"), "reads the latest heartbeat");
        // The lower node goes silent: once its last heartbeat is older
        // than the lease, the other one holds it.
        let stale = Instant::now()
            .checked_sub(LEASE)
            .expect("the clock is past the lease");
        second.seen.insert(first.node, stale);
        assert!(second.tick().expect("tick"), "the silent node lost it");
    }
}
