//! The wire format as documented in docs/wire-format.md: entries written by another client
//! (version 1 with `redis-cli XADD`, versions 2 and 3 with another MessagePack encoder, exactly
//! as the document describes) are handled by a Rust worker, and so is a stream where every
//! version is mixed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use tributary::prelude::*;
use tributary::wire;
use tributary_testkit::{wait_until, TestRedis};

#[derive(serde::Deserialize, Debug, PartialEq)]
struct Greeting {
    text: String,
    count: u32,
}

#[tokio::test]
async fn entry_written_by_redis_cli_per_the_document_is_handled() {
    let redis = TestRedis::start().await;
    let conn = Connection::options().namespace(redis.namespace()).connect(&redis.url()).await.unwrap();
    // docs/wire-format.md, "A minimal entry": stream key <namespace>:{<topic>}.
    let key = format!("{}:{{greetings}}", redis.namespace());
    let id = redis.cli(&[
        "XADD",
        &key,
        "*",
        "v",
        "1",
        "id",
        "01932c07-a5d8-7c3e-9d4f-0123456789ab",
        "type",
        "Greeting",
        "ct",
        "application/json",
        "ts",
        "1732540000000",
        "key",
        "user-7",
        "h:lang",
        "en",
        "p",
        r#"{"text":"hello","count":3}"#,
    ]);
    let (greeting, entry, message, key, lang, ts) = handle_one(&conn).await;
    assert_eq!(greeting, Greeting { text: "hello".into(), count: 3 });
    assert_eq!(entry, id.trim());
    assert_eq!(message, "01932c07-a5d8-7c3e-9d4f-0123456789ab");
    assert_eq!(key.as_deref(), Some("user-7"));
    assert_eq!(lang.as_deref(), Some("en"));
    assert_eq!(ts, std::time::UNIX_EPOCH + Duration::from_millis(1_732_540_000_000));
}

