//! Identifiers: the message id every envelope carries and the stream entry id Redis assigns.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

/// Unique, time-sortable identity of a message: a UUIDv7 the publisher chose, or, for an entry
/// that carries none (wire format version 3), a UUIDv8 derived from its stream and entry id
/// ([`MessageId::of_entry`]).
///
/// The id travels with the message through retries, dead-lettering and replay, so a consumer
/// can use it to de-duplicate. Ids created in one process sort in creation order; derived ids
/// are unique within one Redis deployment (see [`MessageId::of_entry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A new id for the current time.
    pub fn new() -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let (ms, counter) = v7_clock::next(u64::try_from(now).unwrap_or(u64::MAX));
        // The counter fills the 12 bits of `rand_a` and the top 6 bits of `rand_b` (the
        // uuid builder keeps the low nibble of byte 0 and the low 6 bits of byte 2), random
        // bits the remaining 56.
        let mut bytes = [0u8; 10];
        bytes[0] = (counter >> 14) as u8;
        bytes[1] = (counter >> 6) as u8;
        bytes[2] = (counter & 0x3f) as u8;
        bytes[3..].copy_from_slice(&fastrand::u64(..).to_le_bytes()[..7]);
        Self(uuid::Builder::from_unix_timestamp_millis(ms, &bytes).into_uuid())
    }

    /// The id of a message that carries none (wire format version 3): derived from its topic's
    /// stream key (`<namespace>:{<topic>}`) and the entry id it was first written at (its
    /// *origin*, which dead-letter replay keeps), so every reader of the entry, in any language,
    /// finds the same id, and it survives replay. A UUID of version 8 (RFC 9562's custom
    /// layout), big-endian:
    ///
    /// - bits 0–47: the entry id's milliseconds, modulo 2^48 (ids sort by millisecond);
    /// - bits 48–51: `8`, the version; bits 52–63: the sequence's bits 0–11;
    /// - bits 64–65: `10`, the variant; bits 66–77: the sequence's bits 12–23;
    /// - bits 78–127: the top 50 bits of the 64-bit FNV-1a hash of the stream key's UTF-8.
    ///
    /// Unique as long as entry ids are: within one Redis deployment's stream (Redis never gives
    /// an id twice while the stream exists, nor 2^24 in one millisecond), and between streams
    /// but for a hash collision (50 bits). Two deployments that use the same namespace and
    /// topic make the same ids: where ids must be unique across them (one de-duplication store
    /// for two regions), publish with explicit ids (`ProducerBuilder::message_ids`).
    /// `docs/wire-format.md` has the same in Python.
    pub fn of_entry(stream: &str, origin: EntryId) -> Self {
        let hash =
            stream.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        let high = ((origin.ms & 0xffff_ffff_ffff) << 16) | 0x8000 | (origin.seq & 0xfff);
        let low = (0b10 << 62) | (((origin.seq >> 12) & 0xfff) << 50) | (hash >> 14);
        Self(Uuid::from_u128((u128::from(high) << 64) | u128::from(low)))
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// When the id was created (millisecond precision), for ids made by [`MessageId::new`]
    /// and [`MessageId::of_entry`] (any UUID of version 7 or 8 is read that way); `None` for a
    /// UUID of another version.
    pub fn created_at(&self) -> Option<SystemTime> {
        if !matches!(self.0.get_version_num(), 7 | 8) {
            return None;
        }
        // A v7 UUID starts with its Unix time in milliseconds, 48 bits big-endian (read
        // directly: the uuid crate's timestamp conversion costs two 128-bit divisions).
        let b = self.0.as_bytes();
        let ms = u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]);
        Some(UNIX_EPOCH + Duration::from_millis(ms))
    }
}

/// The millisecond and counter of each new [`MessageId`], shared by the whole process so that
/// its ids sort in creation order (RFC 9562, section 6.2, method 1: a counter in the bits after
/// the time). It replaces `Uuid::now_v7`, whose shared context is a mutex and whose random bits
/// come from a ChaCha generator: together about four times the cost of this. A process that
/// forks without `exec` hands the child this counter and the thread's `fastrand` state, so
/// parent and child should not both make ids in the same millisecond right after the fork.
mod v7_clock {
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Bits of the counter.
    pub(super) const COUNTER_BITS: u32 = 18;
    const COUNTER_MAX: u64 = (1 << COUNTER_BITS) - 1;

