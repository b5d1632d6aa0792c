//! The RPC client: calls multiplexed over one reply stream per client instance.
//!
//! Before a request is sent, its pending slot is registered and the reply reader is already
//! positioned on the reply stream (it started before the client's first call, and carries its
//! last id), so a reply that arrives faster than the caller awaits it is never lost.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fred::interfaces::{ClientLike, StreamsInterface};
use fred::types::config::Options;

/// Requests of calls are sent without the connection's command timeout: the call's own timeout
/// bounds them, and a second timer per call (with the producer's topic lookup, which this path
/// also skips) was a measurable share of a call (docs/performance-history.md, "The RPC call
/// path, counted again").
const UNTIMED: Options = Options {
    max_attempts: None,
    max_redirections: None,
    timeout: Some(Duration::ZERO),
    cluster_node: None,
    cluster_hash: None,
    fail_fast: false,
};
use fred::types::{Key, Value};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::oneshot;
use tributary_core::cache::NameCache;
use tributary_core::connection::keyed_command;
use tributary_core::id::IdHasher;
use tributary_core::trace::{follow_unless_traced, record_failure, span_traceparent};
use tributary_core::{
    Codec, Connection, EntryId, EnvelopeRef, Headers, InvalidName, MessageId, MsgPack, RedisError, Topic,
};
use tributary_streams::replay::Tail;
use tributary_streams::trace::current_trace;
use tributary_streams::{metrics, BuildError, Position, Producer, StreamError};

use crate::error::RpcError;
use crate::keys;
use crate::protocol::{ErrorBody, METHOD_HEADER};
use crate::reply::Reply;

/// Longest timeout of a call (longer ones are cut to it): the deadline is computed from it.
const LONGEST_CALL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Calls methods of RPC services.
///
/// One client holds one reply stream and one background task reading it; every call made
/// through it (or its clones) shares them. Both start with the first call (or
/// [`ready`](Self::ready)): building a client does no I/O.
///
/// # Example
/// ```no_run
/// # async fn demo(conn: tributary_core::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tributary_rpc::RpcClient;
///
/// #[derive(serde::Serialize)]
/// struct Quote { sku: String }
/// #[derive(serde::Deserialize)]
/// struct Price { cents: u64 }
///
/// let client = RpcClient::builder(conn).default_timeout(Duration::from_secs(2)).build()?;
/// let price: Price = client.call("pricing", "quote", &Quote { sku: "A-1".into() }).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RpcClient<C: Codec = MsgPack> {
    inner: Arc<Inner>,
    codec: C,
}

/// Calls waiting for their reply, by correlation id: the request's message id, as a number
/// (routing a reply parses its `corr` once; no string is allocated or SipHashed per call).
type PendingCalls = HashMap<u128, oneshot::Sender<Reply>, BuildHasherDefault<IdHasher>>;

struct Inner {
    conn: Connection,
    producer: Producer,
    reply_key: String,
    default_timeout: Duration,
    pending: Mutex<PendingCalls>,
    late_replies: AtomicU64,
    /// `tributary.rpc.late_replies`.
    late_reply_counter: ::metrics::Counter,
    reply_ttl: Duration,
    /// Set once the reply stream exists and its reader runs (see `RpcClient::ready`).
    started: tokio::sync::OnceCell<()>,
    /// Set by `close`: calls fail at once rather than wait for replies nobody reads.
    closed: std::sync::atomic::AtomicBool,
    reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Request headers per method name (see `method_headers`).
    method_headers: NameCache<Headers>,
    /// Request streams per service name (see `request_stream`).
    request_streams: NameCache<RequestStream>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient").field("reply_stream", &self.reply_key).finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.reader.lock().ok().and_then(|mut r| r.take()) {
            task.abort();
        }
    }
}

/// Configures an [`RpcClient`]. Created by [`RpcClient::builder`].
#[derive(Debug)]
#[must_use = "builders do nothing until `.build()` is called"]
pub struct RpcClientBuilder<C> {
    conn: Connection,
    codec: C,
    default_timeout: Duration,
    reply_ttl: Duration,
}

