//! `Admin`: topics, subscriptions, rules.

use super::access::{Access, Action, caller};
use super::auth::Principal;
use crate::config::{
    BackoffConfig, ClientErrorPolicy, DEFAULT_ACK_DEADLINE, DEFAULT_PUSH_TIMEOUT, Ordering,
    PushBatch, PushConfig, PushMode, StartPosition, SubscriptionConfig,
};
use crate::delivery::{
    DeadLetterSelection, SeekTarget, SubscriptionDescription, Subscriptions, redrive_topic_name,
};
use crate::flow::{Flow, FlowEvent, Position, Step, StepKind};
use crate::ingest::Ingest;
use crate::log::{EventLog, LogError, TopicInfo};
use crate::model::TopicName;
use crate::rules::{RuleSet, dry_run};
use crate::schedule::Schedule;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use switchyard_proto::v1 as proto;
use switchyard_proto::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

/// Serves administration calls.
#[derive(Debug)]
pub struct AdminService {
    log: Arc<dyn EventLog>,
    subscriptions: Arc<Subscriptions>,
    ingest: Arc<Ingest>,
    schedule: Schedule,
    default_partitions: u32,
    access: Arc<Access>,
    flow: Arc<Flow>,
}

impl AdminService {
    /// A service over the broker's parts; each call is checked against
    /// the ACL, and changes are audited.
    pub fn new(
        log: Arc<dyn EventLog>,
        subscriptions: Arc<Subscriptions>,
        ingest: Arc<Ingest>,
        schedule: Schedule,
        default_partitions: u32,
        access: Arc<Access>,
        flow: Arc<Flow>,
    ) -> Self {
        Self {
            log,
            subscriptions,
            ingest,
            schedule,
            default_partitions,
            access,
            flow,
        }
    }

    /// Runs a read-only call if the caller may do `action` on `resource`.
    async fn read<R, T, F>(
        &self,
        request: Request<R>,
        operation: &str,
        (action, resource): (Action, &str),
        run: impl FnOnce(R) -> F,
    ) -> Result<Response<T>, Status>
    where
        F: Future<Output = Result<T, Status>>,
    {
        self.access.check(&request, operation, action, resource)?;
        run(request.into_inner()).await.map(Response::new)
    }

    /// Like [`AdminService::read`], for a change: its outcome is audited.
    async fn change<R, T, F>(
        &self,
        request: Request<R>,
        operation: &str,
        grant: (Action, &str),
        run: impl FnOnce(R) -> F,
    ) -> Result<Response<T>, Status>
    where
        F: Future<Output = Result<T, Status>>,
    {
        let verb = grant.0.as_str();
        self.change_saying(request, operation, grant, verb, |r| async move {
            run(r).await.map(|done| (done, String::new()))
        })
        .await
    }

    /// Like [`AdminService::change`], for a change whose audit record says
    /// what was done (`verb`, e.g. `seek` for a change checked as
    /// `redrive`) and what changed (`run` returns that with its reply).
    async fn change_saying<R, T, F>(
        &self,
        request: Request<R>,
        operation: &str,
        (action, resource): (Action, &str),
        verb: &str,
        run: impl FnOnce(R) -> F,
    ) -> Result<Response<T>, Status>
    where
        F: Future<Output = Result<(T, String), Status>>,
    {
        let principal = self.access.check(&request, operation, action, resource)?;
        let result = run(request.into_inner()).await;
        let outcome = result.as_ref().map(|(_, what)| what.as_str());
        self.access
            .record(&principal, operation, verb, resource, outcome);
        result.map(|(done, _)| Response::new(done))
    }
}

/// Most sample events a dry run returns per rule.
const MAX_DRY_RUN_SAMPLES: u32 = 100;

/// A topic with its size: the events its partitions retain now.
fn topic_to_proto(log: &dyn EventLog, info: TopicInfo) -> Result<proto::Topic, LogError> {
    let mut retained_events = 0;
    for partition in 0..info.partitions {
        let offsets = log.offsets(&info.name, partition)?;
        retained_events += offsets.end.saturating_sub(offsets.start);
    }
    Ok(proto::Topic {
        name: info.name.to_string(),
        partitions: info.partitions,
        retained_events,
    })
}

/// A request's `filter_json`: none when empty, else a compiled pattern
/// (INVALID_ARGUMENT naming the problem when it is not one).
fn filter_from_json(filter_json: &str) -> Result<Option<crate::rules::Pattern>, Status> {
    if filter_json.is_empty() {
        return Ok(None);
    }
    let json: serde_json::Value = crate::config::strict_json::from_str(filter_json)
        .map_err(|e| Status::invalid_argument(format!("filter_json is not valid JSON: {e}")))?;
    crate::rules::Pattern::compile(&json)
        .map(Some)
        .map_err(|e| Status::invalid_argument(format!("filter: {e}")))
}

