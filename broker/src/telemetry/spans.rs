//! The broker's spans, named and attributed after the OpenTelemetry
//! messaging conventions (`{operation} {destination}`, `messaging.*`).
//! Every per-event span continues the event's *creation* context (its
//! `traceparent` extension), so a publish, its routing, every delivery
//! attempt, its settlement, the dead-letter write and a redrive all land in
//! the publisher's trace. Spans are built only while they are exported:
//! otherwise each function returns a disabled span at no cost.

use crate::model::CloudEvent;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Array, StringValue, Value};
use switchyard_sdk::telemetry::{context, exporting};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// `messaging.system` of every span.
const SYSTEM: &str = "switchyard";

/// The event's creation context, when spans of it should be built: spans
/// are exported and the event's trace is sampled (an event without a
/// context is left to the sampler). `None`: build no span — so a sampled-out
/// publisher costs the broker nothing per event.
fn event_trace(event: Option<&CloudEvent>) -> Option<opentelemetry::Context> {
    if !exporting() {
        return None;
    }
    let creation = event.map(context::from_event).unwrap_or_default();
    let sampled_out = {
        let span = creation.span();
        let span_context = span.span_context();
        span_context.is_valid() && !span_context.is_sampled()
    };
    (!sampled_out).then_some(creation)
}

/// Makes `span` a child of the event's creation context when it has one;
/// otherwise it stays a child of the current span. Links the current span
/// (the publish request) when the event belongs to another trace.
fn continue_event_trace(span: &Span, creation: opentelemetry::Context, link_current: bool) {
    let trace_id = {
        let creation_span = creation.span();
        let creation_context = creation_span.span_context();
        if !creation_context.is_valid() {
            return;
        }
        creation_context.trace_id()
    };
    if link_current {
        let current = Span::current().context();
        let current_span = current.span();
        let current_context = current_span.span_context();
        if current_context.is_valid() && current_context.trace_id() != trace_id {
            span.add_link(current_context.clone());
        }
    }
    let _ = span.set_parent(creation);
}

/// The server span of one `Publish` call, continuing the caller's context
/// from the request metadata.
pub fn publish_request(
    bus: &str,
    events: usize,
    caller: impl FnOnce() -> opentelemetry::Context,
) -> Span {
    if !exporting() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {bus}"),
        otel.kind = "server",
        messaging.system = SYSTEM,
        messaging.operation.type = "receive",
        messaging.destination.name = bus,
        messaging.batch.message_count = events,
    );
    let caller = caller();
    if caller.span().span_context().is_valid() {
        let _ = span.set_parent(caller);
    }
    span
}

/// Routing one event on `bus`; record the matched rules with
/// [`record_rules`].
pub fn route(bus: &str, event: &CloudEvent) -> Span {
    let Some(creation) = event_trace(Some(event)) else {
        return Span::none();
    };
    let span = tracing::info_span!(
        "route",
        otel.name = %format_args!("route {bus}"),
        otel.kind = "internal",
        messaging.system = SYSTEM,
        messaging.destination.name = bus,
        messaging.message.id = %event.id,
        cloudevents.event_source = %event.source,
        cloudevents.event_type = %event.r#type,
        cloudevents.event_subject = event.subject.as_deref().unwrap_or(""),
    );
    continue_event_trace(&span, creation, true);
    span
}

/// Records the names of the rules that matched (`switchyard.rules`).
pub fn record_rules(span: &Span, rules: &[String]) {
    if span.is_disabled() {
        return;
    }
    let names: Vec<StringValue> = rules.iter().map(|r| r.clone().into()).collect();
    span.set_attribute("switchyard.rules", Value::Array(Array::String(names)));
}

/// Durably appending one routed event to a topic partition (a child of its
/// route span); record the offset with [`record_offset`].
pub fn append(route: &Span, topic: &str, partition: u32) -> Span {
    if route.is_disabled() {
        return Span::none();
    }
    tracing::info_span!(
        parent: route,
        "append",
        otel.name = %format_args!("append {topic}"),
        otel.kind = "internal",
        messaging.system = SYSTEM,
        messaging.destination.name = topic,
        messaging.destination.partition.id = %partition,
    )
}

/// Records where an event was stored.
pub fn record_offset(span: &Span, offset: u64) {
    if !span.is_disabled() {
        span.set_attribute("switchyard.offset", offset as i64);
    }
}

