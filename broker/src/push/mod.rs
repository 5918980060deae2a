//! Push subscriptions: for each subscription with a `push` endpoint, a
//! pusher consumes it like a stream consumer would (same credits, retries,
//! dead letters, ordering, rate limit) and POSTs every delivery to the
//! endpoint. A circuit breaker stops pushing to an endpoint that keeps
//! failing — the events wait, no attempts are used — and lets one trial
//! request through after a cool-down that doubles up to the backoff's max.

pub mod http;

use crate::config::{BackoffConfig, ClientErrorPolicy, PushConfig};
use crate::delivery::{
    Circuit, Consumer, Delivery, DeliveryError, NackRequest, PushStatus, Subscription,
    Subscriptions,
};
use crate::model::now_unix_ms;
use http::{Answer, Signer};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Retryable failures in a row that open the circuit.
const FAILURES_TO_OPEN: u32 = 5;
/// How often the supervisor looks for new or deleted push subscriptions.
const SUPERVISE_EVERY: Duration = Duration::from_millis(250);

/// Runs a pusher for every push subscription (also those created later)
/// until `stop` is cancelled.
pub async fn supervise(subscriptions: Arc<Subscriptions>, stop: CancellationToken) {
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the HTTP client; push subscriptions are not served");
            return;
        }
    };
    let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut tick = tokio::time::interval(SUPERVISE_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        running.retain(|_, task| !task.is_finished());
        for subscription in subscriptions.list() {
            let Some(push) = subscription.spec().push.clone() else {
                continue;
            };
            let name = subscription.name().to_string();
            if running.contains_key(&name) {
                continue;
            }
            match Pusher::new(subscription, push, client.clone()) {
                Ok(pusher) => {
                    tracing::info!(subscription = %name, "pushing to its endpoint");
                    running.insert(name, tokio::spawn(pusher.run(stop.child_token())));
                }
                Err(error) => {
                    tracing::error!(subscription = %name, %error, "cannot push");
                }
            }
        }
    }
    for (_, task) in running {
        let _ = task.await;
    }
}

/// What a finished request settles: one answer for the request, and the
/// deliveries an otherwise successful batch reported as failed.
struct Pushed {
    delivery_ids: Vec<String>,
    answer: Answer,
    failed: Vec<(String, String)>,
}

/// Pushes one subscription's deliveries to its endpoint.
struct Pusher {
    subscription: Arc<Subscription>,
    push: PushConfig,
    signer: Option<Signer>,
    client: reqwest::Client,
    dead_letter_rejected: bool,
    breaker: Breaker,
}

impl Pusher {
    fn new(
        subscription: Arc<Subscription>,
        push: PushConfig,
        client: reqwest::Client,
    ) -> Result<Pusher, String> {
        let signer = push
            .secret
            .as_deref()
            .map(Signer::new)
            .transpose()
            .map_err(|e| format!("push.secret {e}"))?;
        let spec = subscription.spec();
        let dead_letter_rejected = match push.on_client_error {
            Some(ClientErrorPolicy::DeadLetter) => true,
            Some(ClientErrorPolicy::Retry) => false,
            None => spec.dead_letter_topic.is_some(),
        };
        let breaker = Breaker::new(spec.backoff);
        Ok(Pusher {
            subscription,
            push,
            signer,
            client,
            dead_letter_rejected,
            breaker,
        })
    }

    /// Events per request, and how long a partial batch may wait.
    fn batching(&self) -> (usize, Duration) {
        self.push
            .batch
            .map_or((1, Duration::ZERO), |b| (b.max_events.max(1), b.max_wait))
    }

