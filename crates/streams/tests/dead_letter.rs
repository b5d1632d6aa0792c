//! Retries, dead letters and malformed entries against a real redis-server.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tributary_core::Connection;
use tributary_streams::{Admin, Context, DeadLetters, HandlerError, Producer, RetryPolicy, Worker, WorkerBuilder};

fn fast_retries(b: WorkerBuilder) -> WorkerBuilder {
    b.retry_policy(RetryPolicy::exponential(Duration::from_millis(10), Duration::from_millis(40)))
}

#[tokio::test]
async fn retried_message_succeeds_on_a_later_attempt_with_its_identity() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let id = Producer::new(conn.clone()).publish("jobs", &Order { n: 1, key: String::new() }).await.unwrap();
    let attempts = Seen::new();
    let a = attempts.clone();
    let worker = fast_retries(Worker::builder(conn.clone(), "g").consumer_name("c1"))
        .on("jobs", move |_o: Order, ctx: Context| {
            let a = a.clone();
            async move {
                a.push((ctx.attempt(), ctx.entry_id(), ctx.message_id()));
                if ctx.attempt() < 3 {
                    return Err(HandlerError::retry("not yet"));
                }
                Ok(())
            }
        })
        .build()
        .unwrap()
        .start();
    attempts.wait_for(3, "three attempts").await;
    let admin = Admin::new(conn.clone());
    wait_until(PATIENCE, "acked", || async { admin.pending_count("jobs", "g").await.unwrap() == 0 }).await;
    let got = attempts.get();
    assert_eq!(got.iter().map(|a| a.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(got.iter().all(|a| a.1 == id && a.2 == got[0].2), "same entry and message id on every attempt");
    assert_eq!(DeadLetters::new(conn, "jobs").unwrap().count().await.unwrap(), 0);
    assert_eq!(worker.stats().retried, 2);
    worker.shutdown().await;
}

#[tokio::test]
async fn failing_message_is_dead_lettered_after_max_deliveries_with_reason_and_attempts() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    let bad = producer.publish("jobs", &Order { n: 13, key: String::new() }).await.unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let good = Seen::new();
    let (c, g) = (calls.clone(), good.clone());
    let worker = fast_retries(Worker::builder(conn.clone(), "g").consumer_name("c1").max_deliveries(4))
        .on("jobs", move |o: Order, _ctx: Context| {
            let (c, g) = (c.clone(), g.clone());
            async move {
                if o.n == 13 {
                    c.fetch_add(1, Ordering::SeqCst);
                    return Err(HandlerError::retry("database says no"));
                }
                g.push(o.n);
                Ok(())
            }
        })
        .build()
        .unwrap()
        .start();
    producer.publish("jobs", &Order { n: 14, key: String::new() }).await.unwrap();
    let dlq = DeadLetters::new(conn.clone(), "jobs").unwrap();
    wait_until(PATIENCE, "dead letter", || async { dlq.count().await.unwrap() == 1 }).await;
    good.wait_for(1, "the good message").await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let letters = dlq.list(10).await.unwrap();
    let letter = &letters[0];
    assert_eq!(letter.reason, "max_deliveries");
    assert_eq!(letter.attempts, 4);
    assert_eq!(letter.error, "database says no");
    assert_eq!(letter.original_id, bad.to_string());
    assert_eq!((letter.topic.as_str(), letter.group.as_str(), letter.consumer.as_str()), ("jobs", "g", "c1"));
    assert_eq!(letter.envelope().unwrap().decode::<Order>().unwrap().n, 13);
    assert_eq!(Admin::new(conn).pending_count("jobs", "g").await.unwrap(), 0, "moved and acked together");
    worker.shutdown().await;
}