#[tokio::test]
async fn version_2_entry_packed_by_another_encoder_is_handled() {
    use fred::interfaces::StreamsInterface;
    let redis = TestRedis::start().await;
    let conn = Connection::options().namespace(redis.namespace()).connect(&redis.url()).await.unwrap();
    // docs/wire-format.md, "Version 2": what the Python example writes, packed here by
    // rmp-serde from a plain map (not by Tributary's encoder).
    let meta = serde_json::json!({
        "id": "01932c07-a5d8-7c3e-9d4f-0123456789ab",
        "type": "Greeting",
        "ct": "application/json",
        "ts": 1_732_540_000_000u64,
        "key": "user-7",
        "h": {"lang": "en"},
    });
    let fields = vec![
        ("v", Bytes::from_static(b"2")),
        ("m", Bytes::from(rmp_serde::to_vec(&meta).unwrap())),
        ("p", Bytes::from_static(br#"{"text":"hello","count":3}"#)),
    ];
    let key = format!("{}:{{greetings}}", redis.namespace());
    let id: String = conn.redis().xadd(key.as_str(), false, None, "*", fields).await.unwrap();
    let (greeting, entry, message, key, lang, ts) = handle_one(&conn).await;
    assert_eq!(greeting, Greeting { text: "hello".into(), count: 3 });
    assert_eq!(entry, id);
    assert_eq!(message, "01932c07-a5d8-7c3e-9d4f-0123456789ab");
    assert_eq!(key.as_deref(), Some("user-7"));
    assert_eq!(lang.as_deref(), Some("en"));
    assert_eq!(ts, std::time::UNIX_EPOCH + Duration::from_millis(1_732_540_000_000));
}

#[tokio::test]
async fn version_3_entries_written_as_the_document_says_are_handled() {
    use fred::interfaces::StreamsInterface;
    let redis = TestRedis::start().await;
    let conn = Connection::options().namespace(redis.namespace()).connect(&redis.url()).await.unwrap();
    let key = format!("{}:{{greetings}}", redis.namespace());
    // docs/wire-format.md, the Python example of version 3: `v` and `p` only, the payload
    // packed here by rmp-serde from a plain map (not by Tributary's encoder).
    let payload = Bytes::from(rmp_serde::to_vec_named(&serde_json::json!({"text": "hello", "count": 3})).unwrap());
    let fields = vec![("v", Bytes::from_static(b"3")), ("p", payload.clone())];
    let id: String = conn.redis().xadd(key.as_str(), false, None, "*", fields).await.unwrap();
    let (greeting, entry, message, key_seen, lang, ts) = handle_one(&conn).await;
    assert_eq!(greeting, Greeting { text: "hello".into(), count: 3 });
    assert_eq!(entry, id);
    let entry_id: EntryId = id.parse().unwrap();
    // The id the document's Python function derives, and the entry id's time.
    assert_eq!(message, MessageId::of_entry(&key, entry_id).to_string());
    assert_eq!(ts, std::time::UNIX_EPOCH + Duration::from_millis(entry_id.ms()));
    assert_eq!((key_seen, lang), (None, None));
    // With metadata, as the document's comment shows: `m` before `p`.
    let meta = serde_json::json!({"key": "user-7", "h": {"lang": "en"}});
    let fields =
        vec![("v", Bytes::from_static(b"3")), ("m", Bytes::from(rmp_serde::to_vec(&meta).unwrap())), ("p", payload)];
    let _: String = conn.redis().xadd(key.as_str(), false, None, "*", fields).await.unwrap();
    let (greeting, _, _, key_seen, lang, _) = handle_one(&conn).await;
    assert_eq!(greeting, Greeting { text: "hello".into(), count: 3 });
    assert_eq!((key_seen.as_deref(), lang.as_deref()), (Some("user-7"), Some("en")));
}

/// One stream holding entries of every version, from other clients and from producers set to
/// each version: one worker handles them all, in stream order, each with its own id.
#[tokio::test]
async fn a_stream_of_mixed_versions_is_handled_in_order() {
    let redis = TestRedis::start().await;
    let url = redis.url();
    let connect = |version| Connection::options().namespace(redis.namespace()).wire_version(version).connect(&url);
    let key = format!("{}:{{mixed}}", redis.namespace());
    let json = |n: u32| format!(r#"{{"text":"n","count":{n}}}"#);
    redis.cli(&[
        "XADD",
        &key,
        "*",
        "v",
        "1",
        "id",
        "01932c07-a5d8-7c3e-9d4f-000000000001",
        "type",
        "Greeting",
        "ct",
        "application/json",
        "ts",
        "1732540000000",
        "p",
        &json(0),
    ]);
    let mut counts = vec![0];
    for (n, version) in [(1, wire::Version::V1), (2, wire::Version::V2), (3, wire::Version::V3)] {
        let conn = connect(version).await.unwrap();
        Producer::new(conn).publish("mixed", &serde_json::json!({"text": "n", "count": n})).await.unwrap();
        counts.push(n);
    }
    let conn = connect(wire::Version::V3).await.unwrap();
    let handled = handle(&conn, "mixed", 4).await;
    let seen: Vec<(u32, MessageId)> = handled.iter().map(|h| (h.0.count, h.2.parse().unwrap())).collect();
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), counts, "in stream order");
    let versions: Vec<usize> = seen.iter().map(|s| s.1.as_uuid().get_version_num()).collect();
    assert_eq!(versions, [7, 7, 7, 8], "ids written (by redis-cli, by v1 and v2 producers), one derived (v3)");
    let ids: std::collections::HashSet<_> = seen.iter().map(|s| s.1).collect();
    assert_eq!(ids.len(), 4, "each its own id");
}

type Handled = (Greeting, String, String, Option<String>, Option<String>, std::time::SystemTime);

/// Runs a worker on topic `greetings` until it handled one message; what its handler saw.
async fn handle_one(conn: &Connection) -> Handled {
    handle(conn, "greetings", 1).await.remove(0)
}

/// Runs a worker (one handler at a time: stream order) on `topic` until it handled `n`
/// messages; what its handler saw, in order.
async fn handle(conn: &Connection, topic: &str, n: usize) -> Vec<Handled> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("c")
        .concurrency(1)
        .on(topic, move |g: Greeting, ctx: Context| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push((
                    g,
                    ctx.entry_id().to_string(),
                    ctx.message_id().to_string(),
                    ctx.key().map(str::to_owned),
                    ctx.headers().get("lang").map(str::to_owned),
                    ctx.published_at(),
                ));
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start();
    wait_until(Duration::from_secs(30), "the entries are handled", || {
        let done = seen.lock().unwrap().len() == n;
        async move { done }
    })
    .await;
    worker.shutdown().await;
    let handled = std::mem::take(&mut *seen.lock().unwrap());
    handled
}
