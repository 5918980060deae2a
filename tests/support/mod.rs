//! Test harness: runs the real `switchyard` binary on an ephemeral port with
//! a temporary data directory, waits until it listens, kills it on drop.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchyard_sdk::Client;
use switchyard_sdk::proto;

/// How long to wait for a broker to start or a condition to hold.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The `switchyard` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_switchyard")
}

/// A broker process.
pub struct BrokerProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The directory holding config, rules, data and the log file.
    pub dir: PathBuf,
    log_path: PathBuf,
}

/// Rules that route `order.placed` events to topic `orders`, the shape
/// most end-to-end tests need.
pub const ORDER_RULES: &str = "
rules:
  - name: orders
    pattern:
      type: [order.placed]
    targets:
      - topic: orders
";

/// Writes `config.yaml` (with `data_dir` and `listen` filled in) and
/// `rules.yaml` into `dir`.
///
/// With `SWITCHYARD_TEST_KAFKA=HOST:PORT` set, the broker stores topics in
/// that Kafka cluster (under a prefix of its own), so the same end-to-end
/// suite runs against the Kafka backend (`scripts/test.sh` does this).
pub fn write_config(dir: &Path, config: &str, rules: &str) -> PathBuf {
    std::fs::write(dir.join("rules.yaml"), rules).expect("write rules");
    let path = dir.join("config.yaml");
    let backend = match std::env::var("SWITCHYARD_TEST_KAFKA") {
        Ok(brokers) => {
            let unique = dir
                .file_name()
                .map(|n| {
                    n.to_string_lossy()
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "")
                })
                .unwrap_or_default();
            kafka_backend_yaml(&brokers, &format!("t{unique}."), &[])
        }
        Err(_) => String::new(),
    };
    let text = format!(
        "listen: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:0\ndata_dir: {}\nrules: [rules.yaml]\n{config}\n{backend}",
        dir.join("data").display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// Writes `config` and `rules` into a new temporary directory and starts a
/// broker there; keep the directory alive as long as the broker.
pub fn start_broker(config: &str, rules: &str) -> (tempfile::TempDir, BrokerProcess) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), config, rules);
    let broker = BrokerProcess::start(dir.path());
    (dir, broker)
}

/// Starts a broker with the order saga's config and rules
/// (examples/order-saga) on ephemeral ports, with extra environment.
pub fn start_saga_broker(env: &[(&str, &str)]) -> (tempfile::TempDir, BrokerProcess) {
    let saga = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/order-saga");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(saga.join("switchyard.yaml"), dir.path().join("config.yaml")).expect("config");
    std::fs::copy(saga.join("rules.yaml"), dir.path().join("rules.yaml")).expect("rules");
    let data = dir.path().join("data");
    let flags = [
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ];
    let broker = BrokerProcess::start_with_env(dir.path(), &flags, env);
    (dir, broker)
}

impl BrokerProcess {
    /// Starts `switchyard serve --config DIR/config.yaml` and waits for it
    /// to listen.
    pub fn start(dir: &Path) -> BrokerProcess {
        Self::start_with(dir, &[])
    }

    /// Like [`BrokerProcess::start`], with extra `serve` flags.
    pub fn start_with(dir: &Path, flags: &[&str]) -> BrokerProcess {
        Self::start_with_env(dir, flags, &[])
    }

    /// Like [`BrokerProcess::start_with`], with extra environment variables.
    pub fn start_with_env(dir: &Path, flags: &[&str], env: &[(&str, &str)]) -> BrokerProcess {
        let log_path = dir.join(format!(
            "broker-{}.log",
            Instant::now().elapsed().as_nanos() ^ rand_suffix()
        ));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(dir.join("config.yaml"))
            .args(flags)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn switchyard");
        let mut broker = BrokerProcess {
            child,
            url: String::new(),
            dir: dir.to_path_buf(),
            log_path,
        };
        broker.url = format!("http://{}", broker.wait_for_listen_address());
        broker
    }

