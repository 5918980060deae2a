//! JSON log lines on stderr: `timestamp`, `level`, `target`, `fields`, the
//! current `span` (name and fields) and, inside an exported span, its
//! `trace_id` and `span_id` so a log line leads to its trace in Jaeger.

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use std::io::Write;
use std::sync::OnceLock;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The JSON log layer.
pub(super) fn layer() -> JsonLogs {
    JsonLogs::default()
}

/// Writes one JSON object per event to stderr.
#[derive(Default)]
pub(super) struct JsonLogs {
    /// The dispatcher it is part of, to read spans' OpenTelemetry context.
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
}

/// A span's fields, kept in its extensions.
struct SpanFields(Map<String, Value>);

/// Collects fields into a JSON map.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

impl<S> tracing_subscriber::Layer<S> for JsonLogs
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, dispatch: &tracing::Dispatch) {
        let _ = self.dispatch.set(dispatch.downgrade());
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut JsonVisitor(&mut fields.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), timestamp().into());
        line.insert("level".into(), metadata.level().as_str().into());
        line.insert("target".into(), metadata.target().into());
        line.insert("fields".into(), Value::Object(fields));
        if let Some(span) = ctx.event_span(event) {
            let mut current = span
                .extensions()
                .get::<SpanFields>()
                .map(|f| f.0.clone())
                .unwrap_or_default();
            current.insert("name".into(), span.name().into());
            line.insert("span".into(), Value::Object(current));
            if let Some((trace_id, span_id)) = self.trace_ids(&span.id()) {
                line.insert("trace_id".into(), trace_id.into());
                line.insert("span_id".into(), span_id.into());
            }
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

impl JsonLogs {
    /// The trace and span ids of an exported span, in hex.
    fn trace_ids(&self, id: &Id) -> Option<(String, String)> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let cx = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
        let span = cx.span();
        let context = span.span_context();
        context.is_valid().then(|| {
            (
                context.trace_id().to_string(),
                context.span_id().to_string(),
            )
        })
    }
}

/// Now as RFC 3339 in UTC with microseconds.
fn timestamp() -> String {
    let mut text = String::new();
    let mut writer = tracing_subscriber::fmt::format::Writer::new(&mut text);
    let _ = tracing_subscriber::fmt::time::FormatTime::format_time(
        &tracing_subscriber::fmt::time::SystemTime,
        &mut writer,
    );
    text
}
