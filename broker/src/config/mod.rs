//! Typed broker configuration: defaults → YAML file → `SWITCHYARD_*`
//! environment → command-line flags (the last two are applied by the
//! binary). Every field is documented; unknown fields are errors, so a typo
//! never silently falls back to a default. `deploy/switchyard.yaml` is the
//! commented reference file (a test parses it).

pub mod strict_json;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default gRPC listen address: loopback, so a fresh broker is not exposed.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default metrics port (OpenTelemetry's Prometheus exporter default).
pub const DEFAULT_METRICS_PORT: u16 = 9464;
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Dedup window (the delivery-semantics issue's default).
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(300);
/// Most ids the dedup window holds.
pub const DEFAULT_DEDUP_MAX_IDS: usize = 100_000;
/// Rule files are checked for changes this often.
pub const DEFAULT_RULES_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Largest event `data` accepted: 1 MiB, as the foundation issue asks
/// (Pub/Sub and EventBridge cap whole messages at 10 MiB / 256 KiB).
pub const DEFAULT_MAX_DATA_BYTES: usize = 1024 * 1024;
/// Most events in one publish call.
pub const DEFAULT_MAX_BATCH_EVENTS: usize = 1000;
/// Most extension attributes on an event.
pub const DEFAULT_MAX_EXTENSIONS: usize = 64;
/// Default largest gRPC request message.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// Default most concurrent calls per connection.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Longest attribute value (id, source, type, subject, extensions).
pub const DEFAULT_MAX_ATTRIBUTE_BYTES: usize = 4096;
/// Segment files roll at 64 MiB: small enough for quick recovery scans of
/// the active segment, large enough to keep file counts low.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// One sparse index entry per 4 KiB of log (Kafka's default).
pub const DEFAULT_INDEX_INTERVAL_BYTES: u64 = 4096;
/// Partitions of a topic created without an explicit count.
pub const DEFAULT_PARTITIONS: u32 = 4;
/// Committed offsets are flushed to disk at most this often; a crash
/// redelivers at most this much acked work (at-least-once), never loses.
pub const DEFAULT_OFFSET_COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// First retry delay (Pub/Sub's minimum backoff is 10 s; choreography
/// handlers often fail on a briefly unavailable dependency, so start lower).
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest retry delay (Pub/Sub's maximum backoff is 600 s).
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A subscription reads at most this far past its oldest unacked event per
/// partition, which bounds its memory however slow the subscriber is.
pub const DEFAULT_MAX_UNACKED_PER_PARTITION: u64 = 100_000;
/// Default credits of a subscription stream.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 100;
/// Default ack deadline (Pub/Sub's default is 10 s; event handlers in
/// choreographies often call other services, so allow more).
pub const DEFAULT_ACK_DEADLINE: Duration = Duration::from_secs(30);

/// The whole broker configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// gRPC listen address, e.g. `127.0.0.1:50051` (port 0 picks a free one).
    pub listen: SocketAddr,
    /// HTTP listen address: Prometheus metrics (`GET /metrics`), the
    /// operator console (`/ui/`) and its JSON Admin API; null turns it off.
    pub metrics_listen: Option<SocketAddr>,
    /// Where topics and subscription offsets are stored.
    pub data_dir: PathBuf,
    /// Rule files (YAML), relative to this config file's directory.
    pub rules: Vec<PathBuf>,
    /// How often rule files are checked for changes (reloaded when their
    /// modification time or size changes); `0s` turns the check off. SIGHUP
    /// always reloads.
    #[serde(with = "humantime_serde")]
    pub rules_poll_interval: Duration,
    /// Protobuf schemas for matching and validating payloads.
    pub schemas: SchemasConfig,
    /// Limits on published events.
    pub limits: LimitsConfig,
    /// Duplicate detection of published events.
    pub dedup: DedupConfig,
    /// Which log stores topics: `embedded` (files under `data_dir`) or
    /// `kafka` (topics in a Kafka cluster, see `kafka`).
    pub backend: Backend,
    /// The Kafka cluster, for `backend: kafka`.
    pub kafka: KafkaConfig,
    /// The embedded log.
    pub storage: StorageConfig,
    /// Delivery to subscribers.
    pub delivery: DeliveryConfig,
    /// Buses besides `default` and those named by rules.
    pub buses: Vec<String>,
    /// Topics to create at start if missing.
    pub topics: Vec<TopicConfig>,
    /// Subscriptions to create at start if missing.
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Who may call the broker; no tokens: anyone who can reach it.
    pub auth: AuthConfig,
    /// TLS on the gRPC and metrics listeners; unset: plaintext.
    pub tls: Option<TlsConfig>,
    /// The audit log file (denied calls, admin changes), relative to this
    /// config file; unset: `DATA_DIR/audit.log`.
    pub audit_log: Option<PathBuf>,
    /// The flow history: what happened to each event.
    pub flow: FlowConfig,
}

/// The flow history (`switchyard flow`): every transition of every event
/// — published, routed, delivered, acked, nacked, dead-lettered,
/// redriven — in the internal topic `__flow`, indexed in memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    /// Whether to record it.
    pub enabled: bool,
    /// Where a flow's correlation id is in its events: `data.<path>` (a
    /// field of the JSON payload, e.g. `data.orderId`) or an attribute or
    /// extension name (e.g. `correlationid`, `subject`). Unset: flows are
    /// found by trace id and event id only.
    pub correlation: Option<String>,
    /// Steps older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Most steps kept in the in-memory index (about 100 bytes each); older
    /// ones stay on disk but are no longer found.
    pub max_indexed: usize,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            correlation: None,
            retention: Duration::from_secs(7 * 24 * 3600),
            max_indexed: 1_000_000,
        }
    }
}