impl RpcClient<MsgPack> {
    /// Configures a client.
    pub fn builder(conn: Connection) -> RpcClientBuilder<MsgPack> {
        RpcClientBuilder {
            conn,
            codec: MsgPack,
            default_timeout: Duration::from_secs(5),
            reply_ttl: Duration::from_secs(300),
        }
    }

    /// A client with default settings (MessagePack, 5 s timeout). No I/O: the reply stream
    /// is made by the first call (or [`ready`](Self::ready)).
    pub fn new(conn: Connection) -> Self {
        Self::builder(conn).build().expect("the default settings are valid")
    }
}

impl<C: Codec> RpcClientBuilder<C> {
    /// Encodes requests with `codec` (servers answer in the same content type).
    pub fn codec<C2: Codec>(self, codec: C2) -> RpcClientBuilder<C2> {
        RpcClientBuilder { conn: self.conn, codec, default_timeout: self.default_timeout, reply_ttl: self.reply_ttl }
    }

    /// Timeout of [`RpcClient::call`]. Defaults to 5 s.
    pub fn default_timeout(mut self, d: Duration) -> Self {
        self.default_timeout = d;
        self
    }

    /// The reply stream expires this long after the client stopped refreshing it (it refreshes
    /// every third of it while alive), so a crashed client leaves nothing behind for long.
    /// Defaults to 5 min.
    pub fn reply_ttl(mut self, d: Duration) -> Self {
        self.reply_ttl = d.max(Duration::from_millis(30));
        self
    }

    /// Builds the client. No I/O: the first call (or [`RpcClient::ready`]) creates the reply
    /// stream and starts its reader.
    ///
    /// # Errors
    /// [`BuildError::OutOfRange`] when the default timeout is zero.
    pub fn build(self) -> Result<RpcClient<C>, BuildError> {
        if self.default_timeout.is_zero() || self.default_timeout > LONGEST_CALL {
            return Err(BuildError::OutOfRange {
                setting: "default_timeout",
                requirement: "more than zero, at most a year",
            });
        }
        let client_id = uuid::Uuid::now_v7().to_string();
        let reply_key = keys::reply_stream(self.conn.namespace(), &client_id);
        let inner = Arc::new(Inner {
            producer: Producer::new(self.conn.clone()),
            conn: self.conn,
            reply_key,
            default_timeout: self.default_timeout,
            pending: Mutex::new(PendingCalls::default()),
            late_replies: AtomicU64::new(0),
            late_reply_counter: ::metrics::counter!(
                metrics::RPC_LATE_REPLIES,
                metrics::label::SYSTEM => metrics::SYSTEM
            ),
            reply_ttl: self.reply_ttl,
            started: tokio::sync::OnceCell::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
            reader: Mutex::new(None),
            method_headers: NameCache::new(1024),
            request_streams: NameCache::new(1024),
        });
        Ok(RpcClient { inner, codec: self.codec })
    }
}

/// Creates the reply stream (servers only write to one that exists) and starts its reader.
async fn start(inner: &Arc<Inner>) -> Result<(), RpcError> {
    keep_reply_stream(inner, inner.reply_ttl).await?;
    // The stream is new and ours alone: read it from the very beginning, so nothing written
    // before the first read completes can be missed. Reads end at least every third of the
    // TTL, so the expiry is refreshed in time even when no reply comes.
    let block = (inner.reply_ttl / 3).clamp(Duration::from_millis(10), Duration::from_secs(2));
    let tail = Tail::stream_key(inner.conn.clone(), inner.reply_key.clone(), Position::Beginning).block_for(block);
    {
        // `close` sets `closed` under this lock: either it finds the reader and stops it, or
        // the reader is never started.
        let mut reader = inner.reader.lock().expect("reader lock");
        if !inner.closed.load(Ordering::SeqCst) {
            *reader = Some(tokio::spawn(read_replies(Arc::downgrade(inner), tail, inner.reply_ttl)));
            return Ok(());
        }
    }
    // Closed while the stream was being created: it may have been made after `close`'s `DEL`.
    delete_reply_stream(inner).await?;
    Err(RpcError::Closed)
}

