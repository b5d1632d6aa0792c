//! Workers: consumer groups that hand each message to a handler and settle it by the
//! outcome: acknowledged after success, retried with backoff after a failure, moved to the
//! dead-letter stream with the reason after the last attempt. Start with
//! [`Worker::builder`]; what exactly is guaranteed is in the delivery guide
//! (`docs/delivery.md`, `tributary::guide::delivery`).

// Where things live (for maintainers; CONTRIBUTING.md has the whole map):
// - `topic.rs`: the consumer loop of one topic (group creation, reads, drain);
// - `reader.rs`: the shared reader: one blocking read for all topics of a worker;
// - `doorbell.rs`: keyspace notifications or producers' rings (`../ring.rs`) telling the
//   shared reader which topics to read;
// - `group.rs`: re-creating a lost consumer group;
// - `dispatch.rs`: handing read entries to handlers (batches, per-key lanes);
// - `process.rs`: handling one message (handler call, ack / retry / dead-letter);
// - `retry.rs`: the retry policy (backoff with jitter);
// - `claim.rs`: reclaiming entries of dead consumers, lease renewal, consumer clean-up;
// - `upkeep.rs`: one task that runs every topic's sweeps and lease renewals when due;
// - `ack.rs`: batched acks and the dead-letter move;
// - `handler.rs`: the `Handler` trait, `Context` and `HandlerError`;
// - `builder.rs`: configuration and defaults.

mod ack;
mod builder;
mod claim;
mod dispatch;
mod doorbell;
mod group;
mod handler;
mod layer;
mod partitioned_later;
mod partitions;
mod process;
mod reader;
mod retry;
mod route;
mod stats;
mod topic;
mod upkeep;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::FutureExt;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tributary_core::{Connection, Topic, TopicPattern};

pub use builder::{ExpiredPolicy, WorkerBuilder};
pub use handler::{handler_fn, raw_handler_fn, Context, FnHandler, Handler, HandlerError, RawFnHandler};
pub use layer::{layer_fn, FnLayer, Layer, Next};
pub use retry::RetryPolicy;
pub use route::{Route, RouteOptions};
pub use stats::WorkerStats;

use crate::metrics::ConsumerMetrics;
pub(crate) use ack::DEAD_LETTER_FIELDS;
use stats::Stats;
use topic::{Shared, TopicConsumer};

