//! Partitioned topics: a topic of N streams (its partitions, `<topic>#<p>`: see
//! `Topic::partition`), a message going to the partition of its key (`partition::of_key`),
//! or to each in turn without a key. The count is stored once, under
//! `<ns>:{<topic>}:partitions`, by `Admin::create_topic`; producers read it with the topic's
//! retention and workers when they start the topic. How workers share the partitions is in
//! `consumer/partitions.rs`; the model and its guarantees in `docs/partitions.md`.

use fred::types::Value;
use tributary_core::partition::MAX_PARTITIONS;
use tributary_core::{Connection, Topic};

use crate::redis::{call, call_sub, Args};
use crate::StreamError;

/// The stored partition count of `topic`: `None` for a topic of one stream.
pub(crate) async fn stored(conn: &Connection, topic: &Topic) -> Result<Option<u32>, StreamError> {
    let key = conn.namespace().partitions_key(topic);
    let value: Value = call(conn, "GET", &key, Args::new()).await?;
    parse(topic, value)
}

/// Stores `partitions` as `topic`'s count. Setting the count it has is a no-op (true when it
/// was set now); another count is refused: keys would move to other partitions, and a key's
/// order would break across the change.
pub(crate) async fn create(conn: &Connection, topic: &Topic, partitions: u32) -> Result<bool, StreamError> {
    let refused = |reason: String| StreamError::Partitions { topic: topic.to_string(), reason };
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(refused(format!("{partitions} partitions: a topic has 1 to {MAX_PARTITIONS}")));
    }
    let key = conn.namespace().partitions_key(topic);
    let mismatch = |n: u32| {
        refused(format!(
            "it has {n} partitions; the count of a topic is fixed once set (create a new topic to change it)"
        ))
    };
    match stored(conn, topic).await? {
        Some(n) if n != partitions => return Err(mismatch(n)),
        _ => {}
    }
    // Everything else first, so that the count, once there, finds it done (a worker that
    // starts then creates no group at its own start position before these); and again when
    // the count was there already, which repairs a call that failed half-way. Each step is
    // idempotent.
    let adopted = adopt_groups(conn, topic, partitions).await?;
    // Listed by `Admin::topics` and found by workers' topic patterns before the first publish.
    crate::registry::register(conn, &[topic]).await?;
    // `SET NX GET` answers what was there, and sets only when nothing was.
    let before: Value = call(conn, "SET", &key, Args::new().arg(partitions as i64).arg("NX").arg("GET")).await?;
    let created = match parse(topic, before)? {
        None => true,
        Some(n) if n == partitions => false,
        Some(n) => return Err(mismatch(n)),
    };
    let mark_key = conn.namespace().partitioning_mark();
    if !created && !adopted {
        // Nothing changed here. The mark is set again only if the last one is another topic's
        // (this call may repair one whose mark was never set); a service that ensures its
        // topic at every start does not make every worker look at all its topics each time.
        let last: Option<String> = call(conn, "GET", &mark_key, Args::new()).await?;
        if last.is_some_and(|m| m.rsplit_once('@').is_some_and(|(t, _)| t == topic.as_str())) {
            return Ok(false);
        }
    }
    // Running workers look whether their topics of one stream were partitioned when this
    // changes: a value never used before (a counter could come back to one a worker saw, after
    // Redis restarted without persistence).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let mark = format!("{topic}@{now}");
    let _: Value = call(conn, "SET", &mark_key, Args::new().arg(mark)).await?;
    Ok(created)
}

/// Creates the groups of a topic in use on each of its new partitions, at their beginning:
/// producers write to the partitions from their next look-up, and the groups' running workers
/// start consuming them a little later (`consumer/mod.rs`); nothing written meanwhile may be
/// skipped, whatever position the workers would start a new group at.
/// True when it created a group (a call before stopped half-way, or this is the first).
async fn adopt_groups(conn: &Connection, topic: &Topic, partitions: u32) -> Result<bool, StreamError> {
    let groups = crate::Admin::new(conn.clone()).groups(topic.as_str()).await?;
    let mut created = false;
    for group in &groups {
        for p in 0..partitions {
            let key = conn.namespace().topic_stream(&topic.partition(p));
            let args = Args::new().arg(group.name.as_str()).arg("0").arg("MKSTREAM");
            match call_sub::<Value>(conn, "XGROUP", "CREATE", &key, args).await {
                Ok(_) => created = true,
                Err(e) if e.is_server_error("BUSYGROUP") => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(created)
}

fn parse(topic: &Topic, value: Value) -> Result<Option<u32>, StreamError> {
    let text = match value {
        Value::Null => return Ok(None),
        other => other.as_string().unwrap_or_default(),
    };
    match text.parse::<u32>() {
        Ok(n) if (1..=MAX_PARTITIONS).contains(&n) => Ok(Some(n)),
        _ => Err(StreamError::Partitions {
            topic: topic.to_string(),
            reason: format!("its stored partition count `{text}` is not a number from 1 to {MAX_PARTITIONS}"),
        }),
    }
}
