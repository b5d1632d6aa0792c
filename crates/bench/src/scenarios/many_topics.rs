//! `many-topics`: what one worker costs when its topic pattern matches many topics (#18).
//!
//! The benchmark publishes one message to each of `--topics` topics `mt.0`, `mt.1`, ...
//! (through a `Producer`, 64 publishes in flight, which registers each topic in the
//! namespace's registry of topics), then re-runs its own binary with the hidden scenario
//! `many-topics-child`: one `Worker` with `on_pattern("mt.*", ..)` and default settings, alone
//! in its process so that its CPU and memory are its own. Once that worker has handled the
//! set-up messages, the child says so on stdout and the benchmark measures, in this order:
//!
//! 1. **connections**: the clients of the server that appeared since the child started
//!    (`CLIENT LIST` before and after; the benchmark opens none meanwhile), grouped by their
//!    last command, and the sockets the child holds (`/proc/<pid>/fd`) as a cross-check;
//! 2. **idle**, for `--idle-secs`: the child's CPU (user + system, `/proc/<pid>/stat`) in % of
//!    one core, the commands Redis ran per second (`INFO commandstats`, the meter's own `INFO`
//!    left out) and Redis' CPU;
//! 3. **latency**: `--many-topics-rate` messages per second in all, each to a topic drawn at
//!    random, for `--many-topics-seconds`. A message carries its send time on the wall clock
//!    (the two processes share the machine's), taken just before the publish call; the
//!    child's handler records the difference (hdrhistogram). The first `--warmup-ms` are not
//!    counted;
//! 4. the child's **peak RSS** (`VmHWM`) after the latency phase.
//!
//! Targets (issue #18; 2 cores, loopback): at most 4 connections per worker, idle worker CPU
//! < 2 % of a core, idle Redis commands < 50/s per worker, p99 < 50 ms at 2,000 messages/s
//! over 10,000 topics, peak RSS < 64 MiB. Two more targets say whether the measurement is
//! whole: every set-up message handled, every latency message delivered.
//!
//! Every wait is bounded. A worker that cannot consume every topic (it runs out of file
//! descriptors, or the server of client slots) gives a JSON line saying how far it got, with
//! the "set-up messages handled" target failed, rather than a hang. Two limits are raised for
//! the run when they are too low, each noted in the JSON: the server's `maxclients` (`CONFIG
//! SET`, put back afterwards), and the child's soft limit of open files (up to the hard limit,
//! through `sh -c 'ulimit -n ..'`).
//!
//! About 40 s with the defaults on 2 cores (not part of `all`): a few seconds of set-up for
//! 10,000 topics, `--idle-secs`, `--many-topics-seconds`, and the worker's shutdown.

use std::collections::{BTreeMap, HashSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::types::{ClusterHash, CustomCommand, Value as RedisValue};
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tributary::{BoxError, Context, HandlerError, Producer, Topic, Worker};

use super::e2e_latency::{nanos, pace, Stamp};
use super::memory::{status_kib, status_kib_of, ChildArgs};
use super::{progress, Options};
use crate::cpu::{process_cpu_of, CpuUse};
use crate::env::{connect, delete_keys, Env};
use crate::report::{histogram, round1, round2, round3, Figures, Latency, Report, Target};

const NAME: &str = "many-topics";
const PATTERN: &str = "mt.*";
const GROUP: &str = "bench";
/// Connections (server side) and file descriptors (child side) allowed beyond one per topic.
const SPARE: u64 = 256;
/// Publishes in flight while setting up the topics.
const SETUP_IN_FLIGHT: usize = 64;
/// How long after the worker handled the set-up messages before measuring idle: its last
/// acknowledgements go out meanwhile.
const SETTLE: Duration = Duration::from_secs(1);
/// How long the child waits for the latency phase's messages once all are published.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time the parent gives the child beyond the child's own bounds.
const SLACK: Duration = Duration::from_secs(30);

const MAX_CONNECTIONS: f64 = 4.0;
const MAX_IDLE_CPU_PERCENT: f64 = 2.0;
const MAX_IDLE_COMMANDS_PER_S: f64 = 50.0;
const MAX_P99_MS: f64 = 50.0;
const MAX_RSS_MIB: f64 = 64.0;

fn topic_name(i: u64) -> String {
    format!("mt.{i}")
}

/// How long the worker may take to handle the `n` set-up messages: at least 60 s, or 50
/// topics per second.
fn ready_timeout(n: u64) -> Duration {
    Duration::from_secs(60).max(Duration::from_millis(n * 20))
}

/// Nanoseconds since the Unix epoch on the wall clock: what both processes compare.
fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, nanos)
}

