//! Traces across messages and RPC calls, as an OpenTelemetry backend sees them (#20): spans
//! exported through `tracing-opentelemetry` to an in-memory exporter, with the `opentelemetry`
//! feature, against a real redis-server. The subscriber is global (workers run on the
//! runtime's threads), so each test uses topics of its own and looks only at their spans.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{SpanId, SpanKind, TracerProvider as _};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;
use tributary::prelude::*;
use tributary_testkit::{wait_until, TestRedis};

const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Order {
    n: u64,
}

/// The exporter every span of this binary goes to.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    &EXPORTER
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("tributary-tests"));
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
                .expect("the only subscriber of this binary");
            (exporter, provider)
        })
        .0
}

/// The finished span named `name`, once it is exported.
async fn span(name: &str) -> SpanData {
    let mut found = None;
    wait_until(PATIENCE, &format!("a finished span `{name}`"), || {
        found = exporter().get_finished_spans().unwrap().into_iter().find(|s| s.name == name);
        let done = found.is_some();
        async move { done }
    })
    .await;
    found.expect("found")
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
}

fn text(span: &SpanData, key: &str) -> Option<String> {
    attr(span, key).map(|v| v.as_str().into_owned())
}

async fn connect(redis: &TestRedis) -> Connection {
    Connection::options().namespace(redis.namespace()).connect(&redis.url()).await.unwrap()
}

#[tokio::test]
async fn a_message_carries_its_trace_from_the_producer_through_each_consumer_and_onwards() {
    exporter();
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let onwards = producer.clone();
    let worker = Worker::builder(conn.clone(), "billing")
        .on("traced.orders", move |o: Order, _ctx: Context| {
            let onwards = onwards.clone();
            async move {
                // Published while handling: the next hop of the same trace.
                onwards.publish("traced.invoices", &o).await.map_err(HandlerError::retry)?;
                Ok(())
            }
        })
        .on("traced.invoices", |_o: Order, _ctx: Context| async { Ok(()) })
        .build()
        .unwrap()
        .start();
    producer.publish("traced.orders", &Order { n: 1 }).await.unwrap();
    tokio::time::timeout(PATIENCE, worker.settled(2)).await.expect("both handled");

    let publish = span("publish traced.orders").await;
    let process = span("process traced.orders").await;
    let onward = span("publish traced.invoices").await;
    let last = span("process traced.invoices").await;
    assert_eq!((publish.span_kind.clone(), process.span_kind.clone()), (SpanKind::Producer, SpanKind::Consumer));
    assert_eq!(publish.parent_span_id, SpanId::INVALID, "a new trace");
    let trace = publish.span_context.trace_id();
    for s in [&process, &onward, &last] {
        assert_eq!(s.span_context.trace_id(), trace, "{} is in the producer's trace", s.name);
    }
    assert_eq!(process.parent_span_id, publish.span_context.span_id(), "the producer's span is the parent");
    assert!(process.parent_span_is_remote, "through the message");
    assert_eq!(onward.parent_span_id, process.span_context.span_id(), "published inside the handler");
    assert_eq!(last.parent_span_id, onward.span_context.span_id());

    assert_eq!(text(&publish, "messaging.system").as_deref(), Some("redis_streams"));
    assert_eq!(text(&publish, "messaging.destination.name").as_deref(), Some("traced.orders"));
    assert_eq!(text(&publish, "messaging.operation.type").as_deref(), Some("send"));
    assert_eq!(text(&process, "messaging.consumer.group.name").as_deref(), Some("billing"));
    assert_eq!(text(&process, "messaging.operation.type").as_deref(), Some("process"));
    assert!(text(&process, "messaging.message.id").is_some_and(|id| !id.is_empty()));
    let settle = span("settle traced.orders").await;
    assert_eq!(text(&settle, "messaging.operation.type").as_deref(), Some("settle"));
    let count = attr(&settle, "messaging.batch.message_count");
    assert!(matches!(count, Some(Value::I64(n)) if *n >= 1), "{count:?}");
    worker.shutdown().await;
}

#[tokio::test]
async fn a_failed_attempt_is_an_error_span_and_links_can_replace_parents() {
    exporter();
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let worker = Worker::builder(conn.clone(), "audit")
        .trace_links(true)
        .on("linked.orders", |_o: Order, _ctx: Context| async { Err::<(), _>(HandlerError::reject("no")) })
        .build()
        .unwrap()
        .start();
    Producer::new(conn.clone()).publish("linked.orders", &Order { n: 2 }).await.unwrap();
    tokio::time::timeout(PATIENCE, worker.settled(1)).await.expect("dead-lettered");
    let publish = span("publish linked.orders").await;
    let process = span("process linked.orders").await;
    assert_ne!(process.span_context.trace_id(), publish.span_context.trace_id(), "a trace of its own");
    assert_eq!(process.parent_span_id, SpanId::INVALID);
    let links: Vec<_> = process.links.links.iter().map(|l| l.span_context.span_id()).collect();
    assert_eq!(links, [publish.span_context.span_id()], "linked to the producer's span");
    assert!(matches!(process.status, opentelemetry::trace::Status::Error { .. }), "{:?}", process.status);
    assert_eq!(text(&process, "error.type").as_deref(), Some("rejected"));
    worker.shutdown().await;
}

