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

/// The streams to read for `topic`: its own, and of a partitioned topic each partition's
/// (`orders#3`) with its number. A partition named by the user is read alone.
pub(crate) async fn streams_of(admin: &Admin, topic: &str) -> Result<Vec<(Option<u32>, String)>, BoxError> {
    let partitions = if topic.contains('#') { None } else { admin.partitions(topic).await? };
    Ok(std::iter::once((None, topic.to_owned()))
        .chain((0..partitions.unwrap_or(0)).map(|p| (Some(p), format!("{topic}#{p}"))))
        .collect())
}

/// The figures of one stream of a topic, for `topics` and `info`.
struct StreamFigures {
    groups: Vec<tributary::admin::GroupInfo>,
    dead_letters: u64,
    length: u64,
}

async fn stream_figures(admin: &Admin, conn: &Connection, name: &str) -> Result<StreamFigures, BoxError> {
    let dead_letters = DeadLetters::new(conn.clone(), name)?;
    let (groups, dead_letters, length) = tokio::try_join!(admin.groups(name), dead_letters.count(), admin.len(name))?;
    Ok(StreamFigures { groups, dead_letters, length })
}

/// One row of `tributary topics`; of a partitioned topic, the figures of its partitions and
/// its own stream together.
async fn topic_row(
    admin: &Admin,
    scheduler: &Scheduler,
    conn: &Connection,
    topic: Topic,
) -> Result<Vec<Value>, BoxError> {
    let name = topic.as_str();
    let (streams, scheduled) = tokio::try_join!(streams_of(admin, name), async { Ok(scheduler.count(name).await?) })?;
    let figures: Vec<StreamFigures> =
        futures::future::try_join_all(streams.iter().map(|(_, s)| stream_figures(admin, conn, s))).await?;
    let mut groups: Vec<&str> = figures.iter().flat_map(|f| f.groups.iter().map(|g| g.name.as_str())).collect();
    groups.sort_unstable();
    groups.dedup();
    let all_groups = || figures.iter().flat_map(|f| f.groups.iter());
    let lag: Option<u64> = all_groups().map(|g| g.lag).try_fold(0u64, |acc, l| l.map(|l| acc.max(l)));
    let kind = match streams.len() - 1 {
        0 if is_request_topic(&topic) => "rpc requests".to_owned(),
        0 => "topic".to_owned(),
        n => format!("{n} partitions"),
    };
    Ok(vec![
        json!(name),
        json!(kind),
        json!(figures.iter().map(|f| f.length).sum::<u64>()),
        json!(groups.len()),
        json!(all_groups().map(|g| g.pending).sum::<u64>()),
        json!(lag),
        json!(figures.iter().map(|f| f.dead_letters).sum::<u64>()),
        json!(scheduled),
    ])
}

pub(crate) async fn groups(conn: Connection, out: Output, topic: &str) -> Result<(), BoxError> {
    let admin = Admin::new(conn.clone());
    checks::topic(&admin, conn.namespace().as_str(), topic).await?;
    let row = |g: tributary::admin::GroupInfo| {
        vec![json!(g.name), json!(g.consumers), json!(g.pending), json!(g.last_delivered.to_string()), json!(g.lag)]
    };
    // Of a partitioned topic, a row per group of its own stream (partition `-`) and of each
    // partition.
    let streams = streams_of(&admin, topic).await?;
    let groups: Vec<Vec<tributary::admin::GroupInfo>> = futures::stream::iter(&streams)
        .map(|(_, name)| admin.groups(name))
        .buffered(tributary::metrics::SAMPLER_CONCURRENCY)
        .try_collect()
        .await?;
    output::rows(out, &with_partition(&streams, &["group", "consumers", "pending", "last_delivered", "lag"]), {
        per_stream(&streams, groups.into_iter().map(|gs| gs.into_iter().map(row).collect()))
    });
    Ok(())
}

/// `columns`, after a `partition` column when `streams` are a partitioned topic's.
fn with_partition<'a>(streams: &[(Option<u32>, String)], columns: &[&'a str]) -> Vec<&'a str> {
    let partitioned = streams.len() > 1;
    partitioned.then_some("partition").into_iter().chain(columns.iter().copied()).collect()
}

/// The rows of each stream, after the stream's partition (`-` for the topic's own) when
/// `streams` are a partitioned topic's.
fn per_stream(streams: &[(Option<u32>, String)], rows: impl Iterator<Item = Vec<Vec<Value>>>) -> Vec<Vec<Value>> {
    let partitioned = streams.len() > 1;
    streams
        .iter()
        .zip(rows)
        .flat_map(|((p, _), rows)| {
            rows.into_iter().map(move |row| {
                let partition = json!(p.map_or_else(|| "-".to_owned(), |p| p.to_string()));
                partitioned.then_some(partition).into_iter().chain(row).collect()
            })
        })
        .collect()
}

/// Of a stream where `group` may be missing (a partition never consumed): nothing, rather than
/// an error.
fn missing_is_empty<T>(result: Result<Vec<T>, StreamError>) -> Result<Vec<T>, StreamError> {
    match result {
        Err(StreamError::Redis(e)) if e.is_server_error("NOGROUP") || e.is_server_error("ERR no such key") => {
            Ok(Vec::new())
        }
        other => other,
    }
}

