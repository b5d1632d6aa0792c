//! What a scenario prints: figures of each side, ratios, targets and the verdict, as one JSON
//! line; and the latency histograms and round bookkeeping behind the figures.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::cpu::CpuUse;

/// A latency histogram in nanoseconds: 1 ns to 5 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 300_000_000_000, 3).expect("valid bounds and precision")
}

/// Records `d` in `h` (saturating at the histogram's largest value).
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
}

/// Percentiles of a histogram, in microseconds (read back from a child process's line).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Number of samples.
    pub samples: u64,
}

impl Latency {
    /// The percentiles of `h`, or `None` when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |q: f64| round2(h.value_at_quantile(q) as f64 / 1000.0);
        Some(Self {
            p50: us(0.5),
            p90: us(0.9),
            p99: us(0.99),
            p999: us(0.999),
            max: round2(h.max() as f64 / 1000.0),
            samples: h.len(),
        })
    }
}

/// One timed run of one side: how much it did, how long it took, and (optionally) the
/// latency of each operation.
#[derive(Debug, Clone)]
pub struct Run {
    /// Operations (messages, calls) completed.
    pub ops: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Per-operation latency, if measured.
    pub latency: Option<Histogram<u64>>,
    /// CPU used by this process and by Redis during the run, if metered.
    pub cpu: Option<CpuUse>,
}

impl Run {
    /// A run without CPU figures (see [`crate::cpu::CpuMeter::metered`]).
    pub fn new(ops: u64, elapsed: Duration, latency: Option<Histogram<u64>>) -> Self {
        Self { ops, elapsed, latency, cpu: None }
    }

    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The figures of one side of a comparison, over all its rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// Which side (`tributary`, `fred`, `nats`, ...), with the mode when a scenario has several.
    pub name: String,
    /// Operations over all rounds.
    pub ops: u64,
    /// Seconds over all rounds.
    pub seconds: f64,
    /// Median over the rounds of operations per second.
    pub per_second: f64,
    /// Operations per second of each round, in order.
    pub per_second_rounds: Vec<f64>,
    /// Latency percentiles over all rounds (merged histograms), in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<Latency>,
    /// CPU time of the benchmark process per operation, in microseconds (all threads; the
    /// other side is idle meanwhile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cpu_us_per_op: Option<f64>,
    /// CPU time of the Redis server per operation, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cpu_us_per_op: Option<f64>,
    /// Commands the server ran per operation, by command (from `INFO commandstats`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub redis_commands_per_op: BTreeMap<String, f64>,
    /// Socket reads the server processed per operation (`INFO stats`); below the commands per
    /// operation when clients pipeline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_reads_per_op: Option<f64>,
    /// Heap allocations of the benchmark process per operation (all threads; the other side
    /// is idle meanwhile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocations_per_op: Option<f64>,
    /// Context switches of the benchmark process's threads per operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_switches_per_op: Option<f64>,
}

impl Figures {
    /// Combines the rounds of one side.
    pub fn from_runs(name: impl Into<String>, runs: &[Run]) -> Self {
        let mut merged: Option<Histogram<u64>> = None;
        for h in runs.iter().filter_map(|r| r.latency.as_ref()) {
            match &mut merged {
                Some(m) => m.add(h).expect("histograms of one side have compatible ranges"),
                None => merged = Some(h.clone()),
            }
        }
        let rates: Vec<f64> = runs.iter().map(Run::rate).collect();
        let metered: Vec<(u64, &CpuUse)> = runs.iter().filter_map(|r| r.cpu.as_ref().map(|c| (r.ops, c))).collect();
        let metered_ops: u64 = metered.iter().map(|(ops, _)| ops).sum();
        let mut commands: BTreeMap<String, f64> = BTreeMap::new();
        for (_, used) in &metered {
            for (name, calls) in &used.commands {
                *commands.entry(name.clone()).or_default() += *calls as f64;
            }
        }
        for calls in commands.values_mut() {
            *calls = round3(*calls / metered_ops.max(1) as f64);
        }
        // Set-up commands (connecting, creating groups) round to nothing per operation.
        commands.retain(|_, calls| *calls > 0.0);
        let per_op = |part: fn(&CpuUse) -> Duration| {
            let time: Duration = metered.iter().map(|(_, c)| part(c)).sum();
            (metered_ops > 0).then(|| round2(time.as_secs_f64() * 1e6 / metered_ops as f64))
        };
        Self {
            name: name.into(),
            ops: runs.iter().map(|r| r.ops).sum(),
            seconds: round3(runs.iter().map(|r| r.elapsed.as_secs_f64()).sum()),
            per_second: round1(median(&rates)),
            per_second_rounds: rates.into_iter().map(round1).collect(),
            latency_us: merged.as_ref().and_then(Latency::of),
            client_cpu_us_per_op: per_op(|c| c.client),
            redis_cpu_us_per_op: per_op(|c| c.redis),
            redis_commands_per_op: commands,
            redis_reads_per_op: (metered_ops > 0)
                .then(|| round3(metered.iter().map(|(_, c)| c.reads).sum::<u64>() as f64 / metered_ops as f64)),
            allocations_per_op: (metered_ops > 0 && metered.iter().any(|(_, c)| c.allocations > 0))
                .then(|| round2(metered.iter().map(|(_, c)| c.allocations).sum::<u64>() as f64 / metered_ops as f64)),
            context_switches_per_op: (metered_ops > 0).then(|| {
                round3(metered.iter().map(|(_, c)| c.context_switches).sum::<u64>() as f64 / metered_ops as f64)
            }),
        }
    }

