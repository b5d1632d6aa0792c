//! The scenarios, one module each, and what they share: the command-line options, the
//! alternation of rounds between the sides, and a closed-loop load generator.

pub mod codec;
pub mod e2e;
pub mod e2e_latency;
pub mod many_topics;
pub mod memory;
pub mod publish;
pub mod publish_batch;
pub mod rpc;

use std::future::Future;
use std::time::Instant;

use bytes::Bytes;
use tokio::task::JoinSet;
use tributary::{BoxError, Codec, MsgPack};

use crate::env::Env;
use crate::report::{histogram, record, Report, Run};

/// A scenario name as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// One publish at a time from many tasks, vs raw fred `XADD`.
    Publish,
    /// `Producer::publish_batch` vs a raw fred pipeline of `XADD`s.
    PublishBatch,
    /// Drain a backlog with a `Worker` (no-op handler) vs a hand-written `XREADGROUP` loop.
    E2e,
    /// End-to-end latency at a fixed publish rate, vs the same hand-written loop.
    E2eLatency,
    /// RPC latency and throughput vs hand-written fred request/reply (and NATS).
    Rpc,
    /// Peak RSS of a consumer process draining a large backlog.
    Memory,
    /// Envelope encode/decode vs serde_json.
    Codec,
    /// One pattern worker over many topics (`--topics`, default 10,000): its connections, idle
    /// CPU and Redis commands, delivery latency and peak RSS. About 40 s by default (set-up,
    /// 20 s idle, 10 s of latency). Not in `all`: its worker process holds one connection per
    /// topic today (about 1.3 GiB and 10,000 open files at the default), and it raises the
    /// server's `maxclients` for the run.
    ManyTopics,
    /// Every scenario above except many-topics, in this order: codec, publish, publish-batch,
    /// e2e, e2e-latency, rpc, memory.
    All,
    /// The consumer process of `memory` (started by it).
    #[value(hide = true)]
    MemoryChild,
    /// The worker process of `many-topics` (started by it).
    #[value(hide = true)]
    ManyTopicsChild,
}

impl Scenario {
    /// The scenarios `all` runs, in order (quick ones first).
    pub const EVERY: [Scenario; 7] = [
        Scenario::Codec,
        Scenario::Publish,
        Scenario::PublishBatch,
        Scenario::E2e,
        Scenario::E2eLatency,
        Scenario::Rpc,
        Scenario::Memory,
    ];

    /// The name on the command line and in the JSON line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Publish => "publish",
            Scenario::PublishBatch => "publish-batch",
            Scenario::E2e => "e2e",
            Scenario::E2eLatency => "e2e-latency",
            Scenario::Rpc => "rpc",
            Scenario::Memory => "memory",
            Scenario::Codec => "codec",
            Scenario::ManyTopics => "many-topics",
            Scenario::All => "all",
            Scenario::MemoryChild => "memory-child",
            Scenario::ManyTopicsChild => "many-topics-child",
        }
    }
}

