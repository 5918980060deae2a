//! Prometheus metrics, served as text on `/metrics` from their own HTTP
//! listener (`metrics_listen`). Names follow Prometheus conventions with
//! the `switchyard_` prefix.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// The broker's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Version of the rule set in force (1 at start, +1 per reload).
    pub rules_version: Gauge,
    /// 1 when the last rules reload succeeded (or none happened), 0 when it
    /// failed and older rules are in force.
    pub rules_last_reload_ok: Gauge,
    /// Failed rules reloads since start.
    pub rules_reload_failures: Counter<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("switchyard");
        let rules_version = Gauge::default();
        let rules_last_reload_ok = Gauge::default();
        let rules_reload_failures = Counter::default();
        registry.register(
            "rules_version",
            "Version of the rule set in force (1 at start, +1 per successful reload)",
            rules_version.clone(),
        );
        registry.register(
            "rules_last_reload_ok",
            "1 when the last rules reload succeeded, 0 when it failed and older rules are in force",
            rules_last_reload_ok.clone(),
        );
        registry.register(
            "rules_reload_failures",
            "Failed rules reloads since start",
            rules_reload_failures.clone(),
        );
        rules_version.set(1);
        rules_last_reload_ok.set(1);
        Metrics {
            registry,
            rules_version,
            rules_last_reload_ok,
            rules_reload_failures,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
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
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
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
