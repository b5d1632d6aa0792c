//! One worker over many topics, against real redis-server processes: what `docs/delivery.md`
//! promises for a topic (order per key, exactly-once handling when nothing fails, retries and
//! dead letters, reclaim, a lost group, a broken key, delayed and expiring messages) holds for
//! each topic of a worker that reads dozens or hundreds of them, and the worker's connections do
//! not grow with its topics.

mod common;

use std::collections::{HashMap, HashSet};
use std::future::{ready, Ready};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use tributary_core::{Connection, Topic};
use tributary_streams::{
    handler_fn, Admin, Context, DeadLetters, HandlerError, Producer, RetryPolicy, RouteOptions, Scheduler, Worker,
    WorkerBuilder, WorkerHandle, WorkerStats,
};
use tributary_testkit::eventually;

/// Most connections a worker may open, however many topics it reads, on one Redis server.
const MAX_WORKER_CONNECTIONS: usize = 4;

/// How long the other topics of a worker may take to deliver while one of its topics is broken
/// (a read blocks for 2 s by default: a few read cycles, on a loaded machine; broken, they
/// never deliver).
const PROMPTLY: Duration = Duration::from_secs(10);

/// `<prefix>.0` .. `<prefix>.<n-1>`.
fn topics(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}.{i}")).collect()
}

/// What a worker handled: topic and message number.
type Handled = Seen<(String, u64)>;

fn recording(seen: &Handled) -> impl Fn(Order, Context) -> Ready<Result<(), HandlerError>> + Send + Sync + 'static {
    let seen = seen.clone();
    move |o: Order, ctx: Context| {
        seen.push((ctx.topic().to_owned(), o.n));
        ready(Ok(()))
    }
}

/// A worker of group `g` over each of `topics`, recording what it handles in `seen`.
fn worker_over(conn: &Connection, topics: &[String], seen: &Handled) -> WorkerBuilder {
    topics.iter().fold(Worker::builder(conn.clone(), "g"), |b, t| b.on(t, recording(seen)))
}

async fn publish(producer: &Producer, topic: &str, n: u64) {
    producer.publish(topic, &Order { n, key: String::new() }).await.unwrap();
}

async fn until_ready(worker: &WorkerHandle) {
    tokio::time::timeout(PATIENCE, worker.ready()).await.expect("the worker ready within PATIENCE");
}

async fn until_settled(worker: &WorkerHandle, n: u64) -> WorkerStats {
    match tokio::time::timeout(PATIENCE, worker.settled(n)).await {
        Ok(stats) => stats,
        Err(_) => panic!("{n} entries not settled after {PATIENCE:?}: {:?}", worker.stats()),
    }
}

/// Sorted copy of what was handled.
fn sorted(seen: &Handled) -> Vec<(String, u64)> {
    let mut got = seen.get();
    got.sort();
    got
}

/// Every `(topic, n)` for `topics` × `ns`, sorted.
fn every(topics: &[String], ns: std::ops::Range<u64>) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = topics.iter().flat_map(|t| ns.clone().map(move |n| (t.clone(), n))).collect();
    all.sort();
    all
}

/// Waits until `seen` holds every one of `want`, at most until `bound` after `since`; returns
/// how long after `since` that was.
async fn until_handled(
    seen: &Handled,
    want: &[(String, u64)],
    since: Instant,
    bound: Duration,
    what: &str,
) -> Duration {
    eventually(bound.saturating_sub(since.elapsed()), || {
        let got: HashSet<(String, u64)> = seen.get().into_iter().collect();
        let missing: Vec<&(String, u64)> = want.iter().filter(|w| !got.contains(*w)).collect();
        let result = if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{what}: {} of {} missing, e.g. {:?}",
                missing.len(),
                want.len(),
                &missing[..missing.len().min(5)]
            ))
        };
        async move { result }
    })
    .await;
    since.elapsed()
}

async fn until_nothing_pending(admin: &Admin, topics: &[String]) {
    eventually(PATIENCE, || async {
        for t in topics {
            let pending = admin.pending_count(t, "g").await.unwrap();
            if pending > 0 {
                return Err(format!("{pending} pending on {t}"));
            }
        }
        Ok(())
    })
    .await;
}

