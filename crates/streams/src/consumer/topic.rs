//! The consumer loop of one topic: create the group, recover this consumer's own pending
//! entries, then read new entries with a blocking `XREADGROUP` on a dedicated connection and
//! hand them to handlers (`dispatch.rs`), never holding more than `max_in_flight`
//! unacknowledged nor reading more than `prefetch` ahead of the handlers.
//! After a connection reconnects, own pending entries are recovered again: a read (or claim)
//! cut off mid-reply leaves entries Redis counts as delivered here. A group found missing is
//! created again (`group.rs`).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use fred::types::config::Server;
use fred::types::Value;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tributary_core::id::IdHasher;
use tributary_core::{Connection, EntryId, Topic};

use super::ack::{AckQueue, DeadLetterReason};
use super::builder::ConsumerConfig;
use super::dispatch::{Job, JobBody, Lane, Taken};
use super::handler::{Handler, Origin};
use super::partitions::{Fence, PartitionRole};
use super::reader::{Outcome, ReaderLink};
use super::route::RouteOptions;
use super::stats::Stats;
use super::upkeep::UpkeepLink;
use crate::metrics::ConsumerMetrics;
use crate::scripts::{DELETE_CONSUMER_IF_EMPTY, RELEASE_OWNED};

/// Bounds on a graceful stop's own steps, for when Redis is unreachable: ending the blocked
/// read takes at most this; flushing acks, handing back unstarted entries and leaving the group
/// take at most twice this together. (`WorkerHandle::shutdown` allows 3 s beyond
/// `shutdown_timeout`.)
pub(crate) const STOP_STEP: Duration = Duration::from_millis(750);

/// How many topics of a worker start at once (see `TopicConsumer::start_turn`).
pub(crate) const STARTING_AT_ONCE: usize = 64;

/// Resources one worker shares between its topics.
pub(crate) struct Shared {
    pub(crate) conn: Connection,
    pub(crate) group: String,
    pub(crate) config: Arc<ConsumerConfig>,
    pub(crate) stats: Arc<Stats>,
    /// Graceful stop: no new reads, start nothing new, finish what runs.
    pub(crate) stop: CancellationToken,
    /// When the graceful stop was asked for: `shutdown_timeout` counts from there.
    pub(crate) stopped_at: Arc<OnceLock<Instant>>,
    /// Immediate stop: drop everything (crash-like; what is unacked stays pending).
    pub(crate) hard_stop: CancellationToken,
    /// Entries this worker may still take (`WorkerBuilder::limit`), across its topics.
    pub(crate) budget: Arc<Budget>,
    /// Topics of the worker that may start at once (`TopicConsumer::start_turn`).
    pub(crate) starting: Arc<Semaphore>,
    /// Topics consuming now (their sweeps share a rate: `claim.rs`).
    pub(crate) topics_running: Arc<std::sync::atomic::AtomicUsize>,
    /// Runs the topics' sweeps and lease renewals (`upkeep.rs`).
    pub(crate) upkeep: UpkeepLink,
    /// The blocking reads of all its topics (`reader.rs`).
    pub(crate) readers: super::reader::Readers,
    /// Topics consuming (group created, own entries recovered): `WorkerHandle::ready`.
    pub(crate) prepared: Arc<tokio::sync::watch::Sender<usize>>,
    /// The worker's topics of one stream, looked at again when a topic is partitioned
    /// (`partitioned_later.rs`).
    pub(crate) unpartitioned: super::partitioned_later::Watched,
}

/// How many more entries a worker may take; unlimited unless `WorkerBuilder::limit` was set.
#[derive(Debug)]
pub(crate) struct Budget(std::sync::atomic::AtomicU64);

impl Budget {
    pub(crate) fn new(limit: Option<u64>) -> Self {
        Self(std::sync::atomic::AtomicU64::new(limit.unwrap_or(u64::MAX)))
    }

    /// Takes up to `want` from the budget; returns how many were granted.
    pub(crate) fn take(&self, want: usize) -> usize {
        use std::sync::atomic::Ordering;
        let mut granted = 0;
        let _ = self.0.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            granted = left.min(want as u64);
            Some(left - granted)
        });
        granted as usize
    }

    /// Returns what was granted but not used.
    pub(crate) fn give_back(&self, n: usize) {
        self.0.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Room for some entries, taken together by [`TopicConsumer::take_slots`]: an in-flight slot
/// each (until acknowledged) and a read-ahead slot each (until its handler first returns).
/// One permit per kind, split off per entry, so unused slots go back under one lock.
pub(crate) struct Slots {
    in_flight: OwnedSemaphorePermit,
    admit: OwnedSemaphorePermit,
}

impl Slots {
    pub(crate) fn len(&self) -> usize {
        self.in_flight.num_permits()
    }

    /// The slots of one entry.
    pub(crate) fn take_one(&mut self) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        Some((self.in_flight.split(1)?, self.admit.split(1)?))
    }
}

