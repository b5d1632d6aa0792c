//! `tributary-bench`: runs a benchmark scenario (or `all`) and prints one JSON line per
//! scenario on stdout; progress goes to stderr.
//!
//! ```text
//! cargo run --release -p tributary-bench -- publish
//! cargo run --release -p tributary-bench -- all
//! cargo run --release -p tributary-bench -- e2e --backlog 1000000
//! cargo run --release -p tributary-bench -- many-topics --topics 2000
//! ```
//!
//! Without `REDIS_URL` it starts a private `redis-server` (through the test kit) and stops it
//! at the end; with `REDIS_URL` it uses that server under a namespace unique to the run.
// The JSON lines on stdout are this program's output (one per scenario), not logging.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use clap::Parser;
use serde_json::json;
use tributary_bench::env::Env;
use tributary_bench::scenarios::memory::{self, ChildArgs};
use tributary_bench::scenarios::{self, many_topics, Options, Scenario};

/// Counts allocations for the `allocations_per_op` figures.
#[global_allocator]
static ALLOCATOR: tributary_bench::alloc::Counting = tributary_bench::alloc::Counting;

/// Benchmarks Tributary against hand-written fred (and NATS) baselines on the same Redis.
#[derive(Debug, Parser)]
#[command(name = "tributary-bench", version)]
struct Cli {
    /// Scenario to run, or `all`.
    #[arg(value_enum)]
    scenario: Scenario,

    #[command(flatten)]
    options: Options,

    #[command(flatten)]
    child: ChildArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.scenario == Scenario::MemoryChild {
        return match memory::child(&cli.child, &cli.options).await {
            Ok(figures) => {
                println!("{figures}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("memory child: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if cli.scenario == Scenario::ManyTopicsChild {
        // It prints its own lines, as the parent asks for them.
        return match many_topics::child(&cli.child, &cli.options).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("many-topics child: {e}");
                ExitCode::FAILURE
            }
        };
    }

    // Installed before any producer or worker registers its handles (#20): rendered every
    // 5 s, as a scrape would, so histograms do not pile up.
    if cli.options.metrics_recorder {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            eprintln!("cannot install the metrics recorder: {e}");
            return ExitCode::FAILURE;
        }
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                std::hint::black_box(handle.render());
            }
        });
        eprintln!("metrics: a Prometheus recorder is installed (--metrics-recorder)");
    }
    let env = Env::start().await;
    let redis_version = env.redis_version().await.unwrap_or_else(|e| format!("unknown ({e})"));
    eprintln!("redis {redis_version} at {}, namespace {}", env.url(), env.namespace());
    let list: Vec<Scenario> = match cli.scenario {
        Scenario::All => Scenario::EVERY.to_vec(),
        one => vec![one],
    };
    let mut failed = false;
    for scenario in list {
        eprintln!("[{}] running", scenario.name());
        match scenarios::run(scenario, &env, &cli.options).await {
            Ok(mut report) => {
                if let Some(params) = report.params.as_object_mut() {
                    params.insert("redis_version".to_owned(), json!(redis_version));
                    params
                        .insert("cores".to_owned(), json!(std::thread::available_parallelism().map_or(0, |n| n.get())));
                }
                println!("{}", report.to_json_line());
            }
            Err(e) => {
                failed = true;
                eprintln!("[{}] failed: {e}", scenario.name());
                println!("{}", json!({ "scenario": scenario.name(), "error": e.to_string(), "pass": false }));
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
