//! Every documented limit on network input, at the limit and one over:
//! event data, extension count, attribute length, batch size, request
//! size, pattern depth, and concurrent streams per connection.

mod support;

use prost::Message;
use std::collections::HashMap;
use support::*;
use switchyard_sdk::proto;
use tonic::Code;

const CONFIG: &str = "
limits:
  max_data_bytes: 4096
  max_batch_events: 5
  max_extensions: 3
  max_attribute_bytes: 64
  max_request_bytes: 8192
  max_streams_per_connection: 2
topics:
  - name: orders
    partitions: 1
subscriptions:
  - name: billing
    topic: orders
";

const RULES: &str = "
rules:
  - name: all
    pattern:
      source: [{prefix: /}]
    targets:
      - topic: orders
";

fn with_data(id: &str, bytes: usize) -> proto::CloudEvent {
    let mut event = event(id, "t", "k", serde_json::json!({}));
    event.data_content_type = Some("application/octet-stream".into());
    event.data = Some(proto::cloud_event::Data::BinaryData(vec![b'x'; bytes]));
    event
}

fn with_extensions(id: &str, count: usize, value_bytes: usize) -> proto::CloudEvent {
    let mut event = event(id, "t", "k", serde_json::json!({}));
    event.extensions = (0..count)
        .map(|n| (format!("ext{n}"), "v".repeat(value_bytes)))
        .collect::<HashMap<_, _>>();
    event
}

fn request(events: Vec<proto::CloudEvent>) -> proto::PublishRequest {
    proto::PublishRequest {
        bus: "default".into(),
        events,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_and_request_limit_holds_at_the_limit_and_refuses_one_more() {
    let (_dir, broker) = start_broker(CONFIG, RULES);
    let client = broker.client().await;
    let mut publisher = proto::publisher_client::PublisherClient::new(client.authorized_channel());

    // Per event: data, extension count, attribute length.
    let events = vec![
        with_data("data-at", 4096),
        with_data("data-over", 4097),
        with_extensions("ext-at", 3, 64),
        with_extensions("ext-over", 4, 1),
        with_extensions("attr-over", 1, 65),
    ];
    let mut results = Vec::new();
    for event in events {
        let response = publisher
            .publish(request(vec![event]))
            .await
            .expect("the request is fine");
        results.extend(response.into_inner().results);
    }
    let outcome = |n: usize| results[n].error.as_ref().map(|e| (e.code, e.field.clone()));
    assert_eq!(outcome(0), None, "4096 bytes of data: stored");
    assert_eq!(
        outcome(1),
        Some((Code::InvalidArgument as i32, "data".into()))
    );
    assert_eq!(outcome(2), None, "3 extensions of 64 bytes: stored");
    assert_eq!(
        outcome(3),
        Some((Code::InvalidArgument as i32, "extensions".into()))
    );
    assert_eq!(
        outcome(4),
        Some((Code::InvalidArgument as i32, "extensions.ext0".into()))
    );

    // Per request: batch size.
    let batch =
        |n: usize, tag: &str| request((0..n).map(|i| with_data(&format!("{tag}{i}"), 1)).collect());
    publisher
        .publish(batch(5, "b"))
        .await
        .expect("5 events: the limit");
    let refused = publisher
        .publish(batch(6, "c"))
        .await
        .expect_err("6 events");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains('6') && refused.message().contains('5'),
        "{}",
        refused.message()
    );

    // Per request: encoded size, exactly 8192 bytes and one more.
    let sized = |total: usize, tag: &str| {
        let mut request = request(vec![
            with_data(&format!("{tag}1"), 4050),
            with_data(&format!("{tag}2"), 0),
        ]);
        let padding = total - request.encoded_len();
        // The length prefix of the padded field grows with it: settle on
        // the padding that gives exactly `total`.
        for extra in (padding.saturating_sub(4)..=padding).rev() {
            request.events[1].data = Some(proto::cloud_event::Data::BinaryData(vec![b'y'; extra]));
            if request.encoded_len() == total {
                return request;
            }
        }
        panic!("no padding gives {total} bytes");
    };
    let at = sized(8192, "r");
    assert_eq!(at.encoded_len(), 8192);
    let stored = publisher
        .publish(at)
        .await
        .expect("8192 bytes: the limit")
        .into_inner();
    assert!(
        stored.results.iter().all(|r| r.error.is_none()),
        "{stored:?}"
    );
    let refused = publisher
        .publish(sized(8193, "s"))
        .await
        .expect_err("8193 bytes");
    assert_eq!(refused.code(), Code::OutOfRange, "{}", refused.message());
    assert!(refused.message().contains("8193"), "{}", refused.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_patterns_deeper_than_the_limit_are_refused() {
    let (_dir, broker) = start_broker(CONFIG, RULES);
    let mut admin = broker.admin().await;
    let nested = |levels: usize| {
        (1..=levels)
            .rev()
            .fold(
                serde_json::json!(["x"]),
                |inner, level| serde_json::json!({ format!("f{level}"): inner }),
            )
            .to_string()
    };
    let create = |name: &str, levels: usize| proto::CreateSubscriptionRequest {
        subscription: Some(proto::Subscription {
            name: name.into(),
            topic: "orders".into(),
            filter_json: nested(levels),
            ..Default::default()
        }),
    };
    admin
        .create_subscription(create("deep", 10))
        .await
        .expect("10 levels: the limit");
    let refused = admin
        .create_subscription(create("deeper", 11))
        .await
        .expect_err("11 levels");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("at most 10 levels"),
        "{}",
        refused.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_gets_at_most_its_limit_of_concurrent_streams() {
    let (_dir, broker) = start_broker(CONFIG, RULES);
    let client = broker.client().await;
    let first = RawStream::open_with(&client, "billing", 1)
        .await
        .expect("stream 1");
    let _second = RawStream::open_with(&client, "billing", 1)
        .await
        .expect("stream 2");
    // The third waits for a free stream on this connection...
    let third = tokio::spawn({
        let client = client.clone();
        async move { RawStream::open_with(&client, "billing", 1).await.is_ok() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "a third stream is held back");
    // ...while another connection is not affected.
    let other = broker.client().await;
    RawStream::open_with(&other, "billing", 1)
        .await
        .expect("another connection");
    // When one ends, the third opens.
    drop(first);
    let opened = tokio::time::timeout(TIMEOUT, third)
        .await
        .expect("in time")
        .expect("task");
    assert!(opened, "the third stream opened once the first ended");
}
