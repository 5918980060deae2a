//! Subscriptions: named consumer groups on a topic, each with committed
//! offsets per partition, an in-flight window, redelivery and durable
//! progress. At-least-once: the committed offset advances only over
//! contiguous acked events, so a crash or disconnect redelivers, never loses.

mod catalog;
mod cursor;
mod ordering;
mod store;
mod subscription;

pub use subscription::{
    Circuit, Consumer, Delivery, NackRequest, PartitionProgress, PushStatus, SeekTarget,
    SettleRefusal, Subscription, SubscriptionDescription,
};

use crate::config::{DeliveryConfig, StartPosition, SubscriptionConfig};
use crate::flow::{Flow, Position, StepKind};
use crate::log::Source;
use crate::log::{EventLog, LogError};
use crate::model::{NameError, StoredEvent, SubscriptionName, TopicName};
use crate::telemetry::metrics::{Metrics, SubscriptionLag};
use crate::telemetry::spans;
use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Errors of the delivery layer.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// No subscription has this name.
    #[error("subscription '{0}' not found")]
    SubscriptionNotFound(String),
    /// A different subscription with this name exists.
    #[error(
        "subscription '{0}' already exists with a different definition; delete it first or pick another name"
    )]
    SubscriptionExists(String),
    /// The subscription's topic does not exist.
    #[error("topic '{0}' not found; create it first (switchyard topics create {0})")]
    TopicNotFound(String),
    /// A field of a subscription definition is out of range.
    #[error("{field}: {message}")]
    InvalidSpec {
        /// The offending field.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// An invalid name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The log failed.
    #[error(transparent)]
    Log(LogError),
    /// Offsets or definitions could not be stored.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Partitions are being delivered by another node (consumer groups).
    #[error(
        "subscription '{subscription}': partitions {partitions:?} are delivered by another broker node right now; \
         seek through the node its consumers are connected to (or while none are connected)"
    )]
    OwnedElsewhere {
        /// The subscription.
        subscription: String,
        /// The cursors this node does not own.
        partitions: Vec<u32>,
    },
    /// A stored record could not be decoded.
    #[error(
        "topic '{topic}' partition {partition} offset {offset}: stored event cannot be decoded: {reason}"
    )]
    Undecodable {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset.
        offset: u64,
        /// The decoder's message.
        reason: String,
    },
}

impl From<LogError> for DeliveryError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::TopicNotFound(topic) => DeliveryError::TopicNotFound(topic),
            other => DeliveryError::Log(other),
        }
    }
}

/// What every subscription shares.
#[derive(Debug, Clone)]
pub(super) struct Shared {
    /// The log topics are read from.
    pub(super) log: Arc<dyn EventLog>,
    /// Delivery settings.
    pub(super) config: DeliveryConfig,
    /// The broker's metrics.
    pub(super) metrics: Arc<Metrics>,
    /// Where deliveries and their outcomes are recorded.
    pub(super) flow: Arc<Flow>,
}

/// All subscriptions of the broker.
///
/// With a single-node log, definitions and committed offsets are files
/// under the data directory. With consumer groups (Kafka), definitions
/// are shared by every node through the catalog topic ([`catalog`]) and
/// committed offsets live in each subscription's consumer group.
#[derive(Debug)]
pub struct Subscriptions {
    shared: Shared,
    dir: PathBuf,
    subscriptions: RwLock<BTreeMap<SubscriptionName, Arc<Subscription>>>,
    /// The next catalog record to apply (shared definitions only).
    catalog_next: std::sync::Mutex<u64>,
    /// Dead letters counted per subscription, read incrementally.
    dead_letter_tallies: std::sync::Mutex<HashMap<String, DeadLetterTally>>,
}

impl Subscriptions {
    /// Loads every stored subscription under `data_dir/subscriptions`.
    pub fn open(
        data_dir: &Path,
        log: Arc<dyn EventLog>,
        config: DeliveryConfig,
        metrics: Arc<Metrics>,
        flow: Arc<Flow>,
    ) -> Result<Subscriptions, DeliveryError> {
        let shared = Shared {
            log: Arc::clone(&log),
            config,
            metrics,
            flow,
        };
        let dir = data_dir.join("subscriptions");
        let this = Subscriptions {
            shared,
            dir,
            subscriptions: RwLock::default(),
            catalog_next: std::sync::Mutex::new(0),
            dead_letter_tallies: std::sync::Mutex::default(),
        };
        if log.groups().is_some() {
            catalog::ensure(log.as_ref())?;
            this.apply_catalog()?;
        } else {
            for (spec, committed) in store::load_all(&this.dir)? {
                if let Err(e) = this.load(spec.clone(), committed) {
                    tracing::error!(subscription = %spec.name, error = %e, "cannot load the subscription");
                }
            }
        }
        tracing::info!(subscriptions = this.list().len(), "subscriptions loaded");
        Ok(this)
    }

