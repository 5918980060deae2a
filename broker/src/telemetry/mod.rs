//! Observability of the broker: its spans ([`spans`]), Prometheus
//! metrics ([`metrics`]) and liveness / readiness probes ([`probes`]). Logs and span export are installed by
//! `switchyard_sdk::telemetry::init`, shared with services.

pub mod metrics;
pub mod probes;
pub mod spans;
