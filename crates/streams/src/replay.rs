//! Replay: read a range of a topic by id or time without touching any consumer group.

use fred::types::Value;
use tributary_core::{wire, Connection, DecodeError, EntryId, Envelope, Topic};

use crate::position::Position;
use crate::redis::{call, parse_entries, Args};
use crate::StreamError;

/// One entry read by a replay.
#[derive(Debug, Clone)]
pub struct Received {
    /// Id of the stream entry.
    pub entry_id: EntryId,
    /// The envelope, or why the entry is not a valid one.
    pub envelope: Result<Envelope, DecodeError>,
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
///         println!("{} {:?}", entry.entry_id, entry.envelope.map(|e| e.type_name));
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
        let topic = Topic::new(topic)?;
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
        let args = Args::new()
            .arg(start)
            .arg(self.end.as_str())
            .arg("COUNT")
            .arg(self.page_size as i64);
        let entries = parse_entries(
            "XRANGE",
            call::<Value>(self.conn.redis(), "XRANGE", &self.key, args).await?,
        )?;
        self.next_start = match entries.last() {
            Some(last) if entries.len() == self.page_size => Some(format!("({}", last.id)),
            _ => None,
        };
        if entries.is_empty() {
            return Ok(None);
        }
        let limits = *self.conn.limits();
        Ok(Some(
            entries
                .into_iter()
                .map(|e| Received {
                    entry_id: e.id,
                    envelope: match e.fields {
                        Some(f) => wire::decode(&f, &limits),
                        None => Err(DecodeError::MalformedEntry {
                            reason: "entry was deleted",
                        }),
                    },
                })
                .collect(),
        ))
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
