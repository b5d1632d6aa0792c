//! Metrics, through the [`metrics`] facade: the names and labels Tributary records, and the
//! handles each topic registers once.
//!
//! Tributary only records; the application installs a recorder (for instance
//! `metrics-exporter-prometheus`) **before** it builds producers, workers and RPC clients:
//! handles are registered when a topic is first used, and a handle registered while no
//! recorder was installed records nothing (what remains is a clock read around each publish,
//! handler attempt and call, and a branch per metric). Names and labels follow the
//! OpenTelemetry messaging semantic conventions where one exists; the others are under
//! `tributary.`. Every metric, its labels and what healthy looks like: `docs/observability.md`.
//!
//! Labels stay bounded where names are: a worker's destination is its topic or the pattern that
//! matched it (never each matched topic), the group is a name in code, and `error.type` and
//! `reason` take the few values listed with each metric. A producer has a series per topic it
//! publishes to, as many as the topic names it makes.
//!
//! # Example
//! ```
//! use tributary_streams::metrics;
//!
//! // The names an exporter shows (a Prometheus exporter writes the dots as underscores).
//! assert_eq!(metrics::PROCESS_DURATION, "messaging.process.duration");
//! assert_eq!(metrics::DEAD_LETTERS, "tributary.dead_letters");
//! ```

mod sampler;

pub use sampler::{
    Sampler, SamplerTask, CONCURRENCY as SAMPLER_CONCURRENCY, DEAD_LETTER_LENGTH, GROUP_CONSUMERS, GROUP_LAG,
    GROUP_OLDEST_PENDING_IDLE, GROUP_PENDING, SCHEDULED_LENGTH, TOPIC_LENGTH,
};
pub use tributary_core::metrics::RECONNECTS;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use ::metrics::{counter, gauge, histogram, Counter, Gauge, Histogram, Label};
use tributary_core::ErrorKind;

/// Messages a producer stored (counter). Labels: `messaging.system`,
/// `messaging.destination.name` (the topic), `messaging.operation.name` (`publish`), and
/// `error.type` (an [`ErrorKind`] name) on messages that were not stored.
pub const SENT_MESSAGES: &str = "messaging.client.sent.messages";
/// Entries a worker read from Redis, new or reclaimed, including those it settles without a
/// handler (deleted entries, replays addressed to another group) (counter). Labels: `messaging.system`,
/// `messaging.destination.name` (the topic, or the pattern that matched it),
/// `messaging.consumer.group.name`, `messaging.operation.name` (`receive`).
pub const CONSUMED_MESSAGES: &str = "messaging.client.consumed.messages";
/// How long a publish or a batch took, in seconds (histogram). Labels as [`SENT_MESSAGES`].
pub const OPERATION_DURATION: &str = "messaging.client.operation.duration";
/// How long a handler ran, in seconds (histogram), one sample per attempt. Labels as
/// [`CONSUMED_MESSAGES`] with `messaging.operation.name` `process`, and `error.type` on an
/// attempt that failed: `handler_error`, `rejected`, `panic` or `timeout`.
pub const PROCESS_DURATION: &str = "messaging.process.duration";
/// Failed attempts that will be tried again (counter). Labels: destination and group.
pub const RETRIES: &str = "tributary.retries";
/// Entries moved to the dead-letter stream (counter). Labels: destination, group and
/// `reason`: `malformed`, `max_deliveries`, `rejected` or `expired`.
pub const DEAD_LETTERS: &str = "tributary.dead_letters";
/// Entries taken over from a consumer presumed dead, or recovered from this consumer's own
/// pending list at start (counter). Labels: destination and group.
pub const RECLAIMED: &str = "tributary.reclaimed";
/// Messages whose expiry passed before a handler ran them (counter; they are dead-lettered
/// with reason `expired` or dropped, by the worker's `ExpiredPolicy`). Labels: destination
/// and group.
pub const EXPIRED: &str = "tributary.expired";
/// Times a worker found its consumer group gone and created it again (counter). Labels:
/// destination and group.
pub const GROUPS_RECREATED: &str = "tributary.groups_recreated";
/// Leases of entries a worker held that another consumer took over meanwhile (counter): the
/// worker was presumed dead (its renewals lapsed for `claim_idle`), and the entry may run
/// twice. Labels: destination and group.
pub const LEASES_LOST: &str = "tributary.leases.lost";
/// Scheduled messages moved to their topic's stream when due (counter). Labels:
/// `messaging.system`, `messaging.destination.name` (the topic).
pub const SCHEDULED_MOVED: &str = "tributary.scheduled.moved";
/// Handlers running (gauge), as counted after each read batch, acknowledgement batch and dead
/// letter; a pattern's topics add up. Labels: destination and group.
pub const IN_FLIGHT: &str = "tributary.handlers.in_flight";

