//! The consumer loop of one topic: create the group, recover this consumer's own pending
//! entries, then read new entries with a blocking `XREADGROUP` on a dedicated connection and
//! hand them to handlers (`dispatch.rs`), never holding more than `max_in_flight` unacknowledged.
//! After a connection reconnects, own pending entries are recovered again: a read (or claim)
//! cut off mid-reply leaves entries Redis counts as delivered here.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientLike, EventInterface};
use fred::types::config::Server;
use fred::types::Value;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tributary_core::id::IdHasher;
use tributary_core::{Connection, EntryId, RedisError, Topic};

use super::ack::{AckRequest, DeadLetterReason};
use super::builder::ConsumerConfig;
use super::dispatch::{Job, JobBody, Lane, Taken};
use super::handler::{Handler, Origin};
use super::route::RouteOptions;
use super::stats::Stats;
use crate::redis::{call_sub, command, parse_read_reply, Args, RawEntry};
use crate::scripts::DELETE_CONSUMER_IF_EMPTY;

/// Resources one worker shares between its topics.
pub(crate) struct Shared {
    pub(crate) conn: Connection,
    pub(crate) group: String,
    pub(crate) config: Arc<ConsumerConfig>,
    pub(crate) stats: Arc<Stats>,
    /// One permit per unacknowledged entry.
    pub(crate) in_flight: Arc<Semaphore>,
    /// One permit per running handler.
    pub(crate) running: Arc<Semaphore>,
    /// Graceful stop: no new reads, finish what runs.
    pub(crate) stop: CancellationToken,
    /// Immediate stop: drop everything (crash-like; what is unacked stays pending).
    pub(crate) hard_stop: CancellationToken,
    /// Entries this worker may still take (`WorkerBuilder::limit`), across its topics.
    pub(crate) budget: Arc<Budget>,
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

/// How many in-flight slots [`TopicConsumer::take_slots`] waits for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slots {
    /// One per entry: recovery hands back everything this consumer name holds.
    All,
    /// The first, then as many as are free: a read or a sweep takes what there is room for now.
    AtLeastOne,
}

/// One topic's consumer. Shared (`Arc`) by its read loop, its handler tasks and its helpers.
pub(crate) struct TopicConsumer {
    pub(crate) conn: Connection,
    pub(crate) topic: Topic,
    pub(crate) key: String,
    pub(crate) group: String,
    pub(crate) config: Arc<ConsumerConfig>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) handler: Arc<dyn Handler>,
    /// Topic, group and consumer name, shared by every message's `Context`.
    pub(crate) origin: Arc<Origin>,
    /// Group, consumer name and stream key as arguments of `XREADGROUP`.
    read_args: [Value; 3],
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) running: Arc<Semaphore>,
    pub(crate) stop: CancellationToken,
    pub(crate) hard_stop: CancellationToken,
    pub(crate) budget: Arc<Budget>,
    /// Entries this consumer holds in memory (queued, running or waiting to retry).
    pub(crate) held: Mutex<HeldSet>,
    /// Per-key queues: a key present here has a task handling its messages in order.
    pub(crate) lanes: Mutex<HashMap<Lane, VecDeque<Job>>>,
    pub(crate) tasks: TaskTracker,
    /// Successful entries, a batch per message, to the ack loop.
    pub(crate) ack_tx: mpsc::UnboundedSender<Vec<AckRequest>>,
    ack_rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<AckRequest>>>>,
    /// Set once no more acks can come: the ack loop flushes its queue and ends.
    pub(crate) acks_done: CancellationToken,
}

impl TopicConsumer {
    pub(crate) fn new(shared: &Shared, topic: Topic, handler: Arc<dyn Handler>, options: &RouteOptions) -> Arc<Self> {
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let mut config = shared.config.clone();
        let mut running = shared.running.clone();
        if options != &RouteOptions::default() {
            let mut c = (*config).clone();
            if let Some(n) = options.concurrency {
                c.concurrency = n;
                running = Arc::new(Semaphore::new(n));
            }
            c.max_deliveries = options.max_deliveries.unwrap_or(c.max_deliveries);
            c.retry = options.retry.unwrap_or(c.retry);
            config = Arc::new(c);
        }
        let origin = Arc::new(Origin {
            topic: topic.to_string(),
            group: shared.group.clone(),
            consumer: shared.config.consumer_name.clone(),
        });
        let key = shared.conn.namespace().topic_stream(&topic);
        let read_args = [
            Value::from(shared.group.as_str()),
            Value::from(shared.config.consumer_name.as_str()),
            Value::from(key.as_str()),
        ];
        Arc::new(Self {
            key,
            read_args,
            conn: shared.conn.clone(),
            topic,
            group: shared.group.clone(),
            config,
            stats: shared.stats.clone(),
            handler,
            origin,
            in_flight: shared.in_flight.clone(),
            running,
            stop: shared.stop.clone(),
            hard_stop: shared.hard_stop.clone(),
            budget: shared.budget.clone(),
            held: Mutex::new(HeldSet::default()),
            lanes: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            ack_tx,
            ack_rx: Mutex::new(Some(ack_rx)),
            acks_done: CancellationToken::new(),
        })
    }

