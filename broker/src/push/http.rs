//! One push as an HTTP request: the CloudEvents HTTP binding (binary or
//! structured mode), W3C `traceparent`, a Standard Webhooks signature, and
//! what the answer means for the delivery.

use crate::config::{PushConfig, PushMode};
use crate::model::{CloudEvent, EventData};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use sha2::Sha256;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// Signs request bodies with a subscription's secret (Standard Webhooks:
/// HMAC-SHA256 over `{id}.{timestamp}.{body}`).
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

impl Signer {
    /// A signer from a `whsec_<base64>` secret; the error says what is
    /// wrong without repeating the secret.
    pub fn new(secret: &str) -> Result<Signer, String> {
        PushConfig::signing_key(secret).map(|key| Signer { key })
    }

    /// The `webhook-signature` value for one request.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new(); // HMAC takes keys of any length
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

/// The headers and body of one push.
#[derive(Debug)]
pub struct PushRequest {
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Vec<u8>,
}

/// Builds the request for `event`. `trace` holds the W3C context to send
/// (the broker's `deliver` span, else the event's creation context).
pub fn build_request(
    event: &CloudEvent,
    mode: PushMode,
    trace: &HashMap<String, String>,
    signer: Option<&Signer>,
    attempt: u32,
) -> PushRequest {
    let mut headers = HeaderMap::new();
    let body = match mode {
        PushMode::Binary => {
            let mut put = |name: &str, value: &str| {
                insert(&mut headers, &format!("ce-{name}"), &percent_encode(value));
            };
            put("specversion", &event.spec_version);
            put("id", &event.id);
            put("source", &event.source);
            put("type", &event.r#type);
            if let Some(subject) = &event.subject {
                put("subject", subject);
            }
            if let Some(time) = &event.time {
                put("time", &time.to_string());
            }
            if let Some(schema) = &event.data_schema {
                put("dataschema", schema);
            }
            for (name, value) in &event.extensions {
                put(name, value);
            }
            let (content_type, body) = binary_body(event);
            if let Some(content_type) = content_type {
                insert(&mut headers, CONTENT_TYPE.as_str(), &content_type);
            }
            body
        }
        PushMode::Structured => {
            insert(
                &mut headers,
                CONTENT_TYPE.as_str(),
                "application/cloudevents+json; charset=utf-8",
            );
            switchyard_sdk::json::to_json(event)
                .to_string()
                .into_bytes()
        }
    };
    let traceparent = trace
        .get("traceparent")
        .or_else(|| event.extensions.get("traceparent"));
    if let Some(traceparent) = traceparent {
        insert(&mut headers, "traceparent", traceparent);
        let tracestate = trace
            .get("tracestate")
            .or_else(|| event.extensions.get("tracestate"));
        if let Some(tracestate) = tracestate.filter(|state| !state.is_empty()) {
            insert(&mut headers, "tracestate", tracestate);
        }
    }
    insert(&mut headers, "switchyard-attempt", &attempt.to_string());
    if let Some(signer) = signer {
        sign(&mut headers, signer, &webhook_id([event]), &body);
    }
    PushRequest { headers, body }
}

/// The `webhook-id` of a request carrying `events`: unique per event —
/// from each one's `(source, id)`, its identity, not the id alone — and the
/// same for every retry of the same request.
fn webhook_id<'a>(events: impl IntoIterator<Item = &'a CloudEvent>) -> String {
    use sha2::Digest;
    let mut hash = Sha256::new();
    for event in events {
        for part in [&event.source, &event.id] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// Builds one request for several events: a CloudEvents JSON batch
/// (`application/cloudevents-batch+json`), signed as a whole. The trace
/// context is the first event's.
pub fn build_batch_request(
    events: &[CloudEvent],
    trace: &HashMap<String, String>,
    signer: Option<&Signer>,
) -> PushRequest {
    let mut headers = HeaderMap::new();
    insert(
        &mut headers,
        CONTENT_TYPE.as_str(),
        "application/cloudevents-batch+json; charset=utf-8",
    );
    let body = serde_json::Value::Array(events.iter().map(switchyard_sdk::json::to_json).collect())
        .to_string()
        .into_bytes();
    if let Some(traceparent) = trace.get("traceparent") {
        insert(&mut headers, "traceparent", traceparent);
    }
    if let Some(signer) = signer {
        sign(&mut headers, signer, &webhook_id(events), &body);
    }
    PushRequest { headers, body }
}

/// The events a 2xx batch answer reports as failed, by event id, with the
/// reason: a body `{"failed": [{"id": "...", "reason": "..."}, "id", ...]}`.
/// Anything else (an empty body, other JSON) means every event succeeded.
pub fn batch_failures(body: &[u8]) -> HashMap<String, String> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return HashMap::new();
    };
    let Some(failed) = value.get("failed").and_then(|f| f.as_array()) else {
        return HashMap::new();
    };
    failed
        .iter()
        .filter_map(|entry| match entry {
            serde_json::Value::String(id) => {
                Some((id.clone(), "the endpoint reported it failed".into()))
            }
            serde_json::Value::Object(fields) => {
                let id = fields.get("id")?.as_str()?.to_string();
                let reason = fields
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or("the endpoint reported it failed");
                Some((id, reason.to_string()))
            }
            _ => None,
        })
        .collect()
}

/// Sets the Standard Webhooks headers for `body`.
fn sign(headers: &mut HeaderMap, signer: &Signer, id: &str, body: &[u8]) {
    let timestamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    insert(headers, "webhook-id", id);
    insert(headers, "webhook-timestamp", &timestamp.to_string());
    insert(
        headers,
        "webhook-signature",
        &signer.sign(id, timestamp, body),
    );
}

/// The content type and body of binary mode: the declared
/// `datacontenttype`, else what the data is; none for an event without
/// data that declares none.
fn binary_body(event: &CloudEvent) -> (Option<String>, Vec<u8>) {
    let declared = event.data_content_type.clone();
    match &event.data {
        Some(EventData::BinaryData(bytes)) => (
            Some(declared.unwrap_or_else(|| "application/octet-stream".into())),
            bytes.to_vec(),
        ),
        Some(EventData::TextData(text)) => (
            Some(declared.unwrap_or_else(|| "text/plain; charset=utf-8".into())),
            text.clone().into_bytes(),
        ),
        Some(EventData::ProtoData(any)) => (
            Some(declared.unwrap_or_else(|| "application/protobuf".into())),
            any.value.clone(),
        ),
        None => (declared, Vec::new()),
    }
}

/// A `ce-*` header value as the CloudEvents HTTP binding (§3.1.3.2) wants
/// it: space, `"`, `%` and everything outside printable ASCII
/// percent-encoded (UTF-8 bytes), the rest as is.
fn percent_encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if (0x21..0x7f).contains(&byte) && byte != b'"' && byte != b'%' {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Sets a header; a name or value HTTP cannot carry is skipped (values
/// here are the broker's own or already encoded).
fn insert(headers: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
        HeaderValue::from_str(value),
    ) {
        headers.insert(name, value);
    }
}

/// What an endpoint's answer means for the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx: acked.
    Delivered,
    /// 408, 429, 5xx, a timeout or a connection error: try again, after
    /// `after` when the endpoint said so (`Retry-After`).
    Retry {
        /// Why.
        reason: String,
        /// The endpoint's `Retry-After`.
        after: Option<Duration>,
    },
    /// Any other status (4xx, 3xx): retrying the same request cannot help.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// Classifies a response status and its `Retry-After` header.
pub fn classify(status: reqwest::StatusCode, headers: &HeaderMap) -> Answer {
    if status.is_success() {
        return Answer::Delivered;
    }
    let reason = format!("endpoint answered {status}");
    if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        let after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        Answer::Retry { reason, after }
    } else {
        Answer::Rejected { reason }
    }
}

/// A `Retry-After` value: seconds, or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> CloudEvent {
        let mut event = switchyard_sdk::Event::new("/shop", "order.placed")
            .id("e1")
            .subject("order-1")
            .partition_key("order-1")
            .json(&serde_json::json!({"total": 5}))
            .expect("json");
        event
            .extensions
            .insert("note".into(), "ünïcode \"q\"".into());
        event
    }

    #[test]
    fn binary_mode_puts_attributes_in_ce_headers_and_data_in_the_body() {
        let trace: HashMap<String, String> = [(
            "traceparent".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        )]
        .into();
        let request = build_request(&event(), PushMode::Binary, &trace, None, 2);
        let header = |name: &str| request.headers[name].to_str().expect("ascii").to_string();
        assert_eq!(header("ce-id"), "e1");
        assert_eq!(header("ce-source"), "/shop");
        assert_eq!(header("ce-type"), "order.placed");
        assert_eq!(header("ce-specversion"), "1.0");
        assert_eq!(header("ce-subject"), "order-1");
        assert_eq!(header("ce-partitionkey"), "order-1");
        assert_eq!(header("ce-note"), "%C3%BCn%C3%AFcode%20%22q%22");
        assert_eq!(header("content-type"), "application/json");
        assert_eq!(header("switchyard-attempt"), "2");
        assert_eq!(header("traceparent"), trace["traceparent"]);
        assert_eq!(request.body, br#"{"total":5}"#);
        assert!(!request.headers.contains_key("webhook-signature"));
    }

    #[test]
    fn ce_values_are_percent_encoded_as_the_http_binding_says() {
        let mut awkward = event();
        awkward.subject = Some("  two leading, 100% \"quoted\" ünï".into());
        awkward.extensions.insert("empty".into(), String::new());
        let request = build_request(&awkward, PushMode::Binary, &HashMap::new(), None, 1);
        let header = |name: &str| request.headers[name].to_str().expect("ascii").to_string();
        assert_eq!(
            header("ce-subject"),
            "%20%20two%20leading,%20100%25%20%22quoted%22%20%C3%BCn%C3%AF"
        );
        assert_eq!(header("ce-empty"), "");
        // Decoding gives back exactly what was sent.
        let decoded: Vec<u8> = {
            let text = header("ce-subject");
            let mut bytes = Vec::new();
            let raw = text.as_bytes();
            let mut i = 0;
            while i < raw.len() {
                if raw[i] == b'%' {
                    let hex = std::str::from_utf8(&raw[i + 1..i + 3]).expect("hex");
                    bytes.push(u8::from_str_radix(hex, 16).expect("hex"));
                    i += 3;
                } else {
                    bytes.push(raw[i]);
                    i += 1;
                }
            }
            bytes
        };
        assert_eq!(
            String::from_utf8(decoded).expect("utf-8"),
            awkward.subject.clone().expect("subject")
        );
    }

    #[test]
    fn no_empty_tracestate_and_no_content_type_without_data() {
        let mut bare = event();
        bare.data = None;
        bare.data_content_type = None;
        let trace: HashMap<String, String> = [
            (
                "traceparent".to_string(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
            ),
            ("tracestate".to_string(), String::new()),
        ]
        .into();
        let request = build_request(&bare, PushMode::Binary, &trace, None, 1);
        assert!(!request.headers.contains_key("tracestate"));
        assert!(!request.headers.contains_key("content-type"));
        assert!(request.body.is_empty());
    }

    #[test]
    fn webhook_ids_differ_for_one_id_from_two_sources_and_hold_across_retries() {
        let secret = format!("whsec_{}", BASE64.encode([7u8; 32]));
        let signer = Signer::new(&secret).expect("secret");
        let id_of = |event: &CloudEvent| {
            let request = build_request(event, PushMode::Binary, &HashMap::new(), Some(&signer), 1);
            request.headers["webhook-id"]
                .to_str()
                .expect("ascii")
                .to_string()
        };
        let first = event();
        let mut other_source = event();
        other_source.source = "/warehouse".into();
        assert_ne!(id_of(&first), id_of(&other_source));
        assert_eq!(id_of(&first), id_of(&event()), "stable across retries");
        let batch = |events: &[CloudEvent]| {
            build_batch_request(events, &HashMap::new(), Some(&signer)).headers["webhook-id"]
                .to_str()
                .expect("ascii")
                .to_string()
        };
        assert_ne!(
            batch(std::slice::from_ref(&first)),
            batch(std::slice::from_ref(&other_source))
        );
    }

    #[test]
    fn structured_mode_sends_the_event_as_json() {
        let request = build_request(&event(), PushMode::Structured, &HashMap::new(), None, 1);
        assert_eq!(
            request.headers["content-type"],
            "application/cloudevents+json; charset=utf-8"
        );
        let body: serde_json::Value = serde_json::from_slice(&request.body).expect("json");
        assert_eq!(body["id"], "e1");
        assert_eq!(body["data"]["total"], 5);
        assert!(!request.headers.contains_key("ce-id"));
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        let secret = format!("whsec_{}", BASE64.encode([7u8; 32]));
        let signer = Signer::new(&secret).expect("secret");
        let request = build_request(
            &event(),
            PushMode::Binary,
            &HashMap::new(),
            Some(&signer),
            1,
        );
        let verifier = standardwebhooks::Webhook::new(&secret).expect("verifier");
        verifier
            .verify(&request.body, &request.headers)
            .expect("a Standard Webhooks verifier accepts the signature");
        assert!(Signer::new("secret").is_err());
        assert!(Signer::new("whsec_???").is_err());
        assert!(Signer::new(&format!("whsec_{}", BASE64.encode([1u8; 4]))).is_err());
        assert_eq!(format!("{signer:?}"), "Signer(<redacted>)");
    }

    #[test]
    fn batches_are_json_arrays_and_answers_may_name_failed_events() {
        let mut second = event();
        second.id = "e2".into();
        let request = build_batch_request(&[event(), second], &HashMap::new(), None);
        assert_eq!(
            request.headers["content-type"],
            "application/cloudevents-batch+json; charset=utf-8"
        );
        let body: serde_json::Value = serde_json::from_slice(&request.body).expect("json");
        assert_eq!(body[0]["id"], "e1");
        assert_eq!(body[1]["id"], "e2");
        let failed = batch_failures(br#"{"failed": [{"id": "e2", "reason": "no stock"}, "e9"]}"#);
        assert_eq!(failed["e2"], "no stock");
        assert!(failed.contains_key("e9"));
        assert!(batch_failures(b"").is_empty());
        assert!(batch_failures(b"ok").is_empty());
    }

    #[test]
    fn answers_decide_retry_or_rejection() {
        let none = HeaderMap::new();
        assert_eq!(
            classify(reqwest::StatusCode::NO_CONTENT, &none),
            Answer::Delivered
        );
        let mut later = HeaderMap::new();
        later.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(
            classify(reqwest::StatusCode::SERVICE_UNAVAILABLE, &later),
            Answer::Retry {
                reason: "endpoint answered 503 Service Unavailable".into(),
                after: Some(Duration::from_secs(7))
            }
        );
        assert!(matches!(
            classify(reqwest::StatusCode::TOO_MANY_REQUESTS, &none),
            Answer::Retry { after: None, .. }
        ));
        assert!(matches!(
            classify(reqwest::StatusCode::BAD_REQUEST, &none),
            Answer::Rejected { .. }
        ));
        assert!(matches!(
            classify(reqwest::StatusCode::MOVED_PERMANENTLY, &none),
            Answer::Rejected { .. }
        ));
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let after = retry_after(&date).expect("http date");
        assert!(after > Duration::from_secs(100) && after <= Duration::from_secs(120));
    }
}
