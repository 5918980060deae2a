//! `switchyard topics|subscriptions|rules`.

use super::{Connection, EXIT_INVALID, Failure};
use anyhow::Context;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard_broker::config::{BackoffConfig, StartPosition, format_rfc3339_ms};
use switchyard_broker::rules::{RuleSet, event_view};
use switchyard_sdk::proto;

/// Push delivery flags of `subscriptions create`.
#[derive(Debug, clap::Args)]
pub(crate) struct PushArgs {
    /// POST each event to this http(s) URL (CloudEvents HTTP binding)
    /// instead of waiting for stream consumers; 2xx acks, 408/429/5xx retry
    /// (honouring Retry-After), other 4xx dead-letter; --max-in-flight caps
    /// concurrent requests, --rate-limit their rate.
    #[arg(long)]
    push_endpoint: Option<String>,
    /// Send the whole event as application/cloudevents+json (structured
    /// mode) instead of ce-* headers with the data as body (binary mode).
    #[arg(long, requires = "push_endpoint")]
    push_structured: bool,
    /// Time limit of one request [default: 10s].
    #[arg(long, requires = "push_endpoint", value_parser = humantime::parse_duration)]
    push_timeout: Option<Duration>,
    /// Environment variable holding the signing secret (whsec_ + base64;
    /// Standard Webhooks headers), so the secret stays out of shell history.
    #[arg(long, requires = "push_endpoint")]
    push_secret_env: Option<String>,
    /// What 4xx answers do [default: dead-letter with --dead-letter-topic,
    /// else retry].
    #[arg(long, requires = "push_endpoint", value_enum)]
    push_client_errors: Option<ClientErrors>,
    /// Up to this many events per request, as a CloudEvents JSON batch
    /// (application/cloudevents-batch+json).
    #[arg(long, requires = "push_endpoint")]
    push_batch: Option<u32>,
    /// Longest a partial batch waits for more events [default: 100ms].
    #[arg(long, requires = "push_batch", value_parser = humantime::parse_duration)]
    push_batch_wait: Option<Duration>,
}

/// What 4xx push answers do.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum ClientErrors {
    /// Dead-letter at once: retrying cannot help.
    DeadLetter,
    /// Retry with the backoff.
    Retry,
}

impl PushArgs {
    fn into_proto(self) -> Result<Option<proto::PushConfig>, Failure> {
        let Some(endpoint) = self.push_endpoint else {
            return Ok(None);
        };
        let secret = match &self.push_secret_env {
            Some(name) => std::env::var(name).map_err(|_| Failure {
                error: anyhow::anyhow!(
                    "--push-secret-env {name}: that environment variable is not set"
                ),
                code: EXIT_INVALID,
            })?,
            None => String::new(),
        };
        Ok(Some(proto::PushConfig {
            endpoint,
            structured: self.push_structured,
            timeout_ms: self.push_timeout.map_or(0, |t| t.as_millis().max(1) as u32),
            on_client_error: match self.push_client_errors {
                None => proto::ClientErrorPolicy::Unspecified,
                Some(ClientErrors::DeadLetter) => proto::ClientErrorPolicy::DeadLetter,
                Some(ClientErrors::Retry) => proto::ClientErrorPolicy::Retry,
            } as i32,
            secret,
            signed: false,
            batch_max_events: self.push_batch.unwrap_or(0),
            batch_max_wait_ms: self.push_batch_wait.map_or(100, |w| w.as_millis() as u32),
        }))
    }
}

/// `switchyard scheduled ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ScheduledCommand {
    /// List events waiting for their delivery time, next first.
    List {
        #[command(flatten)]
        connection: Connection,
        /// Most events shown.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Cancel a scheduled event before it fires.
    Cancel {
        #[command(flatten)]
        connection: Connection,
        /// The event id.
        id: String,
        /// The event source.
        #[arg(long)]
        source: String,
        /// The bus it was published on.
        #[arg(long, default_value = "default")]
        bus: String,
    },
}

