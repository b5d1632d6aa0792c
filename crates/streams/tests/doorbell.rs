//! Keyspace notifications as the shared reader's doorbell (`consumer/doorbell.rs`), when what
//! it relies on breaks: rings lost with the subscriber's connection, a subscription that cannot
//! be made again, replies lost on a broken connection while nothing rings, Redis restarted
//! without persistence; and start turns not held by topics that cannot start. Against real redis-server processes; each would wait
//! for the 30 s full read (or for ever) before its fix.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fred::interfaces::{ClientLike, StreamsInterface, TransactionInterface};
use tributary_core::{wire, Codec, Connection, Envelope, Json};
use tributary_streams::{Context, HandlerError, Producer, Worker, WorkerHandle};
use tributary_testkit::ServerOptions;

fn fields(conn: &Connection, n: u64) -> Vec<(bytes::Bytes, bytes::Bytes)> {
    let payload = Json.encode(&Order { n, key: String::new() }).unwrap();
    wire::encode(&Envelope::new("Order", Json::CONTENT_TYPE, payload), conn.limits()).unwrap()
}

/// How long a message may take where, before the fixes, it waited for the 30 s full read.
const PROMPTLY: Duration = Duration::from_secs(5);

/// A private server that sends keyspace notifications for stream commands, and a connection.
async fn server_with_notifications() -> (TestRedis, Connection) {
    let redis = TestRedis::start_private().await;
    redis.cli(&["CONFIG", "SET", "notify-keyspace-events", "Kt"]);
    let conn = connect(&redis).await;
    (redis, conn)
}

fn numpat(redis: &TestRedis) -> u64 {
    redis.cli(&["PUBSUB", "NUMPAT"]).trim().parse().unwrap()
}

/// A ring lost while the subscriber reconnects, for a topic that is busy (not waiting) when the
/// full read after it runs: the topic is read when it joins again. (Before: 28 s, at the next
/// full read.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_lost_for_a_busy_topic_is_read_when_it_joins_again() {
    let (redis, conn) = server_with_notifications().await;
    let producer = Producer::new(conn.clone());
    let seen: Seen<(String, u64)> = Seen::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Arc::new(AtomicBool::new(false));
    let h = {
        let (seen, gate, started) = (seen.clone(), gate.clone(), started.clone());
        move |o: Order, ctx: Context| {
            let (seen, gate, started) = (seen.clone(), gate.clone(), started.clone());
            async move {
                if ctx.topic() == "b" && o.n < 100 {
                    started.store(true, Ordering::SeqCst);
                    gate.acquire().await.unwrap().forget();
                }
                seen.push((ctx.topic().to_owned(), o.n));
                Ok::<(), HandlerError>(())
            }
        }
    };
    let worker = Worker::builder(conn.clone(), "g")
        .max_in_flight(64)
        .block_for(Duration::from_secs(1))
        .on("a", h.clone())
        .on("b", h)
        .build()
        .unwrap()
        .start();
    tokio::time::timeout(PATIENCE, worker.ready()).await.unwrap();
    producer.publish("a", &Order { n: 0, key: String::new() }).await.unwrap();
    seen.wait_for(1, "a#0").await;
    for n in 1..=33 {
        producer.publish("b", &Order { n, key: String::new() }).await.unwrap();
    }
    let admin = tributary_streams::Admin::new(conn.clone());
    // Held, with fewer free slots than half a batch: b does not join reads.
    wait_until(PATIENCE, "33 of b held", || {
        let admin = admin.clone();
        async move { admin.pending_count("b", "g").await.unwrap() == 33 }
    })
    .await;
    // The subscriber connection drops, and b gets an entry before it subscribes again.
    let key = format!("{}:{{b}}", redis.namespace());
    let trx = conn.redis().multi();
    let kill = fred::types::CustomCommand::new_static("CLIENT", fred::types::ClusterHash::Random, false);
    let _: fred::types::Value = trx.custom(kill, vec!["KILL", "TYPE", "pubsub"]).await.unwrap();
    let _: fred::types::Value = trx.xadd(&key, false, None, "*", fields(&conn, 100)).await.unwrap();
    let _: Vec<fred::types::Value> = trx.exec(true).await.unwrap();
    // It subscribes again (a full read of the waiting topics, which b is not among).
    wait_until(PATIENCE, "subscribed again", || async { numpat(&redis) == 1 }).await;
    gate.add_permits(1000);
    tokio::time::timeout(PROMPTLY, seen.wait_for(35, "b#100, whose ring was lost"))
        .await
        .expect("read when b joined again, not at the next full read");
    assert!(started.load(Ordering::SeqCst));
    worker.shutdown().await;
}

