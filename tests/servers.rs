//! Which server a connection talks to, read at connect (`HELLO`), and the refusal of a server
//! older than Tributary supports. Runs on Redis, on Valkey (the Valkey leg of `cargo xtask
//! test`), and on a real Redis 6.2 (`cargo xtask test-old-redis`).

use tributary::prelude::*;
use tributary::{ConnectError, ErrorKind, ServerKind, ServerVersion};
use tributary_testkit::{ServerOptions, TestRedis};

/// A field of `INFO server`'s text.
fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).map(|v| v.trim().to_owned())
}

#[tokio::test]
async fn the_server_and_its_version_are_known_at_connect() {
    let redis = TestRedis::start_private().await;
    let conn = Connection::connect(&redis.url()).await.unwrap();
    let server = conn.server_info();
    // What the server says of itself in `INFO server`, which the connection did not read.
    let info = redis.cli(&["INFO", "server"]);
    let (kind, version) = match info_field(&info, "server_name").as_deref() {
        Some("valkey") => (ServerKind::Valkey, info_field(&info, "valkey_version")),
        _ => (ServerKind::Redis, info_field(&info, "redis_version")),
    };
    assert_eq!(server.kind(), kind, "{info}");
    assert_eq!(server.version(), version.as_deref().and_then(ServerVersion::parse), "{info}");
    assert_eq!(server.kind() == ServerKind::Valkey, tributary_testkit::test_server() == "valkey");
    // The commands it answers: Redis' own version, Redis 7.2 for every Valkey.
    let redis_version = info_field(&info, "redis_version").and_then(|v| ServerVersion::parse(&v));
    assert_eq!(server.redis_compatible(), redis_version);
    assert!(server.redis_compatible().unwrap() >= tributary::server::MINIMUM_REDIS);
    let named = server.to_string();
    assert!(named == format!("Redis {}", version.clone().unwrap()) || named == format!("Valkey {}", version.unwrap()));
}

#[tokio::test]
async fn a_user_without_info_permission_still_learns_the_server() {
    // `INFO` is not among the commands of the least-privilege user (docs/security.md); `HELLO`
    // is answered to every user.
    let redis = TestRedis::start_private().await;
    redis.cli(&["ACL", "SETUSER", "app", "on", ">app-secret", "resetkeys", "~tributary:*", "-@all", "+ping"]);
    let url = format!("redis://app:app-secret@127.0.0.1:{}", redis.port());
    let conn = Connection::connect(&url).await.unwrap();
    assert!(conn.server_info().version().is_some(), "{:?}", conn.server_info());
    assert_ne!(conn.server_info().kind(), ServerKind::Other);
}

/// Redis 6.2 lacks what Tributary relies on from 7.0 (consumer-group lag in `XINFO GROUPS`):
/// connecting fails at once, saying which server it found, the minimum and why, instead of
/// failing later on the first command it does not know.
#[tokio::test]
#[ignore = "needs a Redis 6.2 binary in TRIBUTARY_REDIS_6_SERVER: cargo xtask test-old-redis (part of cargo xtask test)"]
async fn a_server_older_than_redis_7_is_refused_at_connect() {
    let binary = std::env::var("TRIBUTARY_REDIS_6_SERVER").expect("TRIBUTARY_REDIS_6_SERVER names a Redis 6.2 binary");
    let redis = TestRedis::start_with(ServerOptions::new().binary(&binary)).await;
    assert!(redis.cli(&["INFO", "server"]).contains("redis_version:6.2"), "not a Redis 6.2");
    let err = Connection::connect(&redis.url()).await.expect_err("Redis 6.2 is refused");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(matches!(err, ConnectError::UnsupportedServer { .. }), "{err:?}");
    let text = err.to_string();
    eprintln!("{text}");
    assert!(text.contains("Redis 6.2.14 is too old"), "{text}");
    assert!(text.contains("needs Redis 7.0 or later"), "{text}");
    assert!(text.contains(&redis.url()), "the message names the server: {text}");
    // And the refusal is not a formality: what the framework reads from 7.0 on is missing.
    let groups = redis.cli(&["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"]);
    assert!(groups.contains("OK"), "{groups}");
    let info = redis.cli(&["XINFO", "GROUPS", "s"]);
    assert!(!info.contains("lag"), "Redis 6.2 reports no lag: {info}");
}