/// A member of one consumer group, consuming one or more topics.
///
/// Every message is acknowledged only after its handler returned `Ok`; failures are retried
/// with backoff and, after `max_deliveries`, moved to the topic's dead-letter stream.
///
/// # Example
/// ```no_run
/// # async fn demo(conn: tributary_core::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// use tributary_streams::{Context, HandlerError, Worker};
///
/// #[derive(serde::Deserialize)]
/// struct OrderPlaced { id: u64 }
///
/// let worker = Worker::builder(conn, "billing")
///     .on("orders", |order: OrderPlaced, _ctx: Context| async move {
///         // charge the order ...
///         Ok::<_, HandlerError>(())
///     })
///     .build()?
///     .start();
/// // ... later
/// worker.shutdown().await;
/// # Ok(()) }
/// ```
#[must_use = "a worker consumes nothing until `.start()` is called"]
pub struct Worker {
    pub(crate) conn: Connection,
    pub(crate) group: String,
    pub(crate) config: Arc<builder::ConsumerConfig>,
    pub(crate) routes: Vec<(Topic, Arc<dyn Handler>, RouteOptions)>,
    pub(crate) patterns: Vec<(TopicPattern, Arc<dyn Handler>, RouteOptions)>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("group", &self.group)
            .field("consumer", &self.config.consumer_name)
            .field("topics", &self.routes.iter().map(|r| r.0.as_str()).collect::<Vec<_>>())
            .field("patterns", &self.patterns.iter().map(|r| r.0.as_str()).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Configures a worker in consumer group `group` (one group per service: every service
    /// sees every message, instances of one service share them).
    pub fn builder(conn: Connection, group: impl Into<String>) -> WorkerBuilder {
        WorkerBuilder::new(conn, group.into())
    }

    /// This worker's consumer name in its group (see [`WorkerBuilder::consumer_name`]).
    pub fn consumer_name(&self) -> &str {
        &self.config.consumer_name
    }

    /// Starts consuming in the background.
    ///
    /// Dropping the handle stops everything at once, like a crash: what is unacknowledged
    /// stays pending, to be recovered at the next start or reclaimed by other consumers. Call
    /// [`WorkerHandle::shutdown`] for a graceful stop.
    pub fn start(self) -> WorkerHandle {
        let stop = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        let stats = Arc::new(Stats::default());
        let stopped_at = Arc::new(OnceLock::new());
        let (prepared, ready) = tokio::sync::watch::channel(0usize);
        let (upkeep_link, upkeep) = upkeep::Upkeep::new();
        let shared = Shared {
            unpartitioned: Default::default(),
            prepared: Arc::new(prepared),
            conn: self.conn.clone(),
            group: self.group.clone(),
            config: self.config.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            stopped_at: stopped_at.clone(),
            hard_stop: hard_stop.clone(),
            budget: Arc::new(topic::Budget::new(self.config.limit)),
            topics_running: Arc::default(),
            starting: Arc::new(tokio::sync::Semaphore::new(topic::STARTING_AT_ONCE)),
            upkeep: upkeep_link,
            readers: reader::Readers::new(
                self.conn.clone(),
                &self.group,
                &self.config.consumer_name,
                self.config.block_for,
                stop.clone(),
            ),
        };
        let consumer = self.config.consumer_name.clone();
        let shutdown_bound = self.config.shutdown_timeout + SHUTDOWN_GRACE;
        let topics = self.routes.len();
        let task = tokio::spawn(self.run(shared, upkeep));
        WorkerHandle { stop, stopped_at, hard_stop, stats, consumer, shutdown_bound, ready, topics, task: Some(task) }
    }

    /// Runs until `shutdown` completes, then stops gracefully.
    ///
    /// ```no_run
    /// # async fn demo(worker: tributary_streams::Worker) {
    /// worker.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await;
    /// # }
    /// ```
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let handle = self.start();
        shutdown.await;
        handle.shutdown().await;
    }

    async fn run(self, shared: Shared, upkeep: upkeep::Upkeep) {
        let shared = Arc::new(shared);
        // Topics partitioned while this worker runs (`partitioned_later.rs`): the mark is read
        // once before any topic reads its count, then every `pattern_refresh`.
        let seen = partitioned_later::read_mark(&shared).await;
        let watcher =
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(partitioned_later::run(shared.clone(), seen)));
        // One scheduled-message mover per worker, whatever its number of topics: it waits on
        // the namespace's due index (see `schedule.rs`).
        let mover = shared.config.schedule_poll.map(|poll| {
            let (conn, stop) = (self.conn.clone(), shared.stop.clone());
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(crate::schedule::move_due_until_stopped(
                conn, poll, stop,
            )))
        });
        // One task for the sweeps and lease renewals of all the worker's topics (`upkeep.rs`),
        // until every topic is done.
        let upkeep = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(upkeep.run()));
        let mut loops = JoinSet::new();
        let mut running: HashSet<Topic> = HashSet::new();
        for (topic, handler, options) in &self.routes {
            running.insert(topic.clone());
            let metrics = Arc::new(ConsumerMetrics::new(topic.as_str(), &shared.group));
            let route = Arc::new(Consuming { handler: handler.clone(), options: options.clone(), metrics });
            loops.spawn(consume_topic_guarded(shared.clone(), topic.clone(), route, true));
        }
        if !self.patterns.is_empty() {
            // Every topic a pattern matches records under the pattern: labels stay bounded
            // however many topics match. One `Consuming` for all of them.
            let pattern_routes: Vec<Arc<Consuming>> = self
                .patterns
                .iter()
                .map(|(p, handler, options)| {
                    let metrics = Arc::new(ConsumerMetrics::new(p.as_str(), &shared.group));
                    Arc::new(Consuming { handler: handler.clone(), options: options.clone(), metrics })
                })
                .collect();
            let mut discovery = crate::registry::Discovery::new(self.conn.clone());
            let patterns: Vec<TopicPattern> = self.patterns.iter().map(|(p, _, _)| p.clone()).collect();
            loop {
                match discovery.new_topics(&patterns).await {
                    Ok(topics) => {
                        for topic in topics {
                            // The first pattern that matches the topic handles it.
                            let Some(((pattern, _, _), route)) = self
                                .patterns
                                .iter()
                                .zip(&pattern_routes)
                                .find(|((p, _, _), _)| p.matches(&topic) && p.permits(&topic))
                            else {
                                continue;
                            };
                            if running.insert(topic.clone()) {
                                tracing::info!(pattern = %pattern, topic = %topic, "pattern matched a new topic");
                                loops.spawn(consume_topic_guarded(shared.clone(), topic, route.clone(), false));
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "topic discovery failed; trying again"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.config.pattern_refresh) => {}
                    _ = shared.stop.cancelled() => break,
                }
            }
        }
        while loops.join_next().await.is_some() {}
        // It stops with the worker, after the partitioned topics it started.
        let _ = watcher.await;
        drop(upkeep);
        if let Some(mover) = mover {
            // It stops after the pass under way (bounded: a lease it leaves runs out anyway).
            let _ = tokio::time::timeout(Duration::from_secs(5), mover).await;
        }
    }
}