#[tokio::test]
async fn panic_is_a_retryable_failure_and_the_worker_survives() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    producer.publish("jobs", &Order { n: 1, key: String::new() }).await.unwrap();
    let done = Seen::new();
    let d = done.clone();
    let worker = fast_retries(Worker::builder(conn.clone(), "g").consumer_name("c1"))
        .on("jobs", move |o: Order, ctx: Context| {
            let d = d.clone();
            async move {
                if ctx.attempt() == 1 {
                    panic!("boom on {}", o.n);
                }
                d.push((o.n, ctx.attempt()));
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .unwrap()
        .start();
    done.wait_for(1, "success after the panic").await;
    producer.publish("jobs", &Order { n: 2, key: String::new() }).await.unwrap();
    done.wait_for(2, "the worker keeps going").await;
    assert_eq!(done.get()[0], (1, 2));
    assert!(worker.stats().panics >= 2);
    worker.shutdown().await;
}

#[tokio::test]
async fn rejected_message_is_dead_lettered_at_once() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    Producer::new(conn.clone()).publish("jobs", &Order { n: 1, key: String::new() }).await.unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("c1")
        .on("jobs", move |_o: Order, _ctx: Context| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(HandlerError::reject("customer does not exist"))
            }
        })
        .build()
        .unwrap()
        .start();
    let dlq = DeadLetters::new(conn.clone(), "jobs").unwrap();
    wait_until(PATIENCE, "dead letter", || async { dlq.count().await.unwrap() == 1 }).await;
    let letter = dlq.list(1).await.unwrap().remove(0);
    assert_eq!((letter.reason.as_str(), letter.attempts), ("rejected", 1));
    assert_eq!(letter.error, "customer does not exist");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    worker.shutdown().await;
}

#[tokio::test]
async fn malformed_entries_from_redis_cli_are_dead_lettered_and_good_ones_still_flow() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let key = format!("{}:{{jobs}}", redis.namespace());
    let producer = Producer::new(conn.clone());
    producer.publish("jobs", &Order { n: 1, key: String::new() }).await.unwrap();
    // An entry that is not an envelope at all, one of an unknown version, one missing its
    // payload, and one whose payload is not an Order.
    redis.cli(&["XADD", &key, "*", "hello", "world"]);
    redis.cli(&["XADD", &key, "*", "v", "99", "p", "x"]);
    redis.cli(&[
        "XADD",
        &key,
        "*",
        "v",
        "1",
        "id",
        "01932c07-a5d8-7c3e-9d4f-0123456789ab",
        "type",
        "Order",
        "ct",
        "application/json",
        "ts",
        "1700000000000",
    ]);
    redis.cli(&[
        "XADD",
        &key,
        "*",
        "v",
        "1",
        "id",
        "01932c07-a5d8-7c3e-9d4f-0123456789ac",
        "type",
        "Order",
        "ct",
        "application/json",
        "ts",
        "1700000000000",
        "p",
        "{\"wrong\":true}",
    ]);
    producer.publish("jobs", &Order { n: 2, key: String::new() }).await.unwrap();

    let good = Seen::new();
    let g = good.clone();
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("c1")
        .concurrency(1)
        .on("jobs", record(&g))
        .build()
        .unwrap()
        .start();
    good.wait_for(2, "both good messages").await;
    assert_eq!(good.get(), vec![1, 2]);
    let dlq = DeadLetters::new(conn.clone(), "jobs").unwrap();
    wait_until(PATIENCE, "four dead letters", || async { dlq.count().await.unwrap() == 4 }).await;
    let letters = dlq.list(10).await.unwrap();
    let reasons: Vec<(&str, &str)> = letters.iter().map(|l| (l.reason.as_str(), l.error.as_str())).collect();
    assert_eq!(reasons[0], ("malformed", "entry has no format version field `v`"));
    assert!(reasons[1].1.starts_with("unsupported wire format version `99`"), "{reasons:?}");
    assert_eq!(reasons[2], ("malformed", "required field `p` is missing"));
    assert_eq!(reasons[3].0, "rejected");
    assert!(reasons[3].1.contains("does not decode as `Order`: "), "the type and the detail: {reasons:?}");
    // The raw fields are kept.
    assert_eq!(letters[0].fields, vec![("hello".into(), "world".into())]);
    assert_eq!(worker.stats().malformed, 3);
    assert_eq!(Admin::new(conn).pending_count("jobs", "g").await.unwrap(), 0);
    worker.shutdown().await;
}

