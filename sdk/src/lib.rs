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

mod client;
mod error;
mod event;
pub mod json;
mod subscriber;
pub mod telemetry;

pub use client::{Client, Published};
pub use error::SdkError;
pub use event::Event;
pub use subscriber::{BatchFailures, Received, RetryAfter, SubscriptionBuilder};
pub use switchyard_proto::v1 as proto;
pub use switchyard_proto::v1::CloudEvent;
