//! Message time against a real redis-server: expiry (TTL) and delayed delivery.

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use common::*;
use tributary_streams::{Admin, Context, DeadLetters, HandlerError, Producer, Scheduler, Worker, WorkerHandle};

fn collecting_worker(conn: &tributary_core::Connection, name: &str, seen: &Seen<(u64, SystemTime)>) -> WorkerHandle {
    let s = seen.clone();
    Worker::builder(conn.clone(), "g")
        .consumer_name(name)
        .concurrency(1)
        .on("events", move |o: Order, _ctx: Context| {
            let s = s.clone();
            async move {
                s.push((o.n, SystemTime::now()));
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start()
}

#[tokio::test]
async fn expired_messages_are_skipped_and_accounted_for_the_rest_handled_in_order() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let mut last_expiry = SystemTime::now();
    for n in 0..1000u64 {
        let order = Order { n, key: String::new() };
        let publish = producer.message("events", &order);
        // Every odd message is only worth something for 200 ms.
        let publish = if n % 2 == 1 {
            last_expiry = SystemTime::now() + Duration::from_millis(200);
            publish.expires_at(last_expiry)
        } else {
            publish
        };
        publish.send().await.unwrap();
    }
    // The consumer comes back once every message with a TTL has expired.
    wait_until(PATIENCE, "the last TTL passed", || async { SystemTime::now() > last_expiry }).await;
    let seen = Seen::new();
    let worker = collecting_worker(&conn, "c", &seen);
    let dlq = DeadLetters::new(conn.clone(), "events").unwrap();
    wait_until(PATIENCE, "500 handled and 500 recorded", || async {
        seen.len() == 500 && dlq.count().await.unwrap() == 500
    })
    .await;
    let handled: Vec<u64> = seen.get().into_iter().map(|s| s.0).collect();
    assert_eq!(handled, (0..1000).step_by(2).collect::<Vec<_>>(), "exactly the unexpired half, in order");
    assert_eq!(worker.stats().expired, 500);
    let letters = dlq.list(1).await.unwrap();
    assert_eq!(letters[0].reason, "expired");
    assert_eq!(letters[0].envelope().unwrap().decode::<Order>().unwrap().n, 1);
    worker.shutdown().await;
}

#[tokio::test]
async fn delayed_messages_arrive_once_never_early_with_two_movers() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let start = SystemTime::now() + Duration::from_millis(300);
    let mut due = HashMap::new();
    for n in 0..1000u64 {
        let at = start + Duration::from_millis(fastrand::u64(0..3000));
        producer.publish_at("events", &Order { n, key: String::new() }, at).await.unwrap();
        due.insert(n, at);
    }
    assert_eq!(Scheduler::new(conn.clone()).count("events").await.unwrap(), 1000);
    // Two workers of the group, both running the mover.
    let seen = Seen::new();
    let w1 = collecting_worker(&conn, "w1", &seen);
    let w2 = collecting_worker(&conn, "w2", &seen);
    w1.ready().await;
    w2.ready().await;
    // Lateness counts from when a message was due or the workers were running, whichever is
    // later: a slow machine may still be publishing or starting when the first ones fall due.
    let running = SystemTime::now();
    seen.wait_for(1000, "all delayed messages").await;
    // Every entry in the stream delivered and acknowledged: a duplicate would be among them.
    let admin = Admin::new(conn.clone());
    wait_until(PATIENCE, "nothing left to deliver", || async {
        let groups = admin.groups("events").await.unwrap();
        Scheduler::new(conn.clone()).count("events").await.unwrap() == 0
            && groups.iter().all(|g| g.pending == 0 && g.lag == Some(0))
    })
    .await;
    let got = seen.get();
    assert_eq!(got.len(), 1000, "each delivered once");
    let mut lateness: Vec<Duration> = Vec::new();
    for (n, at) in &got {
        let due = due[n];
        at.duration_since(due).unwrap_or_else(|e| panic!("message {n} arrived {:?} early", e.duration()));
        lateness.push(at.duration_since(due.max(running)).unwrap_or_default());
    }
    lateness.sort();
    let pct = |p: usize| lateness[(lateness.len() * p / 100).min(lateness.len() - 1)];
    eprintln!("delayed delivery lateness: p50 {:?}, p99 {:?}, max {:?}", pct(50), pct(99), lateness[999]);
    assert!(lateness[999] < Duration::from_secs(1), "max lateness {:?}", lateness[999]);
    assert_eq!(Scheduler::new(conn.clone()).count("events").await.unwrap(), 0);
    w1.shutdown().await;
    w2.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_message_is_never_delivered() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let scheduler = Scheduler::new(conn.clone());
    let keep =
        producer.publish_in("events", &Order { n: 1, key: String::new() }, Duration::from_millis(300)).await.unwrap();
    let cancel =
        producer.publish_in("events", &Order { n: 2, key: String::new() }, Duration::from_millis(300)).await.unwrap();
    let listed = scheduler.list("events", 10).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), vec![keep.clone(), cancel.clone()]);
    assert_eq!(listed[1].envelope.as_ref().unwrap().decode::<Order>().unwrap().n, 2);
    assert!(scheduler.cancel("events", &cancel).await.unwrap());
    assert!(!scheduler.cancel("events", &cancel).await.unwrap(), "cancelling twice finds nothing");
    // A message scheduled after the first: when it arrives, the cancelled one would have too.
    producer.publish_in("events", &Order { n: 3, key: String::new() }, Duration::from_millis(600)).await.unwrap();
    let seen = Seen::new();
    let worker = collecting_worker(&conn, "c", &seen);
    seen.wait_for(2, "the two kept messages").await;
    assert_eq!(seen.get().iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 3]);
    assert!(!scheduler.cancel("events", &keep).await.unwrap(), "too late to cancel a delivered message");
    worker.shutdown().await;
}

