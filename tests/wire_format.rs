//! The wire format as documented in docs/wire-format.md: entries written by another client
//! (version 1 with `redis-cli XADD`, version 2 with another MessagePack encoder, exactly as
//! the document describes) are handled by a Rust worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use tributary::prelude::*;
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

type Handled = (Greeting, String, String, Option<String>, Option<String>, std::time::SystemTime);

/// Runs a worker on topic `greetings` until it handled one message; what its handler saw.
async fn handle_one(conn: &Connection) -> Handled {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("c")
        .on("greetings", move |g: Greeting, ctx: Context| {
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
    wait_until(Duration::from_secs(30), "the entry is handled", || {
        let n = seen.lock().unwrap().len();
        async move { n == 1 }
    })
    .await;
    let handled = seen.lock().unwrap().remove(0);
    worker.shutdown().await;
    handled
}