/// TLS on the gRPC listener (rustls). Paths are relative to the config
/// file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// With it, clients must present a certificate signed by this CA (PEM):
    /// mutual TLS.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Authentication of gRPC calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Bearer tokens, by the hex SHA-256 of the token (make one with
    /// `switchyard token-hash`); any entry turns authentication on.
    pub tokens: Vec<TokenConfig>,
    /// Who may do what (`ACTION:RESOURCE` grants, `*` wildcards; see
    /// `api::access`); no entries: every authenticated principal may do
    /// everything.
    pub acl: Vec<AclEntry>,
    /// Quotas by principal name: for client-certificate principals, which
    /// have no token entry, or to override a token's `quota`.
    pub quotas: BTreeMap<String, QuotaConfig>,
}

/// The grants of one principal (or of every principal matching a `*`
/// pattern).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclEntry {
    /// A principal (token principal or client-certificate common name),
    /// `*` wildcards allowed.
    pub principal: String,
    /// Grants such as `publish:orders`, `subscribe:orders-*`,
    /// `manage:topic/*`, `view:*`.
    pub allow: Vec<String>,
}

/// One accepted bearer token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who presents it (named in logs and, later, ACLs).
    pub principal: String,
    /// Hex SHA-256 of the token; the token itself is never stored.
    pub sha256: String,
    /// Limits for this principal; unset: none.
    #[serde(default)]
    pub quota: Option<QuotaConfig>,
    /// When the token stops working (RFC 3339, e.g. `2027-01-31T00:00:00Z`);
    /// unset: never.
    #[serde(default)]
    pub expires: Option<String>,
}

/// Per-principal limits; over them, calls get RESOURCE_EXHAUSTED with a
/// retry hint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Most events published per second (bursts up to one second's worth).
    pub events_per_second: Option<f64>,
    /// Most bytes of publish requests per second.
    pub bytes_per_second: Option<f64>,
    /// Most Subscribe streams open at once.
    pub max_streams: Option<u32>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 50051))),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_METRICS_PORT))),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            rules: Vec::new(),
            rules_poll_interval: DEFAULT_RULES_POLL_INTERVAL,
            schemas: SchemasConfig::default(),
            limits: LimitsConfig::default(),
            dedup: DedupConfig::default(),
            backend: Backend::default(),
            kafka: KafkaConfig::default(),
            storage: StorageConfig::default(),
            delivery: DeliveryConfig::default(),
            buses: Vec::new(),
            topics: Vec::new(),
            subscriptions: Vec::new(),
            auth: AuthConfig::default(),
            tls: None,
            audit_log: None,
            flow: FlowConfig::default(),
        }
    }
}

/// Where topics are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Segment files under `data_dir` (one node).
    #[default]
    Embedded,
    /// Topics in a Kafka cluster.
    Kafka,
}

/// The Kafka cluster of `backend: kafka`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `HOST:PORT[,HOST:PORT...]`.
    pub brokers: String,
    /// Prepended to Switchyard topic names to make Kafka topic names.
    pub topic_prefix: String,
    /// Replicas of each topic Switchyard creates.
    pub replication_factor: i32,
    /// How long a Kafka operation may take before it fails.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Further librdkafka settings for every client, e.g.
    /// `security.protocol: SASL_SSL`.
    pub settings: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "switchyard.".into(),
            replication_factor: 1,
            timeout: Duration::from_secs(30),
            settings: BTreeMap::new(),
        }
    }
}

/// Protobuf schemas: events whose `dataschema` or `type` names a message
/// of these files have their payload decoded, so patterns can match its
/// fields (by their `.proto` names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemasConfig {
    /// `.proto` files, relative to this config file's directory.
    pub files: Vec<PathBuf>,
    /// Directories imports are resolved in, relative to this config file's
    /// directory.
    pub include: Vec<PathBuf>,
    /// Buses that refuse protobuf payloads that do not decode as the
    /// message they name, or that name no registered message.
    pub validate_buses: Vec<String>,
}

/// Duplicate detection: a publish of a `(source, id)` already accepted on
/// the same bus within the window is not stored again; the publisher gets
/// `duplicate: true` and the original offsets. The window is refilled from
/// the log at start, so it survives restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// How long an id is remembered.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Per-bus windows that replace `window`, e.g. `{payments: 1h}`.
    pub buses: BTreeMap<String, humantime_serde::Serde<Duration>>,
    /// Most ids remembered in all (bounds memory; the oldest go first).
    pub max_ids: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            window: DEFAULT_DEDUP_WINDOW,
            buses: BTreeMap::new(),
            max_ids: DEFAULT_DEDUP_MAX_IDS,
        }
    }
}