/// `consume_topic`, a panic of which is said (`said_on_panic`).
fn consume_topic_guarded(
    shared: Arc<Shared>,
    topic: Topic,
    route: Arc<Consuming>,
    named: bool,
) -> impl Future<Output = ()> {
    let consume = consume_topic(shared.clone(), topic.clone(), route, named);
    said_on_panic(shared, topic, consume)
}

/// `consume`, saying at `error` when it panics (a bug): one topic's loop must not end in
/// silence while the worker looks healthy. It is not started again (its state is unknown);
/// what it started was abandoned (`topic::Unfinished`): its pending entries go to the group's
/// other consumers after `claim_idle`, a partition to another member once its lease runs out.
///
/// A plain function around a combinator, not an `async fn` taking the future: that would hold
/// the future twice (rust-lang/rust#62958), and a worker keeps one per topic.
pub(crate) fn said_on_panic(
    shared: Arc<Shared>,
    topic: Topic,
    consume: impl Future<Output = ()>,
) -> impl Future<Output = ()> {
    std::panic::AssertUnwindSafe(consume).catch_unwind().map(move |result| {
        if let Err(panic) = result {
            tracing::error!(topic = %topic, group = %shared.group, panic = %panic_message(panic.as_ref()),
                "consuming the topic panicked (a bug in tributary: please report it); this worker no longer \
                 consumes it until it is restarted");
        }
    })
}

/// The text of a panic's payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// Consumes `topic` until the worker stops: each of its partitions in turn with the group's
/// other members (`partitions.rs`) when it is partitioned, else its one stream. `named`: see
/// `TopicConsumer::run`.
async fn consume_topic(shared: Arc<Shared>, topic: Topic, route: Arc<Consuming>, named: bool) {
    // Watched from before the look below: a partitioning after it is seen.
    shared.unpartitioned.watch(topic.clone(), route.clone());
    // Boxed: its state would otherwise stay in this future, which every topic keeps for as long
    // as it runs (a worker may have tens of thousands of topics).
    let Some(partitions) = Box::pin(partition_count(&shared, &topic)).await else {
        shared.unpartitioned.forget(&topic);
        return;
    };
    match partitions {
        Some(partitions) => {
            if shared.unpartitioned.forget(&topic).is_none() {
                // The watcher saw it partitioned first (its look came before this one's answer)
                // and consumes its partitions already: the own stream is left to this.
                TopicConsumer::new(&shared, topic, route.handler.clone(), &route.options, route.metrics.clone(), None)
                    .run(named)
                    .await;
                return;
            }
            // Boxed: inline, its state would make every topic's future, of a worker with
            // thousands of topics of one stream, kilobytes larger.
            Box::pin(partitions::PartitionedTopic::new(shared, topic, partitions, route, true).run(named)).await;
        }
        None => {
            // Partitioned later: `partitioned_later.rs` starts its partitions beside this (it
            // keeps the topic in its map until the worker stops).
            TopicConsumer::new(&shared, topic, route.handler.clone(), &route.options, route.metrics.clone(), None)
                .run(named)
                .await;
        }
    }
}