/// Runs the scenario.
///
/// # Errors
/// When `--topics` is 0, Redis fails, the set-up publishes fail, or the worker process cannot
/// be started.
/// What the worker process fails to do is reported in the JSON line, not as an error.
pub async fn run(env: &Env, o: &Options) -> Result<Report, BoxError> {
    if o.topics == 0 {
        return Err("--topics must be at least 1".into());
    }
    let conn = env.connect().await?;
    let fred = env.fred().await?;
    let mut report = Report::new(
        NAME,
        json!({
            "topics": o.topics,
            "keyspace_notifications": if o.keyspace_notifications {
                "on for the run (notify-keyspace-events Kt): the worker reads only topics that rang"
            } else {
                "as the server has them (off by default: the worker reads every topic each time)"
            },
            "pattern": PATTERN,
            "idle_seconds": o.idle_secs,
            "rate_per_s": o.many_topics_rate,
            "latency_seconds": o.many_topics_seconds,
            "warmup_ms": o.warmup_ms,
            "payload_bytes": o.payload_bytes,
            "worker": "one Worker in a child process, on_pattern(\"mt.*\") with a typed handler, \
                       default settings (block 2 s, batch 64, claim_idle 30 s, pattern_refresh 5 s, \
                       schedule_poll 100 ms)",
            "setup": "one message per topic through Producer::publish (64 in flight), before the worker starts",
            "connections": "CLIENT LIST: clients that appeared after the worker process started \
                            (worker_process_tcp: its TCP sockets, from /proc, as a check)",
            "idle": "worker CPU from /proc/<pid>/stat; Redis commands from INFO commandstats, which counts \
                     the commands a script runs as well as the script call (INFO itself left out); \
                     reads: total_reads_processed, about one per request from a client",
            "latency": "wall clock just before Producer::publish to the worker's handler (decoded payload), \
                        topics drawn at random",
            "client_cpu_us_per_op": "the worker process's CPU per message",
        }),
    );
    let raised = raise_maxclients(&fred, o.topics + SPARE, &mut report.notes).await;
    let events =
        if o.keyspace_notifications { keyspace_notifications_on(&fred, &mut report.notes).await } else { None };
    let measured = measure(env, o, &conn, &fred, &mut report).await;
    if let Some(previous) = events {
        let _: Result<RedisValue, _> =
            fred.custom(command("CONFIG"), vec!["SET", "notify-keyspace-events", &previous]).await;
    }
    if let Some(previous) = raised {
        let _: Result<RedisValue, _> = fred.custom(command("CONFIG"), vec!["SET", "maxclients", &previous]).await;
    }
    progress(NAME, "deleting the topics");
    let ns = conn.namespace();
    let mut keys: Vec<String> =
        (0..o.topics).filter_map(|i| Topic::new(topic_name(i)).ok()).map(|t| ns.topic_stream(&t)).collect();
    keys.extend([ns.topic_registry(), ns.topic_registry_seq(), ns.topic_registry_epoch(), ns.schedule_index()]);
    delete_keys(&fred, &keys).await;
    let _ = fred.quit().await;
    conn.quit().await;
    measured?;
    Ok(report)
}

