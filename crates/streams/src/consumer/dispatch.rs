//! Handing read entries to handlers: decode, pick a lane, run.
//!
//! Entries without a partition key (the common case) are handled concurrently, one read batch
//! at a time: the batch's handler futures go into one `FuturesUnordered`, which the read loop
//! polls once right away. Handlers that finish in that first poll cost no task at all and
//! their acks leave as one message; what is still running continues in one spawned task per
//! batch. (A task per message cost a spawn, a cross-thread wake-up and an ack-loop wake-up
//! for every entry: most of the worker's CPU in the `e2e` benchmark.) A read that returns a
//! single entry is handled the same way without the set.
//!
//! Entries with a key, or every entry with `concurrency(1)`, go through a lane: one task per
//! key handling that key's entries in stream order.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tributary_core::{wire, EntryId, Envelope};

use super::ack::AckRequest;
use super::topic::TopicConsumer;
use crate::redis::RawEntry;

/// A message ready to be handled (or settled without a handler).
pub(crate) struct Job {
    pub(crate) id: EntryId,
    pub(crate) deliveries: u64,
    /// Its in-flight slot, until acknowledged.
    pub(crate) permit: OwnedSemaphorePermit,
    /// Its read-ahead slot, until its handler first returns.
    pub(crate) admit: Option<OwnedSemaphorePermit>,
    /// It waited in its key's queue (and is marked waiting in the held map).
    pub(crate) queued: bool,
    pub(crate) body: JobBody,
}

/// What handling a job leaves to settle: the ack to send, and the read-ahead slot to free. The
/// slots of a batch go back together, under one lock of the semaphore.
pub(crate) struct Settlement {
    pub(crate) ack: Option<AckRequest>,
    pub(crate) admit: Option<OwnedSemaphorePermit>,
}

pub(crate) enum JobBody {
    Message(Box<Envelope>),
    Malformed(String),
    Tombstone,
    /// A replayed dead letter addressed to another group (`dlq:for`).
    ForOtherGroup,
}

/// True for a replayed dead letter addressed to a group other than `group`: its last field is
/// `dlq:for` (written by the replay script; a plain message has no such field).
fn for_other_group(fields: &[(bytes::Bytes, bytes::Bytes)], group: &str) -> bool {
    matches!(fields.last(), Some((name, to)) if name.as_ref() == b"dlq:for" && to.as_ref() != group.as_bytes())
}

/// Counts the topic's running handlers when dropped (see `TopicConsumer::report_running`).
struct ReportRunning<'a>(&'a TopicConsumer);

impl Drop for ReportRunning<'_> {
    fn drop(&mut self) {
        self.0.report_running();
    }
}

/// A sequence of messages handled one at a time, in stream order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Lane {
    /// Messages with this partition key.
    Key(String),
    /// Every message of the topic (`concurrency(1)`).
    Topic,
}

/// An entry taken from Redis (read or claimed): its delivery count and the slots it occupies
/// (in flight until settled, read-ahead until its handler first returns).
pub(crate) struct Taken {
    pub(crate) entry: RawEntry,
    pub(crate) deliveries: u64,
    pub(crate) permit: OwnedSemaphorePermit,
    pub(crate) admit: OwnedSemaphorePermit,
}

