//! Taking over pending entries: this consumer's own at start, other (dead) consumers' after
//! `claim_idle`; renewing the entries this consumer holds so live work is not taken over;
//! removing long-idle consumers that hold nothing; moving due scheduled messages.

use std::sync::Arc;
use std::time::Duration;

use fred::types::Value;
use tributary_core::{EntryId, RedisError};

use super::dispatch::Taken;
use super::stats::Stats;
use super::topic::{Slots, TopicConsumer};
use crate::redis::{call, parse_entries, parse_pending, Args, PendingEntry};
use crate::scripts::{CLAIM_OWNED, DELETE_IDLE_CONSUMERS};
use crate::Scheduler;

impl TopicConsumer {
    /// Re-delivers what this consumer name holds in Redis but not in memory: at start, what
    /// its previous run left; after a connection was lost, entries whose `XREADGROUP` (or
    /// `XCLAIM`) reply was lost with it (Redis recorded them as delivered here, the reply never
    /// came).
    /// Entries held in memory (running, waiting to retry or to be acked) are left alone.
    pub(crate) async fn recover_own_pending(self: &Arc<Self>) -> Result<(), RedisError> {
        let mut start = "-".to_owned();
        loop {
            let page = self.config.batch_size;
            let args = Args::new()
                .arg(self.group.as_str())
                .arg(start.as_str())
                .arg("+")
                .arg(page as i64)
                .arg(self.config.consumer_name.as_str());
            let rows = parse_pending(call::<Value>(self.conn.redis(), "XPENDING", &self.key, args).await?)?;
            let Some(last) = rows.last() else { return Ok(()) };
            start = format!("({}", last.id);
            let full = rows.len() == page;
            let rows = self.not_held(rows);
            if !rows.is_empty() {
                self.claim_and_dispatch(rows, Duration::ZERO, Slots::All).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// `rows` without the entries this consumer holds in memory: claiming one of those again
    /// would count a delivery that did not happen.
    fn not_held(&self, rows: Vec<PendingEntry>) -> Vec<PendingEntry> {
        let held = self.held.lock().expect("held lock");
        rows.into_iter().filter(|r| !held.contains(&r.id)).collect()
    }

    /// Claims `rows` for this consumer (those still idle at least `min_idle`) and dispatches
    /// them, each counted as one more delivery, as many as `slots` gets in-flight slots for.
    async fn claim_and_dispatch(
        self: &Arc<Self>,
        rows: Vec<PendingEntry>,
        min_idle: Duration,
        slots: Slots,
    ) -> Result<usize, RedisError> {
        let Some(mut permits) = self.take_slots(rows.len(), slots).await else { return Ok(0) };
        let rows = &rows[..permits.num_permits()];
        let mut args = Args::new()
            .arg(self.group.as_str())
            .arg(self.config.consumer_name.as_str())
            .arg(i64::try_from(min_idle.as_millis()).unwrap_or(i64::MAX));
        for row in rows {
            args.push(row.id.to_string());
        }
        // XCLAIM re-checks the idle time atomically, so two consumers sweeping at once never
        // both get an entry; entries deleted meanwhile drop out of the PEL (Redis >= 7).
        let claimed = parse_entries("XCLAIM", call::<Value>(self.conn.redis(), "XCLAIM", &self.key, args).await?)?;
        let mut taken = Vec::with_capacity(claimed.len());
        {
            // A sweep and a recovery may claim the same entry at once (the first claim resets
            // its idle time, which the second's zero minimum accepts): the first to mark it
            // held handles it, the other lets it go.
            let mut held = self.held.lock().expect("held lock");
            for entry in claimed {
                if held.contains(&entry.id) {
                    continue;
                }
                let Some(permit) = permits.split(1) else { break };
                held.insert(entry.id);
                let row = rows.iter().find(|r| r.id == entry.id);
                let deliveries = row.map_or(1, |r| r.deliveries + 1);
                if let Some(row) = row.filter(|r| r.consumer != self.config.consumer_name) {
                    tracing::debug!(topic = %self.topic, entry_id = %row.id, from = %row.consumer, "claimed entry");
                }
                taken.push(Taken { entry, deliveries, permit });
            }
        }
        let count = taken.len();
        self.budget.give_back(permits.num_permits());
        drop(permits);
        self.dispatch(taken).await;
        Stats::add(&self.stats.reclaimed, count as u64);
        Ok(count)
    }

    /// Background duties while consuming: reclaim sweeps, lease renewal, consumer clean-up.
    pub(crate) async fn helper_loops(self: Arc<Self>) {
        let lease = {
            let this = self.clone();
            async move {
                loop {
                    tokio::time::sleep(this.config.lease_interval()).await;
                    if let Err(e) = this.renew_leases().await {
                        tracing::warn!(topic = %this.topic, error = %e, "lease renewal failed");
                    }
                }
            }
        };
        let sweep = {
            let this = self.clone();
            async move {
                let mut rounds: u64 = 0;
                loop {
                    tokio::time::sleep(this.config.claim_interval()).await;
                    if let Err(e) = this.reclaim_idle().await {
                        tracing::warn!(topic = %this.topic, error = %e, "reclaim sweep failed");
                    }
                    rounds += 1;
                    if rounds % 20 == 1 {
                        if let Err(e) = this.remove_idle_consumers().await {
                            tracing::warn!(topic = %this.topic, error = %e, "idle consumer clean-up failed");
                        }
                    }
                }
            }
        };
        let mover = {
            let this = self.clone();
            async move {
                match this.config.schedule_poll {
                    Some(poll) => Scheduler::new(this.conn.clone()).run(&this.topic, poll).await,
                    None => std::future::pending().await,
                }
            }
        };
        tokio::join!(lease, sweep, mover);
    }

    /// Takes over entries idle longer than `claim_idle`: held by consumers that died, or by
    /// this one when a read reply was lost on the wire.
    ///
    /// It looks even when every in-flight slot is taken, and then waits for one: the read loop
    /// holds up to `batch_size` slots while its read blocks, so with `max_in_flight` at or below
    /// `batch_size` a sweep that needed a free slot to start would never run while the topic
    /// is quiet, and a dead consumer's entries would wait for ever. (The semaphore serves
    /// waiters in order: the slots the read gives back next go to the sweep.)
    async fn reclaim_idle(self: &Arc<Self>) -> Result<(), RedisError> {
        let want = self.config.batch_size.min(self.config.max_in_flight).max(1);
        let idle_ms = i64::try_from(self.config.claim_idle.as_millis()).unwrap_or(i64::MAX);
        let args = Args::new().arg(self.group.as_str()).arg("IDLE").arg(idle_ms).arg("-").arg("+").arg(want as i64);
        let rows = parse_pending(call::<Value>(self.conn.redis(), "XPENDING", &self.key, args).await?)?;
        let rows = self.not_held(rows);
        if rows.is_empty() {
            return Ok(());
        }
        let n = self.claim_and_dispatch(rows, self.config.claim_idle, Slots::AtLeastOne).await?;
        if n > 0 {
            tracing::info!(topic = %self.topic, group = %self.group, claimed = n, "took over idle pending entries");
        }
        Ok(())
    }

    /// Resets the idle time of every entry this consumer holds, so others do not take over
    /// work that is running or waiting to retry.
    async fn renew_leases(&self) -> Result<(), RedisError> {
        let held: Vec<EntryId> = self.held.lock().expect("held lock").iter().copied().collect();
        for chunk in held.chunks(256) {
            let mut args: Vec<Value> =
                vec![self.group.as_str().into(), self.config.consumer_name.as_str().into(), "lease".into()];
            args.extend(chunk.iter().map(|id| Value::from(id.to_string())));
            let owned: Vec<String> = CLAIM_OWNED.run(self.conn.redis(), vec![self.key.clone()], args).await?;
            if owned.len() < chunk.len() {
                tracing::warn!(topic = %self.topic, lost = chunk.len() - owned.len(),
                    "entries held here were taken over by another consumer (this one was presumed dead)");
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
        let removed: i64 = DELETE_IDLE_CONSUMERS.run(self.conn.redis(), vec![self.key.clone()], args).await?;
        if removed > 0 {
            tracing::info!(topic = %self.topic, group = %self.group, removed, "removed idle consumers with nothing pending");
        }
        Ok(())
    }
}
