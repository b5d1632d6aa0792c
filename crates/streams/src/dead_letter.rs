//! Dead letters: entries a worker gave up on, kept with the reason in the topic's
//! dead-letter stream (`<ns>:{<topic>}:dlq`), to inspect, replay or purge.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fred::interfaces::ClientLike;
use fred::types::Value;
use tributary_core::{wire, Connection, DecodeError, EntryId, Envelope, Limits, RedisError, Topic};

use crate::consumer::DEAD_LETTER_FIELDS;
use crate::redis::{call, command, entry_id_of, parse_entries, Args};
use crate::ring::Ringer;
use crate::scripts::REPLAY_DEAD_LETTER;
use crate::StreamError;

/// One dead letter.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Id of the entry in the dead-letter stream.
    pub id: EntryId,
    /// Topic the entry came from.
    pub topic: String,
    /// Group that gave up on it.
    pub group: String,
    /// Consumer that moved it.
    pub consumer: String,
    /// Its id in the topic's stream.
    pub original_id: String,
    /// `malformed`, `max_deliveries`, `rejected` or `expired`; `unreadable` for an entry of the
    /// dead-letter stream that is not a dead letter (see [`DeadLetter::is_readable`]).
    pub reason: String,
    /// Deliveries it had.
    pub attempts: u64,
    /// The last error.
    pub error: String,
    /// When it was moved.
    pub dead_at: SystemTime,
    /// The original entry's fields, exactly as they were (empty if it had been trimmed; cut to
    /// a prefix if it was larger than any valid envelope, see `truncated_from`). For an
    /// unreadable entry, all of its fields.
    pub fields: Vec<(Bytes, Bytes)>,
    /// The original entry's size in bytes when only a prefix of it was kept (it was larger
    /// than any valid envelope); such a dead letter cannot be replayed.
    pub truncated_from: Option<u64>,
    /// The topic's stream key, which a version 3 message's id is derived from.
    stream: String,
}

/// What [`DeadLetters::replay_all`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayAll {
    /// Dead letters put back on their topic.
    pub replayed: usize,
    /// Entries of the dead-letter stream that are not dead letters (written there by hand or
    /// by something else): left where they are.
    pub unreadable: usize,
    /// Dead letters with nothing to put back: the original entry had been trimmed before it
    /// was moved, or only a prefix of it was kept (too large). Left where they are.
    pub without_fields: usize,
}

/// Which dead letters an operation takes: all by default, or those of one reason and/or group.
///
/// # Example
/// ```
/// use tributary_streams::DeadLetterFilter;
///
/// let failed_in_billing = DeadLetterFilter::all().reason("max_deliveries").group("billing");
/// # let _ = failed_in_billing;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct DeadLetterFilter {
    reason: Option<String>,
    group: Option<String>,
    excluded_reasons: Vec<String>,
}

impl DeadLetterFilter {
    /// Every dead letter.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only those with this reason (`malformed`, `max_deliveries`, `rejected`, `expired`,
    /// `unreadable`).
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Not those with this reason (repeatable): e.g. `malformed`, whose replay would only be
    /// dead-lettered again until the consumer's code changes.
    pub fn except_reason(mut self, reason: impl Into<String>) -> Self {
        self.excluded_reasons.push(reason.into());
        self
    }

    /// Only those the group `group` gave up on.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Whether `letter` is one of them.
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        let wanted = |want: &Option<String>, have: &str| want.as_deref().map_or(true, |w| w == have);
        wanted(&self.reason, &letter.reason)
            && wanted(&self.group, &letter.group)
            && !self.excluded_reasons.contains(&letter.reason)
    }
}

impl DeadLetter {
    /// The original envelope, if the original fields are a valid one.
    ///
    /// # Errors
    /// [`DecodeError`] when they are not (e.g. for reason `malformed`).
    pub fn envelope(&self) -> Result<Envelope, DecodeError> {
        // Where it was first written (wire format version 3 entries may leave their id and
        // time to that entry id).
        match self.original_id.parse() {
            Ok(at) => wire::decode_entry(&self.fields, &self.stream, at, &Limits::default()),
            Err(_) => wire::decode(&self.fields, &Limits::default()),
        }
    }

