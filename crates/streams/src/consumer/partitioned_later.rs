//! Topics partitioned while a worker consumes them (`Admin::create_topic` on a topic in use).
//!
//! The worker reads the namespace's mark of the last partitioning
//! (`Namespace::partitioning_mark`) every `pattern_refresh`; when it changed, it looks whether
//! each of its topics of one stream now has a partition count, and starts consuming the
//! partitions of those that do, beside their own stream, whose consumer goes on. The groups
//! were created on the partitions at their beginning (`partitions.rs`), so nothing published
//! there before the worker looked is skipped.
//!
//! One task per worker and one map entry per topic: a watcher in each topic's future made
//! every topic's future kilobytes larger, and a worker may have tens of thousands of topics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::task::JoinSet;
use tributary_core::Topic;

use super::partitions::PartitionedTopic;
use super::topic::Shared;
use super::Consuming;
use crate::redis::{call, Args};

/// The worker's topics of one stream, each with what it takes to consume its partitions.
#[derive(Default)]
pub(crate) struct Watched(Mutex<HashMap<Topic, Arc<Consuming>>>);

impl Watched {
    /// `topic` is to be looked at when the mark changes: called before the topic first reads
    /// its count, so that a partitioning after that read is seen.
    pub(crate) fn watch(&self, topic: Topic, route: Arc<Consuming>) {
        self.0.lock().expect("watched lock").insert(topic, route);
    }

    /// `topic` is partitioned, or no longer consumed.
    pub(crate) fn forget(&self, topic: &Topic) -> Option<Arc<Consuming>> {
        self.0.lock().expect("watched lock").remove(topic)
    }

    fn topics(&self) -> Vec<Topic> {
        self.0.lock().expect("watched lock").keys().cloned().collect()
    }
}

/// The namespace's mark of the last partitioning (empty when there is none); `None` when it
/// could not be read (logged).
pub(crate) async fn read_mark(shared: &Shared) -> Option<String> {
    let key = shared.conn.namespace().partitioning_mark();
    match call::<Option<String>>(&shared.conn, "GET", &key, Args::new()).await {
        Ok(mark) => Some(mark.unwrap_or_default()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read whether topics were partitioned; trying again");
            None
        }
    }
}

/// Watches the worker's topics of one stream until it stops, `seen` being the mark read
/// before any topic started (`None`: it could not be read, so the first mark read counts as
/// a change). Then waits for the partitioned topics it started to stop.
pub(crate) async fn run(shared: Arc<Shared>, mut seen: Option<String>) {
    let mut started = JoinSet::new();
    // Topics whose look failed: looked at again next turn, whatever the mark.
    let mut again: Vec<Topic> = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.config.pattern_refresh) => {}
            _ = shared.stop.cancelled() => break,
        }
        let Some(mark) = read_mark(&shared).await else { continue };
        let topics = if seen.as_ref() == Some(&mark) {
            std::mem::take(&mut again)
        } else {
            again.clear();
            shared.unpartitioned.topics()
        };
        seen = Some(mark);
        if topics.is_empty() {
            continue;
        }
        let looks = futures::stream::iter(topics)
            .map(|topic| {
                let conn = &shared.conn;
                async move {
                    let count = crate::partitions::stored(conn, &topic).await;
                    (topic, count)
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>();
        let looks = tokio::select! {
            looks = looks => looks,
            _ = shared.stop.cancelled() => break,
        };
        for (topic, count) in looks {
            match count {
                Ok(Some(partitions)) => {
                    if shared.stop.is_cancelled() {
                        break;
                    }
                    let Some(route) = shared.unpartitioned.forget(&topic) else {
                        continue; // its own look found it partitioned first
                    };
                    tracing::warn!(topic = %topic, partitions, group = %shared.group,
                        "the topic was partitioned while this worker consumed it; consuming its partitions too \
                         (per-key order holds within the partitions, not between entries written before and after)");
                    let partitioned = PartitionedTopic::new(shared.clone(), topic.clone(), partitions, route, false);
                    started.spawn(super::said_on_panic(shared.clone(), topic, partitioned.run(false)));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(topic = %topic, error = %e, "cannot tell whether the topic was partitioned; trying again");
                    again.push(topic);
                }
            }
        }
    }
    while started.join_next().await.is_some() {}
}
