//! Publishing against a real redis-server: what lands in the stream (checked with
//! redis-cli), batches, idempotency keys, the topic's stored retention.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fred::interfaces::StreamsInterface;
use fred::types::Value;
use tributary_core::{wire, Connection, EntryId, Json};
use tributary_streams::{
    Admin, Context, HandlerError, HoldReason, Position, Producer, Replay, Retention, StreamError, Worker,
};

#[tokio::test]
async fn published_entry_is_what_the_wire_format_says() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let id = publish_keyed_order(&conn).await;
    // Version 3 (the default): `v`, `m`, `p`, with `m` read here by another MessagePack decoder,
    // holding only what this message has: no id, time, type name or trace (none is active).
    let key = format!("{}:{{orders}}", redis.namespace());
    let reply: Value = conn.redis().xrange(key.as_str(), "-", "+", None).await.unwrap();
    let entry = reply.into_array().remove(0).into_array();
    assert_eq!(entry[0].as_string().unwrap(), id.to_string());
    let fields: Vec<Vec<u8>> =
        entry[1].clone().into_array().into_iter().map(|v| v.as_bytes().unwrap().to_vec()).collect();
    let names: Vec<&[u8]> = fields.iter().step_by(2).map(Vec::as_slice).collect();
    assert_eq!(names, [&b"v"[..], b"m", b"p"]);
    assert_eq!(fields[1], b"3");
    let meta: serde_json::Value = rmp_serde::from_slice(&fields[3]).unwrap();
    let mut keys: Vec<&str> = meta.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["h", "key"]);
    assert_eq!(meta["key"], "customer-1");
    assert_eq!(meta["h"], serde_json::json!({"source": "web"}));
    let order: Order = rmp_serde::from_slice(&fields[5]).unwrap();
    assert_eq!(order.n, 7);

    // Inside a trace, the message carries a child of it; outside, with `start_traces`, a new one.
    let root = tributary_core::TraceParent::new_root();
    let producer = Producer::new(conn.clone());
    let first = Order { n: 1, key: String::new() };
    let in_trace = tributary_streams::trace::in_trace(root, producer.publish("traced", &first));
    let started = Producer::builder(conn.clone()).start_traces(true).build().unwrap();
    let ids = [in_trace.await.unwrap(), started.publish("traced", &Order { n: 2, key: String::new() }).await.unwrap()];
    let lean = producer.publish("traced", &Order { n: 3, key: String::new() }).await.unwrap();
    let read = read_topic(&conn, "traced").await;
    let traces: Vec<_> = read.iter().map(|r| r.envelope.as_ref().unwrap().traceparent).collect();
    assert_eq!(read.iter().map(|r| r.entry_id).collect::<Vec<_>>(), [ids[0], ids[1], lean]);
    assert_eq!(traces[0].map(|t| t.trace_id_hex()), Some(root.trace_id_hex()), "a child of the active trace");
    assert!(traces[1].is_some_and(|t| t.trace_id_hex() != root.trace_id_hex()), "a trace of its own");
    assert_eq!(traces[2], None, "no trace, none started: {:?}", traces[2]);

    // Type names and message ids of their own, where a producer is set to write them.
    let full = Producer::builder(conn.clone()).type_names(true).message_ids(true).build().unwrap();
    let at = full.publish("full", &Order { n: 4, key: String::new() }).await.unwrap();
    let read = read_topic(&conn, "full").await;
    let env = read[0].envelope.as_ref().unwrap();
    assert_eq!((read[0].entry_id, env.type_name.as_str()), (at, "Order"));
    assert_eq!(env.id.as_uuid().get_version_num(), 7, "its own id, not one derived from the entry");
}

