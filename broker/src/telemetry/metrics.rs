//! Prometheus metrics, served as text on `/metrics` from their own HTTP
//! listener (`metrics_listen`). Names follow Prometheus conventions with
//! the `switchyard_` prefix.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// Labels of per-bus metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BusLabels {
    /// The bus.
    pub bus: String,
}

/// Labels of rejected publishes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// The bus.
    pub bus: String,
    /// `invalid`, `unroutable` or `storage`.
    pub reason: String,
}

/// Labels of per-rule metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// The bus the rule listens on.
    pub bus: String,
    /// The rule.
    pub rule: String,
}

/// Labels of per-topic metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// The topic.
    pub topic: String,
}

/// Labels of per-subscription metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriptionLabels {
    /// The subscription.
    pub subscription: String,
}

/// Labels of push request counts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    /// The subscription.
    pub subscription: String,
    /// `delivered`, `retried` or `rejected`.
    pub outcome: String,
}

/// How far behind one subscription is, sampled at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionLag {
    /// The subscription.
    pub subscription: String,
    /// Events stored but not yet acked (committed offset to end).
    pub events: u64,
    /// Age of the oldest of them, in seconds (0 when caught up).
    pub seconds: f64,
}

/// Where lag comes from: the delivery layer, asked at each scrape.
pub type LagSource = Arc<dyn Fn() -> Vec<SubscriptionLag> + Send + Sync>;

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets from 0.1 ms to ~3.3 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Handles on one subscription's metrics, made once so that delivering
/// costs no label lookups.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionMetrics {
    /// Deliveries handed to consumers (every attempt).
    pub deliveries: Counter,
    /// Of those, attempts after the first.
    pub redeliveries: Counter,
    /// Deliveries acked.
    pub acks: Counter,
    /// Deliveries nacked.
    pub nacks: Counter,
    /// Deliveries not settled before their ack deadline.
    pub timeouts: Counter,
    /// Events written to the dead-letter topic.
    pub dead_letters: Counter,
    /// Seconds from an event's append to its first delivery.
    pub publish_to_deliver: Option<Histogram>,
    /// Push requests answered 2xx.
    pub push_delivered: Counter,
    /// Push requests that failed and will be retried (408, 429, 5xx,
    /// timeouts, connection errors).
    pub push_retried: Counter,
    /// Push requests refused as non-retryable (other 4xx).
    pub push_rejected: Counter,
    /// 1 while the push circuit is open or half-open.
    pub push_circuit_open: Gauge,
}

impl SubscriptionMetrics {
    /// Records how long an event waited before its first delivery.
    pub fn observe_publish_to_deliver(&self, seconds: f64) {
        if let Some(histogram) = &self.publish_to_deliver {
            histogram.observe(seconds);
        }
    }
}

