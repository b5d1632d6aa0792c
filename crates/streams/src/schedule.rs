//! Delayed delivery: messages kept aside until their due time, then added to the topic
//! stream by an atomic script that any number of workers run (each message moves once).
//!
//! Scheduled messages live in `<ns>:{<topic>}:scheduled` (sorted set by due time) and
//! `<ns>:{<topic>}:scheduled:data` (their entry fields), both in the topic's hash slot. The
//! namespace's due index `<ns>:scheduled:{due}` holds each topic with scheduled messages at
//! its earliest due time: a mover (one per worker, see [`Scheduler::run_due`]) waits on the
//! index instead of polling every topic, so its idle cost does not grow with the number of
//! topics. See `docs/time.md` for the guarantees and the timing bound.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fred::types::Value;
use tributary_core::{wire, Connection, DecodeError, Envelope, Topic};

use crate::redis::{call, Args};
use crate::scripts::{CANCEL_SCHEDULED, MOVE_DUE, TAKE_DUE_TOPICS};
use crate::StreamError;

/// A message waiting for its due time.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Scheduled {
    /// Schedule id (the message id): what [`Scheduler::cancel`] takes.
    pub id: String,
    /// When it becomes visible to consumer groups.
    pub due: SystemTime,
    /// The message.
    pub envelope: Result<Envelope, DecodeError>,
}

/// Inspects, cancels and moves scheduled messages. Every worker moves the due messages of its
/// namespace on its own; run [`Scheduler::run_due`] where no worker runs.
///
/// # Example
/// ```no_run
/// # async fn demo(conn: tributary_core::Connection) -> Result<(), tributary_streams::StreamError> {
/// use std::time::Duration;
/// use tributary_streams::{Producer, Scheduler};
///
/// let producer = Producer::new(conn.clone());
/// let id = producer.publish_in("reminders", &"call Ada", Duration::from_secs(3600)).await?;
/// let scheduler = Scheduler::new(conn);
/// assert!(scheduler.cancel("reminders", &id).await?); // changed our mind
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Scheduler {
    conn: Connection,
}

impl Scheduler {
    /// Operations on `conn`.
    pub fn new(conn: Connection) -> Self {
        Self { conn }
    }

    fn keys(&self, topic: &Topic) -> (String, String, String) {
        let ns = self.conn.namespace();
        (ns.scheduled_set(topic), ns.scheduled_data(topic), ns.topic_stream(topic))
    }

    /// Number of messages of `topic` waiting for their time.
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn count(&self, topic: &str) -> Result<u64, StreamError> {
        let (set, _, _) = self.keys(&Topic::new(topic)?);
        Ok(call(&self.conn, "ZCARD", &set, Args::new()).await?)
    }

    /// The `count` scheduled messages of `topic` due first.
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn list(&self, topic: &str, count: usize) -> Result<Vec<Scheduled>, StreamError> {
        let (set, data, _) = self.keys(&Topic::new(topic)?);
        if count == 0 {
            return Ok(Vec::new());
        }
        let args = Args::new().arg(0).arg(count as i64 - 1).arg("WITHSCORES");
        let flat: Vec<Value> = call::<Value>(&self.conn, "ZRANGE", &set, args).await?.into_array();
        let mut ids_due = Vec::new();
        let mut it = flat.into_iter();
        while let (Some(id), Some(score)) = (it.next(), it.next()) {
            let due_ms = score.as_f64().unwrap_or(0.0).max(0.0) as u64;
            ids_due.push((id.into_string().unwrap_or_default(), UNIX_EPOCH + Duration::from_millis(due_ms)));
        }
        if ids_due.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = Args::new();
        for (id, _) in &ids_due {
            args.push(id.as_str());
        }
        let packed: Vec<Value> = call::<Value>(&self.conn, "HMGET", &data, args).await?.into_array();
        let limits = *self.conn.limits();
        Ok(ids_due
            .into_iter()
            .zip(packed)
            .map(|((id, due), packed)| {
                let envelope = match packed.into_bytes() {
                    Some(b) => unpack_fields(&b)
                        .ok_or(DecodeError::MalformedEntry { reason: "scheduled data is not a field list" })
                        .and_then(|fields| wire::decode(&fields, &limits)),
                    None => Err(DecodeError::MalformedEntry { reason: "scheduled data is missing" }),
                };
                Scheduled { id, due, envelope }
            })
            .collect())
    }

    /// Cancels scheduled message `id` of `topic`. True when it was still waiting (it will
    /// never be delivered); false when it was already delivered or never existed.
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn cancel(&self, topic: &str, id: &str) -> Result<bool, StreamError> {
        let (set, data, _) = self.keys(&Topic::new(topic)?);
        let n: i64 = CANCEL_SCHEDULED.run(&self.conn, vec![set, data], vec![id.into()]).await?;
        Ok(n == 1)
    }

