//! Worker configuration, with every default written where it is set.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tributary_core::{Connection, Topic, TopicPattern};

use super::handler::{handler_fn, Context, Handler, HandlerError};
use super::layer::{Layer, Layered};
use super::retry::RetryPolicy;
use super::route::{Route, RouteOptions};
use super::Worker;
use crate::error::BuildError;
use crate::position::Position;

/// Settings shared by every topic a worker consumes.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerConfig {
    pub(crate) consumer_name: String,
    pub(crate) batch_size: usize,
    pub(crate) block_for: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) concurrency: usize,
    pub(crate) prefetch: usize,
    pub(crate) handler_timeout: Option<Duration>,
    pub(crate) trace_links: bool,
    pub(crate) max_deliveries: u64,
    pub(crate) retry: RetryPolicy,
    pub(crate) claim_idle: Duration,
    pub(crate) claim_interval: Option<Duration>,
    pub(crate) start: Position,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) consumer_idle_timeout: Option<Duration>,
    pub(crate) pattern_refresh: Duration,
    pub(crate) dead_letter_max_len: u64,
    pub(crate) expired: ExpiredPolicy,
    pub(crate) schedule_poll: Option<Duration>,
    pub(crate) limit: Option<u64>,
    pub(crate) partition_lease: Duration,
}

/// What a worker does with a message whose expiry passed before it was handled. Either way
/// the handler does not run, the entry is acknowledged and the worker's `expired` counter
/// counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ExpiredPolicy {
    /// Keep it in the dead-letter stream with reason `expired` (the default).
    #[default]
    DeadLetter,
    /// Drop it.
    Drop,
}

impl ConsumerConfig {
    pub(crate) fn claim_interval(&self) -> Duration {
        self.claim_interval.unwrap_or(self.claim_idle / 2).max(Duration::from_millis(50))
    }

    pub(crate) fn lease_interval(&self) -> Duration {
        (self.claim_idle / 3).max(Duration::from_millis(20))
    }
}

fn check_options(options: &RouteOptions) -> Result<(), BuildError> {
    if options.concurrency == Some(0) {
        return Err(BuildError::OutOfRange { setting: "concurrency", requirement: "greater than zero" });
    }
    if options.timeout.is_some_and(|d| d.is_zero()) {
        return Err(BuildError::OutOfRange { setting: "timeout", requirement: "greater than zero" });
    }
    if options.max_deliveries == Some(0) {
        return Err(BuildError::OutOfRange { setting: "max_deliveries", requirement: "greater than zero" });
    }
    Ok(())
}

