//! The publish pipeline: validate → dedup → route → append durably. Sits
//! between `api` and `rules` / `log`; knows nothing of gRPC.

use crate::config::BrokerConfig;
use crate::flow::{Flow, Position};
use crate::log::{EventLog, LogError, scan};
use crate::model::{
    CloudEvent, EventError, EventLimits, StoredEvent, TopicName, partition_for, validate_event,
};
use crate::rules::{RuleSet, event_view_with};
use crate::schedule::{Schedule, deliver_after};
use crate::schema::SchemaRegistry;
use crate::telemetry::metrics::{BusLabels, Metrics, RejectLabels, RuleLabels, TopicLabels};
use crate::telemetry::spans;
use bytes::Bytes;
use std::collections::BTreeSet;
use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tracing::Span;

mod dedup;

use dedup::{DedupWindow, Fingerprint, Fingerprints};

/// Request-level failures: nothing of the batch was stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The bus is not declared by config or rules.
    #[error("bus '{0}' not found; declare it under `buses:` in the broker config or in a rule")]
    BusNotFound(String),
    /// More events than `limits.max_batch_events`.
    #[error("batch has {count} events, over the limit of {limit}; split it into smaller batches")]
    BatchTooLarge {
        /// Events in the request.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

/// Why one event of a batch was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The event is invalid (INVALID_ARGUMENT).
    #[error(transparent)]
    Invalid(#[from] EventError),
    /// A rule targets a topic that does not exist (FAILED_PRECONDITION).
    #[error("{0}")]
    Unroutable(String),
    /// The log could not store it (UNAVAILABLE: retry).
    #[error("storage failed: {0}")]
    Storage(String),
    /// A limit is reached (RESOURCE_EXHAUSTED), e.g. too many scheduled
    /// events pending.
    #[error("{0}")]
    Exhausted(String),
}

impl Rejection {
    /// Every [`Rejection::kind`], for metrics that start at 0.
    pub const KINDS: [&'static str; 4] = ["invalid", "unroutable", "storage", "exhausted"];

    /// A short name for metrics: `invalid`, `unroutable`, `storage` or
    /// `exhausted`.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::Invalid(_) => "invalid",
            Rejection::Unroutable(_) => "unroutable",
            Rejection::Storage(_) => "storage",
            Rejection::Exhausted(_) => "exhausted",
        }
    }
}

/// Where one event was stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stored {
    /// Matched rule names, sorted.
    pub rules: Vec<String>,
    /// `(topic, partition, offset)` per target.
    pub offsets: Vec<(TopicName, u32, u64)>,
    /// True when the event was a duplicate and nothing new was stored.
    pub duplicate: bool,
    /// Set when the event was scheduled: when it will be routed (ms since
    /// the Unix epoch).
    pub deliver_after_ms: Option<i64>,
}

/// The outcome for one event of a batch.
pub type Outcome = Result<Stored, Rejection>;

/// The state of the rule set in force, for operators.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleStatus {
    /// 1 for the rules loaded at start, +1 per successful reload.
    pub version: u64,
    /// When the rules in force were loaded (ms since the Unix epoch).
    pub loaded_at_ms: i64,
    /// Why the last reload failed, if it did (the rules in force are then
    /// older than the files).
    pub last_error: Option<String>,
    /// When it failed (ms since the Unix epoch).
    pub last_error_at_ms: i64,
}

use crate::model::now_unix_ms as now_ms;

/// Whether the payload is protobuf: an `Any`, or a protobuf content type.
/// Keeps the `keep` newest of `restored` (by first-stored time); returns
/// the time of the oldest kept (records older than it need not be read).
fn keep_newest(restored: &mut HashMap<Fingerprint, (String, i64, Stored)>, keep: usize) -> i64 {
    if restored.len() <= keep {
        return i64::MIN;
    }
    let mut times: Vec<i64> = restored.values().map(|(_, at, _)| *at).collect();
    let nth = times.len() - keep;
    let (_, &mut oldest_kept, _) = times.select_nth_unstable(nth);
    restored.retain(|_, (_, at, _)| *at >= oldest_kept);
    oldest_kept
}

fn is_protobuf(event: &CloudEvent) -> bool {
    matches!(event.data, Some(crate::model::EventData::ProtoData(_)))
        || event
            .data_content_type
            .as_deref()
            .is_some_and(|ct| ct.contains("protobuf"))
}