fn subscription_to_proto(spec: &SubscriptionConfig) -> proto::Subscription {
    proto::Subscription {
        name: spec.name.clone(),
        topic: spec.topic.clone(),
        max_in_flight: spec.max_in_flight,
        ack_deadline_seconds: spec.ack_deadline.as_secs() as u32,
        start: match spec.start {
            StartPosition::Earliest => proto::StartPosition::Earliest,
            StartPosition::Latest => proto::StartPosition::Latest,
            StartPosition::Time(_) => proto::StartPosition::Time,
        } as i32,
        start_time_unix_ms: match spec.start {
            StartPosition::Time(ms) => ms,
            _ => 0,
        },
        rate_limit: spec.rate_limit.unwrap_or(0.0),
        filter_json: spec
            .filter
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        ordering: match spec.ordering {
            Ordering::None => proto::Ordering::None,
            Ordering::ByKey => proto::Ordering::ByKey,
        } as i32,
        max_attempts: spec.max_attempts.unwrap_or(0),
        backoff: Some(proto::Backoff {
            initial_ms: spec.backoff.initial.as_millis() as u32,
            multiplier: spec.backoff.multiplier,
            max_ms: spec.backoff.max.as_millis() as u32,
            jitter: spec.backoff.jitter,
        }),
        dead_letter_topic: spec.dead_letter_topic.clone().unwrap_or_default(),
        push: spec.push.as_ref().map(|push| proto::PushConfig {
            endpoint: push.endpoint.clone(),
            structured: push.mode == PushMode::Structured,
            timeout_ms: push.timeout.as_millis() as u32,
            on_client_error: match push.on_client_error {
                None => proto::ClientErrorPolicy::Unspecified,
                Some(ClientErrorPolicy::DeadLetter) => proto::ClientErrorPolicy::DeadLetter,
                Some(ClientErrorPolicy::Retry) => proto::ClientErrorPolicy::Retry,
            } as i32,
            secret: String::new(),
            signed: push.secret.is_some(),
            batch_max_events: push.batch.map_or(0, |b| b.max_events as u32),
            batch_max_wait_ms: push.batch.map_or(0, |b| b.max_wait.as_millis() as u32),
        }),
    }
}

fn push_from_proto(push: proto::PushConfig) -> PushConfig {
    PushConfig {
        mode: if push.structured {
            PushMode::Structured
        } else {
            PushMode::Binary
        },
        timeout: if push.timeout_ms == 0 {
            DEFAULT_PUSH_TIMEOUT
        } else {
            Duration::from_millis(u64::from(push.timeout_ms))
        },
        on_client_error: match proto::ClientErrorPolicy::try_from(push.on_client_error) {
            Ok(proto::ClientErrorPolicy::DeadLetter) => Some(ClientErrorPolicy::DeadLetter),
            Ok(proto::ClientErrorPolicy::Retry) => Some(ClientErrorPolicy::Retry),
            _ => None,
        },
        secret: (!push.secret.is_empty()).then_some(push.secret),
        batch: (push.batch_max_events > 0).then(|| PushBatch {
            max_events: push.batch_max_events as usize,
            max_wait: Duration::from_millis(u64::from(push.batch_max_wait_ms)),
        }),
        endpoint: push.endpoint,
    }
}

fn subscription_from_proto(sub: proto::Subscription) -> Result<SubscriptionConfig, Status> {
    let filter = if sub.filter_json.is_empty() {
        None
    } else {
        Some(
            crate::config::strict_json::from_str(&sub.filter_json).map_err(|e| {
                Status::invalid_argument(format!("filter_json is not valid JSON: {e}"))
            })?,
        )
    };
    Ok(SubscriptionConfig {
        max_in_flight: if sub.max_in_flight == 0 {
            crate::config::DEFAULT_MAX_IN_FLIGHT
        } else {
            sub.max_in_flight
        },
        ack_deadline: if sub.ack_deadline_seconds == 0 {
            DEFAULT_ACK_DEADLINE
        } else {
            Duration::from_secs(u64::from(sub.ack_deadline_seconds))
        },
        start: match proto::StartPosition::try_from(sub.start) {
            Ok(proto::StartPosition::Latest) => StartPosition::Latest,
            Ok(proto::StartPosition::Time) => StartPosition::Time(sub.start_time_unix_ms),
            _ => StartPosition::Earliest,
        },
        max_attempts: (sub.max_attempts > 0).then_some(sub.max_attempts),
        rate_limit: (sub.rate_limit > 0.0).then_some(sub.rate_limit),
        filter,
        ordering: match proto::Ordering::try_from(sub.ordering) {
            Ok(proto::Ordering::ByKey) => Ordering::ByKey,
            _ => Ordering::None,
        },
        backoff: sub
            .backoff
            .map_or_else(BackoffConfig::default, |b| BackoffConfig {
                initial: Duration::from_millis(u64::from(b.initial_ms)),
                multiplier: b.multiplier,
                max: Duration::from_millis(u64::from(b.max_ms)),
                jitter: b.jitter,
            }),
        dead_letter_topic: (!sub.dead_letter_topic.is_empty()).then_some(sub.dead_letter_topic),
        push: sub.push.map(push_from_proto),
        name: sub.name,
        topic: sub.topic,
    })
}

