//! Retention: how much history a topic keeps.
//!
//! A topic's retention is stored in Redis with the topic (`<ns>:{<topic>}:retention`, set with
//! [`Admin::set_retention`](crate::Admin::set_retention)), and every producer that publishes to
//! the topic applies it; see `docs/keys.md` for the stored fields.
//!
//! Plain retention trims on every publish (`XADD ... MAXLEN ~ n` / `MINID ~ id`) and can drop
//! entries that a group has not read yet. Safe retention never does: it trims only below the
//! oldest entry some group has not yet delivered or acknowledged (the `trim_safe` script),
//! so a slow consumer makes the stream grow instead of losing messages.

use std::fmt;
use std::time::{Duration, SystemTime};

use fred::types::streams::{XCap, XCapTrim};
use fred::types::{StringOrNumber, Value};
use tributary_core::{Connection, EntryId, Topic};

use crate::redis::{call, Args};
use crate::scripts::{SET_RETENTION, TRIM_SAFE};
use crate::StreamError;

/// How much history a topic keeps. Created by [`Retention::max_len`] or
/// [`Retention::max_age`], made safe with [`Retention::safe`]; stored as the topic's retention
/// with [`Admin::set_retention`](crate::Admin::set_retention), which every producer applies.
///
/// Prints as the CLI shows it: `max_len 100000`, `max_age 1d, safe`.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use tributary_streams::Retention;
///
/// let fast = Retention::max_len(100_000);                  // may drop unread entries
/// let safe = Retention::max_age(Duration::from_secs(86_400)).safe();
/// assert!(safe.is_safe() && !fast.is_safe());
/// assert_eq!(safe.to_string(), "max_age 1d, safe");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    limit: Limit,
    safe: bool,
    approximate: bool,
}

/// What a trim did: see [`Retention::trim`] and [`Admin::trim`](crate::Admin::trim).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Trimmed {
    /// Entries removed.
    pub removed: u64,
    /// Entries left in the stream.
    pub remaining: u64,
    /// For safe retention: the group that kept entries the limit alone would have removed.
    pub held_by: Option<HeldBy>,
}

/// A consumer group that kept entries from being trimmed (safe retention).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeldBy {
    /// The group.
    pub group: String,
    /// Why it needs them.
    pub reason: HoldReason,
    /// The first entry kept for it: it and every newer entry stay.
    pub from: EntryId,
}

/// Why a group needs entries kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HoldReason {
    /// Delivered to a consumer, not acknowledged yet.
    Pending,
    /// Not read by the group yet.
    Unread,
}

impl std::fmt::Display for HoldReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pending => "not acknowledged",
            Self::Unread => "not read yet",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    MaxLen(u64),
    MaxAge(Duration),
    MinId(EntryId),
}

impl Retention {
    /// Keep about the newest `n` entries (`MAXLEN ~ n`: Redis trims whole nodes, so a few
    /// more may stay).
    pub fn max_len(n: u64) -> Self {
        Self { limit: Limit::MaxLen(n), safe: false, approximate: false }
    }

    /// Keep entries added in the last `age` (`MINID ~ <now - age>`).
    pub fn max_age(age: Duration) -> Self {
        Self { limit: Limit::MaxAge(age), safe: false, approximate: false }
    }

    /// Keep entries from `id` on (`MINID ~ id`).
    pub fn min_id(id: EntryId) -> Self {
        Self { limit: Limit::MinId(id), safe: false, approximate: false }
    }

    /// Never trim an entry that some consumer group has not yet delivered or acknowledged.
    /// Trimming then runs as a script every few publishes instead of inside each `XADD`, and
    /// is exact.
    pub fn safe(mut self) -> Self {
        self.safe = true;
        self
    }

    /// For [`trim`](Self::trim) of plain retention: remove whole stream nodes only (`~`),
    /// cheaper on long streams but a few more entries than the limit may stay. Publishes always
    /// trim this way; a trim on demand is exact unless this is set.
    pub fn approximate(mut self) -> Self {
        self.approximate = true;
        self
    }

    /// True for safe retention.
    pub fn is_safe(&self) -> bool {
        self.safe
    }

    /// What a publish trims to (plain retention only): `MAXLEN` or `MINID`, and the threshold.
    fn publish_trim(&self, now: SystemTime) -> Option<(&'static str, Value)> {
        if self.safe {
            return None;
        }
        Some(match self.limit {
            Limit::MaxLen(n) => ("MAXLEN", Value::from(n.min(i64::MAX as u64) as i64)),
            Limit::MaxAge(age) => ("MINID", Value::from(min_id(now, age))),
            Limit::MinId(id) => ("MINID", Value::from(id.to_string())),
        })
    }

