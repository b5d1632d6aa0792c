//! Replay: read a range of a topic by id or time without touching any consumer group.

use bytes::Bytes;
use fred::types::Value;
use tributary_core::{wire, Connection, DecodeError, EntryId, Envelope, Topic};

use crate::position::Position;
use crate::redis::{call, command, parse_entries, parse_read_reply, Args, RawEntry};
use crate::StreamError;

/// One entry read by a replay.
#[derive(Debug, Clone)]
pub struct Received {
    /// Id of the stream entry.
    pub entry_id: EntryId,
    /// The envelope, or why the entry is not a valid one.
    pub envelope: Result<Envelope, DecodeError>,
}

/// Decodes what a read of `key` returned; a deleted entry (a pending tombstone) is an error
/// entry.
fn decode_all(conn: &Connection, key: &str, entries: Vec<RawEntry>) -> Vec<Received> {
    // A topic's entries may leave their id and time to the entry id (wire format version 3).
    let of_topic = conn.namespace().stored_topic_of_stream(key).is_some();
    let limits = conn.limits();
    entries
        .into_iter()
        .map(|e| Received {
            entry_id: e.id,
            envelope: match e.fields {
                Some(f) if of_topic => wire::decode_entry(&f, key, e.id, limits),
                Some(f) => wire::decode(&f, limits),
                None => Err(DecodeError::MalformedEntry { reason: "entry was deleted" }),
            },
        })
        .collect()
}

/// Reads topics directly (`XRANGE`), for replays, audits and tools. Groups are not touched.
///
/// # Example
/// ```no_run
/// # async fn demo(conn: tributary_core::Connection) -> Result<(), tributary_streams::StreamError> {
/// use std::time::{Duration, SystemTime};
/// use tributary_streams::{Position, Replay};
///
/// let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
/// let mut range = Replay::new(conn).range("orders", Position::Time(an_hour_ago), Position::End)?;
/// while let Some(batch) = range.next_batch().await? {
///     for entry in batch {
///         println!("{} {:?}", entry.entry_id, entry.envelope.map(|e| e.id));
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Replay {
    conn: Connection,
}

impl Replay {
    /// A reader on `conn`.
    pub fn new(conn: Connection) -> Self {
        Self { conn }
    }

    /// The entries of `topic` from `from` to `to`, both inclusive, read in pages.
    ///
    /// # Errors
    /// [`StreamError::InvalidName`] for a bad topic name.
    pub fn range(&self, topic: &str, from: Position, to: Position) -> Result<RangeReader, StreamError> {
        let topic = Topic::parse_stored(topic)?;
        Ok(RangeReader {
            conn: self.conn.clone(),
            key: self.conn.namespace().topic_stream(&topic),
            next_start: Some(from.range_start()),
            end: to.range_end(),
            page_size: 500,
        })
    }
}

/// Pages through a range. Created by [`Replay::range`].
#[derive(Debug)]
pub struct RangeReader {
    conn: Connection,
    key: String,
    next_start: Option<String>,
    end: String,
    page_size: usize,
}

impl RangeReader {
    /// Entries per page. Defaults to 500.
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// The next page, or `None` after the last.
    ///
    /// # Errors
    /// [`StreamError::Redis`] when the read fails (the reader can be polled again).
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Received>>, StreamError> {
        let Some(start) = self.next_start.clone() else {
            return Ok(None);
        };
        let args = Args::new().arg(start).arg(self.end.as_str()).arg("COUNT").arg(self.page_size as i64);
        let entries = parse_entries("XRANGE", call::<Value>(&self.conn, "XRANGE", &self.key, args).await?)?;
        self.next_start = match entries.last() {
            Some(last) if entries.len() == self.page_size => Some(format!("({}", last.id)),
            _ => None,
        };
        if entries.is_empty() {
            return Ok(None);
        }
        Ok(Some(decode_all(&self.conn, &self.key, entries)))
    }

