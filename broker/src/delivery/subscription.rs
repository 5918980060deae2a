//! One subscription: cursors per partition, connected consumers with
//! credits, polling for deliveries and settling them.

use super::cursor::{Cursor, Due, InFlight};
use super::ordering::KeyOrder;
use super::store;
use super::{DeliveryError, Shared};
use crate::config::{Ordering, SubscriptionConfig};
use crate::flow::{Flow, Position, StepKind};
use crate::log::{
    EventLog, GroupListener, GroupMembership, LogError, LogRecord, PartitionOffsets, Source,
    TopicInfo,
};
use crate::model::{DeadLetter, StoredEvent, TopicName, partition_for, partition_key};
use crate::rules::{Pattern, event_view};
use crate::telemetry::metrics::{SubscriptionLag, SubscriptionMetrics};
use crate::telemetry::spans::{self, Settlement};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use switchyard_sdk::telemetry::{context, exporting};
use tokio::sync::Notify;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Longest deadline extension one request may ask for.
const MAX_EXTENSION: Duration = Duration::from_secs(600);
/// How long a consumer waits before re-checking when nothing wakes it.
const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// One attempt to hand one event to one consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Opaque id the consumer acks or nacks with.
    pub id: String,
    /// The topic the event was read from.
    pub topic: TopicName,
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The stored event and the rules that routed it.
    pub record: StoredEvent,
    /// W3C context of this attempt's `deliver` span (empty unless spans
    /// are exported), for the consumer's `process` span to link to.
    pub trace_context: HashMap<String, String>,
}

/// Progress on one partition, as `describe` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    /// The topic: the subscription's, or its private redrive topic.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// Durable committed offset: all below it is acked and on disk.
    pub committed: u64,
    /// The partition's end offset.
    pub end: u64,
    /// `end - committed`.
    pub lag: u64,
    /// Deliveries outstanding.
    pub in_flight: u64,
    /// Age of the oldest event not yet acked, delivered or not, from when
    /// it was stored (lag in time).
    pub oldest_unacked_age: Duration,
    /// With ordering by key: keys held back behind an event that waits for
    /// a retry, sorted.
    pub parked_keys: Vec<String>,
    /// Events waiting for their next attempt.
    pub waiting_retry: u64,
    /// When the next of those is due (ms since the Unix epoch).
    pub next_retry_ms: Option<i64>,
}

/// A nack: which delivery failed, why, and optionally when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NackRequest {
    /// The delivery id.
    pub delivery_id: String,
    /// Why processing failed.
    pub reason: String,
    /// Wait this long instead of the backoff (a Retry-After).
    pub delay: Option<Duration>,
    /// Retrying cannot help: dead-letter the event at once (when the
    /// subscription has a dead-letter topic; otherwise it is retried).
    pub dead_letter: bool,
}

/// Where a seek moves a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeekTarget {
    /// The oldest retained event of every partition.
    Earliest,
    /// The end of every partition: skip everything not yet acked.
    Latest,
    /// The first event appended at or after this time (ms since the Unix
    /// epoch), per partition.
    Time(i64),
    /// Explicit offsets for some partitions (the others stay).
    Offsets(std::collections::BTreeMap<u32, u64>),
}

/// What one poll produced.
#[derive(Debug, Default)]
struct Polled {
    deliveries: Vec<Delivery>,
    dead_letters: Vec<(u32, Due)>,
    wake: Option<Instant>,
}

use crate::model::now_unix_ms as now_ms;

/// A subscription's definition and progress.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionDescription {
    /// The definition.
    pub spec: SubscriptionConfig,
    /// Per-partition progress.
    pub partitions: Vec<PartitionProgress>,
    /// Connected consumers.
    pub consumers: u32,
    /// How the push endpoint is doing (push subscriptions only).
    pub push: Option<PushStatus>,
}

/// How a push subscription's endpoint is doing, as its pusher reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushStatus {
    /// Whether pushes flow.
    pub circuit: Circuit,
    /// While open: when a trial request goes out (ms since the Unix epoch).
    pub retry_at_ms: i64,
    /// Retryable failures in a row.
    pub consecutive_failures: u32,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// Circuit-breaker state of a push endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Circuit {
    /// Pushing normally.
    #[default]
    Closed,
    /// Paused after repeated failures: no requests (and no attempts used)
    /// until the cool-down ends.
    Open,
    /// One trial request decides whether to close or open again.
    HalfOpen,
}

impl Circuit {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct ConsumerSlot {
    in_flight: usize,
    max_in_flight: usize,
}

#[derive(Debug)]
struct State {
    cursors: Vec<Cursor>,
    /// Connected consumers by id: random, and part of each delivery id, so
    /// one stream can neither guess nor settle another's deliveries.
    consumers: HashMap<u64, ConsumerSlot>,
    next_partition: usize,
    /// Committed offsets as last written to disk.
    durable: Vec<u64>,
    dirty: bool,
    deleted: bool,
    /// Bumped by every seek; part of delivery ids, so settles of
    /// deliveries made before a seek are ignored.
    epoch: u32,
    /// Per partition: which keys are busy (ordering by key only).
    keys: Vec<KeyOrder>,
    /// Per cursor: whether this node delivers it. Always with a
    /// single-node log; with consumer groups, what the group assigned.
    owned: Vec<bool>,
    /// The current group membership's number (0: none); callbacks of an
    /// earlier membership that is still leaving are ignored.
    member: u64,
    /// Rate limit token bucket: tokens left and when they were counted.
    tokens: f64,
    tokens_at: Instant,
    /// The push endpoint's state, reported by the pusher.
    push: Option<PushStatus>,
    /// Open `deliver` spans by (cursor index, offset), ended when the
    /// delivery is settled or delivered again; empty unless spans are
    /// exported.
    traces: HashMap<(u32, u64), Span>,
}

/// This node's seat in the subscription's consumer group (logs with
/// consumer groups only), held while consumers are connected here.
struct Seat {
    membership: Box<dyn GroupMembership>,
    /// Kept alive for the membership, which holds it weakly.
    _member: Arc<dyn GroupListener>,
}

impl std::fmt::Debug for Seat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seat").finish_non_exhaustive()
    }
}

