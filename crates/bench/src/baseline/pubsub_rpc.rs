//! Hand-written request/reply over Redis pub/sub with fred: the usual Redis recipe, and what
//! an RPC that keeps nothing costs (#19).
//!
//! - Client: subscribes to a reply channel of its own once, at start (so no reply can come
//!   before its subscription); each call registers a oneshot slot under its correlation id,
//!   then `PUBLISH`es the request to the service's channel.
//! - Server: subscribed to the service's channel; for each request it `PUBLISH`es the reply to
//!   the request's reply channel (without waiting for it before taking the next request).
//!
//! A message is `corr` (8 bytes, big-endian), the reply channel's length (2 bytes) and name
//! (requests only), then the payload. Nothing is durable: a request published while no server
//! listens, or a reply while the client is reconnecting, is lost, and the call waits for ever
//! (the benchmark's calls all get their replies on loopback).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use fred::clients::Client;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::{Builder, Config};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tributary::BoxError;

/// Messages fred keeps for a subscriber before it misses some: a burst of requests from 64
/// callers must not overflow it (fred's default is 32).
const BACKLOG: usize = 4_096;

/// A subscriber connection with room for [`BACKLOG`] messages.
async fn subscriber(url: &str) -> Result<Client, BoxError> {
    let mut builder = Builder::from_config(Config::from_url(url)?);
    builder.with_performance_config(|p| p.broadcast_channel_capacity = BACKLOG);
    let client = builder.build()?;
    client.init().await?;
    Ok(client)
}

fn bytes_of(value: fred::types::Value) -> Option<Bytes> {
    match value {
        fred::types::Value::Bytes(b) => Some(b),
        fred::types::Value::String(s) => Some(s.into_inner()),
        _ => None,
    }
}

/// A running echo server; stops when dropped.
#[derive(Debug)]
pub struct Server {
    task: JoinHandle<()>,
    subscriber: Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        let subscriber = self.subscriber.clone();
        tokio::spawn(async move {
            let _ = subscriber.quit().await;
        });
    }
}

impl Server {
    /// Starts an echo server on `channel` of the server at `url`; replies go out through
    /// `writer`.
    ///
    /// # Errors
    /// When the subscription cannot be made.
    pub async fn start(url: &str, writer: Client, channel: String) -> Result<Self, BoxError> {
        let subscriber = subscriber(url).await?;
        let mut messages = subscriber.message_rx();
        subscriber.subscribe(channel).await?;
        let task = tokio::spawn(async move {
            loop {
                let message = match messages.recv().await {
                    Ok(m) => m,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        eprintln!("fred pub/sub rpc server: {n} requests lost");
                        continue;
                    }
                    Err(_) => return,
                };
                let Some(request) = bytes_of(message.value) else { continue };
                let Some((reply_to, reply)) = reply_of(&request) else { continue };
                let Ok(reply_to) = fred::bytes_utils::Str::from_inner(reply_to) else { continue };
                let writer = writer.clone();
                tokio::spawn(async move {
                    let _: Result<i64, _> = writer.publish(reply_to, reply).await;
                });
            }
        });
        Ok(Self { task, subscriber })
    }
}

/// The reply channel of `request` and the reply: its `corr` and payload.
fn reply_of(request: &Bytes) -> Option<(Bytes, Bytes)> {
    let corr = request.get(..8)?;
    let len = u16::from_be_bytes(request.get(8..10)?.try_into().ok()?) as usize;
    let reply_to = request.slice(10..10 + len);
    let payload = request.get(10 + len..)?;
    let mut reply = BytesMut::with_capacity(8 + payload.len());
    reply.put_slice(corr);
    reply.put_slice(payload);
    Some((reply_to, reply.freeze()))
}

/// Calls the echo server.
#[derive(Debug, Clone)]
pub struct RpcClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: Client,
    subscriber: Client,
    channel: String,
    reply_to: Bytes,
    next_corr: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Bytes>>>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.reader.lock().ok().and_then(|mut r| r.take()) {
            task.abort();
        }
        let subscriber = self.subscriber.clone();
        tokio::spawn(async move {
            let _ = subscriber.quit().await;
        });
    }
}

impl RpcClient {
    /// A client of the server at `url` with reply channel `reply_to`, subscribed before it
    /// returns; requests go to `channel` through `writer`.
    ///
    /// # Errors
    /// When the subscription cannot be made.
    pub async fn start(url: &str, writer: Client, channel: String, reply_to: String) -> Result<Self, BoxError> {
        let subscriber = subscriber(url).await?;
        let mut messages = subscriber.message_rx();
        subscriber.subscribe(reply_to.clone()).await?;
        let inner = Arc::new(Inner {
            writer,
            subscriber,
            channel,
            reply_to: Bytes::from(reply_to),
            next_corr: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            reader: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        let task = tokio::spawn(async move {
            loop {
                let message = match messages.recv().await {
                    Ok(m) => m,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        eprintln!("fred pub/sub rpc client: {n} replies lost");
                        continue;
                    }
                    Err(_) => return,
                };
                let Some(inner) = weak.upgrade() else { return };
                let Some(reply) = bytes_of(message.value) else { continue };
                let Some(corr) = reply.get(..8).and_then(|c| c.try_into().ok()).map(u64::from_be_bytes) else {
                    continue;
                };
                let waiting = inner.pending.lock().expect("pending lock").remove(&corr);
                if let Some(tx) = waiting {
                    let _ = tx.send(reply.slice(8..));
                }
            }
        });
        *inner.reader.lock().expect("reader lock") = Some(task);
        Ok(Self { inner })
    }

    /// Sends `payload` and waits for the echo.
    ///
    /// # Errors
    /// When the request cannot be published or the client stopped.
    pub async fn call(&self, payload: Bytes) -> Result<Bytes, BoxError> {
        let corr = self.inner.next_corr.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().expect("pending lock").insert(corr, tx);
        let reply_to = &self.inner.reply_to;
        let mut request = BytesMut::with_capacity(10 + reply_to.len() + payload.len());
        request.put_u64(corr);
        request.put_u16(u16::try_from(reply_to.len())?);
        request.put_slice(reply_to);
        request.put_slice(&payload);
        let _: i64 = self.inner.writer.publish(self.inner.channel.as_str(), request.freeze()).await?;
        Ok(rx.await?)
    }
}
