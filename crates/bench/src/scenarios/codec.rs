//! `codec`: encode and decode one envelope, in process (no Redis).
//!
//! - Tributary: [`crate::codec::tributary_encode`] / [`crate::codec::tributary_decode`]
//!   (envelope + MessagePack named fields + wire format v1 fields).
//! - Baseline: [`crate::codec::json_encode`] / [`crate::codec::json_decode`] (serde_json of the
//!   same metadata with the message inline).
//!
//! A quick timing loop (best of `--rounds`, `--codec-iterations` each); the criterion bench
//! `cargo bench -p tributary-bench --bench codec` measures the same functions more carefully.
//! Report only: no target.

use std::hint::black_box;

use serde_json::json;
use tributary::{BoxError, TraceParent};

use super::{progress, Options};
use crate::codec::{fields_len, json_decode, json_encode, sample, time_per_op, tributary_decode, tributary_encode};
use crate::report::{round1, Report};

/// Runs the scenario.
///
/// # Errors
/// Never in practice (kept fallible like the other scenarios).
pub fn run(o: &Options) -> Result<Report, BoxError> {
    let msg = sample();
    let tp = TraceParent::new_root();
    let fields = tributary_encode(&msg, tp);
    let json_doc = json_encode(&msg, tp);
    let n = o.codec_iterations.max(1);
    let mut best = [f64::INFINITY; 4];
    // Warm-up round, then the measured ones.
    for round in 0..=o.rounds {
        let times = [
            time_per_op(n, || {
                black_box(tributary_encode(black_box(&msg), tp));
            }),
            time_per_op(n, || {
                black_box(tributary_decode(black_box(&fields)));
            }),
            time_per_op(n, || {
                black_box(json_encode(black_box(&msg), tp));
            }),
            time_per_op(n, || {
                black_box(json_decode(black_box(&json_doc)));
            }),
        ];
        if round > 0 {
            for (b, t) in best.iter_mut().zip(times) {
                *b = b.min(t);
            }
        }
    }
    let [t_enc, t_dec, j_enc, j_dec] = best;
    progress("codec", format!("tributary {t_enc:.0}/{t_dec:.0} ns, serde_json {j_enc:.0}/{j_dec:.0} ns"));

    let mut report = Report::new(
        "codec",
        json!({
            "iterations_per_round": n,
            "rounds": o.rounds,
            "message": "OrderPlaced with 3 items, key and traceparent",
            "tributary": "Envelope::encode(MsgPack) + wire::encode / wire::decode + Envelope::decode",
            "baseline": "serde_json of {id, type, ct, ts, key, tp, payload}",
            "statistic": "best round, ns per operation",
        }),
    );
    report.measured = json!({
        "tributary": { "encode_ns": round1(t_enc), "decode_ns": round1(t_dec), "bytes": fields_len(&fields) },
        "serde_json": { "encode_ns": round1(j_enc), "decode_ns": round1(j_dec), "bytes": json_doc.len() },
    });
    report.ratio("encode time tributary/serde_json", t_enc, j_enc);
    report.ratio("decode time tributary/serde_json", t_dec, j_dec);
    report.ratio("size tributary/serde_json", fields_len(&fields) as f64, json_doc.len() as f64);
    Ok(report)
}
