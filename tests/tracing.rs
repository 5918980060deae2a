//! End-to-end traceability: the order saga (examples/order-saga) runs
//! against the real broker while an in-process OTLP/gRPC receiver collects
//! the spans of both the broker and the services. Each order must be one
//! trace from the first publish through every hop — routing, appends,
//! every delivery attempt, processing, the events published while
//! processing, compensations and the dead-letter write — with the
//! parent/link structure of the OpenTelemetry messaging conventions; and
//! the broker's JSON log lines must carry the trace ids.

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use switchyard_examples::saga::types;
use switchyard_sdk::telemetry::{self, TelemetryOptions};

/// One collected span and the `service.name` that sent it.
#[derive(Debug, Clone)]
struct Collected {
    service: String,
    span: Span,
}

impl Collected {
    fn name(&self) -> &str {
        &self.span.name
    }

    fn attribute(&self, key: &str) -> Option<&Value> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn text(&self, key: &str) -> String {
        match self.attribute(key) {
            Some(Value::StringValue(s)) => s.clone(),
            Some(Value::IntValue(i)) => i.to_string(),
            other => format!("{other:?}"),
        }
    }

    fn is_error(&self) -> bool {
        self.span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32)
    }

    fn links_to(&self, other: &Collected) -> bool {
        self.span
            .links
            .iter()
            .any(|link| link.span_id == other.span.span_id)
    }

    fn child_of(&self, other: &Collected) -> bool {
        self.span.parent_span_id == other.span.span_id && self.span.trace_id == other.span.trace_id
    }
}

/// An OTLP trace receiver that keeps every span.
#[derive(Debug, Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Collected>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("spans");
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| Collected {
                    service: service.clone(),
                    span,
                }));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Serves on an ephemeral port; returns its URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    fn spans(&self) -> Vec<Collected> {
        self.spans.lock().expect("spans").clone()
    }
}

/// The spans of one trace.
struct Trace(Vec<Collected>);

impl Trace {
    fn named(&self, name: &str) -> Vec<&Collected> {
        self.0.iter().filter(|s| s.name() == name).collect()
    }

    fn one(&self, name: &str) -> &Collected {
        let found = self.named(name);
        assert_eq!(found.len(), 1, "one '{name}' span in {}", self.names());
        found[0]
    }

    fn by_id(&self, span_id: &[u8]) -> Option<&Collected> {
        self.0.iter().find(|s| s.span.span_id == span_id)
    }

    fn names(&self) -> String {
        let mut names: Vec<&str> = self.0.iter().map(Collected::name).collect();
        names.sort_unstable();
        names.join(", ")
    }

    /// The `process` span of `subscription` is a child of the `send` span
    /// that created the delivered event, links to the broker's `deliver`
    /// span of the attempt it handled, which has the same parent.
    fn assert_hop(&self, subscription: &str) -> (&Collected, &Collected) {
        let process = self
            .named(&format!("process {subscription}"))
            .into_iter()
            .find(|p| !p.is_error())
            .unwrap_or_else(|| panic!("a successful process {subscription}: {}", self.names()));
        let send = self
            .by_id(&process.span.parent_span_id)
            .unwrap_or_else(|| panic!("the parent of process {subscription} is in the trace"));
        assert_eq!(
            send.name(),
            "send default",
            "events are created by send spans"
        );
        let deliver = self
            .named(&format!("deliver {subscription}"))
            .into_iter()
            .find(|d| process.links_to(d))
            .unwrap_or_else(|| panic!("process {subscription} links to its deliver span"));
        assert!(
            deliver.child_of(send),
            "deliver continues the creation context"
        );
        assert_eq!(deliver.service, "switchyard");
        assert_eq!(process.service, "saga-services");
        (process, deliver)
    }
}

impl Trace {
    /// The trace as an indented tree, children in start order (printed
    /// with `--no-capture`; the example's README shows one).
    fn tree(&self) -> String {
        let mut out = String::new();
        let mut roots: Vec<&Collected> = self
            .0
            .iter()
            .filter(|s| self.by_id(&s.span.parent_span_id).is_none())
            .collect();
        roots.sort_by_key(|s| s.span.start_time_unix_nano);
        for root in roots {
            self.write_tree(root, 0, &mut out);
        }
        out
    }

