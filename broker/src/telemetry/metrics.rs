//! Prometheus metrics, served on `/metrics` from the HTTP listener
//! (`metrics_listen`): OpenMetrics text to a scraper that asks for it in
//! `Accept`, the classic Prometheus text format (0.0.4) otherwise. Names
//! follow Prometheus conventions with the `switchyard_` prefix, besides the
//! standard `process_*` metrics and `switchyard_build_info`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
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

/// Labels of failed authentications.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why, e.g. `unknown token`.
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
    /// Failed authentications, per reason.
    pub auth_failures: Family<ReasonLabels, Counter>,
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
    /// The standard `process_*` metrics, sampled at each scrape.
    process: ProcessMetrics,
    /// The unprefixed registry the `process_*` metrics live in.
    process_registry: Registry,
}

/// Labels of `switchyard_build_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    /// The broker's version (Cargo package version).
    version: String,
}

/// The standard process metrics, as the Prometheus client libraries name
/// them, read from `/proc/self` at scrape time (absent off Linux).
#[derive(Debug, Default)]
struct ProcessMetrics {
    cpu_seconds: Counter<f64, AtomicU64>,
    resident_memory_bytes: Gauge,
    virtual_memory_bytes: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time_seconds: Gauge<f64, AtomicU64>,
}

impl ProcessMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            self.cpu_seconds.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            self.resident_memory_bytes.clone(),
        );
        registry.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            self.virtual_memory_bytes.clone(),
        );
        registry.register(
            "process_open_fds",
            "Number of open file descriptors",
            self.open_fds.clone(),
        );
        registry.register(
            "process_max_fds",
            "Maximum number of open file descriptors",
            self.max_fds.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            self.start_time_seconds.clone(),
        );
    }

    /// Reads `/proc/self`; leaves the values as they were where it cannot.
    fn sample(&self) {
        /// Linux's USER_HZ, the unit of the CPU times in `/proc`: 100 on
        /// every architecture Rust targets.
        const TICKS_PER_SECOND: f64 = 100.0;
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some((_, after_name)) = stat.rsplit_once(')')
        {
            // Fields after the command name, from field 3 (state) on.
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
            if let (Some(user), Some(system)) = (field(14), field(15)) {
                let total = (user + system) as f64 / TICKS_PER_SECOND;
                let grown = total - self.cpu_seconds.get();
                if grown > 0.0 {
                    self.cpu_seconds.inc_by(grown);
                }
            }
            if let Some(bytes) = field(23) {
                self.virtual_memory_bytes.set(to_i64(bytes));
            }
            let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|t| t.trim().parse::<u64>().ok())
            });
            if let (Some(start), Some(boot)) = (field(22), boot) {
                self.start_time_seconds
                    .set(boot as f64 + start as f64 / TICKS_PER_SECOND);
            }
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            if let Some(kib) = kib {
                self.resident_memory_bytes.set(to_i64(kib * 1024));
            }
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(to_i64(entries.count() as u64));
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            let soft = limits
                .lines()
                .find_map(|l| l.strip_prefix("Max open files"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(soft) = soft {
                self.max_fds.set(to_i64(soft));
            }
        }
    }
}

/// The format `/metrics` answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0 text (`application/openmetrics-text`).
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4 (`text/plain`).
    Classic,
}

