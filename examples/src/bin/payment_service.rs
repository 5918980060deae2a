//! The payment service of the saga example: consumes the `payment-service`
//! subscription (orders), charges each order and publishes the outcome —
//! `com.example.payment.succeeded`, or `com.example.payment.failed`, which
//! the order service compensates by cancelling the order. The handler's
//! `Ok` acks the delivery; an `Err` nacks it so it comes again.
//!
//! `cargo run -p switchyard-examples --bin payment_service -- --count 10`

use clap::Parser;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use switchyard_sdk::{Client, Event, Received};
use tokio::sync::Notify;

/// Charges orders and publishes payment outcomes.
#[derive(Debug, Parser)]
struct Args {
    /// Broker URL.
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:50051")]
    url: String,
    /// Stop after this many orders (default: run until Ctrl-C).
    #[arg(long)]
    count: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Order {
    order_id: String,
    total: f64,
}

/// Cards are declined above this total, to show the compensation path.
const CARD_LIMIT: f64 = 800.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::connect(args.url).await?;
    let handled = Arc::new(AtomicU32::new(0));
    let done = Arc::new(Notify::new());
    let limit = args.count.unwrap_or(u32::MAX);
    let publisher = client.clone();
    let (counter, finished) = (Arc::clone(&handled), Arc::clone(&done));
    let handler = move |delivery: Received| {
        let client = publisher.clone();
        let counter = Arc::clone(&counter);
        let finished = Arc::clone(&finished);
        async move {
            let order: Order = delivery.json().map_err(|e| e.to_string())?;
            let (outcome, verb) = if order.total <= CARD_LIMIT {
                ("com.example.payment.succeeded", "charged")
            } else {
                ("com.example.payment.failed", "declined")
            };
            let payment = Event::new("/payments", outcome)
                .subject(order.order_id.clone())
                .partition_key(order.order_id.clone())
                .json(&serde_json::json!({"orderId": order.order_id, "amount": order.total}))
                .map_err(|e| e.to_string())?;
            client
                .publish("default", payment)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "payment-service: {verb} {} ({:.2} EUR), attempt {}, routed by {:?}",
                order.order_id, order.total, delivery.attempt, delivery.rules
            );
            if counter.fetch_add(1, Ordering::SeqCst) + 1 >= limit {
                finished.notify_one();
            }
            Ok::<(), String>(())
        }
    };
    let stop = async move {
        tokio::select! {
            () = done.notified() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    client
        .subscribe("payment-service")
        .max_in_flight(16)
        .run_until(handler, stop)
        .await?;
    println!(
        "payment-service: handled {} orders",
        handled.load(Ordering::SeqCst)
    );
    Ok(())
}
