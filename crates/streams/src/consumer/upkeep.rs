//! A worker's timed duties, for all its topics in one task: reclaim sweeps and lease
//! renewals (`claim.rs`). A loop (and a timer) per topic per duty cost about 800 bytes a topic
//! for as long as the worker ran, busy or idle (a worker may have 10,000 topics); here a topic
//! costs an entry in a heap of due times while it waits, and a task only while a duty runs.
//!
//! Sweeps of quiet topics take turns: all of a worker's together run at most
//! [`QUIET_SWEEPS_PER_S`] a second, so an idle worker's cost in Redis does not grow with its
//! topics (`docs/delivery.md`, "Many topics"). Sweeps end at a graceful stop; renewals go on
//! until the topic's handlers are done (see `TopicConsumer::renew_turn`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::topic::TopicConsumer;

/// Most sweeps a second of one worker's quiet topics, together: with `claim_interval` at its
/// default of 15 s, a worker with up to 300 topics sweeps each every `claim_interval`; with
/// 10,000, a quiet topic is swept every 500 s.
pub(crate) const QUIET_SWEEPS_PER_S: f64 = 20.0;

/// A timed duty of one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Duty {
    /// A reclaim sweep. `busy`: the group had entries pending that this consumer did not hold
    /// at the last sweep (swept every `claim_interval`, not paced). `paced`: a quiet sweep that
    /// has had its turn.
    Sweep { busy: bool, paced: bool },
    /// Renewing the leases of the entries the topic holds.
    Renew,
}

/// A topic's way to its worker's upkeep task.
#[derive(Clone)]
pub(crate) struct UpkeepLink(mpsc::UnboundedSender<(Instant, Weak<TopicConsumer>, Duty)>);

impl UpkeepLink {
    /// Runs `duty` for `topic` at `at`. (Nothing happens once the worker is gone.)
    pub(crate) fn schedule(&self, at: Instant, topic: Weak<TopicConsumer>, duty: Duty) {
        let _ = self.0.send((at, topic, duty));
    }
}

/// The upkeep task's state.
pub(crate) struct Upkeep {
    rx: mpsc::UnboundedReceiver<(Instant, Weak<TopicConsumer>, Duty)>,
    due: BinaryHeap<Due>,
    /// Duties running now; aborted when the task is (the worker dropped).
    running: JoinSet<()>,
    /// When the next quiet sweep may run.
    next_quiet: Instant,
    /// Orders duties due at the same instant by arrival.
    seq: u64,
}

/// A duty waiting for its time.
struct Due {
    at: Instant,
    seq: u64,
    topic: Weak<TopicConsumer>,
    duty: Duty,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    /// The earliest first (`BinaryHeap` pops the greatest).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl Upkeep {
    pub(crate) fn new() -> (UpkeepLink, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        let upkeep = Self { rx, due: BinaryHeap::new(), running: JoinSet::new(), next_quiet: Instant::now(), seq: 0 };
        (UpkeepLink(tx), upkeep)
    }

    /// Runs duties as they fall due, until every link is gone (or the task is aborted, with
    /// the duties running then).
    pub(crate) async fn run(mut self) {
        loop {
            let next = self.due.peek().map(|d| d.at);
            tokio::select! {
                biased;
                m = self.rx.recv() => match m {
                    Some((at, topic, duty)) => self.push(at, topic, duty),
                    None => break,
                },
                Some(_) = self.running.join_next(), if !self.running.is_empty() => {}
                _ = async { tokio::time::sleep_until(next.expect("checked")).await }, if next.is_some() => {
                    self.start_due();
                }
            }
        }
        // The worker is done with its topics: let what runs finish (each bounds itself).
        while self.running.join_next().await.is_some() {}
    }

    fn push(&mut self, at: Instant, topic: Weak<TopicConsumer>, duty: Duty) {
        self.seq += 1;
        self.due.push(Due { at, seq: self.seq, topic, duty });
    }

    /// Starts every duty due now, each in a task of its own: a sweep may wait for slots
    /// (handlers to finish), which must not hold up other topics' duties.
    fn start_due(&mut self) {
        let now = Instant::now();
        while self.due.peek().is_some_and(|d| d.at <= now) {
            let Some(Due { topic, duty, .. }) = self.due.pop() else { break };
            let Some(topic) = topic.upgrade() else { continue };
            match duty {
                Duty::Sweep { busy, paced } => {
                    if topic.stop.is_cancelled() {
                        continue;
                    }
                    if !busy && !paced {
                        // A quiet topic's turn: however many start at once, or are found later by
                        // a pattern, they sweep at most QUIET_SWEEPS_PER_S together.
                        let turn = self.next_quiet.max(now);
                        self.next_quiet = turn + Duration::from_secs_f64(1.0 / QUIET_SWEEPS_PER_S);
                        if turn > now {
                            self.push(turn, Arc::downgrade(&topic), Duty::Sweep { busy, paced: true });
                            continue;
                        }
                    }
                    self.running.spawn(run_duty(topic, duty));
                }
                Duty::Renew => {
                    // Most topics of a worker with many hold nothing by their renewal (their
                    // entries were acknowledged meanwhile): no task for them.
                    if topic.renewals_needed() {
                        self.running.spawn(run_duty(topic, duty));
                    }
                }
            }
        }
    }
}

/// Runs one duty of `topic`. One that panics is said at `error` and comes again after its
/// interval: otherwise the topic's sweeps, or its lease renewals while it holds entries, would
/// end for the rest of the run.
async fn run_duty(topic: Arc<TopicConsumer>, duty: Duty) {
    use futures::FutureExt;
    let this = topic.clone();
    let run = async move {
        match duty {
            Duty::Sweep { .. } => this.sweep_turn().await,
            Duty::Renew => this.renew_turn().await,
        }
    };
    if std::panic::AssertUnwindSafe(run).catch_unwind().await.is_err() {
        tracing::error!(topic = %topic.topic, ?duty, "a reclaim sweep or lease renewal panicked; it runs again after its interval");
        topic.after_panic(duty);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_duty_comes_first_and_ties_in_arrival_order() {
        let now = Instant::now();
        let mut heap = BinaryHeap::new();
        let due = |at: Instant, seq| Due { at, seq, topic: Weak::new(), duty: Duty::Renew };
        heap.push(due(now + Duration::from_secs(2), 1));
        heap.push(due(now + Duration::from_secs(1), 3));
        heap.push(due(now + Duration::from_secs(1), 2));
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|d| d.seq)).collect();
        assert_eq!(order, vec![2, 3, 1]);
    }
}
