//! Settling entries: batched `XACK` after success, and the atomic move to the dead-letter
//! stream.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Mutex;

use fred::interfaces::StreamsInterface;
use fred::types::Value;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tributary_core::{EntryId, RedisError};

use super::stats::Stats;
use super::topic::TopicConsumer;
use crate::redis::{call, id_args, Args};
use crate::scripts::{DEAD_LETTER, FENCED_ACK};

/// How sending a batch of acknowledgements ended.
enum Sent {
    Acked,
    /// The worker stopped at once meanwhile: the entries stay pending, delivered again.
    Stopped,
    /// Of a partition: its lease is another consumer's now (`partitions.rs`).
    Fenced,
}

/// An entry to acknowledge, with the in-flight slot it occupies until the ack is confirmed.
pub(crate) type AckRequest = (EntryId, OwnedSemaphorePermit);

/// Successful entries waiting for the ack loop. A plain queue, not a channel: an unbounded
/// channel allocates a block of slots and padded state up front, about 1.3 KiB per topic for
/// as long as it runs, busy or idle (a worker may have 10,000 topics).
#[derive(Default)]
pub(crate) struct AckQueue {
    queued: Mutex<Vec<AckRequest>>,
    /// Stores a permit when the loop is not waiting: a push is never missed.
    ready: Notify,
}

impl AckQueue {
    /// Queues `acks` for the ack loop.
    pub(crate) fn push(&self, acks: impl IntoIterator<Item = AckRequest>) {
        let mut queued = self.queued.lock().expect("ack queue lock");
        let was_empty = queued.is_empty();
        queued.extend(acks);
        // A queue that had entries already has its wake-up on the way.
        let wake = was_empty && !queued.is_empty();
        drop(queued);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Moves up to `max` queued entries to `batch`; true when more are left. (Usually by
    /// swapping the two: their allocations take turns, none is made per batch.)
    fn take(&self, batch: &mut Vec<AckRequest>, max: usize) -> bool {
        let mut queued = self.queued.lock().expect("ack queue lock");
        if batch.is_empty() && queued.len() <= max {
            std::mem::swap(batch, &mut *queued);
            return false;
        }
        let n = queued.len().min(max);
        batch.extend(queued.drain(..n));
        !queued.is_empty()
    }

    /// Once the topic is quiet: lets go of what a burst grew (`max_in_flight` entries, 8 KiB at
    /// the default, kept by each of thousands of topics otherwise).
    fn shrink_when_empty(&self, batch: &mut Vec<AckRequest>) {
        const KEPT: usize = 16;
        let mut queued = self.queued.lock().expect("ack queue lock");
        if queued.is_empty() {
            if queued.capacity() > KEPT {
                *queued = Vec::new();
            }
            if batch.capacity() > KEPT {
                *batch = Vec::new();
            }
        }
    }
}

/// Why an entry went to the dead-letter stream (the `dlq:reason` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeadLetterReason {
    /// Not a valid envelope.
    Malformed,
    /// Failed `max_deliveries` times.
    MaxDeliveries,
    /// The handler rejected it as permanently failed.
    Rejected,
    /// Its expiry passed before it was handled.
    Expired,
}

impl DeadLetterReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::MaxDeliveries => "max_deliveries",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }
}

/// Bytes kept of an entry too large to be a valid envelope when it is dead-lettered: enough to
/// see what it was, without copying megabytes into the dead-letter stream.
pub(crate) const TRUNCATED_PREFIX: usize = 64 * 1024;

/// The largest entry a dead letter copies whole: the largest valid envelope (payload, every
/// header and every field at their limits, plus room for names and the version). Anything larger
/// is malformed anyway, and only a prefix is kept.
pub(crate) fn whole_entry_limit(limits: &tributary_core::Limits) -> usize {
    limits.max_payload + limits.max_headers * limits.max_header_bytes + limits.max_fields * limits.max_meta_bytes + 4096
}

/// Metadata fields written before the original fields of a dead letter, in this order.
pub(crate) const DEAD_LETTER_FIELDS: [&str; 8] =
    ["dlq:topic", "dlq:group", "dlq:consumer", "dlq:id", "dlq:reason", "dlq:attempts", "dlq:error", "dlq:at"];