/// The grants creating `sub` needs besides `manage:subscription/NAME`:
/// reading its topic; for a dead-letter topic other than its own
/// `NAME.dlq`, writing to it, and managing it when it does not exist yet
/// (`dead_letter_exists`), since creating the subscription creates it.
fn subscription_effect_grants(
    sub: &proto::Subscription,
    dead_letter_exists: bool,
) -> Vec<(Action, String)> {
    let mut grants = vec![(Action::Read, format!("topic/{}", sub.topic))];
    let dead_letter = sub.dead_letter_topic.as_str();
    if !dead_letter.is_empty() && dead_letter != format!("{}.dlq", sub.name) {
        grants.push((Action::Write, format!("topic/{dead_letter}")));
        if !dead_letter_exists {
            grants.push((Action::Manage, format!("topic/{dead_letter}")));
        }
    }
    grants
}

fn description_to_proto(
    description: SubscriptionDescription,
    dead_letters: u64,
) -> proto::SubscriptionDescription {
    let partitions: Vec<proto::PartitionProgress> = description
        .partitions
        .iter()
        .map(|p| proto::PartitionProgress {
            topic: p.topic.clone(),
            partition: p.partition,
            committed_offset: p.committed,
            end_offset: p.end,
            lag: p.lag,
            in_flight: p.in_flight,
            oldest_unacked_age_ms: p.oldest_unacked_age.as_millis() as i64,
            parked_keys: p.parked_keys.clone(),
            waiting_retry: p.waiting_retry,
            next_retry_unix_ms: p.next_retry_ms.unwrap_or(0),
        })
        .collect();
    proto::SubscriptionDescription {
        subscription: Some(subscription_to_proto(&description.spec)),
        total_lag: partitions.iter().map(|p| p.lag).sum(),
        partitions,
        consumers: description.consumers,
        dead_letters,
        push: description.push.map(|push| proto::PushState {
            circuit: push.circuit.as_str().into(),
            retry_at_unix_ms: push.retry_at_ms,
            consecutive_failures: push.consecutive_failures,
            last_error: push.last_error.unwrap_or_default(),
        }),
    }
}

impl AdminService {
    /// Deletes a topic that no subscription reads and no rule targets.
    async fn delete_topic_named(&self, name: String) -> Result<proto::DeleteTopicResponse, Status> {
        let name = TopicName::user(name)?;
        self.log.topic(&name)?;
        // Subscriptions that read it, write their dead letters into it,
        // or redrive through it.
        let users: Vec<String> = self
            .subscriptions
            .list()
            .iter()
            .filter_map(|s| {
                let spec = s.spec();
                let dead_letters = spec.dead_letter_topic.as_deref();
                let role = if spec.topic == name.as_str() {
                    "reads it"
                } else if dead_letters == Some(name.as_str()) {
                    "writes its dead letters into it"
                } else if dead_letters.is_some()
                    && redrive_topic_name(&spec.name).is_ok_and(|redrive| redrive == name)
                {
                    "redrives through it"
                } else {
                    return None;
                };
                Some(format!("{} ({role})", s.name()))
            })
            .collect();
        if !users.is_empty() {
            return Err(Status::failed_precondition(format!(
                "topic '{name}' is used by subscription(s) {}; delete them first",
                users.join(", ")
            )));
        }
        let rules = self.ingest.rules();
        let targeting: Vec<&str> = rules
            .rules()
            .iter()
            .filter(|r| r.targets.contains(&name))
            .map(|r| r.name.as_str())
            .collect();
        if !targeting.is_empty() {
            return Err(Status::failed_precondition(format!(
                "topic '{name}' is the target of rule(s) {}; change the rules first",
                targeting.join(", ")
            )));
        }
        self.log.delete_topic(&name)?;
        Ok(proto::DeleteTopicResponse {})
    }

