//! Push subscriptions end to end: the broker POSTs events to a real HTTP
//! server started here (axum, ephemeral port) whose answers are scripted
//! by event type and attempt.

mod support;

use axum::http::{HeaderMap, StatusCode};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use switchyard_sdk::proto;

/// A signing secret: `whsec_` + base64 of 32 bytes.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the endpoint received.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
    at: Instant,
}

impl Hit {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The event type: a `ce-type` header, or the structured body's (or
    /// the batch's first event's) `type`.
    fn event_type(&self) -> String {
        match self.headers.get("ce-type") {
            Some(value) => value.to_str().unwrap_or("").to_string(),
            None => self
                .events()
                .first()
                .and_then(|v| v["type"].as_str().map(String::from))
                .unwrap_or_default(),
        }
    }

    /// The events of a structured or batch body.
    fn events(&self) -> Vec<serde_json::Value> {
        match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(serde_json::Value::Array(events)) => events,
            Ok(event) => vec![event],
            Err(_) => Vec::new(),
        }
    }
}

/// The endpoint: records every request and answers by event type.
#[derive(Default)]
struct Endpoint {
    hits: Mutex<Vec<Hit>>,
    running: AtomicUsize,
    most_running: AtomicUsize,
    /// While set, `x.flaky` events get 503.
    down: AtomicBool,
}

impl Endpoint {
    async fn answer(
        &self,
        path: String,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, String) {
        let hit = Hit {
            path,
            headers,
            body,
            at: Instant::now(),
        };
        let attempt: u32 = hit.header("switchyard-attempt").parse().unwrap_or(0);
        let event_type = hit.event_type();
        // The first batch holding x.batch-2 reports that one event failed.
        let failed_in_batch = event_type == "x.batch"
            && hit.events().iter().any(|e| e["id"] == "x.batch-2")
            && !self
                .hits
                .lock()
                .expect("hits")
                .iter()
                .any(|h| h.event_type() == "x.batch");
        self.hits.lock().expect("hits").push(hit);
        if failed_in_batch {
            let body = r#"{"failed": [{"id": "x.batch-2", "reason": "out of stock"}]}"#;
            return (StatusCode::OK, HeaderMap::new(), body.to_string());
        }
        let mut answer = HeaderMap::new();
        let status = match event_type.as_str() {
            "x.retry" if attempt <= 2 => StatusCode::SERVICE_UNAVAILABLE,
            "x.retry-after" if attempt == 1 => {
                answer.insert("retry-after", "1".parse().expect("value"));
                StatusCode::TOO_MANY_REQUESTS
            }
            "x.reject" => StatusCode::BAD_REQUEST,
            "x.always" => StatusCode::SERVICE_UNAVAILABLE,
            "x.ordered" if hit_id(&self.hits, &event_type) == "x.ordered-k1-0" && attempt == 1 => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            "x.flaky" if self.down.load(Ordering::SeqCst) => StatusCode::SERVICE_UNAVAILABLE,
            "x.slow" => {
                let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
                self.most_running.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(150)).await;
                self.running.fetch_sub(1, Ordering::SeqCst);
                StatusCode::OK
            }
            _ => StatusCode::NO_CONTENT,
        };
        (status, answer, String::new())
    }

    fn hits(&self, event_type: &str) -> Vec<Hit> {
        self.hits
            .lock()
            .expect("hits")
            .iter()
            .filter(|h| h.event_type() == event_type)
            .cloned()
            .collect()
    }

    /// Serves on an ephemeral port; returns the base URL.
    async fn start(self: &Arc<Self>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let endpoint = Arc::clone(self);
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let endpoint = Arc::clone(&endpoint);
                async move {
                    endpoint
                        .answer(uri.path().to_string(), headers, body.to_vec())
                        .await
                }
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }
}