    /// Trim arguments for `XADD` as a script receives them (plain retention only).
    pub(crate) fn xadd_args(&self, now: SystemTime) -> Vec<Value> {
        self.publish_trim(now).map_or_else(Vec::new, |(kind, threshold)| vec![kind.into(), "~".into(), threshold])
    }

    /// The same trimming, for fred's typed `XADD`.
    pub(crate) fn xadd_cap(&self, now: SystemTime) -> XCap {
        self.publish_trim(now)
            .and_then(|(kind, threshold)| StringOrNumber::try_from(threshold).ok().map(|t| (kind, t)))
            .and_then(|(kind, threshold)| XCap::try_from((kind, XCapTrim::AlmostExact, threshold)).ok())
            .unwrap_or_else(|| XCap::from(None))
    }

    /// Trims `topic` now: exactly to the limit (unless [`approximate`](Self::approximate)),
    /// however long the stream; with safe retention, never past what a group still needs, and
    /// the report says which group kept entries.
    ///
    /// # Errors
    /// [`StreamError::Redis`] when the trim fails.
    pub async fn trim(&self, conn: &Connection, topic: &Topic) -> Result<Trimmed, StreamError> {
        let key = conn.namespace().topic_stream(topic);
        let (mode, value) = match self.limit {
            Limit::MaxLen(n) => ("MAXLEN", n.to_string()),
            Limit::MaxAge(age) => ("MINID", min_id(SystemTime::now(), age)),
            Limit::MinId(id) => ("MINID", id.to_string()),
        };
        if self.safe {
            let reply: Vec<Value> =
                TRIM_SAFE.run(conn, vec![key], vec![mode.to_ascii_lowercase().into(), value.into()]).await?;
            return Ok(trimmed_of(reply));
        }
        let mut removed = 0;
        loop {
            // An approximate trim removes at most 100 nodes' worth (10,000 entries) a call.
            let args = if self.approximate { Args::new().arg(mode).arg("~") } else { Args::new().arg(mode) };
            let n: u64 = call(conn, "XTRIM", &key, args.arg(value.as_str())).await?;
            removed += n;
            if !self.approximate || n == 0 {
                break;
            }
        }
        let remaining: u64 = call(conn, "XLEN", &key, Args::new()).await?;
        Ok(Trimmed { removed, remaining, held_by: None })
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.limit {
            Limit::MaxLen(n) => write!(f, "max_len {n}")?,
            Limit::MaxAge(age) => write!(f, "max_age {}", Age(age))?,
            Limit::MinId(id) => write!(f, "min_id {id}")?,
        }
        if self.safe {
            f.write_str(", safe")?;
        }
        if self.approximate {
            f.write_str(", approximate")?;
        }
        Ok(())
    }
}

/// A duration in the largest unit that divides it (`7d`, `90m`, `1500ms`): what `humantime`
/// and the CLI's `--max-age` read back.
struct Age(Duration);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let unit = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s")]
            .into_iter()
            .find(|(size, _)| ms > 0 && ms % size == 0);
        match unit {
            Some((size, name)) => write!(f, "{}{name}", ms / size),
            None if ms == 0 => f.write_str("0s"),
            None => write!(f, "{ms}ms"),
        }
    }
}

/// The version of the stored encoding (field `v`). A change that older readers may ignore
/// (a new optional field) keeps it; one they must not ignore raises it, and they refuse it.
const ENCODING: &str = "1";

/// The fields of a stored retention, in the order [`stored`] reads them (`docs/keys.md`).
const FIELDS: [&str; 6] = ["v", "max_len", "max_age_ms", "min_id", "safe", "approximate"];

impl Retention {
    /// The hash fields and values that store this retention.
    fn fields(&self) -> Vec<Value> {
        let (limit, value) = match self.limit {
            Limit::MaxLen(n) => ("max_len", n.to_string()),
            Limit::MaxAge(age) => ("max_age_ms", age.as_millis().to_string()),
            Limit::MinId(id) => ("min_id", id.to_string()),
        };
        let flag = |on: bool| if on { "1" } else { "0" };
        ["v", ENCODING, limit, value.as_str(), "safe", flag(self.safe), "approximate", flag(self.approximate)]
            .into_iter()
            .map(Value::from)
            .collect()
    }

