//! Durable messaging on Redis Streams: a [`Producer`] that publishes typed messages to
//! topics, and [`Worker`]s that consume them through consumer groups with at-least-once
//! delivery, retries with backoff, dead letters, reclaim of crashed consumers' work, and
//! replay.
//!
//! Most applications depend on the facade instead (package `tributary-redis`, imported as
//! `tributary`), which re-exports this crate.
//!
//! ```no_run
//! use std::time::Duration;
//! use tributary_core::Connection;
//! use tributary_streams::{Context, HandlerError, Producer, Worker};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct OrderPlaced { id: u64 }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let conn = Connection::connect("redis://127.0.0.1:6379").await?;
//! Producer::new(conn.clone()).publish("orders", &OrderPlaced { id: 1 }).await?;
//!
//! let worker = Worker::builder(conn, "billing")
//!     .on("orders", |order: OrderPlaced, ctx: Context| async move {
//!         tracing::info!(order = order.id, attempt = ctx.attempt(), "billing");
//!         Ok::<_, HandlerError>(())
//!     })
//!     .max_deliveries(5)
//!     .claim_idle(Duration::from_secs(30))
//!     .build()?
//!     .start();
//! worker.shutdown().await;
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
pub mod consumer;
pub mod dead_letter;
mod error;
pub mod metrics;
mod partitions;
mod position;
mod producer;
mod redis;
mod registry;
pub mod replay;
mod retention;
mod ring;
mod schedule;
mod scripts;
mod topic_stats;
pub mod trace;

pub use admin::{Admin, ConsumerInfo, GroupInfo, PendingInfo};
/// Lets [`Handler`] and [`Layer`] be implemented with `async fn`: `#[async_trait] impl Handler for ...`.
pub use async_trait::async_trait;
pub use consumer::{
    handler_fn, layer_fn, raw_handler_fn, Context, ExpiredPolicy, Handler, HandlerError, Layer, Next, RetryPolicy,
    Route, RouteOptions, Worker, WorkerBuilder, WorkerHandle, WorkerStats,
};
pub use dead_letter::{DeadLetter, DeadLetterFilter, DeadLetters, ReplayAll};
pub use error::{BuildError, StreamError};
pub use position::Position;
pub use producer::{Producer, ProducerBuilder, Publish};
pub use replay::{Received, Replay};
pub use retention::{HeldBy, HoldReason, Retention, Trimmed};
pub use schedule::{Scheduled, Scheduler};
pub use topic_stats::{GroupStats, TopicStats};
