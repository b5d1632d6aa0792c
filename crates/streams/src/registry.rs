//! The namespace's registry of topics (`<ns>:topics:{all}`): producers register the topics
//! they publish to, and workers subscribed to topic patterns ask it for topics newer than the
//! last they saw, instead of scanning the whole keyspace every `pattern_refresh` (a cost that
//! grew with every key in Redis, idempotency keys included).
//!
//! Topics the registry misses (created by an older version or another client, or before the
//! registry was lost with Redis' data) are found by a full scan when a worker starts and every
//! ten minutes, and registered then.

use std::time::Duration;

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
    let ns = conn.namespace();
    let names = topics.iter().map(|t| Value::from(t.as_str())).collect();
    let _: i64 = REGISTER_TOPICS.run(conn, vec![ns.topic_registry(), ns.topic_registry_seq()], names).await?;
    Ok(())
}

/// A worker's view of the registry: which topics it has seen, for its topic patterns.
#[derive(Debug)]
pub(crate) struct Discovery {
    conn: Connection,
    /// The registry's counter when last read.
    seen: i64,
    scanned_at: Option<tokio::time::Instant>,
}

impl Discovery {
    pub(crate) fn new(conn: Connection) -> Self {
        Self { conn, seen: 0, scanned_at: None }
    }

    /// Topics matching any of `patterns` (and permitted by them) that are new since the last
    /// call: registered since then, or found by the periodic scan. The same topic may come
    /// again (the caller keeps what it runs).
    pub(crate) async fn new_topics(&mut self, patterns: &[TopicPattern]) -> Result<Vec<Topic>, StreamError> {
        let mut found = Vec::new();
        if self.scanned_at.map_or(true, |at| at.elapsed() >= SCAN_EVERY) {
            let admin = crate::Admin::new(self.conn.clone());
            for pattern in patterns {
                found.extend(admin.topics_matching(pattern).await?);
            }
            // So that other workers find them in the registry.
            register(&self.conn, &found.iter().collect::<Vec<_>>()).await?;
            self.scanned_at = Some(tokio::time::Instant::now());
        }
        let ns = self.conn.namespace();
        let keys = vec![ns.topic_registry(), ns.topic_registry_seq()];
        let mut reply = NEW_TOPICS.run::<Vec<Value>>(&self.conn, keys, vec![Value::from(self.seen)]).await?.into_iter();
        self.seen = reply.next().and_then(|v| v.as_i64()).unwrap_or(0);
        found.extend(
            reply
                .filter_map(|v| v.into_string().and_then(|name| Topic::new(name).ok()))
                .filter(|t| patterns.iter().any(|p| p.matches(t) && p.permits(t))),
        );
        Ok(found)
    }
}
