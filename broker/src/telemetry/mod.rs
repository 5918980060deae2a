//! Observability of the broker: its spans ([`spans`]) and Prometheus
//! metrics ([`metrics`]). Logs and span export are installed by
//! `switchyard_sdk::telemetry::init`, shared with services.

pub mod metrics;
pub mod spans;
