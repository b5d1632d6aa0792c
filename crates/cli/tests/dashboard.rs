//! `tributary dashboard` as an operator runs it, against a real redis-server: its API over
//! HTTP (what the page shows and does), and its safety: read-only unless asked, actions only
//! with their header, a token when it has one, none of the Redis password.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{connect, dashboard, drain_refusing_order_1, run_until_settled, Dashboard, Order};
use tributary::prelude::*;
use tributary_testkit::{http, wait_until, HttpResponse, TestRedis};

const PATIENCE: Duration = Duration::from_secs(30);

fn get(d: &Dashboard, path: &str) -> Value {
    let r = http("GET", &d.addr, path, &[], "").unwrap();
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

fn post(d: &Dashboard, path: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    http("POST", &d.addr, path, &all, body).unwrap()
}

/// The overview's row of `topic` once a sample satisfies `ready`.
async fn topic_row(d: &Dashboard, topic: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let mut row = Value::Null;
    wait_until(PATIENCE, &format!("the overview's row of {topic}"), || {
        let overview = get(d, "/api/overview");
        row = overview["topics"].as_array().unwrap().iter().find(|t| t["topic"] == topic).cloned().unwrap_or_default();
        let ok = !row.is_null() && ready(&row);
        async move { ok }
    })
    .await;
    row
}

#[tokio::test]
async fn the_dashboard_shows_lag_and_dead_letters_and_replays_only_when_allowed() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    Admin::new(conn.clone()).create_group("orders", "billing", Position::Beginning).await.unwrap();
    let producer = Producer::new(conn.clone());
    for id in 0..3 {
        producer.publish("orders", &Order { id }).await.unwrap();
    }

    // No worker: the overview shows the group's lag.
    let read_only = dashboard(&redis, &["--interval", "200ms"]);
    let page = http("GET", &read_only.addr, "/", &[], "").unwrap();
    assert!(page.body.contains("<script src=\"/app.js\">"), "{}", page.body);
    let js = http("GET", &read_only.addr, "/app.js", &[], "").unwrap();
    assert_eq!(js.status, 200);
    let elsewhere = js.body.replace("http://www.w3.org/2000/svg", "");
    assert!(!elsewhere.contains("http://") && !elsewhere.contains("https://"), "nothing loaded from elsewhere");
    let row = topic_row(&read_only, "orders", |r| r["groups"][0]["lag"] == 3).await;
    assert_eq!((row["length"].as_u64(), row["groups"][0]["name"].as_str()), (Some(3), Some("billing")));

    // A worker that refuses order 1: a dead letter, listed and readable in full.
    drain_refusing_order_1(&conn, 3).await;
    let row = topic_row(&read_only, "orders", |r| r["dead_letters"] == 1 && r["groups"][0]["lag"] == 0).await;
    assert_eq!(row["groups"][0]["pending"], 0);
    let letters = get(&read_only, "/api/topics/orders/dead-letters");
    let letters = letters["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0]["reason"].as_str(), letters[0]["group"].as_str()), (Some("rejected"), Some("billing")));
    let id = letters[0]["id"].as_str().unwrap().to_owned();
    let letter = get(&read_only, &format!("/api/topics/orders/dead-letters/{id}"));
    assert_eq!(letter["error"], "order 1 is refused");
    assert_eq!(letter["message"]["payload"]["id"], 1, "the payload decoded: {letter}");
    let history = get(&read_only, "/api/topics/orders/history");
    assert!(history["points"].as_array().unwrap().len() >= 2, "points for the charts: {history}");

    // Read-only refuses to replay, and the dead letter stays.
    let body = format!(r#"{{"ids":["{id}"]}}"#);
    let refused = post(&read_only, "/api/topics/orders/dead-letters/replay", &[("X-Tributary-Action", "1")], &body);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("--allow-actions"), "{}", refused.body);
    let dlq = DeadLetters::new(conn.clone(), "orders").unwrap();
    assert_eq!(dlq.count().await.unwrap(), 1);

    // With actions allowed: not without the action header (a cross-site form cannot send it),
    // then replayed onto the topic.
    let writable = dashboard(&redis, &["--interval", "200ms", "--allow-actions"]);
    let no_header = post(&writable, "/api/topics/orders/dead-letters/replay", &[], &body);
    assert_eq!(no_header.status, 400, "{}", no_header.body);
    assert_eq!(dlq.count().await.unwrap(), 1);
    let replayed = post(&writable, "/api/topics/orders/dead-letters/replay", &[("X-Tributary-Action", "1")], &body);
    assert_eq!(replayed.status, 200, "{}", replayed.body);
    assert_eq!(serde_json::from_str::<Value>(&replayed.body).unwrap()["replayed"], 1);
    assert_eq!(dlq.count().await.unwrap(), 0);
    assert_eq!(Admin::new(conn.clone()).len("orders").await.unwrap(), 4, "back on the topic");
}

#[tokio::test]
async fn a_dashboard_with_a_token_answers_only_with_it_and_refuses_the_network_without_one() {
    let redis = TestRedis::start().await;
    let d = dashboard(&redis, &["--token", "s3cret-token"]);
    // The page itself holds no data.
    assert_eq!(http("GET", &d.addr, "/", &[], "").unwrap().status, 200);
    let without = http("GET", &d.addr, "/api/overview", &[], "").unwrap();
    assert_eq!(without.status, 401, "{}", without.body);
    let wrong = http("GET", &d.addr, "/api/overview", &[("Authorization", "Bearer s3cret-tokeN")], "").unwrap();
    assert_eq!(wrong.status, 401);
    let with = http("GET", &d.addr, "/api/config", &[("Authorization", "Bearer s3cret-token")], "").unwrap();
    assert_eq!(with.status, 200, "{}", with.body);
    assert!(!with.body.contains(&redis.url()) && !with.body.contains("redis://"), "no URL: {}", with.body);
    // Which server the figures come from (Redis or Valkey, and its version).
    assert!(with.body.contains(r#""server":"Redis "#) || with.body.contains(r#""server":"Valkey "#), "{}", with.body);

    // Beyond loopback without a token: refused before listening.
    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .env("REDIS_URL", redis.url())
        .env_remove("TRIBUTARY_DASHBOARD_TOKEN")
        .args(["dashboard", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("needs a token"), "{said}");
}

#[tokio::test]
async fn without_a_token_only_requests_addressed_to_this_machine_are_answered() {
    let redis = TestRedis::start().await;
    let d = dashboard(&redis, &[]);
    // A page elsewhere whose name was rebound to 127.0.0.1 sends its own name as the host.
    let rebound = http("GET", &d.addr, "/api/overview", &[("Host", "attacker.example:8080")], "").unwrap();
    assert_eq!(rebound.status, 403, "{}", rebound.body);
    let local = http("GET", &d.addr, "/api/overview", &[("Host", "localhost:8080")], "").unwrap();
    assert_eq!(local.status, 200, "{}", local.body);
    // Every answer forbids framing and loading from elsewhere.
    let page = http("GET", &d.addr, "/", &[], "").unwrap();
    assert_eq!(page.status, 200);
    let head = page.head.to_ascii_lowercase();
    assert!(head.contains("content-security-policy: default-src 'self'; frame-ancestors 'none'"), "{head}");
    assert!(head.contains("x-frame-options: deny"), "{head}");
    assert!(!d.stderr.lock().unwrap().contains("redis://"), "no URL in the log");
}

#[tokio::test]
async fn the_dashboard_shows_a_group_its_pending_entries_one_entry_and_cancels_scheduled_messages() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let id = producer.publish("jobs", &Order { id: 7 }).await.unwrap();
    // A consumer that read the entry and died holding it.
    Admin::new(conn.clone()).create_group("jobs", "crunchers", Position::Beginning).await.unwrap();
    let key = conn.namespace().topic_stream(&tributary::Topic::new("jobs").unwrap());
    redis.cli(&["XREADGROUP", "GROUP", "crunchers", "gone-1", "COUNT", "1", "STREAMS", &key, ">"]);
    let scheduled = producer.message("jobs", &Order { id: 8 }).schedule_in(Duration::from_secs(3600)).await.unwrap();

    let read_only = dashboard(&redis, &["--interval", "200ms"]);
    let row = topic_row(&read_only, "jobs", |r| r["groups"][0]["pending"] == 1).await;
    assert_eq!(
        (row["groups"][0]["busy_consumers"].as_u64(), row["groups"][0]["consumers"].as_u64()),
        (Some(1), Some(1))
    );
    let group = get(&read_only, "/api/topics/jobs/groups/crunchers");
    assert_eq!(group["consumers"][0]["name"], "gone-1");
    assert_eq!(group["consumers"][0]["pending"], 1);
    assert_eq!(group["pending"][0]["id"], id.to_string());
    assert_eq!(
        (group["pending"][0]["consumer"].as_str(), group["pending"][0]["deliveries"].as_u64()),
        (Some("gone-1"), Some(1))
    );
    let entry = get(&read_only, &format!("/api/topics/jobs/messages/{id}"));
    assert_eq!(entry["payload"]["id"], 7, "{entry}");
    let missing = http("GET", &read_only.addr, "/api/topics/jobs/messages/1-1", &[], "").unwrap();
    assert_eq!(missing.status, 404, "{}", missing.body);
    let list = get(&read_only, "/api/topics/jobs/scheduled");
    assert_eq!(list["scheduled"][0]["id"], scheduled.as_str());
    assert_eq!(list["scheduled"][0]["payload"]["id"], 8);

    let body = format!(r#"{{"id":"{scheduled}"}}"#);
    let action = [("X-Tributary-Action", "1")];
    assert_eq!(post(&read_only, "/api/topics/jobs/scheduled/cancel", &action, &body).status, 403);
    let scheduler = Scheduler::new(conn.clone());
    assert_eq!(scheduler.count("jobs").await.unwrap(), 1);
    let writable = dashboard(&redis, &["--interval", "200ms", "--allow-actions"]);
    let cancelled = post(&writable, "/api/topics/jobs/scheduled/cancel", &action, &body);
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(scheduler.count("jobs").await.unwrap(), 0);
}

#[tokio::test]
async fn dead_letters_are_filtered_by_reason_and_group_and_replayed_by_filter() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    for id in 0..3 {
        producer.publish("orders", &Order { id }).await.unwrap();
    }
    // billing rejects order 1; audit gives up on order 2 after one delivery.
    drain_refusing_order_1(&conn, 3).await;
    let audit =
        Worker::builder(conn.clone(), "audit").max_deliveries(1).on("orders", |o: Order, _ctx: Context| async move {
            if o.id == 2 {
                return Err(HandlerError::retry("audit store down"));
            }
            Ok(())
        });
    run_until_settled(audit, 3).await;

    let d = dashboard(&redis, &["--allow-actions"]);
    let reasons = |path: &str| -> Vec<String> {
        let listed = get(&d, path);
        listed["dead_letters"].as_array().unwrap().iter().map(|l| l["reason"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(reasons("/api/topics/orders/dead-letters").len(), 2);
    assert_eq!(reasons("/api/topics/orders/dead-letters?reason=rejected"), ["rejected"]);
    assert_eq!(reasons("/api/topics/orders/dead-letters?group=audit"), ["max_deliveries"]);
    assert!(reasons("/api/topics/orders/dead-letters?group=audit&reason=rejected").is_empty());

    // Replaying all of one group's leaves the other's.
    let action = [("X-Tributary-Action", "1")];
    let replayed = post(&d, "/api/topics/orders/dead-letters/replay", &action, r#"{"all":true,"group":"audit"}"#);
    assert_eq!(replayed.status, 200, "{}", replayed.body);
    assert_eq!(serde_json::from_str::<Value>(&replayed.body).unwrap()["replayed"], 1);
    assert_eq!(reasons("/api/topics/orders/dead-letters"), ["rejected"]);
}

#[tokio::test]
async fn the_redis_password_reaches_neither_the_page_nor_the_log() {
    let pw = "right-horse-battery";
    let redis = TestRedis::start_with(tributary_testkit::ServerOptions::new().arg("requirepass", pw)).await;
    let url = format!("redis://:{pw}@127.0.0.1:{}", redis.port());
    let conn = Connection::options().namespace(redis.namespace()).connect(&url).await.unwrap();
    Producer::new(conn.clone()).publish("orders", &Order { id: 1 }).await.unwrap();
    let d = support::dashboard_at(&url, &redis.namespace(), &["--allow-actions", "-v"]);
    let row = topic_row(&d, "orders", |r| r["length"] == 1).await;
    assert_eq!(row["topic"], "orders");
    let mut seen = String::new();
    for path in [
        "/",
        "/app.js",
        "/api/config",
        "/api/overview",
        "/api/topics/orders/dead-letters",
        "/api/topics/not%20a%20topic/dead-letters",
    ] {
        seen.push_str(&http("GET", &d.addr, path, &[], "").unwrap().body);
    }
    seen.push_str(
        &post(&d, "/api/topics/orders/dead-letters/replay", &[("X-Tributary-Action", "1")], r#"{"ids":["1-1"]}"#).body,
    );
    seen.push_str(&d.stderr.lock().unwrap());
    assert!(!seen.contains(pw) && !seen.contains("horse"), "the password leaked: {seen}");
}

#[tokio::test]
async fn topics_named_dot_and_dot_dot_are_reachable_as_the_page_addresses_them() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    for topic in [".", ".."] {
        Producer::new(conn.clone()).publish(topic, &Order { id: 1 }).await.unwrap();
    }
    let d = dashboard(&redis, &["--interval", "200ms"]);
    topic_row(&d, "..", |r| r["length"] == 1).await;
    // The page puts a `~` before a topic's name in its API paths: no `.` or `..` segment for the
    // browser to remove.
    for (segment, topic) in [("~.", "."), ("~..", ".."), ("~orders", "orders")] {
        let listed = get(&d, &format!("/api/topics/{segment}/dead-letters"));
        assert_eq!(listed["topic"], topic);
    }
    let history = get(&d, "/api/topics/~../history");
    assert_eq!(history["topic"], "..");
}

/// What operators do while the dashboard runs: delete a topic's stream, then restart Redis
/// without persistence (everything gone). The dashboard says while Redis is away, drops what is
/// gone, and shows what is published after, without being restarted itself.
#[tokio::test]
async fn the_dashboard_follows_a_deleted_topic_and_a_restart_without_persistence() {
    let redis = TestRedis::start_private().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    producer.publish("orders", &Order { id: 1 }).await.unwrap();
    producer.publish("audit", &Order { id: 2 }).await.unwrap();
    let d = dashboard(&redis, &["--interval", "200ms"]);
    topic_row(&d, "audit", |r| r["length"] == 1).await;

    // The operator deletes the stream of `audit`: it leaves the overview; `orders` stays.
    redis.cli(&["DEL", &format!("{}:{{audit}}", redis.namespace())]);
    wait_until(PATIENCE, "audit gone from the overview", || {
        let overview = get(&d, "/api/overview");
        let names: Vec<String> =
            overview["topics"].as_array().unwrap().iter().map(|t| t["topic"].as_str().unwrap().to_owned()).collect();
        async move { !names.contains(&"audit".to_owned()) && names.contains(&"orders".to_owned()) }
    })
    .await;

    // Redis goes away: the overview says sampling fails (and keeps the last figures).
    redis.kill();
    wait_until(PATIENCE, "the overview to say sampling fails", || {
        let overview = get(&d, "/api/overview");
        async move { overview["error"].is_string() }
    })
    .await;

    // Back without its data: the error clears, `orders` is gone, a new publish shows.
    redis.restart().await;
    let producer = Producer::new(connect(&redis).await);
    producer.publish("payments", &Order { id: 3 }).await.unwrap();
    topic_row(&d, "payments", |r| r["length"] == 1).await;
    let overview = get(&d, "/api/overview");
    assert!(overview["error"].is_null(), "{overview}");
    let names: Vec<&str> =
        overview["topics"].as_array().unwrap().iter().map(|t| t["topic"].as_str().unwrap()).collect();
    assert_eq!(names, ["payments"], "what the restart lost is not shown: {overview}");
    assert_eq!(get(&d, "/api/config")["namespace"], redis.namespace().as_str());
}
