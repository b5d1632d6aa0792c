//! Replay and group positioning: ranges by id and time, groups started in the past,
//! cursors moved on purpose, patterns picking up new topics.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use tributary_core::keys::RESERVED_TOPIC_PREFIXES;
use tributary_core::{EntryId, Topic, TopicPattern};
use tributary_streams::{Admin, Context, HandlerError, Position, Producer, Replay, Worker};

async fn publish_in_two_waves(conn: &tributary_core::Connection) -> SystemTime {
    let producer = Producer::new(conn.clone());
    let mut last = EntryId::MIN;
    for n in 0..10 {
        last = producer.publish("orders", &Order { n, key: String::new() }).await.unwrap();
    }
    // The middle must fall strictly between the two waves' milliseconds.
    let after = |ms: u64| async move { EntryId::from_time(SystemTime::now()).ms() > ms };
    wait_until(PATIENCE, "the clock passes the first wave", || after(last.ms())).await;
    let middle = SystemTime::now();
    wait_until(PATIENCE, "the clock passes the middle", || after(EntryId::from_time(middle).ms())).await;
    for n in 10..20 {
        producer.publish("orders", &Order { n, key: String::new() }).await.unwrap();
    }
    middle
}

fn numbers(received: &[tributary_streams::Received]) -> Vec<u64> {
    received.iter().map(|r| r.envelope.as_ref().unwrap().decode::<Order>().unwrap().n).collect()
}

#[tokio::test]
async fn ranges_by_time_and_id_leave_groups_alone() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let admin = Admin::new(conn.clone());
    admin.create_group("orders", "g", Position::Beginning).await.unwrap();
    let middle = publish_in_two_waves(&conn).await;
    let replay = Replay::new(conn.clone());
    let later =
        replay.range("orders", Position::Time(middle), Position::End).unwrap().page_size(3).collect(100).await.unwrap();
    assert_eq!(numbers(&later), (10..20).collect::<Vec<_>>());
    let earlier =
        replay.range("orders", Position::Beginning, Position::Time(middle)).unwrap().collect(100).await.unwrap();
    assert_eq!(numbers(&earlier), (0..10).collect::<Vec<_>>());
    let by_id = replay
        .range("orders", Position::At(later[2].entry_id), Position::At(later[4].entry_id))
        .unwrap()
        .collect(100)
        .await
        .unwrap();
    assert_eq!(numbers(&by_id), vec![12, 13, 14]);
    let groups = admin.groups("orders").await.unwrap();
    assert_eq!((groups[0].pending, groups[0].lag), (0, Some(20)), "replay did not touch the group");
}

#[tokio::test]
async fn a_new_group_can_start_at_a_past_time_and_a_cursor_can_be_moved_back() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let middle = publish_in_two_waves(&conn).await;
    let seen = Seen::new();
    let s = seen.clone();
    let worker = Worker::builder(conn.clone(), "late-joiner")
        .consumer_name("c")
        .concurrency(1)
        .start_from(Position::Time(middle))
        .on("orders", record(&s))
        .build()
        .unwrap()
        .start();
    seen.wait_for(10, "second wave").await;
    worker.shutdown().await;
    assert_eq!(seen.get(), (10..20).collect::<Vec<_>>());

    // Rewind the group to the beginning: everything is delivered again.
    Admin::new(conn.clone()).set_group_position("orders", "late-joiner", Position::Beginning).await.unwrap();
    let again = Seen::new();
    let a = again.clone();
    let worker = Worker::builder(conn, "late-joiner")
        .consumer_name("c")
        .concurrency(1)
        .on("orders", record(&a))
        .build()
        .unwrap()
        .start();
    again.wait_for(20, "everything again").await;
    assert_eq!(again.get(), (0..20).collect::<Vec<_>>());
    worker.shutdown().await;
}

#[tokio::test]
async fn a_pattern_subscription_picks_up_topics_created_later() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    producer.publish("sensor.kitchen", &Order { n: 1, key: String::new() }).await.unwrap();
    producer.publish("other", &Order { n: 99, key: String::new() }).await.unwrap();
    let seen = Seen::new();
    let worker = pattern_worker(&conn, &seen);
    seen.wait_for(1, "existing topic").await;
    producer.publish("sensor.garage", &Order { n: 2, key: String::new() }).await.unwrap();
    seen.wait_for(2, "topic created after start").await;
    let mut got = seen.get();
    got.sort();
    assert_eq!(got, vec![("sensor.garage".to_owned(), 2), ("sensor.kitchen".to_owned(), 1)]);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_pattern_finds_reserved_topics_only_when_it_starts_with_their_prefix() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let prefix = RESERVED_TOPIC_PREFIXES[0];
    let reserved = format!("{prefix}billing");
    let producer = Producer::new(conn.clone());
    for topic in ["orders", reserved.as_str()] {
        producer.publish(topic, &Order { n: 1, key: String::new() }).await.unwrap();
    }
    let admin = Admin::new(conn);
    let names = |topics: Vec<Topic>| topics.iter().map(|t| t.as_str().to_owned()).collect::<Vec<_>>();
    let matching = |pattern: String| {
        let admin = admin.clone();
        async move { names(admin.topics_matching(&TopicPattern::new(pattern).unwrap()).await.unwrap()) }
    };
    // What a worker of `*` would consume: never the reserved topic.
    assert_eq!(matching("*".to_owned()).await, ["orders"]);
    assert_eq!(matching(format!("{prefix}*")).await, [reserved.as_str()]);
    assert_eq!(names(admin.topics().await.unwrap()), ["orders", reserved.as_str()]);
}

