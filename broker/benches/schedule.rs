//! Scheduler benchmark: memory and firing accuracy of many pending delayed
//! events.
//!
//! Fills the `__scheduled` topic of an embedded log with `--events N`
//! events whose `deliverafter` times spread evenly over `--window S`
//! seconds starting `--lead S` seconds from now, re-arms them the way a
//! restarting broker does (timed: that is the restart cost), and lets the
//! scheduler fire them into a route function that records how late each
//! fired. Prints the resident memory the armed timers took, and the
//! lateness percentiles.
//!
//! `cargo bench -p switchyard-broker --bench schedule -- [--events 1000000] [--lead 5] [--window 10]`

use hdrhistogram::Histogram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_broker::config::{FsyncPolicy, StorageConfig, format_rfc3339_ms};
use switchyard_broker::log::{EmbeddedLog, EventLog};
use switchyard_broker::model::{StoredEvent, TopicName, now_unix_ms};
use switchyard_broker::schedule::{DELIVER_AFTER, SCHEDULED_TOPIC, Schedule};
use switchyard_sdk::Event;

mod support;

use support::flag;

/// Resident set size of this process, in bytes (Linux).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn main() -> anyhow::Result<()> {
    let events = flag("--events", 1_000_000);
    let lead_ms = flag("--lead", 5) as i64 * 1000;
    let window_ms = (flag("--window", 10) as i64 * 1000).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let storage = StorageConfig {
        fsync: FsyncPolicy::Never,
        ..StorageConfig::default()
    };
    runtime.block_on(async {
        let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path(), &storage)?);
        // Creates the internal topics.
        drop(Schedule::open(Arc::clone(&log))?);
        let topic = TopicName::new(SCHEDULED_TOPIC)?;
        let start_ms = now_unix_ms() + lead_ms;
        let bus = "default".to_string();
        let filled = Instant::now();
        let mut n = 0;
        while n < events {
            let batch: Vec<_> = (n..(n + 1000).min(events))
                .map(|i| {
                    let at = start_ms + (i as i64 * window_ms) / events as i64;
                    let event = Event::new("/bench", "bench.timeout")
                        .id(i.to_string())
                        .extension(DELIVER_AFTER, format_rfc3339_ms(at))
                        .json(&serde_json::json!({"orderId": i}))
                        .unwrap_or_default();
                    StoredEvent::encode(&event, &bus, &[])
                })
                .collect();
            n += batch.len() as u64;
            log.append(&topic, 0, batch).await?;
        }
        println!(
            "stored {events} scheduled events in {:.1} s",
            filled.elapsed().as_secs_f64()
        );
        let before = rss_bytes();
        let rearm = Instant::now();
        let (schedule, armed) = Schedule::open(Arc::clone(&log))?;
        let rearm_time = rearm.elapsed();
        let after = rss_bytes();
        println!(
            "re-armed {armed} timers in {:.2} s (a restart); resident memory +{:.1} MiB = {:.0} B per pending timer",
            rearm_time.as_secs_f64(),
            after.saturating_sub(before) as f64 / (1 << 20) as f64,
            after.saturating_sub(before) as f64 / armed.max(1) as f64
        );
        let lateness = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
        let fired = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let (record, count) = (Arc::clone(&lateness), Arc::clone(&fired));
        let firing = tokio::spawn(schedule.run(
            move |_bus: String, events: Vec<switchyard_broker::model::CloudEvent>| {
                let now = now_unix_ms();
                if let Ok(mut histogram) = record.lock() {
                    for event in &events {
                        let late = event
                            .extensions
                            .get(DELIVER_AFTER)
                            .and_then(|t| switchyard_broker::config::parse_rfc3339_ms(t))
                            .map_or(0, |at| (now - at).max(0) as u64);
                        let _ = histogram.record(late);
                    }
                }
                count.fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
                async { Ok(()) }
            },
            stop.clone(),
        ));
        let deadline = Instant::now() + Duration::from_millis((lead_ms + window_ms) as u64 + 120_000);
        while fired.load(std::sync::atomic::Ordering::Relaxed) < events && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        let _ = firing.await;
        let histogram = lateness.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        println!(
            "fired {} of {events} over {:.0} s; lateness p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
            fired.load(std::sync::atomic::Ordering::Relaxed),
            window_ms as f64 / 1000.0,
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.99),
            histogram.value_at_quantile(0.999),
            histogram.max()
        );
        log.close();
        anyhow::Ok(())
    })
}