pub(super) async fn scheduled(command: ScheduledCommand) -> Result<(), Failure> {
    match command {
        ScheduledCommand::List { connection, limit } => {
            let mut admin = admin(&connection).await?;
            let response = admin
                .list_scheduled(proto::ListScheduledRequest { limit })
                .await?
                .into_inner();
            println!("{} scheduled event(s) pending", response.pending);
            println!(
                "{:<26} {:<10} {:<38} {:<24} TYPE",
                "DELIVER AFTER", "BUS", "EVENT ID", "SOURCE"
            );
            for scheduled in response.events {
                let event = scheduled.event.unwrap_or_default();
                println!(
                    "{:<26} {:<10} {:<38} {:<24} {}",
                    format_rfc3339_ms(scheduled.deliver_after_unix_ms),
                    scheduled.bus,
                    event.id,
                    event.source,
                    event.r#type
                );
            }
        }
        ScheduledCommand::Cancel {
            connection,
            id,
            source,
            bus,
        } => {
            let mut admin = admin(&connection).await?;
            admin
                .cancel_scheduled(proto::CancelScheduledRequest {
                    bus,
                    source,
                    id: id.clone(),
                })
                .await?;
            println!("cancelled scheduled event {id}");
        }
    }
    Ok(())
}

/// `switchyard topics ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TopicsCommand {
    /// List topics and their partition counts.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Create a topic.
    Create {
        #[command(flatten)]
        connection: Connection,
        /// Topic name (letters, digits, '.', '_', '-').
        name: String,
        /// Partitions [default: the broker's storage.default_partitions].
        #[arg(long)]
        partitions: Option<u32>,
    },
    /// Delete a topic and its data (refused while subscriptions or rules use it).
    Delete {
        #[command(flatten)]
        connection: Connection,
        /// Topic name.
        name: String,
    },
}

/// `switchyard subscriptions ...`
// Parsed once per run: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SubscriptionsCommand {
    /// List subscriptions.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Create a subscription on a topic.
    Create {
        #[command(flatten)]
        connection: Connection,
        /// Subscription name.
        name: String,
        /// The topic to read.
        #[arg(long)]
        topic: String,
        /// Default credits of a stream [default: 100].
        #[arg(long)]
        max_in_flight: Option<u32>,
        /// Redeliver when not settled within this time, e.g. 30s.
        #[arg(long, value_parser = humantime::parse_duration)]
        ack_deadline: Option<Duration>,
        /// Start from the oldest event (earliest), only new ones (latest),
        /// or the first appended at or after an RFC 3339 time.
        #[arg(long, default_value = "earliest", value_parser = StartPosition::parse)]
        start: StartPosition,
        /// Failed attempts before an event goes to --dead-letter-topic
        /// [default: retry forever].
        #[arg(long, requires = "dead_letter_topic")]
        max_attempts: Option<u32>,
        /// Topic for events that failed --max-attempts times (created if
        /// missing).
        #[arg(long)]
        dead_letter_topic: Option<String>,
        /// First retry delay, e.g. 500ms [default: 1s]; doubles per retry.
        #[arg(long, value_parser = humantime::parse_duration)]
        backoff_initial: Option<Duration>,
        /// Longest retry delay [default: 60s].
        #[arg(long, value_parser = humantime::parse_duration)]
        backoff_max: Option<Duration>,
        /// Deliver one event per partition key at a time, in order; a
        /// failing event holds back only its own key.
        #[arg(long)]
        ordered_by_key: bool,
        /// Most deliveries per second to all consumers together.
        #[arg(long)]
        rate_limit: Option<f64>,
        /// Extra event pattern (JSON, the rules language): other events of
        /// the topic are skipped, e.g. '{"data": {"region": ["eu"]}}'.
        #[arg(long)]
        filter: Option<String>,
        #[command(flatten)]
        push: PushArgs,
    },
    /// Show committed offset, end offset, lag and in-flight per partition.
    Describe {
        #[command(flatten)]
        connection: Connection,
        /// Subscription name.
        name: String,
    },
    /// Move a subscription: replay from an earlier point or skip ahead.
    /// Deliveries in flight are forgotten; the new position is durable.
    ///
    /// Examples:
    ///   switchyard subscriptions seek billing --to-earliest
    ///   switchyard subscriptions seek billing --to-time 2026-11-25T10:00:00Z
    ///   switchyard subscriptions seek billing --to-offset 0:120 --to-offset 3:7
    #[command(verbatim_doc_comment)]
    Seek {
        #[command(flatten)]
        connection: Connection,
        /// Subscription name.
        name: String,
        /// The oldest retained event of every partition.
        #[arg(long, group = "target")]
        to_earliest: bool,
        /// The end of every partition (skip everything not yet acked).
        #[arg(long, group = "target")]
        to_latest: bool,
        /// PARTITION:OFFSET; repeat for several partitions (others stay).
        #[arg(long, group = "target", value_parser = parse_partition_offset)]
        to_offset: Vec<(u32, u64)>,
        /// The first event appended at or after this RFC 3339 time.
        #[arg(long, group = "target", value_parser = parse_time_ms)]
        to_time: Option<i64>,
    },
    /// Delete a subscription and its offsets.
    Delete {
        #[command(flatten)]
        connection: Connection,
        /// Subscription name.
        name: String,
    },
}

