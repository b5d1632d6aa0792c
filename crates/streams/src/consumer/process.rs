//! Handling one message: call the handler, then ack, retry after backoff, or dead-letter.
//!
//! Retries are driven from the PEL: a failed entry is not acknowledged, so it stays pending
//! under this consumer while the task waits out the backoff; then a plain `XCLAIM` to itself
//! counts the new delivery in Redis (so the attempt count survives a crash) and confirms the
//! entry is still ours. Waiting in place keeps the entry's position in its key's order.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;
use tributary_core::EntryId;

use super::ack::{AckRequest, DeadLetterReason};
use super::builder::ExpiredPolicy;
use super::dispatch::{Job, JobBody, Settlement};
use super::handler::{Action, Context, ContextInner};
use super::stats::Stats;
use super::topic::TopicConsumer;
use crate::metrics::Attempt;
use crate::scripts::CLAIM_OWNED;
use crate::trace::in_trace;
use tributary_core::trace::{follow_remote, record_failure, span_traceparent};

/// How handling one entry ended.
enum Settled {
    /// To acknowledge: the caller hands it to the ack loop, which forgets the entry once
    /// Redis confirmed.
    Ack(AckRequest),
    /// Settled here (dead-lettered, skipped) or left pending.
    Done,
}

// The rare paths (dead-lettering, settling without a handler, the retry claim) are boxed:
// awaited inline they made every message's task a ~6 KiB future that was copied around on
// each spawn and poll (37% of worker CPU in the e2e benchmark); boxed it is under 1 KiB.
impl TopicConsumer {
    /// Handles `job`; returns the ack to send when it succeeded (or is to be skipped), and its
    /// read-ahead slot if it still holds it, for the caller to free with its batch's.
    pub(crate) async fn process(self: Arc<Self>, mut job: Job) -> Settlement {
        let id = job.id;
        let mut admit = job.admit.take();
        let ack = match self.process_inner(job, &mut admit).await {
            // An acked entry stays "held" until the ack loop confirmed it: until then the
            // reclaim sweep must not mistake it for an abandoned one.
            Settled::Ack(ack) => Some(ack),
            Settled::Done => {
                self.forget([id]);
                None
            }
        };
        Settlement { ack, admit }
    }

