//! Delayed and scheduled events. An event whose `deliverafter` extension
//! (an RFC 3339 time) is in the future is stored durably at once in the
//! internal topic `__scheduled` and routed — by the rules in force then —
//! no earlier than that time. When it fires (or is cancelled), its offset
//! is recorded in `__scheduled.done`, so a restart re-arms exactly the
//! pending ones. Events stay on disk; memory holds a compact index per
//! pending timer (time, offset, identity hash), never a task per event.
//!
//! Firing is at-least-once: a crash between routing an event and
//! recording it done routes it again after the restart.
//!
//! With several nodes (Kafka), every node follows both topics (so any node
//! can list and cancel what any node scheduled) and one node fires: the
//! holder of the [`Lease`]. When it dies, the next node takes over within
//! the lease and fires what is pending.

use crate::lease::Lease;
use crate::log::{EventLog, LogError, scan};
use crate::model::{CloudEvent, EventError, StoredEvent, TopicName, now_unix_ms};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Extension attribute holding the earliest delivery time (RFC 3339).
pub const DELIVER_AFTER: &str = "deliverafter";
/// Internal topic holding scheduled events until they fire.
pub const SCHEDULED_TOPIC: &str = "__scheduled";
/// Internal topic recording the scheduled offsets that fired or were
/// cancelled.
pub const DONE_TOPIC: &str = "__scheduled.done";
/// How often a node of several reads what the others scheduled, fired or
/// cancelled.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// The time in an event's `deliverafter`, when it is later than `now_ms`;
/// `None` for events to route now. A time past `max_delay` or one that does
/// not parse is an error naming the attribute.
pub fn deliver_after(
    event: &CloudEvent,
    now_ms: i64,
    max_delay: Duration,
) -> Result<Option<i64>, EventError> {
    let Some(text) = event.extensions.get(DELIVER_AFTER) else {
        return Ok(None);
    };
    let at = crate::config::parse_rfc3339_ms(text).ok_or_else(|| EventError {
        field: DELIVER_AFTER.into(),
        message: format!(
            "deliverafter {text:?} is not an RFC 3339 time; use e.g. 2026-11-25T10:15:00Z (the SDK's Event::deliver_after sets it)"
        ),
    })?;
    if at <= now_ms {
        return Ok(None);
    }
    let max_ms = now_ms.saturating_add(i64::try_from(max_delay.as_millis()).unwrap_or(i64::MAX));
    if at > max_ms {
        return Err(EventError {
            field: DELIVER_AFTER.into(),
            message: format!(
                "deliverafter {text} is more than {} ahead; the broker's limits.max_delay allows no later",
                humantime::format_duration(max_delay)
            ),
        });
    }
    Ok(Some(at))
}

/// The identity of a scheduled event for cancelling: its bus, source and id.
pub fn identity(bus: &str, source: &str, id: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (bus, source, id).hash(&mut hasher);
    hasher.finish()
}

/// Pending timers: by fire time (to fire) and by identity (to cancel).
#[derive(Debug, Default)]
pub struct Timers {
    index: Mutex<Index>,
    /// Woken when a timer earlier than all others is added.
    earlier: Notify,
}

#[derive(Debug, Default)]
struct Index {
    /// (fire time ms, offset in `__scheduled`) → identity.
    by_time: BTreeMap<(i64, u64), u64>,
    /// identity → (fire time ms, offset).
    by_identity: HashMap<u64, (i64, u64)>,
    /// offset → fire time ms.
    by_offset: HashMap<u64, i64>,
}

impl Index {
    /// Removes the timer of (time, offset); returns its identity.
    fn remove_at(&mut self, fire_ms: i64, offset: u64) -> Option<u64> {
        let identity = self.by_time.remove(&(fire_ms, offset))?;
        self.by_offset.remove(&offset);
        if self.by_identity.get(&identity) == Some(&(fire_ms, offset)) {
            self.by_identity.remove(&identity);
        }
        Some(identity)
    }
}

