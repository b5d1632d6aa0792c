//! The same code on a real local Redis Cluster (`redis-server --cluster-enabled yes`
//! processes): no CROSSSLOT anywhere, topic discovery across primaries, and a failover that
//! consumers, producers and RPC ride through.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tributary::prelude::*;
use tributary::{ErrorKind, MsgPack, WorkerHandle};
use tributary_testkit::{wait_until, TestCluster};

const PATIENCE: Duration = Duration::from_secs(60);

/// One cluster test at a time: each runs six or nine `redis-server` processes and kills some,
/// and two at once on a 2-core machine starve each other (a healthy topic's publishes once
/// stalled 537 ms in CI, against 17-37 ms alone, where the failover test allows 500 ms).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Msg {
    n: u64,
}

type Seen = Arc<Mutex<Vec<(String, u64)>>>;

fn recording(seen: &Seen) -> impl Fn(Msg, Context) -> std::future::Ready<Result<(), HandlerError>> + Clone {
    let seen = seen.clone();
    move |m: Msg, ctx: Context| {
        if m.n == 666 {
            return std::future::ready(Err(HandlerError::reject("the number of the beast")));
        }
        seen.lock().unwrap().push((ctx.topic().to_owned(), m.n));
        std::future::ready(Ok(()))
    }
}

