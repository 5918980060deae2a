//! Publish → deliver benchmark through the real gRPC server, durable
//! (fsync before ack, group commit), 1 KiB events.
//!
//! Two scenarios, both with one subscriber acking in batches:
//! - throughput: several concurrent publishers send batches as fast as the
//!   broker acks them; prints events/s and publish→deliver percentiles;
//! - steady: one publisher paced at a fixed rate; prints the percentiles.
//!
//! `cargo bench -p switchyard-broker --bench publish_deliver -- [--events N (0: steady only)]
//! [--publishers P] [--batch B] [--rate R] [--seconds S] [--partitions N]
//! [--otlp URL] [--kafka HOST:PORT]`
//!
//! `--otlp URL` turns tracing on (SDK and broker spans exported to URL), to
//! measure what spans cost. `--kafka HOST:PORT` stores topics in that Kafka
//! cluster (the Kafka backend) instead of the embedded log.

use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchyard_broker::config::{
    Backend, BrokerConfig, KafkaConfig, SubscriptionConfig, TopicConfig,
};
use switchyard_sdk::proto;
use switchyard_sdk::proto::subscribe_request::Request;
use switchyard_sdk::{Client, Event};
use tokio::sync::{Mutex, mpsc};

/// The same allocator as the `switchyard` binary.
mod support;

use support::{BenchBroker, EVENT_BYTES, now_nanos, report};

#[derive(Debug, Clone)]
struct Options {
    events: u64,
    publishers: u64,
    batch: u64,
    rate: u64,
    seconds: u64,
    partitions: u32,
    /// Percent of first attempts the subscriber nacks.
    nack_percent: u64,
    /// Events published to a stalled subscriber (0: skip that scenario).
    backlog: u64,
    /// OTLP endpoint: export spans there (tracing on).
    otlp: Option<String>,
    /// Kafka bootstrap servers: use the Kafka backend.
    kafka: Option<String>,
    /// Record the flow history (`--flow off` turns it off).
    flow: bool,
}

fn options() -> Options {
    let mut options = Options {
        events: 200_000,
        publishers: 8,
        batch: 100,
        rate: 10_000,
        seconds: 5,
        partitions: 4,
        nack_percent: 0,
        backlog: 0,
        otlp: None,
        kafka: None,
        flow: true,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        let value = pair[1].parse().unwrap_or(0);
        match pair[0].as_str() {
            "--events" => options.events = value,
            "--publishers" => options.publishers = value,
            "--batch" => options.batch = value,
            "--rate" => options.rate = value,
            "--seconds" => options.seconds = value,
            "--partitions" => options.partitions = value as u32,
            "--nack-percent" => options.nack_percent = value,
            "--backlog" => options.backlog = value,
            "--otlp" => options.otlp = Some(pair[1].clone()),
            "--kafka" => options.kafka = Some(pair[1].clone()),
            "--flow" => options.flow = pair[1] != "off",
            _ => {}
        }
    }
    options
}

fn bench_event(n: u64) -> proto::CloudEvent {
    Event::new("/bench", "bench.event")
        .id(n.to_string())
        .extension("sentns", now_nanos().to_string())
        .binary("application/octet-stream", vec![b'x'; EVENT_BYTES])
}