    /// The next pending scheduled events.
    async fn scheduled(
        &self,
        request: proto::ListScheduledRequest,
    ) -> Result<proto::ListScheduledResponse, Status> {
        let limit = match request.limit {
            0 => 100,
            n => n as usize,
        };
        let schedule = self.schedule.clone();
        let pending = tokio::task::spawn_blocking(move || schedule.pending(limit))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(proto::ListScheduledResponse {
            events: pending
                .into_iter()
                .map(|p| proto::ScheduledEvent {
                    bus: p.bus,
                    event: Some(p.event),
                    deliver_after_unix_ms: p.fire_ms,
                })
                .collect(),
            pending: self.schedule.timers().len() as u64,
        })
    }

    /// The flow history a query names.
    async fn flow(&self, request: proto::GetFlowRequest) -> Result<proto::Flow, Status> {
        if request.query.trim().is_empty() {
            return Err(Status::invalid_argument(
                "`query` is required: an event id, a trace id or a correlation id",
            ));
        }
        let limit = match request.limit {
            0 => 100,
            n => n as usize,
        };
        let flow = Arc::clone(&self.flow);
        let events = tokio::task::spawn_blocking(move || flow.find(&request.query, limit))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(proto::Flow {
            events: events.into_iter().map(flow_event_to_proto).collect(),
        })
    }

