//! `switchyard publish` and `switchyard tail`.

use super::Connection;
use anyhow::Context;
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use switchyard_broker::config::format_rfc3339_ms;
use switchyard_sdk::{Event, json};
use tokio::sync::Notify;

/// Most events sent per publish call when reading stdin.
const STDIN_BATCH: usize = 500;

/// Flags of `publish`.
#[derive(Debug, clap::Args)]
pub(crate) struct PublishArgs {
    #[command(flatten)]
    connection: Connection,
    /// Bus to publish on.
    #[arg(long, default_value = "default")]
    bus: String,
    /// Read CloudEvents JSON, one event per line, from stdin, publishing
    /// each line as it arrives (batched when lines come fast); one result
    /// line per input line, a summary on stderr at the end.
    #[arg(long, conflicts_with_all = ["event_type", "source", "data", "id"])]
    stdin: bool,
    /// CloudEvents `type`, e.g. com.example.order.placed.
    #[arg(long = "type", required_unless_present = "stdin")]
    event_type: Option<String>,
    /// CloudEvents `source`, e.g. /shop.
    #[arg(long, required_unless_present = "stdin")]
    source: Option<String>,
    /// Event id [default: a new UUID].
    #[arg(long)]
    id: Option<String>,
    /// Subject.
    #[arg(long)]
    subject: Option<String>,
    /// Partition key (events with one key keep their order).
    #[arg(long)]
    key: Option<String>,
    /// JSON data.
    #[arg(long)]
    data: Option<String>,
    /// Extension attribute NAME=VALUE; repeat for several.
    #[arg(long = "ext", value_parser = parse_extension)]
    extensions: Vec<(String, String)>,
    /// Delay the event(s): stored now, routed no earlier than this long
    /// from now, e.g. 15m (sets the `deliverafter` extension).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "deliver_at")]
    deliver_after: Option<std::time::Duration>,
    /// Schedule the event(s) for an RFC 3339 time, e.g. 2026-11-25T18:00:00Z.
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    deliver_at: Option<std::time::SystemTime>,
}

fn parse_extension(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))
}

pub(super) async fn publish(args: PublishArgs) -> Result<(), super::Failure> {
    let client = args.connection.client().await?;
    let deliver_at = args.deliver_at.or_else(|| {
        args.deliver_after
            .map(|delay| std::time::SystemTime::now() + delay)
    });
    let mut summary = Summary::default();
    if args.stdin {
        publish_stdin(&client, &args.bus, deliver_at, &mut summary).await?;
        eprintln!("{summary}");
    } else {
        let mut event = Event::new(
            args.source.unwrap_or_default(),
            args.event_type.unwrap_or_default(),
        );
        if let Some(id) = args.id {
            event = event.id(id);
        }
        if let Some(subject) = args.subject {
            event = event.subject(subject);
        }
        if let Some(key) = args.key {
            event = event.partition_key(key);
        }
        for (name, value) in args.extensions {
            event = event.extension(name, value);
        }
        let event = match args.data {
            Some(data) => {
                let value: serde_json::Value =
                    serde_json::from_str(&data).context("--data must be valid JSON")?;
                event.json(&value)?
            }
            None => event.build(),
        };
        let event = scheduled(event, deliver_at);
        let results = client.publish_batch(&args.bus, vec![event]).await?;
        summary.report(results);
    }
    if summary.rejected > 0 {
        return Err(anyhow::anyhow!(
            "{} of {} events were rejected",
            summary.rejected,
            summary.total()
        )
        .into());
    }
    Ok(())
}

