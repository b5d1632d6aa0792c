//! The wire format as documented in docs/wire-format.md: an entry written by another client
//! (here `redis-cli XADD`, exactly as the document describes) is handled by a Rust worker,
//! and an entry written by Tributary reads back field by field.

use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    let (greeting, entry, message, key, lang, ts) = seen.lock().unwrap().remove(0);
    assert_eq!(greeting, Greeting { text: "hello".into(), count: 3 });
    assert_eq!(entry, id.trim());
    assert_eq!(message, "01932c07-a5d8-7c3e-9d4f-0123456789ab");
    assert_eq!(key.as_deref(), Some("user-7"));
    assert_eq!(lang.as_deref(), Some("en"));
    assert_eq!(ts, std::time::UNIX_EPOCH + Duration::from_millis(1_732_540_000_000));
    worker.shutdown().await;
}
