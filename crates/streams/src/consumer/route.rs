//! Routes: a handler together with its topic and per-topic settings, as the `#[handler]`
//! macro generates them (and as anyone can write by hand).

use std::sync::Arc;

use super::handler::Handler;
use super::retry::RetryPolicy;

/// Settings of one topic that override the worker's.
///
/// ```
/// use tributary_streams::consumer::RouteOptions;
///
/// let strict = RouteOptions::new().concurrency(1).max_deliveries(10);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct RouteOptions {
    /// Handlers of this topic running at once (its own limit instead of the worker's).
    pub concurrency: Option<usize>,
    /// Deliveries before dead-lettering.
    pub max_deliveries: Option<u64>,
    /// Backoff between deliveries.
    pub retry: Option<RetryPolicy>,
    /// Longest a handler of this topic may run (see `WorkerBuilder::handler_timeout`).
    pub timeout: Option<std::time::Duration>,
}

impl RouteOptions {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the topic's own concurrency limit (`1`: strict order).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n);
        self
    }

    /// Sets the topic's `max_deliveries`.
    pub fn max_deliveries(mut self, n: u64) -> Self {
        self.max_deliveries = Some(n);
        self
    }

    /// Sets the topic's retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Sets the longest a handler of this topic may run; past it, it is cancelled and the
    /// attempt counts as a retryable failure.
    pub fn timeout(mut self, d: std::time::Duration) -> Self {
        self.timeout = Some(d);
        self
    }
}

/// A handler that knows which topic it consumes: register it with
/// [`WorkerBuilder::register`](super::WorkerBuilder::register).
///
/// `#[tributary::handler(topic = "...")]` implements it for the function it annotates.
pub trait Route {
    /// The topic to consume.
    fn topic(&self) -> &str;

    /// The consumer group the handler was written for, if it names one: registering it on a
    /// worker of another group is an error.
    fn group(&self) -> Option<&str> {
        None
    }

    /// Per-topic settings.
    fn options(&self) -> RouteOptions {
        RouteOptions::default()
    }

    /// The handler itself.
    fn handler(&self) -> Arc<dyn Handler>;
}