/// Relays one membership's rebalances to its subscription.
struct Member {
    subscription: Weak<Subscription>,
    id: u64,
}

impl GroupListener for Member {
    fn assigned(&self, sources: &[(usize, Option<u64>)]) {
        if let Some(subscription) = self.subscription.upgrade() {
            subscription.assign(self.id, sources);
        }
    }

    fn revoked(&self, sources: &[usize]) -> Vec<(usize, u64)> {
        self.subscription
            .upgrade()
            .map(|subscription| subscription.revoke(self.id, sources))
            .unwrap_or_default()
    }
}

/// A named consumer group on one topic.
#[derive(Debug)]
pub struct Subscription {
    spec: SubscriptionConfig,
    topic: TopicName,
    /// What the subscription reads, by cursor index: the topic's partitions,
    /// then (with a dead-letter topic) partition 0 of its private redrive
    /// topic `<name>.redrive`, where redriven events come back.
    sources: Vec<Source>,
    /// This node's group membership (logs with consumer groups).
    seat: Mutex<Option<Seat>>,
    log: Arc<dyn EventLog>,
    dead_letter_topic: Option<TopicName>,
    filter: Option<Pattern>,
    max_unacked: u64,
    dir: PathBuf,
    state: Mutex<State>,
    /// Woken when credits free up or retries are scheduled.
    settled: Notify,
    /// Woken by the log after appends to the topic.
    appended: Arc<Notify>,
    /// Its delivery counters and latency histogram.
    metrics: SubscriptionMetrics,
    /// Where deliveries and their outcomes are recorded.
    flow: Arc<Flow>,
}

impl Subscription {
    pub(super) fn new(
        spec: SubscriptionConfig,
        topic: TopicInfo,
        mut committed: Vec<u64>,
        shared: &Shared,
        dir: PathBuf,
        redrive_topic: Option<TopicName>,
    ) -> Result<Subscription, DeliveryError> {
        let mut sources: Vec<(TopicName, u32)> = (0..topic.partitions)
            .map(|p| (topic.name.clone(), p))
            .collect();
        if let Some(redrive) = redrive_topic {
            sources.push((redrive, 0));
        }
        committed.resize(sources.len(), 0);
        let cursor_count = sources.len();
        let log = Arc::clone(&shared.log);
        let single_node = log.groups().is_none();
        let appended = log.appended(&topic.name)?;
        let dead_letter_topic = spec
            .dead_letter_topic
            .clone()
            .map(TopicName::new)
            .transpose()?;
        let filter = spec
            .filter
            .as_ref()
            .map(Pattern::compile)
            .transpose()
            .map_err(|e| DeliveryError::InvalidSpec {
                field: "filter".into(),
                message: e.to_string(),
            })?;
        Ok(Subscription {
            topic: topic.name,
            sources,
            dead_letter_topic,
            filter,
            max_unacked: shared.config.max_unacked_per_partition,
            metrics: shared.metrics.subscription(&spec.name),
            flow: Arc::clone(&shared.flow),
            dir,
            state: Mutex::new(State {
                cursors: committed.iter().map(|&c| Cursor::new(c)).collect(),
                consumers: HashMap::new(),
                next_partition: 0,
                durable: committed,
                dirty: false,
                deleted: false,
                epoch: 0,
                keys: (0..cursor_count).map(|_| KeyOrder::default()).collect(),
                owned: vec![single_node; cursor_count],
                member: 0,
                tokens: spec.rate_limit.map_or(0.0, |rate| rate.max(1.0)),
                tokens_at: Instant::now(),
                traces: HashMap::new(),
                push: None,
            }),
            settled: Notify::new(),
            appended,
            seat: Mutex::new(None),
            spec,
            log,
        })
    }

    /// The subscription's directory (offsets, definition, redrive marks).
    pub(super) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Wakes waiting consumers (new events on the redrive topic).
    pub(super) fn wake(&self) {
        self.settled.notify_waiters();
    }

    /// Where the event at `offset` of cursor `index` is.
    fn position(&self, index: u32, offset: u64) -> Position {
        let (topic, partition) = self.source(index);
        Position {
            topic: topic.to_string(),
            partition,
            offset,
        }
    }

    /// The topic and partition behind cursor `index`.
    fn source(&self, index: u32) -> (&TopicName, u32) {
        let (topic, partition) = &self.sources[index as usize];
        (topic, *partition)
    }

    /// Whether cursor `index` reads the private redrive topic.
    fn reads_redrive(&self, index: u32) -> bool {
        self.source(index).0 != &self.topic
    }

    fn offsets_of(&self, index: u32) -> Result<PartitionOffsets, LogError> {
        let (topic, partition) = self.source(index);
        self.log.offsets(topic, partition)
    }

    fn read_from(&self, index: u32, from: u64, max: usize) -> Result<Vec<LogRecord>, LogError> {
        let (topic, partition) = self.source(index);
        self.log.read(topic, partition, from, max)
    }

    fn time_offset(&self, index: u32, timestamp_ms: i64) -> Result<u64, LogError> {
        let (topic, partition) = self.source(index);
        self.log.offset_for_time(topic, partition, timestamp_ms)
    }

