//! Sharing a partitioned topic's partitions among the members of a group: each partition is
//! consumed by one member at a time, so a key's messages (all in one partition) are handled in
//! publish order across every instance of a service (`docs/partitions.md`).
//!
//! - Membership: every member says it is alive each *tick* (a third of the lease time) in
//!   `<ns>:{<topic>}:members:<group>`, scored by Redis' clock; a member that stops saying so
//!   drops out after the lease time.
//! - Assignment: `partition::owners` of the live members (each partition to the member that
//!   ranks it highest, as far as balance allows); every member computes the same from the same
//!   list, and a join or a leave moves about one member's share.
//! - Leases: a member consumes a partition only while it holds the group's lease on it
//!   (`<ns>:{<topic>#<p>}:lease:<group>`, `SET NX PX`, renewed each tick). The lease's token is
//!   the *fence*: acknowledgements and dead-letter moves of the partition run in scripts that
//!   check it, so a member that lost the lease (cut off, frozen) settles nothing after another
//!   took over; and a member starts nothing once its lease may have run out by its own clock.
//! - Hand-over: a member that is no longer assigned a partition stops it gracefully (what has
//!   not started is handed back, running handlers finish and are acknowledged), renewing the
//!   lease meanwhile, then releases it; the new owner takes every entry pending in the group
//!   first, in id order, then reads new ones. A dead member's leases run out instead.
//!
//! So a partition moves within the lease time plus one tick of its owner dying, and within
//! two ticks plus its running handlers' time of a member joining or leaving gracefully.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::types::Value;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tributary_core::{RedisError, Topic};

use super::stats::Stats;
use super::topic::{Shared, TopicConsumer};
use super::Consuming;
use crate::redis::{call, call_sub, Args};
use crate::scripts::{LEASE_RELEASE, LEASE_RENEW, PARTITION_MEMBERS};

/// The lease a consumer holds on a partition, shared with the partition's consumer.
#[derive(Debug)]
pub(crate) struct Fence {
    /// `<ns>:{<topic>#<p>}:lease:<group>`.
    pub(crate) lease_key: String,
    /// This holder's token (the lease key's value while it is this holder's).
    pub(crate) token: String,
    /// Until when the lease surely holds, by this process' clock: milliseconds after `since`.
    valid_until: AtomicU64,
    since: Instant,
    /// Given up for good (lost, run out, or left with an entry unsettled): it never holds again.
    lost: std::sync::atomic::AtomicBool,
    /// Counts the leases lost (`WorkerStats::partitions_lost`).
    stats: Arc<Stats>,
}

impl Fence {
    /// The fence of a lease taken by a command sent at `sent_at`, for `lease`.
    fn taken(lease_key: String, token: String, sent_at: Instant, lease: Duration, stats: Arc<Stats>) -> Self {
        let fence =
            Self { lease_key, token, valid_until: AtomicU64::new(0), since: sent_at, lost: Default::default(), stats };
        fence.extend(sent_at, lease);
        fence
    }

    /// True while the lease surely holds: it was taken or renewed, by a command sent at
    /// `sent_at`, for `lease`; nine tenths of that count (clocks of two machines drift apart a
    /// little, and Redis counts from when it ran the command, a little later).
    ///
    /// Once seen run out it never holds again, even when a late renewal then answers: another
    /// member may have taken the lease in between and started the partition's entries. The
    /// partition stops; this member takes it again afresh if it is still its to take.
    pub(crate) fn holds(&self) -> bool {
        if self.lost.load(Ordering::Acquire) {
            return false;
        }
        if (self.since.elapsed().as_millis() as u64) < self.valid_until.load(Ordering::Acquire) {
            return true;
        }
        self.lose();
        false
    }

    /// The lease is another's, or may be (it ran out): nothing more starts. Counted once.
    pub(crate) fn lose(&self) {
        if !self.lost.swap(true, Ordering::AcqRel) {
            Stats::add(&self.stats.partitions_lost, 1);
        }
    }

