//! `tributary topics | info | get | groups | consumers | pending`.

use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use tributary::rpc_keys::is_request_topic;
use tributary::{Admin, BoxError, Connection, DeadLetters, EntryId, Position, Replay, Scheduler, StreamError, Topic};

use crate::checks;
use crate::cli::Output;
use crate::output;

pub(crate) async fn topics(conn: Connection, out: Output) -> Result<(), BoxError> {
    let admin = Admin::new(conn.clone());
    let scheduler = Scheduler::new(conn.clone());
    // Topics, then RPC request streams (`rpc.<service>`), each sorted; topics that so far
    // have only scheduled messages are listed too (their stream appears when one is due).
    let mut topics = admin.topics().await?;
    topics.extend(admin.scheduled_topics().await?);
    topics.sort_by(|a, b| (is_request_topic(a), a).cmp(&(is_request_topic(b), b)));
    topics.dedup();
    // As many topics at a time as the metrics sampler reads, each row's commands at once: one
    // round trip per command in turn made 1,000 topics take 1.3 s on a local server, and a
    // remote one much longer.
    let rows: Vec<Vec<Value>> = futures::stream::iter(topics)
        .map(|topic| topic_row(&admin, &scheduler, &conn, topic))
        .buffered(tributary::metrics::SAMPLER_CONCURRENCY)
        .try_collect()
        .await?;
    output::rows(out, &["topic", "kind", "length", "groups", "pending", "max_lag", "dead_letters", "scheduled"], rows);
    Ok(())
}

/// One row of `tributary topics`.
async fn topic_row(
    admin: &Admin,
    scheduler: &Scheduler,
    conn: &Connection,
    topic: Topic,
) -> Result<Vec<Value>, BoxError> {
    let name = topic.as_str();
    let dead_letters = DeadLetters::new(conn.clone(), name)?;
    let (groups, dead, length, scheduled, partitions) = tokio::try_join!(
        admin.groups(name),
        dead_letters.count(),
        admin.len(name),
        scheduler.count(name),
        admin.partitions(name)
    )?;
    let lag: Option<u64> = groups.iter().map(|g| g.lag).try_fold(0u64, |acc, l| l.map(|l| acc.max(l)));
    // Of a partitioned topic, the figures are of its own stream; `groups` and `stats` show each
    // partition.
    let kind = match partitions {
        Some(n) => format!("{n} partitions"),
        None if is_request_topic(&topic) => "rpc requests".to_owned(),
        None => "topic".to_owned(),
    };
    Ok(vec![
        json!(name),
        json!(kind),
        json!(length),
        json!(groups.len()),
        json!(groups.iter().map(|g| g.pending).sum::<u64>()),
        json!(lag),
        json!(dead),
        json!(scheduled),
    ])
}

pub(crate) async fn groups(conn: Connection, out: Output, topic: &str) -> Result<(), BoxError> {
    let admin = Admin::new(conn.clone());
    checks::topic(&admin, conn.namespace().as_str(), topic).await?;
    let row = |g: tributary::admin::GroupInfo| {
        vec![json!(g.name), json!(g.consumers), json!(g.pending), json!(g.last_delivered.to_string()), json!(g.lag)]
    };
    let Some(partitions) = admin.partitions(topic).await.ok().flatten() else {
        let rows = admin.groups(topic).await?.into_iter().map(row).collect();
        output::rows(out, &["group", "consumers", "pending", "last_delivered", "lag"], rows);
        return Ok(());
    };
    // A partitioned topic: a row per group of its own stream (partition `-`) and of each
    // partition.
    let streams: Vec<(String, String)> = std::iter::once(("-".to_owned(), topic.to_owned()))
        .chain((0..partitions).map(|p| (p.to_string(), format!("{topic}#{p}"))))
        .collect();
    let groups: Vec<Vec<tributary::admin::GroupInfo>> = futures::stream::iter(&streams)
        .map(|(_, name)| admin.groups(name))
        .buffered(tributary::metrics::SAMPLER_CONCURRENCY)
        .try_collect()
        .await?;
    let mut rows = Vec::new();
    for ((partition, _), groups) in streams.iter().zip(groups) {
        for g in groups {
            let mut r = vec![json!(partition)];
            r.extend(row(g));
            rows.push(r);
        }
    }
    output::rows(out, &["partition", "group", "consumers", "pending", "last_delivered", "lag"], rows);
    Ok(())
}

