//! Rule dry-runs: before deploying a changed rule set, what would it do to
//! recent traffic? Each recorded event is routed by the rules in force and
//! by the candidate rules; the report counts, per rule, the events it
//! matches now and would match, and per subscription, the events it
//! receives now and would receive.
//!
//! Recorded traffic is the stored copies of a bus's events in every topic
//! (deduplicated by source and id, [`recent_events`]) and, from the flow
//! history, the events no rule in force matched (no topic has those).

use super::{Rule, RuleSet, event_view};
use crate::log::{EventLog, LogError};
use crate::model::{CloudEvent, StoredEvent, TopicName};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// How a rule differs between the rules in force and the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Only in the candidate.
    Added,
    /// In both, with another pattern, bus, targets or enabled flag.
    Changed,
    /// In both, the same.
    Unchanged,
    /// Only in the rules in force.
    Removed,
}

impl Change {
    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Changed => "changed",
            Change::Unchanged => "unchanged",
            Change::Removed => "removed",
        }
    }
}

/// One rule's counts.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleOutcome {
    /// The rule.
    pub name: String,
    /// How it changes.
    pub change: Change,
    /// Examined events it matches now.
    pub matched_before: u64,
    /// Examined events it would match.
    pub matched_after: u64,
    /// The newest of those (at most the `samples` asked for), oldest
    /// first.
    pub matched: Vec<Recorded>,
}

/// A recorded event: when it was stored, and the topics holding a copy
/// (none for an event no rule matched). Who may see its data depends on
/// those topics.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// When it was stored (ms since the Unix epoch).
    pub at_ms: i64,
    /// The event.
    pub event: CloudEvent,
    /// Topics holding a copy.
    pub topics: Vec<TopicName>,
}

/// One subscription's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionOutcome {
    /// The subscription.
    pub name: String,
    /// Its topic.
    pub topic: String,
    /// Examined events it receives now.
    pub received_before: u64,
    /// Examined events it would receive.
    pub received_after: u64,
}

/// A dry-run's report.
#[derive(Debug, Clone, PartialEq)]
pub struct DryRun {
    /// How many recorded events were routed both ways.
    pub examined: u64,
    /// Every rule of either set, by name.
    pub rules: Vec<RuleOutcome>,
    /// Every subscription given.
    pub subscriptions: Vec<SubscriptionOutcome>,
}

/// The newest `last` events published on `bus` that have stored copies,
/// oldest first.
pub fn recent_events(
    log: &dyn EventLog,
    bus: &str,
    last: usize,
) -> Result<Vec<Recorded>, LogError> {
    let mut found: Vec<(u64, Recorded)> = Vec::new();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for topic in log.topics() {
        if topic.name.as_str().starts_with("__") {
            continue;
        }
        for partition in 0..topic.partitions {
            let offsets = log.offsets(&topic.name, partition)?;
            let mut from = offsets.end.saturating_sub(last as u64).max(offsets.start);
            while from < offsets.end {
                let records = log.read(&topic.name, partition, from, 1024)?;
                let Some(tail) = records.last() else { break };
                from = tail.offset + 1;
                for record in records {
                    let Ok(stored) = StoredEvent::from_bytes(&record.payload) else {
                        continue;
                    };
                    if stored.bus != bus || stored.dead_letter.is_some() {
                        continue;
                    }
                    let Some(event) = stored.event else { continue };
                    match seen.entry((event.source.clone(), event.id.clone())) {
                        Entry::Occupied(at) => {
                            let topics = &mut found[*at.get()].1.topics;
                            if !topics.contains(&topic.name) {
                                topics.push(topic.name.clone());
                            }
                        }
                        Entry::Vacant(slot) => {
                            slot.insert(found.len());
                            found.push((
                                record.offset,
                                Recorded {
                                    at_ms: record.timestamp_ms,
                                    event,
                                    topics: vec![topic.name.clone()],
                                },
                            ));
                        }
                    }
                }
            }
        }
    }
    found.sort_by_key(|(offset, recorded)| (recorded.at_ms, *offset));
    let skip = found.len().saturating_sub(last);
    Ok(found.into_iter().skip(skip).map(|(_, r)| r).collect())
}

