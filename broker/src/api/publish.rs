//! `Publisher.Publish`.

use super::access::{Access, Action};
use super::auth::Principal;
use super::quota::Quotas;
use super::status::rejection_code;
use crate::ingest::{Ingest, Rejection};
use crate::telemetry::spans;
use std::sync::Arc;
use switchyard_proto::v1::publisher_server::Publisher;
use switchyard_proto::v1::{
    EventError, PublishRequest, PublishResponse, PublishResult, TopicOffset,
};
use switchyard_sdk::telemetry::context;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// Serves publishes through the ingest pipeline.
#[derive(Debug)]
pub struct PublisherService {
    ingest: Arc<Ingest>,
    quotas: Arc<Quotas>,
    access: Arc<Access>,
}

impl PublisherService {
    /// A service over the pipeline: publishes need a `publish` grant on
    /// their bus and are charged to their principal's quota.
    pub fn new(ingest: Arc<Ingest>, quotas: Arc<Quotas>, access: Arc<Access>) -> Self {
        Self {
            ingest,
            quotas,
            access,
        }
    }
}

#[tonic::async_trait]
impl Publisher for PublisherService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let (metadata, extensions, request) = request.into_parts();
        let anonymous;
        let principal = match extensions.get::<Principal>() {
            Some(principal) => principal,
            None => {
                anonymous = Principal::anonymous();
                &anonymous
            }
        };
        let bus = super::bus_or_default(&request.bus);
        self.access
            .authorize(principal, "Publish", Action::Publish, bus)?;
        self.quotas
            .charge_publish(Some(principal), request.events.len(), || {
                prost::Message::encoded_len(&request)
            })?;
        let span = spans::publish_request(bus, request.events.len(), || {
            context::from_metadata(&metadata)
        });
        let ids: Vec<String> = request.events.iter().map(|e| e.id.clone()).collect();
        let outcomes = self
            .ingest
            .publish(bus, request.events, &principal.0)
            .instrument(span)
            .await?;
        let results = ids
            .into_iter()
            .zip(outcomes)
            .map(|(id, outcome)| match outcome {
                Ok(stored) => PublishResult {
                    id,
                    rules: stored.rules,
                    offsets: stored
                        .offsets
                        .into_iter()
                        .map(|(topic, partition, offset)| TopicOffset {
                            topic: topic.to_string(),
                            partition,
                            offset,
                        })
                        .collect(),
                    duplicate: stored.duplicate,
                    deliver_after_unix_ms: stored.deliver_after_ms.unwrap_or(0),
                    error: None,
                },
                Err(rejection) => PublishResult {
                    id,
                    error: Some(EventError {
                        code: rejection_code(&rejection) as i32,
                        field: match &rejection {
                            Rejection::Invalid(e) => e.field.clone(),
                            Rejection::Unroutable(_)
                            | Rejection::Storage(_)
                            | Rejection::Exhausted(_) => String::new(),
                        },
                        message: rejection.to_string(),
                    }),
                    ..PublishResult::default()
                },
            })
            .collect();
        Ok(Response::new(PublishResponse { results }))
    }
}
