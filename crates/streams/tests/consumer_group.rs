//! Consumer groups against a real redis-server: offline delivery, fan-out, load sharing,
//! backpressure, per-key order and graceful shutdown.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tributary_streams::{Admin, Context, HandlerError, Producer, RetryPolicy, Worker};

#[tokio::test]
async fn offline_consumer_receives_everything_in_publish_order() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let mut published = Vec::new();
    for n in 0..1000u64 {
        let id = producer.publish("orders", &Order { n, key: String::new() }).await.unwrap();
        published.push(id);
    }
    assert!(published.windows(2).all(|w| w[0] < w[1]));

    let seen = Seen::new();
    let s = seen.clone();
    let worker = Worker::builder(conn.clone(), "billing")
        .consumer_name("billing-1")
        .concurrency(1)
        .on("orders", move |o: Order, ctx: Context| {
            let s = s.clone();
            async move {
                s.push((o.n, ctx.entry_id()));
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start();
    seen.wait_for(1000, "1000 messages").await;
    let got = seen.get();
    assert_eq!(got.iter().map(|(n, _)| *n).collect::<Vec<_>>(), (0..1000).collect::<Vec<_>>());
    assert_eq!(got.iter().map(|(_, id)| *id).collect::<Vec<_>>(), published);
    let admin = Admin::new(conn);
    wait_until(PATIENCE, "all acked", || async { admin.pending_count("orders", "billing").await.unwrap() == 0 }).await;
    assert_eq!(worker.stats().acked, 1000);
    worker.shutdown().await;
}

#[tokio::test]
async fn two_groups_each_see_every_message_and_one_groups_consumers_split_them() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    admin.create_group("events", "audit", tributary_streams::Position::End).await.unwrap();
    admin.create_group("events", "billing", tributary_streams::Position::End).await.unwrap();

    let audit = Seen::new();
    let billing: HashMap<&str, Seen<u64>> = [("b1", Seen::new()), ("b2", Seen::new())].into();
    let a = audit.clone();
    let audit_worker =
        Worker::builder(conn.clone(), "audit").consumer_name("a1").on("events", record(&a)).build().unwrap().start();
    // Each billing consumer holds its first messages until the other one has work too, so
    // both get a share however the scheduler runs them (each holds at most 10 meanwhile).
    let billing_started: Seen<&str> = Seen::new();
    let mut billing_workers = Vec::new();
    for (name, seen) in &billing {
        let (s, started, name) = (seen.clone(), billing_started.clone(), *name);
        let first = Arc::new(AtomicBool::new(true));
        billing_workers.push(
            Worker::builder(conn.clone(), "billing")
                .consumer_name(name)
                .batch_size(10)
                .max_in_flight(10)
                .on("events", move |o: Order, _ctx: Context| {
                    let (s, started, first) = (s.clone(), started.clone(), first.clone());
                    async move {
                        if first.swap(false, Ordering::SeqCst) {
                            started.push(name);
                        }
                        started.wait_for(2, "both billing consumers have work").await;
                        s.push(o.n);
                        Ok::<_, HandlerError>(())
                    }
                })
                .build()
                .unwrap()
                .start(),
        );
    }
    let producer = Producer::new(conn.clone());
    let n = 400;
    for i in 0..n {
        producer.publish("events", &Order { n: i, key: String::new() }).await.unwrap();
    }
    audit.wait_for(n as usize, "audit sees all").await;
    let b = billing.clone();
    wait_until(PATIENCE, "billing sees all", move || {
        let total = b.values().map(Seen::len).sum::<usize>();
        async move { total >= n as usize }
    })
    .await;
    let mut audit_got = audit.get();
    audit_got.sort();
    assert_eq!(audit_got, (0..n).collect::<Vec<_>>());
    let b1 = billing["b1"].get();
    let b2 = billing["b2"].get();
    assert!(!b1.is_empty() && !b2.is_empty(), "both consumers take work: {} / {}", b1.len(), b2.len());
    let mut all: Vec<u64> = b1.iter().chain(b2.iter()).copied().collect();
    all.sort();
    assert_eq!(all, (0..n).collect::<Vec<_>>(), "no message handled by both, none missed");
    audit_worker.shutdown().await;
    for w in billing_workers {
        w.shutdown().await;
    }
}

#[tokio::test]
async fn per_key_order_holds_under_concurrency_and_retries() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let keys = ["a", "b", "c", "d"];
    for n in 0..200u64 {
        let key = keys[(n % 4) as usize];
        producer.message("orders", &Order { n, key: key.to_owned() }).key(key).send().await.unwrap();
    }
    let seen: Seen<(String, u64)> = Seen::new();
    let failed_once = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let s = seen.clone();
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("c1")
        .concurrency(8)
        .retry_policy(RetryPolicy::exponential(Duration::from_millis(5), Duration::from_millis(20)))
        .on("orders", move |o: Order, ctx: Context| {
            let s = s.clone();
            let failed_once = failed_once.clone();
            async move {
                // Every 7th message fails on its first attempt: its retry must still come
                // before the later messages of its key.
                if o.n % 7 == 0 && failed_once.lock().unwrap().insert(o.n) {
                    assert_eq!(ctx.attempt(), 1);
                    return Err(HandlerError::retry("transient"));
                }
                // Let the other handlers run in between: order must hold under interleaving.
                tokio::task::yield_now().await;
                s.push((o.key.clone(), o.n));
                Ok(())
            }
        })
        .build()
        .unwrap()
        .start();
    seen.wait_for(200, "all handled").await;
    let got = seen.get();
    for key in keys {
        let order: Vec<u64> = got.iter().filter(|(k, _)| k == key).map(|(_, n)| *n).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "key {key} out of order");
        assert_eq!(order.len(), 50);
    }
    assert!(worker.stats().retried >= 28);
    worker.shutdown().await;
}