fn rec(
    seen: &Seen<(String, u64)>,
) -> impl Fn(Order, Context) -> std::future::Ready<Result<(), HandlerError>> + Clone + Send + Sync + 'static {
    let seen = seen.clone();
    move |o: Order, ctx: Context| {
        seen.push((ctx.topic().to_owned(), o.n));
        std::future::ready(Ok(()))
    }
}

/// 100 topics whose keys are not streams (more than the 64 start turns) do not keep a healthy
/// topic registered after them from starting: a turn is given back between attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_that_cannot_start_do_not_keep_a_healthy_one_from_starting() {
    let redis = TestRedis::start_private().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let ns = redis.namespace();
    let seen: Seen<(String, u64)> = Seen::new();
    let mut b = Worker::builder(conn.clone(), "g");
    for i in 0..100 {
        if i == 80 {
            b = b.on("zz", rec(&seen));
        }
        redis.cli(&["SET", &format!("{ns}:{{aa.{i}}}"), "x"]);
        b = b.on(format!("aa.{i}"), rec(&seen));
    }
    let worker = b.build().unwrap().start();
    producer.publish("zz", &Order { n: 1, key: String::new() }).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), seen.wait_for(1, "zz#1"))
        .await
        .expect("the healthy topic starts beside those that cannot");
    worker.shutdown().await;
}

/// The subscription cannot be made again after a reconnection (here: the user lost channel
/// permissions): the doorbell ends, and the reader blocks on every topic again. (Before: every
/// message waited for the 30 s full read.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doorbell_that_cannot_subscribe_again_gives_way_to_blocking_reads() {
    let (redis, conn) = server_with_notifications().await;
    let producer = Producer::new(conn.clone());
    let seen: Seen<(String, u64)> = Seen::new();
    let worker = Worker::builder(conn.clone(), "g")
        .block_for(Duration::from_secs(1))
        .on("a", rec(&seen))
        .build()
        .unwrap()
        .start();
    tokio::time::timeout(PATIENCE, worker.ready()).await.unwrap();
    producer.publish("a", &Order { n: 0, key: String::new() }).await.unwrap();
    seen.wait_for(1, "a#0").await;
    assert_eq!(blocked_clients(&redis), 0, "with the doorbell, no read blocks");
    redis.cli(&["ACL", "SETUSER", "default", "resetchannels"]);
    wait_until(PATIENCE, "the shared read blocks again", || async { blocked_clients(&redis) == 1 }).await;
    producer.publish("a", &Order { n: 1, key: String::new() }).await.unwrap();
    tokio::time::timeout(PROMPTLY, seen.wait_for(2, "a#1")).await.expect("delivered by the blocking read");
    worker.shutdown().await;
}

/// A worker (consumer `c`, notifications on) over topics `a` and `b` that handled one message
/// of each; then what a reply lost on the wire leaves: `a` #1 recorded by Redis as delivered to
/// `c`, which never got it (`XADD` and `XREADGROUP` in one transaction, so the worker's own
/// read cannot take it first).
async fn with_a_lost_reply() -> (TestRedis, Connection, WorkerHandle, Seen<(String, u64)>) {
    let (redis, conn) = server_with_notifications().await;
    let producer = Producer::new(conn.clone());
    let seen: Seen<(String, u64)> = Seen::new();
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("c")
        .block_for(Duration::from_secs(1))
        .on("a", rec(&seen))
        .on("b", rec(&seen))
        .build()
        .unwrap()
        .start();
    tokio::time::timeout(PATIENCE, worker.ready()).await.unwrap();
    producer.publish("a", &Order { n: 0, key: String::new() }).await.unwrap();
    producer.publish("b", &Order { n: 0, key: String::new() }).await.unwrap();
    seen.wait_for(2, "a#0 b#0").await;
    let admin = tributary_streams::Admin::new(conn.clone());
    wait_until(PATIENCE, "a#0 acknowledged", || async { admin.pending_count("a", "g").await.unwrap() == 0 }).await;
    let key = format!("{}:{{a}}", redis.namespace());
    let trx = conn.redis().multi();
    let _: fred::types::Value = trx.xadd(&key, false, None, "*", fields(&conn, 1)).await.unwrap();
    let _: fred::types::Value = trx.xreadgroup("g", "c", Some(10), None, false, &key, ">").await.unwrap();
    let _: Vec<fred::types::Value> = trx.exec(true).await.unwrap();
    (redis, conn, worker, seen)
}

