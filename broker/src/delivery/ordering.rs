//! Ordering by partition key: with `ordering: by_key`, a subscription
//! delivers one event per key at a time, in offset order. While a key's
//! event is in flight, waiting for a retry or being dead-lettered, later
//! events of that key are held back (their offsets only: they are read
//! again from the log when released); other keys keep flowing. A key whose
//! event waits for a retry is "parked".

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// The key state of one partition of one subscription. Memory is bounded
/// by the subscription's unacked window (`max_unacked_per_partition`).
#[derive(Debug, Default)]
pub(super) struct KeyOrder {
    /// key → offset of the event of that key being delivered.
    busy: HashMap<Arc<str>, u64>,
    /// offset → key, for the busy offsets.
    by_offset: HashMap<u64, Arc<str>>,
    /// key → offsets read but waiting for the key, in order.
    held: HashMap<Arc<str>, VecDeque<u64>>,
}

impl KeyOrder {
    /// Whether the event at `offset` with `key` may be delivered now (its
    /// key becomes busy); if not, it is queued behind its key.
    pub(super) fn admit(&mut self, key: &str, offset: u64) -> bool {
        if let Some(queue) = self.held.get_mut(key) {
            queue.push_back(offset);
            return false;
        }
        if self.busy.contains_key(key) {
            self.held
                .entry(Arc::from(key))
                .or_default()
                .push_back(offset);
            return false;
        }
        let key: Arc<str> = Arc::from(key);
        self.busy.insert(Arc::clone(&key), offset);
        self.by_offset.insert(offset, key);
        true
    }

    /// The event at `offset` is done (acked or dead-lettered): its key is
    /// free for the next held event.
    pub(super) fn finish(&mut self, offset: u64) {
        if let Some(key) = self.by_offset.remove(&offset) {
            self.busy.remove(&key);
        }
    }

    /// Up to `max` held events whose key is free, lowest offset first; each
    /// one's key becomes busy.
    pub(super) fn release(&mut self, max: usize) -> Vec<u64> {
        let mut ready: Vec<(u64, Arc<str>)> = self
            .held
            .iter()
            .filter(|(key, _)| !self.busy.contains_key(*key))
            .filter_map(|(key, queue)| queue.front().map(|&offset| (offset, Arc::clone(key))))
            .collect();
        ready.sort_unstable_by_key(|(offset, _)| *offset);
        ready.truncate(max);
        for (offset, key) in &ready {
            if let Some(queue) = self.held.get_mut(key) {
                queue.pop_front();
                if queue.is_empty() {
                    self.held.remove(key);
                }
            }
            self.busy.insert(Arc::clone(key), *offset);
            self.by_offset.insert(*offset, Arc::clone(key));
        }
        ready.into_iter().map(|(offset, _)| offset).collect()
    }

    /// Keys whose event is waiting for a retry (per `retrying`), sorted.
    pub(super) fn parked(&self, retrying: impl Fn(u64) -> bool) -> Vec<String> {
        let mut keys: Vec<String> = self
            .busy
            .iter()
            .filter(|(_, offset)| retrying(**offset))
            .map(|(key, _)| key.to_string())
            .collect();
        keys.sort();
        keys
    }

    /// Forgets everything below `start` (retention) — or everything, for a
    /// seek (`u64::MAX`).
    pub(super) fn forget_below(&mut self, start: u64) {
        let gone: Vec<u64> = self
            .by_offset
            .keys()
            .copied()
            .filter(|&o| o < start)
            .collect();
        for offset in gone {
            self.finish(offset);
        }
        self.held.retain(|_, queue| {
            queue.retain(|&o| o >= start);
            !queue.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_key_in_order_and_a_failing_key_blocks_only_itself() {
        let mut order = KeyOrder::default();
        assert!(order.admit("a", 0));
        assert!(order.admit("b", 1));
        assert!(!order.admit("a", 2), "a is busy");
        assert!(!order.admit("a", 3));
        assert!(order.admit("c", 4), "other keys flow");
        assert_eq!(order.release(10), Vec::<u64>::new(), "a is still busy");
        assert_eq!(order.parked(|offset| offset == 0), ["a"]);
        order.finish(0);
        assert_eq!(order.release(10), vec![2], "the next event of a, alone");
        assert!(!order.admit("a", 5), "behind the held ones");
        order.finish(2);
        assert_eq!(order.release(10), vec![3]);
        order.finish(3);
        assert_eq!(order.release(10), vec![5]);
    }

    #[test]
    fn forgetting_drops_busy_and_held_offsets() {
        let mut order = KeyOrder::default();
        assert!(order.admit("a", 0));
        assert!(!order.admit("a", 1));
        assert!(!order.admit("a", 7));
        order.forget_below(5);
        assert_eq!(order.release(10), vec![7]);
        order.forget_below(u64::MAX);
        assert!(order.admit("a", 9));
    }
}
