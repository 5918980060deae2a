//! The `switchyard` CLI against a running broker: help, topics,
//! subscriptions, publish, tail, rules check.

mod support;

use std::process::{Command, Output};
use support::*;

fn cli(url: &str, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env("SWITCHYARD_URL", url)
        .output()
        .expect("run switchyard")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn help_teaches_every_command() {
    let help = stdout(&cli("", &["--help"]));
    for command in [
        "serve",
        "publish",
        "tail",
        "topics",
        "subscriptions",
        "rules",
        "graph",
    ] {
        assert!(help.contains(command), "{help}");
    }
    let serve = stdout(&cli("", &["serve", "--help"]));
    assert!(
        serve.contains("./data") && serve.contains("127.0.0.1:50051"),
        "{serve}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operate_a_broker_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(
        dir.path(),
        "",
        "rules:\n  - name: to-audit\n    pattern: {type: [note.added]}\n    targets: [{topic: audit}]\n",
    );
    let mut broker = BrokerProcess::start(dir.path());
    let url = broker.url.clone();
    let run = move |args: &'static [&'static str]| {
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || cli(&url, args))
                .await
                .expect("join")
        }
    };
    let created = stdout(&run(&["topics", "create", "extra", "--partitions", "3"]).await);
    assert!(created.contains("extra with 3 partitions"), "{created}");
    let topics = stdout(&run(&["topics", "list"]).await);
    assert!(
        topics.contains("audit") && topics.contains("extra"),
        "{topics}"
    );
    stdout(
        &run(&[
            "subscriptions",
            "create",
            "watch",
            "--topic",
            "audit",
            "--ack-deadline",
            "10s",
        ])
        .await,
    );
    let listed = stdout(&run(&["subscriptions", "list"]).await);
    assert!(
        listed.contains("watch") && listed.contains("10s"),
        "{listed}"
    );

    let published = stdout(
        &run(&[
            "publish",
            "--type",
            "note.added",
            "--source",
            "/cli",
            "--id",
            "n1",
            "--key",
            "k",
            "--data",
            r#"{"text":"hi"}"#,
        ])
        .await,
    );
    let published: serde_json::Value = serde_json::from_str(published.trim()).expect("json");
    assert_eq!(published["rules"], serde_json::json!(["to-audit"]));

    let tailed = stdout(&run(&["tail", "watch", "--count", "1"]).await);
    let line: serde_json::Value = serde_json::from_str(tailed.trim()).expect("one JSON line");
    assert_eq!(line["event"]["id"], "n1");
    assert_eq!(line["event"]["data"]["text"], "hi");
    assert_eq!(line["rules"], serde_json::json!(["to-audit"]));

    let admin = broker.admin().await;
    until_fully_committed(&admin, "watch").await;
    let described = stdout(&run(&["subscriptions", "describe", "watch"]).await);
    assert!(described.contains("total lag 0"), "{described}");

    let missing = run(&["subscriptions", "describe", "nope"]).await;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("'nope' not found"));

    // SIGTERM: a clean, zero-exit shutdown.
    broker.stop();
    assert!(broker.log().contains("switchyard stopped"));
}

#[test]
fn rules_check_validates_files_with_exit_code_two() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "rules:\n  - name: a\n    pattern: {type: [x]}\n    targets: [{topic: t}]\n",
    )
    .expect("write");
    let ok = stdout(&cli("", &["rules", "check", good.to_str().expect("utf8")]));
    assert!(ok.contains("1 rule"), "{ok}");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "rules:\n  - name: b\n    pattern: {type: x}\n    targets: [{topic: t}]\n",
    )
    .expect("write");
    let output = cli("", &["rules", "check", bad.to_str().expect("utf8")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.yaml")
            && stderr.contains("rule 'b'")
            && stderr.contains("pattern.type"),
        "{stderr}"
    );
}

const ROUTING_RULES: &str = r#"
rules:
  - name: us-regions
    pattern:
      detail:
        region: [{prefix: "us-"}]
    targets: [{topic: t}]
  - name: big-orders
    pattern:
      type: [order.placed]
      data:
        total: [{numeric: [">", 100]}]
    targets: [{topic: t}]
  - name: not-test
    pattern:
      source: [{anything-but: {prefix: "test/"}}]
    targets: [{topic: t}]
"#;

#[test]
fn rules_test_prints_one_json_line_per_event_with_sorted_rule_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, ROUTING_RULES).expect("write");
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        concat!(
            r#"{"specversion":"1.0","id":"c1","source":"/shop","type":"order.placed","data":{"total":150}}"#, "\n",
            r#"{"specversion":"1.0","id":"c2","source":"test/x","type":"order.placed","data":{"total":50}}"#, "\n",
            r#"{"id":"e1","source":"aws.ec2","detail-type":"x","detail":{"region":"us-east-1"}}"#, "\n",
            "\n",
            r#"{"id":"e2","source":"test/y","detail":{"region":"eu-west-1"}}"#, "\n",
        ),
    )
    .expect("write");
    let output = stdout(&cli(
        "",
        &[
            "rules",
            "test",
            "--rules",
            rules.to_str().expect("utf8"),
            "--events",
            events.to_str().expect("utf8"),
        ],
    ));
    assert_eq!(
        output,
        concat!(
            r#"{"id":"c1","rules":["big-orders","not-test"]}"#,
            "\n",
            r#"{"id":"c2","rules":[]}"#,
            "\n",
            r#"{"id":"e1","rules":["not-test","us-regions"]}"#,
            "\n",
            r#"{"id":"e2","rules":[]}"#,
            "\n",
        )
    );
}

