//! A producer and a worker exporting Prometheus metrics over HTTP, with the gauges a
//! `Sampler` reads from Redis: lag rises while no worker runs, and falls to 0 once one does.
//!
//! ```sh
//! cargo run --example observability            # then: curl -s localhost:9187/metrics
//! METRICS_ADDR=127.0.0.1:9200 cargo run --example observability
//! ```
//!
//! It publishes 200 orders while no worker runs, then waits for Enter (or the end of standard
//! input) before starting the worker; once every order is settled it serves the metrics until
//! a second Enter (or the end of input). One order in a hundred is refused by the handler and
//! becomes a dead letter. `tests/observability_example.rs` scrapes it through each phase.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::{AsyncBufReadExt, BufReader};
use tributary::metrics::Sampler;
use tributary::prelude::*;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
}

const ORDERS: u64 = 200;

#[tokio::main]
async fn main() -> Result<(), tributary::BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    // The recorder first: producers and workers register their metrics when they start.
    let addr: SocketAddr = std::env::var("METRICS_ADDR").unwrap_or_else(|_| "127.0.0.1:9187".into()).parse()?;
    PrometheusBuilder::new().with_http_listener(addr).install()?;
    println!("metrics at http://{addr}/metrics");

    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // A namespace of its own, so the example never touches other data on the server.
    let namespace = format!("observability-demo-{}", MessageId::new());
    let conn = Connection::options().namespace(namespace.as_str()).connect(&url).await?;
    // Lag, pending, dead letters: read from Redis every second into gauges.
    let _sampler = Sampler::new(conn.clone()).interval(Duration::from_secs(1)).spawn();

    // The group exists before anything is published (as a deploy would create it), so what is
    // published while no worker runs is the group's lag.
    Admin::new(conn.clone()).create_group("orders", "billing", Position::Beginning).await?;
    let producer = Producer::new(conn.clone());
    for id in 0..ORDERS {
        producer.publish("orders", &Order { id }).await?;
    }
    println!("published {ORDERS} orders with no worker running; press Enter to start one");
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    stdin.next_line().await?;

    let worker = Worker::builder(conn.clone(), "billing")
        .on("orders", |order: Order, _ctx: Context| async move {
            if order.id % 100 == 99 {
                return Err(HandlerError::reject("order refused"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await; // the work
            Ok(())
        })
        .build()?
        .start();
    let stats = tokio::time::timeout(Duration::from_secs(60), worker.settled(ORDERS)).await?;
    println!("settled: {} acknowledged, {} dead letters; press Enter to stop", stats.acked, stats.dead_lettered);
    stdin.next_line().await?;
    worker.shutdown().await;
    Admin::new(conn.clone()).delete_topic("orders").await?;
    conn.quit().await;
    Ok(())
}
