//! `switchyard serve`.

use super::{EXIT_INVALID, Failure};
use std::net::SocketAddr;
use std::path::PathBuf;
use switchyard_broker::config::{Backend, BrokerConfig};
use switchyard_broker::delivery::DeliveryError;
use switchyard_broker::server;

/// Flags of `serve`; each overrides the config file.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Broker config file (YAML); see deploy/switchyard.yaml.
    #[arg(long, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051; port 0 picks one].
    #[arg(long, env = "SWITCHYARD_LISTEN")]
    listen: Option<SocketAddr>,
    /// HTTP listen address: /metrics and the operator console at /ui/
    /// [default: 127.0.0.1:9464].
    #[arg(long, env = "SWITCHYARD_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Data directory [default: ./data].
    #[arg(long, env = "SWITCHYARD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Rule file (YAML); repeat for several. Adds to the config's rules.
    #[arg(long = "rules")]
    rules: Vec<PathBuf>,
    /// Where topics live: `embedded` (files under the data directory) or
    /// `kafka` (a Kafka cluster; see --kafka-brokers) [default: embedded].
    #[arg(long, value_enum, env = "SWITCHYARD_BACKEND")]
    backend: Option<Backend>,
    /// Kafka bootstrap servers for `--backend kafka`, HOST:PORT[,...].
    #[arg(long, env = "SWITCHYARD_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
}

pub(super) async fn run(args: ServeArgs) -> Result<(), Failure> {
    let telemetry = switchyard_sdk::telemetry::init("switchyard")?;
    let invalid = |error: anyhow::Error| Failure {
        error,
        code: EXIT_INVALID,
    };
    let mut config = match &args.config {
        Some(path) => BrokerConfig::load(path).map_err(|e| invalid(e.into()))?,
        None => BrokerConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(metrics_listen) = args.metrics_listen {
        config.metrics_listen = Some(metrics_listen);
    }
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    config.rules.extend(args.rules);
    if let Some(backend) = args.backend {
        config.backend = backend;
    }
    if let Some(brokers) = args.kafka_brokers {
        config.kafka.brokers = brokers;
    }
    // Open first, then bind: the gRPC port accepts connections only once
    // the log is open and the rules are loaded.
    let listen = config.listen;
    let served = match tokio::task::spawn_blocking(move || server::Broker::open(config)).await? {
        Ok(broker) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (`listen`): {e}"))?;
            broker.serve(listener, shutdown_signal()).await
        }
        Err(e) => Err(e),
    };
    // Flushing the last spans blocks; keep it off the async workers.
    let _ = tokio::task::spawn_blocking(move || drop(telemetry)).await;
    served.map_err(|e| match e {
        server::StartError::ConfigSubscription {
            index,
            ref name,
            ref source,
        } => {
            // Name the file and line of the field (or the subscription).
            let location = args.config.as_ref().map_or_else(String::new, |path| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let mut field = format!("subscriptions[{index}] ({name})");
                if let DeliveryError::InvalidSpec { field: inner, .. } = source {
                    field = format!("{field}.{inner}");
                }
                let line = switchyard_broker::config::field_line(&text, &field);
                format!("{}:{line}: ", path.display())
            });
            invalid(anyhow::anyhow!("{location}{e}"))
        }
        server::StartError::Rules(_)
        | server::StartError::Auth(_)
        | server::StartError::Name(_)
        | server::StartError::Tls(_)
        | server::StartError::Schema(_) => invalid(e.into()),
        other => Failure::from(other),
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