    /// Reads everything left, up to `limit` entries.
    ///
    /// # Errors
    /// As [`next_batch`](Self::next_batch).
    pub async fn collect(mut self, limit: usize) -> Result<Vec<Received>, StreamError> {
        let mut out = Vec::new();
        while out.len() < limit {
            match self.next_batch().await? {
                Some(batch) => out.extend(batch),
                None => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}

/// Follows a stream as entries arrive (`XREAD BLOCK`), without a consumer group: for tools
/// (`tail`) and for RPC reply streams. Carries the last id it saw, so no entry that arrives
/// between two reads is missed (it never re-reads from `$`).
///
/// # Example
/// ```no_run
/// # async fn demo(conn: tributary_core::Connection) -> Result<(), tributary_streams::StreamError> {
/// use tributary_streams::{replay::Tail, Position};
///
/// let mut tail = Tail::topic(conn, "orders", Position::End)?;
/// loop {
///     for entry in tail.next_batch().await? {
///         println!("{} {:?}", entry.entry_id, entry.envelope.map(|e| e.id));
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Tail {
    conn: Connection,
    reader: Option<tributary_core::Dedicated>,
    key: String,
    /// `key` as a command argument, built once.
    key_arg: Value,
    start: Option<Position>,
    last: EntryId,
    block: std::time::Duration,
    count: usize,
}

impl Tail {
    /// Follows `topic` from `from` (inclusive; [`Position::End`]: entries added after the
    /// first read starts).
    ///
    /// # Errors
    /// [`StreamError::InvalidName`] for a bad topic name.
    pub fn topic(conn: Connection, topic: &str, from: Position) -> Result<Self, StreamError> {
        let key = conn.namespace().topic_stream(&Topic::parse_stored(topic)?);
        Ok(Self::stream_key(conn, key, from))
    }

    /// Follows the stream at `key` (any stream, e.g. an RPC reply stream).
    pub fn stream_key(conn: Connection, key: String, from: Position) -> Self {
        Self {
            conn,
            reader: None,
            key_arg: Value::from(key.as_str()),
            key,
            start: Some(from),
            last: EntryId::MIN,
            block: std::time::Duration::from_secs(2),
            count: 512,
        }
    }

    /// How long one read waits for entries. Defaults to 2 s.
    pub fn block_for(mut self, d: std::time::Duration) -> Self {
        self.block = d;
        self
    }

    /// Most entries per batch. Defaults to 512.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.count = n.max(1);
        self
    }

    /// The id of the last entry returned.
    pub fn last_id(&self) -> EntryId {
        self.last
    }

    /// The next entries, waiting up to the block time; empty when none arrived.
    ///
    /// # Errors
    /// [`StreamError`] when the read fails; the tail can be polled again and resumes after
    /// the last entry it returned.
    pub async fn next_batch(&mut self) -> Result<Vec<Received>, StreamError> {
        let entries = self.read().await?;
        Ok(decode_all(&self.conn, &self.key, entries))
    }

    /// Like [`next_batch`](Self::next_batch), but the entries as Redis returned them (id and
    /// fields), for readers that look at a few fields instead of decoding whole envelopes.
    ///
    /// # Errors
    /// As [`next_batch`](Self::next_batch).
    pub async fn next_entries(&mut self) -> Result<Vec<(EntryId, Vec<(Bytes, Bytes)>)>, StreamError> {
        Ok(self.read().await?.into_iter().map(|e| (e.id, e.fields.unwrap_or_default())).collect())
    }

    async fn read(&mut self) -> Result<Vec<RawEntry>, StreamError> {
        if let Some(start) = self.start {
            self.last = match start {
                Position::Beginning => EntryId::MIN,
                Position::At(id) => id.predecessor(),
                Position::Time(t) => EntryId::from_time(t).predecessor(),
                // Resolve `$` once, to a concrete id.
                Position::End => {
                    let args = Args::new().arg("+").arg("-").arg("COUNT").arg(1);
                    let newest = call::<Value>(&self.conn, "XREVRANGE", &self.key, args).await?;
                    parse_entries("XREVRANGE", newest)?.first().map_or(EntryId::MIN, |e| e.id)
                }
            };
            self.start = None;
        }
        let client = match self.reader.as_ref() {
            Some(c) => c,
            None => &*self
                .reader
                .insert(self.conn.dedicated_for(&self.key, self.block).await.map_err(StreamError::Connect)?),
        };
        let block_ms = i64::try_from(self.block.as_millis()).unwrap_or(i64::MAX);
        let args: Vec<Value> = vec![
            Value::from_static_str("COUNT"),
            Value::from(self.count as i64),
            Value::from_static_str("BLOCK"),
            Value::from(block_ms),
            Value::from_static_str("STREAMS"),
            self.key_arg.clone(),
            self.last.to_string().into(),
        ];
        let reply =
            fred::interfaces::ClientLike::custom::<Value, _>(&**client, command("XREAD", &self.key, true), args).await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                // On Redis Cluster a failover may have moved the stream: read from its new
                // primary next time.
                if !self.conn.readers_survive_errors() {
                    self.reader = None;
                }
                return Err(tributary_core::RedisError::new("XREAD", e).into());
            }
        };
        let entries = parse_read_reply("XREAD", reply)?;
        if let Some(last) = entries.last() {
            self.last = last.id;
        }
        Ok(entries)
    }

    /// Closes the read connection (dropping the `Tail` closes it too, in the background).
    pub async fn close(mut self) {
        if let Some(c) = self.reader.take() {
            c.close().await;
        }
    }
}
