//! The order saga's services, one process each (see
//! `examples/order-saga/README.md`; `examples/order-saga/run.sh` runs them
//! all against a local broker):
//!
//! ```text
//! order_saga inventory            # reserves stock; releases it on payment.failed
//! order_saga payment              # charges orders
//! order_saga shipping             # schedules shipments
//! order_saga orders --count 10    # places orders, closes them, prints a summary
//! ```
//!
//! Each exports its spans over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set, so the whole choreography is one trace per order in Jaeger.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::time::Duration;
use switchyard_examples::saga::{self, Service};
use switchyard_sdk::Client;
use switchyard_sdk::telemetry;
use tokio_util::sync::CancellationToken;

/// Runs one service of the order saga.
#[derive(Debug, Parser)]
struct Args {
    /// Broker URL.
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:50051")]
    url: String,
    /// Bearer token, for brokers with `auth.tokens`.
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// inventory-service: order.placed → stock.reserved | stock.unavailable;
    /// payment.failed → stock.released (compensation).
    Inventory,
    /// payment-service: stock.reserved → payment.succeeded | payment.failed.
    /// Fails order-2-like orders once (retry) and invalid amounts always
    /// (dead letter).
    Payment,
    /// shipping-service: payment.succeeded → shipment.scheduled.
    Shipping,
    /// order-service: places orders, closes them (completed or cancelled)
    /// from the other services' events, and exits when every order that
    /// can end has ended.
    Orders {
        /// Orders to place; order N takes path N % 6 (see the README).
        #[arg(long, default_value_t = 10)]
        count: u32,
        /// Payment deadline of each order: a scheduled payment.timed_out
        /// event cancels the order when the payment has not come by then.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        payment_timeout: Duration,
        /// Give up waiting for the sagas after this long.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let service = match &args.role {
        Role::Inventory => Some(Service::Inventory),
        Role::Payment => Some(Service::Payment),
        Role::Shipping => Some(Service::Shipping),
        Role::Orders { .. } => None,
    };
    let guard = telemetry::init(service.map_or("order-service", Service::name))?;
    let client = Client::connect(args.url.clone())
        .await
        .with_context(|| format!("is the broker running at {}?", args.url))?
        .with_token(args.token.as_deref().unwrap_or(""))?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    let outcome = match (service, args.role) {
        (Some(service), _) => saga::run_service(service, client, shutdown)
            .await
            .map_err(anyhow::Error::from),
        (
            None,
            Role::Orders {
                count,
                payment_timeout,
                timeout,
            },
        ) => orders(client, count, payment_timeout, timeout, shutdown).await,
        (None, _) => Ok(()),
    };
    // Flushing the last spans blocks; keep it off the async workers.
    let _ = tokio::task::spawn_blocking(move || drop(guard)).await;
    outcome
}

/// Places `count` orders and waits for the sagas that can end.
async fn orders(
    client: Client,
    count: u32,
    payment_timeout: Duration,
    timeout: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (outcomes, mut closed) = tokio::sync::mpsc::unbounded_channel();
    let consumer = tokio::spawn(saga::close_orders(
        client.clone(),
        outcomes,
        shutdown.clone().cancelled_owned(),
    ));
    for n in 1..=count {
        saga::place_order(&client, n, payment_timeout).await?;
    }
    let expected = count as usize;
    let mut summary = BTreeMap::new();
    let waited = tokio::time::timeout(timeout, async {
        while summary.len() < expected {
            match closed.recv().await {
                Some(outcome) => {
                    let n: u32 = outcome
                        .order_id
                        .trim_start_matches("order-")
                        .parse()
                        .unwrap_or(0);
                    summary.insert(n, outcome);
                }
                None => break,
            }
        }
    })
    .await;
    shutdown.cancel();
    consumer.await??;
    println!("== {} of {expected} sagas ended:", summary.len());
    for outcome in summary.values() {
        println!(
            "   {:<9} {:<28} because {}",
            outcome.order_id, outcome.event_type, outcome.because
        );
    }
    anyhow::ensure!(
        waited.is_ok(),
        "only {} of {expected} sagas ended within {timeout:?}; are the inventory, payment and shipping services running?",
        summary.len()
    );
    Ok(())
}
