//! Flow history: what happened to each event. The broker records every
//! transition — published (by whom, routed by which rules to which
//! positions), fired (a scheduled event routed at its time), delivered
//! (to which subscription, which attempt), acked, nacked (why),
//! dead-lettered, redriven — as a [`Step`] in the internal topic `__flow`,
//! and indexes the steps in memory by event id, trace id, correlation id
//! and log position. [`Flow::find`] answers "what happened to order 1234":
//! every event of the flow with all its steps, in time order.
//!
//! Steps are written in batches by one background task ([`Flow::run`]),
//! so recording costs the hot path a channel send. The queue is bounded:
//! when the writer falls behind, steps are dropped and counted, never
//! blocking publishers or subscribers.

use crate::config::FlowConfig;
use crate::log::{EventLog, LogError, scan};
use crate::model::{CloudEvent, TopicName, now_unix_ms};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The internal topic steps are stored in.
pub const TOPIC: &str = "__flow";
/// Steps waiting for the writer at most.
const QUEUE: usize = 65_536;
/// Steps written per append at most.
const BATCH: usize = 1024;
/// How often steps past the retention are deleted.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// Most steps one query reads.
const MAX_STEPS_READ: usize = 20_000;
/// How often a node of several indexes the steps the others wrote.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Where a copy of an event is: topic, partition, offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The offset.
    pub offset: u64,
}

/// One transition of one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
    /// The event's source (steps that know the event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The event's id (steps that know the event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The copy it concerns (delivery steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    /// What happened.
    #[serde(flatten)]
    pub kind: StepKind,
}

/// What happened in a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum StepKind {
    /// Accepted from a publisher.
    Published {
        /// The bus.
        bus: String,
        /// The event type.
        event_type: String,
        /// The principal that published it.
        publisher: String,
        /// The trace it belongs to (from `traceparent`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace_id: Option<String>,
        /// Its correlation id (`flow.correlation`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation: Option<String>,
        /// The rules that matched.
        rules: Vec<String>,
        /// Where its copies were stored.
        targets: Vec<Position>,
        /// When it will be routed, for a scheduled event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scheduled_for_ms: Option<i64>,
        /// The whole event (CloudEvents JSON), kept only when no rule
        /// matched it: no topic has a copy, and rule dry-runs replay it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unmatched: Option<serde_json::Value>,
    },
    /// A scheduled event routed at its time.
    Fired {
        /// The rules that matched.
        rules: Vec<String>,
        /// Where its copies were stored.
        targets: Vec<Position>,
    },
    /// Handed to a consumer of a subscription.
    Delivered {
        /// The subscription.
        subscription: String,
        /// Which attempt (1 for the first).
        attempt: u32,
    },
    /// Acknowledged.
    Acked {
        /// The subscription.
        subscription: String,
    },
    /// Refused by the consumer, to be retried.
    Nacked {
        /// The subscription.
        subscription: String,
        /// The consumer's reason.
        reason: String,
    },
    /// Out of attempts (or refused for good): written to the dead-letter
    /// topic.
    DeadLettered {
        /// The subscription.
        subscription: String,
        /// The dead-letter topic.
        topic: String,
        /// The last failure.
        reason: String,
    },
    /// Put back from the dead-letter topic to the subscription.
    Redriven {
        /// The subscription.
        subscription: String,
        /// Where the event comes back from.
        target: Position,
    },
}

/// Everything recorded about one event of a flow.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowEvent {
    /// The event's source.
    pub source: String,
    /// The event's id.
    pub id: String,
    /// Its steps, in time order.
    pub steps: Vec<Step>,
}

/// A key of the index (hashed).
fn key(kind: &str, parts: &[&str]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    kind.hash(&mut hasher);
    parts.hash(&mut hasher);
    hasher.finish()
}

fn position_key(position: &Position) -> u64 {
    key(
        "at",
        &[
            &position.topic,
            &position.partition.to_string(),
            &position.offset.to_string(),
        ],
    )
}

