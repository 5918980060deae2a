//! The connection to a broker and publishing.

use crate::subscriber::SubscriptionBuilder;
use crate::telemetry::context;
use crate::{Event, SdkError};
use switchyard_proto::v1::admin_client::AdminClient;
use switchyard_proto::v1::publisher_client::PublisherClient;
use switchyard_proto::v1::{CloudEvent, PublishRequest, PublishResult, TopicOffset};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A connection to a broker; cheap to clone and share.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    token: BearerToken,
}

/// Adds `authorization: Bearer <token>` to every call (when a token is
/// set), for brokers with `auth.tokens` configured.
#[derive(Clone, Default)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BearerToken(<redacted>)"
        } else {
            "BearerToken(None)"
        })
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// How to reach a broker over TLS.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// The CA that signed the broker's certificate (PEM).
    pub ca_pem: Vec<u8>,
    /// This client's certificate chain and key (PEM), for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("identity", &self.identity.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

/// A channel that authenticates every call.
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

/// An Admin client that authenticates every call.
pub type Admin = AdminClient<AuthChannel>;

/// Where a published event was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The event id.
    pub id: String,
    /// Names of the rules that matched it.
    pub rules: Vec<String>,
    /// The topic, partition and offset of each stored copy.
    pub offsets: Vec<TopicOffset>,
    /// True when the broker had already accepted this `(source, id)`.
    pub duplicate: bool,
    /// Set when the event was scheduled (`deliverafter` in the future):
    /// when it will be routed, in ms since the Unix epoch.
    pub deliver_after_unix_ms: Option<i64>,
}

impl Client {
    /// Connects to a broker, e.g. `http://127.0.0.1:50051`.
    pub async fn connect(url: impl Into<String>) -> Result<Client, SdkError> {
        Self::connect_with(url, None).await
    }