async fn until_back_to(redis: &TestRedis, baseline: usize) {
    eventually(PATIENCE, || async {
        let now = client_connections(redis);
        if now <= baseline {
            Ok(())
        } else {
            Err(format!("{now} connections after the worker stopped, {baseline} before"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_over_many_topics_uses_a_bounded_number_of_connections() {
    let redis = TestRedis::start_private().await; // every client of this server is ours
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    // The shared connection (the producer's, which the worker uses for commands) is open and
    // used before the count starts: only what the worker adds is counted.
    publish(&producer, "warm-up", 0).await;
    let baseline = client_connections(&redis);
    let names = topics("orders", 200);
    let seen = Handled::new();
    let worker = worker_over(&conn, &names, &seen).build().unwrap().start();
    until_ready(&worker).await;
    for (i, t) in names.iter().enumerate() {
        publish(&producer, t, i as u64).await;
    }
    let stats = until_settled(&worker, 200).await;
    assert_eq!(stats.acked, 200);
    let want: Vec<(String, u64)> = {
        let mut w: Vec<(String, u64)> = names.iter().enumerate().map(|(i, t)| (t.clone(), i as u64)).collect();
        w.sort();
        w
    };
    assert_eq!(sorted(&seen), want, "each topic's message handled once");
    let added = client_connections(&redis).saturating_sub(baseline);
    eprintln!("one worker over 200 named topics added {added} connections ({baseline} before)");
    assert!(
        added <= MAX_WORKER_CONNECTIONS,
        "a worker over 200 topics added {added} connections (at most {MAX_WORKER_CONNECTIONS} expected):\n{}",
        redis.cli(&["CLIENT", "LIST", "TYPE", "normal"]).lines().take(10).collect::<Vec<_>>().join("\n")
    );
    worker.shutdown().await;
    until_back_to(&redis, baseline).await;
}

/// Every command the server ran so far (`INFO commandstats`), less what the test itself asks
/// (`INFO`, `CLIENT`, `CONFIG`), by command.
fn commands_by_name(redis: &TestRedis) -> HashMap<String, u64> {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            let calls = rest.split(',').next()?.parse().ok()?;
            (!name.starts_with("info") && !name.starts_with("client") && !name.starts_with("config"))
                .then(|| (name.to_owned(), calls))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_over_many_topics_costs_redis_little() {
    let redis = TestRedis::start_private().await; // every command of this server is ours
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let names = topics("idle", 400);
    let seen = Handled::new();
    // An idle read of many topics blocks 1 ms per topic when that is longer than `block_for`:
    // 400 ms here, not 100.
    let worker = worker_over(&conn, &names, &seen).block_for(Duration::from_millis(100)).build().unwrap().start();
    until_ready(&worker).await;
    for (i, t) in names.iter().enumerate() {
        publish(&producer, t, i as u64).await;
    }
    assert_eq!(until_settled(&worker, 400).await.acked, 400);
    // Idle now. Per topic and second, one command would be 400 a second; the reads, the
    // scheduled-message mover and the sweeps of 400 quiet topics together stay under 50.
    let before = commands_by_name(&redis);
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await; // a measurement window, not a wait for a condition
    let after = commands_by_name(&redis);
    let used: HashMap<&str, u64> = after
        .iter()
        .map(|(name, n)| (name.as_str(), n - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let total: u64 = used.values().sum();
    let per_s = total as f64 / window.as_secs_f64();
    eprintln!("idle worker over 400 topics: {per_s:.1} commands/s: {used:?}");
    assert!(per_s < 50.0, "{per_s:.1} commands/s at idle over 400 topics: {used:?}");
    let reads = used.get("xreadgroup").copied().unwrap_or(0);
    assert!(reads <= 10, "one shared read per 400 ms (30 in 3 s if it blocked for block_for): {used:?}");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_worker_over_many_topics_uses_a_bounded_number_of_connections() {
    let redis = TestRedis::start_private().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let names = topics("orders", 200);
    // Published before the worker starts: the producer registers each topic.
    for t in &names {
        publish(&producer, t, 0).await;
    }
    let baseline = client_connections(&redis);
    let seen = Handled::new();
    let worker = Worker::builder(conn.clone(), "g")
        .pattern_refresh(Duration::from_millis(50))
        .on_pattern("orders.*", recording(&seen))
        .build()
        .unwrap()
        .start();
    until_settled(&worker, 200).await;
    // And what comes after, on every topic the pattern found.
    for t in &names {
        publish(&producer, t, 1).await;
    }
    let stats = until_settled(&worker, 400).await;
    assert_eq!(stats.acked, 400);
    assert_eq!(sorted(&seen), every(&names, 0..2));
    let added = client_connections(&redis).saturating_sub(baseline);
    eprintln!("one pattern worker over 200 topics added {added} connections ({baseline} before)");
    assert!(
        added <= MAX_WORKER_CONNECTIONS,
        "a pattern worker over 200 topics added {added} connections (at most {MAX_WORKER_CONNECTIONS} expected)"
    );
    worker.shutdown().await;
    until_back_to(&redis, baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_on_each_of_many_topics() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let names = topics("orders", 50);
    let keys = ["a", "b", "c"];
    let rounds = 10u64;
    // Round r publishes message r of every key of every topic: each read returns entries of
    // many topics and keys, interleaved.
    let publish_rounds = |rounds: std::ops::Range<u64>| {
        let (producer, names) = (producer.clone(), names.clone());
        async move {
            for n in rounds {
                for t in &names {
                    for key in keys {
                        producer.message(t, &Order { n, key: key.to_owned() }).key(key).send().await.unwrap();
                    }
                }
            }
        }
    };
    // Half a backlog before the worker starts, half published while it reads.
    publish_rounds(0..rounds / 2).await;
    let seen: Seen<(String, String, u64)> = Seen::new();
    let worker = names
        .iter()
        .fold(Worker::builder(conn.clone(), "g").concurrency(4), |b, t| {
            let s = seen.clone();
            b.on(t, move |o: Order, ctx: Context| {
                let s = s.clone();
                async move {
                    // Let other handlers of the topic run in between: order must hold anyway.
                    for _ in 0..fastrand::usize(0..4) {
                        tokio::task::yield_now().await;
                    }
                    s.push((ctx.topic().to_owned(), o.key, o.n));
                    Ok::<_, HandlerError>(())
                }
            })
        })
        .build()
        .unwrap()
        .start();
    until_ready(&worker).await;
    publish_rounds(rounds / 2..rounds).await;
    let total = names.len() as u64 * keys.len() as u64 * rounds;
    let stats = until_settled(&worker, total).await;
    assert_eq!((stats.acked, stats.delivered, stats.retried), (total, total, 0), "each handled once: {stats:?}");
    let mut by_key: HashMap<(String, String), Vec<u64>> = HashMap::new();
    for (topic, key, n) in seen.get() {
        by_key.entry((topic, key)).or_default().push(n);
    }
    assert_eq!(by_key.len(), names.len() * keys.len(), "every topic and key handled");
    for ((topic, key), ns) in &by_key {
        assert_eq!(*ns, (0..rounds).collect::<Vec<_>>(), "topic {topic}, key {key}: handled out of order or not once");
    }
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_topic_retries_and_dead_letters_while_its_neighbours_deliver() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let admin = Admin::new(conn.clone());
    let names = topics("jobs", 30);
    let failing = names[13].clone();
    let neighbours: Vec<String> = names.iter().filter(|t| **t != failing).cloned().collect();
    // The failing topic's handler always fails. From its second attempt on it waits for the
    // gate, which opens only once every neighbour's message is handled: until then the failing
    // topic is stuck in a retry, one handler running (concurrency 1) and the rest of its
    // messages read ahead (prefetch 4) or unread.
    let (gate, gate_rx) = tokio::sync::watch::channel(false);
    let attempts: Seen<(u64, u64)> = Seen::new();
    let failing_handler = {
        let attempts = attempts.clone();
        handler_fn(move |o: Order, ctx: Context| {
            let (attempts, mut gate) = (attempts.clone(), gate_rx.clone());
            async move {
                attempts.push((o.n, ctx.attempt()));
                if ctx.attempt() >= 2 {
                    gate.wait_for(|open| *open).await.expect("the gate stays");
                }
                Err::<(), _>(HandlerError::retry("always fails"))
            }
        })
    };
    let seen = Handled::new();
    let worker = worker_over(&conn, &neighbours, &seen)
        .prefetch(4)
        .handler_with(
            failing.as_str(),
            failing_handler,
            RouteOptions::new()
                .concurrency(1)
                .max_deliveries(3)
                .retry(RetryPolicy::exponential(Duration::from_millis(10), Duration::from_millis(40))),
        )
        .build()
        .unwrap()
        .start();
    until_ready(&worker).await;
    let failing_count = 10u64;
    for n in 0..failing_count {
        publish(&producer, &failing, n).await;
    }
    attempts.wait_for(2, "the failing topic's first message retried").await;
    let since = Instant::now();
    for round in 0..10 {
        for t in &neighbours {
            publish(&producer, t, round).await;
        }
    }
    let took = until_handled(&seen, &every(&neighbours, 0..10), since, PROMPTLY, "the neighbours' messages").await;
    assert_eq!(worker.stats().dead_lettered, 0, "nothing dead-lettered while the gate is closed");
    // Meanwhile the stuck topic read no further than its limits allow: the message retrying,
    // and at most concurrency + prefetch (1 + 4) read and not yet through their first attempt.
    let held = admin.pending_count(&failing, "g").await.unwrap();
    eprintln!(
        "29 neighbours' 290 messages published and handled in {took:?} while one topic was stuck in a retry \
         holding {held} of its 10 entries"
    );
    assert!(held <= 6, "the stuck topic holds {held} entries; at most 6 expected");
    gate.send_replace(true);
    let stats = until_settled(&worker, 290 + failing_count).await;
    assert_eq!((stats.acked, stats.dead_lettered), (290, failing_count), "{stats:?}");
    assert_eq!(sorted(&seen), every(&neighbours, 0..10), "each neighbour's message handled once");
    let mut tried: HashMap<u64, Vec<u64>> = HashMap::new();
    for (n, attempt) in attempts.get() {
        tried.entry(n).or_default().push(attempt);
    }
    for n in 0..failing_count {
        assert_eq!(tried.get(&n), Some(&vec![1, 2, 3]), "message {n} of the failing topic: attempts");
    }
    let letters = DeadLetters::new(conn.clone(), &failing).unwrap().list(100).await.unwrap();
    assert_eq!(letters.len(), failing_count as usize);
    for (n, letter) in letters.iter().enumerate() {
        assert_eq!(
            (letter.reason.as_str(), letter.attempts, letter.error.as_str(), letter.topic.as_str()),
            ("max_deliveries", 3, "always fails", failing.as_str())
        );
        assert_eq!(letter.envelope().unwrap().decode::<Order>().unwrap().n, n as u64, "dead-lettered in order");
    }
    for t in &neighbours {
        assert_eq!(DeadLetters::new(conn.clone(), t).unwrap().count().await.unwrap(), 0, "no dead letter on {t}");
    }
    until_nothing_pending(&admin, &names).await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_a_dropped_worker_over_many_topics_are_reclaimed() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let admin = Admin::new(conn.clone());
    let names = topics("jobs", 30);
    for n in 0..2 {
        for t in &names {
            publish(&producer, t, n).await;
        }
    }
    // The first worker takes every message and hangs in its handlers, then "crashes".
    let started = Handled::new();
    let doomed = names
        .iter()
        .fold(
            Worker::builder(conn.clone(), "g").consumer_name("doomed").claim_idle(Duration::from_millis(500)),
            |b, t| {
                let s = started.clone();
                b.on(t, move |o: Order, ctx: Context| {
                    let s = s.clone();
                    async move {
                        s.push((ctx.topic().to_owned(), o.n));
                        std::future::pending::<()>().await;
                        Ok::<_, HandlerError>(())
                    }
                })
            },
        )
        .build()
        .unwrap()
        .start();
    started.wait_for(60, "the doomed worker holds every message").await;
    drop(doomed); // crash: nothing acked, nothing handed back
    let mut held = 0;
    for t in &names {
        held += admin.pending_count(t, "g").await.unwrap();
    }
    assert_eq!(held, 60, "the crashed worker's entries are pending");

    let handled: Seen<(String, u64, u64)> = Seen::new();
    let rescuer = names
        .iter()
        .fold(
            Worker::builder(conn.clone(), "g").consumer_name("rescuer").claim_idle(Duration::from_millis(500)),
            |b, t| {
                let h = handled.clone();
                b.on(t, move |o: Order, ctx: Context| {
                    h.push((ctx.topic().to_owned(), o.n, ctx.attempt()));
                    ready(Ok::<_, HandlerError>(()))
                })
            },
        )
        .build()
        .unwrap()
        .start();
    // New messages reach the rescuer too, next to the ones it takes over.
    for t in &names {
        publish(&producer, t, 2).await;
    }
    let stats = until_settled(&rescuer, 90).await;
    let got = handled.get();
    let mut distinct: Vec<(String, u64)> = got.iter().map(|(t, n, _)| (t.clone(), *n)).collect();
    distinct.sort();
    assert_eq!(distinct, every(&names, 0..3), "every message handled once by the rescuer");
    let first_deliveries: Vec<&(String, u64, u64)> = got.iter().filter(|h| h.1 < 2 && h.2 < 2).collect();
    assert!(first_deliveries.is_empty(), "taken over entries come as second deliveries: {first_deliveries:?}");
    // At least the crashed worker's 60. (Under load, a new entry that waited past `claim_idle`
    // between the read and the worker noting it may be claimed by the worker's own sweep too.)
    assert!(stats.reclaimed >= 60, "{stats:?}");
    until_nothing_pending(&admin, &names).await;
    rescuer.shutdown().await;
}

/// One worker over `orders.0` .. `orders.19`, each of which has had message 0 handled; topic
/// number `victim` is the one a test then breaks (`key`: its stream).
struct TwentyTopics {
    redis: TestRedis,
    producer: Producer,
    admin: Admin,
    names: Vec<String>,
    victim: String,
    /// Every topic but the victim.
    others: Vec<String>,
    key: String,
    seen: Handled,
    worker: WorkerHandle,
}

async fn twenty_topics_handled_once(victim: usize) -> TwentyTopics {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let admin = Admin::new(conn.clone());
    let names = topics("orders", 20);
    let victim = names[victim].clone();
    let others: Vec<String> = names.iter().filter(|t| **t != victim).cloned().collect();
    let seen = Handled::new();
    let worker = worker_over(&conn, &names, &seen).build().unwrap().start();
    until_ready(&worker).await;
    for t in &names {
        publish(&producer, t, 0).await;
    }
    until_settled(&worker, 20).await;
    let key = conn.namespace().topic_stream(&Topic::new(victim.as_str()).unwrap());
    TwentyTopics { redis, producer, admin, names, victim, others, key, seen, worker }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_group_on_one_topic_does_not_stop_the_others() {
    let TwentyTopics { redis, producer, admin, names, victim, others, key, seen, worker } =
        twenty_topics_handled_once(7).await;
    assert_eq!(redis.cli(&["XGROUP", "DESTROY", &key, "g"]).trim(), "1", "the group existed");
    let destroyed = Instant::now();
    for t in &names {
        publish(&producer, t, 1).await;
    }
    let took = until_handled(&seen, &every(&others, 1..2), destroyed, PROMPTLY, "the other topics' messages").await;
    eprintln!("one topic's group destroyed: the 19 others' messages published and handled {took:?} after");
    let took = until_handled(&seen, &[(victim.clone(), 1)], destroyed, PATIENCE, "the victim's message").await;
    eprintln!("one topic's group destroyed: its own message handled {took:?} after");
    // And the topics keep flowing after the group is back.
    for t in &names {
        publish(&producer, t, 2).await;
    }
    let stats = until_settled(&worker, 60).await;
    assert_eq!(sorted(&seen), every(&names, 0..3), "every message handled once, none replayed");
    assert_eq!(stats.groups_recreated, 1, "{stats:?}");
    assert!(admin.groups(&victim).await.unwrap().iter().any(|g| g.name == "g"), "the group is back");
    until_nothing_pending(&admin, &names).await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_key_of_the_wrong_type_does_not_stop_the_others() {
    let TwentyTopics { redis, producer, admin, names, victim, others, key, seen, worker } =
        twenty_topics_handled_once(3).await;
    // An operator mistake: the topic's stream replaced by a string.
    redis.cli(&["DEL", &key]);
    redis.cli(&["SET", &key, "not a stream"]);
    // Two rounds: the read that returns the first may have been sent before the key broke; the
    // one that returns the second was sent after.
    for n in 1..3 {
        let since = Instant::now();
        for t in &others {
            publish(&producer, t, n).await;
        }
        let took = until_handled(&seen, &every(&others, n..n + 1), since, PROMPTLY, "the other topics' messages").await;
        eprintln!("one topic's key a string: round {n} of the 19 others published and handled in {took:?}");
    }
    // Repaired: the topic is consumed again (its group is created anew).
    redis.cli(&["DEL", &key]);
    let repaired = Instant::now();
    publish(&producer, &victim, 1).await;
    let took = until_handled(&seen, &[(victim.clone(), 1)], repaired, PATIENCE, "the repaired topic's message").await;
    eprintln!("the repaired topic's message handled {took:?} after the repair");
    let mut want = every(&names, 0..1);
    want.extend(every(&others, 1..3));
    want.push((victim.clone(), 1));
    want.sort();
    let stats = until_settled(&worker, want.len() as u64).await;
    assert_eq!(sorted(&seen), want, "every message handled once");
    assert!(stats.groups_recreated >= 1, "{stats:?}");
    until_nothing_pending(&admin, &names).await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_and_expiring_messages_across_many_topics() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let names = topics("events", 20);
    let (delayed, immediate) = names.split_at(10);
    let handled: Seen<(String, u64, SystemTime)> = Seen::new();
    let worker = names
        .iter()
        .fold(Worker::builder(conn.clone(), "g"), |b, t| {
            let h = handled.clone();
            b.on(t, move |o: Order, ctx: Context| {
                h.push((ctx.topic().to_owned(), o.n, SystemTime::now()));
                ready(Ok::<_, HandlerError>(()))
            })
        })
        .build()
        .unwrap()
        .start();
    until_ready(&worker).await;
    // On each delayed topic: message 1 due at its own time; message 2 due at the same time but
    // expiring before it (never handled). On the other topics: message 0 now.
    let now = SystemTime::now();
    let (start, expiry) = (now + Duration::from_millis(400), now + Duration::from_millis(300));
    let mut due: HashMap<String, SystemTime> = HashMap::new();
    for (i, t) in delayed.iter().enumerate() {
        let at = start + Duration::from_millis(60 * i as u64);
        producer.publish_at(t, &Order { n: 1, key: String::new() }, at).await.unwrap();
        producer.message(t, &Order { n: 2, key: String::new() }).expires_at(expiry).schedule_at(at).await.unwrap();
        due.insert(t.clone(), at);
    }
    for t in immediate {
        publish(&producer, t, 0).await;
    }
    // Settled: the handled ones acknowledged, the expired ones dead-lettered.
    let stats = until_settled(&worker, 2 * delayed.len() as u64 + immediate.len() as u64).await;
    assert_eq!((stats.expired, stats.dead_lettered), (10, 10), "{stats:?}");
    let got = handled.get();
    let mut names_handled: Vec<(String, u64)> = got.iter().map(|(t, n, _)| (t.clone(), *n)).collect();
    names_handled.sort();
    let mut want = every(delayed, 1..2);
    want.extend(every(immediate, 0..1));
    want.sort();
    assert_eq!(names_handled, want, "each unexpired message handled once, no expired one: {stats:?}");
    let mut latest = Duration::ZERO;
    for (t, _, at) in got.iter().filter(|h| h.1 == 1) {
        let late =
            at.duration_since(due[t]).unwrap_or_else(|e| panic!("{t}'s message arrived {:?} early", e.duration()));
        latest = latest.max(late);
    }
    eprintln!("delayed messages on 10 topics of one worker: at most {latest:?} late");
    assert!(latest < Duration::from_secs(2), "a delayed message was handled {latest:?} after it was due");
    let scheduler = Scheduler::new(conn.clone());
    for t in delayed {
        assert_eq!(scheduler.count(t).await.unwrap(), 0, "{t}: nothing left scheduled");
        let letters = DeadLetters::new(conn.clone(), t).unwrap().list(10).await.unwrap();
        assert_eq!(letters.len(), 1, "{t}: the expired message recorded");
        assert_eq!(letters[0].reason, "expired");
        assert_eq!(letters[0].envelope().unwrap().decode::<Order>().unwrap().n, 2);
    }
    worker.shutdown().await;
}

/// With the server's keyspace notifications on (`notify-keyspace-events Kt`), a worker never
/// blocks a read over all its topics: it reads the topics that rang, and all of them every
/// `block_for`. Every message is still handled once. With notifications turned off at run
/// time, the worker notices at its next full read and blocks on every topic again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keyspace_notifications_a_worker_reads_only_the_topics_that_rang() {
    let redis = TestRedis::start_private().await;
    redis.cli(&["CONFIG", "SET", "notify-keyspace-events", "Kt"]);
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let names = topics("rang", 300);
    let seen = Handled::new();
    let worker = worker_over(&conn, &names, &seen).block_for(Duration::from_secs(1)).build().unwrap().start();
    until_ready(&worker).await;
    for (i, t) in names.iter().enumerate().take(50) {
        publish(&producer, t, i as u64).await;
        seen.wait_for(i + 1, "the rung topic's message").await;
        assert_eq!(blocked_clients(&redis), 0, "no read blocks while notifications say when to read");
    }
    // Turned off: the worker notices at its next full read and blocks on every topic again.
    redis.cli(&["CONFIG", "SET", "notify-keyspace-events", ""]);
    wait_until(PATIENCE, "the shared read blocks again", || async { blocked_clients(&redis) == 1 }).await;
    publish(&producer, &names[299], 299).await;
    seen.wait_for(51, "a message after notifications were turned off").await;
    let mut got = sorted(&seen);
    got.dedup();
    assert_eq!((got.len(), seen.len()), (51, 51), "each handled once");
    worker.shutdown().await;
}

/// Streams each `XREADGROUP` since the last `SLOWLOG RESET` named (the slow log keeps the first
/// 31 arguments of a command and counts the rest), and the number of reads it kept.
async fn streams_per_read(conn: &Connection) -> Vec<usize> {
    use fred::interfaces::ClientLike;
    let cmd = fred::types::CustomCommand::new_static("SLOWLOG", fred::types::ClusterHash::FirstKey, false);
    let log: Vec<fred::types::Value> =
        conn.redis().custom(cmd, vec![fred::types::Value::from("GET"), fred::types::Value::from(-1)]).await.unwrap();
    log.into_iter()
        .filter_map(|entry| {
            let args = entry.into_array().into_iter().nth(3)?.into_array();
            let args: Vec<String> = args.into_iter().filter_map(|a| a.into_string()).collect();
            if !args.first()?.eq_ignore_ascii_case("XREADGROUP") {
                return None;
            }
            let more: Option<usize> = args
                .last()
                .and_then(|l| l.strip_prefix("... ("))
                .and_then(|r| r.strip_suffix(" more arguments)"))
                .map(|n| n.parse().unwrap());
            let named = args.iter().position(|a| a.eq_ignore_ascii_case("STREAMS"))?;
            // After STREAMS: a key and an id per stream.
            Some((args.len() - named - 1 + more.unwrap_or(0) - usize::from(more.is_some())) / 2)
        })
        .collect()
}

/// Waits until one client listens to the namespace's rings channel.
async fn until_listening_to_rings(redis: &TestRedis, conn: &Connection) {
    let channel = conn.namespace().rings_channel();
    eventually(PATIENCE, || {
        let listening = redis.cli(&["PUBSUB", "NUMSUB", &channel]);
        let subscribers = listening.lines().nth(1).map(str::trim).unwrap_or("0").to_owned();
        let result = if subscribers == "1" { Ok(()) } else { Err(format!("{subscribers} listen to {channel}")) };
        async move { result }
    })
    .await;
}

/// Without keyspace notifications, a worker over 500 topics or more listens to producers' rings
/// (`ring.rs`): while messages flow, its reads name the topics that rang rather than all 600,
/// which cost Redis about 2 µs each. Entries a writer adds without ringing (another client) are
/// found by the read of every topic: at once while nothing flows (it blocks), within a second
/// while messages flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keyspace_notifications_a_worker_over_many_topics_reads_what_producers_ring_for() {
    use fred::interfaces::StreamsInterface;
    let redis = TestRedis::start_private().await; // notifications off, as by default
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let names = topics("rung", 600);
    let seen = Handled::new();
    let worker = worker_over(&conn, &names, &seen).build().unwrap().start();
    until_ready(&worker).await;
    until_listening_to_rings(&redis, &conn).await;

    // Another client's entry, while nothing flows: the blocked read of every topic gets it.
    let raw = |topic: &str, n: u64| {
        let key = conn.namespace().topic_stream(&Topic::new(topic).unwrap());
        let payload =
            tributary_core::Codec::encode(&tributary_core::MsgPack, &Order { n, key: String::new() }).unwrap();
        let envelope = tributary_core::Envelope::new("Order", tributary_core::MsgPack::CONTENT_TYPE, payload);
        (key, tributary_core::wire::encode(&envelope, conn.limits()).unwrap())
    };
    let (key, fields) = raw(&names[1], 1);
    let _: fred::types::Value = conn.redis().xadd(key, false, None, "*", fields).await.unwrap();
    until_handled(&seen, &[(names[1].clone(), 1)], Instant::now(), PROMPTLY, "an unrung entry at idle").await;

    // Rung: what a producer publishes is read by name.
    redis.cli(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    redis.cli(&["CONFIG", "SET", "slowlog-max-len", "100000"]);
    redis.cli(&["SLOWLOG", "RESET"]);
    let mut rung: Vec<(String, u64)> = (0..600).step_by(3).map(|i| (names[i].clone(), 100 + i as u64)).collect();
    let since = Instant::now();
    for (t, n) in &rung {
        publish(&producer, t, *n).await;
    }
    until_handled(&seen, &rung, since, PATIENCE, "rung entries").await;
    // Another client's entry while messages flow (they flow until it is handled, so reads never
    // block on every topic): a sweep of every topic gets it.
    let (key, fields) = raw(&names[2], 2);
    let _: fred::types::Value = conn.redis().xadd(key, false, None, "*", fields).await.unwrap();
    let unrung = (names[2].clone(), 2);
    let since = Instant::now();
    let mut n = 1000;
    while !seen.get().contains(&unrung) {
        assert!(since.elapsed() < PROMPTLY, "an unrung entry not handled while messages flow");
        let topic = names[(n as usize * 3) % names.len()].clone();
        publish(&producer, &topic, n).await;
        rung.push((topic, n));
        n += 1;
    }
    until_handled(&seen, &rung, since, PATIENCE, "rung entries while the unrung one waited").await;
    let reads = streams_per_read(&conn).await;
    let by_name = reads.iter().filter(|n| **n < 100).count();
    eprintln!("{} reads, {by_name} of fewer than 100 streams: {:?}", reads.len(), &reads[..reads.len().min(40)]);
    assert!(
        by_name * 2 > reads.len(),
        "most reads while messages flow name the streams that rang, not all 600: {reads:?}"
    );
    let mut got = sorted(&seen);
    got.dedup();
    assert_eq!(got.len(), seen.len(), "each handled once");
    worker.shutdown().await;
}

/// Redis restarted without persistence under a worker of 600 topics that listens to producers'
/// rings: streams, groups and the subscription are gone. The worker subscribes again, and every
/// message confirmed after the restart is handled, each topic's group created again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_to_rings_every_topic_survives_a_restart_without_persistence() {
    let redis = TestRedis::start_private().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let names = topics("restart", 600);
    let seen = Handled::new();
    let worker = worker_over(&conn, &names, &seen).block_for(Duration::from_millis(500)).build().unwrap().start();
    until_ready(&worker).await;
    until_listening_to_rings(&redis, &conn).await;
    let before: Vec<(String, u64)> = names.iter().step_by(10).map(|t| (t.clone(), 0)).collect();
    for (t, n) in &before {
        publish(&producer, t, *n).await;
    }
    until_handled(&seen, &before, Instant::now(), PATIENCE, "before the restart").await;

    redis.kill();
    redis.restart().await; // empty: streams, groups and the subscription are gone
    until_listening_to_rings(&redis, &conn).await;
    let mut confirmed = Vec::new();
    let mut n = 1;
    while confirmed.len() < 200 {
        let topic = &names[(n as usize * 7) % names.len()];
        if producer.publish(topic, &Order { n, key: String::new() }).await.is_ok() {
            confirmed.push((topic.clone(), n));
        }
        n += 1;
    }
    until_handled(&seen, &confirmed, Instant::now(), PATIENCE, "confirmed after the restart").await;
    assert!(worker.stats().groups_recreated >= 1, "lost groups are counted: {:?}", worker.stats());
    worker.shutdown().await;
}
