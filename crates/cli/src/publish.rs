//! `tributary publish`.

use std::io::BufRead;
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
            for (n, line) in std::io::stdin().lock().lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let value: Value =
                    crate::json::parse(&line).map_err(|e| format!("line {} of standard input: {e}", n + 1))?;
                output::single(output, name, publish_one(value).await?);
            }
        }
    }
    Ok(())
}