/// The publish pipeline.
#[derive(Debug)]
pub struct Ingest {
    log: Arc<dyn EventLog>,
    rules: RwLock<Arc<RuleSet>>,
    status: Mutex<RuleStatus>,
    schemas: Arc<SchemaRegistry>,
    validate_buses: BTreeSet<String>,
    limits: EventLimits,
    max_batch_events: usize,
    dedup: Mutex<DedupWindow>,
    /// How the dedup window keys events.
    fingerprints: Fingerprints,
    metrics: Arc<Metrics>,
    /// Where events with a future `deliverafter` wait.
    schedule: Schedule,
    /// Longest accepted delay.
    max_delay: Duration,
    /// Most scheduled events pending at once (memory bound).
    max_scheduled: usize,
    /// Where each accepted event's publishing and routing is recorded.
    flow: Arc<Flow>,
}

/// The events of a batch bound for one topic partition.
#[derive(Default)]
struct AppendGroup {
    /// Their positions in the batch.
    indexes: Vec<usize>,
    /// Their stored form.
    payloads: Vec<Bytes>,
    /// Their `append` spans (disabled unless spans are exported).
    spans: Vec<Span>,
}

/// One event's route: `(topic, partition)` → its rules there.
struct Planned {
    rules: Vec<String>,
    targets: Vec<(TopicName, u32, Vec<String>)>,
    /// Set for a scheduled event: stored in the schedule, routed then.
    fire_ms: Option<i64>,
}

impl Ingest {
    /// Builds the pipeline over a log, a rule set and schemas, with the
    /// config's limits, dedup windows and schema-validating buses.
    pub fn new(
        log: Arc<dyn EventLog>,
        rules: RuleSet,
        schemas: Arc<SchemaRegistry>,
        config: &BrokerConfig,
        metrics: Arc<Metrics>,
        schedule: Schedule,
        flow: Arc<Flow>,
    ) -> Ingest {
        let limits = &config.limits;
        metrics.add_buses(rules.buses(), &Rejection::KINDS);
        Ingest {
            log,
            schemas,
            validate_buses: config.schemas.validate_buses.iter().cloned().collect(),
            rules: RwLock::new(Arc::new(rules)),
            status: Mutex::new(RuleStatus {
                version: 1,
                loaded_at_ms: now_ms(),
                ..RuleStatus::default()
            }),
            limits: EventLimits {
                max_data_bytes: limits.max_data_bytes,
                max_extensions: limits.max_extensions,
                max_attribute_bytes: limits.max_attribute_bytes,
            },
            max_batch_events: limits.max_batch_events,
            dedup: Mutex::new(DedupWindow::new(config.dedup.clone())),
            fingerprints: Fingerprints::default(),
            metrics,
            schedule,
            max_delay: limits.max_delay,
            max_scheduled: limits.max_scheduled,
            flow,
        }
    }