impl TopicConsumer {
    /// The ack loop: takes whatever acks are queued (about 512 at most), sends one `XACK` for
    /// all of them, and frees their slots only once Redis confirmed. Until then the entries count
    /// as in flight, so `max_in_flight` bounds what Redis holds pending for this consumer.
    pub(crate) async fn ack_loop(&self) {
        const MAX: usize = 512;
        // Grown on first use: an idle topic (a worker may have thousands) allocates nothing.
        let mut batch: Vec<AckRequest> = Vec::new();
        // More than MAX were queued: take the rest without waiting.
        let mut more = false;
        loop {
            let waited = more
                || tokio::select! {
                    biased;
                    _ = self.acks.ready.notified() => true,
                    // Once no more acks can come: flush what is queued, then end.
                    _ = self.acks_done.cancelled() => false,
                };
            if waited && !more {
                // Let the tasks that are ready run first (a reply being read, the next
                // handlers): acks are off the critical path, and more of them come together.
                tokio::task::yield_now().await;
            }
            more = self.acks.take(&mut batch, MAX);
            if batch.is_empty() {
                if waited {
                    continue;
                }
                return;
            }
            // Boxed: the command's future (5 KB) would otherwise sit in this loop's state for as
            // long as the topic runs, idle or not (a worker may have thousands of topics).
            match Box::pin(self.send_acks(&batch)).await {
                Sent::Acked => {}
                Sent::Stopped => return,
                Sent::Fenced => {
                    // Another consumer owns the partition now and handles these again: this
                    // one starts nothing more of it.
                    if let Some(fence) = &self.fence {
                        fence.lose();
                    }
                    self.stop.cancel();
                    tracing::warn!(topic = %self.topic, group = %self.group, entries = batch.len(),
                        "lost the partition's lease before acknowledging; its new owner handles these again");
                    self.forget(batch.iter().map(|(id, _)| *id));
                    batch.clear();
                    continue;
                }
            }
            // Before `settle`, which wakes whoever waits for the count.
            self.report_running();
            self.stats.settle(&self.stats.acked, batch.len() as u64);
            self.forget(batch.iter().map(|(id, _)| *id));
            // One permit for the batch, so the slots go back under one lock of the semaphore
            // rather than one each.
            let all = batch.drain(..).map(|(_, permit)| permit).reduce(|mut all, permit| {
                all.merge(permit);
                all
            });
            drop(all);
            if !more {
                self.acks.shrink_when_empty(&mut batch);
            }
        }
    }

    /// One `XACK` for `batch`, retried until Redis confirms it (of a partition, only while this
    /// consumer holds its lease: `partitions.rs`).
    async fn send_acks(&self, batch: &[AckRequest]) -> Sent {
        // At `debug`: an acknowledgement batch belongs to no one message's trace, and each would
        // be a trace of one span.
        let span = tracing::debug_span!(
            "settle",
            otel.name = %format_args!("settle {}", self.origin.topic),
            otel.kind = "client",
            messaging.system = crate::metrics::SYSTEM,
            messaging.operation.name = "ack",
            messaging.operation.type = "settle",
            messaging.destination.name = %self.origin.topic,
            messaging.destination.partition.id = self.origin.partition,
            messaging.consumer.group.name = %self.group,
            messaging.batch.message_count = batch.len() as i64,
        );
        tracing::Instrument::instrument(self.send_acks_in_span(batch), span).await
    }

