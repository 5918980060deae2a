//! The idempotent producer behind appends, and its recovery.
//!
//! Kafka refuses an idempotent producer's records when it no longer
//! accepts the producer's id, epoch or sequence numbers (fenced by a newer
//! epoch of its id, an expired id, a sequence gap). librdkafka then
//! re-initializes the producer (a new epoch) and fails the refused records,
//! or, where it cannot vouch for what was written, fails the producer for
//! good. An append whose records were refused so sends them again, at
//! most [`RESENDS`] times: through the same producer, or through a fresh
//! one (a new producer id) when it failed for good or is refused again
//! (tansu 0.6 can keep fencing a producer after its epoch bump);
//! concurrent appends that met the same failure share that replacement. A
//! record sent again may have been written the first time too (at least
//! once, as when a publisher retries).

use super::binding;
use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::DeliveryFuture;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::sync::RwLock;
use std::time::Duration;

/// How many times an append sends refused records again.
pub(super) const RESENDS: usize = 2;

/// Where a record landed: its offset and Kafka timestamp (ms, when set).
pub(super) type Landed = (u64, Option<i64>);

/// A record handed to the producer (or why it could not be).
type Sent = Result<DeliveryFuture, KafkaError>;

/// The producer appends go through, replaced after a fatal error.
pub(super) struct Producers {
    config: ClientConfig,
    current: RwLock<FutureProducer>,
}

impl Producers {
    /// Creates the first producer from `config`.
    pub(super) fn new(config: ClientConfig) -> Result<Producers, KafkaError> {
        let current = RwLock::new(config.create()?);
        Ok(Producers { config, current })
    }

    /// The producer to send with now.
    pub(super) fn current(&self) -> FutureProducer {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// After `failed` refused `errors`: the producer to send the refused
    /// records with once more, or `None` when they should not be sent
    /// again (errors that say nothing of the producer's state, such as
    /// timeouts) or no producer is left. The same producer, which
    /// librdkafka gave a new epoch, unless it failed for good or
    /// `refused_before` (its records were refused for its state on the
    /// previous try too): then a fresh one replaces it (unless another
    /// append replaced it already).
    pub(super) fn recover<'a>(
        &self,
        failed: &FutureProducer,
        mut errors: impl Iterator<Item = &'a KafkaError>,
        refused_before: bool,
    ) -> Option<FutureProducer> {
        let why = match failed.client().fatal_error() {
            Some((code, reason)) => format!("it failed for good ({code:?}: {reason})"),
            None => {
                let refusal = errors.find(|error| refused_for_producer_state(error))?;
                if !refused_before {
                    tracing::warn!(%refusal, "Kafka refused records for the producer's id, epoch or sequence numbers; sending them again");
                    return Some(failed.clone());
                }
                format!("Kafka refused it again after a new epoch ({refusal})")
            }
        };
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.client().native_ptr() != failed.client().native_ptr() {
            return Some(current.clone());
        }
        match self.config.create::<FutureProducer>() {
            Ok(fresh) => {
                tracing::warn!(%why, "replacing the Kafka producer; sending through a new one");
                *current = fresh;
                Some(current.clone())
            }
            Err(error) => {
                tracing::error!(%why, %error, "the Kafka producer cannot be replaced");
                None
            }
        }
    }

    /// Waits up to `timeout` for records in flight to be acknowledged.
    pub(super) fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.current().flush(timeout)
    }
}

/// Hands each payload (a stored record) to `producer` for `partition` of
/// the Kafka topic `kafka_name`, in order.
pub(super) fn send<'a>(
    producer: &FutureProducer,
    kafka_name: &str,
    partition: u32,
    raw: bool,
    payloads: impl IntoIterator<Item = &'a Bytes>,
) -> Vec<Sent> {
    payloads
        .into_iter()
        .map(|payload| {
            let record = binding::to_kafka(payload, raw);
            let headers =
                record
                    .headers
                    .iter()
                    .fold(OwnedHeaders::new(), |headers, (key, value)| {
                        headers.insert(Header {
                            key,
                            value: Some(value),
                        })
                    });
            let mut future = FutureRecord::to(kafka_name)
                .partition(partition as i32)
                .headers(headers);
            if let Some(key) = &record.key {
                future = future.key(key);
            }
            if let Some(value) = &record.value {
                future = future.payload(value);
            }
            producer.send_result(future).map_err(|(error, _)| error)
        })
        .collect()
}

/// Waits for each sent record's acknowledgement.
pub(super) async fn landed(sent: Vec<Sent>) -> Vec<Result<Landed, KafkaError>> {
    let mut landed = Vec::with_capacity(sent.len());
    for record in sent {
        landed.push(match record {
            Ok(delivery) => match delivery.await {
                Ok(Ok(delivery)) => Ok((delivery.offset as u64, delivery.timestamp.to_millis())),
                Ok(Err((error, _))) => Err(error),
                Err(_) => Err(KafkaError::Canceled),
            },
            Err(error) => Err(error),
        });
    }
    landed
}

/// Whether Kafka refused a record for the producer's id, epoch or
/// sequence numbers (which librdkafka re-initializes), not for the record.
fn refused_for_producer_state(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::InvalidProducerIdMapping
        )
    )
}
