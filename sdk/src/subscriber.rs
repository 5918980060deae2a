//! Consuming a subscription: deliveries run a handler concurrently (up to
//! the stream's credits); `Ok` acks, `Err` nacks with the error as reason.

use crate::SdkError;
use crate::client::AuthChannel;
use crate::telemetry::context;
use opentelemetry::trace::TraceContextExt;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use switchyard_proto::v1::subscribe_request::Request;
use switchyard_proto::v1::subscriber_client::SubscriberClient;
use switchyard_proto::v1::{CloudEvent, Delivery, Extend, Nack, Open, Settle, SubscribeRequest};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// How long a graceful stop waits for the broker to close the stream after
/// the last acks were sent.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// First delay before reconnecting a lost stream; doubles up to the max.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Longest delay between reconnection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// One delivered event.
#[derive(Debug, Clone)]
pub struct Received {
    /// Id to settle with (the SDK does it for you).
    pub delivery_id: String,
    /// The event.
    pub event: CloudEvent,
    /// The topic it was read from.
    pub topic: String,
    /// Its partition.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// 1 on the first attempt, more on redeliveries.
    pub attempt: u32,
    /// Names of the rules that routed it to the topic.
    pub rules: Vec<String>,
    /// Set when the event was read from a dead-letter topic.
    pub dead_letter: Option<switchyard_proto::v1::DeadLetter>,
    /// The stream, for deadline extensions.
    requests: mpsc::Sender<SubscribeRequest>,
}

impl Received {
    fn from_proto(delivery: Delivery, requests: mpsc::Sender<SubscribeRequest>) -> Self {
        Self {
            delivery_id: delivery.delivery_id,
            event: delivery.event.unwrap_or_default(),
            topic: delivery.topic,
            partition: delivery.partition,
            offset: delivery.offset,
            attempt: delivery.attempt,
            rules: delivery.rules,
            dead_letter: delivery.dead_letter,
            requests,
        }
    }

    /// Asks for more time for long work: the ack deadline moves to `by`
    /// from now (at most 10 minutes), so the event is not delivered again
    /// meanwhile. Call it again to keep extending.
    pub async fn extend_deadline(&self, by: Duration) -> Result<(), SdkError> {
        let extend = Extend {
            delivery_id: self.delivery_id.clone(),
            seconds: u32::try_from(by.as_secs().max(1)).unwrap_or(u32::MAX),
        };
        let request = SubscribeRequest {
            request: Some(Request::Settle(Settle {
                extends: vec![extend],
                ..Settle::default()
            })),
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| SdkError::StreamEnded("the subscription stream is closed".into()))
    }

    fn data_bytes(&self) -> Result<&[u8], SdkError> {
        use switchyard_proto::v1::cloud_event::Data;
        match &self.event.data {
            Some(Data::BinaryData(bytes)) => Ok(bytes),
            Some(Data::TextData(text)) => Ok(text.as_bytes()),
            Some(Data::ProtoData(any)) => Ok(&any.value),
            None => Err(SdkError::Data(format!(
                "event '{}' has no data",
                self.event.id
            ))),
        }
    }

    /// Decodes JSON data.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, SdkError> {
        serde_json::from_slice(self.data_bytes()?).map_err(|e| SdkError::Data(e.to_string()))
    }

    /// Decodes protobuf data.
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, SdkError> {
        M::decode(self.data_bytes()?).map_err(|e| SdkError::Data(e.to_string()))
    }
}

/// Configures and runs a consumer of one subscription.
#[derive(Debug)]
pub struct SubscriptionBuilder {
    channel: AuthChannel,
    subscription: String,
    max_in_flight: u32,
    reconnect: bool,
    link_traces: bool,
}

impl SubscriptionBuilder {
    pub(crate) fn new(channel: AuthChannel, subscription: &str) -> Self {
        Self {
            channel,
            subscription: subscription.to_string(),
            max_in_flight: 0,
            reconnect: true,
            link_traces: false,
        }
    }

    /// Whether to reconnect (with capped exponential backoff) when the
    /// stream breaks or the broker is unavailable; on by default. Errors
    /// that retrying cannot fix, such as an unknown subscription, always
    /// end the run.
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// How the handler's `process {subscription}` span joins the event's
    /// trace. By default (`false`) it is a child of the event's creation
    /// context, so a choreography — and every event published inside the
    /// handler — is one trace. With `true` each delivery starts a new
    /// trace that *links* to the creation context instead: for consumers
    /// that fan in many flows. Either way it links to the broker's
    /// `deliver` span of this attempt.
    pub fn link_traces(mut self, link_traces: bool) -> Self {
        self.link_traces = link_traces;
        self
    }

