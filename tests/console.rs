//! The console's HTTP side, end to end against the real binary: the UI is
//! served from the binary with a strict content security policy; the JSON
//! Admin API obeys the same authentication and ACLs as gRPC (401 without
//! a token, 403 naming the missing grant) and audit-logs changes; bad
//! calls get errors that say what to fix; selected dead letters are
//! redriven, and only those. (The browser tests are in tests/console/.)

mod support;

use support::*;
use switchyard_broker::api::auth::token_hash;

const OPS: &str = "ops-token";
const READER: &str = "reader-token";

fn config() -> String {
    format!(
        "
auth:
  tokens:
    - {{principal: ops-alice, sha256: {}}}
    - {{principal: billing-reader, sha256: {}}}
  acl:
    - principal: ops-*
      allow: [manage:*, redrive:*, view:*, subscribe:*, publish:*]
    - principal: billing-reader
      allow: [subscribe:billing, view:*]
topics:
  - name: orders
    partitions: 1
subscriptions:
  - name: billing
    topic: orders
    max_attempts: 1
    dead_letter_topic: orders.dlq
",
        token_hash(OPS),
        token_hash(READER),
    )
}

/// The console's HTTP address and a client for it.
struct Console {
    base: String,
    http: reqwest::Client,
}

impl Console {
    fn of(broker: &BrokerProcess) -> Console {
        Console {
            base: format!("http://{}", broker.http_addr()),
            http: reqwest::Client::new(),
        }
    }

