//! Crash safety through the real binary: SIGKILL after acked publishes,
//! restart, and check that nothing acked is lost, un-acked deliveries come
//! again, committed offsets hold, torn tails are repaired and mid-segment
//! corruption stops the broker with a clear error.

mod support;

use std::path::{Path, PathBuf};
use support::*;

const CONFIG: &str = "
topics:
  - name: ledger
    partitions: 1
subscriptions:
  - name: books
    topic: ledger
    max_in_flight: 2000
";

const RULES: &str = "
rules:
  - name: ledger
    pattern:
      type: [entry.posted]
    targets:
      - topic: ledger
";

fn active_segment(dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("data/topics/ledger/0"))
        .expect("partition dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

/// Publishes 1000 events, acks the first 600 of them, waits until that is
/// durable, and SIGKILLs the broker with 400 deliveries unacked.
async fn fill_ack_and_kill(dir: &Path) {
    let mut broker = BrokerProcess::start(dir);
    let client = broker.client().await;
    for batch in 0..4 {
        let events: Vec<_> = (0..250)
            .map(|i| {
                event(
                    &format!("p{}", batch * 250 + i),
                    "entry.posted",
                    "k",
                    serde_json::json!({}),
                )
            })
            .collect();
        publish_stored(&client, events).await;
    }
    let mut stream = RawStream::open(&broker.url, "books", 2000)
        .await
        .expect("open");
    let mut deliveries = Vec::new();
    for _ in 0..1000 {
        deliveries.push(stream.next().await.expect("delivery"));
    }
    let offsets: Vec<u64> = deliveries.iter().map(|d| d.offset).collect();
    assert_eq!(offsets, (0..1000).collect::<Vec<_>>());
    stream
        .ack(
            deliveries[..600]
                .iter()
                .map(|d| d.delivery_id.clone())
                .collect(),
        )
        .await;
    let admin = broker.admin().await;
    eventually("600 committed durably", || {
        let mut admin = admin.clone();
        async move { describe(&mut admin, "books").await.partitions[0].committed_offset == 600 }
    })
    .await;
    broker.kill();
}

async fn assert_resumes_at_600(broker: &BrokerProcess) {
    let mut admin = broker.admin().await;
    let description = describe(&mut admin, "books").await;
    assert_eq!(
        description.partitions[0].end_offset, 1000,
        "nothing acked to a publisher was lost"
    );
    assert_eq!(
        description.partitions[0].committed_offset, 600,
        "committed offset held"
    );
    let mut stream = RawStream::open(&broker.url, "books", 2000)
        .await
        .expect("open");
    for expected in 600..1000 {
        let delivery = stream.next().await.expect("delivery");
        assert_eq!(
            delivery.offset, expected,
            "un-acked deliveries come again, in order"
        );
        assert_eq!(delivery.event.expect("event").id, format!("p{expected}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_acked_and_redelivers_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), CONFIG, RULES);
    fill_ack_and_kill(dir.path()).await;
    let broker = BrokerProcess::start(dir.path());
    assert_resumes_at_600(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_verify_reports_a_clean_log_after_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), CONFIG, RULES);
    fill_ack_and_kill(dir.path()).await;
    let output = std::process::Command::new(binary())
        .args(["log", "verify", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .expect("run verify");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ledger/0: 1000 records"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_truncated_on_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), CONFIG, RULES);
    fill_ack_and_kill(dir.path()).await;
    // A crash in the middle of an append leaves a partial record behind.
    let segment = active_segment(dir.path());
    let mut bytes = std::fs::read(&segment).expect("read");
    let clean_len = bytes.len();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]);
    std::fs::write(&segment, &bytes).expect("tear");
    let broker = BrokerProcess::start(dir.path());
    assert!(
        broker.log().contains("truncating torn tail"),
        "recovery is logged"
    );
    assert_eq!(
        std::fs::metadata(&segment).expect("meta").len(),
        clean_len as u64
    );
    assert_resumes_at_600(&broker).await;
}

#[test]
fn corruption_in_the_middle_of_a_segment_stops_the_broker_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), CONFIG, RULES);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(fill_ack_and_kill(dir.path()));
    let segment = active_segment(dir.path());
    let mut bytes = std::fs::read(&segment).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&segment, &bytes).expect("corrupt");
    let verify = std::process::Command::new(binary())
        .args(["log", "verify", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .expect("run verify");
    assert!(!verify.status.success(), "verify finds it");
    let verify_err = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify_err.contains(&segment.display().to_string()),
        "{verify_err}"
    );
    let output = std::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(dir.path().join("config.yaml"))
        .output()
        .expect("run");
    assert!(!output.status.success(), "refuses to start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("corrupt log segment"), "{stderr}");
    assert!(
        stderr.contains(&segment.display().to_string()),
        "names the file: {stderr}"
    );
    assert_eq!(
        std::fs::read(&segment).expect("read"),
        bytes,
        "nothing was changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_retried_after_a_crash_is_a_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), CONFIG, RULES);
    let original = event(
        "retry-me",
        "entry.posted",
        "k",
        serde_json::json!({"amount": 5}),
    );
    let mut broker = BrokerProcess::start(dir.path());
    let first = broker
        .client()
        .await
        .publish("default", original.clone())
        .await
        .expect("publish");
    broker.kill();
    let broker = BrokerProcess::start(dir.path());
    let retried = broker
        .client()
        .await
        .publish("default", original)
        .await
        .expect("retry");
    assert!(retried.duplicate, "recognised after the restart");
    assert_eq!(retried.offsets, first.offsets);
    assert_eq!(retried.rules, first.rules);
    let mut admin = broker.admin().await;
    assert_eq!(
        describe(&mut admin, "books").await.partitions[0].end_offset,
        1,
        "stored once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_the_dedup_window_holds_every_id_it_held_before() {
    // A window of 100 ids, all of them in one partition of an 8-partition
    // topic (one partition key), beside other topics and internal ones:
    // every id must come back, not a per-partition share.
    let config = "
dedup:
  max_ids: 100
topics:
  - name: ledger
    partitions: 8
  - name: other
    partitions: 4
";
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), config, RULES);
    let events: Vec<_> = (0..100)
        .map(|n| {
            event(
                &format!("e{n}"),
                "entry.posted",
                "one-key",
                serde_json::json!({"n": n}),
            )
        })
        .collect();
    let mut broker = BrokerProcess::start(dir.path());
    publish_stored(&broker.client().await, events.clone()).await;
    broker.kill();
    let broker = BrokerProcess::start(dir.path());
    let client = broker.client().await;
    for result in client
        .publish_batch("default", events)
        .await
        .expect("retry the batch")
    {
        let published = result.expect("accepted");
        assert!(published.duplicate, "{published:?} stored a second copy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_subscribers_reconnect_after_a_broker_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), CONFIG, RULES);
    let mut broker = BrokerProcess::start(dir.path());
    let addr = broker.url.trim_start_matches("http://").to_string();
    let client = broker.client().await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let recorded = std::sync::Arc::clone(&seen);
    let subscriber = tokio::spawn(client.subscribe("books").run(move |delivery| {
        let recorded = std::sync::Arc::clone(&recorded);
        async move {
            recorded.lock().expect("lock").push(delivery.event.id);
            Ok::<(), String>(())
        }
    }));
    client
        .publish(
            "default",
            event("before", "entry.posted", "k", serde_json::json!({})),
        )
        .await
        .expect("publish");
    let contains = |id: &'static str| {
        let seen = std::sync::Arc::clone(&seen);
        move || {
            let seen = std::sync::Arc::clone(&seen);
            async move { seen.lock().expect("lock").iter().any(|s| s == id) }
        }
    };
    eventually("first event handled", contains("before")).await;
    broker.kill();
    let broker = BrokerProcess::start_with(dir.path(), &["--listen", &addr]);
    broker
        .client()
        .await
        .publish(
            "default",
            event("after", "entry.posted", "k", serde_json::json!({})),
        )
        .await
        .expect("publish after restart");
    eventually(
        "event published after the restart handled",
        contains("after"),
    )
    .await;
    assert!(!subscriber.is_finished(), "the subscriber kept running");
    subscriber.abort();
}