/// The broker's metrics.
pub struct Metrics {
    registry: Registry,
    /// Version of the rule set in force (1 at start, +1 per reload).
    pub rules_version: Gauge,
    /// 1 when the last rules reload succeeded (or none happened), 0 when it
    /// failed and older rules are in force.
    pub rules_last_reload_ok: Gauge,
    /// Failed rules reloads since start.
    pub rules_reload_failures: Counter<u64, AtomicU64>,
    /// Events accepted and stored (duplicates not counted), per bus.
    pub events_published: Family<BusLabels, Counter>,
    /// Events that repeated an id already accepted, per bus.
    pub events_duplicate: Family<BusLabels, Counter>,
    /// Events refused, per bus and reason.
    pub events_rejected: Family<RejectLabels, Counter>,
    /// Events accepted that matched no rule, per bus.
    pub events_unmatched: Family<BusLabels, Counter>,
    /// Events stored to be routed later (`deliverafter`), per bus.
    pub events_scheduled: Family<BusLabels, Counter>,
    /// Rule matches, per bus and rule.
    pub events_routed: Family<RuleLabels, Counter>,
    /// Event copies appended, per topic.
    pub events_stored: Family<TopicLabels, Counter>,
    /// Publish call latency (validate, route, durable append), per bus.
    pub publish_duration: HistogramFamily<BusLabels>,
    deliveries: Family<SubscriptionLabels, Counter>,
    redeliveries: Family<SubscriptionLabels, Counter>,
    acks: Family<SubscriptionLabels, Counter>,
    nacks: Family<SubscriptionLabels, Counter>,
    timeouts: Family<SubscriptionLabels, Counter>,
    dead_letters: Family<SubscriptionLabels, Counter>,
    publish_to_deliver: HistogramFamily<SubscriptionLabels>,
    push_requests: Family<PushLabels, Counter>,
    push_circuit_open: Family<SubscriptionLabels, Gauge>,
    lag_events: Family<SubscriptionLabels, Gauge>,
    lag_seconds: Family<SubscriptionLabels, Gauge<f64, AtomicU64>>,
    lag_source: Mutex<Option<LagSource>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("switchyard");
        let metrics = Metrics {
            rules_version: Gauge::default(),
            rules_last_reload_ok: Gauge::default(),
            rules_reload_failures: Counter::default(),
            events_published: Family::default(),
            events_duplicate: Family::default(),
            events_rejected: Family::default(),
            events_unmatched: Family::default(),
            events_scheduled: Family::default(),
            events_routed: Family::default(),
            events_stored: Family::default(),
            publish_duration: Family::new_with_constructor(latency_histogram),
            deliveries: Family::default(),
            redeliveries: Family::default(),
            acks: Family::default(),
            nacks: Family::default(),
            timeouts: Family::default(),
            dead_letters: Family::default(),
            publish_to_deliver: Family::new_with_constructor(latency_histogram),
            push_requests: Family::default(),
            push_circuit_open: Family::default(),
            lag_events: Family::default(),
            lag_seconds: Family::default(),
            lag_source: Mutex::new(None),
            registry: Registry::default(),
        };
        let m = &metrics;
        registry.register(
            "rules_version",
            "Version of the rule set in force (1 at start, +1 per successful reload)",
            m.rules_version.clone(),
        );
        registry.register(
            "rules_last_reload_ok",
            "1 when the last rules reload succeeded, 0 when it failed and older rules are in force",
            m.rules_last_reload_ok.clone(),
        );
        registry.register(
            "rules_reload_failures",
            "Failed rules reloads since start",
            m.rules_reload_failures.clone(),
        );
        registry.register(
            "events_published",
            "Events accepted and stored, per bus (duplicates not counted)",
            m.events_published.clone(),
        );
        registry.register(
            "events_duplicate",
            "Events that repeated an accepted (source, id), per bus",
            m.events_duplicate.clone(),
        );
        registry.register(
            "events_rejected",
            "Events refused, per bus and reason (invalid, unroutable, storage)",
            m.events_rejected.clone(),
        );
        registry.register(
            "events_unmatched",
            "Events accepted that matched no rule (stored nowhere), per bus",
            m.events_unmatched.clone(),
        );
        registry.register(
            "events_scheduled",
            "Events stored to be routed at their deliverafter time, per bus",
            m.events_scheduled.clone(),
        );
        registry.register(
            "events_routed",
            "Rule matches, per bus and rule",
            m.events_routed.clone(),
        );
        registry.register(
            "events_stored",
            "Event copies appended durably, per topic",
            m.events_stored.clone(),
        );
        registry.register(
            "publish_duration_seconds",
            "Publish call latency: validate, route and durable append, per bus",
            m.publish_duration.clone(),
        );
        registry.register(
            "deliveries",
            "Deliveries handed to consumers (every attempt), per subscription",
            m.deliveries.clone(),
        );
        registry.register(
            "redeliveries",
            "Delivery attempts after the first, per subscription",
            m.redeliveries.clone(),
        );
        registry.register("acks", "Deliveries acked, per subscription", m.acks.clone());
        registry.register(
            "nacks",
            "Deliveries nacked, per subscription",
            m.nacks.clone(),
        );
        registry.register(
            "delivery_timeouts",
            "Deliveries not settled before their ack deadline, per subscription",
            m.timeouts.clone(),
        );
        registry.register(
            "dead_letters",
            "Events written to a dead-letter topic, per subscription",
            m.dead_letters.clone(),
        );
        registry.register(
            "publish_to_deliver_seconds",
            "Time from an event's durable append to its first delivery, per subscription",
            m.publish_to_deliver.clone(),
        );
        registry.register(
            "push_requests",
            "Push requests per subscription and outcome (delivered, retried, rejected)",
            m.push_requests.clone(),
        );
        registry.register(
            "push_circuit_open",
            "1 while a push subscription's circuit breaker holds pushes back",
            m.push_circuit_open.clone(),
        );
        registry.register(
            "subscription_lag_events",
            "Events stored but not yet acked, per subscription",
            m.lag_events.clone(),
        );
        registry.register(
            "subscription_lag_seconds",
            "Age of the oldest event not yet acked, per subscription (0 when caught up)",
            m.lag_seconds.clone(),
        );
        metrics.rules_version.set(1);
        metrics.rules_last_reload_ok.set(1);
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The handles of one subscription's metrics.
    pub fn subscription(&self, name: &str) -> SubscriptionMetrics {
        let labels = SubscriptionLabels {
            subscription: name.to_string(),
        };
        SubscriptionMetrics {
            deliveries: self.deliveries.get_or_create_owned(&labels),
            redeliveries: self.redeliveries.get_or_create_owned(&labels),
            acks: self.acks.get_or_create_owned(&labels),
            nacks: self.nacks.get_or_create_owned(&labels),
            timeouts: self.timeouts.get_or_create_owned(&labels),
            dead_letters: self.dead_letters.get_or_create_owned(&labels),
            publish_to_deliver: Some(self.publish_to_deliver.get_or_create_owned(&labels)),
            push_delivered: self.push_request_counter(name, "delivered"),
            push_retried: self.push_request_counter(name, "retried"),
            push_rejected: self.push_request_counter(name, "rejected"),
            push_circuit_open: self.push_circuit_open.get_or_create_owned(&labels),
        }
    }

