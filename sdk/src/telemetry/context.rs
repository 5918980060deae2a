//! W3C trace context (`traceparent` / `tracestate`) where Switchyard carries
//! it: the event's extension attributes hold its *creation* context (set once
//! by the publisher, never rewritten by the broker), gRPC metadata holds the
//! context of the call, and a delivery holds the context of the broker's
//! `deliver` span for that attempt.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use switchyard_proto::v1::CloudEvent;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

/// Extension attribute (and header) holding the W3C trace parent.
pub const TRACEPARENT: &str = "traceparent";
/// Extension attribute (and header) holding the W3C trace state.
pub const TRACESTATE: &str = "tracestate";

/// The event's creation context; an empty context when the event has no
/// valid `traceparent`.
pub fn from_event(event: &CloudEvent) -> Context {
    TraceContextPropagator::new().extract(&event.extensions)
}

/// Records `cx` as the event's creation context, unless the event already
/// has one (a creation context is set once, by whoever created the event).
/// Returns whether it was set.
pub fn set_creation_context(event: &mut CloudEvent, cx: &Context) -> bool {
    if event.extensions.contains_key(TRACEPARENT) || !cx.span().span_context().is_valid() {
        return false;
    }
    TraceContextPropagator::new().inject_context(cx, &mut event.extensions);
    true
}

/// `cx` as `traceparent` / `tracestate` entries (empty when `cx` has no span).
pub fn to_map(cx: &Context) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(cx, &mut map);
    }
    map
}

/// The context in `traceparent` / `tracestate` entries.
pub fn from_map(map: &HashMap<String, String>) -> Context {
    TraceContextPropagator::new().extract(map)
}

/// Puts `cx` into outgoing gRPC metadata.
pub fn inject_metadata(cx: &Context, metadata: &mut MetadataMap) {
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(cx, &mut MetadataInjector(metadata));
    }
}

/// The caller's context from incoming gRPC metadata.
pub fn from_metadata(metadata: &MetadataMap) -> Context {
    TraceContextPropagator::new().extract(&MetadataExtractor(metadata))
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    fn sampled_context() -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("trace id"),
            SpanId::from_hex("00f067aa0ba902b7").expect("span id"),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("vendor", "x")]).expect("state"),
        ))
    }

    #[test]
    fn creation_context_is_set_once() {
        let mut event = CloudEvent::default();
        assert!(!from_event(&event).span().span_context().is_valid());
        assert!(set_creation_context(&mut event, &sampled_context()));
        assert_eq!(
            event.extensions[TRACEPARENT],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(event.extensions[TRACESTATE], "vendor=x");
        let other = Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("11111111111111111111111111111111").expect("trace id"),
            SpanId::from_hex("2222222222222222").expect("span id"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ));
        assert!(!set_creation_context(&mut event, &other), "never rewritten");
        let back = from_event(&event);
        assert_eq!(
            back.span().span_context().trace_id(),
            sampled_context().span().span_context().trace_id()
        );
    }

    #[test]
    fn metadata_and_maps_round_trip() {
        let mut metadata = MetadataMap::new();
        inject_metadata(&sampled_context(), &mut metadata);
        let back = from_metadata(&metadata);
        assert_eq!(
            back.span().span_context().span_id(),
            SpanId::from_hex("00f067aa0ba902b7").expect("span id")
        );
        let map = to_map(&sampled_context());
        assert_eq!(
            from_map(&map).span().span_context(),
            back.span().span_context()
        );
        assert!(to_map(&Context::new()).is_empty(), "no span, no entries");
    }
}