#[tokio::test]
async fn a_connection_set_to_version_1_writes_one_field_per_part() {
    let redis = TestRedis::start().await;
    let conn = Connection::options()
        .namespace(redis.namespace())
        .wire_version(wire::Version::V1)
        .connect(&redis.url())
        .await
        .unwrap();
    let id = publish_keyed_order(&conn).await;
    // An independent client reads the same entry.
    let key = format!("{}:{{orders}}", redis.namespace());
    let out = redis.cli(&["XRANGE", &key, "-", "+"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], id.to_string());
    let fields: Vec<&str> = lines[1..].iter().step_by(2).copied().collect();
    // No trace is active: none is written.
    assert_eq!(fields, ["v", "id", "type", "ct", "ts", "key", "h:source", "p"]);
    assert_eq!(lines[2], "1");
    assert_eq!(lines[6], "Order");
    assert_eq!(lines[8], "application/msgpack");
    assert_eq!(lines[12], "customer-1");
    assert_eq!(lines[14], "web");
}

/// Every entry of `topic`, decoded.
async fn read_topic(conn: &Connection, topic: &str) -> Vec<tributary_streams::Received> {
    let range = tributary_streams::Replay::new(conn.clone()).range(
        topic,
        tributary_streams::Position::Beginning,
        tributary_streams::Position::End,
    );
    range.unwrap().next_batch().await.unwrap().unwrap_or_default()
}

/// Publishes order 7 with key `customer-1` and header `source: web` to `orders`.
async fn publish_keyed_order(conn: &Connection) -> EntryId {
    Producer::new(conn.clone())
        .message("orders", &Order { n: 7, key: "k".into() })
        .key("customer-1")
        .header("source", "web")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn batch_publish_stores_all_in_order_in_one_round_trip() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let orders: Vec<Order> = (0..500).map(|n| Order { n, key: String::new() }).collect();
    let ids = Producer::new(conn.clone()).publish_batch("orders", &orders).await.unwrap();
    assert_eq!(ids.len(), 500);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let read =
        Replay::new(conn).range("orders", Position::Beginning, Position::End).unwrap().collect(1000).await.unwrap();
    let ns: Vec<u64> = read.iter().map(|r| r.envelope.as_ref().unwrap().decode::<Order>().unwrap().n).collect();
    assert_eq!(ns, (0..500).collect::<Vec<_>>());
    assert_eq!(read.iter().map(|r| r.entry_id).collect::<Vec<_>>(), ids);
}

#[tokio::test]
async fn idempotent_publish_returns_the_first_id_and_adds_nothing() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::builder(conn.clone()).dedup_ttl(Duration::from_secs(2)).build().unwrap();
    let send = |n| {
        let producer = producer.clone();
        async move { producer.message("payments", &Order { n, key: String::new() }).idempotency_key("pay-1").send().await }
    };
    let first = send(1).await.unwrap();
    let again = send(2).await.unwrap();
    assert_eq!(first, again);
    let admin = Admin::new(conn.clone());
    assert_eq!(admin.len("payments").await.unwrap(), 1);
    // The dedup key has a TTL and lives in the topic's slot.
    let dedup = format!("{}:{{payments}}:dedup:pay-1", redis.namespace());
    let ttl: i64 = redis.cli(&["PTTL", &dedup]).trim().parse().unwrap();
    assert!(ttl > 0 && ttl <= 2000, "ttl {ttl}");
    // After the TTL the key is forgotten: a new publish stores a new entry.
    wait_until(PATIENCE, "dedup key expired", || async { redis.cli(&["EXISTS", &dedup]).trim() == "0" }).await;
    let third = send(3).await.unwrap();
    assert!(third > first);
    assert_eq!(admin.len("payments").await.unwrap(), 2);
}

fn orders(count: u64) -> Vec<Order> {
    (0..count).map(|n| Order { n, key: String::new() }).collect()
}

#[tokio::test]
async fn plain_retention_caps_the_stream() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    admin.set_retention("metrics", Retention::max_len(100)).await.unwrap();
    let producer = Producer::new(conn.clone());
    producer.publish_batch("metrics", &orders(1000)).await.unwrap();
    let len = admin.len("metrics").await.unwrap();
    // `~` trims whole nodes (100 entries by default), so a little more may remain.
    assert!((100..=200).contains(&len), "len {len}");
    // Single and idempotent publishes trim too.
    for n in 0..150 {
        producer.publish("metrics", &Order { n, key: String::new() }).await.unwrap();
    }
    producer.message("metrics", &Order { n: 0, key: String::new() }).idempotency_key("once").send().await.unwrap();
    let len = admin.len("metrics").await.unwrap();
    assert!((100..=200).contains(&len), "len {len}");
}