/// How long a batch read from stdin waits for more lines before it is
/// published: short, so a live pipe publishes each line as it arrives.
const STDIN_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// Publishes CloudEvents JSON lines from stdin as they arrive, in batches
/// of up to [`STDIN_BATCH`]; prints one result line per input line (a line
/// that is not an event gets an error line naming it) and keeps count.
async fn publish_stdin(
    client: &switchyard_sdk::Client,
    bus: &str,
    deliver_at: Option<std::time::SystemTime>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let (lines, mut incoming) = tokio::sync::mpsc::channel(2 * STDIN_BATCH);
    // Reading stdin blocks: a thread of its own feeds the channel.
    std::thread::spawn(move || {
        for (n, line) in std::io::stdin().lock().lines().enumerate() {
            let parsed = match line {
                Ok(line) if line.trim().is_empty() => continue,
                Ok(line) => serde_json::from_str::<serde_json::Value>(&line)
                    .map_err(|e| format!("not JSON: {e}"))
                    .and_then(|value| json::from_json(&value).map_err(|e| e.to_string())),
                Err(e) => Err(format!("cannot read stdin: {e}")),
            };
            if lines.blocking_send((n + 1, parsed)).is_err() {
                return;
            }
        }
    });
    while let Some(first) = incoming.recv().await {
        let mut batch = vec![first];
        let linger = tokio::time::sleep(STDIN_LINGER);
        tokio::pin!(linger);
        while batch.len() < STDIN_BATCH {
            tokio::select! {
                next = incoming.recv() => match next {
                    Some(next) => batch.push(next),
                    None => break,
                },
                () = &mut linger => break,
            }
        }
        // Results stay in input order: events before a bad line are
        // published (and reported) before the bad line's error.
        let mut events = Vec::with_capacity(batch.len());
        for (line, parsed) in batch {
            match parsed {
                Ok(event) => events.push(scheduled(event, deliver_at)),
                Err(error) => {
                    if !events.is_empty() {
                        let ready = std::mem::take(&mut events);
                        summary.report(client.publish_batch(bus, ready).await?);
                    }
                    summary.rejected += 1;
                    println!("{}", serde_json::json!({"line": line, "error": error}));
                }
            }
        }
        if !events.is_empty() {
            summary.report(client.publish_batch(bus, events).await?);
        }
    }
    Ok(())
}

/// `event` with a `deliverafter` extension for `deliver_at`, unless it
/// has one.
fn scheduled(
    mut event: switchyard_sdk::CloudEvent,
    deliver_at: Option<std::time::SystemTime>,
) -> switchyard_sdk::CloudEvent {
    if let Some(at) = deliver_at {
        event
            .extensions
            .entry("deliverafter".into())
            .or_insert_with(|| prost_types::Timestamp::from(at).to_string());
    }
    event
}

/// What a publish run did.
#[derive(Debug, Default)]
struct Summary {
    published: usize,
    duplicates: usize,
    rejected: usize,
}

impl Summary {
    fn total(&self) -> usize {
        self.published + self.duplicates + self.rejected
    }

    /// Prints one JSON line per result, in order, and counts them.
    fn report(
        &mut self,
        results: Vec<Result<switchyard_sdk::Published, switchyard_sdk::SdkError>>,
    ) {
        for result in results {
            let line = match result {
                Ok(published) => {
                    if published.duplicate {
                        self.duplicates += 1;
                    } else {
                        self.published += 1;
                    }
                    let mut line = serde_json::json!({
                        "id": published.id,
                        "rules": published.rules,
                        "duplicate": published.duplicate,
                        "offsets": published.offsets.iter().map(|o| serde_json::json!({
                            "topic": o.topic, "partition": o.partition, "offset": o.offset
                        })).collect::<Vec<_>>(),
                    });
                    if let Some(ms) = published.deliver_after_unix_ms {
                        line["deliver_after"] = format_rfc3339_ms(ms).into();
                    }
                    line
                }
                Err(e) => {
                    self.rejected += 1;
                    serde_json::json!({"error": e.to_string()})
                }
            };
            println!("{line}");
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events: {} published, {} duplicates, {} rejected",
            self.total(),
            self.published,
            self.duplicates,
            self.rejected
        )
    }
}

/// Flags of `tail`.
#[derive(Debug, clap::Args)]
pub(crate) struct TailArgs {
    #[command(flatten)]
    connection: Connection,
    /// The subscription to read.
    subscription: String,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
}

pub(super) async fn tail(args: TailArgs) -> Result<(), super::Failure> {
    let client = args.connection.client().await?;
    let limit = args.count.unwrap_or(u64::MAX);
    let seen = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let (handler_seen, handler_done) = (Arc::clone(&seen), Arc::clone(&done));
    let handler = move |delivery: switchyard_sdk::Received| {
        let seen = Arc::clone(&handler_seen);
        let done = Arc::clone(&handler_done);
        async move {
            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
            if n > limit {
                // Past the count: leave it for the next reader.
                return Err("tail stopped");
            }
            let line = serde_json::json!({
                "topic": delivery.topic,
                "partition": delivery.partition,
                "offset": delivery.offset,
                "attempt": delivery.attempt,
                "rules": delivery.rules,
                "event": json::to_json(&delivery.event),
            });
            println!("{line}");
            if n == limit {
                done.notify_one();
            }
            Ok(())
        }
    };
    let stop = async move {
        tokio::select! {
            () = done.notified() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    client
        .subscribe(&args.subscription)
        .max_in_flight(args.count.map_or(100, |c| c.min(100) as u32))
        .run_until(handler, stop)
        .await?;
    Ok(())
}
