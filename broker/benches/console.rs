//! Console benchmark: what the JSON Admin API (the console's) costs next
//! to gRPC, and what one open console tab costs the broker.
//!
//! Starts a broker in-process (embedded log) with `--subscriptions N`
//! subscriptions, each with a dead-letter topic holding `--dead-letters D`
//! dead letters, then times `--calls C` calls of DescribeSubscription over
//! gRPC (the SDK) and over `POST /api/v1/admin/DescribeSubscription` (JSON,
//! through the in-process gateway), and C / N refreshes of the console's
//! overview (ListTopics, ListSubscriptions, ListRules, `/metrics` and a
//! DescribeSubscription per subscription). Prints calls/s and latency
//! percentiles.
//!
//! `cargo bench -p switchyard-broker --bench console -- [--subscriptions 20] [--dead-letters 100] [--calls 2000]`

use hdrhistogram::Histogram;
use std::future::Future;
use std::time::{Duration, Instant};
use switchyard_broker::config::BrokerConfig;
use switchyard_sdk::{Client, Event, proto};

mod support;

use support::{BenchBroker, flag};

fn main() -> anyhow::Result<()> {
    let subscriptions = flag("--subscriptions", 20);
    let dead_letters = flag("--dead-letters", 100);
    let calls = flag("--calls", 2000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (broker, http) = start_broker().await?;
        let client = Client::connect(broker.url.clone()).await?;
        let admin = client.admin();
        fill(&client, subscriptions, dead_letters).await?;
        println!(
            "{subscriptions} subscriptions, {dead_letters} dead letters each; {calls} calls per row"
        );
        let web = reqwest::Client::new();
        let api = |method: &str| format!("{http}/api/v1/admin/{method}");
        report("DescribeSubscription, gRPC", calls, || {
            let mut admin = admin.clone();
            async move {
                admin
                    .describe_subscription(proto::DescribeSubscriptionRequest { name: "s0".into() })
                    .await?;
                Ok(())
            }
        })
        .await?;
        report("DescribeSubscription, JSON API", calls, || {
            let request = web
                .post(api("DescribeSubscription"))
                .header("content-type", "application/json")
                .body(r#"{"name": "s0"}"#);
            async move {
                let response = request.send().await?;
                anyhow::ensure!(response.status().is_success(), "{}", response.status());
                response.bytes().await?;
                Ok(())
            }
        })
        .await?;
        let refreshes = (calls / subscriptions.max(1)).max(10);
        report("console overview refresh", refreshes, || {
            let (web, http) = (web.clone(), http.clone());
            async move {
                for method in ["ListTopics", "ListSubscriptions", "ListRules"] {
                    post(&web, &api(method), "{}").await?;
                }
                web.get(format!("{http}/metrics"))
                    .send()
                    .await?
                    .bytes()
                    .await?;
                for n in 0..subscriptions {
                    post(
                        &web,
                        &api("DescribeSubscription"),
                        &format!(r#"{{"name": "s{n}"}}"#),
                    )
                    .await?;
                }
                Ok(())
            }
        })
        .await?;
        drop((admin, client, web));
        broker.stop().await
    })
}

async fn post(web: &reqwest::Client, url: &str, body: &str) -> anyhow::Result<()> {
    let response = web
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.bytes().await?;
    Ok(())
}

/// Runs `call` `times` times in sequence; prints calls/s and percentiles.
async fn report<F, Fut>(what: &str, times: u64, mut call: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut histogram = Histogram::<u64>::new(3)?;
    let start = Instant::now();
    for _ in 0..times {
        let began = Instant::now();
        call().await?;
        histogram.record(began.elapsed().as_micros() as u64)?;
    }
    let rate = times as f64 / start.elapsed().as_secs_f64();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{what:<34} {rate:>9.0}/s   p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        ms(0.5),
        ms(0.99),
        histogram.max() as f64 / 1000.0
    );
    Ok(())
}

/// Starts a broker in-process; returns it and its HTTP address.
async fn start_broker() -> anyhow::Result<(BenchBroker, String)> {
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - name: bench\n    pattern: {type: [bench.event]}\n    targets: [{topic: bench}]\n",
    )?;
    let http = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let config = BrokerConfig {
        metrics_listen: Some(http),
        rules: vec![rules],
        ..BrokerConfig::default()
    };
    let broker = BenchBroker::start(config, dir).await?;
    // The HTTP listener binds while serving starts: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(http).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the HTTP listener did not open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((broker, format!("http://{http}")))
}

/// `subscriptions` subscriptions on topic `bench`, each with
/// `dead_letters` events in its dead-letter topic (nacked once, with
/// max_attempts 1).
async fn fill(client: &Client, subscriptions: u64, dead_letters: u64) -> anyhow::Result<()> {
    let mut admin = client.admin();
    for n in 0..subscriptions {
        admin
            .create_subscription(proto::CreateSubscriptionRequest {
                subscription: Some(proto::Subscription {
                    name: format!("s{n}"),
                    topic: "bench".into(),
                    max_attempts: 1,
                    dead_letter_topic: format!("s{n}.dlq"),
                    ..Default::default()
                }),
            })
            .await?;
    }
    let ids: Vec<u64> = (0..dead_letters).collect();
    for chunk in ids.chunks(500) {
        let events = chunk
            .iter()
            .map(|i| {
                Event::new("/bench", "bench.event")
                    .id(format!("e{i}"))
                    .build()
            })
            .collect();
        client.publish_batch("default", events).await?;
    }
    // Every subscription fails every event once: all are dead-lettered.
    let mut consumers = Vec::new();
    for n in 0..subscriptions {
        let name = format!("s{n}");
        let mut admin = admin.clone();
        let consumer = client.subscribe(&name);
        consumers.push(tokio::spawn(async move {
            let all_dead = async move {
                loop {
                    let described = admin
                        .describe_subscription(proto::DescribeSubscriptionRequest {
                            name: name.clone(),
                        })
                        .await;
                    if described.is_ok_and(|d| d.into_inner().dead_letters == dead_letters) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            consumer
                .run_until(|_| async { Err::<(), _>("bench") }, all_dead)
                .await
        }));
    }
    for consumer in consumers {
        consumer.await??;
    }
    Ok(())
}
