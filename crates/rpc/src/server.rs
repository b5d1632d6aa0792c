//! The RPC server: method handlers of one service, run by a streams [`Worker`] on the
//! service's request topic, so servers of one service share requests through a consumer
//! group and reclaim those of a crashed instance.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fred::interfaces::StreamsInterface;
use fred::types::Value;
use futures::FutureExt;
use serde::{de::DeserializeOwned, Serialize};
use tributary_core::codec::decode_payload;
use tributary_core::{Codec, Connection, Json, MsgPack, RedisError, Topic};
use tributary_streams::{BuildError, Context, Handler, HandlerError, Retention, Worker, WorkerBuilder, WorkerHandle};

use crate::error::RpcHandlerError;
use crate::keys;
use crate::protocol::{code, ErrorBody, METHOD_HEADER, SERVER_GROUP};
use crate::reply::reply_fields;

/// A boxed, sendable future.
type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One method: decodes the request, runs the user's function, encodes the response in the
/// request's content type.
trait Method: Send + Sync + 'static {
    fn call(&self, ctx: Context) -> BoxFuture<Result<Bytes, ErrorBody>>;
}

struct FnMethod<Req, Resp, F> {
    f: F,
    _types: std::marker::PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp, F, Fut> Method for FnMethod<Req, Resp, F>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: Fn(Req, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, RpcHandlerError>> + Send + 'static,
{
    fn call(&self, ctx: Context) -> BoxFuture<Result<Bytes, ErrorBody>> {
        let content_type = answer_content_type(&ctx.envelope().content_type);
        let request = match decode_payload::<Req>(&ctx.envelope().content_type, &ctx.envelope().payload) {
            Ok(r) => r,
            Err(e) => {
                let body = error_body(code::BAD_REQUEST, format!("bad request: {e}"));
                return Box::pin(async move { Err(body) });
            }
        };
        let fut = (self.f)(request, ctx);
        Box::pin(async move {
            match fut.await {
                Ok(response) => encode_like(content_type, &response)
                    .map(|(bytes, _)| bytes)
                    .map_err(|e| error_body(code::INTERNAL, format!("response does not encode: {e}"))),
                Err(e) => Err(ErrorBody { code: e.code, message: e.message, details: e.details }),
            }
        })
    }
}

fn error_body(code: &str, message: String) -> ErrorBody {
    ErrorBody { code: code.to_owned(), message, details: None }
}

/// The content type of the answer to a request in `request_content_type`: JSON if the
/// caller sent JSON, else MessagePack.
fn answer_content_type(request_content_type: &str) -> &'static str {
    if request_content_type.starts_with(Json::CONTENT_TYPE) {
        Json::CONTENT_TYPE
    } else {
        MsgPack::CONTENT_TYPE
    }
}

/// Encodes with the codec the caller used (JSON if it sent JSON, else MessagePack).
fn encode_like<T: Serialize + ?Sized>(
    content_type: &str,
    value: &T,
) -> Result<(Bytes, &'static str), tributary_core::CodecError> {
    match answer_content_type(content_type) {
        Json::CONTENT_TYPE => Ok((Json.encode(value)?, Json::CONTENT_TYPE)),
        _ => Ok((MsgPack.encode(value)?, MsgPack::CONTENT_TYPE)),
    }
}

/// Configures an [`RpcServer`]. Created by [`RpcServer::builder`].
#[must_use = "builders do nothing until `.build()` is called"]
pub struct RpcServerBuilder {
    conn: Connection,
    service: String,
    methods: HashMap<String, Arc<dyn Method>>,
    configure: Option<Box<dyn FnOnce(WorkerBuilder) -> WorkerBuilder + Send>>,
    trim_interval: Duration,
    /// The first registration mistake, reported by `build`.
    mistake: Option<BuildError>,
}

impl std::fmt::Debug for RpcServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcServerBuilder")
            .field("service", &self.service)
            .field("methods", &self.methods.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Serves the methods of one RPC service.
///
/// # Example
/// ```no_run
/// # async fn demo(conn: tributary_core::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// use tributary_rpc::{RpcHandlerError, RpcServer};
///
/// #[derive(serde::Deserialize)]
/// struct Quote { sku: String }
/// #[derive(serde::Serialize)]
/// struct Price { cents: u64 }
///
/// let server = RpcServer::builder(conn, "pricing")
///     .method("quote", |q: Quote, _ctx| async move {
///         if q.sku.is_empty() {
///             return Err(RpcHandlerError::new("bad_sku", "empty sku"));
///         }
///         Ok(Price { cents: 990 })
///     })
///     .build()?
///     .start();
/// // ...
/// server.shutdown().await;
/// # Ok(()) }
/// ```
#[must_use = "a server serves nothing until `.start()` is called"]
pub struct RpcServer {
    conn: Connection,
    topic: Topic,
    worker: Worker,
    trim_interval: Duration,
    stats: Arc<ServerStats>,
}

impl std::fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcServer").field("topic", &self.topic).field("worker", &self.worker).finish_non_exhaustive()
    }
}