    /// Delivers scheduled message `id` of `topic` now instead of at its due time (it is made
    /// due, then moved to the stream with whatever else is due). True when it was waiting;
    /// false when it was already delivered, cancelled or never existed.
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn run_now(&self, topic: &str, id: &str) -> Result<bool, StreamError> {
        let topic = Topic::new(topic)?;
        let (set, _, _) = self.keys(&topic);
        let score: Value = call(&self.conn, "ZSCORE", &set, Args::new().arg(id)).await?;
        if score.is_null() {
            return Ok(false);
        }
        // XX: never adds it back if it was delivered or cancelled meanwhile.
        let _: Value = call(&self.conn, "ZADD", &set, Args::new().arg("XX").arg(0).arg(id)).await?;
        self.move_due(&topic, 1000).await?;
        Ok(true)
    }

    /// Moves up to `max` due messages of `topic` to its stream. Returns how many moved and
    /// how long until the next one is due (`None`: nothing left).
    ///
    /// # Errors
    /// [`StreamError`] when the script fails.
    pub async fn move_due(&self, topic: &Topic, max: usize) -> Result<(u64, Option<Duration>), StreamError> {
        let (moved, next, _) = self.move_due_of(topic, max).await?;
        Ok((moved, next))
    }

    /// [`Self::move_due`], with the next message's due time in milliseconds as scored.
    async fn move_due_of(
        &self,
        topic: &Topic,
        max: usize,
    ) -> Result<(u64, Option<Duration>, Option<i64>), StreamError> {
        let (set, data, stream) = self.keys(topic);
        let reply: Vec<i64> = MOVE_DUE.run(&self.conn, vec![set, data, stream], vec![(max as i64).into()]).await?;
        let moved = reply.first().copied().unwrap_or(0).max(0) as u64;
        let next = reply.get(1).copied().filter(|ms| *ms >= 0).map(|ms| Duration::from_millis(ms as u64));
        let next_score = reply.get(2).copied().filter(|ms| *ms >= 0);
        Ok((moved, next, next_score))
    }