/// The index keys a step is found by.
fn keys_of(step: &Step) -> Vec<u64> {
    let mut keys = Vec::with_capacity(3);
    if let Some(id) = &step.id {
        keys.push(key("id", &[id]));
    }
    if let Some(position) = &step.position {
        keys.push(position_key(position));
    }
    if let StepKind::Published {
        bus,
        trace_id,
        correlation,
        unmatched,
        ..
    } = &step.kind
    {
        keys.extend(trace_id.as_deref().map(|t| key("trace", &[t])));
        keys.extend(correlation.as_deref().map(|c| key("correlation", &[c])));
        if unmatched.is_some() {
            keys.push(key("unmatched", &[bus]));
        }
    }
    keys
}

/// Offsets in `__flow` by key, oldest first, bounded.
#[derive(Debug, Default)]
struct Index {
    by_key: HashMap<u64, VecDeque<u64>>,
    order: VecDeque<(u64, Vec<u64>)>,
}

impl Index {
    fn add(&mut self, offset: u64, keys: Vec<u64>, max: usize) {
        for &k in &keys {
            self.by_key.entry(k).or_default().push_back(offset);
        }
        self.order.push_back((offset, keys));
        while self.order.len() > max {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        let Some((offset, keys)) = self.order.pop_front() else {
            return;
        };
        for k in keys {
            if let Some(offsets) = self.by_key.get_mut(&k) {
                if offsets.front() == Some(&offset) {
                    offsets.pop_front();
                }
                if offsets.is_empty() {
                    self.by_key.remove(&k);
                }
            }
        }
    }

    fn evict_below(&mut self, start: u64) {
        while self
            .order
            .front()
            .is_some_and(|(offset, _)| *offset < start)
        {
            self.evict_oldest();
        }
    }

    fn lookup(&self, k: u64) -> Vec<u64> {
        self.by_key
            .get(&k)
            .map(|offsets| offsets.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// The flow history of a broker.
#[derive(Debug)]
pub struct Flow {
    config: FlowConfig,
    log: Arc<dyn EventLog>,
    topic: TopicName,
    sender: mpsc::Sender<Step>,
    receiver: Mutex<Option<mpsc::Receiver<Step>>>,
    index: Mutex<Index>,
    dropped: AtomicU64,
    /// Where indexing goes on, when several nodes write the topic (then
    /// every step, this node's too, is indexed by following the topic).
    followed: Mutex<Option<u64>>,
}

impl Flow {
    /// Opens the history (creating its topic when missing) and indexes
    /// the newest `flow.max_indexed` steps.
    pub fn open(log: Arc<dyn EventLog>, config: &FlowConfig) -> Result<Flow, LogError> {
        let topic = TopicName::new(TOPIC).map_err(|e| LogError::Failed(e.to_string()))?;
        if config.enabled
            && let Err(LogError::TopicNotFound(_)) = log.topic(&topic)
        {
            log.create_topic(&topic, 1)?;
        }
        let (sender, receiver) = mpsc::channel(QUEUE);
        let flow = Flow {
            config: config.clone(),
            log,
            topic,
            sender,
            receiver: Mutex::new(Some(receiver)),
            index: Mutex::default(),
            dropped: AtomicU64::new(0),
            followed: Mutex::new(None),
        };
        if config.enabled {
            let offsets = flow.log.offsets(&flow.topic, 0)?;
            let from = offsets
                .start
                .max(offsets.end.saturating_sub(config.max_indexed as u64));
            let end = flow.index_from(from)?;
            if flow.log.groups().is_some() {
                *flow.followed.lock().unwrap_or_else(|e| e.into_inner()) = Some(end);
            }
        }
        Ok(flow)
    }

    /// Indexes the stored steps from offset `from` on; returns the offset
    /// after the last one.
    fn index_from(&self, from: u64) -> Result<u64, LogError> {
        let mut index = self.lock_index();
        let mut end = from;
        scan(self.log.as_ref(), &self.topic, 0, from, |record| {
            end = record.offset + 1;
            if let Ok(step) = serde_json::from_slice::<Step>(&record.payload) {
                index.add(record.offset, keys_of(&step), self.config.max_indexed);
            }
            ControlFlow::Continue(())
        })?;
        Ok(end)
    }

    /// Indexes what every node wrote since the last call (several nodes
    /// only).
    fn follow(&self) {
        let Some(from) = *self.followed.lock().unwrap_or_else(|e| e.into_inner()) else {
            return;
        };
        match self.index_from(from) {
            Ok(end) => {
                *self.followed.lock().unwrap_or_else(|e| e.into_inner()) = Some(end);
            }
            Err(error) => tracing::warn!(%error, "cannot index the flow history"),
        }
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether steps are recorded.
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Queues a step for writing. Never waits: when the queue is full the
    /// step is dropped and counted.
    pub fn record(&self, step: Step) {
        if !self.config.enabled {
            return;
        }
        if self.sender.try_send(step).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "flow history falls behind; steps dropped (the flows of these events are incomplete)"
                );
            }
        }
    }

    /// Records that `event` was published on `bus` by `publisher` (or
    /// fired, for a scheduled one when `publisher` is `None`) and where
    /// its copies went.
    pub fn published(
        &self,
        bus: &str,
        publisher: Option<&str>,
        event: &CloudEvent,
        rules: &[String],
        targets: Vec<Position>,
        scheduled_for_ms: Option<i64>,
    ) {
        if !self.config.enabled {
            return;
        }
        let scheduled = scheduled_for_ms.is_some();
        let kind = match publisher {
            Some(publisher) => StepKind::Published {
                unmatched: (rules.is_empty() && !scheduled)
                    .then(|| switchyard_sdk::json::to_json(event)),
                bus: bus.to_string(),
                event_type: event.r#type.clone(),
                publisher: publisher.to_string(),
                trace_id: trace_id(event),
                correlation: self.correlation(event),
                rules: rules.to_vec(),
                targets,
                scheduled_for_ms,
            },
            None => StepKind::Fired {
                rules: rules.to_vec(),
                targets,
            },
        };
        self.step_now(Some(event), None, kind);
    }

    /// Records a step about an event as a whole (e.g. redriven).
    pub fn on_event(&self, event: &CloudEvent, kind: StepKind) {
        self.step_now(Some(event), None, kind);
    }

    /// Records a step about the copy at `position`.
    pub fn at(&self, position: Position, event: Option<&CloudEvent>, kind: StepKind) {
        self.step_now(event, Some(position), kind);
    }

    /// Records a step that happens now (when recording is on).
    fn step_now(&self, event: Option<&CloudEvent>, position: Option<Position>, kind: StepKind) {
        if !self.config.enabled {
            return;
        }
        self.record(Step {
            at_ms: now_unix_ms(),
            source: event.map(|e| e.source.clone()),
            id: event.map(|e| e.id.clone()),
            position,
            kind,
        });
    }

    /// The event's correlation id, per `flow.correlation`.
    fn correlation(&self, event: &CloudEvent) -> Option<String> {
        let path = self.config.correlation.as_deref()?;
        let view = crate::rules::event_view(event);
        let value = path
            .split('.')
            .try_fold(&view, |value, part| value.get(part))?;
        match value {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Number(number) => Some(number.to_string()),
            _ => None,
        }
    }

    /// Every event of the flow `query` names — an event id, a trace id or
    /// a correlation id — with all its steps; at most `limit` events, in
    /// the order they were first seen.
    pub fn find(&self, query: &str, limit: usize) -> Result<Vec<FlowEvent>, LogError> {
        let index = self.lock_index();
        let offsets: Vec<u64> = ["id", "trace", "correlation"]
            .iter()
            .flat_map(|kind| index.lookup(key(kind, &[query])))
            .collect();
        drop(index);
        let mut events: BTreeSet<(String, String)> = BTreeSet::new();
        for (_, step) in self.read(offsets)? {
            let (Some(source), Some(id)) = (&step.source, &step.id) else {
                continue;
            };
            let named = id == query
                || matches!(&step.kind, StepKind::Published { trace_id, correlation, .. }
                    if trace_id.as_deref() == Some(query) || correlation.as_deref() == Some(query));
            if named && events.len() < limit {
                events.insert((source.clone(), id.clone()));
            }
        }
        let mut flow = Vec::with_capacity(events.len());
        for (source, id) in events {
            flow.push(self.event_steps(source, id)?);
        }
        flow.sort_by_key(|event| event.steps.first().map_or(i64::MAX, |s| s.at_ms));
        Ok(flow)
    }

    /// All steps of one event: its own, and those of its copies.
    fn event_steps(&self, source: String, id: String) -> Result<FlowEvent, LogError> {
        let own: Vec<u64> = self.lock_index().lookup(key("id", &[&id]));
        let mut steps: Vec<(u64, Step)> = self
            .read(own.clone())?
            .into_iter()
            .filter(|(_, s)| s.source.as_deref() == Some(&source))
            .collect();
        let positions: Vec<u64> = {
            let index = self.lock_index();
            steps
                .iter()
                .flat_map(|(_, step)| match &step.kind {
                    StepKind::Published { targets, .. } | StepKind::Fired { targets, .. } => {
                        targets.iter().collect::<Vec<_>>()
                    }
                    StepKind::Redriven { target, .. } => vec![target],
                    _ => Vec::new(),
                })
                .flat_map(|position| index.lookup(position_key(position)))
                .collect()
        };
        let known: std::collections::HashSet<u64> = own.iter().copied().collect();
        let more: Vec<u64> = positions
            .into_iter()
            .filter(|o| !known.contains(o))
            .collect();
        steps.extend(self.read(more)?.into_iter().filter(|(_, s)| s.id.is_none()));
        steps.sort_by_key(|(offset, s)| (s.at_ms, *offset));
        Ok(FlowEvent {
            source,
            id,
            steps: steps.into_iter().map(|(_, step)| step).collect(),
        })
    }

    /// The steps at `offsets` (in any order, repeats allowed): the oldest
    /// [`MAX_STEPS_READ`] of them, in offset order, with their offsets.
    fn read(&self, mut offsets: Vec<u64>) -> Result<Vec<(u64, Step)>, LogError> {
        offsets.sort_unstable();
        offsets.dedup();
        offsets.truncate(MAX_STEPS_READ);
        Ok(
            crate::log::read_offsets(self.log.as_ref(), &self.topic, 0, &offsets)?
                .into_iter()
                .filter_map(|record| {
                    let step = serde_json::from_slice::<Step>(&record.payload).ok()?;
                    Some((record.offset, step))
                })
                .collect(),
        )
    }

    /// Writes queued steps in batches and deletes those past the
    /// retention, until `stop`; then writes what is still queued.
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let Some(mut receiver) = self.receiver.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        if !self.config.enabled {
            return;
        }
        let mut retention = tokio::time::interval(RETENTION_EVERY);
        let mut follow = tokio::time::interval(FOLLOW_EVERY);
        let shared = self.log.groups().is_some();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                _ = follow.tick(), if shared => {
                    let this = Arc::clone(&self);
                    let _ = tokio::task::spawn_blocking(move || this.follow()).await;
                }
                received = receiver.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        return;
                    }
                    self.write(&mut batch).await;
                }
                _ = retention.tick() => {
                    let this = Arc::clone(&self);
                    let _ = tokio::task::spawn_blocking(move || this.apply_retention()).await;
                }
                () = stop.cancelled() => break,
            }
        }
        while let Ok(step) = receiver.try_recv() {
            batch.push(step);
            if batch.len() == BATCH {
                self.write(&mut batch).await;
            }
        }
        self.write(&mut batch).await;
    }

    async fn write(&self, batch: &mut Vec<Step>) {
        if batch.is_empty() {
            return;
        }
        let payloads = batch
            .iter()
            .filter_map(|step| serde_json::to_vec(step).ok())
            .map(bytes::Bytes::from)
            .collect();
        match self.log.append(&self.topic, 0, payloads).await {
            // With several nodes, following the topic indexes these too.
            Ok(offsets) if self.log.groups().is_none() => {
                let mut index = self.lock_index();
                for (step, offset) in batch.iter().zip(offsets) {
                    index.add(offset, keys_of(step), self.config.max_indexed);
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(steps = batch.len(), %error, "cannot record flow steps; those flows are incomplete");
            }
        }
        batch.clear();
    }

    /// Deletes steps older than `flow.retention` (whole segments on the
    /// embedded log) and forgets them in the index.
    fn apply_retention(&self) {
        let cutoff = now_unix_ms() - self.config.retention.as_millis() as i64;
        let deleted = self
            .log
            .offset_for_time(&self.topic, 0, cutoff)
            .and_then(|offset| self.log.truncate_before(&self.topic, 0, offset));
        match deleted {
            Ok(start) => self.lock_index().evict_below(start),
            Err(error) => tracing::warn!(%error, "cannot delete old flow steps"),
        }
    }

    /// The newest `last` events published on `bus` that no rule matched,
    /// with when they were published, oldest first.
    pub fn unmatched(&self, bus: &str, last: usize) -> Result<Vec<(i64, CloudEvent)>, LogError> {
        let mut offsets = self.lock_index().lookup(key("unmatched", &[bus]));
        let skip = offsets.len().saturating_sub(last);
        offsets.drain(..skip);
        Ok(self
            .read(offsets)?
            .into_iter()
            .filter_map(|(_, step)| match step.kind {
                StepKind::Published {
                    bus: stored_bus,
                    unmatched: Some(json),
                    ..
                } if stored_bus == bus => switchyard_sdk::json::from_json(&json)
                    .ok()
                    .map(|event| (step.at_ms, event)),
                _ => None,
            })
            .collect())
    }
}

