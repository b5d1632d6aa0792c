//! Errors of the streams crate.

use tributary_core::{CodecError, DecodeError, ErrorKind, InvalidName, RedisError};

/// Errors returned by producers, workers and the admin and replay APIs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A Redis command failed; see [`RedisError::command`] and the source.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// The message could not be encoded.
    #[error("could not encode the message for topic `{topic}`")]
    Encode {
        /// Topic published to.
        topic: String,
        /// The codec's error.
        #[source]
        source: CodecError,
    },
    /// The envelope breaks the wire-format limits (too large, bad header, ...).
    #[error("message for topic `{topic}` breaks the wire-format limits")]
    Limits {
        /// Topic published to.
        topic: String,
        /// What is wrong.
        #[source]
        source: DecodeError,
    },
    /// A topic, pattern or group name is not valid.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// Part of a pipelined batch was not stored.
    #[error("{failed} of {total} messages in the batch for topic `{topic}` were not stored")]
    PartialBatch {
        /// Topic published to.
        topic: String,
        /// Number of messages not stored.
        failed: usize,
        /// Batch size.
        total: usize,
        /// Entry ids of the stored messages, `None` for the failed ones, in batch order.
        stored: Vec<Option<tributary_core::EntryId>>,
        /// The first failure.
        #[source]
        source: RedisError,
    },
    /// The entry was stored on the primary, but fewer replicas than asked acknowledged it in
    /// time: it may be lost if the primary fails now.
    #[error("entry {id} was acknowledged by {acked} of {wanted} replicas")]
    NotReplicated {
        /// The stored entry.
        id: tributary_core::EntryId,
        /// Replicas that acknowledged it.
        acked: u32,
        /// Replicas asked for.
        wanted: u32,
    },
    /// A dedicated connection could not be opened.
    #[error("cannot open a connection")]
    Connect(#[source] tributary_core::ConnectError),
    /// A topic's stored retention (see [`Admin::set_retention`](crate::Admin::set_retention))
    /// cannot be read: it was written by a newer Tributary, or changed by hand. Producers do not
    /// trim such a topic (they log a warning); storing a retention again repairs it.
    #[error("the stored retention of topic `{topic}` cannot be read: {reason}")]
    InvalidRetention {
        /// The topic.
        topic: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A dead letter has nothing to replay: its original entry had been trimmed, only a
    /// prefix of it was kept (it was too large), or it is not a dead letter at all.
    #[error("dead letter `{id}` has no complete original entry to replay")]
    NothingToReplay {
        /// Dead-letter entry id.
        id: String,
    },
    /// A topic's partitions cannot be as asked: the count is out of range, the topic already
    /// has another count (it is fixed once set: see `docs/partitions.md`), or what is stored
    /// is not a count.
    #[error("topic `{topic}`: {reason}")]
    Partitions {
        /// The topic.
        topic: String,
        /// What is wrong.
        reason: String,
    },
}

impl StreamError {
    /// Coarse classification: [`ErrorKind::is_retryable`] tells whether trying again may help.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Redis(e) | Self::PartialBatch { source: e, .. } => e.kind(),
            Self::Encode { .. } | Self::Limits { .. } | Self::InvalidName(_) => ErrorKind::Config,
            Self::NothingToReplay { .. } => ErrorKind::NotFound,
            Self::InvalidRetention { .. } => ErrorKind::Decode,
            Self::Partitions { .. } => ErrorKind::Config,
            Self::Connect(e) => e.kind(),
            Self::NotReplicated { .. } => ErrorKind::Timeout,
        }
    }
}

/// A builder's configuration is invalid. Returned by every builder's `build()` (producer,
/// worker, RPC client and server), before any I/O.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A topic, pattern or group name is not valid.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// No handler was registered.
    #[error("the worker has no handlers")]
    NoHandlers,
    /// Two handlers were registered for the same topic or pattern.
    #[error("more than one handler for `{0}`")]
    DuplicateRoute(String),
    /// A handler written for another consumer group was registered.
    #[error("handler for `{route}` registered on a worker of group `{group}`")]
    GroupMismatch {
        /// The topic, and the group the handler names.
        route: String,
        /// The worker's group.
        group: String,
    },
    /// Two handlers were registered for the same RPC method.
    #[error("more than one handler for method `{0}`")]
    DuplicateMethod(String),
    /// A setting that takes one value was given twice: the second would silently replace
    /// the first.
    #[error("`{0}` was set twice; combine both into one call")]
    SetTwice(&'static str),
    /// A numeric setting is out of range.
    #[error("`{setting}` must be {requirement}")]
    OutOfRange {
        /// Setting name.
        setting: &'static str,
        /// What it must be.
        requirement: &'static str,
    },
}