/// Retention is the topic's: producers with settings of their own, on connections of their
/// own, apply the one stored with the topic, and none where the topic has none.
#[tokio::test]
async fn every_producer_applies_the_retention_stored_with_the_topic() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    admin.set_retention("metrics", Retention::max_len(100)).await.unwrap();
    let first = Producer::new(conn.clone());
    let second = Producer::builder(connect(&redis).await).codec(Json).safe_trim_every(7).build().unwrap();
    for producer_len in [
        {
            first.publish_batch("metrics", &orders(500)).await.unwrap();
            admin.len("metrics").await.unwrap()
        },
        {
            second.publish_batch("metrics", &orders(500)).await.unwrap();
            admin.len("metrics").await.unwrap()
        },
    ] {
        assert!((100..=200).contains(&producer_len), "len {producer_len}");
    }
    // Another topic, with no retention stored: not trimmed by either.
    first.publish_batch("raw", &orders(500)).await.unwrap();
    second.publish_batch("raw", &orders(500)).await.unwrap();
    assert_eq!(admin.len("raw").await.unwrap(), 1000);
    assert_eq!(admin.retention("raw").await.unwrap(), None);
}

/// A change of the stored retention reaches a producer that is already publishing within its
/// `retention_refresh`, and clearing it stops the trimming the same way.
#[tokio::test]
async fn a_retention_change_reaches_a_running_producer_within_its_refresh() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    let refresh = Duration::from_millis(200);
    let producer = Producer::builder(conn.clone()).retention_refresh(refresh).build().unwrap();
    producer.publish_batch("metrics", &orders(300)).await.unwrap();
    assert_eq!(admin.len("metrics").await.unwrap(), 300, "no retention stored yet");

    admin.set_retention("metrics", Retention::max_len(100)).await.unwrap();
    let changed = Instant::now();
    wait_until(PATIENCE, "the producer trims to the new retention", || async {
        producer.publish_batch("metrics", &orders(300)).await.unwrap();
        admin.len("metrics").await.unwrap() <= 200
    })
    .await;
    // The bound is the refresh; the margin is for a loaded test machine, still well under
    // the 5 s default a fixed setting would also explain.
    assert!(changed.elapsed() < refresh + Duration::from_secs(2), "took {:?}", changed.elapsed());

    assert!(admin.clear_retention("metrics").await.unwrap());
    assert!(!admin.clear_retention("metrics").await.unwrap(), "nothing left to clear");
    wait_until(PATIENCE, "the producer stops trimming", || async {
        let before = admin.len("metrics").await.unwrap();
        producer.publish_batch("metrics", &orders(300)).await.unwrap();
        admin.len("metrics").await.unwrap() == before + 300
    })
    .await;
    // And keeps not trimming.
    let before = admin.len("metrics").await.unwrap();
    producer.publish_batch("metrics", &orders(300)).await.unwrap();
    assert_eq!(admin.len("metrics").await.unwrap(), before + 300);
}

/// The hot path stays one round trip: a producer reads a topic's retention once per
/// `retention_refresh`, not per publish, whichever way it publishes.
#[tokio::test]
async fn publishes_read_the_stored_retention_once_per_refresh() {
    let redis = TestRedis::start_private().await; // counts this test's commands only
    let conn = connect(&redis).await;
    Admin::new(conn.clone()).set_retention("metrics", Retention::max_len(1000)).await.unwrap();
    let producer = Producer::builder(conn.clone()).retention_refresh(Duration::from_secs(3600)).build().unwrap();
    for n in 0..200 {
        producer.publish("metrics", &Order { n, key: String::new() }).await.unwrap();
    }
    producer.publish_batch("metrics", &orders(100)).await.unwrap();
    producer.message("metrics", &Order { n: 0, key: String::new() }).idempotency_key("k").send().await.unwrap();
    let stats = redis.cli(&["INFO", "commandstats"]);
    let calls = |command: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(calls("hmget"), 1, "{stats}");
    assert_eq!(calls("xadd"), 301, "{stats}"); // the idempotent publish's is in its script
}