    /// False for an entry of the dead-letter stream that does not start with the dead-letter
    /// metadata fields: `reason` is then `unreadable`, `error` says why and `fields` holds all
    /// of its fields. It cannot be replayed.
    pub fn is_readable(&self) -> bool {
        self.reason != UNREADABLE
    }

    /// The dead letter `id` with `fields`, of the topic whose stream is `stream`.
    fn parse(stream: &str, id: EntryId, mut fields: Vec<(Bytes, Bytes)>) -> Self {
        if fields.len() < DEAD_LETTER_FIELDS.len()
            || !fields.iter().zip(DEAD_LETTER_FIELDS).all(|((k, _), want)| k.as_ref() == want.as_bytes())
        {
            return Self {
                id,
                topic: String::new(),
                group: String::new(),
                consumer: String::new(),
                original_id: String::new(),
                reason: UNREADABLE.to_owned(),
                attempts: 0,
                error: format!(
                    "not a dead letter: its fields do not start with {} (written by something else?)",
                    DEAD_LETTER_FIELDS.join(", ")
                ),
                dead_at: UNIX_EPOCH + Duration::from_millis(id.ms()),
                fields,
                truncated_from: None,
                stream: stream.to_owned(),
            };
        }
        let mut original = fields.split_off(DEAD_LETTER_FIELDS.len());
        let truncated_from = match original.first() {
            Some((name, size)) if name.as_ref() == b"dlq:truncated" => {
                let size = String::from_utf8_lossy(size).parse().ok();
                original.remove(0);
                size
            }
            _ => None,
        };
        let text = |i: usize| String::from_utf8_lossy(&fields[i].1).into_owned();
        Self {
            id,
            topic: text(0),
            group: text(1),
            consumer: text(2),
            original_id: text(3),
            reason: text(4),
            attempts: text(5).parse().unwrap_or(0),
            error: text(6),
            dead_at: UNIX_EPOCH + Duration::from_millis(text(7).parse().unwrap_or(0)),
            fields: original,
            truncated_from,
            stream: stream.to_owned(),
        }
    }
}

/// The `reason` of an entry that is not a dead letter.
const UNREADABLE: &str = "unreadable";

/// The dead letters of one topic.
///
/// # Example
/// ```no_run
/// # async fn demo(conn: tributary_core::Connection) -> Result<(), tributary_streams::StreamError> {
/// use tributary_streams::DeadLetters;
///
/// let dlq = DeadLetters::new(conn, "orders")?;
/// for letter in dlq.list(100).await? {
///     println!("{} {} after {} attempts: {}", letter.original_id, letter.reason, letter.attempts, letter.error);
/// }
/// dlq.replay_all().await?; // back onto the topic, same message ids
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DeadLetters {
    conn: Connection,
    topic: Topic,
    topic_key: String,
    key: String,
    /// Rings after a replay, for a worker over many topics (`ring.rs`).
    ringer: Arc<Ringer>,
}

impl DeadLetters {
    /// The dead letters of `topic`.
    ///
    /// # Errors
    /// [`StreamError::InvalidName`] for a bad topic name.
    pub fn new(conn: Connection, topic: &str) -> Result<Self, StreamError> {
        let topic = Topic::parse_stored(topic)?;
        Ok(Self {
            topic_key: conn.namespace().topic_stream(&topic),
            key: conn.namespace().dead_letter_stream(&topic),
            ringer: Arc::new(Ringer::new(&conn)),
            conn,
            topic,
        })
    }

    /// Number of dead letters.
    ///
    /// # Errors
    /// [`StreamError::Redis`] when the command fails.
    pub async fn count(&self) -> Result<u64, StreamError> {
        Ok(call(&self.conn, "XLEN", &self.key, Args::new()).await?)
    }

    /// The oldest `count` entries of the dead-letter stream, unreadable ones included (see
    /// [`DeadLetter::is_readable`]).
    ///
    /// # Errors
    /// [`StreamError::Redis`] when the command fails.
    pub async fn list(&self, count: usize) -> Result<Vec<DeadLetter>, StreamError> {
        let args = Args::new().arg("-").arg("+").arg("COUNT").arg(count as i64);
        let entries = parse_entries("XRANGE", call::<Value>(&self.conn, "XRANGE", &self.key, args).await?)?;
        Ok(entries
            .into_iter()
            .map(|e| DeadLetter::parse(&self.topic_key, e.id, e.fields.unwrap_or_default()))
            .collect())
    }