/// Everything between raising `maxclients` and putting it back: fills in `report`.
async fn measure(
    env: &Env,
    o: &Options,
    conn: &tributary::Connection,
    fred: &Client,
    report: &mut Report,
) -> Result<(), BoxError> {
    let n = o.topics;
    let topics: Vec<String> = (0..n).map(topic_name).collect();
    // `{"t": u64, "pad": bin}` as a MessagePack map is 18 bytes plus the padding.
    let pad = Bytes::from(vec![b'x'; o.payload_bytes.saturating_sub(18)]);
    let producer = Producer::new(conn.clone());
    let meter = env.cpu_meter().await?;
    let mut measured = Map::new();

    progress(NAME, format!("publishing one message to each of {n} topics"));
    let started = Instant::now();
    let setup = Stamp { t: 0, pad: pad.clone() };
    futures::stream::iter(&topics)
        .map(|topic| producer.publish(topic, &setup))
        .buffer_unordered(SETUP_IN_FLIGHT)
        .try_for_each(|_| futures::future::ready(Ok(())))
        .await?;
    let publish_seconds = started.elapsed().as_secs_f64();

    let before: HashSet<u64> = client_list(fred).await?.into_iter().map(|(id, _)| id).collect();
    let (soft, hard) = open_files_limit()?;
    let wanted = n + SPARE;
    let child_limit = (soft < wanted).then_some(hard.min(wanted));
    if let Some(limit) = child_limit {
        report.notes.push(format!(
            "open files limit {soft} (hard {hard}) is below the {wanted} the worker may need; \
             its process runs with {limit}"
        ));
    }
    let mut child = WorkerProcess::spawn(env, o, child_limit)?;
    let pid = child.pid;
    progress(NAME, format!("worker process {pid} started; waiting for it to handle the {n} set-up messages"));
    let ready = child.next_event("ready", ready_timeout(n) + SLACK).await;
    let (consumed, complete) = match &ready {
        Ok(r) => (r["consumed"].as_u64().unwrap_or(0), r["complete"].as_bool().unwrap_or(false)),
        Err(_) => (0, false),
    };
    measured.insert(
        "setup".to_owned(),
        json!({
            "publish_seconds": round3(publish_seconds),
            "worker_ready_seconds": ready.as_ref().ok().and_then(|r| r["seconds"].as_f64()).map(round3),
            "handled": consumed,
            "worker_open_files_limit": ready.as_ref().ok().and_then(|r| r["open_files_limit"].as_u64()),
        }),
    );
    report.target(Target::at_least("set-up messages handled (one per topic)", consumed as f64, n as f64));
    if let Err(e) = &ready {
        report.notes.push(format!("the worker process did not report readiness: {e}"));
    } else if !complete {
        report.notes.push(format!(
            "the worker handled {consumed} of the {n} set-up messages within {} s: not every topic is consumed, \
             so idle and latency were not measured",
            ready_timeout(n).as_secs()
        ));
    }

    // Connections: measured even when not every topic is consumed, as they tell why.
    if child.alive() {
        tokio::time::sleep(SETTLE).await;
        let mut by_command: BTreeMap<String, u64> = BTreeMap::new();
        for (id, cmd) in client_list(fred).await? {
            if !before.contains(&id) {
                *by_command.entry(cmd).or_default() += 1;
            }
        }
        let connections: u64 = by_command.values().sum();
        measured.insert(
            "connections".to_owned(),
            json!({
                "worker": connections,
                "by_last_command": by_command,
                "worker_process_tcp": tcp_connections(pid),
            }),
        );
        report.target(Target::at_most("connections per worker", connections as f64, MAX_CONNECTIONS));
        measured.insert("rss_at_ready_mib".to_owned(), json!(mib_of(pid, "VmRSS")));
    }
    if ready.is_err() || !complete || !child.alive() {
        measured.insert("peak_rss_mib".to_owned(), json!(mib_of(pid, "VmHWM")));
        child.finish(&mut measured).await;
        report.measured = Value::Object(measured);
        return Ok(());
    }

    progress(NAME, format!("measuring the idle worker for {} s", o.idle_secs));
    let idle = Duration::from_secs_f64(o.idle_secs);
    let cpu_before = process_cpu_of(pid)?;
    let started = Instant::now();
    let ((), used) = meter
        .measure(async {
            tokio::time::sleep(idle).await;
            Ok(())
        })
        .await?;
    let cpu = process_cpu_of(pid)?.saturating_sub(cpu_before);
    let seconds = started.elapsed().as_secs_f64();
    let commands: u64 = used.commands.values().sum();
    let per_s = |x: f64| round2(x / seconds);
    let idle_cpu = per_s(cpu.as_secs_f64() * 100.0);
    let idle_commands = per_s(commands as f64);
    measured.insert(
        "idle".to_owned(),
        json!({
            "seconds": round3(seconds),
            "worker_cpu_percent": idle_cpu,
            "redis_cpu_percent": per_s(used.redis.as_secs_f64() * 100.0),
            "redis_commands_per_s": idle_commands,
            "redis_reads_per_s": per_s(used.reads as f64),
            "redis_commands_per_s_by_command":
                used.commands.iter().map(|(name, calls)| (name.clone(), per_s(*calls as f64))).collect::<BTreeMap<_, _>>(),
            "rss_after_mib": mib_of(pid, "VmRSS"),
        }),
    );
    report.target(Target::at_most("idle worker CPU % of a core", idle_cpu, MAX_IDLE_CPU_PERCENT));
    report.target(Target::at_most("idle Redis commands per s per worker", idle_commands, MAX_IDLE_COMMANDS_PER_S));

    let rate = o.many_topics_rate;
    progress(NAME, format!("publishing {rate} messages/s to random topics for {} s", o.many_topics_seconds));
    let duration = Duration::from_secs_f64(o.many_topics_seconds);
    let counted_from = unix_nanos() + nanos(Duration::from_millis(o.warmup_ms));
    child.send(&format!("latency {counted_from}")).await?;
    let cpu_before = process_cpu_of(pid)?;
    let (sent, used) = meter
        .measure(pace(rate, duration, Instant::now(), |_| {
            let topic = topics[fastrand::usize(..topics.len())].clone();
            let (producer, pad) = (producer.clone(), pad.clone());
            async move {
                producer.publish(&topic, &Stamp { t: unix_nanos(), pad }).await?;
                Ok(())
            }
        }))
        .await?;
    child.send(&format!("expect {sent}")).await?;
    let done = child.next_event("done", DELIVERY_TIMEOUT + SLACK).await;
    let worker_cpu = process_cpu_of(pid).map(|c| c.saturating_sub(cpu_before)).ok();
    let done = match done {
        Ok(done) => done,
        Err(e) => {
            report.notes.push(format!("the worker process did not report the latency phase: {e}"));
            report.target(Target::at_least("latency-phase messages delivered", 0.0, sent as f64));
            child.finish(&mut measured).await;
            report.measured = Value::Object(measured);
            return Ok(());
        }
    };
    let received = done["received"].as_u64().unwrap_or(0);
    let latency: Option<Latency> = serde_json::from_value(done["latency_us"].clone()).ok();
    report.results.push(latency_figures(sent, duration, latency, worker_cpu, &used));
    report.target(Target::at_least("latency-phase messages delivered", received as f64, sent as f64));
    if received < sent {
        report.notes.push(format!(
            "only {received} of the {sent} latency-phase messages reached the handler within {} s of the last publish",
            DELIVERY_TIMEOUT.as_secs()
        ));
    }
    match latency {
        Some(l) => report.target(Target::at_most("p99 delivery latency ms", round2(l.p99 / 1000.0), MAX_P99_MS)),
        None => report.notes.push("no latency was recorded (no message after the warm-up arrived)".to_owned()),
    }
    let peak = done["peak_rss_kib"].as_f64().map(|kib| round2(kib / 1024.0));
    measured.insert("peak_rss_mib".to_owned(), json!(peak));
    report.target(Target::at_most("peak RSS MiB (worker process)", peak.unwrap_or(f64::INFINITY), MAX_RSS_MIB));

    child.finish(&mut measured).await;
    report.measured = Value::Object(measured);
    Ok(())
}

