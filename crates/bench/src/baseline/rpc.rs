//! Hand-written request/reply over Redis Streams with fred: the RPC baseline.
//!
//! - Client: one reply stream per client, read by one task with `XREAD BLOCK` from the last id
//!   it saw; each call registers a oneshot slot under its correlation id, then `XADD`s the
//!   request (`corr`, `reply`, `p`) to the service's request stream.
//! - Server: `XREADGROUP COUNT 64 BLOCK` on the request stream, then one pipeline per read:
//!   an `XADD` (`MAXLEN ~ 10000`) of each reply and one `XACK` of the whole batch.
//!
//! No deadlines, no reply-stream expiry, no trimming of answered requests: the bare protocol.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::StreamsInterface;
use fred::types::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tributary::BoxError;

use super::{field, parse_read_reply};

const GROUP: &str = "srv";

/// A running echo server; stops when dropped.
#[derive(Debug)]
pub struct Server {
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Starts an echo server on request stream `key`: `reader` does the blocking reads (give
    /// it a connection of its own), `writer` the replies and acks.
    ///
    /// # Errors
    /// When the consumer group cannot be created.
    pub async fn start(reader: Client, writer: Client, key: String) -> Result<Self, BoxError> {
        match writer.xgroup_create::<Value, _, _, _>(key.as_str(), GROUP, "$", true).await {
            Ok(_) => {}
            Err(e) if e.details().starts_with("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = serve_batch(&reader, &writer, &key).await {
                    eprintln!("fred rpc server: {e}");
                    return;
                }
            }
        });
        Ok(Self { task })
    }
}

async fn serve_batch(reader: &Client, writer: &Client, key: &str) -> Result<(), BoxError> {
    let reply: Value = reader.xreadgroup(GROUP, "s1", Some(64), Some(1000), false, key, ">").await?;
    let requests = parse_read_reply(reply);
    if requests.is_empty() {
        return Ok(());
    }
    let pipeline = writer.pipeline();
    let mut ids = Vec::with_capacity(requests.len());
    for (id, fields) in &requests {
        ids.push(String::from_utf8_lossy(id).into_owned());
        let (Some(corr), Some(reply_to), Some(payload)) =
            (field(fields, "corr"), field(fields, "reply"), field(fields, "p"))
        else {
            continue;
        };
        let reply_fields =
            vec![(Bytes::from_static(b"corr"), corr.clone()), (Bytes::from_static(b"p"), payload.clone())];
        let reply_key = String::from_utf8_lossy(reply_to).into_owned();
        let _: () = pipeline.xadd(reply_key, false, ("MAXLEN", "~", 10_000), "*", reply_fields).await?;
    }
    let _: () = pipeline.xack(key, GROUP, ids).await?;
    let _: Vec<Value> = pipeline.all().await?;
    Ok(())
}

/// Calls the echo server.
#[derive(Debug, Clone)]
pub struct RpcClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: Client,
    request_key: String,
    reply_key: Bytes,
    next_corr: AtomicU64,
    pending: Mutex<HashMap<Bytes, oneshot::Sender<Bytes>>>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.reader.lock().ok().and_then(|mut r| r.take()) {
            task.abort();
        }
    }
}

impl RpcClient {
    /// A client with reply stream `reply_key`, read by `reader` (a connection of its own);
    /// requests go to `request_key` through `writer`.
    pub fn start(reader: Client, writer: Client, request_key: String, reply_key: String) -> Self {
        let inner = Arc::new(Inner {
            writer,
            request_key,
            reply_key: Bytes::from(reply_key.clone()),
            next_corr: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            reader: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        let task = tokio::spawn(async move {
            // The stream is new: reading from 0 misses nothing written before the first read.
            let mut last = "0-0".to_owned();
            loop {
                let reply: Result<Value, _> =
                    reader.xread(Some(512), Some(1000), reply_key.as_str(), last.as_str()).await;
                let Some(inner) = weak.upgrade() else { return };
                let entries = match reply {
                    Ok(v) => parse_read_reply(v),
                    Err(e) => {
                        eprintln!("fred rpc client: {e}");
                        return;
                    }
                };
                let mut pending = inner.pending.lock().expect("pending lock");
                for (id, fields) in entries {
                    last = String::from_utf8_lossy(&id).into_owned();
                    if let (Some(corr), Some(p)) = (field(&fields, "corr"), field(&fields, "p")) {
                        if let Some(tx) = pending.remove(corr) {
                            let _ = tx.send(p.clone());
                        }
                    }
                }
            }
        });
        *inner.reader.lock().expect("reader lock") = Some(task);
        Self { inner }
    }

    /// Sends `payload` and waits for the echo.
    ///
    /// # Errors
    /// When the request cannot be stored or the client stopped.
    pub async fn call(&self, payload: Bytes) -> Result<Bytes, BoxError> {
        let corr = Bytes::from(self.inner.next_corr.fetch_add(1, Ordering::Relaxed).to_string());
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().expect("pending lock").insert(corr.clone(), tx);
        let fields = vec![
            (Bytes::from_static(b"corr"), corr),
            (Bytes::from_static(b"reply"), self.inner.reply_key.clone()),
            (Bytes::from_static(b"p"), payload),
        ];
        let _: Value = self.inner.writer.xadd(self.inner.request_key.as_str(), false, None, "*", fields).await?;
        Ok(rx.await?)
    }
}
