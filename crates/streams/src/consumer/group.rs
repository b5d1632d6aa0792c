//! The consumer group as one consumer sees it: created at the first start, and created again
//! when it vanished under a running worker (Redis restarted without persistence, `FLUSHALL`,
//! `XGROUP DESTROY`, `DEL` of the topic, a failover to a replica that lacks the group).
//!
//! Where a lost group starts again (`docs/delivery.md`, "A lost consumer group"): after the
//! newest entry this consumer knows the group had delivered, if the stream is the same one
//! (its newest id is not older than that entry), so nothing published since is skipped and
//! the retained history is not delivered a second time; at the beginning of the stream if the
//! stream itself is gone or was created anew (its ids start over), since everything in it is
//! then new. The configured start position applies only to a group's first creation.

use fred::types::Value;
use tributary_core::{EntryId, RedisError};

use super::stats::Stats;
use super::topic::TopicConsumer;
use crate::redis::{call_sub, entry_id_of, pairs, Args};

impl TopicConsumer {
    /// `XGROUP CREATE ... MKSTREAM` at the configured start; an existing group is left as it
    /// is. Then notes the group's cursor, where it would be re-created if it vanished. Once
    /// this consumer knows a position (a retried start, after a loss), a missing group is
    /// re-created by the rule for lost groups instead.
    pub(crate) async fn ensure_group(&self) -> Result<(), RedisError> {
        if *self.last_read.lock().expect("last read lock") > EntryId::MIN {
            if self.group_cursor().await?.is_none() {
                self.restore_group().await?;
            }
        } else {
            self.create_group(&self.config.start.group_cursor()).await?;
        }
        self.note_group_cursor().await
    }

    /// Notes the group's cursor as the newest entry known delivered, so that a re-creation
    /// starts after what other consumers of the group read too (every sweep does this).
    pub(crate) async fn note_group_cursor(&self) -> Result<(), RedisError> {
        if let Some(cursor) = self.group_cursor().await? {
            let mut last = self.last_read.lock().expect("last read lock");
            *last = (*last).max(cursor);
        }
        Ok(())
    }

    /// True when `e` says the group (or its stream) does not exist.
    pub(crate) fn is_group_lost(e: &RedisError) -> bool {
        e.is_server_error("NOGROUP")
    }

    /// Creates the group again after it vanished (see the module docs), saying so at `error`
    /// once, from the consumer that re-created it. Safe to call from several tasks at once.
    pub(crate) async fn restore_group(&self) -> Result<(), RedisError> {
        let last = *self.last_read.lock().expect("last read lock");
        let start = match self.newest_id().await? {
            Some(newest) if newest >= last => last,
            _ => EntryId::MIN,
        };
        if self.create_group(&start.to_string()).await? {
            Stats::add(&self.stats.groups_recreated, 1);
            self.metrics.groups_recreated.increment(1);
            tracing::error!(topic = %self.topic, group = %self.group, start = %start,
                "consumer group was missing (Redis restarted without persistence, or the group or topic \
                 was deleted, or a failover reached a replica without it); created it again after the \
                 last entry this consumer knew delivered. Entries pending in the lost group are not \
                 delivered again");
        } else {
            tracing::info!(topic = %self.topic, group = %self.group, "consumer group was re-created by another consumer");
        }
        Ok(())
    }

    /// `XGROUP CREATE key group start MKSTREAM`: true when created, false when it existed.
    async fn create_group(&self, start: &str) -> Result<bool, RedisError> {
        let args = Args::new().arg(self.group.as_str()).arg(start).arg("MKSTREAM");
        match call_sub::<Value>(&self.conn, "XGROUP", "CREATE", &self.key, args).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_server_error("BUSYGROUP") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The group's cursor (`last-delivered-id`), if the group exists.
    async fn group_cursor(&self) -> Result<Option<EntryId>, RedisError> {
        Ok(self.group_info().await?.map(|(cursor, _)| cursor))
    }

    /// The group's cursor (`last-delivered-id`) and pending count, if the group exists.
    pub(crate) async fn group_info(&self) -> Result<Option<(EntryId, u64)>, RedisError> {
        let reply = match call_sub::<Value>(&self.conn, "XINFO", "GROUPS", &self.key, Args::new()).await {
            Ok(v) => v,
            Err(e) if e.is_server_error("ERR no such key") => return Ok(None),
            Err(e) => return Err(e),
        };
        for group in reply.into_array() {
            let fields = pairs(group);
            if !fields.iter().any(|(k, v)| k == "name" && v.as_str().as_deref() == Some(self.group.as_str())) {
                continue;
            }
            let mut cursor = None;
            let mut pending = 0;
            for (k, v) in fields {
                match k.as_str() {
                    "last-delivered-id" => cursor = Some(entry_id_of("XINFO GROUPS", v)?),
                    "pending" => pending = v.as_u64().unwrap_or(0),
                    _ => {}
                }
            }
            let cursor = cursor.ok_or_else(|| RedisError::unexpected_reply("XINFO GROUPS", "no last-delivered-id"))?;
            return Ok(Some((cursor, pending)));
        }
        Ok(None)
    }

    /// The newest id the stream ever generated (`last-generated-id`), `None` when there is no
    /// stream.
    async fn newest_id(&self) -> Result<Option<EntryId>, RedisError> {
        match call_sub::<Value>(&self.conn, "XINFO", "STREAM", &self.key, Args::new()).await {
            Ok(v) => match pairs(v).into_iter().find(|(k, _)| k == "last-generated-id") {
                Some((_, id)) => entry_id_of("XINFO STREAM", id).map(Some),
                None => Err(RedisError::unexpected_reply("XINFO STREAM", "no last-generated-id")),
            },
            Err(e) if e.is_server_error("ERR no such key") => Ok(None),
            Err(e) => Err(e),
        }
    }
}