    fn push_request_counter(&self, subscription: &str, outcome: &str) -> Counter {
        self.push_requests.get_or_create_owned(&PushLabels {
            subscription: subscription.to_string(),
            outcome: outcome.to_string(),
        })
    }

    /// Where subscription lag is read from at each scrape.
    pub fn set_lag_source(&self, source: LagSource) {
        if let Ok(mut slot) = self.lag_source.lock() {
            *slot = Some(source);
        }
    }

    /// Samples lag into the gauges (deleted subscriptions disappear).
    fn sample_lag(&self) {
        let source = self.lag_source.lock().ok().and_then(|s| s.clone());
        let Some(source) = source else { return };
        self.lag_events.clear();
        self.lag_seconds.clear();
        for lag in source() {
            let labels = SubscriptionLabels {
                subscription: lag.subscription,
            };
            self.lag_events
                .get_or_create(&labels)
                .set(i64::try_from(lag.events).unwrap_or(i64::MAX));
            self.lag_seconds.get_or_create(&labels).set(lag.seconds);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.sample_lag();
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// The `GET /metrics` route, for the broker's HTTP listener.
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::new();
        metrics.rules_reload_failures.inc();
        metrics.rules_last_reload_ok.set(0);
        let text = metrics.render();
        assert!(
            text.contains("# TYPE switchyard_rules_version gauge"),
            "{text}"
        );
        assert!(text.contains("switchyard_rules_version 1"), "{text}");
        assert!(
            text.contains("switchyard_rules_reload_failures_total 1"),
            "{text}"
        );
        assert!(text.contains("switchyard_rules_last_reload_ok 0"), "{text}");
    }
}
