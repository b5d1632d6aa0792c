//! A topic at a glance, read from Redis: its length, its groups' lag, pending entries and
//! oldest pending entry, its dead letters and scheduled messages. What `tributary stats`, the
//! metrics [`Sampler`](crate::metrics::Sampler) and the dashboard show.

use std::time::{Duration, SystemTime};

use fred::types::Value;
use tributary_core::{Connection, Topic};

use crate::admin::{Admin, GroupInfo};
use crate::redis::{call, call_sub, pairs, Args};
use crate::StreamError;

/// One topic, as Redis saw it at [`Self::sampled_at`]. Two samples give rates
/// ([`Self::rate_in`], [`Self::rate_out`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TopicStats {
    /// The topic.
    pub topic: String,
    /// Entries in its stream now.
    pub length: u64,
    /// Entries ever added to its stream (Redis' `entries-added`; trimming does not lower it).
    pub entries_added: u64,
    /// Its consumer groups, in Redis' order.
    pub groups: Vec<GroupStats>,
    /// Entries in its dead-letter stream.
    pub dead_letters: u64,
    /// Messages scheduled for later delivery, not yet due.
    pub scheduled: u64,
    /// When the sample was taken (this machine's clock).
    pub sampled_at: SystemTime,
}

/// One consumer group of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStats {
    /// Group name.
    pub name: String,
    /// Consumers in the group (live or not: Redis keeps a consumer until it is removed).
    pub consumers: u64,
    /// Consumers holding entries pending (busy); the others are idle.
    pub busy_consumers: u64,
    /// Entries delivered to the group and not yet acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to the group; `None` when Redis cannot tell (entries the
    /// group had not read were deleted with `XDEL`).
    pub lag: Option<u64>,
    /// Entries the group has read (Redis' `entries-read`), when Redis can tell: its rate is
    /// the group's throughput.
    pub entries_read: Option<u64>,
    /// How long the oldest pending entry (the lowest id) has gone without being delivered or
    /// having its lease renewed; `None` when nothing is pending. Workers renew the leases of
    /// what they hold, so above `claim_idle` it means an entry nobody works on.
    pub oldest_pending_idle: Option<Duration>,
}

impl TopicStats {
    /// The group named `name`, if the topic has it.
    pub fn group(&self, name: &str) -> Option<&GroupStats> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Entries added a second between `earlier` and this sample; `None` when they are not two
    /// samples of one topic in time order.
    pub fn rate_in(&self, earlier: &TopicStats) -> Option<f64> {
        let secs = self.seconds_since(earlier)?;
        Some(self.entries_added.saturating_sub(earlier.entries_added) as f64 / secs)
    }

    /// Entries `group` read a second between `earlier` and this sample: from Redis' count of
    /// its reads, or else from its lag and the entries added. `None` when neither sample can
    /// tell (the group is new, or Redis knows neither figure).
    pub fn rate_out(&self, earlier: &TopicStats, group: &str) -> Option<f64> {
        let secs = self.seconds_since(earlier)?;
        let (now, before) = (self.group(group)?, earlier.group(group)?);
        let read = match (now.entries_read, before.entries_read) {
            (Some(now), Some(before)) => now.saturating_sub(before),
            _ => {
                let added = self.entries_added.saturating_sub(earlier.entries_added);
                (before.lag? + added).saturating_sub(now.lag?)
            }
        };
        Some(read as f64 / secs)
    }

    fn seconds_since(&self, earlier: &TopicStats) -> Option<f64> {
        let secs = self.sampled_at.duration_since(earlier.sampled_at).ok()?.as_secs_f64();
        (self.topic == earlier.topic && secs > 0.0).then_some(secs)
    }
}