    /// This holder gives the partition up (an entry is left unsettled, which the key's next
    /// must not overtake): nothing more starts, and the lease is released once the partition's
    /// consumer stopped. Not a lost lease.
    pub(crate) fn give_up(&self) {
        self.lost.store(true, Ordering::Release);
    }

    fn extend(&self, sent_at: Instant, lease: Duration) {
        let until = sent_at.saturating_duration_since(self.since) + lease * 9 / 10;
        self.valid_until.fetch_max(until.as_millis() as u64, Ordering::AcqRel);
    }
}

/// What makes a topic consumer a partition's: its own stop (the partition is handed over
/// without stopping the worker) and its lease.
pub(crate) struct PartitionRole {
    pub(crate) stop: CancellationToken,
    pub(crate) fence: Arc<Fence>,
}

impl TopicConsumer {
    /// True unless this is a partition whose lease may have run out; such a partition stops
    /// (its member takes it again if it is still its own).
    pub(crate) fn holds_partition(&self) -> bool {
        let holds = self.fence.as_ref().map_or(true, |f| f.holds());
        if !holds {
            self.stop.cancel();
        }
        holds
    }

    /// Of a partition: entry `id` is left unsettled and not running here (another consumer
    /// took it, or a command about it failed), so the next entry of its key must not start.
    /// The partition stops without starting anything more, and its next owner (this member
    /// again, if it is still its own) takes every pending entry in id order first. Of a
    /// topic of one stream: nothing to do, the entry is handled again after `claim_idle`.
    pub(crate) fn leave_unsettled(&self, id: tributary_core::EntryId, why: &str) {
        if let Some(fence) = &self.fence {
            tracing::warn!(topic = %self.topic, group = %self.group, entry_id = %id, why,
                "an entry of the partition is left unsettled; stopping the partition so its key's next entries wait for it");
            fence.give_up();
            self.stop.cancel();
        }
    }

    /// Of a partition, after a read of `read` entries: whether entries are pending in the group
    /// that this consumer does not handle: held by other consumers, or under its own name
    /// beyond what it holds and just read (a late reply to a read of an earlier run of it). A
    /// failed look counts as yes: the caller then recovers, which retries.
    pub(crate) async fn pending_elsewhere(&self, first_read: tributary_core::EntryId, read: usize) -> bool {
        // Counted before the look: what is acknowledged meanwhile leaves both (an entry only
        // leaves `held` after it left the group's pending entries), so the comparison below
        // never counts it as missing.
        let held = self.held.lock().expect("held lock").len();
        let reply = match call::<Value>(&self.conn, "XPENDING", &self.key, Args::new().arg(self.group.as_str())).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(topic = %self.topic, error = %e, "cannot look at the partition's pending entries");
                return true;
            }
        };
        // [count, first id, last id, [[consumer, count], ...]]
        let mut reply = reply.into_array().into_iter();
        let oldest = reply.nth(1).and_then(|v| v.as_string()).and_then(|id| id.parse::<tributary_core::EntryId>().ok());
        // The oldest pending entry, older than this read and not held here: left by a read of
        // an earlier run (the counts below miss it while acknowledgements are on their way).
        if oldest.is_some_and(|id| id < first_read && !self.held.lock().expect("held lock").contains_key(&id)) {
            return true;
        }
        let consumers = reply.nth(1).map(Value::into_array).unwrap_or_default();
        consumers.into_iter().any(|row| {
            let mut cols = row.into_array().into_iter();
            let name = cols.next().and_then(|v| v.into_string()).unwrap_or_default();
            // The count comes as a bulk string.
            let count: usize =
                cols.next().and_then(|v| v.as_string()).and_then(|c| c.parse().ok()).unwrap_or(usize::MAX);
            name != self.config.consumer_name || count > held + read
        })
    }
}

