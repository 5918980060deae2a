//! The delivery state of one subscription on one partition: a pure state
//! machine (no I/O), so the ack-floor rules can be tested alone.
//!
//! Offsets below `committed` are all acked. Offsets in
//! `[committed, next_fetch)` are each exactly one of: acked (waiting for
//! the floor to reach them), in flight to a consumer, waiting for a retry,
//! or being written to the dead-letter topic.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A delivery handed to a consumer and not yet settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct InFlight {
    pub(super) consumer: u64,
    pub(super) attempt: u32,
    pub(super) deadline: Instant,
    /// When the first attempt was made (ms since the Unix epoch).
    pub(super) first_ms: i64,
    /// When this attempt was made (ms since the Unix epoch).
    pub(super) at_ms: i64,
}

/// An event waiting to be delivered again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Retry {
    attempt: u32,
    ready_at: Instant,
    first_ms: i64,
    /// When the failed attempt before it was made.
    last_ms: i64,
    reason: Arc<str>,
    /// Nacked as non-retryable: dead-letter it when it comes due.
    dead_letter: bool,
}

/// A retry that is due: what the next attempt needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Due {
    pub(super) offset: u64,
    /// The attempt number this delivery would be.
    pub(super) attempt: u32,
    pub(super) first_ms: i64,
    /// When the previous (failed) attempt was made.
    pub(super) last_ms: i64,
    /// Why the previous attempt failed.
    pub(super) reason: Arc<str>,
    /// Retrying cannot help: dead-letter it instead of delivering it.
    pub(super) dead_letter: bool,
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
    /// `in_flight` ordered by deadline, so expiry never scans the window.
    deadlines: BTreeSet<(Instant, u64)>,
    /// `retry` ordered by due time.
    due: BTreeSet<(Instant, u64)>,
    /// Offsets being written to the dead-letter topic.
    dying: BTreeSet<u64>,
    /// Offsets read but held back behind an earlier event of their key.
    held: BTreeSet<u64>,
}

impl Cursor {
    pub(super) fn new(committed: u64) -> Self {
        Self {
            committed,
            next_fetch: committed,
            ..Self::default()
        }
    }

    /// Starts over at `offset` (seek): everything below it counts as
    /// acked, nothing above it as delivered. Returns the holders of the
    /// deliveries that were in flight.
    pub(super) fn reset(&mut self, offset: u64) -> Vec<u64> {
        let holders = self.in_flight.values().map(|f| f.consumer).collect();
        *self = Cursor::new(offset);
        holders
    }