fn parse_partition_offset(text: &str) -> Result<(u32, u64), String> {
    let (partition, offset) = text
        .split_once(':')
        .ok_or_else(|| format!("expected PARTITION:OFFSET, like 0:120, got {text:?}"))?;
    let partition = partition
        .parse()
        .map_err(|_| format!("bad partition in {text:?}"))?;
    let offset = offset
        .parse()
        .map_err(|_| format!("bad offset in {text:?}"))?;
    Ok((partition, offset))
}

fn parse_time_ms(text: &str) -> Result<i64, String> {
    switchyard_broker::config::parse_rfc3339_ms(text)
        .ok_or_else(|| format!("expected an RFC 3339 time like 2026-11-25T10:00:00Z, got {text:?}"))
}

/// `switchyard dlq ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DlqCommand {
    /// List the events a subscription dead-lettered, oldest first, with
    /// attempts and the last failure reason.
    List {
        #[command(flatten)]
        connection: Connection,
        /// Subscription name.
        subscription: String,
        /// Most entries shown.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only dead letters whose event matches this pattern (JSON), e.g.
        /// '{"type": ["payment.requested"]}'.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Put dead letters back to this subscription only (not to the other
    /// subscribers of the topic), delivered afresh from attempt 1 with the
    /// event unchanged. Each dead letter is redriven at most once.
    ///
    /// Example: switchyard dlq redrive payment-service --filter '{"data": {"currency": ["EUR"]}}' --limit 100
    Redrive {
        #[command(flatten)]
        connection: Connection,
        /// Subscription name.
        subscription: String,
        /// Only dead letters whose event matches this pattern (JSON).
        #[arg(long)]
        filter: Option<String>,
        /// Most dead letters redriven [default: all].
        #[arg(long)]
        limit: Option<u32>,
    },
}

pub(super) async fn dlq(command: DlqCommand) -> Result<(), Failure> {
    match command {
        DlqCommand::List {
            connection,
            subscription,
            limit,
            filter,
        } => {
            let mut admin = admin(&connection).await?;
            let dead = admin
                .list_dead_letters(proto::ListDeadLettersRequest {
                    subscription,
                    limit,
                    filter_json: filter.unwrap_or_default(),
                })
                .await?
                .into_inner()
                .dead_letters;
            println!(
                "{:<28} {:<38} {:<30} {:>8}  {:<8}  LAST REASON",
                "DEAD LETTER", "EVENT ID", "TYPE", "ATTEMPTS", "STATE"
            );
            for entry in dead {
                let event = entry.event.unwrap_or_default();
                let meta = entry.dead_letter.unwrap_or_default();
                println!(
                    "{:<28} {:<38} {:<30} {:>8}  {:<8}  {}",
                    format!("{}/{}@{}", entry.topic, entry.partition, entry.offset),
                    event.id,
                    event.r#type,
                    meta.attempts,
                    if meta.redriven { "redriven" } else { "waiting" },
                    meta.last_reason
                );
            }
        }
        DlqCommand::Redrive {
            connection,
            subscription,
            filter,
            limit,
        } => {
            let mut admin = admin(&connection).await?;
            let wanted = limit.map_or(u64::MAX, u64::from);
            let progress = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template(
                    "redriving {bar:40} {pos}/{len} dead letters",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let mut done = 0u64;
            while done < wanted {
                let batch = (wanted - done).min(REDRIVE_BATCH) as u32;
                let response = admin
                    .redrive_dead_letters(proto::RedriveDeadLettersRequest {
                        subscription: subscription.clone(),
                        filter_json: filter.clone().unwrap_or_default(),
                        limit: batch,
                        only: Vec::new(),
                    })
                    .await?
                    .into_inner();
                done += u64::from(response.redriven);
                progress.set_length((done + u64::from(response.remaining)).min(wanted));
                progress.set_position(done);
                if response.redriven == 0 || response.remaining == 0 {
                    break;
                }
            }
            progress.finish_and_clear();
            println!("redrove {done} dead letter(s) to subscription {subscription}");
        }
    }
    Ok(())
}

/// Dead letters redriven per request (progress advances per batch).
const REDRIVE_BATCH: u64 = 100;

/// `switchyard schemas ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SchemasCommand {
    /// Register a .proto file with a running broker: patterns can then
    /// match fields of payloads whose dataschema or type names its
    /// messages. Kept across restarts.
    Register {
        #[command(flatten)]
        connection: Connection,
        /// The .proto file; other files import it by its file name.
        file: PathBuf,
    },
    /// List the registered protobuf messages.
    List {
        #[command(flatten)]
        connection: Connection,
    },
}