impl DedupConfig {
    /// The window of `bus`.
    pub fn window_for(&self, bus: &str) -> Duration {
        self.buses.get(bus).map_or(self.window, |w| **w)
    }
}

/// Limits on published events; each one is enforced with INVALID_ARGUMENT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest event `data`, in bytes.
    pub max_data_bytes: usize,
    /// Most events in one publish call.
    pub max_batch_events: usize,
    /// Most extension attributes on one event.
    pub max_extensions: usize,
    /// Longest attribute value, in bytes.
    pub max_attribute_bytes: usize,
    /// Longest delay a `deliverafter` time may ask for.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Most scheduled events pending at once; more are refused with
    /// RESOURCE_EXHAUSTED. Each pending one costs ~160 B of memory (the
    /// event itself stays on disk).
    pub max_scheduled: usize,
    /// Largest gRPC request message (a whole publish batch, a schema, a
    /// settle list), in bytes; larger ones are refused before decoding
    /// with OUT_OF_RANGE.
    pub max_request_bytes: usize,
    /// Most concurrent calls (HTTP/2 streams, e.g. Subscribe streams) on
    /// one connection; a client opening more waits for one to end.
    pub max_streams_per_connection: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_data_bytes: DEFAULT_MAX_DATA_BYTES,
            max_batch_events: DEFAULT_MAX_BATCH_EVENTS,
            max_extensions: DEFAULT_MAX_EXTENSIONS,
            max_attribute_bytes: DEFAULT_MAX_ATTRIBUTE_BYTES,
            max_delay: DEFAULT_MAX_DELAY,
            max_scheduled: 10_000_000,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
        }
    }
}

/// When appended records are forced to disk. In YAML: `always`, `never`,
/// or a duration such as `10ms` for the interval policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FsyncPolicy {
    /// fsync before the publisher is acked (group commit batches
    /// concurrent appends into one fsync). Nothing acked is ever lost.
    Always,
    /// Ack after the write reaches the OS; fsync at this interval. A power
    /// loss can lose up to one interval of acked events (a process crash
    /// cannot).
    Interval(Duration),
    /// Never fsync explicitly; leave it to the OS. For tests and demos.
    Never,
}

impl TryFrom<String> for FsyncPolicy {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        match text.as_str() {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => humantime::parse_duration(other)
                .map(FsyncPolicy::Interval)
                .map_err(|_| {
                    format!(
                        "fsync must be `always`, `never` or an interval like `10ms`, not {other:?}"
                    )
                }),
        }
    }
}

impl From<FsyncPolicy> for String {
    fn from(policy: FsyncPolicy) -> String {
        match policy {
            FsyncPolicy::Always => "always".into(),
            FsyncPolicy::Never => "never".into(),
            FsyncPolicy::Interval(interval) => humantime::format_duration(interval).to_string(),
        }
    }
}

/// Settings of the embedded segmented log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Durability policy: `always`, `never`, or an interval like `10ms`.
    pub fsync: FsyncPolicy,
    /// Size at which a partition starts a new segment file.
    pub segment_bytes: u64,
    /// Bytes of log between two sparse index entries.
    pub index_interval_bytes: u64,
    /// Partitions of topics created without an explicit count.
    pub default_partitions: u32,
    /// When old segments are deleted.
    pub retention: RetentionConfig,
    /// How much of the log is checked record by record at start.
    pub verify_on_start: VerifyOnStart,
}

/// How much of the log the broker checks record by record at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyOnStart {
    /// The newest segment of each partition (where a crash can tear a
    /// write); older segments are checked as they are read. Start-up time
    /// stays independent of the log's size.
    #[default]
    Active,
    /// Every segment: corruption anywhere stops the start with an error
    /// naming the file. Start-up reads the whole log.
    All,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            index_interval_bytes: DEFAULT_INDEX_INTERVAL_BYTES,
            default_partitions: DEFAULT_PARTITIONS,
            retention: RetentionConfig::default(),
            verify_on_start: VerifyOnStart::default(),
        }
    }
}

/// Retention of closed segments; the active segment is never deleted. Unset
/// limits mean "keep forever".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Keep at most this many bytes per partition.
    pub max_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this, e.g. `7d`.
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

/// Settings of delivery to subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// How often acked progress is flushed to disk.
    #[serde(with = "humantime_serde")]
    pub offset_commit_interval: Duration,
    /// How far past its oldest unacked event a subscription reads ahead,
    /// per partition.
    pub max_unacked_per_partition: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            offset_commit_interval: DEFAULT_OFFSET_COMMIT_INTERVAL,
            max_unacked_per_partition: DEFAULT_MAX_UNACKED_PER_PARTITION,
        }
    }
}

/// A topic declared in the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Topic name.
    pub name: String,
    /// Partition count (default: `storage.default_partitions`).
    #[serde(default)]
    pub partitions: Option<u32>,
}