    /// Handles `job`. Frees `admit` itself only when the first attempt failed (the entry then
    /// waits to retry without taking read-ahead room).
    async fn process_inner(self: &Arc<Self>, job: Job, admit: &mut Option<OwnedSemaphorePermit>) -> Settled {
        if !matches!(job.body, JobBody::Message(_)) {
            // Tombstones and malformed entries, settled without a handler (boxed: rare).
            let _ = Box::pin(self.settle_unhandled(job)).await;
            return Settled::Done;
        }
        let Job { id, deliveries, permit, queued, body, .. } = job;
        let JobBody::Message(envelope) = body else {
            return Settled::Done;
        };
        let max = self.config.max_deliveries;
        let mut attempt = deliveries.max(1);
        if attempt > max {
            // Delivered before without an outcome: earlier holders crashed while handling it.
            let error =
                format!("delivered {attempt} times without completing; earlier consumers may have crashed on it");
            Box::pin(self.dead_letter(id, DeadLetterReason::MaxDeliveries, attempt, &error)).await;
            return Settled::Done;
        }
        // Start it, unless stopping (or, of a partition, its lease may have run out): then it
        // goes back unstarted, for another consumer.
        if self.stop.is_cancelled() || !self.holds_partition() {
            self.release(id, attempt - 1);
            return Settled::Done;
        }
        let first_slot = match self.running.try_acquire() {
            // The common case: it starts as soon as it was read.
            Ok(slot) if !queued => slot,
            free => {
                if !queued {
                    self.mark_waiting(id);
                }
                let slot = match free {
                    Ok(slot) => slot,
                    Err(_) => match self.handler_slot().await {
                        Some(slot) => slot,
                        None => {
                            self.release(id, attempt - 1);
                            return Settled::Done;
                        }
                    },
                };
                if !Box::pin(self.still_ours_after_wait(id)).await {
                    self.leave_unsettled(id, "taken over while it waited to start");
                    return Settled::Done;
                }
                slot
            }
        };
        // Its expiry may have passed while it waited for a slot.
        if envelope.is_expired(SystemTime::now()) {
            drop(first_slot);
            return Box::pin(self.settle_expired(id, attempt, permit)).await;
        }
        let mut slot = Some(first_slot);
        let trace = envelope.traceparent;
        let ctx_inner =
            Arc::new(ContextInner { origin: self.origin.clone(), entry_id: id, attempt, envelope: *envelope });
        let mut ctx = Context { inner: ctx_inner };
        loop {
            // The slot first: a retry's span does not include the wait for one.
            let held = match slot.take() {
                Some(s) => s,
                None => match self.handler_slot().await {
                    Some(s) => s,
                    None => {
                        // Claimed for this attempt, which now will not run here.
                        self.release(id, attempt - 1);
                        return Settled::Done;
                    }
                },
            };
            // Of a partition, checked last before the handler: waits for a slot can outlast
            // the lease.
            if !self.holds_partition() {
                self.release(id, attempt - 1);
                return Settled::Done;
            }
            let span = tracing::info_span!(
                "process",
                otel.name = %format_args!("process {}", self.origin.topic),
                otel.kind = "consumer",
                otel.status_code = tracing::field::Empty,
                messaging.system = crate::metrics::SYSTEM,
                messaging.operation.name = "process",
                messaging.operation.type = "process",
                messaging.destination.name = %self.origin.topic,
                messaging.destination.partition.id = self.origin.partition,
                messaging.consumer.group.name = %self.group,
                messaging.client.id = %self.config.consumer_name,
                messaging.message.id = %ctx.message_id(),
                entry_id = %id,
                attempt,
                trace_id = tracing::field::Empty,
                error.type = tracing::field::Empty,
            );
            if let Some(tp) = trace {
                follow_remote(&span, tp, self.config.trace_links);
            }
            // What the handler's publishes continue: this span's OpenTelemetry context, or a
            // child of the message's trace.
            let current = span_traceparent(&span).or(trace.map(|tp| tp.child()));
            if let Some(tp) = current.filter(|_| !span.is_disabled()) {
                span.record("trace_id", tp.trace_id_hex());
            }
            let outcome = {
                let _slot = held;
                Stats::add(&self.stats.delivered, 1);
                let handler = self.handler.clone();
                let call = ctx.clone();
                let run = async move {
                    // A panic while building the future is a panic too.
                    match std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(call))) {
                        Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
                        Err(p) => Err(p),
                    }
                };
                let run = async {
                    match current {
                        Some(tp) => in_trace(tp, run).instrument(span.clone()).await,
                        None => run.instrument(span.clone()).await,
                    }
                };
                let started = Instant::now();
                let outcome = match self.config.handler_timeout {
                    None => Some(run.await),
                    // Boxed: the timer would make every message's future larger.
                    Some(limit) => Box::pin(tokio::time::timeout(limit, run)).await.ok(),
                };
                let attempt = match &outcome {
                    Some(Ok(Ok(()))) => Attempt::Ok,
                    Some(Ok(Err(e))) if matches!(e.action, Action::Reject) => Attempt::Rejected,
                    Some(Ok(Err(_))) => Attempt::HandlerError,
                    Some(Err(_)) => Attempt::Panic,
                    None => Attempt::Timeout,
                };
                self.metrics.processed(started, attempt);
                if let Some(error) = attempt.error_type() {
                    record_failure(&span, error);
                }
                outcome
            };
            self.returned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (error, delay) = match outcome {
                Some(Ok(Ok(()))) => return Settled::Ack((id, permit)),
                Some(Ok(Err(e))) => match e.action {
                    Action::Reject => {
                        let error = e.to_string();
                        Box::pin(self.dead_letter(id, DeadLetterReason::Rejected, attempt, &error)).await;
                        return Settled::Done;
                    }
                    Action::Retry(after) => (e.to_string(), after.unwrap_or_else(|| self.config.retry.delay(attempt))),
                },
                Some(Err(panic)) => {
                    Stats::add(&self.stats.panics, 1);
                    let msg = super::panic_message(panic.as_ref());
                    (format!("handler panicked: {msg}"), self.config.retry.delay(attempt))
                }
                None => {
                    Stats::add(&self.stats.timed_out, 1);
                    let limit = self.config.handler_timeout.unwrap_or_default();
                    (format!("handler timed out after {limit:?} and was cancelled"), self.config.retry.delay(attempt))
                }
            };
            if attempt >= max {
                Box::pin(self.dead_letter(id, DeadLetterReason::MaxDeliveries, attempt, &error)).await;
                return Settled::Done;
            }
            // Waiting to retry takes no read-ahead room: the next entries may be read meanwhile.
            drop(admit.take());
            Stats::add(&self.stats.retried, 1);
            self.metrics.retries.increment(1);
            span.in_scope(|| tracing::info!(error = %error, retry_in = ?delay, "handler failed; will retry"));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // Stopping: leave it pending, handed back, for another consumer or the restart.
                _ = self.stop.cancelled() => {
                    self.release(id, attempt);
                    return Settled::Done;
                }
            }
            if !self.holds_partition() {
                // Of a partition whose lease may have run out: its next owner retries it.
                self.release(id, attempt);
                return Settled::Done;
            }
            // Its expiry may have passed while it waited: it never reaches the handler then.
            if ctx.envelope().is_expired(SystemTime::now()) {
                return Box::pin(self.settle_expired(id, attempt, permit)).await;
            }
            let args = vec![
                self.group.as_str().into(),
                self.config.consumer_name.as_str().into(),
                "retry".into(),
                id.to_string().into(),
            ];
            let claimed =
                Box::pin(CLAIM_OWNED.run::<(Vec<String>, Vec<String>)>(&self.conn, vec![self.key.clone()], args)).await;
            match claimed {
                Ok((owned, _)) if !owned.is_empty() => {
                    attempt += 1;
                    ctx = ctx.with_attempt(attempt);
                }
                Ok((_, taken)) => {
                    tracing::info!(topic = %self.topic, entry_id = %id, "entry taken over or deleted while waiting to retry");
                    if !taken.is_empty() {
                        // Another consumer holds it (deleted or acknowledged, nothing waits).
                        self.leave_unsettled(id, "taken over while it waited to retry");
                    }
                    return Settled::Done;
                }
                Err(e) if Self::is_group_lost(&e) => {
                    // The group is gone, and Redis' record of the entry with it: retry it from
                    // memory rather than drop it (its ack then finds nothing to acknowledge).
                    if let Err(e) = Box::pin(self.restore_group()).await {
                        tracing::warn!(topic = %self.topic, error = %e, "cannot re-create the consumer group");
                    }
                    attempt += 1;
                    ctx = ctx.with_attempt(attempt);
                }
                Err(e) => {
                    // It stays pending here; the reclaim sweep picks it up again.
                    tracing::warn!(topic = %self.topic, entry_id = %id, error = %e, "could not claim entry for retry");
                    self.leave_unsettled(id, "its retry could not be claimed");
                    return Settled::Done;
                }
            }
        }
    }

    /// A handler slot, or `None` once stopping: nothing starts after a graceful stop.
    async fn handler_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        if self.stop.is_cancelled() {
            return None;
        }
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => None,
            slot = self.running.acquire() => Some(slot.expect("semaphore never closed")),
        }
    }

    /// After `id` waited to start: false when another consumer took it over meanwhile (known
    /// from lease renewal, or, after a wait of `claim_idle` or more, asked of Redis).
    async fn still_ours_after_wait(&self, id: EntryId) -> bool {
        let Some(waited) = self.start_after_wait(id) else {
            tracing::info!(topic = %self.topic, entry_id = %id, "entry taken over by another consumer before it started here");
            return false;
        };
        if waited >= self.config.claim_idle && !self.still_owned(id).await {
            tracing::info!(topic = %self.topic, entry_id = %id, waited = ?waited,
                "entry taken over by another consumer before it started here");
            return false;
        }
        true
    }

    /// True when `id` is still pending under this consumer (renewing its lease). On an error,
    /// true: the entry runs rather than waits (at-least-once).
    async fn still_owned(&self, id: EntryId) -> bool {
        let args = vec![
            self.group.as_str().into(),
            self.config.consumer_name.as_str().into(),
            "lease".into(),
            id.to_string().into(),
        ];
        match CLAIM_OWNED.run::<(Vec<String>, Vec<String>)>(&self.conn, vec![self.key.clone()], args).await {
            Ok((owned, _)) => !owned.is_empty(),
            Err(e) => {
                tracing::warn!(topic = %self.topic, entry_id = %id, error = %e, "could not check the entry is still ours; running it");
                true
            }
        }
    }

    /// An expired message: counted, then dead-lettered or acknowledged (`ExpiredPolicy`).
    async fn settle_expired(&self, id: EntryId, attempt: u64, permit: OwnedSemaphorePermit) -> Settled {
        Stats::add(&self.stats.expired, 1);
        self.metrics.expired.increment(1);
        match self.config.expired {
            ExpiredPolicy::DeadLetter => {
                self.dead_letter(id, DeadLetterReason::Expired, attempt, "expired before it was handled").await;
                Settled::Done
            }
            _ => Settled::Ack((id, permit)),
        }
    }
}
