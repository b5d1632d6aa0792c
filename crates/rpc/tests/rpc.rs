//! RPC against a real redis-server: concurrency, the early-reply race, durable requests,
//! deadlines, crashed servers, typed errors, cancellation and reply-to hygiene.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_core::Connection;
use tributary_rpc::{RpcClient, RpcError, RpcHandlerError, RpcServer, RpcServerHandle};
use tributary_testkit::{wait_until, TestRedis};

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
struct Echo {
    n: u64,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
struct Answer {
    n: u64,
    server: String,
}

async fn connect(redis: &TestRedis) -> Connection {
    Connection::options().namespace(redis.namespace()).connect(&redis.url()).await.unwrap()
}

fn echo_server(conn: &Connection, name: &str, calls: Arc<AtomicU64>) -> RpcServerHandle {
    let server = name.to_owned();
    RpcServer::builder(conn.clone(), "echo")
        .configure_worker({
            let name = name.to_owned();
            move |w| w.consumer_name(name).claim_idle(Duration::from_millis(500))
        })
        .method("echo", move |req: Echo, _ctx| {
            let (server, calls) = (server.clone(), calls.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, RpcHandlerError>(Answer { n: req.n, server })
            }
        })
        .method("fail", |req: Echo, _ctx| async move {
            Err::<Answer, _>(
                RpcHandlerError::new("out_of_stock", format!("item {} is gone", req.n))
                    .with_details(serde_json::json!({ "n": req.n })),
            )
        })
        .method("panic", |_req: Echo, _ctx| async move {
            if true {
                panic!("handler exploded");
            }
            Ok::<Answer, RpcHandlerError>(Answer { n: 0, server: String::new() })
        })
        .method("slow", |req: Echo, _ctx| async move {
            tokio::time::sleep(Duration::from_millis(req.n)).await; // the work the request asks for
            Ok::<_, RpcHandlerError>(Answer { n: req.n, server: String::new() })
        })
        .build()
        .unwrap()
        .start()
}

#[tokio::test]
async fn a_thousand_concurrent_calls_over_two_servers_each_get_their_own_answer() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let calls = Arc::new(AtomicU64::new(0));
    let s1 = echo_server(&conn, "s1", calls.clone());
    let s2 = echo_server(&conn, "s2", calls.clone());
    let client = RpcClient::builder(conn.clone()).default_timeout(Duration::from_secs(30)).build().unwrap();
    let mut tasks = Vec::new();
    for n in 0..1000u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move { client.call::<_, Answer>("echo", "echo", &Echo { n }).await }));
    }
    let mut servers = HashSet::new();
    for (n, t) in tasks.into_iter().enumerate() {
        let answer = t.await.unwrap().unwrap();
        assert_eq!(answer.n, n as u64, "no cross-talk");
        servers.insert(answer.server);
    }
    assert_eq!(servers.len(), 2, "both servers took work");
    assert_eq!(calls.load(Ordering::SeqCst), 1000);
    assert_eq!(client.late_replies(), 0);
    assert_eq!(client.pending_calls(), 0);
    s1.shutdown().await;
    s2.shutdown().await;
}

#[tokio::test]
async fn replies_faster_than_the_caller_are_never_lost() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let server = echo_server(&conn, "s1", Arc::new(AtomicU64::new(0)));
    let client = RpcClient::builder(conn).default_timeout(Duration::from_secs(10)).build().unwrap();
    // A server already blocked on the request stream answers a tiny request within a round
    // trip: in the naive design (subscribe after publishing) many of these replies are lost.
    for n in 0..300 {
        let answer: Answer = client.call("echo", "echo", &Echo { n }).await.unwrap();
        assert_eq!(answer.n, n);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_sent_with_no_server_up_is_answered_when_one_starts() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let client = RpcClient::builder(conn.clone()).default_timeout(Duration::from_secs(10)).build().unwrap();
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<_, Answer>("echo", "echo", &Echo { n: 42 }).await })
    };
    // The request is stored while nobody serves: the call waits for its answer.
    let requests = format!("{}:{{rpc.echo}}", redis.namespace());
    wait_until(Duration::from_secs(10), "the request stored", || async {
        redis.cli(&["XLEN", &requests]).trim() == "1"
    })
    .await;
    assert!(!call.is_finished());
    let server = echo_server(&conn, "late", Arc::new(AtomicU64::new(0)));
    let answer = call.await.unwrap().unwrap();
    assert_eq!(answer, Answer { n: 42, server: "late".into() });
    server.shutdown().await;
}