/// Starts a broker in-process, in a temporary directory.
async fn start_broker(options: &Options) -> anyhow::Result<BenchBroker> {
    let dir = tempfile::tempdir()?;
    let partitions = options.partitions;
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - name: bench\n    pattern: {type: [bench.event]}\n    targets: [{topic: bench}]\n",
    )?;
    let config = BrokerConfig {
        metrics_listen: None,
        rules: vec![rules],
        topics: vec![TopicConfig {
            name: "bench".into(),
            partitions: Some(partitions),
        }],
        subscriptions: vec![SubscriptionConfig {
            name: "bench-sub".into(),
            topic: "bench".into(),
            max_in_flight: 10_000,
            ack_deadline: Duration::from_secs(60),
            start: Default::default(),
            max_attempts: None,
            dead_letter_topic: None,
            ordering: Default::default(),
            rate_limit: None,
            filter: None,
            push: None,
            backoff: switchyard_broker::config::BackoffConfig {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(100),
                ..Default::default()
            },
        }],
        flow: switchyard_broker::config::FlowConfig {
            enabled: options.flow,
            ..Default::default()
        },
        ..BrokerConfig::default()
    };
    let config = match &options.kafka {
        Some(brokers) => BrokerConfig {
            backend: Backend::Kafka,
            kafka: KafkaConfig {
                brokers: brokers.clone(),
                topic_prefix: format!("bench{}.", now_nanos()),
                // tansu 0.6 needs one record per produce batch (docs/kafka.md).
                settings: [("batch.num.messages".to_string(), "1".to_string())].into(),
                ..KafkaConfig::default()
            },
            ..config
        },
        None => config,
    };
    BenchBroker::start(config, dir).await
}

/// Consumes `expected` events, recording publish→deliver latency of each
/// acked delivery; nacks `nack_percent`% of first attempts (they come back
/// after the subscription's 10 ms backoff).
async fn consume(
    url: String,
    expected: u64,
    nack_percent: u64,
    histogram: Arc<Mutex<Histogram<u64>>>,
) -> anyhow::Result<Instant> {
    let (requests, rx) = mpsc::channel(1024);
    requests
        .send(proto::SubscribeRequest {
            request: Some(Request::Open(proto::Open {
                subscription: "bench-sub".into(),
                max_in_flight: 10_000,
            })),
        })
        .await?;
    let client = Client::connect(url).await?;
    let mut stream = proto::subscriber_client::SubscriberClient::new(client.channel())
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut received = 0;
    let mut acks = Vec::with_capacity(1000);
    let mut local = Histogram::<u64>::new(3)?;
    while received < expected {
        let Some(delivery) = stream.message().await? else {
            anyhow::bail!("stream ended after {received} events");
        };
        let sent: u64 = delivery
            .event
            .as_ref()
            .and_then(|e| e.extensions.get("sentns"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if delivery.attempt == 1 && delivery.offset.wrapping_mul(0x9E37_79B9) % 100 < nack_percent {
            let nack = proto::Nack {
                delivery_id: delivery.delivery_id,
                reason: "bench".into(),
                delay_ms: 0,
            };
            requests
                .send(proto::SubscribeRequest {
                    request: Some(Request::Settle(proto::Settle {
                        nacks: vec![nack],
                        ..Default::default()
                    })),
                })
                .await?;
            continue;
        }
        local.record(now_nanos().saturating_sub(sent) / 1000)?;
        received += 1;
        acks.push(delivery.delivery_id);
        if acks.len() >= 500 || received == expected {
            requests
                .send(proto::SubscribeRequest {
                    request: Some(Request::Settle(proto::Settle {
                        ack_ids: std::mem::take(&mut acks),
                        ..Default::default()
                    })),
                })
                .await?;
        }
    }
    histogram.lock().await.add(&local)?;
    Ok(Instant::now())
}

async fn throughput(options: &Options) -> anyhow::Result<()> {
    let broker = start_broker(options).await?;
    let url = broker.url.clone();
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let total = options.events - options.events % (options.publishers * options.batch);
    let consumer = tokio::spawn(consume(
        url.clone(),
        total,
        options.nack_percent,
        Arc::clone(&histogram),
    ));
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for _ in 0..options.publishers {
        let client = Client::connect(url.clone()).await?;
        let next = Arc::clone(&next);
        let batch = options.batch;
        publishers.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(batch, Ordering::SeqCst);
                if first >= total {
                    return anyhow::Ok(());
                }
                let events = (first..first + batch).map(bench_event).collect();
                for result in client.publish_batch("default", events).await? {
                    result?;
                }
            }
        }));
    }
    for publisher in publishers {
        publisher.await??;
    }
    let published = start.elapsed();
    let done = consumer.await??;
    println!(
        "publish only: {total} events in {:.2} s = {:.0} events/s",
        published.as_secs_f64(),
        total as f64 / published.as_secs_f64()
    );
    report(
        &format!(
            "throughput ({} publishers, batch {}, {} partitions, fsync always, {}% nacked once, flow history {})",
            options.publishers,
            options.batch,
            options.partitions,
            options.nack_percent,
            if options.flow { "on" } else { "off" }
        ),
        total,
        done - start,
        &*histogram.lock().await,
    );
    broker.stop().await
}

