//! What the dashboard's server sampled: the latest figures of every topic, and ten minutes of
//! points per topic for the charts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use tributary::metrics::Sampler;
use tributary::TopicStats;

use super::Dashboard;

/// How far back the charts go.
pub(crate) const KEPT: Duration = Duration::from_secs(600);

/// One sample of a topic, for the charts.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Point {
    /// Milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
    pub(crate) length: u64,
    pub(crate) in_per_s: Option<f64>,
    pub(crate) dead_letters: u64,
    pub(crate) groups: Vec<GroupPoint>,
}

/// One sample of a group.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct GroupPoint {
    pub(crate) name: String,
    pub(crate) lag: Option<u64>,
    pub(crate) pending: u64,
    pub(crate) out_per_s: Option<f64>,
}

/// The sampled figures.
pub(crate) struct History {
    pub(crate) interval: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
pub(crate) struct Inner {
    /// The last sample of every topic, in topic order.
    pub(crate) latest: Vec<TopicStats>,
    /// Each topic's points, oldest first.
    pub(crate) points: HashMap<String, VecDeque<Point>>,
    /// Why the last round failed, if it did.
    pub(crate) error: Option<String>,
    /// Rounds that completed.
    pub(crate) rounds: u64,
    /// When the last round that completed began (ms since the epoch).
    pub(crate) sampled_at_ms: Option<u64>,
}

impl History {
    pub(crate) fn new(interval: Duration) -> Self {
        Self { interval, inner: Mutex::default() }
    }

    /// Runs `f` on what was sampled.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        f(&self.inner.lock().expect("history lock"))
    }

    /// Records a round: rates against the previous one, a point per topic. A topic missing
    /// from a round (gone, or its read failed) keeps its points until they are older than
    /// [`KEPT`], like every point.
    fn record(&self, sampled: Vec<TopicStats>) {
        let mut inner = self.inner.lock().expect("history lock");
        let oldest_kept = now_ms().saturating_sub(KEPT.as_millis() as u64);
        let before: HashMap<&str, &TopicStats> = inner.latest.iter().map(|s| (s.topic.as_str(), s)).collect();
        let mut points: Vec<(String, Point)> = Vec::with_capacity(sampled.len());
        for now in &sampled {
            let earlier = before.get(now.topic.as_str()).copied();
            let groups = now
                .groups
                .iter()
                .map(|g| GroupPoint {
                    name: g.name.clone(),
                    lag: g.lag,
                    pending: g.pending,
                    out_per_s: earlier.and_then(|e| now.rate_out(e, &g.name)),
                })
                .collect();
            let point = Point {
                at_ms: now.sampled_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64,
                length: now.length,
                in_per_s: earlier.and_then(|e| now.rate_in(e)),
                dead_letters: now.dead_letters,
                groups,
            };
            points.push((now.topic.clone(), point));
        }
        for (topic, point) in points {
            inner.points.entry(topic).or_default().push_back(point);
        }
        for series in inner.points.values_mut() {
            while series.front().is_some_and(|p| p.at_ms < oldest_kept) {
                series.pop_front();
            }
        }
        inner.points.retain(|_, series| !series.is_empty());
        let started = sampled.iter().map(|s| s.sampled_at).min().unwrap_or_else(SystemTime::now);
        inner.sampled_at_ms = Some(started.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64);
        inner.latest = sampled;
        inner.error = None;
        inner.rounds += 1;
    }

    fn failed(&self, error: String) {
        self.inner.lock().expect("history lock").error = Some(error);
    }
}

/// Samples every topic every interval, for as long as the dashboard runs.
pub(crate) async fn sample_forever(dashboard: Arc<Dashboard>) {
    let mut sampler = Sampler::new(dashboard.conn.clone());
    let every = dashboard.history.interval;
    loop {
        let started = tokio::time::Instant::now();
        // A round that panics is said, and the next one tried: the page must not go on showing
        // old figures as if they were fresh.
        match std::panic::AssertUnwindSafe(sampler.sample()).catch_unwind().await {
            Ok(Ok(sampled)) => dashboard.history.record(sampled),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not sample the topics; trying again in {every:?}");
                dashboard.history.failed(e.to_string());
            }
            Err(_) => {
                tracing::error!("sampling the topics panicked; trying again in {every:?}");
                dashboard.history.failed("sampling the topics panicked (see the dashboard's log)".to_owned());
                sampler = Sampler::new(dashboard.conn.clone());
            }
        }
        tokio::time::sleep_until(started + every).await;
    }
}

/// The point of `series` closest to `ago` before its last, for "growing" flags.
pub(crate) fn point_before(series: &VecDeque<Point>, ago: Duration) -> Option<&Point> {
    let last = series.back()?.at_ms;
    let wanted = last.saturating_sub(ago.as_millis() as u64);
    series.iter().find(|p| p.at_ms >= wanted).filter(|p| p.at_ms < last)
}

/// Now, as the page's clock reads it.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}
