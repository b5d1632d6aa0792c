//! Error classification shared by every Tributary crate.

/// A boxed error, as used for sources that callers should not match on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Coarse, stable classification of an error, for retry decisions and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Connection refused, dropped or reset: worth retrying once Redis is back.
    Connection,
    /// A command or a call timed out: may be retried.
    Timeout,
    /// Redis answered with an error reply (wrong type, script error, ...): permanent.
    Server,
    /// Authentication or permission failure: permanent until the configuration changes.
    Auth,
    /// Configuration or argument error found before talking to Redis: permanent.
    Config,
    /// A key, group or stream does not exist.
    NotFound,
    /// Bytes could not be decoded (wire format or payload): permanent for those bytes.
    Decode,
    /// The component is shutting down.
    Shutdown,
    /// Redis refused the command for now: out of memory (`OOM`), loading its data set
    /// (`LOADING`), running a long script (`BUSY`), or a cluster or replica that is failing over
    /// (`TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`). Worth retrying once the condition clears.
    Unavailable,
    /// A remote handler failed (RPC).
    Remote,
}

impl ErrorKind {
    /// True for kinds where the same operation may succeed if tried again later.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Connection | Self::Timeout | Self::Unavailable)
    }
}

/// A Redis command failed. Carries the command name, its classification and what Redis (or
/// the client) said, e.g. ``redis command `XACK` failed (NotFound): NOGROUP No such key ...``.
///
/// The client's message is part of the text rather than a `source()`: it is the end of the
/// chain (nothing further to walk), and a log line with `%error` then says why.
#[derive(Debug, thiserror::Error)]
#[error("redis command `{command}` failed ({kind:?}): {}", .detail.message)]
pub struct RedisError {
    command: &'static str,
    kind: ErrorKind,
    /// Boxed: errors of every crate embed this one, and stay small.
    detail: Box<Detail>,
}

#[derive(Debug)]
struct Detail {
    /// What Redis or the client said.
    message: String,
    /// The client's error, kept to match on the reply (`is_server_error`).
    cause: BoxError,
}

/// Error reply prefixes that mean "not now" rather than "never" (see [`ErrorKind::Unavailable`]).
const UNAVAILABLE: [&str; 6] = ["OOM", "LOADING", "BUSY ", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN"];

impl RedisError {
    /// Wraps a fred error, recording which command failed and classifying it.
    #[doc(hidden)] // For Tributary's own crates: fred is not part of the supported API (#25).
    pub fn new(command: &'static str, err: fred::error::Error) -> Self {
        use fred::error::ErrorKind as F;
        let kind = match err.kind() {
            F::Timeout => ErrorKind::Timeout,
            F::IO | F::Canceled | F::Backpressure | F::Routing | F::Cluster => ErrorKind::Connection,
            F::Auth => ErrorKind::Auth,
            F::Config | F::Url | F::InvalidArgument | F::InvalidCommand => ErrorKind::Config,
            F::NotFound => ErrorKind::NotFound,
            // The client's connection task ended (it was closed, or its node left the cluster):
            // with the command unanswered (it may have run), or before it was sent.
            F::Unknown if is_router_gone(err.details()) => ErrorKind::Connection,
            _ if err.details().starts_with("NOGROUP") => ErrorKind::NotFound,
            _ if err.details().starts_with("NOPERM") || err.details().starts_with("WRONGPASS") => ErrorKind::Auth,
            _ if UNAVAILABLE.iter().any(|p| err.details().starts_with(p)) => ErrorKind::Unavailable,
            _ => ErrorKind::Server,
        };
        let message = if err.details().is_empty() { format!("{:?}", err.kind()) } else { err.details().to_owned() };
        Self { command, kind, detail: Box::new(Detail { message, cause: Box::new(err) }) }
    }

    /// An error for a reply whose shape was not what the command documents.
    pub fn unexpected_reply(command: &'static str, what: &'static str) -> Self {
        Self {
            command,
            kind: ErrorKind::Server,
            detail: Box::new(Detail { message: what.to_owned(), cause: what.into() }),
        }
    }

    /// The command that failed, e.g. `"XADD"`.
    pub fn command(&self) -> &'static str {
        self.command
    }

    /// Classification of the failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// True when Redis replied with an error starting with `prefix` (e.g. `BUSYGROUP`).
    pub fn is_server_error(&self, prefix: &str) -> bool {
        self.detail.cause.downcast_ref::<fred::error::Error>().is_some_and(|e| e.details().starts_with(prefix))
    }
}

/// fred's words for a command whose client's connection task had ended: the reply channel
/// closed (tokio's `RecvError`, with the command unanswered) or the command could not be
/// handed to the task at all.
fn is_router_gone(details: &str) -> bool {
    details == "channel closed" || details == "Failed to send command to router."
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fred turns a dropped reply channel into `Unknown` with tokio's words, which an upgrade
    /// of either could change: this pins them.
    #[tokio::test]
    async fn a_client_whose_task_ended_fails_commands_as_a_connection_error() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        drop(tx);
        let closed: fred::error::Error = rx.await.unwrap_err().into();
        assert_eq!(RedisError::new("XADD", closed).kind(), ErrorKind::Connection);
        let unsent = fred::error::Error::new(fred::error::ErrorKind::Unknown, "Failed to send command to router.");
        assert_eq!(RedisError::new("XADD", unsent).kind(), ErrorKind::Connection);
        let other = fred::error::Error::new(fred::error::ErrorKind::Unknown, "something else");
        assert_eq!(RedisError::new("XADD", other).kind(), ErrorKind::Server);
    }
}