/// The default consumer name: `TRIBUTARY_CONSUMER_NAME` if set (a stable name, chosen by the
/// operator), else `<host>-<pid>-<random>`: unique to this worker, so two processes on one host
/// (or two workers of one group in a process) never take each other's entries for their own.
/// The trade-off is in `docs/delivery.md` ("Consumer names").
fn default_consumer_name() -> String {
    if let Some(name) = std::env::var("TRIBUTARY_CONSUMER_NAME").ok().map(|s| s.trim().to_owned()) {
        if !name.is_empty() {
            return name;
        }
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "tributary".to_owned());
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

/// Configures a [`Worker`]. Created by [`Worker::builder`].
#[must_use = "builders do nothing until `.build()` is called"]
pub struct WorkerBuilder {
    conn: Connection,
    group: String,
    config: ConsumerConfig,
    routes: Vec<(String, Arc<dyn Handler>, RouteOptions)>,
    patterns: Vec<(String, Arc<dyn Handler>, RouteOptions)>,
    layers: Vec<Arc<dyn Layer>>,
    group_mismatch: Option<String>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("group", &self.group)
            .field("config", &self.config)
            .field("topics", &self.routes.iter().map(|r| &r.0).collect::<Vec<_>>())
            .field("patterns", &self.patterns.iter().map(|r| &r.0).collect::<Vec<_>>())
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl WorkerBuilder {
    pub(crate) fn new(conn: Connection, group: String) -> Self {
        Self {
            conn,
            group,
            config: ConsumerConfig {
                consumer_name: default_consumer_name(),
                batch_size: 64,
                block_for: Duration::from_secs(2),
                max_in_flight: 256,
                concurrency: 32,
                prefetch: 32,
                handler_timeout: None,
                trace_links: false,
                max_deliveries: 5,
                retry: RetryPolicy::default(),
                claim_idle: Duration::from_secs(30),
                claim_interval: None,
                start: Position::Beginning,
                shutdown_timeout: Duration::from_secs(30),
                consumer_idle_timeout: Some(Duration::from_secs(24 * 3600)),
                pattern_refresh: Duration::from_secs(5),
                dead_letter_max_len: 100_000,
                expired: ExpiredPolicy::DeadLetter,
                schedule_poll: Some(Duration::from_millis(100)),
                limit: None,
                partition_lease: Duration::from_secs(10),
            },
            routes: Vec::new(),
            patterns: Vec::new(),
            layers: Vec::new(),
            group_mismatch: None,
        }
    }

    /// Registers `handler` for `topic`.
    pub fn handler(self, topic: impl Into<String>, handler: impl Handler) -> Self {
        self.handler_with(topic, handler, RouteOptions::default())
    }

    /// Registers `handler` for `topic` with settings of its own.
    pub fn handler_with(mut self, topic: impl Into<String>, handler: impl Handler, options: RouteOptions) -> Self {
        self.routes.push((topic.into(), Arc::new(handler), options));
        self
    }

    /// Registers a [`Route`]: a handler that knows its topic, such as a function annotated
    /// with `#[tributary::handler(topic = "...")]`.
    pub fn register(mut self, route: impl Route) -> Self {
        if let Some(group) = route.group() {
            if group != self.group {
                self.group_mismatch = Some(format!("{} (handler for group `{group}`)", route.topic()));
            }
        }
        self.routes.push((route.topic().to_owned(), route.handler(), route.options()));
        self
    }

    /// Registers an async function of the decoded message for `topic`.
    ///
    /// ```no_run
    /// # async fn demo(conn: tributary_core::Connection) -> Result<(), Box<dyn std::error::Error>> {
    /// use tributary_streams::{Context, HandlerError, Worker};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct OrderPlaced { id: u64 }
    ///
    /// let worker = Worker::builder(conn, "billing")
    ///     .on("orders", |order: OrderPlaced, ctx: Context| async move {
    ///         println!("order {} (attempt {})", order.id, ctx.attempt());
    ///         Ok::<_, HandlerError>(())
    ///     })
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn on<T, F, Fut>(self, topic: impl Into<String>, f: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(T, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handler(topic, handler_fn(f))
    }

    /// Registers `handler` for every topic matching the glob `pattern` (`orders.*`), including
    /// topics created after the worker started: found within `pattern_refresh` when a
    /// Tributary producer created them (it registers them), within 10 minutes otherwise.
    pub fn handler_pattern(mut self, pattern: impl Into<String>, handler: impl Handler) -> Self {
        self.patterns.push((pattern.into(), Arc::new(handler), RouteOptions::default()));
        self
    }

    /// Runs `layer` around every handler of this worker (see [`Layer`]). Layers run in the
    /// order they were added: the first added sees each message first, and its result last.
    ///
    /// ```no_run
    /// # async fn demo(conn: tributary_core::Connection) -> Result<(), Box<dyn std::error::Error>> {
    /// use tributary_streams::consumer::layer_fn;
    /// use tributary_streams::{Context, HandlerError, Worker};
    ///
    /// let worker = Worker::builder(conn, "billing")
    ///     .layer(layer_fn(|ctx: Context, next| async move {
    ///         let started = std::time::Instant::now();
    ///         let result = next.run(ctx.clone()).await;
    ///         tracing::info!(topic = ctx.topic(), took = ?started.elapsed(), ok = result.is_ok(), "handled");
    ///         result
    ///     }))
    ///     .on("orders", |_order: serde_json::Value, _ctx: Context| async { Ok::<_, HandlerError>(()) })
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn layer(mut self, layer: impl Layer) -> Self {
        self.layers.push(Arc::new(layer));
        self
    }

    /// Registers an async function of the decoded message for every topic matching `pattern`.
    pub fn on_pattern<T, F, Fut>(self, pattern: impl Into<String>, f: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(T, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handler_pattern(pattern, handler_fn(f))
    }

    /// Name of this instance inside the group. Defaults to `TRIBUTARY_CONSUMER_NAME`, else
    /// `<host>-<pid>-<random>`, unique to this worker. Set a name that is stable across
    /// restarts (and distinct between live instances) to have a restarted instance re-read the
    /// entries its name still holds at once, instead of others taking them over after
    /// `claim_idle`.
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.config.consumer_name = name.into();
        self
    }

    /// Most entries asked for per read (`COUNT`); never more than the free in-flight slots.
    /// Defaults to 64.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.config.batch_size = n;
        self
    }

    /// How long one read waits for new entries (`BLOCK`). Defaults to 2 s. A worker's read of
    /// many topics waits longer when idle, 1 ms per topic up to 10 s (each read costs every
    /// topic it names; it is woken when a topic joins, leaves or stops):
    /// `docs/delivery.md`, "Many topics".
    pub fn block_for(mut self, d: Duration) -> Self {
        self.config.block_for = d;
        self
    }

    /// Most entries each topic of this worker holds unacknowledged at once (waiting, running,
    /// waiting to retry, being acknowledged). Memory stays flat however long the backlog.
    /// Each topic has its own, so a saturated topic never holds up another. Defaults to 256.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config.max_in_flight = n;
        self
    }

    /// Most handlers running at once, per topic (`RouteOptions::concurrency` overrides it for
    /// one topic). `1` gives strict order per topic. Messages with the same key always run one
    /// at a time, in order. Defaults to 32.
    ///
    /// Handlers run as futures on the worker's tasks: those of one read batch share a task
    /// (see `docs/delivery.md`, "Handlers and threads"), so a handler that computes for long
    /// without awaiting holds up its batch. Put such work in `tokio::task::spawn_blocking`.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n;
        self
    }

    /// Most entries a topic reads ahead of its handlers: read but not yet started, beyond those
    /// `concurrency` can run. Entries waiting here are not someone else's to take, so keep it
    /// small: a wedged instance then holds only its running handlers and this many. When no
    /// handler of the topic returned for `claim_idle`, an entry that waited that long is no
    /// longer renewed (a live instance may take it), and it is checked to be still this
    /// consumer's before it starts. Keep `concurrency + prefetch`
    /// at or above `batch_size`, or reads come back smaller than a batch. Defaults to 32.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.config.prefetch = n;
        self
    }

    /// Longest a handler may run. Past it the handler's future is dropped (cancelled at its
    /// next `.await`) and the attempt counts as a retryable failure ("handler timed out"), so a
    /// handler stuck on a dead dependency does not hold its slot for ever.
    /// `RouteOptions::timeout` overrides it for one topic. Defaults to none.
    pub fn handler_timeout(mut self, d: Duration) -> Self {
        self.config.handler_timeout = Some(d);
        self
    }

    /// How a handler's `process` span relates to the span that published its message (with the
    /// `opentelemetry` feature and a `tracing-opentelemetry` layer): by default it is that
    /// span's child, in the producer's trace; with `true` it starts a trace of its own with a
    /// link to it (for consumers whose work should not lengthen the producer's trace, such as
    /// batch jobs reading hours later). Handlers' own publishes continue the `process` span's
    /// trace either way.
    pub fn trace_links(mut self, on: bool) -> Self {
        self.config.trace_links = on;
        self
    }

    /// Deliveries before a failing message goes to the dead-letter stream. Defaults to 5.
    pub fn max_deliveries(mut self, n: u64) -> Self {
        self.config.max_deliveries = n;
        self
    }

    /// Backoff between deliveries of a failing message. Defaults to
    /// [`RetryPolicy::default`] (200 ms doubling up to 30 s, with jitter).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.config.retry = policy;
        self
    }

    /// Entries another consumer has held longer than this are taken over (the holder is
    /// presumed dead; a live holder renews its entries every third of this). Defaults to 30 s.
    pub fn claim_idle(mut self, d: Duration) -> Self {
        self.config.claim_idle = d;
        self
    }

    /// Of partitioned topics (`docs/partitions.md`): how long this worker's hold on a partition
    /// (its lease) lasts unless renewed, and its membership among the group's members. It is
    /// renewed every third of this; a partition of a worker that died moves to a live one
    /// within this plus a third. Shorter moves partitions sooner after a crash, but a worker
    /// cut off from Redis (or paused) for longer loses its partitions. Defaults to 10 s; at
    /// least 300 ms.
    pub fn partition_lease(mut self, d: Duration) -> Self {
        self.config.partition_lease = d;
        self
    }

    /// How often to look for entries to take over. Defaults to half of `claim_idle`.
    pub fn claim_interval(mut self, d: Duration) -> Self {
        self.config.claim_interval = Some(d);
        self
    }

    /// Where a group that does not exist yet starts. Defaults to [`Position::Beginning`]:
    /// everything the stream retains, so nothing published before the first start is missed.
    pub fn start_from(mut self, start: Position) -> Self {
        self.config.start = start;
        self
    }

    /// How long a graceful shutdown waits for running handlers. Defaults to 30 s.
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.config.shutdown_timeout = d;
        self
    }

    /// Remove other consumers of the group that hold nothing and were idle this long; `None`
    /// keeps them. Defaults to 24 h.
    pub fn consumer_idle_timeout(mut self, d: Option<Duration>) -> Self {
        self.config.consumer_idle_timeout = d;
        self
    }

    /// How often topic patterns look for new topics in the namespace's registry of topics (one
    /// script call that returns only topics registered since the last look; producers register
    /// the topics they publish to). Topics the registry misses are found by a scan of the
    /// keyspace when the worker starts and every 10 minutes. Defaults to 5 s. As often, a worker reads the
    /// namespace's count of topics partitioned, to find whether a topic of one stream it
    /// consumes was partitioned since (`docs/partitions.md`).
    pub fn pattern_refresh(mut self, d: Duration) -> Self {
        self.config.pattern_refresh = d;
        self
    }

    /// Approximate cap on each dead-letter stream (`MAXLEN ~`); 0 for none. Defaults to 100,000.
    pub fn dead_letter_max_len(mut self, n: u64) -> Self {
        self.config.dead_letter_max_len = n;
        self
    }

    /// What to do with expired messages. Defaults to [`ExpiredPolicy::DeadLetter`].
    pub fn expired_messages(mut self, policy: ExpiredPolicy) -> Self {
        self.config.expired = policy;
        self
    }

    /// How often the worker's mover looks at the namespace's due index for scheduled messages
    /// to move to their streams (at the latest; it wakes earlier for a message due sooner).
    /// One mover per worker, for every topic of the namespace. `None` leaves that to other
    /// workers or [`Scheduler::run_due`](crate::Scheduler::run_due). Defaults to 100 ms.
    pub fn schedule_poll(mut self, poll: Option<Duration>) -> Self {
        self.config.schedule_poll = poll;
        self
    }

    /// Take at most `n` entries in all (new, recovered or reclaimed), then read nothing more;
    /// for tools that handle a fixed number of messages. Defaults to no limit.
    pub fn limit(mut self, n: u64) -> Self {
        self.config.limit = Some(n);
        self
    }

    /// Validates the configuration. No I/O: groups are created when the worker starts.
    ///
    /// # Errors
    /// [`BuildError`] for a bad name, a duplicate route, no handlers, or a zero setting.
    pub fn build(self) -> Result<Worker, BuildError> {
        let c = &self.config;
        let positive = |setting, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(BuildError::OutOfRange { setting, requirement: "greater than zero" })
            }
        };
        positive("batch_size", c.batch_size > 0)?;
        positive("max_in_flight", c.max_in_flight > 0)?;
        positive("concurrency", c.concurrency > 0)?;
        positive("max_deliveries", c.max_deliveries > 0)?;
        positive("block_for", c.block_for >= Duration::from_millis(1))?;
        positive("claim_idle", c.claim_idle >= Duration::from_millis(1))?;
        if c.partition_lease < Duration::from_millis(300) {
            return Err(BuildError::OutOfRange { setting: "partition_lease", requirement: "at least 300 ms" });
        }
        positive("handler_timeout", !matches!(c.handler_timeout, Some(d) if d.is_zero()))?;
        if c.consumer_name.is_empty() || c.consumer_name.len() > 200 {
            return Err(BuildError::OutOfRange { setting: "consumer_name", requirement: "1 to 200 bytes" });
        }
        if self.group.is_empty() || self.group.len() > 200 {
            return Err(BuildError::OutOfRange { setting: "group", requirement: "1 to 200 bytes" });
        }
        if self.routes.is_empty() && self.patterns.is_empty() {
            return Err(BuildError::NoHandlers);
        }
        if let Some(route) = self.group_mismatch {
            return Err(BuildError::GroupMismatch { route, group: self.group });
        }
        let mut routes = Vec::new();
        for (name, handler, options) in self.routes {
            let topic = Topic::new(name)?;
            if routes.iter().any(|(t, _, _)| *t == topic) {
                return Err(BuildError::DuplicateRoute(topic.to_string()));
            }
            check_options(&options)?;
            routes.push((topic, Layered::wrap(handler, &self.layers), options));
        }
        let mut patterns = Vec::new();
        for (name, handler, options) in self.patterns {
            let pattern = TopicPattern::new(name)?;
            if patterns.iter().any(|(p, _, _)| *p == pattern) {
                return Err(BuildError::DuplicateRoute(pattern.to_string()));
            }
            patterns.push((pattern, Layered::wrap(handler, &self.layers), options));
        }
        Ok(Worker { conn: self.conn, group: self.group, config: Arc::new(self.config), routes, patterns })
    }
}
