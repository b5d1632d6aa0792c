//! The `tributary` binary against a real redis-server.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tributary::prelude::*;
use tributary_testkit::{eventually, wait_until, ServerOptions, TestRedis};

const PATIENCE: Duration = Duration::from_secs(30);

fn cli(redis: &TestRedis, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tributary"));
    cmd.env("REDIS_URL", redis.url()).env("TRIBUTARY_NAMESPACE", redis.namespace()).args(args);
    cmd
}

fn run(redis: &TestRedis, args: &[&str]) -> Output {
    let out = cli(redis, args).output().expect("run tributary");
    assert!(out.status.success(), "tributary {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

async fn connect(redis: &TestRedis) -> Connection {
    Connection::options().namespace(redis.namespace()).connect(&redis.url()).await.unwrap()
}

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq, Clone)]
struct Order {
    id: u64,
    item: String,
}

#[tokio::test]
async fn messages_published_with_the_cli_are_handled_by_a_rust_worker() {
    let redis = TestRedis::start().await;
    let out = run(
        &redis,
        &["publish", "orders", "--json", r#"{"id":1,"item":"apple"}"#, "--key", "c-1", "--header", "src=cli"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).trim().parse::<EntryId>().is_ok());
    let mut cmd = cli(&redis, &["--output", "json", "publish", "orders"]);
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"{\"id\":2,\"item\":\"pear\"}\n\n{\"id\":3,\"item\":\"fig\"}\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(json_lines(&out).len(), 2, "one entry id per stdin line");

    let conn = connect(&redis).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let worker = Worker::builder(conn, "g")
        .consumer_name("w")
        .concurrency(1)
        .on("orders", move |o: Order, ctx: Context| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push((o, ctx.key().map(str::to_owned), ctx.headers().get("src").map(str::to_owned)));
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start();
    wait_until(PATIENCE, "three handled", || {
        let n = seen.lock().unwrap().len();
        async move { n == 3 }
    })
    .await;
    let got = seen.lock().unwrap().clone();
    assert_eq!(got[0], (Order { id: 1, item: "apple".into() }, Some("c-1".into()), Some("cli".into())));
    assert_eq!(got[2].0, Order { id: 3, item: "fig".into() });
    worker.shutdown().await;
}

#[tokio::test]
async fn messages_published_in_rust_are_consumed_and_acked_by_the_cli() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    for id in 0..5 {
        producer.publish("orders", &Order { id, item: format!("item-{id}") }).await.unwrap();
    }
    let out =
        run(&redis, &["consume", "orders", "--group", "cli", "--create-group", "--consumer", "c1", "--count", "3"]);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["payload"], serde_json::json!({"id": 0, "item": "item-0"}));
    assert_eq!(lines[2]["attempt"], 1);
    let admin = Admin::new(conn.clone());
    assert_eq!(admin.pending_count("orders", "cli").await.unwrap(), 0, "acknowledged, nothing left pending");
    let out =
        run(&redis, &["consume", "orders", "--group", "cli", "--create-group", "--consumer", "c1", "--count", "2"]);
    let ids: Vec<u64> = json_lines(&out).iter().map(|l| l["payload"]["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![3, 4], "the next run continues where the group left off");
    // Inspection commands see the group.
    let groups = json_lines(&run(&redis, &["--output", "json", "groups", "orders"]));
    assert_eq!(groups[0]["group"], "cli");
    assert_eq!(groups[0]["lag"], 0);
    let topics = json_lines(&run(&redis, &["--output", "json", "topics"]));
    assert_eq!(topics[0]["topic"], "orders");
    assert_eq!(topics[0]["length"], 5);
}

#[tokio::test]
async fn a_cli_consumer_killed_with_sigkill_loses_nothing() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let batch: Vec<Order> = (0..300).map(|id| Order { id, item: String::new() }).collect();
    Producer::new(conn.clone()).publish_batch("orders", &batch).await.unwrap();
    let seen = Arc::new(Mutex::new(std::collections::HashSet::new()));

    // The first consumer is killed after 50 lines; whatever it read but had not acked stays pending.
    let mut first = cli(
        &redis,
        &["consume", "orders", "--group", "g", "--create-group", "--consumer", "first", "--claim-idle", "500ms"],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    for _ in 0..50 {
        let line: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        seen.lock().unwrap().insert(line["payload"]["id"].as_u64().unwrap());
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    for line in lines.map_while(Result::ok) {
        // Lines it wrote before dying count too: they were printed, then acked or not.
        let line: Value = serde_json::from_str(&line).unwrap();
        seen.lock().unwrap().insert(line["payload"]["id"].as_u64().unwrap());
    }

    let held = Admin::new(conn.clone()).pending_count("orders", "g").await.unwrap();
    let started = std::time::Instant::now();
    let mut second = cli(
        &redis,
        &["consume", "orders", "--group", "g", "--create-group", "--consumer", "second", "--claim-idle", "500ms"],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let out = second.stdout.take().unwrap();
    let s = seen.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let line: Value = serde_json::from_str(&line).unwrap();
            s.lock().unwrap().insert(line["payload"]["id"].as_u64().unwrap());
        }
    });
    let admin = Admin::new(conn);
    eventually(PATIENCE, || {
        let missing: Vec<u64> = (0..300).filter(|id| !seen.lock().unwrap().contains(id)).collect();
        let admin = admin.clone();
        async move {
            if !missing.is_empty() {
                return Err(format!("{} never printed: {:?}", missing.len(), &missing[..missing.len().min(20)]));
            }
            // On failure: who holds what (ids, consumers, idle times and delivery counts).
            let pending = admin.pending("orders", "g", 20).await.map_err(|e| e.to_string())?;
            if pending.is_empty() {
                Ok(())
            } else {
                Err(format!("all printed, still pending: {pending:?}"))
            }
        }
    })
    .await;
    // The dead consumer's entries are taken over together after `claim_idle`, not one per
    // sweep (before: one every ~16 s).
    let took = started.elapsed();
    eprintln!("the second consumer took over {held} entries of the killed one and finished in {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?} for {held} held entries");
    second.kill().unwrap();
    second.wait().unwrap();
    reader.join().unwrap();
    assert_eq!(seen.lock().unwrap().len(), 300);
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_with_the_cli() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let key = format!("{}:{{orders}}", redis.namespace());
    redis.cli(&["XADD", &key, "*", "not", "an envelope"]);
    Producer::new(conn.clone()).publish("orders", &Order { id: 9, item: "bad".into() }).await.unwrap();
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("w")
        .on("orders", |o: Order, _ctx: Context| async move {
            if o.item == "bad" {
                return Err(HandlerError::reject("bad item"));
            }
            Ok(())
        })
        .build()
        .unwrap()
        .start();
    let dlq = DeadLetters::new(conn.clone(), "orders").unwrap();
    wait_until(PATIENCE, "two dead letters", || async { dlq.count().await.unwrap() == 2 }).await;
    worker.shutdown().await;

    let letters = json_lines(&run(&redis, &["--output", "json", "dlq", "list", "orders"]));
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["reason"], "malformed");
    assert_eq!(letters[1]["reason"], "rejected");
    assert_eq!(letters[1]["error"], "bad item");
    assert_eq!(letters[1]["payload"], serde_json::json!({"id": 9, "item": "bad"}));
    let table = String::from_utf8(run(&redis, &["dlq", "list", "orders"]).stdout).unwrap();
    assert!(table.starts_with("ID") && table.contains("rejected"), "{table}");

    let id = letters[1]["id"].as_str().unwrap();
    let out = run(&redis, &["dlq", "replay", "orders", "--id", id]);
    let new_id: EntryId = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let replayed = Replay::new(conn.clone())
        .range("orders", Position::At(new_id), Position::End)
        .unwrap()
        .collect(10)
        .await
        .unwrap();
    assert_eq!(replayed[0].envelope.as_ref().unwrap().decode::<Order>().unwrap().id, 9);
    // The original entry's id, as the table shows it, works too (the malformed one's here).
    let original = letters[0]["original_id"].as_str().unwrap();
    let out = cli(&redis, &["dlq", "replay", "orders", "--id", original]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    // A malformed entry's original fields replay, and are dead-lettered again by a worker.
    assert!(out.status.success(), "{text}");
    let out = cli(&redis, &["dlq", "replay", "orders", "--id", "1-1"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nor one of the original entry"));
    let purged = json_lines(&run(&redis, &["--output", "json", "dlq", "purge", "orders", "--yes"]));
    assert_eq!(purged[0]["purged"], 0, "both replayed");
}

#[tokio::test]
async fn scheduled_messages_can_be_listed_and_cancelled_with_the_cli() {
    let redis = TestRedis::start().await;
    let out = run(&redis, &["publish", "reminders", "--json", r#"{"text":"call Ada"}"#, "--in", "1h", "--ttl", "2h"]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let listed = json_lines(&run(&redis, &["--output", "json", "scheduled", "list", "reminders"]));
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["payload"]["text"], "call Ada");
    run(&redis, &["scheduled", "cancel", "reminders", &id]);
    let out = cli(&redis, &["scheduled", "cancel", "reminders", &id]).output().unwrap();
    assert!(!out.status.success(), "a second cancel finds nothing");

    // run-now: delivered at once, in the topic's stream, and no longer scheduled.
    let out = run(&redis, &["publish", "reminders", "--json", r#"{"text":"now"}"#, "--in", "1h"]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    run(&redis, &["scheduled", "run-now", "reminders", &id]);
    let got = json_lines(&run(&redis, &["tail", "reminders", "--from", "0", "--count", "1"]));
    assert_eq!(got[0]["payload"]["text"], "now");
    assert!(json_lines(&run(&redis, &["--output", "json", "scheduled", "list", "reminders"])).is_empty());
    assert!(fails(&redis, &["scheduled", "run-now", "reminders", &id]).contains("is not scheduled"));
}

// Multi-threaded: the server runs in this process while the test blocks on the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_call_reaches_a_running_service() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let server = RpcServer::builder(conn, "calc")
        .method("add", |req: Vec<i64>, _ctx| async move { Ok::<_, RpcHandlerError>(req.iter().sum::<i64>()) })
        .method("fail", |_req: Value, _ctx| async move { Err::<i64, _>(RpcHandlerError::new("nope", "not today")) })
        .build()
        .unwrap()
        .start();
    let out = run(&redis, &["rpc", "call", "calc", "add", "--json", "[1,2,3]"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "6");
    let out = cli(&redis, &["rpc", "call", "calc", "fail"]).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "tributary: calc.fail failed with `nope`: not today");
    server.shutdown().await;
}

#[tokio::test]
async fn errors_are_one_clear_line_without_the_password() {
    let redis = TestRedis::start_with(ServerOptions::new().arg("requirepass", "s3cret")).await;
    let port = redis.port();
    let wrong = format!("redis://default:hunter2@127.0.0.1:{port}");
    let out = Command::new(env!("CARGO_BIN_EXE_tributary")).args(["--url", &wrong, "topics"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("WRONGPASS") || stderr.contains("Auth"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let right = format!("redis://default:s3cret@127.0.0.1:{port}");
    let out = Command::new(env!("CARGO_BIN_EXE_tributary")).args(["--url", &right, "topics"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["--url", "redis://127.0.0.1:1", "topics"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to `redis://127.0.0.1:1`"));
    // Passwords with characters a URL reserves, written raw (as generated base64 ones are).
    for pw in ["pa/ss", "pa?ss", "p#a@s:s%2F", "AbC/dEf+gH=="] {
        let url = format!("redis://app:{pw}@127.0.0.1:{port}");
        let out = Command::new(env!("CARGO_BIN_EXE_tributary")).args(["--url", &url, "topics"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(!stderr.contains(pw), "password `{pw}` printed: {stderr}");
    }
}

#[tokio::test]
async fn the_cli_works_against_a_cluster() {
    let cluster = tributary_testkit::TestCluster::start(3, 0).await;
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
            .env("REDIS_URL", cluster.url())
            .env("TRIBUTARY_NAMESPACE", cluster.namespace())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "tributary {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    for topic in ["a", "b", "c", "d"] {
        run(&["publish", topic, "--json", r#"{"id":1,"item":"x"}"#]);
    }
    let topics = json_lines(&run(&["--output", "json", "topics"]));
    assert_eq!(topics.len(), 4, "topics on every primary are listed: {topics:?}");
    let lines =
        json_lines(&run(&["consume", "c", "--group", "g", "--create-group", "--consumer", "c1", "--count", "1"]));
    assert_eq!(lines[0]["payload"]["item"], "x");
}

#[tokio::test]
async fn a_cli_consumer_says_on_stderr_when_its_group_vanishes_and_keeps_consuming() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    producer.publish("orders", &Order { id: 0, item: String::new() }).await.unwrap();
    let mut child =
        cli(&redis, &["consume", "orders", "--group", "g", "--create-group", "--consumer", "c", "--count", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["payload"]["id"], 0);
    // An operator (or a restart without persistence) removes the group under the consumer.
    assert!(Admin::new(conn.clone()).delete_group("orders", "g").await.unwrap());
    producer.publish("orders", &Order { id: 1, item: String::new() }).await.unwrap();
    let second: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(second["payload"]["id"], 1, "only what was published after: no history replayed");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("consumer group was missing"), "the library's error reaches stderr: {stderr}");
}

#[tokio::test]
async fn consume_count_counts_entries_settled_without_a_print_and_says_so() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    producer.publish("orders", &Order { id: 0, item: String::new() }).await.unwrap();
    // Not an envelope: dead-lettered as malformed, never printed.
    redis.cli(&["XADD", &format!("{}:{{orders}}", redis.namespace()), "*", "hello", "world"]);
    producer.publish("orders", &Order { id: 2, item: String::new() }).await.unwrap();
    let mut cmd =
        cli(&redis, &["consume", "orders", "--group", "g", "--create-group", "--consumer", "c", "--count", "3"]);
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success());
    let ids: Vec<u64> = json_lines(&out).iter().map(|l| l["payload"]["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![0, 2]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 of 3 entries taken were not printed: 1 dead-lettered (1 malformed"), "{stderr}");
    assert_eq!(Admin::new(conn).pending_count("orders", "g").await.unwrap(), 0);
}

#[tokio::test]
async fn entries_of_the_dead_letter_stream_that_are_not_dead_letters_are_shown_and_skipped() {
    let redis = TestRedis::start().await;
    let dlq_key = format!("{}:{{orders}}:dlq", redis.namespace());
    // Junk written there by hand (or by another tool).
    redis.cli(&["XADD", &dlq_key, "*", "hello", "world"]);
    redis.cli(&["XADD", &dlq_key, "*", "dlq:topic", "orders"]);
    let letters = json_lines(&run(&redis, &["--output", "json", "dlq", "list", "orders"]));
    assert_eq!(letters.len(), 2, "both shown: {letters:?}");
    assert!(letters.iter().all(|l| l["reason"] == "unreadable"), "{letters:?}");
    assert!(letters[0]["error"].as_str().unwrap().contains("not a dead letter"));
    let out = run(&redis, &["--output", "json", "dlq", "replay", "orders", "--all"]);
    assert_eq!(json_lines(&out)[0]["replayed"], 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 unreadable"), "replay says what it skipped: {stderr}");
    assert_eq!(redis.cli(&["XLEN", &dlq_key]).trim(), "2", "left where they are");
}

#[tokio::test]
async fn payloads_round_trip_exactly_through_the_cli_or_are_refused() {
    let redis = TestRedis::start().await;
    // Exact floats, 64-bit integers and binary (the `$base64` form) go in and come out as they were.
    let doc = r#"{"f":-1.5e-300,"u":18446744073709551615,"i":-9223372036854775808,"bin":{"$base64":"AP8Q"}}"#;
    run(&redis, &["publish", "numbers", "--json", doc]);
    let out = run(&redis, &["consume", "numbers", "--group", "g", "--create-group", "--consumer", "c", "--count", "1"]);
    let line = String::from_utf8_lossy(&out.stdout);
    let printed: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(printed["payload"], serde_json::from_str::<Value>(doc).unwrap(), "{line}");
    assert!(line.contains("-1.5e-300"), "printed as written: {line}");

    // Numbers that cannot be stored exactly are refused, with the reason.
    for bad in [r#"{"n":184467440737095516150}"#, r#"{"n":0.1000000000000000000001}"#] {
        let out = cli(&redis, &["publish", "numbers", "--json", bad]).output().unwrap();
        assert!(!out.status.success(), "{bad} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("send it as a string"), "{err}");
    }

    // Binary from a Rust producer prints losslessly; --raw writes the payload bytes as they are.
    #[derive(serde::Serialize)]
    struct Blob {
        data: bytes::Bytes,
    }
    let conn = connect(&redis).await;
    Producer::new(conn).publish("blobs", &Blob { data: bytes::Bytes::from_static(&[0, 159, 146, 150]) }).await.unwrap();
    let out = run(&redis, &["tail", "blobs", "--from", "0", "--count", "1"]);
    let printed: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(printed["payload"], serde_json::json!({"data": {"$base64": "AJ+Slg=="}}));
    let out = run(&redis, &["tail", "blobs", "--from", "0", "--count", "1", "--raw"]);
    // MessagePack of {"data": bin [0, 159, 146, 150]}, then the newline.
    assert_eq!(out.stdout, b"\x81\xa4data\xc4\x04\x00\x9f\x92\x96\n");
}

#[tokio::test]
async fn a_cli_consumer_takes_over_a_dead_members_entries_at_once() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    admin.create_group("orders", "g", Position::Beginning).await.unwrap();
    let batch: Vec<Order> = (0..16).map(|id| Order { id, item: String::new() }).collect();
    Producer::new(conn.clone()).publish_batch("orders", &batch).await.unwrap();
    // A member took all 16 and died (SIGKILL) before acknowledging any.
    let key = format!("{}:{{orders}}", redis.namespace());
    redis.cli(&["XREADGROUP", "GROUP", "g", "dead", "COUNT", "16", "STREAMS", &key, ">"]);
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking({
        let mut cmd = cli(
            &redis,
            &[
                "consume",
                "orders",
                "--group",
                "g",
                "--create-group",
                "--consumer",
                "b",
                "--claim-idle",
                "1s",
                "--count",
                "16",
            ],
        );
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json_lines(&out).len(), 16);
    eprintln!("a CLI consumer took over 16 entries of a dead member in {took:?} (claim_idle 1 s)");
    // All at once after claim_idle, not one per sweep (before: one every ~16 s, the last after 272 s).
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

#[tokio::test]
async fn sigterm_stops_a_cli_consumer_gracefully() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    Producer::new(conn.clone()).publish("orders", &Order { id: 1, item: String::new() }).await.unwrap();
    let mut child = cli(&redis, &["consume", "orders", "--group", "g", "--create-group", "--consumer", "c"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["payload"]["id"], 1);
    let admin = Admin::new(conn.clone());
    wait_until(PATIENCE, "acknowledged", || async { admin.pending_count("orders", "g").await.unwrap() == 0 }).await;
    // What systemd and Kubernetes send.
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "a graceful exit, not 143: {status:?}");
    let consumers = admin.consumers("orders", "g").await.unwrap();
    assert!(consumers.iter().all(|c| c.name != "c"), "it left its group: {consumers:?}");
}

/// `trim` trims to what was asked, exactly, however long the stream (Redis caps an approximate
/// trim at 10,000 entries a call), and says what it kept and why.
#[tokio::test]
async fn trim_trims_to_what_was_asked_and_says_what_it_kept() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let key = |topic: &str| format!("{}:{{{topic}}}", redis.namespace());
    for chunk in (0..20_000u64).collect::<Vec<_>>().chunks(1000) {
        producer.publish_batch("big", chunk).await.unwrap();
    }
    assert!(fails(&redis, &["trim", "big", "--maxlen", "100"]).contains("without --safe?"), "asks first");
    let out = run(&redis, &["trim", "big", "--maxlen", "100", "--yes"]);
    assert_eq!(redis.cli(&["XLEN", &key("big")]).trim(), "100");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("removed 19900") && said.contains("100 remain"), "{said}");

    producer.publish_batch("small", &[1u64, 2, 3, 4]).await.unwrap();
    run(&redis, &["trim", "small", "--maxlen", "1", "--yes"]);
    assert_eq!(redis.cli(&["XLEN", &key("small")]).trim(), "1");

    // Safe: a group that read and acknowledged 2 of 5 keeps the other 3, no more.
    let admin = Admin::new(conn.clone());
    admin.create_group("safe", "billing", Position::Beginning).await.unwrap();
    producer.publish_batch("safe", &[1u64, 2, 3, 4, 5]).await.unwrap();
    let read = redis.cli(&["XREADGROUP", "GROUP", "billing", "c", "COUNT", "2", "STREAMS", &key("safe"), ">"]);
    let ids: Vec<&str> = read.lines().filter(|l| l.contains('-') && l.parse::<EntryId>().is_ok()).collect();
    assert_eq!(ids.len(), 2, "{read}");
    redis.cli(&["XACK", &key("safe"), "billing", ids[0], ids[1]]);
    let out = run(&redis, &["--output", "json", "trim", "safe", "--safe", "--maxlen", "0"]);
    let report = &json_lines(&out)[0];
    assert_eq!(report["removed"], 2, "{report}");
    assert_eq!(report["remaining"], 3, "{report}");
    assert_eq!(report["held_by"]["group"], "billing", "{report}");
    assert_eq!(redis.cli(&["XLEN", &key("safe")]).trim(), "3");
    let out = run(&redis, &["trim", "safe", "--safe", "--maxlen", "0"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("kept 3") && said.contains("billing"), "{said}");
}

/// `retention set | get | clear` manage the retention stored with a topic, which a running
/// producer then applies; `info` shows it; a plain (not `--safe`) one is confirmed first.
#[tokio::test]
async fn retention_is_set_shown_applied_and_cleared_with_the_cli() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    let producer = Producer::builder(conn.clone()).retention_refresh(Duration::from_millis(100)).build().unwrap();
    let batch: Vec<u64> = (0..300).collect();
    producer.publish_batch("metrics", &batch).await.unwrap();

    let said = |out: Output| String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(said(run(&redis, &["retention", "get", "metrics"])), "metrics: none (publishes do not trim it)");
    assert!(fails(&redis, &["retention", "get", "nosuchtopic"]).contains("topic `nosuchtopic` does not exist"));
    assert!(fails(&redis, &["retention", "set", "metrics", "--maxlen", "100"]).contains("without --safe?"));
    assert_eq!(admin.retention("metrics").await.unwrap(), None, "nothing set unasked");
    assert_eq!(
        said(run(&redis, &["retention", "set", "metrics", "--maxlen", "100", "--yes"])),
        "set the retention of metrics to max_len 100"
    );
    assert_eq!(admin.retention("metrics").await.unwrap(), Some(Retention::max_len(100)));
    wait_until(PATIENCE, "the running producer trims", || async {
        producer.publish_batch("metrics", &batch).await.unwrap();
        admin.len("metrics").await.unwrap() <= 200
    })
    .await;

    // Safe, by age, before the topic exists: no question asked.
    let out = run(&redis, &["--output", "json", "retention", "set", "audit", "--max-age", "7d", "--safe"]);
    assert_eq!(
        json_lines(&out)[0],
        serde_json::json!({"topic": "audit", "retention": "max_age 7d, safe", "topic_exists": false})
    );
    let week = Retention::max_age(Duration::from_secs(7 * 86_400)).safe();
    assert_eq!(admin.retention("audit").await.unwrap(), Some(week));
    let out = run(&redis, &["--output", "json", "retention", "get", "audit"]);
    assert_eq!(json_lines(&out)[0], serde_json::json!({"topic": "audit", "retention": "max_age 7d, safe"}));

    let info = json_lines(&run(&redis, &["--output", "json", "info", "metrics"]));
    let row = info.iter().find(|r| r["what"] == "retention").unwrap();
    assert_eq!(row["value"], "max_len 100", "{info:?}");

    assert_eq!(
        said(run(&redis, &["retention", "clear", "metrics"])),
        "cleared the retention of metrics; publishes no longer trim it"
    );
    assert_eq!(said(run(&redis, &["retention", "clear", "metrics"])), "metrics had no retention; nothing changed");
    assert_eq!(admin.retention("metrics").await.unwrap(), None);
}

/// Runs a command that must fail; returns its one line of standard error.
fn fails(redis: &TestRedis, args: &[&str]) -> String {
    let out = cli(redis, args).output().expect("run tributary");
    assert!(!out.status.success(), "tributary {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

/// Ordinary mistakes get one rule everywhere: say what does not exist, what does, and what to do.
#[tokio::test]
async fn ordinary_mistakes_get_errors_that_say_what_to_do() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    Producer::new(conn.clone()).publish("orders", &1u32).await.unwrap();
    let admin = Admin::new(conn.clone());
    admin.create_group("orders", "billing", Position::Beginning).await.unwrap();
    admin.create_group("orders", "shipping", Position::Beginning).await.unwrap();

    for args in [
        &["groups", "nosuchtopic"][..],
        &["consumers", "nosuchtopic", "g"],
        &["pending", "nosuchtopic", "g"],
        &["trim", "nosuchtopic", "--safe", "--maxlen", "0"],
        &["trim", "nosuchtopic", "--maxlen", "0"],
        &["dlq", "list", "nosuchtopic"],
    ] {
        let err = fails(&redis, args);
        assert!(err.contains("topic `nosuchtopic` does not exist") && err.contains("orders"), "{args:?}: {err}");
        assert!(!err.contains("ERR") && !err.contains("script"), "{args:?}: {err}");
    }
    for args in [&["pending", "orders", "nogroup"][..], &["consumers", "orders", "nogroup"]] {
        let err = fails(&redis, args);
        assert!(err.contains("group `nogroup` does not exist on `orders`"), "{args:?}: {err}");
        assert!(err.contains("billing, shipping") && err.contains("tributary group create orders nogroup"), "{err}");
        assert!(!err.contains("NOGROUP"), "{err}");
    }

    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = fails(&redis, &["--url", &format!("redis://127.0.0.1:{refused}"), "topics"]);
    assert!(err.contains("connection refused") && err.contains("is redis-server running"), "{err}");
    assert!(!err.contains("Os {"), "{err}");

    // Something that is not Redis: an HTTP-ish server that answers garbage.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let not_redis = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            use std::io::Write;
            let mut stream = stream;
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let err = fails(&redis, &["--url", &format!("redis://127.0.0.1:{not_redis}"), "topics"]);
    assert!(err.contains("does not answer as Redis"), "{err}");

    let err = fails(&redis, &["--url", "http://127.0.0.1:6379", "topics"]);
    assert!(err.contains("redis://") && err.contains("http"), "{err}");
}

/// A mistyped group name does not silently become a permanent group: `consume` says the group
/// does not exist, creates nothing, and joins it only with `--create-group`.
#[tokio::test]
async fn consume_does_not_create_a_mistyped_group_unless_asked() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    producer.publish("orders", &1u32).await.unwrap();
    let admin = Admin::new(conn.clone());
    admin.create_group("orders", "billing", Position::Beginning).await.unwrap();

    let err = fails(&redis, &["consume", "orders", "--group", "biling", "--consumer", "c", "--count", "1"]);
    assert!(err.contains("group `biling` does not exist on `orders` (groups: billing"), "{err}");
    assert!(err.contains("--create-group"), "{err}");
    let groups: Vec<String> = admin.groups("orders").await.unwrap().into_iter().map(|g| g.name).collect();
    assert_eq!(groups, ["billing"], "nothing created");

    // Asked for: created where `group create` would start it (`0`), and says so.
    let out =
        run(&redis, &["consume", "orders", "--group", "audit", "--create-group", "--consumer", "c", "--count", "1"]);
    assert_eq!(json_lines(&out)[0]["payload"], 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("created group `audit` on `orders` at 0"));

    // `group create` prints what it did.
    let out = run(&redis, &["group", "create", "orders", "shipping"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "created group shipping on orders at 0 (the beginning)");
    let out = run(&redis, &["group", "create", "orders", "shipping"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already exists"));
}

/// `tail` on a topic that does not exist waits for it (it may be created soon), and says so.
#[tokio::test]
async fn tail_on_a_missing_topic_says_it_waits_for_it() {
    let redis = TestRedis::start().await;
    // From `0`: the first message is seen whenever the tail starts reading, so one publish will do.
    let mut child = cli(&redis, &["tail", "later", "--from", "0", "--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("topic `later` does not exist yet; waiting for its first message"), "{line}");
    let conn = connect(&redis).await;
    Producer::new(conn).publish("later", &1u32).await.unwrap();
    let out = tokio::time::timeout(PATIENCE, tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()))
        .await
        .expect("the tail printed the message and exited")
        .unwrap();
    assert!(out.status.success());
    assert_eq!(json_lines(&out)[0]["payload"], 1);
}

/// Dead letters by reason and group; a malformed entry's fields as stored; a purge only when
/// confirmed.
#[tokio::test]
async fn dead_letters_can_be_filtered_seen_raw_and_purged_only_when_confirmed() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let key = format!("{}:{{orders}}", redis.namespace());
    redis.cli(&["XADD", &key, "*", "not", "an envelope"]);
    let producer = Producer::new(conn.clone());
    for id in 0..2 {
        producer.publish("orders", &Order { id, item: "bad".into() }).await.unwrap();
    }
    let reject = |_: Order, _: Context| std::future::ready(Err::<(), _>(HandlerError::reject("bad item")));
    let dlq = DeadLetters::new(conn.clone(), "orders").unwrap();
    for group in ["a", "b"] {
        let worker = Worker::builder(conn.clone(), group).on("orders", reject).build().unwrap().start();
        let want = if group == "a" { 3 } else { 6 };
        wait_until(PATIENCE, "dead letters", || async { dlq.count().await.unwrap() == want }).await;
        worker.shutdown().await;
    }

    let letters = json_lines(&run(
        &redis,
        &["--output", "json", "dlq", "list", "orders", "--reason", "rejected", "--group", "a"],
    ));
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(letters.iter().all(|l| l["reason"] == "rejected" && l["group"] == "a"), "{letters:?}");
    let raw = json_lines(&run(&redis, &["dlq", "list", "orders", "--reason", "malformed", "--raw"]));
    assert_eq!(raw.len(), 2, "one per group: {raw:?}");
    assert_eq!(raw[0]["fields"], serde_json::json!({ "not": "an envelope" }), "{raw:?}");

    let out =
        run(&redis, &["--output", "json", "dlq", "replay", "orders", "--all", "--group", "b", "--reason", "rejected"]);
    assert_eq!(json_lines(&out)[0]["replayed"], 2);
    assert_eq!(dlq.count().await.unwrap(), 4);
    // `--all` leaves malformed ones (they would only be dead-lettered again) unless asked.
    let out = run(&redis, &["--output", "json", "dlq", "replay", "orders", "--all", "--group", "a"]);
    assert_eq!(json_lines(&out)[0]["replayed"], 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--reason malformed"));
    let left = json_lines(&run(&redis, &["--output", "json", "dlq", "list", "orders"]));
    assert!(left.len() == 2 && left.iter().all(|l| l["reason"] == "malformed"), "{left:?}");

    let err = fails(&redis, &["dlq", "purge", "orders"]);
    assert!(err.contains("Delete all 2 dead letters of `orders`?") && err.contains("--yes"), "{err}");
    assert_eq!(dlq.count().await.unwrap(), 2, "nothing purged");
    let out = run(&redis, &["--output", "json", "dlq", "purge", "orders", "--yes"]);
    assert_eq!(json_lines(&out)[0]["purged"], 2);

    let err = fails(&redis, &["group", "delete", "orders", "a"]);
    assert!(err.contains("Delete group `a` of `orders`") && err.contains("--yes"), "{err}");
    run(&redis, &["group", "delete", "orders", "a", "--yes"]);
    let groups: Vec<String> = Admin::new(conn).groups("orders").await.unwrap().into_iter().map(|g| g.name).collect();
    assert_eq!(groups, ["b"]);
}

/// Publishing from standard input takes pretty-printed documents too; one that does not parse
/// publishes nothing unless `--continue`, and the error says which document and line.
#[tokio::test]
async fn stdin_publishing_takes_pretty_json_and_a_bad_document_publishes_nothing() {
    use std::io::Write;
    let redis = TestRedis::start().await;
    let key = format!("{}:{{docs}}", redis.namespace());
    let input = "{\"id\":1,\"item\":\"a\"}\n{\n  \"id\": 2,\n  \"item\": \"b\"\n}\n\n{\"id\": oops}\n{\"id\":4,\"item\":\"d\"}\n";
    let publish = |extra: &[&str]| {
        let mut args = vec!["publish", "docs"];
        args.extend_from_slice(extra);
        let mut child =
            cli(&redis, &args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = publish(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("document 3 (line 7, column 8)") && err.contains("nothing was published"), "{err}");
    assert_eq!(redis.cli(&["EXISTS", &key]).trim(), "0", "nothing published");

    let out = publish(&["--continue"]);
    assert!(!out.status.success(), "the bad one still fails the run");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3, "three entry ids");
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped document 3"));
    let conn = connect(&redis).await;
    let got = Replay::new(conn).range("docs", Position::Beginning, Position::End).unwrap().collect(10).await.unwrap();
    let ids: Vec<u64> = got.iter().map(|r| r.envelope.as_ref().unwrap().decode::<Order>().unwrap().id).collect();
    assert_eq!(ids, [1, 2, 4]);

    // The rest of a broken pretty-printed document is not taken for documents of its own.
    let broken = "{\n  \"id\": 5,,\n  \"item\": {\n    \"sku\": \"x\"\n  }\n}\n{\"id\":6,\"item\":\"f\"}\n";
    let mut child = cli(&redis, &["publish", "docs", "--continue"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(broken.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1, "only the good document");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 documents did not parse"));
}

/// The everyday commands: one topic at a glance, one message by id, shell completions, and an
/// RPC call to a service nobody serves, which says so at once and writes nothing.
#[tokio::test]
async fn info_get_completions_and_a_call_to_a_service_nobody_serves() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let first = producer.publish("orders", &Order { id: 1, item: "a".into() }).await.unwrap();
    let last = producer.publish("orders", &Order { id: 2, item: "b".into() }).await.unwrap();
    Admin::new(conn.clone()).create_group("orders", "billing", Position::Beginning).await.unwrap();

    let info = json_lines(&run(&redis, &["--output", "json", "info", "orders"]));
    let value = |what: &str| info.iter().find(|r| r["what"] == what).map(|r| r["value"].clone()).unwrap();
    assert_eq!(value("length"), 2);
    assert!(value("first").as_str().unwrap().starts_with(&first.to_string()));
    assert!(value("last").as_str().unwrap().starts_with(&last.to_string()));
    assert!(value("group billing").as_str().unwrap().starts_with("lag 2, pending 0"), "{info:?}");

    let got = json_lines(&run(&redis, &["get", "orders", &last.to_string()]));
    assert_eq!(got[0]["payload"], serde_json::json!({"id": 2, "item": "b"}));
    assert!(fails(&redis, &["get", "orders", "1-1"]).contains("no entry `1-1` on topic `orders`"));

    let script = String::from_utf8(run(&redis, &["completions", "bash"]).stdout).unwrap();
    assert!(script.contains("_tributary()") && script.contains("completions"), "a bash completion script");

    let err = fails(&redis, &["rpc", "call", "nosuch", "method", "--timeout", "30s"]);
    assert!(err.contains("no server has ever read `rpc.nosuch`"), "{err}");
    let request_stream = format!("{}:{{rpc.nosuch}}", redis.namespace());
    assert_eq!(redis.cli(&["EXISTS", &request_stream]).trim(), "0", "no stream left behind");
}

/// `topics` lists topics first and RPC request streams apart, and topics that so far have only
/// scheduled messages.
#[tokio::test]
async fn topics_lists_rpc_request_streams_apart_and_scheduled_only_topics() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    producer.publish("orders", &1u32).await.unwrap();
    producer.publish("rpc.pricing", &1u32).await.unwrap();
    producer.publish_in("reminders", &1u32, Duration::from_secs(3600)).await.unwrap();
    let rows = json_lines(&run(&redis, &["--output", "json", "topics"]));
    let listed: Vec<(&str, &str, u64)> = rows
        .iter()
        .map(|r| (r["topic"].as_str().unwrap(), r["kind"].as_str().unwrap(), r["scheduled"].as_u64().unwrap()))
        .collect();
    assert_eq!(listed, [("orders", "topic", 0), ("reminders", "topic", 1), ("rpc.pricing", "rpc requests", 0)]);
}

/// Saved connections: added with a URL holding a password that no command prints; used as the
/// current one when no URL is given, or once with `--context`; the file is its owner's only.
#[tokio::test]
async fn contexts_save_connections_and_never_print_the_password() {
    let redis = TestRedis::start_private().await;
    redis.cli(&["CONFIG", "SET", "requirepass", "s3cret/pw"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("contexts.json");
    let url = format!("redis://:s3cret%2Fpw@127.0.0.1:{}", redis.port());
    // No REDIS_URL here: the context is what connects.
    let ctx = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tributary"));
        cmd.env_remove("REDIS_URL").env_remove("TRIBUTARY_NAMESPACE").env("TRIBUTARY_CONFIG", &config).args(args);
        cmd.output().unwrap()
    };
    let ok = |out: Output| {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let said = ok(ctx(&["context", "add", "prod", "--url", &url, "--namespace", "billing"]));
    let listed = ok(ctx(&["context", "list"]));
    for text in [&said, &listed] {
        assert!(!text.contains("s3cret"), "password printed: {text}");
    }
    assert!(listed.contains("prod") && listed.contains("billing") && listed.contains("***"), "{listed}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // The first context saved is the current one: used when no URL is given.
    ok(ctx(&["publish", "orders", "--json", "1"]));
    let conn = Connection::options().namespace("billing").connect(&url).await.unwrap();
    assert_eq!(Admin::new(conn).len("orders").await.unwrap(), 1, "published through the context, in its namespace");
    ok(ctx(&["context", "add", "other", "--url", "redis://127.0.0.1:1"]));
    ok(ctx(&["--context", "prod", "topics"]));
    let out = ctx(&["--context", "nope", "topics"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no context `nope` (contexts: other, prod"));
    let out = ctx(&["--context", "prod", "--url", &url, "topics"]);
    assert!(!out.status.success(), "--context and --url together are refused");
}

#[tokio::test]
async fn stats_shows_the_lag_of_a_group_nobody_consumes_and_rates_while_watching() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    Admin::new(conn.clone()).create_group("orders", "billing", Position::Beginning).await.unwrap();
    let producer = Producer::new(conn.clone());
    let batch: Vec<Order> = (0..5).map(|id| Order { id, item: String::new() }).collect();
    producer.publish_batch("orders", &batch).await.unwrap();

    let rows = json_lines(&run(&redis, &["--output", "json", "stats", "orders", "--interval", "100ms"]));
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!((row["topic"].as_str(), row["group"].as_str()), (Some("orders"), Some("billing")));
    assert_eq!((row["length"].as_u64(), row["lag"].as_u64(), row["pending"].as_u64()), (Some(5), Some(5), Some(0)));
    assert_eq!(row["in_per_s"].as_f64(), Some(0.0), "nothing published during the interval");
    let table = String::from_utf8(run(&redis, &["stats", "--interval", "100ms"]).stdout).unwrap();
    let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let lines: Vec<Vec<String>> = table.lines().map(words).collect();
    assert_eq!(lines[0][..6], ["TOPIC", "GROUP", "LENGTH", "IN_PER_S", "OUT_PER_S", "LAG"], "{table}");
    assert!(lines.iter().any(|l| l[..3] == ["orders", "billing", "5"] && l[5] == "5"), "{table}");

    // Watching while a worker drains the topic: entries go out, and the lag falls to 0.
    let watch = cli(&redis, &["--output", "json", "stats", "orders", "--watch", "--interval", "200ms"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut watch = KillOnDrop(watch);
    let lines = BufReader::new(watch.0.stdout.take().unwrap()).lines();
    let (tx, mut rows) = tokio::sync::mpsc::unbounded_channel::<Value>();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    let first = next_row(&mut rows).await;
    assert_eq!((first["lag"].as_u64(), first["out_per_s"].as_f64()), (Some(5), Some(0.0)), "{first}");
    let worker = Worker::builder(conn.clone(), "billing").on("orders", |_o: Order, _ctx: Context| async { Ok(()) });
    let worker = worker.build().unwrap().start();
    let (mut went_out, mut at) = (0.0, sampled_at(&first));
    loop {
        let row = next_row(&mut rows).await;
        // Rates are per second between two samples (rounded to 0.1).
        went_out +=
            row["out_per_s"].as_f64().expect("a rate") * sampled_at(&row).duration_since(at).unwrap().as_secs_f64();
        at = sampled_at(&row);
        if row["lag"].as_u64() == Some(0) && row["pending"].as_u64() == Some(0) {
            break;
        }
    }
    assert!((went_out - 5.0_f64).abs() < 0.5, "5 entries went out: {went_out}");
    worker.shutdown().await;
}

/// When a `stats` row was sampled.
fn sampled_at(row: &Value) -> std::time::SystemTime {
    humantime::parse_rfc3339(row["sampled_at"].as_str().expect("sampled_at")).expect("an RFC 3339 time")
}

/// The next row `stats --watch` printed.
async fn next_row(rows: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(PATIENCE, rows.recv()).await.expect("a round").expect("a line")
}

/// A child process killed when the test is done with it, or fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_partitioned_topic_is_created_and_its_partitions_shown_with_the_cli() {
    let redis = TestRedis::start().await;
    let said = |out: Output| String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        said(run(&redis, &["topic", "create", "orders", "--partitions", "4"])),
        "created topic orders with 4 partitions"
    );
    assert_eq!(
        said(run(&redis, &["topic", "create", "orders", "--partitions", "4"])),
        "topic orders already has 4 partitions; left as it was"
    );
    assert!(fails(&redis, &["topic", "create", "orders", "--partitions", "8"]).contains("it has 4 partitions"));
    // Listed before anything was published; a group created by the CLI is on every partition.
    let topics = json_lines(&run(&redis, &["--output", "json", "topics"]));
    assert_eq!(topics[0]["topic"], "orders");
    assert_eq!(topics[0]["kind"], "4 partitions");
    run(&redis, &["group", "create", "orders", "billing"]);
    run(&redis, &["publish", "orders", "--key", "customer-42", "--json", r#"{"id":1,"item":"tea"}"#]);
    let groups = json_lines(&run(&redis, &["--output", "json", "groups", "orders"]));
    let partitions: Vec<&str> = groups.iter().map(|g| g["partition"].as_str().unwrap()).collect();
    assert_eq!(partitions, ["-", "0", "1", "2", "3"], "{groups:?}");
    assert!(groups.iter().all(|g| g["group"] == "billing"));
    // customer-42 is in partition crc32 mod 4 = 1, unread by billing.
    assert_eq!(groups[2]["lag"], 1, "{groups:?}");
    assert_eq!(groups.iter().filter(|g| g["lag"] == 0).count(), 4);
    let stats = json_lines(&run(&redis, &["--output", "json", "stats", "--interval", "100ms"]));
    let rows: Vec<(&str, u64)> =
        stats.iter().map(|s| (s["topic"].as_str().unwrap(), s["length"].as_u64().unwrap())).collect();
    assert_eq!(rows, [("orders", 0), ("orders#0", 0), ("orders#1", 1), ("orders#2", 0), ("orders#3", 0)]);
    // One partition by its name.
    let one = json_lines(&run(&redis, &["--output", "json", "groups", "orders#1"]));
    assert_eq!(one[0]["lag"], 1);

    // The topic's figures are its partitions' together.
    run(&redis, &["publish", "orders", "--key", "order-1", "--json", r#"{"id":2,"item":"cake"}"#]);
    let topics = json_lines(&run(&redis, &["--output", "json", "topics"]));
    assert_eq!((topics[0]["length"].as_u64(), topics[0]["groups"].as_u64()), (Some(2), Some(1)), "{topics:?}");
    // tail follows every partition; get finds an entry in its partition.
    let tailed = json_lines(&run(&redis, &["tail", "orders", "--from", "0", "--count", "2"]));
    let mut ids: Vec<i64> = tailed.iter().map(|m| m["payload"]["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2], "{tailed:?}");
    let entry = tailed.iter().find(|m| m["payload"]["id"] == 2).unwrap()["entry_id"].as_str().unwrap().to_owned();
    let got = json_lines(&run(&redis, &["get", "orders", &entry]));
    assert_eq!(got[0]["payload"]["item"], "cake");
    // An entry read by a member and not acknowledged: pending, consumers and info show where.
    let p1 = format!("{}:{{orders#1}}", redis.namespace());
    redis.cli(&["XREADGROUP", "GROUP", "billing", "m1", "COUNT", "1", "STREAMS", &p1, ">"]);
    let pending = json_lines(&run(&redis, &["--output", "json", "pending", "orders", "billing"]));
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!((pending[0]["partition"].as_str(), pending[0]["consumer"].as_str()), (Some("1"), Some("m1")));
    let consumers = json_lines(&run(&redis, &["--output", "json", "consumers", "orders", "billing"]));
    assert_eq!(consumers.len(), 1, "{consumers:?}");
    assert_eq!((consumers[0]["partition"].as_str(), consumers[0]["pending"].as_u64()), (Some("1"), Some(1)));
    let info = json_lines(&run(&redis, &["--output", "json", "info", "orders"]));
    let value = |what: &str| info.iter().find(|r| r["what"] == what).map(|r| r["value"].clone()).unwrap();
    assert_eq!((value("partitions"), value("length")), (serde_json::json!(4), serde_json::json!(2)));
    let billing = value("group billing");
    assert!(
        billing.as_str().unwrap().starts_with("lag 1, pending 1, over every partition; consumers: m1 (1 pending)"),
        "{billing}"
    );
    // trim --safe trims each partition, and keeps what billing still needs.
    let trimmed = json_lines(&run(&redis, &["--output", "json", "trim", "orders", "--maxlen", "0", "--safe"]));
    let rows: Vec<(&str, u64)> =
        trimmed.iter().map(|t| (t["partition"].as_str().unwrap(), t["remaining"].as_u64().unwrap())).collect();
    assert_eq!(rows, [("-", 0), ("0", 0), ("1", 1), ("2", 0), ("3", 1)], "{trimmed:?}");
}
