//! Rust SDK for Switchyard, the event-bus choreography broker.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard_sdk::SdkError> {
//! use switchyard_sdk::{Client, Event};
//!
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! // Publish a JSON event on the default bus.
//! let event = Event::new("/orders", "com.example.order.placed")
//!     .partition_key("order-42")
//!     .json(&serde_json::json!({"orderId": "42", "total": 99.5}))?;
//! client.publish("default", event).await?;
//!
//! // Consume a subscription: Ok acks, Err nacks (the event comes again).
//! client
//!     .subscribe("payment-service")
//!     .run(|delivery| async move {
//!         println!("{} #{}", delivery.event.id, delivery.attempt);
//!         Ok::<(), String>(())
//!     })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Delayed events, batches and tracing:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use switchyard_sdk::{BatchFailures, Client, Event};
//!
//! // JSON logs; spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
//! let _telemetry = switchyard_sdk::telemetry::init("order-service")?;
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! // Routed no earlier than 15 minutes from now (cancel with the Admin API).
//! let deadline = Event::new("/orders", "com.example.payment.timed_out")
//!     .id("order-42-deadline")
//!     .deliver_after(Duration::from_secs(15 * 60))
//!     .json(&serde_json::json!({"orderId": "42"}))?;
//! client.publish("default", deadline).await?;
//! // Up to 100 deliveries per call; only the failed ones come again.
//! client
//!     .subscribe("audit")
//!     .run_batches_until(100, Duration::from_millis(50), |batch| async move {
//!         let failed = batch
//!             .iter()
//!             .filter(|d| d.event.data.is_none())
//!             .fold(BatchFailures::new(), |f, d| f.fail(d, "no data"));
//!         if failed.is_empty() { Ok(()) } else { Err(failed) }
//!     }, std::future::pending::<()>())
//!     .await?;
//! # Ok(()) }
//! ```

mod client;
mod error;
mod event;
pub mod json;
mod subscriber;
pub mod telemetry;

pub use client::{Admin, AuthChannel, BearerToken, Client, Published, TlsOptions};
pub use error::SdkError;
pub use event::Event;
pub use subscriber::{BatchFailures, Received, RetryAfter, SubscriptionBuilder};
pub use switchyard_proto::v1 as proto;
pub use switchyard_proto::v1::CloudEvent;
