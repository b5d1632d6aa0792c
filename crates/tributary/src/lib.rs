#![doc = include_str!(concat!(env!("OUT_DIR"), "/README.md"))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use tributary_core::{
    codec, connection, envelope, id, keys, partition, server, trace as trace_context, wire, BoxError, Codec,
    CodecError, ConnectError, ConnectOptions, Connection, DecodeError, EntryId, Envelope, ErrorKind, Headers,
    InvalidName, Json, Limits, MessageId, MsgPack, Namespace, RedisError, ServerInfo, ServerKind, ServerVersion, Topic,
    TopicPattern, TraceParent,
};

/// The Redis client library Tributary uses, for [`ConnectOptions::connect_with`] and
/// [`Connection::redis`].
///
/// Only with the `unstable-fred` feature, and without a stability promise: any Tributary
/// release may upgrade fred.
#[cfg(feature = "unstable-fred")]
#[cfg_attr(docsrs, doc(cfg(feature = "unstable-fred")))]
pub use tributary_core::fred;

#[cfg(feature = "streams")]
#[cfg_attr(docsrs, doc(cfg(feature = "streams")))]
pub use tributary_streams::{
    admin, async_trait, consumer, dead_letter, handler_fn, layer_fn, metrics, raw_handler_fn, replay, trace, Admin,
    BuildError, Context, DeadLetter, DeadLetterFilter, DeadLetters, ExpiredPolicy, GroupStats, Handler, HandlerError,
    HeldBy, HoldReason, Layer, Next, Position, Producer, ProducerBuilder, Publish, Received, Replay, ReplayAll,
    Retention, RetryPolicy, Route, RouteOptions, Scheduled, Scheduler, StreamError, TopicStats, Trimmed, Worker,
    WorkerBuilder, WorkerHandle, WorkerStats,
};

#[cfg(feature = "rpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "rpc")))]
pub use tributary_rpc::{
    keys as rpc_keys, protocol as rpc_protocol, RpcClient, RpcClientBuilder, RpcError, RpcHandlerError, RpcServer,
    RpcServerBuilder, RpcServerHandle,
};

#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
pub use tributary_macros::{handler, service};

/// What the macros expand to. Not public API.
#[doc(hidden)]
#[cfg(feature = "streams")]
pub mod __private {
    pub use tributary_core::Connection;
    #[cfg(feature = "rpc")]
    pub use tributary_rpc::{RpcClient, RpcError, RpcHandlerError, RpcServer, RpcServerBuilder};
    pub use tributary_streams::{handler_fn, Context, Handler, HandlerError, RetryPolicy, Route, RouteOptions};

    /// `Result<(), E>` of a `#[handler]` function as a handler result.
    pub fn into_handler_result<E: Into<HandlerError>>(r: Result<(), E>) -> Result<(), HandlerError> {
        r.map_err(Into::into)
    }

    /// `Result<T, E>` of a `#[service]` method as an RPC handler result.
    #[cfg(feature = "rpc")]
    pub fn into_rpc_result<T, E: Into<RpcHandlerError>>(r: Result<T, E>) -> Result<T, RpcHandlerError> {
        r.map_err(Into::into)
    }
}

/// What `#[service]` expands to goes through this: the items as they are with the `rpc`
/// feature, one clear error without.
#[doc(hidden)]
#[macro_export]
#[cfg(feature = "rpc")]
macro_rules! __require_rpc {
    ($($items:tt)*) => { $($items)* };
}

/// What `#[service]` expands to goes through this: the items as they are with the `rpc`
/// feature, one clear error without.
#[doc(hidden)]
#[macro_export]
#[cfg(not(feature = "rpc"))]
macro_rules! __require_rpc {
    ($($items:tt)*) => {
        compile_error!("`#[tributary::service]` needs the `rpc` feature of tributary (`features = [\"rpc\"]`)");
    };
}

/// The guides from `docs/`, so their examples are compiled with the crate.
pub mod guide {
    #[doc = include_str!(concat!(env!("OUT_DIR"), "/guide/delivery.md"))]
    pub mod delivery {}
    #[doc = include_str!(concat!(env!("OUT_DIR"), "/guide/rpc.md"))]
    #[cfg(feature = "rpc")]
    pub mod rpc {}
    #[doc = include_str!(concat!(env!("OUT_DIR"), "/guide/time.md"))]
    pub mod time {}
    #[doc = include_str!(concat!(env!("OUT_DIR"), "/guide/wire-format.md"))]
    pub mod wire_format {}
    #[doc = include_str!(concat!(env!("OUT_DIR"), "/guide/keys.md"))]
    pub mod keys {}
    #[doc = include_str!(concat!(env!("OUT_DIR"), "/guide/reliability.md"))]
    pub mod reliability {}
    #[doc = include_str!(concat!(env!("OUT_DIR"), "/guide/security.md"))]
    pub mod security {}
    #[doc = include_str!(concat!(env!("OUT_DIR"), "/guide/cli.md"))]
    pub mod cli {}
    #[doc = include_str!(concat!(env!("OUT_DIR"), "/guide/production.md"))]
    pub mod production {}
    #[doc = include_str!(concat!(env!("OUT_DIR"), "/guide/troubleshooting.md"))]
    pub mod troubleshooting {}
    #[doc = include_str!(concat!(env!("OUT_DIR"), "/guide/from-pubsub.md"))]
    #[cfg(feature = "rpc")]
    pub mod from_pubsub {}
    #[doc = include_str!(concat!(env!("OUT_DIR"), "/guide/performance.md"))]
    pub mod performance {}
    #[doc = include_str!(concat!(env!("OUT_DIR"), "/guide/observability.md"))]
    pub mod observability {}
    #[doc = include_str!(concat!(env!("OUT_DIR"), "/guide/partitions.md"))]
    pub mod partitions {}
}

/// The names most applications need: `use tributary::prelude::*;`.
pub mod prelude {
    pub use tributary_core::{Connection, EntryId, Envelope, MessageId};
    #[cfg(feature = "rpc")]
    pub use tributary_rpc::{RpcClient, RpcError, RpcHandlerError, RpcServer};
    #[cfg(feature = "streams")]
    pub use tributary_streams::{
        async_trait, Admin, Context, DeadLetters, Handler, HandlerError, Layer, Next, Position, Producer, Replay,
        Retention, RetryPolicy, Scheduler, Worker,
    };
}