/// Deletes the reply stream.
async fn delete_reply_stream(inner: &Inner) -> Result<(), RedisError> {
    let key = inner.reply_key.as_str();
    let _: i64 = inner
        .conn
        .client_for(key)
        .await
        .custom(keyed_command("DEL", key, false), vec![Value::from(key)])
        .await
        .map_err(|e| RedisError::new("DEL", e))?;
    Ok(())
}

/// Creates the reply stream if it is missing and sets its expiry (`keep_reply_stream.lua`).
async fn keep_reply_stream(inner: &Inner, ttl: Duration) -> Result<(), RedisError> {
    static SCRIPT: std::sync::LazyLock<fred::types::scripts::Script> = std::sync::LazyLock::new(|| {
        fred::types::scripts::Script::from_lua(include_str!("scripts/keep_reply_stream.lua"))
    });
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let created: i64 = SCRIPT
        .evalsha_with_reload(
            &*inner.conn.client_for(&inner.reply_key).await,
            vec![inner.reply_key.clone()],
            vec![Value::from(ttl_ms)],
        )
        .await
        .map_err(|e| RedisError::new("EVALSHA keep_reply_stream", e))?;
    if created == 1 {
        tracing::debug!(reply_stream = %inner.reply_key, "reply stream created");
    }
    Ok(())
}