impl RpcServer {
    /// Configures a server for `service`.
    pub fn builder(conn: Connection, service: impl Into<String>) -> RpcServerBuilder {
        RpcServerBuilder {
            conn,
            service: service.into(),
            methods: HashMap::new(),
            configure: None,
            trim_interval: Duration::from_secs(10),
            mistake: None,
        }
    }
}

impl RpcServerBuilder {
    /// Registers `method`: an async function of the decoded request returning the response
    /// or an [`RpcHandlerError`] (which the caller receives as `RpcError::Remote`).
    pub fn method<Req, Resp, F, Fut>(mut self, method: impl Into<String>, f: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(Req, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcHandlerError>> + Send + 'static,
    {
        let method = method.into();
        if self.methods.contains_key(&method) {
            self.mistake.get_or_insert(BuildError::DuplicateMethod(method));
            return self;
        }
        self.methods.insert(method, Arc::new(FnMethod { f, _types: std::marker::PhantomData }));
        self
    }

    /// Adjusts the underlying worker (consumer name, concurrency, `claim_idle`, ...). RPC
    /// servers default to `claim_idle` 5 s so requests of a crashed server are answered by
    /// another within typical deadlines.
    ///
    /// Call it once: a second call is an error at [`build`](Self::build), since it would
    /// silently replace the first.
    pub fn configure_worker(mut self, f: impl FnOnce(WorkerBuilder) -> WorkerBuilder + Send + 'static) -> Self {
        if self.configure.is_some() {
            self.mistake.get_or_insert(BuildError::SetTwice("configure_worker"));
            return self;
        }
        self.configure = Some(Box::new(f));
        self
    }

    /// How often answered requests are trimmed from the request stream. Defaults to 10 s.
    pub fn trim_interval(mut self, d: Duration) -> Self {
        self.trim_interval = d;
        self
    }

    /// Builds the server. No I/O: [`RpcServer::start`] starts serving.
    ///
    /// # Errors
    /// [`BuildError`] for an invalid service name or worker configuration, two handlers for
    /// one method, or `configure_worker` called twice.
    pub fn build(self) -> Result<RpcServer, BuildError> {
        if let Some(mistake) = self.mistake {
            return Err(mistake);
        }
        let topic = keys::request_topic(&self.service)?;
        let stats = Arc::new(ServerStats::default());
        let dispatch = Dispatch(Arc::new(DispatchInner {
            conn: self.conn.clone(),
            service: self.service.clone(),
            methods: self.methods,
            stats: stats.clone(),
        }));
        let mut builder = Worker::builder(self.conn.clone(), SERVER_GROUP).claim_idle(Duration::from_secs(5));
        if let Some(configure) = self.configure {
            builder = configure(builder);
        }
        let worker = builder.handler(topic.as_str(), dispatch).build()?;
        Ok(RpcServer { conn: self.conn, topic, worker, trim_interval: self.trim_interval, stats })
    }
}

impl RpcServer {
    /// Starts serving in the background. Dropping the handle stops at once, like a crash;
    /// [`RpcServerHandle::shutdown`] stops gracefully.
    pub fn start(self) -> RpcServerHandle {
        let worker = self.worker.start();
        let trimmer = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(trim_answered(
            self.conn,
            self.topic,
            self.trim_interval,
        )));
        RpcServerHandle { worker, trimmer, stats: self.stats }
    }

    /// Serves until `shutdown` completes, then stops gracefully.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let handle = self.start();
        shutdown.await;
        handle.shutdown().await;
    }
}