    /// Connects over TLS (an `https://` URL) when `tls` is given: the
    /// broker's certificate is checked against `tls.ca_pem`, and with a
    /// client identity the broker can verify this client (mutual TLS).
    pub async fn connect_with(
        url: impl Into<String>,
        tls: Option<TlsOptions>,
    ) -> Result<Client, SdkError> {
        let url = url.into();
        let error = |message: String| SdkError::Connect {
            url: url.clone(),
            message,
        };
        let mut endpoint = Endpoint::from_shared(url.clone()).map_err(|e| error(e.to_string()))?;
        if let Some(tls) = tls {
            let mut config =
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(tls.ca_pem));
            if let Some((cert, key)) = tls.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| error(e.to_string()))?;
        }
        let channel = endpoint.connect().await.map_err(|e| error(e.to_string()))?;
        Ok(Client {
            channel,
            token: BearerToken::default(),
        })
    }

    /// Authenticates every call with a bearer token (brokers with
    /// `auth.tokens`); an empty token means none. A token that is not
    /// printable ASCII is refused.
    pub fn with_token(mut self, token: &str) -> Result<Client, SdkError> {
        self.token = if token.is_empty() {
            BearerToken::default()
        } else {
            let value: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| SdkError::Data("a token must be printable ASCII".into()))?;
            BearerToken(Some(value))
        };
        Ok(self)
    }

    /// The underlying gRPC channel, for generated clients (it does not add
    /// the token: use [`Client::authorized_channel`] for that).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The channel with the token added to every call.
    pub fn authorized_channel(&self) -> AuthChannel {
        InterceptedService::new(self.channel.clone(), self.token.clone())
    }

    /// A client of the Admin service.
    pub fn admin(&self) -> Admin {
        AdminClient::new(self.authorized_channel())
    }

    /// Publishes one event; returns once it is durable.
    pub async fn publish(&self, bus: &str, event: CloudEvent) -> Result<Published, SdkError> {
        self.publish_batch(bus, vec![event])
            .await?
            .pop()
            .unwrap_or_else(|| {
                Err(SdkError::StreamEnded(
                    "the broker returned no result".into(),
                ))
            })
    }

    /// Publishes a batch in one call; one result per event, in order. A
    /// request-level problem (unknown bus, batch too large) is the outer
    /// error; a rejected event is its own inner error and does not stop
    /// the rest of the batch.
    ///
    /// Traced as a `send {bus}` producer span, a child of the current span
    /// (so events published while handling a delivery continue its
    /// trace). Events without a `traceparent` get this span as their
    /// creation context; the call's metadata carries it to the broker.
    pub async fn publish_batch(
        &self,
        bus: &str,
        mut events: Vec<CloudEvent>,
    ) -> Result<Vec<Result<Published, SdkError>>, SdkError> {
        let span = tracing::info_span!(
            "send",
            otel.name = %format_args!("send {bus}"),
            otel.kind = "producer",
            messaging.system = "switchyard",
            messaging.operation.type = "send",
            messaging.destination.name = bus,
            messaging.batch.message_count = events.len(),
            messaging.message.id = tracing::field::Empty,
        );
        if let [event] = events.as_slice() {
            span.record("messaging.message.id", event.id.as_str());
        }
        let cx = span.context();
        for event in &mut events {
            context::set_creation_context(event, &cx);
        }
        let mut publisher = PublisherClient::new(self.authorized_channel())
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        let started = std::time::Instant::now();
        let response = loop {
            let mut request = tonic::Request::new(PublishRequest {
                bus: bus.to_string(),
                events: events.clone(),
            });
            context::inject_metadata(&cx, request.metadata_mut());
            match publisher.publish(request).instrument(span.clone()).await {
                // Over a quota: wait as the broker says, within patience.
                Err(status)
                    if status.code() == tonic::Code::ResourceExhausted
                        && let Some(after) = retry_after(&status)
                        && started.elapsed() + after <= THROTTLE_PATIENCE =>
                {
                    tracing::debug!(bus, ?after, "publish throttled; retrying");
                    tokio::time::sleep(after).await;
                }
                outcome => break outcome?,
            }
        };
        Ok(response
            .into_inner()
            .results
            .into_iter()
            .map(published)
            .collect())
    }

    /// Publishes a serde value as a JSON event of type `event_type`.
    pub async fn publish_json<T: serde::Serialize + ?Sized>(
        &self,
        bus: &str,
        source: &str,
        event_type: &str,
        data: &T,
    ) -> Result<Published, SdkError> {
        self.publish(bus, Event::new(source, event_type).json(data)?)
            .await
    }

    /// Publishes a protobuf message; the event type is its full name.
    pub async fn publish_message<M: prost::Message + prost::Name>(
        &self,
        bus: &str,
        source: &str,
        message: &M,
    ) -> Result<Published, SdkError> {
        self.publish(bus, Event::from_message(source, message))
            .await
    }

    /// Starts configuring a consumer of `subscription`.
    pub fn subscribe(&self, subscription: &str) -> SubscriptionBuilder {
        SubscriptionBuilder::new(self.authorized_channel(), subscription)
    }
}

/// How long a throttled publish keeps retrying before the error is
/// returned.
const THROTTLE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// The broker's `retry-after-ms` hint on a RESOURCE_EXHAUSTED answer.
fn retry_after(status: &tonic::Status) -> Option<std::time::Duration> {
    let ms: u64 = status
        .metadata()
        .get("retry-after-ms")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(std::time::Duration::from_millis(ms.max(1)))
}

fn published(result: PublishResult) -> Result<Published, SdkError> {
    match result.error {
        Some(error) => Err(SdkError::Rejected {
            id: result.id,
            code: tonic::Code::from_i32(error.code),
            field: error.field,
            message: error.message,
        }),
        None => Ok(Published {
            id: result.id,
            rules: result.rules,
            offsets: result.offsets,
            duplicate: result.duplicate,
            deliver_after_unix_ms: (result.deliver_after_unix_ms > 0)
                .then_some(result.deliver_after_unix_ms),
        }),
    }
}