    /// The oldest `count` dead letters that `filter` takes, reading the dead-letter stream page
    /// by page.
    ///
    /// # Errors
    /// [`StreamError::Redis`] when a command fails.
    pub async fn list_matching(&self, filter: &DeadLetterFilter, count: usize) -> Result<Vec<DeadLetter>, StreamError> {
        let mut found = Vec::new();
        let mut start = "-".to_owned();
        while found.len() < count {
            let args = Args::new().arg(start.as_str()).arg("+").arg("COUNT").arg(500);
            let page = parse_entries("XRANGE", call::<Value>(&self.conn, "XRANGE", &self.key, args).await?)?;
            let Some(last) = page.last().map(|e| e.id) else { break };
            found.extend(
                page.into_iter()
                    .map(|e| DeadLetter::parse(&self.topic_key, e.id, e.fields.unwrap_or_default()))
                    .filter(|l| filter.matches(l))
                    .take(count - found.len()),
            );
            start = format!("({last}");
        }
        Ok(found)
    }

    /// The dead letter `id` (an entry of the dead-letter stream), if there is one.
    ///
    /// # Errors
    /// [`StreamError::Redis`] when the command fails.
    pub async fn get(&self, id: EntryId) -> Result<Option<DeadLetter>, StreamError> {
        let args = Args::new().arg(id.to_string()).arg(id.to_string());
        let entries = parse_entries("XRANGE", call::<Value>(&self.conn, "XRANGE", &self.key, args).await?)?;
        Ok(entries.into_iter().next().map(|e| DeadLetter::parse(&self.topic_key, e.id, e.fields.unwrap_or_default())))
    }

    /// The dead letter of the topic entry `original` (its `original_id`), oldest first if
    /// there are several. Reads the dead-letter stream page by page.
    ///
    /// # Errors
    /// [`StreamError::Redis`] when a command fails.
    pub async fn find_original(&self, original: EntryId) -> Result<Option<DeadLetter>, StreamError> {
        let wanted = original.to_string();
        let mut start = "-".to_owned();
        loop {
            let args = Args::new().arg(start.as_str()).arg("+").arg("COUNT").arg(500);
            let page = parse_entries("XRANGE", call::<Value>(&self.conn, "XRANGE", &self.key, args).await?)?;
            let Some(last) = page.last().map(|e| e.id) else { return Ok(None) };
            for entry in page {
                let letter = DeadLetter::parse(&self.topic_key, entry.id, entry.fields.unwrap_or_default());
                if letter.is_readable() && letter.original_id == wanted {
                    return Ok(Some(letter));
                }
            }
            start = format!("({last}");
        }
    }

    /// Puts dead letter `id` back on its topic (original fields, so the same message id) and
    /// removes it from the dead-letter stream, atomically. Returns the new entry id, or
    /// `None` if there is no such dead letter.
    ///
    /// # Errors
    /// [`StreamError::NothingToReplay`] when the original entry had been trimmed before it
    /// was dead-lettered, or the entry is not a dead letter; [`StreamError::Redis`] when the
    /// script fails.
    pub async fn replay(&self, id: EntryId) -> Result<Option<EntryId>, StreamError> {
        let replayed = self.replay_one(id).await;
        if matches!(replayed, Ok(Some(_))) {
            self.ringer.ring_soon(&self.conn, &self.topic_key);
            crate::retention::apply_stored(&self.conn, &self.topic).await;
        }
        replayed
    }