    /// Median latency in microseconds (panics when latency was not measured).
    pub fn p50(&self) -> f64 {
        self.latency_us.expect("latency measured").p50
    }

    /// 99th percentile latency in microseconds (panics when latency was not measured).
    pub fn p99(&self) -> f64 {
        self.latency_us.expect("latency measured").p99
    }
}

/// A named ratio between two sides (`tributary / baseline`).
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// What is compared, e.g. `throughput tributary/fred`.
    pub name: String,
    /// The ratio.
    pub value: f64,
}

/// A target a ratio (or an absolute figure) must meet.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is checked, e.g. `throughput tributary/fred`.
    pub metric: String,
    /// `>=` or `<=`.
    pub op: &'static str,
    /// The limit.
    pub limit: f64,
    /// The measured value.
    pub value: f64,
    /// Whether the value meets the limit.
    pub pass: bool,
}

impl Target {
    /// `value >= limit`.
    pub fn at_least(metric: impl Into<String>, value: f64, limit: f64) -> Self {
        Self { metric: metric.into(), op: ">=", limit, value, pass: value >= limit }
    }

    /// `value <= limit`.
    pub fn at_most(metric: impl Into<String>, value: f64, limit: f64) -> Self {
        Self { metric: metric.into(), op: "<=", limit, value, pass: value <= limit }
    }
}

/// The result of one scenario: printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name, as given on the command line.
    pub scenario: &'static str,
    /// What was run: sizes, concurrency, what the baseline is.
    pub params: serde_json::Value,
    /// Figures of every side; Tributary first.
    pub results: Vec<Figures>,
    /// Scenario-specific measurements that are not rates (peak RSS, ns per operation).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub measured: serde_json::Value,
    /// Ratios between the sides (Tributary divided by the baseline).
    pub ratios: Vec<Ratio>,
    /// Targets and whether each was met.
    pub targets: Vec<Target>,
    /// All targets met; `null` for scenarios that only report.
    pub pass: Option<bool>,
    /// Anything the figures alone do not say (missing baselines, sanity checks).
    pub notes: Vec<String>,
}

impl Report {
    /// The report of a run that measured one side (`--only`): the figures of the sides that
    /// ran, no ratios, no targets, and a note saying so.
    pub fn one_side(mut self, only: crate::scenarios::Only, figures: Vec<Figures>) -> Self {
        self.results = figures.into_iter().filter(|f| f.ops > 0).collect();
        self.notes.push(format!("--only {}: one side measured, so no ratios and no targets", only.name()));
        self
    }

    /// A report with no figures yet.
    pub fn new(scenario: &'static str, params: serde_json::Value) -> Self {
        Self {
            scenario,
            params,
            results: Vec::new(),
            measured: serde_json::Value::Null,
            ratios: Vec::new(),
            targets: Vec::new(),
            pass: None,
            notes: Vec::new(),
        }
    }

    /// Adds a ratio (rounded to 3 decimals) and returns it.
    pub fn ratio(&mut self, name: impl Into<String>, numerator: f64, denominator: f64) -> f64 {
        let value = round3(numerator / denominator.max(1e-12));
        self.ratios.push(Ratio { name: name.into(), value });
        value
    }

    /// Adds a target; the verdict becomes the conjunction of all targets.
    pub fn target(&mut self, target: Target) {
        self.pass = Some(self.pass.unwrap_or(true) && target.pass);
        self.targets.push(target);
    }

    /// The report as one line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("reports serialize")
    }
}

/// Median of `values` (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `x` rounded to 1 decimal.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `x` rounded to 2 decimals.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `x` rounded to 3 decimals.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_take_the_median_rate_and_merge_latencies() {
        let run = |ops, ms, lat_us: u64| {
            let mut h = histogram();
            record(&mut h, Duration::from_micros(lat_us));
            Run::new(ops, Duration::from_millis(ms), Some(h))
        };
        let f = Figures::from_runs("x", &[run(100, 1000, 10), run(300, 1000, 20), run(200, 1000, 30)]);
        assert_eq!(f.per_second, 200.0);
        assert_eq!(f.ops, 600);
        let lat = f.latency_us.unwrap();
        assert_eq!(lat.samples, 3);
        assert!((lat.p50 - 20.0).abs() < 0.1, "{lat:?}");
    }

    #[test]
    fn verdict_is_the_conjunction_of_targets() {
        let mut r = Report::new("t", serde_json::json!({}));
        assert_eq!(r.pass, None);
        r.target(Target::at_least("a", 1.0, 0.9));
        assert_eq!(r.pass, Some(true));
        r.target(Target::at_most("b", 1.3, 1.2));
        assert_eq!(r.pass, Some(false));
        assert!(r.to_json_line().starts_with("{\"scenario\":\"t\""));
    }
}
