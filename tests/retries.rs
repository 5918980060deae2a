//! Failure paths end to end: backoff that grows and caps, deadline expiry,
//! nack with a Retry-After, and dead-lettering with failure metadata.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use switchyard_sdk::{RetryAfter, proto};

const CONFIG: &str = "
topics:
  - name: orders
    partitions: 1
subscriptions:
  - name: flaky
    topic: orders
    ack_deadline: 1s
    max_attempts: 3
    backoff: {initial: 200ms, multiplier: 2.0, max: 1s, jitter: 0.0}
    dead_letter_topic: orders.dlq
  - name: patient
    topic: orders
    ack_deadline: 1s
    backoff: {initial: 100ms, multiplier: 2.0, max: 1s, jitter: 0.0}
  - name: throttled
    topic: orders
    rate_limit: 20
  - name: big-only
    topic: orders
    filter: {data: {total: [{numeric: ['>', 100]}]}}
  - name: twice
    topic: orders
    max_attempts: 2
    backoff: {initial: 200ms, multiplier: 100.0, max: 1h, jitter: 0.0}
    dead_letter_topic: twice.dlq
";

const RULES: &str = "
rules:
  - name: orders
    pattern: {type: [order.placed]}
    targets: [{topic: orders}]
";

/// (attempt, when) per handled delivery.
type Attempts = Arc<Mutex<Vec<(u32, Instant)>>>;