/// `topic`'s partition count (`Some(None)` for a topic of one stream), read again until it can
/// be; `None` once the worker stops. The look takes a start turn, as a topic's start does
/// (`TopicConsumer::start_turn`): 10,000 topics' commands in flight at once left the worker
/// 40 MiB larger for good.
async fn partition_count(shared: &Shared, topic: &Topic) -> Option<Option<u32>> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let since = Instant::now();
        let acquire = shared.starting.clone().acquire_owned();
        tokio::pin!(acquire);
        let turn = loop {
            tokio::select! {
                turn = &mut acquire => break turn.ok()?,
                _ = shared.stop.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_secs(10)) => {
                    tracing::warn!(topic = %topic, group = %shared.group, waiting_for = ?since.elapsed(),
                        "waiting for other topics of the worker to start before looking whether this one is partitioned");
                }
            }
        };
        // Boxed once the turn is taken: every topic waits for its turn in this future at a
        // worker's start, and the command's future (6 KB) in each made them 60 MiB together.
        let stored = Box::pin(crate::partitions::stored(&shared.conn, topic)).await;
        drop(turn);
        match stored {
            Ok(partitions) => return Some(partitions),
            Err(e) => {
                tracing::error!(topic = %topic, error = %e, retry_in = ?backoff,
                    "cannot tell whether the topic is partitioned; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shared.stop.cancelled() => return None,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// What consuming a topic takes: its handler, options and metrics. One for each topic named
/// and one for all the topics of a pattern, shared (a worker may have tens of thousands).
pub(crate) struct Consuming {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) options: RouteOptions,
    pub(crate) metrics: Arc<ConsumerMetrics>,
}

/// How long a graceful stop may take beyond `shutdown_timeout`: the final acknowledgements,
/// handing back unstarted entries and leaving the group, each bounded on its own.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// A running [`Worker`]. Dropping it stops the worker at once (crash-like).
#[derive(Debug)]
pub struct WorkerHandle {
    stop: CancellationToken,
    stopped_at: Arc<OnceLock<Instant>>,
    hard_stop: CancellationToken,
    stats: Arc<Stats>,
    consumer: String,
    shutdown_bound: Duration,
    /// How many topics are consuming (group created, own pending entries recovered).
    ready: tokio::sync::watch::Receiver<usize>,
    /// Topics registered by name (those of patterns are found later).
    topics: usize,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl WorkerHandle {
    /// Graceful stop, as for a deploy:
    /// - no new reads, and no entry that has not started yet is started: those are handed back
    ///   (left pending, marked idle) for another instance or the next start;
    /// - running handlers finish, up to `shutdown_timeout`, keeping their leases meanwhile so
    ///   no other instance takes them over, and are acknowledged;
    /// - entries waiting to retry stay pending;
    /// - the consumer leaves its group if it holds nothing.
    ///
    /// Returns within `shutdown_timeout` plus a few seconds whatever Redis does: if Redis is
    /// unreachable, what could not be acknowledged stays pending and is delivered again.
    pub async fn shutdown(mut self) {
        let _ = self.stopped_at.set(Instant::now());
        self.stop.cancel();
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(self.shutdown_bound, &mut task).await.is_err() {
                tracing::warn!(consumer = %self.consumer, bound = ?self.shutdown_bound,
                    "graceful stop did not finish in time; stopping at once (unacknowledged entries stay pending)");
                self.hard_stop.cancel();
                task.abort();
            }
        }
    }

    /// Waits until every topic registered by name is being consumed: its group exists and
    /// this consumer's own pending entries were taken back. (Topics of patterns are found
    /// later, every `pattern_refresh`.) Waits for ever if Redis is unreachable: bound it with
    /// `tokio::time::timeout`. Returns at once when the worker stopped.
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        let topics = self.topics;
        let _ = ready.wait_for(|n| *n >= topics).await;
    }

    /// This worker's consumer name in its group.
    pub fn consumer_name(&self) -> &str {
        &self.consumer
    }

    /// Counters since the worker started.
    pub fn stats(&self) -> WorkerStats {
        self.stats.snapshot()
    }

    /// Waits until `n` entries have been settled since the worker started (see
    /// [`WorkerStats::settled`]: handled and acknowledged, dead-lettered, or skipped), and
    /// returns the counters then. With [`WorkerBuilder::limit`]`(n)`, this waits for the whole
    /// run. It waits as long as it takes: bound it with `tokio::time::timeout` when fewer may
    /// ever come.
    ///
    /// ```no_run
    /// # async fn demo(worker: tributary_streams::WorkerHandle) {
    /// let stats = worker.settled(100).await;
    /// println!("{} handled, {} dead-lettered", stats.acked, stats.dead_lettered);
    /// worker.shutdown().await;
    /// # }
    /// ```
    pub async fn settled(&self, n: u64) -> WorkerStats {
        self.stats.settled(n).await
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            self.hard_stop.cancel();
            self.stop.cancel();
            task.abort();
        }
    }
}
