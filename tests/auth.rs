//! Bearer-token authentication end to end: calls without a token, or with
//! a wrong one, are UNAUTHENTICATED; the right token publishes, subscribes
//! and administers, from the SDK and the CLI.

mod support;

use std::process::Command;
use support::*;
use switchyard_sdk::{Client, SdkError};

const TOKEN: &str = "s3cret-token-for-tests";

const BULK: &str = "bulk-loader-token";

fn config() -> String {
    let hash = switchyard_broker::api::auth::token_hash(TOKEN);
    let bulk = switchyard_broker::api::auth::token_hash(BULK);
    format!(
        "
auth:
  tokens:
    - principal: order-service
      sha256: {hash}
    - principal: bulk-loader
      sha256: {bulk}
      quota: {{events_per_second: 5, max_streams: 1}}
topics:
  - name: orders
    partitions: 1
subscriptions:
  - name: billing
    topic: orders
"
    )
}

fn code(error: &SdkError) -> tonic::Code {
    match error {
        SdkError::Status(status) => status.code(),
        other => panic!("expected a status, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_need_a_known_token() {
    let (_dir, broker) = start_broker(&config(), ORDER_RULES);
    let placed = || event("o1", "order.placed", "k", serde_json::json!({}));

    let anonymous = Client::connect(broker.url.clone()).await.expect("connect");
    let refused = anonymous
        .publish("default", placed())
        .await
        .expect_err("no token");
    assert_eq!(code(&refused), tonic::Code::Unauthenticated);
    assert!(refused.to_string().contains("bearer token"), "{refused}");
    let wrong = anonymous.clone().with_token("guess").expect("token");
    let refused = wrong
        .publish("default", placed())
        .await
        .expect_err("wrong token");
    assert_eq!(code(&refused), tonic::Code::Unauthenticated);
    let listed = wrong
        .admin()
        .list_topics(switchyard_sdk::proto::ListTopicsRequest {})
        .await
        .expect_err("admin too");
    assert_eq!(listed.code(), tonic::Code::Unauthenticated);

    let client = anonymous.with_token(TOKEN).expect("token");
    client
        .publish("default", placed())
        .await
        .expect("publish with the token");
    let topics = client
        .admin()
        .list_topics(switchyard_sdk::proto::ListTopicsRequest {})
        .await
        .expect("admin with the token")
        .into_inner();
    assert!(topics.topics.iter().any(|t| t.name == "orders"));
    // The CLI takes the token from SWITCHYARD_TOKEN.
    let cli = |token: Option<&str>| {
        let mut command = Command::new(binary());
        command
            .args(["topics", "list"])
            .env("SWITCHYARD_URL", &broker.url)
            .env_remove("SWITCHYARD_TOKEN");
        if let Some(token) = token {
            command.env("SWITCHYARD_TOKEN", token);
        }
        command.output().expect("run switchyard")
    };
    let allowed = cli(Some(TOKEN));
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("orders"));
    let denied = cli(None);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("bearer token"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );

    // Each failure is audited with the remote address and counted.
    let failures: Vec<serde_json::Value> = broker
        .audit_records()
        .into_iter()
        .filter(|r| r["operation"] == "Authenticate")
        .collect();
    for reason in ["no credentials", "unknown token"] {
        let record = failures
            .iter()
            .find(|r| r["detail"].as_str().is_some_and(|d| d.starts_with(reason)))
            .unwrap_or_else(|| panic!("{reason} in {failures:#?}"));
        assert_eq!(record["principal"], "unknown");
        assert_eq!(record["outcome"], "denied");
        assert!(
            record["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with("127.0.0.1:")),
            "{record}"
        );
    }
    let metrics = broker.metrics();
    assert!(
        metric_total(&metrics, "switchyard_auth_failures_total") >= 4.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_audited_under_its_principal() {
    let config = format!(
        "auth:\n  tokens:\n    - {{principal: old-service, sha256: {}, expires: 2020-01-01T00:00:00Z}}\n",
        switchyard_broker::api::auth::token_hash("old")
    );
    let (_dir, broker) = start_broker(&config, ORDER_RULES);
    let client = broker.client().await.with_token("old").expect("token");
    client
        .publish(
            "default",
            event("o1", "order.placed", "k", serde_json::json!({})),
        )
        .await
        .expect_err("expired");
    let records = broker.audit_records();
    let record = records
        .iter()
        .find(|r| r["operation"] == "Authenticate")
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(record["principal"], "old-service");
    assert!(
        record["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("expired token")),
        "{record}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_with_the_token_receives_events() {
    let (_dir, broker) = start_broker(&config(), ORDER_RULES);
    let client = broker.client().await.with_token(TOKEN).expect("token");
    client
        .publish(
            "default",
            event("o2", "order.placed", "k", serde_json::json!({})),
        )
        .await
        .expect("publish");
    let (seen, got) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stop = std::sync::Mutex::new(Some(stop));
    client
        .subscribe("billing")
        .run_until(
            move |delivery: switchyard_sdk::Received| {
                let _ = seen.send(delivery.event.id.clone());
                if let Some(stop) = stop.lock().expect("stop").take() {
                    let _ = stop.send(());
                }
                async { Ok::<(), String>(()) }
            },
            async {
                let _ = tokio::time::timeout(TIMEOUT, stopped).await;
            },
        )
        .await
        .expect("run");
    let mut got = got;
    assert_eq!(got.recv().await.as_deref(), Some("o2"));
}

#[test]
fn token_hash_prints_what_the_config_wants_and_bad_hashes_stop_the_start() {
    use std::io::Write;
    let mut child = Command::new(binary())
        .arg("token-hash")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{TOKEN}\n").as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("output");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        switchyard_broker::api::auth::token_hash(TOKEN)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let config = "auth:\n  tokens:\n    - principal: x\n      sha256: not-a-hash\n";
    write_config(dir.path(), config, ORDER_RULES);
    let output = Command::new(binary())
        .args(["serve", "--config"])
        .arg(dir.path().join("config.yaml"))
        .output()
        .expect("serve");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("auth.tokens[0].sha256"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn serving_beyond_loopback_without_auth_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), "", ORDER_RULES);
    let broker = BrokerProcess::start_with(dir.path(), &["--listen", "0.0.0.0:0"]);
    assert!(
        broker.log().contains("WITHOUT authentication"),
        "{}",
        broker.log()
    );
    // The console's HTTP port too: it can administer. (Logged before the
    // broker says it listens.)
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), "", ORDER_RULES);
    let broker = BrokerProcess::start_with(dir.path(), &["--metrics-listen", "0.0.0.0:0"]);
    let log = broker.log();
    assert!(
        log.contains(
            "the console and its admin API on a non-loopback address WITHOUT authentication"
        ),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_throttle_publishes_and_streams_per_principal() {
    use switchyard_sdk::proto;
    let (_dir, broker) = start_broker(&config(), ORDER_RULES);
    let client = broker.client().await.with_token(BULK).expect("token");
    let batch = |n: usize, tag: &str| proto::PublishRequest {
        bus: "default".into(),
        events: (0..n)
            .map(|i| {
                event(
                    &format!("{tag}{i}"),
                    "order.placed",
                    "k",
                    serde_json::json!({}),
                )
            })
            .collect(),
    };
    // A raw client sees the refusal and its hint.
    let mut raw = proto::publisher_client::PublisherClient::new(client.authorized_channel());
    raw.publish(batch(5, "a")).await.expect("a second's worth");
    let refused = raw.publish(batch(1, "b")).await.expect_err("over quota");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused.message().contains("bulk-loader"),
        "{}",
        refused.message()
    );
    assert!(
        refused.metadata().get("retry-after-ms").is_some(),
        "a retry hint"
    );
    // The SDK waits as told and gets through.
    let started = std::time::Instant::now();
    client
        .publish_batch("default", batch(5, "c").events)
        .await
        .expect("the SDK backs off and succeeds");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // Other principals are not throttled.
    let other = broker.client().await.with_token(TOKEN).expect("token");
    other
        .publish_batch("default", batch(50, "d").events)
        .await
        .expect("no quota");

    // One Subscribe stream at a time for bulk-loader.
    let first = RawStream::open_with(&client, "billing", 1).await;
    assert!(first.is_ok(), "the first stream opens");
    let Err(second) = RawStream::open_with(&client, "billing", 1).await else {
        panic!("a second stream is over quota");
    };
    assert_eq!(second.code(), tonic::Code::ResourceExhausted);
    assert!(
        second.message().contains("maximum of 1"),
        "{}",
        second.message()
    );
    drop(first);
    eventually("the slot comes back when the stream ends", || {
        let client = client.clone();
        async move { RawStream::open_with(&client, "billing", 1).await.is_ok() }
    })
    .await;
}