/// Where a new subscription starts reading. In YAML: `earliest`, `latest`
/// or an RFC 3339 time such as `2026-11-25T10:00:00Z`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StartPosition {
    /// The oldest retained event.
    #[default]
    Earliest,
    /// Only events appended after the subscription was created.
    Latest,
    /// The first event appended at or after this time (ms since the Unix
    /// epoch).
    Time(i64),
}

impl StartPosition {
    /// Parses `earliest`, `latest` or an RFC 3339 time.
    pub fn parse(text: &str) -> Result<StartPosition, String> {
        match text {
            "earliest" => Ok(StartPosition::Earliest),
            "latest" => Ok(StartPosition::Latest),
            other => parse_rfc3339_ms(other).map(StartPosition::Time).ok_or_else(|| {
                format!("start must be `earliest`, `latest` or an RFC 3339 time like 2026-11-25T10:00:00Z, not {other:?}")
            }),
        }
    }
}

/// The last ms of year 9999, the latest time RFC 3339 can write.
pub const MAX_UNIX_MS: i64 = 253_402_300_799_999;

/// The first ms of year 0000, the earliest time RFC 3339 can write.
pub const MIN_UNIX_MS: i64 = -62_167_219_200_000;

/// An RFC 3339 time such as `2026-11-25T10:00:00Z` in ms since the Unix
/// epoch.
/// `None` for text that is not one, or a time outside RFC 3339's years
/// 0000 to 9999.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let time: prost_types::Timestamp = text.parse().ok()?;
    let ms = time
        .seconds
        .checked_mul(1000)?
        .checked_add(i64::from(time.nanos) / 1_000_000)?;
    (MIN_UNIX_MS..=MAX_UNIX_MS).contains(&ms).then_some(ms)
}

/// ms since the Unix epoch as an RFC 3339 time (UTC); the inverse of
/// [`parse_rfc3339_ms`].
pub fn format_rfc3339_ms(ms: i64) -> String {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
    .to_string()
}

impl TryFrom<String> for StartPosition {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        StartPosition::parse(&text)
    }
}

impl From<StartPosition> for String {
    fn from(start: StartPosition) -> String {
        match start {
            StartPosition::Earliest => "earliest".into(),
            StartPosition::Latest => "latest".into(),
            StartPosition::Time(ms) => format_rfc3339_ms(ms),
        }
    }
}

/// A subscription: a named consumer group on one topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Subscription name.
    pub name: String,
    /// The topic it reads.
    pub topic: String,
    /// Credits of a stream that does not ask for a number.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// How long a delivery may stay unsettled before it is delivered again.
    #[serde(default = "default_ack_deadline", with = "humantime_serde")]
    pub ack_deadline: Duration,
    /// Where a new subscription starts.
    #[serde(default)]
    pub start: StartPosition,
    /// After this many failed attempts (nack, deadline expiry or consumer
    /// disconnect) an event goes to `dead_letter_topic`; unset: retry
    /// forever. Needs `dead_letter_topic`.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Delay before each retry.
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// Topic that receives events that failed `max_attempts` times, with
    /// failure metadata (created with the source topic's partition count
    /// when missing).
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// `by_key`: one event per partition key at a time, in order; a failing
    /// event holds back only its own key. `none`: no ordering guarantee
    /// beyond per-partition delivery order of first attempts.
    #[serde(default)]
    pub ordering: Ordering,
    /// Most deliveries per second to all consumers together (retries
    /// included); unset: as fast as credits allow. Bursts up to one
    /// second's worth.
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// An extra event pattern (same language as rules): events of the topic
    /// that do not match are skipped by this subscription.
    #[serde(default, deserialize_with = "strict_json::deserialize_option")]
    pub filter: Option<serde_json::Value>,
    /// Push delivery: the broker POSTs each event to an HTTP(S) endpoint
    /// (serverless functions) instead of waiting for stream consumers.
    /// `max_in_flight` caps the concurrent requests, `rate_limit` their
    /// rate; retries, dead letters and ordering work as for streams.
    #[serde(default)]
    pub push: Option<PushConfig>,
}

/// How a push subscription reaches its endpoint.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// `http://` or `https://` URL the events are POSTed to.
    pub endpoint: String,
    /// CloudEvents HTTP content mode: `binary` (attributes in `ce-*`
    /// headers, data as the body) or `structured` (the whole event as
    /// `application/cloudevents+json`).
    #[serde(default)]
    pub mode: PushMode,
    /// Longest a request may take; longer counts as a failure and is
    /// retried.
    #[serde(default = "default_push_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// What a 4xx answer other than 408 and 429 does: `dead_letter` at once
    /// (the default when the subscription has a `dead_letter_topic`) or
    /// `retry` like a 5xx (the default otherwise).
    #[serde(default)]
    pub on_client_error: Option<ClientErrorPolicy>,
    /// Secret to sign requests with, Standard Webhooks style (`whsec_`
    /// followed by base64); unset: requests are not signed. Never logged.
    #[serde(default)]
    pub secret: Option<String>,
    /// Several events per request, as a CloudEvents JSON batch
    /// (`application/cloudevents-batch+json`); unset: one event per
    /// request.
    #[serde(default)]
    pub batch: Option<PushBatch>,
}