/// One delivery attempt, open until the consumer settles it (or the ack
/// deadline passes); its context travels with the delivery so the
/// consumer's `process` span can link to it.
pub fn deliver(
    subscription: &str,
    topic: &str,
    partition: u32,
    offset: u64,
    attempt: u32,
    event: Option<&CloudEvent>,
) -> Span {
    let Some(creation) = event_trace(event) else {
        return Span::none();
    };
    let span = tracing::info_span!(
        parent: None,
        "deliver",
        otel.name = %format_args!("deliver {subscription}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        messaging.system = SYSTEM,
        messaging.operation.type = "send",
        messaging.operation.name = "deliver",
        messaging.destination.name = topic,
        messaging.destination.partition.id = %partition,
        messaging.consumer.group.name = subscription,
        messaging.message.id = event.map_or("", |e| e.id.as_str()),
        switchyard.offset = offset,
        switchyard.delivery.attempt = attempt,
        switchyard.outcome = tracing::field::Empty,
    );
    continue_event_trace(&span, creation, false);
    span
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy)]
pub enum Settlement<'a> {
    /// The consumer acked.
    Acked,
    /// The consumer nacked, with its reason.
    Nacked(&'a str),
    /// Not settled before the ack deadline, or the consumer left.
    TimedOut,
}

/// Ends a delivery span with its outcome; acks and nacks get a `settle`
/// child span (`ack {subscription}` / `nack {subscription}`).
pub fn settle(deliver: Span, subscription: &str, settlement: Settlement<'_>) {
    if deliver.is_disabled() {
        return;
    }
    let (outcome, failure) = match settlement {
        Settlement::Acked => ("acked", None),
        Settlement::Nacked(reason) => ("nacked", Some(reason)),
        Settlement::TimedOut => (
            "timed_out",
            Some("not settled before the ack deadline, or the consumer disconnected"),
        ),
    };
    deliver.record("switchyard.outcome", outcome);
    if let Some(reason) = failure {
        deliver.record("otel.status_code", "error");
        deliver.record("otel.status_description", reason);
    }
    if !matches!(settlement, Settlement::TimedOut) {
        let settle = tracing::info_span!(
            parent: &deliver,
            "settle",
            otel.name = %format_args!("{} {subscription}", if failure.is_some() { "nack" } else { "ack" }),
            otel.kind = "internal",
            messaging.system = SYSTEM,
            messaging.operation.type = "settle",
            messaging.consumer.group.name = subscription,
            switchyard.nack.reason = tracing::field::Empty,
        );
        if let Some(reason) = failure {
            settle.record("switchyard.nack.reason", reason);
        }
    }
}

/// Writing a failed event to its subscription's dead-letter topic.
pub fn dead_letter(
    subscription: &str,
    dead_letter_topic: &str,
    event: Option<&CloudEvent>,
    attempts: u32,
    reason: &str,
) -> Span {
    let Some(creation) = event_trace(event) else {
        return Span::none();
    };
    let span = tracing::info_span!(
        parent: None,
        "dead_letter",
        otel.name = %format_args!("dead_letter {dead_letter_topic}"),
        otel.kind = "producer",
        messaging.system = SYSTEM,
        messaging.operation.type = "send",
        messaging.operation.name = "dead_letter",
        messaging.destination.name = dead_letter_topic,
        messaging.consumer.group.name = subscription,
        messaging.message.id = event.map_or("", |e| e.id.as_str()),
        switchyard.delivery.attempts = attempts,
        switchyard.dead_letter.reason = reason,
    );
    continue_event_trace(&span, creation, false);
    span
}

/// Sending a dead letter back to its subscription.
pub fn redrive(subscription: &str, event: Option<&CloudEvent>) -> Span {
    let Some(creation) = event_trace(event) else {
        return Span::none();
    };
    let span = tracing::info_span!(
        parent: None,
        "redrive",
        otel.name = %format_args!("redrive {subscription}"),
        otel.kind = "producer",
        messaging.system = SYSTEM,
        messaging.operation.type = "send",
        messaging.operation.name = "redrive",
        messaging.consumer.group.name = subscription,
        messaging.message.id = event.map_or("", |e| e.id.as_str()),
    );
    continue_event_trace(&span, creation, false);
    span
}
