//! `switchyard publish` and `switchyard tail`.

use super::Connection;
use anyhow::Context;
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use switchyard_broker::config::format_rfc3339_ms;
use switchyard_sdk::{Event, json};
use tokio::sync::Notify;

/// Events sent per publish call when reading stdin.
const STDIN_BATCH: usize = 500;

/// Flags of `publish`.
#[derive(Debug, clap::Args)]
pub(crate) struct PublishArgs {
    #[command(flatten)]
    connection: Connection,
    /// Bus to publish on.
    #[arg(long, default_value = "default")]
    bus: String,
    /// Read CloudEvents JSON, one event per line, from stdin.
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
    let events = if args.stdin {
        read_stdin_events()?
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
        vec![event]
    };
    let deliver_at = args.deliver_at.or_else(|| {
        args.deliver_after
            .map(|delay| std::time::SystemTime::now() + delay)
    });
    let events: Vec<switchyard_sdk::CloudEvent> = match deliver_at {
        Some(at) => events
            .into_iter()
            .map(|event| {
                let mut scheduled = event;
                scheduled
                    .extensions
                    .entry("deliverafter".into())
                    .or_insert_with(|| prost_types::Timestamp::from(at).to_string());
                scheduled
            })
            .collect(),
        None => events,
    };
    let total = events.len();
    let mut rejected = 0usize;
    for (n, chunk) in events.chunks(STDIN_BATCH).enumerate() {
        let results = client.publish_batch(&args.bus, chunk.to_vec()).await?;
        for result in results {
            let line = match result {
                Ok(published) => {
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
                    rejected += 1;
                    serde_json::json!({"error": e.to_string()})
                }
            };
            println!("{line}");
        }
        if total > STDIN_BATCH {
            eprintln!(
                "published {} of {total}",
                ((n + 1) * STDIN_BATCH).min(total)
            );
        }
    }
    if rejected > 0 {
        return Err(anyhow::anyhow!("{rejected} of {total} events were rejected").into());
    }
    Ok(())
}

fn read_stdin_events() -> anyhow::Result<Vec<switchyard_sdk::CloudEvent>> {
    let mut events = Vec::new();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("stdin line {}: not JSON", n + 1))?;
        events.push(json::from_json(&value).with_context(|| format!("stdin line {}", n + 1))?);
    }
    Ok(events)
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
