//! Wiring: open the log, load rules, ensure declared topics and
//! subscriptions, serve gRPC until shutdown, then drain and flush.

use crate::api::access::{Access, Acl};
use crate::api::auth::Authenticator;
use crate::api::gateway::AdminGateway;
use crate::api::quota::Quotas;
use crate::api::{AdminService, PublisherService, SubscriberService};
use crate::audit::{AuditLog, AuthFailures};
use crate::config::Backend;
use crate::config::BrokerConfig;
use crate::console;
use crate::delivery::{DeliveryError, Subscriptions};
use crate::dir_lock::{DirLock, DirLockError};
use crate::flow::Flow;
use crate::ingest::Ingest;
use crate::log::kafka::KafkaLog;
use crate::log::{EmbeddedLog, EventLog, LogError};
use crate::model::{NameError, TopicName};
use crate::reload::{RuleReloader, ensure_topics};
use crate::rules::{RuleSet, RulesError};
use crate::schedule::{Schedule, ScheduleError};
use crate::schema::{SchemaError, SchemaRegistry};
use crate::telemetry::metrics::{self, Metrics, ReasonLabels};
use crate::telemetry::probes::{self, Readiness};
use crate::tls::{Protocol, ServerTls, TlsError, TlsListener};
use futures::StreamExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use switchyard_proto::v1::admin_server::AdminServer;
use switchyard_proto::v1::publisher_server::PublisherServer;
use switchyard_proto::v1::subscriber_server::SubscriberServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