    /// The last `(ms << COUNTER_BITS) | counter` handed out.
    static LAST: AtomicU64 = AtomicU64::new(0);

    /// The millisecond and counter for an id made at `now_ms`.
    pub(super) fn next(now_ms: u64) -> (u64, u64) {
        let mut last = LAST.load(Ordering::Relaxed);
        loop {
            let next = advance(last, now_ms, fastrand::u64(..));
            match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return (next >> COUNTER_BITS, next & COUNTER_MAX),
                Err(current) => last = current,
            }
        }
    }

    /// The position after `last` at `now_ms`. A new millisecond starts the counter at a random
    /// value in its lower half (ids of other processes in the same millisecond are unlikely to
    /// interleave, and at least 2^17 ids fit before it runs out); within the same millisecond,
    /// or when the clock went back, the counter goes up by one; a full counter moves on to the
    /// next millisecond, as RFC 9562 allows, rather than repeat or go back.
    pub(super) fn advance(last: u64, now_ms: u64, random: u64) -> u64 {
        let (last_ms, counter) = (last >> COUNTER_BITS, last & COUNTER_MAX);
        // Milliseconds beyond 2^46 (the year 4199) stay at that limit and count up.
        let now_ms = now_ms.min(u64::MAX >> COUNTER_BITS);
        if now_ms > last_ms {
            (now_ms << COUNTER_BITS) | (random & (COUNTER_MAX >> 1))
        } else if counter < COUNTER_MAX {
            last + 1
        } else {
            ((last_ms + 1) << COUNTER_BITS) | (random & (COUNTER_MAX >> 1))
        }
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

impl EntryId {
    /// Parses `<ms>-<seq>` (or `<ms>`, meaning sequence 0) from the bytes of a Redis reply,
    /// without checking UTF-8 first: only ASCII digits and one `-` are accepted.
    pub fn from_ascii(s: &[u8]) -> Option<Self> {
        fn number(digits: &[u8]) -> Option<u64> {
            // Up to 19 digits cannot overflow a u64; only 20 need checked arithmetic.
            if digits.is_empty() || digits.len() > 20 {
                return None;
            }
            let mut n = 0u64;
            for &b in digits {
                let digit = u64::from(b.wrapping_sub(b'0'));
                if digit > 9 {
                    return None;
                }
                n = if digits.len() < 20 { n * 10 + digit } else { n.checked_mul(10)?.checked_add(digit)? };
            }
            Some(n)
        }
        match s.iter().position(|&b| b == b'-') {
            Some(dash) => Some(Self::new(number(&s[..dash])?, number(&s[dash + 1..])?)),
            None => Some(Self::new(number(s)?, 0)),
        }
    }
}

impl FromStr for EntryId {
    type Err = ParseEntryIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_ascii(s.as_bytes()).ok_or_else(|| ParseEntryIdError(s.chars().take(64).collect()))
    }
}

