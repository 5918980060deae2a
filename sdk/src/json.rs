//! The CloudEvents JSON event format (structured mode): how the CLI reads
//! events from stdin and prints deliveries. JSON data appears as `data`,
//! text as a `data` string, binary as `data_base64`.

use crate::SdkError;
use serde_json::{Map, Value};
use switchyard_proto::v1::CloudEvent;
use switchyard_proto::v1::cloud_event::Data;

/// Renders an event in the CloudEvents JSON format.
pub fn to_json(event: &CloudEvent) -> Value {
    let mut out = Map::new();
    out.insert("specversion".into(), event.spec_version.clone().into());
    out.insert("id".into(), event.id.clone().into());
    out.insert("source".into(), event.source.clone().into());
    out.insert("type".into(), event.r#type.clone().into());
    if let Some(subject) = &event.subject {
        out.insert("subject".into(), subject.clone().into());
    }
    if let Some(time) = &event.time {
        out.insert("time".into(), time.to_string().into());
    }
    if let Some(content_type) = &event.data_content_type {
        out.insert("datacontenttype".into(), content_type.clone().into());
    }
    if let Some(schema) = &event.data_schema {
        out.insert("dataschema".into(), schema.clone().into());
    }
    let mut extensions: Vec<_> = event.extensions.iter().collect();
    extensions.sort();
    for (name, value) in extensions {
        out.insert(name.clone(), value.clone().into());
    }
    let is_json = event
        .data_content_type
        .as_deref()
        .is_none_or(|ct| ct.contains("json"));
    match &event.data {
        Some(Data::BinaryData(bytes)) => match serde_json::from_slice::<Value>(bytes) {
            Ok(value) if is_json => {
                out.insert("data".into(), value);
            }
            _ => {
                out.insert("data_base64".into(), base64_encode(bytes).into());
            }
        },
        Some(Data::TextData(text)) => {
            let value = if is_json {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
            } else {
                Value::String(text.clone())
            };
            out.insert("data".into(), value);
        }
        Some(Data::ProtoData(any)) => {
            out.insert("data_base64".into(), base64_encode(&any.value).into());
        }
        None => {}
    }
    Value::Object(out)
}

/// Parses an event in the CloudEvents JSON format. Missing `specversion`
/// defaults to 1.0; validation is the broker's job.
pub fn from_json(value: &Value) -> Result<CloudEvent, SdkError> {
    let Value::Object(object) = value else {
        return Err(SdkError::Data("a CloudEvent must be a JSON object".into()));
    };
    let text = |name: &str| -> Result<Option<String>, SdkError> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(SdkError::Data(format!(
                "attribute '{name}' must be a string, got {other}"
            ))),
        }
    };
    let mut event = CloudEvent {
        id: text("id")?.unwrap_or_default(),
        source: text("source")?.unwrap_or_default(),
        spec_version: text("specversion")?.unwrap_or_else(|| "1.0".into()),
        r#type: text("type")?.unwrap_or_default(),
        subject: text("subject")?,
        data_content_type: text("datacontenttype")?,
        data_schema: text("dataschema")?,
        ..CloudEvent::default()
    };
    if let Some(time) = text("time")? {
        event.time = Some(time.parse().map_err(|e| {
            SdkError::Data(format!(
                "attribute 'time' is not an RFC 3339 timestamp: {e}"
            ))
        })?);
    }
    for (name, value) in object {
        if switchyard_proto::CORE_ATTRIBUTES.contains(&name.as_str()) {
            continue;
        }
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => value.to_string(),
            other => {
                return Err(SdkError::Data(format!(
                    "extension '{name}' must be a string, number or boolean, got {other}"
                )));
            }
        };
        event.extensions.insert(name.clone(), value);
    }
    if let Some(encoded) = text("data_base64")? {
        event.data = Some(Data::BinaryData(base64_decode(&encoded).ok_or_else(
            || SdkError::Data("data_base64 is not valid base64".into()),
        )?));
    } else if let Some(data) = object.get("data") {
        match data {
            Value::String(s)
                if event
                    .data_content_type
                    .as_deref()
                    .is_some_and(|ct| !ct.contains("json")) =>
            {
                event.data = Some(Data::TextData(s.clone()));
            }
            other => {
                event
                    .data_content_type
                    .get_or_insert_with(|| "application/json".into());
                event.data = Some(Data::BinaryData(other.to_string().into_bytes()));
            }
        }
    }
    Ok(event)
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips() {
        let input = json!({
            "specversion": "1.0", "id": "1", "source": "/s", "type": "t",
            "subject": "x", "partitionkey": "k", "data": {"a": [1, 2]}
        });
        let event = from_json(&input).expect("parses");
        assert_eq!(
            event.extensions.get("partitionkey").map(String::as_str),
            Some("k")
        );
        assert_eq!(event.data_content_type.as_deref(), Some("application/json"));
        assert_eq!(to_json(&event)["data"], json!({"a": [1, 2]}));
        assert_eq!(to_json(&event)["partitionkey"], json!("k"));
    }

    #[test]
    fn binary_data_uses_base64() {
        for bytes in [
            vec![],
            vec![0],
            vec![0, 255],
            vec![1, 2, 3],
            vec![250, 251, 252, 253],
        ] {
            let event = CloudEvent {
                data_content_type: Some("application/octet-stream".into()),
                data: Some(Data::BinaryData(bytes.clone())),
                ..CloudEvent::default()
            };
            let rendered = to_json(&event);
            let back = from_json(&rendered).expect("parses");
            assert_eq!(back.data, Some(Data::BinaryData(bytes)));
        }
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
    }

    #[test]
    fn wrong_types_are_named() {
        let err = from_json(&json!({"id": 5})).expect_err("id must be a string");
        assert!(err.to_string().contains("'id'"), "{err}");
    }
}
