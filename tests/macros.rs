//! The macros against a real redis-server: a `#[handler]` route with its options, a
//! `#[service]` trait with its generated client and server, and the README's first example
//! kept identical to `examples/macros_worker.rs` (which CI runs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tributary::prelude::*;
use tributary_testkit::{wait_until, TestRedis};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Job {
    n: u64,
}

static ATTEMPTS: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicU64 = AtomicU64::new(0);

#[tributary::handler(topic = "jobs", group = "workers", max_deliveries = 2, retry_initial_ms = 5, retry_max_ms = 10)]
async fn flaky(job: Job, ctx: Context) -> Result<(), HandlerError> {
    ATTEMPTS.fetch_add(1, Ordering::SeqCst);
    if job.n == 13 {
        return Err(HandlerError::retry(format!("unlucky on attempt {}", ctx.attempt())));
    }
    DONE.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test]
async fn handler_macro_registers_its_topic_and_options() {
    let redis = TestRedis::start().await;
    let conn = Connection::options().namespace(redis.namespace()).connect(&redis.url()).await.unwrap();
    let producer = Producer::new(conn.clone());
    for n in [1, 13, 2] {
        producer.publish("jobs", &Job { n }).await.unwrap();
    }
    let worker = Worker::builder(conn.clone(), "workers").consumer_name("w").register(flaky).build().unwrap().start();
    let dlq = DeadLetters::new(conn.clone(), "jobs").unwrap();
    wait_until(Duration::from_secs(30), "two done, one dead-lettered", || async {
        DONE.load(Ordering::SeqCst) == 2 && dlq.count().await.unwrap() == 1
    })
    .await;
    // max_deliveries = 2 from the attribute: 13 was tried twice.
    assert_eq!(ATTEMPTS.load(Ordering::SeqCst), 4);
    assert_eq!(dlq.list(1).await.unwrap()[0].error, "unlucky on attempt 2");
    worker.shutdown().await;

    // A handler written for group "workers" cannot be registered on another group.
    let err = Worker::builder(conn, "others").register(flaky).build().unwrap_err();
    assert!(err.to_string().contains("group `others`"), "{err}");
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Greet {
    name: String,
}

#[tributary::service]
trait Greeter {
    async fn greet(&self, req: Greet) -> Result<String, RpcHandlerError>;
    async fn refuse(&self, req: Greet) -> Result<String, RpcHandlerError>;
}

struct Polite;

impl Greeter for Polite {
    async fn greet(&self, req: Greet) -> Result<String, RpcHandlerError> {
        Ok(format!("hello, {}", req.name))
    }

    async fn refuse(&self, req: Greet) -> Result<String, RpcHandlerError> {
        Err(RpcHandlerError::new("not_today", format!("go away, {}", req.name)))
    }
}

#[tokio::test]
async fn service_macro_generates_a_working_client_and_server() {
    let redis = TestRedis::start().await;
    let conn = Connection::options().namespace(redis.namespace()).connect(&redis.url()).await.unwrap();
    let server = GreeterServer::builder(conn.clone(), Polite).build().unwrap().start();
    let client = GreeterClient::new(RpcClient::new(conn));
    assert_eq!(GreeterClient::SERVICE, "greeter");
    assert_eq!(client.greet(Greet { name: "Ada".into() }).await.unwrap(), "hello, Ada");
    let err = client.refuse(Greet { name: "Bob".into() }).await.unwrap_err();
    assert_eq!(err.code(), Some("not_today"));
    server.shutdown().await;
}

#[test]
fn readme_first_example_is_the_macros_worker_example() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let example = std::fs::read_to_string(format!("{root}/examples/macros_worker.rs")).unwrap();
    let start = readme.find("```rust").expect("a rust block in the README");
    let body_start = start + readme[start..].find('\n').unwrap() + 1;
    let body_end = body_start + readme[body_start..].find("```").unwrap();
    let block = &readme[body_start..body_end];
    let code: String =
        example.lines().filter(|l| !l.starts_with("//!") && !l.starts_with("#![")).map(|l| format!("{l}\n")).collect();
    assert_eq!(block.trim(), code.trim(), "README's first example and examples/macros_worker.rs differ");
}
