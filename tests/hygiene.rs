//! Key hygiene: after a churn of workers, RPC clients and servers starting and dying, every key
//! Tributary created in the namespace is a topic or dead-letter stream, a bounded schedule, or
//! carries a TTL; and consumer lists do not keep the dead.

use std::time::Duration;

use fred::interfaces::ClientLike;
use fred::types::{ClusterHash, CustomCommand, Value};
use tributary::prelude::*;
use tributary::{RpcServerHandle, WorkerBuilder};
use tributary_testkit::{eventually, wait_until, TestRedis};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Ping {
    n: u64,
}

fn worker(conn: &Connection, name: &str) -> WorkerBuilder {
    Worker::builder(conn.clone(), "g")
        .consumer_name(name)
        .claim_idle(Duration::from_millis(300))
        .claim_interval(Duration::from_millis(50))
        .consumer_idle_timeout(Some(Duration::from_millis(300)))
        .on("events", |_p: Ping, _ctx: Context| async move { Ok::<_, HandlerError>(()) })
}

/// An RPC server with the same quick clean-up settings as the workers.
fn echo_server(conn: &Connection, name: String) -> RpcServerHandle {
    RpcServer::builder(conn.clone(), "echo")
        .configure_worker(move |w| {
            w.consumer_name(name)
                .claim_idle(Duration::from_millis(300))
                .claim_interval(Duration::from_millis(50))
                .consumer_idle_timeout(Some(Duration::from_millis(300)))
        })
        .trim_interval(Duration::from_millis(100))
        .method("echo", |p: Ping, _ctx| async move { Ok::<_, RpcHandlerError>(p.n) })
        .build()
        .unwrap()
        .start()
}

