//! The order saga, choreographed by `examples/order-saga/rules.yaml`:
//!
//! ```text
//! order-service      publishes order.placed ─────────────┐
//! inventory-service  order.placed      → stock.reserved  │ or stock.unavailable
//! payment-service    stock.reserved    → payment.succeeded or payment.failed
//! shipping-service   payment.succeeded → shipment.scheduled
//! inventory-service  payment.failed | payment.timed_out → stock.released (compensation)
//! order-service      stock.unavailable | payment.failed | payment.timed_out → order.cancelled
//!                    shipment.scheduled → order.completed
//! ```
//!
//! The order service also schedules a `payment.timed_out` event when it
//! places an order (`deliverafter`: the payment deadline) and cancels it
//! when the saga ends first; if it fires, the order is compensated.
//!
//! No service knows another: each publishes facts to the bus, and the
//! rules decide who hears them. [`order`] makes a deterministic mix of
//! orders that exercises every path: a happy one, one whose first payment
//! attempt times out (a retry), one declined (compensation: stock released,
//! order cancelled), one out of stock, one whose bank never answers (the
//! payment deadline fires: compensation), and one with an invalid amount
//! that fails every attempt, lands in the dead-letter topic, and is then
//! compensated by its deadline too.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_sdk::{Client, Event, Received, RetryAfter, SdkError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The bus every saga event is published on.
pub const BUS: &str = "default";
/// Event types of the saga.
pub mod types {
    /// A customer placed an order.
    pub const ORDER_PLACED: &str = "com.example.order.placed";
    /// Stock was set aside for an order.
    pub const STOCK_RESERVED: &str = "com.example.stock.reserved";
    /// An item is not available; the order cannot go on.
    pub const STOCK_UNAVAILABLE: &str = "com.example.stock.unavailable";
    /// Reserved stock was given back (compensation).
    pub const STOCK_RELEASED: &str = "com.example.stock.released";
    /// The customer was charged.
    pub const PAYMENT_SUCCEEDED: &str = "com.example.payment.succeeded";
    /// The charge was declined.
    pub const PAYMENT_FAILED: &str = "com.example.payment.failed";
    /// The parcel has a pickup slot.
    pub const SHIPMENT_SCHEDULED: &str = "com.example.shipment.scheduled";
    /// The saga ended well.
    pub const ORDER_COMPLETED: &str = "com.example.order.completed";
    /// The saga ended with the order cancelled (compensated).
    pub const ORDER_CANCELLED: &str = "com.example.order.cancelled";
    /// The payment deadline passed first (scheduled when the order was
    /// placed).
    pub const PAYMENT_TIMED_OUT: &str = "com.example.payment.timed_out";
}

/// Source of every saga event.
pub const SOURCE: &str = "/examples/order-saga";

/// An order, carried by every event of its saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// `order-N`; also the subject and partition key of its events.
    pub order_id: String,
    /// The article.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// Amount to charge, in EUR.
    pub total: f64,
    /// The payment gateway times out on the first attempt for this order.
    #[serde(default)]
    pub flaky_gateway: bool,
    /// The bank never answers for this order: the payment deadline fires.
    #[serde(default)]
    pub bank_hangs: bool,
}

/// Cards are declined above this total.
pub const CARD_LIMIT: f64 = 800.0;

/// Order `n` of the demo mix: `n % 6` picks the path it takes.
pub fn order(n: u32) -> Order {
    let mut order = Order {
        order_id: format!("order-{n}"),
        sku: "sku-espresso-machine".into(),
        quantity: 1,
        total: 249.0,
        flaky_gateway: false,
        bank_hangs: false,
    };
    match n % 6 {
        2 => order.flaky_gateway = true,
        3 => order.total = 950.0,
        4 => order.sku = "discontinued-kettle".into(),
        5 => order.bank_hangs = true,
        0 => order.total = -1.0,
        _ => {}
    }
    order
}

/// The id of an order's scheduled payment deadline event.
fn deadline_id(order_id: &str) -> String {
    format!("{order_id}-payment-deadline")
}

