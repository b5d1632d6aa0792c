//! Crashed consumers: their pending entries are reclaimed by live ones after `claim_idle`,
//! and a restarted consumer recovers its own.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use tributary_core::Connection;
use tributary_streams::{Admin, Context, HandlerError, Position, Producer, Worker, WorkerBuilder, WorkerHandle};

/// A consumer of `orders` in group `g` whose handlers record the message in `started` and never
/// finish, so it holds up to `n` entries: dropping its handle is a crash mid-handling.
fn hanging_worker(conn: &Connection, name: &str, n: usize, started: &Seen<u64>) -> WorkerBuilder {
    let s = started.clone();
    Worker::builder(conn.clone(), "g").consumer_name(name).max_in_flight(n).concurrency(n).on(
        "orders",
        move |o: Order, _ctx: Context| {
            let s = s.clone();
            async move {
                s.push(o.n);
                std::future::pending::<()>().await;
                Ok::<_, HandlerError>(())
            }
        },
    )
}

#[tokio::test]
async fn entries_of_a_crashed_consumer_are_reclaimed_and_none_is_lost() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_default())
        .with_test_writer()
        .try_init();
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    admin.create_group("orders", "g", Position::Beginning).await.unwrap();
    let producer = Producer::new(conn.clone());
    let n = 300u64;
    for i in 0..n {
        producer.publish("orders", &Order { n: i, key: String::new() }).await.unwrap();
    }
    // The first consumer takes a batch and hangs in its handlers, then "crashes".
    let started = Seen::new();
    let doomed =
        hanging_worker(&conn, "doomed", 50, &started).claim_idle(Duration::from_millis(500)).build().unwrap().start();
    started.wait_for(50, "the doomed consumer holds a batch").await;
    drop(doomed); // crash: nothing acked, nothing cleaned up
    assert_eq!(admin.pending_count("orders", "g").await.unwrap(), 50);

    let handled = Seen::new();
    let h = handled.clone();
    let rescuer = Worker::builder(conn.clone(), "g")
        .consumer_name("rescuer")
        .claim_idle(Duration::from_millis(500))
        .on("orders", move |o: Order, ctx: Context| {
            let h = h.clone();
            async move {
                h.push((o.n, ctx.attempt()));
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start();
    wait_until(PATIENCE, "every message handled", || {
        let distinct: HashSet<u64> = handled.get().iter().map(|h| h.0).collect();
        async move { distinct.len() == n as usize }
    })
    .await;
    let got = handled.get();
    let reclaimed: Vec<&(u64, u64)> = got.iter().filter(|h| h.1 > 1).collect();
    assert_eq!(reclaimed.len(), 50, "the crashed consumer's entries came back as second deliveries: {reclaimed:?}");
    let doomed_set: HashSet<u64> = started.get().into_iter().collect();
    assert!(reclaimed.iter().all(|h| doomed_set.contains(&h.0)));
    wait_until(PATIENCE, "all acked", || async { admin.pending_count("orders", "g").await.unwrap() == 0 }).await;
    assert_eq!(rescuer.stats().reclaimed, 50);
    rescuer.shutdown().await;
}

#[tokio::test]
async fn a_worker_whose_read_holds_every_slot_still_reclaims() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    admin.create_group("orders", "g", Position::Beginning).await.unwrap();
    let producer = Producer::new(conn.clone());
    for i in 0..8 {
        producer.publish("orders", &Order { n: i, key: String::new() }).await.unwrap();
    }
    // Another consumer took everything and died without acknowledging anything.
    let key = format!("{}:{{orders}}", redis.namespace());
    redis.cli(&["XREADGROUP", "GROUP", "g", "gone", "COUNT", "100", "STREAMS", &key, ">"]);
    assert_eq!(admin.pending_count("orders", "g").await.unwrap(), 8);
    // Fewer in-flight slots than a read asks for: the live worker's blocked read holds all of
    // them while nothing new arrives, and its sweep must still get to the dead one's entries.
    let handled = Seen::new();
    let live = Worker::builder(conn.clone(), "g")
        .consumer_name("live")
        .max_in_flight(4)
        .claim_idle(Duration::from_millis(300))
        .on("orders", record(&handled))
        .build()
        .unwrap()
        .start();
    handled.wait_for(8, "the dead consumer's entries handled").await;
    wait_until(PATIENCE, "all acked", || async { admin.pending_count("orders", "g").await.unwrap() == 0 }).await;
    let mut got = handled.get();
    got.sort_unstable();
    assert_eq!(got, (0..8).collect::<Vec<u64>>());
    live.shutdown().await;
}

#[tokio::test]
async fn restarted_consumer_recovers_its_own_pending_entries_first() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    for i in 0..10u64 {
        producer.publish("orders", &Order { n: i, key: String::new() }).await.unwrap();
    }
    let started = Seen::new();
    let first = hanging_worker(&conn, "stable-name", 3, &started).build().unwrap().start();
    started.wait_for(3, "three held").await;
    drop(first);

    let handled = Seen::new();
    let h = handled.clone();
    // Long claim_idle: only recovery of its own PEL can bring the three back this quickly.
    let second = Worker::builder(conn.clone(), "g")
        .consumer_name("stable-name")
        .concurrency(1)
        .claim_idle(Duration::from_secs(600))
        .on("orders", move |o: Order, ctx: Context| {
            let h = h.clone();
            async move {
                h.push((o.n, ctx.attempt()));
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start();
    handled.wait_for(10, "all ten").await;
    let got = handled.get();
    assert_eq!(got[..3], [(0, 2), (1, 2), (2, 2)], "own pending entries first, as second deliveries");
    assert_eq!(got[3..].iter().map(|h| h.0).collect::<Vec<_>>(), (3..10).collect::<Vec<_>>());
    second.shutdown().await;
}

/// A worker `name` of group `g` on `orders` (`claim_idle` 1 s) that records what it handles; a
/// message for which `slow(n)` holds takes 3 s (simulated work of several `claim_idle` periods:
/// the lease, renewed every 333 ms, keeps it with this consumer, with room for a renewal late
/// by most of a second on a loaded machine).
fn recording_worker(
    conn: &Connection,
    name: &'static str,
    handled: &Seen<(u64, String)>,
    slow: fn(u64) -> bool,
) -> WorkerHandle {
    let h = handled.clone();
    Worker::builder(conn.clone(), "g")
        .consumer_name(name)
        .claim_idle(Duration::from_secs(1))
        .on("orders", move |o: Order, ctx: Context| {
            let h = h.clone();
            async move {
                h.push((o.n, ctx.consumer().to_owned()));
                if slow(o.n) {
                    tokio::time::sleep(Duration::from_secs(3)).await; // simulated work
                }
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start()
}

#[tokio::test]
async fn a_live_slow_handler_keeps_its_entry() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    Producer::new(conn.clone()).publish("orders", &Order { n: 1, key: String::new() }).await.unwrap();
    let handled = Seen::new();
    let workers: Vec<WorkerHandle> =
        ["w1", "w2"].into_iter().map(|name| recording_worker(&conn, name, &handled, |_| true)).collect();
    handled.wait_for(1, "handled").await;
    let admin = Admin::new(conn.clone());
    wait_until(PATIENCE, "acked", || async { admin.pending_count("orders", "g").await.unwrap() == 0 }).await;
    assert_eq!(handled.len(), 1, "not taken over while its handler was alive: {:?}", handled.get());
    for w in workers {
        w.shutdown().await;
    }
}

/// Lease renewals run only while a topic holds entries (`upkeep.rs`): they stop at a renewal
/// that finds nothing held, and must start again with the next entry.
#[tokio::test]
async fn a_slow_handler_after_an_idle_spell_keeps_its_entry() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let handled = Seen::new();
    let worker = |name| recording_worker(&conn, name, &handled, |n| n == 2);
    let first = worker("w1");
    let admin = Admin::new(conn.clone());
    producer.publish("orders", &Order { n: 1, key: String::new() }).await.unwrap();
    handled.wait_for(1, "the first message handled").await;
    wait_until(PATIENCE, "acked", || async { admin.pending_count("orders", "g").await.unwrap() == 0 }).await;
    // An idle spell of a few lease intervals (333 ms): a renewal finds nothing held, and
    // renewals stop. (Nothing to await: nothing outside the worker shows it.)
    tokio::time::sleep(Duration::from_millis(1200)).await;
    producer.publish("orders", &Order { n: 2, key: String::new() }).await.unwrap();
    handled.wait_for(2, "the second message started").await;
    // A live peer that sweeps: it takes over whatever stays idle for claim_idle.
    let peer = worker("w2");
    wait_until(PATIENCE, "acked", || async { admin.pending_count("orders", "g").await.unwrap() == 0 }).await;
    let expected = vec![(1, "w1".to_owned()), (2, "w1".to_owned())];
    assert_eq!(handled.get(), expected, "the slow one was not taken over while its handler was alive");
    first.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test]
async fn idle_consumers_holding_nothing_are_removed_and_holders_kept() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    admin.create_group("orders", "g", Position::Beginning).await.unwrap();
    Producer::new(conn.clone()).publish("orders", &Order { n: 1, key: String::new() }).await.unwrap();
    let key = format!("{}:{{orders}}", redis.namespace());
    // "holder" read the entry and never acked it; "ghost" never read anything.
    redis.cli(&["XREADGROUP", "GROUP", "g", "holder", "COUNT", "1", "STREAMS", &key, ">"]);
    redis.cli(&["XGROUP", "CREATECONSUMER", &key, "g", "ghost"]);
    wait_until(PATIENCE, "both idle longer than the limit", || async {
        let consumers = admin.consumers("orders", "g").await.unwrap();
        consumers.len() == 2 && consumers.iter().all(|c| c.idle_ms >= 250)
    })
    .await;
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("live")
        .claim_idle(Duration::from_secs(600))
        .claim_interval(Duration::from_millis(50))
        .consumer_idle_timeout(Some(Duration::from_millis(200)))
        .on("orders", |_o: Order, _ctx: Context| async move { Ok::<_, HandlerError>(()) })
        .build()
        .unwrap()
        .start();
    wait_until(PATIENCE, "the ghost is removed", || async {
        let names: Vec<String> = admin.consumers("orders", "g").await.unwrap().into_iter().map(|c| c.name).collect();
        !names.contains(&"ghost".to_owned())
    })
    .await;
    let consumers = admin.consumers("orders", "g").await.unwrap();
    let holder = consumers.iter().find(|c| c.name == "holder").expect("a consumer with pending entries is kept");
    assert_eq!(holder.pending, 1);
    worker.shutdown().await;
}
