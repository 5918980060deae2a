//! Routing through the real binary with content-filter rules, and hot
//! reload: a reload that adds a rule takes effect, a broken reload leaves
//! routing unchanged, SIGHUP reloads.

mod support;

use std::time::Duration;
use support::*;
use switchyard_sdk::proto;

const CONFIG: &str = "
rules_poll_interval: 50ms
topics:
  - name: us-orders
    partitions: 1
  - name: big-orders
    partitions: 1
  - name: external
    partitions: 1
";

const RULES: &str = r#"
rules:
  - name: us-orders
    pattern:
      type: [order.placed]
      data:
        region: [{prefix: "us-"}]
    targets: [{topic: us-orders}]
  - name: big-orders
    pattern:
      type: [order.placed]
      data:
        total: [{numeric: [">=", 1000]}]
    targets: [{topic: big-orders}]
  - name: external
    pattern:
      source: [{anything-but: {prefix: "/internal"}}]
    targets: [{topic: external}]
"#;

fn order(id: &str, source: &str, region: &str, total: f64) -> proto::CloudEvent {
    switchyard_sdk::Event::new(source, "order.placed")
        .id(id)
        .json(&serde_json::json!({"region": region, "total": total}))
        .expect("json")
}

async fn topics_of(client: &switchyard_sdk::Client, event: proto::CloudEvent) -> Vec<String> {
    let published = client.publish("default", event).await.expect("publish");
    let mut topics: Vec<String> = published.offsets.into_iter().map(|o| o.topic).collect();
    topics.sort();
    topics
}

