//! Identifiers: the message id every envelope carries and the stream entry id Redis assigns.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

/// Unique, time-sortable identity of a message (a UUIDv7).
///
/// The id is chosen by the publisher and travels with the message through retries,
/// dead-lettering and replay, so a consumer can use it to de-duplicate. Ids created in one
/// process sort in creation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A new id for the current time.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// When the id was created (millisecond precision), for ids made by [`MessageId::new`];
    /// `None` for a UUID of another version.
    pub fn created_at(&self) -> Option<SystemTime> {
        let (secs, nanos) = self.0.get_timestamp()?.to_unix();
        Some(UNIX_EPOCH + Duration::new(secs, nanos))
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for MessageId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for MessageId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s).map(Self)
    }
}

/// The id Redis gave a stream entry: `<milliseconds>-<sequence>`.
///
/// Ordered the way Redis orders entries, which is not the string order
/// (`"10-0" > "9-0"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    ms: u64,
    seq: u64,
}

impl EntryId {
    /// The smallest id (`0-0`).
    pub const MIN: EntryId = EntryId { ms: 0, seq: 0 };
    /// The largest id.
    pub const MAX: EntryId = EntryId { ms: u64::MAX, seq: u64::MAX };

    /// An id from its two parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// The first id at or after `time` (`<ms>-0`); the way to address a stream by time.
    pub fn from_time(time: SystemTime) -> Self {
        let ms = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis();
        Self::new(u64::try_from(ms).unwrap_or(u64::MAX), 0)
    }

    /// Milliseconds part: when Redis added the entry (by its clock).
    pub fn ms(&self) -> u64 {
        self.ms
    }

    /// Sequence part, distinguishing entries added in the same millisecond.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The id just before this one (`0-0` stays `0-0`), used to turn "start at this entry"
    /// into Redis' "deliver entries after this id".
    pub fn predecessor(&self) -> Self {
        match (self.ms, self.seq) {
            (ms, seq) if seq > 0 => Self::new(ms, seq - 1),
            (ms, _) if ms > 0 => Self::new(ms - 1, u64::MAX),
            _ => Self::MIN,
        }
    }

    /// The next possible id, used to turn an inclusive bound into an exclusive one.
    pub fn successor(&self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => Self::new(self.ms, seq),
            None => Self::new(self.ms.saturating_add(1), 0),
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The text was not an entry id of the form `<ms>-<seq>` (or `<ms>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream entry id `{0}`")]
pub struct ParseEntryIdError(String);

impl FromStr for EntryId {
    type Err = ParseEntryIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseEntryIdError(s.chars().take(64).collect());
        let (ms, seq) = match s.split_once('-') {
            Some((ms, seq)) => (ms, seq),
            None => (s, "0"),
        };
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(err());
        }
        Ok(Self::new(ms.parse().map_err(|_| err())?, seq.parse().map_err(|_| err())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_know_when_they_were_made() {
        let before = SystemTime::now() - Duration::from_millis(1);
        let made = MessageId::new().created_at().expect("a v7 id has a time");
        let after = SystemTime::now();
        assert!(before <= made && made <= after, "{made:?} not within {before:?}..{after:?}");
        assert_eq!(MessageId::from(Uuid::nil()).created_at(), None);
    }

    #[test]
    fn entry_ids_order_numerically_not_lexically() {
        let a: EntryId = "9-5".parse().unwrap();
        let b: EntryId = "10-0".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "10-0");
        assert_eq!("7".parse::<EntryId>().unwrap(), EntryId::new(7, 0));
    }

    #[test]
    fn entry_id_rejects_garbage() {
        for bad in ["", "-", "1-", "-1", "a-1", "1-2-3", "+", "18446744073709551616-0"] {
            assert!(bad.parse::<EntryId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn successor_is_next_id() {
        assert_eq!(EntryId::new(5, 1).successor(), EntryId::new(5, 2));
        assert_eq!(EntryId::new(5, u64::MAX).successor(), EntryId::new(6, 0));
        assert_eq!(EntryId::new(6, 0).predecessor(), EntryId::new(5, u64::MAX));
        assert_eq!(EntryId::new(6, 3).predecessor(), EntryId::new(6, 2));
        assert_eq!(EntryId::MIN.predecessor(), EntryId::MIN);
    }

    #[test]
    fn message_ids_sort_by_creation() {
        let ids: Vec<MessageId> = (0..1000).map(|_| MessageId::new()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        let text = ids[0].to_string();
        assert_eq!(text.parse::<MessageId>().unwrap(), ids[0]);
    }
}