fn count(seen: &Seen, topic: &str) -> usize {
    seen.lock().unwrap().iter().filter(|s| s.0 == topic).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_works_on_a_three_primary_cluster() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let _ = tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_default()).try_init();
    let cluster = TestCluster::start(3, 0).await;
    let conn = Connection::options().namespace(cluster.namespace()).connect(&cluster.url()).await.unwrap();
    // The retention lives in the topic's slot, with its stream.
    Admin::new(conn.clone()).set_retention("audit", Retention::max_len(10).safe()).await.unwrap();
    let producer = Producer::builder(conn.clone()).safe_trim_every(10).build().unwrap();

    // Offline delivery, in order.
    for n in 0..300 {
        producer.publish("orders", &Msg { n }).await.unwrap();
    }
    // Topics spread over the primaries, for pattern discovery.
    let sensors = ["sensor.a", "sensor.b", "sensor.c", "sensor.d", "sensor.e"];
    let primaries: HashSet<u16> =
        sensors.iter().map(|t| cluster.primary_of(&format!("{}:{{{t}}}", cluster.namespace()))).collect();
    for t in sensors {
        producer.publish(t, &Msg { n: 1 }).await.unwrap();
    }
    // Idempotent publish, a dead letter, a scheduled message, safe retention.
    let a = producer.message("orders", &Msg { n: 300 }).idempotency_key("k").send().await.unwrap();
    let b = producer.message("orders", &Msg { n: 300 }).idempotency_key("k").send().await.unwrap();
    assert_eq!(a, b);
    producer.publish("orders", &Msg { n: 666 }).await.unwrap();
    producer.publish_in("orders", &Msg { n: 301 }, Duration::from_millis(200)).await.unwrap();
    // Safe retention protects what groups have not acknowledged: the group exists first.
    Admin::new(conn.clone()).create_group("audit", "g", Position::Beginning).await.unwrap();
    producer.publish_batch("audit", &(0..100).map(|n| Msg { n }).collect::<Vec<_>>()).await.unwrap();

    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("w")
        .concurrency(1)
        .pattern_refresh(Duration::from_millis(200))
        .on("orders", recording(&seen))
        .on("audit", recording(&seen))
        .on_pattern("sensor.*", recording(&seen))
        .build()
        .unwrap()
        .start();
    let dlq = DeadLetters::new(conn.clone(), "orders").unwrap();
    wait_until(PATIENCE, "everything handled", || {
        let done = count(&seen, "orders") == 302
            && count(&seen, "audit") == 100
            && sensors.iter().all(|t| count(&seen, t) == 1);
        if !done {
            tracing::debug!(
                orders = count(&seen, "orders"),
                audit = count(&seen, "audit"),
                sensors = sensors.iter().map(|t| count(&seen, t)).sum::<usize>(),
                "progress"
            );
        }
        let dlq = dlq.clone();
        async move { done && dlq.count().await.unwrap() == 1 }
    })
    .await;
    let orders: Vec<u64> = seen.lock().unwrap().iter().filter(|s| s.0 == "orders").map(|s| s.1).collect();
    assert_eq!(orders, (0..302).collect::<Vec<_>>(), "in order, the scheduled one last");
    assert_eq!(dlq.replay_all().await.unwrap().replayed, 1);
    assert!(primaries.len() > 1, "the sensor topics live on several primaries");
    let admin = Admin::new(conn.clone());
    let topics: Vec<String> = admin.topics().await.unwrap().into_iter().map(|t| t.to_string()).collect();
    assert!(sensors.iter().all(|t| topics.contains(&t.to_string())), "{topics:?}");
    wait_until(PATIENCE, "audit acked", || async { admin.pending_count("audit", "g").await.unwrap() == 0 }).await;
    let trimmed = admin.trim("audit", Retention::max_len(10).safe()).await.unwrap();
    assert_eq!((trimmed.removed, trimmed.remaining), (90, 10));

    // RPC: the request stream and the reply stream live in different slots.
    let server = RpcServer::builder(conn.clone(), "echo")
        .method("echo", |m: Msg, _ctx| async move { Ok::<_, RpcHandlerError>(m.n * 2) })
        .build()
        .unwrap()
        .start();
    let client = RpcClient::new(conn.clone());
    for n in 0..20 {
        assert_eq!(client.call::<_, u64>("echo", "echo", &Msg { n }).await.unwrap(), n * 2);
    }
    client.close().await.unwrap();
    server.shutdown().await;
    worker.shutdown().await;

    // Reclaim: a crashed consumer's entries go to a live one.
    for n in 0..20 {
        producer.publish("jobs", &Msg { n }).await.unwrap();
    }
    let held: Seen = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    let doomed = Worker::builder(conn.clone(), "g")
        .consumer_name("doomed")
        .max_in_flight(5)
        .on("jobs", move |m: Msg, _ctx: Context| {
            let h = h.clone();
            async move {
                h.lock().unwrap().push(("jobs".into(), m.n));
                std::future::pending::<()>().await;
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start();
    wait_until(PATIENCE, "the doomed worker holds five", || {
        let n = held.lock().unwrap().len();
        async move { n == 5 }
    })
    .await;
    drop(doomed);
    let rescued: Seen = Arc::new(Mutex::new(Vec::new()));
    let rescuer = Worker::builder(conn.clone(), "g")
        .consumer_name("rescuer")
        .claim_idle(Duration::from_millis(300))
        .on("jobs", recording(&rescued))
        .build()
        .unwrap()
        .start();
    wait_until(PATIENCE, "all jobs handled", || {
        let n = rescued.lock().unwrap().len();
        async move { n == 20 }
    })
    .await;
    rescuer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_producers_and_rpc_ride_through_a_failover() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = TestCluster::start(3, 1).await;
    let ns = cluster.namespace();
    let conn = Connection::options().namespace(ns.as_str()).connect(&cluster.url()).await.unwrap();
    let producer = Producer::new(conn.clone());
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let worker =
        Worker::builder(conn.clone(), "g").consumer_name("w").on("orders", recording(&seen)).build().unwrap().start();
    let server = RpcServer::builder(conn.clone(), "echo")
        .method("echo", |m: Msg, _ctx| async move { Ok::<_, RpcHandlerError>(m.n) })
        .build()
        .unwrap()
        .start();
    let client = RpcClient::builder(conn.clone()).default_timeout(Duration::from_secs(10)).build().unwrap();

    // Before: replicated publishes are confirmed by the primary's replica.
    let mut confirmed = Vec::new();
    for n in 0..100 {
        producer.message("orders", &Msg { n }).replicated(1, Duration::from_secs(2)).send().await.unwrap();
        confirmed.push(n);
    }
    assert_eq!(client.call::<_, u64>("echo", "echo", &Msg { n: 1 }).await.unwrap(), 1);
    wait_until(PATIENCE, "first hundred handled", || {
        let n = count(&seen, "orders");
        async move { n >= 100 }
    })
    .await;

    // Kill the primary that owns the topic; its replica takes over.
    let primary = cluster.primary_of(&format!("{ns}:{{orders}}"));
    cluster.kill(primary);
    cluster.wait_until_ok(PATIENCE).await;

    // After: publishing, consuming and RPC continue without restarting anything.
    for n in 100..200 {
        // Until the client has the new topology a publish may fail, but only retryably.
        wait_until(PATIENCE, "a publish accepted after the failover", || async {
            match producer.message("orders", &Msg { n }).replicated(0, Duration::from_millis(100)).send().await {
                Ok(_) => true,
                Err(e) => {
                    assert!(e.kind().is_retryable(), "{e:?}");
                    false
                }
            }
        })
        .await;
        confirmed.push(n);
    }
    wait_until(PATIENCE, "every confirmed publish handled", || {
        let got: HashSet<u64> = seen.lock().unwrap().iter().map(|s| s.1).collect();
        let all = confirmed.iter().all(|n| got.contains(n));
        async move { all }
    })
    .await;
    let answer = loop {
        match client.call::<_, u64>("echo", "echo", &Msg { n: 7 }).await {
            Ok(a) => break a,
            Err(e) => assert!(e.kind().is_retryable(), "{e:?}"),
        }
    };
    assert_eq!(answer, 7);
    client.close().await.unwrap();
    server.shutdown().await;
    worker.shutdown().await;
}

/// Publishes to `topic` one message at a time until `stop`, recording when each publish was
/// confirmed, into the returned list.
fn publish_steadily(
    producer: &Producer,
    topic: &'static str,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Arc<Mutex<Vec<std::time::Instant>>> {
    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let (producer, stop, record) = (producer.clone(), stop.clone(), confirmed.clone());
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            if producer.publish(topic, &Msg { n }).await.is_ok() {
                record.lock().unwrap().push(std::time::Instant::now());
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(2)).await; // a steady trickle
        }
    });
    confirmed
}

