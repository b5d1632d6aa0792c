//! Taking over pending entries: this consumer's own at start, other (dead) consumers' after
//! `claim_idle`; renewing the entries this consumer holds so live work is not taken over;
//! removing long-idle consumers that hold nothing; moving due scheduled messages.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::types::Value;
use tributary_core::{EntryId, RedisError};

use super::dispatch::Taken;
use super::stats::Stats;
use super::topic::{Held, TopicConsumer};
use super::upkeep::{Duty, QUIET_SWEEPS_PER_S};
use crate::redis::{call, parse_entries, parse_pending, Args, PendingEntry};
use crate::scripts::{CLAIM_OWNED, DELETE_IDLE_CONSUMERS};

impl TopicConsumer {
    /// Re-delivers what this consumer name holds in Redis but not in memory: at start, what
    /// its previous run left; after a connection was lost, entries whose `XREADGROUP` (or
    /// `XCLAIM`) reply was lost with it (Redis recorded them as delivered here, the reply never
    /// came). Entries held in memory (running, waiting to retry or to be acked) are left alone.
    ///
    /// Page by page, each as far as there are free slots: however many entries the name holds
    /// (more than `max_in_flight`, say), they go through the handlers a slot at a time.
    ///
    /// Of a partition, recovers every entry pending in the group, whoever holds it.
    pub(crate) async fn recover_own_pending(self: &Arc<Self>) -> Result<(), RedisError> {
        let page = self.config.batch_size.min(self.config.max_in_flight).max(1);
        let mut start = "-".to_owned();
        loop {
            let mut args = Args::new().arg(self.group.as_str()).arg(start.as_str()).arg("+").arg(page as i64);
            // Of a partition, every entry pending in the group is its owner's to handle, before
            // any new one: what the consumers that had it before left (`partitions.rs`).
            if self.fence.is_none() {
                args = args.arg(self.config.consumer_name.as_str());
            }
            let rows = match call::<Value>(&self.conn, "XPENDING", &self.key, args).await {
                Ok(reply) => parse_pending(reply)?,
                Err(e) if Self::is_group_lost(&e) => {
                    // Nothing of this consumer's survives with the group.
                    return self.restore_group().await;
                }
                Err(e) => return Err(e),
            };
            let Some(last) = rows.last() else { return Ok(()) };
            start = format!("({}", last.id);
            let full = rows.len() == page;
            let mut rows = self.not_held(rows);
            while !rows.is_empty() {
                let Some((done, _)) = self.claim_and_dispatch(&rows, Duration::ZERO).await? else {
                    return Ok(()); // stopping, or the worker's limit is reached
                };
                rows.drain(..done);
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Slots for a claim, ahead of the read loop: it waits while a claim does, and a blocked
    /// read holding the slots is woken to give them back.
    async fn take_slots_before_reads(&self, want: usize) -> Option<super::topic::Slots> {
        struct Waiting<'a>(&'a TopicConsumer);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.claims_waiting.fetch_sub(1, Ordering::AcqRel);
                self.0.claim_turn.notify_waiters();
            }
        }
        self.claims_waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(self);
        if self.in_flight.available_permits() == 0 || self.admit.available_permits() == 0 {
            // Only a read in flight now is woken (no permit is stored for a later one: the read
            // loop checks `claims_waiting` before it reads).
            self.wake_reader.notify_waiters();
        }
        self.take_slots(want).await
    }

    /// `rows` without the entries this consumer holds in memory: claiming one of those again
    /// would count a delivery that did not happen.
    fn not_held(&self, rows: Vec<PendingEntry>) -> Vec<PendingEntry> {
        let held = self.held.lock().expect("held lock");
        rows.into_iter().filter(|r| !held.contains_key(&r.id)).collect()
    }

