//! Delayed delivery: messages kept aside until their due time, then added to the topic
//! stream by an atomic script that any number of workers run (each message moves once).
//!
//! Scheduled messages live in `<ns>:{<topic>}:scheduled` (sorted set by due time) and
//! `<ns>:{<topic>}:scheduled:data` (their entry fields), both in the topic's hash slot. The
//! namespace's due index `<ns>:scheduled:{due}` holds each topic with scheduled messages at
//! its earliest due time: a mover (one per worker, see [`Scheduler::run_due`]) waits on the
//! index instead of polling every topic, so its idle cost does not grow with the number of
//! topics. See `docs/time.md` for the guarantees and the timing bound.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fred::types::Value;
use tributary_core::{wire, Connection, DecodeError, Envelope, Topic};

use crate::redis::{call, Args};
use crate::ring::Ringer;
use crate::scripts::{CANCEL_SCHEDULED, MOVE_DUE, RELEASE_DUE_TOPIC, TAKE_DUE_TOPICS};
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
    /// Rings after moving messages, for a worker over many topics (`ring.rs`).
    ringer: Arc<Ringer>,
}

impl Scheduler {
    /// Operations on `conn`.
    pub fn new(conn: Connection) -> Self {
        Self { ringer: Arc::new(Ringer::new(&conn)), conn }
    }

    fn keys(&self, topic: &Topic) -> (String, String, String) {
        let ns = self.conn.namespace();
        (ns.scheduled_set(topic), ns.scheduled_data(topic), ns.topic_stream(topic))
    }

    /// `topic` and, when it is a partitioned topic, its partitions: each has its own scheduled
    /// messages (a keyed message waits in its key's partition). A partition by its name
    /// (`orders#3`) is itself alone.
    async fn with_partitions(&self, topic: &str) -> Result<Vec<Topic>, StreamError> {
        let topic = Topic::parse_stored(topic)?;
        let partitions = match topic.partition_of() {
            Some(_) => 0,
            None => crate::partitions::stored(&self.conn, &topic).await?.unwrap_or(0),
        };
        let parts = (0..partitions).map(|p| topic.partition(p)).collect::<Vec<_>>();
        Ok(std::iter::once(topic).chain(parts).collect())
    }

    /// Number of messages of `topic` waiting for their time (of a partitioned topic, in all
    /// its partitions).
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn count(&self, topic: &str) -> Result<u64, StreamError> {
        let mut total = 0;
        for topic in self.with_partitions(topic).await? {
            let (set, _, _) = self.keys(&topic);
            total += call::<u64>(&self.conn, "ZCARD", &set, Args::new()).await?;
        }
        Ok(total)
    }

    /// The `count` scheduled messages of `topic` due first (of a partitioned topic, of all its
    /// partitions).
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn list(&self, topic: &str, count: usize) -> Result<Vec<Scheduled>, StreamError> {
        let mut all = Vec::new();
        for topic in self.with_partitions(topic).await? {
            all.extend(self.list_one(&topic, count).await?);
        }
        all.sort_by_key(|s| s.due);
        all.truncate(count);
        Ok(all)
    }