impl Timers {
    /// Arms a timer for the scheduled record at `offset`.
    pub fn add(&self, fire_ms: i64, offset: u64, identity: u64) {
        let Ok(mut index) = self.index.lock() else {
            return;
        };
        let earliest = index
            .by_time
            .keys()
            .next()
            .is_none_or(|&(t, _)| fire_ms < t);
        index.by_time.insert((fire_ms, offset), identity);
        index.by_identity.insert(identity, (fire_ms, offset));
        index.by_offset.insert(offset, fire_ms);
        drop(index);
        if earliest {
            self.earlier.notify_one();
        }
    }

    /// Disarms the timer of an identity; returns its (time, offset).
    fn remove(&self, identity: u64) -> Option<(i64, u64)> {
        let mut index = self.index.lock().ok()?;
        let (fire_ms, offset) = *index.by_identity.get(&identity)?;
        index.remove_at(fire_ms, offset);
        Some((fire_ms, offset))
    }

    /// Disarms the timer of the record at `offset`, if armed; returns
    /// whether it was.
    fn remove_offset(&self, offset: u64) -> bool {
        let Ok(mut index) = self.index.lock() else {
            return false;
        };
        let Some(&fire_ms) = index.by_offset.get(&offset) else {
            return false;
        };
        index.remove_at(fire_ms, offset).is_some()
    }

    /// Takes up to `max` timers due at `now_ms`, earliest first.
    fn take_due(&self, now_ms: i64, max: usize) -> Vec<(i64, u64)> {
        let Ok(mut index) = self.index.lock() else {
            return Vec::new();
        };
        let mut due = Vec::new();
        while due.len() < max {
            let Some(&(fire_ms, offset)) = index.by_time.keys().next() else {
                break;
            };
            if fire_ms > now_ms {
                break;
            }
            index.remove_at(fire_ms, offset);
            due.push((fire_ms, offset));
        }
        due
    }

    /// When the next timer fires.
    fn next(&self) -> Option<i64> {
        self.index
            .lock()
            .ok()?
            .by_time
            .keys()
            .next()
            .map(|&(t, _)| t)
    }

    /// The `limit` earliest pending timers.
    pub fn earliest(&self, limit: usize) -> Vec<(i64, u64)> {
        self.index.lock().map_or_else(
            |_| Vec::new(),
            |index| index.by_time.keys().take(limit).copied().collect(),
        )
    }

    /// The lowest `__scheduled` offset still pending.
    fn lowest_offset(&self) -> Option<u64> {
        self.index
            .lock()
            .ok()?
            .by_time
            .keys()
            .map(|&(_, offset)| offset)
            .min()
    }

    /// How many timers are pending.
    pub fn len(&self) -> usize {
        self.index.lock().map_or(0, |i| i.by_time.len())
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A pending scheduled event, as listed for operators.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// When it fires (ms since the Unix epoch).
    pub fire_ms: i64,
    /// Its bus.
    pub bus: String,
    /// The event.
    pub event: CloudEvent,
}

/// Why a scheduler operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// No pending event has this identity (never scheduled, already fired
    /// or cancelled).
    #[error(
        "no scheduled event with source {event_source:?} and id {id:?} on bus {bus:?} is pending (it may have fired already)"
    )]
    NotFound {
        /// The bus.
        bus: String,
        /// The event source.
        event_source: String,
        /// The event id.
        id: String,
    },
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// An internal topic name is invalid (a bug).
    #[error(transparent)]
    Name(#[from] crate::model::NameError),
}

/// The scheduled events' storage: the two internal topics and the timers.
#[derive(Debug, Clone)]
pub struct Schedule {
    log: Arc<dyn EventLog>,
    timers: Arc<Timers>,
    scheduled: TopicName,
    done: TopicName,
    /// How far both topics have been read into the timers.
    followed: Arc<Mutex<Followed>>,
}