    /// Claims the first of `rows` for this consumer, as many as there are free slots for
    /// (waiting for one), those still idle at least `min_idle`, and dispatches them, each
    /// counted as one more delivery. Returns how many rows it dealt with (claimed or not) and
    /// how many it claimed, or `None` when stopped first.
    async fn claim_and_dispatch(
        self: &Arc<Self>,
        rows: &[PendingEntry],
        min_idle: Duration,
    ) -> Result<Option<(usize, usize)>, RedisError> {
        let Some(mut slots) = self.take_slots_before_reads(rows.len()).await else { return Ok(None) };
        let rows = &rows[..slots.len()];
        let mut args = Args::new()
            .arg(self.group.as_str())
            .arg(self.config.consumer_name.as_str())
            .arg(i64::try_from(min_idle.as_millis()).unwrap_or(i64::MAX));
        for row in rows {
            args.push(row.id.to_string());
        }
        // XCLAIM re-checks the idle time atomically, so two consumers sweeping at once never
        // both get an entry; entries deleted meanwhile drop out of the PEL (Redis >= 7).
        let claimed = match call::<Value>(&self.conn, "XCLAIM", &self.key, args).await {
            Ok(reply) => parse_entries("XCLAIM", reply),
            Err(e) => Err(e),
        };
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                self.budget.give_back(slots.len());
                if Self::is_group_lost(&e) {
                    // Gone between the look and the claim: nothing left to claim.
                    self.restore_group().await?;
                    return Ok(None);
                }
                return Err(e);
            }
        };
        let mut taken = Vec::with_capacity(claimed.len());
        {
            // A sweep and a recovery may claim the same entry at once (the first claim resets
            // its idle time, which the second's zero minimum accepts): the first to mark it
            // held handles it, the other lets it go.
            let now = Instant::now();
            let mut held = self.held.lock().expect("held lock");
            let was_empty = held.is_empty();
            for entry in claimed {
                if held.contains_key(&entry.id) {
                    continue;
                }
                let Some((permit, admit)) = slots.take_one() else { break };
                held.insert(entry.id, Held { since: now, waiting: false, lost: false });
                let row = rows.iter().find(|r| r.id == entry.id);
                let deliveries = row.map_or(1, |r| r.deliveries + 1);
                if let Some(row) = row.filter(|r| r.consumer != self.config.consumer_name) {
                    tracing::debug!(topic = %self.topic, entry_id = %row.id, from = %row.consumer, "claimed entry");
                }
                taken.push(Taken { entry, deliveries, permit, admit });
            }
            if was_empty && !held.is_empty() {
                self.start_renewals();
            }
        }
        let count = taken.len();
        self.budget.give_back(slots.len());
        drop(slots);
        self.dispatch(taken).await;
        Stats::add(&self.stats.reclaimed, count as u64);
        self.metrics.reclaimed.increment(count as u64);
        Ok(Some((rows.len(), count)))
    }

    /// One lease renewal (run by the worker's upkeep task, `upkeep.rs`, every `claim_idle / 3`
    /// while the topic holds entries, from the first entry taken until the topic's handlers are
    /// done at a stop). It also watches whether handlers return at all: see `renew_leases`.
    pub(crate) async fn renew_turn(self: Arc<Self>) {
        if self.leases_over.load(Ordering::Acquire) || self.hard_stop.is_cancelled() {
            return;
        }
        let progressing = {
            let returned = self.returned.load(Ordering::Relaxed);
            let mut progress = self.progress.lock().expect("progress lock");
            if progress.0 != returned {
                *progress = (returned, Instant::now());
            }
            progress.1.elapsed() < self.config.claim_idle
        };
        tokio::select! {
            // A dropped worker renews nothing more: its entries are for live consumers.
            biased;
            _ = self.hard_stop.cancelled() => return,
            renewed = self.renew_leases(progressing) => {
                if let Err(e) = renewed {
                    tracing::warn!(topic = %self.topic, error = %e, "lease renewal failed");
                }
            }
        }
        let held = self.held.lock().expect("held lock");
        if held.is_empty() {
            // Nothing held, nothing to renew: the next entry taken starts renewals again.
            self.renewing.store(false, Ordering::Relaxed);
        } else {
            self.upkeep.schedule(
                tokio::time::Instant::now() + self.config.lease_interval(),
                self.this.clone(),
                Duty::Renew,
            );
        }
    }

    /// Whether a renewal due now has anything to do; if not, renewals stop until the next
    /// entry is taken (`start_renewals`).
    pub(crate) fn renewals_needed(&self) -> bool {
        if self.leases_over.load(Ordering::Acquire) || self.hard_stop.is_cancelled() {
            return false;
        }
        let held = self.held.lock().expect("held lock");
        if held.is_empty() {
            self.renewing.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Entries are held again: renew their leases from `lease_interval` on. Called with the
    /// `held` lock taken, which the renewal that found nothing held took too: no entry is left
    /// without renewals.
    pub(crate) fn start_renewals(&self) {
        if !self.renewing.swap(true, Ordering::Relaxed) {
            *self.progress.lock().expect("progress lock") = (self.returned.load(Ordering::Relaxed), Instant::now());
            self.upkeep.schedule(
                tokio::time::Instant::now() + self.config.lease_interval(),
                self.this.clone(),
                Duty::Renew,
            );
        }
    }

    /// Schedules `duty` again after its interval, in place of the run that panicked.
    pub(crate) fn after_panic(&self, duty: Duty) {
        let (after, next) = match duty {
            Duty::Sweep { .. } => (self.sweep_interval(false), Duty::Sweep { busy: false, paced: false }),
            Duty::Renew => (self.config.lease_interval(), Duty::Renew),
        };
        self.upkeep.schedule(tokio::time::Instant::now() + after, self.this.clone(), next);
    }

    /// Schedules the first reclaim sweep, at a random point of the first interval, so topics
    /// started together do not sweep together.
    pub(crate) fn start_sweeps(&self) {
        let first = self.sweep_interval(false).mul_f64(fastrand::f64());
        self.upkeep.schedule(
            tokio::time::Instant::now() + first,
            self.this.clone(),
            Duty::Sweep { busy: false, paced: false },
        );
    }

    /// One reclaim sweep (with a look at the group's cursor, and every 20th time a consumer
    /// clean-up), run by the worker's upkeep task until a graceful stop; then the next one is
    /// scheduled.
    ///
    /// A topic whose group had, at this sweep, entries pending that this consumer did not hold
    /// (other consumers' work, or entries left by a dead one) is swept again after
    /// `claim_interval`. Other topics are swept less often on a worker with many of them: all
    /// such quiet topics of a worker together take at most `QUIET_SWEEPS_PER_S` sweeps a
    /// second (`upkeep.rs`).
    pub(crate) async fn sweep_turn(self: Arc<Self>) {
        let round = self.sweeps.fetch_add(1, Ordering::Relaxed);
        let swept = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return,
            swept = self.sweep(round % 20 == 19) => swept,
        };
        let busy = match swept {
            Ok(busy) => busy,
            Err(e) => {
                // Paced like a quiet topic: during an outage, sweeps of many topics fail
                // together, and need not all be retried (and logged) every claim_interval.
                tracing::warn!(topic = %self.topic, error = %e, "reclaim sweep failed");
                false
            }
        };
        self.upkeep.schedule(
            tokio::time::Instant::now() + self.sweep_interval(busy),
            self.this.clone(),
            Duty::Sweep { busy, paced: false },
        );
    }

    /// How long until the next sweep: `claim_interval`, or for a quiet topic, what spreads
    /// the worker's quiet topics over [`QUIET_SWEEPS_PER_S`].
    fn sweep_interval(&self, busy: bool) -> Duration {
        let every = self.config.claim_interval();
        if busy {
            return every;
        }
        let topics = self.topics_running.load(Ordering::Relaxed) as f64;
        every.max(Duration::from_secs_f64(topics / QUIET_SWEEPS_PER_S))
    }

    /// One sweep: a look at the group (`XINFO GROUPS`: its cursor, noted for re-creating a
    /// lost group, and its pending count), then taking over entries idle for `claim_idle`
    /// when the group has entries pending that this consumer does not hold. `clean_up`:
    /// remove long-idle consumers too. True when there were such entries (the topic is busy).
    async fn sweep(self: &Arc<Self>, clean_up: bool) -> Result<bool, RedisError> {
        let Some((cursor, pending)) = self.group_info().await? else {
            self.restore_group().await?;
            return Ok(false);
        };
        {
            let mut last = self.last_read.lock().expect("last read lock");
            *last = (*last).max(cursor);
        }
        let held = self.held.lock().expect("held lock").len() as u64;
        if pending > held {
            if self.fence.is_some() {
                // Of a partition: every pending entry is its owner's, taken in id order by
                // the read loop (`recover_own_pending`), never beside it.
                self.recovery_wanted.store(true, Ordering::Release);
            } else {
                self.reclaim_idle().await?;
            }
        }
        if clean_up {
            if let Err(e) = self.remove_idle_consumers().await {
                tracing::warn!(topic = %self.topic, error = %e, "idle consumer clean-up failed");
            }
        }
        Ok(pending > held)
    }

    /// Takes over entries idle longer than `claim_idle`: held by consumers that died, handed
    /// back at a graceful stop, or held by this one when a read reply was lost on the wire.
    ///
    /// It looks even when every slot is taken, and then waits for one: the read loop holds
    /// up to `batch_size` slots while its read blocks, so with `max_in_flight` at or below
    /// `batch_size` a sweep that needed a free slot to start would never run while the topic
    /// is quiet, and a dead consumer's entries would wait for ever. (The semaphore serves
    /// waiters in order: the slots the read gives back next go to the sweep.)
    async fn reclaim_idle(self: &Arc<Self>) -> Result<(), RedisError> {
        let want = self.config.batch_size.min(self.config.max_in_flight).max(1);
        let idle_ms = i64::try_from(self.config.claim_idle.as_millis()).unwrap_or(i64::MAX);
        let args = Args::new().arg(self.group.as_str()).arg("IDLE").arg(idle_ms).arg("-").arg("+").arg(want as i64);
        let rows = match call::<Value>(&self.conn, "XPENDING", &self.key, args).await {
            Ok(reply) => parse_pending(reply)?,
            Err(e) if Self::is_group_lost(&e) => return self.restore_group().await,
            Err(e) => return Err(e),
        };
        let rows = self.not_held(rows);
        if rows.is_empty() {
            return Ok(());
        }
        let n = self.claim_and_dispatch(&rows, self.config.claim_idle).await?.map_or(0, |(_, claimed)| claimed);
        if n > 0 {
            tracing::info!(topic = %self.topic, group = %self.group, claimed = n, "took over idle pending entries");
        }
        Ok(())
    }

    /// Resets the idle time of the entries this consumer holds, so others do not take over
    /// work that is running, waiting to retry, being acknowledged, or queued here while the
    /// topic makes progress. When no handler of the topic has returned for `claim_idle`
    /// (`progressing` false: the instance looks wedged), entries that have waited to start for
    /// `claim_idle` are no longer renewed: a wedged instance must not keep work a live one
    /// could do. Such an entry is checked to be still this consumer's before it starts.
    async fn renew_leases(&self, progressing: bool) -> Result<(), RedisError> {
        let held: Vec<EntryId> = {
            let held = self.held.lock().expect("held lock");
            held.iter()
                .filter(|(_, h)| !h.lost && (!h.waiting || progressing || h.since.elapsed() < self.config.claim_idle))
                .map(|(id, _)| *id)
                .collect()
        };
        for chunk in held.chunks(256) {
            let mut args: Vec<Value> =
                vec![self.group.as_str().into(), self.config.consumer_name.as_str().into(), "lease".into()];
            args.extend(chunk.iter().map(|id| Value::from(id.to_string())));
            let reply = CLAIM_OWNED.run::<(Vec<String>, Vec<String>)>(&self.conn, vec![self.key.clone()], args);
            let (_, taken) = match reply.await {
                Ok(reply) => reply,
                Err(e) if Self::is_group_lost(&e) => return self.restore_group().await,
                Err(e) => return Err(e),
            };
            // Entries not renewed because another consumer holds them now. (Entries acked or
            // deleted meanwhile are simply no longer pending: not worth a word.)
            for pair in taken.chunks(2) {
                let [id, by] = pair else { continue };
                let Ok(id) = id.parse::<EntryId>() else { continue };
                let mut held = self.held.lock().expect("held lock");
                if let Some(h) = held.get_mut(&id).filter(|h| !h.lost) {
                    h.lost = true;
                    self.metrics.leases_lost.increment(1);
                    tracing::warn!(topic = %self.topic, group = %self.group, entry_id = %id, by = %by,
                        waiting = h.waiting, "entry held here was taken over by another consumer (this one was \
                        presumed dead: its leases lapsed for claim_idle)");
                }
            }
        }
        Ok(())
    }

    async fn remove_idle_consumers(&self) -> Result<(), RedisError> {
        let Some(idle) = self.config.consumer_idle_timeout else {
            return Ok(());
        };
        let args: Vec<Value> = vec![
            self.group.as_str().into(),
            Value::from(i64::try_from(idle.as_millis()).unwrap_or(i64::MAX)),
            self.config.consumer_name.as_str().into(),
        ];
        let removed: i64 = DELETE_IDLE_CONSUMERS.run(&self.conn, vec![self.key.clone()], args).await?;
        if removed > 0 {
            tracing::info!(topic = %self.topic, group = %self.group, removed, "removed idle consumers with nothing pending");
        }
        Ok(())
    }
}