async fn status(admin: &mut switchyard_sdk::Admin) -> proto::RuleSetStatus {
    admin
        .list_rules(proto::ListRulesRequest::default())
        .await
        .expect("list rules")
        .into_inner()
        .status
        .expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_filters_route_to_the_right_topics_only() {
    let (_dir, broker) = start_broker(CONFIG, RULES);
    let client = broker.client().await;
    assert_eq!(
        topics_of(&client, order("1", "/web", "us-east", 10.0)).await,
        ["external", "us-orders"]
    );
    assert_eq!(
        topics_of(&client, order("2", "/internal/batch", "eu-west", 5000.0)).await,
        ["big-orders"]
    );
    assert_eq!(
        topics_of(&client, order("3", "/internal/x", "us-west", 1000.0)).await,
        ["big-orders", "us-orders"]
    );
    assert!(
        topics_of(&client, order("4", "/internal", "eu", 999.99))
            .await
            .is_empty()
    );

    // The subscriptions of each topic see exactly those events.
    let mut admin = broker.admin().await;
    for (topic, expected) in [
        ("us-orders", vec!["1", "3"]),
        ("big-orders", vec!["2", "3"]),
        ("external", vec!["1"]),
    ] {
        admin
            .create_subscription(proto::CreateSubscriptionRequest {
                subscription: Some(proto::Subscription {
                    name: format!("{topic}-reader"),
                    topic: topic.into(),
                    ..Default::default()
                }),
            })
            .await
            .expect("create subscription");
        let mut stream = RawStream::open(&broker.url, &format!("{topic}-reader"), 10)
            .await
            .expect("open");
        let mut ids = Vec::new();
        for _ in 0..expected.len() {
            ids.push(
                stream
                    .next()
                    .await
                    .expect("delivery")
                    .event
                    .expect("event")
                    .id,
            );
        }
        assert_eq!(ids, expected, "{topic}");
        let description = describe(&mut admin, &format!("{topic}-reader")).await;
        assert_eq!(
            description.partitions[0].end_offset,
            expected.len() as u64,
            "{topic} holds no others"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_take_effect_and_broken_reloads_change_nothing() {
    let (dir, broker) = start_broker(CONFIG, RULES);
    let client = broker.client().await;
    let mut admin = broker.admin().await;
    assert_eq!(status(&mut admin).await.version, 1);
    let refund = || {
        switchyard_sdk::Event::new("/internal/pay", "refund.issued")
            .json(&serde_json::json!({"amount": 5}))
            .expect("json")
    };
    assert!(topics_of(&client, refund()).await.is_empty());

    // A reload that adds a rule (and a new target topic).
    let added = format!(
        "{RULES}\n  - name: refunds\n    pattern:\n      type: [refund.issued]\n    targets: [{{topic: refunds}}]\n"
    );
    std::fs::write(dir.path().join("rules.yaml"), &added).expect("write rules");
    eventually("the new rules are loaded", || {
        let mut admin = admin.clone();
        async move { status(&mut admin).await.version == 2 }
    })
    .await;
    assert_eq!(topics_of(&client, refund()).await, ["refunds"]);

    // A broken file keeps the rules in force and says why.
    std::fs::write(dir.path().join("rules.yaml"), "rules:\n  - name: [broken\n")
        .expect("write rules");
    eventually("the failed reload is reported", || {
        let mut admin = admin.clone();
        async move { !status(&mut admin).await.last_error.is_empty() }
    })
    .await;
    let after = status(&mut admin).await;
    assert_eq!(after.version, 2);
    assert!(
        after.last_error.contains("rules.yaml"),
        "{}",
        after.last_error
    );
    let metrics = broker.metrics();
    assert!(metrics.contains("switchyard_rules_version 2"), "{metrics}");
    assert!(
        metrics.contains("switchyard_rules_last_reload_ok 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_rules_reload_failures_total 1"),
        "{metrics}"
    );
    assert_eq!(
        topics_of(&client, refund()).await,
        ["refunds"],
        "routing unchanged"
    );
    assert_eq!(
        topics_of(&client, order("5", "/web", "us-east", 1.0)).await,
        ["external", "us-orders"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_rules() {
    let config = CONFIG.replace("rules_poll_interval: 50ms", "rules_poll_interval: 0s");
    let (dir, broker) = start_broker(&config, RULES);
    let client = broker.client().await;
    let mut admin = broker.admin().await;
    let only_us = r#"
rules:
  - name: us-orders
    pattern:
      data:
        region: [{prefix: "us-"}]
    targets: [{topic: us-orders}]
"#;
    std::fs::write(dir.path().join("rules.yaml"), only_us).expect("write rules");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        status(&mut admin).await.version,
        1,
        "polling is off: nothing reloads by itself"
    );
    broker.signal("HUP");
    eventually("SIGHUP reloaded the rules", || {
        let mut admin = admin.clone();
        async move { status(&mut admin).await.version == 2 }
    })
    .await;
    assert_eq!(
        topics_of(&client, order("6", "/web", "us-east", 5000.0)).await,
        ["us-orders"]
    );
}

const SHOP_PROTO: &str = r#"
syntax = "proto3";
package shop.v1;
message OrderPlaced {
  string order_id = 1;
  int64 total_cents = 2;
}
"#;

const REFUND_PROTO: &str = r#"
syntax = "proto3";
package shop.v1;
message RefundIssued {
  string order_id = 1;
  int64 amount_cents = 2;
}
"#;

#[derive(Clone, PartialEq, prost::Message)]
struct OrderPlaced {
    #[prost(string, tag = "1")]
    order_id: String,
    #[prost(int64, tag = "2")]
    total_cents: i64,
}

impl prost::Name for OrderPlaced {
    const NAME: &'static str = "OrderPlaced";
    const PACKAGE: &'static str = "shop.v1";
}

#[derive(Clone, PartialEq, prost::Message)]
struct RefundIssued {
    #[prost(string, tag = "1")]
    order_id: String,
    #[prost(int64, tag = "2")]
    amount_cents: i64,
}

impl prost::Name for RefundIssued {
    const NAME: &'static str = "RefundIssued";
    const PACKAGE: &'static str = "shop.v1";
}

const PROTO_CONFIG: &str = "
buses: [payments]
schemas:
  files: [protos/shop.proto]
  include: [protos]
  validate_buses: [payments]
topics:
  - name: big-orders
    partitions: 1
";

const PROTO_RULES: &str = r#"
rules:
  - name: big-proto-orders
    pattern:
      type: [shop.v1.OrderPlaced]
      data:
        total_cents: [{numeric: [">=", 100000]}]
    targets: [{topic: big-orders}]
  - name: big-refunds
    pattern:
      type: [shop.v1.RefundIssued]
      data:
        amount_cents: [{numeric: [">", 500]}]
    targets: [{topic: big-orders}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_fields_route_validate_and_register_at_run_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("protos")).expect("mkdir");
    std::fs::write(dir.path().join("protos/shop.proto"), SHOP_PROTO).expect("write proto");
    write_config(dir.path(), PROTO_CONFIG, PROTO_RULES);
    let broker = BrokerProcess::start(dir.path());
    let client = broker.client().await;

    // Typed publishes: patterns see the decoded fields.
    let big = OrderPlaced {
        order_id: "o-1".into(),
        total_cents: 250_000,
    };
    let small = OrderPlaced {
        order_id: "o-2".into(),
        total_cents: 999,
    };
    let routed = client
        .publish_message("default", "/shop", &big)
        .await
        .expect("publish");
    assert_eq!(routed.rules, ["big-proto-orders"]);
    let not_routed = client
        .publish_message("default", "/shop", &small)
        .await
        .expect("publish");
    assert!(not_routed.rules.is_empty());

    // A validating bus refuses payloads that do not decode, naming the
    // message and the field.
    let garbage = switchyard_sdk::Event::new("/shop", "shop.v1.OrderPlaced")
        .id("bad")
        .binary("application/protobuf", vec![0x12, 0x01, b'x']);
    match client.publish("payments", garbage.clone()).await {
        Err(switchyard_sdk::SdkError::Rejected {
            code,
            field,
            message,
            ..
        }) => {
            assert_eq!(code, tonic::Code::InvalidArgument);
            assert_eq!(field, "data");
            assert!(
                message.contains("shop.v1.OrderPlaced") && message.contains("total_cents"),
                "{message}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(
        client.publish("default", garbage).await.is_ok(),
        "buses without validation accept it"
    );
    let unknown = switchyard_sdk::Event::new("/shop", "shop.v1.Unknown")
        .binary("application/protobuf", vec![]);
    assert!(
        client.publish("payments", unknown).await.is_err(),
        "a validating bus needs a registered schema"
    );

    // Registering a schema at run time makes its fields visible.
    let refund = RefundIssued {
        order_id: "o-1".into(),
        amount_cents: 7000,
    };
    let before = client
        .publish_message("default", "/shop", &refund)
        .await
        .expect("publish");
    assert!(
        before.rules.is_empty(),
        "fields of an unknown message are invisible"
    );
    let mut admin = broker.admin().await;
    let registered = admin
        .register_schema(proto::RegisterSchemaRequest {
            file_name: "refunds.proto".into(),
            source: REFUND_PROTO.into(),
        })
        .await
        .expect("register")
        .into_inner();
    assert_eq!(registered.messages, ["shop.v1.RefundIssued"]);
    let refund = RefundIssued {
        order_id: "o-3".into(),
        amount_cents: 7000,
    };
    let after = client
        .publish_message("default", "/shop", &refund)
        .await
        .expect("publish");
    assert_eq!(after.rules, ["big-refunds"]);
    let listed = admin
        .list_schemas(proto::ListSchemasRequest {})
        .await
        .expect("list")
        .into_inner()
        .messages;
    assert_eq!(listed, ["shop.v1.OrderPlaced", "shop.v1.RefundIssued"]);
    let err = admin
        .register_schema(proto::RegisterSchemaRequest {
            file_name: "broken.proto".into(),
            source: "syntax = \"proto3\"; message {".into(),
        })
        .await
        .expect_err("does not compile");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("broken.proto"), "{}", err.message());
}
