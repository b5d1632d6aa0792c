//! Offline delivery and replay: publish while the worker is down, start it and watch it
//! catch up in order; then replay the last part of the topic by time into a new group.
//!
//! `REDIS_URL=redis://127.0.0.1:6379 cargo run --example offline_replay`
#![allow(clippy::print_stdout)]

use std::time::{Duration, SystemTime};

use tributary::prelude::*;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Reading {
    sensor: String,
    value: f64,
}

async fn consume(
    conn: &Connection,
    group: &str,
    start: Position,
    expect: usize,
) -> Result<Vec<f64>, tributary::BoxError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::builder(conn.clone(), group)
        .consumer_name("reader")
        .concurrency(1)
        .start_from(start)
        .on("readings", move |r: Reading, ctx: Context| {
            let tx = tx.clone();
            async move {
                println!("  [{}] {} = {} (entry {})", ctx.group(), r.sensor, r.value, ctx.entry_id());
                let _ = tx.send(r.value);
                Ok::<_, HandlerError>(())
            }
        })
        .build()?
        .start();
    let mut got = Vec::new();
    while got.len() < expect {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(v)) => got.push(v),
            _ => return Err("timed out".into()),
        }
    }
    worker.shutdown().await;
    Ok(got)
}

#[tokio::main]
async fn main() -> Result<(), tributary::BoxError> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let namespace = format!("offline-replay-{}", MessageId::new());
    let conn = Connection::options().namespace(namespace.as_str()).connect(&url).await?;
    let admin = Admin::new(conn.clone());
    // The group exists before anything is published (as at deploy time), starting at the end.
    admin.create_group("readings", "dashboard", Position::End).await?;

    let producer = Producer::new(conn.clone());
    println!("worker is down; publishing 5 readings");
    for i in 0..5 {
        producer.publish("readings", &Reading { sensor: "kitchen".into(), value: f64::from(i) }).await?;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let checkpoint = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    for i in 5..10 {
        producer.publish("readings", &Reading { sensor: "kitchen".into(), value: f64::from(i) }).await?;
    }

    println!("worker starts and catches up, in order:");
    let got = consume(&conn, "dashboard", Position::End, 10).await?;
    assert_eq!(got, (0..10).map(f64::from).collect::<Vec<_>>());

    println!("replaying from the checkpoint into a new group:");
    let replayed = consume(&conn, "backfill", Position::Time(checkpoint), 5).await?;
    assert_eq!(replayed, (5..10).map(f64::from).collect::<Vec<_>>());

    let entries =
        Replay::new(conn.clone()).range("readings", Position::Time(checkpoint), Position::End)?.collect(100).await?;
    println!("a plain range read from the checkpoint sees {} entries, touching no group", entries.len());

    admin.delete_topic("readings").await?;
    println!("offline_replay finished");
    Ok(())
}