#[test]
fn rules_explain_names_the_failing_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, ROUTING_RULES).expect("write");
    let event = dir.path().join("event.json");
    std::fs::write(&event, r#"{"specversion":"1.0","id":"c1","source":"/shop","type":"order.placed","data":{"total":50}}"#).expect("write");
    let output = stdout(&cli(
        "",
        &[
            "rules",
            "explain",
            "--rules",
            rules.to_str().expect("utf8"),
            "--event",
            event.to_str().expect("utf8"),
        ],
    ));
    assert!(
        output.contains("rule 'big-orders' (bus default): does not match"),
        "{output}"
    );
    assert!(
        output.contains("FAIL data.total: value 50 does not match"),
        "{output}"
    );
    assert!(
        output.contains("ok   type: value \"order.placed\" matches"),
        "{output}"
    );
    assert!(
        output.contains("rule 'not-test' (bus default): MATCHES"),
        "{output}"
    );
}

#[test]
fn graph_maps_the_live_choreography() {
    let (_dir, broker) = start_saga_broker(&[]);
    let mermaid = broker.cli(&["graph", "--format", "mermaid"]);
    let node = |label: &str| {
        mermaid
            .lines()
            .find(|line| line.contains(&format!("\"{label}\"")))
            .and_then(|line| line.trim().split(['(', '[', '{']).next())
            .unwrap_or_else(|| panic!("node {label} in\n{mermaid}"))
            .to_string()
    };
    let edge = |from: &str, to: &str| format!("{} --> {}", node(from), node(to));
    for (from, to) in [
        (
            "com.example.payment.failed",
            "rule payment-failed-release-stock",
        ),
        ("com.example.payment.failed", "rule order-outcomes"),
        ("rule payment-failed-release-stock", "topic stock-releases"),
        ("topic stock-releases", "inventory-compensation"),
        ("topic payments", "payment-service"),
    ] {
        assert!(
            mermaid.contains(&edge(from, to)),
            "{from} -> {to} in\n{mermaid}"
        );
    }
    assert!(
        mermaid.contains(&format!(
            "{} -. dead letters .-> {}",
            node("payment-service"),
            node("topic payment-service.dlq")
        )),
        "{mermaid}"
    );
    let dot = broker.cli(&["graph"]);
    assert!(dot.starts_with("digraph switchyard {"), "{dot}");
    assert_eq!(
        dot.matches(" -> ").count(),
        mermaid.matches("-->").count() + 1
    );
}

#[test]
fn publish_stdin_publishes_each_line_as_it_arrives_and_sums_up() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let (_dir, broker) = start_broker("", ORDER_RULES);
    let mut child = Command::new(binary())
        .args(["publish", "--stdin", "--url", &broker.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut results = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = |id: &str| {
        format!(
            "{}\n",
            serde_json::json!({"specversion": "1.0", "id": id, "source": "/cli", "type": "order.placed", "data": {"n": 1}})
        )
    };
    // A live pipe: the first result comes while stdin is still open.
    stdin.write_all(line("live-1").as_bytes()).expect("write");
    stdin.flush().expect("flush");
    let first = results.next().expect("a result").expect("read");
    let first: serde_json::Value = serde_json::from_str(&first).expect("JSON");
    assert_eq!(first["id"], "live-1", "{first}");
    assert_eq!(first["offsets"][0]["topic"], "orders", "{first}");
    // A bad line is reported by number; the rest still goes out.
    stdin.write_all(b"not json\n").expect("write");
    stdin.write_all(line("live-2").as_bytes()).expect("write");
    stdin.write_all(line("live-1").as_bytes()).expect("write");
    drop(stdin);
    let rest: Vec<serde_json::Value> = results
        .map(|l| serde_json::from_str(&l.expect("read")).expect("JSON"))
        .collect();
    assert_eq!(rest.len(), 3, "{rest:?}");
    assert_eq!(rest[0]["line"], 2, "{rest:?}");
    assert!(
        rest[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not JSON"))
    );
    assert_eq!(rest[1]["id"], "live-2");
    assert_eq!(rest[2]["duplicate"], true);
    let output = child.wait_with_output().expect("wait");
    assert_eq!(
        output.status.code(),
        Some(1),
        "a rejected line fails the run"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("4 events: 2 published, 1 duplicates, 1 rejected"),
        "{stderr}"
    );
}
