//! The peer figure for `publish_deliver`: the same load against NATS
//! JetStream with its file store, on the same machine, so the two can be
//! run side by side (DESIGN.md's throughput target names JetStream).
//!
//! Shape, as in `publish_deliver`'s throughput and steady scenarios: 1 KiB
//! events carrying their send time in a header; publishers send batches
//! (a batch: publish every event, then wait for every stream ack, as the
//! SDK's `publish_batch` waits for the broker's reply); one durable pull
//! consumer with explicit acks acks every 500th delivery (ack-all policy,
//! like the subscriber acking 500 at a time). Latency is publish→deliver.
//!
//! `cargo bench -p switchyard-broker --bench jetstream_peer -- [--events N]
//! [--publishers P] [--batch B] [--rate R] [--seconds S] [--sync always]`
//!
//! Starts `nats-server` from `$NATS_SERVER` (else `nats-server` on the
//! PATH: Debian's package, `apt install nats-server`) on an ephemeral port
//! with its store in a temporary directory. `--sync always` makes the
//! server fsync every write, as Switchyard's `fsync: always` does (server
//! 2.10 or newer; by default JetStream syncs every 2 minutes).

mod support;

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use hdrhistogram::Histogram;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{EVENT_BYTES, flag, now_nanos, report};

const SUBJECT: &str = "bench.event";
/// The consumer acks every this many deliveries (ack-all).
const ACK_EVERY: u64 = 500;
/// The consumer gives up after this long without a delivery.
const STALL: Duration = Duration::from_secs(30);

/// `nats-server -js` on an ephemeral port, killed on drop.
struct NatsServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    fn start(sync_always: bool) -> anyhow::Result<NatsServer> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let sync = if sync_always {
            "  sync_interval: always\n"
        } else {
            ""
        };
        let config = dir.path().join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"\n{sync}}}\n",
                dir.path().join("store").display()
            ),
        )?;
        let binary = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("starting {binary} (apt install nats-server, or set NATS_SERVER)")
            })?;
        let url = format!("nats://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{binary} did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(NatsServer {
            child,
            url,
            _dir: dir,
        })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects and creates the file-backed stream `bench` on [`SUBJECT`].
async fn jetstream(url: &str) -> anyhow::Result<jetstream::Context> {
    let js = jetstream::new(async_nats::connect(url).await?);
    js.get_or_create_stream(stream::Config {
        name: "bench".into(),
        subjects: vec![SUBJECT.into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the stream: {e}"))?;
    Ok(js)
}

/// Publishes events `first..first + count` and waits for every stream ack.
async fn publish_batch(js: &jetstream::Context, first: u64, count: u64) -> anyhow::Result<()> {
    let payload = bytes::Bytes::from(vec![b'x'; EVENT_BYTES]);
    let mut acks = Vec::with_capacity(count as usize);
    for n in first..first + count {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", n.to_string().as_str());
        headers.insert("sentns", now_nanos().to_string().as_str());
        acks.push(
            js.publish_with_headers(SUBJECT, headers, payload.clone())
                .await
                .map_err(|e| anyhow::anyhow!("publish: {e}"))?,
        );
    }
    for ack in acks {
        ack.await.map_err(|e| anyhow::anyhow!("stream ack: {e}"))?;
    }
    Ok(())
}

/// Consumes `expected` events, recording publish→deliver latency (µs).
async fn consume(
    js: jetstream::Context,
    expected: u64,
) -> anyhow::Result<(Instant, Histogram<u64>)> {
    let stream = js
        .get_stream("bench")
        .await
        .map_err(|e| anyhow::anyhow!("stream: {e}"))?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench-sub".into()),
            ack_policy: consumer::AckPolicy::All,
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("consumer: {e}"))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("messages: {e}"))?;
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut received = 0;
    while received < expected {
        let message = tokio::time::timeout(STALL, messages.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!("no delivery for {STALL:?} after {received} of {expected} events")
            })?
            .context("the consumer's stream ended")?
            .map_err(|e| anyhow::anyhow!("delivery: {e}"))?;
        let sent: u64 = message
            .headers
            .as_ref()
            .and_then(|h| h.get("sentns"))
            .and_then(|v| v.as_str().parse().ok())
            .unwrap_or(0);
        histogram.record(now_nanos().saturating_sub(sent) / 1000)?;
        received += 1;
        if received % ACK_EVERY == 0 || received == expected {
            message
                .ack()
                .await
                .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
    }
    Ok((Instant::now(), histogram))
}

async fn throughput(
    sync_always: bool,
    events: u64,
    publishers: u64,
    batch: u64,
) -> anyhow::Result<()> {
    let server = NatsServer::start(sync_always)?;
    let js = jetstream(&server.url).await?;
    let total = events - events % (publishers * batch);
    let consumer = tokio::spawn(consume(js.clone(), total));
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut running = Vec::new();
    for _ in 0..publishers {
        let js = jetstream::new(async_nats::connect(&server.url).await?);
        let next = Arc::clone(&next);
        running.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(batch, Ordering::SeqCst);
                if first >= total {
                    return anyhow::Ok(());
                }
                publish_batch(&js, first, batch).await?;
            }
        }));
    }
    for publisher in running {
        publisher.await??;
    }
    let published = start.elapsed();
    let (done, histogram) = consumer.await??;
    println!(
        "publish only: {total} events in {:.2} s = {:.0} events/s",
        published.as_secs_f64(),
        total as f64 / published.as_secs_f64()
    );
    report(
        &format!(
            "JetStream throughput ({publishers} publishers, batch {batch}, file store, sync {})",
            if sync_always { "always" } else { "default" }
        ),
        total,
        done - start,
        &histogram,
    );
    Ok(())
}

async fn steady(sync_always: bool, rate: u64, seconds: u64) -> anyhow::Result<()> {
    let server = NatsServer::start(sync_always)?;
    let js = jetstream(&server.url).await?;
    // Ticks of 1 ms; each tick publishes rate/1000 events as one batch.
    let per_tick = (rate / 1000).max(1);
    let total = per_tick * 1000 * seconds;
    let consumer = tokio::spawn(consume(js.clone(), total));
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    for n in 0..total / per_tick {
        tick.tick().await;
        let js = js.clone();
        in_flight.spawn(async move { publish_batch(&js, n * per_tick, per_tick).await });
    }
    while let Some(published) = in_flight.join_next().await {
        published??;
    }
    let (done, histogram) = consumer.await??;
    report(
        &format!(
            "JetStream steady {rate} events/s (file store, sync {})",
            if sync_always { "always" } else { "default" }
        ),
        total,
        done - start,
        &histogram,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sync_always = std::env::args()
        .collect::<Vec<_>>()
        .windows(2)
        .any(|pair| pair[0] == "--sync" && pair[1] == "always");
    throughput(
        sync_always,
        flag("--events", 200_000),
        flag("--publishers", 8),
        flag("--batch", 100),
    )
    .await?;
    steady(sync_always, flag("--rate", 10_000), flag("--seconds", 5)).await
}