    /// Moves due messages of every topic of the namespace forever: waits on the namespace's
    /// due index until a topic's earliest message is due, checking the index at least every
    /// `poll` (a message scheduled meanwhile for sooner is seen then). Every worker runs this
    /// (unless `WorkerBuilder::schedule_poll(None)`); run it yourself in a process that
    /// schedules messages for topics no worker consumes yet.
    ///
    /// Every few minutes, and when it starts, it also indexes topics that have scheduled
    /// messages but no index entry (written by a producer that stopped between storing a
    /// message and indexing its topic, or by a version before the index).
    pub async fn run_due(&self, poll: Duration) {
        let mut swept: Option<tokio::time::Instant> = None;
        let mut backoff = poll.max(Duration::from_millis(500));
        loop {
            if swept.map_or(true, |at| at.elapsed() >= SWEEP_EVERY) {
                match self.index_unindexed().await {
                    Ok(()) => swept = Some(tokio::time::Instant::now()),
                    Err(e) => tracing::warn!(error = %e, "looking for topics with scheduled messages failed"),
                }
            }
            let wait = match self.move_due_topics().await {
                Ok((true, _)) => Duration::ZERO,
                Ok((false, Some(next))) => next.min(poll),
                Ok((false, None)) => poll,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "moving scheduled messages failed");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            backoff = poll.max(Duration::from_millis(500));
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Takes the due topics off the index and moves their due messages, indexing each again
    /// at its next message. Returns whether more topics may be due now, and how long until
    /// the earliest topic left in the index is due.
    async fn move_due_topics(&self) -> Result<(bool, Option<Duration>), StreamError> {
        let index = self.conn.namespace().schedule_index();
        let mut taken: Vec<Value> =
            TAKE_DUE_TOPICS.run(&self.conn, vec![index.clone()], vec![Value::from(TOPICS_PER_TAKE as i64)]).await?;
        let next =
            taken.pop().and_then(|v| v.as_i64()).filter(|ms| *ms >= 0).map(|ms| Duration::from_millis(ms as u64));
        let full = taken.len() >= TOPICS_PER_TAKE;
        for name in taken {
            let Some(topic) = name.into_string().and_then(|n| Topic::new(n).ok()) else { continue };
            let moved = self.move_due_of(&topic, 1000).await;
            if moved.as_ref().is_ok_and(|(n, _, _)| *n > 0) {
                crate::retention::apply_stored(&self.conn, &topic).await;
            }
            let again = match moved {
                // More are due right now: have them taken again at once.
                Ok((1000.., _, _)) => Some(0),
                Ok((_, _, next_score)) => next_score,
                Err(e) => {
                    tracing::warn!(topic = %topic, error = %e, "moving scheduled messages failed; will retry");
                    Some(due_score(SystemTime::now() + Duration::from_secs(1)))
                }
            };
            if let Some(score) = again {
                index_at(&self.conn, &index, &topic, score).await?;
            }
        }
        Ok((full, next))
    }

    /// Indexes every topic with scheduled messages as due now (the next pass moves what is
    /// due and indexes each at its next message).
    async fn index_unindexed(&self) -> Result<(), StreamError> {
        let topics = crate::Admin::new(self.conn.clone()).scheduled_topics().await?;
        let index = self.conn.namespace().schedule_index();
        for chunk in topics.chunks(500) {
            let mut args = Args::new().arg("LT");
            for topic in chunk {
                args.push(0);
                args.push(topic.as_str());
            }
            let _: Value = call(&self.conn, "ZADD", &index, args).await?;
        }
        Ok(())
    }

    /// Moves due messages of `topic` forever, checking at least every `poll`. Workers run
    /// this for their topics while they consume them; run it yourself only for topics
    /// no worker consumes yet.
    pub async fn run(&self, topic: &Topic, poll: Duration) {
        loop {
            let wait = match self.move_due(topic, 1000).await {
                // More are due right now: go again at once.
                Ok((1000.., _)) => Duration::ZERO,
                Ok((_, Some(next))) => next.min(poll),
                Ok((_, None)) => poll,
                Err(e) => {
                    tracing::warn!(topic = %topic, error = %e, "moving scheduled messages failed");
                    poll.max(Duration::from_millis(500))
                }
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Reads the msgpack array of byte strings that `schedule.lua` packed (cmsgpack writes
/// strings as `str`; `bin` is accepted too).
fn unpack_fields(mut b: &[u8]) -> Option<Vec<(Bytes, Bytes)>> {
    use rmp::Marker;
    let n = rmp::decode::read_array_len(&mut b).ok()? as usize;
    if n % 2 != 0 || n > 4096 {
        return None;
    }
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let len = match rmp::decode::read_marker(&mut b).ok()? {
            Marker::FixStr(len) => len as usize,
            Marker::Str8 | Marker::Bin8 => {
                let len = *b.first()? as usize;
                b = b.get(1..)?;
                len
            }
            Marker::Str16 | Marker::Bin16 => {
                let len = u16::from_be_bytes(b.get(..2)?.try_into().ok()?) as usize;
                b = b.get(2..)?;
                len
            }
            Marker::Str32 | Marker::Bin32 => {
                let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
                b = b.get(4..)?;
                len
            }
            _ => return None,
        };
        items.push(Bytes::copy_from_slice(b.get(..len)?));
        b = b.get(len..)?;
    }
    let mut it = items.into_iter();
    let mut out = Vec::with_capacity(n / 2);
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Some(out)
}

/// Due time as a score: milliseconds since the Unix epoch, rounded up so that a message is
/// never moved before its time (the mover compares with Redis' clock in whole ms).
pub(crate) fn due_score(t: SystemTime) -> i64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// How often a mover also indexes topics whose scheduled messages have no index entry.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// Most topics a mover takes off the index at once.
const TOPICS_PER_TAKE: usize = 100;

/// Indexes `topic` at `score` (due milliseconds), unless it is indexed earlier already.
pub(crate) async fn index_at(conn: &Connection, index: &str, topic: &Topic, score: i64) -> Result<(), StreamError> {
    let _: Value = call(conn, "ZADD", index, Args::new().arg("LT").arg(score).arg(topic.as_str())).await?;
    Ok(())
}

/// The scheduled-message mover a worker runs (every worker does: each message moves once,
/// whoever moves it), until the worker stops.
pub(crate) async fn move_due_until_stopped(
    conn: Connection,
    poll: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let scheduler = Scheduler::new(conn);
    tokio::select! {
        () = scheduler.run_due(poll) => {}
        () = stop.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacks_what_cmsgpack_packs_and_rejects_garbage() {
        // cmsgpack.pack({"v", "1", "p", <300 bytes>}): fixarray, fixstr, fixstr, fixstr, str16.
        let mut packed = vec![0x94, 0xa1, b'v', 0xa1, b'1', 0xa1, b'p', 0xda, 0x01, 0x2c];
        packed.extend(std::iter::repeat(0xff).take(300));
        let fields = unpack_fields(&packed).unwrap();
        assert_eq!(fields[0], (Bytes::from("v"), Bytes::from("1")));
        assert_eq!(fields[1].1.len(), 300);
        assert!(unpack_fields(&packed[..20]).is_none(), "truncated");
        assert!(unpack_fields(&[0x93, 0xa1, b'a', 0xa1, b'b', 0xa1, b'c']).is_none(), "odd count");
        assert!(unpack_fields(b"garbage").is_none());
    }
}