    async fn list_one(&self, topic: &Topic, count: usize) -> Result<Vec<Scheduled>, StreamError> {
        let (set, data, _) = self.keys(topic);
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
        for topic in self.with_partitions(topic).await? {
            let (set, data, _) = self.keys(&topic);
            let n: i64 = CANCEL_SCHEDULED.run(&self.conn, vec![set, data], vec![id.into()]).await?;
            if n == 1 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Delivers scheduled message `id` of `topic` now instead of at its due time (it is made
    /// due, then moved to the stream with whatever else is due). True when it was waiting;
    /// false when it was already delivered, cancelled or never existed.
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn run_now(&self, topic: &str, id: &str) -> Result<bool, StreamError> {
        for topic in self.with_partitions(topic).await? {
            let (set, _, _) = self.keys(&topic);
            let score: Value = call(&self.conn, "ZSCORE", &set, Args::new().arg(id)).await?;
            if score.is_null() {
                continue;
            }
            // XX: never adds it back if it was delivered or cancelled meanwhile.
            let _: Value = call(&self.conn, "ZADD", &set, Args::new().arg("XX").arg(0).arg(id)).await?;
            self.move_due(&topic, 1000).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Moves up to `max` due messages of `topic` to its stream. Returns how many moved and
    /// how long until the next one is due (`None`: nothing left).
    ///
    /// # Errors
    /// [`StreamError`] when the script fails.
    pub async fn move_due(&self, topic: &Topic, max: usize) -> Result<(u64, Option<Duration>), StreamError> {
        let (set, data, stream) = self.keys(topic);
        let reply: Vec<i64> =
            MOVE_DUE.run(&self.conn, vec![set, data, stream.clone()], vec![(max as i64).into()]).await?;
        let moved = reply.first().copied().unwrap_or(0).max(0) as u64;
        if moved > 0 {
            let labels = [
                ::metrics::Label::from_static_parts(crate::metrics::label::SYSTEM, crate::metrics::SYSTEM),
                ::metrics::Label::new(crate::metrics::label::DESTINATION, topic.to_string()),
            ];
            ::metrics::counter!(crate::metrics::SCHEDULED_MOVED, labels.iter()).increment(moved);
            self.ringer.ring_soon(&self.conn, &stream);
        }
        let next = reply.get(1).copied().filter(|ms| *ms >= 0).map(|ms| Duration::from_millis(ms as u64));
        Ok((moved, next))
    }

    /// Moves due messages of every topic of the namespace forever: waits on the namespace's
    /// due index until a topic's earliest message is due, checking the index at least every
    /// `poll` (a message scheduled meanwhile for sooner is seen then). Every worker runs this
    /// (unless `WorkerBuilder::schedule_poll(None)`); run it yourself where no worker runs.
    ///
    /// When it starts, and every 10 minutes, it also indexes topics that have scheduled
    /// messages but no index entry (a producer stopped between storing a message and indexing
    /// its topic, or a version before the index), with a scan of the keyspace.
    pub async fn run_due(&self, poll: Duration) {
        self.run_due_until(poll, &tokio_util::sync::CancellationToken::new()).await;
    }

    /// [`Self::run_due`] until `stop` is cancelled; a pass under way is finished first, so no
    /// topic is left leased (a lease left behind delays its topic by [`LEASE`]).
    async fn run_due_until(&self, poll: Duration, stop: &tokio_util::sync::CancellationToken) {
        let sweeper = {
            let this = self.clone();
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move { this.sweep_forever().await }))
        };
        let first_backoff = poll.max(Duration::from_millis(500));
        let mut backoff = first_backoff;
        // Redis' clock less this machine's, in ms, from the last take (`None` before the first):
        // between takes, one `ZRANGE` of the index says whether anything is due, where a take
        // costs a script and three commands in it.
        let mut clock_offset: Option<i64> = None;
        let mut take_now = true;
        // Looks since the last take: a take (which reads Redis' clock) comes at least every
        // `LOOKS_PER_TAKE`, so a clock that jumped (this machine's, or Redis' after a failover)
        // delays a due message by at most that many polls.
        let mut looks = 0u32;
        loop {
            looks += 1;
            if looks >= LOOKS_PER_TAKE {
                take_now = true;
            }
            if !std::mem::take(&mut take_now) {
                if let Some(offset) = clock_offset {
                    let wait = match self.earliest_due().await {
                        Ok(None) => Some(poll),
                        Ok(Some(due)) => {
                            // Saturating: a score written by another program may be anything.
                            let until = due.saturating_sub(due_score(SystemTime::now()).saturating_add(offset));
                            (until > 0).then(|| Duration::from_millis(until as u64).min(poll))
                        }
                        // The take below says what failed.
                        Err(_) => None,
                    };
                    if let Some(wait) = wait {
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = stop.cancelled() => break,
                        }
                        continue;
                    }
                }
            }
            looks = 0;
            let local_before = due_score(SystemTime::now());
            let wait = match self.move_due_topics().await {
                Ok((more, next, redis_now)) => {
                    backoff = first_backoff;
                    if redis_now > 0 {
                        clock_offset = Some(redis_now - local_before);
                    }
                    if more {
                        take_now = true;
                        Duration::ZERO
                    } else {
                        next.map_or(poll, |n| n.min(poll))
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "moving scheduled messages failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    wait
                }
            };
            if !wait.is_zero() || stop.is_cancelled() {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => break,
                }
            }
        }
        drop(sweeper);
    }

    /// Takes the due topics off the index (with a lease) and moves their due messages; then
    /// releases each and indexes it again at its earliest message. Returns whether more may
    /// be due now, and how long until the earliest topic in the index is due.
    async fn move_due_topics(&self) -> Result<(bool, Option<Duration>, i64), StreamError> {
        let index = self.conn.namespace().schedule_index();
        let lease_ms = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
        let args = vec![Value::from(TOPICS_PER_TAKE as i64), Value::from(lease_ms)];
        let mut reply = TAKE_DUE_TOPICS.run::<Vec<Value>>(&self.conn, vec![index.clone()], args).await?.into_iter();
        let mut number = || reply.next().and_then(|v| v.as_i64()).unwrap_or(-1);
        let (lease, now, next_ms) = (number(), number(), number());
        // Partitions of partitioned topics (`<topic>#<p>`) have scheduled messages of their own.
        let taken: Vec<Topic> =
            reply.filter_map(|v| v.into_string().and_then(|n| Topic::parse_stored(n).ok())).collect();
        let mut more = taken.len() >= TOPICS_PER_TAKE;
        let mut next = (next_ms >= 0).then(|| Duration::from_millis(next_ms as u64));
        for topic in &taken {
            match self.move_due(topic, 1000).await {
                Ok((moved, _)) => {
                    if moved > 0 {
                        crate::retention::apply_stored(&self.conn, topic).await;
                    }
                    // More are due right now: go again at once.
                    more |= moved >= 1000;
                    match self.release(&index, topic, lease).await {
                        Ok(Some(earliest)) => {
                            let until = Duration::from_millis(u64::try_from(earliest.saturating_sub(now)).unwrap_or(0));
                            next = Some(next.map_or(until, |n| n.min(until)));
                        }
                        Ok(None) => {}
                        // Its lease runs out, and a mover takes it again then.
                        Err(e) => {
                            tracing::warn!(topic = %topic, error = %e, "could not re-index scheduled messages; retrying in {LEASE:?}")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %topic, error = %e, "moving scheduled messages failed; retrying in 1 s");
                    // Sooner than the lease: by Redis' clock, which the take used.
                    if let Err(e) = index_at(&self.conn, &index, topic, now + 1000).await {
                        tracing::warn!(topic = %topic, error = %e, "could not re-index scheduled messages; retrying in {LEASE:?}");
                    }
                }
            }
        }
        Ok((more, next, now))
    }

    /// The due time (ms, Redis' clock) of the earliest topic in the due index, if any.
    async fn earliest_due(&self) -> Result<Option<i64>, StreamError> {
        let index = self.conn.namespace().schedule_index();
        let first: Vec<Value> =
            call::<Value>(&self.conn, "ZRANGE", &index, Args::new().arg(0).arg(0).arg("WITHSCORES"))
                .await?
                .into_array();
        Ok(first.get(1).and_then(|v| v.as_f64()).map(|ms| ms as i64))
    }

    /// Ends this mover's `lease` on `topic`, then indexes the topic at its earliest message,
    /// looked at after the release: a message stored meanwhile (whose producer's index entry
    /// did not lower the lease, being later than it) is seen. Returns that earliest due time.
    async fn release(&self, index: &str, topic: &Topic, lease: i64) -> Result<Option<i64>, StreamError> {
        let _: i64 = RELEASE_DUE_TOPIC
            .run(&self.conn, vec![index.to_owned()], vec![Value::from(topic.as_str()), Value::from(lease)])
            .await?;
        let set = self.conn.namespace().scheduled_set(topic);
        let first: Vec<Value> =
            call::<Value>(&self.conn, "ZRANGE", &set, Args::new().arg(0).arg(0).arg("WITHSCORES")).await?.into_array();
        let earliest = first.get(1).and_then(|v| v.as_f64()).map(|ms| ms as i64);
        if let Some(score) = earliest {
            index_at(&self.conn, index, topic, score).await?;
        }
        Ok(earliest)
    }

    /// Indexes topics with scheduled messages that the index misses, now and every
    /// [`SWEEP_EVERY`] (a minute after a failure).
    async fn sweep_forever(&self) {
        loop {
            let wait = match self.index_unindexed().await {
                Ok(()) => SWEEP_EVERY,
                Err(e) => {
                    tracing::warn!(error = %e, "looking for scheduled messages missing from the due index failed");
                    Duration::from_secs(60)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Adds every topic with scheduled messages that is not in the index, as due now (the
    /// next pass moves what is due and indexes it at its earliest message).
    async fn index_unindexed(&self) -> Result<(), StreamError> {
        let topics = crate::Admin::new(self.conn.clone()).scheduled_topics().await?;
        let index = self.conn.namespace().schedule_index();
        for chunk in topics.chunks(500) {
            let mut args = Args::new().arg("NX");
            for topic in chunk {
                args.push(0);
                args.push(topic.as_str());
            }
            let _: Value = call(&self.conn, "ZADD", &index, args).await?;
        }
        Ok(())
    }

    /// Moves due messages of `topic` forever, checking at least every `poll`, without the due
    /// index (workers run [`Self::run_due`] for every topic instead).
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

/// A mover that finds nothing due in its index looks again every `schedule_poll` with one
/// `ZRANGE`, and takes (a script that reads Redis' clock) at least every this many looks.
const LOOKS_PER_TAKE: u32 = 10;

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

/// How long a mover holds the topics it took: if it dies (or loses the reply of the take),
/// another mover takes them after this.
const LEASE: Duration = Duration::from_secs(30);

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
    Scheduler::new(conn).run_due_until(poll, &stop).await;
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