/// The services, each a process of its own in `order_saga`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Reserves and releases stock.
    Inventory,
    /// Charges customers.
    Payment,
    /// Schedules shipments.
    Shipping,
}

impl Service {
    /// Its `service.name`.
    pub fn name(self) -> &'static str {
        match self {
            Service::Inventory => "inventory-service",
            Service::Payment => "payment-service",
            Service::Shipping => "shipping-service",
        }
    }
}

/// Publishes the next fact of an order's saga.
async fn publish(client: &Client, event_type: &str, order: &Order) -> Result<(), String> {
    let event = Event::new(SOURCE, event_type)
        .subject(order.order_id.clone())
        .partition_key(order.order_id.clone())
        .json(order)
        .map_err(|e| e.to_string())?;
    client
        .publish(BUS, event)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Places order `n` (order-service's side of the saga) and schedules its
/// payment deadline `payment_timeout` from now; one trace covers both.
pub async fn place_order(
    client: &Client,
    n: u32,
    payment_timeout: Duration,
) -> Result<Order, SdkError> {
    let order = order(n);
    let span = tracing::info_span!("place order", order_id = %order.order_id);
    async {
        let placed = Event::new(SOURCE, types::ORDER_PLACED)
            .subject(order.order_id.clone())
            .partition_key(order.order_id.clone())
            .json(&order)?;
        client.publish(BUS, placed).await?;
        let deadline = Event::new(SOURCE, types::PAYMENT_TIMED_OUT)
            .id(deadline_id(&order.order_id))
            .subject(order.order_id.clone())
            .partition_key(order.order_id.clone())
            .deliver_after(payment_timeout)
            .json(&order)?;
        client.publish(BUS, deadline).await?;
        Ok::<(), SdkError>(())
    }
    .instrument(span)
    .await?;
    println!(
        "order-service: placed {} ({:.2} EUR, {}), payment due within {payment_timeout:?}",
        order.order_id, order.total, order.sku
    );
    Ok(order)
}

/// Runs one service until `shutdown` is cancelled.
pub async fn run_service(
    service: Service,
    client: Client,
    shutdown: CancellationToken,
) -> Result<(), SdkError> {
    let stop = || shutdown.clone().cancelled_owned();
    match service {
        Service::Inventory => {
            let (reserved, released) = tokio::join!(
                consume(client.clone(), "inventory-service", reserve, stop()),
                consume(client, "inventory-compensation", release, stop()),
            );
            reserved.and(released)
        }
        Service::Payment => consume(client, "payment-service", charge, stop()).await,
        Service::Shipping => consume(client, "shipping-service", ship, stop()).await,
    }
}

/// Consumes `subscription` with `step`, which gets the order and the
/// delivery and returns the event type to publish next.
async fn consume<F>(
    client: Client,
    subscription: &'static str,
    step: F,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SdkError>
where
    F: Fn(&Order, &Received) -> Result<&'static str, RetryAfter> + Send + Sync + 'static,
{
    let publisher = client.clone();
    client
        .subscribe(subscription)
        .run_until(
            move |delivery: Received| {
                let client = publisher.clone();
                let next = delivery
                    .json::<Order>()
                    .map_err(|e| RetryAfter::backoff(e.to_string()))
                    .and_then(|order| step(&order, &delivery).map(|next| (order, next)));
                async move {
                    let (order, next) = next?;
                    publish(&client, next, &order)
                        .await
                        .map_err(RetryAfter::backoff)?;
                    println!(
                        "{subscription}: {} → {next} (attempt {})",
                        order.order_id, delivery.attempt
                    );
                    Ok::<(), RetryAfter>(())
                }
            },
            shutdown,
        )
        .await
}

fn reserve(order: &Order, _: &Received) -> Result<&'static str, RetryAfter> {
    Ok(if order.sku.starts_with("discontinued") {
        types::STOCK_UNAVAILABLE
    } else {
        types::STOCK_RESERVED
    })
}

fn release(_: &Order, _: &Received) -> Result<&'static str, RetryAfter> {
    Ok(types::STOCK_RELEASED)
}

fn charge(order: &Order, delivery: &Received) -> Result<&'static str, RetryAfter> {
    if order.total <= 0.0 {
        println!(
            "payment-service: {} has an invalid amount; failing",
            order.order_id
        );
        return Err(RetryAfter::new(
            Duration::ZERO,
            format!("invalid amount {:.2} EUR", order.total),
        ));
    }
    if order.bank_hangs {
        println!(
            "payment-service: {}: the bank does not answer; retrying in a minute",
            order.order_id
        );
        return Err(RetryAfter::new(
            Duration::from_secs(60),
            "the bank does not answer",
        ));
    }
    if order.flaky_gateway && delivery.attempt == 1 {
        println!(
            "payment-service: {} gateway timeout; will retry",
            order.order_id
        );
        return Err(RetryAfter::new(
            Duration::from_millis(200),
            "payment gateway timed out",
        ));
    }
    Ok(if order.total > CARD_LIMIT {
        types::PAYMENT_FAILED
    } else {
        types::PAYMENT_SUCCEEDED
    })
}

