//! Printing: tables for people, JSON lines for scripts; messages always as JSON lines.

use std::io::Write;

use serde_json::{json, Map, Value};
use tributary::{EntryId, Envelope, MsgPack};

use crate::cli::Output;

/// Prints rows: aligned columns under `headers`, or one JSON object per row.
pub(crate) fn rows(output: Output, headers: &[&str], rows: Vec<Vec<Value>>) {
    let _ = write_rows(output, headers, rows);
}

/// [`rows`], saying whether standard output took them (it fails once a pipe's reader is gone).
pub(crate) fn write_rows(output: Output, headers: &[&str], rows: Vec<Vec<Value>>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            for row in rows {
                let obj: Map<String, Value> = headers.iter().map(|h| h.to_string()).zip(row).collect();
                writeln!(out, "{}", Value::Object(obj))?;
            }
        }
        Output::Table => {
            let cells: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(cell).collect()).collect();
            let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
            for r in &cells {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |values: Vec<String>| {
                values
                    .iter()
                    .zip(&widths)
                    .map(|(v, w)| format!("{v:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_owned()
            };
            writeln!(out, "{}", line(headers.iter().map(|h| h.to_uppercase()).collect()))?;
            for r in cells {
                writeln!(out, "{}", line(r))?;
            }
        }
    }
    out.flush()
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// One line (a single value: an id) in either format.
pub(crate) fn single(output: Output, name: &str, value: Value) {
    let mut out = std::io::stdout().lock();
    let _ = match output {
        Output::Json => writeln!(out, "{}", json!({ name: value })),
        Output::Table => writeln!(out, "{}", cell(&value)),
    };
    let _ = out.flush();
}

/// A sentence on a terminal; a JSON document with `--output json`.
pub(crate) fn report(output: Output, sentence: &str, document: Value) {
    let mut out = std::io::stdout().lock();
    let _ = match output {
        Output::Table => writeln!(out, "{sentence}"),
        Output::Json => writeln!(out, "{document}"),
    };
    let _ = out.flush();
}

/// The payload as JSON, decoded by its content type, losslessly (`json.rs`): MessagePack and
/// JSON as values; anything else (or what does not decode) as text if it is UTF-8, else as
/// `{"$base64": "..."}`.
pub(crate) fn payload(env: &Envelope) -> Value {
    let ct = env.content_type.split(';').next().unwrap_or("").trim();
    let decoded = if ct == MsgPack::CONTENT_TYPE {
        crate::json::from_msgpack(&env.payload)
    } else if ct == tributary::Json::CONTENT_TYPE {
        serde_json::from_slice::<Value>(&env.payload).ok()
    } else {
        None
    };
    decoded.unwrap_or_else(|| match std::str::from_utf8(&env.payload) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => crate::json::base64(&env.payload),
    })
}

/// Writes a payload's bytes as they are and a newline (`--raw`), and flushes.
pub(crate) fn raw_line(payload: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(payload)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// A message as one JSON object.
pub(crate) fn message(entry_id: EntryId, env: &Envelope, attempt: Option<u64>) -> Value {
    let headers: Map<String, Value> =
        env.headers.iter().map(|(k, v)| (k.to_owned(), Value::String(v.to_owned()))).collect();
    let mut m = json!({
        "entry_id": entry_id.to_string(),
        "message_id": env.id.to_string(),
        "type": (!env.type_name.is_empty()).then_some(&env.type_name),
        "key": env.key,
        "headers": headers,
        "published_at": humantime::format_rfc3339_millis(env.published_at).to_string(),
        "payload": payload(env),
    });
    if let Some(a) = attempt {
        m["attempt"] = json!(a);
    }
    m
}

/// Prints one message line and flushes, so a reader sees it before it is acknowledged.
pub(crate) fn message_line(line: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// How a start position was given, for messages.
pub(crate) fn position(p: tributary::Position) -> String {
    match p {
        tributary::Position::Beginning => "0 (the beginning)".to_owned(),
        tributary::Position::End => "$ (new messages only)".to_owned(),
        tributary::Position::At(id) => id.to_string(),
        tributary::Position::Time(t) => humantime::format_rfc3339_millis(t).to_string(),
    }
}
