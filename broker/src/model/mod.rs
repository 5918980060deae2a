//! Pure domain types: names, the stored event record, validation and
//! partitioning. No I/O and no gRPC here.

mod names;
mod validate;

pub use names::{NameError, SubscriptionName, TopicName, validate_name};
pub(crate) use validate::is_json_content_type;
pub use validate::{EventError, EventLimits, validate_event};

use bytes::Bytes;
pub use switchyard_proto::v1::CloudEvent;
pub use switchyard_proto::v1::DeadLetter;
pub use switchyard_proto::v1::cloud_event::Data as EventData;

/// The CloudEvents `specversion` this broker accepts.
pub const SPEC_VERSION: &str = "1.0";

/// The extension attribute whose value chooses the partition of an event.
pub const PARTITION_KEY_EXTENSION: &str = "partitionkey";

/// What is written to a topic for one routed event: the event exactly as
/// published plus how it got there. Encoded with protobuf, so fields can be
/// added later without breaking old logs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredEvent {
    /// The event as the publisher sent it.
    #[prost(message, optional, tag = "1")]
    pub event: Option<CloudEvent>,
    /// The bus it was published on.
    #[prost(string, tag = "2")]
    pub bus: String,
    /// Names of the rules that routed it to this topic (sorted).
    #[prost(string, repeated, tag = "3")]
    pub rules: Vec<String>,
    /// Set in dead-letter topics: where and why the event failed.
    #[prost(message, optional, tag = "4")]
    pub dead_letter: Option<DeadLetter>,
}

impl StoredEvent {
    /// Encodes the record for the log.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(prost::Message::encode_to_vec(self))
    }

    /// Encodes the record for `event` without copying the event first:
    /// the same bytes as building a `StoredEvent` and calling
    /// [`StoredEvent::to_bytes`].
    pub fn encode(event: &CloudEvent, bus: &String, rules: &[String]) -> Bytes {
        use prost::encoding::{message, string};
        let len = message::encoded_len(1, event)
            + string::encoded_len(2, bus)
            + string::encoded_len_repeated(3, rules);
        let mut buf = Vec::with_capacity(len);
        message::encode(1, event, &mut buf);
        if !bus.is_empty() {
            string::encode(2, bus, &mut buf);
        }
        string::encode_repeated(3, rules, &mut buf);
        Bytes::from(buf)
    }

    /// Decodes a record read from the log.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        prost::Message::decode(bytes)
    }
}

/// The wall-clock time in ms since the Unix epoch (0 before 1970): what
/// records, dead letters and statuses are stamped with.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The partition of a topic with `partitions` partitions that an event goes
/// to: a stable hash (CRC-32C) of its `partitionkey` extension, or of its id
/// when it has none, so events with one key keep their order.
pub fn partition_for(event: &CloudEvent, partitions: u32) -> u32 {
    crc32c::crc32c(partition_key(event).as_bytes()) % partitions.max(1)
}

/// The key that orders an event: its `partitionkey` extension, else its id.
pub fn partition_key(event: &CloudEvent) -> &str {
    event
        .extensions
        .get(PARTITION_KEY_EXTENSION)
        .map_or(event.id.as_str(), String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, key: Option<&str>) -> CloudEvent {
        let mut event = CloudEvent {
            id: id.into(),
            ..Default::default()
        };
        if let Some(key) = key {
            event
                .extensions
                .insert(PARTITION_KEY_EXTENSION.into(), key.into());
        }
        event
    }

    #[test]
    fn partition_key_wins_over_id() {
        let a = partition_for(&event("1", Some("order-7")), 16);
        let b = partition_for(&event("2", Some("order-7")), 16);
        assert_eq!(a, b);
        assert!(a < 16);
    }

    #[test]
    fn partition_is_stable() {
        // CRC-32C of "abc" is 0x364b3fb7; the mapping must never change, or
        // keys would move partitions across versions.
        assert_eq!(partition_for(&event("abc", None), 1000), 0x364b3fb7 % 1000);
    }

    #[test]
    fn stored_event_round_trips() {
        let stored = StoredEvent {
            event: Some(event("1", Some("k"))),
            bus: "default".into(),
            rules: vec!["a".into(), "b".into()],
            dead_letter: None,
        };
        let decoded = StoredEvent::from_bytes(&stored.to_bytes()).expect("decodes");
        assert_eq!(decoded, stored);
        let by_reference = StoredEvent::encode(&event("1", Some("k")), &stored.bus, &stored.rules);
        assert_eq!(by_reference, stored.to_bytes());
    }
}