#[tokio::test]
async fn dead_letters_replay_onto_the_topic_with_the_same_message_id() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    Producer::new(conn.clone()).publish("jobs", &Order { n: 5, key: String::new() }).await.unwrap();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let seen = Seen::new();
    let (f, s) = (fail.clone(), seen.clone());
    let worker = Worker::builder(conn.clone(), "g")
        .consumer_name("c1")
        .on("jobs", move |o: Order, ctx: Context| {
            let (f, s) = (f.clone(), s.clone());
            async move {
                s.push((o.n, ctx.message_id(), ctx.published_at(), ctx.entry_id()));
                if f.load(Ordering::SeqCst) {
                    return Err(HandlerError::reject("downstream is down"));
                }
                Ok(())
            }
        })
        .build()
        .unwrap()
        .start();
    let dlq = DeadLetters::new(conn.clone(), "jobs").unwrap();
    wait_until(PATIENCE, "dead letter", || async { dlq.count().await.unwrap() == 1 }).await;
    fail.store(false, Ordering::SeqCst);
    assert_eq!(dlq.replay_all().await.unwrap().replayed, 1);
    seen.wait_for(2, "replayed message handled").await;
    let got = seen.get();
    // The message carries no id or time of its own (wire format version 3): both come from the
    // entry it was first written at, which the replayed entry names (`o`).
    assert_ne!(got[0].3, got[1].3, "a new entry");
    assert_eq!((got[0].0, got[0].1, got[0].2), (got[1].0, got[1].1, got[1].2), "same payload, message id and time");
    let stream = conn.namespace().topic_stream(&tributary_core::Topic::new("jobs").unwrap());
    assert_eq!(got[0].1, tributary_core::MessageId::of_entry(&stream, got[0].3));
    assert_eq!(got[1].2, std::time::UNIX_EPOCH + Duration::from_millis(got[0].3.ms()));
    assert_eq!(dlq.count().await.unwrap(), 0);
    worker.shutdown().await;
    assert_eq!(dlq.purge().await.unwrap(), 0);
}

#[tokio::test]
async fn a_dead_letter_that_cannot_be_written_leaves_the_entry_pending_until_it_can() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    // The dead-letter key is not a stream: every append to it fails with WRONGTYPE.
    let dlq_key = format!("{}:{{jobs}}:dlq", redis.namespace());
    redis.cli(&["SET", &dlq_key, "not a stream"]);
    Producer::new(conn.clone()).publish("jobs", &Order { n: 1, key: String::new() }).await.unwrap();
    let calls = Seen::new();
    let c = calls.clone();
    let worker = Worker::builder(conn.clone(), "g")
        .claim_idle(Duration::from_millis(300))
        .on("jobs", move |o: Order, _ctx: Context| {
            c.push(o.n);
            async move { Err::<(), _>(HandlerError::reject("cannot ever work")) }
        })
        .build()
        .unwrap()
        .start();
    // The failed move did not acknowledge it: it stayed pending, so it is taken up again.
    calls.wait_for(2, "the entry taken up again after the failed move").await;
    let admin = Admin::new(conn.clone());
    assert_eq!(admin.pending_count("jobs", "g").await.unwrap(), 1, "still pending after the failed move");
    assert_eq!(worker.stats().dead_lettered, 0);
    assert_eq!(redis.cli(&["TYPE", &dlq_key]).trim(), "string");
    // Once the key is fixed, the entry is taken up again and moved.
    redis.cli(&["DEL", &dlq_key]);
    let dead = DeadLetters::new(conn.clone(), "jobs").unwrap();
    wait_until(PATIENCE, "moved once the key is fixed", || async { dead.count().await.unwrap() == 1 }).await;
    wait_until(PATIENCE, "acknowledged", || async { admin.pending_count("jobs", "g").await.unwrap() == 0 }).await;
    worker.shutdown().await;
}