    /// Most deliveries handled at once (0: the subscription's default).
    pub fn max_in_flight(mut self, max_in_flight: u32) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    /// Runs the handler on every delivery until the stream fails.
    pub async fn run<F, Fut, E>(self, handler: F) -> Result<(), SdkError>
    where
        F: Fn(Received) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        self.run_until(handler, std::future::pending()).await
    }

    /// Runs the handler on every delivery until `shutdown` resolves, then
    /// stops taking deliveries, lets running handlers finish, sends their
    /// acks and closes the stream. Deliveries not yet started are
    /// redelivered by the broker. A lost stream is reopened (see
    /// [`SubscriptionBuilder::reconnect`]); deliveries whose acks could not
    /// be sent come again.
    pub async fn run_until<F, Fut, E, S>(self, handler: F, shutdown: S) -> Result<(), SdkError>
    where
        F: Fn(Received) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
        S: Future<Output = ()>,
    {
        let handler = Arc::new(handler);
        let each: BatchHandler = Arc::new(move |mut batch: Vec<Received>| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                match batch.pop() {
                    Some(received) => vec![handler(received).await.map_err(|e| nack_of(&e))],
                    None => Vec::new(),
                }
            })
        });
        self.serve(each, 1, Duration::ZERO, shutdown).await
    }

    /// Like [`SubscriptionBuilder::run_until`], with a handler over batches
    /// of up to `max_events` deliveries, waiting at most `max_wait` to fill
    /// one. `Ok` acks the whole batch; `Err(failures)` nacks the deliveries
    /// it names (with their reasons) and acks the rest. The stream's
    /// credits (`max_in_flight`) should be at least `max_events`.
    pub async fn run_batches_until<F, Fut, S>(
        self,
        max_events: usize,
        max_wait: Duration,
        handler: F,
        shutdown: S,
    ) -> Result<(), SdkError>
    where
        F: Fn(Vec<Received>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BatchFailures>> + Send + 'static,
        S: Future<Output = ()>,
    {
        let handler = Arc::new(handler);
        let batches: BatchHandler = Arc::new(move |batch: Vec<Received>| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let ids: Vec<String> = batch.iter().map(|r| r.delivery_id.clone()).collect();
                match handler(batch).await {
                    Ok(()) => ids.iter().map(|_| Ok(())).collect(),
                    Err(failures) => ids
                        .iter()
                        .map(|id| match failures.0.get(id) {
                            Some(reason) => Err((reason.clone(), 0)),
                            None => Ok(()),
                        })
                        .collect(),
                }
            })
        });
        self.serve(batches, max_events.max(1), max_wait, shutdown)
            .await
    }

    /// Runs sessions (reconnecting when allowed) until shutdown.
    async fn serve<S>(
        self,
        handler: BatchHandler,
        batch_size: usize,
        max_wait: Duration,
        shutdown: S,
    ) -> Result<(), SdkError>
    where
        S: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        let mut backoff = RECONNECT_MIN;
        let batching = (batch_size, max_wait);
        loop {
            match self
                .session(&handler, batching, &mut shutdown, &mut backoff)
                .await
            {
                Err(error) if self.reconnect && is_transient(&error) => {
                    tracing::warn!(subscription = %self.subscription, %error, retry_in = ?backoff, "subscription stream lost; reconnecting");
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
                outcome => return outcome,
            }
        }
    }

    /// One stream, from `open` until shutdown (Ok) or failure (Err).
    async fn session<S>(
        &self,
        handler: &BatchHandler,
        (batch_size, max_wait): (usize, Duration),
        shutdown: &mut std::pin::Pin<&mut S>,
        backoff: &mut Duration,
    ) -> Result<(), SdkError>
    where
        S: Future<Output = ()>,
    {
        let (requests, outbound) = mpsc::channel(256);
        let open = SubscribeRequest {
            request: Some(Request::Open(Open {
                subscription: self.subscription.clone(),
                max_in_flight: self.max_in_flight,
            })),
        };
        let _ = requests.send(open).await;
        let mut inbound = SubscriberClient::new(self.channel.clone())
            .max_decoding_message_size(64 * 1024 * 1024)
            .subscribe(ReceiverStream::new(outbound))
            .await?
            .into_inner();
        *backoff = RECONNECT_MIN;
        let mut running = Running::default();
        let mut pending: Vec<(Received, Span)> = Vec::new();
        let mut oldest = tokio::time::Instant::now();
        let failure = loop {
            if !pending.is_empty() && (pending.len() >= batch_size || oldest.elapsed() >= max_wait)
            {
                running.start(handler, std::mem::take(&mut pending));
            }
            let partial = !pending.is_empty();
            tokio::select! {
                biased;
                () = shutdown.as_mut() => break None,
                Some(done) = running.tasks.join_next_with_id() => {
                    let mut settle = Settle::default();
                    running.record(done, &mut settle);
                    while let Some(done) = running.tasks.try_join_next_with_id() {
                        running.record(done, &mut settle);
                    }
                    send(&requests, settle).await;
                }
                message = inbound.message() => match message {
                    // The broker refused some of our settles: it never
                    // does for ids it handed us, so say so loudly.
                    Ok(Some(answer)) if !answer.settle_errors.is_empty() => {
                        for refused in answer.settle_errors {
                            tracing::error!(subscription = %self.subscription, id = %refused.delivery_id, reason = %refused.reason, "the broker refused a settle");
                        }
                    }
                    Ok(Some(delivery)) => {
                        let span = process_span(&self.subscription, &delivery, self.link_traces);
                        if pending.is_empty() {
                            oldest = tokio::time::Instant::now();
                        }
                        pending.push((Received::from_proto(delivery, requests.clone()), span));
                    }
                    Ok(None) => break Some(SdkError::StreamEnded("the broker closed the stream".into())),
                    Err(status) => break Some(SdkError::Status(status)),
                },
                () = tokio::time::sleep_until(oldest + max_wait), if partial => {}
            }
        };
        // Deliveries not handed to the handler yet come again.
        drop(pending);
        // Running handlers finish either way; their acks are sent if the
        // stream still works (otherwise the events come again).
        let mut settle = Settle::default();
        while let Some(done) = running.tasks.join_next_with_id().await {
            running.record(done, &mut settle);
        }
        if let Some(error) = failure {
            return Err(error);
        }
        send(&requests, settle).await;
        drop(requests);
        // The broker ends the stream once it has processed our last acks.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Ok(Some(_)) = inbound.message().await {}
        })
        .await;
        Ok(())
    }
}

