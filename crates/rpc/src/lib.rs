//! Request/response over Redis Streams, without the failure modes of pub/sub recipes.
//!
//! - A call registers its pending slot, and its reply stream is already being read, before
//!   the request is sent: a fast reply is never lost.
//! - Requests are stream entries with an absolute deadline: one sent while no server runs
//!   waits; a server that starts before the deadline answers it; after the deadline the
//!   caller has [`RpcError::Timeout`] and no server executes it.
//! - Servers of a service share its requests through a consumer group, and take over those
//!   of a crashed server.
//! - Handler errors come back as [`RpcError::Remote`] with a code, panics as code `internal`.
//! - Reply streams are trimmed as replies are read and expire when their client is gone; a
//!   server writes only to reply streams of its namespace.
//!
//! See `docs/rpc.md` for the protocol.
//!
//! ```no_run
//! use tributary_core::Connection;
//! use tributary_rpc::{RpcClient, RpcHandlerError, RpcServer};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Add { a: i64, b: i64 }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let conn = Connection::connect("redis://127.0.0.1:6379").await?;
//! let server = RpcServer::builder(conn.clone(), "calc")
//!     .method("add", |req: Add, _ctx| async move { Ok::<_, RpcHandlerError>(req.a + req.b) })
//!     .build()?.start();
//! let client = RpcClient::new(conn);
//! let sum: i64 = client.call("calc", "add", &Add { a: 2, b: 3 }).await?;
//! assert_eq!(sum, 5);
//! server.shutdown().await;
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod error;
pub mod keys;
pub mod protocol;
mod reply;
mod server;

pub use client::{RpcClient, RpcClientBuilder};
pub use error::{RpcError, RpcHandlerError};
pub use server::{RpcServer, RpcServerBuilder, RpcServerHandle};