/// The stored form is readable with redis-cli and versioned; a retention this version cannot
/// read is refused by `Admin::retention` and not applied by producers.
#[tokio::test]
async fn stored_retention_is_readable_and_what_cannot_be_read_is_not_applied() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    let week = Retention::max_age(Duration::from_secs(7 * 86_400)).safe();
    admin.set_retention("audit", week).await.unwrap();
    assert_eq!(admin.retention("audit").await.unwrap(), Some(week));
    let key = format!("{}:{{audit}}:retention", redis.namespace());
    let mut fields: Vec<String> =
        redis.cli(&["HGETALL", &key]).lines().collect::<Vec<_>>().chunks(2).map(|p| p.join("=")).collect();
    fields.sort();
    assert_eq!(fields, ["approximate=0", "max_age_ms=604800000", "safe=1", "v=1"]);
    // Replacing it leaves no field of the one before.
    admin.set_retention("audit", Retention::max_len(10)).await.unwrap();
    assert_eq!(redis.cli(&["HGET", &key, "max_age_ms"]).trim(), "");
    assert_eq!(admin.retention("audit").await.unwrap(), Some(Retention::max_len(10)));

    // Written by a later encoding: refused, and not applied.
    redis.cli(&["HSET", &key, "v", "2"]);
    let err = admin.retention("audit").await.unwrap_err();
    assert!(matches!(err, StreamError::InvalidRetention { .. }), "{err}");
    assert!(err.to_string().contains("version `2`"), "{err}");
    Producer::new(conn.clone()).publish_batch("audit", &orders(500)).await.unwrap();
    assert_eq!(admin.len("audit").await.unwrap(), 500, "not trimmed by what it cannot read");
    // Without its `safe` field (changed by hand): refused rather than read as "not safe".
    redis.cli(&["HSET", &key, "v", "1"]);
    redis.cli(&["HDEL", &key, "safe"]);
    let err = admin.retention("audit").await.unwrap_err();
    assert!(err.to_string().contains("`safe` is missing"), "{err}");
    // Another type at its key: refused too, and not applied by a producer.
    redis.cli(&["DEL", &key]);
    redis.cli(&["SET", &key, "max_len=1"]);
    let err = admin.retention("audit").await.unwrap_err();
    assert!(matches!(err, StreamError::InvalidRetention { .. }), "{err}");
    Producer::new(conn.clone()).publish_batch("audit", &orders(10)).await.unwrap();
    assert_eq!(admin.len("audit").await.unwrap(), 510, "not trimmed by what it cannot read");
    redis.cli(&["DEL", &key]);
    // What cannot be stored exactly is not stored.
    let err = admin.set_retention("audit", Retention::max_age(Duration::from_micros(1500))).await.unwrap_err();
    assert!(matches!(err, StreamError::InvalidRetention { .. }), "{err}");

    // Deleting the topic deletes its retention.
    admin.set_retention("audit", Retention::max_len(10)).await.unwrap();
    assert_eq!(admin.delete_topic("audit").await.unwrap(), 2);
    assert_eq!(admin.retention("audit").await.unwrap(), None);
}

#[tokio::test]
async fn safe_retention_trims_every_topic_a_producer_alternates_between() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    for topic in ["a", "b"] {
        admin.set_retention(topic, Retention::max_len(5).safe()).await.unwrap();
    }
    // Publishes alternate between the topics; a count shared by both would trim only one.
    let producer = Producer::builder(conn.clone()).safe_trim_every(10).build().unwrap();
    for n in 0..100 {
        let topic = if n % 2 == 0 { "a" } else { "b" };
        producer.publish(topic, &Order { n, key: String::new() }).await.unwrap();
    }
    // No group reads them: safe retention trims them like plain retention.
    for topic in ["a", "b"] {
        let len = admin.len(topic).await.unwrap();
        assert!(len <= 15, "`{topic}` has {len} entries: it was not trimmed");
    }
}

