//! The JSON the page reads, and the actions it asks for.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tributary::{Admin, DeadLetter, DeadLetterFilter, DeadLetters, EntryId, Position, Replay, Scheduler, StreamError};

use super::history::{now_ms, point_before};
use super::{error, Shared, ACTION_HEADER};
use crate::output;

/// A topic's name in an API path. The page writes it after a `~`: `.` and `..` are valid topic
/// names, and as path segments a browser would remove them.
pub(crate) struct TopicName(String);

impl<'de> Deserialize<'de> for TopicName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Ok(Self(raw.strip_prefix('~').map(str::to_owned).unwrap_or(raw)))
    }
}

/// How far back "growing" looks.
const GROWING_OVER: Duration = Duration::from_secs(60);

pub(crate) async fn config(State(d): State<Shared>) -> Json<Value> {
    Json(json!({
        "allow_actions": d.allow_actions,
        "namespace": d.conn.namespace().as_str(),
        "server": d.conn.server_info().to_string(),
        "interval_ms": d.history.interval.as_millis() as u64,
        "claim_idle_ms": d.claim_idle.as_millis() as u64,
    }))
}

#[derive(Deserialize)]
pub(crate) struct Page {
    /// Only topics whose name contains this.
    #[serde(default)]
    q: String,
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

/// A page of topics with their groups and what is wrong with them, from the last sample.
pub(crate) async fn overview(State(d): State<Shared>, Query(page): Query<Page>) -> Json<Value> {
    let claim_idle = d.claim_idle;
    d.history.read(|h| {
        let matching: Vec<_> = h.latest.iter().filter(|s| s.topic.contains(page.q.as_str())).collect();
        let topics: Vec<Value> = matching
            .iter()
            .skip(page.offset)
            .take(page.limit.min(1000))
            .map(|s| {
                let series = h.points.get(&s.topic);
                let last = series.and_then(|p| p.back());
                let before = series.and_then(|p| point_before(p, GROWING_OVER));
                let groups: Vec<Value> = s
                    .groups
                    .iter()
                    .map(|g| {
                        let lag_then =
                            before.and_then(|b| b.groups.iter().find(|x| x.name == g.name)).and_then(|x| x.lag);
                        let out =
                            last.and_then(|p| p.groups.iter().find(|x| x.name == g.name)).and_then(|x| x.out_per_s);
                        json!({
                            "name": g.name,
                            "consumers": g.consumers,
                            "busy_consumers": g.busy_consumers,
                            "lag": g.lag,
                            "pending": g.pending,
                            "oldest_pending_idle_ms": g.oldest_pending_idle.map(|d| d.as_millis() as u64),
                            "out_per_s": out,
                            "stuck": g.oldest_pending_idle.is_some_and(|idle| idle > claim_idle),
                            "lag_growing": matches!((g.lag, lag_then), (Some(now), Some(then)) if now > then),
                        })
                    })
                    .collect();
                json!({
                    "topic": s.topic,
                    "length": s.length,
                    "in_per_s": last.and_then(|p| p.in_per_s),
                    "dead_letters": s.dead_letters,
                    "dead_letters_growing": before.is_some_and(|b| s.dead_letters > b.dead_letters),
                    "scheduled": s.scheduled,
                    "groups": groups,
                })
            })
            .collect();
        Json(json!({
            "rounds": h.rounds,
            "sampled_at_ms": h.sampled_at_ms,
            "error": h.error,
            "now_ms": now_ms(),
            "total": matching.len(),
            "offset": page.offset,
            "topics": topics,
        }))
    })
}

/// A topic's points over the last minutes, oldest first.
pub(crate) async fn topic_history(State(d): State<Shared>, Path(TopicName(topic)): Path<TopicName>) -> Response {
    d.history.read(|h| match h.points.get(&topic) {
        Some(points) => Json(json!({ "topic": topic, "points": points })).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no samples of topic `{topic}` (yet)")),
    })
}

#[derive(Deserialize)]
pub(crate) struct Count {
    #[serde(default = "default_limit")]
    count: usize,
}

#[derive(Deserialize)]
pub(crate) struct LetterQuery {
    #[serde(default = "default_limit")]
    count: usize,
    /// Only this reason (`rejected`, `max_deliveries`, ...).
    #[serde(default)]
    reason: String,
    /// Only the letters of this group.
    #[serde(default)]
    group: String,
}

/// The dead letters of `reason` and of `group`; an empty one does not filter.
fn letter_filter(reason: &str, group: &str) -> DeadLetterFilter {
    let mut filter = DeadLetterFilter::all();
    if !reason.is_empty() {
        filter = filter.reason(reason);
    }
    if !group.is_empty() {
        filter = filter.group(group);
    }
    filter
}

/// The oldest dead letters of a topic, of a reason or a group if asked.
pub(crate) async fn dead_letters(
    State(d): State<Shared>,
    Path(TopicName(topic)): Path<TopicName>,
    Query(query): Query<LetterQuery>,
) -> Response {
    let (filter, count) = (letter_filter(&query.reason, &query.group), query.count.min(1000));
    let listed = async { DeadLetters::new(d.conn.clone(), &topic)?.list_matching(&filter, count).await };
    match listed.await {
        Ok(letters) => {
            let letters: Vec<Value> = letters.iter().map(summary).collect();
            Json(json!({ "topic": topic, "dead_letters": letters })).into_response()
        }
        Err(e) => failure(e),
    }
}

/// One dead letter in full: its message decoded, headers, trace.
pub(crate) async fn dead_letter(
    State(d): State<Shared>,
    Path((TopicName(topic), id)): Path<(TopicName, String)>,
) -> Response {
    let Ok(id) = id.parse::<EntryId>() else {
        return error(StatusCode::BAD_REQUEST, format!("`{id}` is not an entry id"));
    };
    let found = async { DeadLetters::new(d.conn.clone(), &topic)?.get(id).await };
    match found.await {
        Ok(Some(letter)) => {
            let mut full = summary(&letter);
            match letter.envelope() {
                Ok(env) => {
                    let entry = letter.original_id.parse().unwrap_or(EntryId::MIN);
                    full["message"] = output::message(entry, &env, None);
                    full["message"]["trace_id"] = json!(env.traceparent.map(|t| t.trace_id_hex()));
                }
                Err(e) => full["unreadable"] = json!(e.to_string()),
            }
            Json(full).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("topic `{topic}` has no dead letter {id}")),
        Err(e) => failure(e),
    }
}

#[derive(Deserialize)]
pub(crate) struct ReplayRequest {
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    all: bool,
    /// With `all`: only this reason.
    #[serde(default)]
    reason: String,
    /// With `all`: only this group's.
    #[serde(default)]
    group: String,
}

/// Replays the dead letters named, or all of them (malformed ones stay: replayed, they would
/// only be dead-lettered again).
pub(crate) async fn replay(
    State(d): State<Shared>,
    Path(TopicName(topic)): Path<TopicName>,
    headers: HeaderMap,
    Json(request): Json<ReplayRequest>,
) -> Response {
    if let Some(refused) = refuse_action(&d, &headers) {
        return refused;
    }
    let dlq = match DeadLetters::new(d.conn.clone(), &topic) {
        Ok(dlq) => dlq,
        Err(e) => return failure(e),
    };
    if request.all {
        // Malformed letters only when asked for by reason: replayed, they would only be
        // dead-lettered again.
        let mut all = letter_filter(&request.reason, &request.group);
        if request.reason.is_empty() {
            all = all.except_reason("malformed");
        }
        return match dlq.replay_matching(&all, |_| {}).await {
            Ok(report) => {
                tracing::info!(topic = %topic, replayed = report.replayed, "all dead letters replayed from the dashboard");
                Json(json!({ "replayed": report.replayed, "skipped": report.unreadable + report.without_fields }))
                    .into_response()
            }
            Err(e) => failure(e),
        };
    }
    let mut ids = Vec::with_capacity(request.ids.len());
    for id in &request.ids {
        match id.parse::<EntryId>() {
            Ok(id) => ids.push(id),
            Err(_) => return error(StatusCode::BAD_REQUEST, format!("`{id}` is not an entry id")),
        }
    }
    // Gone already (replayed elsewhere) or not replayable: skipped, as a replay of all does.
    let (mut replayed, mut skipped) = (0, 0);
    for id in ids {
        match dlq.replay(id).await {
            Ok(Some(_)) => replayed += 1,
            Ok(None) | Err(StreamError::NothingToReplay { .. }) => skipped += 1,
            Err(e) => {
                tracing::warn!(topic = %topic, replayed, error = %e, "replaying dead letters from the dashboard failed midway");
                let said = format!("replayed {replayed}, then failed: {e}");
                return (StatusCode::BAD_GATEWAY, Json(json!({ "replayed": replayed, "error": said }))).into_response();
            }
        }
    }
    tracing::info!(topic = %topic, replayed, skipped, "dead letters replayed from the dashboard");
    Json(json!({ "replayed": replayed, "skipped": skipped })).into_response()
}

/// Deletes every dead letter of a topic.
pub(crate) async fn purge(
    State(d): State<Shared>,
    Path(TopicName(topic)): Path<TopicName>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse_action(&d, &headers) {
        return refused;
    }
    match async { DeadLetters::new(d.conn.clone(), &topic)?.purge().await }.await {
        Ok(purged) => {
            tracing::info!(topic = %topic, purged, "dead letters purged from the dashboard");
            Json(json!({ "purged": purged })).into_response()
        }
        Err(e) => failure(e),
    }
}

/// Why an action is refused, if it is.
fn refuse_action(d: &Shared, headers: &HeaderMap) -> Option<Response> {
    if !d.allow_actions {
        return Some(error(
            StatusCode::FORBIDDEN,
            "read-only: start the dashboard with --allow-actions to change anything",
        ));
    }
    if !headers.contains_key(ACTION_HEADER) {
        return Some(error(StatusCode::BAD_REQUEST, format!("an action needs the `{ACTION_HEADER}` header")));
    }
    None
}

fn summary(l: &DeadLetter) -> Value {
    json!({
        "id": l.id.to_string(),
        "original_id": l.original_id,
        "group": l.group,
        "consumer": l.consumer,
        "reason": l.reason,
        "attempts": l.attempts,
        "error": l.error,
        "dead_at": humantime::format_rfc3339_millis(l.dead_at).to_string(),
        "readable": l.is_readable(),
    })
}

fn failure(e: StreamError) -> Response {
    let status = match e {
        StreamError::InvalidName(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    };
    error(status, e.to_string())
}

/// One entry of a topic by its id, decoded.
pub(crate) async fn message(
    State(d): State<Shared>,
    Path((TopicName(topic), id)): Path<(TopicName, String)>,
) -> Response {
    let Ok(id) = id.parse::<EntryId>() else {
        return error(StatusCode::BAD_REQUEST, format!("`{id}` is not an entry id"));
    };
    let read =
        async { Replay::new(d.conn.clone()).range(&topic, Position::At(id), Position::At(id))?.collect(1).await };
    match read.await {
        Ok(found) => match found.into_iter().next() {
            Some(received) => match &received.envelope {
                Ok(env) => {
                    let mut m = output::message(received.entry_id, env, None);
                    m["trace_id"] = json!(env.traceparent.map(|t| t.trace_id_hex()));
                    Json(m).into_response()
                }
                Err(e) => Json(json!({ "entry_id": received.entry_id.to_string(), "malformed": e.to_string() }))
                    .into_response(),
            },
            None => error(
                StatusCode::NOT_FOUND,
                format!("no entry {id} on topic `{topic}` (trimmed, deleted, or never there)"),
            ),
        },
        Err(e) => failure(e),
    }
}

/// A group of a topic: its consumers, and its oldest pending entries with who holds them.
pub(crate) async fn group(
    State(d): State<Shared>,
    Path((TopicName(topic), group)): Path<(TopicName, String)>,
    Query(Count { count }): Query<Count>,
) -> Response {
    let admin = Admin::new(d.conn.clone());
    let read = async {
        let consumers = admin.consumers(&topic, &group).await?;
        let pending = admin.pending(&topic, &group, count.min(1000)).await?;
        Ok::<_, StreamError>((consumers, pending))
    };
    match read.await {
        Ok((consumers, pending)) => {
            let consumers: Vec<Value> = consumers
                .iter()
                .map(|c| json!({ "name": c.name, "pending": c.pending, "idle_ms": c.idle_ms }))
                .collect();
            let pending: Vec<Value> = pending
                .iter()
                .map(|p| json!({ "id": p.id.to_string(), "consumer": p.consumer, "idle_ms": p.idle_ms, "deliveries": p.deliveries }))
                .collect();
            Json(json!({ "topic": topic, "group": group, "consumers": consumers, "pending": pending })).into_response()
        }
        Err(e) => failure(e),
    }
}

/// The scheduled messages of a topic due first.
pub(crate) async fn scheduled(
    State(d): State<Shared>,
    Path(TopicName(topic)): Path<TopicName>,
    Query(Count { count }): Query<Count>,
) -> Response {
    match Scheduler::new(d.conn.clone()).list(&topic, count.min(1000)).await {
        Ok(list) => {
            let list: Vec<Value> = list
                .iter()
                .map(|s| {
                    json!({
                        "id": s.id,
                        "due": humantime::format_rfc3339_millis(s.due).to_string(),
                        "payload": s.envelope.as_ref().map(output::payload).unwrap_or(Value::Null),
                    })
                })
                .collect();
            Json(json!({ "topic": topic, "scheduled": list })).into_response()
        }
        Err(e) => failure(e),
    }
}

#[derive(Deserialize)]
pub(crate) struct CancelRequest {
    id: String,
}

/// Cancels one scheduled message.
pub(crate) async fn cancel_scheduled(
    State(d): State<Shared>,
    Path(TopicName(topic)): Path<TopicName>,
    headers: HeaderMap,
    Json(request): Json<CancelRequest>,
) -> Response {
    if let Some(refused) = refuse_action(&d, &headers) {
        return refused;
    }
    match Scheduler::new(d.conn.clone()).cancel(&topic, &request.id).await {
        Ok(true) => {
            tracing::info!(topic = %topic, id = %request.id, "scheduled message cancelled from the dashboard");
            Json(json!({ "cancelled": 1 })).into_response()
        }
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("no scheduled message {} on `{topic}` (delivered or cancelled)", request.id),
        ),
        Err(e) => failure(e),
    }
}
