//! Errors of RPC clients and servers.

use std::time::Duration;

use tributary_core::{CodecError, ErrorKind, InvalidName, RedisError};
use tributary_streams::StreamError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// No reply came before the deadline. The request may still be executed if a server picks
    /// it up before the deadline passes, never after.
    #[error("call to `{service}.{method}` timed out after {after:?}")]
    Timeout {
        /// Service called.
        service: String,
        /// Method called.
        method: String,
        /// The call's timeout.
        after: Duration,
    },
    /// The server answered with an error (the handler's, or `internal` for a panic).
    #[error("`{service}.{method}` failed with `{code}`: {message}")]
    Remote {
        /// Service called.
        service: String,
        /// Method called.
        method: String,
        /// Error code.
        code: String,
        /// Error message.
        message: String,
        /// Structured details, if the handler gave any.
        details: Option<serde_json::Value>,
    },
    /// The request could not be encoded, or the reply decoded.
    #[error("could not encode or decode a message of `{service}.{method}`")]
    Codec {
        /// Service called.
        service: String,
        /// Method called.
        method: String,
        /// The codec's error.
        #[source]
        source: CodecError,
    },
    /// The request could not be published.
    #[error("could not send the request to `{service}`")]
    Send {
        /// Service called.
        service: String,
        /// The failure.
        #[source]
        source: StreamError,
    },
    /// A service or method name is not valid.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// A Redis command of the client failed.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// The client was closed.
    #[error("rpc client closed")]
    Closed,
}

impl RpcError {
    /// Coarse classification: timeouts and connection failures may be retried.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::Remote { .. } => ErrorKind::Remote,
            Self::Codec { .. } => ErrorKind::Decode,
            Self::Send { source, .. } => source.kind(),
            Self::InvalidName(_) => ErrorKind::Config,
            Self::Redis(e) => e.kind(),
            Self::Closed => ErrorKind::Shutdown,
        }
    }

    /// The remote error code, for [`RpcError::Remote`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Remote { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// What an RPC handler returns on failure: sent back to the caller as
/// [`RpcError::Remote`] with the same code, message and details.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcHandlerError {
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) details: Option<serde_json::Value>,
}

impl RpcHandlerError {
    /// An error with a machine-readable `code` and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), details: None }
    }

    /// Adds structured details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The code.
    pub fn code(&self) -> &str {
        &self.code
    }
}

impl<E: Into<tributary_core::BoxError>> From<E> for RpcHandlerError {
    /// Any error, with code `handler_error` and its text as the message.
    fn from(e: E) -> Self {
        Self::new(crate::protocol::code::HANDLER, e.into().to_string())
    }
}

impl std::fmt::Display for RpcHandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}