    /// The definition.
    pub fn spec(&self) -> &SubscriptionConfig {
        &self.spec
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, DeliveryError> {
        let state = self
            .state
            .lock()
            .map_err(|_| DeliveryError::SubscriptionNotFound(self.spec.name.clone()))?;
        if state.deleted {
            return Err(DeliveryError::SubscriptionNotFound(self.spec.name.clone()));
        }
        Ok(state)
    }

    /// Connects a consumer with `max_in_flight` credits (0: the
    /// subscription's default). Dropping the consumer returns its unsettled
    /// deliveries for redelivery.
    pub fn connect(self: &Arc<Self>, max_in_flight: u32) -> Result<Consumer, DeliveryError> {
        let max_in_flight = if max_in_flight == 0 {
            self.spec.max_in_flight
        } else {
            max_in_flight
        };
        let mut state = self.state()?;
        let id = loop {
            let candidate = uuid::Uuid::new_v4().as_u64_pair().0;
            if !state.consumers.contains_key(&candidate) {
                break candidate;
            }
        };
        state.consumers.insert(
            id,
            ConsumerSlot {
                in_flight: 0,
                max_in_flight: max_in_flight as usize,
            },
        );
        drop(state);
        tracing::info!(subscription = %self.spec.name, consumer = id, max_in_flight, "consumer connected");
        let consumer = Consumer {
            id,
            subscription: Arc::clone(self),
        };
        self.join_group()?;
        Ok(consumer)
    }

    /// Makes this node a member of the subscription's consumer group (logs
    /// with consumer groups) while consumers are connected here and it is
    /// not one yet. Until the group assigns partitions, nothing is
    /// delivered.
    fn join_group(self: &Arc<Self>) -> Result<(), DeliveryError> {
        let Some(groups) = self.log.groups() else {
            return Ok(());
        };
        let mut seat = self.seat.lock().map_err(|_| self.gone())?;
        let id = {
            let mut state = self.state()?;
            if seat.is_some() || state.consumers.is_empty() {
                return Ok(());
            }
            state.member += 1;
            state.member
        };
        let member: Arc<dyn GroupListener> = Arc::new(Member {
            subscription: Arc::downgrade(self),
            id,
        });
        let membership = groups.join(&self.spec.name, &self.sources, Arc::downgrade(&member))?;
        *seat = Some(Seat {
            membership,
            _member: member,
        });
        Ok(())
    }

    /// Leaves the consumer group once no consumer is connected here (or
    /// the subscription is deleted): commits the ack floors of the owned
    /// partitions, then hands them back for the group to give to other
    /// nodes.
    fn leave_group(&self) {
        let Ok(mut seat) = self.seat.lock() else {
            return;
        };
        let floors = {
            let Ok(mut guard) = self.state.lock() else {
                return;
            };
            let state = &mut *guard;
            if seat.is_none() || !(state.consumers.is_empty() || state.deleted) {
                return;
            }
            // Later callbacks of the leaving membership are stale.
            state.member += 1;
            let owned: Vec<usize> = (0..state.owned.len()).filter(|&i| state.owned[i]).collect();
            give_up(state, &owned)
        };
        if let Some(left) = seat.take()
            && let Err(error) = left.membership.commit(&floors)
        {
            tracing::warn!(subscription = %self.spec.name, %error, "leaving the group: committing offsets failed (un-committed progress is delivered again)");
        }
    }

    /// The group gave this node `sources`: deliver them from their
    /// committed offsets (the subscription's start position where the
    /// group has none). A cursor whose committed offset nobody moved
    /// since this node gave it up carries on as it was: its retries keep
    /// their attempt counts, its deliveries in flight stay valid.
    fn assign(&self, member: u64, sources: &[(usize, Option<u64>)]) {
        let starts: Vec<(usize, u64)> = sources
            .iter()
            .map(|&(index, committed)| {
                let start = committed.map_or_else(|| self.initial_offset(index), Ok);
                (index, start.unwrap_or(0))
            })
            .collect();
        let Ok(mut guard) = self.state() else {
            return;
        };
        let state = &mut *guard;
        if state.member != member {
            return;
        }
        let mut moved = false;
        for &(index, offset) in &starts {
            if index >= state.owned.len() {
                continue;
            }
            if state.durable[index] != offset {
                restart(state, index, offset);
                state.durable[index] = offset;
                moved = true;
            }
            state.owned[index] = true;
        }
        if moved {
            state.epoch = state.epoch.wrapping_add(1);
            state.traces.clear();
        }
        drop(guard);
        tracing::info!(subscription = %self.spec.name, ?starts, "delivering assigned partitions");
        self.settled.notify_waiters();
    }

    /// The group takes `sources` away from this node: stop delivering
    /// them and return their ack floors to commit.
    fn revoke(&self, member: u64, sources: &[usize]) -> Vec<(usize, u64)> {
        let Ok(mut guard) = self.state() else {
            return Vec::new();
        };
        if guard.member != member {
            return Vec::new();
        }
        give_up(&mut guard, sources)
    }

    /// Where cursor `index` starts when the group never committed an
    /// offset for it: the subscription's start position on its topic,
    /// the beginning of its redrive topic.
    fn initial_offset(&self, index: usize) -> Result<u64, LogError> {
        let (topic, partition) = self.source(index as u32);
        if topic == &self.topic {
            super::start_offset(self.log.as_ref(), topic, partition, self.spec.start)
        } else {
            Ok(self.offsets_of(index as u32)?.start)
        }
    }

    fn has_seat(&self) -> bool {
        self.seat.lock().is_ok_and(|seat| seat.is_some())
    }

    fn gone(&self) -> DeliveryError {
        DeliveryError::SubscriptionNotFound(self.spec.name.clone())
    }

    /// The committed offset of each cursor: this node's for what it owns,
    /// the group's for the rest.
    fn committed(&self) -> Result<Vec<u64>, DeliveryError> {
        let (mut committed, owned) = {
            let state = self.state()?;
            (state.durable.clone(), state.owned.clone())
        };
        if let Some(groups) = self.log.groups()
            && owned.contains(&false)
        {
            let stored = groups.committed(&self.spec.name, &self.sources)?;
            for (index, offset) in stored.into_iter().enumerate() {
                if !owned[index] {
                    committed[index] = offset.unwrap_or(0);
                }
            }
        }
        Ok(committed)
    }

    /// Definition and progress.
    pub fn describe(&self) -> Result<SubscriptionDescription, DeliveryError> {
        let committed = self.committed()?;
        let state = self.state()?;
        let (now, now_ms) = (Instant::now(), now_ms());
        let mut partitions = state
            .cursors
            .iter()
            .enumerate()
            .map(|(p, cursor)| {
                let end = self.offsets_of(p as u32)?.end;
                let committed = committed[p];
                let (topic, partition) = self.source(p as u32);
                let (waiting_retry, next_retry) = cursor.retries();
                Ok(PartitionProgress {
                    topic: topic.to_string(),
                    partition,
                    parked_keys: state.keys[p].parked(|offset| cursor.is_retrying(offset)),
                    committed,
                    end,
                    lag: end.saturating_sub(committed),
                    in_flight: cursor.in_flight_len() as u64,
                    // Read from the log below, without the state's lock.
                    oldest_unacked_age: Duration::ZERO,
                    waiting_retry: waiting_retry as u64,
                    next_retry_ms: next_retry
                        .map(|at| now_ms + at.saturating_duration_since(now).as_millis() as i64),
                })
            })
            .collect::<Result<Vec<_>, DeliveryError>>()?;
        let (consumers, push) = (state.consumers.len() as u32, state.push.clone());
        drop(state);
        for (index, progress) in partitions.iter_mut().enumerate() {
            if let Some(stored) = self.oldest_unacked_ms(index as u32, progress.committed)? {
                progress.oldest_unacked_age =
                    Duration::from_millis((now_ms - stored).max(0) as u64);
            }
        }
        Ok(SubscriptionDescription {
            spec: self.spec.clone(),
            partitions,
            consumers,
            push,
        })
    }

    /// When the oldest event of cursor `index` not yet acked (at or after
    /// `committed`) was stored, if there is one: the lag in time, whether
    /// it was delivered or not.
    fn oldest_unacked_ms(&self, index: u32, committed: u64) -> Result<Option<i64>, LogError> {
        let offsets = self.offsets_of(index)?;
        let from = committed.max(offsets.start);
        if from >= offsets.end {
            return Ok(None);
        }
        Ok(self
            .read_from(index, from, 1)?
            .first()
            .map(|record| record.timestamp_ms))
    }

    /// Records the push endpoint's state (from the pusher), for `describe`
    /// and the metrics.
    pub fn report_push(&self, status: PushStatus) {
        self.metrics
            .push_circuit_open
            .set(i64::from(status.circuit != Circuit::Closed));
        if let Ok(mut state) = self.state.lock() {
            state.push = Some(status);
        }
    }

    /// Its metric handles (the pusher counts requests).
    pub fn metrics(&self) -> &SubscriptionMetrics {
        &self.metrics
    }

    /// Moves the subscription (seek / replay): each partition in scope
    /// starts over at its target offset (clamped to the retained range);
    /// deliveries in flight are forgotten and their settles ignored. The
    /// new position is durable when this returns.
    pub fn seek(&self, target: &SeekTarget) -> Result<(), DeliveryError> {
        let partitions = self.state()?.cursors.len() as u32;
        if let SeekTarget::Offsets(offsets) = target
            && let Some(bad) = offsets.keys().find(|&&p| p >= partitions)
        {
            return Err(DeliveryError::InvalidSpec {
                field: "offsets".into(),
                message: format!(
                    "topic '{}' has {partitions} partitions; partition {bad} does not exist",
                    self.topic
                ),
            });
        }
        let mut targets = Vec::new();
        for partition in 0..partitions {
            let range = self.offsets_of(partition)?;
            let offset = match target {
                SeekTarget::Earliest => Some(range.start),
                SeekTarget::Latest => Some(range.end),
                SeekTarget::Time(ms) => Some(self.time_offset(partition, *ms)?),
                SeekTarget::Offsets(offsets) => offsets.get(&partition).copied(),
            };
            if let Some(offset) = offset {
                targets.push((partition as usize, offset.clamp(range.start, range.end)));
            }
        }
        if let Some(groups) = self.log.groups()
            && !self.has_seat()
        {
            // Not a member here: the group's offsets are set directly.
            let offsets: Vec<(Source, u64)> = targets
                .iter()
                .map(|&(index, offset)| (self.sources[index].clone(), offset))
                .collect();
            groups.commit_idle(&self.spec.name, &offsets)?;
            // This node's cursors start over too, so that when the group
            // assigns them here again they do not carry on as before.
            let mut guard = self.state()?;
            let state = &mut *guard;
            for &(index, offset) in &targets {
                restart(state, index, offset);
                state.durable[index] = offset;
            }
            state.epoch = state.epoch.wrapping_add(1);
            drop(guard);
            tracing::info!(subscription = %self.spec.name, ?target, "subscription seeked (group offsets)");
            return Ok(());
        }
        {
            let mut guard = self.state()?;
            let state = &mut *guard;
            let elsewhere: Vec<u32> = targets
                .iter()
                .filter(|&&(index, _)| !state.owned[index])
                .map(|&(index, _)| index as u32)
                .collect();
            if !elsewhere.is_empty() {
                return Err(DeliveryError::OwnedElsewhere {
                    subscription: self.spec.name.clone(),
                    partitions: elsewhere,
                });
            }
            for (partition, offset) in targets {
                restart(state, partition, offset);
            }
            state.epoch = state.epoch.wrapping_add(1);
            state.dirty = true;
            state.traces.clear();
        }
        tracing::info!(subscription = %self.spec.name, ?target, "subscription seeked");
        self.flush()?;
        self.settled.notify_waiters();
        Ok(())
    }

    /// Stores committed offsets if they changed: in the consumer group
    /// (what this node owns) or on disk.
    pub(super) fn flush(&self) -> Result<(), DeliveryError> {
        if self.log.groups().is_some() {
            return self.commit_to_group();
        }
        let snapshot = {
            let Ok(mut state) = self.state() else {
                return Ok(());
            };
            if !state.dirty {
                return Ok(());
            }
            state.dirty = false;
            state
                .cursors
                .iter()
                .map(|c| c.committed)
                .collect::<Vec<_>>()
        };
        match store::write_offsets(&self.dir, &snapshot) {
            Ok(()) => {
                if let Ok(mut state) = self.state() {
                    state.durable = snapshot;
                }
                Ok(())
            }
            Err(e) => {
                if let Ok(mut state) = self.state() {
                    state.dirty = true;
                }
                Err(e)
            }
        }
    }

    /// Commits the ack floors of the partitions this node owns that moved
    /// since the last commit.
    fn commit_to_group(&self) -> Result<(), DeliveryError> {
        let seat = self.seat.lock().map_err(|_| self.gone())?;
        let Some(seat) = seat.as_ref() else {
            return Ok(());
        };
        let floors: Vec<(usize, u64)> = {
            let Ok(mut state) = self.state() else {
                return Ok(());
            };
            if !state.dirty {
                return Ok(());
            }
            state.dirty = false;
            (0..state.cursors.len())
                .filter(|&i| state.owned[i] && state.cursors[i].committed != state.durable[i])
                .map(|i| (i, state.cursors[i].committed))
                .collect()
        };
        match seat.membership.commit(&floors) {
            Ok(()) => {
                if let Ok(mut state) = self.state() {
                    for &(index, offset) in &floors {
                        state.durable[index] = offset;
                    }
                }
                Ok(())
            }
            Err(error) => {
                if let Ok(mut state) = self.state() {
                    state.dirty = true;
                }
                Err(error.into())
            }
        }
    }

    pub(super) fn mark_deleted(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.deleted = true;
            state.traces.clear();
        }
        self.leave_group();
        self.settled.notify_waiters();
    }