    fn wait_for_listen_address(&mut self) -> String {
        let start = Instant::now();
        loop {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            for line in log.lines() {
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if entry["fields"]["message"] == "switchyard listening"
                    && let Some(addr) = entry["fields"]["addr"].as_str()
                {
                    return addr.to_string();
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("broker exited with {status} before listening:\n{log}");
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "broker did not start in time:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The records of the audit log (`DATA_DIR/audit.log`) so far.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("data/audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("JSON line"))
            .collect()
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address of the HTTP listener (metrics, console), from the log.
    pub fn http_addr(&self) -> String {
        self.log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|entry| entry["fields"]["message"] == "metrics and console listening")
            .and_then(|entry| entry["fields"]["addr"].as_str().map(String::from))
            .expect("the broker logs its HTTP address")
    }

    /// The text of `GET /metrics`.
    pub fn metrics(&self) -> String {
        let response = self.http_get("/metrics", &[]);
        assert!(
            response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
            "{response}"
        );
        response
    }

    /// The whole response (status line, headers, body) of `GET path` on
    /// the HTTP port, with extra request `headers` ("Name: value").
    pub fn http_get(&self, path: &str, headers: &[&str]) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.http_addr()).expect("connect to HTTP");
        let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{extra}\r\n").as_bytes())
            .expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        response
    }

    /// Runs `switchyard ARGS` against this broker; asserts it succeeds and
    /// returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new(binary())
            .args(args)
            .env("SWITCHYARD_URL", &self.url)
            .output()
            .expect("run switchyard");
        assert!(
            output.status.success(),
            "switchyard {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// An SDK client.
    pub async fn client(&self) -> Client {
        Client::connect(self.url.clone()).await.expect("connect")
    }

    /// An Admin client.
    pub async fn admin(&self) -> switchyard_sdk::Admin {
        self.client().await.admin()
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal, e.g. "HUP".
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "clean shutdown: {status}\n{}", self.log());
    }
}

impl Drop for BrokerProcess {
    /// Stops the broker; when the test is failing, prints its log (the
    /// temporary directory holding it is removed next).
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- log of the broker at {} ---\n{}", self.url, self.log());
        }
    }
}

fn rand_suffix() -> u128 {
    u128::from(std::process::id()) << 64 | u128::from(Instant::now().elapsed().subsec_nanos())
}

/// Polls `condition` every 20 ms until it holds; panics after [`TIMEOUT`]
/// with `what`.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Describes a subscription.
pub async fn describe(
    admin: &mut switchyard_sdk::Admin,
    name: &str,
) -> proto::SubscriptionDescription {
    admin
        .describe_subscription(proto::DescribeSubscriptionRequest { name: name.into() })
        .await
        .expect("describe")
        .into_inner()
}

/// True when every partition's durable committed offset reached its end.
pub async fn fully_committed(admin: &mut switchyard_sdk::Admin, name: &str) -> bool {
    describe(admin, name)
        .await
        .partitions
        .iter()
        .all(|p| p.committed_offset == p.end_offset)
}

/// Waits until every partition of a subscription has its durable
/// committed offset at the end.
pub async fn until_fully_committed(admin: &switchyard_sdk::Admin, name: &str) {
    eventually(&format!("subscription {name} fully committed"), || {
        let mut admin = admin.clone();
        let name = name.to_string();
        async move { fully_committed(&mut admin, &name).await }
    })
    .await;
}

/// A raw gRPC subscription stream (no SDK), for tests of the wire contract.
pub struct RawStream {
    requests: tokio::sync::mpsc::Sender<proto::SubscribeRequest>,
    responses: tonic::Streaming<proto::Delivery>,
}

impl RawStream {
    /// Opens a stream on `subscription` with `max_in_flight` credits.
    pub async fn open(
        url: &str,
        subscription: &str,
        max_in_flight: u32,
    ) -> Result<RawStream, tonic::Status> {
        let client = Client::connect(url.to_string()).await.expect("connect");
        Self::open_with(&client, subscription, max_in_flight).await
    }

