//! `publish-batch`: pipelined batches from a few concurrent tasks.
//!
//! - Tributary: `Producer::publish_batch(topic, &batch)`: one envelope per message, one
//!   pipeline of `XADD`s.
//! - Baseline: a fred pipeline of the same number of typed `xadd`s, each with the payload alone
//!   in one field (what a user would write instead), then `try_all`.
//! - Secondary baseline (`fred, envelope-shaped`): the same pipeline with the fields of one
//!   envelope built once (as in `publish`).
//!
//! Target (against the primary baseline): throughput >= 0.9x.

use fred::interfaces::StreamsInterface;
use fred::types::Value;
use serde_json::json;
use tributary::{BoxError, Producer};

use super::{closed_loop, encoded, payload, progress, rate_of, round_of, Options};
use crate::baseline::RawFields;
use crate::env::{delete_keys, Env};
use crate::report::{Figures, Report, Run, Target};

const TOPIC: &str = "bench.publish-batch";

/// Runs the scenario.
///
/// # Errors
/// When a batch fails.
pub async fn run(env: &Env, o: &Options) -> Result<Report, BoxError> {
    let conn = env.connect().await?;
    let fred = env.fred().await?;
    let producer = Producer::new(conn.clone());
    let topic_key = env.topic_key(&conn, TOPIC)?;
    let raw_key = env.raw_key("publish-batch");
    let size = o.batch_size.max(1);
    let batch = vec![payload(o.payload_bytes); size];
    let raw = RawFields::payload_only(encoded(&batch[0]));
    let shaped = RawFields::like_envelope(encoded(&batch[0]));
    let meter = env.cpu_meter().await?;

    let tributary = |messages: u64| {
        let (producer, batch) = (producer.clone(), batch.clone());
        let batches = messages.div_ceil(size as u64);
        async move {
            let mut run = closed_loop(batches, o.batch_concurrency, move || {
                let (producer, batch) = (producer.clone(), batch.clone());
                async move {
                    producer.publish_batch(TOPIC, batch.iter()).await?;
                    Ok(())
                }
            })
            .await?;
            run.ops = batches * size as u64;
            Ok::<_, BoxError>(run)
        }
    };
    let baseline = |messages: u64, raw: &RawFields| {
        let (fred, key, raw) = (fred.clone(), raw_key.clone(), raw.clone());
        let batches = messages.div_ceil(size as u64);
        async move {
            let mut run = closed_loop(batches, o.batch_concurrency, move || {
                let (fred, key, raw) = (fred.clone(), key.clone(), raw.clone());
                async move {
                    let pipeline = fred.pipeline();
                    for _ in 0..size {
                        let _: () = pipeline.xadd(key.as_str(), false, None, "*", raw.fields()).await?;
                    }
                    for result in pipeline.try_all::<Value>().await {
                        result?;
                    }
                    Ok(())
                }
            })
            .await?;
            run.ops = batches * size as u64;
            Ok::<_, BoxError>(run)
        }
    };

    progress("publish-batch", "warm-up");
    if o.runs_tributary() {
        tributary(10 * size as u64).await?;
    }
    if o.runs_baseline() {
        baseline(10 * size as u64, &raw).await?;
        baseline(10 * size as u64, &shaped).await?;
    }
    let (mut t_runs, mut b_runs, mut s_runs): (Vec<Run>, Vec<Run>, Vec<Run>) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..o.rounds {
        let (t, b) = round_of(
            o,
            round,
            meter.metered(tributary(o.batch_messages)),
            meter.metered(baseline(o.batch_messages, &raw)),
        )
        .await?;
        if o.only.is_none() {
            s_runs.push(meter.metered(baseline(o.batch_messages, &shaped)).await?);
        }
        progress(
            "publish-batch",
            format!("round {}: tributary {}, fred {}", round + 1, rate_of(t.as_ref()), rate_of(b.as_ref())),
        );
        t_runs.extend(t);
        b_runs.extend(b);
        delete_keys(&fred, &[topic_key.clone(), raw_key.clone()]).await;
    }

    let t = Figures::from_runs("tributary", &t_runs);
    let b = Figures::from_runs("fred", &b_runs);
    let s = Figures::from_runs("fred, envelope-shaped", &s_runs);
    let mut report = Report::new(
        "publish-batch",
        json!({
            "messages_per_round": o.batch_messages,
            "rounds": o.rounds,
            "batch_size": size,
            "concurrency": o.batch_concurrency,
            "payload_bytes": o.payload_bytes,
            "latency": "per batch",
            "baseline": format!(
                "fred pipeline of {size} xadd, each of the payload alone: {} field / {} bytes, built once",
                raw.len(),
                raw.bytes()
            ),
            "secondary_baseline": format!(
                "fred, envelope-shaped: fred pipeline of {size} xadd, each {} fields / {} bytes (one Tributary \
                 envelope's fields, built once)",
                shaped.len(),
                shaped.bytes()
            ),
        }),
    );
    if let Some(only) = o.only {
        return Ok(report.one_side(only, vec![t, b]));
    }
    let throughput = report.ratio("throughput tributary/fred", t.per_second, b.per_second);
    report.ratio("p50 batch latency tributary/fred", t.p50(), b.p50());
    report.ratio("throughput tributary/fred envelope-shaped", t.per_second, s.per_second);
    report.target(Target::at_least("throughput tributary/fred", throughput, 0.9));
    report.results = vec![t, b, s];
    Ok(report)
}
