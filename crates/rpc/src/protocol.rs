//! The RPC conventions on top of the wire format (see `docs/rpc.md`).
//!
//! A request is an envelope on the service's topic `rpc.<service>` with header `rpc-method`,
//! `corr` (correlation id), `reply` (the caller's reply stream) and `dl` (deadline). A
//! reply is a short record on that reply stream (`v`, the same `corr`, `ct`, `p`) with header
//! field `h:rpc-status` `error` when its payload is an [`ErrorBody`]; without it (or with
//! `ok`, as earlier servers wrote) the payload is the response.

use serde::{Deserialize, Serialize};

/// Header naming the method.
pub const METHOD_HEADER: &str = "rpc-method";
/// Header of a reply: `ok` or `error`.
pub const STATUS_HEADER: &str = "rpc-status";
/// [`STATUS_HEADER`] value of a success (earlier servers wrote it; now an ok reply has no
/// status field).
pub const STATUS_OK: &str = "ok";
/// [`STATUS_HEADER`] value of a failure.
pub const STATUS_ERROR: &str = "error";
/// Consumer group shared by every server instance of a service.
pub const SERVER_GROUP: &str = "rpc-server";

/// Error codes Tributary itself sends.
pub mod code {
    /// The handler panicked.
    pub const INTERNAL: &str = "internal";
    /// No handler for the method.
    pub const UNKNOWN_METHOD: &str = "unknown_method";
    /// The request payload did not decode as the method's request type.
    pub const BAD_REQUEST: &str = "bad_request";
    /// The handler returned an error without a code of its own.
    pub const HANDLER: &str = "handler_error";
}

/// Payload of an error reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `out_of_stock`.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Optional structured details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}
