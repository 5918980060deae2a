//! `/metrics` after a known workload: publish, duplicate, unmatched and
//! invalid events; deliveries, acks, nacks, a retry and a dead letter; lag
//! of a subscription nobody consumes.

mod support;

use support::*;
use switchyard_sdk::proto;

const CONFIG: &str = "
topics:
  - name: orders
    partitions: 1
subscriptions:
  - name: workers
    topic: orders
    max_attempts: 2
    backoff: {initial: 50ms, multiplier: 2.0, max: 1s, jitter: 0.0}
    dead_letter_topic: orders.dlq
  - name: idle
    topic: orders
";

const RULES: &str = "
rules:
  - name: placed
    pattern:
      type: [com.example.order.placed]
    targets:
      - topic: orders
";

/// The value of one sample line, e.g. `switchyard_acks_total{subscription="workers"}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

fn deploy_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name)
}

fn yaml(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(deploy_file(name)).expect("read deploy file");
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("deploy/{name}: {e}"))
}

/// The `switchyard_*` series named in deploy/alerts.yaml's expressions.
fn alert_series() -> Vec<String> {
    let alerts = yaml("alerts.yaml");
    let mut series = Vec::new();
    let rules = alerts["groups"][0]["rules"].as_array().expect("rules");
    assert!(
        rules.len() >= 4,
        "alerts for DLQ growth, lag, error rate, broker down"
    );
    for rule in rules {
        let expr = rule["expr"].as_str().expect("expr");
        assert!(rule["alert"].is_string() && rule["annotations"]["summary"].is_string());
        let mut rest = expr;
        while let Some(at) = rest.find("switchyard_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            series.push(name);
        }
    }
    series.sort();
    series.dedup();
    series
}

#[test]
fn compose_wires_broker_jaeger_and_prometheus_with_the_alerts() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];
    for service in ["switchyard", "jaeger", "prometheus"] {
        assert!(services[service].is_object(), "service {service}");
    }
    assert_eq!(
        services["switchyard"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "http://jaeger:4317"
    );
    // Mounted files and folders exist.
    for service in ["switchyard", "prometheus"] {
        for volume in services[service]["volumes"].as_array().expect("volumes") {
            let source = volume
                .as_str()
                .expect("volume")
                .split(':')
                .next()
                .expect("source");
            if source.starts_with('.') {
                assert!(
                    deploy_file(source).exists(),
                    "{service} mounts missing {source}"
                );
            }
        }
    }
    let prometheus = yaml("prometheus.yml");
    assert_eq!(prometheus["rule_files"][0], "/etc/prometheus/alerts.yaml");
    assert_eq!(
        prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0],
        "switchyard:9464"
    );
    assert!(deploy_file("Dockerfile").exists());
}

