//! Metrics through the `metrics` facade (#20), read back from a recorder installed for this
//! test binary, against a real redis-server. Each test uses topics of its own: the recorder is
//! shared by every test of the binary.

mod common;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tributary_streams::metrics::{self as m, label};
use tributary_streams::{Admin, Context, HandlerError, Producer, StreamError, Worker};

/// A series: its name, and its labels as sorted `(name, value)` pairs.
type Series = (String, Vec<(String, String)>);

/// What the recorder holds: counters and gauges as last read, histograms' samples as gathered
/// over every snapshot (a snapshot drains them).
#[derive(Default)]
struct Recorded {
    values: HashMap<Series, DebugValue>,
    samples: HashMap<Series, Vec<f64>>,
}

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the only recorder of this binary");
        snapshotter
    })
}

fn recorded() -> &'static Mutex<Recorded> {
    static RECORDED: OnceLock<Mutex<Recorded>> = OnceLock::new();
    RECORDED.get_or_init(Mutex::default)
}

/// Labels as sorted `(name, value)` pairs, from `name=value` strings.
fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    v.sort();
    v
}

/// Reads the recorder into `recorded()`.
fn take_snapshot() {
    let mut recorded = recorded().lock().unwrap();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let key = key.key();
        let mut l: Vec<(String, String)> = key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
        l.sort();
        let id = (key.name().to_owned(), l);
        match value {
            DebugValue::Histogram(samples) => {
                recorded.samples.entry(id).or_default().extend(samples.iter().map(|s| s.into_inner()));
            }
            other => {
                recorded.values.insert(id, other);
            }
        }
    }
}

/// A counter's value, 0 when it was never registered.
fn counter(name: &str, pairs: &[(&str, &str)]) -> u64 {
    take_snapshot();
    match recorded().lock().unwrap().values.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Counter(n)) => *n,
        _ => 0,
    }
}

/// A gauge's value, if registered.
fn gauge(name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
    take_snapshot();
    match recorded().lock().unwrap().values.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Gauge(v)) => Some(v.into_inner()),
        _ => None,
    }
}

/// A histogram's samples so far.
fn samples(name: &str, pairs: &[(&str, &str)]) -> Vec<f64> {
    take_snapshot();
    recorded().lock().unwrap().samples.get(&(name.to_owned(), labels(pairs))).cloned().unwrap_or_default()
}

/// Every series of `name` whose labels include `pair`.
fn series_with(name: &str, pair: (&str, &str)) -> Vec<Vec<(String, String)>> {
    take_snapshot();
    let recorded = recorded().lock().unwrap();
    let has = |l: &Vec<(String, String)>| l.iter().any(|(k, v)| k == pair.0 && v == pair.1);
    let mut found: Vec<_> = recorded
        .values
        .keys()
        .chain(recorded.samples.keys())
        .filter(|(n, l)| n == name && has(l))
        .map(|(_, l)| l.clone())
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The labels of a producer's series for `topic`, with `extra`.
fn sent_labels<'a>(topic: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    [(label::SYSTEM, m::SYSTEM), (label::DESTINATION, topic), (label::OPERATION, "publish")]
        .into_iter()
        .chain(extra.iter().copied())
        .collect()
}

/// The labels of a worker's series for `destination` read by `group`, with `extra`.
fn worker_labels<'a>(destination: &'a str, group: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    [(label::SYSTEM, m::SYSTEM), (label::DESTINATION, destination), (label::GROUP, group)]
        .into_iter()
        .chain(extra.iter().copied())
        .collect()
}

