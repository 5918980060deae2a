//! The delivery state of one subscription on one partition: a pure state
//! machine (no I/O), so the ack-floor rules can be tested alone.
//!
//! Offsets below `committed` are all acked. Offsets in
//! `[committed, next_fetch)` are each exactly one of: acked (waiting for
//! the floor to reach them), in flight to a consumer, or waiting for a
//! retry.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// A delivery handed to a consumer and not yet settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct InFlight {
    pub(super) consumer: u64,
    pub(super) attempt: u32,
    pub(super) deadline: Instant,
}

/// An event waiting to be delivered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retry {
    attempt: u32,
    ready_at: Instant,
}

#[derive(Debug, Default)]
pub(super) struct Cursor {
    /// Every offset below it is acked.
    pub(super) committed: u64,
    /// The next offset never delivered before.
    pub(super) next_fetch: u64,
    acked: BTreeSet<u64>,
    in_flight: BTreeMap<u64, InFlight>,
    retry: BTreeMap<u64, Retry>,
}

impl Cursor {
    pub(super) fn new(committed: u64) -> Self {
        Self {
            committed,
            next_fetch: committed,
            ..Self::default()
        }
    }

    /// Moves past offsets that retention deleted.
    pub(super) fn skip_to(&mut self, start: u64) -> Vec<u64> {
        let mut holders = Vec::new();
        if self.committed < start {
            self.committed = start;
            self.acked = self.acked.split_off(&start);
            self.retry = self.retry.split_off(&start);
            let kept = self.in_flight.split_off(&start);
            holders = self.in_flight.values().map(|f| f.consumer).collect();
            self.in_flight = kept;
        }
        self.next_fetch = self.next_fetch.max(start);
        self.advance();
        holders
    }

    /// How many new offsets may be fetched without the unacked window
    /// growing past `max_unacked`.
    pub(super) fn fetch_budget(&self, max_unacked: u64) -> u64 {
        (self.committed + max_unacked).saturating_sub(self.next_fetch)
    }

    /// Removes and returns up to `max` retries that are due, lowest offset
    /// first, as `(offset, attempt)`.
    pub(super) fn take_due_retries(&mut self, now: Instant, max: usize) -> Vec<(u64, u32)> {
        let due: Vec<(u64, u32)> = self
            .retry
            .iter()
            .filter(|(_, r)| r.ready_at <= now)
            .take(max)
            .map(|(&offset, r)| (offset, r.attempt))
            .collect();
        for (offset, _) in &due {
            self.retry.remove(offset);
        }
        due
    }

    /// Records that `offset` was handed to `consumer`.
    pub(super) fn dispatched(&mut self, offset: u64, flight: InFlight) {
        self.next_fetch = self.next_fetch.max(offset + 1);
        self.in_flight.insert(offset, flight);
    }

    /// Acks `offset`; returns `Some(holder)` when it was in flight (so the
    /// holder's credit frees up), `Some(None)` when it was acked from the
    /// retry queue, `None` when the ack changed nothing.
    pub(super) fn ack(&mut self, offset: u64) -> Option<Option<u64>> {
        if offset < self.committed || offset >= self.next_fetch || self.acked.contains(&offset) {
            return None;
        }
        let holder = self.in_flight.remove(&offset).map(|f| f.consumer);
        self.retry.remove(&offset);
        self.acked.insert(offset);
        self.advance();
        Some(holder)
    }

    /// Nacks attempt `attempt` of `offset`: it is delivered again at
    /// `ready_at`. Returns the holder whose credit frees up; a nack of an
    /// older attempt than the one in flight is ignored.
    pub(super) fn nack(&mut self, offset: u64, attempt: u32, ready_at: Instant) -> Option<u64> {
        let flight = self
            .in_flight
            .get(&offset)
            .filter(|f| f.attempt == attempt)
            .copied()?;
        self.in_flight.remove(&offset);
        self.schedule_retry(offset, attempt + 1, ready_at);
        Some(flight.consumer)
    }