/// What this consumer knows of an entry it holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    /// When it was read or claimed.
    pub(crate) since: Instant,
    /// It waits to start: queued behind its key, or for a handler slot. (Entries that start
    /// at once, the common case, are never marked: no lock per message for it.)
    pub(crate) waiting: bool,
    /// Another consumer took it over; no longer renewed, and not started here.
    pub(crate) lost: bool,
}

/// One topic's consumer. Shared (`Arc`) by its read loop, its handler tasks and its helpers.
pub(crate) struct TopicConsumer {
    pub(crate) conn: Connection,
    pub(crate) topic: Topic,
    pub(crate) key: String,
    pub(crate) group: String,
    pub(crate) config: Arc<ConsumerConfig>,
    pub(crate) stats: Arc<Stats>,
    /// This route's metrics handles (a pattern's are shared by the topics it matched).
    pub(crate) metrics: Arc<ConsumerMetrics>,
    /// The running handlers this topic last counted in `tributary.handlers.in_flight`.
    running_reported: std::sync::atomic::AtomicI64,
    pub(crate) handler: Arc<dyn Handler>,
    /// Topic, group and consumer name, shared by every message's `Context`.
    pub(crate) origin: Arc<Origin>,
    /// This topic's place in the worker's shared reads (`reader.rs`).
    reader: ReaderLink,
    /// One permit per unacknowledged entry (`max_in_flight`, this topic's own).
    pub(crate) in_flight: Arc<Semaphore>,
    /// One permit per entry read whose handler has not yet returned once
    /// (`concurrency + prefetch`): bounds what waits unstarted.
    pub(crate) admit: Arc<Semaphore>,
    /// One permit per running handler (`concurrency`, this topic's own).
    pub(crate) running: Arc<Semaphore>,
    pub(crate) stop: CancellationToken,
    stopped_at: Arc<OnceLock<Instant>>,
    /// The worker's immediate stop (its handle dropped).
    pub(crate) hard_stop: CancellationToken,
    /// This topic's handler tasks end: at a hard stop, or when this topic's drain timed out.
    pub(crate) abandon: CancellationToken,
    pub(crate) budget: Arc<Budget>,
    prepared: Arc<tokio::sync::watch::Sender<usize>>,
    /// Topics starting at once (see `start_turn`).
    pub(crate) starting: Arc<Semaphore>,
    /// Topics of the worker consuming now.
    pub(crate) topics_running: Arc<std::sync::atomic::AtomicUsize>,
    /// The worker's upkeep task: sweeps and lease renewals.
    pub(crate) upkeep: UpkeepLink,
    /// This consumer, for the duties it schedules.
    pub(crate) this: Weak<Self>,
    /// Sweeps started (every 20th also removes idle consumers).
    pub(crate) sweeps: std::sync::atomic::AtomicU64,
    /// Lease renewals are scheduled (from the first entry held until nothing is held at a
    /// renewal). Changed under the `held` lock.
    pub(crate) renewing: std::sync::atomic::AtomicBool,
    /// Set once the handlers are done at a stop: no more renewals.
    pub(crate) leases_over: std::sync::atomic::AtomicBool,
    /// `returned` at the last renewal that saw it change, and when (see `renew_leases`).
    pub(crate) progress: Mutex<(u64, Instant)>,
    /// Handler attempts that returned (any outcome), for telling a slow topic from a wedged
    /// one: see `renew_leases`.
    pub(crate) returned: std::sync::atomic::AtomicU64,
    /// Entries this consumer holds in memory (queued, running, waiting to retry or acking).
    pub(crate) held: Mutex<HeldMap>,
    /// Per-key queues: a key present here has a task handling its messages in order.
    pub(crate) lanes: Mutex<HashMap<Lane, VecDeque<Job>>>,
    pub(crate) tasks: TaskTracker,
    /// Successful entries, for the ack loop.
    pub(crate) acks: AckQueue,
    /// Set once no more acks can come: the ack loop flushes its queue and ends.
    pub(crate) acks_done: CancellationToken,
    /// The newest entry this consumer knows its group had delivered: where a group that
    /// vanished is created again (`group.rs`).
    pub(crate) last_read: Mutex<EntryId>,
    /// Entries not started (or waiting to retry) at a graceful stop, with the delivery count
    /// to leave them at: handed back once handlers are done.
    pub(crate) released: Mutex<Vec<(EntryId, u64)>>,
    /// Claims (reclaim sweeps, recoveries) waiting for slots: they go before the next read.
    pub(crate) claims_waiting: std::sync::atomic::AtomicUsize,
    /// Of a partition: the sweep found entries pending that this consumer does not hold. The
    /// read loop takes them over, in id order, before it reads on (a sweep claiming them
    /// beside a recovery could queue a key's later entry first).
    pub(crate) recovery_wanted: std::sync::atomic::AtomicBool,
    /// A claim waits for slots a blocked read holds: the read is woken to give them back.
    pub(crate) wake_reader: tokio::sync::Notify,
    /// A claim got its slots (or gave up): the read loop may take what is left.
    pub(crate) claim_turn: tokio::sync::Notify,
    /// Of a partition: the lease this consumer holds on it (`partitions.rs`).
    pub(crate) fence: Option<Arc<Fence>>,
}

