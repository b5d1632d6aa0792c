//! Layers around handlers, and handlers written as `async fn` with `async_trait`, against a
//! real redis-server.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use tributary_streams::consumer::{layer_fn, Layer, Next};
use tributary_streams::{async_trait, Context, DeadLetters, Handler, HandlerError, Producer, Worker};

/// What ran, in order.
type Log = Arc<Mutex<Vec<String>>>;

/// A stateful handler written with `async fn`.
struct Record(Log);

#[async_trait]
impl Handler for Record {
    async fn call(&self, ctx: Context) -> Result<(), HandlerError> {
        let order: Order = ctx.decode().map_err(HandlerError::reject)?;
        self.0.lock().unwrap().push(format!("handler {}", order.n));
        Ok(())
    }
}

/// Keeps messages of a blocked tenant from the handler: they are dead-lettered with a reason.
struct BlockTenant {
    tenant: &'static str,
    log: Log,
}

#[async_trait]
impl Layer for BlockTenant {
    async fn call(&self, ctx: Context, next: Next) -> Result<(), HandlerError> {
        self.log.lock().unwrap().push("inner".to_owned());
        if ctx.headers().get("tenant") == Some(self.tenant) {
            return Err(HandlerError::reject(format!("tenant {} is blocked", self.tenant)));
        }
        next.run(ctx).await
    }
}

#[tokio::test]
async fn layers_run_around_every_handler_in_the_order_added_and_may_stop_a_message() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    producer.message("orders", &Order { n: 1, key: String::new() }).header("tenant", "t-1").send().await.unwrap();
    producer.message("orders", &Order { n: 2, key: String::new() }).header("tenant", "t-2").send().await.unwrap();
    producer.message("orders", &Order { n: 3, key: String::new() }).header("tenant", "t-1").send().await.unwrap();

    let log: Log = Arc::default();
    let outer = log.clone();
    let worker = Worker::builder(conn.clone(), "billing")
        .concurrency(1)
        .layer(layer_fn(move |ctx: Context, next: Next| {
            let log = outer.clone();
            async move {
                log.lock().unwrap().push("outer in".to_owned());
                let result = next.run(ctx).await;
                log.lock().unwrap().push(format!("outer out ok={}", result.is_ok()));
                result
            }
        }))
        .layer(BlockTenant { tenant: "t-2", log: log.clone() })
        .handler("orders", Record(log.clone()))
        .build()
        .unwrap()
        .start();
    let stats = tokio::time::timeout(PATIENCE, worker.settled(3)).await.expect("three messages settle");
    worker.shutdown().await;

    assert_eq!((stats.acked, stats.dead_lettered), (2, 1), "{stats:?}");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "outer in",
            "inner",
            "handler 1",
            "outer out ok=true",
            "outer in",
            "inner",
            "outer out ok=false",
            "outer in",
            "inner",
            "handler 3",
            "outer out ok=true",
        ]
    );
    let letters = DeadLetters::new(conn, "orders").unwrap().list(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].reason.as_str(), letters[0].error.as_str()), ("rejected", "tenant t-2 is blocked"));
    assert_eq!(letters[0].envelope().unwrap().decode::<Order>().unwrap().n, 2);
}

#[tokio::test]
async fn a_worker_without_layers_calls_its_handlers_directly() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    Producer::new(conn.clone()).publish("orders", &Order { n: 7, key: String::new() }).await.unwrap();
    let log: Log = Arc::default();
    let worker =
        Worker::builder(conn, "billing").handler("orders", Arc::new(Record(log.clone()))).build().unwrap().start();
    assert_eq!(tokio::time::timeout(PATIENCE, worker.settled(1)).await.expect("one message settles").acked, 1);
    worker.shutdown().await;
    assert_eq!(*log.lock().unwrap(), ["handler 7"]);
}
