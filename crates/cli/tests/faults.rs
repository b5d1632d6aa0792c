//! Worker processes (the `tributary consume` binary) SIGKILLed at random moments while
//! messages flow: every message is handled at least once; duplicates are counted and bounded.
//!
//! Quick by default (3,000 messages, runs in CI). The long variant:
//! `TRIBUTARY_FAULT_MESSAGES=100000 cargo test --release -p tributary-cli --test faults -- --nocapture`

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tributary::prelude::*;
use tributary_testkit::TestRedis;

#[derive(Debug, serde::Serialize, serde::Deserialize, Clone)]
struct Order {
    id: u64,
}

type Counts = Arc<Mutex<HashMap<u64, u32>>>;

fn spawn_consumer(redis: &TestRedis, name: &str, counts: &Counts) -> (Child, std::thread::JoinHandle<()>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .env("REDIS_URL", redis.url())
        .env("TRIBUTARY_NAMESPACE", redis.namespace())
        .args(["consume", "orders", "--create-group", "--group", "g", "--consumer", name, "--claim-idle", "1s"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start a consumer process");
    let out = child.stdout.take().unwrap();
    let counts = counts.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let line: Value = serde_json::from_str(&line).expect("a JSON line");
            *counts.lock().unwrap().entry(line["payload"]["id"].as_u64().unwrap()).or_default() += 1;
        }
    });
    (child, reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_killed_at_random_lose_no_message() {
    let total: u64 = std::env::var("TRIBUTARY_FAULT_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let redis = TestRedis::start().await;
    let conn = Connection::options().namespace(redis.namespace()).connect(&redis.url()).await.unwrap();
    Admin::new(conn.clone()).create_group("orders", "g", Position::Beginning).await.unwrap();
    let counts: Counts = Arc::new(Mutex::new(HashMap::new()));

    // Messages flow in, spread over several seconds, while consumers die and come back.
    let per_tick = (total / 300).max(10);
    let publisher = {
        let producer = Producer::new(conn.clone());
        tokio::spawn(async move {
            let mut next = 0;
            while next < total {
                let batch: Vec<Order> = (next..(next + per_tick).min(total)).map(|id| Order { id }).collect();
                producer.publish_batch("orders", &batch).await.unwrap();
                next += batch.len() as u64;
                tokio::time::sleep(Duration::from_millis(20)).await; // pacing: messages spread over seconds
            }
        })
    };
    let names = ["c0", "c1", "c2"];
    let mut procs: Vec<(Child, std::thread::JoinHandle<()>)> =
        names.iter().map(|n| spawn_consumer(&redis, n, &counts)).collect();
    let started = Instant::now();
    let mut kills = 0;
    let admin = Admin::new(conn.clone());
    loop {
        let done = counts.lock().unwrap().len() as u64 == total && publisher.is_finished();
        if done && admin.pending_count("orders", "g").await.unwrap() == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "not finished after 5 minutes");
        // Kill a random consumer at a random moment (at most 20 kills), then start it again
        // under the same name: it recovers its own pending entries, others may reclaim them.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(100..400))).await; // the fault's random moment
        if kills < 40 && !done {
            let i = fastrand::usize(..names.len());
            let (mut child, reader) = std::mem::replace(&mut procs[i], spawn_consumer(&redis, names[i], &counts));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            reader.join().unwrap();
            kills += 1;
        }
    }
    for (mut child, reader) in procs {
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
    }
    let counts = counts.lock().unwrap();
    let duplicates: u64 = counts.values().map(|c| u64::from(c - 1)).sum();
    let most = counts.values().max().copied().unwrap_or(0);
    eprintln!(
        "process kills: {total} messages, {kills} SIGKILLs, all handled; {duplicates} duplicate deliveries, \
         at most {most} per message, in {:?}",
        started.elapsed()
    );
    assert_eq!(counts.len() as u64, total, "every message handled at least once");
    // A kill can strand at most what that consumer held (max_in_flight 16) plus one line being
    // printed; each stranded message is delivered once more.
    assert!(duplicates <= kills * 17, "{duplicates} duplicates for {kills} kills");
}
