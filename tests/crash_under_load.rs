//! Crash safety under load: several publishers publish at a steady rate
//! and two subscriptions (two consumers each) receive and ack, while the
//! broker is SIGKILLed at random moments and restarted, several times. At
//! the end every event acked to a publisher must have been delivered to,
//! and acked by, each subscription; no payload may be corrupted; and no
//! partition's end offset or durable committed offset may ever have gone
//! backwards.
//!
//! The number of kills is `SWITCHYARD_CRASH_KILLS` (default 4); the moments
//! come from a seed printed at the start (`SWITCHYARD_CRASH_SEED` replays
//! one).

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use switchyard_sdk::Client;

const CONFIG: &str = "
topics:
  - name: ledger
    partitions: 4
subscriptions:
  - name: books
    topic: ledger
    max_in_flight: 500
  - name: audit
    topic: ledger
    max_in_flight: 500
";

const RULES: &str = "
rules:
  - name: ledger
    pattern:
      type: [entry.posted]
    targets:
      - topic: ledger
";

const PUBLISHERS: usize = 3;
const BATCH: usize = 10;
const SUBSCRIPTIONS: [&str; 2] = ["books", "audit"];

/// A checksum of what an event must carry, so corruption is visible.
fn checksum(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What the run observed, shared by its tasks.
#[derive(Default)]
struct Observed {
    /// Ids acked to a publisher.
    acked: Mutex<HashSet<String>>,
    /// Ids each subscription's handlers received.
    received: Mutex<HashMap<&'static str, HashSet<String>>>,
    /// Deliveries whose payload did not match their id.
    corrupted: Mutex<Vec<String>>,
    /// Offsets seen going backwards.
    regressions: Mutex<Vec<String>>,
}

/// A small xorshift generator: the kill moments, replayable by seed.
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + self.0 % (high - low)
    }
}