/// The `ce-id` of the request just recorded for `event_type`.
fn hit_id(hits: &Mutex<Vec<Hit>>, event_type: &str) -> String {
    hits.lock()
        .expect("hits")
        .iter()
        .rev()
        .find(|h| h.event_type() == event_type)
        .map(|h| h.header("ce-id").to_string())
        .unwrap_or_default()
}

const RULES: &str = "
rules:
  - name: all
    pattern:
      type: [{prefix: 'x.'}]
    targets:
      - topic: events
";

fn config(url: &str) -> String {
    let sub = |name: &str, event_type: &str, extra: &str| {
        format!(
            "  - name: {name}\n    topic: events\n    filter: {{type: [{event_type}]}}\n    backoff: {{initial: 100ms, multiplier: 2.0, max: 400ms, jitter: 0.0}}\n{extra}"
        )
    };
    let push = |path: &str, more: &str| format!("    push:\n      endpoint: {url}/{path}\n{more}");
    [
        "topics:\n  - {name: events, partitions: 2}\nsubscriptions:\n".to_string(),
        sub(
            "binary",
            "x.binary",
            &push("binary", &format!("      secret: {SECRET}\n")),
        ),
        sub(
            "structured",
            "x.structured",
            &push("structured", "      mode: structured\n"),
        ),
        sub("retry", "x.retry", &push("retry", "")),
        sub("retry-after", "x.retry-after", &push("retry-after", "")),
        sub(
            "reject",
            "x.reject",
            &format!(
                "    max_attempts: 5\n    dead_letter_topic: rejected\n{}",
                push("reject", "")
            ),
        ),
        sub(
            "slow",
            "x.slow",
            &format!("    max_in_flight: 3\n{}", push("slow", "")),
        ),
        sub("flaky", "x.flaky", &push("flaky", "")),
        sub(
            "ordered",
            "x.ordered",
            &format!(
                "    ordering: by_key\n    rate_limit: 20\n{}",
                push("ordered", "")
            ),
        ),
        sub(
            "always",
            "x.always",
            &format!(
                "    max_attempts: 2\n    dead_letter_topic: always.dlq\n{}",
                push("always", "")
            ),
        ),
        sub("stream", "x.flaky", ""),
        sub(
            "batched",
            "x.batch",
            &push("batched", "      batch: {max_events: 5, max_wait: 200ms}\n"),
        ),
    ]
    .concat()
}

async fn publish(client: &switchyard_sdk::Client, event_type: &str, count: usize) {
    for n in 0..count {
        let mut event = event(
            &format!("{event_type}-{n}"),
            event_type,
            &format!("key-{n}"),
            serde_json::json!({"n": n, "text": "grüße"}),
        );
        event.subject = Some(format!("subject-{n}"));
        event.extensions.insert(
            "traceparent".into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        );
        client.publish("default", event).await.expect("publish");
    }
}