/// The trace id in an event's `traceparent` extension.
fn trace_id(event: &CloudEvent) -> Option<String> {
    let traceparent = event.extensions.get("traceparent")?;
    let trace = traceparent.split('-').nth(1)?;
    (trace.len() == 32).then(|| trace.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use crate::log::EmbeddedLog;

    fn order_event(id: &str, order: &str) -> CloudEvent {
        let mut event = CloudEvent {
            id: id.into(),
            source: "/orders".into(),
            r#type: "order.placed".into(),
            ..Default::default()
        };
        event.extensions.insert(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        event.extensions.insert("orderid".into(), order.into());
        event
    }

    fn position(topic: &str, offset: u64) -> Position {
        Position {
            topic: topic.into(),
            partition: 0,
            offset,
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_flow_is_found_by_event_trace_or_correlation_id_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log: Arc<dyn EventLog> =
            Arc::new(EmbeddedLog::open(dir.path(), &StorageConfig::default()).expect("log"));
        let config = FlowConfig {
            correlation: Some("orderid".into()),
            ..FlowConfig::default()
        };
        let flow = Arc::new(Flow::open(Arc::clone(&log), &config).expect("flow"));
        let stop = tokio_util::sync::CancellationToken::new();
        let writer = tokio::spawn(Arc::clone(&flow).run(stop.clone()));
        let placed = order_event("e1", "1234");
        flow.published(
            "default",
            Some("shop"),
            &placed,
            &["orders".into()],
            vec![position("orders", 7)],
            None,
        );
        flow.at(
            position("orders", 7),
            Some(&placed),
            StepKind::Delivered {
                subscription: "billing".into(),
                attempt: 1,
            },
        );
        flow.at(
            position("orders", 7),
            None,
            StepKind::Nacked {
                subscription: "billing".into(),
                reason: "card declined".into(),
            },
        );
        flow.at(
            position("orders", 7),
            None,
            StepKind::Acked {
                subscription: "billing".into(),
            },
        );
        flow.at(
            position("orders", 8),
            None,
            StepKind::Acked {
                subscription: "billing".into(),
            },
        );
        stop.cancel();
        writer.await.expect("writer");

        let reopened = Flow::open(log, &config).expect("reopen");
        for query in ["e1", "0af7651916cd43dd8448eb211c80319c", "1234"] {
            for flow in [flow.as_ref(), &reopened] {
                let found = flow.find(query, 10).expect("find");
                assert_eq!(found.len(), 1, "{query}");
                let kinds: Vec<&str> = found[0]
                    .steps
                    .iter()
                    .map(|s| match s.kind {
                        StepKind::Published { .. } => "published",
                        StepKind::Delivered { .. } => "delivered",
                        StepKind::Nacked { .. } => "nacked",
                        StepKind::Acked { .. } => "acked",
                        _ => "other",
                    })
                    .collect();
                assert_eq!(
                    kinds,
                    ["published", "delivered", "nacked", "acked"],
                    "{query}"
                );
            }
        }
        assert!(flow.find("nothing", 10).expect("find").is_empty());
    }

    #[test]
    fn the_index_forgets_the_oldest_steps_beyond_its_bound() {
        let mut index = Index::default();
        for offset in 0..5 {
            index.add(
                offset,
                vec![key("id", &["same"]), key("id", &[&offset.to_string()])],
                3,
            );
        }
        assert_eq!(index.lookup(key("id", &["same"])), vec![2, 3, 4]);
        assert!(index.lookup(key("id", &["0"])).is_empty());
        index.evict_below(4);
        assert_eq!(index.lookup(key("id", &["same"])), vec![4]);
    }
}
