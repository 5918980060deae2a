//! The gRPC services: proto ⇄ model conversion and nothing else. The only
//! module that knows tonic.

pub mod access;
mod admin;
pub mod auth;
pub mod gateway;
mod publish;
pub mod quota;
mod status;
mod subscribe;

pub use admin::AdminService;
pub use publish::PublisherService;
pub use subscribe::SubscriberService;
pub(crate) use subscribe::delivery_to_proto;

/// The bus a request names, `default` when it names none.
fn bus_or_default(bus: &str) -> &str {
    if bus.is_empty() {
        crate::rules::DEFAULT_BUS
    } else {
        bus
    }
}