impl TopicConsumer {
    /// Decodes `taken` and starts handling it: lanes for keyed entries, the rest concurrently
    /// (see the module docs). Returns once every entry is running or done.
    pub(crate) async fn dispatch(self: &Arc<Self>, taken: Vec<Taken>) {
        self.metrics.consumed.increment(taken.len() as u64);
        // Once the batch's handlers started (at every return).
        let _report = ReportRunning(self);
        let mut free = Vec::with_capacity(taken.len());
        self.hold(taken.iter().map(|t| t.entry.id), Instant::now());
        for Taken { entry, deliveries, permit, admit } in taken {
            let body = match entry.fields {
                None => JobBody::Tombstone,
                Some(fields) if for_other_group(&fields, &self.group) => JobBody::ForOtherGroup,
                Some(fields) => match wire::decode_entry(&fields, &self.key, entry.id, self.conn.limits()) {
                    Ok(env) => JobBody::Message(Box::new(env)),
                    Err(e) => JobBody::Malformed(e.to_string()),
                },
            };
            // With one handler at a time, the whole topic is one lane: strict stream order.
            // (Concurrent futures would race for the handler slot and start in any order.)
            let lane = match &body {
                _ if self.config.concurrency == 1 => Some(Lane::Topic),
                JobBody::Message(env) => env.key.clone().map(Lane::Key),
                _ => None,
            };
            let job = Job { id: entry.id, deliveries, permit, admit: Some(admit), queued: false, body };
            match lane {
                None => free.push(job),
                Some(lane) => self.enqueue(lane, job),
            }
        }
        if free.len() <= 1 {
            // One entry (messages trickling in): the same, without the set's allocations.
            if let Some(job) = free.pop() {
                let mut handling = Box::pin(self.clone().process(job));
                match std::future::poll_fn(|cx| Poll::Ready(handling.as_mut().poll(cx))).await {
                    Poll::Ready(done) => self.settle(vec![done]),
                    Poll::Pending => {
                        let this = self.clone();
                        self.spawn(async move {
                            let done = handling.await;
                            this.settle(vec![done]);
                        });
                    }
                }
            }
            return;
        }
        let mut running: FuturesUnordered<_> = free.into_iter().map(|job| self.clone().process(job)).collect();
        self.settle(take_ready(&mut running, false).await);
        if running.is_empty() {
            return;
        }
        let this = self.clone();
        self.spawn(async move {
            while !running.is_empty() {
                this.settle(take_ready(&mut running, true).await);
            }
        });
    }

    /// Queues `job` behind earlier messages of its lane, or starts the lane's task.
    fn enqueue(self: &Arc<Self>, lane: Lane, mut job: Job) {
        {
            let mut lanes = self.lanes.lock().expect("lanes lock");
            if let Some(queue) = lanes.get_mut(&lane) {
                self.mark_waiting(job.id);
                job.queued = true;
                queue.push_back(job);
                return;
            }
            lanes.insert(lane.clone(), VecDeque::new());
        }
        let this = self.clone();
        self.spawn(async move { this.run_lane(lane, job).await });
    }

    /// Handles the messages of one lane one after another, in the order they were read. Once
    /// stopping, what is still queued is handed back unstarted.
    async fn run_lane(self: Arc<Self>, lane: Lane, first: Job) {
        let mut job = first;
        loop {
            let done = self.clone().process(job).await;
            self.settle(vec![done]);
            if self.stop.is_cancelled() {
                // What is still queued goes back unstarted.
                self.release_queued();
            }
            let next = {
                let mut lanes = self.lanes.lock().expect("lanes lock");
                let next = lanes.get_mut(&lane).and_then(VecDeque::pop_front);
                if next.is_none() {
                    lanes.remove(&lane);
                }
                next
            };
            match next {
                Some(next) => job = next,
                None => return,
            }
        }
    }

    /// Spawns a task that ends when the topic's handlers are abandoned (a hard stop, or its
    /// drain timed out), wherever it is.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let abandon = self.abandon.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = fut => {}
                _ = abandon.cancelled() => {}
            }
        });
    }

    /// Frees the read-ahead slots of `done` together and hands its successful entries to the
    /// ack loop, as one message.
    fn settle(&self, done: Vec<Settlement>) {
        let mut admits: Option<OwnedSemaphorePermit> = None;
        // The ack loop runs until every handler task finished (see `TopicConsumer::run`).
        self.acks.push(done.into_iter().filter_map(|Settlement { ack, admit }| {
            match (&mut admits, admit) {
                (Some(all), Some(one)) => all.merge(one),
                (all @ None, one) => *all = one,
                (Some(_), None) => {}
            }
            ack
        }));
        drop(admits);
    }
}

/// The outputs of every future in `set` that is done now. With `wait`, waits until at least
/// one is (unless the set is empty).
async fn take_ready<F: Future>(set: &mut FuturesUnordered<F>, wait: bool) -> Vec<F::Output> {
    std::future::poll_fn(|cx| {
        let mut done = Vec::new();
        while let Poll::Ready(Some(output)) = set.poll_next_unpin(cx) {
            done.push(output);
        }
        if done.is_empty() && wait && !set.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(done)
        }
    })
    .await
}