    /// Hands out what is ready for `consumer` within its credits: due
    /// retries first, then new events, partitions taken round-robin.
    /// Retries past `max_attempts` come back as dead-letter jobs instead.
    fn poll(&self, consumer: u64) -> Result<Polled, DeliveryError> {
        let now = Instant::now();
        let now_ms = now_ms();
        let mut state = self.state()?;
        let state = &mut *state;
        for cursor in &mut state.cursors {
            let backoff = |attempt: u32| self.backoff(attempt, now_ms as u64);
            for holder in cursor.expire(now, backoff) {
                self.metrics.timeouts.inc();
                release_credit(&mut state.consumers, holder);
            }
        }
        let mut polled = Polled::default();
        let Some(slot) = state.consumers.get(&consumer) else {
            return Ok(polled);
        };
        let mut budget = slot.max_in_flight.saturating_sub(slot.in_flight);
        if let Some(rate) = self.spec.rate_limit {
            let elapsed = now.saturating_duration_since(state.tokens_at).as_secs_f64();
            state.tokens = (state.tokens + elapsed * rate).min(rate.max(1.0));
            state.tokens_at = now;
            budget = budget.min(state.tokens.floor() as usize);
        }
        let granted = budget;
        let partitions = state.cursors.len();
        let deadline = now + self.spec.ack_deadline;
        for i in 0..partitions {
            if budget == 0 {
                break;
            }
            let partition = (state.next_partition + i) % partitions;
            if !state.owned[partition] {
                continue;
            }
            let cursor = &mut state.cursors[partition];
            let keys = &mut state.keys[partition];
            let offsets = self.offsets_of(partition as u32)?;
            for holder in cursor.skip_to(offsets.start) {
                release_credit(&mut state.consumers, holder);
            }
            keys.forget_below(offsets.start);
            for due in cursor.take_due_retries(now, budget) {
                if due.dead_letter || self.spec.max_attempts.is_some_and(|max| due.attempt > max) {
                    cursor.dying(due.offset);
                    polled.dead_letters.push((partition as u32, due));
                    continue;
                }
                match self.read_from(partition as u32, due.offset, 1)?.pop() {
                    Some(record) if record.offset == due.offset => {
                        polled.deliveries.push(self.delivery(
                            DeliveryId {
                                partition: partition as u32,
                                offset: due.offset,
                                attempt: due.attempt,
                                epoch: state.epoch,
                                consumer,
                            },
                            &record.payload,
                        )?);
                        let flight = InFlight {
                            consumer,
                            attempt: due.attempt,
                            deadline,
                            first_ms: due.first_ms,
                            at_ms: now_ms,
                        };
                        cursor.dispatched(due.offset, flight);
                        budget -= 1;
                    }
                    // Deleted by retention meanwhile: nothing left to deliver.
                    _ => {
                        cursor.ack(due.offset);
                    }
                }
            }
            let ordered = self.spec.ordering == Ordering::ByKey;
            let first_attempt = InFlight {
                consumer,
                attempt: 1,
                deadline,
                first_ms: now_ms,
                at_ms: now_ms,
            };
            // Held events whose key became free.
            for offset in keys.release(if ordered { budget } else { 0 }) {
                cursor.unhold(offset);
                match self.read_from(partition as u32, offset, 1)?.pop() {
                    Some(record) if record.offset == offset => {
                        let delivery = self.delivery(
                            DeliveryId {
                                partition: partition as u32,
                                offset,
                                attempt: 1,
                                epoch: state.epoch,
                                consumer,
                            },
                            &record.payload,
                        )?;
                        self.observe_first_delivery(&record, now_ms);
                        polled.deliveries.push(delivery);
                        cursor.dispatched(offset, first_attempt);
                        budget -= 1;
                    }
                    _ => {
                        keys.finish(offset);
                        cursor.ack(offset);
                    }
                }
            }
            // New events; with ordering, those of a busy key are held back
            // and do not use credits, so read on while credits remain.
            while budget > 0 {
                let want = (budget as u64).min(cursor.fetch_budget(self.max_unacked)) as usize;
                if want == 0 || cursor.next_fetch >= offsets.end {
                    break;
                }
                let records = self.read_from(partition as u32, cursor.next_fetch, want)?;
                if records.is_empty() {
                    break;
                }
                for record in records {
                    let delivery = self.delivery(
                        DeliveryId {
                            partition: partition as u32,
                            offset: record.offset,
                            attempt: 1,
                            epoch: state.epoch,
                            consumer,
                        },
                        &record.payload,
                    )?;
                    if !self.wanted(&delivery) {
                        cursor.skip(record.offset);
                        continue;
                    }
                    if ordered && !keys.admit(ordering_key(&delivery), record.offset) {
                        cursor.hold(record.offset);
                        continue;
                    }
                    self.observe_first_delivery(&record, now_ms);
                    polled.deliveries.push(delivery);
                    cursor.dispatched(record.offset, first_attempt);
                    budget -= 1;
                }
            }
        }
        state.next_partition = (state.next_partition + 1) % partitions.max(1);
        if exporting() {
            self.trace_deliveries(&mut state.traces, &mut polled.deliveries);
        }
        for delivery in &polled.deliveries {
            self.flow.at(
                Position {
                    topic: delivery.topic.to_string(),
                    partition: delivery.partition,
                    offset: delivery.offset,
                },
                delivery.record.event.as_ref(),
                StepKind::Delivered {
                    subscription: self.spec.name.clone(),
                    attempt: delivery.attempt,
                },
            );
        }
        let delivered = polled.deliveries.len() as u64;
        let retried = polled.deliveries.iter().filter(|d| d.attempt > 1).count() as u64;
        self.metrics.deliveries.inc_by(delivered);
        self.metrics.redeliveries.inc_by(retried);
        if let Some(slot) = state.consumers.get_mut(&consumer) {
            slot.in_flight += polled.deliveries.len();
        }
        polled.wake = state.cursors.iter().filter_map(Cursor::next_wake).min();
        if let Some(rate) = self.spec.rate_limit {
            state.tokens -= (granted - budget) as f64;
            if budget == 0 {
                // Out of tokens: look again when the next one is due.
                let next_token = Duration::from_secs_f64((1.0 - state.tokens).max(0.0) / rate);
                polled.wake = Some(
                    polled
                        .wake
                        .map_or(now + next_token, |w| w.min(now + next_token)),
                );
            }
        }
        Ok(polled)
    }