/// Batched push delivery: up to `max_events` per request, waiting at most
/// `max_wait` to fill one. A 2xx answer may name failed events in its body
/// (`{"failed": [{"id": "...", "reason": "..."}]}`): only those are
/// retried. `max_in_flight` still caps the events in flight.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushBatch {
    /// Most events in one request.
    pub max_events: usize,
    /// Longest a partial batch waits for more events.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl std::fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConfig")
            .field("endpoint", &self.endpoint)
            .field("mode", &self.mode)
            .field("timeout", &self.timeout)
            .field("on_client_error", &self.on_client_error)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("batch", &self.batch)
            .finish()
    }
}

impl PushConfig {
    /// The signing key in `secret` (`whsec_` + base64 of at least 16
    /// bytes); the error says what is wrong without repeating the secret.
    pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        let encoded = secret.strip_prefix("whsec_").ok_or(
            "must start with `whsec_` followed by base64 (e.g. whsec_ + `openssl rand -base64 32`)",
        )?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "the part after `whsec_` is not valid base64".to_string())?;
        if key.len() < 16 {
            return Err("must hold at least 16 random bytes (24 to 64 recommended)".into());
        }
        Ok(key)
    }

    /// A push to `endpoint` with the defaults.
    pub fn new(endpoint: impl Into<String>) -> PushConfig {
        PushConfig {
            endpoint: endpoint.into(),
            mode: PushMode::default(),
            timeout: DEFAULT_PUSH_TIMEOUT,
            on_client_error: None,
            secret: None,
            batch: None,
        }
    }
}

/// CloudEvents HTTP content mode of a push.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushMode {
    /// Attributes as `ce-*` headers, data as the body.
    #[default]
    Binary,
    /// The event as one `application/cloudevents+json` document.
    Structured,
}

/// What a non-retryable (4xx) push answer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientErrorPolicy {
    /// Dead-letter the event at once: retrying cannot help.
    DeadLetter,
    /// Retry with the backoff, like a 5xx.
    Retry,
}

/// Default longest `deliverafter` delay: 30 days.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30 * 86_400);

/// Default time limit of one push request.
pub const DEFAULT_PUSH_TIMEOUT: Duration = Duration::from_secs(10);

fn default_push_timeout() -> Duration {
    DEFAULT_PUSH_TIMEOUT
}

/// Delivery ordering of a subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Events flow as fast as credits allow.
    #[default]
    None,
    /// One event per partition key at a time, in order.
    ByKey,
}

/// Capped exponential backoff with jitter: retry n (n ≥ 1) waits
/// `min(max, initial × multiplier^(n-1))`, scaled by a random factor in
/// `[1 - jitter, 1 + jitter]` and capped at `max` again.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    /// Delay before the first retry.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Growth factor per retry (≥ 1).
    pub multiplier: f64,
    /// Longest delay.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    /// Relative random spread, 0 to 1.
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: DEFAULT_BACKOFF_INITIAL,
            multiplier: 2.0,
            max: DEFAULT_BACKOFF_MAX,
            jitter: 0.2,
        }
    }
}

impl SubscriptionConfig {
    /// Checks its durations and rates against what delivery can work
    /// with: the field (relative to the subscription) and the allowed
    /// range when one is out of it.
    pub fn validate_ranges(&self) -> Result<(), (String, String)> {
        let second = Duration::from_secs(1);
        check_duration(
            "ack_deadline",
            self.ack_deadline,
            second,
            MAX_SUBSCRIPTION_WAIT,
        )?;
        let backoff = &self.backoff;
        check_duration(
            "backoff.max",
            backoff.max,
            Duration::from_millis(1),
            MAX_SUBSCRIPTION_WAIT,
        )?;
        check_duration(
            "backoff.initial",
            backoff.initial,
            Duration::from_millis(1),
            backoff.max,
        )?;
        check_rate("backoff.multiplier", backoff.multiplier, 1.0, 1000.0)?;
        check_rate("backoff.jitter", backoff.jitter, 0.0, 1.0)?;
        if let Some(rate) = self.rate_limit {
            check_rate("rate_limit", rate, MIN_RATE, MAX_SUBSCRIPTION_RATE)?;
        }
        if let Some(push) = &self.push {
            check_duration(
                "push.timeout",
                push.timeout,
                Duration::from_millis(1),
                Duration::from_secs(3600),
            )?;
            if let Some(batch) = push.batch {
                check_duration(
                    "push.batch.max_wait",
                    batch.max_wait,
                    Duration::ZERO,
                    Duration::from_secs(3600),
                )?;
            }
        }
        if let StartPosition::Time(ms) = self.start
            && !(MIN_UNIX_MS..=MAX_UNIX_MS).contains(&ms)
        {
            return Err((
                "start".into(),
                format!(
                    "{ms} ms since the Unix epoch is not a time RFC 3339 can write (years 0000 to 9999)"
                ),
            ));
        }
        Ok(())
    }
}