    /// Like [`RawStream::open`], over `client`'s channel (and token).
    pub async fn open_with(
        client: &Client,
        subscription: &str,
        max_in_flight: u32,
    ) -> Result<RawStream, tonic::Status> {
        use proto::subscribe_request::Request;
        let (requests, rx) = tokio::sync::mpsc::channel(64);
        requests
            .send(proto::SubscribeRequest {
                request: Some(Request::Open(proto::Open {
                    subscription: subscription.into(),
                    max_in_flight,
                })),
            })
            .await
            .expect("queue open");
        let responses =
            proto::subscriber_client::SubscriberClient::new(client.authorized_channel())
                .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
        Ok(RawStream {
            requests,
            responses,
        })
    }

    /// The next delivery (panics after [`TIMEOUT`]).
    pub async fn next(&mut self) -> Result<proto::Delivery, tonic::Status> {
        tokio::time::timeout(TIMEOUT, self.responses.message())
            .await
            .expect("a delivery in time")?
            .ok_or_else(|| tonic::Status::cancelled("stream ended"))
    }

    /// Nacks one delivery with a reason (the subscription's backoff
    /// applies).
    pub async fn nack(&self, delivery_id: String, reason: &str) {
        self.nack_after(delivery_id, reason, 0).await;
    }

    /// Nacks one delivery with a reason and a Retry-After of `delay_ms`
    /// (0: the subscription's backoff).
    pub async fn nack_after(&self, delivery_id: String, reason: &str, delay_ms: u32) {
        use proto::subscribe_request::Request;
        self.requests
            .send(proto::SubscribeRequest {
                request: Some(Request::Settle(proto::Settle {
                    nacks: vec![proto::Nack {
                        delivery_id,
                        reason: reason.into(),
                        delay_ms,
                    }],
                    ..Default::default()
                })),
            })
            .await
            .expect("send nack");
    }

    /// Acks deliveries by id.
    pub async fn ack(&self, ids: Vec<String>) {
        use proto::subscribe_request::Request;
        self.requests
            .send(proto::SubscribeRequest {
                request: Some(Request::Settle(proto::Settle {
                    ack_ids: ids,
                    ..Default::default()
                })),
            })
            .await
            .expect("send acks");
    }
}

/// A valid JSON event of `event_type` with a partition key and payload.
pub fn event(id: &str, event_type: &str, key: &str, data: serde_json::Value) -> proto::CloudEvent {
    switchyard_sdk::Event::new("/tests", event_type)
        .id(id)
        .partition_key(key)
        .json(&data)
        .expect("json")
}

/// Publishes `events` on the default bus in one batch; panics unless
/// every one is stored.
pub async fn publish_stored(client: &Client, events: Vec<proto::CloudEvent>) {
    for result in client
        .publish_batch("default", events)
        .await
        .expect("publish")
    {
        result.expect("stored");
    }
}

/// The dead letters of `subscription`.
pub async fn dead_letters(
    admin: &switchyard_sdk::Admin,
    subscription: &str,
) -> Vec<proto::Delivery> {
    admin
        .clone()
        .list_dead_letters(proto::ListDeadLettersRequest {
            subscription: subscription.into(),
            ..Default::default()
        })
        .await
        .expect("list dead letters")
        .into_inner()
        .dead_letters
}

/// Waits until `subscription` has `count` dead letters; returns them.
pub async fn until_dead_letters(
    admin: &switchyard_sdk::Admin,
    subscription: &str,
    count: usize,
) -> Vec<proto::Delivery> {
    eventually(
        &format!("{count} dead letter(s) of {subscription}"),
        || async { dead_letters(admin, subscription).await.len() == count },
    )
    .await;
    dead_letters(admin, subscription).await
}

/// Redrives every waiting dead letter of `subscription`; returns how many.
pub async fn redrive_all(admin: &switchyard_sdk::Admin, subscription: &str) -> u32 {
    admin
        .clone()
        .redrive_dead_letters(proto::RedriveDeadLettersRequest {
            subscription: subscription.into(),
            ..Default::default()
        })
        .await
        .expect("redrive")
        .into_inner()
        .redriven
}