/// How long an RPC call took, in seconds, from the call to its reply or failure (histogram;
/// its count is the calls that ended: a call whose future was dropped is not counted). Labels: `messaging.system`, `rpc.service`, `rpc.method`,
/// and `error.type` on a failed call: `timeout`, `remote` (the server's method answered an
/// error), or another [`ErrorKind`] name.
pub const RPC_CALL_DURATION: &str = "rpc.client.call.duration";
/// Replies that came after their call had timed out or been dropped (counter). Label:
/// `messaging.system`.
pub const RPC_LATE_REPLIES: &str = "tributary.rpc.late_replies";

/// `messaging.system`: what carries the messages.
pub const SYSTEM: &str = "redis_streams";

/// Label names.
pub mod label {
    /// `messaging.system`, always [`SYSTEM`](super::SYSTEM).
    pub const SYSTEM: &str = "messaging.system";
    /// `messaging.destination.name`: the topic, or the pattern a worker subscribed with.
    pub const DESTINATION: &str = "messaging.destination.name";
    /// `messaging.consumer.group.name`.
    pub const GROUP: &str = "messaging.consumer.group.name";
    /// `messaging.operation.name`: `publish`, `receive` or `process`.
    pub const OPERATION: &str = "messaging.operation.name";
    /// `error.type`: why an operation failed, from a short fixed list.
    pub const ERROR_TYPE: &str = "error.type";
    /// `reason` of a dead letter.
    pub const REASON: &str = "reason";
    /// `rpc.service`: the RPC service called.
    pub const RPC_SERVICE: &str = "rpc.service";
    /// `rpc.method`: the method called.
    pub const RPC_METHOD: &str = "rpc.method";
}

/// The `error.type` of a failed operation: the error's kind, lower case.
pub fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Connection => "connection",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Server => "server",
        ErrorKind::Auth => "auth",
        ErrorKind::Config => "config",
        ErrorKind::NotFound => "not_found",
        ErrorKind::Decode => "decode",
        ErrorKind::Shutdown => "shutdown",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Remote => "remote",
        _ => "_OTHER",
    }
}

/// The handles of one topic a producer publishes to.
#[derive(Debug)]
pub(crate) struct PublishMetrics {
    labels: [Label; 3],
    sent: Counter,
    duration: Histogram,
}

impl PublishMetrics {
    pub(crate) fn new(topic: &str) -> Self {
        let labels = [
            Label::from_static_parts(label::SYSTEM, SYSTEM),
            Label::new(label::DESTINATION, topic.to_owned()),
            Label::from_static_parts(label::OPERATION, "publish"),
        ];
        Self {
            sent: counter!(SENT_MESSAGES, labels.iter()),
            duration: histogram!(OPERATION_DURATION, labels.iter()),
            labels,
        }
    }

    /// A publish (or batch) that began at `started` stored `stored` messages and failed
    /// `failed` with an error of `kind`.
    pub(crate) fn published(&self, started: Instant, stored: u64, failed: Option<(u64, ErrorKind)>) {
        self.sent.increment(stored);
        match failed {
            None => self.duration.record(started.elapsed()),
            Some((n, kind)) => {
                // Failures are rare: their handles are looked up when they happen.
                let labels = self.with_error(kind);
                counter!(SENT_MESSAGES, labels.iter()).increment(n);
                histogram!(OPERATION_DURATION, labels.iter()).record(started.elapsed());
            }
        }
    }

    fn with_error(&self, kind: ErrorKind) -> Vec<Label> {
        let mut labels = self.labels.to_vec();
        labels.push(Label::from_static_parts(label::ERROR_TYPE, error_type(kind)));
        labels
    }
}

