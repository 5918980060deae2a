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

fn config() -> String {
    format!(
        "
auth:
  tokens:
    - {{principal: order-service, sha256: {}}}
    - {{principal: billing-reader, sha256: {}}}
    - {{principal: ops-alice, sha256: {}}}
    - {{principal: old-service, sha256: {}, expires: 2020-01-01T00:00:00Z}}
  acl:
    - principal: order-service
      allow: [publish:default]
    - principal: billing-reader
      allow: [subscribe:billing]
    - principal: ops-*
      allow: [manage:topic/*, redrive:*, view:*]
topics:
  - name: orders
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
    )
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
    std::fs::read_to_string(broker.dir.join("data/audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect()
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
