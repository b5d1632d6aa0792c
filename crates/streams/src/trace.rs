//! Trace propagation: the trace a message belongs to travels in its envelope's
//! `traceparent`, and messages published while handling it join the same trace.

use std::future::Future;

use tributary_core::TraceParent;

tokio::task_local! {
    static CURRENT: TraceParent;
}

/// The trace context of the task: set by the worker while a handler runs, or by
/// [`in_trace`]. Producers write a child of it into the messages they publish.
pub fn current_trace() -> Option<TraceParent> {
    CURRENT.try_with(|t| *t).ok()
}

/// Runs `fut` inside trace `tp`: messages it publishes carry a child of `tp`. Use it to
/// continue a trace that came from elsewhere (an HTTP request's `traceparent` header).
pub async fn in_trace<F: Future>(tp: TraceParent, fut: F) -> F::Output {
    CURRENT.scope(tp, fut).await
}

/// The `traceparent` for a message published now: a child of the current trace, or a new
/// trace. What producers write with `ProducerBuilder::start_traces` (without, they write a
/// child of the current trace only, and nothing outside one).
pub fn next_traceparent() -> TraceParent {
    current_trace().map_or_else(TraceParent::new_root, |t| t.child())
}