fn pattern_worker(conn: &tributary_core::Connection, seen: &Seen<(String, u64)>) -> tributary_streams::WorkerHandle {
    let s = seen.clone();
    Worker::builder(conn.clone(), "g")
        .consumer_name("c")
        .pattern_refresh(Duration::from_millis(50))
        // No scheduled-message mover: its scan for unindexed topics would be counted too.
        .schedule_poll(None)
        .on_pattern("sensor.*", move |o: Order, ctx: Context| {
            let s = s.clone();
            async move {
                s.push((ctx.topic().to_owned(), o.n));
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start()
}

#[tokio::test]
async fn pattern_workers_learn_of_new_topics_from_the_registry_not_by_scanning() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    // Written by another client, not registered: found by the scan a worker makes at start.
    let stream = format!("{}:{{sensor.attic}}", redis.namespace());
    redis.cli(&["XADD", &stream, "*", "v", "2", "m", "x", "p", "x"]);
    let seen = Seen::new();
    let worker = pattern_worker(&conn, &seen);
    wait_until(PATIENCE, "the unregistered topic consumed", || async {
        Admin::new(conn.clone()).groups("sensor.attic").await.unwrap().len() == 1
    })
    .await;
    let scans = command_calls(&redis, "scan");
    // Topics published to later are found through the registry, every refresh, no scan.
    let producer = Producer::new(conn.clone());
    for (n, topic) in ["sensor.kitchen", "sensor.garage", "other"].into_iter().enumerate() {
        producer.publish(topic, &Order { n: n as u64, key: String::new() }).await.unwrap();
    }
    seen.wait_for(2, "the new sensor topics").await;
    let mut got = seen.get();
    got.sort();
    assert_eq!(got, [("sensor.garage".to_owned(), 1), ("sensor.kitchen".to_owned(), 0)]);
    assert_eq!(command_calls(&redis, "scan"), scans, "no scan after the one at start");
    worker.shutdown().await;
}

#[tokio::test]
async fn a_registry_lost_with_redis_data_is_filled_again_and_read_from_the_start() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    for n in 0..3 {
        producer.publish(&format!("sensor.{n}"), &Order { n, key: String::new() }).await.unwrap();
    }
    let seen = Seen::new();
    let worker = pattern_worker(&conn, &seen);
    seen.wait_for(3, "the first topics").await;
    // As after a restart without persistence: the registry is gone, and by the worker's next
    // look the topics registered again may already number more than it saw (3).
    let ns = conn.namespace();
    redis.cli(&["DEL", &ns.topic_registry(), &ns.topic_registry_seq()]);
    let fresh = Producer::new(conn.clone());
    let topics: Vec<String> = (0..4).map(|n| format!("sensor.new{n}")).collect();
    for (n, topic) in topics.iter().enumerate() {
        fresh.publish(topic, &Order { n: 10 + n as u64, key: String::new() }).await.unwrap();
    }
    seen.wait_for(7, "the topics registered after the loss").await;
    for (n, topic) in topics.iter().enumerate() {
        assert!(seen.get().contains(&(topic.clone(), 10 + n as u64)), "{topic}");
    }
    worker.shutdown().await;
}

#[tokio::test]
async fn a_registered_topic_without_a_stream_is_consumed_only_once_it_exists() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    // Scheduling registers the topic; its stream exists only once the message moves.
    let id = producer
        .publish_in("sensor.later", &Order { n: 5, key: String::new() }, Duration::from_secs(3600))
        .await
        .unwrap();
    let seen = Seen::new();
    let worker = pattern_worker(&conn, &seen);
    // A topic registered after it, with a stream: once it is consumed, the worker has read
    // the registry past `sensor.later` too.
    producer.publish("sensor.now", &Order { n: 1, key: String::new() }).await.unwrap();
    seen.wait_for(1, "the topic with a stream").await;
    let admin = Admin::new(conn.clone());
    assert!(!admin.topic_exists("sensor.later").await.unwrap(), "no stream (nor group) made for it");
    assert!(tributary_streams::Scheduler::new(conn.clone()).run_now("sensor.later", &id).await.unwrap());
    seen.wait_for(2, "the topic once its stream exists").await;
    assert!(seen.get().contains(&("sensor.later".to_owned(), 5)));
    worker.shutdown().await;
}