/// A topic that is gone (stopped, or dropped at a hard stop) runs no handler any more.
impl Drop for TopicConsumer {
    fn drop(&mut self) {
        self.metrics.report_running(&self.running_reported, 0);
    }
}

/// What `TopicConsumer::run` undoes when it does not finish: it panicked (a bug), or the
/// worker's task was dropped. What the consumer started must not outlive it: its handlers are
/// abandoned as at a hard stop (dropped at their next `.await`; blocking code runs to its end),
/// its entries' leases no longer renewed, and a partition's lease given up.
struct Unfinished {
    consumer: Arc<TopicConsumer>,
    /// Counted in `topics_running`.
    running: bool,
    finished: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.consumer.abandon.cancel();
        self.consumer.leases_over.store(true, std::sync::atomic::Ordering::Release);
        if let Some(fence) = &self.consumer.fence {
            fence.give_up();
        }
        if self.running {
            self.consumer.topics_running.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl TopicConsumer {
    pub(crate) fn new(
        shared: &Shared,
        topic: Topic,
        handler: Arc<dyn Handler>,
        options: &RouteOptions,
        metrics: Arc<ConsumerMetrics>,
        partition: Option<PartitionRole>,
    ) -> Arc<Self> {
        let mut config = shared.config.clone();
        if options != &RouteOptions::default() {
            let mut c = (*config).clone();
            c.concurrency = options.concurrency.unwrap_or(c.concurrency);
            c.max_deliveries = options.max_deliveries.unwrap_or(c.max_deliveries);
            c.retry = options.retry.unwrap_or(c.retry);
            c.handler_timeout = options.timeout.or(c.handler_timeout);
            config = Arc::new(c);
        }
        // A partition's handlers see its topic.
        let origin = Arc::new(Origin {
            topic: topic.parent().to_string(),
            partition: topic.partition_of().map(|(_, p)| p),
            group: shared.group.clone(),
            consumer: shared.config.consumer_name.clone(),
        });
        let key = shared.conn.namespace().topic_stream(&topic);
        let reader = shared.readers.link(&key);
        Arc::new_cyclic(|this| Self {
            key,
            reader,
            conn: shared.conn.clone(),
            topic,
            group: shared.group.clone(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            admit: Arc::new(Semaphore::new(config.concurrency + config.prefetch)),
            running: Arc::new(Semaphore::new(config.concurrency)),
            config,
            stats: shared.stats.clone(),
            metrics,
            running_reported: std::sync::atomic::AtomicI64::new(0),
            handler,
            origin,
            stop: partition.as_ref().map_or_else(|| shared.stop.clone(), |p| p.stop.clone()),
            fence: partition.map(|p| p.fence),
            stopped_at: shared.stopped_at.clone(),
            hard_stop: shared.hard_stop.clone(),
            abandon: shared.hard_stop.child_token(),
            budget: shared.budget.clone(),
            prepared: shared.prepared.clone(),
            topics_running: shared.topics_running.clone(),
            starting: shared.starting.clone(),
            upkeep: shared.upkeep.clone(),
            this: this.clone(),
            sweeps: std::sync::atomic::AtomicU64::new(0),
            renewing: std::sync::atomic::AtomicBool::new(false),
            leases_over: std::sync::atomic::AtomicBool::new(false),
            progress: Mutex::new((0, Instant::now())),
            returned: std::sync::atomic::AtomicU64::new(0),
            held: Mutex::new(HeldMap::default()),
            lanes: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            acks: AckQueue::default(),
            acks_done: CancellationToken::new(),
            last_read: Mutex::new(EntryId::MIN),
            released: Mutex::new(Vec::new()),
            claims_waiting: std::sync::atomic::AtomicUsize::new(0),
            recovery_wanted: std::sync::atomic::AtomicBool::new(false),
            wake_reader: tokio::sync::Notify::new(),
            claim_turn: tokio::sync::Notify::new(),
        })
    }

    /// Runs until a graceful stop has drained (or a hard stop). `named`: a topic registered by
    /// name, which `WorkerHandle::ready` waits for (not one found through a pattern).
    pub(crate) async fn run(self: Arc<Self>, named: bool) {
        tracing::info!(topic = %self.topic, group = %self.group, consumer = %self.config.consumer_name, "consumer starting");
        // Background tasks are aborted when this future is dropped (the worker's handle was
        // dropped: a crash), so nothing of a "dead" consumer keeps running, e.g. renewing
        // leases on entries that live consumers must take over.
        let mut acker = {
            let this = self.clone();
            AbortOnDropHandle::new(tokio::spawn(async move { this.ack_loop().await }))
        };
        let mut unfinished = Unfinished { consumer: self.clone(), running: false, finished: false };
        if self.prepare().await {
            if named {
                self.prepared.send_modify(|n| *n += 1);
            }
            self.topics_running.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            unfinished.running = true;
            // Sweeps run until a graceful stop (`upkeep.rs`).
            self.start_sweeps();
            self.read_loop().await;
            self.topics_running.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            unfinished.running = false;
        }
        // Stopping: what waits in per-key queues will not start here.
        self.release_queued();
        self.drain().await;
        // Leases are renewed from the first entry taken (recovery included) until the running
        // handlers are done: a handler that runs through a graceful stop must not be taken over
        // (and run twice) meanwhile.
        self.leases_over.store(true, std::sync::atomic::Ordering::Release);
        // Every handler task is done: let the acker flush what is queued, then hand back what
        // was not started and leave the group. Bounded together: with Redis unreachable, what
        // is not acknowledged stays pending and runs again.
        let finish_by = tokio::time::Instant::now() + STOP_STEP * 2;
        self.acks_done.cancel();
        if tokio::time::timeout_at(finish_by, &mut acker).await.is_err() {
            tracing::warn!(topic = %self.topic, group = %self.group,
                "could not acknowledge every finished entry before stopping; they stay pending and run again");
            acker.abort();
        }
        if !self.hard_stop.is_cancelled() {
            let finish = Box::pin(async {
                self.release_unstarted().await;
                self.leave_group_if_empty().await;
            });
            if tokio::time::timeout_at(finish_by, finish).await.is_err() {
                tracing::warn!(topic = %self.topic, group = %self.group,
                    "Redis did not answer at stop; entries not started stay with this consumer until others take them after claim_idle");
            }
        }
        unfinished.finished = true;
        tracing::info!(topic = %self.topic, group = %self.group, "consumer stopped");
    }

    /// A turn to start (create the group, recover own entries): a worker over thousands of
    /// topics starts them [`STARTING_AT_ONCE`] at a time, not all at once, whose commands and
    /// futures in flight together (10,000 of each) left the worker's memory 70 MiB larger for
    /// good. Says at `warn` what it waits for when a turn takes long (other topics' starts wait
    /// for their handlers: a restart with many entries of its own pending, with handlers that
    /// do not return). `None` when stopped first.
    async fn start_turn(&self) -> Option<OwnedSemaphorePermit> {
        let turn = self.starting.clone().acquire_owned();
        tokio::pin!(turn);
        let since = Instant::now();
        loop {
            tokio::select! {
                permit = &mut turn => return permit.ok(),
                _ = self.stop.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_secs(10)) => {
                    tracing::warn!(topic = %self.topic, group = %self.group, waiting_for = ?since.elapsed(),
                        "waiting for other topics of the worker to start (they recover entries of their own)");
                }
            }
        }
    }

    /// Creates the group and recovers this consumer's own pending entries. False when
    /// stopped before that succeeded.
    ///
    /// Each attempt takes a start turn (`start_turn`) and gives it back before pausing, so a
    /// topic that cannot start (its key holds something else, the user may not read it) does
    /// not hold other topics' turns while it retries.
    async fn prepare(self: &Arc<Self>) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(turn) = self.start_turn().await else { return false };
            // Boxed, as other rare paths of this topic's loop: it would otherwise stay inside
            // the future of every topic for as long as it runs.
            let done = Box::pin(async {
                self.ensure_group().await?;
                self.recover_own_pending().await
            });
            let result = tokio::select! {
                r = done => r,
                _ = self.stop.cancelled() => return false,
            };
            drop(turn);
            match result {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(topic = %self.topic, group = %self.group, error = %e, "cannot start consuming; retrying");
                    if self.pause(&mut backoff).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Reads new entries until stopped, through the worker's shared reader (`reader.rs`).
    async fn read_loop(self: &Arc<Self>) {
        // Reconnections of the command connection: a claim (`XCLAIM`) in flight may have been
        // served with its reply lost. (The shared reader says so of its reads.)
        let mut command_reconnects = self.conn.reconnect_rx();
        // Set when a read may have lost its reply: recover own pending entries before reading on.
        let mut lost_reply = false;
        let mut backoff = Duration::from_millis(100);
        loop {
            lost_reply |= reconnected(&mut command_reconnects);
            lost_reply |= self.recovery_wanted.swap(false, std::sync::atomic::Ordering::AcqRel);
            if !self.holds_partition() {
                // A partition whose lease may have run out reads nothing more (`partitions.rs`).
                self.stop.cancel();
                break;
            }
            if lost_reply {
                self.reader.pass();
                // Entries Redis recorded as delivered to this consumer whose reply never came:
                // handle them now, not after `claim_idle` when the sweep would find them idle.
                // Recovery takes in-flight slots of its own, so it comes before this read's.
                let recovered = tokio::select! {
                    r = Box::pin(self.recover_own_pending()) => r,
                    _ = self.stop.cancelled() => break,
                };
                match recovered {
                    Ok(()) => {
                        lost_reply = false;
                        tracing::debug!(topic = %self.topic, "recovered entries of reads cut off by a reconnection");
                    }
                    Err(e) => {
                        tracing::warn!(topic = %self.topic, error = %e, "cannot recover own pending entries; retrying");
                        if self.pause(&mut backoff).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            // Claims of idle entries (a dead consumer's) go first: otherwise this read would take
            // every slot they free, and hold them for up to `block_for` (the CLI consumer, with
            // 16 slots, took over a dead member's entries one per cycle).
            if self.claims_waiting.load(std::sync::atomic::Ordering::Acquire) > 0 {
                self.reader.pass();
            }
            while self.claims_waiting.load(std::sync::atomic::Ordering::Acquire) > 0 && !self.stop.is_cancelled() {
                tokio::select! {
                    _ = self.claim_turn.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = self.stop.cancelled() => {}
                }
            }
            // A topic joins a read with at least half a batch of room (or of what it may hold):
            // `COUNT` is the smallest room of the topics in a read, so one topic with a single
            // free slot would have every other topic read one entry at a time.
            let join_at = self.join_at();
            if self.in_flight.available_permits() < join_at || self.admit.available_permits() < join_at {
                // Waiting for slots: the shared reader reads on without this topic meanwhile.
                self.reader.pass();
            }
            // Ask only for as many entries as there are free slots: backpressure.
            let Some(mut slots) = self.take_slots_at_least(join_at, self.config.batch_size).await else {
                // Stopping, or the worker's limit is reached: read nothing more, wait for the stop.
                self.reader.pass();
                self.stop.cancelled().await;
                break;
            };
            // Never join a read once stopping: its entries would be delivered to a consumer
            // that is going away.
            if self.stop.is_cancelled() {
                self.budget.give_back(slots.len());
                break;
            }
            let mut ticket = self.reader.join(slots.len());
            let mut stopping = false;
            let outcome = tokio::select! {
                biased;
                o = ticket.answer() => o,
                _ = self.stop.cancelled() => {
                    // The read is woken (CLIENT UNBLOCK) and its reply taken, so entries it
                    // brought this topic are known here and handed back. If Redis does not
                    // answer, the read is given up (what it may have delivered stays pending,
                    // for others after `claim_idle`).
                    stopping = true;
                    ticket.withdraw();
                    let longest = super::reader::longest_block(self.config.block_for);
                    let wait = (longest + STOP_STEP).min(self.stop_time_left().max(STOP_STEP));
                    tokio::time::timeout(wait, ticket.answer()).await.unwrap_or(None)
                }
                _ = self.wake_reader.notified() => {
                    // A claim waits for the slots this read holds: take them back now (what the
                    // read brought is handled as usual) rather than at its BLOCK timeout.
                    ticket.withdraw();
                    let longest = super::reader::longest_block(self.config.block_for);
                    tokio::time::timeout(longest + STOP_STEP, ticket.answer()).await.unwrap_or(None)
                }
            };
            // No answer: given up, or the reader is gone. Redis may have delivered to it.
            if outcome.is_none() && self.reader.is_gone() && !self.stop.is_cancelled() {
                tracing::error!(topic = %self.topic, "the worker's shared reader is gone; retrying");
                if self.pause(&mut backoff).await {
                    self.budget.give_back(slots.len());
                    break;
                }
            }
            let outcome = outcome.unwrap_or(Outcome::Entries { entries: Vec::new(), lost_reply: true });
            let used = match &outcome {
                Outcome::Entries { entries, .. } => entries.len(),
                _ => 0,
            };
            self.budget.give_back(slots.len().saturating_sub(used));
            match outcome {
                Outcome::Entries { entries, lost_reply: lost } => {
                    lost_reply |= lost;
                    backoff = Duration::from_millis(100);
                    if entries.len() > slots.len() {
                        // (The count of a ticket given up and joined again.) Those without a slot
                        // stay pending under this consumer: recovered before the next read.
                        tracing::debug!(topic = %self.topic, "read returned more entries than there are slots for");
                        lost_reply = true;
                    }
                    if let Some(last) = entries.last() {
                        *self.last_read.lock().expect("last read lock") = last.id;
                    }
                    if self.fence.is_some()
                        && !entries.is_empty()
                        && Box::pin(self.pending_elsewhere(entries[0].id, entries.len())).await
                    {
                        // Of a partition, a consumer that had it before holds entries older than
                        // these (a read of its, served after it lost the lease): everything is
                        // taken over in id order before these run, which stay pending here.
                        self.budget.give_back(entries.len().min(slots.len()));
                        lost_reply = true;
                        continue;
                    }
                    let taken = entries
                        .into_iter()
                        .map_while(|entry| {
                            let (permit, admit) = slots.take_one()?;
                            Some(Taken { entry, deliveries: 1, permit, admit })
                        })
                        .collect();
                    // Slots the read did not fill are free again before the handlers start.
                    drop(slots);
                    self.dispatch(taken).await;
                }
                Outcome::GroupLost => {
                    drop(slots);
                    let restored = tokio::select! {
                        r = Box::pin(self.restore_group()) => r,
                        _ = self.stop.cancelled() => break,
                    };
                    if let Err(e) = restored {
                        tracing::warn!(topic = %self.topic, error = %e, "cannot re-create the consumer group; retrying");
                        if self.pause(&mut backoff).await {
                            break;
                        }
                    }
                }
                Outcome::Failed(error) => {
                    drop(slots);
                    tracing::warn!(topic = %self.topic, %error, "read failed; retrying");
                    lost_reply = true;
                    if self.pause(&mut backoff).await {
                        break;
                    }
                }
            }
            if stopping {
                break;
            }
        }
    }

    /// Sleeps for `backoff` (doubling it, up to 5 s). True when stopped meanwhile.
    pub(crate) async fn pause(&self, backoff: &mut Duration) -> bool {
        let stopped = tokio::select! {
            _ = tokio::time::sleep(*backoff) => false,
            _ = self.stop.cancelled() => true,
        };
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
        stopped
    }

    /// Room for up to `want` entries: in-flight and read-ahead slots, within the worker's
    /// budget. Takes as many of each as are free now, waiting for the first if none is (and
    /// saying so at `warn` while nothing frees one). `None` when stopped first or the budget
    /// is spent.
    pub(crate) async fn take_slots(&self, want: usize) -> Option<Slots> {
        self.take_slots_at_least(1, want).await
    }

    /// [`Self::take_slots`], waiting until at least `at_least` of each kind are free.
    async fn take_slots_at_least(&self, at_least: usize, want: usize) -> Option<Slots> {
        let at_least = at_least.clamp(1, want.max(1));
        let mut in_flight =
            self.slots_of(&self.in_flight, at_least, want, "in-flight (unacknowledged) entries").await?;
        let admit_what = "read-ahead entries (read, handler not yet returned)";
        let n = in_flight.num_permits();
        let mut admit = self.slots_of(&self.admit, at_least.min(n), n, admit_what).await?;
        let n = in_flight.num_permits().min(admit.num_permits());
        let granted = self.budget.take(n);
        if granted == 0 {
            return None;
        }
        drop(in_flight.split(in_flight.num_permits() - granted));
        drop(admit.split(admit.num_permits() - granted));
        Some(Slots { in_flight, admit })
    }

    /// Up to `want` permits of `semaphore` as one: those free now if at least `at_least` are
    /// (one semaphore operation in the common case), else the first `at_least` to come free
    /// and what is free then. `None` when stopped first. While they do not free up, says at
    /// `warn`, every `claim_idle` (at least 10 s), what it waits for and what holds the slots.
    async fn slots_of(
        &self,
        semaphore: &Arc<Semaphore>,
        at_least: usize,
        want: usize,
        what: &str,
    ) -> Option<OwnedSemaphorePermit> {
        if self.stop.is_cancelled() {
            return None;
        }
        let free = semaphore.available_permits().min(want);
        if free >= at_least {
            if let Ok(p) = semaphore.clone().try_acquire_many_owned(u32::try_from(free).unwrap_or(u32::MAX)) {
                return Some(p);
            }
        }
        // Boxed: its futures (a semaphore's, a timer) would otherwise sit in every topic's read
        // loop for as long as it runs, waiting or not (a worker may have 10,000 topics).
        Box::pin(self.wait_for_slots(semaphore, at_least, want, what)).await
    }

    /// The slow path of [`Self::slots_of`]: fewer than `at_least` are free.
    async fn wait_for_slots(
        &self,
        semaphore: &Arc<Semaphore>,
        at_least: usize,
        want: usize,
        what: &str,
    ) -> Option<OwnedSemaphorePermit> {
        let acquire = semaphore.clone().acquire_many_owned(u32::try_from(at_least).unwrap_or(u32::MAX));
        tokio::pin!(acquire);
        let every = self.config.claim_idle.max(Duration::from_secs(10));
        let since = Instant::now();
        let mut first = loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return None,
                p = &mut acquire => break p.expect("semaphore never closed"),
                _ = tokio::time::sleep(every) => {
                    let (held, waiting) = {
                        let held = self.held.lock().expect("held lock");
                        (held.len(), held.values().filter(|h| h.waiting).count())
                    };
                    let running = self.config.concurrency - self.running.available_permits();
                    tracing::warn!(topic = %self.topic, group = %self.group, waiting_for = ?since.elapsed(), want,
                        held, waiting, running, "no free slot for {what}: handlers are slow or stuck (see handler_timeout)");
                }
            }
        };
        let more = semaphore.available_permits().min(want - first.num_permits());
        if more > 0 {
            if let Ok(p) = semaphore.clone().try_acquire_many_owned(u32::try_from(more).unwrap_or(u32::MAX)) {
                first.merge(p);
            }
        }
        Some(first)
    }

    /// Records entries as held since `at`.
    pub(crate) fn hold(&self, ids: impl IntoIterator<Item = EntryId>, at: Instant) {
        let mut held = self.held.lock().expect("held lock");
        let was_empty = held.is_empty();
        for id in ids {
            held.insert(id, Held { since: at, waiting: false, lost: false });
        }
        if was_empty && !held.is_empty() {
            self.start_renewals();
        }
    }

    /// Marks `id` as waiting to start.
    pub(crate) fn mark_waiting(&self, id: EntryId) {
        if let Some(h) = self.held.lock().expect("held lock").get_mut(&id) {
            h.waiting = true;
        }
    }

    /// Counts this topic's running handlers in `tributary.handlers.in_flight`: after each read
    /// batch started its handlers, each acknowledgement batch and each dead letter.
    pub(crate) fn report_running(&self) {
        let running = self.config.concurrency.saturating_sub(self.running.available_permits());
        self.metrics.report_running(&self.running_reported, running as i64);
    }

    pub(crate) fn forget(&self, ids: impl IntoIterator<Item = EntryId>) {
        let mut held = self.held.lock().expect("held lock");
        for id in ids {
            held.remove(&id);
        }
    }

    /// Marks `id`, which waited, as starting; returns how long it waited since it was read or
    /// claimed, or `None` if another consumer took it over meanwhile.
    pub(crate) fn start_after_wait(&self, id: EntryId) -> Option<Duration> {
        let mut held = self.held.lock().expect("held lock");
        let h = held.get_mut(&id)?;
        h.waiting = false;
        (!h.lost).then(|| h.since.elapsed())
    }

    /// Notes `id` to hand back at the end of a graceful stop, leaving its delivery count at
    /// `deliveries` (what was attempted), and stops holding it.
    pub(crate) fn release(&self, id: EntryId, deliveries: u64) {
        self.released.lock().expect("released lock").push((id, deliveries));
        self.forget([id]);
    }

    /// Hands back every entry queued behind its key (each lane's running entry finishes).
    pub(crate) fn release_queued(&self) {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        for queue in lanes.values_mut() {
            for queued in queue.drain(..) {
                self.release(queued.id, queued.deliveries.saturating_sub(1));
            }
        }
    }

    /// The room this topic waits for before it joins a read: half of a batch, or of what it may
    /// hold at once if that is smaller (at least one).
    fn join_at(&self) -> usize {
        let capacity =
            self.config.batch_size.min(self.config.max_in_flight).min(self.config.concurrency + self.config.prefetch);
        (capacity / 2).max(1)
    }

    /// What is left of `shutdown_timeout` since the graceful stop was asked for.
    fn stop_time_left(&self) -> Duration {
        let since = self.stopped_at.get().map_or(Duration::ZERO, Instant::elapsed);
        self.config.shutdown_timeout.saturating_sub(since)
    }

    /// Waits for handler tasks until `shutdown_timeout` after the stop; then drops what still
    /// runs (its entries stay pending).
    async fn drain(&self) {
        self.tasks.close();
        if tokio::time::timeout(self.stop_time_left(), self.tasks.wait()).await.is_err() {
            tracing::warn!(topic = %self.topic, timeout = ?self.config.shutdown_timeout,
                "shutdown timeout: abandoning running handlers; their entries stay pending");
            self.abandon.cancel();
            self.tasks.wait().await;
        }
    }

    /// Hands back what was read but not started (or was waiting to retry) at the stop: still
    /// pending under this consumer, but marked idle for `claim_idle`, so a live consumer's
    /// next sweep takes it over instead of it waiting `claim_idle` more; delivery counts are
    /// set to what was attempted. The next start of this consumer name recovers it too.
    async fn release_unstarted(&self) {
        let released = std::mem::take(&mut *self.released.lock().expect("released lock"));
        if released.is_empty() {
            return;
        }
        let idle = i64::try_from(self.config.claim_idle.as_millis()).unwrap_or(i64::MAX);
        for chunk in released.chunks(256) {
            let mut args: Vec<Value> =
                vec![self.group.as_str().into(), self.config.consumer_name.as_str().into(), Value::from(idle)];
            for (id, deliveries) in chunk {
                args.push(id.to_string().into());
                args.push(Value::from(i64::try_from(*deliveries).unwrap_or(i64::MAX)));
            }
            match RELEASE_OWNED.run::<i64>(&self.conn, vec![self.key.clone()], args).await {
                Ok(n) => {
                    Stats::add(&self.stats.released, n as u64);
                    tracing::info!(topic = %self.topic, group = %self.group, released = n,
                        "handed back entries not started before the stop");
                }
                Err(e) => tracing::warn!(topic = %self.topic, error = %e,
                    "could not hand back unstarted entries; others take them after claim_idle"),
            }
        }
    }

    /// On a clean stop, remove this consumer from the group if it holds nothing.
    async fn leave_group_if_empty(&self) {
        let args = vec![self.group.as_str().into(), self.config.consumer_name.as_str().into()];
        match DELETE_CONSUMER_IF_EMPTY.run::<i64>(&self.conn, vec![self.key.clone()], args).await {
            Ok(1) => tracing::debug!(topic = %self.topic, "left the group (nothing pending)"),
            Ok(_) => tracing::info!(topic = %self.topic, "entries still pending; keeping consumer for its next start"),
            Err(e) => tracing::warn!(topic = %self.topic, error = %e, "could not check pending entries at stop"),
        }
    }

    /// Dead-letter, acknowledge or skip without calling the handler.
    pub(crate) async fn settle_unhandled(&self, job: Job) -> Option<Job> {
        match &job.body {
            JobBody::Tombstone => {
                if let Err(e) = self.ack_unhandled(job.id).await {
                    tracing::warn!(topic = %self.topic, error = %e, "could not ack deleted entry");
                } else {
                    self.stats.settle(&self.stats.tombstones, 1);
                }
                None
            }
            JobBody::ForOtherGroup => {
                if let Err(e) = self.ack_unhandled(job.id).await {
                    tracing::warn!(topic = %self.topic, error = %e, "could not ack a replay for another group");
                } else {
                    self.stats.settle(&self.stats.replays_for_other_groups, 1);
                }
                None
            }
            JobBody::Malformed(reason) => {
                self.dead_letter(job.id, DeadLetterReason::Malformed, job.deliveries, reason).await;
                None
            }
            JobBody::Message(_) => Some(job),
        }
    }
}

/// True when `events` saw a reconnection since the last look (a lagged receiver missed
/// several); takes every queued event.
pub(crate) fn reconnected(events: &mut broadcast::Receiver<Server>) -> bool {
    let mut seen = false;
    loop {
        match events.try_recv() {
            Ok(_) | Err(TryRecvError::Lagged(_)) => seen = true,
            Err(TryRecvError::Empty | TryRecvError::Closed) => return seen,
        }
    }
}

/// The entries a consumer holds, hashed by [`IdHasher`]: the map is touched twice per
/// message (held when dispatched, forgotten once acknowledged), where SipHash was a
/// measurable share of a message's cost (docs/performance-history.md, "Counted in
/// instructions"). Not resistant to chosen keys, which is
/// fine here: it holds at most `max_in_flight` ids, all of them handed out by Redis to this
/// consumer.
pub(crate) type HeldMap = HashMap<EntryId, Held, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn held_ids_hash_apart_and_the_map_behaves_as_a_map() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let mut hashes = HashSet::new();
        for ms in 1_764_400_000_000..1_764_400_000_100u64 {
            for seq in 0..100 {
                assert!(hashes.insert(build.hash_one(EntryId::new(ms, seq))), "{ms}-{seq} collides");
            }
        }
        let mut held = HeldMap::default();
        let h = Held { since: Instant::now(), waiting: false, lost: false };
        assert!(held.insert(EntryId::new(5, 1), h).is_none());
        assert!(held.insert(EntryId::new(5, 1), h).is_some());
        assert!(held.contains_key(&EntryId::new(5, 1)) && !held.contains_key(&EntryId::new(1, 5)));
        assert!(held.remove(&EntryId::new(5, 1)).is_some() && held.is_empty());
    }
}