/// Routes `events` of `bus` by `current` and by `candidate` and counts
/// what each rule and each of `subscriptions` (name, topic) gets; keeps
/// up to `samples` of the events each candidate rule matches.
pub fn dry_run(
    current: &RuleSet,
    candidate: &RuleSet,
    bus: &str,
    events: &[Recorded],
    subscriptions: &[(String, String)],
    samples: usize,
) -> DryRun {
    let mut before: BTreeMap<&str, u64> = BTreeMap::new();
    let mut after: BTreeMap<&str, u64> = BTreeMap::new();
    let mut matched: BTreeMap<&str, VecDeque<&Recorded>> = BTreeMap::new();
    let mut received: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for recorded in events {
        let view = event_view(&recorded.event);
        let now = current.route(bus, &view);
        let then = candidate.route(bus, &view);
        for (counts, rules) in [(&mut before, current), (&mut after, candidate)] {
            for rule in rules.matching(bus, &view) {
                *counts.entry(rule.name.as_str()).or_default() += 1;
            }
        }
        if samples > 0 {
            for rule in candidate.matching(bus, &view) {
                let kept = matched.entry(rule.name.as_str()).or_default();
                if kept.len() == samples {
                    kept.pop_front();
                }
                kept.push_back(recorded);
            }
        }
        for (name, topic) in subscriptions {
            let entry = received.entry(name.as_str()).or_default();
            entry.0 += u64::from(now.keys().any(|t| t.as_str() == topic));
            entry.1 += u64::from(then.keys().any(|t| t.as_str() == topic));
        }
    }
    let by_name = |set: &RuleSet| -> BTreeMap<String, Rule> {
        set.rules()
            .iter()
            .map(|r| (r.name.clone(), r.clone()))
            .collect()
    };
    let (old, new) = (by_name(current), by_name(candidate));
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let rules = names
        .into_iter()
        .map(|name| RuleOutcome {
            change: match (old.get(name), new.get(name)) {
                (None, _) => Change::Added,
                (_, None) => Change::Removed,
                (Some(a), Some(b)) if same_routing(a, b) => Change::Unchanged,
                _ => Change::Changed,
            },
            matched_before: before.get(name.as_str()).copied().unwrap_or(0),
            matched_after: after.get(name.as_str()).copied().unwrap_or(0),
            matched: matched
                .get(name.as_str())
                .map(|kept| kept.iter().map(|e| (*e).clone()).collect())
                .unwrap_or_default(),
            name: name.clone(),
        })
        .collect();
    DryRun {
        examined: events.len() as u64,
        rules,
        subscriptions: subscriptions
            .iter()
            .map(|(name, topic)| {
                let (before, after) = received.get(name.as_str()).copied().unwrap_or_default();
                SubscriptionOutcome {
                    name: name.clone(),
                    topic: topic.clone(),
                    received_before: before,
                    received_after: after,
                }
            })
            .collect(),
    }
}

/// Whether two rules route alike.
fn same_routing(a: &Rule, b: &Rule) -> bool {
    a.bus == b.bus
        && a.enabled == b.enabled
        && a.pattern_json == b.pattern_json
        && a.targets == b.targets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::parse_rules;
    use std::path::Path;

    fn rules(text: &str) -> RuleSet {
        RuleSet::from_rules(parse_rules(text, Path::new("t.yaml")).expect("parse"), &[])
            .expect("rules")
    }

    fn event(event_type: &str, total: i64) -> CloudEvent {
        CloudEvent {
            id: format!("{event_type}-{total}"),
            source: "/t".into(),
            r#type: event_type.into(),
            data: Some(crate::model::EventData::TextData(
                serde_json::json!({"total": total}).to_string(),
            )),
            data_content_type: Some("application/json".into()),
            ..Default::default()
        }
    }

    #[test]
    fn counts_per_rule_and_subscription_before_and_after() {
        let current = rules(
            "rules:\n  - {name: orders, pattern: {type: [order.placed]}, targets: [{topic: orders}]}\n  - {name: old, pattern: {type: [order.paid]}, targets: [{topic: audit}]}\n",
        );
        let candidate = rules(
            "rules:\n  - {name: orders, pattern: {type: [order.placed]}, targets: [{topic: orders}]}\n  - {name: big, pattern: {type: [order.placed], data: {total: [{numeric: ['>', 100]}]}}, targets: [{topic: review}]}\n",
        );
        let events = [
            event("order.placed", 50),
            event("order.placed", 500),
            event("order.paid", 500),
        ]
        .map(|event| Recorded {
            at_ms: 0,
            event,
            topics: Vec::new(),
        });
        let subscriptions = [
            ("billing".to_string(), "orders".to_string()),
            ("reviewers".to_string(), "review".to_string()),
            ("auditor".to_string(), "audit".to_string()),
        ];
        let report = dry_run(&current, &candidate, "default", &events, &subscriptions, 1);
        assert_eq!(report.examined, 3);
        let rule = |name: &str| {
            report
                .rules
                .iter()
                .find(|r| r.name == name)
                .map(|r| (r.change, r.matched_before, r.matched_after))
        };
        assert_eq!(rule("orders"), Some((Change::Unchanged, 2, 2)));
        assert_eq!(rule("big"), Some((Change::Added, 0, 1)));
        let samples = |name: &str| -> Vec<String> {
            let rule = report.rules.iter().find(|r| r.name == name);
            rule.map(|r| r.matched.iter().map(|r| r.event.id.clone()).collect())
                .unwrap_or_default()
        };
        assert_eq!(samples("big"), ["order.placed-500"]);
        // One sample kept: the newest of the two matches.
        assert_eq!(samples("orders"), ["order.placed-500"]);
        assert!(
            samples("old").is_empty(),
            "removed rules match nothing after"
        );
        assert_eq!(rule("old"), Some((Change::Removed, 1, 0)));
        let received: Vec<(u64, u64)> = report
            .subscriptions
            .iter()
            .map(|s| (s.received_before, s.received_after))
            .collect();
        assert_eq!(received, [(2, 2), (0, 1), (1, 0)]);
    }
}