#[tokio::test]
async fn a_replayed_dead_letter_reaches_only_the_group_that_gave_up_on_it() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    // Both groups exist before the message: both get it.
    let admin = Admin::new(conn.clone());
    admin.create_group("orders", "billing", tributary_streams::Position::Beginning).await.unwrap();
    admin.create_group("orders", "shipping", tributary_streams::Position::Beginning).await.unwrap();
    producer.publish("orders", &Order { n: 7, key: String::new() }).await.unwrap();
    let (billed, shipped) = (Seen::new(), Seen::new());
    let billing_up = Arc::new(AtomicU64::new(0)); // 0: the payment service is down
    let (b, up) = (billed.clone(), billing_up.clone());
    let billing = Worker::builder(conn.clone(), "billing")
        .on("orders", move |o: Order, _ctx: Context| {
            let (b, up) = (b.clone(), up.clone());
            async move {
                if up.load(Ordering::SeqCst) == 0 {
                    return Err(HandlerError::reject("payment service down"));
                }
                b.push(o.n);
                Ok(())
            }
        })
        .build()
        .unwrap()
        .start();
    let s = shipped.clone();
    let shipping = Worker::builder(conn.clone(), "shipping")
        .on("orders", move |o: Order, _ctx: Context| {
            s.push(o.n);
            async { Ok::<_, HandlerError>(()) }
        })
        .build()
        .unwrap()
        .start();
    let dlq = DeadLetters::new(conn.clone(), "orders").unwrap();
    wait_until(PATIENCE, "billing gave up", || async { dlq.count().await.unwrap() == 1 }).await;
    shipped.wait_for(1, "shipped once").await;

    // The payment service is back: billing's failure is replayed.
    billing_up.store(1, Ordering::SeqCst);
    assert_eq!(dlq.replay_all().await.unwrap().replayed, 1);
    billed.wait_for(1, "billed after the replay").await;
    wait_until(PATIENCE, "shipping skipped the replay", || async { shipping.stats().replays_for_other_groups == 1 })
        .await;
    assert_eq!(shipped.get(), vec![7], "shipping did not run the message again");
    wait_until(PATIENCE, "nothing pending", || async {
        admin.pending_count("orders", "billing").await.unwrap()
            + admin.pending_count("orders", "shipping").await.unwrap()
            == 0
    })
    .await;
    billing.shutdown().await;
    shipping.shutdown().await;
}

#[tokio::test]
async fn an_entry_too_large_to_be_a_message_is_dead_lettered_as_a_bounded_prefix() {
    use fred::interfaces::StreamsInterface;
    let redis = TestRedis::start().await;
    let limits = tributary_core::Limits { max_payload: 16 * 1024, ..Default::default() };
    let conn = Connection::options().namespace(redis.namespace()).limits(limits).connect(&redis.url()).await.unwrap();
    // 1 MiB in one field: more than any valid envelope under these limits.
    let key = format!("{}:{{jobs}}", redis.namespace());
    let huge = bytes::Bytes::from(vec![b'x'; 1024 * 1024]);
    let _: String = conn
        .redis()
        .xadd(key.as_str(), false, None, "*", vec![("v", bytes::Bytes::from_static(b"2")), ("p", huge)])
        .await
        .unwrap();
    let worker = Worker::builder(conn.clone(), "g")
        .on("jobs", |_o: Order, _ctx: Context| async { Ok(()) })
        .build()
        .unwrap()
        .start();
    let dlq = DeadLetters::new(conn.clone(), "jobs").unwrap();
    wait_until(PATIENCE, "dead-lettered", || async { dlq.count().await.unwrap() == 1 }).await;
    let letter = dlq.list(1).await.unwrap().remove(0);
    assert_eq!(letter.reason, "malformed");
    assert_eq!(letter.truncated_from, Some(1024 * 1024 + 3), "the original size: two names, two values");
    let kept: usize = letter.fields.iter().map(|(n, v)| n.len() + v.len()).sum();
    assert!(kept <= 64 * 1024, "a prefix of at most 64 KiB kept, not {kept} bytes");
    assert!(letter.fields[1].1.starts_with(b"xxxx"), "the prefix is the original's start");
    let err = dlq.replay(letter.id).await.unwrap_err();
    assert!(matches!(err, tributary_streams::StreamError::NothingToReplay { .. }), "{err:?}");
    worker.shutdown().await;
}

#[tokio::test]
async fn replayed_dead_letters_are_trimmed_by_the_topics_retention() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    for n in 0..10 {
        producer.publish("jobs", &Order { n, key: String::new() }).await.unwrap();
    }
    let worker = Worker::builder(conn.clone(), "g")
        .on("jobs", |_o: Order, _ctx: Context| async { Err::<(), _>(HandlerError::reject("no")) })
        .build()
        .unwrap()
        .start();
    assert_eq!(tokio::time::timeout(PATIENCE, worker.settled(10)).await.unwrap().dead_lettered, 10);
    worker.shutdown().await;
    let admin = Admin::new(conn.clone());
    admin.set_retention("jobs", tributary_streams::Retention::max_len(3)).await.unwrap();
    let report = DeadLetters::new(conn.clone(), "jobs").unwrap().replay_all().await.unwrap();
    assert_eq!(report.replayed, 10);
    // 10 handled entries and 10 replayed ones, trimmed once after the replay.
    assert_eq!(admin.len("jobs").await.unwrap(), 3);
}
