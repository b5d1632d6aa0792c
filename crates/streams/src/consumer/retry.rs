//! The retry policy: exponential backoff with jitter, per message.

use std::time::Duration;

/// How long to wait before delivering a failed message again.
///
/// The delay after attempt `n` (counting from 1) is drawn uniformly from
/// `[d/2, d]` where `d = min(initial * multiplier^(n-1), max)` ("equal jitter"): retries of
/// many messages that failed together spread out, and no retry comes sooner than half the
/// nominal delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    initial: Duration,
    max: Duration,
    multiplier: f64,
}

impl Default for RetryPolicy {
    /// 200 ms doubling up to 30 s.
    fn default() -> Self {
        Self { initial: Duration::from_millis(200), max: Duration::from_secs(30), multiplier: 2.0 }
    }
}

impl RetryPolicy {
    /// Exponential backoff from `initial`, doubling, capped at `max`.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Self { initial, max: max.max(initial), multiplier: 2.0 }
    }

    /// Sets the growth factor per attempt (at least 1). Defaults to 2.
    pub fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = if m.is_finite() { m.max(1.0) } else { 2.0 };
        self
    }

    /// The nominal (un-jittered) delay after `attempt`.
    pub fn nominal_delay(&self, attempt: u64) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The jittered delay after `attempt`: uniform in `[nominal/2, nominal]`.
    pub fn delay(&self, attempt: u64) -> Duration {
        let d = self.nominal_delay(attempt);
        d / 2 + d.mul_f64(fastrand::f64() / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let p = RetryPolicy::exponential(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(p.nominal_delay(1), Duration::from_millis(100));
        assert_eq!(p.nominal_delay(2), Duration::from_millis(200));
        assert_eq!(p.nominal_delay(4), Duration::from_millis(800));
        assert_eq!(p.nominal_delay(5), Duration::from_secs(1));
        assert_eq!(p.nominal_delay(u64::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_half_to_full_delay() {
        let p = RetryPolicy::exponential(Duration::from_millis(100), Duration::from_secs(10));
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..1000 {
            let d = p.delay(3);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400), "{d:?}");
            distinct.insert(d);
        }
        assert!(distinct.len() > 100, "jitter should spread delays");
    }
}