#[tokio::test]
async fn counters_latencies_and_lag_after_a_known_workload() {
    let (_dir, broker) = start_broker(CONFIG, RULES);
    let client = broker.client().await;
    let placed = |id: &str| {
        event(
            id,
            "com.example.order.placed",
            id,
            serde_json::json!({"n": id}),
        )
    };
    // Five orders in one call, then a duplicate, an unmatched event and an
    // invalid one in another.
    let first = client
        .publish_batch(
            "default",
            (1..=5).map(|n| placed(&format!("o{n}"))).collect(),
        )
        .await
        .expect("publish");
    assert!(first.iter().all(Result::is_ok));
    let mut invalid = placed("bad");
    invalid.source.clear();
    let second = client
        .publish_batch(
            "default",
            vec![
                placed("o1"),
                event("x1", "com.example.other", "x1", serde_json::json!({})),
                invalid,
            ],
        )
        .await
        .expect("publish");
    assert!(second[0].as_ref().is_ok_and(|p| p.duplicate));
    assert!(second[2].is_err());

    // workers: ack o1..o4; o5 fails twice and is dead-lettered.
    let mut stream = RawStream::open(&broker.url, "workers", 10)
        .await
        .expect("open");
    let mut acks = Vec::new();
    let mut failures = 0;
    while acks.len() < 4 || failures < 2 {
        let delivery: proto::Delivery = stream.next().await.expect("delivery");
        let id = delivery
            .event
            .as_ref()
            .map(|e| e.id.clone())
            .unwrap_or_default();
        if id == "o5" {
            failures += 1;
            stream.nack(delivery.delivery_id, "boom").await;
        } else {
            acks.push(delivery.delivery_id.clone());
            stream.ack(vec![delivery.delivery_id]).await;
        }
    }
    let admin = broker.admin().await;
    until_fully_committed(&admin, "workers").await;

    let text = broker.metrics();
    for (series, expected) in [
        ("switchyard_events_published_total{bus=\"default\"}", 6.0),
        ("switchyard_events_duplicate_total{bus=\"default\"}", 1.0),
        ("switchyard_events_unmatched_total{bus=\"default\"}", 1.0),
        (
            "switchyard_events_rejected_total{bus=\"default\",reason=\"invalid\"}",
            1.0,
        ),
        (
            "switchyard_events_routed_total{bus=\"default\",rule=\"placed\"}",
            5.0,
        ),
        ("switchyard_events_stored_total{topic=\"orders\"}", 5.0),
        (
            "switchyard_publish_duration_seconds_count{bus=\"default\"}",
            2.0,
        ),
        ("switchyard_deliveries_total{subscription=\"workers\"}", 6.0),
        (
            "switchyard_redeliveries_total{subscription=\"workers\"}",
            1.0,
        ),
        ("switchyard_acks_total{subscription=\"workers\"}", 4.0),
        ("switchyard_nacks_total{subscription=\"workers\"}", 2.0),
        (
            "switchyard_dead_letters_total{subscription=\"workers\"}",
            1.0,
        ),
        (
            "switchyard_publish_to_deliver_seconds_count{subscription=\"workers\"}",
            5.0,
        ),
        (
            "switchyard_subscription_lag_events{subscription=\"workers\"}",
            0.0,
        ),
        (
            "switchyard_subscription_lag_seconds{subscription=\"workers\"}",
            0.0,
        ),
        (
            "switchyard_subscription_lag_events{subscription=\"idle\"}",
            5.0,
        ),
    ] {
        assert_eq!(value(&text, series), expected, "{series}");
    }
    assert!(
        text.contains("# TYPE switchyard_publish_to_deliver_seconds histogram"),
        "{text}"
    );
    // Every series the shipped alert rules use exists.
    for series in alert_series() {
        assert!(
            text.lines()
                .any(|line| line.starts_with(&format!("{series}{{"))
                    || line.starts_with(&format!("{series} "))),
            "deploy/alerts.yaml uses {series}, which /metrics does not export:\n{text}"
        );
    }
    // The idle subscription's oldest event ages.
    eventually("the idle lag has an age", || {
        let text = broker.metrics();
        async move {
            value(
                &text,
                "switchyard_subscription_lag_seconds{subscription=\"idle\"}",
            ) > 0.0
        }
    })
    .await;

    // A deleted subscription's lag disappears.
    let mut admin = admin;
    admin
        .delete_subscription(proto::DeleteSubscriptionRequest {
            name: "idle".into(),
        })
        .await
        .expect("delete");
    let text = broker.metrics();
    assert!(
        sample(
            &text,
            "switchyard_subscription_lag_events{subscription=\"idle\"}"
        )
        .is_none(),
        "{text}"
    );
}

/// The body of an HTTP response.
fn body(response: &str) -> &str {
    response
        .split_once("\r\n\r\n")
        .map_or(response, |(_, body)| body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_is_clean_for_promtool_in_both_formats_and_follows_subscriptions() {
    let config = format!("{CONFIG}buses: [payments]\n");
    let (_dir, broker) = start_broker(&config, RULES);
    let mut admin = broker.admin().await;
    admin
        .create_subscription(proto::CreateSubscriptionRequest {
            subscription: Some(proto::Subscription {
                name: "short-lived".into(),
                topic: "orders".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("create");
    let client = broker.client().await;
    publish_stored(
        &client,
        vec![event(
            "1",
            "com.example.order.placed",
            "k",
            serde_json::json!({}),
        )],
    )
    .await;

    // Classic text by default, with its content type.
    let classic = broker.http_get("/metrics", &[]);
    assert!(
        classic.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{classic}"
    );
    let text = body(&classic);
    assert!(!text.contains("# EOF"), "{text}");
    assert!(text.contains("subscription=\"short-lived\""), "{text}");
    // Counters of a bus nothing happened on exist from the start, at 0.
    for series in [
        "switchyard_events_published_total{bus=\"payments\"} 0",
        "switchyard_events_rejected_total{bus=\"payments\",reason=\"invalid\"} 0",
    ] {
        assert!(text.contains(series), "{series} in {text}");
    }
    assert!(text.contains("switchyard_build_info{version="), "{text}");
    assert!(text.contains("process_resident_memory_bytes "), "{text}");
    // OpenMetrics when the scraper asks for it.
    let open = broker.http_get(
        "/metrics",
        &["Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5"],
    );
    assert!(
        open.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{open}"
    );
    assert!(body(&open).ends_with("# EOF\n"), "{open}");

    // promtool (Debian's prometheus package; scripts/test.sh installs it)
    // finds nothing to complain about.
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut promtool) => {
            use std::io::Write;
            promtool
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("feed promtool");
            let output = promtool.wait_with_output().expect("promtool");
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(output.status.success(), "promtool: {said}");
            assert!(said.trim().is_empty(), "promtool: {said}");
        }
        Err(_) => {
            eprintln!("promtool not installed: skipping its check (apt-get install prometheus)")
        }
    }

    // A deleted subscription's series go with it.
    admin
        .delete_subscription(proto::DeleteSubscriptionRequest {
            name: "short-lived".into(),
        })
        .await
        .expect("delete");
    let text = broker.metrics();
    assert!(!text.contains("subscription=\"short-lived\""), "{text}");
}