    /// Builds a subscription from its stored definition and adds it
    /// (replacing one of the same name).
    fn load(&self, spec: SubscriptionConfig, committed: Vec<u64>) -> Result<(), DeliveryError> {
        let name = SubscriptionName::new(spec.name.clone())?;
        let topic = TopicName::new(spec.topic.clone())?;
        let info = self.shared.log.topic(&topic)?;
        let redrive = ensure_redrive_topic(self.shared.log.as_ref(), &spec)?;
        let subscription = Subscription::new(
            spec,
            info,
            committed,
            &self.shared,
            self.dir.join(name.as_str()),
            redrive,
        )?;
        let replaced = self
            .subscriptions
            .write()
            .map_err(|_| poisoned())?
            .insert(name, Arc::new(subscription));
        if let Some(replaced) = replaced {
            replaced.mark_deleted();
        }
        Ok(())
    }

    /// Applies the catalog records other nodes (and this one) wrote since
    /// the last call: definitions added, replaced or deleted.
    fn apply_catalog(&self) -> Result<(), DeliveryError> {
        let mut next = self.catalog_next.lock().map_err(|_| poisoned())?;
        let (entries, end) = catalog::read(self.shared.log.as_ref(), *next)?;
        for (name, definition) in entries {
            let current = self.get(&name).ok();
            match (definition, current) {
                (Some(spec), Some(current)) if current.spec() == &spec => {}
                (Some(spec), _) => {
                    if let Err(error) = self.load(spec, Vec::new()) {
                        tracing::error!(subscription = %name, %error, "cannot load the subscription defined by another node");
                    }
                }
                (None, Some(_)) => self.forget(&name)?,
                (None, None) => {}
            }
        }
        *next = end;
        Ok(())
    }

    /// Follows the catalog until `shutdown` (logs with consumer groups):
    /// subscriptions created or deleted through other nodes appear and
    /// disappear here within about [`CATALOG_POLL`].
    pub async fn follow_catalog(self: Arc<Self>, shutdown: CancellationToken) {
        if self.shared.log.groups().is_none() {
            return;
        }
        let mut tick = tokio::time::interval(CATALOG_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let this = Arc::clone(&self);
            if let Ok(Err(error)) = tokio::task::spawn_blocking(move || this.apply_catalog()).await
            {
                tracing::warn!(%error, "cannot read the subscription catalog");
            }
        }
    }

    /// Creates a subscription. Creating one that exists with the same
    /// definition is a no-op; with another definition, an error.
    pub fn create(&self, spec: SubscriptionConfig) -> Result<Arc<Subscription>, DeliveryError> {
        let name = SubscriptionName::new(spec.name.clone())?;
        let topic = TopicName::user(spec.topic.clone())?;
        if spec.max_in_flight == 0 {
            return Err(DeliveryError::InvalidSpec {
                field: "max_in_flight".into(),
                message: "must be at least 1".into(),
            });
        }
        validate_policy(&spec)?;
        let info = self.shared.log.topic(&topic)?;
        if let Some(dead_letter_topic) = &spec.dead_letter_topic {
            let dead_letter_topic = TopicName::user(dead_letter_topic.clone())?;
            if dead_letter_topic == topic {
                return Err(DeliveryError::InvalidSpec {
                    field: "dead_letter_topic".into(),
                    message: "must differ from the subscription's topic".into(),
                });
            }
            if let Err(LogError::TopicNotFound(_)) = self.shared.log.topic(&dead_letter_topic) {
                self.shared
                    .log
                    .create_topic(&dead_letter_topic, info.partitions)?;
            }
        }
        let mut subscriptions = self.subscriptions.write().map_err(|_| poisoned())?;
        if let Some(existing) = subscriptions.get(&name) {
            return if existing.spec() == &spec {
                Ok(Arc::clone(existing))
            } else {
                Err(DeliveryError::SubscriptionExists(spec.name))
            };
        }
        let committed = (0..info.partitions)
            .map(|p| start_offset(self.shared.log.as_ref(), &topic, p, spec.start))
            .collect::<Result<Vec<u64>, LogError>>()?;
        let sub_dir = self.dir.join(name.as_str());
        let redrive = ensure_redrive_topic(self.shared.log.as_ref(), &spec)?;
        if let Some(groups) = self.shared.log.groups() {
            let offsets: Vec<(Source, u64)> = committed
                .iter()
                .enumerate()
                .map(|(p, &offset)| ((topic.clone(), p as u32), offset))
                .collect();
            groups.commit_idle(&spec.name, &offsets)?;
            catalog::write(self.shared.log.as_ref(), &spec.name, Some(&spec))?;
        } else {
            store::create(&sub_dir, &spec, &committed)?;
        }
        let subscription = Arc::new(Subscription::new(
            spec,
            info,
            committed,
            &self.shared,
            sub_dir,
            redrive,
        )?);
        subscriptions.insert(name.clone(), Arc::clone(&subscription));
        tracing::info!(subscription = %name, topic = %topic, "subscription created");
        Ok(subscription)
    }

