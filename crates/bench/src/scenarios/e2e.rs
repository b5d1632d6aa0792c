//! `e2e`: drain a backlog.
//!
//! Each round publishes the same backlog (pipelined, untimed) to three streams and creates a
//! consumer group on each: envelopes for Tributary, the payload alone in one field for the
//! baseline (what a user would have written), and envelopes for the secondary baseline. Then
//! it times:
//!
//! - Tributary: a `Worker` with a no-op handler (`raw_handler_fn`, so no payload decode),
//!   from `start()` until its stats count every entry acknowledged (Redis confirmed the XACK).
//! - Baseline: the hand-written loop of [`crate::baseline::consume`]: `XREADGROUP COUNT n` on
//!   its own connection, one `XACK` per batch overlapping the next read, until the last ack is
//!   confirmed, over the payload-only entries.
//! - Secondary baseline (`fred, envelope-shaped`): the same loop over envelopes.
//!
//! Target (against the primary baseline): throughput >= 0.9x.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::interfaces::ClientLike;
use serde_json::json;
use tokio::task::JoinSet;
use tributary::{raw_handler_fn, BoxError, Connection, HandlerError, Producer, Worker};

use super::{encoded, payload, progress, rate_of, round_of, Options};
use crate::baseline::{consume, ConsumerSettings, RawFields};
use crate::cpu::CpuMeter;
use crate::env::{create_group, delete_keys, pending_count, Env};
use crate::report::{round3, Figures, Report, Run, Target};

const TOPIC: &str = "bench.e2e";
const RAW_TOPIC: &str = "bench.e2e-raw";
const SHAPED_TOPIC: &str = "bench.e2e-shaped";
const GROUP: &str = "bench";

/// How the benchmark's Worker is configured, as reported in the JSON line.
pub fn worker_params(o: &Options) -> serde_json::Value {
    json!({
        "batch_size": o.read_count,
        "max_in_flight": o.max_in_flight,
        "concurrency": o.worker_concurrency,
        "handler": "raw_handler_fn no-op",
    })
}

/// Runs the scenario.
///
/// # Errors
/// When publishing or consuming fails, or a drain does not finish in time.
pub async fn run(env: &Env, o: &Options) -> Result<Report, BoxError> {
    let conn = env.connect().await?;
    let fred = env.fred().await?;
    let producer = Producer::new(conn.clone());
    let topic_key = env.topic_key(&conn, TOPIC)?;
    let raw_key = env.topic_key(&conn, RAW_TOPIC)?;
    let shaped_key = env.topic_key(&conn, SHAPED_TOPIC)?;
    let raw = RawFields::payload_only(encoded(&payload(o.payload_bytes)));
    let n = o.backlog;
    let meter = env.cpu_meter().await?;
    let mut notes = Vec::new();
    let mut shutdowns = Vec::new();

    let (mut t_runs, mut b_runs, mut s_runs): (Vec<Run>, Vec<Run>, Vec<Run>) = (Vec::new(), Vec::new(), Vec::new());
    let both = o.only.is_none();
    for round in 0..o.rounds {
        progress("e2e", format!("round {}: publishing 3 x {n} entries", round + 1));
        if o.runs_tributary() {
            fill(&producer, TOPIC, n, o.payload_bytes).await?;
        }
        if o.runs_baseline() {
            fill_raw(&fred, &raw_key, &raw, n).await?;
        }
        if both {
            fill(&producer, SHAPED_TOPIC, n, o.payload_bytes).await?;
        }
        create_group(&fred, &topic_key, GROUP).await?;
        create_group(&fred, &raw_key, GROUP).await?;
        create_group(&fred, &shaped_key, GROUP).await?;
        let (t, b) = round_of(
            o,
            round,
            drain_tributary(&meter, &conn, n, o),
            meter.metered(drain_baseline(env, &fred, &raw_key, n, o)),
        )
        .await?;
        let t = t.map(|(run, stop)| {
            shutdowns.push(round3(stop.as_secs_f64()));
            run
        });
        if both {
            s_runs.push(meter.metered(drain_baseline(env, &fred, &shaped_key, n, o)).await?);
        }
        let rates = format!("tributary {}, fred {}", rate_of(t.as_ref()), rate_of(b.as_ref()));
        t_runs.extend(t);
        b_runs.extend(b);
        let drained = [
            (&topic_key, "tributary", o.runs_tributary()),
            (&raw_key, "fred", o.runs_baseline()),
            (&shaped_key, "fred, envelope-shaped", both),
        ];
        for (key, side, _) in drained.into_iter().filter(|(_, _, ran)| *ran) {
            let left = pending_count(&fred, key, GROUP).await?;
            if left != 0 {
                notes.push(format!("round {}: {left} entries still pending after the {side} drain", round + 1));
            }
        }
        progress("e2e", format!("round {}: {rates}", round + 1));
        delete_keys(&fred, &[topic_key.clone(), raw_key.clone(), shaped_key.clone()]).await;
    }

    let t = Figures::from_runs("tributary", &t_runs);
    let b = Figures::from_runs("fred", &b_runs);
    let s = Figures::from_runs("fred, envelope-shaped", &s_runs);
    let mut report = Report::new(
        "e2e",
        json!({
            "backlog": n,
            "rounds": o.rounds,
            "payload_bytes": o.payload_bytes,
            "worker": worker_params(o),
            "baseline": format!(
                "fred XREADGROUP COUNT {} BLOCK 2000 on its own connection, one XACK per batch \
                 overlapping the next read, over entries of the payload alone ({} field / {} bytes)",
                o.read_count,
                raw.len(),
                raw.bytes()
            ),
            "secondary_baseline": "fred, envelope-shaped: the same loop over Tributary's entries",
        }),
    );
    report.measured = json!({ "worker_shutdown_seconds": shutdowns });
    report.notes = notes;
    if let Some(only) = o.only {
        return Ok(report.one_side(only, vec![t, b]));
    }
    let throughput = report.ratio("throughput tributary/fred", t.per_second, b.per_second);
    report.ratio("throughput tributary/fred envelope-shaped", t.per_second, s.per_second);
    report.target(Target::at_least("throughput tributary/fred", throughput, 0.9));
    report.results = vec![t, b, s];
    Ok(report)
}