/// librdkafka settings the tests use with tansu 0.6: one record per
/// produce batch, as tansu reports the high watermark of a multi-record
/// batch too low (docs/kafka.md).
pub const TANSU_SETTINGS: [(&str, &str); 1] = [("batch.num.messages", "1")];

/// The config lines that put a broker on the Kafka backend at `brokers`,
/// its topics under `prefix`, with [`TANSU_SETTINGS`] and `extra` as
/// librdkafka settings.
pub fn kafka_backend_yaml(brokers: &str, prefix: &str, extra: &[(&str, &str)]) -> String {
    let settings = TANSU_SETTINGS
        .iter()
        .chain(extra)
        .map(|(key, value)| format!("{key}: \"{value}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "backend: kafka\nkafka: {{brokers: \"{brokers}\", topic_prefix: \"{prefix}\", timeout: 20s, settings: {{{settings}}}}}\n"
    )
}

/// A Kafka-protocol broker (tansu, in memory) on an ephemeral port, for
/// the Kafka backend; killed on drop.
pub struct Tansu {
    child: Child,
    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub brokers: String,
}

impl Tansu {
    /// Starts `tansu broker` with its in-memory storage (from `$TANSU`, or
    /// where `scripts/test.sh` installs it: `~/.cache/switchyard-tools/bin`)
    /// and waits until it accepts connections. Panics with how to install
    /// it when it is missing.
    pub fn start() -> Tansu {
        let binary = std::env::var("TANSU").unwrap_or_else(|_| {
            std::env::var("HOME")
                .map(|home| Path::new(&home).join(".cache/switchyard-tools/bin/tansu"))
                .unwrap_or_default()
                .display()
                .to_string()
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log_path = std::env::temp_dir().join(format!("tansu-{port}.log"));
        let log = std::fs::File::create(&log_path).expect("tansu log file");
        let mut child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary}: {e}; scripts/test.sh installs it (cargo install tansu --version 0.6.0 --locked --features dynostore --root ~/.cache/switchyard-tools)")
            });
        let brokers = format!("127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(&brokers).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!(
                    "tansu exited with {status} (memory:// needs its `dynostore` feature):\n{log}"
                );
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "tansu did not listen on {brokers}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Tansu { child, brokers }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of every series of metric `name` (e.g. `switchyard_acks_total`)
/// in Prometheus text `metrics`.
pub fn metric_total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

/// A finished run of the order saga; its services still run.
pub struct SagaRun {
    /// How each order closed, by order id.
    pub ended: Vec<switchyard_examples::saga::Outcome>,
    /// Stops the services.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The services' tasks.
    pub services: Vec<tokio::task::JoinHandle<Result<(), switchyard_sdk::SdkError>>>,
}

/// Runs the order saga's services (inventory, payment, shipping, and the
/// order service's closer) on `client`, places orders 1..=`orders` with a
/// `payment_timeout` deadline each, and waits until every one has closed.
pub async fn run_saga(client: &Client, orders: u32, payment_timeout: Duration) -> SagaRun {
    use switchyard_examples::saga::{self, Service};
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut services = Vec::new();
    for service in [Service::Inventory, Service::Payment, Service::Shipping] {
        services.push(tokio::spawn(saga::run_service(
            service,
            client.clone(),
            shutdown.clone(),
        )));
    }
    let (outcomes, mut closed) = tokio::sync::mpsc::unbounded_channel();
    services.push(tokio::spawn(saga::close_orders(
        client.clone(),
        outcomes,
        shutdown.clone().cancelled_owned(),
    )));
    for n in 1..=orders {
        saga::place_order(client, n, payment_timeout)
            .await
            .expect("place order");
    }
    let mut ended = Vec::new();
    tokio::time::timeout(TIMEOUT, async {
        while ended.len() < orders as usize {
            ended.push(closed.recv().await.expect("order-service runs"));
        }
    })
    .await
    .expect("every saga ends");
    ended.sort_by(|a, b| a.order_id.cmp(&b.order_id));
    SagaRun {
        ended,
        shutdown,
        services,
    }
}