/// Requests stay in the stream only until every group acknowledged them.
async fn trim_answered(conn: Connection, topic: Topic, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = Retention::max_len(0).safe().trim(&conn, &topic).await {
            tracing::debug!(topic = %topic, error = %e, "trimming answered requests failed");
        }
    }
}

#[derive(Debug, Default)]
struct ServerStats {
    answered: AtomicU64,
    /// Replies for clients whose reply stream no longer exists.
    unclaimed_replies: AtomicU64,
    expired: AtomicU64,
    failed: AtomicU64,
}

/// A running [`RpcServer`]. Dropping it stops the server at once (crash-like).
#[derive(Debug)]
pub struct RpcServerHandle {
    worker: WorkerHandle,
    trimmer: tokio_util::task::AbortOnDropHandle<()>,
    stats: Arc<ServerStats>,
}

impl RpcServerHandle {
    /// Waits until the server takes requests: its consumer group on the request stream
    /// exists and what this server name left pending was taken back. `start()` returns before
    /// that; a request sent meanwhile is not lost either (it waits in the stream), this is for
    /// health checks and tests. Waits for ever if Redis is unreachable: bound it with
    /// `tokio::time::timeout`.
    pub async fn ready(&self) {
        self.worker.ready().await;
    }

    /// Graceful stop: running requests finish and are answered.
    pub async fn shutdown(self) {
        self.trimmer.abort();
        self.worker.shutdown().await;
    }

    /// Requests answered (with a response or an error).
    pub fn answered(&self) -> u64 {
        self.stats.answered.load(Ordering::Relaxed)
    }

    /// Requests skipped because their deadline had passed before a server took them, or
    /// cancelled because it passed while their method ran.
    pub fn expired(&self) -> u64 {
        self.stats.expired.load(Ordering::Relaxed)
    }

    /// Replies not written because their client's reply stream was gone (the client closed or
    /// expired before the answer came).
    pub fn unclaimed_replies(&self) -> u64 {
        self.stats.unclaimed_replies.load(Ordering::Relaxed)
    }

    /// Requests whose handler failed or panicked (answered with an error).
    pub fn failed(&self) -> u64 {
        self.stats.failed.load(Ordering::Relaxed)
    }
}

/// The handler the worker runs for every request.
struct Dispatch(Arc<DispatchInner>);

struct DispatchInner {
    conn: Connection,
    service: String,
    methods: HashMap<String, Arc<dyn Method>>,
    stats: Arc<ServerStats>,
}

#[tributary_streams::async_trait]
impl Handler for Dispatch {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        self.0.handle(ctx).await
    }
}