impl BackoffConfig {
    /// The delay before retry number `retry` (1 for the first retry);
    /// `salt` picks the jitter (any value that differs between events).
    pub fn delay(&self, retry: u32, salt: u64) -> Duration {
        let exponent = retry.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        // SplitMix64 of the salt, mapped to [-1, 1].
        let mut z = salt.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        let jittered = capped * (1.0 + self.jitter.clamp(0.0, 1.0) * unit);
        Duration::from_secs_f64(jittered.clamp(0.0, self.max.as_secs_f64()))
    }
}

fn default_max_in_flight() -> u32 {
    DEFAULT_MAX_IN_FLIGHT
}

fn default_ack_deadline() -> Duration {
    DEFAULT_ACK_DEADLINE
}

/// The smallest rate (events or bytes per second) a limit may set: one
/// per 1,000 s. Below it the wait for the next token is longer than any
/// timer can express.
pub const MIN_RATE: f64 = 0.001;

/// Most events per second a subscription's `rate_limit` may set.
pub const MAX_SUBSCRIPTION_RATE: f64 = 1e7;

/// Longest `ack_deadline` and `backoff.max`: a week (Pub/Sub caps both at
/// 10 minutes; long-running work extends its deadline instead).
pub const MAX_SUBSCRIPTION_WAIT: Duration = Duration::from_secs(7 * 86_400);

/// `value` of `field` within `min..=max`, or the field and what is allowed.
pub fn check_duration(
    field: &str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), (String, String)> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err((
        field.to_string(),
        format!(
            "{} is out of range: allowed {} to {}",
            humantime::format_duration(value),
            humantime::format_duration(min),
            humantime::format_duration(max)
        ),
    ))
}

/// Rate `value` of `field` within `min..=max` (finite), or the field and
/// what is allowed.
pub fn check_rate(field: &str, value: f64, min: f64, max: f64) -> Result<(), (String, String)> {
    if value.is_finite() && (min..=max).contains(&value) {
        return Ok(());
    }
    Err((
        field.to_string(),
        format!("{value} per second is out of range: allowed {min} to {max}"),
    ))
}