/// A multiply-rotate hasher (the scheme of rustc's `FxHasher`) for maps and sets keyed by ids:
/// [`EntryId`]s, or [`MessageId`]s as `u128`. SipHash, the standard library's default, was a
/// measurable share of the consumer's and the RPC client's hot paths
/// (docs/performance-history.md, "Counted in instructions").
///
/// It is not resistant to chosen keys: use it only where the keys are ids Redis or this
/// process made and the map stays small (entries in flight, calls waiting for a reply).
// Used by Tributary's own crates; not part of the supported API (#25).
#[doc(hidden)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }

    fn write_u128(&mut self, n: u128) {
        // Two words, not sixteen bytes (the default goes through `write`).
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_id_derives_the_message_id_python_derives() {
        // The vectors of docs/wire-format.md's Python function.
        let of = |stream, id: &str| MessageId::of_entry(stream, id.parse().unwrap()).to_string();
        assert_eq!(of("tributary:{orders}", "1732540000000-5"), "0193636e-6700-8005-8001-3606fad2b74f");
        assert_eq!(of("tributary:{orders}", "1732540000000-70000"), "0193636e-6700-8170-8045-3606fad2b74f");
        assert_eq!(of("tributary:{greetings}", "1732540000000-5"), "0193636e-6700-8005-8001-c8e4f433604e");
        assert_eq!(of("jobs:{orders}", "1732540000000-5"), "0193636e-6700-8005-8003-fa7125ec3033");
        let id = MessageId::of_entry("tributary:{orders}", EntryId::new(1_732_540_000_000, 5));
        assert_eq!(id.as_uuid().get_version_num(), 8);
        assert_eq!(id.created_at(), Some(UNIX_EPOCH + Duration::from_millis(1_732_540_000_000)));
    }

    #[test]
    fn message_ids_hash_apart_as_u128() {
        use std::hash::BuildHasher;
        let build = std::hash::BuildHasherDefault::<IdHasher>::default();
        let mut hashes = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = MessageId::new().as_uuid().as_u128();
            assert!(hashes.insert(build.hash_one(id)), "{id:x} collides");
        }
        // The two halves both count: ids that differ only in their high or low word.
        assert_ne!(build.hash_one(1u128), build.hash_one(1u128 << 64));
    }

    #[test]
    fn message_ids_know_when_they_were_made() {
        let before = SystemTime::now() - Duration::from_millis(1);
        let made = MessageId::new().created_at().expect("a v7 id has a time");
        let after = SystemTime::now();
        assert!(before <= made && made <= after, "{made:?} not within {before:?}..{after:?}");
        assert_eq!(MessageId::from(Uuid::nil()).created_at(), None);
    }

    #[test]
    fn message_ids_are_version_7_and_sort_in_creation_order_across_threads() {
        let made: Vec<Vec<MessageId>> = std::thread::scope(|s| {
            let threads: Vec<_> =
                (0..4).map(|_| s.spawn(|| (0..20_000).map(|_| MessageId::new()).collect::<Vec<_>>())).collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for ids in &made {
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids of one thread out of order");
        }
        let mut all: Vec<MessageId> = made.concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 80_000, "duplicate ids");
        let id = all[0].as_uuid();
        assert_eq!(id.get_version(), Some(uuid::Version::SortRand));
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        // And what another UUID library reads from it: the same time.
        let (secs, nanos) = id.get_timestamp().expect("v7 has a time").to_unix();
        assert_eq!(all[0].created_at(), Some(UNIX_EPOCH + Duration::new(secs, nanos)));
    }

    #[test]
    fn the_v7_counter_starts_low_counts_up_and_moves_on_when_full() {
        use v7_clock::{advance, COUNTER_BITS};
        let at = |ms: u64, counter: u64| (ms << COUNTER_BITS) | counter;
        let full = (1 << COUNTER_BITS) - 1;
        // A new millisecond: a random start in the lower half of the counter.
        assert_eq!(advance(at(5, 9), 6, u64::MAX), at(6, full >> 1));
        assert_eq!(advance(at(5, 9), 6, 3), at(6, 3));
        // The same millisecond, or a clock that went back: one more.
        assert_eq!(advance(at(5, 9), 5, 3), at(5, 10));
        assert_eq!(advance(at(5, 9), 2, 3), at(5, 10));
        // A full counter: the next millisecond, never a repeat.
        assert_eq!(advance(at(5, full), 5, 3), at(6, 3));
        assert!(advance(at(5, full), 5, 3) > at(5, full));
    }

    #[test]
    fn entry_ids_order_numerically_not_lexically() {
        let a: EntryId = "9-5".parse().unwrap();
        let b: EntryId = "10-0".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "10-0");
        assert_eq!("7".parse::<EntryId>().unwrap(), EntryId::new(7, 0));
        assert_eq!("18446744073709551615-0".parse::<EntryId>().unwrap(), EntryId::new(u64::MAX, 0));
        assert_eq!(EntryId::from_ascii(b"1764425000123-42"), Some(EntryId::new(1_764_425_000_123, 42)));
    }

    #[test]
    fn entry_id_rejects_garbage() {
        for bad in ["", "-", "1-", "-1", "a-1", "1-2-3", "+", "1/", "18446744073709551616-0", "000000000000000000001-0"]
        {
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