    /// `POST /api/v1/admin/{method}` as the holder of `token`: the status
    /// and the JSON reply.
    async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .post(format!("{}/api/v1/admin/{method}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("console API answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a reply");
        let reply = serde_json::from_str(&text).expect("a JSON reply");
        (status, reply)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_is_served_from_the_binary_and_the_api_obeys_authentication_and_acls() {
    let (_dir, broker) = start_broker(&config(), ORDER_RULES);
    let console = Console::of(&broker);

    let page = console
        .http
        .get(format!("{}/ui/", console.base))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("header")
        .to_string();
    assert!(policy.contains("default-src 'self'"), "{policy}");
    let html = page.text().await.expect("html");
    assert!(html.contains("/ui/console.js"), "{html}");
    for asset in ["console.js", "console.css"] {
        let response = console
            .http
            .get(format!("{}/ui/{asset}", console.base))
            .send()
            .await
            .expect("asset");
        assert_eq!(response.status(), 200, "{asset}");
    }

    // Authentication: no token, no answer.
    let (status, reply) = console
        .call(None, "ListTopics", serde_json::json!({}))
        .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, _) = console
        .call(Some("wrong"), "ListTopics", serde_json::json!({}))
        .await;
    assert_eq!(status, 401);
    let (status, topics) = console
        .call(Some(READER), "ListTopics", serde_json::json!({}))
        .await;
    assert_eq!(status, 200, "{topics}");
    let orders = topics["topics"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "orders"))
        .expect("orders is listed");
    assert_eq!(orders["partitions"], 1);
    assert_eq!(orders["retained_events"], 0);

    // ACLs: the reader may not redrive or delete; denials are audited.
    let (status, reply) = console
        .call(
            Some(READER),
            "RedriveDeadLetters",
            serde_json::json!({"subscription": "billing"}),
        )
        .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (403, Some("permission_denied"))
    );
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("billing-reader") && message.contains("redrive"),
        "{message}"
    );
    let (status, _) = console
        .call(
            Some(READER),
            "DeleteSubscription",
            serde_json::json!({"name": "billing"}),
        )
        .await;
    assert_eq!(status, 403);
    // Ops may; the change is audited with the principal.
    let (status, reply) = console
        .call(
            Some(OPS),
            "CreateTopic",
            serde_json::json!({"name": "refunds", "partitions": 2}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let audit = std::fs::read_to_string(broker.dir.join("data/audit.log")).expect("audit log");
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect();
    let has = |principal: &str, operation: &str, outcome: &str| {
        records.iter().any(|r| {
            r["principal"] == principal && r["operation"] == operation && r["outcome"] == outcome
        })
    };
    assert!(
        has("billing-reader", "RedriveDeadLetters", "denied"),
        "{audit}"
    );
    assert!(
        has("billing-reader", "DeleteSubscription", "denied"),
        "{audit}"
    );
    assert!(has("ops-alice", "CreateTopic", "done"), "{audit}");

    // Bad calls say what to fix.
    let (status, reply) = console
        .call(Some(OPS), "ListTopicz", serde_json::json!({}))
        .await;
    assert_eq!(status, 404);
    assert!(
        reply["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ListTopics"),
        "{reply}"
    );
    let (status, reply) = console
        .call(
            Some(OPS),
            "DescribeSubscription",
            serde_json::json!({"nmae": "billing"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        reply["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nmae"),
        "{reply}"
    );
    let plain = console
        .http
        .post(format!("{}/api/v1/admin/DeleteSubscription", console.base))
        .bearer_auth(OPS)
        .header("content-type", "text/plain")
        .body(r#"{"name": "billing"}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(
        plain.status(),
        415,
        "a form or text POST (what another site can send) is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selected_dead_letters_are_redriven_and_only_those() {
    let (_dir, broker) = start_broker(&config(), ORDER_RULES);
    let console = Console::of(&broker);
    let client = broker.client().await.with_token(OPS).expect("token");
    let events = ["o1", "o2", "o3"]
        .iter()
        .zip([10, 20, 30])
        .map(|(id, total)| event(id, "order.placed", id, serde_json::json!({"total": total})))
        .collect();
    publish_stored(&client, events).await;
    let mut stream = RawStream::open_with(&client, "billing", 10)
        .await
        .expect("subscribe");
    let waiting = |described: serde_json::Value| described["dead_letters"].clone();
    let describe = || {
        console.call(
            Some(OPS),
            "DescribeSubscription",
            serde_json::json!({"name": "billing"}),
        )
    };
    assert_eq!(waiting(describe().await.1), 0);
    for _ in 0..3 {
        let delivery = stream.next().await.expect("delivery");
        stream.nack(delivery.delivery_id, "broken").await;
    }
    let admin = client.admin();
    until_dead_letters(&admin, "billing", 3).await;

    // A filter narrows the listing.
    let (status, listed) = console
        .call(
            Some(OPS),
            "ListDeadLetters",
            serde_json::json!({"subscription": "billing", "filter_json": r#"{"data": {"total": [20]}}"#}),
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    let listed = listed["dead_letters"].as_array().expect("list").clone();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["event"]["id"], "o2");
    let place =
        serde_json::json!({"partition": listed[0]["partition"], "offset": listed[0]["offset"]});

    let (status, reply) = console
        .call(
            Some(OPS),
            "RedriveDeadLetters",
            serde_json::json!({"subscription": "billing", "only": [place]}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        (reply["redriven"].as_u64(), reply["remaining"].as_u64()),
        (Some(1), Some(0))
    );
    let again = stream.next().await.expect("the redriven event");
    assert_eq!(again.event.as_ref().map(|e| e.id.as_str()), Some("o2"));
    assert_eq!(again.topic, "billing.redrive");
    stream.ack(vec![again.delivery_id]).await;

    let (_, all) = console
        .call(
            Some(OPS),
            "ListDeadLetters",
            serde_json::json!({"subscription": "billing"}),
        )
        .await;
    let states: std::collections::BTreeSet<(String, bool)> = all["dead_letters"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| {
            (
                d["event"]["id"].as_str().unwrap_or_default().to_string(),
                d["dead_letter"]["redriven"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    let expected = [("o1", false), ("o2", true), ("o3", false)]
        .map(|(id, redriven)| (id.to_string(), redriven))
        .into();
    assert_eq!(states, expected, "only o2 was redriven");
    // Counted as they arrive (the count reads only new dead letters).
    assert_eq!(waiting(describe().await.1), 2, "two still wait");
}