pub(crate) async fn consumers(conn: Connection, out: Output, topic: &str, group: &str) -> Result<(), BoxError> {
    let admin = Admin::new(conn.clone());
    checks::group(&admin, conn.namespace().as_str(), topic, group).await?;
    let streams = streams_of(&admin, topic).await?;
    let mut rows = Vec::new();
    for (_, name) in &streams {
        let consumers = missing_is_empty(admin.consumers(name, group).await)?;
        rows.push(consumers.into_iter().map(|c| vec![json!(c.name), json!(c.pending), json!(c.idle_ms)]).collect());
    }
    output::rows(
        out,
        &with_partition(&streams, &["consumer", "pending", "idle_ms"]),
        per_stream(&streams, rows.into_iter()),
    );
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
    let streams = streams_of(&admin, topic).await?;
    // At most `count` in all, the oldest of each stream first.
    let mut left = count;
    let mut rows = Vec::new();
    for (_, name) in &streams {
        let pending = if left == 0 { Vec::new() } else { missing_is_empty(admin.pending(name, group, left).await)? };
        left -= pending.len().min(left);
        rows.push(
            pending
                .into_iter()
                .map(|p| vec![json!(p.id.to_string()), json!(p.consumer), json!(p.idle_ms), json!(p.deliveries)])
                .collect(),
        );
    }
    let columns = with_partition(&streams, &["entry_id", "consumer", "idle_ms", "deliveries"]);
    output::rows(out, &columns, per_stream(&streams, rows.into_iter()));
    Ok(())
}

pub(crate) async fn info(conn: Connection, out: Output, topic: &str) -> Result<(), BoxError> {
    let admin = Admin::new(conn.clone());
    checks::topic(&admin, conn.namespace().as_str(), topic).await?;
    let streams = streams_of(&admin, topic).await?;
    if streams.len() > 1 {
        return info_partitioned(&admin, &conn, out, topic, &streams).await;
    }
    let bounds = admin.first_and_last(topic).await?;
    let groups = admin.groups(topic).await?;
    let retention = retention_text(&admin, topic).await?;
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

/// An entry id with its time, as `info` shows the first and last.
fn at(id: EntryId) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(id.ms());
    format!("{id} ({})", humantime::format_rfc3339_millis(time))
}

/// `topic`'s stored retention as `info` shows it; one that cannot be read is shown, not fatal
/// (the rest of the topic is still worth seeing).
async fn retention_text(admin: &Admin, topic: &str) -> Result<String, BoxError> {
    Ok(match admin.retention(topic).await {
        Ok(Some(r)) => r.to_string(),
        Ok(None) => "none".to_owned(),
        Err(e @ StreamError::InvalidRetention { .. }) => e.to_string(),
        Err(e) => return Err(e.into()),
    })
}

/// `info` of a partitioned topic: its partitions' and own stream's figures together, and each
/// group's lag, pending entries and consumers over them (`groups` shows each partition).
async fn info_partitioned(
    admin: &Admin,
    conn: &Connection,
    out: Output,
    topic: &str,
    streams: &[(Option<u32>, String)],
) -> Result<(), BoxError> {
    let figures: Vec<StreamFigures> =
        futures::future::try_join_all(streams.iter().map(|(_, s)| stream_figures(admin, conn, s))).await?;
    let bounds: Vec<Option<(EntryId, EntryId)>> =
        futures::future::try_join_all(streams.iter().map(|(_, s)| admin.first_and_last(s))).await?;
    let first = bounds.iter().flatten().map(|(f, _)| *f).min();
    let last = bounds.iter().flatten().map(|(_, l)| *l).max();
    let retention = retention_text(admin, topic).await?;
    /// A group over every stream of the topic.
    #[derive(Default)]
    struct Group {
        lag: u64,
        /// Some stream's lag was unknown: `lag` is a floor.
        lag_unknown: bool,
        pending: u64,
        /// Each consumer's pending entries.
        consumers: std::collections::BTreeMap<String, u64>,
    }
    let mut groups: std::collections::BTreeMap<&str, Group> = Default::default();
    for ((_, name), f) in streams.iter().zip(&figures) {
        for g in &f.groups {
            let group = groups.entry(g.name.as_str()).or_default();
            group.lag += g.lag.unwrap_or(0);
            group.lag_unknown |= g.lag.is_none();
            group.pending += g.pending;
            for c in missing_is_empty(admin.consumers(name, &g.name).await)? {
                *group.consumers.entry(c.name).or_default() += c.pending;
            }
        }
    }
    let mut rows = vec![
        vec![json!("partitions"), json!(streams.len() - 1)],
        vec![json!("length"), json!(figures.iter().map(|f| f.length).sum::<u64>())],
        vec![json!("retention"), json!(retention)],
        vec![json!("first"), json!(first.map(at))],
        vec![json!("last"), json!(last.map(at))],
        vec![json!("dead_letters"), json!(figures.iter().map(|f| f.dead_letters).sum::<u64>())],
        vec![json!("scheduled"), json!(Scheduler::new(conn.clone()).count(topic).await?)],
        vec![json!("groups"), json!(groups.len())],
    ];
    for (name, Group { lag, lag_unknown, pending, consumers }) in groups {
        let consumers: Vec<String> = consumers.into_iter().map(|(c, n)| format!("{c} ({n} pending)")).collect();
        rows.push(vec![
            json!(format!("group {name}")),
            json!(format!(
                "lag {}, pending {pending}, over every partition; consumers: {}",
                if lag_unknown { format!("{lag} or more") } else { lag.to_string() },
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
    // Of a partitioned topic, the entry may be in any of its streams (the first found is shown;
    // name the partition, `orders#3`, to choose).
    let mut found = None;
    for (_, name) in streams_of(&admin, topic).await? {
        let read = Replay::new(conn.clone()).range(&name, Position::At(id), Position::At(id))?.collect(1).await?;
        if let Some(received) = read.into_iter().next() {
            found = Some(received);
            break;
        }
    }
    let Some(received) = found else {
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