async fn publish_steadily(
    client: Client,
    publisher: usize,
    stop: Arc<AtomicBool>,
    observed: Arc<Observed>,
) {
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let ids: Vec<String> = (seq..seq + BATCH)
            .map(|n| format!("p{publisher}-{n}"))
            .collect();
        let events: Vec<_> = ids
            .iter()
            .map(|id| {
                event(
                    id,
                    "entry.posted",
                    id,
                    serde_json::json!({"id": id, "check": checksum(id)}),
                )
            })
            .collect();
        // Retry the same ids until acked: after a crash the broker's
        // dedup answers for what it already stored.
        loop {
            match client.publish_batch("default", events.clone()).await {
                Ok(results) => {
                    for (id, result) in ids.iter().zip(results) {
                        result.unwrap_or_else(|e| panic!("{id} rejected: {e}"));
                    }
                    observed
                        .acked
                        .lock()
                        .expect("lock")
                        .extend(ids.iter().cloned());
                    break;
                }
                Err(_) if stop.load(Ordering::Relaxed) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        seq += BATCH;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn consume(
    client: &Client,
    subscription: &'static str,
    observed: &Arc<Observed>,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let observed = Arc::clone(observed);
    let stop = Arc::clone(stop);
    let builder = client.subscribe(subscription).max_in_flight(100);
    tokio::spawn(async move {
        let until = async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = builder
            .run_until(
                move |delivery: switchyard_sdk::Received| {
                    let observed = Arc::clone(&observed);
                    async move {
                        let id = delivery.event.id.clone();
                        let intact = delivery.json::<serde_json::Value>().is_ok_and(|data| {
                            data["id"] == id.as_str() && data["check"] == checksum(&id)
                        });
                        if !intact {
                            observed.corrupted.lock().expect("lock").push(id.clone());
                        }
                        observed
                            .received
                            .lock()
                            .expect("lock")
                            .entry(subscription)
                            .or_default()
                            .insert(id);
                        Ok::<(), String>(())
                    }
                },
                until,
            )
            .await;
    })
}

/// Polls every partition's end and durable committed offsets and records
/// any that went down, across restarts.
fn watch_offsets(
    client: &Client,
    observed: &Arc<Observed>,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let admin = client.admin();
    let observed = Arc::clone(observed);
    let stop = Arc::clone(stop);
    tokio::spawn(async move {
        let mut highest: HashMap<(String, u32, &str), u64> = HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            for subscription in SUBSCRIPTIONS {
                let request = switchyard_sdk::proto::DescribeSubscriptionRequest {
                    name: subscription.into(),
                };
                let Ok(description) = admin.clone().describe_subscription(request).await else {
                    continue;
                };
                for p in description.into_inner().partitions {
                    for (what, value) in [("end", p.end_offset), ("committed", p.committed_offset)]
                    {
                        let seen = highest
                            .entry((subscription.to_string(), p.partition, what))
                            .or_default();
                        if value < *seen {
                            observed.regressions.lock().expect("lock").push(format!(
                                "{subscription} partition {} {what} offset went from {} to {value}",
                                p.partition, *seen
                            ));
                        }
                        *seen = (*seen).max(value);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sigkills_under_load_lose_nothing_acked_and_corrupt_nothing() {
    let kills: usize = std::env::var("SWITCHYARD_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("SWITCHYARD_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!(
        "crash-under-load seed {seed} (SWITCHYARD_CRASH_SEED={seed} replays it), {kills} kills"
    );
    let mut moments = Moments(seed);

    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), CONFIG, RULES);
    let mut broker = BrokerProcess::start(dir.path());
    // Restarts listen on the same address, so clients reconnect.
    let addr = broker.url.trim_start_matches("http://").to_string();
    let client = broker.client().await;
    let observed = Arc::new(Observed::default());
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let stop_consuming = Arc::new(AtomicBool::new(false));

    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|n| {
            tokio::spawn(publish_steadily(
                client.clone(),
                n,
                Arc::clone(&stop_publishing),
                Arc::clone(&observed),
            ))
        })
        .collect();
    let consumers: Vec<_> = SUBSCRIPTIONS
        .iter()
        .flat_map(|&s| {
            [
                consume(&client, s, &observed, &stop_consuming),
                consume(&client, s, &observed, &stop_consuming),
            ]
        })
        .collect();
    let watcher = watch_offsets(&client, &observed, &stop_consuming);

    for kill in 0..kills {
        tokio::time::sleep(Duration::from_millis(moments.next_ms(300, 1500))).await;
        let acked = observed.acked.lock().expect("lock").len();
        eprintln!("kill {} with {acked} events acked to publishers", kill + 1);
        broker.kill();
        broker = BrokerProcess::start_with(dir.path(), &["--listen", &addr]);
    }
    tokio::time::sleep(Duration::from_millis(moments.next_ms(300, 1000))).await;
    stop_publishing.store(true, Ordering::Relaxed);
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let acked = observed.acked.lock().expect("lock").clone();
    assert!(
        acked.len() >= PUBLISHERS * BATCH,
        "the load ran: {} acked",
        acked.len()
    );

    for subscription in SUBSCRIPTIONS {
        let observed = Arc::clone(&observed);
        let acked = acked.clone();
        eventually(
            &format!("{subscription} received every acked event"),
            move || {
                let observed = Arc::clone(&observed);
                let acked = acked.clone();
                async move {
                    let received = observed.received.lock().expect("lock");
                    received
                        .get(subscription)
                        .is_some_and(|got| acked.is_subset(got))
                }
            },
        )
        .await;
        until_fully_committed(&broker.admin().await, subscription).await;
    }
    stop_consuming.store(true, Ordering::Relaxed);
    for consumer in consumers {
        consumer.await.expect("consumer");
    }
    watcher.await.expect("watcher");
    broker.stop();

    let corrupted = observed.corrupted.lock().expect("lock").clone();
    assert!(
        corrupted.is_empty(),
        "corrupted payloads (seed {seed}): {corrupted:?}"
    );
    let regressions = observed.regressions.lock().expect("lock").clone();
    assert!(
        regressions.is_empty(),
        "offsets went backwards (seed {seed}): {regressions:?}"
    );
    let verify = std::process::Command::new(binary())
        .args(["log", "verify", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .expect("log verify");
    assert!(
        verify.status.success(),
        "the log verifies after {kills} crashes: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    eprintln!(
        "{} events acked, all delivered and acked by both subscriptions",
        acked.len()
    );
}
