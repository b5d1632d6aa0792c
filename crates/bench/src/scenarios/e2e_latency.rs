//! `e2e-latency`: publish at a fixed rate, measure from just before the publish call to the
//! moment the consumer's handler sees the message.
//!
//! Every message carries its send time (nanoseconds since a process-wide `Instant`) in a
//! MessagePack payload `{t, pad}` padded to the payload size; both sides decode it the same way.
//!
//! - Tributary: `Producer::publish` at the rate, a `Worker` with default settings whose typed
//!   handler records the latency.
//! - Baseline: fred `xadd` of the payload alone in one field (what a user would write) at the
//!   rate, and the hand-written `XREADGROUP` loop of [`crate::baseline::consume`] recording the
//!   latency.
//! - Secondary baseline (`fred, envelope-shaped`): the same with envelope-shaped fields (as in
//!   `publish`).
//!
//! The first `--warmup-ms` of each run are not counted. Target (against the primary
//! baseline): p99 <= 1.2x.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::ClientLike;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tributary::{handler_fn, BoxError, Connection, Context, HandlerError, Producer, Worker};

use super::{progress, round_of, Options};
use crate::baseline::{consume, field, xadd, ConsumerSettings, RawFields};
use crate::env::{create_group, delete_keys, Env};
use crate::report::{histogram, Figures, Report, Run, Target};

const TOPIC: &str = "bench.latency";
const RAW_TOPIC: &str = "bench.latency-raw";
const SHAPED_TOPIC: &str = "bench.latency-shaped";
const GROUP: &str = "bench";

/// The payload: send time and padding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamp {
    /// Nanoseconds since the run's base `Instant` when the publish was started.
    pub t: u64,
    /// Padding up to the payload size.
    pub pad: Bytes,
}

/// Runs the scenario.
///
/// # Errors
/// When publishing or consuming fails, or messages do not all arrive in time.
pub async fn run(env: &Env, o: &Options) -> Result<Report, BoxError> {
    let conn = env.connect().await?;
    let fred = env.fred().await?;
    let topic_key = env.topic_key(&conn, TOPIC)?;
    let raw_key = env.topic_key(&conn, RAW_TOPIC)?;
    let shaped_key = env.topic_key(&conn, SHAPED_TOPIC)?;
    let base = Instant::now();
    // `{"t": u64, "pad": bin}` as a MessagePack map is 18 bytes plus the padding.
    let pad = Bytes::from(vec![b'x'; o.payload_bytes.saturating_sub(18)]);
    let duration = Duration::from_secs_f64(o.latency_seconds);
    let warmup = Duration::from_millis(o.warmup_ms);
    let meter = env.cpu_meter().await?;
    let side = Side { env, conn: &conn, fred: &fred, base, pad, duration, warmup, rate: o.rate };

    let (mut t_runs, mut b_runs, mut s_runs): (Vec<Run>, Vec<Run>, Vec<Run>) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..o.rounds {
        for key in [&topic_key, &raw_key, &shaped_key] {
            create_group(&fred, key, GROUP).await?;
        }
        let (t, b) = round_of(
            o,
            round,
            meter.metered(side.tributary()),
            meter.metered(side.baseline(&raw_key, RawFields::payload_only(Bytes::new()))),
        )
        .await?;
        if o.only.is_none() {
            let shaped = RawFields::like_envelope(Bytes::new());
            s_runs.push(meter.metered(side.baseline(&shaped_key, shaped)).await?);
        }
        let p99 = |r: Option<&Run>| {
            r.and_then(|r| r.latency.as_ref())
                .map_or_else(|| "-".to_owned(), |h| format!("{:.0} us", h.value_at_quantile(0.99) as f64 / 1000.0))
        };
        progress(
            "e2e-latency",
            format!("round {}: p99 tributary {}, fred {}", round + 1, p99(t.as_ref()), p99(b.as_ref())),
        );
        t_runs.extend(t);
        b_runs.extend(b);
        delete_keys(&fred, &[topic_key.clone(), raw_key.clone(), shaped_key.clone()]).await;
    }

    let t = Figures::from_runs("tributary", &t_runs);
    let b = Figures::from_runs("fred", &b_runs);
    let s = Figures::from_runs("fred, envelope-shaped", &s_runs);
    let mut report = Report::new(
        "e2e-latency",
        json!({
            "rate_per_s": o.rate,
            "seconds_per_round": o.latency_seconds,
            "warmup_ms": o.warmup_ms,
            "rounds": o.rounds,
            "payload_bytes": o.payload_bytes,
            "latency": "from just before the publish call to the handler (decoded payload)",
            "worker": "defaults (batch_size 64, max_in_flight 256, concurrency 32, block 2 s)",
            "baseline": "fred xadd of the payload alone (one field); XREADGROUP COUNT 64 BLOCK 2000 on its \
                         own connection, one XACK per batch overlapping the next read",
            "secondary_baseline": "fred, envelope-shaped: the same with the fields of a Tributary envelope",
        }),
    );
    if let Some(only) = o.only {
        return Ok(report.one_side(only, vec![t, b]));
    }
    report.ratio("p50 latency tributary/fred", t.p50(), b.p50());
    let p99 = report.ratio("p99 latency tributary/fred", t.p99(), b.p99());
    report.ratio("p99 latency tributary/fred envelope-shaped", t.p99(), s.p99());
    report.target(Target::at_most("p99 latency tributary/fred", p99, 1.2));
    report.results = vec![t, b, s];
    Ok(report)
}

