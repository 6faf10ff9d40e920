//! [`Backoff`]: exponential delays with jitter, reset after a healthy period — what the watcher waits between failed
//! lists or watches, and what the controller waits before retrying an object whose reconcile failed.

use std::time::Duration;

use tokio::time::Instant;

/// How delays grow.
#[derive(Clone, Copy, Debug, PartialEq)]
#[must_use]
pub struct BackoffConfig {
    /// The first delay.
    pub initial: Duration,
    /// No delay is longer.
    pub max: Duration,
    /// Each failure multiplies the delay by this.
    pub factor: f64,
    /// Each delay is scaled by a random factor in `1 ± jitter` (0 to 1), so many clients do not retry in lockstep.
    pub jitter: f64,
    /// A failure this long after the previous one starts again from `initial`.
    pub reset_after: Duration,
}

impl BackoffConfig {
    /// The watcher's default, as kube-rs: 0.8 s doubling to 30 s, ±20% jitter, reset after 2 minutes without failure.
    pub const WATCHER: Self = Self {
        initial: Duration::from_millis(800),
        max: Duration::from_secs(30),
        factor: 2.0,
        jitter: 0.2,
        reset_after: Duration::from_secs(120),
    };

    /// The controller's default for failed reconciles: 250 ms doubling to 5 minutes, ±10% jitter. (A success resets
    /// an object's backoff; `reset_after` only matters for objects that fail rarely.)
    pub const RECONCILE: Self = Self {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(300),
        factor: 2.0,
        jitter: 0.1,
        reset_after: Duration::from_secs(600),
    };

    /// Without jitter: the same delays every time (for tests and for reasoning).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = 0.0;
        self
    }
}

/// The failure history of one thing that is retried.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
    last_failure: Option<Instant>,
}

impl Backoff {
    /// No failures yet.
    #[must_use]
    pub fn new(config: BackoffConfig) -> Self {
        Self { config, failures: 0, last_failure: None }
    }

    /// Records a failure and returns how long to wait before trying again.
    pub fn next_delay(&mut self) -> Duration {
        let now = Instant::now();
        if self.last_failure.is_some_and(|last| now.duration_since(last) >= self.config.reset_after) {
            self.failures = 0;
        }
        self.last_failure = Some(now);
        let exponent = i32::try_from(self.failures).unwrap_or(i32::MAX);
        self.failures = self.failures.saturating_add(1);
        let base = self.config.initial.as_secs_f64() * self.config.factor.powi(exponent);
        let base = base.min(self.config.max.as_secs_f64());
        let jitter = self.config.jitter.clamp(0.0, 1.0);
        let scale = if jitter > 0.0 { 1.0 - jitter + 2.0 * jitter * fastrand::f64() } else { 1.0 };
        Duration::from_secs_f64((base * scale).min(self.config.max.as_secs_f64()))
    }

    /// Forgets the failures: the next delay is the initial one.
    pub fn reset(&mut self) {
        self.failures = 0;
        self.last_failure = None;
    }

    /// Failures since the last reset.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn delays_double_up_to_the_maximum_then_reset_after_a_healthy_period() {
        let mut backoff = Backoff::new(BackoffConfig::WATCHER.without_jitter());
        let delays: Vec<u64> = (0..8).map(|_| backoff.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
        tokio::time::advance(Duration::from_secs(119)).await;
        assert_eq!(backoff.next_delay(), Duration::from_secs(30), "119 s is not yet healthy");
        tokio::time::advance(Duration::from_secs(121)).await;
        assert_eq!(backoff.next_delay(), Duration::from_millis(800), "a healthy period starts over");
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut backoff = Backoff::new(BackoffConfig::WATCHER);
            let delay = backoff.next_delay().as_secs_f64();
            assert!((0.64..=0.96).contains(&delay), "{delay}");
            seen.insert((delay * 1000.0) as u64);
        }
        assert!(seen.len() > 10, "jitter should spread delays: {seen:?}");
    }
}