#[tokio::test]
async fn safe_retention_never_trims_what_a_group_has_not_acked() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    admin.create_group("audit", "slow", Position::Beginning).await.unwrap();
    admin.set_retention("audit", Retention::max_len(10).safe()).await.unwrap();
    let producer = Producer::builder(conn.clone()).safe_trim_every(10).build().unwrap();
    let mut ids: Vec<EntryId> = producer.publish_batch("audit", &orders(80)).await.unwrap();
    for n in 80..100 {
        ids.push(producer.publish("audit", &Order { n, key: String::new() }).await.unwrap());
    }
    // Nobody has read anything: nothing may go, though these publishes trimmed ten times.
    assert_eq!(admin.len("audit").await.unwrap(), 100);

    // A consumer reads 60 and acks only the first 50 (the handler holds the next 10).
    let handled = Seen::new();
    let h = handled.clone();
    let worker = Worker::builder(conn.clone(), "slow")
        .consumer_name("c")
        .concurrency(1)
        .max_in_flight(1)
        .on("audit", move |o: Order, _ctx: Context| {
            let h = h.clone();
            async move {
                if o.n >= 50 {
                    std::future::pending::<()>().await;
                }
                h.push(o.n);
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start();
    handled.wait_for(50, "fifty handled").await;
    wait_until(PATIENCE, "fifty acked", || async { admin.pending_count("audit", "slow").await.unwrap() == 1 }).await;
    let trimmed = admin.trim("audit", Retention::max_len(10).safe()).await.unwrap();
    assert_eq!(trimmed.removed, 50, "trimmed exactly the acknowledged entries");
    assert_eq!(trimmed.remaining, 50);
    let held = trimmed.held_by.expect("the group held entries back");
    assert_eq!((held.group.as_str(), held.reason, held.from), ("slow", HoldReason::Pending, ids[50]));
    let first =
        Replay::new(conn.clone()).range("audit", Position::Beginning, Position::End).unwrap().collect(1).await.unwrap();
    assert_eq!(first[0].entry_id, ids[50], "the oldest unacked entry survives");
    drop(worker);

    // Trimming without the safe mode would have cut into unread entries.
    let trimmed = admin.trim("audit", Retention::max_len(10)).await.unwrap();
    assert_eq!((trimmed.removed, trimmed.remaining, trimmed.held_by), (40, 10, None), "exact");
}

#[tokio::test]
async fn json_codec_and_custom_headers_round_trip_through_a_worker() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::builder(conn.clone()).codec(Json).build().unwrap();
    producer.message("events", &Order { n: 3, key: "x".into() }).header("tenant", "acme").send().await.unwrap();
    let seen = Seen::new();
    let s = seen.clone();
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("c")
        .on("events", move |o: Order, ctx: Context| {
            let s = s.clone();
            async move {
                s.push((o, ctx.headers().get("tenant").map(str::to_owned), ctx.envelope().content_type.clone()));
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start();
    seen.wait_for(1, "handled").await;
    let (order, tenant, ct) = seen.get().remove(0);
    assert_eq!(order, Order { n: 3, key: "x".into() });
    assert_eq!(tenant.as_deref(), Some("acme"));
    assert_eq!(ct, "application/json");
    worker.shutdown().await;
    // The raw entry is readable JSON for any client.
    let key = format!("{}:{{events}}", redis.namespace());
    assert!(redis.cli(&["XRANGE", &key, "-", "+"]).contains(r#"{"n":3,"key":"x"}"#));
    let _ = wire::WIRE_VERSION;
}

/// A TCP proxy to `upstream` that cuts the client's connection, once armed, at the first
/// command it sees containing `cut_at` (that command never reaches Redis). The client then
/// reconnects through the proxy.
async fn cutting_proxy(upstream: u16, cut_at: &'static [u8]) -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let armed = std::sync::Arc::new(AtomicBool::new(false));
    let arm = armed.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
            let (mut client_rd, mut client_wr) = client.into_split();
            let (mut server_rd, mut server_wr) = server.into_split();
            let armed = arm.clone();
            let mut upward = tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match client_rd.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if buf[..n].windows(cut_at.len()).any(|w| w == cut_at) && armed.swap(false, Ordering::SeqCst) {
                        return; // drops both halves of the upward path: the connection is cut
                    }
                    if server_wr.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    tokio::select! {
                        read = server_rd.read(&mut buf) => match read {
                            Ok(0) | Err(_) => return,
                            Ok(n) => if client_wr.write_all(&buf[..n]).await.is_err() { return },
                        },
                        // The upward path ended: close the client's side too.
                        _ = &mut upward => return,
                    }
                }
            });
        }
    });
    (port, armed)
}