/// After a reconnection, the full read that tells topics of a possibly lost reply fails on
/// another topic's broken key: the lost reply is still recovered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_is_recovered_when_the_read_after_the_reconnection_fails_on_another_key() {
    let (redis, _conn, worker, seen) = with_a_lost_reply().await;
    // b's key becomes something else (no stream event rings), and every connection drops.
    let b = format!("{}:{{b}}", redis.namespace());
    redis.cli(&["DEL", &b]);
    redis.cli(&["SET", &b, "x"]);
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    tokio::time::timeout(PROMPTLY, seen.wait_for(3, "a#1, whose reply was lost")).await.expect("recovered at once");
    worker.shutdown().await;
}

/// A reply lost on a broken connection while nothing rings (a doorbell reader waits for rings,
/// not on a read) is recovered at once. (Before: 29.7 s, at the next full read; 138 ms without
/// notifications.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_doorbell_a_reply_lost_on_a_broken_connection_is_recovered_at_once() {
    let (redis, _conn, worker, seen) = with_a_lost_reply().await;
    // Every connection drops; nothing rings.
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    tokio::time::timeout(PROMPTLY, seen.wait_for(3, "a#1, whose reply was lost")).await.expect("recovered at once");
    worker.shutdown().await;
}

/// Redis restarted without persistence under a worker of 20 topics that uses the doorbell:
/// streams, groups and the subscription are gone. Every message confirmed after the restart is
/// handled, on every topic, and promptly (not at the 30 s full read): the doorbell subscribes
/// again and reads every topic, and each topic's group is created again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_doorbell_every_topic_survives_a_restart_without_persistence() {
    // The setting is passed on the command line, so the restarted server sends notifications too.
    let redis = TestRedis::start_with(ServerOptions::new().arg("notify-keyspace-events", "Kt")).await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let seen: Seen<(String, u64)> = Seen::new();
    let names: Vec<String> = (0..20).map(|i| format!("r.{i}")).collect();
    let mut b = Worker::builder(conn.clone(), "g").block_for(Duration::from_millis(500));
    for t in &names {
        b = b.on(t.as_str(), rec(&seen));
    }
    let worker = b.build().unwrap().start();
    tokio::time::timeout(PATIENCE, worker.ready()).await.unwrap();
    for t in &names {
        producer.publish(t, &Order { n: 0, key: String::new() }).await.unwrap();
    }
    seen.wait_for(20, "one message per topic before the restart").await;
    assert_eq!(numpat(&redis), 1, "the doorbell is subscribed");

    redis.kill();
    redis.restart().await; // empty: streams, groups and subscriptions are gone
    wait_until(PATIENCE, "the doorbell subscribed again", || async { numpat(&redis) == 1 }).await;
    let mut confirmed = Vec::new();
    let mut n = 1;
    while confirmed.len() < 60 {
        let topic = &names[n as usize % names.len()];
        if producer.publish(topic, &Order { n, key: String::new() }).await.is_ok() {
            confirmed.push((topic.clone(), n));
        }
        n += 1;
    }
    let handled = wait_until(PATIENCE, "every confirmed publish handled", || {
        let got = seen.get();
        let all = confirmed.iter().all(|c| got.contains(c));
        async move { all }
    });
    tokio::time::timeout(PROMPTLY * 2, handled).await.expect("handled promptly, not at the 30 s full read");
    assert!(worker.stats().groups_recreated >= 1, "lost groups are counted: {:?}", worker.stats());
    worker.shutdown().await;
}
