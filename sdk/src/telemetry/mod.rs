//! Tracing for services and the broker alike: JSON log lines on stderr
//! (with `trace_id` / `span_id` inside spans), OpenTelemetry spans exported
//! over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and the W3C trace context
//! that ties a choreography into one trace (see [`context`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard_sdk::telemetry::TelemetryError> {
//! // In main, inside the Tokio runtime; keep the guard until exit so the
//! // last spans are flushed.
//! let _telemetry = switchyard_sdk::telemetry::init("payment-service")?;
//! # Ok(()) }
//! ```
//!
//! The standard variables apply: `OTEL_SERVICE_NAME` overrides the default
//! service name, `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` pick the
//! sampler, `OTEL_BSP_SCHEDULE_DELAY` the export interval, and `RUST_LOG`
//! the log level (default `info`).

pub mod context;
mod logs;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Whether spans are being exported (set once by [`init`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (bad endpoint, no runtime).
    #[error("cannot build the OTLP span exporter: {0}; check OTEL_EXPORTER_OTLP_ENDPOINT")]
    Exporter(String),
    /// A global subscriber was already installed by someone else.
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}

/// Keeps the exporter alive; dropping it flushes and stops the export.
#[derive(Debug)]
#[must_use = "dropping the guard stops span export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
            EXPORTING.store(false, Ordering::Relaxed);
        }
    }
}

/// True while spans are exported: hot paths skip building per-event spans
/// when nobody would see them.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The OTLP endpoint from the environment, if export is wanted.
fn otlp_endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .filter_map(|name| std::env::var(name).ok())
    .find(|value| !value.trim().is_empty())
}

/// What [`init_with`] sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryOptions {
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// OTLP/gRPC collector URL, e.g. `http://127.0.0.1:4317`; `None`
    /// exports nothing.
    pub otlp_endpoint: Option<String>,
}

impl TelemetryOptions {
    /// Options from the standard environment: `OTEL_SERVICE_NAME` (else
    /// `default_service`) and `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn from_env(default_service: &str) -> TelemetryOptions {
        let service_name = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| default_service.to_string());
        TelemetryOptions {
            service_name,
            otlp_endpoint: otlp_endpoint(),
        }
    }
}

/// Installs JSON logs and, when an OTLP endpoint is configured, span export
/// as `default_service` (unless `OTEL_SERVICE_NAME` says otherwise). Call it
/// once, inside a Tokio runtime; keep the returned guard until exit.
pub fn init(default_service: &str) -> Result<Telemetry, TelemetryError> {
    init_with(TelemetryOptions::from_env(default_service))
}

/// [`init`] with explicit options (tests, embedding).
pub fn init_with(options: TelemetryOptions) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = logs::layer().with_filter(filter);
    let provider = match &options.otlp_endpoint {
        Some(endpoint) => Some(tracer_provider(&options.service_name, endpoint)?),
        None => None,
    };
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("switchyard"))
            .with_filter(LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))?;
    if let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
        EXPORTING.store(true, Ordering::Relaxed);
    }
    Ok(Telemetry { provider })
}

fn tracer_provider(service: &str, endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let resource = Resource::builder()
        .with_service_name(service.to_string())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