/// `WAIT` counts the replicas that have what the *calling connection* wrote. On a connection
/// made after the write (a reconnection between `XADD` and `WAIT`) that is nothing, and every
/// connected replica would seem to have it, even replicas that acknowledge nothing. With two
/// replicas frozen, `replicated(2, ..)` must never report the write replicated.
///
/// Two things keep it so: the producer reports any reconnection between the two as "not
/// confirmed", and redis-server 7.0 itself sets a connection's offset at *every* command, so the
/// `WAIT` after fred's reconnection commands waits for the newest offset (it answered 0 here with
/// the producer's check removed; a fresh connection whose first command is `WAIT` gets 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_publish_never_confirms_writes_the_replicas_do_not_have() {
    let primary = TestRedis::start_private().await;
    let replica_of = format!("127.0.0.1 {}", primary.port());
    let replicas = [
        TestRedis::start_with(tributary_testkit::ServerOptions::new().arg("replicaof", &replica_of)).await,
        TestRedis::start_with(tributary_testkit::ServerOptions::new().arg("replicaof", &replica_of)).await,
    ];
    wait_until(PATIENCE, "both replicas in sync", || {
        let info = primary.cli(&["INFO", "replication"]);
        async move { info.contains("connected_slaves:2") && info.matches("state=online").count() == 2 }
    })
    .await;
    let (port, cut_next_wait) = cutting_proxy(primary.port(), b"WAIT").await;
    let conn = Connection::options()
        .namespace(primary.namespace())
        .connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap();
    let producer = Producer::new(conn.clone());
    let wait = Duration::from_millis(300);

    // Both replicas healthy: confirmed.
    producer.message("payments", &1u32).replicated(2, Duration::from_secs(5)).send().await.unwrap();

    // Both frozen: still connected to the primary, but acknowledging nothing.
    for r in &replicas {
        r.pause();
    }
    let err = producer.message("payments", &2u32).replicated(2, wait).send().await.unwrap_err();
    assert!(
        matches!(err, tributary_streams::StreamError::NotReplicated { acked: 0, wanted: 2, .. }),
        "frozen replicas: {err:?}"
    );

    // The connection is cut as WAIT is sent: the client reconnects and sends WAIT again, on a
    // connection that wrote nothing, where Redis answers 2 at once.
    cut_next_wait.store(true, std::sync::atomic::Ordering::SeqCst);
    let result = producer.message("payments", &3u32).replicated(2, wait).send().await;
    assert!(!cut_next_wait.load(std::sync::atomic::Ordering::SeqCst), "the proxy cut the connection");
    match result {
        Err(tributary_streams::StreamError::NotReplicated { acked, wanted: 2, .. }) => assert!(acked < 2),
        // Also honest: the WAIT failed with the connection.
        Err(tributary_streams::StreamError::Redis(_)) => {}
        other => panic!("a write the replicas do not have was reported as: {other:?}"),
    }
    // The entry is on the primary all the same (it is the replication that is not confirmed).
    assert_eq!(primary.cli(&["XLEN", &format!("{}:{{payments}}", primary.namespace())]).trim(), "3");

    for r in &replicas {
        r.resume();
    }
    producer.message("payments", &4u32).replicated(2, Duration::from_secs(5)).send().await.unwrap();
}

