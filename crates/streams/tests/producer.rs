//! Publishing against a real redis-server: what lands in the stream (checked with
//! redis-cli), batches, idempotency keys, retention.

mod common;

use std::time::Duration;

use common::*;
use fred::interfaces::StreamsInterface;
use fred::types::Value;
use tributary_core::{wire, Connection, EntryId, Json};
use tributary_streams::{Admin, Context, HandlerError, HoldReason, Position, Producer, Replay, Retention, Worker};

#[tokio::test]
async fn published_entry_is_what_the_wire_format_says() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let id = publish_keyed_order(&conn).await;
    // Version 2 (the default): `v`, `m`, `p`, with `m` read here by another MessagePack decoder.
    let key = format!("{}:{{orders}}", redis.namespace());
    let reply: Value = conn.redis().xrange(key.as_str(), "-", "+", None).await.unwrap();
    let entry = reply.into_array().remove(0).into_array();
    assert_eq!(entry[0].as_string().unwrap(), id.to_string());
    let fields: Vec<Vec<u8>> =
        entry[1].clone().into_array().into_iter().map(|v| v.as_bytes().unwrap().to_vec()).collect();
    let names: Vec<&[u8]> = fields.iter().step_by(2).map(Vec::as_slice).collect();
    assert_eq!(names, [&b"v"[..], b"m", b"p"]);
    assert_eq!(fields[1], b"2");
    let meta: serde_json::Value = rmp_serde::from_slice(&fields[3]).unwrap();
    let mut keys: Vec<&str> = meta.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["ct", "h", "id", "key", "tp", "ts", "type"]);
    assert_eq!(meta["type"], "Order");
    assert_eq!(meta["ct"], "application/msgpack");
    assert_eq!(meta["key"], "customer-1");
    assert_eq!(meta["h"], serde_json::json!({"source": "web"}));
    assert!(meta["ts"].as_u64().unwrap() > 1_700_000_000_000);
    let order: Order = rmp_serde::from_slice(&fields[5]).unwrap();
    assert_eq!(order.n, 7);
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
    assert_eq!(fields, ["v", "id", "type", "ct", "ts", "key", "tp", "h:source", "p"]);
    assert_eq!(lines[2], "1");
    assert_eq!(lines[6], "Order");
    assert_eq!(lines[8], "application/msgpack");
    assert_eq!(lines[12], "customer-1");
    assert_eq!(lines[16], "web");
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
    let producer = Producer::builder(conn.clone()).dedup_ttl(Duration::from_millis(400)).build().unwrap();
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
    assert!(ttl > 0 && ttl <= 400, "ttl {ttl}");
    // After the TTL the key is forgotten: a new publish stores a new entry.
    wait_until(PATIENCE, "dedup key expired", || async { redis.cli(&["EXISTS", &dedup]).trim() == "0" }).await;
    let third = send(3).await.unwrap();
    assert!(third > first);
    assert_eq!(admin.len("payments").await.unwrap(), 2);
}

#[tokio::test]
async fn plain_retention_caps_the_stream() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::builder(conn.clone()).retention("metrics", Retention::max_len(100)).build().unwrap();
    let batch: Vec<Order> = (0..1000).map(|n| Order { n, key: String::new() }).collect();
    producer.publish_batch("metrics", &batch).await.unwrap();
    let len = Admin::new(conn).len("metrics").await.unwrap();
    // `~` trims whole nodes (100 entries by default), so a little more may remain.
    assert!((100..=200).contains(&len), "len {len}");
}

#[tokio::test]
async fn safe_retention_never_trims_what_a_group_has_not_acked() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    admin.create_group("audit", "slow", Position::Beginning).await.unwrap();
    let producer = Producer::builder(conn.clone())
        .retention("audit", Retention::max_len(10).safe())
        .safe_trim_every(10)
        .build()
        .unwrap();
    let ids: Vec<EntryId> = {
        let batch: Vec<Order> = (0..100).map(|n| Order { n, key: String::new() }).collect();
        producer.publish_batch("audit", &batch).await.unwrap()
    };
    // Nobody has read anything: nothing may go.
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
