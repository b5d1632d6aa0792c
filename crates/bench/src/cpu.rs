//! CPU time spent by this process and by the Redis server during a run, so the figures say
//! not only how fast each side was but what each message cost on a machine whose cores are
//! shared by the client, the server and anything else running.
//!
//! The process's time comes from `/proc/self/stat` (user + system, 10 ms ticks: runs of a
//! second or more are precise to about 1 %); the server's from `INFO cpu`
//! (`used_cpu_user` + `used_cpu_sys`). The same snapshots count the commands the server ran
//! (`INFO commandstats`), which shows how many round trips each side needs per message.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::types::InfoKind;
use tributary::BoxError;

use crate::report::Run;

/// CPU time used, and commands Redis ran, during a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuUse {
    /// By this process (every thread).
    pub client: Duration,
    /// By the Redis server.
    pub redis: Duration,
    /// Commands the server ran, by lowercase name (`INFO` itself not counted).
    pub commands: BTreeMap<String, u64>,
    /// Socket reads the server processed (`total_reads_processed`): fewer per command means
    /// clients pipelined more, which saves the server CPU.
    pub reads: u64,
    /// Heap allocations this process made (counted when the binary's global allocator is
    /// [`Counting`](crate::alloc::Counting); zero otherwise).
    pub allocations: u64,
    /// Context switches of this process's threads (voluntary and not): mostly a thread going
    /// to sleep for lack of work and being woken again.
    pub context_switches: u64,
}

/// Takes CPU snapshots of this process and of the Redis server.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    redis: Client,
}

impl CpuMeter {
    /// A meter asking the server through `redis` (a client the sides do not use).
    pub fn new(redis: Client) -> Self {
        Self { redis }
    }

    async fn snapshot(&self) -> Result<CpuUse, BoxError> {
        let info: String = self.redis.info(Some(InfoKind::Cpu)).await?;
        let field =
            |name: &str| info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<f64>().ok());
        let redis = field("used_cpu_user").unwrap_or(0.0) + field("used_cpu_sys").unwrap_or(0.0);
        let stats: String = self.redis.info(Some(InfoKind::CommandStats)).await?;
        let general: String = self.redis.info(Some(InfoKind::Stats)).await?;
        let reads = general
            .lines()
            .find_map(|l| l.strip_prefix("total_reads_processed:")?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        Ok(CpuUse {
            client: process_cpu()?,
            redis: Duration::from_secs_f64(redis),
            commands: command_calls(&stats),
            reads,
            allocations: crate::alloc::allocations(),
            context_switches: context_switches(),
        })
    }

    /// Runs `f` and returns its output with the CPU both processes used meanwhile.
    ///
    /// # Errors
    /// What `f` returns, or a failed snapshot.
    pub async fn measure<T, F>(&self, f: F) -> Result<(T, CpuUse), BoxError>
    where
        F: Future<Output = Result<T, BoxError>>,
    {
        let before = self.snapshot().await?;
        let out = f.await?;
        let after = self.snapshot().await?;
        let mut commands = after.commands;
        for (name, calls) in &mut commands {
            *calls = calls.saturating_sub(before.commands.get(name).copied().unwrap_or(0));
        }
        commands.retain(|name, calls| *calls > 0 && name != "info");
        let used = CpuUse {
            client: after.client.saturating_sub(before.client),
            redis: after.redis.saturating_sub(before.redis),
            commands,
            // Not counting the two INFO calls that the second snapshot makes before this one.
            reads: after.reads.saturating_sub(before.reads).saturating_sub(2),
            allocations: after.allocations.saturating_sub(before.allocations),
            context_switches: after.context_switches.saturating_sub(before.context_switches),
        };
        Ok((out, used))
    }

    /// Runs `run` and records in it the CPU both processes used meanwhile.
    ///
    /// # Errors
    /// What `run` returns, or a failed snapshot.
    pub async fn metered<F>(&self, run: F) -> Result<Run, BoxError>
    where
        F: Future<Output = Result<Run, BoxError>>,
    {
        let (mut run, used) = self.measure(run).await?;
        run.cpu = Some(used);
        Ok(run)
    }
}

/// `calls` of every `cmdstat_<name>:calls=N,...` line of `INFO commandstats`.
fn command_calls(stats: &str) -> BTreeMap<String, u64> {
    stats
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// Context switches of every thread of this process so far (0 where `/proc` is missing).
/// Threads that ended meanwhile drop out of the sum, so measure while the threads live.
pub fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.ends_with("ctxt_switches").then(|| value.trim().parse::<u64>().ok())?
                })
                .collect::<Vec<_>>()
        })
        .sum()
}

/// User + system time of this process so far.
///
/// # Errors
/// When `/proc/self/stat` cannot be read (not Linux).
pub fn process_cpu() -> Result<Duration, BoxError> {
    cpu_in_stat("/proc/self/stat")
}

/// User + system time so far of process `pid` (every thread; a child the benchmark started).
///
/// # Errors
/// When `/proc/<pid>/stat` cannot be read (not Linux, or the process is gone).
pub fn process_cpu_of(pid: u32) -> Result<Duration, BoxError> {
    cpu_in_stat(&format!("/proc/{pid}/stat"))
}

fn cpu_in_stat(path: &str) -> Result<Duration, BoxError> {
    let stat = std::fs::read_to_string(path)?;
    let malformed = || format!("malformed {path}");
    // Fields after the command name (which may contain spaces) start at field 3 (`state`);
    // utime and stime are fields 14 and 15, in clock ticks of 1/100 s (USER_HZ on Linux).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(malformed)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or_else(malformed);
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_calls_are_read_from_commandstats() {
        let stats =
            "# Commandstats\r\ncmdstat_xadd:calls=12,usec=30,usec_per_call=2.50,rejected_calls=0,failed_calls=0\r\n\
                     cmdstat_xgroup|create:calls=1,usec=5,usec_per_call=5.00\r\n";
        let calls = command_calls(stats);
        assert_eq!(calls.get("xadd"), Some(&12));
        assert_eq!(calls.get("xgroup|create"), Some(&1));
    }

    #[test]
    fn process_cpu_grows_with_work() {
        let before = process_cpu().unwrap();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(process_cpu().unwrap() > before);
    }
}