pub(super) async fn schemas(command: SchemasCommand) -> Result<(), Failure> {
    match command {
        SchemasCommand::Register { connection, file } => {
            let source = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let file_name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut admin = admin(&connection).await?;
            let registered = admin
                .register_schema(proto::RegisterSchemaRequest { file_name, source })
                .await?
                .into_inner();
            println!(
                "registered {}: {}",
                file.display(),
                registered.messages.join(", ")
            );
        }
        SchemasCommand::List { connection } => {
            let mut admin = admin(&connection).await?;
            for message in admin
                .list_schemas(proto::ListSchemasRequest {})
                .await?
                .into_inner()
                .messages
            {
                println!("{message}");
            }
        }
    }
    Ok(())
}

/// `switchyard rules ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum RulesCommand {
    /// Validate rule files without a broker; exit 2 naming file, rule and
    /// field when one is invalid.
    Check {
        /// Rule files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Match events against rule files without a broker. Prints one JSON
    /// line per input event: {"id": "<event id>", "rules": [matched rule
    /// names, sorted]}. Events may be CloudEvents JSON (with specversion) or
    /// any other JSON object, e.g. EventBridge-shaped, matched as given.
    Test {
        /// Rule files (YAML); repeat for several.
        #[arg(long = "rules", required = true)]
        rules: Vec<PathBuf>,
        /// Events, one JSON object per line ("-" for stdin).
        #[arg(long)]
        events: PathBuf,
        /// Only rules of this bus [default: every bus].
        #[arg(long)]
        bus: Option<String>,
    },
    /// Say for each rule whether one event matches, field by field.
    Explain {
        /// Rule files (YAML); repeat for several.
        #[arg(long = "rules", required = true)]
        rules: Vec<PathBuf>,
        /// A file with one event (JSON); "-" for stdin.
        #[arg(long)]
        event: PathBuf,
    },
    /// List the rules a running broker uses.
    List {
        #[command(flatten)]
        connection: Connection,
        /// Only rules of this bus.
        #[arg(long, default_value = "")]
        bus: String,
    },
    /// Before deploying a rules file, see what it would do with the
    /// broker's recent traffic: per rule, how many of the newest recorded
    /// events of the bus it matches now and would match; per subscription,
    /// how many it receives now and would receive (so you see who starts
    /// or stops getting events).
    ///
    /// Example: switchyard rules dry-run --rules new-rules.yaml --bus default --last 5000
    #[command(verbatim_doc_comment)]
    DryRun {
        #[command(flatten)]
        connection: Connection,
        /// The candidate rules file (YAML; the whole set for the bus).
        #[arg(long = "rules")]
        rules: PathBuf,
        /// The bus whose traffic is replayed.
        #[arg(long, default_value = "default")]
        bus: String,
        /// How many of the newest recorded events to examine.
        #[arg(long, default_value_t = 1000)]
        last: u32,
    },
}

