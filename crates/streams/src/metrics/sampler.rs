//! Gauges read from Redis: each topic's length, dead letters and scheduled messages, and each
//! group's lag, pending entries, consumers and oldest pending entry.

use std::collections::HashMap;
use std::time::Duration;

use ::metrics::{gauge, Gauge, Label};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tributary_core::Connection;

use super::{label, SYSTEM};
use crate::admin::Admin;
use crate::topic_stats::TopicStats;
use crate::StreamError;

/// Entries in a topic's stream (gauge). Labels: `messaging.system`,
/// `messaging.destination.name` (the topic).
pub const TOPIC_LENGTH: &str = "tributary.topic.length";
/// Entries in a topic's dead-letter stream (gauge). Labels as [`TOPIC_LENGTH`].
pub const DEAD_LETTER_LENGTH: &str = "tributary.dead_letter.length";
/// Messages scheduled for a topic and not yet due (gauge). Labels as [`TOPIC_LENGTH`].
pub const SCHEDULED_LENGTH: &str = "tributary.scheduled.length";
/// Entries of a topic not yet delivered to a group (gauge; NaN while Redis cannot tell: after
/// `XDEL` of entries the group had not read, or for a group created at an arbitrary id). Labels: `messaging.system`, `messaging.destination.name`,
/// `messaging.consumer.group.name`.
pub const GROUP_LAG: &str = "tributary.group.lag";
/// Entries delivered to a group and not yet acknowledged (gauge). Labels as [`GROUP_LAG`].
pub const GROUP_PENDING: &str = "tributary.group.pending";
/// Consumers of a group (gauge). Labels as [`GROUP_LAG`].
pub const GROUP_CONSUMERS: &str = "tributary.group.consumers";
/// Seconds the oldest pending entry of a group has gone without a delivery or a lease renewal
/// (gauge; 0 when nothing is pending). Above `claim_idle`, nobody works on it. Labels as
/// [`GROUP_LAG`].
pub const GROUP_OLDEST_PENDING_IDLE: &str = "tributary.group.oldest_pending.idle";

/// Topics a [`Sampler`] reads at once.
pub const CONCURRENCY: usize = 16;

/// Samples topics from Redis into gauges, every [`interval`](Self::interval): the figures of
/// [`Admin::topic_stats`] for every topic of the namespace, or for the topics named.
///
/// Workers do not sample: run one sampler per deployment, or one in every instance (each then
/// reports the same figures; aggregate them with `max`). A round costs, for every topic of the
/// namespace, two `SCAN`s of the keyspace to list them (none with [`topics`](Self::topics)),
/// then four commands a topic and two more a group with entries pending, [`CONCURRENCY`]
/// topics at a time. A topic or group that disappears has its gauges set to 0.
///
/// # Example
/// ```no_run
/// # async fn demo(conn: tributary_core::Connection) {
/// use std::time::Duration;
/// use tributary_streams::metrics::Sampler;
///
/// // After installing a recorder (for instance metrics-exporter-prometheus):
/// let sampler = Sampler::new(conn).interval(Duration::from_secs(10)).spawn();
/// // ... the gauges follow Redis until `sampler` is dropped.
/// # drop(sampler);
/// # }
/// ```
#[derive(Debug)]
pub struct Sampler {
    admin: Admin,
    topics: Option<Vec<String>>,
    interval: Duration,
    reported: HashMap<Series, SeriesGauges>,
}

/// A topic, or a group of a topic.
type Series = (String, Option<String>);

#[derive(Debug)]
enum SeriesGauges {
    Topic { length: Gauge, dead_letters: Gauge, scheduled: Gauge },
    Group { lag: Gauge, pending: Gauge, consumers: Gauge, oldest_pending_idle: Gauge },
}

impl SeriesGauges {
    fn new((topic, group): &Series) -> Self {
        let mut labels =
            vec![Label::from_static_parts(label::SYSTEM, SYSTEM), Label::new(label::DESTINATION, topic.clone())];
        match group {
            None => Self::Topic {
                length: gauge!(TOPIC_LENGTH, labels.iter()),
                dead_letters: gauge!(DEAD_LETTER_LENGTH, labels.iter()),
                scheduled: gauge!(SCHEDULED_LENGTH, labels.iter()),
            },
            Some(group) => {
                labels.push(Label::new(label::GROUP, group.clone()));
                Self::Group {
                    lag: gauge!(GROUP_LAG, labels.iter()),
                    pending: gauge!(GROUP_PENDING, labels.iter()),
                    consumers: gauge!(GROUP_CONSUMERS, labels.iter()),
                    oldest_pending_idle: gauge!(GROUP_OLDEST_PENDING_IDLE, labels.iter()),
                }
            }
        }
    }

    /// The series is gone: its gauges say 0 (the facade cannot remove them).
    fn zero(&self) {
        match self {
            Self::Topic { length, dead_letters, scheduled } => {
                for g in [length, dead_letters, scheduled] {
                    g.set(0.0);
                }
            }
            Self::Group { lag, pending, consumers, oldest_pending_idle } => {
                for g in [lag, pending, consumers, oldest_pending_idle] {
                    g.set(0.0);
                }
            }
        }
    }
}

impl Sampler {
    /// Samples every topic of `conn`'s namespace (RPC request streams, and topics that so far
    /// have only scheduled messages, included), every 15 s.
    pub fn new(conn: Connection) -> Self {
        Self { admin: Admin::new(conn), topics: None, interval: Duration::from_secs(15), reported: HashMap::new() }
    }

