//! Counters a worker keeps, for tests, health checks and metrics export.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of a worker (all topics).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) delivered: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) reclaimed: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) tombstones: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) groups_recreated: AtomicU64,
    pub(crate) replays_for_other_groups: AtomicU64,
    pub(crate) partitions_lost: AtomicU64,
    /// Woken whenever entries are settled (see [`WorkerStats::settled`]).
    pub(crate) on_settled: tokio::sync::Notify,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` to a counter of settled entries and wakes those waiting for a number of them.
    pub(crate) fn settle(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
        self.on_settled.notify_waiters();
    }

    /// Waits until `n` entries are settled.
    pub(crate) async fn settled(&self, n: u64) -> WorkerStats {
        loop {
            let woken = self.on_settled.notified();
            tokio::pin!(woken);
            // Registered before the check: a settle between the check and the wait wakes it.
            woken.as_mut().enable();
            let stats = self.snapshot();
            if stats.settled() >= n {
                return stats;
            }
            woken.await;
        }
    }

    pub(crate) fn snapshot(&self) -> WorkerStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerStats {
            delivered: g(&self.delivered),
            acked: g(&self.acked),
            retried: g(&self.retried),
            dead_lettered: g(&self.dead_lettered),
            malformed: g(&self.malformed),
            reclaimed: g(&self.reclaimed),
            panics: g(&self.panics),
            tombstones: g(&self.tombstones),
            expired: g(&self.expired),
            timed_out: g(&self.timed_out),
            released: g(&self.released),
            groups_recreated: g(&self.groups_recreated),
            replays_for_other_groups: g(&self.replays_for_other_groups),
            partitions_lost: g(&self.partitions_lost),
        }
    }
}

/// A snapshot of a worker's counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Handler invocations (every attempt counts).
    pub delivered: u64,
    /// Entries acknowledged after their handler succeeded.
    pub acked: u64,
    /// Failed attempts scheduled for another delivery.
    pub retried: u64,
    /// Entries moved to a dead-letter stream (any reason).
    pub dead_lettered: u64,
    /// Of those, entries that were not valid envelopes.
    pub malformed: u64,
    /// Entries taken over from other (presumed dead) consumers, or recovered from this
    /// consumer's own pending list at start.
    pub reclaimed: u64,
    /// Handler panics (each treated as a retryable failure).
    pub panics: u64,
    /// Pending entries whose data had been deleted or trimmed; acknowledged and skipped.
    pub tombstones: u64,
    /// Messages whose expiry had passed; acknowledged without running the handler.
    pub expired: u64,
    /// Handler attempts cancelled at their timeout (each a retryable failure).
    pub timed_out: u64,
    /// Entries handed back unstarted at a graceful stop (left pending, idle, for another
    /// consumer or the next start).
    pub released: u64,
    /// Times this worker found its consumer group gone (Redis restarted without persistence,
    /// the group or topic deleted, a failover to a replica without it) and created it again.
    pub groups_recreated: u64,
    /// Replayed dead letters addressed to another group, acknowledged without handling.
    pub replays_for_other_groups: u64,
    /// Partitions whose lease this worker found another's (or gone) while it consumed them:
    /// it was cut off from Redis, or paused, for longer than `partition_lease`
    /// (`docs/partitions.md`). It stopped them at once; their new owners handle what it had
    /// not acknowledged.
    pub partitions_lost: u64,
}

impl WorkerStats {
    /// Entries done with for good: acknowledged after their handler succeeded, dead-lettered,
    /// or acknowledged without a handler (deleted before they were read, replays for other
    /// groups). What [`WorkerHandle::settled`](crate::WorkerHandle::settled) waits for.
    pub fn settled(&self) -> u64 {
        self.acked + self.dead_lettered + self.tombstones + self.replays_for_other_groups
    }
}
