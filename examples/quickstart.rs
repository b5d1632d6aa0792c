//! Quickstart: publish orders, handle them in a worker, watch a failing one get retried and
//! a poisoned one land in the dead-letter stream; a layer around the handler times every
//! attempt.
//!
//! Run with `cargo xtask demo` (starts its own redis-server), or against a server you run:
//! `REDIS_URL=redis://127.0.0.1:6379 cargo run --example quickstart`.
#![allow(clippy::print_stdout)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tributary::prelude::*;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct OrderPlaced {
    id: u64,
    customer: String,
    total_cents: u64,
}

/// A layer: runs around every handler of the worker it is added to, for what applies to all
/// of them (here: timing each attempt; elsewhere metrics, authorisation, tenant policies).
#[derive(Default)]
struct TimeAttempts {
    attempts: AtomicU64,
    slowest_us: AtomicU64,
}

#[tributary::async_trait]
impl Layer for TimeAttempts {
    async fn call(&self, ctx: Context, next: Next) -> Result<(), HandlerError> {
        let started = std::time::Instant::now();
        let result = next.run(ctx).await; // the handler (and any layers added after this one)
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.attempts.fetch_add(1, Ordering::Relaxed);
        self.slowest_us.fetch_max(took, Ordering::Relaxed);
        result
    }
}

#[tokio::main]
async fn main() -> Result<(), tributary::BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        // Logs on standard error, coloured only on a terminal: standard output is the example's.
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // A namespace of its own, so the demo never touches other data on the server.
    let namespace = format!("quickstart-{}", MessageId::new());
    let conn = Connection::options().namespace(namespace.as_str()).connect(&url).await?;
    println!("connected to {}, namespace {namespace}", tributary::connection::redact_url(&url));

    // 1. Publish while nobody listens: the stream keeps everything.
    let producer = Producer::new(conn.clone());
    for id in 1..=10 {
        let order = OrderPlaced { id, customer: format!("customer-{}", id % 3), total_cents: id * 1_000 };
        let entry = producer.message("orders", &order).key(order.customer.clone()).send().await?;
        println!("published order {id} as entry {entry}");
    }

    // 2. A worker in group "billing" handles them: order 4 fails once (retried), order 7
    //    always fails (dead-lettered after 3 deliveries).
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    let timing = Arc::new(TimeAttempts::default());
    let worker = Worker::builder(conn.clone(), "billing")
        .consumer_name("billing-1")
        .layer(timing.clone())
        .max_deliveries(3)
        .retry_policy(RetryPolicy::exponential(Duration::from_millis(50), Duration::from_millis(200)))
        .on("orders", move |order: OrderPlaced, ctx: Context| {
            let h = h.clone();
            async move {
                if order.id == 7 || (order.id == 4 && ctx.attempt() == 1) {
                    println!("  order {} attempt {}: payment service unavailable", order.id, ctx.attempt());
                    return Err(HandlerError::retry("payment service unavailable"));
                }
                println!(
                    "  billed order {} ({} cents) for {}, attempt {}",
                    order.id,
                    order.total_cents,
                    order.customer,
                    ctx.attempt()
                );
                h.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()?
        .start();

    let dead_letters = DeadLetters::new(conn.clone(), "orders")?;
    // Nine handled and one dead-lettered: ten settled.
    let stats = tokio::time::timeout(Duration::from_secs(30), worker.settled(10))
        .await
        .map_err(|_| "demo did not finish in 30 s")?;
    worker.shutdown().await;

    for letter in dead_letters.list(10).await? {
        println!(
            "dead letter: entry {} reason {} after {} attempts: {}",
            letter.original_id, letter.reason, letter.attempts, letter.error
        );
    }
    println!(
        "handled {} orders, {} retries, {} dead-lettered, {} pending",
        stats.acked,
        stats.retried,
        stats.dead_lettered,
        Admin::new(conn.clone()).pending_count("orders", "billing").await?
    );
    println!(
        "the timing layer saw {} attempts, the slowest took {} µs",
        timing.attempts.load(Ordering::Relaxed),
        timing.slowest_us.load(Ordering::Relaxed)
    );

    // Clean up the demo's keys.
    Admin::new(conn).delete_topic("orders").await?;
    println!("quickstart finished");
    Ok(())
}