pub(crate) async fn consumers(conn: Connection, out: Output, topic: &str, group: &str) -> Result<(), BoxError> {
    let admin = Admin::new(conn.clone());
    checks::group(&admin, conn.namespace().as_str(), topic, group).await?;
    let rows = admin
        .consumers(topic, group)
        .await?
        .into_iter()
        .map(|c| vec![json!(c.name), json!(c.pending), json!(c.idle_ms)])
        .collect();
    output::rows(out, &["consumer", "pending", "idle_ms"], rows);
    Ok(())
}

pub(crate) async fn pending(
    conn: Connection,
    out: Output,
    topic: &str,
    group: &str,
    count: usize,
) -> Result<(), BoxError> {
    let admin = Admin::new(conn.clone());
    checks::group(&admin, conn.namespace().as_str(), topic, group).await?;
    let rows: Vec<Vec<Value>> = admin
        .pending(topic, group, count)
        .await?
        .into_iter()
        .map(|p| vec![json!(p.id.to_string()), json!(p.consumer), json!(p.idle_ms), json!(p.deliveries)])
        .collect();
    output::rows(out, &["entry_id", "consumer", "idle_ms", "deliveries"], rows);
    Ok(())
}

pub(crate) async fn info(conn: Connection, out: Output, topic: &str) -> Result<(), BoxError> {
    let admin = Admin::new(conn.clone());
    checks::topic(&admin, conn.namespace().as_str(), topic).await?;
    let bounds = admin.first_and_last(topic).await?;
    let at = |id: EntryId| {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(id.ms());
        format!("{id} ({})", humantime::format_rfc3339_millis(time))
    };
    let groups = admin.groups(topic).await?;
    let retention = match admin.retention(topic).await {
        Ok(Some(r)) => r.to_string(),
        Ok(None) => "none".to_owned(),
        // Shown, not fatal: the rest of the topic is still worth seeing.
        Err(e @ StreamError::InvalidRetention { .. }) => e.to_string(),
        Err(e) => return Err(e.into()),
    };
    let mut rows = vec![
        vec![json!("length"), json!(admin.len(topic).await?)],
        vec![json!("retention"), json!(retention)],
        vec![json!("first"), json!(bounds.map(|(first, _)| at(first)))],
        vec![json!("last"), json!(bounds.map(|(_, last)| at(last)))],
        vec![json!("dead_letters"), json!(DeadLetters::new(conn.clone(), topic)?.count().await?)],
        vec![json!("scheduled"), json!(Scheduler::new(conn.clone()).count(topic).await?)],
        vec![json!("groups"), json!(groups.len())],
    ];
    for g in groups {
        let consumers: Vec<String> = admin
            .consumers(topic, &g.name)
            .await?
            .into_iter()
            .map(|c| format!("{} ({} pending)", c.name, c.pending))
            .collect();
        rows.push(vec![
            json!(format!("group {}", g.name)),
            json!(format!(
                "lag {}, pending {}, last delivered {}, consumers: {}",
                g.lag.map_or_else(|| "unknown".to_owned(), |l| l.to_string()),
                g.pending,
                g.last_delivered,
                if consumers.is_empty() { "none".to_owned() } else { consumers.join(", ") }
            )),
        ]);
    }
    output::rows(out, &["what", "value"], rows);
    Ok(())
}

pub(crate) async fn get(conn: Connection, topic: &str, id: EntryId) -> Result<(), BoxError> {
    let admin = Admin::new(conn.clone());
    checks::topic(&admin, conn.namespace().as_str(), topic).await?;
    let found = Replay::new(conn).range(topic, Position::At(id), Position::At(id))?.collect(1).await?;
    let Some(received) = found.into_iter().next() else {
        return Err(format!("no entry `{id}` on topic `{topic}` (trimmed, deleted, or never there)").into());
    };
    match &received.envelope {
        Ok(env) => output::message_line(&output::message(received.entry_id, env, None))?,
        Err(e) => {
            output::message_line(&json!({ "entry_id": received.entry_id.to_string(), "malformed": e.to_string() }))?
        }
    }
    Ok(())
}
