//! Security: an ACL user limited to the namespace's keys and the commands Tributary needs works
//! end to end (the ACL line is in docs/security.md), and passwords never reach logs or errors.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tributary::prelude::*;
use tributary_testkit::{wait_until, TestRedis};

/// The ACL rules of docs/security.md, for a namespace `ns`.
fn acl_rules(ns: &str) -> Vec<String> {
    let commands = "xadd xreadgroup xread xack xclaim xpending xgroup xinfo xrange xrevrange xtrim xlen xdel \
                    del exists get set pexpire evalsha script|load scan zadd zrange zrangebyscore zrem zcard \
                    zscore incr hset hget hmget hdel time ping type client|id client|unblock publish subscribe";
    let mut rules = vec!["on".to_owned(), ">app-secret".to_owned(), "resetkeys".to_owned(), format!("~{ns}:*")];
    rules.push("resetchannels".to_owned());
    rules.push(format!("&{ns}:rings"));
    rules.push("-@all".to_owned());
    rules.extend(commands.split_whitespace().map(|c| format!("+{c}")));
    rules
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Job {
    n: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_limited_acl_user_works_end_to_end() {
    let redis = TestRedis::start_private().await;
    let ns = redis.namespace();
    let mut setuser = vec!["ACL".to_owned(), "SETUSER".to_owned(), "app".to_owned()];
    setuser.extend(acl_rules(&ns));
    redis.cli(&setuser.iter().map(String::as_str).collect::<Vec<_>>());
    let url = format!("redis://app:app-secret@127.0.0.1:{}", redis.port());
    let conn = Connection::options().namespace(ns.as_str()).connect(&url).await.unwrap();

    // The topic's retention (a script writes it, producers read it), then publish (plain,
    // idempotent, scheduled), consume with retries and a dead letter, RPC.
    let admin = Admin::new(conn.clone());
    admin.set_retention("jobs", Retention::max_len(1000)).await.unwrap();
    assert_eq!(admin.retention("jobs").await.unwrap(), Some(Retention::max_len(1000)));
    let producer = Producer::new(conn.clone());
    producer.publish("jobs", &Job { n: 1 }).await.unwrap();
    producer.message("jobs", &Job { n: 2 }).idempotency_key("once").send().await.unwrap();
    producer.publish_in("jobs", &Job { n: 3 }, Duration::from_millis(100)).await.unwrap();
    producer.publish("jobs", &Job { n: 4 }).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("w")
        .retry_policy(RetryPolicy::exponential(Duration::from_millis(5), Duration::from_millis(10)))
        .max_deliveries(2)
        .on("jobs", move |j: Job, _ctx: Context| {
            let s = s.clone();
            async move {
                if j.n == 4 {
                    return Err(HandlerError::retry("always fails"));
                }
                s.lock().unwrap().push(j.n);
                Ok(())
            }
        })
        .build()
        .unwrap()
        .start();
    let dlq = DeadLetters::new(conn.clone(), "jobs").unwrap();
    wait_until(Duration::from_secs(30), "three handled, one dead-lettered", || {
        let n = seen.lock().unwrap().len();
        let dlq = dlq.clone();
        async move { n == 3 && dlq.count().await.unwrap() == 1 }
    })
    .await;
    assert_eq!(dlq.replay_all().await.unwrap().replayed, 1);
    let server = RpcServer::builder(conn.clone(), "echo")
        .method("echo", |j: Job, _ctx| async move { Ok::<_, RpcHandlerError>(j.n) })
        .build()
        .unwrap()
        .start();
    let client = RpcClient::new(conn.clone());
    assert_eq!(client.call::<_, u64>("echo", "echo", &Job { n: 7 }).await.unwrap(), 7);
    assert!(!Admin::new(conn.clone()).topics().await.unwrap().is_empty());
    client.close().await.unwrap();
    server.shutdown().await;
    worker.shutdown().await;

    // The same user cannot touch keys outside the namespace.
    let other = Connection::options().namespace("elsewhere").connect(&url).await.unwrap();
    let err = Producer::new(other).publish("jobs", &Job { n: 1 }).await.unwrap_err();
    assert!(format!("{err:?}").contains("NOPERM"), "{err:?}");
}

/// A `MakeWriter` collecting everything logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn passwords_never_appear_in_logs_or_errors() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber =
        tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer(move || writer.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let redis =
        TestRedis::start_with(tributary_testkit::ServerOptions::new().arg("requirepass", "right-horse-battery")).await;
    let port = redis.port();
    let wrong = Connection::connect(&format!("redis://default:wrong-staple@127.0.0.1:{port}")).await.unwrap_err();
    let mut texts = vec![format!("{wrong}"), format!("{wrong:?}")];
    // Raw reserved characters in a password: an invalid URL, or a wrong one; never printed.
    for pw in ["wrong/staple", "wrong?staple", "wr#ong@sta:ple"] {
        let err = Connection::connect(&format!("redis://default:{pw}@127.0.0.1:{port}")).await.unwrap_err();
        let (text, debug) = (format!("{err}"), format!("{err:?}"));
        assert!(!text.contains(pw) && !debug.contains(pw), "password leaked: {text} {debug}");
        assert!(!text.contains("staple") && !debug.contains("staple"), "part of the password leaked: {text} {debug}");
        texts.push(text);
    }
    let conn = Connection::options()
        .namespace(redis.namespace())
        .connect(&format!("redis://default:right-horse-battery@127.0.0.1:{port}"))
        .await
        .unwrap();
    let debug = format!("{conn:?}");
    Producer::new(conn.clone()).publish("jobs", &Job { n: 1 }).await.unwrap();
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("w")
        .max_deliveries(1)
        .on("jobs", |_j: Job, _ctx: Context| async move { Err::<(), _>(HandlerError::retry("fails")) })
        .build()
        .unwrap()
        .start();
    let dlq = DeadLetters::new(conn.clone(), "jobs").unwrap();
    wait_until(Duration::from_secs(30), "dead letter", || async { dlq.count().await.unwrap() == 1 }).await;
    worker.shutdown().await;
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("dead-lettered"), "logging was captured: {logs}");
    for text in texts.iter().chain([&debug, &logs]) {
        assert!(!text.contains("wrong-staple") && !text.contains("right-horse-battery"), "password leaked: {text}");
    }
    assert!(texts[0].contains("default:***@"), "{}", texts[0]);
}

#[tokio::test]
async fn tls_connections_work_end_to_end_and_an_untrusted_certificate_is_refused() {
    let redis = TestRedis::start_with(tributary_testkit::ServerOptions::new().tls()).await;
    let conn = Connection::options()
        .namespace(redis.namespace())
        .tls_root_certificates(redis.ca_pem())
        .connect(&redis.tls_url())
        .await
        .unwrap();
    Producer::new(conn.clone()).publish("jobs", &Job { n: 5 }).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("w")
        .on("jobs", move |j: Job, _ctx: Context| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(j.n);
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start();
    wait_until(Duration::from_secs(30), "handled over TLS", || {
        let n = seen.lock().unwrap().len();
        async move { n == 1 }
    })
    .await;
    worker.shutdown().await;
    let server = RpcServer::builder(conn.clone(), "echo")
        .method("echo", |j: Job, _ctx| async move { Ok::<_, RpcHandlerError>(j.n) })
        .build()
        .unwrap()
        .start();
    let client = RpcClient::new(conn);
    assert_eq!(client.call::<_, u64>("echo", "echo", &Job { n: 9 }).await.unwrap(), 9);
    server.shutdown().await;

    // A CA for a URL without TLS is a mistake, said at once, not a plain-text connection.
    let err = Connection::options().tls_root_certificates(redis.ca_pem()).connect(&redis.url()).await.unwrap_err();
    assert_eq!(err.kind(), tributary::ErrorKind::Config, "{err:?}");
    assert!(err.to_string().contains("does not use TLS"), "{err}");

    // Without the test CA the server's certificate is not trusted.
    let err =
        Connection::options().connect_timeout(Duration::from_secs(2)).connect(&redis.tls_url()).await.unwrap_err();
    assert_eq!(err.kind(), tributary::ErrorKind::Connection, "{err:?}");
}