#[tokio::test]
async fn a_producer_and_a_worker_record_what_they_do() {
    snapshotter();
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let topic = "metrics.orders";
    let producer = Producer::new(conn.clone());
    for n in [1, 7, 13] {
        producer.publish(topic, &Order { n, key: String::new() }).await.unwrap();
    }
    producer
        .publish_batch(topic, &[Order { n: 2, key: String::new() }, Order { n: 3, key: String::new() }])
        .await
        .unwrap();
    // Too large to be a message: refused before Redis, and counted as a failure.
    let huge = Order { n: 0, key: "k".repeat(5 * 1024 * 1024) };
    assert!(matches!(producer.publish(topic, &huge).await, Err(StreamError::Limits { .. })));

    let sent = sent_labels(topic, &[]);
    assert_eq!(counter(m::SENT_MESSAGES, &sent), 5, "three publishes and a batch of two");
    assert_eq!(samples(m::OPERATION_DURATION, &sent).len(), 4, "one duration per publish or batch");
    let failed = sent_labels(topic, &[(label::ERROR_TYPE, "config")]);
    assert_eq!(counter(m::SENT_MESSAGES, &failed), 1);

    // 7 fails once then succeeds; 13 is rejected; the others succeed at once.
    let failures = Seen::<u64>::new();
    let seen = failures.clone();
    let worker = Worker::builder(conn.clone(), "billing")
        .retry_policy(tributary_streams::RetryPolicy::exponential(Duration::from_millis(10), Duration::from_millis(10)))
        .on(topic, move |o: Order, ctx: Context| {
            let seen = seen.clone();
            async move {
                if o.n == 13 {
                    return Err(HandlerError::reject("unlucky"));
                }
                if o.n == 7 && ctx.attempt() == 1 {
                    seen.push(o.n);
                    return Err(HandlerError::retry("not yet"));
                }
                Ok(())
            }
        })
        .build()
        .unwrap()
        .start();
    let stats = tokio::time::timeout(PATIENCE, worker.settled(5)).await.expect("every entry settled");
    assert_eq!((stats.acked, stats.dead_lettered, stats.retried), (4, 1, 1));
    assert_eq!(failures.get(), [7]);

    let base = worker_labels(topic, "billing", &[]);
    let with = |extra: &[(&'static str, &'static str)]| worker_labels(topic, "billing", extra);
    assert_eq!(counter(m::CONSUMED_MESSAGES, &with(&[(label::OPERATION, "receive")])), 5);
    assert_eq!(samples(m::PROCESS_DURATION, &with(&[(label::OPERATION, "process")])).len(), 4);
    let handler_error = with(&[(label::OPERATION, "process"), (label::ERROR_TYPE, "handler_error")]);
    assert_eq!(samples(m::PROCESS_DURATION, &handler_error).len(), 1);
    let rejected = with(&[(label::OPERATION, "process"), (label::ERROR_TYPE, "rejected")]);
    assert_eq!(samples(m::PROCESS_DURATION, &rejected).len(), 1);
    assert!(samples(m::PROCESS_DURATION, &rejected).iter().all(|s| (0.0..10.0).contains(s)), "seconds");
    assert_eq!(counter(m::RETRIES, &base), 1);
    assert_eq!(counter(m::DEAD_LETTERS, &with(&[(label::REASON, "rejected")])), 1);
    assert_eq!(gauge(m::IN_FLIGHT, &base), Some(0.0), "no handler runs once all settled");
    worker.shutdown().await;
}