    /// Moves past offsets that retention deleted.
    pub(super) fn skip_to(&mut self, start: u64) -> Vec<u64> {
        let mut holders = Vec::new();
        if self.committed < start {
            self.committed = start;
            self.acked = self.acked.split_off(&start);
            let gone: Vec<u64> = self.retry.range(..start).map(|(&o, _)| o).collect();
            for offset in gone {
                self.remove_retry(offset);
            }
            self.dying = self.dying.split_off(&start);
            self.held = self.held.split_off(&start);
            let gone: Vec<u64> = self.in_flight.range(..start).map(|(&o, _)| o).collect();
            for offset in gone {
                holders.extend(self.remove_flight(offset).map(|f| f.consumer));
            }
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

    /// Removes and returns up to `max` retries that are due, earliest due
    /// first (then lowest offset). Each must then be dispatched or handed
    /// to [`Cursor::dying`].
    pub(super) fn take_due_retries(&mut self, now: Instant, max: usize) -> Vec<Due> {
        let mut taken = Vec::new();
        while taken.len() < max {
            match self.due.first() {
                Some(&(ready_at, offset)) if ready_at <= now => {
                    if let Some(retry) = self.remove_retry(offset) {
                        taken.push(Due {
                            offset,
                            attempt: retry.attempt,
                            first_ms: retry.first_ms,
                            last_ms: retry.last_ms,
                            reason: retry.reason,
                            dead_letter: retry.dead_letter,
                        });
                    }
                }
                _ => break,
            }
        }
        taken
    }

    /// Marks a due retry as being written to the dead-letter topic.
    pub(super) fn dying(&mut self, offset: u64) {
        self.dying.insert(offset);
    }

    /// The dead-letter write of `offset` failed: try it again at
    /// `ready_at` (it stays the same attempt).
    pub(super) fn dead_letter_failed(&mut self, due: Due, ready_at: Instant) {
        if self.dying.remove(&due.offset) {
            self.schedule_retry(
                due.offset,
                Retry {
                    attempt: due.attempt,
                    ready_at,
                    first_ms: due.first_ms,
                    last_ms: due.last_ms,
                    reason: due.reason,
                    dead_letter: due.dead_letter,
                },
            );
        }
    }

    /// Records that `offset` was read and needs no delivery (filtered out):
    /// it counts as acked.
    pub(super) fn skip(&mut self, offset: u64) {
        self.next_fetch = self.next_fetch.max(offset + 1);
        self.acked.insert(offset);
        self.advance();
    }

    /// Records that `offset` was read but is held back (ordering by key).
    pub(super) fn hold(&mut self, offset: u64) {
        self.next_fetch = self.next_fetch.max(offset + 1);
        self.held.insert(offset);
    }

    /// Takes `offset` out of the held set before it is dispatched.
    pub(super) fn unhold(&mut self, offset: u64) -> bool {
        self.held.remove(&offset)
    }

    /// Records that `offset` was handed to `consumer`.
    pub(super) fn dispatched(&mut self, offset: u64, flight: InFlight) {
        self.next_fetch = self.next_fetch.max(offset + 1);
        self.deadlines.insert((flight.deadline, offset));
        if let Some(old) = self.in_flight.insert(offset, flight) {
            self.deadlines.remove(&(old.deadline, offset));
        }
    }

    /// Acks `offset`; returns `Some(holder)` when it was in flight (so the
    /// holder's credit frees up), `Some(None)` when it was acked from the
    /// retry queue, `None` when the ack changed nothing.
    pub(super) fn ack(&mut self, offset: u64) -> Option<Option<u64>> {
        if offset < self.committed
            || offset >= self.next_fetch
            || self.acked.contains(&offset)
            || self.held.contains(&offset)
        {
            return None;
        }
        let holder = self.remove_flight(offset).map(|f| f.consumer);
        self.remove_retry(offset);
        self.dying.remove(&offset);
        self.acked.insert(offset);
        self.advance();
        Some(holder)
    }

    /// Nacks attempt `attempt` of `offset`: it is delivered again at
    /// `ready_at` — or, with `dead_letter`, handed out as a dead-letter job
    /// then. Returns the holder whose credit frees up; a nack of an older
    /// attempt than the one in flight is ignored.
    pub(super) fn nack(
        &mut self,
        offset: u64,
        attempt: u32,
        ready_at: Instant,
        reason: Arc<str>,
        dead_letter: bool,
    ) -> Option<u64> {
        let flight = self
            .in_flight
            .get(&offset)
            .filter(|f| f.attempt == attempt)
            .copied()?;
        self.remove_flight(offset);
        self.schedule_retry(
            offset,
            Retry {
                attempt: attempt + 1,
                ready_at,
                first_ms: flight.first_ms,
                last_ms: flight.at_ms,
                reason,
                dead_letter,
            },
        );
        Some(flight.consumer)
    }

    /// Moves deliveries past their deadline to the retry queue, due after
    /// `backoff(next attempt)`; returns their holders.
    pub(super) fn expire(&mut self, now: Instant, backoff: impl Fn(u32) -> Duration) -> Vec<u64> {
        let mut holders = Vec::new();
        let reason: Arc<str> = Arc::from("ack deadline expired");
        while let Some(&(deadline, offset)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            if let Some(flight) = self.remove_flight(offset) {
                let attempt = flight.attempt + 1;
                self.schedule_retry(
                    offset,
                    Retry {
                        attempt,
                        ready_at: now + backoff(attempt),
                        first_ms: flight.first_ms,
                        last_ms: flight.at_ms,
                        reason: Arc::clone(&reason),
                        dead_letter: false,
                    },
                );
                holders.push(flight.consumer);
            }
        }
        holders
    }

    /// Returns everything `consumer` holds to the retry queue, due now.
    pub(super) fn release(&mut self, consumer: u64, now: Instant) {
        let held: Vec<(u64, InFlight)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.consumer == consumer)
            .map(|(&o, f)| (o, *f))
            .collect();
        let reason: Arc<str> = Arc::from("consumer disconnected");
        for (offset, flight) in held {
            self.remove_flight(offset);
            self.schedule_retry(
                offset,
                Retry {
                    attempt: flight.attempt + 1,
                    ready_at: now,
                    first_ms: flight.first_ms,
                    last_ms: flight.at_ms,
                    reason: Arc::clone(&reason),
                    dead_letter: false,
                },
            );
        }
    }

    /// The earliest deadline or retry time, if any.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let deadline = self.deadlines.first().map(|&(at, _)| at);
        let retry = self.due.first().map(|&(at, _)| at);
        deadline.into_iter().chain(retry).min()
    }