/// What both sides of one round share.
struct Side<'a> {
    env: &'a Env,
    conn: &'a Connection,
    fred: &'a Client,
    base: Instant,
    pad: Bytes,
    duration: Duration,
    warmup: Duration,
    rate: u64,
}

impl Side<'_> {
    fn stamp(&self, t: u64) -> Stamp {
        Stamp { t, pad: self.pad.clone() }
    }

    async fn tributary(&self) -> Result<Run, BoxError> {
        let probe = Probe::new(self.base, self.warmup);
        let handler = {
            let probe = probe.clone();
            handler_fn(move |s: Stamp, _ctx: Context| {
                probe.observe(s.t);
                async { Ok::<(), HandlerError>(()) }
            })
        };
        let handle = Worker::builder(self.conn.clone(), GROUP)
            .consumer_name("bench-latency")
            .handler(TOPIC, handler)
            .build()?
            .start();
        let producer = Producer::new(self.conn.clone());
        let sent = pace(self.rate, self.duration, self.base, |t| {
            let (producer, stamp) = (producer.clone(), self.stamp(t));
            async move {
                producer.publish(TOPIC, &stamp).await?;
                Ok(())
            }
        })
        .await?;
        probe.wait_for(sent).await?;
        handle.shutdown().await;
        Ok(probe.run(sent, self.duration))
    }

    /// The hand-written side, writing `raw` with each message's stamp as its payload.
    async fn baseline(&self, key: &str, raw: RawFields) -> Result<Run, BoxError> {
        let probe = Probe::new(self.base, self.warmup);
        let settings = ConsumerSettings {
            key: key.to_owned(),
            group: GROUP.to_owned(),
            consumer: "bench-latency".to_owned(),
            count: 64,
            block_ms: 2_000,
        };
        let reader = self.env.fred().await?;
        let consumer = {
            let (probe, reader, acker) = (probe.clone(), reader.clone(), self.fred.clone());
            tokio::spawn(async move {
                let observe = |(_, fields): &crate::baseline::Entry| {
                    if let Some(s) = field(fields, "p").and_then(|p| rmp_serde::from_slice::<Stamp>(p).ok()) {
                        probe.observe(s.t);
                    }
                };
                consume(&reader, &acker, &settings, observe, || false).await
            })
        };
        let sent = pace(self.rate, self.duration, self.base, |t| {
            let payload = rmp_serde::to_vec_named(&self.stamp(t)).map(Bytes::from);
            let (fred, key, raw) = (self.fred.clone(), key.to_owned(), raw.clone());
            async move {
                xadd(&fred, &key, raw.with_payload(payload?)).await?;
                Ok(())
            }
        })
        .await?;
        let waited = probe.wait_for(sent).await;
        // The loop would block in its next read: stop it here (its last ack may still be in
        // flight; nothing is measured after this point).
        consumer.abort();
        tokio::spawn(async move { reader.quit().await });
        waited?;
        Ok(probe.run(sent, self.duration))
    }
}

/// Publishes at `rate` messages per second for `duration`: every millisecond, starts as many
/// `send(t)` as are due (each on its own task, `t` = nanoseconds since `base` just before it
/// is started). Returns how many were sent, once all completed.
///
/// # Errors
/// The first failed send.
pub(crate) async fn pace<F, Fut>(rate: u64, duration: Duration, base: Instant, send: F) -> Result<u64, BoxError>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sent = 0u64;
    let mut tasks = JoinSet::new();
    loop {
        tick.tick().await;
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = (rate as f64 * elapsed.as_secs_f64()) as u64;
        while sent < due {
            tasks.spawn(send(nanos(base.elapsed())));
            sent += 1;
        }
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(sent)
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Records latencies as messages arrive and tells when all of them did.
#[derive(Debug)]
struct Probe {
    base: Instant,
    /// Messages sent before this (ns since `base`) are not counted.
    counted_from: u64,
    latency: Mutex<Histogram<u64>>,
    received: AtomicU64,
    expected: AtomicU64,
    all_received: Notify,
}

impl Probe {
    fn new(base: Instant, warmup: Duration) -> Arc<Self> {
        Arc::new(Self {
            base,
            counted_from: nanos(base.elapsed() + warmup),
            latency: Mutex::new(histogram()),
            received: AtomicU64::new(0),
            expected: AtomicU64::new(u64::MAX),
            all_received: Notify::new(),
        })
    }

    fn observe(&self, sent_at: u64) {
        let now = nanos(self.base.elapsed());
        if sent_at >= self.counted_from {
            self.latency.lock().expect("histogram lock").saturating_record(now.saturating_sub(sent_at));
        }
        let n = self.received.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.expected.load(Ordering::SeqCst) {
            self.all_received.notify_one();
        }
    }

    /// Waits until `sent` messages arrived (at most 30 s).
    async fn wait_for(&self, sent: u64) -> Result<(), BoxError> {
        self.expected.store(sent, Ordering::SeqCst);
        let all = async {
            while self.received.load(Ordering::SeqCst) < sent {
                self.all_received.notified().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), all).await.map_err(|_| {
            format!("only {} of {sent} messages arrived within 30 s", self.received.load(Ordering::SeqCst)).into()
        })
    }

    fn run(&self, sent: u64, duration: Duration) -> Run {
        let latency = self.latency.lock().expect("histogram lock").clone();
        Run::new(sent, duration, Some(latency))
    }
}