/// A dry-run report as text: rules, then subscriptions, with the change
/// marked.
fn render_dry_run(bus: &str, report: &proto::DryRunRulesResponse) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "examined the {} newest recorded event(s) of bus {bus}\n\nrule                         change     matched now -> would match\n",
        report.examined
    );
    for rule in &report.rules {
        let _ = writeln!(
            out,
            "{:<28} {:<10} {:>11} -> {}",
            rule.name, rule.change, rule.matched_before, rule.matched_after
        );
    }
    out.push_str(
        "\nsubscription                 topic              receives now -> would receive\n",
    );
    for sub in &report.subscriptions {
        let verdict = match (sub.received_before, sub.received_after) {
            (0, 0) => "",
            (0, _) => "  (starts receiving)",
            (_, 0) => "  (stops receiving)",
            (a, b) if a != b => "  (changes)",
            _ => "",
        };
        let _ = writeln!(
            out,
            "{:<28} {:<18} {:>12} -> {}{verdict}",
            sub.name, sub.topic, sub.received_before, sub.received_after
        );
    }
    out
}

/// An Admin client of the broker at `connection`.
pub(super) async fn admin(connection: &Connection) -> Result<switchyard_sdk::Admin, Failure> {
    Ok(connection.client().await?.admin())
}

pub(super) async fn topics(command: TopicsCommand) -> Result<(), Failure> {
    match command {
        TopicsCommand::List { connection } => {
            let mut admin = admin(&connection).await?;
            let topics = admin
                .list_topics(proto::ListTopicsRequest {})
                .await?
                .into_inner()
                .topics;
            println!("{:<32} PARTITIONS", "TOPIC");
            for topic in topics {
                println!("{:<32} {}", topic.name, topic.partitions);
            }
        }
        TopicsCommand::Create {
            connection,
            name,
            partitions,
        } => {
            let mut admin = admin(&connection).await?;
            let topic = admin
                .create_topic(proto::CreateTopicRequest {
                    name,
                    partitions: partitions.unwrap_or(0),
                })
                .await?
                .into_inner();
            println!(
                "created topic {} with {} partitions",
                topic.name, topic.partitions
            );
        }
        TopicsCommand::Delete { connection, name } => {
            let mut admin = admin(&connection).await?;
            admin
                .delete_topic(proto::DeleteTopicRequest { name: name.clone() })
                .await?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

pub(super) async fn subscriptions(command: SubscriptionsCommand) -> Result<(), Failure> {
    match command {
        SubscriptionsCommand::List { connection } => {
            let mut admin = admin(&connection).await?;
            let subs = admin
                .list_subscriptions(proto::ListSubscriptionsRequest {})
                .await?
                .into_inner()
                .subscriptions;
            println!(
                "{:<32} {:<24} MAX_IN_FLIGHT ACK_DEADLINE",
                "SUBSCRIPTION", "TOPIC"
            );
            for sub in subs {
                println!(
                    "{:<32} {:<24} {:<13} {}s",
                    sub.name, sub.topic, sub.max_in_flight, sub.ack_deadline_seconds
                );
            }
        }
        SubscriptionsCommand::Create {
            connection,
            name,
            topic,
            max_in_flight,
            ack_deadline,
            start,
            max_attempts,
            dead_letter_topic,
            backoff_initial,
            backoff_max,
            ordered_by_key,
            rate_limit,
            filter,
            push,
        } => {
            let push = push.into_proto()?;
            let mut admin = admin(&connection).await?;
            let defaults = BackoffConfig::default();
            let backoff = proto::Backoff {
                initial_ms: backoff_initial.unwrap_or(defaults.initial).as_millis() as u32,
                multiplier: defaults.multiplier,
                max_ms: backoff_max.unwrap_or(defaults.max).as_millis() as u32,
                jitter: defaults.jitter,
            };
            let subscription = proto::Subscription {
                name,
                topic,
                max_in_flight: max_in_flight.unwrap_or(0),
                ack_deadline_seconds: ack_deadline.map_or(0, |d| d.as_secs().max(1) as u32),
                start: match start {
                    StartPosition::Earliest => proto::StartPosition::Earliest,
                    StartPosition::Latest => proto::StartPosition::Latest,
                    StartPosition::Time(_) => proto::StartPosition::Time,
                } as i32,
                start_time_unix_ms: match start {
                    StartPosition::Time(ms) => ms,
                    _ => 0,
                },
                max_attempts: max_attempts.unwrap_or(0),
                rate_limit: rate_limit.unwrap_or(0.0),
                filter_json: filter.unwrap_or_default(),
                ordering: if ordered_by_key {
                    proto::Ordering::ByKey
                } else {
                    proto::Ordering::None
                } as i32,
                backoff: Some(backoff),
                dead_letter_topic: dead_letter_topic.unwrap_or_default(),
                push,
            };
            let created = admin
                .create_subscription(proto::CreateSubscriptionRequest {
                    subscription: Some(subscription),
                })
                .await?
                .into_inner();
            println!(
                "created subscription {} on topic {}",
                created.name, created.topic
            );
        }
        SubscriptionsCommand::Describe { connection, name } => {
            let mut admin = admin(&connection).await?;
            let description = admin
                .describe_subscription(proto::DescribeSubscriptionRequest { name })
                .await?
                .into_inner();
            print_description(description);
        }
        SubscriptionsCommand::Seek {
            connection,
            name,
            to_earliest,
            to_latest,
            to_offset,
            to_time,
        } => {
            use proto::seek_subscription_request::Target;
            let target = if to_earliest {
                Target::Earliest(true)
            } else if to_latest {
                Target::Latest(true)
            } else if let Some(ms) = to_time {
                Target::TimeUnixMs(ms)
            } else if !to_offset.is_empty() {
                Target::Offsets(proto::SeekOffsets {
                    offsets: to_offset.into_iter().collect(),
                })
            } else {
                return Err(anyhow::anyhow!(
                    "say where to seek: --to-earliest, --to-latest, --to-time or --to-offset"
                )
                .into());
            };
            let mut admin = admin(&connection).await?;
            let description = admin
                .seek_subscription(proto::SeekSubscriptionRequest {
                    name,
                    target: Some(target),
                })
                .await?
                .into_inner();
            print_description(description);
        }
        SubscriptionsCommand::Delete { connection, name } => {
            let mut admin = admin(&connection).await?;
            admin
                .delete_subscription(proto::DeleteSubscriptionRequest { name: name.clone() })
                .await?;
            println!("deleted subscription {name}");
        }
    }
    Ok(())
}

/// Loads rule files; invalid rules exit with code 2.
fn load_rules(files: &[PathBuf]) -> Result<RuleSet, Failure> {
    RuleSet::load(files, &[]).map_err(|e| Failure {
        error: e.into(),
        code: EXIT_INVALID,
    })
}

/// Reads a file, or stdin for "-".
fn read_input(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// What patterns see of an input event: a CloudEvent (it has
/// `specversion`) as the broker would see it once published; any other
/// JSON object as given.
fn input_view(value: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    if value.get("specversion").is_some() {
        Ok(event_view(&switchyard_sdk::json::from_json(&value)?))
    } else {
        Ok(value)
    }
}

/// Prints a subscription's definition and per-partition progress.
fn print_description(description: proto::SubscriptionDescription) {
    let sub = description.subscription.unwrap_or_default();
    println!(
        "subscription {} on topic {}: {} consumer(s), total lag {}",
        sub.name, sub.topic, description.consumers, description.total_lag
    );
    if sub.max_attempts > 0 {
        println!(
            "after {} failed attempts events go to {} ({} dead letter(s) waiting: switchyard dlq list {})",
            sub.max_attempts, sub.dead_letter_topic, description.dead_letters, sub.name
        );
    }
    if let Some(push) = &sub.push {
        let state = description.push.clone().unwrap_or_default();
        println!(
            "pushes to {} ({} mode{}): circuit {}, {} failure(s) in a row{}",
            push.endpoint,
            if push.structured {
                "structured"
            } else {
                "binary"
            },
            if push.signed { ", signed" } else { "" },
            if state.circuit.is_empty() {
                "closed"
            } else {
                &state.circuit
            },
            state.consecutive_failures,
            if state.last_error.is_empty() {
                String::new()
            } else {
                format!("; last: {}", state.last_error)
            }
        );
    }
    println!(
        "{:<32} {:>12} {:>12} {:>10} {:>10} {:>14}",
        "TOPIC/PARTITION", "COMMITTED", "END", "LAG", "IN_FLIGHT", "OLDEST_UNACKED"
    );
    for p in &description.partitions {
        let age = format!("{:.1}s", p.oldest_unacked_age_ms as f64 / 1000.0);
        println!(
            "{:<32} {:>12} {:>12} {:>10} {:>10} {:>14}",
            format!("{}/{}", p.topic, p.partition),
            p.committed_offset,
            p.end_offset,
            p.lag,
            p.in_flight,
            age
        );
    }
    for p in &description.partitions {
        if p.waiting_retry > 0 {
            println!(
                "{}/{}: {} event(s) waiting for a retry, the next at {}",
                p.topic,
                p.partition,
                p.waiting_retry,
                format_rfc3339_ms(p.next_retry_unix_ms)
            );
        }
        if !p.parked_keys.is_empty() {
            println!(
                "partition {} parked keys: {}",
                p.partition,
                p.parked_keys.join(", ")
            );
        }
    }
}

pub(super) async fn rules(command: RulesCommand) -> Result<(), Failure> {
    match command {
        RulesCommand::Check { files } => {
            let set = load_rules(&files)?;
            println!(
                "ok: {} rule(s) in {} file(s)",
                set.rules().len(),
                files.len()
            );
        }
        RulesCommand::Test { rules, events, bus } => {
            let set = load_rules(&rules)?;
            let text = read_input(&events)?;
            let mut out = std::io::stdout().lock();
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let event: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("{} line {}: not JSON", events.display(), n + 1))?;
                let id = event.get("id").cloned().unwrap_or(serde_json::Value::Null);
                let view = input_view(event)
                    .with_context(|| format!("{} line {}", events.display(), n + 1))?;
                let mut names: Vec<&str> = match &bus {
                    Some(bus) => set.matching(bus, &view).map(|r| r.name.as_str()).collect(),
                    None => set
                        .matching_any_bus(&view)
                        .map(|r| r.name.as_str())
                        .collect(),
                };
                names.sort_unstable();
                writeln!(out, "{}", serde_json::json!({"id": id, "rules": names}))?;
            }
        }
        RulesCommand::Explain { rules, event } => {
            let set = load_rules(&rules)?;
            let value: serde_json::Value = serde_json::from_str(&read_input(&event)?)
                .with_context(|| format!("{}: not a JSON event", event.display()))?;
            let view = input_view(value)?;
            for rule in set.rules() {
                let matched = rule.pattern.matches(&view);
                let state = match (rule.enabled, matched) {
                    (false, _) => "disabled",
                    (true, true) => "MATCHES",
                    (true, false) => "does not match",
                };
                println!("rule '{}' (bus {}): {state}", rule.name, rule.bus);
                for line in rule.pattern.explain(&view) {
                    let mark = if line.matched { "ok  " } else { "FAIL" };
                    println!("  {mark} {}: {}", line.path, line.detail);
                }
            }
        }
        RulesCommand::DryRun {
            connection,
            rules,
            bus,
            last,
        } => {
            load_rules(std::slice::from_ref(&rules))?;
            let rules_yaml = std::fs::read_to_string(&rules)
                .with_context(|| format!("cannot read {}", rules.display()))?;
            let report = admin(&connection)
                .await?
                .dry_run_rules(proto::DryRunRulesRequest {
                    rules_yaml,
                    bus: bus.clone(),
                    last,
                    ..Default::default()
                })
                .await?
                .into_inner();
            print!("{}", render_dry_run(&bus, &report));
        }
        RulesCommand::List { connection, bus } => {
            let mut admin = admin(&connection).await?;
            let response = admin
                .list_rules(proto::ListRulesRequest { bus })
                .await?
                .into_inner();
            let status = response.status.unwrap_or_default();
            println!("rule set version {}", status.version);
            if !status.last_error.is_empty() {
                println!(
                    "last reload FAILED (previous rules still in force): {}",
                    status.last_error
                );
            }
            for rule in response.rules {
                println!(
                    "{} (bus {}, {}) -> {}: {}",
                    rule.name,
                    rule.bus,
                    if rule.enabled { "enabled" } else { "disabled" },
                    rule.targets.join(", "),
                    rule.pattern_json
                );
            }
        }
    }
    Ok(())
}