#[tokio::test]
async fn a_producer_idle_longer_than_its_refresh_applies_the_retention_stored_now() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    admin.set_retention("metrics", Retention::max_len(5)).await.unwrap();
    let refresh = Duration::from_millis(300);
    let producer = Producer::builder(conn.clone()).retention_refresh(refresh).build().unwrap();
    producer.publish("metrics", &Order { n: 0, key: String::new() }).await.unwrap();
    // The retention is cleared while the producer is quiet for longer than its refresh.
    admin.clear_retention("metrics").await.unwrap();
    tokio::time::sleep(refresh * 2).await; // the quiet spell itself, not a wait for a condition
                                           // Its next publish must not apply the old cap (`MAXLEN ~ 5` would remove whole nodes of
                                           // 100 entries from these): all of them stay.
    producer.publish_batch("metrics", &orders(300)).await.unwrap();
    assert_eq!(admin.len("metrics").await.unwrap(), 301);
}

/// Producers ring for a worker over many topics (`ring.rs`): with nobody listening on the
/// namespace's rings channel, a producer asks once a second at most, not with every publish;
/// once somebody listens, every publish (single, batch, idempotent) rings with its stream's key;
/// once nobody listens any more, it goes quiet again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_rings_only_while_somebody_listens() {
    use fred::interfaces::{EventInterface, PubsubInterface};
    let redis = TestRedis::start_private().await; // every PUBLISH of this server is ours
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let order = |n| Order { n, key: String::new() };
    let publishes = || command_calls(&redis, "publish");
    for n in 0..50 {
        producer.publish("t", &order(n)).await.unwrap();
    }
    producer.publish_batch("t", &[order(50), order(51)]).await.unwrap();
    assert!(publishes() <= 2, "nobody listens: {} rings for 51 publishes", publishes());

    let channel = conn.namespace().rings_channel();
    let listener = conn.dedicated_subscriber(1024).await.unwrap();
    let mut rings = listener.message_rx();
    listener.subscribe(channel.clone()).await.unwrap();
    // The producer learns of the listener at its next ask (within a second of the last).
    let key = conn.namespace().topic_stream(&tributary_core::Topic::new("t").unwrap());
    let mut n = 100;
    tokio::time::timeout(PATIENCE, async {
        loop {
            producer.publish("t", &order(n)).await.unwrap();
            n += 1;
            if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(50), rings.recv()).await {
                assert_eq!(m.value.as_str().as_deref(), Some(key.as_str()), "a ring names the stream");
                return;
            }
        }
    })
    .await
    .expect("a listener is rung within PATIENCE");
    while rings.try_recv().is_ok() {}
    let before = publishes();
    for n in 1000..1020 {
        producer.publish("t", &order(n)).await.unwrap();
    }
    producer.publish_batch("t", &[order(1020), order(1021)]).await.unwrap();
    producer.message("t", &order(1022)).idempotency_key("once").send().await.unwrap();
    assert_eq!(publishes() - before, 22, "somebody listens: 20 publishes, one batch and an idempotent one ring");
    for _ in 0..22 {
        let m = tokio::time::timeout(PATIENCE, rings.recv()).await.unwrap().unwrap();
        assert_eq!(m.value.as_str().as_deref(), Some(key.as_str()));
    }

    listener.unsubscribe(channel).await.unwrap();
    let before = publishes();
    for n in 2000..2050 {
        producer.publish("t", &order(n)).await.unwrap();
    }
    assert!(publishes() - before <= 2, "nobody listens any more: {} rings for 50 publishes", publishes() - before);
}

/// A batch whose pipeline fails as a whole (Redis is gone) while it carries a ring is an error,
/// not an empty success: the ring's reply is not taken for the entries'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_rings_and_fails_whole_is_an_error() {
    let redis = TestRedis::start_private().await;
    let conn = Connection::options().command_timeout(Duration::from_secs(1)).connect(&redis.url()).await.unwrap();
    // A new producer rings with its first write (it asks whether somebody listens).
    let producer = Producer::new(conn.clone());
    redis.kill();
    let order = |n| Order { n, key: String::new() };
    match producer.publish_batch("t", &[order(1), order(2), order(3)]).await {
        Err(tributary_streams::StreamError::PartialBatch { failed, total, stored, .. }) => {
            assert_eq!((failed, total, stored.len()), (3, 3, 3), "every entry failed");
        }
        Err(_) => {}
        Ok(ids) => panic!("a batch against a stopped Redis succeeded: {ids:?}"),
    }
}
