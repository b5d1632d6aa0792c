//! `tributary stats`: every topic and group at a glance, once or refreshed.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tributary::metrics::Sampler;
use tributary::{BoxError, Connection, TopicStats};

use crate::cli::{Output, StatsArgs};
use crate::output;

/// The columns; JSON lines have the idle time in milliseconds, and the time of the sample.
fn headers(out: Output) -> Vec<&'static str> {
    let oldest = if out == Output::Json { "oldest_pending_idle_ms" } else { "oldest_pending_idle" };
    let mut h = vec!["topic", "group", "length", "in_per_s", "out_per_s", "lag", "pending", oldest];
    h.extend(["consumers", "dead_letters", "scheduled"]);
    if out == Output::Json {
        h.push("sampled_at");
    }
    h
}

pub(crate) async fn run(conn: Connection, out: Output, args: StatsArgs) -> Result<(), BoxError> {
    let mut sampler = Sampler::new(conn);
    if !args.topics.is_empty() {
        sampler = sampler.topics(args.topics.clone());
    }
    if args.interval.is_zero() {
        return Err("--interval must be longer than 0 (the rates are measured over it)".into());
    }
    let redraw = args.watch && out == Output::Table && std::io::stdout().is_terminal();
    let headers = headers(out);
    // One listener for the whole run: a Ctrl-C while Redis is being read is not lost.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut earlier: HashMap<String, TopicStats> = tokio::select! {
        sampled = sampler.sample() => sampled?.into_iter().map(|s| (s.topic.clone(), s)).collect(),
        _ = &mut interrupted => return Ok(()),
    };
    let mut rounds = 0u64;
    loop {
        let now = tokio::select! {
            sampled = async {
                tokio::time::sleep(args.interval).await;
                sampler.sample().await
            } => sampled?,
            _ = &mut interrupted => return Ok(()),
        };
        let rows = now.iter().flat_map(|s| rows(s, earlier.get(&s.topic), out)).collect();
        // On a terminal: home, clear, and a title line; in a pipe, a blank line between tables.
        // (Written, not printed: `print!` panics once a pipe's reader is gone.)
        if redraw {
            let time = humantime::format_rfc3339_seconds(SystemTime::now());
            let every = humantime::format_duration(args.interval);
            let _ = write!(std::io::stdout(), "\x1b[H\x1b[2J{time}  every {every}  (Ctrl-C to stop)\n\n");
        } else if args.watch && out == Output::Table && rounds > 0 {
            let _ = writeln!(std::io::stdout());
        }
        rounds += 1;
        if let Err(e) = output::write_rows(out, &headers, rows) {
            // `stats --watch | head`: the reader is gone, and so is the point of going on.
            return if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e.into()) };
        }
        if !args.watch {
            return Ok(());
        }
        earlier = now.into_iter().map(|s| (s.topic.clone(), s)).collect();
    }
}

/// A row per group of `now` (one for the topic when it has none), with rates since `earlier`.
fn rows(now: &TopicStats, earlier: Option<&TopicStats>, out: Output) -> Vec<Vec<Value>> {
    let rate = |r: Option<f64>| r.map(|r| json!((r * 10.0).round() / 10.0)).unwrap_or(Value::Null);
    let rate_in = rate(earlier.and_then(|e| now.rate_in(e)));
    let time = (out == Output::Json).then(|| humantime::format_rfc3339_millis(now.sampled_at).to_string());
    let topic_cells = |group: Value, out_rate: Value, rest: [Value; 4]| {
        let [lag, pending, oldest, consumers] = rest;
        let mut row = vec![
            json!(now.topic),
            group,
            json!(now.length),
            rate_in.clone(),
            out_rate,
            lag,
            pending,
            oldest,
            consumers,
            json!(now.dead_letters),
            json!(now.scheduled),
        ];
        row.extend(time.clone().map(Value::String));
        row
    };
    if now.groups.is_empty() {
        return vec![topic_cells(Value::Null, Value::Null, [Value::Null, Value::Null, Value::Null, json!(0)])];
    }
    now.groups
        .iter()
        .map(|g| {
            let oldest = match (g.oldest_pending_idle, out) {
                (None, _) => Value::Null,
                (Some(idle), Output::Json) => json!(idle.as_millis() as u64),
                (Some(idle), Output::Table) => json!(short(idle)),
            };
            topic_cells(
                json!(g.name),
                rate(earlier.and_then(|e| now.rate_out(e, &g.name))),
                [json!(g.lag), json!(g.pending), oldest, json!(g.consumers)],
            )
        })
        .collect()
}

/// `850ms`, `12.4s`, `3m05s`, `2h10m`: a duration at a glance.
fn short(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", d.as_secs_f64()),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::short;
    use std::time::Duration;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(short(Duration::from_millis(850)), "850ms");
        assert_eq!(short(Duration::from_millis(12_400)), "12.4s");
        assert_eq!(short(Duration::from_secs(185)), "3m05s");
        assert_eq!(short(Duration::from_secs(7800)), "2h10m");
    }
}