    /// [`Self::replay`] without ringing or trimming by the topic's retention afterwards (a
    /// replay of many letters does both once per page or once in all).
    async fn replay_one(&self, id: EntryId) -> Result<Option<EntryId>, StreamError> {
        let args: Vec<Value> = vec![id.to_string().into(), Value::from(DEAD_LETTER_FIELDS.len() as i64)];
        match REPLAY_DEAD_LETTER.run::<Value>(&self.conn, vec![self.key.clone(), self.topic_key.clone()], args).await {
            Ok(Value::Null) => Ok(None),
            Ok(v) => {
                let id = entry_id_of("EVALSHA replay_dead_letter", v)?;
                Ok(Some(id))
            }
            Err(e) if ["NOFIELDS", "UNREADABLE", "TRUNCATED"].iter().any(|p| e.is_server_error(p)) => {
                Err(StreamError::NothingToReplay { id: id.to_string() })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replays every dead letter there is now, oldest first (letters that arrive meanwhile,
    /// such as a replayed message failing again, are left for later). Entries that are not
    /// dead letters, and dead letters with no original fields, are left where they are and
    /// counted.
    ///
    /// # Errors
    /// As [`replay`](Self::replay).
    pub async fn replay_all(&self) -> Result<ReplayAll, StreamError> {
        self.replay_matching(&DeadLetterFilter::all(), |_| {}).await
    }

    /// As [`replay_all`](Self::replay_all), for the dead letters `filter` takes (unreadable
    /// entries are counted unless it asks for one reason or group). `progress` is called after every
    /// page of 100 entries with the report so far, for long replays.
    ///
    /// # Errors
    /// As [`replay`](Self::replay).
    pub async fn replay_matching(
        &self,
        filter: &DeadLetterFilter,
        progress: impl FnMut(&ReplayAll),
    ) -> Result<ReplayAll, StreamError> {
        let report = self.replay_pages(filter, progress).await?;
        if report.replayed > 0 {
            // Once for the whole replay, by the topic's stored retention (as a publish would).
            crate::retention::apply_stored(&self.conn, &self.topic).await;
        }
        Ok(report)
    }

    async fn replay_pages(
        &self,
        filter: &DeadLetterFilter,
        mut progress: impl FnMut(&ReplayAll),
    ) -> Result<ReplayAll, StreamError> {
        let mut report = ReplayAll::default();
        let args = Args::new().arg("+").arg("-").arg("COUNT").arg(1);
        let newest = parse_entries("XREVRANGE", call::<Value>(&self.conn, "XREVRANGE", &self.key, args).await?)?;
        let Some(last) = newest.first().map(|e| e.id) else { return Ok(report) };
        let mut start = "-".to_owned();
        loop {
            let args = Args::new().arg(start.as_str()).arg(last.to_string()).arg("COUNT").arg(100);
            let page = parse_entries("XRANGE", call::<Value>(&self.conn, "XRANGE", &self.key, args).await?)?;
            let Some(page_last) = page.last().map(|e| e.id) else { return Ok(report) };
            let replayed_before = report.replayed;
            let page_result = self.replay_page(filter, page, &mut report).await;
            // One ring for the page's letters, also when it stopped at an error.
            if report.replayed > replayed_before {
                self.ringer.ring_soon(&self.conn, &self.topic_key);
            }
            page_result?;
            progress(&report);
            if page_last >= last {
                return Ok(report);
            }
            start = format!("({page_last}");
        }
    }

    /// Replays the letters of `page` that `filter` takes, counting them in `report`.
    async fn replay_page(
        &self,
        filter: &DeadLetterFilter,
        page: Vec<crate::redis::RawEntry>,
        report: &mut ReplayAll,
    ) -> Result<(), StreamError> {
        for entry in page {
            let letter = DeadLetter::parse(&self.topic_key, entry.id, entry.fields.unwrap_or_default());
            if !letter.is_readable() {
                if filter.reason.is_none() && filter.group.is_none() {
                    report.unreadable += 1;
                }
                continue;
            }
            if !filter.matches(&letter) {
                continue;
            }
            match self.replay_one(entry.id).await {
                Ok(Some(_)) => report.replayed += 1,
                Ok(None) => {}
                Err(StreamError::NothingToReplay { .. }) => report.without_fields += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes every dead letter (the whole dead-letter stream). Returns how many there were.
    ///
    /// # Errors
    /// [`StreamError::Redis`] when the command fails.
    pub async fn purge(&self) -> Result<u64, StreamError> {
        let pipeline = self.conn.client_for(&self.key).await.pipeline();
        let _: () = pipeline
            .custom(command("XLEN", &self.key, false), vec![Value::from(self.key.as_str())])
            .await
            .map_err(|e| RedisError::new("XLEN", e))?;
        let _: () = pipeline
            .custom(command("DEL", &self.key, false), vec![Value::from(self.key.as_str())])
            .await
            .map_err(|e| RedisError::new("DEL", e))?;
        let (len, _deleted): (u64, u64) = pipeline.all().await.map_err(|e| RedisError::new("DEL", e))?;
        Ok(len)
    }
}