    /// Runs until a graceful stop has drained (or a hard stop).
    pub(crate) async fn run(self: Arc<Self>) {
        tracing::info!(topic = %self.topic, group = %self.group, consumer = %self.config.consumer_name, "consumer starting");
        // Background tasks are aborted when this future is dropped (the worker's handle was
        // dropped: a crash), so nothing of a "dead" consumer keeps running, e.g. renewing
        // leases on entries that live consumers must take over.
        let acker = {
            let this = self.clone();
            let rx = self.ack_rx.lock().expect("ack receiver lock").take();
            AbortOnDropHandle::new(tokio::spawn(async move {
                if let Some(rx) = rx {
                    this.ack_loop(rx).await;
                }
            }))
        };
        if self.prepare().await {
            let helpers = {
                let this = self.clone();
                AbortOnDropHandle::new(tokio::spawn(async move { this.helper_loops().await }))
            };
            let reader = self.read_loop().await;
            helpers.abort();
            self.drain().await;
            if let Some(reader) = reader {
                let _ = reader.quit().await;
            }
        }
        // Every handler task is done: let the acker flush what is queued, then end.
        self.acks_done.cancel();
        let _ = acker.await;
        if !self.hard_stop.is_cancelled() {
            self.leave_group_if_empty().await;
        }
        tracing::info!(topic = %self.topic, group = %self.group, "consumer stopped");
    }