    /// What candidate rules would do with the bus's recent traffic; the
    /// sample events keep their data only where `principal` may read it.
    async fn rules_dry_run(
        &self,
        principal: Principal,
        request: proto::DryRunRulesRequest,
    ) -> Result<proto::DryRunRulesResponse, Status> {
        let bus = super::bus_or_default(&request.bus).to_string();
        let bus_name = bus.clone();
        let current = self.ingest.rules();
        let in_force = Arc::clone(&current);
        let (rules_yaml, add_to_current) = (request.rules_yaml, request.add_to_current);
        // Rules from the network are bounded before parsing and parsed off
        // the async workers, so no request can delay publishes.
        let candidate = tokio::task::spawn_blocking(move || {
            crate::rules::parse_untrusted_rules(&rules_yaml, "candidate rules").and_then(
                |mut rules| {
                    if add_to_current {
                        let replaced: HashSet<String> =
                            rules.iter().map(|r| r.name.clone()).collect();
                        rules.extend(
                            in_force
                                .rules()
                                .iter()
                                .filter(|r| !replaced.contains(&r.name))
                                .cloned(),
                        );
                    }
                    RuleSet::from_rules(rules, &[])
                },
            )
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let samples = request.samples.min(MAX_DRY_RUN_SAMPLES) as usize;
        let last = match request.last {
            0 => 1000,
            n => n as usize,
        };
        let subscriptions: Vec<(String, String)> = self
            .subscriptions
            .list()
            .iter()
            .map(|s| (s.name().to_string(), s.spec().topic.clone()))
            .collect();
        let log = Arc::clone(&self.log);
        let flow = Arc::clone(&self.flow);
        let report = tokio::task::spawn_blocking(move || {
            // Stored copies, and (from the flow history) the events no
            // rule matched, newest `last` of both.
            let mut recorded = dry_run::recent_events(log.as_ref(), &bus, last)?;
            recorded.extend(
                flow.unmatched(&bus, last)?
                    .into_iter()
                    .map(|(at_ms, event)| dry_run::Recorded {
                        at_ms,
                        event,
                        topics: Vec::new(),
                    }),
            );
            recorded.sort_by_key(|r| r.at_ms);
            let skip = recorded.len().saturating_sub(last);
            let events: Vec<_> = recorded.into_iter().skip(skip).collect();
            Ok::<_, LogError>(dry_run::dry_run(
                &current,
                &candidate,
                &bus,
                &events,
                &subscriptions,
                samples,
            ))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(proto::DryRunRulesResponse {
            examined: report.examined,
            rules: report
                .rules
                .into_iter()
                .map(|r| {
                    let (matched, redacted) = self.samples_for(&principal, &bus_name, r.matched);
                    proto::RuleDryRun {
                        name: r.name,
                        change: r.change.as_str().to_string(),
                        matched_before: r.matched_before,
                        matched_after: r.matched_after,
                        matched,
                        redacted,
                    }
                })
                .collect(),
            subscriptions: report
                .subscriptions
                .into_iter()
                .map(|s| proto::SubscriptionDryRun {
                    name: s.name,
                    topic: s.topic,
                    received_before: s.received_before,
                    received_after: s.received_after,
                })
                .collect(),
        })
    }

    /// A subscription's dead letters.
    async fn dead_letters(
        &self,
        request: proto::ListDeadLettersRequest,
    ) -> Result<proto::ListDeadLettersResponse, Status> {
        let limit = if request.limit == 0 {
            100
        } else {
            request.limit as usize
        };
        let filter = filter_from_json(&request.filter_json)?;
        let subscriptions = std::sync::Arc::clone(&self.subscriptions);
        let found = tokio::task::spawn_blocking(move || {
            let selection = DeadLetterSelection {
                filter: filter.as_ref(),
                only: &[],
            };
            subscriptions.dead_letters(&request.subscription, &selection, limit)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(proto::ListDeadLettersResponse {
            dead_letters: found
                .into_iter()
                .map(crate::api::delivery_to_proto)
                .collect(),
            data_redacted: false,
        })
    }

    /// Redrives a subscription's dead letters.
    async fn redrive(
        &self,
        request: proto::RedriveDeadLettersRequest,
    ) -> Result<proto::RedriveDeadLettersResponse, Status> {
        let filter = filter_from_json(&request.filter_json)?;
        let only: Vec<(u32, u64)> = request
            .only
            .iter()
            .map(|p| (p.partition, p.offset))
            .collect();
        let selection = DeadLetterSelection {
            filter: filter.as_ref(),
            only: &only,
        };
        let limit = if request.limit == 0 {
            usize::MAX
        } else {
            request.limit as usize
        };
        let (redriven, remaining) = self
            .subscriptions
            .redrive(&request.subscription, &selection, limit)
            .await?;
        Ok(proto::RedriveDeadLettersResponse {
            redriven: redriven as u32,
            remaining: remaining as u32,
        })
    }

    /// Moves a subscription's position.
    async fn seek(
        &self,
        request: proto::SeekSubscriptionRequest,
    ) -> Result<proto::SubscriptionDescription, Status> {
        use proto::seek_subscription_request::Target;
        let target = match request.target {
            Some(Target::Earliest(_)) => SeekTarget::Earliest,
            Some(Target::Latest(_)) => SeekTarget::Latest,
            Some(Target::TimeUnixMs(ms)) => SeekTarget::Time(ms),
            Some(Target::Offsets(offsets)) => {
                SeekTarget::Offsets(offsets.offsets.into_iter().collect())
            }
            None => {
                return Err(Status::invalid_argument(
                    "say where to seek: earliest, latest, time_unix_ms or offsets",
                ));
            }
        };
        let subscription = self.subscriptions.get(&request.name)?;
        let seeker = std::sync::Arc::clone(&subscription);
        tokio::task::spawn_blocking(move || seeker.seek(&target))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        self.description(&request.name).await
    }

    /// Dry-run samples as `principal` may see them, and how many lost
    /// their data: events whose data it may not read keep their attributes
    /// only.
    fn samples_for(
        &self,
        principal: &Principal,
        bus: &str,
        samples: Vec<dry_run::Recorded>,
    ) -> (Vec<proto::CloudEvent>, u32) {
        let mut redacted = 0;
        let shown = samples
            .into_iter()
            .map(|sample| {
                let readable = self.may_read(principal, bus, &sample);
                let mut event = sample.event;
                if !readable {
                    event.data = None;
                    redacted += 1;
                }
                event
            })
            .collect();
        (shown, redacted)
    }

    /// Whether `principal` may read the data of a recorded event of
    /// `bus`: of a topic that holds it, or of the bus.
    fn may_read(&self, principal: &Principal, bus: &str, recorded: &dry_run::Recorded) -> bool {
        self.access
            .allows(principal, Action::Read, &format!("bus/{bus}"))
            || recorded.topics.iter().any(|topic| {
                self.access
                    .allows(principal, Action::Read, &format!("topic/{topic}"))
            })
    }

    /// A subscription's progress, with how many dead letters wait.
    async fn description(&self, name: &str) -> Result<proto::SubscriptionDescription, Status> {
        let description = self.subscriptions.get(name)?.describe()?;
        let subscriptions = Arc::clone(&self.subscriptions);
        let name = name.to_string();
        let dead_letters =
            tokio::task::spawn_blocking(move || subscriptions.dead_letters_waiting(&name))
                .await
                .map_err(|e| Status::internal(e.to_string()))??;
        Ok(description_to_proto(description, dead_letters))
    }

    /// The live rules of `bus` (all buses when empty) and their status.
    fn rules(&self, bus: &str) -> proto::ListRulesResponse {
        let status = self.ingest.rule_status();
        let rules = self
            .ingest
            .rules()
            .rules()
            .iter()
            .filter(|r| bus.is_empty() || r.bus == bus)
            .map(|r| proto::Rule {
                name: r.name.clone(),
                description: r.description.clone(),
                bus: r.bus.clone(),
                pattern_json: r.pattern_json.to_string(),
                targets: r.targets.iter().map(ToString::to_string).collect(),
                enabled: r.enabled,
            })
            .collect();
        proto::ListRulesResponse {
            rules,
            status: Some(proto::RuleSetStatus {
                version: status.version,
                loaded_at_unix_ms: status.loaded_at_ms,
                last_error: status.last_error.unwrap_or_default(),
                last_error_at_unix_ms: status.last_error_at_ms,
            }),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topic(
        &self,
        request: Request<proto::CreateTopicRequest>,
    ) -> Result<Response<proto::Topic>, Status> {
        let resource = format!("topic/{}", request.get_ref().name);
        let grant = (Action::Manage, resource.as_str());
        self.change(request, "CreateTopic", grant, |request| async move {
            let name = TopicName::user(request.name)?;
            let partitions = if request.partitions == 0 {
                self.default_partitions
            } else {
                request.partitions
            };
            Ok(topic_to_proto(
                self.log.as_ref(),
                self.log.create_topic(&name, partitions)?,
            )?)
        })
        .await
    }

    async fn list_topics(
        &self,
        request: Request<proto::ListTopicsRequest>,
    ) -> Result<Response<proto::ListTopicsResponse>, Status> {
        self.read(request, "ListTopics", (Action::View, "topics"), |_| async {
            let topics = self
                .log
                .topics()
                .into_iter()
                .map(|info| topic_to_proto(self.log.as_ref(), info))
                .collect::<Result<_, _>>()?;
            Ok(proto::ListTopicsResponse { topics })
        })
        .await
    }

    async fn delete_topic(
        &self,
        request: Request<proto::DeleteTopicRequest>,
    ) -> Result<Response<proto::DeleteTopicResponse>, Status> {
        let resource = format!("topic/{}", request.get_ref().name);
        let grant = (Action::Manage, resource.as_str());
        self.change(request, "DeleteTopic", grant, |request| {
            self.delete_topic_named(request.name)
        })
        .await
    }

    async fn create_subscription(
        &self,
        request: Request<proto::CreateSubscriptionRequest>,
    ) -> Result<Response<proto::Subscription>, Status> {
        let name = request
            .get_ref()
            .subscription
            .as_ref()
            .map_or("", |s| s.name.as_str());
        let resource = format!("subscription/{name}");
        let principal = caller(&request);
        // A subscription reads its topic and writes its dead letters: the
        // caller needs the grants of those effects, not only of the name.
        if let Some(sub) = request.get_ref().subscription.as_ref() {
            let dead_letter_exists = !sub.dead_letter_topic.is_empty()
                && TopicName::user(sub.dead_letter_topic.clone())
                    .is_ok_and(|topic| self.log.topic(&topic).is_ok());
            for (action, effect) in subscription_effect_grants(sub, dead_letter_exists) {
                self.access
                    .authorize(&principal, "CreateSubscription", action, &effect)?;
            }
        }
        let grant = (Action::Manage, resource.as_str());
        self.change(request, "CreateSubscription", grant, |request| async move {
            let sub = request
                .subscription
                .ok_or_else(|| Status::invalid_argument("`subscription` is required"))?;
            let created = self.subscriptions.create(subscription_from_proto(sub)?)?;
            Ok(subscription_to_proto(created.spec()))
        })
        .await
    }

    async fn list_subscriptions(
        &self,
        request: Request<proto::ListSubscriptionsRequest>,
    ) -> Result<Response<proto::ListSubscriptionsResponse>, Status> {
        let grant = (Action::View, "subscriptions");
        self.read(request, "ListSubscriptions", grant, |_| async {
            let subscriptions = self
                .subscriptions
                .list()
                .iter()
                .map(|s| subscription_to_proto(s.spec()))
                .collect();
            Ok(proto::ListSubscriptionsResponse { subscriptions })
        })
        .await
    }

    async fn delete_subscription(
        &self,
        request: Request<proto::DeleteSubscriptionRequest>,
    ) -> Result<Response<proto::DeleteSubscriptionResponse>, Status> {
        let resource = format!("subscription/{}", request.get_ref().name);
        let grant = (Action::Manage, resource.as_str());
        self.change(request, "DeleteSubscription", grant, |request| async move {
            self.subscriptions.delete(&request.name)?;
            Ok(proto::DeleteSubscriptionResponse {})
        })
        .await
    }

    async fn describe_subscription(
        &self,
        request: Request<proto::DescribeSubscriptionRequest>,
    ) -> Result<Response<proto::SubscriptionDescription>, Status> {
        let name = request.get_ref().name.clone();
        let grants = [
            (Action::Subscribe, name.as_str()),
            (Action::View, "subscriptions"),
        ];
        self.access
            .check_any(&request, "DescribeSubscription", &grants)?;
        let description = self.description(&request.into_inner().name).await?;
        Ok(Response::new(description))
    }

    async fn list_scheduled(
        &self,
        request: Request<proto::ListScheduledRequest>,
    ) -> Result<Response<proto::ListScheduledResponse>, Status> {
        let grant = (Action::View, "scheduled");
        self.read(request, "ListScheduled", grant, |r| self.scheduled(r))
            .await
    }

    async fn cancel_scheduled(
        &self,
        request: Request<proto::CancelScheduledRequest>,
    ) -> Result<Response<proto::CancelScheduledResponse>, Status> {
        let bus = super::bus_or_default(&request.get_ref().bus).to_string();
        let bus = bus.as_str();
        let grant = (Action::Publish, bus);
        self.change(request, "CancelScheduled", grant, |r| async move {
            self.schedule.cancel(bus, &r.source, &r.id).await?;
            Ok(proto::CancelScheduledResponse {})
        })
        .await
    }

    async fn dry_run_rules(
        &self,
        request: Request<proto::DryRunRulesRequest>,
    ) -> Result<Response<proto::DryRunRulesResponse>, Status> {
        let principal = self
            .access
            .check(&request, "DryRunRules", Action::View, "rules")?;
        let report = self.rules_dry_run(principal, request.into_inner()).await?;
        Ok(Response::new(report))
    }

    async fn get_flow(
        &self,
        request: Request<proto::GetFlowRequest>,
    ) -> Result<Response<proto::Flow>, Status> {
        let grant = (Action::View, "flows");
        self.read(request, "GetFlow", grant, |r| self.flow(r)).await
    }

    async fn list_dead_letters(
        &self,
        request: Request<proto::ListDeadLettersRequest>,
    ) -> Result<Response<proto::ListDeadLettersResponse>, Status> {
        let name = request.get_ref().subscription.clone();
        let grants = [
            (Action::Subscribe, name.as_str()),
            (Action::View, "subscriptions"),
        ];
        let principal = self
            .access
            .check_any(&request, "ListDeadLetters", &grants)?;
        let dead_letter_topic = self
            .subscriptions
            .get(&name)?
            .spec()
            .dead_letter_topic
            .clone()
            .unwrap_or_default();
        let readable = self.access.allows(&principal, Action::Subscribe, &name)
            || self.access.allows(
                &principal,
                Action::Read,
                &format!("topic/{dead_letter_topic}"),
            );
        let mut listing = self.dead_letters(request.into_inner()).await?;
        if !readable {
            for dead_letter in &mut listing.dead_letters {
                if let Some(event) = dead_letter.event.as_mut() {
                    event.data = None;
                }
            }
            listing.data_redacted = true;
        }
        Ok(Response::new(listing))
    }

    async fn redrive_dead_letters(
        &self,
        request: Request<proto::RedriveDeadLettersRequest>,
    ) -> Result<Response<proto::RedriveDeadLettersResponse>, Status> {
        let name = request.get_ref().subscription.clone();
        let grant = (Action::Redrive, name.as_str());
        let verb = Action::Redrive.as_str();
        self.change_saying(request, "RedriveDeadLetters", grant, verb, |r| async move {
            let selection = if r.only.is_empty() {
                "every waiting dead letter".to_string()
            } else {
                let places: Vec<String> = r
                    .only
                    .iter()
                    .map(|p| format!("{}@{}", p.partition, p.offset))
                    .collect();
                format!("the dead letters at {}", places.join(", "))
            };
            let filter = if r.filter_json.is_empty() {
                String::new()
            } else {
                format!(" matching {}", r.filter_json)
            };
            let done = self.redrive(r).await?;
            let what = format!(
                "redrove {} of {selection}{filter} ({} remaining)",
                done.redriven, done.remaining
            );
            Ok((done, what))
        })
        .await
    }

    async fn seek_subscription(
        &self,
        request: Request<proto::SeekSubscriptionRequest>,
    ) -> Result<Response<proto::SubscriptionDescription>, Status> {
        let name = request.get_ref().name.clone();
        let grant = (Action::Redrive, name.as_str());
        // A seek moves a subscription like a redrive (same grant); the
        // audit record says what it was.
        self.change_saying(request, "SeekSubscription", grant, "seek", |r| async move {
            use proto::seek_subscription_request::Target;
            let target = match &r.target {
                Some(Target::Earliest(_)) => "the oldest retained event".to_string(),
                Some(Target::Latest(_)) => "the end".to_string(),
                Some(Target::TimeUnixMs(ms)) => crate::config::format_rfc3339_ms(*ms),
                Some(Target::Offsets(offsets)) => format!("offsets {:?}", offsets.offsets),
                None => String::new(),
            };
            let done = self.seek(r).await?;
            Ok((done, format!("seek to {target}")))
        })
        .await
    }

    async fn list_rules(
        &self,
        request: Request<proto::ListRulesRequest>,
    ) -> Result<Response<proto::ListRulesResponse>, Status> {
        self.read(
            request,
            "ListRules",
            (Action::View, "rules"),
            |r| async move { Ok(self.rules(&r.bus)) },
        )
        .await
    }

    async fn register_schema(
        &self,
        request: Request<proto::RegisterSchemaRequest>,
    ) -> Result<Response<proto::RegisterSchemaResponse>, Status> {
        let resource = format!("schema/{}", request.get_ref().file_name);
        let grant = (Action::Manage, resource.as_str());
        self.change(request, "RegisterSchema", grant, |r| async move {
            let schemas = Arc::clone(self.ingest.schemas());
            let messages =
                tokio::task::spawn_blocking(move || schemas.register(&r.file_name, &r.source))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))??;
            Ok(proto::RegisterSchemaResponse { messages })
        })
        .await
    }

    async fn list_schemas(
        &self,
        request: Request<proto::ListSchemasRequest>,
    ) -> Result<Response<proto::ListSchemasResponse>, Status> {
        self.read(
            request,
            "ListSchemas",
            (Action::View, "schemas"),
            |_| async {
                Ok(proto::ListSchemasResponse {
                    messages: self.ingest.schemas().messages(),
                })
            },
        )
        .await
    }
}

fn position_to_proto(position: Position) -> proto::FlowPosition {
    proto::FlowPosition {
        topic: position.topic,
        partition: position.partition,
        offset: position.offset,
    }
}

fn flow_event_to_proto(event: FlowEvent) -> proto::FlowEvent {
    proto::FlowEvent {
        source: event.source,
        id: event.id,
        steps: event.steps.into_iter().map(flow_step_to_proto).collect(),
    }
}

fn flow_step_to_proto(step: Step) -> proto::FlowStep {
    let mut out = proto::FlowStep {
        at_unix_ms: step.at_ms,
        position: step.position.map(position_to_proto),
        ..Default::default()
    };
    let positions = |targets: Vec<Position>| targets.into_iter().map(position_to_proto).collect();
    out.step = match step.kind {
        StepKind::Published {
            bus,
            event_type,
            publisher,
            trace_id,
            correlation,
            rules,
            targets,
            scheduled_for_ms,
            unmatched: _,
        } => {
            out.bus = bus;
            out.event_type = event_type;
            out.publisher = publisher;
            out.trace_id = trace_id.unwrap_or_default();
            out.correlation = correlation.unwrap_or_default();
            out.rules = rules;
            out.targets = positions(targets);
            out.scheduled_for_unix_ms = scheduled_for_ms.unwrap_or_default();
            "published"
        }
        StepKind::Fired { rules, targets } => {
            out.rules = rules;
            out.targets = positions(targets);
            "fired"
        }
        StepKind::Delivered {
            subscription,
            attempt,
        } => {
            out.subscription = subscription;
            out.attempt = attempt;
            "delivered"
        }
        StepKind::Acked { subscription } => {
            out.subscription = subscription;
            "acked"
        }
        StepKind::Nacked {
            subscription,
            reason,
        } => {
            out.subscription = subscription;
            out.reason = reason;
            "nacked"
        }
        StepKind::DeadLettered {
            subscription,
            topic,
            reason,
        } => {
            out.subscription = subscription;
            out.dead_letter_topic = topic;
            out.reason = reason;
            "dead_lettered"
        }
        StepKind::Redriven {
            subscription,
            target,
        } => {
            out.subscription = subscription;
            out.targets = vec![position_to_proto(target)];
            "redriven"
        }
    }
    .to_string();
    out
}
