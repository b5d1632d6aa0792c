//! `memory`: peak RSS of a consumer draining a large backlog.
//!
//! The benchmark publishes the backlog itself (untimed), then re-runs its own binary with the
//! hidden scenario `memory-child`, which only consumes: a `Worker` with a no-op handler until
//! every entry is acknowledged. The child reads its peak resident set (`VmHWM` in
//! `/proc/self/status`) at the end and prints it as JSON, so the producer's allocations do not
//! count. For context a second child drains the same entries through another group with the
//! hand-written fred loop (`--memory-baseline=false` skips it).
//!
//! Target: the Tributary consumer's peak RSS < 64 MiB.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tributary::{raw_handler_fn, BoxError, HandlerError, Producer, Worker};

use super::e2e::{fill, wait_acked, worker_params};
use super::{progress, Options};
use crate::baseline::{consume, ConsumerSettings};
use crate::env::{connect, create_group, delete_keys, fred_client, Env};
use crate::report::{round2, Figures, Report, Run, Target};

const TOPIC: &str = "bench.memory";
const GROUP: &str = "bench";
const RAW_GROUP: &str = "raw";
const LIMIT_MIB: f64 = 64.0;

/// Arguments the `memory` and `many-topics` scenarios pass to their child process.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ChildArgs {
    /// Redis URL.
    #[arg(long, hide = true)]
    pub child_url: Option<String>,
    /// Key namespace.
    #[arg(long, hide = true)]
    pub child_namespace: Option<String>,
    /// Entries to drain (`memory`).
    #[arg(long, hide = true)]
    pub child_count: Option<u64>,
    /// Drain with the hand-written fred loop instead of a `Worker` (`memory`).
    #[arg(long, hide = true)]
    pub child_baseline: bool,
}