fn ship(_: &Order, _: &Received) -> Result<&'static str, RetryAfter> {
    Ok(types::SHIPMENT_SCHEDULED)
}

/// How an order's saga ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The order.
    pub order_id: String,
    /// [`types::ORDER_COMPLETED`] or [`types::ORDER_CANCELLED`].
    pub event_type: &'static str,
    /// The event that decided it.
    pub because: String,
}

/// Order-service's consumer: closes orders (completed or cancelled) from
/// the outcomes of the other services, cancels the payment deadline of an
/// order that closed first, ignores outcomes of closed orders, and reports
/// each closing to `outcomes`.
pub async fn close_orders(
    client: Client,
    outcomes: mpsc::UnboundedSender<Outcome>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SdkError> {
    let publisher = client.clone();
    let closed_orders = Arc::new(Mutex::new(HashSet::new()));
    client
        .subscribe("order-service")
        .run_until(
            move |delivery: Received| {
                let client = publisher.clone();
                let outcomes = outcomes.clone();
                let closed_orders = Arc::clone(&closed_orders);
                async move {
                    let order: Order = delivery.json().map_err(|e| e.to_string())?;
                    let because = delivery.event.r#type.clone();
                    let first = closed_orders
                        .lock()
                        .map(|mut closed| closed.insert(order.order_id.clone()))
                        .unwrap_or(true);
                    if !first {
                        println!(
                            "order-service: {} is closed already; ignoring {because}",
                            order.order_id
                        );
                        return Ok(());
                    }
                    if because != types::PAYMENT_TIMED_OUT {
                        cancel_deadline(&client, &order.order_id).await?;
                    }
                    let closed = if because == types::SHIPMENT_SCHEDULED {
                        types::ORDER_COMPLETED
                    } else {
                        types::ORDER_CANCELLED
                    };
                    publish(&client, closed, &order).await?;
                    println!(
                        "order-service: {} → {closed} (because {because})",
                        order.order_id
                    );
                    let _ = outcomes.send(Outcome {
                        order_id: order.order_id,
                        event_type: closed,
                        because,
                    });
                    Ok::<(), String>(())
                }
            },
            shutdown,
        )
        .await
}

/// Cancels an order's payment deadline; one that fired already is fine.
async fn cancel_deadline(client: &Client, order_id: &str) -> Result<(), String> {
    let cancelled = client
        .admin()
        .cancel_scheduled(switchyard_sdk::proto::CancelScheduledRequest {
            bus: BUS.into(),
            source: SOURCE.into(),
            id: deadline_id(order_id),
        })
        .await;
    match cancelled {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
        Err(status) => Err(format!("cannot cancel the payment deadline: {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_takes_every_path() {
        assert!(!order(1).flaky_gateway && order(1).total < CARD_LIMIT);
        assert!(order(2).flaky_gateway);
        assert!(order(3).total > CARD_LIMIT);
        assert!(order(4).sku.starts_with("discontinued"));
        assert!(order(5).bank_hangs);
        assert!(order(6).total < 0.0);
    }
}
