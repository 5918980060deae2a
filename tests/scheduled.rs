//! Delayed and scheduled events end to end: stored at once, routed no
//! earlier than their `deliverafter` time, across a SIGKILL and restart;
//! cancelled ones never arrive; bad times are refused.

mod support;

use std::time::{Duration, SystemTime};
use support::*;
use switchyard_sdk::{Event, proto};

const CONFIG: &str = "
limits:
  max_delay: 1h
  max_scheduled: 3
topics:
  - name: orders
    partitions: 1
subscriptions:
  - name: timeouts
    topic: orders
";

const RULES: &str = "
rules:
  - name: timeouts
    pattern:
      type: [com.example.payment.timed_out]
    targets:
      - topic: orders
";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn timeout_event(id: &str, delay: Duration) -> proto::CloudEvent {
    Event::new("/orders", "com.example.payment.timed_out")
        .id(id)
        .partition_key(id)
        .deliver_after(delay)
        .json(&serde_json::json!({"orderId": id}))
        .expect("json")
}

/// The next delivery's event id and when it arrived (ms), acked.
async fn receive(stream: &mut RawStream) -> (String, i64) {
    let delivery = stream.next().await.expect("delivery");
    let at = now_ms();
    stream.ack(vec![delivery.delivery_id.clone()]).await;
    (delivery.event.map(|e| e.id).unwrap_or_default(), at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_events_arrive_no_earlier_than_their_time_even_across_a_crash() {
    let (dir, mut broker) = start_broker(CONFIG, RULES);
    let client = broker.client().await;
    let first = client
        .publish("default", timeout_event("t1", Duration::from_millis(700)))
        .await
        .expect("publish");
    let first_at = first.deliver_after_unix_ms.expect("scheduled");
    assert!(first.rules.is_empty(), "routed when it fires, not now");
    assert_eq!(first.offsets[0].topic, "__scheduled");
    let crashed = client
        .publish("default", timeout_event("t2", Duration::from_millis(1500)))
        .await
        .expect("publish");
    let crashed_at = crashed.deliver_after_unix_ms.expect("scheduled");
    let listed = broker.cli(&["scheduled", "list"]);
    assert!(
        listed.starts_with("2 scheduled event(s) pending"),
        "{listed}"
    );
    assert!(
        listed.find("t1") < listed.find("t2"),
        "next first:\n{listed}"
    );

    let mut stream = RawStream::open(&broker.url, "timeouts", 10)
        .await
        .expect("open");
    let (id, at) = receive(&mut stream).await;
    assert_eq!(id, "t1");
    assert!(at >= first_at, "delivered {} ms early", first_at - at);
    until_fully_committed(&broker.admin().await, "timeouts").await;
    drop(stream);

    // SIGKILL before t2 fires: the restarted broker re-arms it.
    broker.kill();
    assert!(now_ms() < crashed_at, "killed before t2 was due");
    let broker = BrokerProcess::start(dir.path());
    let mut stream = RawStream::open(&broker.url, "timeouts", 10)
        .await
        .expect("open");
    let (id, at) = receive(&mut stream).await;
    assert_eq!(id, "t2");
    assert!(at >= crashed_at, "delivered {} ms early", crashed_at - at);
    let listed = broker.cli(&["scheduled", "list"]);
    assert!(
        listed.starts_with("0 scheduled event(s) pending"),
        "{listed}"
    );
    let metrics = broker.metrics();
    assert!(
        metrics.contains("switchyard_events_routed_total{bus=\"default\",rule=\"timeouts\"} 1"),
        "t2 was routed by the restarted broker\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_event_never_arrives_and_stays_cancelled_after_a_restart() {
    let (dir, mut broker) = start_broker(CONFIG, RULES);
    let client = broker.client().await;
    for (id, delay) in [("cancelled", 400), ("sentinel", 900)] {
        client
            .publish("default", timeout_event(id, Duration::from_millis(delay)))
            .await
            .expect("publish");
    }
    let out = broker.cli(&["scheduled", "cancel", "cancelled", "--source", "/orders"]);
    assert!(out.contains("cancelled scheduled event cancelled"), "{out}");
    let mut admin = broker.admin().await;
    let again = admin
        .cancel_scheduled(proto::CancelScheduledRequest {
            source: "/orders".into(),
            id: "cancelled".into(),
            ..Default::default()
        })
        .await
        .expect_err("already cancelled");
    assert_eq!(again.code(), tonic::Code::NotFound);
    assert!(again.message().contains("cancelled"), "{}", again.message());

    // The sentinel fires after the cancelled one's time: if the cancelled
    // event were going to arrive, it would have come first.
    let mut stream = RawStream::open(&broker.url, "timeouts", 10)
        .await
        .expect("open");
    let (id, _) = receive(&mut stream).await;
    assert_eq!(id, "sentinel");
    until_fully_committed(&admin, "timeouts").await;
    drop(stream);
    broker.stop();
    let broker = BrokerProcess::start(dir.path());
    let listed = broker.cli(&["scheduled", "list"]);
    assert!(
        listed.starts_with("0 scheduled event(s) pending"),
        "{listed}"
    );
    let description = describe(&mut broker.admin().await, "timeouts").await;
    assert_eq!(
        description.total_lag, 0,
        "nothing new was routed after the restart"
    );
}

#[tokio::test]
async fn bad_delivery_times_are_refused_naming_the_attribute() {
    let (_dir, broker) = start_broker(CONFIG, RULES);
    let client = broker.client().await;
    let too_far = client
        .publish(
            "default",
            timeout_event("far", Duration::from_secs(2 * 3600)),
        )
        .await
        .expect_err("beyond max_delay");
    assert!(too_far.to_string().contains("deliverafter"), "{too_far}");
    assert!(too_far.to_string().contains("max_delay"), "{too_far}");
    let garbage = Event::new("/orders", "com.example.payment.timed_out")
        .extension("deliverafter", "in ten minutes")
        .build();
    let refused = client
        .publish("default", garbage)
        .await
        .expect_err("not a time");
    assert!(refused.to_string().contains("RFC 3339"), "{refused}");
    // At most limits.max_scheduled (3) pending at once.
    for n in 0..3 {
        client
            .publish(
                "default",
                timeout_event(&format!("p{n}"), Duration::from_secs(60)),
            )
            .await
            .expect("within the limit");
    }
    let full = client
        .publish("default", timeout_event("p3", Duration::from_secs(60)))
        .await
        .expect_err("over the limit");
    assert!(full.to_string().contains("ResourceExhausted"), "{full}");
    assert!(full.to_string().contains("max_scheduled"), "{full}");
    // A time in the past routes at once.
    let past = Event::new("/orders", "com.example.payment.timed_out")
        .deliver_at(SystemTime::now() - Duration::from_secs(60))
        .build();
    let routed = client.publish("default", past).await.expect("publish");
    assert_eq!(routed.rules, ["timeouts"]);
    assert!(routed.deliver_after_unix_ms.is_none());
}