/// Largest gRPC message sent (a delivery of the largest event; replies
/// listing many dead letters).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// How long shutdown waits for connections to drain before closing them.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Why the broker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Rules are invalid.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The log could not be opened (e.g. corruption).
    #[error(transparent)]
    Log(#[from] LogError),
    /// Subscriptions could not be loaded or created.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// A configured name is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A configured `.proto` file does not compile.
    #[error("schemas: {0}")]
    Schema(#[from] SchemaError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// `auth` is inconsistent (a token hash, an expiry or a grant).
    #[error("{0}")]
    Auth(String),
    /// The TLS certificate, key or client CA could not be used.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// The console's API or gRPC reflection could not be set up (a build
    /// defect: the embedded descriptor sets do not decode).
    #[error("console: {0}")]
    Console(String),
    /// A listener could not bind its address.
    #[error("cannot listen on {addr} (`{setting}`): {source}")]
    Bind {
        /// The config setting that names the address.
        setting: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A subscription the config declares cannot be created.
    #[error("subscriptions[{index}] ({name}): {source}")]
    ConfigSubscription {
        /// Its position under `subscriptions:`.
        index: usize,
        /// Its name.
        name: String,
        /// Why.
        source: DeliveryError,
    },
    /// The data directory is in use by another broker, or cannot be locked.
    #[error(transparent)]
    DirLock(#[from] DirLockError),
    /// The schedule of delayed events could not be opened.
    #[error("cannot open the schedule of delayed events: {0}")]
    Schedule(#[from] ScheduleError),
}

/// An opened broker, ready to serve.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    log: Arc<dyn EventLog>,
    subscriptions: Arc<Subscriptions>,
    ingest: Arc<Ingest>,
    metrics: Arc<Metrics>,
    schedule: Schedule,
    audit: Arc<AuditLog>,
    /// The flow history (its writer runs while serving).
    flow: Arc<Flow>,
    /// The Kafka backend, when used: its watermark poller runs while serving.
    kafka: Option<Arc<KafkaLog>>,
    /// This broker's hold on its data directory, released when it ends.
    _dir_lock: DirLock,
}

impl Broker {
    /// Opens storage, loads rules and creates the topics and subscriptions
    /// the config declares (and the topics rules target) when missing.
    pub fn open(config: BrokerConfig) -> Result<Broker, StartError> {
        let dir_lock = DirLock::acquire(&config.data_dir)?;
        for bus in &config.buses {
            crate::model::validate_name("bus (in the config's `buses:`)", bus)?;
        }
        let rules = RuleSet::load(&config.rules, &config.buses)?;
        let (log, kafka): (Arc<dyn EventLog>, _) = match config.backend {
            Backend::Embedded => (
                Arc::new(EmbeddedLog::open(&config.data_dir, &config.storage)?),
                None,
            ),
            Backend::Kafka => {
                let kafka = Arc::new(KafkaLog::connect(&config.kafka)?);
                tracing::info!(brokers = %config.kafka.brokers, prefix = %config.kafka.topic_prefix, "topics in Kafka");
                (Arc::clone(&kafka) as Arc<dyn EventLog>, Some(kafka))
            }
        };
        let declared = config
            .topics
            .iter()
            .map(|t| Ok((TopicName::user(t.name.clone())?, t.partitions)))
            .collect::<Result<Vec<_>, NameError>>()?;
        let targeted = rules.target_topics().into_iter().map(|t| (t, None));
        ensure_topics(
            log.as_ref(),
            declared.into_iter().chain(targeted),
            config.storage.default_partitions,
        )?;
        let metrics = Arc::new(Metrics::new());
        let flow = Arc::new(Flow::open(Arc::clone(&log), &config.flow)?);
        let subscriptions = Arc::new(Subscriptions::open(
            &config.data_dir,
            Arc::clone(&log),
            config.delivery.clone(),
            Arc::clone(&metrics),
            Arc::clone(&flow),
        )?);
        for (index, spec) in config.subscriptions.iter().enumerate() {
            match subscriptions.get(&spec.name) {
                Ok(existing) if existing.spec() != spec => {
                    tracing::warn!(subscription = %spec.name, "stored definition differs from the config; keeping the stored one (delete the subscription to redefine it)");
                }
                Ok(_) => {}
                Err(_) => {
                    subscriptions.create(spec.clone()).map_err(|source| {
                        StartError::ConfigSubscription {
                            index,
                            name: spec.name.clone(),
                            source,
                        }
                    })?;
                }
            }
        }
        let schemas = Arc::new(SchemaRegistry::load(
            &config.schemas.files,
            &config.schemas.include,
            Some(&config.data_dir.join("schemas")),
        )?);
        let (schedule, armed) = Schedule::open(Arc::clone(&log))?;
        tracing::info!(armed, "scheduled events re-armed");
        let ingest = Arc::new(Ingest::new(
            Arc::clone(&log),
            rules,
            schemas,
            &config,
            Arc::clone(&metrics),
            schedule.clone(),
            Arc::clone(&flow),
        ));
        let restored = ingest.recover_dedup()?;
        tracing::info!(restored, "dedup window restored from the log");
        let audit_path = config
            .audit_log
            .clone()
            .unwrap_or_else(|| config.data_dir.join("audit.log"));
        let audit = Arc::new(AuditLog::open(&audit_path, crate::audit::ROTATE_BYTES)?);
        let lag_of = Arc::clone(&subscriptions);
        metrics.set_lag_source(Arc::new(move || lag_of.lag()));
        Ok(Broker {
            config,
            log,
            subscriptions,
            ingest,
            metrics,
            schedule,
            audit,
            flow,
            kafka,
            _dir_lock: dir_lock,
        })
    }

    /// Serves on `listener` until `shutdown` resolves; then ends every
    /// subscription stream, drains connections (up to [`DRAIN_DEADLINE`]),
    /// flushes committed offsets and closes the log, in that order.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let addr = listener.local_addr()?;
        let token = CancellationToken::new();
        let flusher = tokio::spawn(Arc::clone(&self.subscriptions).run_flusher(token.clone()));
        tokio::spawn(Arc::clone(&self.subscriptions).follow_catalog(token.clone()));
        let flow_writer = tokio::spawn(Arc::clone(&self.flow).run(token.clone()));
        if let Some(kafka) = &self.kafka {
            tokio::spawn(Arc::clone(kafka).poll_watermarks(token.clone()));
        }
        let metrics = Arc::clone(&self.metrics);
        let tls = match &self.config.tls {
            Some(files) => {
                let tls = Arc::new(ServerTls::load(files)?);
                tokio::spawn(Arc::clone(&tls).reload_on_hangup(token.clone()));
                tracing::info!(mutual = tls.mutual(), "TLS on");
                Some(tls)
            }
            None => None,
        };
        let reloader = RuleReloader::new(
            self.config.rules.clone(),
            self.config.buses.clone(),
            Arc::clone(&self.ingest),
            Arc::clone(&self.log),
            self.config.storage.default_partitions,
            metrics,
            Arc::clone(&self.audit),
        );
        tokio::spawn(reloader.run(self.config.rules_poll_interval, token.clone()));
        let router = Arc::clone(&self.ingest);
        let scheduler = tokio::spawn(self.schedule.clone().run(
            move |bus: String, events| {
                let router = Arc::clone(&router);
                async move { router.route_scheduled(&bus, events).await }
            },
            token.clone(),
        ));
        let pushers = tokio::spawn(crate::push::supervise(
            Arc::clone(&self.subscriptions),
            token.clone(),
        ));
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<PublisherServer<PublisherService>>()
            .await;
        health
            .set_serving::<SubscriberServer<SubscriberService>>()
            .await;
        health.set_serving::<AdminServer<AdminService>>().await;
        // Reflection (v1 and v1alpha) lets grpcurl, grpcui and Postman call
        // the broker without its .proto files; like health, it is open.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(switchyard_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| StartError::Console(e.to_string()))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| StartError::Console(e.to_string()))?;
        let readiness = Arc::new(Readiness::default());

        let mutual = tls.as_ref().is_some_and(|t| t.mutual());
        let auth_failures = {
            let counter = self.metrics.auth_failures.clone();
            Arc::new(AuthFailures::new(Arc::clone(&self.audit), move |reason| {
                counter
                    .get_or_create(&ReasonLabels {
                        reason: reason.to_string(),
                    })
                    .inc();
            }))
        };
        let auth = Authenticator::new(&self.config.auth, mutual)
            .map_err(StartError::Auth)?
            .with_failures(Arc::clone(&auth_failures));
        let acl = Acl::new(&self.config.auth.acl).map_err(StartError::Auth)?;
        if auth.enabled() {
            tracing::info!(
                tokens = self.config.auth.tokens.len(),
                client_certificates = mutual,
                acl = acl.enforced(),
                "authentication on"
            );
            if !acl.enforced() {
                tracing::warn!(
                    "no auth.acl entries: every authenticated principal may publish, subscribe and administer everything"
                );
            }
        } else if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "serving on a non-loopback address WITHOUT authentication: anyone who can reach it can publish, read and administer; configure auth.tokens");
        }
        let access = Arc::new(Access::new(acl, Arc::clone(&self.audit)));
        let quotas = Arc::new(Quotas::new(&self.config.auth));
        let limits = &self.config.limits;
        let publisher = PublisherServer::new(PublisherService::new(
            Arc::clone(&self.ingest),
            Arc::clone(&quotas),
            Arc::clone(&access),
        ))
        .max_decoding_message_size(limits.max_request_bytes);
        let publisher = InterceptedService::new(publisher, auth.clone());
        let subscriber = SubscriberServer::new(SubscriberService::new(
            Arc::clone(&self.subscriptions),
            token.clone(),
            quotas,
            Arc::clone(&access),
        ))
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
        .max_decoding_message_size(limits.max_request_bytes);
        let subscriber = InterceptedService::new(subscriber, auth.clone());
        let admin = AdminServer::new(AdminService::new(
            Arc::clone(&self.log),
            Arc::clone(&self.subscriptions),
            Arc::clone(&self.ingest),
            self.schedule.clone(),
            self.config.storage.default_partitions,
            access,
            Arc::clone(&self.flow),
        ))
        .max_decoding_message_size(limits.max_request_bytes)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let unauthenticated = !auth.enabled();
        let admin = InterceptedService::new(admin, auth);
        if let Some(http_addr) = self.config.metrics_listen {
            if unauthenticated && !http_addr.ip().is_loopback() {
                tracing::warn!(addr = %http_addr, "the console and its admin API on a non-loopback address WITHOUT authentication: anyone who can reach it can read and administer (redrive, seek, delete); configure auth.tokens");
            }
            let gateway =
                AdminGateway::new(admin.clone()).map_err(|e| StartError::Console(e.to_string()))?;
            let app = metrics::router(Arc::clone(&self.metrics))
                .merge(probes::router(Arc::clone(&readiness)))
                .merge(console::router(gateway));
            serve_http(http_addr, tls.clone(), app, &token).await?;
        }
        tracing::info!(%addr, data_dir = %self.config.data_dir.display(), "switchyard listening");
        let stop = token.clone();
        let router = Server::builder()
            .max_concurrent_streams(limits.max_streams_per_connection)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(publisher)
            .add_service(subscriber)
            .add_service(admin);
        let draining = Arc::clone(&readiness);
        let shutdown = async move {
            shutdown.await;
            draining.set(false);
            tracing::info!("shutting down: ending streams and draining connections");
            stop.cancel();
        };
        let server: std::pin::Pin<
            Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
        > = match tls {
            Some(tls) => {
                let connections = tls.incoming(
                    listener,
                    Protocol::Grpc,
                    token.clone(),
                    Some(Arc::clone(&auth_failures)),
                );
                let incoming = tokio_stream::wrappers::ReceiverStream::new(connections)
                    .map(Ok::<_, std::io::Error>);
                Box::pin(router.serve_with_incoming_shutdown(incoming, shutdown))
            }
            None => {
                // Accepted sockets get TCP_NODELAY: without it, small
                // responses wait for delayed ACKs (~40 ms per publish
                // round trip).
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                Box::pin(router.serve_with_incoming_shutdown(incoming, shutdown))
            }
        };
        readiness.set(true);
        let deadline = async {
            token.cancelled().await;
            tokio::time::sleep(DRAIN_DEADLINE).await;
        };
        tokio::select! {
            result = server => result?,
            () = deadline => tracing::warn!("drain deadline passed; closing remaining connections"),
        }
        token.cancel();
        let _ = pushers.await;
        let _ = scheduler.await;
        let _ = flusher.await;
        let _ = flow_writer.await;
        let log = Arc::clone(&self.log);
        let _ = tokio::task::spawn_blocking(move || log.close()).await;
        tracing::info!("switchyard stopped");
        Ok(())
    }
}

/// Serves `app` (`/metrics`, the console) on `addr`, over TLS when the
/// broker has it, until `stop`.
async fn serve_http(
    addr: std::net::SocketAddr,
    tls: Option<Arc<ServerTls>>,
    app: axum::Router,
    stop: &CancellationToken,
) -> Result<(), StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            setting: "metrics_listen",
            addr,
            source,
        })?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %local, tls = tls.is_some(), console = %format!("{scheme}://{local}/ui/"), "metrics and console listening");
    let stopped = stop.clone();
    let shutdown = async move { stopped.cancelled().await };
    let served = match tls {
        Some(tls) => {
            let connections = tls.incoming(listener, Protocol::Http1, stop.clone(), None);
            let listener = TlsListener::new(connections, local);
            tokio::spawn(serve_app(listener, app, shutdown))
        }
        None => tokio::spawn(serve_app(listener, app, shutdown)),
    };
    tokio::spawn(async move {
        if let Ok(Err(error)) = served.await {
            tracing::error!(%error, "HTTP endpoint (metrics, console) failed");
        }
    });
    Ok(())
}

/// Serves `app` on `listener` (plain or TLS) until `shutdown`.
async fn serve_app<L>(
    listener: L,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
