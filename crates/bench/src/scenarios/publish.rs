//! `publish`: one message at a time from many concurrent tasks.
//!
//! - Tributary: `Producer::publish(topic, &payload)` (envelope with a new id, time and trace
//!   context, MessagePack payload, wire-format encoding, `XADD`).
//! - Baseline: fred's typed `xadd` on a plain client, sending the payload alone in one field
//!   (what a user would write instead, built once).
//! - Secondary baseline (`fred, envelope-shaped`): the same `xadd` with the fields of one such
//!   envelope built once: the cheapest XADD of Tributary's entry, so the gap between the two
//!   baselines is what the envelope's bytes cost Redis and the wire.
//!
//! Targets (against the primary baseline): throughput >= 0.9x, p50 latency <= 1.1x.

use serde_json::json;
use tributary::{wire, BoxError, Envelope, MsgPack, Producer, TraceParent};

use super::{closed_loop, encoded, payload, progress, rate_of, round_of, Options};
use crate::baseline::{xadd, RawFields};
use crate::env::{delete_keys, Env};
use crate::report::{Figures, Report, Run, Target};

const TOPIC: &str = "bench.publish";

/// Runs the scenario.
///
/// # Errors
/// When a publish fails.
pub async fn run(env: &Env, o: &Options) -> Result<Report, BoxError> {
    let conn = env.connect().await?;
    let fred = env.fred().await?;
    let producer = Producer::new(conn.clone());
    let topic_key = env.topic_key(&conn, TOPIC)?;
    let raw_key = env.raw_key("publish");
    let body = payload(o.payload_bytes);
    let raw = RawFields::payload_only(encoded(&body));
    let shaped = RawFields::like_envelope(encoded(&body));
    let meter = env.cpu_meter().await?;

    let tributary = |n: u64| {
        let (producer, body) = (producer.clone(), body.clone());
        closed_loop(n, o.publish_concurrency, move || {
            let (producer, body) = (producer.clone(), body.clone());
            async move {
                producer.publish(TOPIC, &body).await?;
                Ok(())
            }
        })
    };
    let baseline = |n: u64, raw: &RawFields| {
        let (fred, key, raw) = (fred.clone(), raw_key.clone(), raw.clone());
        closed_loop(n, o.publish_concurrency, move || {
            let (fred, key, fields) = (fred.clone(), key.clone(), raw.fields());
            async move {
                xadd(&fred, &key, fields).await?;
                Ok(())
            }
        })
    };

    // Intermediate sides (`--breakdown`): the same typed xadd through Tributary's own client
    // (its connection settings: 5 s command timeout, reconnect policy), then additionally with
    // a fresh envelope encoded per message (`Envelope::new` + trace context + `wire::encode`).
    let via_conn = |n: u64, fresh: bool| {
        let (client, key, raw, body) = (conn.redis().clone(), raw_key.clone(), shaped.clone(), encoded(&body));
        closed_loop(n, o.publish_concurrency, move || {
            let (client, key) = (client.clone(), key.clone());
            let fields = if fresh {
                let env = Envelope::new("Bytes", MsgPack::CONTENT_TYPE, body.clone())
                    .with_traceparent(TraceParent::new_root());
                wire::encode(&env, &wire::Limits::default()).map_err(BoxError::from)
            } else {
                Ok(raw.fields())
            };
            async move {
                xadd(&client, &key, fields?).await?;
                Ok(())
            }
        })
    };

    progress("publish", "warm-up");
    if o.runs_tributary() {
        tributary(2_000).await?;
    }
    if o.runs_baseline() {
        baseline(2_000, &raw).await?;
        baseline(2_000, &shaped).await?;
    }
    let breakdown = o.breakdown && o.only.is_none();
    let (mut t_runs, mut b_runs): (Vec<Run>, Vec<Run>) = (Vec::new(), Vec::new());
    let (mut conn_runs, mut fresh_runs): (Vec<Run>, Vec<Run>) = (Vec::new(), Vec::new());
    let mut shaped_runs: Vec<Run> = Vec::new();
    for round in 0..o.rounds {
        let (t, b) = round_of(
            o,
            round,
            meter.metered(tributary(o.publish_messages)),
            meter.metered(baseline(o.publish_messages, &raw)),
        )
        .await?;
        if o.only.is_none() {
            shaped_runs.push(meter.metered(baseline(o.publish_messages, &shaped)).await?);
        }
        progress(
            "publish",
            format!("round {}: tributary {}, fred {}", round + 1, rate_of(t.as_ref()), rate_of(b.as_ref())),
        );
        t_runs.extend(t);
        b_runs.extend(b);
        if breakdown {
            conn_runs.push(meter.metered(via_conn(o.publish_messages, false)).await?);
            fresh_runs.push(meter.metered(via_conn(o.publish_messages, true)).await?);
        }
        delete_keys(&fred, &[topic_key.clone(), raw_key.clone()]).await;
    }

    let t = Figures::from_runs("tributary", &t_runs);
    let b = Figures::from_runs("fred", &b_runs);
    let s = Figures::from_runs("fred, envelope-shaped", &shaped_runs);
    let mut report = Report::new(
        "publish",
        json!({
            "messages_per_round": o.publish_messages,
            "rounds": o.rounds,
            "concurrency": o.publish_concurrency,
            "payload_bytes": o.payload_bytes,
            "baseline": format!("fred xadd of the payload alone: {} field / {} bytes, built once", raw.len(), raw.bytes()),
            "secondary_baseline": format!(
                "fred, envelope-shaped: fred xadd of {} fields / {} bytes (the fields of one Tributary envelope, built once)",
                shaped.len(),
                shaped.bytes()
            ),
        }),
    );
    if let Some(only) = o.only {
        return Ok(report.one_side(only, vec![t, b]));
    }
    let throughput = report.ratio("throughput tributary/fred", t.per_second, b.per_second);
    let p50 = report.ratio("p50 latency tributary/fred", t.p50(), b.p50());
    report.ratio("p99 latency tributary/fred", t.p99(), b.p99());
    report.ratio("throughput tributary/fred envelope-shaped", t.per_second, s.per_second);
    report.ratio("p50 latency tributary/fred envelope-shaped", t.p50(), s.p50());
    report.target(Target::at_least("throughput tributary/fred", throughput, 0.9));
    report.target(Target::at_most("p50 latency tributary/fred", p50, 1.1));
    if breakdown {
        let c = Figures::from_runs("fred via Tributary's client", &conn_runs);
        let f = Figures::from_runs("fred via Tributary's client, fresh envelope per message", &fresh_runs);
        report.ratio("throughput (fred via Tributary's client)/fred envelope-shaped", c.per_second, s.per_second);
        report.ratio("throughput (fresh envelope)/fred envelope-shaped", f.per_second, s.per_second);
        report.results = vec![t, b, s, c, f];
    } else {
        report.results = vec![t, b, s];
    }
    Ok(report)
}