/// Sizes and settings of every scenario. The defaults keep each scenario within a few to
/// ~30 seconds on a 2-core machine.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Rounds per side. The sides alternate (baseline first in even rounds, Tributary first in
    /// odd ones) so drift on a shared machine hits both; throughput is the median round. Keep
    /// it even: the side that goes second in a round runs measurably slower, and an odd count
    /// puts the baseline first once more than Tributary.
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,

    /// Measure one side only (publish, publish-batch, e2e, e2e-latency, rpc; `baseline` is the
    /// fred loop and, in rpc, NATS): for profiling one side at a time, e.g. under
    /// `valgrind --tool=callgrind`. The other side does not run at all, not even its warm-up;
    /// the JSON line then has that side's figures and no ratios or targets.
    #[arg(long, value_enum)]
    pub only: Option<Only>,

    /// Payload size in bytes (publish, publish-batch, e2e, e2e-latency, rpc, memory).
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,

    /// publish: messages per round and side.
    #[arg(long, default_value_t = 100_000, help_heading = "publish")]
    pub publish_messages: u64,

    /// publish: concurrent publishing tasks.
    #[arg(long, default_value_t = 32, help_heading = "publish")]
    pub publish_concurrency: usize,

    /// publish: also run intermediate sides that split the gap between fred and Tributary
    /// (Tributary's own fred client; plus a fresh envelope per message).
    #[arg(long, help_heading = "publish")]
    pub breakdown: bool,

    /// publish-batch: messages per round and side.
    #[arg(long, default_value_t = 200_000, help_heading = "publish-batch")]
    pub batch_messages: u64,

    /// publish-batch: messages per batch (one pipeline).
    #[arg(long, default_value_t = 100, help_heading = "publish-batch")]
    pub batch_size: usize,

    /// publish-batch: concurrent batching tasks.
    #[arg(long, default_value_t = 4, help_heading = "publish-batch")]
    pub batch_concurrency: usize,

    /// e2e: backlog drained per round and side (e.g. 1000000).
    #[arg(long, default_value_t = 200_000, help_heading = "e2e")]
    pub backlog: u64,

    /// e2e, e2e-latency, memory: entries per read (`Worker::batch_size`, the baseline's
    /// `COUNT`).
    #[arg(long, default_value_t = 64, help_heading = "e2e")]
    pub read_count: usize,

    /// e2e: `Worker::max_in_flight`.
    #[arg(long, default_value_t = 256, help_heading = "e2e")]
    pub max_in_flight: usize,

    /// e2e: `Worker::concurrency`.
    #[arg(long, default_value_t = 32, help_heading = "e2e")]
    pub worker_concurrency: usize,

    /// e2e-latency: messages per second.
    #[arg(long, default_value_t = 10_000, help_heading = "e2e-latency")]
    pub rate: u64,

    /// e2e-latency: seconds of publishing per round and side.
    #[arg(long, default_value_t = 3.0, help_heading = "e2e-latency")]
    pub latency_seconds: f64,

    /// e2e-latency, many-topics: milliseconds at the start of each latency run not counted.
    #[arg(long, default_value_t = 500, help_heading = "e2e-latency")]
    pub warmup_ms: u64,

    /// rpc: calls of the single sequential caller, per round and system.
    #[arg(long, default_value_t = 2_000, help_heading = "rpc")]
    pub rpc_sequential_calls: u64,

    /// rpc: concurrent callers.
    #[arg(long, default_value_t = 64, help_heading = "rpc")]
    pub rpc_callers: usize,

    /// rpc: calls of the concurrent callers together, per round and system.
    #[arg(long, default_value_t = 20_000, help_heading = "rpc")]
    pub rpc_concurrent_calls: u64,

    /// Every scenario: install a Prometheus recorder (`metrics-exporter-prometheus`, rendered
    /// every 5 s) before anything is built, to measure what Tributary's metrics cost (#20).
    #[arg(long)]
    pub metrics_recorder: bool,

    /// rpc: the server's `Worker::concurrency` (handlers running at once); the library's
    /// default when not given.
    #[arg(long, help_heading = "rpc")]
    pub rpc_server_concurrency: Option<usize>,

    /// rpc: skip the NATS baseline even when `nats-server` is installed.
    #[arg(long, help_heading = "rpc")]
    pub no_nats: bool,

    /// memory: backlog the consumer drains.
    #[arg(long, default_value_t = 1_000_000, help_heading = "memory")]
    pub memory_backlog: u64,

    /// memory: also measure a hand-written fred consumer draining the same backlog, for
    /// context (`--memory-baseline=false` to skip).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, help_heading = "memory")]
    pub memory_baseline: bool,

    /// many-topics: topics the pattern worker consumes (`mt.0` ...), one message each at first.
    #[arg(long, default_value_t = 10_000, help_heading = "many-topics")]
    pub topics: u64,

    /// many-topics: seconds the worker is measured idle (CPU, Redis commands).
    #[arg(long, default_value_t = 20.0, help_heading = "many-topics")]
    pub idle_secs: f64,

    /// many-topics: messages per second in all during the latency phase, each to a random topic.
    #[arg(long, default_value_t = 2_000, help_heading = "many-topics")]
    pub many_topics_rate: u64,

    /// many-topics: turn on the server's keyspace notifications for stream commands
    /// (`notify-keyspace-events Kt`, put back afterwards), which the worker then uses to read
    /// only the topics that got messages.
    #[arg(long, default_value_t = false, help_heading = "many-topics")]
    pub keyspace_notifications: bool,

    /// many-topics: seconds of publishing in the latency phase.
    #[arg(long, default_value_t = 10.0, help_heading = "many-topics")]
    pub many_topics_seconds: f64,

    /// codec: encodes and decodes per round.
    #[arg(long, default_value_t = 200_000, help_heading = "codec")]
    pub codec_iterations: u64,
}