/// A partition this member consumes.
struct Owned {
    fence: Arc<Fence>,
    stop: CancellationToken,
    /// Set once it is being handed over (stopping): its lease is renewed until it stopped.
    leaving: bool,
}

/// One member's part in consuming a partitioned topic: its partitions' consumers, started and
/// stopped as the assignment changes, and the topic's own stream (entries published there
/// before the topic was partitioned, or by writers that do not partition), consumed as a topic
/// of one stream.
pub(crate) struct PartitionedTopic {
    shared: Arc<Shared>,
    topic: Topic,
    partitions: u32,
    route: Arc<Consuming>,
    /// Whether to consume the topic's own stream too (false when it runs already: the topic
    /// was partitioned after the worker started it).
    own_stream: bool,
}

impl PartitionedTopic {
    pub(crate) fn new(
        shared: Arc<Shared>,
        topic: Topic,
        partitions: u32,
        route: Arc<Consuming>,
        own_stream: bool,
    ) -> Self {
        Self { shared, topic, partitions, route, own_stream }
    }

    /// Runs until the worker stops; then stops its partitions gracefully, leaves the group's
    /// members and releases its leases. `named`: counted by `WorkerHandle::ready` once its
    /// first assignment round is done.
    pub(crate) async fn run(self, named: bool) {
        let lease = self.shared.config.partition_lease;
        let tick = lease / 3;
        let ns = self.shared.conn.namespace().clone();
        let members_key = ns.partition_members(&self.topic, &self.shared.group);
        let me = self.shared.config.consumer_name.clone();
        tracing::info!(topic = %self.topic, group = %self.shared.group, partitions = self.partitions, consumer = %me,
            "joining the group's members of a partitioned topic");
        let mut tasks: JoinSet<()> = JoinSet::new();
        // Which partition each task consumes (the topic's own stream's is not in it).
        let mut task_of: HashMap<tokio::task::Id, u32> = HashMap::new();
        // The topic's own stream, as any topic.
        if self.own_stream {
            let base = TopicConsumer::new(
                &self.shared,
                self.topic.clone(),
                self.route.handler.clone(),
                &self.route.options,
                self.route.metrics.clone(),
                None,
            );
            tasks.spawn(base.run(false));
        }
        // Every partition's group exists from the start, at the configured position: a
        // partition first taken later must not skip what was published to it meanwhile.
        self.create_groups().await;
        let mut owned: BTreeMap<u32, Owned> = BTreeMap::new();
        let mut alive = Alive::default();
        let mut assignment: (Vec<String>, Vec<u32>) = (Vec::new(), Vec::new());
        let mut counted = !named;
        let mut next_tick = tokio::time::Instant::now();
        // Releases run beside the loop: awaited in it, one slow node would hold back the
        // renewals of every lease.
        let mut releasing: JoinSet<()> = JoinSet::new();
        // Since when, and when last said, heartbeats fail: said at once, then every 10 s.
        let mut unheard: Option<(Instant, Option<Instant>)> = None;
        // Partitions whose consumer panicked, not taken again before the time given.
        let mut resting: HashMap<u32, Instant> = HashMap::new();
        // No partition not held is taken before then (`Heard::settling`).
        let mut settling: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                _ = self.shared.stop.cancelled() => break,
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    // A partition's consumer ended: handed over, or stopped itself when its
                    // lease may have run out. Its lease is released (if still its own).
                    let (p, panicked) = self.ended(done, &mut task_of);
                    if let Some((p, o)) = p.and_then(|p| owned.remove(&p).map(|o| (p, o))) {
                        if panicked {
                            // Taken again after a lease, as if this member had crashed: a panic
                            // that comes back costs one line a lease, not one a tick.
                            resting.insert(p, Instant::now() + lease);
                        }
                        releasing.spawn(self.release(p, o.fence, tick));
                    }
                    continue;
                }
                Some(_) = releasing.join_next(), if !releasing.is_empty() => continue,
                _ = tokio::time::sleep_until(next_tick) => {}
            }
            next_tick = tokio::time::Instant::now() + tick;
            // Each step bounded by a tick: a slow Redis delays the next round, never stalls the
            // loop (leases not renewed in time run out, and their partitions stop).
            let heard = within(tick, "EVALSHA", self.heartbeat(&members_key, &me, lease, false)).await;
            // Unheard (Redis full, or the members' key unreachable), this member knows nothing
            // new of the others: it keeps what it holds for as long as its leases renew, and
            // takes nothing but what it was last assigned (a partition it gave up comes back;
            // the leases keep it from taking one another holds).
            let heard = match heard {
                Ok(heard) => {
                    if let Some((since, _)) = unheard.take() {
                        tracing::info!(topic = %self.topic, group = %self.shared.group,
                            "heard by the group's members again after {:?}", since.elapsed());
                    }
                    if let Some(until) = heard.settling {
                        if !settling.is_some_and(|s| s > Instant::now()) {
                            tracing::warn!(topic = %self.topic, group = %self.shared.group,
                                wait = ?until.saturating_duration_since(Instant::now()),
                                "Redis lost the topic's keys, its partitions' leases with them; no partition is \
                                 taken until the former holders' leases would have run out");
                        }
                        settling = Some(until);
                    }
                    // Computed again only when the members change (a sort of partitions x members).
                    let mut members = alive.update(heard);
                    members.sort_unstable();
                    if assignment.0 != members {
                        assignment = (members.clone(), assigned(&members, &me, self.partitions));
                    }
                    true
                }
                Err(e) => {
                    let now = Instant::now();
                    let (since, said) = unheard.get_or_insert((now, None));
                    if !said.is_some_and(|said| now - said < Duration::from_secs(10)) {
                        *said = Some(now);
                        tracing::warn!(topic = %self.topic, group = %self.shared.group, error = %e,
                            failing_for = ?since.elapsed(),
                            "cannot renew this member of a partitioned topic; it keeps the partitions it holds \
                             while their leases renew, and takes none but those last assigned to it");
                    }
                    false
                }
            };
            let wanted = &assignment.1;
            // Renew what is held (being handed over included); stop what was lost or is no
            // longer assigned.
            self.renew(&mut owned, lease, tick).await;
            for (p, o) in owned.iter_mut() {
                let unassigned = heard && !wanted.contains(p);
                if !o.leaving && (unassigned || !o.fence.holds()) {
                    tracing::info!(topic = %self.topic, group = %self.shared.group, partition = p,
                        held = o.fence.holds(), "handing over a partition");
                    o.leaving = true;
                    o.stop.cancel();
                }
            }
            // Take what is assigned and free, all at once.
            let now = Instant::now();
            resting.retain(|_, until| *until > now);
            let settled = !settling.is_some_and(|until| until > now);
            let free: Vec<u32> = wanted
                .iter()
                .copied()
                .filter(|p| settled && !owned.contains_key(p) && !resting.contains_key(p))
                .collect();
            let taken = futures::future::join_all(free.iter().map(|p| self.acquire(*p, lease, tick))).await;
            let mut failed = Failed::default();
            for (p, fence) in free.into_iter().zip(taken) {
                let fence = match fence {
                    Ok(Some(fence)) => fence,
                    Ok(None) => continue,
                    Err(e) => {
                        failed.add(p, e);
                        continue;
                    }
                };
                tracing::info!(topic = %self.topic, group = %self.shared.group, partition = p, consumer = %me,
                    "took a partition");
                let stop = self.shared.stop.child_token();
                let role = PartitionRole { stop: stop.clone(), fence: fence.clone() };
                let consumer = TopicConsumer::new(
                    &self.shared,
                    self.topic.partition(p),
                    self.route.handler.clone(),
                    &self.route.options,
                    self.route.metrics.clone(),
                    Some(role),
                );
                let task = tasks.spawn(consumer.run(false));
                task_of.insert(task.id(), p);
                owned.insert(p, Owned { fence, stop, leaving: false });
            }
            failed.say(&self.topic, &self.shared.group, "cannot take partitions' leases; trying again next tick");
            if !counted {
                counted = true;
                self.shared.prepared.send_modify(|n| *n += 1);
            }
        }
        // Stopping: leave the members at once, so the others take over without waiting for this
        // membership to run out; renew the leases while the partitions drain.
        let left = within(tick, "EVALSHA", self.heartbeat(&members_key, &me, lease, true)).await;
        if let Err(e) = left {
            tracing::warn!(topic = %self.topic, error = %e,
                "could not leave the members of a partitioned topic; the others take over when its membership runs out");
        }
        let mut renew_at = tokio::time::Instant::now() + tick;
        while !tasks.is_empty() {
            tokio::select! {
                done = tasks.join_next_with_id() => {
                    let Some(done) = done else { break };
                    let (p, _) = self.ended(done, &mut task_of);
                    if let Some((p, o)) = p.and_then(|p| owned.remove(&p).map(|o| (p, o))) {
                        releasing.spawn(self.release(p, o.fence, tick));
                    }
                }
                _ = tokio::time::sleep_until(renew_at) => {
                    renew_at = tokio::time::Instant::now() + tick;
                    self.renew(&mut owned, lease, tick).await;
                }
            }
        }
        while releasing.join_next().await.is_some() {}
    }

    /// Creates the group on every partition (`MKSTREAM`), at the worker's start position;
    /// failures are logged (a partition's consumer creates its group again when it starts).
    async fn create_groups(&self) {
        let conn = &self.shared.conn;
        let start = self.shared.config.start.group_cursor();
        let creates = (0..self.partitions).map(|p| {
            let key = conn.namespace().topic_stream(&self.topic.partition(p));
            let args = Args::new().arg(self.shared.group.as_str()).arg(start.as_str()).arg("MKSTREAM");
            async move { call_sub::<Value>(conn, "XGROUP", "CREATE", &key, args).await }
        });
        for result in futures::future::join_all(creates).await {
            match result {
                Ok(_) => {}
                Err(e) if e.is_server_error("BUSYGROUP") => {}
                Err(e) => tracing::warn!(topic = %self.topic, error = %e, "could not create the group on a partition"),
            }
        }
    }

    /// Says this member is alive (or leaves), and returns the live members. Puts the topic's
    /// partition count back when it is gone.
    async fn heartbeat(&self, key: &str, me: &str, lease: Duration, leave: bool) -> Result<Heard, RedisError> {
        let args = vec![
            Value::from(me),
            Value::from(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)),
            Value::from(if leave { "1" } else { "0" }),
            Value::from(i64::from(self.partitions)),
        ];
        let count = self.shared.conn.namespace().partitions_key(&self.topic);
        let reply: Vec<Value> = PARTITION_MEMBERS.run(&self.shared.conn, vec![key.to_owned(), count], args).await?;
        let mut reply = reply.into_iter();
        if reply.next().and_then(|v| v.as_i64()) == Some(1) {
            tracing::error!(topic = %self.topic, partitions = self.partitions,
                "the topic's partition count was gone (Redis restarted without persistence, or the key was \
                 deleted); put it back, so producers keep partitioning the topic");
        }
        let now = reply.next().and_then(|v| v.as_i64()).unwrap_or(0);
        let mut rows = Vec::new();
        let mut settling = None;
        while let (Some(member), Some(score)) = (reply.next(), reply.next()) {
            let score = score.as_f64().unwrap_or(0.0) as i64;
            match member.into_string() {
                // Not a member: the count was put back, see `Heard::settling`.
                Some(m) if m.is_empty() => {
                    settling = Some(Instant::now() + Duration::from_millis(u64::try_from(score - now).unwrap_or(0)));
                }
                Some(m) => rows.push((m, score)),
                None => {}
            }
        }
        Ok(Heard { now, rows, settling })
    }

    /// A task of this member ended: the partition it consumed (`None`: the topic's own stream),
    /// and whether it panicked (said at `error`; its handlers were abandoned and a partition's
    /// lease given up as it unwound, `topic::Unfinished`).
    fn ended(
        &self,
        done: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
        task_of: &mut HashMap<tokio::task::Id, u32>,
    ) -> (Option<u32>, bool) {
        let (id, panic) = match done {
            Ok((id, ())) => (id, None),
            Err(e) => (e.id(), e.try_into_panic().ok()),
        };
        let p = task_of.remove(&id);
        if let Some(panic) = &panic {
            let panic = super::panic_message(panic.as_ref());
            match p {
                Some(p) => tracing::error!(topic = %self.topic, group = %self.shared.group, partition = p, panic,
                    "a partition's consumer panicked (a bug in tributary: please report it); this member takes the \
                     partition again after a lease"),
                None => tracing::error!(topic = %self.topic, group = %self.shared.group, panic,
                    "the consumer of the topic's own stream panicked (a bug in tributary: please report it); this \
                     worker no longer consumes that stream until it is restarted"),
            }
        }
        (p, panic.is_some())
    }

    /// Takes partition `p`'s lease if nobody holds it (`None` if somebody does), waiting at most
    /// `bound` for Redis.
    async fn acquire(&self, p: u32, lease: Duration, bound: Duration) -> Result<Option<Arc<Fence>>, RedisError> {
        let conn = &self.shared.conn;
        let key = conn.namespace().partition_lease(&self.topic.partition(p), &self.shared.group);
        let token = format!("{}/{:016x}", self.shared.config.consumer_name, rand_token());
        let sent_at = Instant::now();
        let ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let set = call::<Value>(conn, "SET", &key, Args::new().arg(token.as_str()).arg("NX").arg("PX").arg(ms));
        match within(bound, "SET", set).await {
            Ok(Value::Null) => Ok(None),
            Ok(_) => Ok(Some(Arc::new(Fence::taken(key, token, sent_at, lease, self.shared.stats.clone())))),
            Err(e) => {
                // It may have been taken all the same (the reply was lost): give it back, so
                // the partition does not wait a whole lease for nobody. A reply (a refusal such
                // as OOM) says nothing was taken.
                if matches!(e.kind(), tributary_core::ErrorKind::Timeout | tributary_core::ErrorKind::Connection) {
                    let fence = Fence::taken(key, token, sent_at, Duration::ZERO, self.shared.stats.clone());
                    tokio::spawn(self.release(p, Arc::new(fence), bound));
                }
                Err(e)
            }
        }
    }

    /// Renews the leases held, all at once, waiting at most `bound` for the replies; a lease
    /// found another's (or gone) is lost: its partition stops (it settles nothing more: the
    /// fence).
    async fn renew(&self, owned: &mut BTreeMap<u32, Owned>, lease: Duration, bound: Duration) {
        let conn = &self.shared.conn;
        let ms = Value::from(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let sent_at = Instant::now();
        // Each bounded on its own: one slow node must not cost the leases the others renewed.
        let renewals = owned.iter().map(|(p, o)| {
            let args = vec![Value::from(o.fence.token.as_str()), ms.clone()];
            async move {
                let renew = LEASE_RENEW.run::<i64>(conn, vec![o.fence.lease_key.clone()], args);
                let renewed = within(bound, "EVALSHA", renew).await;
                (*p, renewed)
            }
        });
        let results: BTreeMap<u32, Result<i64, RedisError>> =
            futures::future::join_all(renewals).await.into_iter().collect();
        let mut failed = Failed::default();
        for (p, result) in results {
            let Some(o) = owned.get_mut(&p) else { continue };
            match result {
                Ok(1) => o.fence.extend(sent_at, lease),
                Ok(_) => {
                    if !o.leaving {
                        tracing::warn!(topic = %self.topic, group = %self.shared.group, partition = p,
                            "lost a partition's lease (it ran out, or the key was deleted); stopping it");
                    }
                    o.fence.lose();
                    o.leaving = true;
                    o.stop.cancel();
                }
                Err(e) => failed.add(p, e),
            }
        }
        failed.say(
            &self.topic,
            &self.shared.group,
            "cannot renew partitions' leases; each stops if its lease runs out",
        );
    }

    /// Releases partition `p`'s lease after its consumer stopped, for the next owner to take it
    /// at once (if it is still this holder's), waiting at most `bound` for Redis.
    fn release(
        &self,
        p: u32,
        fence: Arc<Fence>,
        bound: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (conn, topic) = (self.shared.conn.clone(), self.topic.clone());
        async move {
            let args = vec![Value::from(fence.token.as_str())];
            let release = LEASE_RELEASE.run::<i64>(&conn, vec![fence.lease_key.clone()], args);
            let released = within(bound, "EVALSHA", release).await;
            if let Err(e) = released {
                tracing::warn!(topic = %topic, partition = p, error = %e,
                    "could not release a partition's lease; the next owner takes it when it runs out");
            }
        }
    }
}