/// How a handler's attempt ended, for [`PROCESS_DURATION`]'s `error.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    Ok,
    HandlerError,
    Rejected,
    Panic,
    Timeout,
}

impl Attempt {
    /// Its `error.type`; `None` for a success.
    pub(crate) fn error_type(self) -> Option<&'static str> {
        match self {
            Self::Ok => None,
            Self::HandlerError => Some("handler_error"),
            Self::Rejected => Some("rejected"),
            Self::Panic => Some("panic"),
            Self::Timeout => Some("timeout"),
        }
    }
}

/// The handles of one route of a worker: a named topic, or a pattern shared by every topic it
/// matched.
#[derive(Debug)]
pub(crate) struct ConsumerMetrics {
    pub(crate) consumed: Counter,
    /// By [`Attempt`], in its order.
    process: [Histogram; 5],
    pub(crate) retries: Counter,
    /// By `DeadLetterReason`, in the order of [`Self::dead_lettered`].
    dead_letters: [Counter; 4],
    pub(crate) reclaimed: Counter,
    pub(crate) expired: Counter,
    pub(crate) groups_recreated: Counter,
    pub(crate) leases_lost: Counter,
    in_flight: Gauge,
}

impl ConsumerMetrics {
    /// Handles for `destination` (a topic or a pattern) read by `group`.
    pub(crate) fn new(destination: &str, group: &str) -> Self {
        let system = Label::from_static_parts(label::SYSTEM, SYSTEM);
        let destination = Label::new(label::DESTINATION, destination.to_owned());
        let group = Label::new(label::GROUP, group.to_owned());
        let base = [system, destination, group];
        let with = |extra: &[Label]| -> Vec<Label> { base.iter().cloned().chain(extra.iter().cloned()).collect() };
        let op = |name: &'static str| Label::from_static_parts(label::OPERATION, name);
        let process = |attempt: Attempt| {
            let error = attempt.error_type();
            let mut labels = with(&[op("process")]);
            labels.extend(error.map(|e| Label::from_static_parts(label::ERROR_TYPE, e)));
            histogram!(PROCESS_DURATION, labels.iter())
        };
        let reason =
            |r: &'static str| counter!(DEAD_LETTERS, with(&[Label::from_static_parts(label::REASON, r)]).iter());
        Self {
            consumed: counter!(CONSUMED_MESSAGES, with(&[op("receive")]).iter()),
            process: [
                process(Attempt::Ok),
                process(Attempt::HandlerError),
                process(Attempt::Rejected),
                process(Attempt::Panic),
                process(Attempt::Timeout),
            ],
            retries: counter!(RETRIES, base.iter()),
            dead_letters: [reason("malformed"), reason("max_deliveries"), reason("rejected"), reason("expired")],
            reclaimed: counter!(RECLAIMED, base.iter()),
            expired: counter!(EXPIRED, base.iter()),
            groups_recreated: counter!(GROUPS_RECREATED, base.iter()),
            leases_lost: counter!(LEASES_LOST, base.iter()),
            in_flight: gauge!(IN_FLIGHT, base.iter()),
        }
    }

    /// One topic now runs `now` handlers, and last said it ran `reported`: [`IN_FLIGHT`]
    /// moves by the difference (a pattern's topics share the gauge). Said once per read batch
    /// and per acknowledgement batch, not per message: two contended atomic updates of a float
    /// per message cost the `e2e` benchmark several per cent with a recorder installed.
    pub(crate) fn report_running(&self, reported: &AtomicI64, now: i64) {
        let before = reported.swap(now, Ordering::Relaxed);
        if before != now {
            self.in_flight.increment((now - before) as f64);
        }
    }

    /// An attempt that began at `started` ended as `attempt`.
    pub(crate) fn processed(&self, started: Instant, attempt: Attempt) {
        self.process[attempt as usize].record(started.elapsed());
    }

    /// An entry went to the dead-letter stream for `reason` (its `dlq:reason`).
    pub(crate) fn dead_lettered(&self, reason: &str) {
        let i = match reason {
            "malformed" => 0,
            "max_deliveries" => 1,
            "rejected" => 2,
            _ => 3,
        };
        self.dead_letters[i].increment(1);
    }
}