/// Publishes `n` messages to `topic` with `publish_batch` (1,000 per batch, 4 tasks).
///
/// # Errors
/// When a batch fails.
pub async fn fill(producer: &Producer, topic: &'static str, n: u64, payload_bytes: usize) -> Result<(), BoxError> {
    const BATCH: u64 = 1_000;
    const TASKS: u64 = 4;
    let mut tasks = JoinSet::new();
    let batches = n.div_ceil(BATCH);
    for t in 0..TASKS {
        let producer = producer.clone();
        tasks.spawn(async move {
            let body = payload(payload_bytes);
            let mut b = t;
            while b < batches {
                let count = BATCH.min(n - b * BATCH) as usize;
                producer.publish_batch(topic, std::iter::repeat(&body).take(count)).await?;
                b += TASKS;
            }
            Ok::<_, BoxError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Writes `n` entries of `fields` to `key` (fred pipelines of 1,000 `XADD`s).
///
/// # Errors
/// When an `XADD` fails.
async fn fill_raw(fred: &fred::clients::Client, key: &str, fields: &RawFields, n: u64) -> Result<(), BoxError> {
    use fred::interfaces::StreamsInterface;
    let mut left = n;
    while left > 0 {
        let pipeline = fred.pipeline();
        for _ in 0..left.min(1_000) {
            let _: () = pipeline.xadd(key, false, None, "*", fields.fields()).await?;
        }
        for result in pipeline.try_all::<fred::types::Value>().await {
            result?;
        }
        left -= left.min(1_000);
    }
    Ok(())
}

/// How long a drain of `n` entries may take before the run is abandoned (at least 60 s, or
/// 2,000 entries per second).
fn drain_timeout(n: u64) -> Duration {
    Duration::from_secs(60).max(Duration::from_secs(n / 2_000))
}

/// Starts a worker with a no-op handler and waits until it acknowledged `n` entries.
/// Returns the run and how long the graceful shutdown took afterwards.
async fn drain_tributary(
    meter: &CpuMeter,
    conn: &Connection,
    n: u64,
    o: &Options,
) -> Result<(Run, Duration), BoxError> {
    let worker = Worker::builder(conn.clone(), GROUP)
        .consumer_name("bench-e2e")
        .batch_size(o.read_count)
        .max_in_flight(o.max_in_flight)
        .concurrency(o.worker_concurrency)
        .handler(TOPIC, raw_handler_fn(|_ctx| async { Ok::<(), HandlerError>(()) }))
        .build()?;
    let drain = async {
        let start = Instant::now();
        let handle = worker.start();
        wait_acked(&handle, n, start + drain_timeout(n)).await?;
        Ok::<_, BoxError>((start.elapsed(), handle))
    };
    let ((elapsed, handle), cpu) = meter.measure(drain).await?;
    let stop = Instant::now();
    handle.shutdown().await;
    let mut run = Run::new(n, elapsed, None);
    run.cpu = Some(cpu);
    Ok((run, stop.elapsed()))
}

/// Waits until `handle` counts `n` acknowledged entries. The worker has no completion signal,
/// so its counters are checked every millisecond (at most 1 ms late on a multi-second run).
///
/// # Errors
/// At `deadline`.
pub async fn wait_acked(handle: &tributary::WorkerHandle, n: u64, deadline: Instant) -> Result<(), BoxError> {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let stats = handle.stats();
        if stats.acked >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("worker acknowledged only {} of {n} entries in time", stats.acked).into());
        }
    }
}

/// Drains `key` with the hand-written loop.
async fn drain_baseline(
    env: &Env,
    acker: &fred::clients::Client,
    key: &str,
    n: u64,
    o: &Options,
) -> Result<Run, BoxError> {
    let settings = ConsumerSettings {
        key: key.to_owned(),
        group: GROUP.to_owned(),
        consumer: "bench-e2e".to_owned(),
        count: o.read_count as u64,
        block_ms: 2_000,
    };
    let consumed = AtomicU64::new(0);
    let start = Instant::now();
    let reader = env.fred().await?;
    let drain = consume(
        &reader,
        acker,
        &settings,
        |_| {
            consumed.fetch_add(1, Ordering::Relaxed);
        },
        || consumed.load(Ordering::Relaxed) >= n,
    );
    tokio::time::timeout(drain_timeout(n), drain).await.map_err(|_| "baseline drain timed out")??;
    let elapsed = start.elapsed();
    let _ = reader.quit().await;
    Ok(Run::new(n, elapsed, None))
}