#[tokio::test]
async fn backlog_of_100k_never_holds_more_than_max_in_flight() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let batch: Vec<Order> = (0..1000).map(|n| Order { n, key: String::new() }).collect();
    for _ in 0..100 {
        producer.publish_batch("bulk", &batch).await.unwrap();
    }
    let admin = Admin::new(conn.clone());
    assert_eq!(admin.len("bulk").await.unwrap(), 100_000);
    admin.create_group("bulk", "g", tributary_streams::Position::Beginning).await.unwrap();

    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("c1")
        .max_in_flight(64)
        .concurrency(16)
        .on("bulk", move |_o: Order, _ctx: Context| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::Relaxed);
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start();
    let mut max_pending = 0;
    let mut samples = 0;
    while handled.load(Ordering::Relaxed) < 100_000 {
        let pending = admin.pending_count("bulk", "g").await.unwrap();
        max_pending = max_pending.max(pending);
        samples += 1;
        assert!(samples < 100_000, "worker did not finish the backlog");
        tokio::time::sleep(Duration::from_millis(2)).await; // sampling interval (bounded by samples)
    }
    assert!(max_pending <= 64, "held {max_pending} unacked entries with max_in_flight 64");
    assert!(max_pending > 0, "sampling saw the worker holding entries ({samples} samples)");
    worker.shutdown().await;
    assert_eq!(admin.pending_count("bulk", "g").await.unwrap(), 0);
}