    /// Creates the group and recovers this consumer's own pending entries. False when
    /// stopped before that succeeded.
    async fn prepare(self: &Arc<Self>) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            let done = async {
                self.ensure_group().await?;
                self.recover_own_pending().await
            };
            let result = tokio::select! {
                r = done => r,
                _ = self.stop.cancelled() => return false,
            };
            match result {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(topic = %self.topic, group = %self.group, error = %e, "cannot start consuming; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.stop.cancelled() => return false,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// `XGROUP CREATE ... MKSTREAM`; an existing group is left as it is.
    pub(crate) async fn ensure_group(&self) -> Result<(), RedisError> {
        let args = Args::new().arg(self.group.as_str()).arg(self.config.start.group_cursor()).arg("MKSTREAM");
        match call_sub::<Value>(self.conn.redis(), "XGROUP", "CREATE", &self.key, args).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_server_error("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Reads new entries until stopped. Returns the reader connection to close.
    async fn read_loop(self: &Arc<Self>) -> Option<Client> {
        let mut reader: Option<Client> = None;
        let mut reader_id: Option<i64> = None;
        // Reconnections: a read in flight when its connection dropped may have been served by
        // Redis with the reply lost (the read then fails: the reader makes one attempt); so
        // may a claim (`XCLAIM`) on the command connection.
        let mut reconnects = None;
        let mut command_reconnects = self.conn.redis().reconnect_rx();
        // Set when a read may have lost its reply: recover own pending entries before reading on.
        let mut lost_reply = false;
        let mut backoff = Duration::from_millis(100);
        loop {
            lost_reply |= reconnected(&mut command_reconnects);
            if let Some(rx) = &mut reconnects {
                lost_reply |= reconnected(rx);
            }
            if lost_reply {
                // Entries Redis recorded as delivered to this consumer whose reply never came:
                // handle them now, not after `claim_idle` when the sweep would find them idle.
                // Recovery takes in-flight slots of its own, so it comes before this read's.
                match self.recover_own_pending().await {
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
            // Ask only for as many entries as there are free slots: backpressure.
            let Some(mut permits) = self.take_slots(self.config.batch_size, Slots::AtLeastOne).await else {
                // Stopping, or the worker's limit is reached: read nothing more, wait for the stop.
                self.stop.cancelled().await;
                break;
            };
            let client = match &reader {
                Some(c) => c.clone(),
                None => match self.conn.dedicated(self.config.block_for).await {
                    Ok(c) => {
                        // Its id on the topic's node, to wake a blocked read at stop.
                        reader_id =
                            c.custom::<i64, _>(command("CLIENT", &self.key, false), vec![Value::from("ID")]).await.ok();
                        reconnects = Some(c.reconnect_rx());
                        reader = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        tracing::warn!(topic = %self.topic, error = %e, "cannot open read connection; retrying");
                        if self.pause(&mut backoff).await {
                            break;
                        }
                        continue;
                    }
                },
            };
            // Never start a read once stopping: its entries would be delivered to a consumer
            // that is going away.
            if self.stop.is_cancelled() {
                break;
            }
            let read = self.read_new(&client, permits.num_permits());
            tokio::pin!(read);
            let mut stopping = false;
            let read = tokio::select! {
                biased;
                r = &mut read => r,
                _ = self.stop.cancelled() => {
                    // Wake the blocked read (CLIENT UNBLOCK) and take its reply: entries it
                    // carries are handled during the drain instead of being stranded. If the
                    // unblock is not allowed, the read ends at its BLOCK timeout.
                    stopping = true;
                    self.unblock(reader_id).await;
                    read.await
                }
            };
            if let Ok(entries) = &read {
                self.budget.give_back(permits.num_permits().saturating_sub(entries.len()));
            } else {
                self.budget.give_back(permits.num_permits());
            }
            match read {
                Ok(entries) => {
                    backoff = Duration::from_millis(100);
                    if entries.len() > permits.num_permits() {
                        tracing::error!(topic = %self.topic, "read returned more entries than asked for");
                    }
                    let taken = entries
                        .into_iter()
                        .map_while(|entry| Some(Taken { entry, deliveries: 1, permit: permits.split(1)? }))
                        .collect();
                    // Slots the read did not fill are free again before the handlers start.
                    drop(permits);
                    self.dispatch(taken).await;
                }
                Err(e) if e.is_server_error("NOGROUP") => {
                    // The stream or group was deleted under us: create it again.
                    tracing::warn!(topic = %self.topic, group = %self.group, "group missing; re-creating");
                    if let Err(e) = self.ensure_group().await {
                        tracing::warn!(topic = %self.topic, error = %e, "cannot re-create group");
                        if self.pause(&mut backoff).await {
                            break;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topic, error = %e, "read failed; retrying");
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
        reader
    }

    /// Sends `CLIENT UNBLOCK` for the reader connection, so a stop does not wait out `BLOCK`.
    async fn unblock(&self, reader_id: Option<i64>) {
        let Some(id) = reader_id else { return };
        let args = vec![Value::from("UNBLOCK"), Value::from(id)];
        if let Err(e) = self.conn.redis().custom::<Value, _>(command("CLIENT", &self.key, false), args).await {
            tracing::debug!(topic = %self.topic, error = %e, "CLIENT UNBLOCK failed; the read ends at its timeout");
        }
    }

    /// Sleeps for `backoff` (doubling it, up to 5 s). True when stopped meanwhile.
    async fn pause(&self, backoff: &mut Duration) -> bool {
        let stopped = tokio::select! {
            _ = tokio::time::sleep(*backoff) => false,
            _ = self.stop.cancelled() => true,
        };
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
        stopped
    }

    /// In-flight slots for up to `want` entries, within the worker's budget, as one permit to
    /// split off one per entry taken: unused slots then go back together (one semaphore lock,
    /// not one per slot). Waits for the first slot; `None` when stopped first or when the budget
    /// is spent.
    pub(crate) async fn take_slots(&self, want: usize, slots: Slots) -> Option<OwnedSemaphorePermit> {
        let mut permits = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return None,
            p = self.in_flight.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        match slots {
            Slots::AtLeastOne => {
                let more = self.in_flight.available_permits().min(want.saturating_sub(1));
                let more = u32::try_from(more).unwrap_or(u32::MAX);
                if let Ok(more) = self.in_flight.clone().try_acquire_many_owned(more) {
                    permits.merge(more);
                }
            }
            Slots::All => {
                while permits.num_permits() < want {
                    tokio::select! {
                        p = self.in_flight.clone().acquire_owned() => permits.merge(p.expect("semaphore never closed")),
                        _ = self.stop.cancelled() => break,
                    }
                }
            }
        }
        let granted = self.budget.take(permits.num_permits());
        if granted == 0 {
            return None;
        }
        drop(permits.split(permits.num_permits() - granted));
        Some(permits)
    }

    async fn read_new(&self, client: &Client, count: usize) -> Result<Vec<RawEntry>, RedisError> {
        let block_ms = i64::try_from(self.config.block_for.as_millis()).unwrap_or(i64::MAX);
        // Static words and names built once (cloning them counts a reference): one read per
        // message when messages trickle in.
        let [group, consumer, key] = self.read_args.clone();
        let args: Vec<Value> = vec![
            Value::from_static_str("GROUP"),
            group,
            consumer,
            Value::from_static_str("COUNT"),
            Value::from(count as i64),
            Value::from_static_str("BLOCK"),
            Value::from(block_ms),
            Value::from_static_str("STREAMS"),
            key,
            Value::from_static_str(">"),
        ];
        let reply: Value = client
            .custom(command("XREADGROUP", &self.key, true), args)
            .await
            .map_err(|e| RedisError::new("XREADGROUP", e))?;
        parse_read_reply("XREADGROUP", reply)
    }

    pub(crate) fn forget(&self, ids: impl IntoIterator<Item = EntryId>) {
        let mut held = self.held.lock().expect("held lock");
        for id in ids {
            held.remove(&id);
        }
    }

    /// Waits for handler tasks, up to `shutdown_timeout`; then drops what still runs.
    async fn drain(&self) {
        self.tasks.close();
        let waited = tokio::time::timeout(self.config.shutdown_timeout, self.tasks.wait()).await;
        if waited.is_err() {
            tracing::warn!(topic = %self.topic, "shutdown timeout: abandoning running handlers; their entries stay pending");
            self.hard_stop.cancel();
            self.tasks.wait().await;
        }
    }

    /// On a clean stop, remove this consumer from the group if it holds nothing.
    async fn leave_group_if_empty(&self) {
        let args = vec![self.group.as_str().into(), self.config.consumer_name.as_str().into()];
        match DELETE_CONSUMER_IF_EMPTY.run::<i64>(self.conn.redis(), vec![self.key.clone()], args).await {
            Ok(1) => tracing::debug!(topic = %self.topic, "left the group (nothing pending)"),
            Ok(_) => tracing::info!(topic = %self.topic, "entries still pending; keeping consumer for its next start"),
            Err(e) => tracing::warn!(topic = %self.topic, error = %e, "could not check pending entries at stop"),
        }
    }

    /// Dead-letter, acknowledge or skip without calling the handler.
    pub(crate) async fn settle_unhandled(&self, job: Job) -> Option<Job> {
        match &job.body {
            JobBody::Tombstone => {
                if let Err(e) = self.ack_tombstone(job.id).await {
                    tracing::warn!(topic = %self.topic, error = %e, "could not ack deleted entry");
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
fn reconnected(events: &mut broadcast::Receiver<Server>) -> bool {
    let mut seen = false;
    loop {
        match events.try_recv() {
            Ok(_) | Err(TryRecvError::Lagged(_)) => seen = true,
            Err(TryRecvError::Empty | TryRecvError::Closed) => return seen,
        }
    }
}

/// The entries a consumer holds, hashed by [`IdHasher`]: the set is touched twice per message
/// (held when dispatched, forgotten once acknowledged), where SipHash cost about 400
/// instructions per message (callgrind, `e2e`). Not resistant to chosen keys, which is fine
/// here: it holds at most `max_in_flight` ids, all of them handed out by Redis to this consumer.
pub(crate) type HeldSet = HashSet<EntryId, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn held_ids_hash_apart_and_the_set_behaves_as_a_set() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let mut hashes = HashSet::new();
        for ms in 1_764_400_000_000..1_764_400_000_100u64 {
            for seq in 0..100 {
                assert!(hashes.insert(build.hash_one(EntryId::new(ms, seq))), "{ms}-{seq} collides");
            }
        }
        let mut held = HeldSet::default();
        assert!(held.insert(EntryId::new(5, 1)));
        assert!(!held.insert(EntryId::new(5, 1)));
        assert!(held.contains(&EntryId::new(5, 1)) && !held.contains(&EntryId::new(1, 5)));
        assert!(held.remove(&EntryId::new(5, 1)) && held.is_empty());
    }
}
