//! Faults against real processes: Redis killed and restarted (AOF, `appendfsync always`),
//! connections cut with `CLIENT KILL`, hostile entries. Nothing acknowledged as published is
//! lost; nothing stays stuck in a pending list; no worker dies.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fred::interfaces::{ClientLike, StreamsInterface, TransactionInterface};
use tributary_core::{wire, Codec, Connection, Envelope, Json};
use tributary_streams::{Admin, DeadLetters, Producer, Worker, WorkerHandle};
use tributary_testkit::ServerOptions;

/// Consumer `c` of group `g` on `orders`, recording each order's number; short blocking reads
/// so cut connections show quickly.
fn quick_worker(conn: &Connection, claim_idle: Duration) -> (WorkerHandle, Seen<u64>) {
    let seen: Seen<u64> = Seen::new();
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("c")
        .claim_idle(claim_idle)
        .block_for(Duration::from_millis(200))
        .on("orders", record(&seen))
        .build()
        .unwrap()
        .start();
    (worker, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_loses_no_acknowledged_publish_and_clients_reconnect() {
    let redis = TestRedis::start_with(ServerOptions::new().durable()).await;
    let conn = connect(&redis).await;
    let seen: Seen<u64> = Seen::new();
    let s = seen.clone();
    let worker =
        Worker::builder(conn.clone(), "g").consumer_name("c").on("orders", record(&s)).build().unwrap().start();

    // One producer publishes a numbered sequence throughout, recording what Redis confirmed.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (producer, stop) = (Producer::new(conn.clone()), stop.clone());
        tokio::spawn(async move {
            let (mut confirmed, mut failed) = (Vec::new(), 0u64);
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                match producer.publish("orders", &Order { n, key: String::new() }).await {
                    Ok(_) => confirmed.push(n),
                    Err(e) => {
                        assert!(e.kind().is_retryable(), "an outage is a retryable error: {e:?}");
                        failed += 1;
                    }
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await; // a steady trickle, not a flood
            }
            (confirmed, failed)
        })
    };
    seen.wait_for(50, "traffic before the crash").await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(700)).await; // the outage itself
    redis.restart().await;
    let before = seen.len();
    wait_until(PATIENCE, "traffic after the restart", || {
        let n = seen.len();
        async move { n > before + 50 }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let (confirmed, failed) = publisher.await.unwrap();
    let confirmed_set: HashSet<u64> = confirmed.iter().copied().collect();
    wait_until(PATIENCE, "every confirmed publish handled", || {
        let got: HashSet<u64> = seen.get().into_iter().collect();
        let all = confirmed_set.is_subset(&got);
        async move { all }
    })
    .await;
    eprintln!(
        "redis restart: {} publishes confirmed, {failed} failed during the outage, {} handled (duplicates: {})",
        confirmed.len(),
        seen.len(),
        seen.len() - seen.get().into_iter().collect::<HashSet<_>>().len()
    );
    let admin = Admin::new(conn.clone());
    wait_until(PATIENCE, "nothing left pending", || async { admin.pending_count("orders", "g").await.unwrap() == 0 })
        .await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_during_reads_and_acks_lose_nothing_and_leave_nothing_pending() {
    let redis = TestRedis::start_private().await;
    let conn = connect(&redis).await;
    let (worker, seen) = quick_worker(&conn, Duration::from_millis(500));
    let producer = Producer::new(conn.clone());
    let total = 2000u64;
    let mut published = 0;
    for round in 0..10 {
        let batch: Vec<Order> =
            (0..total / 10).map(|i| Order { n: round * (total / 10) + i, key: String::new() }).collect();
        // A publish cut off mid-flight may fail; retry it (duplicates are allowed, losses not).
        loop {
            match producer.publish_batch("orders", &batch).await {
                Ok(ids) => {
                    published += ids.len();
                    break;
                }
                Err(e) => assert!(e.kind().is_retryable(), "{e:?}"),
            }
        }
        // Cut every client connection: blocked reads, acks in flight, the command connection.
        redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    }
    assert!(published >= total as usize);
    wait_until(PATIENCE, "every message handled", || {
        let distinct = seen.get().into_iter().collect::<HashSet<_>>().len();
        async move { distinct == total as usize }
    })
    .await;
    let admin = Admin::new(conn.clone());
    wait_until(PATIENCE, "nothing stuck pending", || async { admin.pending_count("orders", "g").await.unwrap() == 0 })
        .await;
    eprintln!("client kill: {} deliveries for {total} messages", seen.len());
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_reply_lost_with_its_connection_is_recovered_without_waiting_for_claim_idle() {
    let redis = TestRedis::start_private().await;
    let conn = connect(&redis).await;
    // Ten minutes: only the recovery after the reconnection, not the sweep, can deliver it.
    let (worker, seen) = quick_worker(&conn, Duration::from_secs(600));
    Producer::new(conn.clone()).publish("orders", &Order { n: 1, key: String::new() }).await.unwrap();
    seen.wait_for(1, "the first message").await;
    let admin = Admin::new(conn.clone());
    let key = format!("{}:{{orders}}", redis.namespace());

    // Every connection drops (as when a read's reply was lost): the reader reconnects.
    deliver_unseen(&conn, &key, 2).await;
    assert_eq!(admin.pending_count("orders", "g").await.unwrap(), 1);
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    seen.wait_for(2, "the entry whose read reply was lost").await;

    // Only the command connection drops (as when a claim's reply was lost): it reconnects.
    deliver_unseen(&conn, &key, 3).await;
    // (fred's typed `CLIENT ID` needs its `i-client` feature, which nothing else uses.)
    let client_id = fred::types::CustomCommand::new_static("CLIENT", fred::types::ClusterHash::Random, false);
    let id: i64 = conn.redis().custom(client_id, vec!["ID"]).await.unwrap();
    redis.cli(&["CLIENT", "KILL", "ID", &id.to_string()]);
    seen.wait_for(3, "the entry whose claim reply was lost").await;

    assert_eq!(seen.get(), vec![1, 2, 3]);
    wait_until(PATIENCE, "nothing left pending", || async { admin.pending_count("orders", "g").await.unwrap() == 0 })
        .await;
    worker.shutdown().await;
}

/// Leaves what a reply lost on the wire leaves: order `n` recorded by Redis as delivered to
/// consumer `c` of group `g`, which the worker never received. `XADD` and `XREADGROUP` in one
/// transaction, so the worker's own blocked read cannot take it first.
async fn deliver_unseen(conn: &Connection, key: &str, n: u64) {
    let payload = Json.encode(&Order { n, key: String::new() }).unwrap();
    let fields = wire::encode(&Envelope::new("Order", Json::CONTENT_TYPE, payload), conn.limits()).unwrap();
    let trx = conn.redis().multi();
    let _: fred::types::Value = trx.xadd(key, false, None, "*", fields).await.unwrap();
    let _: fred::types::Value = trx.xreadgroup("g", "c", Some(10), None, false, key, ">").await.unwrap();
    let replies: Vec<fred::types::Value> = trx.exec(true).await.unwrap();
    assert!(!replies[1].is_null(), "the transaction's read took the entry: {replies:?}");
}

#[tokio::test]
async fn hostile_entries_are_dead_lettered_with_a_reason_and_the_group_keeps_moving() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let ns = redis.namespace();
    let key = format!("{ns}:{{orders}}");
    let id = "01932c07-a5d8-7c3e-9d4f-0123456789ab";
    let ok = ["v", "1", "id", id, "type", "Order", "ct", "application/json", "ts", "1700000000000"];
    let entry = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = vec!["XADD".into(), key.clone(), "*".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let with_ok = |extra: &[&str]| -> Vec<String> {
        let mut all: Vec<&str> = ok.to_vec();
        all.extend_from_slice(extra);
        entry(&all)
    };
    let huge = "x".repeat(5 * 1024 * 1024);
    let shapes: Vec<(Vec<String>, &str)> = vec![
        (entry(&["junk", "fields"]), "entry has no format version field"),
        (entry(&["v", "4", "p", "{}"]), "unsupported wire format version"),
        (entry(&["v", "2", "p", "{}"]), "required field `m` is missing"),
        (entry(&["v", "2", "m", "garbage", "p", "{}"]), "not a MessagePack map"),
        (entry(&["v", "one", "p", "{}"]), "unsupported wire format version"),
        (with_ok(&[]), "required field `p` is missing"),
        (entry(&["v", "1", "type", "Order", "ct", "application/json", "ts", "1", "p", "{}"]), "required field `id`"),
        (with_ok(&["ts", "2", "p", "{}"]), "occurs more than once"),
        (
            entry(&["v", "1", "id", "not-a-uuid", "type", "T", "ct", "application/json", "ts", "1", "p", "{}"]),
            "not a UUID",
        ),
        (
            entry(&["v", "1", "id", id, "type", "T", "ct", "application/json", "ts", "yesterday", "p", "{}"]),
            "milliseconds",
        ),
        (entry(&["v", "1", "id", id, "type", "", "ct", "application/json", "ts", "1", "p", "{}"]), "empty"),
        (with_ok(&["h:", "x", "p", "{}"]), "header name"),
        (with_ok(&["dl", "-5", "p", "{}"]), "milliseconds"),
        (with_ok(&["p", "\u{1}\u{2}garbage"]), "does not decode"),
        (with_ok(&["p", r#"{"n":"not a number","key":""}"#]), "does not decode"),
    ];
    for (args, _) in &shapes {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        redis.cli(&args);
    }
    // A payload over the 4 MiB limit (too long for a command line), through our client.
    let mut args: Vec<fred::types::Value> = vec![key.as_str().into(), "*".into()];
    args.extend(ok.iter().map(|s| fred::types::Value::from(*s)));
    args.push("p".into());
    args.push(huge.as_str().into());
    let _: fred::types::Value = conn
        .redis()
        .custom(fred::types::CustomCommand::new_static("XADD", fred::types::ClusterHash::FirstKey, false), args)
        .await
        .unwrap();
    // Binary garbage as a field name and value.
    let mut garbage = vec![0u8, 0xff, 0xfe, b'\n'];
    garbage.extend_from_slice(b"\r\n");
    let raw: fred::types::Value = conn
        .redis()
        .custom(
            fred::types::CustomCommand::new_static("XADD", fred::types::ClusterHash::FirstKey, false),
            vec![
                fred::types::Value::from(key.as_str()),
                "*".into(),
                fred::types::Value::Bytes(bytes::Bytes::from(garbage.clone())),
                fred::types::Value::Bytes(bytes::Bytes::from(garbage)),
            ],
        )
        .await
        .unwrap();
    assert!(!raw.is_null());
    Producer::new(conn.clone()).publish("orders", &Order { n: 42, key: String::new() }).await.unwrap();

    let good = Seen::new();
    let g = good.clone();
    let worker =
        Worker::builder(conn.clone(), "g").consumer_name("c").on("orders", record(&g)).build().unwrap().start();
    good.wait_for(1, "the good message after the garbage").await;
    let dlq = DeadLetters::new(conn.clone(), "orders").unwrap();
    let expected = shapes.len() + 2;
    wait_until(PATIENCE, "every hostile entry dead-lettered", || async {
        dlq.count().await.unwrap() == expected as u64
    })
    .await;
    let letters = dlq.list(100).await.unwrap();
    let reasons: Vec<&str> = shapes.iter().map(|s| s.1).chain(["payload is too large"]).collect();
    for (reason, letter) in reasons.iter().zip(&letters) {
        assert!(letter.error.contains(reason), "expected `{reason}` in `{}`", letter.error);
    }
    assert_eq!(letters.last().unwrap().reason, "malformed");
    assert_eq!(Admin::new(conn.clone()).pending_count("orders", "g").await.unwrap(), 0);
    assert_eq!(good.get(), vec![42]);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_topic_key_of_the_wrong_type_does_not_stop_the_worker() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    redis.cli(&["SET", &format!("{}:{{broken}}", redis.namespace()), "not a stream"]);
    let seen = Seen::new();
    let (s1, s2) = (seen.clone(), seen.clone());
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("c")
        .on("broken", record(&s1))
        .on("orders", record(&s2))
        .build()
        .unwrap()
        .start();
    Producer::new(conn).publish("orders", &Order { n: 1, key: String::new() }).await.unwrap();
    seen.wait_for(1, "the healthy topic keeps flowing").await;
    worker.shutdown().await;
}