    async fn run(mut self, stop: CancellationToken) {
        let consumer = match self.subscription.connect(0) {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::error!(subscription = %self.subscription.name(), %error, "cannot start pushing");
                return;
            }
        };
        let (batch_size, max_wait) = self.batching();
        let mut waiting: VecDeque<Delivery> = VecDeque::new();
        // When the oldest waiting delivery arrived (for partial batches).
        let mut oldest = Instant::now();
        let mut requests: JoinSet<Pushed> = JoinSet::new();
        self.report();
        loop {
            while !waiting.is_empty()
                && self.breaker.admits(requests.len())
                && (waiting.len() >= batch_size || oldest.elapsed() >= max_wait)
            {
                let take = waiting.len().min(batch_size);
                let batch: Vec<Delivery> = waiting.drain(..take).collect();
                requests.spawn(self.request(batch));
                oldest = Instant::now();
            }
            // Half-open fetches too: the trial request needs a delivery.
            let fetch = waiting.len() < batch_size && self.breaker.circuit != Circuit::Open;
            let reopen = self.breaker.retry_at;
            let partial = !waiting.is_empty() && self.breaker.admits(requests.len());
            tokio::select! {
                () = stop.cancelled() => break,
                batch = consumer.next_batch(), if fetch => match batch {
                    Ok(deliveries) => {
                        if waiting.is_empty() {
                            oldest = Instant::now();
                        }
                        waiting.extend(deliveries);
                    }
                    Err(DeliveryError::SubscriptionNotFound(_)) => break,
                    Err(error) => {
                        tracing::error!(subscription = %self.subscription.name(), %error, "push poll failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                Some(done) = requests.join_next() => {
                    if let Ok(pushed) = done {
                        self.settle(&consumer, pushed, &waiting);
                    }
                }
                () = tokio::time::sleep_until(oldest + max_wait), if partial => {}
                () = tokio::time::sleep_until(reopen), if self.breaker.circuit == Circuit::Open => {
                    self.breaker.half_open();
                    self.report();
                }
            }
        }
        // Unsettled deliveries come again (to this broker after a restart).
        requests.abort_all();
    }

    /// The request for one delivery, or a batch, as a task result.
    fn request(
        &self,
        deliveries: Vec<Delivery>,
    ) -> impl std::future::Future<Output = Pushed> + use<> {
        let client = self.client.clone();
        let endpoint = self.push.endpoint.clone();
        let timeout = self.push.timeout;
        let batched = self.push.batch.is_some();
        let events: Vec<_> = deliveries
            .iter()
            .map(|d| d.record.event.clone().unwrap_or_default())
            .collect();
        let first = &deliveries[0];
        let request = if batched {
            http::build_batch_request(&events, &first.trace_context, self.signer.as_ref())
        } else {
            http::build_request(
                &events[0],
                self.push.mode,
                &first.trace_context,
                self.signer.as_ref(),
                first.attempt,
            )
        };
        let delivery_ids: Vec<String> = deliveries.iter().map(|d| d.id.clone()).collect();
        let event_ids: Vec<String> = events.into_iter().map(|e| e.id).collect();
        async move {
            let sent = client
                .post(endpoint)
                .timeout(timeout)
                .headers(request.headers)
                .body(request.body)
                .send()
                .await;
            let (answer, failed) = match sent {
                Ok(response) => {
                    let answer = http::classify(response.status(), response.headers());
                    let body = if batched && answer == Answer::Delivered {
                        response.bytes().await.unwrap_or_default()
                    } else {
                        Default::default()
                    };
                    let failed_events = http::batch_failures(&body);
                    let failed = delivery_ids
                        .iter()
                        .zip(&event_ids)
                        .filter_map(|(delivery, event)| {
                            failed_events
                                .get(event)
                                .map(|reason| (delivery.clone(), reason.clone()))
                        })
                        .collect();
                    (answer, failed)
                }
                // Without the URL: it may carry a token.
                Err(error) => (
                    Answer::Retry {
                        reason: format!("push failed: {}", error.without_url()),
                        after: None,
                    },
                    Vec::new(),
                ),
            };
            Pushed {
                delivery_ids,
                answer,
                failed,
            }
        }
    }

    /// Acks or nacks a finished push and feeds the circuit breaker.
    fn settle(&mut self, consumer: &Consumer, pushed: Pushed, waiting: &VecDeque<Delivery>) {
        let metrics = self.subscription.metrics();
        let nacks =
            |reason: &str, delay: Option<Duration>, dead_letter: bool| -> Vec<NackRequest> {
                pushed
                    .delivery_ids
                    .iter()
                    .map(|id| NackRequest {
                        delivery_id: id.clone(),
                        reason: reason.to_string(),
                        delay,
                        dead_letter,
                    })
                    .collect()
            };
        let settled = match &pushed.answer {
            Answer::Delivered => {
                metrics.push_delivered.inc();
                self.breaker.succeeded();
                // A batch may report some of its events as failed: only
                // those are retried.
                let (failed, acked): (Vec<&String>, Vec<&String>) = pushed
                    .delivery_ids
                    .iter()
                    .partition(|id| pushed.failed.iter().any(|(f, _)| f == *id));
                let acks: Vec<String> = acked.into_iter().cloned().collect();
                let retries: Vec<NackRequest> = failed
                    .into_iter()
                    .map(|id| NackRequest {
                        delivery_id: id.clone(),
                        reason: pushed
                            .failed
                            .iter()
                            .find(|(f, _)| f == id)
                            .map_or_else(String::new, |(_, reason)| reason.clone()),
                        delay: None,
                        dead_letter: false,
                    })
                    .collect();
                consumer.settle(&acks, &retries, &[])
            }
            Answer::Rejected { reason } => {
                metrics.push_rejected.inc();
                // The endpoint is up and answered: not a reason to back off.
                self.breaker.succeeded();
                consumer.settle(&[], &nacks(reason, None, self.dead_letter_rejected), &[])
            }
            Answer::Retry { reason, after } => {
                metrics.push_retried.inc();
                let opened = self.breaker.failed(reason);
                if opened {
                    tracing::warn!(subscription = %self.subscription.name(), failures = self.breaker.failures, %reason, "push endpoint keeps failing; pausing pushes");
                    // Waiting deliveries keep their attempts: give them time.
                    let extend_by = self.breaker.cooldown + self.push.timeout;
                    let extensions: Vec<(String, Duration)> =
                        waiting.iter().map(|d| (d.id.clone(), extend_by)).collect();
                    let _ = consumer.settle(&[], &[], &extensions);
                }
                consumer.settle(&[], &nacks(reason, *after, false), &[])
            }
        };
        match settled {
            Err(error) => {
                tracing::error!(subscription = %self.subscription.name(), %error, "settling a push failed");
            }
            // The pusher settles only what it was handed: a refusal is a bug.
            Ok(refused) => {
                for refusal in refused {
                    tracing::error!(subscription = %self.subscription.name(), id = %refusal.delivery_id, reason = %refusal.reason, "a push settle was refused");
                }
            }
        }
        self.report();
    }

    fn report(&self) {
        self.subscription.report_push(PushStatus {
            circuit: self.breaker.circuit,
            retry_at_ms: match self.breaker.circuit {
                Circuit::Open => {
                    let left = self
                        .breaker
                        .retry_at
                        .saturating_duration_since(Instant::now());
                    now_unix_ms() + left.as_millis() as i64
                }
                _ => 0,
            },
            consecutive_failures: self.breaker.failures,
            last_error: self.breaker.last_error.clone(),
        });
    }
}

/// The circuit breaker of one endpoint.
#[derive(Debug)]
struct Breaker {
    circuit: Circuit,
    failures: u32,
    last_error: Option<String>,
    /// Current cool-down; doubles on every re-open, up to `max`.
    cooldown: Duration,
    initial: Duration,
    max: Duration,
    retry_at: Instant,
}

impl Breaker {
    fn new(backoff: BackoffConfig) -> Breaker {
        Breaker {
            circuit: Circuit::Closed,
            failures: 0,
            last_error: None,
            cooldown: backoff.initial,
            initial: backoff.initial,
            max: backoff.max,
            retry_at: Instant::now(),
        }
    }