    /// Records how long an event waited between its append and its first
    /// delivery.
    fn observe_first_delivery(&self, record: &LogRecord, now_ms: i64) {
        let waited_ms = (now_ms - record.timestamp_ms).max(0);
        self.metrics
            .observe_publish_to_deliver(waited_ms as f64 / 1000.0);
    }

    /// How far behind the subscription is: events from the committed
    /// offsets to the ends, and the age of the oldest of them.
    pub(super) fn lag(&self) -> Result<SubscriptionLag, DeliveryError> {
        let committed = self.committed()?;
        let mut events = 0;
        let mut oldest_ms: Option<i64> = None;
        for (index, committed) in committed.into_iter().enumerate() {
            let offsets = self.offsets_of(index as u32)?;
            events += offsets.end.saturating_sub(committed.max(offsets.start));
            if let Some(stored) = self.oldest_unacked_ms(index as u32, committed)? {
                oldest_ms = Some(oldest_ms.map_or(stored, |t| t.min(stored)));
            }
        }
        Ok(SubscriptionLag {
            subscription: self.spec.name.clone(),
            events,
            seconds: oldest_ms.map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0),
        })
    }

    /// Opens a `deliver` span per delivery (ending the span of an earlier
    /// attempt that was never settled) and hands its context along.
    fn trace_deliveries(
        &self,
        traces: &mut HashMap<(u32, u64), Span>,
        deliveries: &mut [Delivery],
    ) {
        for delivery in deliveries {
            let Some(id) = parse_delivery_id(&delivery.id) else {
                continue;
            };
            let span = spans::deliver(
                &self.spec.name,
                delivery.topic.as_str(),
                delivery.partition,
                delivery.offset,
                delivery.attempt,
                delivery.record.event.as_ref(),
            );
            delivery.trace_context = context::to_map(&span.context());
            if let Some(earlier) = traces.insert((id.partition, id.offset), span) {
                spans::settle(earlier, &self.spec.name, Settlement::TimedOut);
            }
        }
    }

    /// Whether the subscription's extra filter (if any) accepts the event.
    fn wanted(&self, delivery: &Delivery) -> bool {
        match (&self.filter, &delivery.record.event) {
            (Some(filter), Some(event)) => filter.matches(&event_view(event)),
            _ => true,
        }
    }

    /// The delay before attempt `attempt` (2 for the first retry).
    /// How long before `attempt` is made; none when it is past
    /// `max_attempts`: the event is then dead-lettered at once, not one
    /// backoff after its last attempt.
    fn backoff(&self, attempt: u32, salt: u64) -> Duration {
        if self.spec.max_attempts.is_some_and(|max| attempt > max) {
            return Duration::ZERO;
        }
        self.spec
            .backoff
            .delay(attempt.saturating_sub(1), salt ^ u64::from(attempt))
    }

    /// Writes a failed event to the dead-letter topic with its failure
    /// metadata, then counts it as done on this subscription. If the write
    /// fails, it is tried again after the longest backoff.
    async fn dead_letter(&self, partition: u32, due: Due) -> Result<(), DeliveryError> {
        let offset = due.offset;
        let outcome = self.write_dead_letter(partition, &due).await;
        let mut guard = self.state()?;
        let state = &mut *guard;
        if let Some(unsettled) = state.traces.remove(&(partition, offset)) {
            spans::settle(unsettled, &self.spec.name, Settlement::TimedOut);
        }
        let cursor = &mut state.cursors[partition as usize];
        match outcome {
            Ok(()) => {
                self.metrics.dead_letters.inc();
                if let Some(topic) = &self.dead_letter_topic {
                    self.flow.at(
                        self.position(partition, offset),
                        None,
                        StepKind::DeadLettered {
                            subscription: self.spec.name.clone(),
                            topic: topic.to_string(),
                            reason: due.reason.to_string(),
                        },
                    );
                }
                cursor.ack(offset);
                state.keys[partition as usize].finish(offset);
                state.dirty = true;
            }
            Err(error) => {
                tracing::error!(subscription = %self.spec.name, partition, offset, %error, "dead-letter write failed; will retry");
                cursor.dead_letter_failed(due, Instant::now() + self.spec.backoff.max);
            }
        }
        drop(guard);
        // A key may have moved on (ordering) or a retry may be due.
        self.settled.notify_waiters();
        Ok(())
    }

    async fn write_dead_letter(&self, partition: u32, due: &Due) -> Result<(), DeliveryError> {
        let Some(topic) = &self.dead_letter_topic else {
            return Ok(());
        };
        let Some(record) = self.read_from(partition, due.offset, 1)?.pop() else {
            return Ok(());
        };
        if record.offset != due.offset {
            return Ok(()); // deleted by retention meanwhile
        }
        let (read_topic, read_partition) = self.source(partition);
        let mut stored =
            StoredEvent::from_bytes(&record.payload).map_err(|e| DeliveryError::Undecodable {
                topic: read_topic.to_string(),
                partition: read_partition,
                offset: due.offset,
                reason: e.to_string(),
            })?;
        // A redriven event that fails again names where it first failed,
        // not the redrive topic it came back through.
        let (source_topic, source_partition, source_offset) = match stored.dead_letter.take() {
            Some(earlier) if self.reads_redrive(partition) => (
                earlier.source_topic,
                earlier.source_partition,
                earlier.source_offset,
            ),
            _ => (read_topic.to_string(), read_partition, due.offset),
        };
        stored.dead_letter = Some(DeadLetter {
            source_topic,
            source_partition,
            source_offset,
            subscription: self.spec.name.clone(),
            attempts: due.attempt - 1,
            last_reason: due.reason.to_string(),
            first_attempt_unix_ms: due.first_ms,
            last_attempt_unix_ms: due.last_ms,
            redriven: false,
        });
        let partitions = self.log.topic(topic)?.partitions;
        let target = stored
            .event
            .as_ref()
            .map_or(0, |e| partition_for(e, partitions));
        let span = spans::dead_letter(
            &self.spec.name,
            topic.as_str(),
            stored.event.as_ref(),
            due.attempt - 1,
            &due.reason,
        );
        let written = self
            .log
            .append(topic, target, vec![stored.to_bytes()])
            .instrument(span.clone())
            .await?;
        let _in_span = span.enter();
        tracing::warn!(
            subscription = %self.spec.name,
            source_topic = %read_topic,
            source_partition = read_partition,
            offset = due.offset,
            attempts = due.attempt - 1,
            reason = %due.reason,
            dead_letter_topic = %topic,
            dead_letter_offset = written.first().copied(),
            "event dead-lettered"
        );
        Ok(())
    }

    fn delivery(&self, id: DeliveryId, payload: &[u8]) -> Result<Delivery, DeliveryError> {
        let (topic, source_partition) = self.source(id.partition);
        let mut record =
            StoredEvent::from_bytes(payload).map_err(|e| DeliveryError::Undecodable {
                topic: topic.to_string(),
                partition: source_partition,
                offset: id.offset,
                reason: e.to_string(),
            })?;
        if self.reads_redrive(id.partition) {
            // Its failure metadata travels for a later dead letter only.
            record.dead_letter = None;
        }
        Ok(Delivery {
            id: id.to_string(),
            topic: topic.clone(),
            partition: source_partition,
            offset: id.offset,
            attempt: id.attempt,
            record,
            trace_context: HashMap::new(),
        })
    }

    /// Extends, acks and nacks for `consumer` (see [`Consumer::settle`]),
    /// under one hold of the state; returns the refused ids.
    fn settle(
        &self,
        consumer: u64,
        acks: &[String],
        nacks: &[NackRequest],
        extensions: &[(String, Duration)],
    ) -> Result<Vec<SettleRefusal>, DeliveryError> {
        let mut guard = self.state()?;
        let state = &mut *guard;
        let now = Instant::now();
        let mut refused = Vec::new();
        let epoch = state.epoch;
        let mut own = |id: &str| settleable(id, consumer, epoch, &mut refused);
        for (id, by) in extensions {
            let Some(id) = own(id) else { continue };
            if let Some(cursor) = state.cursors.get_mut(id.partition as usize) {
                cursor.extend(id.offset, id.attempt, now + (*by).min(MAX_EXTENSION));
            }
        }
        for id in acks {
            let Some(DeliveryId {
                partition, offset, ..
            }) = own(id)
            else {
                continue;
            };
            self.metrics.acks.inc();
            if let Some(span) = state.traces.remove(&(partition, offset)) {
                spans::settle(span, &self.spec.name, Settlement::Acked);
            }
            let Some(cursor) = state.cursors.get_mut(partition as usize) else {
                continue;
            };
            if let Some(holder) = cursor.ack(offset) {
                self.flow.at(
                    self.position(partition, offset),
                    None,
                    StepKind::Acked {
                        subscription: self.spec.name.clone(),
                    },
                );
                state.keys[partition as usize].finish(offset);
                state.dirty = true;
                if let Some(holder) = holder {
                    release_credit(&mut state.consumers, holder);
                }
            }
        }
        for nack in nacks {
            let Some(DeliveryId {
                partition,
                offset,
                attempt,
                ..
            }) = own(&nack.delivery_id)
            else {
                continue;
            };
            self.metrics.nacks.inc();
            if let Some(span) = state.traces.remove(&(partition, offset)) {
                spans::settle(span, &self.spec.name, Settlement::Nacked(&nack.reason));
            }
            let Some(cursor) = state.cursors.get_mut(partition as usize) else {
                continue;
            };
            // Dead-lettering needs a dead-letter topic; without one it retries.
            let dead_letter = nack.dead_letter && self.dead_letter_topic.is_some();
            let delay = if dead_letter {
                Duration::ZERO
            } else {
                nack.delay
                    .unwrap_or_else(|| self.backoff(attempt + 1, offset ^ now_ms() as u64))
            };
            let reason: Arc<str> = Arc::from(nack.reason.as_str());
            if let Some(holder) = cursor.nack(offset, attempt, now + delay, reason, dead_letter) {
                self.flow.at(
                    self.position(partition, offset),
                    None,
                    StepKind::Nacked {
                        subscription: self.spec.name.clone(),
                        reason: nack.reason.clone(),
                    },
                );
                tracing::info!(subscription = %self.spec.name, partition, offset, attempt, reason = %nack.reason, ?delay, "delivery nacked");
                release_credit(&mut state.consumers, holder);
            }
        }
        drop(guard);
        self.settled.notify_waiters();
        Ok(refused)
    }

    fn release(&self, consumer: u64) {
        let now = Instant::now();
        if let Ok(mut state) = self.state.lock() {
            state.consumers.remove(&consumer);
            for cursor in &mut state.cursors {
                cursor.release(consumer, now);
            }
        }
        tracing::info!(subscription = %self.spec.name, consumer, "consumer disconnected");
        self.leave_group();
        self.settled.notify_waiters();
    }
}