/// Read positions in the two topics, and done markers seen for records
/// not read yet (so that they are not armed when read).
#[derive(Debug, Default)]
struct Followed {
    scheduled: u64,
    done: u64,
    done_ahead: HashSet<u64>,
}

/// One done marker: the offset, little-endian.
fn done_marker(offset: u64) -> Bytes {
    Bytes::copy_from_slice(&offset.to_le_bytes())
}

/// The `__scheduled` offset a done marker names.
fn marked_offset(record: &crate::log::LogRecord) -> Option<u64> {
    <[u8; 8]>::try_from(record.payload.as_ref())
        .ok()
        .map(u64::from_le_bytes)
}

/// How often fired and cancelled records are compacted away.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

impl Schedule {
    /// Opens the internal topics (creating them when missing) and re-arms
    /// every scheduled event not yet done. Returns it and how many timers
    /// were re-armed.
    pub fn open(log: Arc<dyn EventLog>) -> Result<(Schedule, usize), ScheduleError> {
        let (scheduled, done) = (
            TopicName::new(SCHEDULED_TOPIC)?,
            TopicName::new(DONE_TOPIC)?,
        );
        for topic in [&scheduled, &done] {
            if let Err(LogError::TopicNotFound(_)) = log.topic(topic) {
                log.create_topic(topic, 1)?;
            }
        }
        let schedule = Schedule {
            log,
            timers: Arc::default(),
            scheduled,
            done,
            followed: Arc::default(),
        };
        schedule.follow()?;
        let armed = schedule.timers.len();
        Ok((schedule, armed))
    }

    /// Arms the scheduled records appended since the last call (by any
    /// node) and disarms those marked done since (fired or cancelled, by
    /// any node).
    fn follow(&self) -> Result<(), LogError> {
        let mut followed = self
            .followed
            .lock()
            .map_err(|_| LogError::Failed("the schedule's read positions are poisoned".into()))?;
        let followed = &mut *followed;
        let now_ms = now_unix_ms();
        let from = followed
            .scheduled
            .max(self.log.offsets(&self.scheduled, 0)?.start);
        scan(self.log.as_ref(), &self.scheduled, 0, from, |record| {
            followed.scheduled = record.offset + 1;
            if followed.done_ahead.remove(&record.offset) {
                return ControlFlow::Continue(());
            }
            let Ok(stored) = StoredEvent::from_bytes(&record.payload) else {
                return ControlFlow::Continue(());
            };
            let Some(event) = stored.event else {
                return ControlFlow::Continue(());
            };
            // Already due (or past) fires at once; the limit applied at
            // publish time.
            let fire_ms = deliver_after(&event, now_ms, Duration::MAX)
                .ok()
                .flatten()
                .unwrap_or(now_ms);
            self.timers.add(
                fire_ms,
                record.offset,
                identity(&stored.bus, &event.source, &event.id),
            );
            ControlFlow::Continue(())
        })?;
        followed.scheduled = followed.scheduled.max(from);
        scan(self.log.as_ref(), &self.done, 0, followed.done, |record| {
            followed.done = record.offset + 1;
            if let Some(offset) = marked_offset(record) {
                if offset >= followed.scheduled {
                    followed.done_ahead.insert(offset);
                } else {
                    self.timers.remove_offset(offset);
                }
            }
            ControlFlow::Continue(())
        })?;
        Ok(())
    }

    /// The timers (ingest arms them when it stores a scheduled event).
    pub fn timers(&self) -> &Arc<Timers> {
        &self.timers
    }

    /// The internal topic scheduled events are stored in.
    pub fn topic(&self) -> &TopicName {
        &self.scheduled
    }

    /// Cancels a pending event by bus, source and id; it will never be
    /// routed.
    pub async fn cancel(&self, bus: &str, source: &str, id: &str) -> Result<(), ScheduleError> {
        let (_, offset) = self
            .timers
            .remove(identity(bus, source, id))
            .ok_or_else(|| ScheduleError::NotFound {
                bus: bus.into(),
                event_source: source.into(),
                id: id.into(),
            })?;
        self.mark_done(&[offset]).await?;
        tracing::info!(bus, source, id, "scheduled event cancelled");
        Ok(())
    }