    /// One subscription by name.
    pub fn get(&self, name: &str) -> Result<Arc<Subscription>, DeliveryError> {
        let key = SubscriptionName::new(name)
            .map_err(|_| DeliveryError::SubscriptionNotFound(name.to_string()))?;
        self.subscriptions
            .read()
            .map_err(|_| poisoned())?
            .get(&key)
            .cloned()
            .ok_or_else(|| DeliveryError::SubscriptionNotFound(name.to_string()))
    }

    /// All subscriptions, sorted by name.
    pub fn list(&self) -> Vec<Arc<Subscription>> {
        self.subscriptions
            .read()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The events the subscription dead-lettered that `selection` takes
    /// (oldest first, at most `limit`), read from its dead-letter topic,
    /// with their failure metadata (`redriven` set on those redriven
    /// already).
    pub fn dead_letters(
        &self,
        name: &str,
        selection: &DeadLetterSelection<'_>,
        limit: usize,
    ) -> Result<Vec<Delivery>, DeliveryError> {
        let subscription = self.get(name)?;
        let redriven = store::load_redriven(subscription.dir())?;
        self.dead_letters_marked(&subscription, selection, limit, &redriven)
    }

    /// [`Subscriptions::dead_letters`], with the redriven places given.
    fn dead_letters_marked(
        &self,
        subscription: &Subscription,
        selection: &DeadLetterSelection<'_>,
        limit: usize,
        redriven: &std::collections::BTreeSet<(u32, u64)>,
    ) -> Result<Vec<Delivery>, DeliveryError> {
        let name = subscription.name();
        let Some(topic) = dead_letter_topic(subscription)? else {
            return Err(DeliveryError::InvalidSpec {
                field: "dead_letter_topic".into(),
                message: format!("subscription '{name}' has no dead-letter topic"),
            });
        };
        let mut found = Vec::new();
        for partition in 0..self.shared.log.topic(&topic)?.partitions {
            self.scan_dead_letters(name, &topic, partition, 0, |offset, mut stored| {
                if found.len() >= limit {
                    return ControlFlow::Break(());
                }
                if selection.takes(&stored, partition, offset) {
                    if let Some(dead) = stored.dead_letter.as_mut() {
                        dead.redriven = redriven.contains(&(partition, offset));
                    }
                    found.push(Delivery {
                        id: String::new(),
                        topic: topic.clone(),
                        partition,
                        offset,
                        attempt: 0,
                        record: stored,
                        trace_context: Default::default(),
                    });
                }
                ControlFlow::Continue(())
            })?;
        }
        found.sort_by_key(|d| {
            d.record
                .dead_letter
                .as_ref()
                .map_or(0, |m| m.last_attempt_unix_ms)
        });
        Ok(found)
    }

    /// How many dead letters of subscription `name` wait (not redriven).
    /// Reads only what reached the dead-letter topic since the last call.
    pub fn dead_letters_waiting(&self, name: &str) -> Result<u64, DeliveryError> {
        let subscription = self.get(name)?;
        let Some(topic) = dead_letter_topic(&subscription)? else {
            return Ok(0);
        };
        let partitions = self.shared.log.topic(&topic)?.partitions;
        let mut tallies = self.dead_letter_tallies.lock().map_err(|_| poisoned())?;
        let tally = tallies.entry(name.to_string()).or_default();
        if tally.topic != topic.as_str() {
            *tally = DeadLetterTally {
                topic: topic.to_string(),
                ..DeadLetterTally::default()
            };
        }
        tally.next.resize(partitions as usize, 0);
        for partition in 0..partitions {
            let retained_from = self.shared.log.offsets(&topic, partition)?.start;
            tally
                .places
                .retain(|&(p, offset)| p != partition || offset >= retained_from);
            let from = tally.next[partition as usize];
            let places = &mut tally.places;
            tally.next[partition as usize] =
                self.scan_dead_letters(name, &topic, partition, from, |offset, _| {
                    places.insert((partition, offset));
                    ControlFlow::Continue(())
                })?;
        }
        let redriven = store::load_redriven(subscription.dir())?;
        Ok(tally.places.difference(&redriven).count() as u64)
    }

    /// Visits the dead letters of subscription `name` in one partition of
    /// its dead-letter topic, from offset `from`, with their offsets;
    /// returns the offset after the last record read.
    fn scan_dead_letters(
        &self,
        name: &str,
        topic: &TopicName,
        partition: u32,
        from: u64,
        mut visit: impl FnMut(u64, StoredEvent) -> ControlFlow<()>,
    ) -> Result<u64, DeliveryError> {
        let mut next = from;
        let mut undecodable = None;
        crate::log::scan(self.shared.log.as_ref(), topic, partition, from, |record| {
            match StoredEvent::from_bytes(&record.payload) {
                Ok(stored) => {
                    next = record.offset + 1;
                    let ours = stored
                        .dead_letter
                        .as_ref()
                        .is_some_and(|d| d.subscription == name);
                    if ours {
                        visit(record.offset, stored)
                    } else {
                        ControlFlow::Continue(())
                    }
                }
                Err(e) => {
                    undecodable = Some(DeliveryError::Undecodable {
                        topic: topic.to_string(),
                        partition,
                        offset: record.offset,
                        reason: e.to_string(),
                    });
                    ControlFlow::Break(())
                }
            }
        })?;
        undecodable.map_or(Ok(next), Err)
    }

    /// Puts dead letters of subscription `name` back to that subscription
    /// only (through its private redrive topic): oldest first, those
    /// `selection` takes, at most `limit`. Each is delivered afresh from
    /// attempt 1, the event unchanged (id and trace context included). A
    /// dead letter is redriven at most once. Returns how many were
    /// redriven and how many selected ones are left.
    pub async fn redrive(
        &self,
        name: &str,
        selection: &DeadLetterSelection<'_>,
        limit: usize,
    ) -> Result<(usize, usize), DeliveryError> {
        let subscription = self.get(name)?;
        let redrive_topic = redrive_topic_name(name)?;
        let mut done = store::load_redriven(subscription.dir())?;
        let candidates: Vec<Delivery> = self
            .dead_letters_marked(&subscription, selection, usize::MAX, &done)?
            .into_iter()
            .filter(|d| !is_redriven(d))
            .collect();
        let mut redriven = 0;
        for dead in candidates.iter().take(limit) {
            // The copy keeps its failure metadata (the subscriber does not
            // see it): should it fail again, its dead letter names where
            // it first failed.
            let record = dead.record.clone();
            let span = spans::redrive(name, record.event.as_ref());
            let offsets = self
                .shared
                .log
                .append(&redrive_topic, 0, vec![record.to_bytes()])
                .instrument(span)
                .await?;
            if let (Some(event), Some(&offset)) = (record.event.as_ref(), offsets.first()) {
                let target = Position {
                    topic: redrive_topic.to_string(),
                    partition: 0,
                    offset,
                };
                self.shared.flow.on_event(
                    event,
                    StepKind::Redriven {
                        subscription: name.to_string(),
                        target,
                    },
                );
            }
            done.insert((dead.partition, dead.offset));
            store::save_redriven(subscription.dir(), &done)?;
            redriven += 1;
        }
        subscription.wake();
        tracing::info!(subscription = %name, redriven, "dead letters redriven");
        Ok((redriven, candidates.len() - redriven))
    }

    /// Deletes a subscription and its stored offsets; connected consumers
    /// get NOT_FOUND on their next poll.
    pub fn delete(&self, name: &str) -> Result<(), DeliveryError> {
        let subscription = self.get(name)?;
        if let Ok(mut tallies) = self.dead_letter_tallies.lock() {
            tallies.remove(name);
        }
        if let Some(groups) = self.shared.log.groups() {
            catalog::write(self.shared.log.as_ref(), name, None)?;
            self.forget(name)?;
            if let Err(error) = groups.delete(name) {
                tracing::warn!(subscription = %name, %error, "could not delete the consumer group (its committed offsets stay in Kafka)");
            }
        } else {
            self.forget(name)?;
        }
        store::remove(&self.dir.join(subscription.name()))?;
        if subscription.spec().dead_letter_topic.is_some() {
            match self.shared.log.delete_topic(&redrive_topic_name(name)?) {
                Ok(()) | Err(LogError::TopicNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        tracing::info!(subscription = %name, "subscription deleted");
        Ok(())
    }

    /// Removes a subscription from this node; its consumers get NOT_FOUND.
    fn forget(&self, name: &str) -> Result<(), DeliveryError> {
        let key = SubscriptionName::new(name)
            .map_err(|_| DeliveryError::SubscriptionNotFound(name.to_string()))?;
        if let Some(subscription) = self
            .subscriptions
            .write()
            .map_err(|_| poisoned())?
            .remove(&key)
        {
            subscription.mark_deleted();
            self.shared.metrics.forget_subscription(name);
        }
        Ok(())
    }

    /// How far behind each subscription is (for the lag metrics); one
    /// that cannot be read is left out and logged.
    pub fn lag(&self) -> Vec<SubscriptionLag> {
        self.list()
            .iter()
            .filter_map(|subscription| match subscription.lag() {
                Ok(lag) => Some(lag),
                Err(error) => {
                    tracing::warn!(subscription = %subscription.name(), %error, "cannot measure lag");
                    None
                }
            })
            .collect()
    }

    /// Writes every subscription's changed committed offsets to disk.
    pub fn flush(&self) {
        for subscription in self.list() {
            if let Err(e) = subscription.flush() {
                tracing::error!(subscription = %subscription.name(), error = %e, "could not store committed offsets");
            }
        }
    }

    /// Flushes offsets every `offset_commit_interval` until `shutdown`,
    /// then once more.
    pub async fn run_flusher(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.shared.config.offset_commit_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let this = Arc::clone(&self);
                    let _ = tokio::task::spawn_blocking(move || this.flush()).await;
                }
                () = shutdown.cancelled() => break,
            }
        }
        let this = Arc::clone(&self);
        let _ = tokio::task::spawn_blocking(move || this.flush()).await;
    }
}

/// How often other nodes' subscription changes are looked for.
pub const CATALOG_POLL: Duration = Duration::from_secs(1);

/// Where a new subscription starts on one partition of its topic.
pub(super) fn start_offset(
    log: &dyn EventLog,
    topic: &TopicName,
    partition: u32,
    start: StartPosition,
) -> Result<u64, LogError> {
    Ok(match start {
        StartPosition::Earliest => log.offsets(topic, partition)?.start,
        StartPosition::Latest => log.offsets(topic, partition)?.end,
        StartPosition::Time(ms) => log.offset_for_time(topic, partition, ms)?,
    })
}

/// The private topic redriven dead letters come back through:
/// `<subscription>.redrive`, created (one partition) when missing, for
/// subscriptions with a dead-letter topic.
fn ensure_redrive_topic(
    log: &dyn EventLog,
    spec: &SubscriptionConfig,
) -> Result<Option<TopicName>, DeliveryError> {
    if spec.dead_letter_topic.is_none() {
        return Ok(None);
    }
    let topic = redrive_topic_name(&spec.name)?;
    if let Err(LogError::TopicNotFound(_)) = log.topic(&topic) {
        log.create_topic(&topic, 1)?;
    }
    Ok(Some(topic))
}

/// Which dead letters a listing or a redrive takes.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeadLetterSelection<'a> {
    /// Only those whose event matches this pattern.
    pub filter: Option<&'a crate::rules::Pattern>,
    /// Only these (partition, offset) places in the dead-letter topic;
    /// empty: any.
    pub only: &'a [(u32, u64)],
}