async fn steady(options: &Options) -> anyhow::Result<()> {
    let broker = start_broker(options).await?;
    let url = broker.url.clone();
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    // Ticks of 1 ms; each tick publishes rate/1000 events as one batch.
    let per_tick = (options.rate / 1000).max(1);
    let total = per_tick * 1000 * options.seconds;
    let consumer = tokio::spawn(consume(
        url.clone(),
        total,
        options.nack_percent,
        Arc::clone(&histogram),
    ));
    let client = Client::connect(url).await?;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    for n in 0..total / per_tick {
        tick.tick().await;
        let client = client.clone();
        in_flight.spawn(async move {
            let events = (n * per_tick..(n + 1) * per_tick)
                .map(bench_event)
                .collect();
            for result in client.publish_batch("default", events).await? {
                result?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = in_flight.join_next().await {
        result??;
    }
    drop(client);
    let done = consumer.await??;
    report(
        &format!(
            "steady {} events/s (batch {per_tick} per ms, fsync always, {}% nacked once)",
            options.rate, options.nack_percent
        ),
        total,
        done - start,
        &*histogram.lock().await,
    );
    broker.stop().await
}

/// Resident and peak memory of this process, in MiB, from /proc.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Publishes `backlog` events while a subscriber holds its credits and
/// never acks; reports the memory of the process (broker and load
/// generator) before and after.
async fn stalled(options: &Options) -> anyhow::Result<()> {
    let broker = start_broker(options).await?;
    let url = broker.url.clone();
    let (requests, rx) = mpsc::channel(16);
    requests
        .send(proto::SubscribeRequest {
            request: Some(Request::Open(proto::Open {
                subscription: "bench-sub".into(),
                max_in_flight: 1000,
            })),
        })
        .await?;
    let client = Client::connect(url.clone()).await?;
    let mut stream = proto::subscriber_client::SubscriberClient::new(client.channel())
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    // Take the first credits' worth, then stall.
    let mut held = 0;
    let before = memory_mib();
    let start = Instant::now();
    for batch in 0..options.backlog / 1000 {
        let events = (batch * 1000..(batch + 1) * 1000)
            .map(bench_event)
            .collect();
        for result in client.publish_batch("default", events).await? {
            result?;
        }
        while held < 1000 {
            match tokio::time::timeout(Duration::from_millis(1), stream.message()).await {
                Ok(Ok(Some(_))) => held += 1,
                _ => break,
            }
        }
    }
    let after = memory_mib();
    println!(
        "stalled subscriber ({held} deliveries held, never acked), backlog {} events of {EVENT_BYTES} B published in {:.1} s: RSS {:.0} MiB before, {:.0} MiB after (peak {:.0} MiB)",
        options.backlog,
        start.elapsed().as_secs_f64(),
        before.0,
        after.0,
        after.1
    );
    drop((requests, stream, client));
    broker.stop().await
}

fn main() -> anyhow::Result<()> {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "machine: {} cores; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH
    );
    runtime.block_on(async {
        // As the `switchyard` binary: JSON logs (RUST_LOG), spans when asked.
        let _telemetry =
            switchyard_sdk::telemetry::init_with(switchyard_sdk::telemetry::TelemetryOptions {
                service_name: "publish-deliver-bench".into(),
                otlp_endpoint: options.otlp.clone(),
            })?;
        if options.backlog > 0 {
            return stalled(&options).await;
        }
        if options.events > 0 {
            throughput(&options).await?;
        }
        steady(&options).await
    })
}
