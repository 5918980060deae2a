//! Replay and skip: seeking a subscription to the earliest event, to an
//! offset, to a time, and to the latest event.

mod support;

use std::time::{Duration, SystemTime};
use support::*;
use switchyard_sdk::proto;
use switchyard_sdk::proto::seek_subscription_request::Target;

const CONFIG: &str = "
topics:
  - name: orders
    partitions: 1
subscriptions:
  - name: books
    topic: orders
";

const RULES: &str = "
rules:
  - name: orders
    pattern: {type: [order.placed]}
    targets: [{topic: orders}]
";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads `count` deliveries on a fresh stream, then closes it and waits
/// until the broker has noticed (so the next seek starts clean).
async fn offsets_delivered(broker: &BrokerProcess, count: usize) -> Vec<u64> {
    let mut stream = RawStream::open(&broker.url, "books", 100)
        .await
        .expect("open");
    let mut offsets = Vec::new();
    for _ in 0..count {
        let delivery = stream.next().await.expect("delivery");
        assert_eq!(delivery.attempt, 1, "a replay is a fresh delivery");
        offsets.push(delivery.offset);
    }
    drop(stream);
    let admin = broker.admin().await;
    eventually("the stream is closed on the broker", || {
        let mut admin = admin.clone();
        async move { describe(&mut admin, "books").await.consumers == 0 }
    })
    .await;
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_replays_from_earliest_an_offset_or_a_time_and_skips_to_latest() {
    let (_dir, broker) = start_broker(CONFIG, RULES);
    let client = broker.client().await;
    let publish = |n: u32| {
        event(
            &format!("e{n}"),
            "order.placed",
            "k",
            serde_json::json!({"n": n}),
        )
    };
    for n in 0..3 {
        client
            .publish("default", publish(n))
            .await
            .expect("publish");
    }
    // Separate the append times of e2 and e3 around `middle`.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let middle = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    for n in 3..5 {
        client
            .publish("default", publish(n))
            .await
            .expect("publish");
    }

    // Consume and ack everything.
    let mut stream = RawStream::open(&broker.url, "books", 100)
        .await
        .expect("open");
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(stream.next().await.expect("delivery").delivery_id);
    }
    stream.ack(ids).await;
    let admin = broker.admin().await;
    until_fully_committed(&admin, "books").await;
    drop(stream);
    eventually("the first stream is closed on the broker", || {
        let mut admin = admin.clone();
        async move { describe(&mut admin, "books").await.consumers == 0 }
    })
    .await;

    // Replay everything, from the command line.
    let seeked = broker.cli(&["subscriptions", "seek", "books", "--to-earliest"]);
    assert!(seeked.contains("total lag 5"), "{seeked}");
    assert_eq!(offsets_delivered(&broker, 5).await, [0, 1, 2, 3, 4]);

    let mut admin = broker.admin().await;
    let seek = |target: Target| proto::SeekSubscriptionRequest {
        name: "books".into(),
        target: Some(target),
    };
    let to_offset = proto::SeekOffsets {
        offsets: [(0, 3)].into_iter().collect(),
    };
    let moved = admin
        .seek_subscription(seek(Target::Offsets(to_offset)))
        .await
        .expect("seek")
        .into_inner();
    assert_eq!(
        moved.partitions[0].committed_offset, 3,
        "the new position is durable at once"
    );
    assert_eq!(offsets_delivered(&broker, 2).await, [3, 4]);

    admin
        .seek_subscription(seek(Target::TimeUnixMs(middle)))
        .await
        .expect("seek");
    assert_eq!(
        offsets_delivered(&broker, 2).await,
        [3, 4],
        "events appended after the time"
    );

    let latest = admin
        .seek_subscription(seek(Target::Latest(true)))
        .await
        .expect("seek")
        .into_inner();
    assert_eq!(latest.total_lag, 0);

    // A new subscription can start at a time, too.
    admin
        .create_subscription(proto::CreateSubscriptionRequest {
            subscription: Some(proto::Subscription {
                name: "late-joiner".into(),
                topic: "orders".into(),
                start: proto::StartPosition::Time as i32,
                start_time_unix_ms: middle,
                ..Default::default()
            }),
        })
        .await
        .expect("create");
    let joined = describe(&mut admin, "late-joiner").await;
    assert_eq!(
        joined.partitions[0].committed_offset, 3,
        "starts at the first event after the time"
    );

    let bad = proto::SeekOffsets {
        offsets: [(7, 0)].into_iter().collect(),
    };
    let err = admin
        .seek_subscription(seek(Target::Offsets(bad)))
        .await
        .expect_err("no partition 7");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("partition 7"), "{}", err.message());
}