/// Notes that a handler ran for `attempt`, now.
fn record(attempts: &Attempts, attempt: u32) {
    attempts
        .lock()
        .expect("lock")
        .push((attempt, Instant::now()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_back_off_then_dead_letter_with_metadata() {
    let (_dir, broker) = start_broker(CONFIG, RULES);
    let client = broker.client().await;
    let attempts: Attempts = Arc::default();
    let recorded = Arc::clone(&attempts);
    let subscriber = tokio::spawn(client.subscribe("flaky").run(move |delivery| {
        let recorded = Arc::clone(&recorded);
        async move {
            record(&recorded, delivery.attempt);
            Err::<(), String>("payment service down".into())
        }
    }));
    let published = client
        .publish(
            "default",
            event(
                "doomed",
                "order.placed",
                "k",
                serde_json::json!({"total": 5}),
            ),
        )
        .await
        .expect("publish");

    // The dead-letter topic receives it after three attempts.
    let mut admin = broker.admin().await;
    admin
        .create_subscription(proto::CreateSubscriptionRequest {
            subscription: Some(proto::Subscription {
                name: "dlq-reader".into(),
                topic: "orders.dlq".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("subscribe to the dead-letter topic");
    let mut dlq = RawStream::open(&broker.url, "dlq-reader", 10)
        .await
        .expect("open");
    let dead = dlq.next().await.expect("a dead letter");
    subscriber.abort();
    assert_eq!(
        dead.event.as_ref().expect("event").id,
        "doomed",
        "the original event, unchanged"
    );
    assert_eq!(dead.rules, ["orders"]);
    let metadata = dead.dead_letter.expect("failure metadata");
    assert_eq!(metadata.source_topic, "orders");
    assert_eq!(metadata.source_partition, published.offsets[0].partition);
    assert_eq!(metadata.source_offset, published.offsets[0].offset);
    assert_eq!(metadata.subscription, "flaky");
    assert_eq!(metadata.attempts, 3);
    assert_eq!(metadata.last_reason, "payment service down");
    assert!(metadata.first_attempt_unix_ms <= metadata.last_attempt_unix_ms);

    let attempts = attempts.lock().expect("lock").clone();
    let numbers: Vec<u32> = attempts.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [1, 2, 3], "three attempts, then no more");
    let first_gap = attempts[1].1 - attempts[0].1;
    let second_gap = attempts[2].1 - attempts[1].1;
    assert!(
        first_gap >= Duration::from_millis(190),
        "first retry waits the initial backoff: {first_gap:?}"
    );
    assert!(
        second_gap >= Duration::from_millis(390),
        "the second waits twice as long: {second_gap:?}"
    );

    // The dead letters of the subscription can be listed.
    let listed_text = broker.cli(&["dlq", "list", "flaky"]);
    assert!(
        listed_text.contains("orders.dlq/")
            && listed_text.contains("doomed")
            && listed_text.contains("payment service down"),
        "{listed_text}"
    );
    let no_dlq = admin
        .list_dead_letters(proto::ListDeadLettersRequest {
            subscription: "patient".into(),
            ..Default::default()
        })
        .await
        .expect_err("patient has no dead-letter topic");
    assert!(
        no_dlq.message().contains("no dead-letter topic"),
        "{}",
        no_dlq.message()
    );

    // Done on the source: the subscription moved past it.
    until_fully_committed(&admin, "flaky").await;
    assert_eq!(describe(&mut admin, "flaky").await.dead_letters, 1);
    let described = broker.cli(&["subscriptions", "describe", "flaky"]);
    assert!(
        described.contains("(1 dead letter(s) waiting: switchyard dlq list flaky)"),
        "{described}"
    );

    // Redrive: the event comes back to `flaky` only, afresh, unchanged.
    let redrive_text = broker.cli(&["dlq", "redrive", "flaky"]);
    assert!(
        redrive_text.contains("redrove 1 dead letter"),
        "{redrive_text}"
    );
    let mut again = RawStream::open(&broker.url, "flaky", 10)
        .await
        .expect("open");
    let redriven = again.next().await.expect("the redriven event");
    assert_eq!(redriven.attempt, 1, "delivered afresh");
    assert_eq!(redriven.topic, "flaky.redrive");
    assert_eq!(redriven.event.as_ref().expect("event").id, "doomed");
    assert!(redriven.dead_letter.is_none());
    again.ack(vec![redriven.delivery_id]).await;
    assert_eq!(
        describe(&mut admin, "flaky").await.dead_letters,
        0,
        "a redriven dead letter no longer waits"
    );
    let listed_text = broker.cli(&["dlq", "list", "flaky"]);
    assert!(listed_text.contains("redriven"), "{listed_text}");
    let orders_end: u64 = describe(&mut admin, "patient")
        .await
        .partitions
        .iter()
        .map(|p| p.end_offset)
        .sum();
    assert_eq!(
        orders_end, 1,
        "other subscribers of the topic do not see it again"
    );
    assert_eq!(
        redrive_all(&admin, "flaky").await,
        0,
        "a dead letter is redriven at most once"
    );
    until_fully_committed(&admin, "flaky").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_with_retry_after_replaces_the_backoff() {
    let (_dir, broker) = start_broker(CONFIG, RULES);
    let client = broker.client().await;
    let attempts: Attempts = Arc::default();
    let recorded = Arc::clone(&attempts);
    let subscriber = tokio::spawn(client.subscribe("patient").run(move |delivery| {
        let recorded = Arc::clone(&recorded);
        async move {
            record(&recorded, delivery.attempt);
            if delivery.attempt == 1 {
                Err(RetryAfter::new(Duration::from_millis(700), "rate limited"))
            } else {
                Ok(())
            }
        }
    }));
    client
        .publish(
            "default",
            event("later", "order.placed", "k", serde_json::json!({})),
        )
        .await
        .expect("publish");
    eventually("the retry was handled", || {
        let attempts = Arc::clone(&attempts);
        async move { attempts.lock().expect("lock").len() >= 2 }
    })
    .await;
    subscriber.abort();
    let attempts = attempts.lock().expect("lock").clone();
    let gap = attempts[1].1 - attempts[0].1;
    assert!(
        gap >= Duration::from_millis(690),
        "waited the Retry-After, not the 100 ms backoff: {gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_ack_deadline_redelivers_with_the_next_attempt() {
    let (_dir, broker) = start_broker(CONFIG, RULES);
    let client = broker.client().await;
    client
        .publish(
            "default",
            event("slow", "order.placed", "k", serde_json::json!({})),
        )
        .await
        .expect("publish");
    let mut stream = RawStream::open(&broker.url, "patient", 10)
        .await
        .expect("open");
    let first = stream.next().await.expect("delivery");
    let delivered_at = Instant::now();
    assert_eq!(first.attempt, 1);
    // Never settled: after the 1 s deadline (plus the backoff) it comes again.
    let again = stream.next().await.expect("redelivery");
    assert_eq!(again.offset, first.offset);
    assert_eq!(again.attempt, 2);
    assert!(
        delivered_at.elapsed() >= Duration::from_millis(900),
        "not before the deadline"
    );
    let mut admin = broker.admin().await;
    let description = describe(&mut admin, "patient").await;
    assert_eq!(description.partitions[0].in_flight, 1);
    assert!(
        description.partitions[0].oldest_unacked_age_ms >= 900,
        "lag in time is reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_middle_of_retries_loses_nothing_and_restarts_attempts() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), CONFIG, RULES);
    let mut broker = BrokerProcess::start(dir.path());
    let client = broker.client().await;
    client
        .publish(
            "default",
            event("survivor", "order.placed", "k", serde_json::json!({})),
        )
        .await
        .expect("publish");
    // Fail it twice (of three allowed attempts), then crash the broker.
    let mut stream = RawStream::open(&broker.url, "flaky", 10)
        .await
        .expect("open");
    for expected in 1..=2 {
        let delivery = stream.next().await.expect("delivery");
        assert_eq!(delivery.attempt, expected);
        stream.nack(delivery.delivery_id, "still failing").await;
    }
    broker.kill();

    // Attempt counts are not persisted: after the restart the event starts
    // again at attempt 1 (documented), and it is not lost.
    let broker = BrokerProcess::start(dir.path());
    let mut stream = RawStream::open(&broker.url, "flaky", 10)
        .await
        .expect("open");
    let delivery = stream
        .next()
        .await
        .expect("delivered again after the crash");
    assert_eq!(delivery.event.expect("event").id, "survivor");
    assert_eq!(delivery.attempt, 1);
}

const ORDERED_CONFIG: &str = "
topics:
  - name: orders
    partitions: 1
subscriptions:
  - name: ordered
    topic: orders
    ordering: by_key
    max_attempts: 2
    backoff: {initial: 1s, multiplier: 2.0, max: 2s, jitter: 0.0}
    dead_letter_topic: orders.dlq
";

/// (event id, handler start, handler end, succeeded)
type Handled = Arc<Mutex<Vec<(String, Instant, Instant, bool)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_by_key_delivers_in_order_and_a_poison_event_blocks_only_its_key() {
    let (_dir, broker) = start_broker(ORDERED_CONFIG, RULES);
    let client = broker.client().await;
    let handled: Handled = Arc::default();
    let recorded = Arc::clone(&handled);
    let subscriber = tokio::spawn(client.subscribe("ordered").max_in_flight(10).run(
        move |delivery| {
            let recorded = Arc::clone(&recorded);
            async move {
                let started = Instant::now();
                tokio::time::sleep(Duration::from_millis(20)).await;
                let id = delivery.event.id.clone();
                let ok = id != "a1";
                recorded
                    .lock()
                    .expect("lock")
                    .push((id, started, Instant::now(), ok));
                if ok {
                    Ok(())
                } else {
                    Err("poison".to_string())
                }
            }
        },
    ));
    for (id, key) in [
        ("a1", "A"),
        ("b1", "B"),
        ("a2", "A"),
        ("b2", "B"),
        ("a3", "A"),
    ] {
        client
            .publish(
                "default",
                event(id, "order.placed", key, serde_json::json!({})),
            )
            .await
            .expect("publish");
    }
    let mut admin = broker.admin().await;
    eventually("key A is parked behind its failing event", || {
        let mut admin = admin.clone();
        async move { describe(&mut admin, "ordered").await.partitions[0].parked_keys == ["A"] }
    })
    .await;
    until_fully_committed(&admin, "ordered").await;
    subscriber.abort();
    assert!(
        describe(&mut admin, "ordered").await.partitions[0]
            .parked_keys
            .is_empty()
    );

    let handled = handled.lock().expect("lock").clone();
    let first = |id: &str| handled.iter().find(|h| h.0 == id).cloned().expect(id);
    let last = |id: &str| handled.iter().rev().find(|h| h.0 == id).cloned().expect(id);
    let a1_attempts = handled.iter().filter(|h| h.0 == "a1").count();
    assert_eq!(
        a1_attempts, 2,
        "the poison event was tried max_attempts times"
    );
    // Key B flowed while key A was blocked.
    assert!(
        last("b2").2 < last("a1").1,
        "b2 finished before a1's last attempt began"
    );
    // Key A waited for its poison event to be dead-lettered, then went on in order.
    assert!(first("a2").1 >= last("a1").2, "a2 only after a1 is done");
    assert!(first("a3").1 >= last("a2").2, "a3 only after a2 is acked");
    let order: Vec<&str> = handled
        .iter()
        .filter(|h| h.3)
        .map(|h| h.0.as_str())
        .collect();
    let a_order: Vec<&str> = order
        .iter()
        .copied()
        .filter(|id| id.starts_with('a'))
        .collect();
    let b_order: Vec<&str> = order
        .iter()
        .copied()
        .filter(|id| id.starts_with('b'))
        .collect();
    assert_eq!(a_order, ["a2", "a3"]);
    assert_eq!(b_order, ["b1", "b2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_work_extends_the_deadline_instead_of_being_redelivered() {
    let (_dir, broker) = start_broker(CONFIG, RULES);
    let client = broker.client().await;
    let attempts: Attempts = Arc::default();
    let recorded = Arc::clone(&attempts);
    // `patient` has a 1 s ack deadline; the work takes 2.5 s.
    let subscriber = tokio::spawn(client.subscribe("patient").run(move |delivery| {
        let recorded = Arc::clone(&recorded);
        async move {
            record(&recorded, delivery.attempt);
            delivery
                .extend_deadline(Duration::from_secs(5))
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(2500)).await;
            Ok::<(), String>(())
        }
    }));
    client
        .publish(
            "default",
            event("long", "order.placed", "k", serde_json::json!({})),
        )
        .await
        .expect("publish");
    let admin = broker.admin().await;
    until_fully_committed(&admin, "patient").await;
    subscriber.abort();
    let attempts = attempts.lock().expect("lock").clone();
    assert_eq!(
        attempts.len(),
        1,
        "not redelivered while the work went on: {attempts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_spaces_deliveries_out() {
    let (_dir, broker) = start_broker(CONFIG, RULES);
    let client = broker.client().await;
    let events = (0..50)
        .map(|n| {
            event(
                &format!("r{n}"),
                "order.placed",
                &format!("k{n}"),
                serde_json::json!({}),
            )
        })
        .collect();
    client
        .publish_batch("default", events)
        .await
        .expect("publish");
    let mut stream = RawStream::open(&broker.url, "throttled", 100)
        .await
        .expect("open");
    let first = stream.next().await.expect("delivery");
    let started = Instant::now();
    stream.ack(vec![first.delivery_id]).await;
    for _ in 1..50 {
        let delivery = stream.next().await.expect("delivery");
        stream.ack(vec![delivery.delivery_id]).await;
    }
    // 20/s with a one-second burst: the last 30 need at least 1.5 s.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1300),
        "50 deliveries at 20/s took only {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_filter_skips_events_it_does_not_want() {
    let (_dir, broker) = start_broker(CONFIG, RULES);
    let client = broker.client().await;
    let events = [("small", 5), ("big", 500), ("tiny", 1), ("huge", 9000)]
        .into_iter()
        .map(|(id, total)| {
            event(
                id,
                "order.placed",
                id,
                serde_json::json!({ "total": total }),
            )
        })
        .collect();
    client
        .publish_batch("default", events)
        .await
        .expect("publish");
    let mut stream = RawStream::open(&broker.url, "big-only", 10)
        .await
        .expect("open");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let delivery = stream.next().await.expect("delivery");
        ids.push(delivery.event.expect("event").id);
        stream.ack(vec![delivery.delivery_id]).await;
    }
    assert_eq!(ids, ["big", "huge"]);
    let admin = broker.admin().await;
    until_fully_committed(&admin, "big-only").await;
    let mut admin = broker.admin().await;
    let bad = admin
        .create_subscription(proto::CreateSubscriptionRequest {
            subscription: Some(proto::Subscription {
                name: "bad-filter".into(),
                topic: "orders".into(),
                filter_json: r#"{"data": {"total": 5}}"#.into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("invalid pattern");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(
        bad.message().contains("filter") && bad.message().contains("pattern.data.total"),
        "{}",
        bad.message()
    );
}

/// Now, in ms since the Unix epoch.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Nacks deliveries of `stream` until attempt `last` was nacked; returns
/// when that last attempt reached the subscriber (ms since the epoch).
async fn fail_until(stream: &mut RawStream, last: u32) -> i64 {
    loop {
        let delivery = stream.next().await.expect("a delivery");
        let at = wall_ms();
        let attempt = delivery.attempt;
        stream.nack(delivery.delivery_id, "still broken").await;
        if attempt == last {
            return at;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_failure_is_dead_lettered_at_once_and_a_redriven_one_keeps_its_source() {
    let (_dir, broker) = start_broker(CONFIG, RULES);
    let client = broker.client().await;
    let admin = broker.admin().await;
    let published = client
        .publish(
            "default",
            event("e1", "order.placed", "k", serde_json::json!({})),
        )
        .await
        .expect("publish");
    let mut stream = RawStream::open(&broker.url, "twice", 1)
        .await
        .expect("open");
    // The retry after attempt 2 would wait 20 s (200 ms × 100): the dead
    // letter must not wait for it.
    let last_seen = fail_until(&mut stream, 2).await;
    let dead = until_dead_letters(&admin, "twice", 1).await;
    let metadata = dead[0].dead_letter.clone().expect("metadata");
    assert_eq!(metadata.attempts, 2);
    assert!(
        metadata.last_attempt_unix_ms <= last_seen,
        "the time of the last attempt ({}), not of the write after it (attempt seen at {last_seen})",
        metadata.last_attempt_unix_ms
    );
    assert!(metadata.first_attempt_unix_ms < metadata.last_attempt_unix_ms);

    // Redriven, it fails twice again: the new dead letter still names
    // where the event first failed, not the redrive topic.
    assert_eq!(redrive_all(&admin, "twice").await, 1);
    let redriven = stream.next().await.expect("redriven");
    assert_eq!(redriven.topic, "twice.redrive");
    assert!(
        redriven.dead_letter.is_none(),
        "subscribers see no metadata"
    );
    stream.nack(redriven.delivery_id, "broken again").await;
    fail_until(&mut stream, 2).await;
    let dead = until_dead_letters(&admin, "twice", 2).await;
    let again = dead
        .iter()
        .filter_map(|d| d.dead_letter.as_ref())
        .find(|m| m.last_reason == "still broken" && !m.redriven)
        .expect("the second dead letter");
    assert_eq!(again.source_topic, "orders");
    assert_eq!(again.source_partition, published.offsets[0].partition);
    assert_eq!(again.source_offset, published.offsets[0].offset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_events_waiting_for_a_retry_and_the_lag_of_a_subscription_nobody_consumes() {
    let (_dir, broker) = start_broker(CONFIG, RULES);
    let client = broker.client().await;
    let mut admin = broker.admin().await;
    publish_stored(
        &client,
        vec![event("w1", "order.placed", "k", serde_json::json!({}))],
    )
    .await;
    // Nobody consumes `patient` yet: its lag in time is the event's age,
    // as the lag metric says, not 0.
    eventually("the lag has an age", || {
        let mut admin = admin.clone();
        async move { describe(&mut admin, "patient").await.partitions[0].oldest_unacked_age_ms > 0 }
    })
    .await;
    // A nack with a Retry-After of a minute: the event waits, visibly.
    let mut stream = RawStream::open(&broker.url, "patient", 1)
        .await
        .expect("open");
    let delivery = stream.next().await.expect("delivery");
    let asked_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    stream
        .nack_after(delivery.delivery_id, "come back later", 60_000)
        .await;
    eventually("the retry is waiting", || {
        let mut admin = admin.clone();
        async move { describe(&mut admin, "patient").await.partitions[0].waiting_retry == 1 }
    })
    .await;
    let partition = describe(&mut admin, "patient").await.partitions[0].clone();
    assert!(
        partition.next_retry_unix_ms >= asked_at + 59_000,
        "due a minute after the nack: {partition:?}"
    );
    assert!(partition.oldest_unacked_age_ms > 0, "{partition:?}");
}