impl DeadLetterSelection<'_> {
    /// Whether the dead letter at `partition`/`offset` is taken.
    fn takes(&self, stored: &StoredEvent, partition: u32, offset: u64) -> bool {
        let placed = self.only.is_empty() || self.only.contains(&(partition, offset));
        let matches = match (self.filter, &stored.event) {
            (Some(filter), Some(event)) => filter.matches(&crate::rules::event_view(event)),
            _ => true,
        };
        placed && matches
    }
}

/// The dead letters of one subscription counted so far (see
/// [`Subscriptions::dead_letters_waiting`]).
#[derive(Debug, Default)]
struct DeadLetterTally {
    /// The dead-letter topic they were counted in.
    topic: String,
    /// Per partition, the next offset to read.
    next: Vec<u64>,
    /// (partition, offset) of each dead letter seen and still retained.
    places: std::collections::BTreeSet<(u32, u64)>,
}

/// The dead-letter topic of `subscription`, if it has one.
fn dead_letter_topic(subscription: &Subscription) -> Result<Option<TopicName>, DeliveryError> {
    Ok(match &subscription.spec().dead_letter_topic {
        Some(topic) => Some(TopicName::new(topic.clone())?),
        None => None,
    })
}

fn is_redriven(delivery: &Delivery) -> bool {
    delivery
        .record
        .dead_letter
        .as_ref()
        .is_some_and(|d| d.redriven)
}