/// Runs the scenario.
///
/// # Errors
/// When publishing fails or a consumer process fails.
pub async fn run(env: &Env, o: &Options) -> Result<Report, BoxError> {
    let conn = env.connect().await?;
    let fred = env.fred().await?;
    let key = env.topic_key(&conn, TOPIC)?;
    let n = o.memory_backlog;
    progress("memory", format!("publishing {n} entries"));
    fill(&Producer::new(conn.clone()), TOPIC, n, o.payload_bytes).await?;
    create_group(&fred, &key, GROUP).await?;
    create_group(&fred, &key, RAW_GROUP).await?;

    progress("memory", "draining with a Worker in a child process");
    let tributary = spawn_child(env, o, false).await?;
    let baseline = if o.memory_baseline {
        progress("memory", "draining with the hand-written fred loop in a child process");
        Some(spawn_child(env, o, true).await?)
    } else {
        None
    };
    delete_keys(&fred, &[key]).await;

    let mib = |v: &Value| v["peak_rss_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0;
    let drain = |name: &str, v: &Value| {
        let seconds = v["seconds"].as_f64().unwrap_or(f64::NAN);
        Figures::from_runs(name, &[Run::new(n, Duration::from_secs_f64(seconds.max(0.0)), None)])
    };
    let mut report = Report::new(
        "memory",
        json!({
            "backlog": n,
            "payload_bytes": o.payload_bytes,
            "worker": worker_params(o),
            "measure": "VmHWM of a child process that only consumes",
            "baseline": "none (target is absolute); the fred loop is measured for context",
        }),
    );
    let peak = mib(&tributary);
    report.results.push(drain("tributary", &tributary));
    let mut measured = json!({ "tributary": with_mib(tributary) });
    if let Some(b) = baseline {
        report.ratio("peak RSS tributary/fred", peak, mib(&b));
        report.results.push(drain("fred", &b));
        measured["fred"] = with_mib(b);
    }
    report.measured = measured;
    report.target(Target::at_most("peak RSS MiB (tributary consumer)", round2(peak), LIMIT_MIB));
    Ok(report)
}

fn with_mib(mut v: Value) -> Value {
    for field in ["peak_rss_kib", "rss_at_start_kib"] {
        let kib = v[field].as_f64().unwrap_or(f64::NAN);
        v[field.replace("_kib", "_mib")] = json!(round2(kib / 1024.0));
    }
    v
}

/// Re-runs this binary as the consumer process and returns what it printed.
async fn spawn_child(env: &Env, o: &Options, baseline: bool) -> Result<Value, BoxError> {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.arg("memory-child")
        .args(["--child-url", &env.url(), "--child-namespace", &env.namespace()])
        .args(["--child-count", &o.memory_backlog.to_string()])
        .args(["--read-count", &o.read_count.to_string()])
        .args(["--max-in-flight", &o.max_in_flight.to_string()])
        .args(["--worker-concurrency", &o.worker_concurrency.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if baseline {
        cmd.arg("--child-baseline");
    }
    let limit = drain_timeout(o.memory_backlog) + Duration::from_secs(30);
    let out = tokio::time::timeout(limit, cmd.output()).await.map_err(|_| "memory child timed out")??;
    if !out.status.success() {
        return Err(format!("memory child failed: {}", out.status).into());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty()).ok_or("memory child printed nothing")?;
    Ok(serde_json::from_str(line)?)
}

fn drain_timeout(n: u64) -> Duration {
    Duration::from_secs(60).max(Duration::from_secs(n / 2_000))
}

/// The consumer process: drains the backlog and returns its peak RSS.
///
/// # Errors
/// When an argument is missing, Redis fails or the drain does not finish in time.
pub async fn child(args: &ChildArgs, o: &Options) -> Result<Value, BoxError> {
    let url = args.child_url.as_deref().ok_or("--child-url missing")?;
    let namespace = args.child_namespace.as_deref().ok_or("--child-namespace missing")?;
    let n = args.child_count.ok_or("--child-count missing")?;
    let rss_at_start = status_kib("VmRSS")?;
    let start = Instant::now();
    let mut shutdown_seconds = None;
    let drained = if args.child_baseline {
        let conn = connect(url, namespace).await?;
        let key = conn.namespace().topic_stream(&tributary::Topic::new(TOPIC)?);
        let (reader, acker) = (fred_client(url).await?, fred_client(url).await?);
        let settings = ConsumerSettings {
            key,
            group: RAW_GROUP.to_owned(),
            consumer: "bench-memory".to_owned(),
            count: o.read_count as u64,
            block_ms: 2_000,
        };
        let consumed = AtomicU64::new(0);
        let drain = consume(
            &reader,
            &acker,
            &settings,
            |_| {
                consumed.fetch_add(1, Ordering::Relaxed);
            },
            || consumed.load(Ordering::Relaxed) >= n,
        );
        tokio::time::timeout(drain_timeout(n), drain).await.map_err(|_| "drain timed out")??;
        start.elapsed()
    } else {
        let conn = connect(url, namespace).await?;
        let handle = Worker::builder(conn, GROUP)
            .consumer_name("bench-memory")
            .batch_size(o.read_count)
            .max_in_flight(o.max_in_flight)
            .concurrency(o.worker_concurrency)
            .handler(TOPIC, raw_handler_fn(|_ctx| async { Ok::<(), HandlerError>(()) }))
            .build()?
            .start();
        wait_acked(&handle, n, start + drain_timeout(n)).await?;
        let drained = start.elapsed();
        let stop = Instant::now();
        handle.shutdown().await;
        shutdown_seconds = Some(stop.elapsed().as_secs_f64());
        drained
    };
    Ok(json!({
        "consumer": if args.child_baseline { "fred" } else { "tributary" },
        "entries": n,
        "seconds": drained.as_secs_f64(),
        "shutdown_seconds": shutdown_seconds,
        "rss_at_start_kib": rss_at_start,
        "peak_rss_kib": status_kib("VmHWM")?,
    }))
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in KiB.
///
/// # Errors
/// When the file or the field cannot be read (not Linux).
pub fn status_kib(field: &str) -> Result<u64, BoxError> {
    kib_in_status("/proc/self/status", field)
}

/// [`status_kib`] of process `pid` (a child the benchmark started).
///
/// # Errors
/// When `/proc/<pid>/status` or the field cannot be read (not Linux, or the process is gone).
pub fn status_kib_of(pid: u32, field: &str) -> Result<u64, BoxError> {
    kib_in_status(&format!("/proc/{pid}/status"), field)
}

fn kib_in_status(path: &str, field: &str) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string(path)?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {field} in {path}").into())
}