    /// Moves the deadline of attempt `attempt` of `offset`, if it is still
    /// the one in flight.
    pub(super) fn extend(&mut self, offset: u64, attempt: u32, deadline: Instant) -> bool {
        let Some(flight) = self
            .in_flight
            .get_mut(&offset)
            .filter(|f| f.attempt == attempt)
        else {
            return false;
        };
        let old = flight.deadline;
        flight.deadline = deadline;
        self.deadlines.remove(&(old, offset));
        self.deadlines.insert((deadline, offset));
        true
    }

    /// Whether `offset` waits for a retry or is being dead-lettered.
    pub(super) fn is_retrying(&self, offset: u64) -> bool {
        self.retry.contains_key(&offset) || self.dying.contains(&offset)
    }

    pub(super) fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }

    /// When the oldest event still unacked was first attempted (ms since
    /// the Unix epoch), if any has been.
    /// How many events wait for a retry, and when the next is due.
    pub(super) fn retries(&self) -> (usize, Option<Instant>) {
        (self.retry.len(), self.due.first().map(|&(at, _)| at))
    }

    fn schedule_retry(&mut self, offset: u64, retry: Retry) {
        self.due.insert((retry.ready_at, offset));
        if let Some(old) = self.retry.insert(offset, retry) {
            self.due.remove(&(old.ready_at, offset));
        }
    }

    fn remove_retry(&mut self, offset: u64) -> Option<Retry> {
        let retry = self.retry.remove(&offset)?;
        self.due.remove(&(retry.ready_at, offset));
        Some(retry)
    }

    fn remove_flight(&mut self, offset: u64) -> Option<InFlight> {
        let flight = self.in_flight.remove(&offset)?;
        self.deadlines.remove(&(flight.deadline, offset));
        Some(flight)
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

    fn flight(consumer: u64, attempt: u32, deadline: Instant) -> InFlight {
        InFlight {
            consumer,
            attempt,
            deadline,
            first_ms: 0,
            at_ms: 0,
        }
    }

    fn reason() -> Arc<str> {
        Arc::from("test")
    }

    fn due(cursor: &mut Cursor, now: Instant) -> Vec<(u64, u32)> {
        cursor
            .take_due_retries(now, 10)
            .into_iter()
            .map(|d| (d.offset, d.attempt))
            .collect()
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
        assert_eq!(
            cursor.nack(0, 2, later, reason(), false),
            None,
            "stale attempt ignored"
        );
        assert_eq!(cursor.nack(0, 1, later, reason(), false), Some(1));
        assert_eq!(cursor.expire(now, |_| Duration::ZERO), vec![1]);
        assert_eq!(due(&mut cursor, now), vec![(1, 2)]);
        assert_eq!(cursor.next_wake(), Some(later));
        assert_eq!(due(&mut cursor, later), vec![(0, 2)]);
    }

    #[test]
    fn a_non_retryable_nack_stays_a_dead_letter_job_until_written() {
        let now = Instant::now();
        let mut cursor = Cursor::new(0);
        cursor.dispatched(0, flight(1, 1, now + Duration::from_secs(30)));
        assert_eq!(cursor.nack(0, 1, now, reason(), true), Some(1));
        let due = cursor.take_due_retries(now, 10).remove(0);
        assert!(due.dead_letter, "handed out as a dead-letter job");
        cursor.dying(0);
        cursor.dead_letter_failed(due, now);
        let again = cursor.take_due_retries(now, 10).remove(0);
        assert!(
            again.dead_letter,
            "a failed dead-letter write is tried again as one"
        );
    }

    #[test]
    fn release_returns_only_that_consumers_deliveries() {
        let now = Instant::now();
        let mut cursor = Cursor::new(0);
        cursor.dispatched(0, flight(1, 1, now));
        cursor.dispatched(1, flight(2, 1, now));
        cursor.release(1, now);
        assert_eq!(cursor.in_flight_len(), 1);
        assert_eq!(due(&mut cursor, now), vec![(0, 2)]);
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

    #[derive(Debug, Clone)]
    enum Op {
        Dispatch(u64),
        Redeliver(usize),
        Ack(u64),
        Nack(u64),
        Expire(u64),
        Release(u64),
        Skip(u64),
        DeadLetter(bool),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (1u64..3).prop_map(Op::Dispatch),
            (1usize..4).prop_map(Op::Redeliver),
            (0u64..30).prop_map(Op::Ack),
            (0u64..30).prop_map(Op::Nack),
            (0u64..40).prop_map(Op::Expire),
            (1u64..3).prop_map(Op::Release),
            (0u64..30).prop_map(Op::Skip),
            any::<bool>().prop_map(Op::DeadLetter),
        ]
    }

    proptest::proptest! {
        /// Whatever happens, every offset in `[committed, next_fetch)` is in
        /// exactly one state, the time indexes mirror their maps, and the
        /// committed offset never moves back; and the ack floor equals a
        /// plain reference model: the first offset not yet finished (acked,
        /// dead-lettered or deleted by retention).
        #[test]
        fn states_stay_consistent(ops in proptest::collection::vec(op(), 1..200)) {
            let start = Instant::now();
            let at = |secs: u64| start + Duration::from_secs(secs);
            let mut cursor = Cursor::new(0);
            let mut clock = 0;
            // The reference model.
            let mut finished: BTreeSet<u64> = BTreeSet::new();
            let mut delivered_end = 0u64;
            for op in ops {
                let committed = cursor.committed;
                match op {
                    Op::Dispatch(consumer) => {
                        let offset = cursor.next_fetch;
                        cursor.dispatched(offset, flight(consumer, 1, at(clock + 10)));
                        delivered_end = delivered_end.max(offset + 1);
                    }
                    Op::Redeliver(max) => {
                        for due in cursor.take_due_retries(at(clock), max) {
                            cursor.dispatched(due.offset, flight(1, due.attempt, at(clock + 10)));
                        }
                    }
                    Op::DeadLetter(succeeds) => {
                        if let Some(due) = cursor.take_due_retries(at(clock), 1).pop() {
                            cursor.dying(due.offset);
                            if succeeds {
                                cursor.ack(due.offset);
                                finished.insert(due.offset);
                            } else {
                                cursor.dead_letter_failed(due, at(clock + 1));
                            }
                        }
                    }
                    Op::Ack(offset) => {
                        let counts = offset < delivered_end && !finished.contains(&offset);
                        proptest::prop_assert_eq!(cursor.ack(offset).is_some(), counts, "ack of {}", offset);
                        if counts {
                            finished.insert(offset);
                        }
                    }
                    Op::Nack(offset) => {
                        let attempt = cursor.in_flight.get(&offset).map_or(1, |f| f.attempt);
                        cursor.nack(offset, attempt, at(clock + 1), reason(), false);
                    }
                    Op::Expire(secs) => { clock += secs; cursor.expire(at(clock), |a| Duration::from_secs(u64::from(a))); }
                    Op::Release(consumer) => cursor.release(consumer, at(clock)),
                    Op::Skip(start) => {
                        cursor.skip_to(start);
                        finished.extend(0..start);
                        delivered_end = delivered_end.max(start);
                    }
                }
                let floor = (0..).find(|o| !finished.contains(o)).unwrap_or(0).min(delivered_end);
                proptest::prop_assert_eq!(cursor.committed, floor, "the ack floor matches the model");
                proptest::prop_assert_eq!(cursor.next_fetch, delivered_end);
                proptest::prop_assert!(cursor.committed >= committed);
                proptest::prop_assert!(cursor.committed <= cursor.next_fetch);
                for offset in cursor.committed..cursor.next_fetch {
                    let states = usize::from(cursor.acked.contains(&offset))
                        + usize::from(cursor.in_flight.contains_key(&offset))
                        + usize::from(cursor.retry.contains_key(&offset))
                        + usize::from(cursor.dying.contains(&offset))
                        + usize::from(cursor.held.contains(&offset));
                    proptest::prop_assert_eq!(states, 1, "offset {} in {} states", offset, states);
                }
                proptest::prop_assert!(cursor.acked.iter().all(|&o| o > cursor.committed));
                proptest::prop_assert_eq!(cursor.deadlines.len(), cursor.in_flight.len());
                proptest::prop_assert_eq!(cursor.due.len(), cursor.retry.len());
                for (offset, f) in &cursor.in_flight {
                    proptest::prop_assert!(cursor.deadlines.contains(&(f.deadline, *offset)));
                }
                for (offset, r) in &cursor.retry {
                    proptest::prop_assert!(cursor.due.contains(&(r.ready_at, *offset)));
                }
            }
        }
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