#[tokio::test]
async fn the_in_flight_gauge_counts_a_running_handler_until_it_returns() {
    snapshotter();
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let topic = "metrics.slow";
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let waiting = release.clone();
    let worker = Worker::builder(conn.clone(), "reports")
        .on(topic, move |_o: Order, _ctx: Context| {
            let waiting = waiting.clone();
            async move {
                waiting.notified().await;
                Ok::<(), HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start();
    let started = std::time::Instant::now();
    Producer::new(conn.clone()).publish(topic, &Order { n: 1, key: String::new() }).await.unwrap();
    let base = worker_labels(topic, "reports", &[]);
    wait_until(PATIENCE, "the handler counted as running", || async { gauge(m::IN_FLIGHT, &base) == Some(1.0) }).await;
    tokio::time::sleep(Duration::from_millis(100)).await; // the handler's run, simulated
    release.notify_one();
    tokio::time::timeout(PATIENCE, worker.settled(1)).await.expect("settled");
    assert_eq!(gauge(m::IN_FLIGHT, &base), Some(0.0));
    let process = worker_labels(topic, "reports", &[(label::OPERATION, "process")]);
    let took = samples(m::PROCESS_DURATION, &process);
    assert_eq!(took.len(), 1);
    assert!(took[0] >= 0.1 && took[0] <= started.elapsed().as_secs_f64(), "in seconds: {took:?}");
    worker.shutdown().await;
}

#[tokio::test]
async fn topics_a_pattern_matched_are_recorded_under_the_pattern() {
    snapshotter();
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    for topic in ["sensors.a", "sensors.b", "sensors.c"] {
        producer.publish(topic, &Order { n: 1, key: String::new() }).await.unwrap();
    }
    let seen = Seen::<u64>::new();
    let worker = Worker::builder(conn.clone(), "dashboards")
        .pattern_refresh(Duration::from_millis(50))
        .on_pattern("sensors.*", record(&seen))
        .build()
        .unwrap()
        .start();
    tokio::time::timeout(PATIENCE, worker.settled(3)).await.expect("every entry settled");
    let receive = worker_labels("sensors.*", "dashboards", &[(label::OPERATION, "receive")]);
    assert_eq!(counter(m::CONSUMED_MESSAGES, &receive), 3);
    for topic in ["sensors.a", "sensors.b", "sensors.c"] {
        assert_eq!(series_with(m::CONSUMED_MESSAGES, (label::DESTINATION, topic)), Vec::<Vec<_>>::new());
    }
    worker.shutdown().await;
}

/// The labels of a sampled topic's series, or of one of its groups.
fn sampled_labels<'a>(topic: &'a str, group: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut l = vec![(label::SYSTEM, m::SYSTEM), (label::DESTINATION, topic)];
    l.extend(group.map(|g| (label::GROUP, g)));
    l
}

#[tokio::test]
async fn the_sampler_reports_lag_pending_dead_letters_and_scheduled_from_redis() {
    snapshotter();
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let topic = "sampled.orders";
    let admin = Admin::new(conn.clone());
    admin.create_group(topic, "billing", tributary_streams::Position::Beginning).await.unwrap();
    let producer = Producer::new(conn.clone());
    for n in 1..=4 {
        producer.publish(topic, &Order { n, key: String::new() }).await.unwrap();
    }
    producer.message(topic, &Order { n: 99, key: String::new() }).schedule_in(Duration::from_secs(3600)).await.unwrap();
    let mut sampler = m::Sampler::new(conn.clone()).topics([topic]);
    let stats = sampler.sample().await.unwrap();
    assert_eq!((stats[0].length, stats[0].scheduled, stats[0].dead_letters), (4, 1, 0));
    let (t, g) = (sampled_labels(topic, None), sampled_labels(topic, Some("billing")));
    assert_eq!(gauge(m::TOPIC_LENGTH, &t), Some(4.0));
    assert_eq!(gauge(m::SCHEDULED_LENGTH, &t), Some(1.0));
    assert_eq!(gauge(m::GROUP_LAG, &g), Some(4.0), "nothing read yet");
    assert_eq!(gauge(m::GROUP_PENDING, &g), Some(0.0));
    assert_eq!(gauge(m::GROUP_OLDEST_PENDING_IDLE, &g), Some(0.0));

    // A worker that rejects 1 and holds the others in its handler: lag 0, three pending, one
    // dead letter.
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let gate = release.clone();
    let worker = Worker::builder(conn.clone(), "billing")
        .on(topic, move |o: Order, _ctx: Context| {
            let gate = gate.clone();
            async move {
                if o.n == 1 {
                    return Err(HandlerError::reject("bad order"));
                }
                gate.acquire().await.expect("open").forget();
                Ok(())
            }
        })
        .build()
        .unwrap()
        .start();
    tokio::time::timeout(PATIENCE, worker.settled(1)).await.expect("the rejected one settled");
    let stats = sampler.sample().await.unwrap();
    let billing = &stats[0].groups[0];
    assert_eq!((billing.lag, billing.pending, stats[0].dead_letters), (Some(0), 3, 1));
    assert!(billing.oldest_pending_idle.is_some());
    assert_eq!((billing.consumers, billing.busy_consumers), (1, 1), "its one consumer holds them");
    assert_eq!(gauge(m::GROUP_LAG, &g), Some(0.0));
    assert_eq!(gauge(m::GROUP_PENDING, &g), Some(3.0));
    assert_eq!(gauge(m::GROUP_CONSUMERS, &g), Some(1.0));
    assert_eq!(gauge(m::DEAD_LETTER_LENGTH, &t), Some(1.0));
    let idle = gauge(m::GROUP_OLDEST_PENDING_IDLE, &g).unwrap();
    assert!((0.0..PATIENCE.as_secs_f64()).contains(&idle), "seconds: {idle}");

    release.add_permits(3);
    tokio::time::timeout(PATIENCE, worker.settled(4)).await.expect("all settled");
    sampler.sample().await.unwrap();
    assert_eq!(gauge(m::GROUP_PENDING, &g), Some(0.0));
    worker.shutdown().await;

    // A deleted group is reported as 0, not left at its last figures.
    producer.publish(topic, &Order { n: 5, key: String::new() }).await.unwrap();
    admin.create_group(topic, "audit", tributary_streams::Position::Beginning).await.unwrap();
    sampler.sample().await.unwrap();
    let audit = sampled_labels(topic, Some("audit"));
    assert_eq!(gauge(m::GROUP_LAG, &audit), Some(5.0));
    assert!(admin.delete_group(topic, "audit").await.unwrap());
    sampler.sample().await.unwrap();
    assert_eq!(gauge(m::GROUP_LAG, &audit), Some(0.0));
    assert_eq!(gauge(m::GROUP_LAG, &g), Some(1.0), "billing is still there, one behind");
}

#[tokio::test]
async fn scheduled_messages_moved_and_reconnections_are_counted() {
    snapshotter();
    let redis = TestRedis::start_private().await;
    let conn = connect(&redis).await;
    let topic = "counted.reminders";
    let producer = Producer::new(conn.clone());
    for n in 0..2 {
        producer.message(topic, &Order { n, key: String::new() }).schedule_in(Duration::from_millis(50)).await.unwrap();
    }
    let seen = Seen::<u64>::new();
    let worker = Worker::builder(conn.clone(), "reminders").on(topic, record(&seen)).build().unwrap().start();
    tokio::time::timeout(PATIENCE, worker.settled(2)).await.expect("both delivered when due");
    let moved = sampled_labels(topic, None);
    assert_eq!(counter(m::SCHEDULED_MOVED, &moved), 2);
    worker.shutdown().await;

    let reconnects = [(label::SYSTEM, m::SYSTEM)];
    let before = counter(m::RECONNECTS, &reconnects);
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    wait_until(PATIENCE, "the reconnection counted", || async { counter(m::RECONNECTS, &reconnects) > before }).await;
    Admin::new(conn).len(topic).await.expect("connected again");
}

#[tokio::test]
async fn an_entry_taken_over_while_held_counts_as_a_lost_lease() {
    snapshotter();
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let topic = "leased.jobs";
    // A gate rather than a notification: the entry may run twice (that is the point).
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let gate = release.clone();
    let worker = Worker::builder(conn.clone(), "crunchers")
        .claim_idle(Duration::from_millis(300))
        .on(topic, move |_o: Order, _ctx: Context| {
            let gate = gate.clone();
            async move {
                let _open = gate.acquire().await.expect("open");
                Ok::<(), HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start();
    let id = Producer::new(conn.clone()).publish(topic, &Order { n: 1, key: String::new() }).await.unwrap();
    let admin = Admin::new(conn.clone());
    wait_until(PATIENCE, "the entry held", || async { admin.pending_count(topic, "crunchers").await.unwrap() == 1 })
        .await;
    // An operator (or a consumer that thought this one dead) takes it over.
    let key = conn.namespace().topic_stream(&tributary_core::Topic::new(topic).unwrap());
    redis.cli(&["XCLAIM", &key, "crunchers", "thief", "0", &id.to_string()]);
    let lost = worker_labels(topic, "crunchers", &[]);
    wait_until(PATIENCE, "the lost lease counted", || async { counter(m::LEASES_LOST, &lost) == 1 }).await;
    release.add_permits(tokio::sync::Semaphore::MAX_PERMITS);
    worker.shutdown().await;
}