/// The latency phase as one side's figures: the worker process's CPU, and what Redis did, per
/// message published (the idle topics' reads included).
fn latency_figures(
    sent: u64,
    duration: Duration,
    latency: Option<Latency>,
    worker_cpu: Option<Duration>,
    used: &CpuUse,
) -> Figures {
    let ops = sent.max(1) as f64;
    let rate = round1(sent as f64 / duration.as_secs_f64().max(1e-9));
    Figures {
        name: "tributary".to_owned(),
        ops: sent,
        seconds: round3(duration.as_secs_f64()),
        per_second: rate,
        per_second_rounds: vec![rate],
        latency_us: latency,
        client_cpu_us_per_op: worker_cpu.map(|c| round2(c.as_secs_f64() * 1e6 / ops)),
        redis_cpu_us_per_op: Some(round2(used.redis.as_secs_f64() * 1e6 / ops)),
        redis_commands_per_op: used
            .commands
            .iter()
            .map(|(name, calls)| (name.clone(), round3(*calls as f64 / ops)))
            .collect(),
        redis_reads_per_op: Some(round3(used.reads as f64 / ops)),
        allocations_per_op: None,
        context_switches_per_op: None,
    }
}

/// A `kB` field of the child's `/proc/<pid>/status`, in MiB (`None` once it is gone).
fn mib_of(pid: u32, field: &str) -> Option<f64> {
    status_kib_of(pid, field).ok().map(|kib| round2(kib as f64 / 1024.0))
}