    /// The `limit` next events to fire.
    pub fn pending(&self, limit: usize) -> Result<Vec<Pending>, LogError> {
        let mut pending = Vec::new();
        for (fire_ms, offset) in self.timers.earliest(limit) {
            if let Some(stored) = self.read(offset)?
                && let Some(event) = stored.event
            {
                pending.push(Pending {
                    fire_ms,
                    bus: stored.bus,
                    event,
                });
            }
        }
        Ok(pending)
    }

    fn read(&self, offset: u64) -> Result<Option<StoredEvent>, LogError> {
        Ok(self
            .log
            .read(&self.scheduled, 0, offset, 1)?
            .into_iter()
            .find(|r| r.offset == offset)
            .and_then(|r| StoredEvent::from_bytes(&r.payload).ok()))
    }

    /// The stored events at sorted `offsets`, reading each run of
    /// consecutive offsets at once; missing ones (retention) are logged.
    fn read_runs(&self, offsets: &[u64]) -> Result<Vec<StoredEvent>, LogError> {
        let records = crate::log::read_offsets(self.log.as_ref(), &self.scheduled, 0, offsets)?;
        let mut records = records.iter().peekable();
        let mut found = Vec::with_capacity(offsets.len());
        for &offset in offsets {
            match records.next_if(|r| r.offset == offset) {
                Some(record) => match StoredEvent::from_bytes(&record.payload) {
                    Ok(stored) => found.push(stored),
                    Err(error) => {
                        tracing::error!(offset, %error, "a scheduled event does not decode; not routed")
                    }
                },
                None => {
                    tracing::error!(offset, "a scheduled event is gone (retention?); not routed")
                }
            }
        }
        Ok(found)
    }

    /// Drops what is done with: `__scheduled` segments below the oldest
    /// pending record (and below `armed_end`: everything under it is armed
    /// or done — a record appended later may not be armed yet), then the
    /// leading `__scheduled.done` markers that name only dropped records.
    /// Keeps disk use and restart time proportional to what is pending.
    fn compact(&self, armed_end: u64) -> Result<(), LogError> {
        let floor = self
            .timers
            .lowest_offset()
            .map_or(armed_end, |lowest| lowest.min(armed_end));
        let start = self.log.truncate_before(&self.scheduled, 0, floor)?;
        // Markers are appended in firing order: keep from the first one
        // that names a retained record.
        let done = self.log.offsets(&self.done, 0)?;
        let mut keep_from = done.start;
        scan(self.log.as_ref(), &self.done, 0, done.start, |record| {
            if marked_offset(record).is_some_and(|offset| offset >= start) {
                return ControlFlow::Break(());
            }
            keep_from = record.offset + 1;
            ControlFlow::Continue(())
        })?;
        self.log.truncate_before(&self.done, 0, keep_from)?;
        Ok(())
    }

    async fn mark_done(&self, offsets: &[u64]) -> Result<(), LogError> {
        let markers = offsets.iter().map(|&o| done_marker(o)).collect();
        self.log.append(&self.done, 0, markers).await.map(|_| ())
    }