async fn start() -> (Arc<Endpoint>, tempfile::TempDir, BrokerProcess) {
    let endpoint = Arc::new(Endpoint::default());
    let url = endpoint.start().await;
    let (dir, broker) = start_broker(&config(&url), RULES);
    (endpoint, dir, broker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_structured_pushes_carry_the_event_and_a_valid_signature() {
    let (endpoint, dir, broker) = start().await;
    let client = broker.client().await;
    publish(&client, "x.binary", 1).await;
    publish(&client, "x.structured", 1).await;
    eventually("both pushes arrive", || {
        let done =
            !endpoint.hits("x.binary").is_empty() && !endpoint.hits("x.structured").is_empty();
        async move { done }
    })
    .await;

    let binary = &endpoint.hits("x.binary")[0];
    assert_eq!(binary.path, "/binary");
    for (header, value) in [
        ("ce-id", "x.binary-0"),
        ("ce-source", "/tests"),
        ("ce-type", "x.binary"),
        ("ce-specversion", "1.0"),
        ("ce-subject", "subject-0"),
        ("ce-partitionkey", "key-0"),
        ("content-type", "application/json"),
        ("switchyard-attempt", "1"),
    ] {
        assert_eq!(binary.header(header), value, "{header}");
    }
    assert!(
        binary.header("ce-time").ends_with('Z'),
        "ce-time is RFC 3339"
    );
    assert!(
        binary
            .header("traceparent")
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "the function continues the event's trace"
    );
    let data: serde_json::Value = serde_json::from_slice(&binary.body).expect("json body");
    assert_eq!(data, serde_json::json!({"n": 0, "text": "grüße"}));
    let verifier = standardwebhooks::Webhook::new(SECRET).expect("secret");
    verifier
        .verify(&binary.body, &binary.headers)
        .expect("the signature verifies with the subscription's secret");
    let mut tampered = binary.body.clone();
    tampered.push(b' ');
    assert!(verifier.verify(&tampered, &binary.headers).is_err());

    let structured = &endpoint.hits("x.structured")[0];
    assert_eq!(
        structured.header("content-type"),
        "application/cloudevents+json; charset=utf-8"
    );
    assert!(structured.header("ce-id").is_empty());
    assert!(
        structured.header("webhook-signature").is_empty(),
        "no secret, no signature"
    );
    let event: serde_json::Value = serde_json::from_slice(&structured.body).expect("json");
    assert_eq!(event["id"], "x.structured-0");
    assert_eq!(event["subject"], "subject-0");
    assert_eq!(event["data"]["text"], "grüße");

    assert!(
        !broker.log().contains(SECRET.trim_start_matches("whsec_")),
        "the secret never appears in logs"
    );
    let description = describe(&mut broker.admin().await, "binary").await;
    let push = description
        .subscription
        .and_then(|s| s.push)
        .expect("push config");
    assert!(
        push.signed && push.secret.is_empty(),
        "the secret is write-only"
    );
    // On the embedded log the definition is a private file; on Kafka it is
    // a record of the catalog topic (protected by Kafka's ACLs,
    // docs/kafka.md).
    #[cfg(unix)]
    if std::env::var_os("SWITCHYARD_TEST_KAFKA").is_none() {
        use std::os::unix::fs::PermissionsExt;
        let stored = dir
            .path()
            .join("data/subscriptions/binary/subscription.json");
        let mode = std::fs::metadata(&stored)
            .expect("definition")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the stored definition (with the secret) is private"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_with_backoff_and_retry_after_and_4xx_dead_letter_at_once() {
    let (endpoint, _dir, broker) = start().await;
    let client = broker.client().await;
    publish(&client, "x.retry", 1).await;
    publish(&client, "x.retry-after", 1).await;
    publish(&client, "x.reject", 1).await;
    eventually("the retried events arrive", || {
        let done = endpoint.hits("x.retry").len() >= 3 && endpoint.hits("x.retry-after").len() >= 2;
        async move { done }
    })
    .await;

    // 503, 503, then 204: waits of 100 ms then 200 ms (no jitter).
    let retry = endpoint.hits("x.retry");
    let attempts: Vec<&str> = retry
        .iter()
        .map(|h| h.header("switchyard-attempt"))
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    let first_wait = retry[1].at - retry[0].at;
    let second_wait = retry[2].at - retry[1].at;
    assert!(first_wait >= Duration::from_millis(90), "{first_wait:?}");
    assert!(second_wait >= Duration::from_millis(180), "{second_wait:?}");

    // 429 with Retry-After: 1 → the next attempt waits a second, not 100 ms.
    let limited = endpoint.hits("x.retry-after");
    let waited = limited[1].at - limited[0].at;
    assert!(waited >= Duration::from_millis(950), "{waited:?}");

    // 400 → dead-lettered after one attempt, though max_attempts is 5.
    let admin = broker.admin().await;
    let dead = until_dead_letters(&admin, "reject", 1)
        .await
        .remove(0)
        .dead_letter
        .expect("metadata");
    assert_eq!(dead.attempts, 1);
    assert_eq!(dead.last_reason, "endpoint answered 400 Bad Request");
    assert_eq!(endpoint.hits("x.reject").len(), 1, "never retried");
    let metrics = broker.metrics();
    assert!(
        metrics.contains(
            "switchyard_push_requests_total{subscription=\"retry\",outcome=\"retried\"} 2"
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        "switchyard_push_requests_total{subscription=\"reject\",outcome=\"rejected\"} 1"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_never_sees_more_than_max_in_flight_requests() {
    let (endpoint, _dir, broker) = start().await;
    let client = broker.client().await;
    publish(&client, "x.slow", 12).await;
    eventually("all slow pushes are done", || {
        let done =
            endpoint.hits("x.slow").len() == 12 && endpoint.running.load(Ordering::SeqCst) == 0;
        async move { done }
    })
    .await;
    let most = endpoint.most_running.load(Ordering::SeqCst);
    assert!(most <= 3, "max_in_flight 3, saw {most} at once");
    assert!(most >= 2, "requests do run concurrently ({most})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_opens_the_circuit_without_blocking_other_subscriptions() {
    let (endpoint, _dir, broker) = start().await;
    endpoint.down.store(true, Ordering::SeqCst);
    let client = broker.client().await;
    publish(&client, "x.flaky", 8).await;
    let admin = broker.admin().await;
    eventually("the circuit opens", || {
        let mut admin = admin.clone();
        async move {
            let description = describe(&mut admin, "flaky").await;
            description
                .push
                .is_some_and(|p| p.circuit == "open" && p.consecutive_failures >= 5)
        }
    })
    .await;
    assert!(
        broker
            .metrics()
            .contains("switchyard_push_circuit_open{subscription=\"flaky\"} 1")
    );
    // The stream subscription on the same events is not held up.
    let mut stream = RawStream::open(&broker.url, "stream", 100)
        .await
        .expect("open");
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(stream.next().await.expect("delivery").delivery_id);
    }
    stream.ack(ids).await;
    endpoint.down.store(false, Ordering::SeqCst);
    eventually(
        "all flaky events get through and the circuit closes",
        || {
            let mut admin = admin.clone();
            async move {
                let description = describe(&mut admin, "flaky").await;
                description.total_lag == 0
                    && description.push.is_some_and(|p| p.circuit == "closed")
            }
        },
    )
    .await;
    let delivered: std::collections::BTreeSet<String> = endpoint
        .hits("x.flaky")
        .iter()
        .map(|h| h.header("ce-id").to_string())
        .collect();
    assert_eq!(delivered.len(), 8, "every event arrives");
}

#[tokio::test]
async fn bad_push_endpoints_are_refused_at_creation() {
    let (_dir, broker) = start_broker(
        "topics:\n  - {name: events, partitions: 1}\n",
        "rules: []\n",
    );
    let mut admin = broker.admin().await;
    for (endpoint, secret, expected) in [
        ("not a url", "", "push.endpoint"),
        ("ftp://files.example.com/in", "", "http:// or https://"),
        ("https://fn.example.com/x", "hunter2", "push.secret"),
    ] {
        let status = admin
            .create_subscription(proto::CreateSubscriptionRequest {
                subscription: Some(proto::Subscription {
                    name: "pushy".into(),
                    topic: "events".into(),
                    push: Some(proto::PushConfig {
                        endpoint: endpoint.into(),
                        secret: secret.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{endpoint}");
        assert!(status.message().contains(expected), "{}", status.message());
        assert!(
            !status.message().contains("hunter2"),
            "secrets are not echoed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_carry_several_events_and_retry_only_the_failed_ones() {
    let (endpoint, _dir, broker) = start().await;
    let client = broker.client().await;
    let events = (0..5)
        .map(|n| {
            event(
                &format!("x.batch-{n}"),
                "x.batch",
                &format!("key-{n}"),
                serde_json::json!({"n": n}),
            )
        })
        .collect();
    client
        .publish_batch("default", events)
        .await
        .expect("publish");
    eventually("the failed event comes again, alone", || {
        let done = endpoint.hits("x.batch").len() >= 2;
        async move { done }
    })
    .await;
    let hits = endpoint.hits("x.batch");
    let ids = |hit: &Hit| -> Vec<String> {
        hit.events()
            .iter()
            .map(|e| e["id"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        hits[0].header("content-type"),
        "application/cloudevents-batch+json; charset=utf-8"
    );
    let mut first = ids(&hits[0]);
    first.sort();
    assert_eq!(
        first,
        [
            "x.batch-0",
            "x.batch-1",
            "x.batch-2",
            "x.batch-3",
            "x.batch-4"
        ]
    );
    assert_eq!(
        ids(&hits[1]),
        ["x.batch-2"],
        "only the failed event is retried"
    );
    let admin = broker.admin().await;
    eventually("everything is acked", || {
        let mut admin = admin.clone();
        async move { describe(&mut admin, "batched").await.total_lag == 0 }
    })
    .await;
    assert_eq!(endpoint.hits("x.batch").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_rate_limits_and_max_attempts_apply_to_push() {
    let (endpoint, _dir, broker) = start().await;
    let client = broker.client().await;
    // Key k1: its first event fails once; the next ones must wait for it.
    let ordered: Vec<_> = ["k1-0", "k1-1", "k1-2", "k2-0"]
        .iter()
        .map(|id| {
            let key = id.split('-').next().unwrap_or("");
            event(
                &format!("x.ordered-{id}"),
                "x.ordered",
                key,
                serde_json::json!({}),
            )
        })
        .collect();
    client
        .publish_batch("default", ordered)
        .await
        .expect("publish");
    let always = event("x.always-0", "x.always", "a", serde_json::json!({}));
    client.publish("default", always).await.expect("publish");
    eventually("the ordered events get through", || {
        let done = endpoint
            .hits("x.ordered")
            .iter()
            .any(|h| h.header("ce-id") == "x.ordered-k1-2");
        async move { done }
    })
    .await;
    let order: Vec<(String, String)> = endpoint
        .hits("x.ordered")
        .iter()
        .map(|h| {
            (
                h.header("ce-id").to_string(),
                h.header("switchyard-attempt").to_string(),
            )
        })
        .collect();
    let position = |id: &str, attempt: &str| {
        order
            .iter()
            .position(|(i, a)| i == id && a == attempt)
            .unwrap_or_else(|| panic!("{id} attempt {attempt} in {order:?}"))
    };
    assert!(
        position("x.ordered-k1-0", "2") < position("x.ordered-k1-1", "1"),
        "{order:?}"
    );
    assert!(
        position("x.ordered-k1-1", "1") < position("x.ordered-k1-2", "1"),
        "{order:?}"
    );
    assert!(
        position("x.ordered-k2-0", "1") < position("x.ordered-k1-0", "2"),
        "another key is not held back: {order:?}"
    );

    // max_attempts 2: a 503 twice dead-letters with its metadata.
    let admin = broker.admin().await;
    let dead = until_dead_letters(&admin, "always", 1)
        .await
        .remove(0)
        .dead_letter
        .expect("metadata");
    assert_eq!(dead.attempts, 2);
    assert!(dead.last_reason.contains("503"), "{}", dead.last_reason);
    assert_eq!(endpoint.hits("x.always").len(), 2);

    // rate_limit 20/s: 40 more events take at least a second (bursts of
    // up to one second's worth).
    let started = std::time::Instant::now();
    let burst: Vec<_> = (0..40)
        .map(|n| {
            event(
                &format!("x.ordered-r{n}"),
                "x.ordered",
                &format!("r{n}"),
                serde_json::json!({}),
            )
        })
        .collect();
    client
        .publish_batch("default", burst)
        .await
        .expect("publish");
    eventually("the burst is pushed", || {
        let done = endpoint.hits("x.ordered").len() >= 45;
        async move { done }
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "rate limited: {:?}",
        started.elapsed()
    );
}
