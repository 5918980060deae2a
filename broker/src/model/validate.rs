//! Validation of published events against the CloudEvents 1.0 rules and the
//! broker's size limits.

use super::{CloudEvent, EventData, SPEC_VERSION};
use prost::Message;

/// Size and shape limits applied to every published event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// Largest `data` accepted, in bytes.
    pub max_data_bytes: usize,
    /// Most extension attributes on one event.
    pub max_extensions: usize,
    /// Longest attribute value accepted (id, source, type, extensions...).
    pub max_attribute_bytes: usize,
}

/// Why one event was refused. Always an INVALID_ARGUMENT for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EventError {
    /// The offending field, e.g. `source` or `data`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl EventError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Checks one event: required attributes present, spec version 1.0,
/// extension names legal, sizes within `limits`, JSON data parseable when
/// the content type says JSON.
pub fn validate_event(event: &CloudEvent, limits: &EventLimits) -> Result<(), EventError> {
    for (field, value) in [
        ("id", &event.id),
        ("source", &event.source),
        ("type", &event.r#type),
    ] {
        if value.is_empty() {
            return Err(EventError::new(
                field,
                format!("event attribute '{field}' is required and must not be empty"),
            ));
        }
        check_length(field, value, limits)?;
    }
    if event.spec_version != SPEC_VERSION {
        return Err(EventError::new(
            "specversion",
            format!(
                "event attribute 'specversion' must be \"{SPEC_VERSION}\", got {:?}",
                event.spec_version
            ),
        ));
    }
    for (field, value) in [
        ("subject", &event.subject),
        ("datacontenttype", &event.data_content_type),
        ("dataschema", &event.data_schema),
    ] {
        if let Some(value) = value {
            check_length(field, value, limits)?;
        }
    }
    check_extensions(event, limits)?;
    check_data(event, limits)
}

fn check_length(field: &str, value: &str, limits: &EventLimits) -> Result<(), EventError> {
    if value.len() > limits.max_attribute_bytes {
        return Err(EventError::new(
            field,
            format!(
                "event attribute '{field}' is {} bytes, over the limit of {} bytes",
                value.len(),
                limits.max_attribute_bytes
            ),
        ));
    }
    Ok(())
}

fn check_extensions(event: &CloudEvent, limits: &EventLimits) -> Result<(), EventError> {
    if event.extensions.len() > limits.max_extensions {
        return Err(EventError::new(
            "extensions",
            format!(
                "event has {} extension attributes, over the limit of {}",
                event.extensions.len(),
                limits.max_extensions
            ),
        ));
    }
    for (name, value) in &event.extensions {
        let legal = !name.is_empty()
            && name.len() <= 20
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !legal {
            return Err(EventError::new(
                "extensions",
                format!(
                    "extension attribute name {name:?} is invalid: use 1 to 20 characters of a-z and 0-9 (CloudEvents 1.0)"
                ),
            ));
        }
        if switchyard_proto::CORE_ATTRIBUTES.contains(&name.as_str()) {
            return Err(EventError::new(
                "extensions",
                format!(
                    "extension attribute name {name:?} is a CloudEvents core attribute; set the field itself instead"
                ),
            ));
        }
        check_length(&format!("extensions.{name}"), value, limits)?;
    }
    Ok(())
}

fn check_data(event: &CloudEvent, limits: &EventLimits) -> Result<(), EventError> {
    let size = match &event.data {
        None => 0,
        Some(EventData::BinaryData(bytes)) => bytes.len(),
        Some(EventData::TextData(text)) => text.len(),
        Some(EventData::ProtoData(any)) => any.encoded_len(),
    };
    if size > limits.max_data_bytes {
        return Err(EventError::new(
            "data",
            format!(
                "event data is {size} bytes, over the limit of {} bytes; store large payloads elsewhere and publish a reference",
                limits.max_data_bytes
            ),
        ));
    }
    if is_json_content_type(event.data_content_type.as_deref()) {
        let raw: &[u8] = match &event.data {
            Some(EventData::BinaryData(bytes)) => bytes,
            Some(EventData::TextData(text)) => text.as_bytes(),
            _ => return Ok(()),
        };
        if let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(raw) {
            return Err(EventError::new(
                "data",
                format!("datacontenttype says JSON but data is not valid JSON: {err}"),
            ));
        }
    }
    Ok(())
}

/// True for `application/json`, `text/json` and any `+json` media type,
/// ignoring parameters such as `; charset=utf-8`.
pub(crate) fn is_json_content_type(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: EventLimits = EventLimits {
        max_data_bytes: 16,
        max_extensions: 2,
        max_attribute_bytes: 32,
    };

    fn valid() -> CloudEvent {
        CloudEvent {
            id: "1".into(),
            source: "/test".into(),
            spec_version: "1.0".into(),
            r#type: "t".into(),
            ..Default::default()
        }
    }

    fn field_of(event: CloudEvent) -> String {
        validate_event(&event, &LIMITS).expect_err("invalid").field
    }

    #[test]
    fn accepts_a_minimal_event() {
        assert_eq!(validate_event(&valid(), &LIMITS), Ok(()));
    }

    #[test]
    fn names_the_missing_required_attribute() {
        assert_eq!(
            field_of(CloudEvent {
                id: "".into(),
                ..valid()
            }),
            "id"
        );
        assert_eq!(
            field_of(CloudEvent {
                source: "".into(),
                ..valid()
            }),
            "source"
        );
        assert_eq!(
            field_of(CloudEvent {
                r#type: "".into(),
                ..valid()
            }),
            "type"
        );
        assert_eq!(
            field_of(CloudEvent {
                spec_version: "0.3".into(),
                ..valid()
            }),
            "specversion"
        );
    }

    #[test]
    fn refuses_oversized_data_with_size_and_limit() {
        let event = CloudEvent {
            data: Some(EventData::BinaryData(vec![0; 17])),
            ..valid()
        };
        let err = validate_event(&event, &LIMITS).expect_err("too big");
        assert_eq!(err.field, "data");
        assert!(err.message.contains("17 bytes"), "{}", err.message);
        assert!(err.message.contains("16 bytes"), "{}", err.message);
    }

    #[test]
    fn refuses_bad_json_when_content_type_is_json() {
        let event = CloudEvent {
            data_content_type: Some("application/json; charset=utf-8".into()),
            data: Some(EventData::TextData("{nope".into())),
            ..valid()
        };
        assert_eq!(field_of(event), "data");
    }

    #[test]
    fn refuses_bad_extension_names() {
        let mut event = valid();
        event.extensions.insert("Bad-Name".into(), "x".into());
        assert_eq!(field_of(event), "extensions");
        let mut event = valid();
        event.extensions.insert("source".into(), "x".into());
        assert_eq!(field_of(event), "extensions");
    }
}