#[tokio::test]
async fn graceful_shutdown_finishes_running_handlers_and_acks_them() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    for n in 0..20 {
        producer.publish("slow", &Order { n, key: String::new() }).await.unwrap();
    }
    let started = Seen::new();
    let finished = Seen::new();
    // Handlers run until the test opens the gate, which it does once the shutdown has begun.
    let (gate, gate_rx) = tokio::sync::watch::channel(false);
    let (st, fi) = (started.clone(), finished.clone());
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("c1")
        .concurrency(4)
        .max_in_flight(4)
        .on("slow", move |o: Order, _ctx: Context| {
            let (st, fi, mut gate) = (st.clone(), fi.clone(), gate_rx.clone());
            async move {
                st.push(o.n);
                gate.wait_for(|open| *open).await.expect("gate kept open");
                fi.push(o.n);
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start();
    started.wait_for(4, "four handlers running").await;
    // The first poll of `shutdown` signals the stop; it cannot end while handlers run.
    let mut shutdown = Box::pin(worker.shutdown());
    assert!(futures::poll!(&mut shutdown).is_pending(), "shutdown waits for running handlers");
    gate.send_replace(true);
    shutdown.await;
    let (s, f) = (started.get(), finished.get());
    assert_eq!(s.len(), f.len(), "every started handler finished before shutdown returned");
    assert!(f.len() < 20, "shutdown stopped reading new entries");
    let admin = Admin::new(conn.clone());
    assert_eq!(admin.pending_count("slow", "g").await.unwrap(), 0, "finished work was acked");
    let groups = admin.groups("slow").await.unwrap();
    assert_eq!(groups[0].consumers, 0, "a consumer holding nothing leaves the group");

    // The rest is delivered to the next worker.
    let rest = Seen::new();
    let r = rest.clone();
    let worker = Worker::builder(conn, "g").consumer_name("c1").on("slow", record(&r)).build().unwrap().start();
    rest.wait_for(20 - f.len(), "the remaining messages").await;
    let mut all: Vec<u64> = f.into_iter().chain(rest.get()).collect();
    all.sort();
    assert_eq!(all, (0..20).collect::<Vec<_>>());
    worker.shutdown().await;
}

#[tokio::test]
async fn trace_context_follows_a_message_into_what_its_handler_publishes() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let root = tributary_core::TraceParent::new_root();
    let producer = Producer::new(conn.clone());
    tributary_streams::trace::in_trace(root, producer.publish("first", &Order { n: 1, key: String::new() }))
        .await
        .unwrap();
    let seen = Seen::new();
    let (s, p) = (seen.clone(), producer.clone());
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("c")
        .on("first", move |o: Order, ctx: Context| {
            let (s, p) = (s.clone(), p.clone());
            async move {
                s.push(("first", ctx.traceparent()));
                p.publish("second", &o).await?;
                Ok::<_, HandlerError>(())
            }
        })
        .on("second", {
            let s = seen.clone();
            move |_o: Order, ctx: Context| {
                let s = s.clone();
                async move {
                    s.push(("second", ctx.traceparent()));
                    Ok::<_, HandlerError>(())
                }
            }
        })
        .build()
        .unwrap()
        .start();
    seen.wait_for(2, "both hops").await;
    let got = seen.get();
    let first = got.iter().find(|g| g.0 == "first").unwrap().1.unwrap();
    let second = got.iter().find(|g| g.0 == "second").unwrap().1.unwrap();
    assert_eq!(first.trace_id(), root.trace_id());
    assert_eq!(second.trace_id(), root.trace_id(), "the second hop joins the same trace");
    assert_ne!(second.parent_id(), first.parent_id());
    worker.shutdown().await;
}

/// `settled(n)` returns once `n` entries are done with (acknowledged or dead-lettered), with
/// the counters at that moment: no polling of `stats()` needed.
#[tokio::test]
async fn settled_waits_for_entries_acknowledged_or_dead_lettered() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    for n in 0..100u64 {
        producer.publish("orders", &n).await.unwrap();
    }
    let worker = Worker::builder(conn.clone(), "g")
        .on("orders", |n: u64, _ctx: Context| async move {
            if n == 7 {
                return Err(HandlerError::reject("seven"));
            }
            Ok(())
        })
        .build()
        .unwrap()
        .start();
    let stats = tokio::time::timeout(PATIENCE, worker.settled(100)).await.expect("all 100 settled");
    assert_eq!((stats.acked, stats.dead_lettered, stats.settled()), (99, 1, 100));
    // Already there: returns at once.
    assert_eq!(worker.settled(50).await.settled(), 100);
    // More than will ever come: still waiting when the bound ends.
    assert!(tokio::time::timeout(Duration::from_millis(200), worker.settled(101)).await.is_err());
    worker.shutdown().await;
}

#[tokio::test]
async fn the_server_under_test_is_the_one_asked_for() {
    // `TRIBUTARY_TEST_SERVER=valkey` (the Valkey leg of `cargo xtask test`) runs these tests on
    // Valkey: this says which server answered, so the leg cannot pass on Redis by mistake.
    let redis = TestRedis::start_private().await;
    let info = redis.cli(&["INFO", "server"]);
    let valkey = info.contains("server_name:valkey");
    assert_eq!(valkey, tributary_testkit::test_server() == "valkey", "{info}");
}