#[tokio::test]
async fn an_rpc_call_is_one_trace_from_the_client_through_the_server_and_back() {
    exporter();
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let server = RpcServer::builder(conn.clone(), "traced-pricing")
        .method("quote", |n: u64, _ctx| async move { Ok(n * 2) })
        .build()
        .unwrap()
        .start();
    tokio::time::timeout(PATIENCE, server.ready()).await.expect("serving");
    let client = RpcClient::builder(conn.clone()).build().unwrap();
    let doubled: u64 = client.call("traced-pricing", "quote", &21u64).await.unwrap();
    assert_eq!(doubled, 42);

    let process = span("process rpc.traced-pricing").await;
    let of_kind = |kind: SpanKind| {
        let spans = exporter().get_finished_spans().unwrap().into_iter();
        spans.filter(|s| s.name == "traced-pricing/quote" && s.span_kind == kind).collect::<Vec<_>>()
    };
    let (call, serve) = (of_kind(SpanKind::Client), of_kind(SpanKind::Server));
    assert_eq!((call.len(), serve.len()), (1, 1), "one call, one served request");
    let (call, serve) = (&call[0], &serve[0]);
    assert_eq!(process.span_context.trace_id(), call.span_context.trace_id());
    assert_eq!(process.parent_span_id, call.span_context.span_id(), "the request carries the call's span");
    assert_eq!(serve.span_context.trace_id(), call.span_context.trace_id());
    assert_eq!(serve.parent_span_id, process.span_context.span_id());
    assert!(call.end_time >= serve.end_time, "the client's span ends with the reply, after the server's");
    let conversation = text(call, "messaging.message.conversation_id");
    assert!(conversation.as_deref().is_some_and(|c| c.len() == 36), "{conversation:?}");
    assert_eq!(text(serve, "messaging.message.conversation_id"), conversation);
    assert_eq!(text(serve, "rpc.method").as_deref(), Some("quote"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_publish_outside_any_span_continues_the_trace_it_was_given() {
    exporter();
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    // A trace that came from elsewhere (an HTTP request's `traceparent`), with no span here.
    let incoming: tributary::TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap();
    tributary::trace::in_trace(incoming, producer.publish("given.orders", &Order { n: 3 })).await.unwrap();
    let publish = span("publish given.orders").await;
    assert_eq!(u128::from_be_bytes(publish.span_context.trace_id().to_bytes()), incoming.trace_id());
    assert_eq!(u64::from_be_bytes(publish.parent_span_id.to_bytes()), incoming.parent_id());
    // The message carries the publish span, in the given trace.
    let range = Replay::new(conn.clone()).range("given.orders", Position::Beginning, Position::End).unwrap();
    let got = range.collect(10).await.unwrap();
    let carried = got[0].envelope.as_ref().unwrap().traceparent.expect("a trace context");
    assert_eq!(carried.trace_id(), incoming.trace_id());
    assert_eq!(carried.parent_id(), u64::from_be_bytes(publish.span_context.span_id().to_bytes()));
}

/// A partitioned topic's spans name the topic, with the partition in
/// `messaging.destination.partition.id`, and its messages keep their trace across it.
#[tokio::test]
async fn a_partitioned_topics_spans_name_the_topic_and_the_partition() {
    exporter();
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    Admin::new(conn.clone()).create_topic("parted.orders", 4).await.unwrap();
    let worker = Worker::builder(conn.clone(), "billing")
        .on("parted.orders", |_o: Order, _ctx: Context| async { Ok(()) })
        .build()
        .unwrap()
        .start();
    tokio::time::timeout(PATIENCE, worker.ready()).await.unwrap();
    let producer = Producer::new(conn.clone());
    producer.message("parted.orders", &Order { n: 4 }).key("customer-42").send().await.unwrap();
    tokio::time::timeout(PATIENCE, worker.settled(1)).await.expect("handled");
    let publish = span("publish parted.orders").await;
    let process = span("process parted.orders").await;
    // customer-42 is in partition crc32 mod 4 = 1 (docs/wire-format.md).
    for s in [&publish, &process] {
        assert_eq!(text(s, "messaging.destination.name").as_deref(), Some("parted.orders"), "{}", s.name);
        // A string, by the conventions.
        assert_eq!(text(s, "messaging.destination.partition.id").as_deref(), Some("1"), "{}", s.name);
    }
    assert_eq!(process.span_context.trace_id(), publish.span_context.trace_id());
    worker.shutdown().await;
}
