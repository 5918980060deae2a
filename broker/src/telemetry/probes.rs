//! Plain HTTP probes for load balancers and Kubernetes on the HTTP port:
//! `GET /healthz` (live: the process answers) and `GET /readyz` (ready:
//! the log is open, the rules are loaded and the gRPC port is serving;
//! 503 before that and while shutting down, so traffic moves away before
//! streams end).

use axum::http::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the broker takes traffic; shared by the server (which sets it)
/// and the `/readyz` probe (which reads it).
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
}

impl Readiness {
    /// Marks the broker ready (serving) or not (starting, draining).
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether it is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The `/healthz` and `/readyz` routes.
pub fn router(readiness: Arc<Readiness>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "live\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let answer = readyz(readiness.is_ready());
                async move { answer }
            }),
        )
}

/// The `/readyz` answer: 200 when ready, 503 otherwise.
fn readyz(ready: bool) -> (StatusCode, &'static str) {
    if ready {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting or shutting down\n",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_between_start_and_shutdown() {
        let readiness = Readiness::default();
        assert_eq!(
            readyz(readiness.is_ready()).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        readiness.set(true);
        assert_eq!(readyz(readiness.is_ready()).0, StatusCode::OK);
        readiness.set(false);
        assert_eq!(
            readyz(readiness.is_ready()).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