    /// The retention whose [`FIELDS`] have `values` (`None` where absent); `None` when nothing
    /// is stored.
    fn from_fields(values: &[Option<String>]) -> Result<Option<Self>, String> {
        if values.iter().all(Option::is_none) {
            return Ok(None);
        }
        let [v, max_len, max_age_ms, min_id, safe, approximate] = values else {
            return Err(format!("expected {} fields, got {}", FIELDS.len(), values.len()));
        };
        match v.as_deref() {
            Some(ENCODING) => {}
            Some(other) => {
                return Err(format!(
                    "encoding version `{other}` is not the one this Tributary reads ({ENCODING}): upgrade it"
                ))
            }
            None => return Err("no encoding version (field `v`)".to_owned()),
        }
        let number = |name: &str, text: &str| {
            text.parse::<u64>().map_err(|_| format!("field `{name}` is `{text}`, not a whole number"))
        };
        let limit = match (max_len, max_age_ms, min_id) {
            (Some(n), None, None) => Limit::MaxLen(number("max_len", n)?),
            (None, Some(ms), None) => Limit::MaxAge(Duration::from_millis(number("max_age_ms", ms)?)),
            (None, None, Some(id)) => {
                Limit::MinId(id.parse().map_err(|_| format!("field `min_id` is `{id}`, not an entry id"))?)
            }
            (None, None, None) => return Err("no limit (`max_len`, `max_age_ms` or `min_id`)".to_owned()),
            _ => return Err("more than one limit of `max_len`, `max_age_ms` and `min_id`".to_owned()),
        };
        let flag = |name: &str, value: &Option<String>| match value.as_deref() {
            Some("0") => Ok(false),
            Some("1") => Ok(true),
            // Written every time: absent means changed by hand, and guessing "not safe" could
            // remove unread entries.
            None => Err(format!("field `{name}` is missing")),
            Some(other) => Err(format!("field `{name}` is `{other}`, not 0 or 1")),
        };
        // `approximate` only changes how a trim on demand removes entries: absent is off.
        let approximate = if approximate.is_none() { false } else { flag("approximate", approximate)? };
        Ok(Some(Self { limit, safe: flag("safe", safe)?, approximate }))
    }
}

/// The retention stored for `topic`, `None` when it has none (one `HMGET`).
///
/// # Errors
/// [`StreamError::Redis`] when the command fails, [`StreamError::InvalidRetention`] when what
/// is stored cannot be read.
pub(crate) async fn stored(conn: &Connection, topic: &Topic) -> Result<Option<Retention>, StreamError> {
    let key = conn.namespace().retention_key(topic);
    let args = FIELDS.iter().fold(Args::new(), |args, field| args.arg(*field));
    let invalid = |reason| StreamError::InvalidRetention { topic: topic.to_string(), reason };
    let values: Vec<Option<String>> = match call(conn, "HMGET", &key, args).await {
        Ok(values) => values,
        // Something else was written there (by hand): unreadable, not a failed read.
        Err(e) if e.is_server_error("WRONGTYPE") => return Err(invalid(format!("`{key}` is not a hash"))),
        Err(e) => return Err(e.into()),
    };
    Retention::from_fields(&values).map_err(invalid)
}