async fn raw(conn: &Connection, cmd: &'static str, args: Vec<Value>) -> Value {
    conn.redis().custom(CustomCommand::new_static(cmd, ClusterHash::FirstKey, false), args).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_churn_every_key_is_bounded_and_dead_consumers_are_gone() {
    let redis = TestRedis::start().await;
    let conn = Connection::options().namespace(redis.namespace()).connect(&redis.url()).await.unwrap();
    let producer = Producer::new(conn.clone());

    for round in 0..6u64 {
        for n in 0..50 {
            producer.publish("events", &Ping { n }).await.unwrap();
        }
        producer.message("events", &Ping { n: 0 }).idempotency_key(format!("k{round}")).send().await.unwrap();
        let scheduled = producer.publish_in("events", &Ping { n: 1 }, Duration::from_millis(100)).await.unwrap();
        if round % 2 == 0 {
            Scheduler::new(conn.clone()).cancel("events", &scheduled).await.unwrap();
        }
        // A worker with a fresh name each round: half stop cleanly, half crash.
        let w = worker(&conn, &format!("w{round}")).build().unwrap().start();
        wait_until(Duration::from_secs(30), "the worker handles something", || {
            let delivered = w.stats().delivered;
            async move { delivered > 0 }
        })
        .await;
        if round % 2 == 0 {
            w.shutdown().await;
        } else {
            drop(w);
        }
        // RPC: a server that crashes, clients that close and clients that just disappear.
        let server = echo_server(&conn, format!("s{round}"));
        let client = RpcClient::builder(conn.clone()).reply_ttl(Duration::from_secs(2)).build().unwrap();
        let _: u64 = client.call("echo", "echo", &Ping { n: round }).await.unwrap();
        if round % 2 == 0 {
            client.close().await.unwrap();
        }
        drop(client);
        drop(server);
    }

    // One live worker and one live server settle what the dead left behind.
    let live = worker(&conn, "live").build().unwrap().start();
    let server = echo_server(&conn, "live-server".to_owned());
    let admin = Admin::new(conn.clone());
    eventually(Duration::from_secs(60), || async {
        let workers = admin.consumers("events", "g").await.unwrap();
        let servers = admin.consumers("rpc.echo", "rpc-server").await.unwrap();
        let pending = admin.pending_count("events", "g").await.unwrap();
        let scheduled = Scheduler::new(conn.clone()).count("events").await.unwrap();
        let only_live = workers.iter().chain(&servers).all(|c| c.name == "live" || c.name == "live-server");
        if only_live && pending == 0 && scheduled == 0 {
            Ok(())
        } else {
            Err(format!("workers {workers:?}, servers {servers:?}, pending {pending}, scheduled {scheduled}"))
        }
    })
    .await;
    wait_until(Duration::from_secs(30), "answered requests trimmed", || async {
        admin.len("rpc.echo").await.unwrap() <= 1
    })
    .await;

    // The audit: every key in the namespace.
    let ns = redis.namespace();
    let mut cursor = "0".to_owned();
    let mut keys = Vec::new();
    loop {
        let reply = raw(
            &conn,
            "SCAN",
            vec![cursor.as_str().into(), "MATCH".into(), format!("{ns}:*").into(), "COUNT".into(), 1000.into()],
        )
        .await;
        let mut it = reply.into_array().into_iter();
        cursor = it.next().and_then(|v| v.into_string()).unwrap();
        keys.extend(it.next().unwrap().into_array().into_iter().filter_map(|k| k.into_string()));
        if cursor == "0" {
            break;
        }
    }
    keys.sort();
    let mut report = Vec::new();
    for key in &keys {
        let ttl = raw(&conn, "PTTL", vec![key.as_str().into()]).await.as_i64().unwrap();
        let kind = raw(&conn, "TYPE", vec![key.as_str().into()]).await.into_string().unwrap();
        // Topic streams: retention is the owner's choice (rpc.echo's answered requests are
        // trimmed, checked above). Dead-letter streams are capped with MAXLEN ~ on every move.
        let stream =
            key == &format!("{ns}:{{events}}") || key == &format!("{ns}:{{rpc.echo}}") || key.ends_with("}:dlq");
        let expiring = key.contains("}:dedup:") || key.starts_with(&format!("{ns}:reply:"));
        // The namespace's registry of topics and due index: one member per topic (checked).
        let per_topic = [format!("{ns}:topics:{{all}}"), format!("{ns}:scheduled:{{due}}")];
        let counters = [format!("{ns}:topics:{{all}}:seq"), format!("{ns}:topics:{{all}}:epoch")];
        let bounded = if per_topic.contains(key) {
            let members = raw(&conn, "ZRANGE", vec![key.as_str().into(), 0.into(), (-1).into()]).await;
            let members: Vec<String> = members.into_array().into_iter().filter_map(|m| m.into_string()).collect();
            // The churn's two topics, nothing else (no reply stream, no topic per round).
            kind == "zset" && members.iter().all(|m| m == "events" || m == "rpc.echo")
        } else {
            counters.contains(key) && kind == "string"
        };
        let ok = (stream && kind == "stream") || (expiring && ttl > 0) || bounded;
        report.push(format!("{key} {kind} ttl={ttl}"));
        assert!(ok, "unbounded or unknown key `{key}` ({kind}, ttl {ttl}); all keys:\n{}", report.join("\n"));
    }
    eprintln!("keys after churn:\n{}", report.join("\n"));
    live.shutdown().await;
    server.shutdown().await;
}

/// Client connections the server has open, not counting the `redis-cli` that asks.
fn connections(redis: &TestRedis) -> usize {
    redis.cli(&["CLIENT", "LIST", "TYPE", "normal"]).lines().count().saturating_sub(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_that_opens_a_connection_closes_it_on_close_and_on_drop() {
    let redis = TestRedis::start_private().await; // nobody else's connections
    let conn = Connection::options().namespace(redis.namespace()).connect(&redis.url()).await.unwrap();
    let producer = Producer::new(conn.clone());
    producer.publish("events", &Ping { n: 0 }).await.unwrap();
    let server = echo_server(&conn, "server".to_owned());
    server.ready().await;
    let baseline = connections(&redis);
    // Each cycle opens one thing, waits until its connection shows, then closes or drops it.
    let opened = || {
        let redis = &redis;
        async move {
            wait_until(Duration::from_secs(30), "a connection opened", || async { connections(redis) > baseline }).await
        }
    };
    let back_to_baseline = |what: &'static str| {
        let redis = &redis;
        async move {
            eventually(Duration::from_secs(30), || async move {
                let now = connections(redis);
                if now <= baseline {
                    Ok(())
                } else {
                    Err(format!("{what}: {now} connections, {baseline} before:\n{}", redis.cli(&["CLIENT", "LIST"])))
                }
            })
            .await;
        }
    };
    for i in 0..100 {
        let client = RpcClient::new(conn.clone());
        let _: u64 = client.call("echo", "echo", &Ping { n: i }).await.unwrap(); // its reader is up
        if i % 2 == 0 {
            client.close().await.unwrap();
        } else {
            drop(client);
        }
    }
    back_to_baseline("100 RPC clients closed or dropped").await;
    for i in 0..100 {
        let w = worker(&conn, &format!("w{i}")).build().unwrap().start();
        opened().await;
        if i % 2 == 0 {
            w.shutdown().await;
        } else {
            drop(w);
        }
    }
    back_to_baseline("100 workers stopped or dropped").await;
    for i in 0..100 {
        let mut tail = tributary::replay::Tail::topic(conn.clone(), "events", Position::Beginning).unwrap();
        assert!(!tail.next_batch().await.unwrap().is_empty());
        if i % 2 == 0 {
            tail.close().await;
        } else {
            drop(tail);
        }
    }
    back_to_baseline("100 tails closed or dropped").await;
    for i in 0..100 {
        let s = echo_server(&conn, format!("s{i}"));
        opened().await;
        if i % 2 == 0 {
            s.shutdown().await;
        } else {
            drop(s);
        }
    }
    back_to_baseline("100 RPC servers stopped or dropped").await;
    for i in 0..100 {
        let c = Connection::options().namespace(redis.namespace()).connect(&redis.url()).await.unwrap();
        Producer::new(c.clone()).publish("events", &Ping { n: i }).await.unwrap();
        if i % 2 == 0 {
            c.quit().await;
        }
        drop(c);
    }
    back_to_baseline("100 connections quit or dropped").await;
    server.shutdown().await;
}