/// Starts cursor `index` over at `offset`: deliveries in flight are
/// forgotten (their credits returned) and held keys released.
fn restart(state: &mut State, index: usize, offset: u64) {
    for holder in state.cursors[index].reset(offset) {
        release_credit(&mut state.consumers, holder);
    }
    state.keys[index].forget_below(u64::MAX);
}

/// Stops delivering the owned cursors among `sources` (they go to
/// another node, or nowhere) and returns their ack floors for
/// committing. The cursors stay as they are: if a cursor comes back
/// unmoved, delivery carries on from it; if another node moved it, it
/// restarts from the group's offset ([`Subscription::assign`]).
fn give_up(state: &mut State, sources: &[usize]) -> Vec<(usize, u64)> {
    let mut floors = Vec::new();
    for &index in sources {
        if !state.owned.get(index).copied().unwrap_or(false) {
            continue;
        }
        let floor = state.cursors[index].committed;
        state.owned[index] = false;
        state.durable[index] = floor;
        floors.push((index, floor));
    }
    floors
}

fn release_credit(consumers: &mut HashMap<u64, ConsumerSlot>, holder: u64) {
    if let Some(slot) = consumers.get_mut(&holder) {
        slot.in_flight = slot.in_flight.saturating_sub(1);
    }
}