#[tokio::test]
async fn scheduling_with_an_idempotency_key_schedules_once() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let order = Order { n: 1, key: String::new() };
    let at = SystemTime::now() + Duration::from_secs(60);
    let first = producer.message("events", &order).idempotency_key("remind-1").schedule_at(at).await.unwrap();
    let again = producer.message("events", &order).idempotency_key("remind-1").schedule_at(at).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(Scheduler::new(conn).count("events").await.unwrap(), 1);
}

#[tokio::test]
async fn scheduled_messages_survive_a_redis_restart() {
    let redis = TestRedis::start_with(tributary_testkit::ServerOptions::new().durable()).await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    for n in 0..50u64 {
        producer.publish_in("events", &Order { n, key: String::new() }, Duration::from_millis(1500)).await.unwrap();
    }
    let seen = Seen::new();
    let worker = collecting_worker(&conn, "c", &seen);
    redis.kill();
    redis.restart().await;
    // The running worker reconnects on its own and delivers them after the restart.
    seen.wait_for(50, "all scheduled messages after the restart").await;
    let mut got: Vec<u64> = seen.get().into_iter().map(|s| s.0).collect();
    got.sort();
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    worker.shutdown().await;
}

#[tokio::test]
async fn an_idle_mover_does_not_poll_every_topic() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    // 200 topics with nothing scheduled, one worker consuming them all.
    let producer = Producer::new(conn.clone());
    let mut builder = Worker::builder(conn.clone(), "g");
    for t in 0..200 {
        let topic = format!("idle.{t}");
        producer.publish(&topic, &Order { n: t, key: String::new() }).await.unwrap();
        builder = builder.on(&topic, |_o: Order, _ctx: Context| async { Ok::<_, HandlerError>(()) });
    }
    let worker = builder.build().unwrap().start();
    tokio::time::timeout(PATIENCE, worker.ready()).await.expect("the worker starts");
    assert_eq!(tokio::time::timeout(PATIENCE, worker.settled(200)).await.expect("all handled").acked, 200);
    // Both mover scripts run ZRANGEBYSCORE once per call: the index's (once per poll), and a
    // topic's (once per due topic). Polling every topic would be 200 per poll, 2,000 a second.
    let before = command_calls(&redis, "zrangebyscore");
    let window = Duration::from_secs(2);
    tokio::time::sleep(window).await; // a measurement window, not a wait for a condition
    let calls = command_calls(&redis, "zrangebyscore") - before;
    eprintln!("idle mover: {calls} ZRANGEBYSCORE in {window:?} for 200 topics");
    assert!(calls <= 40, "{calls} in {window:?}: the mover polls topics, not the index");
    worker.shutdown().await;
}

#[tokio::test]
async fn a_scheduled_message_missing_from_the_index_is_moved_when_a_mover_starts() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    producer.publish_at("events", &Order { n: 1, key: String::new() }, SystemTime::now()).await.unwrap();
    // As if the producer had stopped between storing the message and indexing its topic.
    let index = conn.namespace().schedule_index();
    assert_eq!(redis.cli(&["ZCARD", &index]).trim(), "1", "the producer indexed the topic");
    redis.cli(&["DEL", &index]);
    let seen = Seen::new();
    let worker = collecting_worker(&conn, "w1", &seen);
    seen.wait_for(1, "the unindexed message").await;
    assert_eq!(seen.get()[0].0, 1);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_worker_moves_scheduled_messages_of_topics_it_does_not_consume() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    producer.publish_in("reports", &Order { n: 7, key: String::new() }, Duration::from_millis(50)).await.unwrap();
    let seen = Seen::new();
    let worker = collecting_worker(&conn, "w1", &seen); // consumes "events" only
    let admin = Admin::new(conn.clone());
    wait_until(PATIENCE, "the message moved to its stream", || async {
        admin.first_and_last("reports").await.unwrap().is_some()
    })
    .await;
    assert_eq!(Scheduler::new(conn.clone()).count("reports").await.unwrap(), 0);
    assert_eq!(redis.cli(&["ZCARD", &conn.namespace().schedule_index()]).trim(), "0", "nothing left indexed");
    worker.shutdown().await;
}

#[tokio::test]
async fn moved_scheduled_messages_are_trimmed_by_the_topics_retention() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    admin.set_retention("events", tributary_streams::Retention::max_len(5)).await.unwrap();
    let producer = Producer::new(conn.clone());
    for n in 0..20 {
        producer.publish_at("events", &Order { n, key: String::new() }, SystemTime::now()).await.unwrap();
    }
    // A worker's mover moves them (this worker consumes another topic).
    let worker = Worker::builder(conn.clone(), "g")
        .on("other", |_o: Order, _ctx: Context| async { Ok::<_, HandlerError>(()) })
        .build()
        .unwrap()
        .start();
    let scheduler = Scheduler::new(conn.clone());
    wait_until(PATIENCE, "every scheduled message moved", || async { scheduler.count("events").await.unwrap() == 0 })
        .await;
    wait_until(PATIENCE, "the topic trimmed to its retention", || async { admin.len("events").await.unwrap() == 5 })
        .await;
    worker.shutdown().await;
}
