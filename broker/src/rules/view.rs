//! What a pattern sees of a CloudEvent: its attributes at the top level
//! (`id`, `source`, `specversion`, `type`, `subject`, `time`,
//! `datacontenttype`, `dataschema`, and every extension attribute) and its
//! payload under `data` when the payload is JSON.

use crate::model::{CloudEvent, EventData};
use serde_json::{Map, Value};

/// Builds the JSON view of an event that patterns match against. `data`
/// appears when the content type is JSON (or unset) and the payload parses
/// as JSON; text payloads of other types appear as a string.
pub fn event_view(event: &CloudEvent) -> Value {
    event_view_with(event, None)
}

/// Like [`event_view`], with `decoded` (e.g. a protobuf payload decoded by
/// its registered schema) as `data` when given.
pub fn event_view_with(event: &CloudEvent, decoded: Option<Value>) -> Value {
    let mut view = Map::new();
    for (name, value) in &event.extensions {
        view.insert(name.clone(), Value::String(value.clone()));
    }
    let mut put = |name: &str, value: &str| {
        view.insert(name.to_string(), Value::String(value.to_string()));
    };
    put("id", &event.id);
    put("source", &event.source);
    put("specversion", &event.spec_version);
    put("type", &event.r#type);
    if let Some(subject) = &event.subject {
        put("subject", subject);
    }
    if let Some(time) = &event.time {
        put("time", &time.to_string());
    }
    if let Some(content_type) = &event.data_content_type {
        put("datacontenttype", content_type);
    }
    if let Some(schema) = &event.data_schema {
        put("dataschema", schema);
    }
    if let Some(data) = decoded.or_else(|| data_view(event)) {
        view.insert("data".to_string(), data);
    }
    Value::Object(view)
}

fn data_view(event: &CloudEvent) -> Option<Value> {
    let content_type = event.data_content_type.as_deref();
    let may_be_json = content_type.is_none() || crate::model::is_json_content_type(content_type);
    match event.data.as_ref()? {
        EventData::BinaryData(bytes) if may_be_json => serde_json::from_slice(bytes).ok(),
        EventData::TextData(text) if may_be_json => {
            Some(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())))
        }
        EventData::TextData(text) => Some(Value::String(text.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn attributes_extensions_and_json_data_are_visible() {
        let mut event = CloudEvent {
            id: "1".into(),
            source: "/orders".into(),
            spec_version: "1.0".into(),
            r#type: "order.placed".into(),
            data_content_type: Some("application/json".into()),
            data: Some(EventData::BinaryData(br#"{"total": 12}"#.to_vec())),
            ..Default::default()
        };
        event.extensions.insert("partitionkey".into(), "o-1".into());
        let view = event_view(&event);
        assert_eq!(view["type"], json!("order.placed"));
        assert_eq!(view["partitionkey"], json!("o-1"));
        assert_eq!(view["data"]["total"], json!(12));
        assert!(view.get("subject").is_none());
    }

    #[test]
    fn non_json_binary_data_is_not_visible() {
        let event = CloudEvent {
            data_content_type: Some("application/protobuf".into()),
            data: Some(EventData::BinaryData(vec![1, 2, 3])),
            ..Default::default()
        };
        assert!(event_view(&event).get("data").is_none());
    }
}
