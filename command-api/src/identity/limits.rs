//! Abuse limits: failed logins per account and per client address ([`FailureLimiter`]), and
//! commands per principal ([`RateLimiter`], a keyed GCRA from `governor`). Both live in the
//! process: with several command API replicas each enforces its own share.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Counts failures per key in a fixed window that starts at the first failure; once `max`
/// failures are in the window, the key is blocked until the window ends.
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<String, (u32, Instant)>>,
}

impl FailureLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max: max.max(1),
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// How long the key stays blocked, if it is.
    pub fn blocked(&self, key: &str) -> Option<Duration> {
        let entries = self.entries.lock().ok()?;
        let (count, since) = entries.get(key)?;
        let left = self.window.checked_sub(since.elapsed())?;
        (*count >= self.max).then_some(left)
    }

    pub fn fail(&self, key: &str) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let now = Instant::now();
        let entry = entries.entry(key.to_owned()).or_insert((0, now));
        if entry.1.elapsed() >= self.window {
            *entry = (0, now);
        }
        entry.0 += 1;
        // Bounded memory: an address spraying many accounts cannot grow the map for ever.
        if entries.len() > 100_000 {
            let window = self.window;
            entries.retain(|_, (_, since)| since.elapsed() < window);
        }
    }

    pub fn clear(&self, key: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }
}

/// A rate per key; [`RateLimiter::check`] answers how long to wait when the key is over it.
pub struct RateLimiter<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn per_second(rate: u32, burst: u32) -> Self {
        Self::with(Quota::per_second(nonzero(rate)).allow_burst(nonzero(burst.max(rate))))
    }

    pub fn per_minute(rate: u32) -> Self {
        Self::with(Quota::per_minute(nonzero(rate)))
    }

    fn with(quota: Quota) -> Self {
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
        }
    }

    /// `Ok` to go ahead, or how long until the key may go ahead again.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets keys that are back at full burst (run now and again to bound memory).
    pub fn sweep(&self) {
        self.limiter.retain_recent();
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

/// Whole seconds for `Retry-After`, at least one.
pub fn retry_after_secs(wait: Duration) -> u32 {
    (wait.as_secs_f64().ceil() as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_after_the_maximum_and_only_that_key() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        for _ in 0..2 {
            limiter.fail("a");
        }
        assert_eq!(limiter.blocked("a"), None);
        limiter.fail("a");
        let left = limiter.blocked("a").expect("blocked");
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(55));
        assert_eq!(limiter.blocked("b"), None);
        limiter.clear("a");
        assert_eq!(limiter.blocked("a"), None);
    }

    #[test]
    fn a_block_ends_with_its_window() {
        let limiter = FailureLimiter::new(1, Duration::from_millis(30));
        limiter.fail("a");
        assert!(limiter.blocked("a").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(limiter.blocked("a"), None);
    }

    #[test]
    fn a_rate_allows_its_burst_then_names_the_wait() {
        let limiter = RateLimiter::per_second(1, 3);
        for _ in 0..3 {
            assert!(limiter.check(&"p").is_ok());
        }
        let wait = limiter.check(&"p").expect_err("over the burst");
        assert!(wait <= Duration::from_secs(1));
        assert_eq!(retry_after_secs(wait), 1);
        assert!(limiter.check(&"q").is_ok(), "keys are limited apart");
    }
}