/// The `process {subscription}` span of one delivery: a root span made a
/// child of the event's creation context (or, with `link_traces`, linking
/// to it), and linking to the broker's `deliver` span.
fn process_span(subscription: &str, delivery: &Delivery, link_traces: bool) -> Span {
    let event = delivery.event.as_ref();
    let span = tracing::info_span!(
        parent: None,
        "process",
        otel.name = %format_args!("process {subscription}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        messaging.system = "switchyard",
        messaging.operation.type = "process",
        messaging.destination.name = delivery.topic.as_str(),
        messaging.destination.partition.id = %delivery.partition,
        messaging.consumer.group.name = subscription,
        messaging.message.id = event.map_or("", |e| e.id.as_str()),
        switchyard.offset = delivery.offset,
        switchyard.delivery.attempt = delivery.attempt,
    );
    if span.is_disabled() {
        return span;
    }
    let creation = event.map(context::from_event).unwrap_or_default();
    let delivered = context::from_map(&delivery.trace_context);
    let valid = |cx: &opentelemetry::Context| cx.span().span_context().is_valid();
    let parent = match (link_traces, valid(&creation), valid(&delivered)) {
        (false, true, _) => Some(creation.clone()),
        (false, false, true) => Some(delivered.clone()),
        _ => None,
    };
    for linked in [&creation, &delivered] {
        let linked_span = linked.span();
        let linked_context = linked_span.span_context();
        let is_parent = parent
            .as_ref()
            .is_some_and(|p| p.span().span_context() == linked_context);
        if linked_context.is_valid() && !is_parent {
            span.add_link(linked_context.clone());
        }
    }
    if let Some(parent) = parent {
        let _ = span.set_parent(parent);
    }
    span
}

/// A handler error that asks for the next attempt after `delay` instead of
/// the subscription's backoff (like an HTTP Retry-After):
/// `Err(RetryAfter::new(Duration::from_secs(30), "rate limited"))`. A zero
/// delay ([`RetryAfter::backoff`]) leaves the wait to the subscription's
/// backoff, so one error type can express both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryAfter {
    /// When to try again.
    pub delay: Duration,
    /// Why processing failed.
    pub reason: String,
}

impl RetryAfter {
    /// A nack with a delay and a reason.
    pub fn new(delay: Duration, reason: impl Into<String>) -> Self {
        Self {
            delay,
            reason: reason.into(),
        }
    }

