//! The namespace's registry of topics (`<ns>:topics:{all}`): producers register the topics
//! they publish to, and workers subscribed to topic patterns ask it for topics newer than the
//! last they saw, instead of scanning the whole keyspace every `pattern_refresh` (a cost that
//! grew with every key in Redis, idempotency keys included).
//!
//! Topics the registry misses (created by an older version or another client, or before the
//! registry was lost with Redis' data) are found by a full scan when a worker starts and every
//! ten minutes, and registered then.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;

use fred::types::Value;
use tributary_core::{Connection, Topic, TopicPattern};

use crate::scripts::{NEW_TOPICS, REGISTER_TOPICS};
use crate::StreamError;

/// How often pattern discovery also scans the keyspace for topics the registry misses.
const SCAN_EVERY: Duration = Duration::from_secs(600);

/// Registers `topics` (one script call; those registered already are left as they are).
pub(crate) async fn register(conn: &Connection, topics: &[&Topic]) -> Result<(), StreamError> {
    if topics.is_empty() {
        return Ok(());
    }
    let names = topics.iter().map(|t| Value::from(t.as_str())).collect();
    let _: i64 = REGISTER_TOPICS.run(conn, keys(conn), names).await?;
    Ok(())
}

/// The registry, its counter and its epoch.
fn keys(conn: &Connection) -> Vec<String> {
    let ns = conn.namespace();
    vec![ns.topic_registry(), ns.topic_registry_seq(), ns.topic_registry_epoch()]
}

/// A worker's view of the registry: which topics it has seen, for its topic patterns.
#[derive(Debug)]
pub(crate) struct Discovery {
    conn: Connection,
    /// The registry's epoch and counter when last read.
    epoch: String,
    seen: i64,
    scanned_at: Option<tokio::time::Instant>,
    /// Matching topics whose stream does not exist (yet): registered before their first entry
    /// (a scheduled message not moved yet, a publish under way), or deleted by hand. Looked at
    /// again every call; consumed once they exist.
    waiting: HashSet<Topic>,
}

impl Discovery {
    pub(crate) fn new(conn: Connection) -> Self {
        Self { conn, epoch: String::new(), seen: 0, scanned_at: None, waiting: HashSet::new() }
    }

    /// Topics matching any of `patterns` (and permitted by them) that exist and are new since
    /// the last call: registered since then, found by the periodic scan, or waiting for their
    /// stream until now. The same topic may come again (the caller keeps what it runs).
    pub(crate) async fn new_topics(&mut self, patterns: &[TopicPattern]) -> Result<Vec<Topic>, StreamError> {
        let wanted = |t: &Topic| patterns.iter().any(|p| p.matches(t) && p.permits(t));
        let mut found = Vec::new();
        if self.scanned_at.map_or(true, |at| at.elapsed() >= SCAN_EVERY) {
            match crate::Admin::new(self.conn.clone()).topics().await {
                Ok(topics) => {
                    // So that other workers find them in the registry.
                    if let Err(e) = register(&self.conn, &topics.iter().collect::<Vec<_>>()).await {
                        tracing::warn!(error = %e, "could not register the topics a scan found");
                    }
                    found.extend(topics.into_iter().filter(|t| wanted(t)));
                    self.scanned_at = Some(tokio::time::Instant::now());
                }
                Err(e) => {
                    // The registry still works; scan again in a minute.
                    tracing::warn!(error = %e, "scanning for topics failed; topic patterns use the registry alone");
                    self.scanned_at = Some(tokio::time::Instant::now() - SCAN_EVERY + Duration::from_secs(60));
                }
            }
        }
        let args = vec![Value::from(self.epoch.as_str()), Value::from(self.seen)];
        let mut reply = NEW_TOPICS.run::<Vec<Value>>(&self.conn, keys(&self.conn), args).await?.into_iter();
        self.epoch = reply.next().and_then(|v| v.into_string()).unwrap_or_default();
        self.seen = reply.next().and_then(|v| v.as_i64()).unwrap_or(0);
        found
            .extend(reply.filter_map(|v| v.into_string().and_then(|name| Topic::new(name).ok())).filter(|t| wanted(t)));
        found.extend(self.waiting.drain());
        found.sort();
        found.dedup();
        // Only topics with a stream or a partition count: consuming one would create it (and
        // its group) for a topic that has none. A partitioned topic's own stream may not exist.
        let admin = crate::Admin::new(self.conn.clone());
        let exists: Vec<(Topic, bool)> = futures::stream::iter(found)
            .map(|topic| {
                let admin = &admin;
                async move {
                    let exists = match admin.topic_exists(topic.as_str()).await {
                        Ok(false) => admin.partitions(topic.as_str()).await.map(|n| n.is_some()),
                        other => other,
                    };
                    (topic, exists)
                }
            })
            .buffer_unordered(32)
            // Not known to exist: looked at again next time.
            .map(|(topic, exists)| (topic, exists.unwrap_or(false)))
            .collect()
            .await;
        let mut ready = Vec::new();
        for (topic, exists) in exists {
            if exists {
                ready.push(topic);
            } else {
                self.waiting.insert(topic);
            }
        }
        Ok(ready)
    }
}
