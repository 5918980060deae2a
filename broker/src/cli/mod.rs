//! Command-line interface: `serve` runs the broker; the other commands are
//! gRPC clients (through the SDK) of a running broker.

mod admin;
mod flow;
mod graph;
mod log;
mod publish;
mod serve;

use clap::{Parser, Subcommand};

/// Exit code for invalid configuration or rules (as `rules check` promises).
pub(crate) const EXIT_INVALID: u8 = 2;

/// A failure with the exit code to report it with.
pub(crate) struct Failure {
    pub(crate) error: anyhow::Error,
    pub(crate) code: u8,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure {
            error: error.into(),
            code: 1,
        }
    }
}

/// Switchyard: an event-bus choreography broker.
///
/// Services publish CloudEvents to a bus; rules (YAML, EventBridge-style
/// patterns) route them to durable topics; subscriptions deliver them
/// at-least-once to subscribers, who ack or nack each event.
///
/// Start a broker with `switchyard serve`, then try:
///   switchyard topics list
///   switchyard publish --type com.example.order.placed --source /shop --data '{"orderId":"1"}'
///   switchyard subscriptions create audit-tail --topic audit
///   switchyard tail audit-tail
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, verbatim_doc_comment)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a running broker listens.
#[derive(Debug, clap::Args)]
pub(crate) struct Connection {
    /// Broker URL.
    #[arg(
        long,
        env = "SWITCHYARD_URL",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    url: String,
    /// Bearer token, for brokers with `auth.tokens` (prefer the
    /// SWITCHYARD_TOKEN variable: flags show up in process lists).
    #[arg(long, env = "SWITCHYARD_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) of a TLS broker; use an https:// URL.
    #[arg(long, env = "SWITCHYARD_CA_FILE", global = true)]
    ca_file: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for a broker that wants mutual TLS.
    #[arg(
        long,
        env = "SWITCHYARD_CLIENT_CERT",
        global = true,
        requires = "client_key"
    )]
    client_cert: Option<std::path::PathBuf>,
    /// Key (PEM) of --client-cert.
    #[arg(
        long,
        env = "SWITCHYARD_CLIENT_KEY",
        global = true,
        requires = "client_cert"
    )]
    client_key: Option<std::path::PathBuf>,
}

impl Connection {
    /// An SDK client for the broker, with the token if one is given.
    pub(crate) async fn client(&self) -> anyhow::Result<switchyard_sdk::Client> {
        let read = |path: &std::path::PathBuf| {
            anyhow::Context::with_context(std::fs::read(path), || {
                format!("cannot read {}", path.display())
            })
        };
        let tls = match &self.ca_file {
            Some(ca) => Some(switchyard_sdk::TlsOptions {
                ca_pem: read(ca)?,
                identity: match (&self.client_cert, &self.client_key) {
                    (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
                    _ => None,
                },
            }),
            None => None,
        };
        Ok(switchyard_sdk::Client::connect_with(&self.url, tls)
            .await?
            .with_token(self.token.as_deref().unwrap_or(""))?)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (embedded durable log; no flags needed).
    ///
    /// With no flags it stores data in ./data and listens on
    /// 127.0.0.1:50051. Logs are JSON lines on stderr (filter with RUST_LOG).
    /// Example: switchyard serve --config deploy/switchyard.yaml
    Serve(serve::ServeArgs),
    /// Publish one event from flags, or CloudEvents JSON lines from stdin.
    ///
    /// Examples:
    ///   switchyard publish --type com.example.order.placed --source /shop --data '{"orderId":"1"}'
    ///   echo '{"id":"1","source":"/shop","type":"com.example.order.placed","data":{}}' | switchyard publish --stdin
    #[command(verbatim_doc_comment)]
    Publish(publish::PublishArgs),
    /// Print (and ack) the events of a subscription as JSON lines.
    ///
    /// Each line: {"topic", "partition", "offset", "attempt", "rules", "event"}.
    /// Stops after --count events, or on Ctrl-C.
    Tail(publish::TailArgs),
    /// List, create or delete topics.
    #[command(subcommand)]
    Topics(admin::TopicsCommand),
    /// List, create, describe or delete subscriptions.
    #[command(subcommand)]
    Subscriptions(admin::SubscriptionsCommand),
    /// Validate rule files, or list the rules a broker runs.
    #[command(subcommand)]
    Rules(admin::RulesCommand),
    /// Inspect dead-lettered events.
    #[command(subcommand)]
    Dlq(admin::DlqCommand),
    /// Register or list protobuf schemas for payload matching.
    #[command(subcommand)]
    Schemas(admin::SchemasCommand),
    /// List or cancel events scheduled with --deliver-after / deliverafter.
    #[command(subcommand)]
    Scheduled(admin::ScheduledCommand),
    /// Print the choreography map: event type → rule → topic →
    /// subscription (→ dead-letter topic), from the broker's live rules and
    /// subscriptions, as Graphviz DOT or Mermaid.
    ///
    /// Examples:
    ///   switchyard graph | dot -Tsvg > choreography.svg
    ///   switchyard graph --format mermaid
    #[command(verbatim_doc_comment)]
    Graph(graph::GraphArgs),
    /// Print what happened to a business flow: every event of it, found by
    /// event id, trace id or correlation id (the broker's
    /// `flow.correlation`), with each step — published, routed, delivered,
    /// acked, nacked, dead-lettered, redriven — and its time.
    ///
    /// Examples:
    ///   switchyard flow order-1234             # by correlation id (flow.correlation: data.orderId)
    ///   switchyard flow 4bf92f3577b34da6a3ce929d0e0e4736 --json
    #[command(verbatim_doc_comment)]
    Flow(flow::FlowArgs),
    /// Print the SHA-256 of a bearer token read from stdin, for
    /// `auth.tokens[].sha256` in the broker config (the token itself is
    /// never stored).
    ///
    /// Example: head -c 32 /dev/urandom | base64 | tee token.txt | switchyard token-hash
    #[command(verbatim_doc_comment)]
    TokenHash,
    /// Check the embedded log's files offline.
    #[command(subcommand)]
    Log(log::LogCommand),
}

/// Runs the chosen command.
pub(crate) async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Publish(args) => publish::publish(args).await,
        Command::Tail(args) => publish::tail(args).await,
        Command::Topics(command) => admin::topics(command).await,
        Command::Subscriptions(command) => admin::subscriptions(command).await,
        Command::Rules(command) => admin::rules(command).await,
        Command::Schemas(command) => admin::schemas(command).await,
        Command::Dlq(command) => admin::dlq(command).await,
        Command::Graph(args) => graph::run(args).await,
        Command::Flow(args) => flow::run(args).await,
        Command::Scheduled(command) => admin::scheduled(command).await,
        Command::Log(command) => log::run(command),
        Command::TokenHash => {
            let mut token = String::new();
            std::io::stdin().read_line(&mut token)?;
            let token = token.trim_end_matches(['\n', '\r']);
            if token.is_empty() {
                return Err(anyhow::anyhow!("give the token on stdin").into());
            }
            println!("{}", switchyard_broker::api::auth::token_hash(token));
            Ok(())
        }
    }
}