#[tokio::test]
async fn a_call_times_out_at_its_deadline_and_is_never_executed_afterwards() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let client = RpcClient::new(conn.clone());
    let started = Instant::now();
    let err = client
        .call_with_timeout::<_, Answer>("echo", "echo", &Echo { n: 1 }, Duration::from_millis(200))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, RpcError::Timeout { .. }), "{err:?}");
    // Not much later either (without a deadline of its own, a call waited for ever).
    assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2), "timed out after {took:?}");

    let calls = Arc::new(AtomicU64::new(0));
    let server = echo_server(&conn, "s", calls.clone());
    wait_until(Duration::from_secs(30), "the expired request is skipped", || async { server.expired() == 1 }).await;
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler never ran");
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_held_by_a_crashed_server_is_answered_by_another_before_the_deadline() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let entered = Arc::new(AtomicU64::new(0));
    let e = entered.clone();
    let doomed = RpcServer::builder(conn.clone(), "echo")
        .configure_worker(|w| w.consumer_name("doomed").claim_idle(Duration::from_millis(500)))
        .method("echo", move |_req: Echo, _ctx| {
            let e = e.clone();
            async move {
                e.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
                Ok::<Answer, RpcHandlerError>(Answer { n: 0, server: String::new() })
            }
        })
        .build()
        .unwrap()
        .start();
    let client = RpcClient::builder(conn.clone()).default_timeout(Duration::from_secs(15)).build().unwrap();
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<_, Answer>("echo", "echo", &Echo { n: 7 }).await })
    };
    wait_until(Duration::from_secs(10), "the doomed server took the request", || async {
        entered.load(Ordering::SeqCst) == 1
    })
    .await;
    drop(doomed); // crash mid-request
    let rescuer = echo_server(&conn, "rescuer", Arc::new(AtomicU64::new(0)));
    let answer = call.await.unwrap().unwrap();
    assert_eq!(answer, Answer { n: 7, server: "rescuer".into() });
    rescuer.shutdown().await;
}