    fn write_tree(&self, span: &Collected, depth: usize, out: &mut String) {
        let mut notes = Vec::new();
        for key in [
            "switchyard.rules",
            "switchyard.delivery.attempt",
            "switchyard.outcome",
            "switchyard.nack.reason",
        ] {
            if span.attribute(key).is_some() {
                let value = match span.attribute(key) {
                    Some(Value::ArrayValue(values)) => values
                        .values
                        .iter()
                        .filter_map(|v| match &v.value {
                            Some(Value::StringValue(s)) => Some(s.clone()),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    _ => span.text(key),
                };
                notes.push(format!("{}={value}", key.trim_start_matches("switchyard.")));
            }
        }
        if span.name().starts_with("route") {
            notes.push(span.text("cloudevents.event_type"));
        }
        if !span.span.links.is_empty() {
            notes.push(format!("links: {}", span.span.links.len()));
        }
        out.push_str(&format!(
            "{}{} [{}]{}{}\n",
            "  ".repeat(depth),
            span.name(),
            span.service,
            if span.is_error() { " ERROR" } else { "" },
            if notes.is_empty() {
                String::new()
            } else {
                format!(" {}", notes.join(" "))
            }
        ));
        let mut children: Vec<&Collected> = self.0.iter().filter(|c| c.child_of(span)).collect();
        children.sort_by_key(|c| c.span.start_time_unix_nano);
        for child in children {
            self.write_tree(child, depth + 1, out);
        }
    }
}

fn trace_of(spans: &[Collected], order_id: &str, event_type: &str) -> Trace {
    let route = spans
        .iter()
        .find(|s| {
            s.name() == "route default"
                && s.text("cloudevents.event_subject") == order_id
                && s.text("cloudevents.event_type") == event_type
        })
        .unwrap_or_else(|| panic!("a route span for {event_type} of {order_id}"));
    Trace(
        spans
            .iter()
            .filter(|s| s.span.trace_id == route.span.trace_id)
            .cloned()
            .collect(),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saga_is_one_trace_across_broker_and_services() {
    let receiver = Receiver::default();
    let collector = receiver.start().await;

    let (_dir, mut broker) = start_saga_broker(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);

    let guard = telemetry::init_with(TelemetryOptions {
        service_name: "saga-services".into(),
        otlp_endpoint: Some(collector.clone()),
    })
    .expect("telemetry");
    assert!(guard.exporting());
    let client = broker.client().await;
    // Orders 1..=6 take every path: completed, retried, declined
    // (compensated), out of stock, payment deadline passed (compensated),
    // dead-lettered (and compensated by its deadline).
    let SagaRun {
        ended,
        shutdown,
        mut services,
    } = run_saga(&client, 6, Duration::from_millis(1500)).await;
    let why: Vec<(&str, &str)> = ended
        .iter()
        .map(|o| (o.event_type, o.because.as_str()))
        .collect();
    assert_eq!(
        why,
        [
            (types::ORDER_COMPLETED, types::SHIPMENT_SCHEDULED),
            (types::ORDER_COMPLETED, types::SHIPMENT_SCHEDULED),
            (types::ORDER_CANCELLED, types::PAYMENT_FAILED),
            (types::ORDER_CANCELLED, types::STOCK_UNAVAILABLE),
            (types::ORDER_CANCELLED, types::PAYMENT_TIMED_OUT),
            (types::ORDER_CANCELLED, types::PAYMENT_TIMED_OUT),
        ]
    );
    let admin = broker.admin().await;
    until_dead_letters(&admin, "payment-service", 1).await;
    until_fully_committed(&admin, "order-service").await;
    // Redrive: order-6 comes back, fails 3 more times, is dead-lettered
    // again. Replay: inventory-compensation goes back to the start and
    // releases order-3's stock a second time.
    assert_eq!(redrive_all(&admin, "payment-service").await, 1);
    until_dead_letters(&admin, "payment-service", 2).await;
    let mut changes = admin.clone();
    changes
        .seek_subscription(switchyard_sdk::proto::SeekSubscriptionRequest {
            name: "inventory-compensation".into(),
            target: Some(switchyard_sdk::proto::seek_subscription_request::Target::Earliest(true)),
        })
        .await
        .expect("seek");
    until_fully_committed(&admin, "inventory-compensation").await;
    // An auditor that starts its own traces, linked to the events'.
    changes
        .create_subscription(switchyard_sdk::proto::CreateSubscriptionRequest {
            subscription: Some(switchyard_sdk::proto::Subscription {
                name: "auditor".into(),
                topic: "audit".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("create auditor");
    let (audited, mut audits) = tokio::sync::mpsc::unbounded_channel();
    services.push(tokio::spawn(
        client.subscribe("auditor").link_traces(true).run_until(
            move |_: switchyard_sdk::Received| {
                let audited = audited.clone();
                async move { audited.send(()).map_err(|e| e.to_string()) }
            },
            shutdown.clone().cancelled_owned(),
        ),
    ));
    for _ in 0..3 {
        audits.recv().await.expect("audited");
    }
    shutdown.cancel();
    for service in services {
        service.await.expect("joined").expect("service ran cleanly");
    }
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .expect("flush");
    broker.stop(); // flushes the broker's last spans

    let spans = receiver.spans();
    assert!(
        spans.iter().any(|s| s.service == "switchyard"),
        "broker spans arrive"
    );

    // order-3: declined → stock released, order cancelled; one trace.
    let declined = trace_of(&spans, "order-3", types::ORDER_PLACED);
    println!("{}", declined.tree());
    let route = declined
        .named("route default")
        .into_iter()
        .find(|r| r.text("cloudevents.event_type") == types::ORDER_PLACED)
        .expect("route of order.placed");
    match route.attribute("switchyard.rules") {
        Some(Value::ArrayValue(rules)) => {
            let names: Vec<_> = rules
                .values
                .iter()
                .filter_map(|v| match &v.value {
                    Some(Value::StringValue(s)) => Some(s.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(names, ["order-placed", "saga-audit"]);
        }
        other => panic!("switchyard.rules is an array of rule names, got {other:?}"),
    }
    let publish = declined
        .by_id(&route.span.parent_span_id)
        .expect("route's parent is in the trace");
    assert_eq!(
        publish.name(),
        "send default",
        "route continues the event's creation context"
    );
    assert!(
        declined
            .named("publish default")
            .iter()
            .any(|p| p.child_of(publish)),
        "the broker's publish span continues the call's metadata context"
    );
    assert!(
        declined
            .named("append orders")
            .iter()
            .any(|a| a.child_of(route)),
        "appends are children of their route span"
    );
    for subscription in [
        "inventory-service",
        "payment-service",
        "inventory-compensation",
        "order-service",
    ] {
        declined.assert_hop(subscription);
    }
    let replayed = declined.named("deliver inventory-compensation");
    assert_eq!(
        replayed.len(),
        2,
        "the replay is delivered in the original trace"
    );
    assert!(
        replayed
            .iter()
            .all(|d| d.span.parent_span_id == replayed[0].span.parent_span_id)
    );
    let (_, paid) = declined.assert_hop("payment-service");
    assert_eq!(paid.text("switchyard.outcome"), "acked");
    assert!(
        declined
            .named("ack payment-service")
            .iter()
            .any(|a| a.child_of(paid)),
        "an ack span under the delivery"
    );
    for event_type in [
        types::STOCK_RESERVED,
        types::PAYMENT_FAILED,
        types::STOCK_RELEASED,
        types::ORDER_CANCELLED,
    ] {
        assert!(
            declined
                .named("route default")
                .iter()
                .any(|r| r.text("cloudevents.event_type") == event_type),
            "{event_type} is routed within the order's trace: {}",
            declined.names()
        );
    }

    // order-2: the first payment attempt is nacked, the second acked.
    let retried = trace_of(&spans, "order-2", types::ORDER_PLACED);
    println!("{}", retried.tree());
    let mut attempts: Vec<(String, String, bool)> = retried
        .named("deliver payment-service")
        .iter()
        .map(|d| {
            (
                d.text("switchyard.delivery.attempt"),
                d.text("switchyard.outcome"),
                d.is_error(),
            )
        })
        .collect();
    attempts.sort();
    assert_eq!(
        attempts,
        [
            ("1".to_string(), "nacked".to_string(), true),
            ("2".to_string(), "acked".to_string(), false)
        ]
    );
    let nack = retried.one("nack payment-service");
    assert_eq!(
        nack.text("switchyard.nack.reason"),
        "payment gateway timed out"
    );
    assert!(
        retried
            .named("process payment-service")
            .iter()
            .any(|p| p.is_error()),
        "the failed attempt's process span is an error"
    );

    // order-5: the bank never answers; the payment deadline, scheduled
    // when the order was placed, fires inside the order's trace and
    // compensates (stock released, order cancelled).
    let timed_out = trace_of(&spans, "order-5", types::ORDER_PLACED);
    println!("{}", timed_out.tree());
    for event_type in [
        types::PAYMENT_TIMED_OUT,
        types::STOCK_RELEASED,
        types::ORDER_CANCELLED,
    ] {
        assert!(
            timed_out
                .named("route default")
                .iter()
                .any(|r| r.text("cloudevents.event_type") == event_type),
            "{event_type} in the order's trace: {}",
            timed_out.names()
        );
    }
    assert!(
        timed_out
            .named("nack payment-service")
            .iter()
            .any(|n| n.text("switchyard.nack.reason") == "the bank does not answer")
    );

    // order-6: every attempt fails; the dead-letter writes and the redrive
    // keep the trace.
    let poisoned = trace_of(&spans, "order-6", types::ORDER_PLACED);
    println!("{}", poisoned.tree());
    assert_eq!(
        poisoned.named("deliver payment-service").len(),
        6,
        "{}",
        poisoned.names()
    );
    let mut dead_letters = poisoned.named("dead_letter payment-service.dlq");
    dead_letters.sort_by_key(|s| s.span.start_time_unix_nano);
    assert_eq!(dead_letters.len(), 2, "before and after the redrive");
    let redrive = poisoned.one("redrive payment-service");
    for span in dead_letters.iter().copied().chain([redrive]) {
        let created = poisoned
            .by_id(&span.span.parent_span_id)
            .expect("parent in the trace");
        assert_eq!(created.name(), "send default", "under the creation context");
        assert_eq!(span.service, "switchyard");
    }
    let dead = dead_letters[0];
    assert_eq!(dead.text("switchyard.delivery.attempts"), "3");

    // link_traces(true): process spans are roots linking to the creation
    // context (another trace) and to the broker's deliver span.
    let audits: Vec<&Collected> = spans
        .iter()
        .filter(|s| s.name() == "process auditor")
        .collect();
    assert!(audits.len() >= 3, "{} auditor spans", audits.len());
    for audit in audits {
        assert!(audit.span.parent_span_id.is_empty(), "a new root");
        let created = spans
            .iter()
            .find(|s| s.name() == "send default" && audit.links_to(s))
            .expect("links to the creation context");
        assert_ne!(created.span.trace_id, audit.span.trace_id);
        assert!(
            spans
                .iter()
                .any(|d| d.name() == "deliver auditor" && audit.links_to(d))
        );
    }

    // Logs: JSON lines; the dead-letter warning carries the order's trace.
    let log = broker.log();
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("log line is JSON ({e}): {line}"));
    }
    let warning = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|entry| entry["fields"]["message"] == "event dead-lettered")
        .expect("a dead-letter warning");
    assert_eq!(warning["trace_id"], hex(&dead.span.trace_id), "{warning}");
    assert_eq!(warning["span_id"], hex(&dead.span.span_id), "{warning}");
}
