//! What operators do to a running system: restart Redis without persistence, delete a group or
//! a topic, deploy (stop one instance gracefully while another runs), lose Redis during a stop,
//! run a wedged instance or a saturated topic beside healthy ones. Every test here failed
//! before the fix it names in `docs/delivery.md`.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tributary_core::Connection;
use tributary_streams::{Admin, Context, DeadLetters, HandlerError, Position, Producer, Worker};
use tributary_testkit::ServerOptions;

/// A gate handlers wait at until the test opens it.
#[derive(Clone, Default)]
struct Gate(Arc<(AtomicBool, tokio::sync::Notify)>);

impl Gate {
    fn open(&self) {
        self.0 .0.store(true, Ordering::SeqCst);
        self.0 .1.notify_waiters();
    }
    async fn wait(&self) {
        loop {
            let notified = self.0 .1.notified();
            if self.0 .0.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// Publishes `0..n` to `topic`.
async fn publish_range(producer: &Producer, topic: &str, range: std::ops::Range<u64>) {
    let batch: Vec<Order> = range.map(|n| Order { n, key: String::new() }).collect();
    for chunk in batch.chunks(500) {
        producer.publish_batch(topic, chunk).await.unwrap();
    }
}

fn count_each(seen: &[u64]) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for n in seen {
        *counts.entry(*n).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_confirmed_after_a_restart_without_persistence_is_handled() {
    let redis = TestRedis::start_with(ServerOptions::new()).await; // no AOF, no RDB
    let conn = connect(&redis).await;
    let seen: Seen<u64> = Seen::new();
    let worker = Worker::builder(conn.clone(), "g")
        .block_for(Duration::from_millis(200))
        .on("orders", record(&seen))
        .build()
        .unwrap()
        .start();
    let producer = Producer::new(conn.clone());
    publish_range(&producer, "orders", 0..20).await;
    seen.wait_for(20, "traffic before the restart").await;

    redis.kill();
    redis.restart().await; // empty: the stream and the group are gone
                           // The producer is fine once the connection is back; everything it confirms must be handled.
    let mut confirmed = Vec::new();
    let mut n = 1_000;
    while confirmed.len() < 200 {
        if producer.publish("orders", &Order { n, key: String::new() }).await.is_ok() {
            confirmed.push(n);
        }
        n += 1;
    }
    let confirmed: HashSet<u64> = confirmed.into_iter().collect();
    wait_until(PATIENCE, "every publish confirmed after the restart handled", || {
        let got: HashSet<u64> = seen.get().into_iter().collect();
        let all = confirmed.is_subset(&got);
        async move { all }
    })
    .await;
    assert!(worker.stats().groups_recreated >= 1, "the lost group is counted: {:?}", worker.stats());
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_group_is_recreated_where_the_worker_last_read_and_replays_nothing() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    let producer = Producer::new(conn.clone());
    publish_range(&producer, "orders", 0..300).await;
    let seen: Seen<u64> = Seen::new();
    let worker = Worker::builder(conn.clone(), "g")
        .block_for(Duration::from_millis(200))
        .on("orders", record(&seen))
        .build()
        .unwrap()
        .start();
    seen.wait_for(300, "the retained history").await;
    wait_until(PATIENCE, "history acked", || async { admin.pending_count("orders", "g").await.unwrap() == 0 }).await;

    assert!(admin.delete_group("orders", "g").await.unwrap());
    publish_range(&producer, "orders", 300..350).await;
    seen.wait_for(350, "what was published after the group was destroyed").await;
    wait_until(PATIENCE, "the group re-created", || {
        let admin = admin.clone();
        async move { admin.groups("orders").await.unwrap().iter().any(|g| g.name == "g") }
    })
    .await;
    // Nothing more arrives: the old history is not delivered again.
    publish_range(&producer, "orders", 350..351).await;
    seen.wait_for(351, "a marker").await;
    let counts = count_each(&seen.get());
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).map(|(n, _)| *n).collect();
    assert!(twice.is_empty(), "{} messages ran twice, e.g. {:?}", twice.len(), &twice[..twice.len().min(5)]);
    assert_eq!(counts.len(), 351);
    assert_eq!(worker.stats().groups_recreated, 1);

    // A topic whose stream itself is deleted starts again at the beginning of its new stream.
    admin.delete_topic("orders").await.unwrap();
    publish_range(&producer, "orders", 1_000..1_010).await;
    wait_until(PATIENCE, "the new stream's messages", || {
        let got: HashSet<u64> = seen.get().into_iter().collect();
        let all = (1_000..1_010).all(|n| got.contains(&n));
        async move { all }
    })
    .await;
    worker.shutdown().await;
}

/// Which instance started a message, which message, and when.
type Start = (&'static str, u64, Instant);

/// Records every start.
#[derive(Clone, Default)]
struct Starts(Arc<Mutex<Vec<Start>>>);

fn slow_instance(
    conn: &Connection,
    name: &'static str,
    starts: &Starts,
    done: &Seen<u64>,
    work: Duration,
) -> tributary_streams::WorkerHandle {
    let (starts, done) = (starts.clone(), done.clone());
    Worker::builder(conn.clone(), "g")
        .consumer_name(name)
        .claim_idle(Duration::from_millis(500))
        .block_for(Duration::from_millis(200))
        .concurrency(64)
        .shutdown_timeout(Duration::from_secs(20))
        .on("orders", move |o: Order, _ctx: Context| {
            let (starts, done) = (starts.clone(), done.clone());
            async move {
                starts.0.lock().unwrap().push((name, o.n, Instant::now()));
                tokio::time::sleep(work).await;
                done.push(o.n);
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_deploy_handles_every_message_exactly_once() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    admin.create_group("orders", "g", Position::Beginning).await.unwrap();
    let (starts, done) = (Starts::default(), Seen::<u64>::new());
    // Handlers run longer than `claim_idle`: only lease renewal keeps them from being taken over.
    let work = Duration::from_millis(800);
    let a = slow_instance(&conn, "a", &starts, &done, work);
    let b = slow_instance(&conn, "b", &starts, &done, work);
    let producer = Producer::new(conn.clone());
    let publisher = {
        let producer = producer.clone();
        tokio::spawn(async move {
            for round in 0..20 {
                publish_range(&producer, "orders", round * 50..round * 50 + 50).await;
                tokio::time::sleep(Duration::from_millis(100)).await; // messages flow during the deploy
            }
        })
    };
    done.wait_for(150, "traffic before the deploy").await;
    // Deploy: stop `a` gracefully while `b` runs and messages keep coming. The first poll of
    // `shutdown()` signals the stop; a handler that passed its start check just before may
    // still record its start a moment later (on a loaded 2-core machine, a while later), so
    // starts count as late 400 ms after the signal (before the fix, queued entries kept
    // starting for the whole drain: 800 ms per handler).
    let shutdown = a.shutdown();
    tokio::pin!(shutdown);
    assert!(futures::poll!(&mut shutdown).is_pending());
    let stopped_at = Instant::now() + Duration::from_millis(400);
    shutdown.await;
    publisher.await.unwrap();
    done.wait_for(1_000, "every message").await;
    wait_until(PATIENCE, "nothing pending", || async { admin.pending_count("orders", "g").await.unwrap() == 0 }).await;
    let counts = count_each(&done.get());
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).map(|(n, _)| *n).collect();
    assert!(twice.is_empty(), "{} messages ran twice (e.g. {:?})", twice.len(), &twice[..twice.len().min(5)]);
    assert_eq!(counts.len(), 1_000);
    let late: Vec<u64> =
        starts.0.lock().unwrap().iter().filter(|(w, _, at)| *w == "a" && *at > stopped_at).map(|s| s.1).collect();
    assert!(late.is_empty(), "the stopping instance started {} entries after its stop: {late:?}", late.len());
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_within_its_timeout_while_redis_is_unreachable() {
    let redis = TestRedis::start_with(ServerOptions::new().durable()).await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    publish_range(&producer, "orders", 0..20).await;
    let started: Seen<u64> = Seen::new();
    let s = started.clone();
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("c")
        .shutdown_timeout(Duration::from_millis(500))
        .on("orders", move |o: Order, _ctx: Context| {
            let s = s.clone();
            async move {
                s.push(o.n);
                // Half finish during the stop (their acks may still reach Redis once it is
                // back), half outlive `shutdown_timeout` and are abandoned.
                let work = if o.n % 2 == 0 { 200 } else { 60_000 };
                tokio::time::sleep(Duration::from_millis(work)).await;
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start();
    started.wait_for(20, "handlers running").await;
    redis.kill();
    let at = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), worker.shutdown()).await.expect("shutdown returned");
    let took = at.elapsed();
    // `shutdown_timeout` plus the documented 3 s, and a little for a loaded machine.
    assert!(took < Duration::from_millis(500) + Duration::from_millis(3_500), "shutdown took {took:?}");
    // What did not finish is still pending, to run again.
    redis.restart().await;
    let admin = Admin::new(conn.clone());
    wait_until(PATIENCE, "Redis back", || async { admin.len("orders").await.is_ok() }).await;
    let pending = admin.pending("orders", "g", 100).await.unwrap();
    let odd = pending.iter().filter(|p| p.consumer == "c").count();
    assert!(odd >= 10, "the 10 abandoned entries stay pending: {pending:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_own_pending_exceeds_max_in_flight_recovers_it_and_reads_on() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    admin.create_group("orders", "g", Position::Beginning).await.unwrap();
    let producer = Producer::new(conn.clone());
    publish_range(&producer, "orders", 0..20).await;
    // A previous run of consumer `c` took 20 entries and stopped without acknowledging them.
    let key = format!("{}:{{orders}}", redis.namespace());
    redis.cli(&["XREADGROUP", "GROUP", "g", "c", "COUNT", "100", "STREAMS", &key, ">"]);
    assert_eq!(admin.pending_count("orders", "g").await.unwrap(), 20);
    let seen: Seen<u64> = Seen::new();
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("c")
        .max_in_flight(8)
        .on("orders", record(&seen))
        .build()
        .unwrap()
        .start();
    publish_range(&producer, "orders", 20..30).await;
    seen.wait_for(30, "own pending entries and new ones").await;
    let got: HashSet<u64> = seen.get().into_iter().collect();
    assert_eq!(got.len(), 30);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_topic_does_not_stall_another_topic_of_the_same_worker() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    // The slow topic's handlers wait at a gate: every entry it takes stays taken.
    publish_range(&producer, "slow", 0..400).await;
    let gate = Gate::default();
    let (slow_seen, fast_seen) = (Seen::<u64>::new(), Seen::<u64>::new());
    let (g, s) = (gate.clone(), slow_seen.clone());
    let worker = Worker::builder(conn.clone(), "g")
        .handler_with(
            "slow",
            tributary_streams::handler_fn(move |o: Order, _ctx: Context| {
                let (g, s) = (g.clone(), s.clone());
                async move {
                    g.wait().await;
                    s.push(o.n);
                    Ok::<_, HandlerError>(())
                }
            }),
            tributary_streams::RouteOptions::new().concurrency(1),
        )
        .on("fast", record(&fast_seen))
        .build()
        .unwrap()
        .start();
    // Let the slow topic take all it will take: its one running handler and its read-ahead
    // (`prefetch`, 32). Before per-topic limits it took every slot of the worker.
    let admin = Admin::new(conn.clone());
    wait_until(PATIENCE, "the slow topic holding all it may", || async {
        admin.pending_count("slow", "g").await.unwrap_or(0) > 32 // 1 running + 32 read ahead
    })
    .await;
    for n in 0..50 {
        producer.publish("fast", &Order { n, key: String::new() }).await.unwrap();
    }
    fast_seen.wait_for(50, "the fast topic's messages while the slow one is saturated").await;
    gate.open();
    slow_seen.wait_for(400, "the slow topic once its handlers return").await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_instance_leaves_the_work_it_has_not_started_to_a_healthy_one() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    admin.create_group("orders", "g", Position::Beginning).await.unwrap();
    let producer = Producer::new(conn.clone());
    publish_range(&producer, "orders", 0..200).await;
    // The wedged instance starts first and takes what it can; its handlers never return.
    let wedged_started = Arc::new(AtomicU64::new(0));
    let w = wedged_started.clone();
    let wedged = Worker::builder(conn.clone(), "g")
        .consumer_name("wedged")
        .concurrency(4)
        .claim_idle(Duration::from_millis(500))
        .on("orders", move |_o: Order, _ctx: Context| {
            w.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<(), HandlerError>>()
        })
        .build()
        .unwrap()
        .start();
    wait_until(PATIENCE, "the wedged instance busy", || {
        let n = wedged_started.load(Ordering::SeqCst);
        async move { n == 4 }
    })
    .await;
    let held =
        admin.consumers("orders", "g").await.unwrap().iter().find(|c| c.name == "wedged").map_or(0, |c| c.pending);
    assert!(held <= 4 + 32, "a wedged instance holds only its running handlers and a small prefetch: {held}");
    let healthy_seen: Seen<u64> = Seen::new();
    let healthy = Worker::builder(conn.clone(), "g")
        .consumer_name("healthy")
        .claim_idle(Duration::from_millis(500))
        .on("orders", record(&healthy_seen))
        .build()
        .unwrap()
        .start();
    // Everything but what the wedged instance is running gets handled.
    healthy_seen.wait_for(196, "the healthy instance's share").await;
    assert_eq!(wedged_started.load(Ordering::SeqCst), 4, "the wedged instance started nothing more");
    healthy.shutdown().await;
    drop(wedged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_past_its_timeout_is_cancelled_and_retried() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    producer.publish("orders", &Order { n: 1, key: String::new() }).await.unwrap();
    let attempts: Seen<u64> = Seen::new();
    let dropped = Arc::new(AtomicBool::new(false));
    let (a, d) = (attempts.clone(), dropped.clone());
    struct OnDrop(Arc<AtomicBool>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let worker = Worker::builder(conn.clone(), "g")
        .handler_timeout(Duration::from_millis(200))
        .on("orders", move |_o: Order, ctx: Context| {
            let (a, d) = (a.clone(), d.clone());
            async move {
                a.push(ctx.attempt());
                if ctx.attempt() == 1 {
                    let _guard = OnDrop(d);
                    std::future::pending::<()>().await;
                }
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start();
    attempts.wait_for(2, "a second attempt after the timeout").await;
    assert!(dropped.load(Ordering::SeqCst), "the timed-out handler's future was dropped");
    let admin = Admin::new(conn.clone());
    wait_until(PATIENCE, "acked", || async { admin.pending_count("orders", "g").await.unwrap() == 0 }).await;
    assert_eq!(worker.stats().timed_out, 1);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_expires_during_its_retry_backoff_never_reaches_the_handler_again() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let calls: Seen<u64> = Seen::new();
    let c = calls.clone();
    let worker = Worker::builder(conn.clone(), "g")
        .on("orders", move |o: Order, _ctx: Context| {
            c.push(o.n);
            async move { Err::<(), _>(HandlerError::retry_after("not yet", Duration::from_secs(2))) }
        })
        .build()
        .unwrap()
        .start();
    // Running first, so the message reaches the handler well within its TTL however slow the
    // machine is to start a worker.
    worker.ready().await;
    producer.message("orders", &Order { n: 1, key: String::new() }).ttl(Duration::from_secs(1)).send().await.unwrap();
    let dead = DeadLetters::new(conn.clone(), "orders").unwrap();
    wait_until(PATIENCE, "dead-lettered as expired", || {
        let dead = &dead;
        async move { dead.list(10).await.unwrap().iter().any(|d| d.reason == "expired") }
    })
    .await;
    assert_eq!(calls.len(), 1, "the handler ran after the message expired");
    assert_eq!(worker.stats().expired, 1);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_with_default_names_are_distinct_consumers() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let build = || Worker::builder(conn.clone(), "g").on("orders", |_o: Order, _c: Context| async { Ok(()) });
    let (a, b) = (build().build().unwrap(), build().build().unwrap());
    assert_ne!(a.consumer_name(), b.consumer_name());
    let pid = std::process::id().to_string();
    assert!(a.consumer_name().contains(&pid), "the name says which process: {}", a.consumer_name());
    // An explicit name stays as set, so a restart can recover its own entries.
    let named = build().consumer_name("billing-0").build().unwrap();
    assert_eq!(named.consumer_name(), "billing-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_is_retryable_and_errors_carry_what_redis_said() {
    let redis = TestRedis::start_private().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    producer.publish("orders", &Order { n: 0, key: String::new() }).await.unwrap();
    redis.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    let err = producer.publish("orders", &Order { n: 1, key: String::new() }).await.unwrap_err();
    assert!(err.kind().is_retryable(), "OOM clears when memory is freed: {err:?}");
    assert!(err.to_string().contains("OOM"), "the text says why: {err}");
    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    producer.publish("orders", &Order { n: 2, key: String::new() }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_the_recovery_of_own_entries_still_lets_running_handlers_finish() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    admin.create_group("orders", "g", Position::Beginning).await.unwrap();
    publish_range(&Producer::new(conn.clone()), "orders", 0..40).await;
    // A previous run of `c` left 40 entries pending: recovering them takes a while.
    let key = format!("{}:{{orders}}", redis.namespace());
    redis.cli(&["XREADGROUP", "GROUP", "g", "c", "COUNT", "100", "STREAMS", &key, ">"]);
    let (started, finished) = (Seen::<u64>::new(), Seen::<u64>::new());
    let (s, f) = (started.clone(), finished.clone());
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("c")
        .max_in_flight(4)
        .on("orders", move |o: Order, _ctx: Context| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                s.push(o.n);
                tokio::time::sleep(Duration::from_millis(300)).await; // simulated work
                f.push(o.n);
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start();
    started.wait_for(6, "recovery under way").await;
    worker.shutdown().await;
    assert_eq!(started.len(), finished.len(), "every handler that started finished before shutdown returned");
    let pending = admin.pending_count("orders", "g").await.unwrap();
    assert_eq!(pending as usize, 40 - finished.len(), "the finished ones are acknowledged, the rest pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_queued_behind_their_key_keep_their_lease_while_the_key_makes_progress() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    admin.create_group("orders", "g", Position::Beginning).await.unwrap();
    let producer = Producer::new(conn.clone());
    // Ten messages of one key: they run one at a time, 2 s in all, against a claim_idle of 500 ms.
    for n in 0..10 {
        producer.message("orders", &Order { n, key: "acct-1".into() }).key("acct-1").send().await.unwrap();
    }
    let seen: Seen<(&'static str, u64)> = Seen::new();
    let worker = |name: &'static str| {
        let seen = seen.clone();
        Worker::builder(conn.clone(), "g")
            .consumer_name(name)
            .claim_idle(Duration::from_millis(500))
            // Short reads: a blocked read holds the read-ahead slots a sweep needs to claim.
            .block_for(Duration::from_millis(100))
            .on("orders", move |o: Order, _ctx: Context| {
                let seen = seen.clone();
                async move {
                    seen.push((name, o.n));
                    tokio::time::sleep(Duration::from_millis(200)).await; // simulated work
                    Ok::<_, HandlerError>(())
                }
            })
            .build()
            .unwrap()
            .start()
    };
    let first = worker("first");
    wait_until(PATIENCE, "the first instance holding the key", || async {
        admin.pending_count("orders", "g").await.unwrap() == 10
    })
    .await;
    let second = worker("second"); // a live peer, sweeping every 250 ms
    seen.wait_for(10, "all ten").await;
    // A peer's takeover would show as a run on `second` (which starts what it claims at once).
    let got = seen.get();
    assert_eq!(got.len(), 10, "no message of the key ran twice: {got:?}");
    assert!(got.iter().all(|(w, _)| *w == "first"), "the key stayed with one instance: {got:?}");
    assert_eq!(got.iter().map(|(_, n)| *n).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>(), "in order");
    first.shutdown().await;
    second.shutdown().await;
}
