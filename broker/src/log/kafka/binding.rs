//! The CloudEvents Kafka protocol binding, binary content mode: a stored
//! event becomes a Kafka record whose value is the event's data, whose
//! headers are its attributes (`ce_id`, `ce_source`, `ce_specversion`,
//! `ce_type`, `ce_subject`, `ce_time`, `ce_dataschema`, `content-type`,
//! `ce_<extension>`) and whose key is its partition key — so plain Kafka
//! consumers can read Switchyard topics. What only Switchyard needs (bus,
//! matched rules, dead-letter metadata, which `data` variant) travels in
//! `switchyard_*` headers. Records that are not stored events (internal
//! bookkeeping topics) travel as they are, marked `switchyard_raw`.

use crate::config::{format_rfc3339_ms, parse_rfc3339_ms};
use crate::model::{CloudEvent, DeadLetter, StoredEvent, partition_key};
use bytes::Bytes;
use prost::Message;
use switchyard_proto::v1::cloud_event::Data;

/// A record as Kafka carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaRecord {
    /// The partition key.
    pub key: Option<Vec<u8>>,
    /// Headers, in order (a key may repeat).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The value: the event's data.
    pub value: Option<Vec<u8>>,
}

const RAW: &str = "switchyard_raw";
const BUS: &str = "switchyard_bus";
const RULE: &str = "switchyard_rule";
const DEAD_LETTER: &str = "switchyard_dead_letter";
const DATA_KIND: &str = "switchyard_data";
const PROTO_TYPE: &str = "switchyard_proto_type";
const CONTENT_TYPE: &str = "content-type";