impl Exposition {
    /// The format a scraper's `Accept` header asks for: OpenMetrics when
    /// it names `application/openmetrics-text`, classic text otherwise.
    pub fn from_accept(accept: Option<&str>) -> Exposition {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Exposition::OpenMetrics
        } else {
            Exposition::Classic
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// OpenMetrics text in the classic format: a counter family `x` is
/// written there as `x_total` in its HELP and TYPE lines too (its samples
/// already are), and `# UNIT` / `# EOF` lines do not exist.
fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
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
            auth_failures: Family::default(),
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
            process: ProcessMetrics::default(),
            process_registry: Registry::default(),
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
            "auth_failures",
            "Failed authentications (no credentials, unknown or expired token, refused client certificate), per reason",
            m.auth_failures.clone(),
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
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the broker's version as a label",
            build_info,
        );
        let mut process_registry = Registry::default();
        m.process.register(&mut process_registry);
        metrics.rules_version.set(1);
        metrics.rules_last_reload_ok.set(1);
        Metrics {
            registry,
            process_registry,
            ..metrics
        }
    }

    /// Makes the per-bus counters of `buses` exist (at 0) before anything
    /// happens on them, so a rate over them is defined from the start;
    /// `reasons` are the rejection reasons.
    pub fn add_buses<'a>(&self, buses: impl Iterator<Item = &'a str>, reasons: &[&str]) {
        for bus in buses {
            let labels = BusLabels {
                bus: bus.to_string(),
            };
            for family in [
                &self.events_published,
                &self.events_duplicate,
                &self.events_unmatched,
                &self.events_scheduled,
            ] {
                let _ = family.get_or_create_owned(&labels);
            }
            for reason in reasons {
                let _ = self.events_rejected.get_or_create_owned(&RejectLabels {
                    bus: bus.to_string(),
                    reason: (*reason).to_string(),
                });
            }
        }
    }

    /// Drops every series of a deleted subscription.
    pub fn forget_subscription(&self, name: &str) {
        let labels = SubscriptionLabels {
            subscription: name.to_string(),
        };
        for family in [
            &self.deliveries,
            &self.redeliveries,
            &self.acks,
            &self.nacks,
            &self.timeouts,
            &self.dead_letters,
        ] {
            family.remove(&labels);
        }
        self.publish_to_deliver.remove(&labels);
        self.push_circuit_open.remove(&labels);
        self.lag_events.remove(&labels);
        self.lag_seconds.remove(&labels);
        for outcome in ["delivered", "retried", "rejected"] {
            self.push_requests.remove(&PushLabels {
                subscription: name.to_string(),
                outcome: outcome.to_string(),
            });
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

    /// Every metric in `format`.
    pub fn render(&self, format: Exposition) -> String {
        self.sample_lag();
        self.process.sample();
        let mut text = String::new();
        if encode_registry(&mut text, &self.registry).is_err()
            || encode_registry(&mut text, &self.process_registry).is_err()
            || encode_eof(&mut text).is_err()
        {
            text.clear();
        }
        match format {
            Exposition::OpenMetrics => text,
            Exposition::Classic => classic_text(&text),
        }
    }
}

/// The `GET /metrics` route, for the broker's HTTP listener.
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let metrics = Arc::clone(&metrics);
            async move {
                let accept = headers
                    .get(axum::http::header::ACCEPT)
                    .and_then(|a| a.to_str().ok());
                let format = Exposition::from_accept(accept);
                (
                    [(axum::http::header::CONTENT_TYPE, format.content_type())],
                    metrics.render(format),
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
        let text = metrics.render(Exposition::Classic);
        assert!(
            text.contains("# TYPE switchyard_rules_version gauge"),
            "{text}"
        );
        assert!(text.contains("switchyard_rules_version 1"), "{text}");
        assert!(
            text.contains("# HELP switchyard_rules_reload_failures_total Failed"),
            "counters' HELP names the sample: {text}"
        );
        assert!(
            text.contains("# TYPE switchyard_rules_reload_failures_total counter"),
            "{text}"
        );
        assert!(
            text.contains("switchyard_rules_reload_failures_total 1"),
            "{text}"
        );
        assert!(text.contains("switchyard_rules_last_reload_ok 0"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        let open = metrics.render(Exposition::OpenMetrics);
        assert!(open.contains("# TYPE switchyard_rules_reload_failures counter"));
        assert!(open.ends_with("# EOF\n"), "one EOF, at the end: {open}");
        assert_eq!(open.matches("# EOF").count(), 1);
    }

    #[test]
    fn build_info_and_process_metrics_are_there() {
        let text = Metrics::new().render(Exposition::Classic);
        let version = format!(
            "switchyard_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&version), "{text}");
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} in {text}"
            );
        }
        let rss = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("rss");
        assert!(rss > 0.0, "read from /proc/self/status");
    }

    #[test]
    fn bus_counters_start_at_zero_and_deleted_subscriptions_disappear() {
        let metrics = Metrics::new();
        metrics.add_buses(["payments"].into_iter(), &["invalid"]);
        let handles = metrics.subscription("billing");
        handles.acks.inc();
        let text = metrics.render(Exposition::Classic);
        for series in [
            "switchyard_events_published_total{bus=\"payments\"} 0",
            "switchyard_events_duplicate_total{bus=\"payments\"} 0",
            "switchyard_events_rejected_total{bus=\"payments\",reason=\"invalid\"} 0",
            "switchyard_acks_total{subscription=\"billing\"} 1",
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
        metrics.forget_subscription("billing");
        let text = metrics.render(Exposition::Classic);
        assert!(!text.contains("subscription=\"billing\""), "{text}");
    }

    #[test]
    fn accept_headers_choose_the_format() {
        let scraper = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(
            Exposition::from_accept(Some(scraper)),
            Exposition::OpenMetrics
        );
        assert_eq!(
            Exposition::from_accept(Some("text/plain")),
            Exposition::Classic
        );
        assert_eq!(Exposition::from_accept(None), Exposition::Classic);
    }
}