    /// Samples only these topics.
    #[must_use]
    pub fn topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.topics = Some(topics.into_iter().map(Into::into).collect());
        self
    }

    /// Time between the starts of two rounds (default 15 s). A round that takes longer is
    /// followed at once by the next, with a warning.
    #[must_use]
    pub fn interval(mut self, every: Duration) -> Self {
        self.interval = every;
        self
    }

    /// Samples once and sets the gauges; returns what it read, in the order of the topics. A topic that cannot be read is
    /// skipped with a warning (its gauges keep their values).
    ///
    /// # Errors
    /// [`StreamError`] when the topics cannot be listed.
    pub async fn sample(&mut self) -> Result<Vec<TopicStats>, StreamError> {
        let topics = match &self.topics {
            Some(topics) => topics.clone(),
            None => {
                let mut all = self.admin.topics().await?;
                all.extend(self.admin.scheduled_topics().await?);
                all.sort();
                all.dedup();
                all.into_iter().map(|t| t.to_string()).collect()
            }
        };
        // A partitioned topic's partitions are sampled too, each under its name (`orders#3`).
        let topics = with_partitions(&self.admin, topics).await;
        let mut seen: HashMap<Series, SeriesGauges> = HashMap::with_capacity(self.reported.len());
        let mut sampled = Vec::with_capacity(topics.len());
        let admin = &self.admin;
        let mut reads = futures::stream::iter(topics)
            .map(|topic| async move {
                let stats = admin.topic_stats(&topic).await;
                (topic, stats)
            })
            .buffered(CONCURRENCY);
        while let Some((topic, stats)) = reads.next().await {
            let stats = match stats {
                Ok(stats) => stats,
                Err(e) => {
                    tracing::warn!(topic = %topic, error = %e, "could not sample a topic's figures");
                    // Keep its series as they are.
                    let keep: Vec<Series> = self.reported.keys().filter(|(t, _)| *t == topic).cloned().collect();
                    for series in keep {
                        let gauges = self.reported.remove(&series).expect("listed");
                        seen.insert(series, gauges);
                    }
                    continue;
                }
            };
            if let SeriesGauges::Topic { length, dead_letters, scheduled } =
                take(&mut self.reported, &mut seen, (topic.clone(), None))
            {
                length.set(stats.length as f64);
                dead_letters.set(stats.dead_letters as f64);
                scheduled.set(stats.scheduled as f64);
            }
            for group in &stats.groups {
                if let SeriesGauges::Group { lag, pending, consumers, oldest_pending_idle } =
                    take(&mut self.reported, &mut seen, (topic.clone(), Some(group.name.clone())))
                {
                    lag.set(group.lag.map_or(f64::NAN, |n| n as f64));
                    pending.set(group.pending as f64);
                    consumers.set(group.consumers as f64);
                    oldest_pending_idle.set(group.oldest_pending_idle.unwrap_or_default().as_secs_f64());
                }
            }
            sampled.push(stats);
        }
        for gone in self.reported.values() {
            gone.zero();
        }
        self.reported = seen;
        Ok(sampled)
    }

    /// Samples every [`interval`](Self::interval) in a task of its own, until the returned
    /// handle is dropped. A round that fails is said at `warn` and tried again at the next.
    /// (The gauges keep their last values after; an exporter's idle timeout can drop them,
    /// such as `PrometheusBuilder::idle_timeout`.)
    #[must_use = "sampling stops when the handle is dropped"]
    pub fn spawn(mut self) -> SamplerTask {
        let task = tokio::spawn(async move {
            let mut next = Instant::now();
            loop {
                let started = Instant::now();
                if let Err(e) = self.sample().await {
                    tracing::warn!(error = %e, "could not list the topics to sample; trying again in {:?}", self.interval);
                }
                next += self.interval;
                if next < Instant::now() {
                    tracing::warn!(took = ?started.elapsed(), interval = ?self.interval,
                        "sampling the topics took longer than the interval; sampling again at once");
                    next = Instant::now();
                }
                tokio::time::sleep_until(next).await;
            }
        });
        SamplerTask { task }
    }
}

/// The gauges of `series`: those reported last round, or new ones; moved to `seen`.
/// `topics`, each followed by its partitions when it is partitioned (a topic whose count cannot
/// be read is sampled alone).
async fn with_partitions(admin: &Admin, topics: Vec<String>) -> Vec<String> {
    let counts: Vec<u32> = futures::stream::iter(topics.clone())
        .map(|topic| {
            let admin = admin.clone();
            async move { admin.partitions(&topic).await.ok().flatten().unwrap_or(0) }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let mut all = Vec::with_capacity(topics.len());
    for (topic, count) in topics.into_iter().zip(counts) {
        let partitions: Vec<String> = (0..count).map(|p| format!("{topic}#{p}")).collect();
        all.push(topic);
        all.extend(partitions);
    }
    all
}

fn take<'a>(
    reported: &mut HashMap<Series, SeriesGauges>,
    seen: &'a mut HashMap<Series, SeriesGauges>,
    series: Series,
) -> &'a SeriesGauges {
    let gauges = reported.remove(&series).unwrap_or_else(|| SeriesGauges::new(&series));
    seen.entry(series).or_insert(gauges)
}

/// A [`Sampler`] running in a task; dropping it stops the task.
#[derive(Debug)]
#[must_use = "sampling stops when the handle is dropped"]
pub struct SamplerTask {
    task: JoinHandle<()>,
}

impl Drop for SamplerTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}
