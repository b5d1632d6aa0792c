//! Core types of Tributary, durable messaging on Redis Streams: the message [`Envelope`],
//! ids, [codecs](codec), the versioned [wire format](wire), key names and the Redis
//! [`Connection`].
//!
//! Most applications depend on the facade instead (package `tributary-redis`, imported as
//! `tributary`), which re-exports this crate.
//!
//! ```
//! use tributary_core::{codec::MsgPack, wire, Envelope};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! struct OrderPlaced { id: u64, total_cents: u64 }
//!
//! let env = Envelope::encode(&MsgPack, &OrderPlaced { id: 1, total_cents: 990 })?.with_key("c-42");
//! let fields = wire::encode(&env, &wire::Limits::default())?;   // what XADD writes
//! let back = wire::decode(&fields, &wire::Limits::default())?;  // an envelope with its id
//! // (a consumer reads a topic's entries with `wire::decode_entry`: see `wire`)
//! assert_eq!(back.decode::<OrderPlaced>()?, OrderPlaced { id: 1, total_cents: 990 });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

// Used by Tributary's own crates; not part of the supported API (#25).
#[doc(hidden)]
pub mod cache;
pub mod codec;
pub mod connection;
pub mod envelope;
pub mod error;
pub mod id;
pub mod keys;
pub mod metrics;
pub mod partition;
pub mod server;
mod slot_router;
pub mod trace;
pub mod wire;

pub use codec::{Codec, CodecError, Json, MsgPack};
pub use connection::{ConnectError, ConnectOptions, Connection};
// Used by Tributary's own crates; not part of the supported API (#25).
#[doc(hidden)]
pub use connection::Dedicated;
pub use envelope::{Envelope, Headers};
// Used by Tributary's own crates; not part of the supported API (#25).
#[doc(hidden)]
pub use envelope::EnvelopeRef;
pub use error::{BoxError, ErrorKind, RedisError};
pub use id::{EntryId, MessageId};
pub use keys::{InvalidName, Namespace, Topic, TopicPattern};
pub use server::{ServerInfo, ServerKind, ServerVersion};
pub use trace::TraceParent;
pub use wire::{DecodeError, Limits};

/// The Redis client library Tributary uses, for [`ConnectOptions::connect_with`] and
/// [`Connection::redis`].
///
/// Only with the `unstable-fred` feature, and without a stability promise: any Tributary
/// release may upgrade fred.
#[cfg(feature = "unstable-fred")]
#[cfg_attr(docsrs, doc(cfg(feature = "unstable-fred")))]
pub use fred;