/// TCP connections process `pid` holds open: its socket descriptors whose inode is a TCP
/// socket's in `/proc/<pid>/net/tcp{,6}` (`None` when those cannot be read). The runtime's own
/// sockets (tokio's signal socket pair) are Unix sockets and not counted.
fn tcp_connections(pid: u32) -> Option<u64> {
    let mut tcp = HashSet::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else { continue };
        // Columns: sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        tcp.extend(text.lines().skip(1).filter_map(|l| l.split_whitespace().nth(9)?.parse::<u64>().ok()));
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse::<u64>().ok())
            .filter(|inode| tcp.contains(inode))
            .count() as u64,
    )
}

/// This process's limit of open files, soft and hard (`/proc/self/limits`).
///
/// # Errors
/// When `/proc/self/limits` cannot be read (not Linux).
fn open_files_limit() -> Result<(u64, u64), BoxError> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    Ok(open_files_in(&limits).ok_or("no open files limit in /proc/self/limits")?)
}

/// Soft and hard limit of the `Max open files` line of a `/proc/<pid>/limits` text
/// (`unlimited` as `u64::MAX`).
fn open_files_in(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    let mut values = line.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
    Some((values.next()?, values.next()?))
}

fn command(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::Random, false)
}

/// Id and last command of every client of the server (`CLIENT LIST`).
async fn client_list(fred: &Client) -> Result<Vec<(u64, String)>, BoxError> {
    let list: String = fred.custom(command("CLIENT"), vec!["LIST"]).await?;
    Ok(clients_in(&list))
}

/// Id and last command of every line of a `CLIENT LIST` reply.
fn clients_in(list: &str) -> Vec<(u64, String)> {
    list.lines()
        .filter_map(|line| {
            let field = |name: &str| line.split(' ').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='));
            Some((field("id")?.parse().ok()?, field("cmd").unwrap_or("?").to_owned()))
        })
        .collect()
}

/// Adds `Kt` to the server's `notify-keyspace-events`; returns the previous value to put back.
async fn keyspace_notifications_on(fred: &Client, notes: &mut Vec<String>) -> Option<String> {
    let current: Vec<String> = fred.custom(command("CONFIG"), vec!["GET", "notify-keyspace-events"]).await.ok()?;
    let previous = current.get(1).cloned().unwrap_or_default();
    let wanted = format!("{previous}Kt");
    match fred.custom::<RedisValue, _>(command("CONFIG"), vec!["SET", "notify-keyspace-events", &wanted]).await {
        Ok(_) => {
            eprintln!("many-topics: notify-keyspace-events set to {wanted:?} for the run; if it is interrupted, undo it with `CONFIG SET notify-keyspace-events {previous:?}`");
            notes.push(format!("set the server's notify-keyspace-events from {previous:?} to {wanted:?} for the run"));
            Some(previous)
        }
        Err(e) => {
            notes.push(format!("could not turn keyspace notifications on: {e}"));
            None
        }
    }
}

