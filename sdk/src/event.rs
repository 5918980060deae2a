//! Building events: CloudEvents attributes plus JSON, protobuf, text or
//! binary data.

use crate::SdkError;
use prost_types::Timestamp;
use switchyard_proto::v1::CloudEvent;
use switchyard_proto::v1::cloud_event::Data;

/// Builder of a [`CloudEvent`]: `Event::new(source, type)`, optional
/// attributes, then one of the data methods or [`Event::build`].
#[derive(Debug, Clone)]
pub struct Event {
    event: CloudEvent,
}

impl Event {
    /// A new event with a fresh UUID id, `specversion` 1.0 and the current
    /// time.
    pub fn new(source: impl Into<String>, event_type: impl Into<String>) -> Self {
        let now = std::time::SystemTime::now();
        Self {
            event: CloudEvent {
                id: uuid::Uuid::new_v4().to_string(),
                source: source.into(),
                spec_version: "1.0".into(),
                r#type: event_type.into(),
                time: Some(Timestamp::from(now)),
                ..CloudEvent::default()
            },
        }
    }

    /// Sets the id (with the source it identifies the event; republishing
    /// the same id is deduplicated by the broker).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.event.id = id.into();
        self
    }

    /// Sets the subject.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.event.subject = Some(subject.into());
        self
    }

    /// Sets the partition key: events with one key stay in order.
    pub fn partition_key(self, key: impl Into<String>) -> Self {
        self.extension("partitionkey", key)
    }

    /// Delays the event: the broker stores it at once and routes it no
    /// earlier than `delay` from now (the `deliverafter` extension, RFC
    /// 3339). Cancel it before then with the Admin `CancelScheduled` call
    /// (`switchyard scheduled cancel`).
    pub fn deliver_after(self, delay: std::time::Duration) -> Self {
        self.deliver_at(std::time::SystemTime::now() + delay)
    }

    /// Schedules the event: routed no earlier than `at` (see
    /// [`Event::deliver_after`]).
    pub fn deliver_at(self, at: std::time::SystemTime) -> Self {
        self.extension("deliverafter", Timestamp::from(at).to_string())
    }

    /// Sets an extension attribute (lower-case a-z0-9 name).
    pub fn extension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.event.extensions.insert(name.into(), value.into());
        self
    }

    /// Finishes with a serde value as `application/json` data.
    pub fn json<T: serde::Serialize + ?Sized>(mut self, data: &T) -> Result<CloudEvent, SdkError> {
        let bytes = serde_json::to_vec(data).map_err(|e| SdkError::Data(e.to_string()))?;
        self.event.data_content_type = Some("application/json".into());
        self.event.data = Some(Data::BinaryData(bytes));
        Ok(self.event)
    }

    /// Finishes with a protobuf message as `application/protobuf` data.
    /// Typed publishes set the type from the message: see
    /// [`Event::from_message`].
    pub fn message<M: prost::Message + prost::Name>(mut self, message: &M) -> CloudEvent {
        self.event.data_content_type = Some("application/protobuf".into());
        self.event.data_schema = Some(M::type_url());
        self.event.data = Some(Data::BinaryData(message.encode_to_vec()));
        self.event
    }

    /// An event whose CloudEvents `type` is the message's full protobuf
    /// name, with the message as `application/protobuf` data.
    pub fn from_message<M: prost::Message + prost::Name>(
        source: impl Into<String>,
        message: &M,
    ) -> CloudEvent {
        Event::new(source, M::full_name()).message(message)
    }

    /// Finishes with text data of the given media type.
    pub fn text(mut self, content_type: impl Into<String>, text: impl Into<String>) -> CloudEvent {
        self.event.data_content_type = Some(content_type.into());
        self.event.data = Some(Data::TextData(text.into()));
        self.event
    }

    /// Finishes with binary data of the given media type.
    pub fn binary(mut self, content_type: impl Into<String>, bytes: Vec<u8>) -> CloudEvent {
        self.event.data_content_type = Some(content_type.into());
        self.event.data = Some(Data::BinaryData(bytes));
        self.event
    }

    /// Finishes without data.
    pub fn build(self) -> CloudEvent {
        self.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct OrderPlaced {
        #[prost(string, tag = "1")]
        order_id: String,
    }

    impl prost::Name for OrderPlaced {
        const NAME: &'static str = "OrderPlaced";
        const PACKAGE: &'static str = "shop.v1";
    }

    #[test]
    fn typed_protobuf_events_name_their_type() {
        let event = Event::from_message(
            "/shop",
            &OrderPlaced {
                order_id: "7".into(),
            },
        );
        assert_eq!(event.r#type, "shop.v1.OrderPlaced");
        assert_eq!(
            event.data_content_type.as_deref(),
            Some("application/protobuf")
        );
        assert_eq!(event.data_schema.as_deref(), Some("/shop.v1.OrderPlaced"));
        let Some(Data::BinaryData(bytes)) = event.data else {
            panic!("binary data expected")
        };
        assert_eq!(
            <OrderPlaced as prost::Message>::decode(&bytes[..]).ok(),
            Some(OrderPlaced {
                order_id: "7".into()
            })
        );
    }

    #[test]
    fn json_events_carry_json() {
        let event = Event::new("/s", "t")
            .partition_key("k")
            .json(&serde_json::json!({"a": 1}))
            .expect("json");
        assert_eq!(event.data_content_type.as_deref(), Some("application/json"));
        assert_eq!(
            event.extensions.get("partitionkey").map(String::as_str),
            Some("k")
        );
        assert_eq!(event.spec_version, "1.0");
        assert!(!event.id.is_empty());
    }
}