/// Waits until `confirmed` holds `n` more publishes than `after`.
async fn more_confirmed(
    confirmed: &Arc<Mutex<Vec<std::time::Instant>>>,
    after: std::time::Instant,
    n: usize,
    what: &str,
) {
    wait_until(PATIENCE, what, || {
        let count = confirmed.lock().unwrap().iter().filter(|at| **at > after).count();
        async move { count >= n }
    })
    .await;
}

/// `ROLE` of the node on `port` (`master` or `slave`, then details).
fn role(port: u16) -> String {
    let out = std::process::Command::new(tributary_testkit::cli_binary())
        .args(["-p", &port.to_string(), "ROLE"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the node on `port` is a primary, asked off the runtime's threads: a blocking
/// `redis-cli` run in a poll loop would hold up one of the test's two workers while it measures
/// stalls.
async fn is_primary(port: u16) -> bool {
    tokio::task::spawn_blocking(move || role(port)).await.unwrap().starts_with("master")
}

/// The port of the replica of the primary on `primary`.
fn replica_of(cluster: &TestCluster, primary: u16) -> u16 {
    *cluster
        .ports()
        .iter()
        .find(|p| {
            let role = role(**p);
            role.starts_with("slave") && role.lines().nth(2) == Some(primary.to_string().as_str())
        })
        .expect("the primary has a replica")
}

/// The longest time without a confirmed publish, from `from` on.
fn longest_gap(confirmed: &[std::time::Instant], from: std::time::Instant) -> Duration {
    let mut last = from;
    let mut gap = Duration::ZERO;
    for at in confirmed.iter().filter(|at| **at > from) {
        gap = gap.max(at.duration_since(last));
        last = *at;
    }
    gap
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_failover_does_not_pause_other_primaries_topics() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let _ = tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_default()).try_init();
    let cluster = TestCluster::start(3, 1).await;
    let ns = cluster.namespace();
    // A command timeout far beyond the bounds below: a publish that waited it out would show.
    let conn = Connection::options()
        .namespace(ns.as_str())
        .command_timeout(Duration::from_secs(30))
        .connect(&cluster.url())
        .await
        .unwrap();
    let producer = Producer::new(conn.clone());
    // Two topics on two different primaries.
    let topics: [&'static str; 8] = ["t.a", "t.b", "t.c", "t.d", "t.e", "t.f", "t.g", "t.h"];
    let victim = topics[0];
    let victim_primary = cluster.primary_of(&format!("{ns}:{{{victim}}}"));
    let healthy = *topics[1..]
        .iter()
        .find(|t| cluster.primary_of(&format!("{ns}:{{{t}}}")) != victim_primary)
        .expect("a topic on another primary");
    // A worker consuming both, recording when it handled each message, per topic.
    let handled: HashMap<&'static str, Arc<Mutex<Vec<std::time::Instant>>>> =
        [healthy, victim].into_iter().map(|t| (t, Arc::default())).collect();
    let mut worker = Worker::builder(conn.clone(), "g");
    for (topic, record) in &handled {
        let record = record.clone();
        worker = worker.on(*topic, move |_: Msg, _: Context| {
            record.lock().unwrap().push(std::time::Instant::now());
            std::future::ready(Ok::<(), HandlerError>(()))
        });
    }
    let worker = worker.build().unwrap().start();
    worker.ready().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let on_healthy = publish_steadily(&producer, healthy, &stop);
    let on_victim = publish_steadily(&producer, victim, &stop);
    let started = std::time::Instant::now();
    more_confirmed(&on_healthy, started, 20, "traffic on the healthy topic before the kill").await;
    more_confirmed(&on_victim, started, 20, "traffic on the victim's topic before the kill").await;
    more_confirmed(&handled[healthy], started, 20, "the healthy topic consumed before the kill").await;
    let replica = replica_of(&cluster, victim_primary);
    let killed_at = std::time::Instant::now();
    cluster.kill(victim_primary);
    // The cluster's own failover: until the replica is a primary.
    wait_until(PATIENCE, "the replica promoted", || is_primary(replica)).await;
    let failover = killed_at.elapsed();
    // Until both topics take publishes steadily again.
    let promoted = std::time::Instant::now();
    more_confirmed(&on_healthy, promoted, 20, "the healthy topic flowing after the failover").await;
    more_confirmed(&on_victim, promoted, 20, "the victim's topic flowing after the failover").await;
    more_confirmed(&handled[healthy], promoted, 20, "the healthy topic consumed after the failover").await;
    more_confirmed(&handled[victim], promoted, 20, "the victim's topic consumed after the failover").await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let stall = |record: &Arc<Mutex<Vec<std::time::Instant>>>| longest_gap(&record.lock().unwrap(), killed_at);
    let (healthy_stall, victim_stall) = (stall(&on_healthy), stall(&on_victim));
    let (healthy_consumed_stall, victim_consumed_stall) = (stall(&handled[healthy]), stall(&handled[victim]));
    eprintln!(
        "failover: replica promoted after {failover:?}; longest time without a confirmed publish: \
         {healthy_stall:?} on a healthy primary's topic, {victim_stall:?} on the failed primary's; \
         without a handled message: {healthy_consumed_stall:?} and {victim_consumed_stall:?}"
    );
    // Topics on healthy primaries flow on: each primary has a client of its own. Before, fred's
    // single cluster client paused all of them for the failover (2.32-2.48 s here, 3.5 to 6.7 s
    // in the issue); 1 s leaves room for a loaded machine (537 ms once in CI). The failed
    // primary's topic resumes within a step (100 ms) of the failover; 1.5 s leaves room too,
    // and is far below the command timeout a stuck publish would wait out.
    let brief = Duration::from_secs(1);
    assert!(healthy_stall <= brief, "healthy topic's publishes stalled {healthy_stall:?}, failover {failover:?}");
    assert!(healthy_consumed_stall <= brief, "healthy topic's consumer stalled {healthy_consumed_stall:?}");
    let bound = failover + Duration::from_millis(1500);
    assert!(victim_stall <= bound, "failed primary's topic stalled {victim_stall:?}, failover {failover:?}");
    assert!(
        victim_consumed_stall <= bound + Duration::from_secs(1),
        "failed primary's consumer stalled {victim_consumed_stall:?}"
    );
    worker.shutdown().await;
}

/// A command in flight on a primary that the cluster replaces fails once it is replaced: it does
/// not wait out its timeout. First a primary killed (its client reconnects in vain), then one
/// frozen (SIGSTOP: its connection stays open and silent, as with a hung host). Before, the old
/// primary's client was closed with a `QUIT` bounded to 5 s, which a frozen node never answers
/// (the frozen case ended 9.0 s after the freeze, failover 2.6 s) and which fred does not read
/// between reconnection attempts to a dead node (a race this test does not force: a publish
/// once waited out the 5 s command timeout in CI, against a 2.3 s failover). The bound below is
/// loose (a loaded 2-core machine); the command timeout is 30 s. Here the map's `CLUSTER SLOTS`
/// queued behind the held write marks the node silent before the freeze: a frozen node is
/// found out up to about 2 s later when nothing was held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_in_flight_on_a_failed_primary_ends_with_the_failover() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let _ = tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_default()).try_init();
    let cluster = TestCluster::start(3, 1).await;
    let ns = cluster.namespace();
    let timeout = Duration::from_secs(30);
    let conn =
        Connection::options().namespace(ns.as_str()).command_timeout(timeout).connect(&cluster.url()).await.unwrap();
    let producer = Producer::new(conn.clone());
    let dead = cluster.primary_of(&format!("{ns}:{{orders}}"));
    let frozen_topic = ["payments", "refunds", "invoices", "shipments", "returns", "carts", "users", "stock"]
        .into_iter()
        .find(|t| cluster.primary_of(&format!("{ns}:{{{t}}}")) != dead)
        .expect("a topic on another primary");
    let frozen = cluster.primary_of(&format!("{ns}:{{{frozen_topic}}}"));
    for (topic, primary, fail) in [("orders", dead, "kill"), (frozen_topic, frozen, "freeze")] {
        let replica = replica_of(&cluster, primary);
        // The primary takes the publish's first write but holds it (paused writes), so it is in
        // flight when the primary fails.
        cluster.cli_on(primary, &["CLIENT", "PAUSE", "60000", "WRITE"]);
        let publishing = {
            let producer = producer.clone();
            tokio::spawn(async move {
                let result = producer.publish(topic, &Msg { n: 1 }).await;
                (result, std::time::Instant::now())
            })
        };
        wait_until(PATIENCE, "a write held by the paused primary", || async {
            cluster.cli_on(primary, &["CLIENT", "LIST"]).lines().any(|l| l.contains(" flags=b "))
        })
        .await;
        let failed_at = std::time::Instant::now();
        match fail {
            "kill" => cluster.kill(primary),
            _ => cluster.pause(primary),
        }
        wait_until(PATIENCE, "the replica promoted", || is_primary(replica)).await;
        let failover = failed_at.elapsed();
        let (result, ended) = tokio::time::timeout(timeout, publishing).await.expect("the publish ended").unwrap();
        let took = ended.duration_since(failed_at);
        eprintln!("{fail}: failover {failover:?}; the publish in flight ended after {took:?} with {result:?}");
        // Not confirmed: the write may or may not have run (and been replicated) first.
        let err = result.expect_err("a publish whose primary failed unanswered is not confirmed");
        assert_eq!(err.kind(), ErrorKind::Connection, "{fail}: {err}");
        assert!(took <= failover + Duration::from_secs(3), "{fail}: ended {took:?} after, failover {failover:?}");
        // The topic takes publishes on its new primary.
        producer.publish(topic, &Msg { n: 2 }).await.unwrap();
    }
}

/// A planned failover (`CLUSTER FAILOVER` on the replica): the old primary stays up as a replica
/// and answers `MOVED`. The client follows at once (a redirect makes it re-read the map) instead
/// of failing publishes until its next periodic refresh (every second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_failover_is_followed_at_once() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = TestCluster::start(3, 1).await;
    let ns = cluster.namespace();
    let conn = Connection::options().namespace(ns.as_str()).connect(&cluster.url()).await.unwrap();
    let producer = Producer::new(conn.clone());
    let topic = "t.a";
    let primary = cluster.primary_of(&format!("{ns}:{{{topic}}}"));
    let replica = replica_of(&cluster, primary);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let confirmed = publish_steadily(&producer, topic, &stop);
    let started = std::time::Instant::now();
    more_confirmed(&confirmed, started, 20, "traffic before the failover").await;
    let asked_at = std::time::Instant::now();
    let out = std::process::Command::new(tributary_testkit::cli_binary())
        .args(["-p", &replica.to_string(), "CLUSTER", "FAILOVER"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"), "{out:?}");
    wait_until(PATIENCE, "the replica promoted", || is_primary(replica)).await;
    let failover = asked_at.elapsed();
    let promoted = std::time::Instant::now();
    more_confirmed(&confirmed, promoted, 20, "traffic after the failover").await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let stall = longest_gap(&confirmed.lock().unwrap(), asked_at);
    eprintln!("planned failover took {failover:?}; longest time without a confirmed publish {stall:?}");
    // Following only at the next periodic refresh would add up to 1 s.
    assert!(stall <= failover + Duration::from_millis(600), "stalled {stall:?} for a failover of {failover:?}");
}

/// One worker over topics in many slots, on every primary, two of them sharing a slot with
/// another: every message is handled once, those published before it started and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reads_topics_in_many_slots_of_a_cluster() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = TestCluster::start(3, 0).await;
    let ns = cluster.namespace();
    let conn = Connection::options().namespace(ns.as_str()).connect(&cluster.url()).await.unwrap();
    let key = |topic: &str| format!("{ns}:{{{topic}}}");
    let slot = |topic: &str| fred::util::redis_keyslot(key(topic).as_bytes());
    let mut topics: Vec<String> = (0..20).map(|i| format!("t.{i}")).collect();
    // Two more topics, each in the slot of one of the first two: a node's (or a slot's) read
    // covers several keys.
    for i in 0..2 {
        let wanted = slot(&topics[i]);
        let twin = (0..1_000_000).map(|j| format!("twin{i}.{j}")).find(|t| slot(t) == wanted).expect("a twin");
        topics.push(twin);
    }
    let slots: HashSet<u16> = topics.iter().map(|t| slot(t)).collect();
    assert_eq!(slots.len(), 20, "20 slots for 22 topics");
    let primaries: HashSet<u16> = topics.iter().map(|t| cluster.primary_of(&key(t))).collect();
    assert_eq!(primaries.len(), 3, "the topics live on every primary");

    let producer = Producer::new(conn.clone());
    for n in 0..3 {
        for t in &topics {
            producer.publish(t, &Msg { n }).await.unwrap();
        }
    }
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let worker = topics
        .iter()
        .fold(Worker::builder(conn.clone(), "g"), |b, t| b.on(t.as_str(), recording(&seen)))
        .build()
        .unwrap()
        .start();
    tokio::time::timeout(PATIENCE, worker.ready()).await.expect("the worker ready");
    for n in 3..6 {
        for t in &topics {
            producer.publish(t, &Msg { n }).await.unwrap();
        }
    }
    let total = topics.len() as u64 * 6;
    let stats = tokio::time::timeout(PATIENCE, worker.settled(total)).await.expect("every message settled");
    assert_eq!(stats.acked, total, "{stats:?}");
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    let mut want: Vec<(String, u64)> = topics.iter().flat_map(|t| (0..6).map(move |n| (t.clone(), n))).collect();
    want.sort();
    assert_eq!(got, want, "every message of every topic handled once");
    let admin = Admin::new(conn.clone());
    for t in &topics {
        wait_until(PATIENCE, "nothing left pending", || async { admin.pending_count(t, "g").await.unwrap() == 0 })
            .await;
    }
    worker.shutdown().await;
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Keyed {
    key: String,
    n: u64,
}

/// Per key, the numbers in the order handlers started them, and overlaps seen.
type Journal = Arc<Mutex<(HashMap<String, Vec<u64>>, HashMap<String, u64>, Vec<String>)>>;

/// Marks its key as not running once dropped: returned, or its worker crashed.
struct Running(Journal, String);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.lock().unwrap().1.remove(&self.1);
    }
}

fn keyed_worker(
    conn: &Connection,
    name: &str,
    journal: &Journal,
    handled: &Arc<std::sync::atomic::AtomicU64>,
) -> WorkerHandle {
    let (journal, handled) = (journal.clone(), handled.clone());
    Worker::builder(conn.clone(), "g")
        .consumer_name(name)
        .partition_lease(Duration::from_millis(900))
        .on("orders", move |m: Keyed, _ctx: Context| {
            let (journal, handled) = (journal.clone(), handled.clone());
            async move {
                {
                    let mut j = journal.lock().unwrap();
                    if let Some(other) = j.1.insert(m.key.clone(), m.n) {
                        j.2.push(format!("{} {} while {other}", m.key, m.n));
                    }
                    j.0.entry(m.key.clone()).or_default().push(m.n);
                }
                let _running = Running(journal.clone(), m.key.clone());
                tokio::time::sleep(Duration::from_millis(m.n % 2)).await;
                handled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start()
}

/// Messages a second three members handle of `total` keyed messages published to `topic` (as
/// fast as a producer publishes them in batches of 1,000) once the members have shared it out.
async fn throughput(cluster: &TestCluster, conn: &Connection, topic: &str, total: u64) -> f64 {
    let handled = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<WorkerHandle> = (0..3)
        .map(|i| {
            let handled = handled.clone();
            Worker::builder(conn.clone(), "g")
                .consumer_name(format!("c{i}"))
                .partition_lease(Duration::from_millis(900))
                .on(topic, move |_: Keyed, _ctx: Context| {
                    handled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    std::future::ready(Ok::<_, HandlerError>(()))
                })
                .build()
                .unwrap()
                .start()
        })
        .collect();
    for w in &workers {
        tokio::time::timeout(PATIENCE, w.ready()).await.expect("ready");
    }
    let partitions = Admin::new(conn.clone()).partitions(topic).await.unwrap().unwrap_or(0);
    let ns = cluster.namespace();
    wait_until(PATIENCE, "the partitions shared out", || async {
        let mut held = HashMap::<String, u32>::new();
        for p in 0..partitions {
            let owner = cluster.cli(&["GET", &format!("{ns}:{{{topic}#{p}}}:lease:g")]);
            *held.entry(owner.split('/').next().unwrap_or_default().trim().to_owned()).or_default() += 1;
        }
        partitions == 0 || (held.len() == 3 && held.values().all(|n| *n >= partitions / 3))
    })
    .await;
    let producer = Producer::new(conn.clone());
    let started = std::time::Instant::now();
    for chunk in 0..total / 1000 {
        let envelopes: Vec<Envelope> = (0..1000)
            .map(|i| {
                let m = Keyed { key: format!("k{}", (chunk * 1000 + i) % 500), n: i };
                Envelope::encode(&MsgPack, &m).unwrap().with_key(m.key.as_str())
            })
            .collect();
        producer.publish_envelopes(topic, &envelopes).await.unwrap();
    }
    let h = handled.clone();
    wait_until(PATIENCE, "every message handled", || {
        let n = h.load(std::sync::atomic::Ordering::Relaxed);
        async move { n >= total }
    })
    .await;
    let rate = total as f64 / started.elapsed().as_secs_f64();
    for w in workers {
        w.shutdown().await;
    }
    rate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_topic_spreads_over_the_shards_and_keeps_each_keys_order() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let _ = tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_default()).try_init();
    let cluster = TestCluster::start(3, 0).await;
    let ns = cluster.namespace();
    let conn = Connection::options().namespace(ns.as_str()).connect(&cluster.url()).await.unwrap();
    let admin = Admin::new(conn.clone());
    admin.create_topic("orders", 16).await.unwrap();
    let primaries: HashSet<u16> = (0..16).map(|p| cluster.primary_of(&format!("{ns}:{{orders#{p}}}"))).collect();
    assert_eq!(primaries.len(), 3, "16 partitions land on every primary");

    // Three members, one crashes and one joins while 20,000 keyed messages flow.
    let journal: Journal = Arc::default();
    let handled = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let a = keyed_worker(&conn, "a", &journal, &handled);
    let b = keyed_worker(&conn, "b", &journal, &handled);
    let c = keyed_worker(&conn, "c", &journal, &handled);
    for w in [&a, &b, &c] {
        tokio::time::timeout(PATIENCE, w.ready()).await.expect("ready");
    }
    let (keys, per_key) = (200u64, 100u64);
    let producer = Producer::new(conn.clone());
    let publisher = {
        let producer = producer.clone();
        tokio::spawn(async move {
            for n in 0..per_key {
                let envelopes: Vec<Envelope> = (0..keys)
                    .map(|k| {
                        let m = Keyed { key: format!("k{k}"), n };
                        Envelope::encode(&MsgPack, &m).unwrap().with_key(m.key.as_str())
                    })
                    .collect();
                producer.publish_envelopes("orders", &envelopes).await.unwrap();
            }
        })
    };
    let total = keys * per_key;
    let h = handled.clone();
    wait_until(PATIENCE, "a third handled", || {
        let n = h.load(std::sync::atomic::Ordering::Relaxed);
        async move { n >= total / 3 }
    })
    .await;
    drop(a);
    let d = keyed_worker(&conn, "d", &journal, &handled);
    publisher.await.unwrap();
    let j = journal.clone();
    wait_until(PATIENCE, "every message handled", || {
        let done = {
            let j = j.lock().unwrap();
            j.0.len() == keys as usize && j.0.values().all(|s| s.iter().max() == Some(&(per_key - 1)))
        };
        async move { done }
    })
    .await;
    {
        let j = journal.lock().unwrap();
        assert!(j.2.is_empty(), "a key's messages ran at once: {:?}", &j.2[..j.2.len().min(5)]);
        for (key, seq) in &j.0 {
            for pair in seq.windows(2) {
                assert!(pair[1] == pair[0] + 1 || pair[1] <= pair[0], "key {key}: {seq:?}");
            }
        }
    }
    for w in [b, c, d] {
        w.shutdown().await;
    }

    // Throughput, reported (a figure, not a target: `docs/partitions.md`): the same load on a
    // topic of one stream (one shard) and on 16 partitions (three shards), three members each.
    let total = 30_000u64;
    admin.create_topic("spread", 16).await.unwrap();
    let one = throughput(&cluster, &conn, "single", total).await;
    let three = throughput(&cluster, &conn, "spread", total).await;
    eprintln!(
        "cluster throughput, 3 members, {total} keyed messages: one stream (1 shard) {one:.0}/s, \
         16 partitions (3 shards) {three:.0}/s, ratio {:.2}",
        three / one
    );
}