    /// Fires due events through `route` (the ingest pipeline, skipping
    /// the schedule; called with the due events of one bus at a time)
    /// until `stop` is cancelled. Up to 1024 due events are routed and
    /// recorded as done together. With several nodes, only the lease
    /// holder fires; every node follows what the others schedule and mark
    /// done.
    pub async fn run<F, Fut>(self, route: F, stop: tokio_util::sync::CancellationToken)
    where
        F: Fn(String, Vec<CloudEvent>) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let shared = self.log.groups().is_some();
        // Opened in the loop: a Kafka hiccup at start must not leave this
        // node out of the schedule for good.
        let mut lease: Option<Lease> = None;
        let mut owner = !shared;
        let mut armed_end = self.log.offsets(&self.scheduled, 0).map_or(0, |o| o.end);
        let mut compacted_at = tokio::time::Instant::now();
        loop {
            if shared {
                let this = self.clone();
                let log = Arc::clone(&self.log);
                let held = lease.take();
                let ticked = tokio::task::spawn_blocking(move || {
                    let mut held = match held {
                        Some(held) => held,
                        None => Lease::open(log)?,
                    };
                    let holds = held.tick();
                    Ok::<_, LogError>((held, holds, this.follow()))
                })
                .await;
                match ticked {
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "cannot open the schedule's lease; this node does not fire scheduled events until it can");
                        owner = false;
                    }
                    Ok(Ok((held, holds, followed))) => {
                        lease = Some(held);
                        if let Err(error) = followed {
                            tracing::warn!(%error, "cannot follow the schedule");
                        }
                        let holds = holds.unwrap_or_else(|error| {
                            tracing::warn!(%error, "cannot renew the schedule's lease");
                            false
                        });
                        if holds != owner {
                            tracing::info!(
                                fires = holds,
                                "{}",
                                if holds {
                                    "this node now fires scheduled events"
                                } else {
                                    "this node no longer fires scheduled events"
                                }
                            );
                        }
                        owner = holds;
                    }
                    Err(error) => tracing::error!(%error, "the schedule's lease task failed"),
                }
            }
            if owner && compacted_at.elapsed() >= COMPACT_EVERY {
                if let Err(error) = self.compact(armed_end) {
                    tracing::warn!(%error, "cannot compact the schedule");
                }
                armed_end = self
                    .log
                    .offsets(&self.scheduled, 0)
                    .map_or(armed_end, |o| o.end);
                compacted_at = tokio::time::Instant::now();
            }
            let wait = self
                .timers
                .next()
                .filter(|_| owner)
                .map_or(COMPACT_EVERY, |at| {
                    Duration::from_millis((at - now_unix_ms()).max(0) as u64)
                })
                .min(if shared { FOLLOW_EVERY } else { COMPACT_EVERY });
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.timers.earlier.notified() => continue,
                () = tokio::time::sleep(wait) => {}
            }
            if !owner {
                continue;
            }
            let due = self.timers.take_due(now_unix_ms(), 1024);
            if due.is_empty() {
                continue;
            }
            let mut by_bus: BTreeMap<String, Vec<CloudEvent>> = BTreeMap::new();
            let mut offsets: Vec<u64> = due.into_iter().map(|(_, offset)| offset).collect();
            offsets.sort_unstable();
            match self.read_runs(&offsets) {
                Ok(records) => {
                    for stored in records {
                        if let Some(event) = stored.event {
                            by_bus.entry(stored.bus).or_default().push(event);
                        }
                    }
                }
                Err(error) => tracing::error!(%error, "cannot read scheduled events; not routed"),
            }
            for (bus, events) in by_bus {
                let count = events.len();
                if let Err(error) = route(bus.clone(), events).await {
                    tracing::error!(%bus, count, %error, "scheduled events not routed");
                }
            }
            if let Err(error) = self.mark_done(&offsets).await {
                tracing::error!(%error, "cannot record fired scheduled events; they fire again after a restart");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_at(at: &str) -> CloudEvent {
        let mut event = CloudEvent::default();
        event.extensions.insert(DELIVER_AFTER.into(), at.into());
        event
    }

    #[test]
    fn deliver_after_parses_limits_and_ignores_the_past() {
        let now = crate::config::parse_rfc3339_ms("2026-11-25T10:00:00Z").expect("time");
        let day = Duration::from_secs(86_400);
        assert_eq!(
            deliver_after(&CloudEvent::default(), now, day).expect("ok"),
            None
        );
        assert_eq!(
            deliver_after(&event_at("2026-11-25T10:15:00Z"), now, day).expect("ok"),
            Some(now + 15 * 60 * 1000)
        );
        assert_eq!(
            deliver_after(&event_at("2026-11-25T09:00:00Z"), now, day).expect("ok"),
            None,
            "a past time routes now"
        );
        let too_far =
            deliver_after(&event_at("2026-11-27T10:00:00Z"), now, day).expect_err("limit");
        assert_eq!(too_far.field, DELIVER_AFTER);
        assert!(too_far.message.contains("max_delay"), "{}", too_far.message);
        assert!(
            deliver_after(&event_at("2026-11-27T10:00:00Z"), now, Duration::MAX)
                .expect("no limit")
                .is_some(),
            "an unlimited delay (re-arming after a restart) does not overflow"
        );
        let garbage = deliver_after(&event_at("tomorrow"), now, day).expect_err("parse");
        assert!(garbage.message.contains("RFC 3339"));
    }

    #[tokio::test]
    async fn compaction_drops_fired_records_and_keeps_pending_ones() {
        use crate::config::{FsyncPolicy, StorageConfig};
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = StorageConfig {
            fsync: FsyncPolicy::Never,
            segment_bytes: 2048,
            ..StorageConfig::default()
        };
        let log: Arc<dyn EventLog> =
            Arc::new(crate::log::EmbeddedLog::open(dir.path(), &storage).expect("log"));
        let (schedule, _) = Schedule::open(Arc::clone(&log)).expect("open");
        let scheduled = schedule.topic().clone();
        let bus = "default".to_string();
        let now = now_unix_ms();
        // Record 0 waits an hour; records 1..200 are due.
        for n in 0..200u64 {
            let mut event = CloudEvent {
                id: n.to_string(),
                source: "/s".into(),
                ..CloudEvent::default()
            };
            let when = if n == 0 { now + 3_600_000 } else { now + 1 };
            event
                .extensions
                .insert(DELIVER_AFTER.into(), crate::config::format_rfc3339_ms(when));
            let offset = log
                .append(&scheduled, 0, vec![StoredEvent::encode(&event, &bus, &[])])
                .await
                .expect("append")[0];
            schedule
                .timers()
                .add(when, offset, identity(&bus, "/s", &n.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        for (_, offset) in schedule.timers.take_due(now_unix_ms(), 1000) {
            schedule.mark_done(&[offset]).await.expect("done");
        }
        let end = log.offsets(&scheduled, 0).expect("offsets").end;
        schedule.compact(end).expect("compact");
        assert_eq!(
            log.offsets(&scheduled, 0).expect("offsets").start,
            0,
            "the pending record 0 holds everything after it"
        );
        schedule
            .cancel(&bus, "/s", "0")
            .await
            .expect("cancel the pending one");
        schedule.compact(end).expect("compact");
        let start = log.offsets(&scheduled, 0).expect("offsets").start;
        assert!(
            start > 100,
            "fired and cancelled records are dropped (start {start})"
        );
        let done = log.offsets(&schedule.done, 0).expect("offsets");
        assert!(done.start > 0, "and so are their markers");
        drop(schedule);
        let (_, armed) = Schedule::open(Arc::clone(&log)).expect("reopen");
        assert_eq!(armed, 0, "nothing fires again after a restart");
        log.close();
    }

    #[test]
    fn timers_fire_in_time_order_and_cancel_by_identity() {
        let timers = Timers::default();
        timers.add(300, 3, identity("b", "s", "c"));
        timers.add(100, 1, identity("b", "s", "a"));
        timers.add(200, 2, identity("b", "s", "b"));
        assert_eq!(timers.next(), Some(100));
        assert_eq!(timers.remove(identity("b", "s", "b")), Some((200, 2)));
        assert_eq!(timers.remove(identity("b", "s", "b")), None, "once");
        assert_eq!(timers.take_due(250, 10), vec![(100, 1)]);
        assert_eq!(timers.take_due(1000, 10), vec![(300, 3)]);
        assert!(timers.is_empty());
        assert_eq!(
            timers.remove(identity("b", "s", "c")),
            None,
            "fired ones are gone"
        );
    }
}