/// Encodes a log payload: stored events in binary content mode, anything
/// else raw.
pub fn to_kafka(payload: &[u8], raw: bool) -> KafkaRecord {
    let stored = if raw {
        None
    } else {
        StoredEvent::from_bytes(payload)
            .ok()
            .filter(|s| s.event.is_some())
    };
    let Some(StoredEvent {
        event: Some(event),
        bus,
        rules,
        dead_letter,
    }) = stored
    else {
        return KafkaRecord {
            key: None,
            headers: vec![(RAW.into(), b"1".to_vec())],
            value: Some(payload.to_vec()),
        };
    };
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    let mut put =
        |key: &str, value: &str| headers.push((key.to_string(), value.as_bytes().to_vec()));
    put("ce_specversion", &event.spec_version);
    put("ce_id", &event.id);
    put("ce_source", &event.source);
    put("ce_type", &event.r#type);
    if let Some(subject) = &event.subject {
        put("ce_subject", subject);
    }
    if let Some(time) = &event.time {
        let ms = time.seconds * 1000 + i64::from(time.nanos) / 1_000_000;
        put("ce_time", &format_rfc3339_ms(ms));
    }
    if let Some(schema) = &event.data_schema {
        put("ce_dataschema", schema);
    }
    if let Some(content_type) = &event.data_content_type {
        put(CONTENT_TYPE, content_type);
    }
    let mut extensions: Vec<_> = event.extensions.iter().collect();
    extensions.sort();
    for (name, value) in extensions {
        put(&format!("ce_{name}"), value);
    }
    put(BUS, &bus);
    for rule in &rules {
        put(RULE, rule);
    }
    let value = match &event.data {
        None => None,
        Some(Data::BinaryData(bytes)) => {
            put(DATA_KIND, "binary");
            Some(bytes.clone())
        }
        Some(Data::TextData(text)) => {
            put(DATA_KIND, "text");
            Some(text.as_bytes().to_vec())
        }
        Some(Data::ProtoData(any)) => {
            put(DATA_KIND, "proto");
            put(PROTO_TYPE, &any.type_url);
            Some(any.value.clone())
        }
    };
    if let Some(dead_letter) = &dead_letter {
        headers.push((DEAD_LETTER.into(), dead_letter.encode_to_vec()));
    }
    KafkaRecord {
        key: Some(partition_key(&event).as_bytes().to_vec()),
        headers,
        value,
    }
}

/// Why a Kafka record cannot be read back as a log payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Switchyard record: {0}")]
pub struct BindingError(String);

/// Decodes what [`to_kafka`] made back into the log payload.
pub fn from_kafka(
    headers: &[(String, Vec<u8>)],
    value: Option<&[u8]>,
) -> Result<Bytes, BindingError> {
    if headers.iter().any(|(k, _)| k == RAW) {
        return Ok(Bytes::copy_from_slice(value.unwrap_or_default()));
    }
    let text = |bytes: &[u8]| {
        String::from_utf8(bytes.to_vec()).map_err(|_| BindingError("a header is not UTF-8".into()))
    };
    let mut event = CloudEvent::default();
    let mut stored = StoredEvent::default();
    let mut data_kind = None;
    let mut proto_type = String::new();
    for (key, bytes) in headers {
        match key.as_str() {
            "ce_specversion" => event.spec_version = text(bytes)?,
            "ce_id" => event.id = text(bytes)?,
            "ce_source" => event.source = text(bytes)?,
            "ce_type" => event.r#type = text(bytes)?,
            "ce_subject" => event.subject = Some(text(bytes)?),
            "ce_dataschema" => event.data_schema = Some(text(bytes)?),
            "ce_time" => {
                let ms = parse_rfc3339_ms(&text(bytes)?)
                    .ok_or_else(|| BindingError("ce_time is not an RFC 3339 time".into()))?;
                event.time = Some(prost_types::Timestamp {
                    seconds: ms.div_euclid(1000),
                    nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
                });
            }
            CONTENT_TYPE => event.data_content_type = Some(text(bytes)?),
            BUS => stored.bus = text(bytes)?,
            RULE => stored.rules.push(text(bytes)?),
            DATA_KIND => data_kind = Some(text(bytes)?),
            PROTO_TYPE => proto_type = text(bytes)?,
            DEAD_LETTER => {
                stored.dead_letter = Some(
                    DeadLetter::decode(bytes.as_slice())
                        .map_err(|e| BindingError(format!("switchyard_dead_letter: {e}")))?,
                );
            }
            other => {
                if let Some(name) = other.strip_prefix("ce_") {
                    event.extensions.insert(name.to_string(), text(bytes)?);
                }
            }
        }
    }
    if event.id.is_empty() || event.spec_version.is_empty() {
        return Err(BindingError("no ce_id / ce_specversion header".into()));
    }
    let value = value.map(<[u8]>::to_vec);
    event.data = match (data_kind.as_deref(), value) {
        (Some("binary"), value) => Some(Data::BinaryData(value.unwrap_or_default())),
        (Some("text"), value) => Some(Data::TextData(text(&value.unwrap_or_default())?)),
        (Some("proto"), value) => Some(Data::ProtoData(prost_types::Any {
            type_url: proto_type,
            value: value.unwrap_or_default(),
        })),
        // A record written by a plain Kafka producer: bytes as they are.
        (_, Some(value)) => Some(Data::BinaryData(value)),
        (_, None) => None,
    };
    stored.event = Some(event);
    Ok(stored.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> CloudEvent {
        CloudEvent {
            id: "o-1".into(),
            source: "/shop".into(),
            spec_version: "1.0".into(),
            r#type: "order.placed".into(),
            subject: Some("orders/1".into()),
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_000_000,
            }),
            data_content_type: Some("application/json".into()),
            data_schema: None,
            extensions: [
                ("partitionkey".to_string(), "customer-7".to_string()),
                ("traceparent".to_string(), "00-abc-def-01".to_string()),
            ]
            .into(),
            data: Some(Data::TextData("{\"total\":12}".into())),
        }
    }

    fn round_trip(stored: &StoredEvent) -> StoredEvent {
        let record = to_kafka(&stored.to_bytes(), false);
        let bytes = from_kafka(&record.headers, record.value.as_deref()).expect("decodes");
        StoredEvent::from_bytes(&bytes).expect("stored event")
    }

    #[test]
    fn stored_events_travel_in_binary_mode_and_come_back_whole() {
        let stored = StoredEvent {
            event: Some(event()),
            bus: "orders".into(),
            rules: vec!["a".into(), "b".into()],
            dead_letter: Some(DeadLetter {
                source_topic: "orders".into(),
                attempts: 3,
                last_reason: "boom".into(),
                ..DeadLetter::default()
            }),
        };
        let record = to_kafka(&stored.to_bytes(), false);
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header("ce_id").as_deref(), Some("o-1"));
        assert_eq!(header("ce_type").as_deref(), Some("order.placed"));
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        assert_eq!(
            header("ce_time").as_deref(),
            Some("2023-11-14T22:13:20.123Z")
        );
        assert_eq!(header("ce_partitionkey").as_deref(), Some("customer-7"));
        assert_eq!(record.key.as_deref(), Some(&b"customer-7"[..]));
        assert_eq!(record.value.as_deref(), Some(&b"{\"total\":12}"[..]));
        assert_eq!(round_trip(&stored), stored);

        for data in [
            None,
            Some(Data::BinaryData(vec![])),
            Some(Data::BinaryData(vec![0, 1, 255])),
            Some(Data::ProtoData(prost_types::Any {
                type_url: "type.googleapis.com/shop.Order".into(),
                value: vec![8, 1],
            })),
        ] {
            let stored = StoredEvent {
                event: Some(CloudEvent {
                    data,
                    subject: None,
                    time: None,
                    ..event()
                }),
                ..StoredEvent::default()
            };
            assert_eq!(round_trip(&stored), stored);
        }
    }

    #[test]
    fn other_payloads_travel_raw() {
        for payload in [&b"done:42"[..], &[][..]] {
            let record = to_kafka(payload, true);
            let back = from_kafka(&record.headers, record.value.as_deref()).expect("raw");
            assert_eq!(&back[..], payload);
        }
        let not_an_event = to_kafka(b"\xff\xfe not protobuf", false);
        assert!(not_an_event.headers.iter().any(|(k, _)| k == RAW));
    }

    #[test]
    fn records_from_plain_producers_without_attributes_are_refused() {
        let error = from_kafka(&[], Some(b"hello")).expect_err("no attributes");
        assert!(error.to_string().contains("ce_id"), "{error}");
    }
}
