//! `switchyard rules dry-run`: what a candidate rule set would do with
//! recent traffic — and, once deployed, it does exactly that.

mod support;

use support::*;
use switchyard_sdk::proto;

const CONFIG: &str = "
rules_poll_interval: 100ms
topics:
  - name: orders
    partitions: 1
  - name: review
    partitions: 1
  - name: refunds
    partitions: 1
subscriptions:
  - name: billing
    topic: orders
  - name: reviewers
    topic: review
  - name: refund-desk
    topic: refunds
";

/// The rules in force (`ORDER_RULES`) and two new ones.
fn candidate() -> String {
    format!(
        "{ORDER_RULES}  - name: big-orders
    pattern:
      type: [order.placed]
      data:
        total: [{{numeric: ['>', 100]}}]
    targets:
      - topic: review
  - name: refunds
    pattern:
      type: [refund.issued]
    targets:
      - topic: refunds
"
    )
}

const TOTALS: [i64; 5] = [50, 150, 250, 20, 500];

async fn publish_orders(client: &switchyard_sdk::Client, round: &str) {
    let events = TOTALS
        .iter()
        .enumerate()
        .map(|(i, total)| {
            event(
                &format!("{round}-{i}"),
                "order.placed",
                &format!("c{i}"),
                serde_json::json!({"total": total}),
            )
        })
        .collect();
    publish_stored(client, events).await;
    // No rule in force matches a refund: it is recorded by the flow
    // history only.
    client
        .publish(
            "default",
            event(
                &format!("{round}-refund"),
                "refund.issued",
                "c9",
                serde_json::json!({"total": 10}),
            ),
        )
        .await
        .expect("publish refund");
}

async fn dry_run(admin: &switchyard_sdk::Admin) -> proto::DryRunRulesResponse {
    admin
        .clone()
        .dry_run_rules(proto::DryRunRulesRequest {
            rules_yaml: candidate(),
            bus: String::new(),
            last: 100,
            ..Default::default()
        })
        .await
        .expect("dry run")
        .into_inner()
}

async fn end_offset(admin: &switchyard_sdk::Admin, subscription: &str) -> u64 {
    describe(&mut admin.clone(), subscription).await.partitions[0].end_offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_predicts_what_the_deployed_rules_then_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), CONFIG, ORDER_RULES);
    let broker = BrokerProcess::start(dir.path());
    let client = broker.client().await;
    let admin = broker.admin().await;
    publish_orders(&client, "before").await;

    // The flow history records the unmatched refund in the background.
    eventually("the unmatched refund is recorded", || async {
        dry_run(&admin).await.examined == 6
    })
    .await;
    let report = dry_run(&admin).await;
    let rule = |name: &str| {
        report
            .rules
            .iter()
            .find(|r| r.name == name)
            .map(|r| (r.change.as_str(), r.matched_before, r.matched_after))
    };
    assert_eq!(rule("orders"), Some(("unchanged", 5, 5)));
    assert_eq!(rule("big-orders"), Some(("added", 0, 3)));
    assert_eq!(rule("refunds"), Some(("added", 0, 1)));
    let received = |name: &str| {
        report
            .subscriptions
            .iter()
            .find(|s| s.name == name)
            .map(|s| (s.received_before, s.received_after))
    };
    assert_eq!(received("billing"), Some((5, 5)));
    assert_eq!(received("reviewers"), Some((0, 3)));
    assert_eq!(received("refund-desk"), Some((0, 1)));

    let candidate_file = dir.path().join("candidate.yaml");
    std::fs::write(&candidate_file, candidate()).expect("write candidate");
    let text = broker.cli(&[
        "rules",
        "dry-run",
        "--rules",
        candidate_file.to_str().expect("path"),
        "--last",
        "100",
    ]);
    assert!(
        text.contains("examined the 6 newest recorded event(s) of bus default"),
        "{text}"
    );
    assert!(text.contains("big-orders"), "{text}");
    assert!(text.contains("(starts receiving)"), "{text}");

    // Deploy it; the same traffic again does what the dry run said.
    std::fs::write(dir.path().join("rules.yaml"), candidate()).expect("deploy");
    eventually("the candidate rules are in force", || {
        let mut admin = admin.clone();
        async move {
            admin
                .list_rules(proto::ListRulesRequest::default())
                .await
                .expect("list rules")
                .into_inner()
                .rules
                .iter()
                .any(|r| r.name == "big-orders")
        }
    })
    .await;
    publish_orders(&client, "after").await;
    let predicted = |name: &str| received(name).map_or(0, |(_, after)| after);
    assert_eq!(
        end_offset(&admin, "billing").await - 5,
        predicted("billing"),
        "billing got what the dry run said"
    );
    assert_eq!(
        end_offset(&admin, "reviewers").await,
        predicted("reviewers"),
        "reviewers got what the dry run said"
    );
    assert_eq!(
        end_offset(&admin, "refund-desk").await,
        predicted("refund-desk"),
        "the refund desk got what the dry run said"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_candidate_is_refused_naming_the_problem() {
    let (_dir, broker) = start_broker(CONFIG, ORDER_RULES);
    let error = broker
        .admin()
        .await
        .dry_run_rules(proto::DryRunRulesRequest {
            rules_yaml: "rules:\n  - name: x\n    pattern: {type: [{numeric: ['>']}]}\n    targets: [{topic: t}]\n".into(),
            ..Default::default()
        })
        .await
        .expect_err("broken rules");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(
        error.message().contains("candidate rules"),
        "{}",
        error.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pattern_tested_beside_the_rules_in_force_returns_the_events_it_matches() {
    let (_dir, broker) = start_broker(CONFIG, ORDER_RULES);
    let client = broker.client().await;
    let admin = broker.admin().await;
    publish_orders(&client, "now").await;
    // What the console's pattern test sends: one rule, added to the rules
    // in force, with sample events.
    let report = admin
        .clone()
        .dry_run_rules(proto::DryRunRulesRequest {
            rules_yaml: "rules:\n  - name: pattern-test\n    pattern: {data: {total: [{numeric: ['>=', 250]}]}}\n    targets: [{topic: review}]\n".into(),
            last: 100,
            add_to_current: true,
            samples: 10,
            ..Default::default()
        })
        .await
        .expect("dry run")
        .into_inner();
    let tested = report
        .rules
        .iter()
        .find(|r| r.name == "pattern-test")
        .expect("the tested rule");
    assert_eq!(tested.change, "added");
    assert_eq!(tested.matched_after, 2);
    let ids: Vec<&str> = tested.matched.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["now-2", "now-4"], "the matching events, oldest first");
    let orders = report
        .rules
        .iter()
        .find(|r| r.name == "orders")
        .expect("orders");
    assert_eq!(
        (orders.change.as_str(), orders.matched_after),
        ("unchanged", 5),
        "the rules in force stay"
    );
    let reviewers = report
        .subscriptions
        .iter()
        .find(|s| s.name == "reviewers")
        .expect("reviewers");
    assert_eq!(
        (reviewers.received_before, reviewers.received_after),
        (0, 2)
    );
}
