//! What a worker calls for each message: the [`Handler`] trait, the [`Context`] it gets and
//! the [`HandlerError`] that decides between retry and dead-letter.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use tributary_core::{BoxError, CodecError, EntryId, Envelope, Headers, MessageId, TraceParent};

/// Where messages are handled: the same for every message of one topic consumer, so each
/// message's context shares it instead of copying three strings.
#[derive(Debug)]
pub(crate) struct Origin {
    /// The topic (of a partition, its topic's name).
    pub(crate) topic: String,
    /// Of a partition, its number.
    pub(crate) partition: Option<u32>,
    pub(crate) group: String,
    pub(crate) consumer: String,
}

/// Everything a handler knows about the message it handles.
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Arc<ContextInner>,
}

pub(crate) struct ContextInner {
    pub(crate) origin: Arc<Origin>,
    pub(crate) entry_id: EntryId,
    pub(crate) attempt: u64,
    pub(crate) envelope: Envelope,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("topic", &self.inner.origin.topic)
            .field("group", &self.inner.origin.group)
            .field("entry_id", &self.inner.entry_id)
            .field("message_id", &self.inner.envelope.id)
            .field("attempt", &self.inner.attempt)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The same message at another attempt.
    pub(crate) fn with_attempt(&self, attempt: u64) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(ContextInner {
                origin: inner.origin.clone(),
                entry_id: inner.entry_id,
                attempt,
                envelope: inner.envelope.clone(),
            }),
        }
    }
}

impl Context {
    /// Topic the message came from.
    pub fn topic(&self) -> &str {
        &self.inner.origin.topic
    }

    /// Consumer group handling it.
    pub fn group(&self) -> &str {
        &self.inner.origin.group
    }

    /// Name of this consumer inside the group.
    pub fn consumer(&self) -> &str {
        &self.inner.origin.consumer
    }

    /// Id of the stream entry.
    pub fn entry_id(&self) -> EntryId {
        self.inner.entry_id
    }

    /// The publisher's message id: the same on every delivery, use it to de-duplicate.
    pub fn message_id(&self) -> MessageId {
        self.inner.envelope.id
    }

    /// Which delivery this is, counting from 1 (Redis' delivery counter for the entry).
    pub fn attempt(&self) -> u64 {
        self.inner.attempt
    }

    /// Headers of the message.
    pub fn headers(&self) -> &Headers {
        &self.inner.envelope.headers
    }

    /// Partition key of the message.
    pub fn key(&self) -> Option<&str> {
        self.inner.envelope.key.as_deref()
    }

    /// When the message was published.
    pub fn published_at(&self) -> SystemTime {
        self.inner.envelope.published_at
    }

    /// Trace context the message carried.
    pub fn traceparent(&self) -> Option<TraceParent> {
        self.inner.envelope.traceparent
    }

    /// The whole envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.inner.envelope
    }

    /// Decodes the payload with the codec named by its content type.
    ///
    /// # Errors
    /// [`CodecError`] when the payload is not a `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        self.inner.envelope.decode()
    }
}

/// A handler's failure, and what should happen to the message because of it.
///
/// Any error converts into a *retryable* failure with `?`; use [`HandlerError::reject`] for a
/// message that can never succeed (it goes to the dead-letter stream at once).
///
/// ```
/// use tributary_streams::HandlerError;
///
/// fn check(amount: i64) -> Result<(), HandlerError> {
///     if amount < 0 {
///         return Err(HandlerError::reject("negative amount"));
///     }
///     let _n: u32 = "42".parse()?;        // a parse error would be retried
///     Ok(())
/// }
/// # check(1).unwrap();
/// ```
pub struct HandlerError {
    pub(crate) action: Action,
    pub(crate) error: BoxError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Retry(Option<Duration>),
    Reject,
}

impl HandlerError {
    /// Retry the message after the worker's backoff.
    pub fn retry(error: impl Into<BoxError>) -> Self {
        Self { action: Action::Retry(None), error: error.into() }
    }

    /// Retry the message after `delay` instead of the computed backoff.
    pub fn retry_after(error: impl Into<BoxError>, delay: Duration) -> Self {
        Self { action: Action::Retry(Some(delay)), error: error.into() }
    }

    /// Give up on the message now: dead-letter it with this error as the reason.
    pub fn reject(error: impl Into<BoxError>) -> Self {
        Self { action: Action::Reject, error: error.into() }
    }

    /// True when the message will be retried (unless it ran out of deliveries).
    pub fn is_retry(&self) -> bool {
        matches!(self.action, Action::Retry(_))
    }

    /// The underlying error.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }
}

impl<E: Into<BoxError>> From<E> for HandlerError {
    fn from(error: E) -> Self {
        Self::retry(error)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError").field("action", &self.action).field("error", &self.error).finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

/// Handles one message. Return `Ok(())` to acknowledge it.
///
/// Implemented for async closures through [`handler_fn`] (typed) and [`raw_handler_fn`]
/// (the [`Context`] only); implement it yourself for handlers with state, with
/// [`async_trait`](macro@crate::async_trait) (workers keep handlers as `dyn Handler`, which
/// native `async fn` in traits does not allow):
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use tributary_streams::{async_trait, Context, Handler, HandlerError};
///
/// struct CountOrders(AtomicU64);
///
/// #[async_trait]
/// impl Handler for CountOrders {
///     async fn call(&self, _ctx: Context) -> Result<(), HandlerError> {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         Ok(())
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles the message described by `ctx`.
    async fn call(&self, ctx: Context) -> Result<(), HandlerError>;
}

#[async_trait::async_trait]
impl<H: Handler + ?Sized> Handler for Arc<H> {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        (**self).call(ctx).await
    }
}

/// A handler from an async function of the decoded message and its [`Context`].
///
/// A payload that does not decode as `T` is rejected (dead-lettered with the reason).
pub fn handler_fn<T, F, Fut>(f: F) -> FnHandler<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(T, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    FnHandler { f, _message: PhantomData }
}

/// A handler from an async function of the [`Context`] alone (decode it yourself).
pub fn raw_handler_fn<F, Fut>(f: F) -> RawFnHandler<F>
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    RawFnHandler { f }
}

/// Handler made by [`handler_fn`].
pub struct FnHandler<T, F> {
    f: F,
    _message: PhantomData<fn() -> T>,
}

impl<T, F> fmt::Debug for FnHandler<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnHandler").field("message", &std::any::type_name::<T>()).finish()
    }
}

#[async_trait::async_trait]
impl<T, F, Fut> Handler for FnHandler<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(T, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        match ctx.decode::<T>() {
            Ok(message) => (self.f)(message, ctx).await,
            Err(e) => {
                let type_name = std::any::type_name::<T>();
                Err(HandlerError::reject(format!("payload does not decode as {type_name}: {e}")))
            }
        }
    }
}

/// Handler made by [`raw_handler_fn`].
pub struct RawFnHandler<F> {
    f: F,
}

impl<F> fmt::Debug for RawFnHandler<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawFnHandler").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl<F, Fut> Handler for RawFnHandler<F>
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        (self.f)(ctx).await
    }
}