impl Admin {
    /// A look at `topic`: `XINFO STREAM` and `XINFO GROUPS`, `XPENDING` for the oldest
    /// pending entry of each group that has any, and the lengths of its dead-letter stream and
    /// scheduled set. A topic with no stream (only scheduled messages so far, or deleted) has
    /// length 0 and no groups.
    ///
    /// # Errors
    /// [`StreamError`] for a bad name or a failed command.
    pub async fn topic_stats(&self, topic: &str) -> Result<TopicStats, StreamError> {
        let name = Topic::parse_stored(topic)?;
        let conn = self.connection();
        let keys = conn.namespace();
        let key = keys.topic_stream(&name);
        let sampled_at = SystemTime::now();
        let stream = async {
            match call_sub::<Value>(conn, "XINFO", "STREAM", &key, Args::new()).await {
                Ok(reply) => {
                    let (mut length, mut added) = (0, None);
                    for (k, v) in pairs(reply) {
                        match k.as_str() {
                            "length" => length = v.as_u64().unwrap_or(0),
                            "entries-added" => added = v.as_u64(),
                            _ => {}
                        }
                    }
                    Ok((length, added.unwrap_or(length)))
                }
                Err(e) if e.is_server_error("ERR no such key") => Ok((0, 0)),
                Err(e) => Err(StreamError::from(e)),
            }
        };
        // The commands of one look go out together: one round trip, not one per command.
        let dead_letter_key = keys.dead_letter_stream(&name);
        let scheduled_key = keys.scheduled_set(&name);
        let ((length, entries_added), infos, dead_letters, scheduled) = tokio::try_join!(
            stream,
            self.groups(topic),
            async { call(conn, "XLEN", &dead_letter_key, Args::new()).await.map_err(StreamError::from) },
            async { call(conn, "ZCARD", &scheduled_key, Args::new()).await.map_err(StreamError::from) },
        )?;
        let groups = futures::future::try_join_all(infos.into_iter().map(|info| group_stats(conn, &key, info))).await?;
        Ok(TopicStats { topic: name.to_string(), length, entries_added, groups, dead_letters, scheduled, sampled_at })
    }
}

/// `info` with how many consumers are busy and the idle time of the oldest pending entry (two
/// `XPENDING`s at once, only when entries are pending).
async fn group_stats(conn: &Connection, key: &str, info: GroupInfo) -> Result<GroupStats, StreamError> {
    let (busy_consumers, oldest_pending_idle) = match info.pending {
        0 => (0, None),
        _ => tokio::try_join!(busy_consumers(conn, key, &info.name), oldest_pending_idle(conn, key, &info.name))?,
    };
    Ok(GroupStats {
        consumers: info.consumers,
        busy_consumers,
        pending: info.pending,
        lag: info.lag,
        entries_read: info.entries_read,
        oldest_pending_idle,
        name: info.name,
    })
}

/// How many consumers of `group` hold pending entries (`XPENDING`'s summary form).
async fn busy_consumers(conn: &Connection, key: &str, group: &str) -> Result<u64, StreamError> {
    let summary: Value = match call(conn, "XPENDING", key, Args::new().arg(group)).await {
        Ok(summary) => summary,
        // The group went between the two looks.
        Err(e) if e.is_server_error("NOGROUP") => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let holders = summary.into_array().into_iter().nth(3).map(|v| v.into_array().len()).unwrap_or(0);
    Ok(holders as u64)
}

/// The idle time of the lowest pending id of `group`, if any is pending.
async fn oldest_pending_idle(conn: &Connection, key: &str, group: &str) -> Result<Option<Duration>, StreamError> {
    let args = Args::new().arg(group).arg("-").arg("+").arg(1);
    let rows: Value = match call(conn, "XPENDING", key, args).await {
        Ok(rows) => rows,
        // The group went between the two looks.
        Err(e) if e.is_server_error("NOGROUP") => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let idle = rows.into_array().into_iter().next().and_then(|row| row.into_array().into_iter().nth(2)?.as_u64());
    Ok(idle.map(Duration::from_millis))
}
