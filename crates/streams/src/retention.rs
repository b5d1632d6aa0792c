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
        Self { limit: Limit::MaxLen(n), safe: false }
    }

    /// Keep entries added in the last `age` (`MINID ~ <now - age>`).
    pub fn max_age(age: Duration) -> Self {
        Self { limit: Limit::MaxAge(age), safe: false }
    }

    /// Keep entries from `id` on (`MINID ~ id`).
    pub fn min_id(id: EntryId) -> Self {
        Self { limit: Limit::MinId(id), safe: false }
    }

    /// Never trim an entry that some consumer group has not yet delivered or acknowledged.
    /// Trimming then runs as a script every few publishes instead of inside each `XADD`, and
    /// is exact.
    pub fn safe(mut self) -> Self {
        self.safe = true;
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

    /// Trims `topic` now.
    ///
    /// # Errors
    /// [`StreamError::Redis`] when the trim fails.
    pub async fn trim(&self, conn: &Connection, topic: &Topic) -> Result<u64, StreamError> {
        let key = conn.namespace().topic_stream(topic);
        let removed: u64 = if self.safe {
            let (mode, value) = match self.limit {
                Limit::MaxLen(n) => ("maxlen", n.to_string()),
                Limit::MaxAge(age) => ("minid", min_id(SystemTime::now(), age)),
                Limit::MinId(id) => ("minid", id.to_string()),
            };
            TRIM_SAFE.run(conn, vec![key], vec![mode.into(), value.into()]).await?
        } else {
            let mut args = Args::new();
            for a in self.xadd_args(SystemTime::now()) {
                args.push(a);
            }
            call(conn, "XTRIM", &key, args).await?
        };
        Ok(removed)
    }
}

fn min_id(now: SystemTime, age: Duration) -> String {
    EntryId::from_time(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH)).to_string()
}
