//! `tributary publish`.

use std::io::Read;
use std::time::SystemTime;

use serde_json::{json, Value};
use tributary::{BoxError, Connection, Envelope, MsgPack, Producer};

use crate::cli::{Output, PublishArgs};
use crate::output;

pub(crate) async fn run(conn: Connection, output: Output, args: PublishArgs) -> Result<(), BoxError> {
    let producer = Producer::new(conn);
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h.split_once('=').ok_or_else(|| format!("header `{h}` is not NAME=VALUE"))?;
        headers.push((k.to_owned(), v.to_owned()));
    }
    let publish_one = |value: Value| {
        let producer = &producer;
        let args = &args;
        let headers = &headers;
        async move {
            let payload = crate::json::to_msgpack(&value)?;
            let mut env = Envelope::new(args.type_name.clone(), MsgPack::CONTENT_TYPE, payload);
            for (k, v) in headers {
                env = env.with_header(k.clone(), v.clone());
            }
            if let Some(key) = &args.key {
                env = env.with_key(key.clone());
            }
            if let Some(ttl) = args.ttl {
                env = env.with_expires_at(SystemTime::now() + ttl);
            }
            env = env.with_traceparent(tributary::TraceParent::new_root());
            let at = args.at.or(args.delay.map(|d| SystemTime::now() + d));
            let printed = match at {
                Some(at) => {
                    let id = producer.schedule_envelope(&args.topic, &env, at, args.idempotency_key.as_deref()).await?;
                    json!(id)
                }
                None => json!(producer
                    .publish_envelope(&args.topic, &env, args.idempotency_key.as_deref())
                    .await?
                    .to_string()),
            };
            Ok::<_, BoxError>(printed)
        }
    };
    let name = if args.at.is_some() || args.delay.is_some() { "schedule_id" } else { "entry_id" };
    match &args.json {
        Some(text) => {
            let value: Value = crate::json::parse(text).map_err(|e| format!("--json: {e}"))?;
            output::single(output, name, publish_one(value).await?);
        }
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            let documents = documents(&text);
            let bad: Vec<&String> = documents.iter().filter_map(|d| d.as_ref().err()).collect();
            if !bad.is_empty() && !args.keep_going {
                let others = match bad.len() {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                };
                return Err(
                    format!("{}{others}; nothing was published (--continue publishes the good ones)", bad[0]).into()
                );
            }
            let skipped = bad.len();
            for document in documents {
                match document {
                    Ok(value) => output::single(output, name, publish_one(value).await?),
                    Err(e) => eprintln!("tributary: skipped {e}"),
                }
            }
            if skipped > 0 {
                return Err(format!("{skipped} documents did not parse and were skipped").into());
            }
        }
    }
    Ok(())
}

/// The JSON documents of `text` (each on its own line or spread over several), or for each one
/// that does not parse, where it is and why. After a syntax error the next document is looked
/// for on the next line.
fn documents(text: &str) -> Vec<Result<Value, String>> {
    let mut found = Vec::new();
    let mut from = 0;
    while from < text.len() {
        let rest = &text[from..];
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let start = stream.byte_offset();
        match stream.next() {
            None => break,
            Some(Ok(_)) => {
                let end = stream.byte_offset();
                let doc = &rest[start..end];
                let line = line_of(text, from + start + (doc.len() - doc.trim_start().len()));
                found.push(
                    crate::json::parse(doc)
                        .map_err(|e| format!("document {} (line {line}) of standard input: {e}", found.len() + 1)),
                );
                from += end;
            }
            Some(Err(e)) => {
                let line = line_of(text, from) + e.line().saturating_sub(1);
                // serde_json counts lines from where this document's search began: say only ours.
                let what = e.to_string();
                let what = what.rsplit_once(" at line ").map_or(what.as_str(), |(w, _)| w);
                found.push(Err(format!(
                    "document {} (line {line}, column {}) of standard input: {what}",
                    found.len() + 1,
                    e.column()
                )));
                // Go on at the next line that starts a document at its first column (`{` or
                // `[`): the lines between may be the rest of the broken one (a pretty-printed
                // document is indented), and must not be taken for documents of their own.
                let error_line_end = rest.split_inclusive('\n').take(e.line().max(1)).map(str::len).sum::<usize>();
                let mut next = None;
                let mut at = error_line_end;
                for line in rest[error_line_end.min(rest.len())..].split_inclusive('\n') {
                    if line.starts_with('{') || line.starts_with('[') {
                        next = Some(at);
                        break;
                    }
                    at += line.len();
                }
                match next {
                    Some(at) => from += at,
                    None => break,
                }
            }
        }
    }
    found
}

/// The 1-based line of byte `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}