/// The reply reader: routes each reply to its waiting call by correlation id, trims what it
/// consumed, keeps the stream's expiry fresh, and creates the stream again if Redis lost it
/// (checked after every reconnection).
async fn read_replies(inner: std::sync::Weak<Inner>, mut tail: Tail, ttl: Duration) {
    let mut refreshed = tokio::time::Instant::now();
    let mut reconnects = match inner.upgrade() {
        Some(inner) => inner.conn.reconnect_rx(),
        None => return,
    };
    let (mut consumed, mut trimmed) = (0usize, tokio::time::Instant::now());
    let mut backoff = Duration::from_millis(50);
    loop {
        let batch = tail.next_entries().await;
        let Some(inner) = inner.upgrade() else { return };
        match batch {
            Ok(batch) => {
                backoff = Duration::from_millis(50);
                let batch_len = batch.len();
                for (entry_id, fields) in batch {
                    match Reply::from_fields(&fields, inner.conn.limits()) {
                        Ok((correlation_id, reply)) => inner.route(correlation_id, reply),
                        Err(reason) => tracing::warn!(entry_id = %entry_id, reason, "malformed reply discarded"),
                    }
                }
                consumed += batch_len;
                let mut cleanup: Vec<(&'static str, Vec<Value>)> = Vec::new();
                // Consumed replies are not needed again; trimming in bulk keeps the command
                // off the path of every reply.
                if consumed > 0 && (consumed >= 256 || trimmed.elapsed() >= Duration::from_secs(1)) {
                    cleanup.push(("XTRIM", vec!["MINID".into(), tail.last_id().successor().to_string().into()]));
                    consumed = 0;
                    trimmed = tokio::time::Instant::now();
                }
                let mut reconnected = false;
                while let Ok(_) | Err(TryRecvError::Lagged(_)) = reconnects.try_recv() {
                    reconnected = true;
                }
                if reconnected || refreshed.elapsed() >= ttl / 3 {
                    refreshed = tokio::time::Instant::now();
                    // Awaited here (rare: every third of the TTL), so `close()`, which aborts
                    // this task before it deletes the stream, never races a re-creation.
                    if let Err(e) = keep_reply_stream(&inner, ttl).await {
                        tracing::warn!(reply_stream = %inner.reply_key, error = %e, "could not keep the reply stream");
                    }
                }
                for (cmd, args) in cleanup {
                    let mut all = vec![Value::from(inner.reply_key.as_str())];
                    all.extend(args);
                    // Not awaited here: the next read must not wait for housekeeping.
                    let client = (*inner.conn.client_for(&inner.reply_key).await).clone();
                    let command = keyed_command(cmd, &inner.reply_key, false);
                    tokio::spawn(async move {
                        if let Err(e) = client.custom::<Value, _>(command, all).await {
                            tracing::debug!(command = cmd, error = %e, "reply stream maintenance failed");
                        }
                    });
                }
            }
            Err(e) => {
                tracing::warn!(reply_stream = %inner.reply_key, error = %e, "reading replies failed; retrying");
                drop(inner);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

impl Inner {
    /// The request stream of `service` (validated once per service).
    fn request_stream(&self, service: &str) -> Result<Arc<RequestStream>, InvalidName> {
        self.request_streams.get_or_try_insert(service, |s| {
            let topic = keys::request_topic(s)?;
            let key = Key::from(self.conn.namespace().topic_stream(&topic));
            Ok(RequestStream { topic, key, durations: NameCache::new(256) })
        })
    }

    /// The request headers for `method` (just the method name), built once per method.
    fn method_headers(&self, method: &str) -> Arc<Headers> {
        self.method_headers.get_or_insert_with(method, |m| [(METHOD_HEADER, m)].into_iter().collect())
    }

    fn route(&self, correlation_id: &str, reply: Reply) {
        // A correlation id that is not a UUID is not one of ours: nobody waits for it.
        let waiting = uuid::Uuid::try_parse_ascii(correlation_id.as_bytes())
            .ok()
            .and_then(|id| self.pending.lock().expect("pending lock").remove(&id.as_u128()));
        let delivered = match waiting {
            Some(tx) => tx.send(reply).is_ok(),
            None => false,
        };
        if !delivered {
            // The call timed out or was dropped: nobody waits for this reply.
            self.late_replies.fetch_add(1, Ordering::Relaxed);
            self.late_reply_counter.increment(1);
            tracing::debug!(correlation_id, "late reply discarded");
        }
    }
}

/// Removes a call's pending slot when the call ends without its reply (timeout, or the caller
/// dropping the future); the reader removed it already when the reply came.
struct PendingSlot<'a> {
    inner: &'a Inner,
    key: u128,
    answered: bool,
}

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        if !self.answered {
            if let Ok(mut p) = self.inner.pending.lock() {
                p.remove(&self.key);
            }
        }
    }
}

impl<C: Codec> RpcClient<C> {
    /// The type name a request of `Req` carries: none in wire format version 3 (servers route
    /// by method, not by type), the type's name in older versions, which require one.
    fn request_type<Req: ?Sized>(&self) -> &'static str {
        self.inner.conn.wire_version().default_type_name::<Req>()
    }

    /// Creates the reply stream and starts its reader, unless done already; calls do it
    /// themselves, so this only moves the work (and a connection error) to a moment you choose,
    /// such as start-up.
    ///
    /// # Errors
    /// [`RpcError::Redis`] when the reply stream cannot be created; [`RpcError::Closed`] after
    /// [`close`](Self::close).
    pub async fn ready(&self) -> Result<(), RpcError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(RpcError::Closed);
        }
        if self.inner.started.initialized() {
            return Ok(());
        }
        self.inner.started.get_or_try_init(|| start(&self.inner)).await?;
        Ok(())
    }

    /// Calls `service.method` with `request` and the default timeout.
    ///
    /// # Errors
    /// [`RpcError::Timeout`] when no reply came in time, [`RpcError::Remote`] when the server
    /// answered with an error, others for local failures.
    pub async fn call<Req, Resp>(&self, service: &str, method: &str, request: &Req) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.call_with_timeout(service, method, request, self.inner.default_timeout).await
    }

    /// Calls `service.method` with `request`; fails with [`RpcError::Timeout`] at `timeout`.
    /// The request carries the absolute deadline: no server executes it after that.
    ///
    /// Dropping the returned future cancels the call; a reply that arrives later is
    /// discarded and counted in [`late_replies`](Self::late_replies).
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub async fn call_with_timeout<Req, Resp>(
        &self,
        service: &str,
        method: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        // A service name that is not valid is refused before anything is timed.
        let stream = self.inner.request_stream(service)?;
        let started = std::time::Instant::now();
        let result = self.exchange(&stream, service, method, request, timeout).await;
        let duration = started.elapsed();
        match &result {
            Ok(_) => stream.call_duration(service, method).record(duration),
            Err(e) => {
                let labels = call_labels(service, method, Some(metrics::error_type(e.kind())));
                ::metrics::histogram!(metrics::RPC_CALL_DURATION, labels).record(duration);
            }
        }
        result
    }

    /// The call itself (see `call_with_timeout`), to the request stream of `service`.
    async fn exchange<Req, Resp>(
        &self,
        stream: &RequestStream,
        service: &str,
        method: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let timeout = timeout.min(LONGEST_CALL);
        let started = tokio::time::Instant::now();
        let deadline = SystemTime::now() + timeout;
        // The reply reader runs before the request exists (a no-op after the first call).
        let timed_out = || RpcError::Timeout { service: service.to_owned(), method: method.to_owned(), after: timeout };
        tokio::time::timeout_at(started + timeout, self.ready()).await.map_err(|_| timed_out())??;
        let codec_err = |source| RpcError::Codec { service: service.to_owned(), method: method.to_owned(), source };
        let send_err = |source| RpcError::Send { service: service.to_owned(), source };
        let payload = self.codec.encode(request).map_err(codec_err)?;
        let headers = self.inner.method_headers(method);
        let mut envelope = EnvelopeRef::new(self.request_type::<Req>(), self.codec.content_type(), &payload);
        // The request's own id is its correlation id: unique, and a number to key the pending
        // call by (so it is written, where version 3 would leave a message's id to its entry).
        let call_id = MessageId::new();
        envelope.id = Some(call_id);
        let key = call_id.as_uuid().as_u128();
        let mut id = [0u8; 36];
        let correlation_id = &*call_id.as_uuid().hyphenated().encode_lower(&mut id);
        envelope.correlation_id = Some(correlation_id);
        envelope.reply_to = Some(&self.inner.reply_key);
        envelope.deadline = Some(deadline);
        envelope.headers = &headers;
        // OpenTelemetry's RPC conventions: the client span is named `service/method`. The
        // request carries its context (with a layer), else a child of the task's trace.
        let span = tracing::info_span!(
            "call",
            otel.name = %format_args!("{service}/{method}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            rpc.system = "tributary",
            rpc.service = service,
            rpc.method = method,
            messaging.system = metrics::SYSTEM,
            messaging.destination.name = %stream.topic,
            messaging.message.conversation_id = %correlation_id,
            error.type = tracing::field::Empty,
        );
        follow_unless_traced(&span, current_trace());
        envelope.traceparent = span_traceparent(&span).or_else(|| current_trace().map(|t| t.child()));
        let fields = (self.inner.conn.wire_version().xadd_fields(&envelope, self.inner.conn.limits()))
            .map_err(|source| send_err(StreamError::Limits { topic: stream.topic.to_string(), source }))?;

        // The slot exists before the request does; none is added once the client closed
        // (`close` sets `closed` under this lock, then clears the slots).
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.inner.pending.lock().expect("pending lock");
            if self.inner.closed.load(Ordering::SeqCst) {
                return Err(RpcError::Closed);
            }
            pending.insert(key, tx);
        }
        let mut slot = PendingSlot { inner: &self.inner, key, answered: false };

        // Boxed: fred's command future is about 5 KiB, and unboxed it made this future 6.5 KiB,
        // copied whole at every move (into the timeout, into the caller's state), which cost
        // more than the allocation (docs/performance-history.md, "The RPC call path, counted
        // again").
        let exchange = Box::pin(async {
            let client = self.inner.conn.client_for_slot(fred::util::redis_keyslot(stream.key.as_bytes())).await;
            let untimed = client.with_options(&UNTIMED);
            let _: Value = (untimed.xadd(stream.key.clone(), false, None, "*", fields).await)
                .map_err(|e| send_err(RedisError::new("XADD", e).into()))?;
            rx.await.map_err(|_| RpcError::Closed)
        });
        let failed = |kind: &'static str| record_failure(&span, kind);
        let reply =
            match tokio::time::timeout_at(started + timeout, tracing::Instrument::instrument(exchange, span.clone()))
                .await
            {
                Ok(Ok(reply)) => {
                    slot.answered = true;
                    reply
                }
                Ok(Err(e)) => {
                    failed(metrics::error_type(e.kind()));
                    return Err(e);
                }
                Err(_) => {
                    failed("timeout");
                    return Err(timed_out());
                }
            };
        if reply.is_error {
            failed("remote");
            let body: ErrorBody = reply.decode().map_err(codec_err)?;
            return Err(RpcError::Remote {
                service: service.to_owned(),
                method: method.to_owned(),
                code: body.code,
                message: body.message,
                details: body.details,
            });
        }
        reply.decode().map_err(codec_err)
    }

    /// Sends `request` to `service.method` without waiting for (or asking for) a reply: a
    /// durable command, executed once a server takes it. Returns the request's entry id.
    ///
    /// # Errors
    /// [`RpcError::Send`] when the request could not be stored.
    pub async fn send<Req: Serialize + ?Sized>(
        &self,
        service: &str,
        method: &str,
        request: &Req,
    ) -> Result<EntryId, RpcError> {
        let stream = self.inner.request_stream(service)?;
        let payload = self.codec.encode(request).map_err(|source| RpcError::Codec {
            service: service.to_owned(),
            method: method.to_owned(),
            source,
        })?;
        let headers = self.inner.method_headers(method);
        let mut envelope = EnvelopeRef::new(self.request_type::<Req>(), self.codec.content_type(), &payload);
        envelope.headers = &headers;
        envelope.traceparent = current_trace().map(|t| t.child());
        self.inner
            .producer
            .publish_ref(stream.topic.as_str(), &envelope, None)
            .await
            .map_err(|source| RpcError::Send { service: service.to_owned(), source })
    }

    /// Replies that arrived after their call had timed out or been dropped.
    pub fn late_replies(&self) -> u64 {
        self.inner.late_replies.load(Ordering::Relaxed)
    }

    /// Calls waiting for a reply right now.
    pub fn pending_calls(&self) -> usize {
        self.inner.pending.lock().expect("pending lock").len()
    }

    /// The key of this client's reply stream.
    pub fn reply_stream(&self) -> &str {
        &self.inner.reply_key
    }

    /// Stops the reply reader and deletes the reply stream. Calls still waiting fail with
    /// [`RpcError::Closed`].
    ///
    /// # Errors
    /// [`RpcError::Redis`] when the reply stream could not be deleted (it expires anyway).
    pub async fn close(&self) -> Result<(), RpcError> {
        {
            // Lock order: reader, then pending (see `start` and `call_with_timeout`).
            let mut reader = self.inner.reader.lock().expect("reader lock");
            let mut pending = self.inner.pending.lock().expect("pending lock");
            self.inner.closed.store(true, Ordering::SeqCst);
            pending.clear();
            if let Some(task) = reader.take() {
                task.abort();
            }
        }
        delete_reply_stream(&self.inner).await?;
        Ok(())
    }
}

/// A service's request stream: its topic, and its key as a command argument (cloning it only
/// counts a reference).
#[derive(Debug)]
struct RequestStream {
    topic: Topic,
    key: Key,
    /// `rpc.client.call.duration` of successful calls, by method (registered on first use).
    durations: NameCache<::metrics::Histogram>,
}

impl RequestStream {
    fn call_duration(&self, service: &str, method: &str) -> Arc<::metrics::Histogram> {
        self.durations.get_or_insert_with(method, |m| {
            ::metrics::histogram!(metrics::RPC_CALL_DURATION, call_labels(service, m, None))
        })
    }
}

/// The labels of `rpc.client.call.duration`.
fn call_labels(service: &str, method: &str, error: Option<&'static str>) -> Vec<::metrics::Label> {
    use ::metrics::Label;
    let mut labels = vec![
        Label::from_static_parts(metrics::label::SYSTEM, metrics::SYSTEM),
        Label::new(metrics::label::RPC_SERVICE, service.to_owned()),
        Label::new(metrics::label::RPC_METHOD, method.to_owned()),
    ];
    labels.extend(error.map(|e| Label::from_static_parts(metrics::label::ERROR_TYPE, e)));
    labels
}
