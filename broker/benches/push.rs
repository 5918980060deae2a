//! Push throughput: a broker in-process pushes `--events N` 1 KiB events to
//! a local HTTP endpoint (axum, in-process), one per request or batched
//! (`--batch B`: up to B events per request, 10 ms max wait), with
//! `--in-flight F` concurrent requests. Prints events/s and
//! publish→endpoint latency percentiles.
//!
//! `cargo bench -p switchyard-broker --bench push -- [--events 50000] [--batch 0] [--in-flight 64]`

use axum::http::HeaderMap;
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_broker::config::BrokerConfig;
use switchyard_sdk::{Client, Event};

mod support;

use support::{BenchBroker, flag, now_nanos};

/// What the endpoint saw.
#[derive(Default)]
struct Received {
    events: AtomicU64,
    latency_us: Mutex<Option<Histogram<u64>>>,
}

impl Received {
    fn record(&self, sent_ns: &[u64]) {
        let now = now_nanos();
        if let Ok(mut histogram) = self.latency_us.lock()
            && let Some(histogram) = histogram.as_mut()
        {
            for &sent in sent_ns {
                let _ = histogram.record(now.saturating_sub(sent) / 1000);
            }
        }
        self.events
            .fetch_add(sent_ns.len() as u64, Ordering::Relaxed);
    }
}

/// The `sentns` stamps of a binary-mode request or a JSON batch.
fn stamps(headers: &HeaderMap, body: &[u8]) -> Vec<u64> {
    if let Some(sent) = headers.get("ce-sentns").and_then(|v| v.to_str().ok()) {
        return sent.parse().into_iter().collect();
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Array(events)) => events
            .iter()
            .filter_map(|e| e["sentns"].as_str()?.parse().ok())
            .collect(),
        _ => Vec::new(),
    }
}

fn main() -> anyhow::Result<()> {
    let events = flag("--events", 50_000);
    let batch = flag("--batch", 0);
    let in_flight = flag("--in-flight", 64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let received = Arc::new(Received {
            latency_us: Mutex::new(Some(Histogram::new(3)?)),
            ..Received::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}/events", listener.local_addr()?);
        let seen = Arc::clone(&received);
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = Arc::clone(&seen);
            async move {
                seen.record(&stamps(&headers, &body));
                axum::http::StatusCode::NO_CONTENT
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });

        let rules = dir.path().join("rules.yaml");
        std::fs::write(
            &rules,
            "rules:\n  - name: bench\n    pattern: {type: [bench.event]}\n    targets: [{topic: bench}]\n",
        )?;
        let batching = if batch > 0 {
            format!("      batch: {{max_events: {batch}, max_wait: 10ms}}\n")
        } else {
            String::new()
        };
        let yaml = format!(
            "topics: [{{name: bench, partitions: 4}}]\nsubscriptions:\n  - name: fn\n    topic: bench\n    max_in_flight: {in_flight}\n    push:\n      endpoint: {endpoint}\n{batching}"
        );
        let mut config = BrokerConfig::parse(&yaml, std::path::Path::new("<bench>"))?;
        config.metrics_listen = None;
        config.rules = vec![rules];
        let broker = BenchBroker::start(config, dir).await?;

        let client = Client::connect(broker.url.clone()).await?;
        let started = Instant::now();
        let mut n = 0;
        while n < events {
            let chunk: Vec<_> = (n..(n + 100).min(events))
                .map(|i| {
                    Event::new("/bench", "bench.event")
                        .id(i.to_string())
                        .extension("sentns", now_nanos().to_string())
                        .binary("application/octet-stream", vec![b'x'; 1024])
                })
                .collect();
            n += chunk.len() as u64;
            client.publish_batch("default", chunk).await?;
        }
        while received.events.load(Ordering::Relaxed) < events {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(300),
                "only {} of {events} pushed",
                received.events.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let histogram = received
            .latency_us
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .take()
            .ok_or_else(|| anyhow::anyhow!("no histogram"))?;
        println!(
            "push ({}, {in_flight} in flight): {events} events of 1024 B in {elapsed:.2} s = {:.0} events/s; publish→endpoint p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            if batch > 0 {
                format!("batches of up to {batch}")
            } else {
                "one event per request".to_string()
            },
            events as f64 / elapsed,
            histogram.value_at_quantile(0.5) as f64 / 1000.0,
            histogram.value_at_quantile(0.99) as f64 / 1000.0,
            histogram.max() as f64 / 1000.0
        );
        drop(client);
        broker.stop().await
    })
}