    async fn send_acks_in_span(&self, batch: &[AckRequest]) -> Sent {
        let mut backoff = Duration::from_millis(50);
        loop {
            let acked = match &self.fence {
                None => {
                    let ids = id_args(batch.iter().map(|(id, _)| *id));
                    // fred's typed command: a custom command would make the connection flush its
                    // socket for it alone.
                    self.conn
                        .client_for(&self.key)
                        .await
                        .xack::<i64, _, _, _>(self.key.as_str(), self.group.as_str(), ids)
                        .await
                        .map_err(|e| crate::redis::noted(&self.conn, RedisError::new("XACK", e)))
                }
                Some(fence) => {
                    let mut args = Vec::with_capacity(batch.len() + 2);
                    args.push(Value::from(fence.token.as_str()));
                    args.push(Value::from(self.group.as_str()));
                    args.extend(batch.iter().map(|(id, _)| Value::from(id.to_string())));
                    FENCED_ACK.run::<i64>(&self.conn, vec![self.key.clone(), fence.lease_key.clone()], args).await
                }
            };
            match acked {
                Ok(-1) => return Sent::Fenced,
                Ok(_) => return Sent::Acked,
                Err(e) => {
                    // Unacked entries stay pending and would be delivered again; keep trying,
                    // the connection reconnects on its own.
                    tracing::warn!(topic = %self.topic, error = %e, "XACK failed; retrying");
                    if self.hard_stop.is_cancelled() {
                        return Sent::Stopped;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Moves `id` to the dead-letter stream, atomically with its ack.
    pub(crate) async fn dead_letter(&self, id: EntryId, reason: DeadLetterReason, attempts: u64, error: &str) {
        let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis().to_string();
        let values = [
            // A partition's dead letters name its topic (a replay goes to the key's partition).
            self.origin.topic.clone(),
            self.group.clone(),
            self.config.consumer_name.clone(),
            id.to_string(),
            reason.as_str().to_owned(),
            attempts.to_string(),
            error.chars().take(4096).collect(),
            at,
        ];
        let mut args: Vec<Value> = vec![
            self.group.as_str().into(),
            id.to_string().into(),
            Value::from(i64::try_from(self.config.dead_letter_max_len).unwrap_or(i64::MAX)),
            Value::from(i64::try_from(whole_entry_limit(self.conn.limits())).unwrap_or(i64::MAX)),
            Value::from(TRUNCATED_PREFIX as i64),
        ];
        let mut keys = vec![self.key.clone(), self.conn.namespace().dead_letter_stream(&self.topic)];
        if let Some(fence) = &self.fence {
            // Of a partition: moved only while this consumer holds its lease.
            keys.push(fence.lease_key.clone());
            args.push(fence.token.as_str().into());
        }
        for (name, value) in DEAD_LETTER_FIELDS.iter().zip(values) {
            args.push((*name).into());
            args.push(value.into());
        }
        let mut backoff = Duration::from_millis(50);
        for _ in 0..5 {
            match DEAD_LETTER.run::<i64>(&self.conn, keys.clone(), args.clone()).await {
                Ok(-1) => {
                    tracing::warn!(topic = %self.topic, group = %self.group, entry_id = %id,
                        "lost the partition's lease before dead-lettering; its new owner handles the entry");
                    if let Some(fence) = &self.fence {
                        fence.lose();
                    }
                    self.stop.cancel();
                    return;
                }
                Ok(moved) => {
                    if moved == 1 {
                        self.report_running();
                        self.stats.settle(&self.stats.dead_lettered, 1);
                        self.metrics.dead_lettered(reason.as_str());
                        if reason == DeadLetterReason::Malformed {
                            Stats::add(&self.stats.malformed, 1);
                        }
                        tracing::warn!(topic = %self.topic, group = %self.group, entry_id = %id,
                            reason = reason.as_str(), attempts, error, "entry dead-lettered");
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topic, entry_id = %id, error = %e, "dead-letter move failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
        // Still pending: a later reclaim sees its delivery count and moves it then.
        tracing::error!(topic = %self.topic, entry_id = %id, "could not dead-letter entry; left pending");
        self.leave_unsettled(id, "it could not be dead-lettered");
    }

    /// Acknowledges a pending entry there is nothing to handle for: its data is gone (deleted
    /// or trimmed; an unacked tombstone would stay in the PEL for ever), or it is a replay
    /// addressed to another group.
    pub(crate) async fn ack_unhandled(&self, id: EntryId) -> Result<(), RedisError> {
        call::<i64>(&self.conn, "XACK", &self.key, Args::new().arg(self.group.as_str()).arg(id.to_string())).await?;
        Ok(())
    }
}
