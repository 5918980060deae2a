//! # Switchyard broker
//!
//! An event-bus choreography broker: services publish CloudEvents to a
//! bus, operator-defined rules route them to durable topics, and
//! subscriptions deliver them at-least-once with acks and per-partition
//! committed offsets.
//!
//! ## Architecture
//!
//! One module per concern; dependencies point one way:
//!
//! ```text
//! api (tonic services) ──▶ ingest ──▶ rules
//!          │                  └─────▶ log (EventLog: embedded segments)
//!          └──────────────▶ delivery ─▶ log
//!                   push ────▶ delivery
//! config, model: leaves used by all; server wires everything.
//! ```
//!
//! - [`model`]: CloudEvent validation, names, the stored record, partitioning.
//! - [`log`]: the [`log::EventLog`] trait, the embedded segmented log
//!   (length + CRC framing, sparse index, group commit, torn-tail recovery,
//!   retention) and the Kafka backend ([`log::kafka`]).
//! - [`rules`]: YAML rules compiled into patterns; routes events to topics.
//! - [`schema`]: protobuf schemas registered at run time, for matching and validation.
//! - [`ingest`]: validate → dedup → route → durable append.
//! - [`schedule`]: delayed events (`deliverafter`), stored now, routed later.
//! - [`delivery`]: subscriptions, credits, ack floor, redelivery, offsets.
//! - [`push`]: push subscriptions: deliveries POSTed to HTTP endpoints.
//! - [`api`]: gRPC services; the only module that knows tonic. Also
//!   authentication, ACLs and quotas.
//! - [`console`]: the operator console at `/ui` and the JSON Admin API.
//! - [`audit`]: the audit log of denied calls and admin changes.
//! - [`reload`]: hot reload of rule files (SIGHUP, file changes).
//! - [`tls`]: rustls for the listeners, reloaded on SIGHUP.
//! - [`dir_lock`]: one broker per data directory.
//! - [`server`]: start-up, serving and ordered shutdown.

pub mod api;
pub mod audit;
pub mod config;
pub mod console;
pub mod delivery;
pub mod dir_lock;
pub mod flow;
pub mod ingest;
pub mod lease;
pub mod log;
pub mod model;
pub mod push;
pub mod reload;
pub mod rules;
pub mod schedule;
pub mod schema;
pub mod server;
pub mod telemetry;
pub mod tls;