/// The side `--only` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// Tributary's side.
    Tributary,
    /// The hand-written side(s).
    Baseline,
}

impl Only {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Only::Tributary => "tributary",
            Only::Baseline => "baseline",
        }
    }
}

impl Options {
    /// Whether Tributary's side runs.
    pub fn runs_tributary(&self) -> bool {
        self.only != Some(Only::Baseline)
    }

    /// Whether the baseline side runs.
    pub fn runs_baseline(&self) -> bool {
        self.only != Some(Only::Tributary)
    }
}

/// One round of the two sides: the baseline first in even rounds, Tributary first in odd ones,
/// leaving out the side `--only` drops (futures do nothing until awaited, so it never runs).
///
/// # Errors
/// The first side that fails.
pub async fn round_of<T, B>(
    o: &Options,
    round: usize,
    tributary: impl Future<Output = Result<T, BoxError>>,
    baseline: impl Future<Output = Result<B, BoxError>>,
) -> Result<(Option<T>, Option<B>), BoxError> {
    let (mut t, mut b) = (None, None);
    if round % 2 == 0 {
        if o.runs_baseline() {
            b = Some(baseline.await?);
        }
        if o.runs_tributary() {
            t = Some(tributary.await?);
        }
    } else {
        if o.runs_tributary() {
            t = Some(tributary.await?);
        }
        if o.runs_baseline() {
            b = Some(baseline.await?);
        }
    }
    Ok((t, b))
}

/// `run`'s rate for a progress line, or `-` for a side that did not run.
pub fn rate_of(run: Option<&Run>) -> String {
    run.map_or_else(|| "-".to_owned(), |r| format!("{:.0}/s", r.rate()))
}

/// Runs one scenario (not `all`, not a child process).
///
/// # Errors
/// When Redis fails, a side errs, or a run does not finish in time.
pub async fn run(scenario: Scenario, env: &Env, options: &Options) -> Result<Report, BoxError> {
    match scenario {
        Scenario::Publish => publish::run(env, options).await,
        Scenario::PublishBatch => publish_batch::run(env, options).await,
        Scenario::E2e => e2e::run(env, options).await,
        Scenario::E2eLatency => e2e_latency::run(env, options).await,
        Scenario::Rpc => rpc::run(env, options).await,
        Scenario::Memory => memory::run(env, options).await,
        Scenario::Codec => codec::run(options),
        Scenario::ManyTopics => many_topics::run(env, options).await,
        Scenario::All | Scenario::MemoryChild | Scenario::ManyTopicsChild => {
            Err(format!("`{}` is not a single scenario", scenario.name()).into())
        }
    }
}

/// The message every scenario publishes: `n` bytes, published as `bytes::Bytes` (MessagePack
/// `bin`, so `n + 2` bytes on the wire for `n < 256`).
pub fn payload(n: usize) -> Bytes {
    Bytes::from(vec![b'x'; n])
}

/// `payload` as Tributary encodes it: what the baselines send as their payload field.
///
/// # Panics
/// Never: bytes always encode.
pub fn encoded(payload: &Bytes) -> Bytes {
    MsgPack.encode(payload).expect("bytes encode")
}

/// Closed loop: `concurrency` tasks together perform `total` operations, each task one at a
/// time; every operation's latency is recorded.
///
/// # Errors
/// The first failed operation.
pub async fn closed_loop<F, Fut>(total: u64, concurrency: usize, op: F) -> Result<Run, BoxError>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let concurrency = concurrency.max(1) as u64;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..concurrency {
        let n = total / concurrency + u64::from(i < total % concurrency);
        let op = op.clone();
        tasks.spawn(async move {
            let mut h = histogram();
            for _ in 0..n {
                let t = Instant::now();
                op().await?;
                record(&mut h, t.elapsed());
            }
            Ok::<_, BoxError>(h)
        });
    }
    let mut latency = histogram();
    while let Some(done) = tasks.join_next().await {
        latency.add(done??)?;
    }
    Ok(Run::new(total, start.elapsed(), Some(latency)))
}

/// Progress on stderr (stdout carries only the JSON lines).
pub fn progress(scenario: &str, what: impl std::fmt::Display) {
    eprintln!("[{scenario}] {what}");
}
