//! Bad input gets a clear error with the right status code, and loses
//! nothing that was valid.

mod support;

use support::*;
use switchyard_sdk::{SdkError, proto};
use tonic::Code;

const CONFIG: &str = "
limits:
  max_data_bytes: 1024
  max_batch_events: 50
topics:
  - name: orders
    partitions: 2
subscriptions:
  - name: billing
    topic: orders
";

fn rejection(result: &Result<switchyard_sdk::Published, SdkError>) -> (Code, String, String) {
    match result {
        Err(SdkError::Rejected {
            code,
            field,
            message,
            ..
        }) => (*code, field.clone(), message.clone()),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_rejected_by_field_and_the_rest_of_the_batch_is_stored() {
    let (_dir, broker) = start_broker(CONFIG, ORDER_RULES);
    let client = broker.client().await;
    let good = |id: &str| event(id, "order.placed", "k", serde_json::json!({}));
    let mut no_id = good("x");
    no_id.id.clear();
    let mut no_source = good("no-source");
    no_source.source.clear();
    let mut no_type = good("no-type");
    no_type.r#type.clear();
    let mut bad_version = good("bad-version");
    bad_version.spec_version = "0.3".into();
    let too_big = switchyard_sdk::Event::new("/tests", "order.placed")
        .id("too-big")
        .binary("application/octet-stream", vec![7; 2000]);
    let batch = vec![
        good("ok-1"),
        no_id,
        no_source,
        no_type,
        bad_version,
        too_big,
        good("ok-2"),
    ];
    let results = client
        .publish_batch("default", batch)
        .await
        .expect("request accepted");
    assert!(
        results[0].is_ok() && results[6].is_ok(),
        "good events stored: {results:?}"
    );
    let expectations = [
        (1, "id"),
        (2, "source"),
        (3, "type"),
        (4, "specversion"),
        (5, "data"),
    ];
    for (index, field) in expectations {
        let (code, got_field, message) = rejection(&results[index]);
        assert_eq!(code, Code::InvalidArgument, "{message}");
        assert_eq!(got_field, field, "{message}");
        assert!(
            message.contains(field),
            "message names the field: {message}"
        );
    }
    let (_, _, message) = rejection(&results[5]);
    assert!(
        message.contains("2000 bytes") && message.contains("1024 bytes"),
        "{message}"
    );
    let mut admin = broker.admin().await;
    let stored: u64 = describe(&mut admin, "billing")
        .await
        .partitions
        .iter()
        .map(|p| p.end_offset)
        .sum();
    assert_eq!(stored, 2, "exactly the two good events were stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_level_errors_have_the_right_codes() {
    let (_dir, broker) = start_broker(CONFIG, ORDER_RULES);
    let client = broker.client().await;
    let status = |e: SdkError| match e {
        SdkError::Status(status) => status,
        other => panic!("expected a status, got {other:?}"),
    };

    let e = status(
        client
            .publish("payments", event("1", "t", "k", serde_json::json!({})))
            .await
            .expect_err("unknown bus"),
    );
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("'payments'"), "{}", e.message());

    let batch = (0..51)
        .map(|n| event(&n.to_string(), "t", "k", serde_json::json!({})))
        .collect();
    let e = status(
        client
            .publish_batch("default", batch)
            .await
            .expect_err("too many"),
    );
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("51") && e.message().contains("50"),
        "{}",
        e.message()
    );

    let e = RawStream::open(&broker.url, "nope", 1)
        .await
        .err()
        .expect("unknown subscription");
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("'nope'"), "{}", e.message());

    let mut admin = broker.admin().await;
    let e = admin
        .describe_subscription(proto::DescribeSubscriptionRequest {
            name: "ghost".into(),
        })
        .await
        .expect_err("unknown subscription");
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("'ghost'"));

    let e = admin
        .create_subscription(proto::CreateSubscriptionRequest {
            subscription: Some(proto::Subscription {
                name: "s".into(),
                topic: "missing-topic".into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("unknown topic");
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("'missing-topic'"), "{}", e.message());

    let e = admin
        .create_topic(proto::CreateTopicRequest {
            name: "bad/name".into(),
            partitions: 1,
        })
        .await
        .expect_err("bad name");
    assert_eq!(e.code(), Code::InvalidArgument);

    let e = admin
        .delete_topic(proto::DeleteTopicRequest {
            name: "orders".into(),
        })
        .await
        .expect_err("in use");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("billing"), "{}", e.message());

    // Topics a subscription writes to are in use too.
    admin
        .create_subscription(proto::CreateSubscriptionRequest {
            subscription: Some(proto::Subscription {
                name: "audited".into(),
                topic: "orders".into(),
                max_attempts: 1,
                dead_letter_topic: "audited.dlq".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("create");
    for (topic, role) in [
        ("audited.dlq", "dead letters"),
        ("audited.redrive", "redrives"),
    ] {
        let e = admin
            .delete_topic(proto::DeleteTopicRequest { name: topic.into() })
            .await
            .expect_err(topic);
        assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
        assert!(
            e.message().contains("audited") && e.message().contains(role),
            "{}",
            e.message()
        );
    }
}

fn serve_output(
    config: &str,
    rules: &str,
) -> (std::process::Output, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), config, rules);
    let output = std::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    (output, path, dir)
}

#[test]
fn malformed_config_yaml_refuses_to_start_naming_file_and_line() {
    let (output, path, _dir) = serve_output(
        "storage:\n  fsync: always\n  segment_bytez: 5\n",
        ORDER_RULES,
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("segment_bytez") && stderr.contains("line 7"),
        "{stderr}"
    );
}

#[test]
fn malformed_rules_refuse_to_start_naming_file_and_line() {
    let (output, path, _dir) = serve_output("", "rules:\n  - name: x\n    pattern: {type: [a]\n");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let rules = path.with_file_name("rules.yaml");
    assert!(stderr.contains(&rules.display().to_string()), "{stderr}");
    assert!(stderr.contains("line"), "{stderr}");
}

#[tokio::test]
async fn the_broker_internal_topics_cannot_be_created_deleted_or_subscribed() {
    let (_dir, broker) = start_broker(CONFIG, ORDER_RULES);
    let mut admin = broker.admin().await;
    let deleted = admin
        .delete_topic(proto::DeleteTopicRequest {
            name: "__scheduled".into(),
        })
        .await
        .expect_err("reserved");
    assert_eq!(deleted.code(), Code::InvalidArgument);
    assert!(
        deleted.message().contains("reserved"),
        "{}",
        deleted.message()
    );
    let created = admin
        .create_topic(proto::CreateTopicRequest {
            name: "__mine".into(),
            partitions: 1,
        })
        .await
        .expect_err("reserved");
    assert_eq!(created.code(), Code::InvalidArgument);
    let subscribed = admin
        .create_subscription(proto::CreateSubscriptionRequest {
            subscription: Some(proto::Subscription {
                name: "peek".into(),
                topic: "__scheduled.done".into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("reserved");
    assert_eq!(
        subscribed.code(),
        Code::InvalidArgument,
        "{}",
        subscribed.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_rates_and_durations_are_invalid_argument_not_a_panic() {
    let (_dir, broker) = start_broker(CONFIG, ORDER_RULES);
    let mut admin = broker.admin().await;
    let cases = [
        (
            proto::Subscription {
                rate_limit: 1e-300,
                ..Default::default()
            },
            "rate_limit",
        ),
        (
            proto::Subscription {
                backoff: Some(proto::Backoff {
                    initial_ms: 1,
                    multiplier: 2.0,
                    max_ms: u32::MAX,
                    jitter: 0.0,
                }),
                ..Default::default()
            },
            "backoff.max",
        ),
        (
            proto::Subscription {
                start: proto::StartPosition::Time as i32,
                start_time_unix_ms: i64::MAX,
                ..Default::default()
            },
            "start",
        ),
    ];
    for (n, (subscription, field)) in cases.into_iter().enumerate() {
        let name = format!("bad-{n}");
        let e = admin
            .create_subscription(proto::CreateSubscriptionRequest {
                subscription: Some(proto::Subscription {
                    name: name.clone(),
                    topic: "orders".into(),
                    ..subscription
                }),
            })
            .await
            .expect_err(field);
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        assert!(e.message().contains(field), "{}", e.message());
        assert!(
            e.message().contains("allowed") || field == "start",
            "{}",
            e.message()
        );
        let listed = admin
            .list_subscriptions(proto::ListSubscriptionsRequest {})
            .await
            .expect("list")
            .into_inner()
            .subscriptions;
        assert!(listed.iter().all(|s| s.name != name), "not created");
    }
    // The broker is still whole: a valid subscription works.
    let client = broker.client().await;
    publish_stored(
        &client,
        vec![event("1", "order.placed", "k", serde_json::json!({}))],
    )
    .await;
    let mut stream = RawStream::open(&broker.url, "billing", 1)
        .await
        .expect("subscribe");
    stream.next().await.expect("delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_rules_yaml_is_refused_before_parsing_while_publishes_go_on() {
    let (_dir, broker) = start_broker(CONFIG, ORDER_RULES);
    let client = broker.client().await;
    let admin = broker.admin().await;
    let hostile = format!("rules: {}{}", "[".repeat(64 * 1024), "]".repeat(64 * 1024));
    let dry_run = tokio::spawn(async move {
        admin
            .clone()
            .dry_run_rules(proto::DryRunRulesRequest {
                rules_yaml: hostile,
                ..Default::default()
            })
            .await
    });
    for n in 0..20 {
        publish_stored(
            &client,
            vec![event(
                &n.to_string(),
                "order.placed",
                "k",
                serde_json::json!({}),
            )],
        )
        .await;
    }
    let e = dry_run.await.expect("task").expect_err("too deep");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("nested more than 32"),
        "{}",
        e.message()
    );
}

#[test]
fn invalid_config_values_exit_2_naming_file_line_and_field() {
    for (config, line, expected) in [
        (
            "delivery:\n  offset_commit_interval: 0s\n",
            6,
            "delivery.offset_commit_interval",
        ),
        (
            "topics: [{name: orders}]\nsubscriptions:\n  - name: billing\n    topic: orders\n    dead_letter_topic: orders\n",
            9,
            "dead_letter_topic",
        ),
        ("buses: [\"bad\\u0000bus\"]\n", 0, "buses"),
    ] {
        let (output, path, _dir) = serve_output(config, ORDER_RULES);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        if line > 0 {
            let located = format!("{}:{line}:", path.display());
            assert!(stderr.contains(&located), "{located} in {stderr}");
        }
    }
}

#[test]
fn a_second_broker_on_a_data_directory_in_use_fails_at_once_naming_it() {
    let (dir, first) = start_broker(CONFIG, ORDER_RULES);
    let output = std::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(dir.path().join("config.yaml"))
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another broker"), "{stderr}");
    assert!(
        stderr.contains(&dir.path().join("data").display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains(&first.pid().to_string()), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_settles_only_its_own_deliveries_and_hears_about_the_rest() {
    let (_dir, broker) = start_broker(CONFIG, ORDER_RULES);
    let client = broker.client().await;
    publish_stored(
        &client,
        vec![event("mine", "order.placed", "k", serde_json::json!({}))],
    )
    .await;
    let mut owner = RawStream::open(&broker.url, "billing", 1)
        .await
        .expect("open");
    let delivery = owner.next().await.expect("a delivery");
    let mut other = RawStream::open(&broker.url, "billing", 1)
        .await
        .expect("open");
    // Another stream of the same subscription, and an id that is none.
    other
        .ack(vec![delivery.delivery_id.clone(), "not-an-id".into()])
        .await;
    let answer = other.next().await.expect("an answer to the settle");
    assert!(answer.delivery_id.is_empty() && answer.event.is_none());
    let refused: Vec<(&str, &str)> = answer
        .settle_errors
        .iter()
        .map(|e| (e.delivery_id.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0].0, delivery.delivery_id);
    assert!(refused[0].1.contains("another stream"), "{refused:?}");
    assert!(refused[1].1.contains("not a delivery id"), "{refused:?}");
    let mut admin = broker.admin().await;
    let in_flight: u64 = describe(&mut admin, "billing")
        .await
        .partitions
        .iter()
        .map(|p| p.in_flight)
        .sum();
    assert_eq!(in_flight, 1, "the foreign ack did nothing");
    // The owner's own ack is taken, without an answer.
    owner.ack(vec![delivery.delivery_id]).await;
    until_fully_committed(&admin, "billing").await;
}

/// Sends raw bytes as a request message: what a broken client sends.
#[derive(Debug, Clone, Default)]
struct RawBytes;

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = proto::PublishResponse;
    type Encoder = RawBytes;
    type Decoder = tonic_prost::ProstDecoder<proto::PublishResponse>;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(tonic::codec::BufferSettings::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_is_not_protobuf_is_invalid_argument() {
    let (_dir, broker) = start_broker(CONFIG, ORDER_RULES);
    let channel = tonic::transport::Endpoint::from_shared(broker.url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    // Field 1 (bus) as a length-delimited string that runs past the end.
    let garbage = vec![0x0a, 0x7f, b'x'];
    let status = grpc
        .unary(
            tonic::Request::new(garbage),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/switchyard.v1.Publisher/Publish",
            ),
            RawBytes,
        )
        .await
        .expect_err("malformed");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(
        status.message().contains("not valid protobuf"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_with_a_key_given_twice_are_refused_not_last_one_wins() {
    let (_dir, broker) = start_broker(CONFIG, ORDER_RULES);
    let mut admin = broker.admin().await;
    let e = admin
        .create_subscription(proto::CreateSubscriptionRequest {
            subscription: Some(proto::Subscription {
                name: "twice".into(),
                topic: "orders".into(),
                filter_json: r#"{"type": ["order.placed"], "type": ["order.paid"]}"#.into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("duplicate key");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("given twice"), "{}", e.message());
    // The same in a rule file stops the start, naming file and line.
    let (output, _path, _dir) = serve_output(
        "",
        "rules:\n  - name: r\n    pattern: {type: [a], data: {n: [{numeric: ['>', .inf]}]}}\n    targets: [{topic: t}]\n",
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("rules.yaml:") && stderr.contains("not a number"),
        "{stderr}"
    );
}