    /// Moves deliveries past their deadline to the retry queue (due now);
    /// returns their holders.
    pub(super) fn expire(&mut self, now: Instant) -> Vec<u64> {
        let expired: Vec<(u64, InFlight)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(&o, &f)| (o, f))
            .collect();
        for (offset, flight) in &expired {
            self.in_flight.remove(offset);
            self.schedule_retry(*offset, flight.attempt + 1, now);
        }
        expired.into_iter().map(|(_, f)| f.consumer).collect()
    }

    /// Returns everything `consumer` holds to the retry queue, due now.
    pub(super) fn release(&mut self, consumer: u64, now: Instant) {
        let held: Vec<(u64, u32)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.consumer == consumer)
            .map(|(&o, f)| (o, f.attempt))
            .collect();
        for (offset, attempt) in held {
            self.in_flight.remove(&offset);
            self.schedule_retry(offset, attempt + 1, now);
        }
    }

    /// The earliest deadline or retry time, if any.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let deadline = self.in_flight.values().map(|f| f.deadline).min();
        let retry = self.retry.values().map(|r| r.ready_at).min();
        deadline.into_iter().chain(retry).min()
    }

    pub(super) fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }

    fn schedule_retry(&mut self, offset: u64, attempt: u32, ready_at: Instant) {
        self.retry.insert(offset, Retry { attempt, ready_at });
    }

    fn advance(&mut self) {
        while self.acked.first() == Some(&self.committed) {
            self.acked.pop_first();
            self.committed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn flight(consumer: u64, attempt: u32, deadline: Instant) -> InFlight {
        InFlight {
            consumer,
            attempt,
            deadline,
        }
    }

    #[test]
    fn floor_advances_only_over_contiguous_acks() {
        let now = Instant::now();
        let mut cursor = Cursor::new(10);
        for offset in 10..15 {
            cursor.dispatched(offset, flight(1, 1, now));
        }
        assert_eq!(cursor.ack(12), Some(Some(1)));
        assert_eq!(cursor.ack(11), Some(Some(1)));
        assert_eq!(cursor.committed, 10, "10 is still unacked");
        assert_eq!(cursor.ack(10), Some(Some(1)));
        assert_eq!(cursor.committed, 13);
        assert_eq!(cursor.ack(10), None, "acking twice changes nothing");
        assert_eq!(cursor.ack(99), None, "never delivered");
    }

    #[test]
    fn nack_and_expiry_schedule_a_new_attempt() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let mut cursor = Cursor::new(0);
        cursor.dispatched(0, flight(1, 1, now + Duration::from_secs(30)));
        cursor.dispatched(1, flight(1, 1, now));
        assert_eq!(cursor.nack(0, 2, later), None, "stale attempt ignored");
        assert_eq!(cursor.nack(0, 1, later), Some(1));
        assert_eq!(cursor.expire(now), vec![1]);
        assert_eq!(cursor.take_due_retries(now, 10), vec![(1, 2)]);
        assert_eq!(cursor.next_wake(), Some(later));
        assert_eq!(cursor.take_due_retries(later, 10), vec![(0, 2)]);
    }

    #[test]
    fn release_returns_only_that_consumers_deliveries() {
        let now = Instant::now();
        let mut cursor = Cursor::new(0);
        cursor.dispatched(0, flight(1, 1, now));
        cursor.dispatched(1, flight(2, 1, now));
        cursor.release(1, now);
        assert_eq!(cursor.in_flight_len(), 1);
        assert_eq!(cursor.take_due_retries(now, 10), vec![(0, 2)]);
    }

    #[test]
    fn budget_bounds_the_unacked_window() {
        let now = Instant::now();
        let mut cursor = Cursor::new(0);
        assert_eq!(cursor.fetch_budget(3), 3);
        for offset in 0..3 {
            cursor.dispatched(offset, flight(1, 1, now));
        }
        assert_eq!(cursor.fetch_budget(3), 0);
        cursor.ack(0);
        assert_eq!(cursor.fetch_budget(3), 1);
    }

    #[test]
    fn retention_skips_deleted_offsets() {
        let now = Instant::now();
        let mut cursor = Cursor::new(0);
        cursor.dispatched(0, flight(7, 1, now));
        cursor.dispatched(5, flight(7, 1, now));
        assert_eq!(cursor.skip_to(3), vec![7]);
        assert_eq!(cursor.committed, 3);
        assert_eq!(cursor.in_flight_len(), 1);
    }
}