/// What `command` (`reply`) answers within `bound`, or a timeout error (it may have run all the
/// same).
async fn within<T>(
    bound: Duration,
    command: &'static str,
    reply: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, RedisError> {
    tokio::time::timeout(bound, reply).await.unwrap_or_else(|_| {
        let e = fred::error::Error::new(fred::error::ErrorKind::Timeout, format!("no reply within {bound:?}"));
        Err(RedisError::new(command, e))
    })
}

/// The partitions a command failed for in one tick, said in one line: in an outage every
/// partition's command fails at every tick.
#[derive(Default)]
struct Failed {
    partitions: Vec<u32>,
    first: Option<RedisError>,
}

impl Failed {
    fn add(&mut self, p: u32, e: RedisError) {
        self.partitions.push(p);
        self.first.get_or_insert(e);
    }

    /// Says `what` at `warn`, if anything failed.
    fn say(self, topic: &Topic, group: &str, what: &str) {
        if let Some(e) = self.first {
            tracing::warn!(topic = %topic, group, partitions = ?self.partitions, error = %e, "{what}");
        }
    }
}

/// What a heartbeat heard: Redis' time and every member with its score (ms).
struct Heard {
    now: i64,
    rows: Vec<(String, i64)>,
    /// Until when (this process' clock) no member takes a partition it does not hold: Redis
    /// lost the topic's keys (the count had to be put back), leases included, and their former
    /// holders may still run until their leases would have run out.
    settling: Option<Instant>,
}

/// The members this one knows alive, each until its membership runs out by this process' clock.
///
/// Remembered rather than taken from each heartbeat alone: a member is gone only when its
/// membership ran out or it left, never because the sorted set was lost (Redis restarted
/// without persistence). Otherwise the first member to beat after such a restart would find
/// itself alone and take partitions the others still consume.
#[derive(Default)]
struct Alive(HashMap<String, Instant>);

impl Alive {
    /// Takes in what a heartbeat heard; returns the members alive now.
    fn update(&mut self, heard: Heard) -> Vec<String> {
        let local = Instant::now();
        for (member, score) in heard.rows {
            if score < 0 {
                // It left.
                self.0.remove(&member);
                continue;
            }
            let until = local + Duration::from_millis(u64::try_from(score - heard.now).unwrap_or(0));
            let known = self.0.entry(member).or_insert(until);
            *known = (*known).max(until);
        }
        self.0.retain(|_, until| *until > local);
        self.0.keys().cloned().collect()
    }
}

/// The partitions of `partitions` assigned to `me` among `members` (`partition::owners`).
/// None when `me` is not among them (or there are no members).
pub(crate) fn assigned(members: &[String], me: &str, partitions: u32) -> Vec<u32> {
    let names: Vec<&str> = members.iter().map(String::as_str).collect();
    let owners = tributary_core::partition::owners(&names, partitions);
    (0..partitions).filter(|p| owners.get(*p as usize) == Some(&me)).collect()
}

/// A token no other holder has: the time and a counter, mixed.
fn rand_token() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(17) ^ u64::from(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_partition_is_assigned_to_exactly_one_member() {
        let members: Vec<String> = ["c", "a", "b"].map(String::from).to_vec();
        let mut all: Vec<u32> = ["a", "b", "c"].iter().flat_map(|m| assigned(&members, m, 8)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..8).collect::<Vec<_>>());
        assert_eq!(assigned(&members, "d", 8), Vec::<u32>::new(), "not a member: nothing");
        let alone = vec!["a".to_owned()];
        assert_eq!(assigned(&alone, "a", 3), vec![0, 1, 2]);
        assert_eq!(assigned(&[], "a", 3), Vec::<u32>::new(), "no members: nothing");
    }

    #[test]
    fn members_are_alive_until_their_membership_runs_out_or_they_leave_not_when_the_set_is_lost() {
        let mut alive = Alive::default();
        let heard = |rows: &[(&str, i64)]| Heard {
            now: 1_000,
            rows: rows.iter().map(|(m, s)| ((*m).to_owned(), *s)).collect(),
            settling: None,
        };
        let mut members = alive.update(heard(&[("a", 11_000), ("b", 11_000), ("c", 11_000)]));
        members.sort();
        assert_eq!(members, ["a", "b", "c"]);
        // The set was lost (Redis restarted empty): only a has beaten since.
        let mut members = alive.update(heard(&[("a", 11_000)]));
        members.sort();
        assert_eq!(members, ["a", "b", "c"], "b and c are alive until their memberships run out");
        // c left.
        let mut members = alive.update(heard(&[("a", 11_000), ("c", -900)]));
        members.sort();
        assert_eq!(members, ["a", "b"]);
        // b's membership ran out without a beat; d's runs out as it is heard.
        alive.0.insert("b".into(), Instant::now() - Duration::from_millis(1));
        let members = alive.update(heard(&[("a", 11_000), ("d", 1_000)]));
        assert_eq!(members, ["a"]);
    }

    #[test]
    fn a_fence_holds_for_nine_tenths_of_the_lease_from_when_it_was_asked_and_never_again_once_run_out() {
        let stats = Arc::new(Stats::default());
        let fence = Fence::taken("k".into(), "t".into(), Instant::now(), Duration::from_secs(10), stats.clone());
        assert!(fence.holds());
        let until = fence.valid_until.load(Ordering::Acquire);
        assert!((8_900..=9_100).contains(&until), "{until} ms");
        fence.extend(fence.since, Duration::from_secs(1));
        assert_eq!(fence.valid_until.load(Ordering::Acquire), until, "an older renewal never shortens it");

        let fence = Fence::taken("k".into(), "t".into(), Instant::now(), Duration::ZERO, stats.clone());
        assert!(!fence.holds(), "a lease of no time never holds");
        fence.extend(Instant::now(), Duration::from_secs(10));
        assert!(!fence.holds(), "a late renewal does not make a fence that ran out hold again");
        fence.lose();
        assert_eq!(stats.snapshot().partitions_lost, 1, "lost once, counted once");

        let fence = Fence::taken("k".into(), "t".into(), Instant::now(), Duration::from_secs(10), stats.clone());
        fence.give_up();
        assert!(!fence.holds());
        fence.lose();
        assert_eq!(stats.snapshot().partitions_lost, 1, "given up is not lost");
    }
}