/// Raises the server's `maxclients` to `wanted` when it is lower; returns the previous value to
/// put back. A server that refuses is left as it is (the worker then fails to connect to some
/// topics, which the JSON line shows).
async fn raise_maxclients(fred: &Client, wanted: u64, notes: &mut Vec<String>) -> Option<String> {
    let current: Vec<String> = fred.custom(command("CONFIG"), vec!["GET", "maxclients"]).await.ok()?;
    let previous = current.get(1)?.clone();
    if previous.parse::<u64>().is_ok_and(|max| max >= wanted) {
        return None;
    }
    let wanted = wanted.to_string();
    match fred.custom::<RedisValue, _>(command("CONFIG"), vec!["SET", "maxclients", &wanted]).await {
        Ok(_) => {
            // Put back at the end; said here too, for a run that is interrupted.
            eprintln!("many-topics: raised maxclients from {previous} to {wanted}; if this run is interrupted, undo it with `CONFIG SET maxclients {previous}`");
            notes.push(format!("raised the server's maxclients from {previous} to {wanted} for the run"));
            Some(previous)
        }
        Err(e) => {
            notes.push(format!("the server's maxclients is {previous}, and raising it to {wanted} failed: {e}"));
            None
        }
    }
}

/// The worker process, seen from the benchmark: lines from its stdout, commands to its stdin.
struct WorkerProcess {
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl WorkerProcess {
    /// Re-runs this binary as `many-topics-child`, with its soft limit of open files raised to
    /// `open_files` if given.
    fn spawn(env: &Env, o: &Options, open_files: Option<u64>) -> Result<Self, BoxError> {
        let exe = std::env::current_exe()?;
        let mut cmd = match open_files {
            // `ulimit` is a shell builtin; `exec` keeps the pid, which the benchmark measures.
            Some(limit) => {
                let mut sh = tokio::process::Command::new("sh");
                sh.args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\"")]).arg(exe);
                sh
            }
            None => tokio::process::Command::new(exe),
        };
        cmd.arg("many-topics-child")
            .args(["--child-url", &env.url(), "--child-namespace", &env.namespace()])
            .args(["--topics", &o.topics.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let pid = child.id().ok_or("the worker process exited at once")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout of the worker process")?;
        Ok(Self { child, pid, stdin, lines: BufReader::new(stdout).lines() })
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The next line of the child whose `event` is `event`, within `within`.
    async fn next_event(&mut self, event: &str, within: Duration) -> Result<Value, BoxError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .map_err(|_| format!("no `{event}` from the worker process within {} s", within.as_secs()))??;
            let Some(line) = line else {
                let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
                let status = status.map_or_else(|_| "still running".to_owned(), |s| format!("{s:?}"));
                return Err(format!("the worker process closed its stdout before `{event}` (exit: {status})").into());
            };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["event"] == event {
                    return Ok(v);
                }
            }
        }
    }

    /// Sends one command line.
    async fn send(&mut self, line: &str) -> Result<(), BoxError> {
        let stdin = self.stdin.as_mut().ok_or("stdin of the worker process closed")?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Asks the child to stop (closes its stdin), records how long its graceful shutdown took
    /// in `measured`, and kills it if it does not exit in time.
    async fn finish(mut self, measured: &mut Map<String, Value>) {
        self.stdin = None;
        // The worker's own shutdown is bounded by its `shutdown_timeout` (30 s) plus 3 s.
        match self.next_event("stopped", Duration::from_secs(33) + SLACK).await {
            Ok(v) => {
                measured
                    .insert("worker_shutdown_seconds".to_owned(), json!(v["shutdown_seconds"].as_f64().map(round3)));
            }
            Err(e) => progress(NAME, format!("worker process: {e}; killing it")),
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// What the child's handler records.
#[derive(Debug)]
struct Probe {
    /// Latency-phase messages sent before this (ns since the epoch) are not counted; `u64::MAX`
    /// until the benchmark says when the phase starts.
    counted_from: AtomicU64,
    /// Latency-phase messages handled (set-up messages, `t == 0`, are not).
    received: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

impl Probe {
    fn observe(&self, sent_at: u64) {
        if sent_at == 0 {
            return;
        }
        let now = unix_nanos();
        if sent_at >= self.counted_from.load(Ordering::Relaxed) {
            self.latency.lock().expect("histogram lock").saturating_record(now.saturating_sub(sent_at));
        }
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits until `n` latency-phase messages arrived, at most `within`; true if they did.
    async fn wait_for(&self, n: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.received.load(Ordering::Relaxed) < n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

/// One line to the benchmark on stdout (the pipe it reads, not logging).
fn emit(line: &Value) -> Result<(), BoxError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// The worker process: one pattern worker over `--topics` topics. It reports `ready` once the
/// set-up messages are handled (or its wait for them ran out), then follows the commands on its
/// stdin: `latency <ns>` (count messages sent from then on), `expect <n>` (report `done` once
/// `n` latency-phase messages arrived, with their latency and the peak RSS). At the end of its
/// stdin it stops the worker gracefully and reports `stopped`.
///
/// # Errors
/// When an argument is missing, the connection fails, or a command is not understood.
pub async fn child(args: &ChildArgs, o: &Options) -> Result<(), BoxError> {
    let url = args.child_url.as_deref().ok_or("--child-url missing")?;
    let namespace = args.child_namespace.as_deref().ok_or("--child-namespace missing")?;
    let n = o.topics;
    let conn = connect(url, namespace).await?;
    let probe = Arc::new(Probe {
        counted_from: AtomicU64::new(u64::MAX),
        received: AtomicU64::new(0),
        latency: Mutex::new(histogram()),
    });
    let start = Instant::now();
    let handle = {
        let probe = probe.clone();
        Worker::builder(conn.clone(), GROUP)
            .consumer_name("bench-many-topics")
            .on_pattern(PATTERN, move |s: Stamp, _ctx: Context| {
                probe.observe(s.t);
                async { Ok::<(), HandlerError>(()) }
            })
            .build()?
            .start()
    };
    let complete = tokio::time::timeout(ready_timeout(n), handle.settled(n)).await.is_ok();
    emit(&json!({
        "event": "ready",
        "complete": complete,
        "consumed": handle.stats().settled(),
        "seconds": start.elapsed().as_secs_f64(),
        "rss_kib": status_kib("VmRSS")?,
        "open_files_limit": open_files_limit()?.0,
    }))?;

    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = commands.next_line().await? {
        match line.split_once(' ') {
            Some(("latency", from)) => probe.counted_from.store(from.trim().parse()?, Ordering::Relaxed),
            Some(("expect", count)) => {
                let expected: u64 = count.trim().parse()?;
                let complete = probe.wait_for(expected, DELIVERY_TIMEOUT).await;
                let latency = Latency::of(&probe.latency.lock().expect("histogram lock"));
                emit(&json!({
                    "event": "done",
                    "complete": complete,
                    "expected": expected,
                    "received": probe.received.load(Ordering::Relaxed),
                    "latency_us": latency,
                    "peak_rss_kib": status_kib("VmHWM")?,
                }))?;
            }
            _ => return Err(format!("unknown command `{line}`").into()),
        }
    }
    let stop = Instant::now();
    handle.shutdown().await;
    emit(&json!({ "event": "stopped", "shutdown_seconds": stop.elapsed().as_secs_f64() }))?;
    conn.quit().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_list_lines_give_id_and_last_command() {
        let list = "id=3 addr=127.0.0.1:50000 laddr=127.0.0.1:6379 fd=8 name= age=2 idle=0 flags=N db=0 \
                    cmd=client|list user=default\r\n\
                    id=17 addr=127.0.0.1:50002 laddr=127.0.0.1:6379 fd=9 name= age=1 idle=1 flags=b db=0 \
                    cmd=xreadgroup user=default\r\n";
        assert_eq!(clients_in(list), vec![(3, "client|list".to_owned()), (17, "xreadgroup".to_owned())]);
    }

    #[test]
    fn open_files_limit_is_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95432                95432                processes \n\
                      Max open files            1024                 unlimited            files     \n";
        assert_eq!(open_files_in(limits), Some((1024, u64::MAX)));
        assert!(open_files_limit().is_ok());
    }
}
