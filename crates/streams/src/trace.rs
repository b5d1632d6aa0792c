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

/// The `publish {topic}` span around a publish or a batch of `count`, named and attributed by
/// the OpenTelemetry messaging conventions (a partition, `orders#3`, is destination `orders`,
/// partition id 3). With the `opentelemetry` feature and a layer, the messages carry its
/// context (see [`stamp`]).
pub(crate) fn publish_span(topic: &tributary_core::Topic, count: usize) -> tracing::Span {
    let (topic, partition) = topic.partition_of().map_or((topic.as_str(), None), |(t, p)| (t, Some(p)));
    tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {topic}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = crate::metrics::SYSTEM,
        messaging.operation.name = "publish",
        messaging.operation.type = "send",
        messaging.destination.name = %topic,
        messaging.destination.partition.id = partition,
        // Only for batches, by the conventions.
        messaging.batch.message_count = (count > 1).then_some(count as i64),
        error.type = tracing::field::Empty,
    )
}

/// The `traceparent` a message published inside a publish span carries, where the message says
/// `own` (its envelope's: a child of the task's trace, or one given): the span's OpenTelemetry
/// context (`span`, when a layer records it) unless the message names another trace, else `own`.
pub(crate) fn stamp(span: Option<TraceParent>, own: Option<TraceParent>) -> Option<TraceParent> {
    match (span, own) {
        (Some(span), None) => Some(span),
        (Some(span), Some(own)) if span.trace_id() == own.trace_id() => Some(span),
        (_, own) => own,
    }
}

/// Marks `span` failed with an error of `kind`.
pub(crate) fn record_failure(span: &tracing::Span, kind: tributary_core::ErrorKind) {
    tributary_core::trace::record_failure(span, crate::metrics::error_type(kind));
}