    /// Whether another request may start with `running` in flight.
    fn admits(&self, running: usize) -> bool {
        match self.circuit {
            Circuit::Closed => true,
            Circuit::HalfOpen => running == 0,
            Circuit::Open => false,
        }
    }

    fn succeeded(&mut self) {
        self.circuit = Circuit::Closed;
        self.failures = 0;
        self.cooldown = self.initial;
    }

    /// Counts a retryable failure; returns true when it opens the circuit.
    fn failed(&mut self, reason: &str) -> bool {
        self.failures += 1;
        self.last_error = Some(reason.to_string());
        let open = match self.circuit {
            Circuit::Closed => self.failures >= FAILURES_TO_OPEN,
            Circuit::HalfOpen => true,
            Circuit::Open => false,
        };
        if open {
            if self.circuit == Circuit::HalfOpen {
                self.cooldown = (self.cooldown * 2).min(self.max);
            }
            self.circuit = Circuit::Open;
            self.retry_at = Instant::now() + self.cooldown;
        }
        open
    }

    fn half_open(&mut self) {
        self.circuit = Circuit::HalfOpen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_failures_and_backs_off_while_it_stays_failing() {
        let backoff = BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(3),
            ..BackoffConfig::default()
        };
        let mut breaker = Breaker::new(backoff);
        for _ in 1..FAILURES_TO_OPEN {
            assert!(!breaker.failed("503"));
            assert!(breaker.admits(10));
        }
        assert!(breaker.failed("503"), "the fifth failure in a row opens it");
        assert_eq!(breaker.circuit, Circuit::Open);
        assert!(!breaker.admits(0), "no requests while open");
        breaker.half_open();
        assert!(breaker.admits(0) && !breaker.admits(1), "one trial request");
        assert!(breaker.failed("503"), "a failed trial opens it again");
        assert_eq!(
            breaker.cooldown,
            Duration::from_secs(2),
            "for twice as long"
        );
        breaker.half_open();
        breaker.failed("503");
        breaker.half_open();
        breaker.failed("503");
        assert_eq!(
            breaker.cooldown,
            Duration::from_secs(3),
            "capped at the backoff's max"
        );
        breaker.half_open();
        breaker.succeeded();
        assert_eq!(breaker.circuit, Circuit::Closed);
        assert_eq!(breaker.failures, 0);
        assert_eq!(breaker.cooldown, Duration::from_secs(1));
        assert!(!breaker.failed("503"), "counting starts over");
    }
}