impl DispatchInner {
    async fn handle(&self, ctx: Context) -> Result<(), HandlerError> {
        // The method gets the context; this keeps a handle on the request for the reply.
        let request = ctx.clone();
        let env = request.envelope();
        let (reply_to, correlation_id) = (env.reply_to.as_deref(), env.correlation_id.as_deref());
        if let Some(reply_to) = reply_to {
            // Never write where a request says, only under the reply prefix.
            if !keys::is_reply_stream(self.conn.namespace(), reply_to) {
                let shown: String = reply_to.chars().take(128).collect();
                return Err(HandlerError::reject(format!(
                    "reply-to `{shown}` is not a reply stream of this namespace"
                )));
            }
            if env.deadline.is_none() {
                return Err(HandlerError::reject("request with a reply-to has no deadline"));
            }
            if correlation_id.is_none() {
                return Err(HandlerError::reject("request with a reply-to has no correlation id"));
            }
        }
        if env.is_past_deadline(SystemTime::now()) {
            self.stats.expired.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(service = %self.service, correlation_id = ?correlation_id, "deadline passed; request skipped");
            return Ok(());
        }
        let method = env.headers.get(METHOD_HEADER).unwrap_or_default();
        // OpenTelemetry's RPC conventions; a child of the worker's `process` span, which
        // continues the caller's `call` span (with the `opentelemetry` feature and a layer).
        let span = tracing::info_span!(
            "serve",
            otel.name = %format_args!("{}/{method}", self.service),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "tributary",
            rpc.service = %self.service,
            rpc.method = %method,
            messaging.message.conversation_id = correlation_id.unwrap_or_default(),
            error.type = tracing::field::Empty,
        );
        let result = match self.methods.get(method) {
            None => {
                Err(error_body(code::UNKNOWN_METHOD, format!("service `{}` has no method `{method}`", self.service)))
            }
            Some(m) => {
                let m = m.clone();
                let run = AssertUnwindSafe(async move { m.call(ctx).await }).catch_unwind();
                let run = tracing::Instrument::instrument(run, span.clone());
                // The caller stops waiting at the deadline: so does the method (its future is
                // dropped), and nobody is answered.
                let left = env.deadline.map(|d| d.duration_since(SystemTime::now()).unwrap_or_default());
                let outcome = match left {
                    Some(left) => match tokio::time::timeout(left, run).await {
                        Ok(outcome) => outcome,
                        Err(_) => {
                            self.stats.expired.fetch_add(1, Ordering::Relaxed);
                            span.in_scope(|| {
                                tracing::info!("deadline reached while the method ran; cancelled, no reply")
                            });
                            return Ok(());
                        }
                    },
                    None => run.await,
                };
                match outcome {
                    Ok(r) => r,
                    Err(panic) => {
                        let msg = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Err(error_body(code::INTERNAL, format!("handler panicked: {msg}")))
                    }
                }
            }
        };
        if let Err(e) = &result {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            tributary_core::trace::record_failure(&span, &e.code);
        }
        let (Some(reply_to), Some(correlation_id)) = (reply_to, correlation_id) else {
            if let Err(e) = &result {
                span.in_scope(|| tracing::warn!(code = %e.code, message = %e.message, "command failed"));
            }
            return Ok(());
        };
        // A failed write is retried (the request stays pending and runs again): at-least-once.
        self.write_reply(reply_to, correlation_id, &env.content_type, result).await.map_err(HandlerError::retry)?;
        self.stats.answered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn write_reply(
        &self,
        reply_to: &str,
        correlation_id: &str,
        request_content_type: &str,
        result: Result<Bytes, ErrorBody>,
    ) -> Result<(), RedisError> {
        let limit = self.conn.limits().max_payload;
        let result = match result {
            // The caller would refuse it; tell it why instead of retrying a write that
            // cannot succeed.
            Ok(bytes) if bytes.len() > limit => Err(error_body(
                code::INTERNAL,
                format!("response of {} bytes exceeds the {limit}-byte payload limit", bytes.len()),
            )),
            other => other,
        };
        let (payload, content_type, is_error) = match result {
            Ok(bytes) => (bytes, answer_content_type(request_content_type), false),
            Err(body) => match encode_like(request_content_type, &body) {
                Ok((bytes, ct)) if bytes.len() <= limit => (bytes, ct, true),
                _ => (Bytes::new(), MsgPack::CONTENT_TYPE, true),
            },
        };
        let fields = reply_fields(correlation_id, content_type, is_error, payload);
        // NOMKSTREAM: the client creates its reply stream (with an expiry it keeps fresh) and
        // deletes it at `close()`; a reply to a client that is gone must not create a key that
        // nobody reads or expires. (fred's typed XADD: a custom command would make the
        // connection flush its socket for every reply instead of writing a batch together.)
        let written: Value = self
            .conn
            .client_for(reply_to)
            .await
            .xadd(reply_to, true, ("MAXLEN", "~", 10_000), "*", fields)
            .await
            .map_err(|e| RedisError::new("XADD", e))?;
        if written.is_null() {
            self.stats.unclaimed_replies.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(service = %self.service, reply_to, "reply stream gone (client closed); reply dropped");
        }
        Ok(())
    }
}
