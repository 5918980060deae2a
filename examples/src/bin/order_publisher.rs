//! The order service of the saga example: places orders by publishing
//! `com.example.order.placed` events. It knows the bus, never the services
//! that react.
//!
//! `cargo run -p switchyard-examples --bin order_publisher -- --orders 10`

use clap::Parser;
use switchyard_sdk::{Client, Event};

/// Publishes orders to the default bus.
#[derive(Debug, Parser)]
struct Args {
    /// Broker URL.
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:50051")]
    url: String,
    /// How many orders to place.
    #[arg(long, default_value_t = 10)]
    orders: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::connect(args.url).await?;
    for n in 1..=args.orders {
        let order_id = format!("order-{n}");
        let total = f64::from(n * 137 % 900) + 0.99;
        let order = serde_json::json!({
            "orderId": order_id,
            "total": total,
            "currency": "EUR",
            "review": total > 700.0,
        });
        let event = Event::new("/shop/orders", "com.example.order.placed")
            .subject(order_id.clone())
            .partition_key(order_id.clone())
            .json(&order)?;
        let published = client.publish("default", event).await?;
        println!(
            "order-service: placed {order_id} ({total:.2} EUR) -> rules {:?}",
            published.rules
        );
    }
    Ok(())
}