/// The 1-based line of YAML config `text` where `field` is written, e.g.
/// `delivery.offset_commit_interval` or `subscriptions[2] (billing).push.timeout`:
/// each key is looked for after the previous one, an entry named
/// `(NAME)` by its `name: NAME` line. When a key is not written (a
/// default), the line of the deepest part found; 1 when none is.
pub fn field_line(text: &str, field: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let mut at = 0;
    let mut found = 1;
    for part in field.split('.') {
        let (key, name) = match part.split_once(" (") {
            Some((key, rest)) => (key, rest.strip_suffix(')')),
            None => (part, None),
        };
        let key = key.split('[').next().unwrap_or(key);
        let wanted: Vec<String> = std::iter::once(format!("{key}:"))
            .chain(name.map(|n| format!("name: {n}")))
            .collect();
        for want in &wanted {
            let hit = lines.iter().enumerate().skip(at).find(|(_, line)| {
                let content = line.trim_start().trim_start_matches("- ").trim_start();
                content.starts_with(want.as_str())
                    || content.trim_start_matches('{').starts_with(want.as_str())
                    || line.contains(&format!(" {want}"))
            });
            match hit {
                Some((index, _)) => {
                    at = index;
                    found = index + 1;
                }
                None => return found,
            }
        }
    }
    found
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is malformed or has unknown / mistyped fields.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("{path}:{line}: {field}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line the field is on (its section's when the field itself
        /// is not written there; 1 when neither is).
        line: usize,
        /// The offending field.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl BrokerConfig {
    /// Reads and validates a config file. Relative paths in it (`data_dir`,
    /// rules, schemas, TLS files, the audit log) are made relative to the
    /// file's directory, so the broker finds the same files from any
    /// working directory.
    pub fn load(path: &Path) -> Result<BrokerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let files = config.rules.iter_mut();
        let schemas = config
            .schemas
            .files
            .iter_mut()
            .chain(config.schemas.include.iter_mut());
        let tls = config.tls.iter_mut().flat_map(|tls| {
            [&mut tls.cert, &mut tls.key]
                .into_iter()
                .chain(tls.client_ca.as_mut())
        });
        for file in files
            .chain(schemas)
            .chain(tls)
            .chain(config.audit_log.as_mut())
            .chain([&mut config.data_dir])
        {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        config.validate(path).map_err(|error| match error {
            ConfigError::Invalid {
                path,
                field,
                message,
                ..
            } => ConfigError::Invalid {
                line: field_line(&text, &field),
                path,
                field,
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Parses YAML text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<BrokerConfig, ConfigError> {
        if text.trim().is_empty() {
            return Ok(BrokerConfig::default());
        }
        serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Checks value ranges that serde cannot.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: &str| {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                line: 1,
                field: field.to_string(),
                message: message.to_string(),
            })
        };
        if self.storage.segment_bytes < 4096 {
            return invalid("storage.segment_bytes", "must be at least 4096");
        }
        for (n, token) in self.auth.tokens.iter().enumerate() {
            let hex = token.sha256.trim();
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return invalid(
                    &format!("auth.tokens[{n}].sha256"),
                    "must be the 64 hex digits of the token's SHA-256; make it with `switchyard token-hash`",
                );
            }
            if token
                .expires
                .as_ref()
                .is_some_and(|t| parse_rfc3339_ms(t).is_none())
            {
                return invalid(
                    &format!("auth.tokens[{n}].expires"),
                    "must be an RFC 3339 time such as 2027-01-31T00:00:00Z",
                );
            }
            if token.principal.trim().is_empty() {
                return invalid(
                    &format!("auth.tokens[{n}].principal"),
                    "must name who uses the token",
                );
            }
        }
        if !self.auth.acl.is_empty()
            && self.auth.tokens.is_empty()
            && self.tls.as_ref().is_none_or(|t| t.client_ca.is_none())
        {
            return invalid(
                "auth.acl",
                "grants need authenticated principals: add auth.tokens or tls.client_ca",
            );
        }
        if self.storage.default_partitions == 0 {
            return invalid("storage.default_partitions", "must be at least 1");
        }
        if self.limits.max_batch_events == 0 {
            return invalid("limits.max_batch_events", "must be at least 1");
        }
        if self.limits.max_request_bytes < 1024 {
            return invalid("limits.max_request_bytes", "must be at least 1024");
        }
        if self.limits.max_streams_per_connection == 0 {
            return invalid("limits.max_streams_per_connection", "must be at least 1");
        }
        if self.delivery.max_unacked_per_partition == 0 {
            return invalid("delivery.max_unacked_per_partition", "must be at least 1");
        }
        if self.topics.iter().any(|t| t.partitions == Some(0)) {
            return invalid("topics[].partitions", "must be at least 1");
        }
        self.validate_ranges()
            .or_else(|(field, message)| invalid(&field, &message))
    }

    /// Checks every duration and rate against the range the broker can
    /// work with (a zero interval or a near-zero rate would stop or crash
    /// the task that uses it).
    fn validate_ranges(&self) -> Result<(), (String, String)> {
        let day = Duration::from_secs(86_400);
        let mut durations: Vec<(String, Duration, Duration, Duration)> = vec![
            (
                "delivery.offset_commit_interval".into(),
                self.delivery.offset_commit_interval,
                Duration::from_millis(1),
                Duration::from_secs(3600),
            ),
            (
                "dedup.window".into(),
                self.dedup.window,
                Duration::ZERO,
                30 * day,
            ),
            (
                "limits.max_delay".into(),
                self.limits.max_delay,
                Duration::ZERO,
                3650 * day,
            ),
            (
                "flow.retention".into(),
                self.flow.retention,
                Duration::from_secs(1),
                3650 * day,
            ),
            (
                "kafka.timeout".into(),
                self.kafka.timeout,
                Duration::from_millis(100),
                day,
            ),
            (
                "rules_poll_interval".into(),
                self.rules_poll_interval,
                Duration::ZERO,
                day,
            ),
        ];
        if let FsyncPolicy::Interval(interval) = self.storage.fsync {
            durations.push((
                "storage.fsync".into(),
                interval,
                Duration::from_millis(1),
                day,
            ));
        }
        if let Some(age) = self.storage.retention.max_age {
            durations.push((
                "storage.retention.max_age".into(),
                age,
                Duration::from_secs(1),
                36_500 * day,
            ));
        }
        for (bus, window) in &self.dedup.buses {
            durations.push((
                format!("dedup.buses.{bus}"),
                **window,
                Duration::ZERO,
                30 * day,
            ));
        }
        for (n, sub) in self.subscriptions.iter().enumerate() {
            if let Err((field, message)) = sub.validate_ranges() {
                return Err((
                    format!("subscriptions[{n}] ({}).{field}", sub.name),
                    message,
                ));
            }
        }
        for (field, value, min, max) in durations {
            check_duration(&field, value, min, max)?;
        }
        let quotas = self
            .auth
            .tokens
            .iter()
            .enumerate()
            .filter_map(|(n, t)| Some((format!("auth.tokens[{n}].quota"), t.quota.as_ref()?)))
            .chain(
                self.auth
                    .quotas
                    .iter()
                    .map(|(name, q)| (format!("auth.quotas.{name}"), q)),
            );
        for (field, quota) in quotas {
            for (name, rate) in [
                ("events_per_second", quota.events_per_second),
                ("bytes_per_second", quota.bytes_per_second),
            ] {
                if let Some(rate) = rate {
                    check_rate(&format!("{field}.{name}"), rate, MIN_RATE, 1e12)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_name_file_line_and_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            (
                "listen: 127.0.0.1:1\ndelivery:\n  offset_commit_interval: 0s\n",
                3,
                "delivery.offset_commit_interval",
            ),
            (
                "topics: []\nsubscriptions:\n  - name: a\n    topic: t\n  - name: b\n    topic: t\n    rate_limit: 1e-300\n",
                7,
                "subscriptions[1] (b).rate_limit",
            ),
            (
                "subscriptions:\n  - name: a\n    topic: t\n    ack_deadline: 3000d\n",
                4,
                "ack_deadline",
            ),
            ("storage:\n  fsync: 0s\n", 2, "storage.fsync"),
        ];
        for (text, line, field) in cases {
            let path = dir.path().join("c.yaml");
            std::fs::write(&path, text).expect("write");
            let error = BrokerConfig::load(&path).expect_err(text).to_string();
            let located = format!("{}:{line}: ", path.display());
            assert!(error.starts_with(&located), "{error}");
            assert!(error.contains(field), "{error}");
            assert!(error.contains("allowed"), "says the range: {error}");
        }
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "data_dir: ./data\n").expect("write");
        let config = BrokerConfig::load(&path).expect("load");
        assert_eq!(config.data_dir, dir.path().join("./data"));
    }

    #[test]
    fn rfc3339_times_outside_years_0000_to_9999_are_refused() {
        assert_eq!(
            parse_rfc3339_ms("9999-12-31T23:59:59.999Z"),
            Some(MAX_UNIX_MS)
        );
        assert_eq!(parse_rfc3339_ms("0000-01-01T00:00:00Z"), Some(MIN_UNIX_MS));
        assert_eq!(parse_rfc3339_ms("10000-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("99999999-01-01T00:00:00Z"), None);
    }

    #[test]
    fn empty_file_means_defaults() {
        let config = BrokerConfig::parse("", Path::new("x.yaml")).expect("parses");
        assert_eq!(config, BrokerConfig::default());
        assert_eq!(config.listen.port(), 50051);
    }

    #[test]
    fn unknown_fields_are_errors_with_a_line() {
        let err = BrokerConfig::parse(
            "listen: 127.0.0.1:1\nstorage:\n  fsynk: always\n",
            Path::new("b.yaml"),
        )
        .expect_err("typo");
        let text = err.to_string();
        assert!(text.contains("b.yaml"), "{text}");
        assert!(text.contains("fsynk"), "{text}");
        assert!(text.contains("line 3"), "{text}");
    }

    #[test]
    fn fsync_policies_parse() {
        let config =
            BrokerConfig::parse("storage:\n  fsync: 10ms\n", Path::new("c")).expect("parses");
        assert_eq!(
            config.storage.fsync,
            FsyncPolicy::Interval(Duration::from_millis(10))
        );
        let config =
            BrokerConfig::parse("storage:\n  fsync: never\n", Path::new("c")).expect("parses");
        assert_eq!(config.storage.fsync, FsyncPolicy::Never);
    }

    #[test]
    fn subscriptions_get_defaults() {
        let config = BrokerConfig::parse(
            "subscriptions:\n  - name: billing\n    topic: orders\n    ack_deadline: 5s\n",
            Path::new("c"),
        )
        .expect("parses");
        let sub = &config.subscriptions[0];
        assert_eq!(sub.ack_deadline, Duration::from_secs(5));
        assert_eq!(sub.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(sub.start, StartPosition::Earliest);
    }

    #[test]
    fn backoff_grows_and_caps_within_its_jitter() {
        let backoff = BackoffConfig {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_millis(1000),
            jitter: 0.1,
        };
        for salt in 0..50 {
            let delays: Vec<f64> = (1..=6)
                .map(|retry| backoff.delay(retry, salt).as_secs_f64())
                .collect();
            for (retry, (delay, expected)) in delays
                .iter()
                .zip([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
                .enumerate()
            {
                assert!(*delay >= expected * 0.9 - 1e-9, "retry {retry}: {delay}");
                assert!(
                    *delay <= (expected * 1.1f64).min(1.0) + 1e-9,
                    "retry {retry}: {delay}"
                );
            }
        }
        let no_jitter = BackoffConfig {
            jitter: 0.0,
            ..backoff
        };
        assert_eq!(no_jitter.delay(1, 7), Duration::from_millis(100));
        assert_eq!(no_jitter.delay(40, 7), Duration::from_millis(1000));
    }

    #[test]
    fn start_positions_parse_and_round_trip() {
        for (text, start) in [
            ("earliest", StartPosition::Earliest),
            ("latest", StartPosition::Latest),
            (
                "2026-11-25T10:00:00.250Z",
                StartPosition::Time(1_795_600_800_250),
            ),
        ] {
            assert_eq!(StartPosition::parse(text), Ok(start));
            assert_eq!(StartPosition::parse(&String::from(start)), Ok(start));
        }
        assert!(StartPosition::parse("yesterday").is_err());
    }

    #[test]
    fn the_shipped_reference_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/switchyard.yaml");
        let config = BrokerConfig::load(&path).expect("deploy/switchyard.yaml is valid");
        assert!(!config.rules.is_empty());
    }

    #[test]
    fn the_kubernetes_config_runs_on_kafka() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/switchyard.yaml");
        let config = BrokerConfig::load(&path).expect("deploy/kubernetes/switchyard.yaml is valid");
        assert_eq!(config.backend, Backend::Kafka);
        assert_eq!(config.kafka.brokers, "kafka:9092");
        assert_eq!(
            config
                .kafka
                .settings
                .get("session.timeout.ms")
                .map(String::as_str),
            Some("10000")
        );
    }
}
