//! Retention: how much history a topic keeps.
//!
//! Plain retention trims on every publish (`XADD ... MAXLEN ~ n` / `MINID ~ id`) and can drop
//! entries that a group has not read yet. Safe retention never does: it trims only below the
//! oldest entry some group has not yet delivered or acknowledged (the `trim_safe` script),
//! so a slow consumer makes the stream grow instead of losing messages.

use std::time::{Duration, SystemTime};

use fred::types::streams::{XCap, XCapTrim};
use fred::types::{StringOrNumber, Value};
use tributary_core::{Connection, EntryId, Topic};

use crate::redis::{call, Args};
use crate::scripts::TRIM_SAFE;
use crate::StreamError;

/// How much history a topic keeps. Created by [`Retention::max_len`] or
/// [`Retention::max_age`], made safe with [`Retention::safe`].
///
/// # Example
/// ```
/// use std::time::Duration;
/// use tributary_streams::Retention;
///
/// let fast = Retention::max_len(100_000);                  // may drop unread entries
/// let safe = Retention::max_age(Duration::from_secs(86_400)).safe();
/// assert!(safe.is_safe() && !fast.is_safe());
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