    /// A nack that waits the subscription's backoff.
    pub fn backoff(reason: impl Into<String>) -> Self {
        Self::new(Duration::ZERO, reason)
    }
}

impl std::fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (retry after {:?})", self.reason, self.delay)
    }
}

/// The nack reason and delay (ms, 0 for the backoff) of a handler error.
fn nack_of<E: std::fmt::Display + 'static>(error: &E) -> (String, u32) {
    match (error as &dyn std::any::Any).downcast_ref::<RetryAfter>() {
        Some(retry) if retry.delay.is_zero() => (retry.reason.clone(), 0),
        Some(retry) => (
            retry.reason.clone(),
            u32::try_from(retry.delay.as_millis())
                .unwrap_or(u32::MAX)
                .max(1),
        ),
        None => (error.to_string(), 0),
    }
}

/// Whether reconnecting may help.
fn is_transient(error: &SdkError) -> bool {
    match error {
        SdkError::Status(status) => matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::Aborted
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Internal
        ),
        SdkError::StreamEnded(_) | SdkError::Connect { .. } => true,
        SdkError::Rejected { .. } | SdkError::Data(_) => false,
    }
}

/// A handler's result: `Err((nack reason, delay in ms or 0))`.
type Outcome = Result<(), (String, u32)>;

/// The handler as the session runs it: a batch in, one outcome per
/// delivery out (a single-event handler sees batches of one).
type BatchHandler = Arc<
    dyn Fn(Vec<Received>) -> std::pin::Pin<Box<dyn Future<Output = Vec<Outcome>> + Send>>
        + Send
        + Sync,
>;

/// What a batch handler reports as failed: delivery id → reason. The
/// deliveries it names are nacked (the subscription's backoff applies);
/// the rest of the batch is acked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchFailures(HashMap<String, String>);

impl BatchFailures {
    /// No failures yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks one delivery of the batch as failed.
    pub fn fail(mut self, delivery: &Received, reason: impl Into<String>) -> Self {
        self.0.insert(delivery.delivery_id.clone(), reason.into());
        self
    }

    /// Whether nothing failed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Handler tasks in flight and the deliveries each one handles.
#[derive(Default)]
struct Running {
    tasks: JoinSet<Vec<Outcome>>,
    ids: HashMap<tokio::task::Id, Vec<String>>,
}

impl Running {
    /// Runs the handler on a batch, each delivery in its `process` span
    /// (the handler future runs in the first one's).
    fn start(&mut self, handler: &BatchHandler, batch: Vec<(Received, Span)>) {
        let ids: Vec<String> = batch.iter().map(|(r, _)| r.delivery_id.clone()).collect();
        let spans: Vec<Span> = batch.iter().map(|(_, span)| span.clone()).collect();
        let received: Vec<Received> = batch.into_iter().map(|(r, _)| r).collect();
        let run = handler(received);
        let span = spans.first().cloned().unwrap_or_else(Span::none);
        let task = self.tasks.spawn(
            async move {
                let outcomes = run.await;
                for (span, outcome) in spans.iter().zip(&outcomes) {
                    if let Err((reason, _)) = outcome {
                        span.record("otel.status_code", "error");
                        span.record("otel.status_description", reason.as_str());
                    }
                }
                outcomes
            }
            .instrument(span),
        );
        self.ids.insert(task.id(), ids);
    }

    fn record(
        &mut self,
        done: Result<(tokio::task::Id, Vec<Outcome>), tokio::task::JoinError>,
        settle: &mut Settle,
    ) {
        let (task, outcomes) = match done {
            Ok((task, outcomes)) => (task, outcomes),
            Err(e) => (e.id(), Vec::new()),
        };
        let Some(delivery_ids) = self.ids.remove(&task) else {
            return;
        };
        for (n, delivery_id) in delivery_ids.into_iter().enumerate() {
            let outcome = outcomes
                .get(n)
                .cloned()
                .unwrap_or_else(|| Err(("handler panicked".to_string(), 0)));
            match outcome {
                Ok(()) => settle.ack_ids.push(delivery_id),
                Err((reason, delay_ms)) => settle.nacks.push(Nack {
                    delay_ms,
                    delivery_id,
                    reason,
                }),
            }
        }
    }
}

async fn send(requests: &mpsc::Sender<SubscribeRequest>, settle: Settle) {
    if settle.ack_ids.is_empty() && settle.nacks.is_empty() {
        return;
    }
    let _ = requests
        .send(SubscribeRequest {
            request: Some(Request::Settle(settle)),
        })
        .await;
}
