//! Middleware: [`Layer`]s run around handlers, for what applies to many handlers at once
//! (metrics, logging, authorisation, per-tenant policies), without a builder flag for each.
//!
//! Delivery policy stays in the worker: retries, backoff, dead letters, concurrency and the
//! handler timeout decide what happens to the *entry*, and see a layer's result as the
//! handler's.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use super::handler::{Context, Handler, HandlerError};

/// Runs around a handler: sees the message first, decides whether and how the handler (and
/// the layers inside this one) run by calling [`Next::run`], and sees or changes the result.
///
/// Returning without calling `next` skips the handler: `Ok(())` acknowledges the message,
/// an error retries or dead-letters it, as a handler's would. (On an RPC server's worker, a
/// request whose handler is skipped gets no reply: its caller waits until its timeout.)
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use tributary_streams::consumer::{Layer, Next};
/// use tributary_streams::{async_trait, Context, HandlerError};
///
/// /// Counts failed handler calls per worker.
/// struct CountFailures(Arc<AtomicU64>);
///
/// #[async_trait]
/// impl Layer for CountFailures {
///     async fn call(&self, ctx: Context, next: Next) -> Result<(), HandlerError> {
///         let result = next.run(ctx).await;
///         if result.is_err() {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///         result
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Layer: Send + Sync + 'static {
    /// Handles `ctx`, calling `next.run(ctx)` to pass it inwards.
    async fn call(&self, ctx: Context, next: Next) -> Result<(), HandlerError>;
}

#[async_trait::async_trait]
impl<L: Layer + ?Sized> Layer for Arc<L> {
    async fn call(&self, ctx: Context, next: Next) -> Result<(), HandlerError> {
        (**self).call(ctx, next).await
    }
}

/// The rest of the chain inside a [`Layer`]: the inner layers, then the handler.
pub struct Next {
    handler: Arc<dyn Handler>,
    layers: Arc<[Arc<dyn Layer>]>,
    index: usize,
}

impl Next {
    /// Runs the inner layers and the handler with `ctx`.
    pub async fn run(self, ctx: Context) -> Result<(), HandlerError> {
        match self.layers.get(self.index).cloned() {
            Some(layer) => layer.call(ctx, Self { index: self.index + 1, ..self }).await,
            None => self.handler.call(ctx).await,
        }
    }
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next").field("layers_left", &(self.layers.len() - self.index)).finish_non_exhaustive()
    }
}

/// A layer from an async function of the [`Context`] and the [`Next`] step.
///
/// ```
/// use tributary_streams::consumer::layer_fn;
/// use tributary_streams::HandlerError;
///
/// // Messages of tenants being migrated wait (are retried later) instead of being handled.
/// let hold_migrating = layer_fn(|ctx, next| async move {
///     if ctx.headers().get("tenant") == Some("t-17") {
///         return Err(HandlerError::retry("tenant t-17 is being migrated"));
///     }
///     next.run(ctx).await
/// });
/// ```
pub fn layer_fn<F, Fut>(f: F) -> FnLayer<F>
where
    F: Fn(Context, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    FnLayer { f }
}

/// Layer made by [`layer_fn`].
pub struct FnLayer<F> {
    f: F,
}

impl<F> fmt::Debug for FnLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnLayer").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl<F, Fut> Layer for FnLayer<F>
where
    F: Fn(Context, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    async fn call(&self, ctx: Context, next: Next) -> Result<(), HandlerError> {
        (self.f)(ctx, next).await
    }
}

/// A handler wrapped in layers, outermost first.
pub(crate) struct Layered {
    handler: Arc<dyn Handler>,
    layers: Arc<[Arc<dyn Layer>]>,
}

impl Layered {
    /// `handler` inside `layers` (the first sees messages first); the handler itself when
    /// there are none, so a worker without layers pays nothing.
    pub(crate) fn wrap(handler: Arc<dyn Handler>, layers: &[Arc<dyn Layer>]) -> Arc<dyn Handler> {
        if layers.is_empty() {
            return handler;
        }
        Arc::new(Self { handler, layers: layers.into() })
    }
}

#[async_trait::async_trait]
impl Handler for Layered {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        Next { handler: self.handler.clone(), layers: self.layers.clone(), index: 0 }.run(ctx).await
    }
}