    /// Refills the dedup window from the log: the newest `dedup.max_ids`
    /// published events (by time, over every topic that holds published
    /// events, within each bus's window), so a publisher that retries
    /// after a broker crash gets `duplicate` instead of storing a second
    /// copy. Each partition is read from the start of the window (at most
    /// `max_ids` records back); memory stays within twice `max_ids`.
    /// Returns how many ids were restored.
    pub fn recover_dedup(&self) -> Result<usize, LogError> {
        let Ok(config) = self.dedup.lock().map(|d| d.config().clone()) else {
            return Ok(0);
        };
        let max_ids = config.max_ids.max(1);
        let now = Instant::now();
        let now_ms = now_ms();
        let widest = config
            .buses
            .values()
            .map(|w| **w)
            .fold(config.window, Duration::max);
        let window_start_ms = now_ms.saturating_sub(widest.as_millis() as i64);
        // Published events live in user topics and, until they fire, in
        // the schedule; other internal topics hold no publishes.
        let topics = self.log.topics().into_iter().filter(|t| {
            !t.name.as_str().starts_with("__")
                || t.name.as_str() == crate::schedule::SCHEDULED_TOPIC
        });
        let mut restored: HashMap<Fingerprint, (String, i64, Stored)> = HashMap::new();
        // Records older than this cannot be among the newest `max_ids`.
        let mut cutoff_ms = window_start_ms;
        for topic in topics {
            for partition in 0..topic.partitions {
                let end = self.log.offsets(&topic.name, partition)?.end;
                let in_window =
                    self.log
                        .offset_for_time(&topic.name, partition, window_start_ms)?;
                let from = in_window.max(end.saturating_sub(max_ids as u64));
                scan(self.log.as_ref(), &topic.name, partition, from, |record| {
                    if record.timestamp_ms < cutoff_ms {
                        return ControlFlow::Continue(());
                    }
                    let Ok(stored) = StoredEvent::from_bytes(&record.payload) else {
                        return ControlFlow::Continue(());
                    };
                    // Dead letters and redrive copies are not publishes.
                    if stored.dead_letter.is_some() {
                        return ControlFlow::Continue(());
                    }
                    let Some(event) = stored.event else {
                        return ControlFlow::Continue(());
                    };
                    let age = now_ms - record.timestamp_ms;
                    if age >= config.window_for(&stored.bus).as_millis() as i64 {
                        return ControlFlow::Continue(());
                    }
                    let key = self.fingerprints.of(&stored.bus, &event.source, &event.id);
                    let (_, at, entry) = restored
                        .entry(key)
                        .or_insert_with(|| (stored.bus, record.timestamp_ms, Stored::default()));
                    *at = (*at).min(record.timestamp_ms);
                    entry
                        .offsets
                        .push((topic.name.clone(), partition, record.offset));
                    entry.rules.extend(stored.rules);
                    if restored.len() >= 2 * max_ids {
                        cutoff_ms = cutoff_ms.max(keep_newest(&mut restored, max_ids));
                    }
                    ControlFlow::Continue(())
                })?;
            }
        }
        keep_newest(&mut restored, max_ids);
        let mut by_time: Vec<(i64, String, Fingerprint, Stored)> = restored
            .into_iter()
            .map(|(key, (bus, at, mut stored))| {
                stored.rules.sort_unstable();
                stored.rules.dedup();
                stored.offsets.sort();
                (at, bus, key, stored)
            })
            .collect();
        by_time.sort_by_key(|(at, ..)| *at);
        let count = by_time.len();
        if let Ok(mut dedup) = self.dedup.lock() {
            for (at, bus, key, stored) in by_time {
                let age = std::time::Duration::from_millis((now_ms - at).max(0) as u64);
                dedup.insert(&bus, key, stored, now.checked_sub(age).unwrap_or(now));
            }
        }
        Ok(count)
    }

    /// Swaps in a new rule set; publishes already running keep the set
    /// they started with. Returns the new version.
    pub fn replace_rules(&self, rules: RuleSet) -> u64 {
        self.metrics.add_buses(rules.buses(), &Rejection::KINDS);
        if let Ok(mut current) = self.rules.write() {
            *current = Arc::new(rules);
        }
        let Ok(mut status) = self.status.lock() else {
            return 0;
        };
        status.version += 1;
        status.loaded_at_ms = now_ms();
        status.last_error = None;
        status.version
    }

    /// Records a failed reload (the rules in force stay).
    pub fn record_reload_error(&self, error: String) {
        if let Ok(mut status) = self.status.lock() {
            status.last_error = Some(error);
            status.last_error_at_ms = now_ms();
        }
    }

