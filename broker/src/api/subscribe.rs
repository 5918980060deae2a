//! `Subscriber.Subscribe`: a bidirectional stream per consumer. One task
//! reads settles from the client; another waits for deliveries within the
//! consumer's credits and feeds them into a bounded channel that backs the
//! response stream. Either side ending stops both and releases the
//! consumer, whose unsettled deliveries are then redelivered.

use super::access::{Access, Action, caller};
use super::quota::Quotas;
use crate::delivery::{Delivery, NackRequest, Subscriptions};
use std::sync::Arc;
use std::time::Duration;
use switchyard_proto::v1 as proto;
use switchyard_proto::v1::subscribe_request::Request as Message;
use switchyard_proto::v1::subscriber_server::Subscriber;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// Deliveries buffered per stream between the broker and the transport.
const STREAM_BUFFER: usize = 64;

/// Serves subscription streams.
#[derive(Debug)]
pub struct SubscriberService {
    subscriptions: Arc<Subscriptions>,
    shutdown: CancellationToken,
    quotas: Arc<Quotas>,
    access: Arc<Access>,
}

impl SubscriberService {
    /// A service over the subscriptions; `shutdown` ends every stream;
    /// streams count against their principal's quota and need a
    /// `subscribe` grant.
    pub fn new(
        subscriptions: Arc<Subscriptions>,
        shutdown: CancellationToken,
        quotas: Arc<Quotas>,
        access: Arc<Access>,
    ) -> Self {
        Self {
            subscriptions,
            shutdown,
            quotas,
            access,
        }
    }
}

/// A delivery as the API sends it.
pub(crate) fn delivery_to_proto(delivery: Delivery) -> proto::Delivery {
    proto::Delivery {
        delivery_id: delivery.id,
        event: delivery.record.event,
        topic: delivery.topic.to_string(),
        partition: delivery.partition,
        offset: delivery.offset,
        attempt: delivery.attempt,
        rules: delivery.record.rules,
        dead_letter: delivery.record.dead_letter,
        trace_context: delivery.trace_context,
        settle_errors: Vec::new(),
    }
}

#[tonic::async_trait]
impl Subscriber for SubscriberService {
    type SubscribeStream = ReceiverStream<Result<proto::Delivery, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<proto::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let principal = caller(&request);
        let permit = self.quotas.open_stream(Some(&principal))?;
        let mut inbound = request.into_inner();
        let open = match inbound.message().await?.and_then(|m| m.request) {
            Some(Message::Open(open)) => open,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a Subscribe stream must be `open` naming the subscription",
                ));
            }
        };
        self.access.authorize(
            &principal,
            "Subscribe",
            Action::Subscribe,
            &open.subscription,
        )?;
        let consumer = Arc::new(
            self.subscriptions
                .get(&open.subscription)?
                .connect(open.max_in_flight)?,
        );
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let stop = self.shutdown.child_token();

        let reader = Arc::clone(&consumer);
        let reader_stop = stop.clone();
        let reader_sender = sender.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    message = inbound.message() => message,
                    () = reader_stop.cancelled() => break,
                };
                let request = match message {
                    Ok(Some(message)) => message.request,
                    // The client closed its side, or the connection broke.
                    Ok(None) | Err(_) => break,
                };
                match request {
                    Some(Message::Settle(settle)) => {
                        let nacks: Vec<NackRequest> = settle
                            .nacks
                            .into_iter()
                            .map(|n| NackRequest {
                                delivery_id: n.delivery_id,
                                reason: n.reason,
                                delay: (n.delay_ms > 0)
                                    .then(|| Duration::from_millis(u64::from(n.delay_ms))),
                                dead_letter: false,
                            })
                            .collect();
                        let extensions: Vec<(String, Duration)> = settle
                            .extends
                            .into_iter()
                            .map(|e| (e.delivery_id, Duration::from_secs(u64::from(e.seconds))))
                            .collect();
                        match reader.settle(&settle.ack_ids, &nacks, &extensions) {
                            Ok(refused) if refused.is_empty() => {}
                            Ok(refused) => {
                                let answer = proto::Delivery {
                                    settle_errors: refused
                                        .into_iter()
                                        .map(|r| proto::SettleError {
                                            delivery_id: r.delivery_id,
                                            reason: r.reason,
                                        })
                                        .collect(),
                                    ..Default::default()
                                };
                                if reader_sender.send(Ok(answer)).await.is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                let _ = reader_sender.send(Err(e.into())).await;
                                break;
                            }
                        }
                    }
                    Some(Message::Open(_)) => {
                        let status = Status::invalid_argument(
                            "`open` may only be sent once, as the first message",
                        );
                        let _ = reader_sender.send(Err(status)).await;
                        break;
                    }
                    None => {}
                }
            }
            reader_stop.cancel();
        });

        tokio::spawn(async move {
            // The stream's quota slot is held until it ends.
            let _permit = permit;
            loop {
                let batch = tokio::select! {
                    batch = consumer.next_batch() => batch,
                    () = stop.cancelled() => break,
                    () = sender.closed() => break,
                };
                match batch {
                    Ok(deliveries) => {
                        for delivery in deliveries {
                            if sender.send(Ok(delivery_to_proto(delivery))).await.is_err() {
                                stop.cancel();
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = sender.send(Err(e.into())).await;
                        break;
                    }
                }
            }
            stop.cancel();
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
