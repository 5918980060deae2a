//! Authorization end to end: each ACL action allowed by its grant and
//! denied without it (PERMISSION_DENIED naming principal, action and
//! resource), from the SDK, raw gRPC and the CLI; every denial and every
//! admin change (rule reloads included) lands in the audit log; expired
//! tokens are refused.

mod support;

use std::process::Command;
use support::*;
use switchyard_broker::api::auth::token_hash;
use switchyard_sdk::proto;
use switchyard_sdk::{Client, SdkError};

const PUBLISHER: &str = "publisher-token";
const READER: &str = "reader-token";
const OPS: &str = "ops-token";
const EXPIRED: &str = "expired-token";
const MANAGER: &str = "manager-token";
const MANAGER_READER: &str = "manager-reader-token";
const VIEWER: &str = "viewer-token";
const AUDITOR: &str = "auditor-token";

fn config() -> String {
    format!(
        "
auth:
  tokens:
    - {{principal: order-service, sha256: {}}}
    - {{principal: billing-reader, sha256: {}}}
    - {{principal: ops-alice, sha256: {}}}
    - {{principal: old-service, sha256: {}, expires: 2020-01-01T00:00:00Z}}
    - {{principal: mgr, sha256: {}}}
    - {{principal: mgr-reader, sha256: {}}}
    - {{principal: viewer, sha256: {}}}
    - {{principal: auditor, sha256: {}}}
  acl:
    - principal: mgr
      allow: [manage:subscription/mgr-*]
    - principal: mgr-reader
      allow: [manage:subscription/mgr-*, read:topic/orders, write:topic/shared.dlq, write:topic/new-*]
    - principal: viewer
      allow: [view:rules]
    - principal: auditor
      allow: [view:rules, read:topic/orders]
    - principal: order-service
      allow: [publish:default]
    - principal: billing-reader
      allow: [subscribe:billing]
    - principal: ops-*
      allow: [manage:topic/*, redrive:*, view:*]
topics:
  - name: orders
    partitions: 1
  - name: payments
    partitions: 1
  - name: shared.dlq
    partitions: 1
subscriptions:
  - name: billing
    topic: orders
    max_attempts: 1
    dead_letter_topic: orders.dlq
",
        token_hash(PUBLISHER),
        token_hash(READER),
        token_hash(OPS),
        token_hash(EXPIRED),
        token_hash(MANAGER),
        token_hash(MANAGER_READER),
        token_hash(VIEWER),
        token_hash(AUDITOR),
    )
}

/// A client of `broker` with `token`.
async fn connect_as(broker: &BrokerProcess, token: &str) -> Client {
    Client::connect(broker.url.clone())
        .await
        .expect("connect")
        .with_token(token)
        .expect("token")
}

/// The status of a refused SDK call.
fn status(error: SdkError) -> tonic::Status {
    match error {
        SdkError::Status(status) => status,
        other => panic!("expected a status, got {other}"),
    }
}

fn assert_denied(status: &tonic::Status, parts: &[&str]) {
    assert_eq!(
        status.code(),
        tonic::Code::PermissionDenied,
        "{}",
        status.message()
    );
    for part in parts {
        assert!(status.message().contains(part), "{}", status.message());
    }
}

/// The audit records so far.
fn audit(broker: &BrokerProcess) -> Vec<serde_json::Value> {
    broker.audit_records()
}

fn has_record(
    records: &[serde_json::Value],
    operation: &str,
    principal: &str,
    outcome: &str,
) -> bool {
    records.iter().any(|r| {
        r["operation"] == operation && r["principal"] == principal && r["outcome"] == outcome
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_action_is_allowed_by_its_grant_and_denied_without_it() {
    let (_dir, broker) = start_broker(&config(), ORDER_RULES);
    let connect = |token: &'static str| {
        let url = broker.url.clone();
        async move {
            Client::connect(url)
                .await
                .expect("connect")
                .with_token(token)
                .expect("token")
        }
    };
    let publisher = connect(PUBLISHER).await;
    let reader = connect(READER).await;
    let ops = connect(OPS).await;
    let placed = |id: &str| event(id, "order.placed", "k", serde_json::json!({}));

    // publish: on its bus only.
    publisher
        .publish("default", placed("o1"))
        .await
        .expect("publish:default");
    let denied = status(
        publisher
            .publish("payments", placed("o2"))
            .await
            .expect_err("other bus"),
    );
    assert_denied(
        &denied,
        &[
            "\"order-service\"",
            "publish",
            "payments",
            "publish:payments",
        ],
    );
    let denied = status(
        reader
            .publish("default", placed("o3"))
            .await
            .expect_err("reader"),
    );
    assert_denied(&denied, &["\"billing-reader\"", "publish"]);

    // subscribe: the granted subscription only, and its state.
    let mut stream = RawStream::open_with(&reader, "billing", 1)
        .await
        .expect("subscribe:billing");
    let delivery = stream.next().await.expect("a delivery");
    assert_eq!(delivery.event.as_ref().map(|e| e.id.as_str()), Some("o1"));
    let Err(denied) = RawStream::open_with(&publisher, "billing", 1).await else {
        panic!("order-service may not subscribe");
    };
    assert_denied(&denied, &["\"order-service\"", "subscribe", "billing"]);
    reader
        .admin()
        .describe_subscription(proto::DescribeSubscriptionRequest {
            name: "billing".into(),
        })
        .await
        .expect("describe is part of subscribe");
    stream.nack(delivery.delivery_id, "broken").await;
    until_dead_letters(&reader.admin(), "billing", 1).await;

    // redrive: ops may, the reader may not.
    let redrive = proto::RedriveDeadLettersRequest {
        subscription: "billing".into(),
        ..Default::default()
    };
    let denied = reader
        .admin()
        .redrive_dead_letters(redrive.clone())
        .await
        .expect_err("reader may not redrive");
    assert_denied(
        &denied,
        &[
            "\"billing-reader\"",
            "redrive",
            "billing",
            "redrive:billing",
        ],
    );
    let redriven = ops
        .admin()
        .redrive_dead_letters(redrive)
        .await
        .expect("ops may redrive")
        .into_inner();
    assert_eq!(redriven.redriven, 1);
    let seek = proto::SeekSubscriptionRequest {
        name: "billing".into(),
        target: Some(proto::seek_subscription_request::Target::Latest(true)),
    };
    let denied = reader
        .admin()
        .seek_subscription(seek)
        .await
        .expect_err("seek is redrive");
    assert_denied(&denied, &["redrive", "billing"]);

    // manage: topics for ops, not subscriptions; nothing for the others.
    let create = |name: &str| proto::CreateTopicRequest {
        name: name.into(),
        partitions: 1,
    };
    ops.admin()
        .create_topic(create("audit-demo"))
        .await
        .expect("manage:topic/*");
    ops.admin()
        .delete_topic(proto::DeleteTopicRequest {
            name: "audit-demo".into(),
        })
        .await
        .expect("delete too");
    let denied = ops
        .admin()
        .delete_subscription(proto::DeleteSubscriptionRequest {
            name: "billing".into(),
        })
        .await
        .expect_err("no manage:subscription grant");
    assert_denied(
        &denied,
        &["\"ops-alice\"", "manage", "subscription/billing"],
    );
    let denied = publisher
        .admin()
        .create_topic(create("x"))
        .await
        .expect_err("publisher");
    assert_denied(&denied, &["manage", "topic/x"]);

    // view: the List calls.
    ops.admin()
        .list_topics(proto::ListTopicsRequest {})
        .await
        .expect("view:*");
    let denied = reader
        .admin()
        .list_rules(proto::ListRulesRequest::default())
        .await
        .expect_err("no view grant");
    assert_denied(&denied, &["view", "rules"]);

    // The CLI shows the same refusal.
    let output = Command::new(binary())
        .args(["topics", "create", "sneaky"])
        .env("SWITCHYARD_URL", &broker.url)
        .env("SWITCHYARD_TOKEN", PUBLISHER)
        .output()
        .expect("cli");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("may not manage topic/sneaky"), "{stderr}");

    // Every denial and every change is audited.
    let records = audit(&broker);
    assert!(has_record(&records, "Publish", "order-service", "denied"));
    assert!(has_record(&records, "Subscribe", "order-service", "denied"));
    assert!(has_record(
        &records,
        "RedriveDeadLetters",
        "billing-reader",
        "denied"
    ));
    assert!(has_record(
        &records,
        "RedriveDeadLetters",
        "ops-alice",
        "done"
    ));
    assert!(has_record(&records, "CreateTopic", "ops-alice", "done"));
    assert!(has_record(&records, "DeleteTopic", "ops-alice", "done"));
    assert!(has_record(
        &records,
        "DeleteSubscription",
        "ops-alice",
        "denied"
    ));
    assert!(has_record(
        &records,
        "CreateTopic",
        "order-service",
        "denied"
    ));
    assert!(has_record(
        &records,
        "ListRules",
        "billing-reader",
        "denied"
    ));
    let denials = records.iter().filter(|r| r["outcome"] == "denied").count();
    assert_eq!(denials, 9, "one record per denied call: {records:#?}");
    assert!(
        !has_record(&records, "Publish", "order-service", "done"),
        "allowed publishes are not admin changes"
    );
    let redriven = records
        .iter()
        .find(|r| r["operation"] == "RedriveDeadLetters" && r["outcome"] == "done")
        .expect("redrive record");
    assert_eq!(
        redriven["detail"], "redrove 1 of every waiting dead letter (0 remaining)",
        "says what changed"
    );
    let created = records
        .iter()
        .find(|r| r["operation"] == "CreateTopic" && r["outcome"] == "done")
        .expect("create record");
    assert_eq!(created["resource"], "topic/audit-demo");
    assert_eq!(created["action"], "manage");

    // A rule reload is an audited change too.
    std::fs::write(
        broker.dir.join("rules.yaml"),
        ORDER_RULES.replace("order.placed", "order.created"),
    )
    .expect("rules");
    broker.signal("HUP");
    eventually("the reload is audited", || async {
        has_record(&audit(&broker), "ReloadRules", "rule-files", "done")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_no_read_or_write_path_past_the_acl() {
    let (_dir, broker) = start_broker(&config(), ORDER_RULES);
    let manager = connect_as(&broker, MANAGER).await.admin();
    let manager_reader = connect_as(&broker, MANAGER_READER).await.admin();
    let ops = connect_as(&broker, OPS).await.admin();
    let create =
        |name: &str, topic: &str, dead_letter_topic: &str| proto::CreateSubscriptionRequest {
            subscription: Some(proto::Subscription {
                name: name.into(),
                topic: topic.into(),
                dead_letter_topic: dead_letter_topic.into(),
                max_attempts: if dead_letter_topic.is_empty() { 0 } else { 1 },
                ..Default::default()
            }),
        };

    // Reading a topic through a new subscription needs read:topic/T.
    let denied = manager
        .clone()
        .create_subscription(create("mgr-a", "orders", ""))
        .await
        .expect_err("may not read orders");
    assert_denied(&denied, &["\"mgr\"", "read:topic/orders"]);
    // Dead letters into an existing topic not its own need write:topic/D.
    let denied = manager_reader
        .clone()
        .create_subscription(create("mgr-b", "orders", "payments"))
        .await
        .expect_err("may not write payments");
    assert_denied(&denied, &["\"mgr-reader\"", "write:topic/payments"]);
    // A dead-letter topic that does not exist needs manage:topic/D too.
    let denied = manager_reader
        .clone()
        .create_subscription(create("mgr-c", "orders", "new-dlq"))
        .await
        .expect_err("may not create new-dlq");
    assert_denied(&denied, &["manage:topic/new-dlq"]);
    // Its own NAME.dlq, or a topic it may write, is fine.
    manager_reader
        .clone()
        .create_subscription(create("mgr-d", "orders", "mgr-d.dlq"))
        .await
        .expect("own dead-letter topic");
    manager_reader
        .clone()
        .create_subscription(create("mgr-e", "orders", "shared.dlq"))
        .await
        .expect("granted dead-letter topic");

    let topics: Vec<String> = ops
        .clone()
        .list_topics(proto::ListTopicsRequest {})
        .await
        .expect("topics")
        .into_inner()
        .topics
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(!topics.contains(&"new-dlq".to_string()), "{topics:?}");
    assert!(topics.contains(&"mgr-d.dlq".to_string()), "{topics:?}");
    let subscriptions: Vec<String> = ops
        .clone()
        .list_subscriptions(proto::ListSubscriptionsRequest {})
        .await
        .expect("subscriptions")
        .into_inner()
        .subscriptions
        .into_iter()
        .map(|s| s.name)
        .collect();
    for refused in ["mgr-a", "mgr-b", "mgr-c"] {
        assert!(
            !subscriptions.contains(&refused.to_string()),
            "{subscriptions:?}"
        );
    }
    let records = audit(&broker);
    assert!(has_record(&records, "CreateSubscription", "mgr", "denied"));
    assert!(has_record(
        &records,
        "CreateSubscription",
        "mgr-reader",
        "done"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_data_is_shown_only_with_a_read_grant() {
    let (_dir, broker) = start_broker(&config(), ORDER_RULES);
    let publisher = connect_as(&broker, PUBLISHER).await;
    publish_stored(
        &publisher,
        vec![event(
            "secret-1",
            "order.placed",
            "k",
            serde_json::json!({"card": "4111"}),
        )],
    )
    .await;
    let dry_run = proto::DryRunRulesRequest {
        rules_yaml: ORDER_RULES.into(),
        samples: 10,
        ..Default::default()
    };
    let sample = |response: proto::DryRunRulesResponse| {
        let rule = response
            .rules
            .into_iter()
            .find(|r| r.name == "orders")
            .expect("rule");
        assert_eq!(rule.matched.len(), 1, "{rule:?}");
        (rule.redacted, rule.matched[0].clone())
    };
    // view:rules alone: the sample keeps its attributes, not its data.
    let viewer = connect_as(&broker, VIEWER).await.admin();
    let (redacted, event) = sample(
        viewer
            .clone()
            .dry_run_rules(dry_run.clone())
            .await
            .expect("view:rules")
            .into_inner(),
    );
    assert_eq!((redacted, event.id.as_str()), (1, "secret-1"));
    assert!(event.data.is_none(), "{event:?}");
    // With read:topic/orders, the data too.
    let auditor = connect_as(&broker, AUDITOR).await.admin();
    let (redacted, event) = sample(
        auditor
            .clone()
            .dry_run_rules(dry_run)
            .await
            .expect("view:rules")
            .into_inner(),
    );
    assert_eq!(redacted, 0);
    assert!(event.data.is_some(), "{event:?}");

    // An operator with view:* sees a subscription's state and dead
    // letters, without their data; the subscriber sees the data.
    let reader = connect_as(&broker, READER).await;
    let mut stream = RawStream::open_with(&reader, "billing", 1)
        .await
        .expect("subscribe:billing");
    let delivery = stream.next().await.expect("a delivery");
    stream.nack(delivery.delivery_id, "broken").await;
    until_dead_letters(&reader.admin(), "billing", 1).await;
    let ops = connect_as(&broker, OPS).await.admin();
    ops.clone()
        .describe_subscription(proto::DescribeSubscriptionRequest {
            name: "billing".into(),
        })
        .await
        .expect("view:subscriptions describes");
    let listing = |admin: switchyard_sdk::Admin| async move {
        admin
            .clone()
            .list_dead_letters(proto::ListDeadLettersRequest {
                subscription: "billing".into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
    };
    let seen = listing(ops).await;
    assert!(seen.data_redacted);
    assert_eq!(seen.dead_letters.len(), 1);
    let event = seen.dead_letters[0].event.as_ref().expect("attributes");
    assert_eq!(event.id, "secret-1");
    assert!(event.data.is_none(), "{event:?}");
    let seen = listing(reader.admin()).await;
    assert!(!seen.data_redacted);
    assert!(
        seen.dead_letters[0]
            .event
            .as_ref()
            .is_some_and(|e| e.data.is_some())
    );
    // Without any of the grants, refused naming both.
    let denied = viewer
        .clone()
        .describe_subscription(proto::DescribeSubscriptionRequest {
            name: "billing".into(),
        })
        .await
        .expect_err("viewer may not");
    assert_denied(
        &denied,
        &["\"subscribe:billing\" or \"view:subscriptions\""],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_unauthenticated() {
    let (_dir, broker) = start_broker(&config(), ORDER_RULES);
    let client = broker.client().await.with_token(EXPIRED).expect("token");
    let refused = status(
        client
            .publish(
                "default",
                event("o1", "order.placed", "k", serde_json::json!({})),
            )
            .await
            .expect_err("expired"),
    );
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused
            .message()
            .contains("\"old-service\" expired at 2020-01-01"),
        "{}",
        refused.message()
    );
}

#[test]
fn grants_without_authentication_and_malformed_grants_stop_the_start() {
    for (config, expected) in [
        (
            "auth:\n  acl:\n    - {principal: x, allow: [view:*]}\n",
            "auth.acl",
        ),
        (
            &*format!(
                "auth:\n  tokens: [{{principal: x, sha256: {}}}]\n  acl:\n    - {{principal: x, allow: [delete:*]}}\n",
                token_hash("t")
            ),
            "auth.acl[0].allow[0]",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_config(dir.path(), config, ORDER_RULES);
        let output = Command::new(binary())
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(2), "invalid config exits 2");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}