/// The private topic `<subscription>.redrive` that redriven dead letters
/// of `subscription` come back through.
pub fn redrive_topic_name(subscription: &str) -> Result<TopicName, DeliveryError> {
    Ok(TopicName::new(format!("{subscription}.redrive"))?)
}

/// Checks the retry policy of a subscription definition.
/// A push endpoint must be an http(s) URL; dead-lettering 4xx answers
/// needs a dead-letter topic; a secret must be a usable signing key.
fn validate_push(
    spec: &SubscriptionConfig,
    push: &crate::config::PushConfig,
) -> Result<(), DeliveryError> {
    let invalid = |field: &str, message: String| DeliveryError::InvalidSpec {
        field: field.into(),
        message,
    };
    let url = reqwest::Url::parse(&push.endpoint).map_err(|e| {
        invalid(
            "push.endpoint",
            format!(
                "{:?} is not a URL ({e}); give the full address, e.g. https://fn.example.com/events",
                push.endpoint
            ),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(
            "push.endpoint",
            format!(
                "{:?} must be an http:// or https:// URL with a host",
                push.endpoint
            ),
        ));
    }
    if let Some(batch) = push.batch
        && !(1..=1000).contains(&batch.max_events)
    {
        return Err(invalid(
            "push.batch.max_events",
            format!("must be between 1 and 1000, not {}", batch.max_events),
        ));
    }
    if push.on_client_error == Some(crate::config::ClientErrorPolicy::DeadLetter)
        && spec.dead_letter_topic.is_none()
    {
        return Err(invalid(
            "push.on_client_error",
            "dead_letter needs a dead_letter_topic; set one, or use retry".into(),
        ));
    }
    if let Some(secret) = &push.secret {
        crate::config::PushConfig::signing_key(secret).map_err(|e| invalid("push.secret", e))?;
    }
    Ok(())
}

fn validate_policy(spec: &SubscriptionConfig) -> Result<(), DeliveryError> {
    let invalid = |field: &str, message: &str| {
        Err(DeliveryError::InvalidSpec {
            field: field.into(),
            message: message.into(),
        })
    };
    spec.validate_ranges()
        .map_err(|(field, message)| DeliveryError::InvalidSpec { field, message })?;
    if spec.max_attempts == Some(0) {
        return invalid(
            "max_attempts",
            "must be at least 1 (leave it unset to retry forever)",
        );
    }
    if spec.max_attempts.is_some() && spec.dead_letter_topic.is_none() {
        return invalid(
            "max_attempts",
            "needs a dead_letter_topic: events that run out of attempts go there instead of being dropped",
        );
    }
    if let Some(push) = &spec.push {
        validate_push(spec, push)?;
    }
    if let Some(filter) = &spec.filter
        && let Err(error) = crate::rules::Pattern::compile(filter)
    {
        return Err(DeliveryError::InvalidSpec {
            field: "filter".into(),
            message: error.to_string(),
        });
    }
    Ok(())
}

fn poisoned() -> DeliveryError {
    DeliveryError::Log(LogError::Failed(
        "subscription registry lock poisoned".into(),
    ))
}

#[cfg(test)]
mod tests;
