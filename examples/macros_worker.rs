//! The README's first example: a handler registered with `#[tributary::handler]`.
//! `REDIS_URL=redis://127.0.0.1:6379 cargo run --example macros_worker`
#![allow(clippy::print_stdout)]
use std::time::Duration;
use tributary::prelude::*;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct OrderPlaced {
    id: u64,
    customer: String,
}

/// Bills each placed order. An `Err` is retried with backoff; after 5 deliveries the
/// message is moved, with the reason, to the dead-letter stream.
#[tributary::handler(topic = "orders", group = "billing", max_deliveries = 5)]
async fn bill(order: OrderPlaced, ctx: Context) -> Result<(), HandlerError> {
    println!("billing order {} for {} (attempt {})", order.id, order.customer, ctx.attempt());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), tributary::BoxError> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let conn = Connection::connect(&url).await?;

    // Published while no worker runs: the message waits in the stream.
    let producer = Producer::new(conn.clone());
    let order = OrderPlaced { id: 1, customer: "c-42".into() };
    producer.message("orders", &order).key("c-42").send().await?;

    // Every service reads the topic through its own group; its instances share the work.
    let worker = Worker::builder(conn, "billing").register(bill).build()?.start();
    // Wait until it has handled the one message (bounded: a demo should not hang).
    tokio::time::timeout(Duration::from_secs(30), worker.settled(1)).await?;
    worker.shutdown().await; // finishes running handlers, acks them, leaves the rest pending
    Ok(())
}