/// The key ordering goes by: the `partitionkey` extension, else the id.
fn ordering_key(delivery: &Delivery) -> &str {
    delivery.record.event.as_ref().map_or("", partition_key)
}

/// A delivery id: `partition.offset.attempt.epoch.consumer` (the consumer
/// in hex): where the event is, which attempt, made before or after which
/// seek, and to which stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DeliveryId {
    partition: u32,
    offset: u64,
    attempt: u32,
    epoch: u32,
    consumer: u64,
}

impl std::fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}.{:x}",
            self.partition, self.offset, self.attempt, self.epoch, self.consumer
        )
    }
}

fn parse_delivery_id(id: &str) -> Option<DeliveryId> {
    let mut parts = id.split('.');
    let parsed = DeliveryId {
        partition: parts.next()?.parse().ok()?,
        offset: parts.next()?.parse().ok()?,
        attempt: parts.next()?.parse().ok()?,
        epoch: parts.next()?.parse().ok()?,
        consumer: u64::from_str_radix(parts.next()?, 16).ok()?,
    };
    parts.next().is_none().then_some(parsed)
}

/// The delivery `id` names, if `consumer` may settle it now: one it was
/// handed since the last seek (`epoch`). Otherwise the refusal, and why,
/// goes into `refused`.
fn settleable(
    id: &str,
    consumer: u64,
    epoch: u32,
    refused: &mut Vec<SettleRefusal>,
) -> Option<DeliveryId> {
    let reason = match parse_delivery_id(id) {
        Some(parsed) if parsed.consumer != consumer => {
            "made to another stream of this subscription; only that stream may settle it"
        }
        Some(parsed) if parsed.epoch == epoch => return Some(parsed),
        Some(_) => {
            "made before the subscription was moved (seek): it will be delivered again if still due"
        }
        None => "not a delivery id of this broker",
    };
    refused.push(SettleRefusal {
        delivery_id: id.to_string(),
        reason: reason.into(),
    });
    None
}