/// Trims `topic` by its stored retention, if it has one: after entries were added other than
/// by a producer's publish (scheduled messages moved, dead letters replayed), which trim as
/// they add. Failures are logged: the entries are stored, and the next trim catches up.
pub(crate) async fn apply_stored(conn: &Connection, topic: &Topic) {
    match stored(conn, topic).await {
        Ok(Some(retention)) => {
            if let Err(e) = retention.trim(conn, topic).await {
                tracing::warn!(topic = %topic, error = %e, "trimming by the topic's retention failed");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(topic = %topic, error = %e, "not trimming the topic"),
    }
}

/// Stores `retention` as `topic`'s, replacing what was stored.
///
/// # Errors
/// [`StreamError::Redis`] when the script fails.
pub(crate) async fn store(conn: &Connection, topic: &Topic, retention: &Retention) -> Result<(), StreamError> {
    if let Limit::MaxAge(age) = retention.limit {
        // Stored in whole milliseconds as a u64: what cannot be read back is not stored.
        if age.as_millis() > u128::from(u64::MAX) || age.subsec_nanos() % 1_000_000 != 0 {
            return Err(StreamError::InvalidRetention {
                topic: topic.to_string(),
                reason: format!("max_age {age:?} is not a whole number of milliseconds that fits in 64 bits"),
            });
        }
    }
    let key = conn.namespace().retention_key(topic);
    let _: Value = SET_RETENTION.run(conn, vec![key], retention.fields()).await?;
    Ok(())
}

/// Removes `topic`'s stored retention; true if it had one.
///
/// # Errors
/// [`StreamError::Redis`] when the command fails.
pub(crate) async fn clear(conn: &Connection, topic: &Topic) -> Result<bool, StreamError> {
    let key = conn.namespace().retention_key(topic);
    let removed: i64 = call(conn, "DEL", &key, Args::new()).await?;
    Ok(removed == 1)
}

fn min_id(now: SystemTime, age: Duration) -> String {
    EntryId::from_time(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH)).to_string()
}

/// The reply of `trim_safe.lua`: `{removed, remaining[, group, 'pending'|'undelivered', from]}`.
fn trimmed_of(reply: Vec<Value>) -> Trimmed {
    let mut it = reply.into_iter();
    let mut number = || it.next().and_then(|v| v.as_u64()).unwrap_or(0);
    let (removed, remaining) = (number(), number());
    let rest: Vec<String> = it.filter_map(|v| v.into_string()).collect();
    let held_by = match rest.as_slice() {
        [group, reason, from] => from.parse().ok().map(|from| HeldBy {
            group: group.clone(),
            reason: if reason == "pending" { HoldReason::Pending } else { HoldReason::Unread },
            from,
        }),
        _ => None,
    };
    Trimmed { removed, remaining, held_by }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`stored`] reads back from what [`Retention::fields`] wrote.
    fn round_trip(r: Retention) -> Option<Retention> {
        let written: Vec<String> = r.fields().into_iter().filter_map(|v| v.into_string()).collect();
        let values: Vec<Option<String>> =
            FIELDS.iter().map(|f| written.chunks(2).find(|pair| pair[0] == *f).map(|pair| pair[1].clone())).collect();
        Retention::from_fields(&values).unwrap()
    }

    #[test]
    fn every_retention_reads_back_as_it_was_stored() {
        for r in [
            Retention::max_len(100_000),
            Retention::max_len(0).safe(),
            Retention::max_age(Duration::from_secs(7 * 86_400)).safe().approximate(),
            Retention::max_age(Duration::from_millis(1500)),
            Retention::min_id(EntryId::new(1_700_000_000_000, 3)).approximate(),
        ] {
            assert_eq!(round_trip(r), Some(r), "{r}");
        }
    }

    #[test]
    fn retention_prints_as_the_cli_shows_it() {
        assert_eq!(Retention::max_len(10).to_string(), "max_len 10");
        assert_eq!(Retention::max_age(Duration::from_secs(7 * 86_400)).safe().to_string(), "max_age 7d, safe");
        assert_eq!(Retention::max_age(Duration::from_secs(90 * 60)).to_string(), "max_age 90m");
        assert_eq!(Retention::max_age(Duration::from_millis(1500)).to_string(), "max_age 1500ms");
        assert_eq!(Retention::max_age(Duration::ZERO).to_string(), "max_age 0s");
        assert_eq!(Retention::min_id(EntryId::new(5, 1)).approximate().to_string(), "min_id 5-1, approximate");
    }

    #[test]
    fn what_cannot_be_read_is_refused_with_the_reason() {
        let fields = |v: [Option<&str>; 6]| v.map(|f| f.map(str::to_owned));
        assert_eq!(Retention::from_fields(&fields([None; 6])), Ok(None), "nothing stored");
        let refused = |v: [Option<&str>; 6]| Retention::from_fields(&fields(v)).unwrap_err();
        assert!(refused([Some("2"), Some("10"), None, None, None, None]).contains("version `2`"));
        assert!(refused([None, Some("10"), None, None, None, None]).contains("no encoding version"));
        assert!(refused([Some("1"), None, None, None, Some("1"), None]).contains("no limit"));
        assert!(refused([Some("1"), Some("10"), Some("5"), None, None, None]).contains("more than one"));
        assert!(refused([Some("1"), Some("ten"), None, None, None, None]).contains("`max_len` is `ten`"));
        assert!(refused([Some("1"), Some("10"), None, None, Some("yes"), None]).contains("`safe` is `yes`"));
        // A missing `safe` is refused (reading it as "not safe" could remove unread entries); a
        // missing `approximate` is off. Fields added later by a compatible version are not
        // asked for, so they do not matter.
        assert!(refused([Some("1"), Some("10"), None, None, None, None]).contains("`safe` is missing"));
        let plain = Retention::from_fields(&fields([Some("1"), Some("10"), None, None, Some("0"), None]));
        assert_eq!(plain, Ok(Some(Retention::max_len(10))));
    }
}