    /// The state of the rule set in force.
    pub fn rule_status(&self) -> RuleStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules
            .read()
            .map(|r| Arc::clone(&r))
            .unwrap_or_default()
    }

    /// Validates, routes and durably appends a batch. Invalid events get
    /// their own rejection and are not stored; the rest of the batch is.
    /// Returns once every stored event is durable.
    pub async fn publish(
        &self,
        bus: &str,
        events: Vec<CloudEvent>,
        publisher: &str,
    ) -> Result<Vec<Outcome>, IngestError> {
        let rules = self.rules();
        if !rules.has_bus(bus) {
            return Err(IngestError::BusNotFound(bus.to_string()));
        }
        if events.len() > self.max_batch_events {
            return Err(IngestError::BatchTooLarge {
                count: events.len(),
                limit: self.max_batch_events,
            });
        }
        let now = Instant::now();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
        let mut planned: Vec<Option<Planned>> = Vec::with_capacity(events.len());
        let mut seen_in_batch: HashMap<Fingerprint, usize> = HashMap::new();
        let mut route_spans: Vec<Span> = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            planned.push(None);
            route_spans.push(spans::route(bus, event));
            if let Err(e) = validate_event(event, &self.limits) {
                outcomes[i] = Some(Err(e.into()));
                continue;
            }
            let key = self.fingerprints.of(bus, &event.source, &event.id);
            if let Some(stored) = self
                .dedup
                .lock()
                .ok()
                .and_then(|mut d| d.get(bus, key, now))
            {
                outcomes[i] = Some(Ok(stored));
                continue;
            }
            if seen_in_batch.contains_key(&key) {
                continue; // resolved after the first copy is stored
            }
            seen_in_batch.insert(key, i);
            match route_spans[i].in_scope(|| self.plan(&rules, bus, event, true)) {
                Ok(plan) => {
                    spans::record_rules(&route_spans[i], &plan.rules);
                    planned[i] = Some(plan);
                }
                Err(rejection) => outcomes[i] = Some(Err(rejection)),
            }
        }
        self.append(&events, bus, &planned, &route_spans, &mut outcomes)
            .await;
        drop(route_spans);
        self.arm_timers(bus, &events, &planned, &outcomes);
        let mut dedup = self.dedup.lock().ok();
        for (key, first) in &seen_in_batch {
            if let (Some(Some(Ok(stored))), Some(dedup)) = (outcomes.get(*first), dedup.as_mut()) {
                dedup.insert(bus, *key, stored.clone(), now);
            }
        }
        drop(dedup);
        let results: Vec<Outcome> = events
            .iter()
            .enumerate()
            .map(|(i, event)| match &outcomes[i] {
                Some(outcome) => outcome.clone(),
                None => {
                    // A later copy of an id that came earlier in this batch.
                    let key = self.fingerprints.of(bus, &event.source, &event.id);
                    match seen_in_batch
                        .get(&key)
                        .and_then(|&first| outcomes[first].as_ref())
                    {
                        Some(Ok(stored)) => Ok(Stored {
                            duplicate: true,
                            ..stored.clone()
                        }),
                        Some(Err(rejection)) => Err(rejection.clone()),
                        None => Err(Rejection::Storage("event was not resolved".into())),
                    }
                }
            })
            .collect();
        self.count(bus, &planned, &results);
        self.record_flow(bus, Some(publisher), &events, &results);
        self.metrics
            .publish_duration
            .get_or_create(&BusLabels {
                bus: bus.to_string(),
            })
            .observe(now.elapsed().as_secs_f64());
        Ok(results)
    }

    /// Arms a timer for every event this batch stored in the schedule.
    fn arm_timers(
        &self,
        bus: &str,
        events: &[CloudEvent],
        planned: &[Option<Planned>],
        outcomes: &[Option<Outcome>],
    ) {
        for ((event, plan), outcome) in events.iter().zip(planned).zip(outcomes) {
            if let (
                Some(Planned {
                    fire_ms: Some(fire_ms),
                    ..
                }),
                Some(Ok(stored)),
            ) = (plan, outcome)
                && let Some((_, _, offset)) = stored.offsets.first()
            {
                self.schedule.timers().add(
                    *fire_ms,
                    *offset,
                    crate::schedule::identity(bus, &event.source, &event.id),
                );
            }
        }
    }

    /// Routes events whose scheduled time came (their `deliverafter` is
    /// ignored now) by the rules in force, all appends at once. Returns
    /// the first failure, if any.
    pub async fn route_scheduled(&self, bus: &str, events: Vec<CloudEvent>) -> Result<(), String> {
        let rules = self.rules();
        let route_spans: Vec<Span> = events.iter().map(|e| spans::route(bus, e)).collect();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
        let planned: Vec<Option<Planned>> = events
            .iter()
            .zip(&route_spans)
            .zip(&mut outcomes)
            .map(|((event, span), outcome)| {
                match span.in_scope(|| self.plan(&rules, bus, event, false)) {
                    Ok(plan) => {
                        spans::record_rules(span, &plan.rules);
                        Some(plan)
                    }
                    Err(rejection) => {
                        *outcome = Some(Err(rejection));
                        None
                    }
                }
            })
            .collect();
        self.append(&events, bus, &planned, &route_spans, &mut outcomes)
            .await;
        let results: Vec<Outcome> = outcomes.into_iter().flatten().collect();
        self.count(bus, &planned, &results);
        self.record_flow(bus, None, &events, &results);
        match results.into_iter().find_map(Result::err) {
            Some(rejection) => Err(rejection.to_string()),
            None => Ok(()),
        }
    }

    /// Records each newly stored event of a batch in the flow history:
    /// published by `publisher`, or fired (a scheduled event) when `None`.
    fn record_flow(
        &self,
        bus: &str,
        publisher: Option<&str>,
        events: &[CloudEvent],
        results: &[Outcome],
    ) {
        if !self.flow.enabled() {
            return;
        }
        for (event, result) in events.iter().zip(results) {
            let Ok(stored) = result else { continue };
            if stored.duplicate {
                continue;
            }
            let targets = if stored.deliver_after_ms.is_some() {
                Vec::new()
            } else {
                stored
                    .offsets
                    .iter()
                    .map(|(topic, partition, offset)| Position {
                        topic: topic.to_string(),
                        partition: *partition,
                        offset: *offset,
                    })
                    .collect()
            };
            self.flow.published(
                bus,
                publisher,
                event,
                &stored.rules,
                targets,
                stored.deliver_after_ms,
            );
        }
    }

    /// Counts a batch's outcomes: published, duplicate, rejected (by
    /// reason), unmatched, matches per rule and copies per topic.
    fn count(&self, bus: &str, planned: &[Option<Planned>], results: &[Outcome]) {
        let (mut published, mut duplicates, mut unmatched, mut scheduled) = (0, 0, 0, 0);
        let mut rejected: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut routed: BTreeMap<&str, u64> = BTreeMap::new();
        let mut stored_in: BTreeMap<&str, u64> = BTreeMap::new();
        for (plan, result) in planned.iter().zip(results) {
            match result {
                Ok(stored) if stored.duplicate => duplicates += 1,
                Ok(stored) if stored.deliver_after_ms.is_some() => scheduled += 1,
                Ok(stored) => {
                    published += 1;
                    unmatched += u64::from(stored.rules.is_empty());
                    for rule in plan.iter().flat_map(|p| &p.rules) {
                        *routed.entry(rule).or_default() += 1;
                    }
                    for (topic, _, _) in &stored.offsets {
                        *stored_in.entry(topic.as_str()).or_default() += 1;
                    }
                }
                Err(rejection) => *rejected.entry(rejection.kind()).or_default() += 1,
            }
        }
        let m = &self.metrics;
        let labels = BusLabels {
            bus: bus.to_string(),
        };
        for (family, count) in [
            (&m.events_published, published),
            (&m.events_duplicate, duplicates),
            (&m.events_unmatched, unmatched),
            (&m.events_scheduled, scheduled),
        ] {
            if count > 0 {
                family.get_or_create(&labels).inc_by(count);
            }
        }
        for (reason, count) in rejected {
            let labels = RejectLabels {
                bus: bus.to_string(),
                reason: reason.to_string(),
            };
            m.events_rejected.get_or_create(&labels).inc_by(count);
        }
        for (rule, count) in routed {
            let labels = RuleLabels {
                bus: bus.to_string(),
                rule: rule.to_string(),
            };
            m.events_routed.get_or_create(&labels).inc_by(count);
        }
        for (topic, count) in stored_in {
            let labels = TopicLabels {
                topic: topic.to_string(),
            };
            m.events_stored.get_or_create(&labels).inc_by(count);
        }
    }

    /// The schema registry (for Admin).
    pub fn schemas(&self) -> &Arc<SchemaRegistry> {
        &self.schemas
    }

    /// Decodes a protobuf payload by its registered schema; on a validating
    /// bus, a payload that does not decode (or names no schema) is refused.
    fn decoded_data(
        &self,
        bus: &str,
        event: &CloudEvent,
    ) -> Result<Option<serde_json::Value>, Rejection> {
        let validating = self.validate_buses.contains(bus);
        let invalid = |message: String| {
            Rejection::Invalid(EventError {
                field: "data".into(),
                message,
            })
        };
        match self.schemas.decode(event) {
            Ok(Some(data)) => Ok(Some(data)),
            Ok(None) if validating && is_protobuf(event) => Err(invalid(format!(
                "bus '{bus}' validates protobuf payloads, and no registered message is named by dataschema {:?} or type {:?}; register its .proto (switchyard schemas register FILE)",
                event.data_schema.as_deref().unwrap_or(""),
                event.r#type
            ))),
            Ok(None) => Ok(None),
            Err(failure) if validating => Err(invalid(failure.to_string())),
            Err(failure) => {
                tracing::debug!(%failure, "payload not decoded; patterns will not see its fields");
                Ok(None)
            }
        }
    }

    /// Where an event goes: the schedule when `deliverafter` is in the
    /// future (and `schedule` is set), else the topics its rules pick.
    fn plan(
        &self,
        rules: &RuleSet,
        bus: &str,
        event: &CloudEvent,
        schedule: bool,
    ) -> Result<Planned, Rejection> {
        if schedule && let Some(fire_ms) = deliver_after(event, now_ms(), self.max_delay)? {
            let pending = self.schedule.timers().len();
            if pending >= self.max_scheduled {
                return Err(Rejection::Exhausted(format!(
                    "{pending} scheduled events are pending, the limit (limits.max_scheduled); publish it later or raise the limit"
                )));
            }
            return Ok(Planned {
                rules: Vec::new(),
                targets: vec![(self.schedule.topic().clone(), 0, Vec::new())],
                fire_ms: Some(fire_ms),
            });
        }
        let data = self.decoded_data(bus, event)?;
        let routes = rules.route(bus, &event_view_with(event, data));
        let mut matched: Vec<String> = routes.values().flatten().cloned().collect();
        matched.sort_unstable();
        matched.dedup();
        let mut targets = Vec::with_capacity(routes.len());
        for (topic, rule_names) in routes {
            let info = self.log.topic(&topic).map_err(|e| match e {
                LogError::TopicNotFound(_) => Rejection::Unroutable(format!(
                    "rule(s) {} target topic '{topic}', which does not exist; create it or fix the rules",
                    rule_names.join(", ")
                )),
                other => Rejection::Storage(other.to_string()),
            })?;
            targets.push((topic, partition_for(event, info.partitions), rule_names));
        }
        Ok(Planned {
            rules: matched,
            targets,
            fire_ms: None,
        })
    }

    /// Appends planned events grouped per partition, all groups at once.
    async fn append(
        &self,
        events: &[CloudEvent],
        bus: &str,
        planned: &[Option<Planned>],
        route_spans: &[Span],
        outcomes: &mut [Option<Outcome>],
    ) {
        let bus = bus.to_string();
        let mut groups: BTreeMap<(TopicName, u32), AppendGroup> = BTreeMap::new();
        for (i, plan) in planned.iter().enumerate() {
            let Some(plan) = plan else { continue };
            outcomes[i] = Some(Ok(Stored {
                rules: plan.rules.clone(),
                deliver_after_ms: plan.fire_ms,
                ..Stored::default()
            }));
            for (topic, partition, rule_names) in &plan.targets {
                let group = groups.entry((topic.clone(), *partition)).or_default();
                group.indexes.push(i);
                group
                    .payloads
                    .push(StoredEvent::encode(&events[i], &bus, rule_names));
                group
                    .spans
                    .push(spans::append(&route_spans[i], topic.as_str(), *partition));
            }
        }
        let appends = groups.into_iter().map(|((topic, partition), group)| {
            let append = self.log.append(&topic, partition, group.payloads);
            async move { (topic, partition, group.indexes, group.spans, append.await) }
        });
        for (topic, partition, indexes, append_spans, result) in
            futures::future::join_all(appends).await
        {
            if let Ok(offsets) = &result {
                for (span, offset) in append_spans.iter().zip(offsets) {
                    spans::record_offset(span, *offset);
                }
            }
            drop(append_spans);
            for (n, i) in indexes.into_iter().enumerate() {
                match (&result, outcomes[i].as_mut()) {
                    (Ok(offsets), Some(Ok(stored))) => {
                        if let Some(offset) = offsets.get(n) {
                            stored.offsets.push((topic.clone(), partition, *offset));
                        }
                    }
                    (Err(e), outcome) => {
                        if let Some(outcome) = outcome {
                            *outcome = Err(Rejection::Storage(e.to_string()));
                        }
                    }
                    (Ok(_), _) => {}
                }
            }
        }
    }
}