/// A settle the broker refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleRefusal {
    /// The delivery id as sent.
    pub delivery_id: String,
    /// Why: unknown (malformed, or from before a seek) or another stream's.
    pub reason: String,
}

/// A connected consumer of a subscription. Dropping it returns its
/// unsettled deliveries to the subscription for redelivery.
#[derive(Debug)]
pub struct Consumer {
    id: u64,
    subscription: Arc<Subscription>,
}

impl Consumer {
    /// Waits until at least one delivery is ready within this consumer's
    /// credits and returns all that are.
    pub async fn next_batch(&self) -> Result<Vec<Delivery>, DeliveryError> {
        let subscription = &self.subscription;
        loop {
            let settled = subscription.settled.notified();
            let appended = subscription.appended.notified();
            tokio::pin!(settled, appended);
            settled.as_mut().enable();
            appended.as_mut().enable();
            let polled = subscription.poll(self.id)?;
            // Dead-letter writes run as their own tasks: if this consumer
            // goes away mid-write, the event must still end up done (or
            // back in the retry queue), never stuck half-way.
            for (partition, due) in polled.dead_letters {
                let subscription = Arc::clone(subscription);
                tokio::spawn(async move {
                    if let Err(error) = subscription.dead_letter(partition, due).await {
                        tracing::error!(subscription = %subscription.spec.name, %error, "dead-lettering failed");
                    }
                });
            }
            if !polled.deliveries.is_empty() {
                return Ok(polled.deliveries);
            }
            let wake = polled.wake;
            let sleep_for = wake
                .map_or(IDLE_RECHECK, |at| {
                    at.saturating_duration_since(Instant::now())
                })
                .min(IDLE_RECHECK);
            tokio::select! {
                () = &mut settled => {}
                () = &mut appended => {}
                () = tokio::time::sleep(sleep_for) => {}
            }
        }
    }

    /// Acks and nacks (with reasons) by delivery id, and gives deliveries
    /// still being worked on more time (each deadline moves to the given
    /// duration from now, at most 10 minutes). Only this stream's
    /// deliveries can be settled: unknown ids (malformed, or made before a
    /// seek) and other streams' are refused, each with its reason, and the
    /// rest is done. A late ack of this stream's event that was already
    /// redelivered still counts; a late nack does not.
    pub fn settle(
        &self,
        acks: &[String],
        nacks: &[NackRequest],
        extensions: &[(String, Duration)],
    ) -> Result<Vec<SettleRefusal>, DeliveryError> {
        self.subscription.settle(self.id, acks, nacks, extensions)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.subscription.release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::{DeliveryId, parse_delivery_id};

    #[test]
    fn delivery_ids_round_trip() {
        let id = DeliveryId {
            partition: 3,
            offset: 42,
            attempt: 2,
            epoch: 1,
            consumer: 0xbeef,
        };
        assert_eq!(id.to_string(), "3.42.2.1.beef");
        assert_eq!(parse_delivery_id("3.42.2.1.beef"), Some(id));
        assert_eq!(parse_delivery_id("3.42.2.1"), None);
        assert_eq!(parse_delivery_id("3.42.2.1.beef.0"), None);
        assert_eq!(parse_delivery_id("x.1.1.0.1"), None);
    }
}