#[tokio::test]
async fn handler_errors_and_panics_come_back_as_typed_errors() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let server = echo_server(&conn, "s", Arc::new(AtomicU64::new(0)));
    let client = RpcClient::new(conn);
    let started = Instant::now();
    match client.call::<_, Answer>("echo", "fail", &Echo { n: 9 }).await.unwrap_err() {
        RpcError::Remote { code, message, details, .. } => {
            assert_eq!(code, "out_of_stock");
            assert_eq!(message, "item 9 is gone");
            assert_eq!(details, Some(serde_json::json!({ "n": 9 })));
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    let err = client.call::<_, Answer>("echo", "panic", &Echo { n: 1 }).await.unwrap_err();
    assert_eq!(err.code(), Some("internal"), "{err:?}");
    assert!(err.to_string().contains("handler exploded"), "{err}");
    let err = client.call::<_, Answer>("echo", "nope", &Echo { n: 1 }).await.unwrap_err();
    assert_eq!(err.code(), Some("unknown_method"));
    let err = client.call::<_, Answer>("echo", "echo", &"not an Echo").await.unwrap_err();
    assert_eq!(err.code(), Some("bad_request"));
    // The detail of what is wrong reaches the caller.
    assert!(err.to_string().contains("does not decode as `Echo`: invalid type: string"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4), "errors, not timeouts");
    assert_eq!(server.failed(), 4);
    server.shutdown().await;
}

#[tokio::test]
async fn a_response_over_the_payload_limit_comes_back_as_an_error_not_a_timeout() {
    let redis = TestRedis::start().await;
    let limits = tributary_core::Limits { max_payload: 256, ..Default::default() };
    let server_conn =
        Connection::options().namespace(redis.namespace()).limits(limits).connect(&redis.url()).await.unwrap();
    let server = RpcServer::builder(server_conn, "big")
        .method("blob", |n: usize, _ctx| async move { Ok::<_, RpcHandlerError>("x".repeat(n)) })
        .build()
        .unwrap()
        .start();
    let client = RpcClient::builder(connect(&redis).await).default_timeout(Duration::from_secs(4)).build().unwrap();
    let small: String = client.call("big", "blob", &10usize).await.unwrap();
    assert_eq!(small.len(), 10);
    let err = client.call::<_, String>("big", "blob", &1000usize).await.unwrap_err();
    assert_eq!(err.code(), Some("internal"), "{err:?}");
    assert!(err.to_string().contains("exceeds the 256-byte payload limit"), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_dropped_call_is_cancelled_and_its_late_reply_discarded() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let server = echo_server(&conn, "s", Arc::new(AtomicU64::new(0)));
    let client = RpcClient::new(conn);
    let slow = client.call::<_, Answer>("echo", "slow", &Echo { n: 300 });
    assert!(tokio::time::timeout(Duration::from_millis(50), slow).await.is_err(), "cancelled by dropping");
    assert_eq!(client.pending_calls(), 0);
    wait_until(Duration::from_secs(10), "the late reply arrives and is counted", || async {
        client.late_replies() == 1
    })
    .await;
    // The client keeps working.
    let answer: Answer = client.call("echo", "echo", &Echo { n: 2 }).await.unwrap();
    assert_eq!(answer.n, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn a_forged_reply_to_is_rejected_and_nothing_is_written_there() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let calls = Arc::new(AtomicU64::new(0));
    let server = echo_server(&conn, "s", calls.clone());
    let ns = redis.namespace();
    let victim = format!("{ns}:{{orders}}");
    let stream = format!("{ns}:{{rpc.echo}}");
    let payload = r#"{"n":1}"#;
    let deadline = (std::time::SystemTime::now() + Duration::from_secs(60))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    redis.cli(&[
        "XADD",
        &stream,
        "*",
        "v",
        "1",
        "id",
        "01932c07-a5d8-7c3e-9d4f-0123456789ab",
        "type",
        "Echo",
        "ct",
        "application/json",
        "ts",
        "1700000000000",
        "corr",
        "c-1",
        "reply",
        &victim,
        "dl",
        &deadline,
        "h:rpc-method",
        "echo",
        "p",
        payload,
    ]);
    let dlq = tributary_streams::DeadLetters::new(conn.clone(), "rpc.echo").unwrap();
    wait_until(Duration::from_secs(30), "the request is dead-lettered", || async { dlq.count().await.unwrap() == 1 })
        .await;
    let letter = dlq.list(1).await.unwrap().remove(0);
    assert_eq!(letter.reason, "rejected");
    assert!(letter.error.contains("is not a reply stream"), "{}", letter.error);
    assert_eq!(redis.cli(&["EXISTS", &victim]).trim(), "0", "nothing written to the forged key");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn reply_streams_are_trimmed_as_read_expire_and_are_removed_on_close() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let server = echo_server(&conn, "s", Arc::new(AtomicU64::new(0)));
    let client = RpcClient::builder(conn.clone()).reply_ttl(Duration::from_secs(60)).build().unwrap();
    for n in 0..50 {
        let _: Answer = client.call("echo", "echo", &Echo { n }).await.unwrap();
    }
    let key = client.reply_stream().to_owned();
    // The key layout running deployments rely on: `<ns>:reply:{<client-id>}`.
    let id = key.strip_prefix(&format!("{}:reply:{{", redis.namespace())).and_then(|rest| rest.strip_suffix('}'));
    assert!(id.is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()), "{key}");
    wait_until(Duration::from_secs(10), "consumed replies trimmed", || async {
        redis.cli(&["XLEN", &key]).trim() == "0"
    })
    .await;
    let ttl: i64 = redis.cli(&["PTTL", &key]).trim().parse().unwrap();
    assert!(ttl > 0 && ttl <= 300_000, "reply stream has an expiry: {ttl}");
    client.close().await.unwrap();
    assert_eq!(redis.cli(&["EXISTS", &key]).trim(), "0");
    // Answered requests leave the request stream once acknowledged.
    server.shutdown().await;
    let trimmed = tributary_streams::Admin::new(conn.clone())
        .trim("rpc.echo", tributary_streams::Retention::max_len(0).safe())
        .await
        .unwrap();
    // Every request was read and acknowledged: none needs keeping.
    assert_eq!((trimmed.remaining, &trimmed.held_by), (0, &None), "answered requests trimmed: {trimmed:?}");
}

#[tokio::test]
async fn json_clients_get_json_replies() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let server = RpcServer::builder(conn.clone(), "calc")
        .method("add", |req: Vec<i64>, _ctx| async move { Ok::<_, RpcHandlerError>(req.iter().sum::<i64>()) })
        .build()
        .unwrap()
        .start();
    let client = RpcClient::builder(conn).codec(tributary_core::Json).build().unwrap();
    let sum: i64 = client.call_with_timeout("calc", "add", &vec![1, 2, 3], Duration::from_secs(5)).await.unwrap();
    assert_eq!(sum, 6);
    server.shutdown().await;
}

#[tokio::test]
async fn clients_writing_either_wire_format_version_are_answered() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let server = echo_server(&conn, "s", Arc::new(AtomicU64::new(0)));
    // A client on a connection still writing version 1 (a rolling upgrade) and one writing
    // the default, calling the same server.
    let v1 = Connection::options()
        .namespace(redis.namespace())
        .wire_version(tributary_core::wire::Version::V1)
        .connect(&redis.url())
        .await
        .unwrap();
    let old = RpcClient::new(v1);
    let new = RpcClient::new(conn.clone());
    for n in 0..20 {
        let client = if n % 2 == 0 { &old } else { &new };
        let answer: Answer = client.call("echo", "echo", &Echo { n }).await.unwrap();
        assert_eq!(answer, Answer { n, server: "s".into() });
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_survive_connections_cut_mid_call_and_nothing_stays_pending() {
    let redis = TestRedis::start_private().await;
    let conn = connect(&redis).await;
    let server = echo_server(&conn, "s", Arc::new(AtomicU64::new(0)));
    let client = RpcClient::builder(conn.clone()).default_timeout(Duration::from_secs(10)).build().unwrap();
    let mut calls = Vec::new();
    for n in 0..200u64 {
        let client = client.clone();
        calls.push(tokio::spawn(async move { (n, client.call::<_, Answer>("echo", "echo", &Echo { n }).await) }));
        if n % 40 == 20 {
            // Cut the server's blocked read, the client's reply reader and the command connections.
            redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
        }
    }
    let (mut ok, mut failed) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            (n, Ok(answer)) => {
                assert_eq!(answer.n, n);
                ok += 1;
            }
            // A request cut off before Redis stored it fails at once; never a hang, never a wrong answer.
            (_, Err(e)) => {
                assert!(e.kind().is_retryable(), "{e:?}");
                failed += 1;
            }
        }
    }
    eprintln!("client kill during rpc: {ok} answered, {failed} failed fast");
    assert!(ok >= 150, "most calls complete: {ok}");
    let admin = tributary_streams::Admin::new(conn.clone());
    wait_until(Duration::from_secs(30), "no request stuck pending", || async {
        admin.pending_count("rpc.echo", "rpc-server").await.unwrap() == 0
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn requests_missing_a_deadline_or_correlation_id_are_rejected() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let calls = Arc::new(AtomicU64::new(0));
    let server = echo_server(&conn, "s", calls.clone());
    let ns = redis.namespace();
    let stream = format!("{ns}:{{rpc.echo}}");
    let reply = format!("{ns}:reply:{{0193-abc}}");
    let base =
        ["v", "1", "id", "01932c07-a5d8-7c3e-9d4f-0123456789ab", "type", "Echo", "ct", "application/json", "ts", "1"];
    let mut no_deadline = vec!["XADD", &stream, "*"];
    no_deadline.extend(base);
    no_deadline.extend(["corr", "c-1", "reply", &reply, "h:rpc-method", "echo", "p", r#"{"n":1}"#]);
    redis.cli(&no_deadline);
    let mut no_corr = vec!["XADD", &stream, "*"];
    no_corr.extend(base);
    no_corr.extend(["dl", "99999999999999", "reply", &reply, "h:rpc-method", "echo", "p", r#"{"n":1}"#]);
    redis.cli(&no_corr);
    let dlq = tributary_streams::DeadLetters::new(conn.clone(), "rpc.echo").unwrap();
    wait_until(Duration::from_secs(30), "both rejected", || async { dlq.count().await.unwrap() == 2 }).await;
    let errors: Vec<String> = dlq.list(2).await.unwrap().into_iter().map(|l| l.error).collect();
    assert!(errors[0].contains("no deadline"), "{errors:?}");
    assert!(errors[1].contains("no correlation id"), "{errors:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(redis.cli(&["EXISTS", &reply]).trim(), "0");
    server.shutdown().await;
}

#[tokio::test]
async fn the_correlation_id_is_the_request_id_and_stray_replies_are_counted_not_routed() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let server = RpcServer::builder(conn.clone(), "ids")
        .method("ids", |_req: Echo, ctx| async move {
            let env = ctx.envelope();
            Ok::<_, RpcHandlerError>((env.id.to_string(), env.correlation_id.clone().unwrap_or_default()))
        })
        .build()
        .unwrap()
        .start();
    let client = RpcClient::new(conn);
    let (id, corr): (String, String) = client.call("ids", "ids", &Echo { n: 1 }).await.unwrap();
    assert_eq!(corr, id, "a request is correlated by its own message id");

    // Replies for calls nobody made: a UUID no call waits for, and a value that is no UUID.
    // Both are discarded and counted; neither disturbs the calls that follow.
    let stray = uuid::Uuid::now_v7().to_string();
    for corr in [stray.as_str(), "not-a-uuid"] {
        redis.cli(&["XADD", client.reply_stream(), "*", "v", "1", "corr", corr, "ct", "application/json", "p", "{}"]);
    }
    wait_until(Duration::from_secs(10), "both stray replies are counted", || async { client.late_replies() == 2 })
        .await;
    let (id2, corr2): (String, String) = client.call("ids", "ids", &Echo { n: 2 }).await.unwrap();
    assert_eq!(corr2, id2);
    assert_ne!(id2, id);
    assert_eq!(client.pending_calls(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_call_ends_at_its_deadline_while_redis_is_down() {
    let redis = TestRedis::start_private().await;
    let conn = connect(&redis).await;
    let client = RpcClient::new(conn);
    redis.kill();
    // The request's command has no timeout of its own: the call's bounds it.
    let started = Instant::now();
    let result =
        client.call_with_timeout::<_, Answer>("echo", "echo", &Echo { n: 1 }, Duration::from_millis(300)).await;
    let took = started.elapsed();
    let err = result.unwrap_err();
    assert!(matches!(err, RpcError::Timeout { .. } | RpcError::Send { .. }), "{err:?}");
    assert!(took < Duration::from_secs(3), "ended after {took:?}, not at its 300 ms deadline");
    assert_eq!(client.pending_calls(), 0);
}

#[tokio::test]
async fn a_method_still_running_at_the_deadline_is_cancelled() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    struct OnDrop(Arc<AtomicU64>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicU64::new(0));
    let d = dropped.clone();
    let server = RpcServer::builder(conn.clone(), "stuck")
        .method("wait", move |_req: Echo, _ctx| {
            let guard = OnDrop(d.clone());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok::<Answer, RpcHandlerError>(Answer { n: 0, server: String::new() })
            }
        })
        .build()
        .unwrap()
        .start();
    let client = RpcClient::new(conn.clone());
    let err = client
        .call_with_timeout::<_, Answer>("stuck", "wait", &Echo { n: 1 }, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Timeout { .. }), "{err:?}");
    // The method's future is dropped at the deadline, not left holding a handler slot.
    wait_until(Duration::from_secs(30), "the method cancelled", || async { dropped.load(Ordering::SeqCst) == 1 }).await;
    wait_until(Duration::from_secs(30), "counted as expired", || async { server.expired() == 1 }).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_answered_again_after_redis_restarts_without_persistence() {
    let redis = TestRedis::start_private().await; // no persistence: a restart loses every key
    let conn = connect(&redis).await;
    let calls = Arc::new(AtomicU64::new(0));
    let server = echo_server(&conn, "s", calls.clone());
    let client = RpcClient::builder(conn.clone()).default_timeout(Duration::from_secs(2)).build().unwrap();
    let answer: Answer = client.call("echo", "echo", &Echo { n: 1 }).await.unwrap();
    assert_eq!(answer.n, 1);

    redis.kill();
    redis.restart().await; // the request stream, its group and the reply stream are gone
                           // Calls during the reconnection may fail; once one is answered, every later one is.
    wait_until(Duration::from_secs(30), "a call answered after the restart", || {
        let client = client.clone();
        async move { client.call::<_, Answer>("echo", "echo", &Echo { n: 2 }).await.is_ok() }
    })
    .await;
    for n in 10..30 {
        let answer: Answer = client.call("echo", "echo", &Echo { n }).await.unwrap();
        assert_eq!(answer.n, n);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn registration_mistakes_are_errors_not_silent_overwrites() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let ok = |_req: Echo, _ctx| async move { Ok::<_, RpcHandlerError>(Answer { n: 0, server: String::new() }) };
    let err = RpcServer::builder(conn.clone(), "svc").method("a", ok).method("a", ok).build().unwrap_err();
    assert!(matches!(&err, tributary_streams::BuildError::DuplicateMethod(m) if m == "a"), "{err:?}");
    let err = RpcServer::builder(conn.clone(), "svc")
        .method("a", ok)
        .configure_worker(|w| w.concurrency(4))
        .configure_worker(|w| w.consumer_name("x"))
        .build()
        .unwrap_err();
    assert!(matches!(err, tributary_streams::BuildError::SetTwice("configure_worker")), "{err:?}");
    assert!(err.to_string().contains("configure_worker"));
}

#[tokio::test]
async fn a_late_reply_to_a_closed_client_creates_no_key() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let entered = Arc::new(AtomicU64::new(0));
    let e = entered.clone();
    let server = RpcServer::builder(conn.clone(), "slow")
        .method("wait", move |req: Echo, _ctx| {
            let e = e.clone();
            async move {
                e.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await; // a slow method (simulated work)
                Ok::<_, RpcHandlerError>(Answer { n: req.n, server: String::new() })
            }
        })
        .build()
        .unwrap()
        .start();
    let client = RpcClient::new(conn.clone());
    let reply_key = client.reply_stream().to_owned();
    assert_eq!(redis.cli(&["EXISTS", &reply_key]).trim(), "0", "building a client does no I/O");
    client.ready().await.unwrap();
    assert_eq!(redis.cli(&["EXISTS", &reply_key]).trim(), "1", "the client creates its reply stream");
    assert!(redis.cli(&["PTTL", &reply_key]).trim().parse::<i64>().unwrap() > 0, "with an expiry");
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.call::<_, Answer>("slow", "wait", &Echo { n: 1 }).await })
    };
    wait_until(Duration::from_secs(30), "the method running", || async { entered.load(Ordering::SeqCst) == 1 }).await;
    client.close().await.unwrap();
    let _ = call.await.unwrap(); // fails: the client closed
    let after = client.call::<_, Answer>("slow", "wait", &Echo { n: 2 }).await;
    assert!(matches!(after, Err(RpcError::Closed)), "a call after close fails at once: {after:?}");
    wait_until(Duration::from_secs(30), "the late reply dropped", || async { server.unclaimed_replies() == 1 }).await;
    assert_eq!(redis.cli(&["EXISTS", &reply_key]).trim(), "0", "no key re-created for a closed client");
    assert_eq!(server.answered(), 1, "answered once; nothing retried");
    server.shutdown().await;
}
