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

/// Counts attempts per key in a fixed window that starts at the first one; once `max` are in
/// the window, the key is blocked until the window ends. An attempt is counted when it
/// starts ([`FailureLimiter::attempt`]), before the password is checked, so concurrent
/// guesses cannot slip past the limit; a success takes its attempt back
/// ([`FailureLimiter::succeeded`]). At most [`MAX_KEYS`] keys are tracked: when the table is
/// full, the keys whose window has ended go, then the keys that are not blocked (their partial
/// counts are forgotten), and only if every key is blocked is a new key refused. Refusing new
/// keys as soon as the table was full let anyone with enough addresses lock every other client
/// out; forgetting partial counts gives such a client nothing it could not get from its next
/// fresh address.
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<String, (u32, Instant)>>,
}

/// Most keys a [`FailureLimiter`] tracks (bounded memory whatever callers send).
pub const MAX_KEYS: usize = 100_000;

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

    /// Counts an attempt; `Err` with the time left when the key is blocked already (then
    /// nothing is counted).
    pub fn attempt(&self, key: &str) -> Result<(), Duration> {
        let Ok(mut entries) = self.entries.lock() else {
            return Err(self.window);
        };
        let now = Instant::now();
        if !entries.contains_key(key) && entries.len() >= MAX_KEYS {
            let (window, max) = (self.window, self.max);
            entries.retain(|_, (_, since)| since.elapsed() < window);
            if entries.len() >= MAX_KEYS {
                // All at once, so the next keys find room without another pass.
                entries.retain(|_, (count, _)| *count >= max);
                tracing::warn!(
                    kept = entries.len(),
                    "failure limiter full: partial counts forgotten"
                );
            }
            if entries.len() >= MAX_KEYS {
                return Err(self.window);
            }
        }
        let entry = entries.entry(key.to_owned()).or_insert((0, now));
        if entry.1.elapsed() >= self.window {
            *entry = (0, now);
        }
        if entry.0 >= self.max {
            return Err(self.window.saturating_sub(entry.1.elapsed()));
        }
        entry.0 += 1;
        Ok(())
    }

    /// Takes back an attempt that succeeded; with `forget`, the key's whole count.
    pub fn succeeded(&self, key: &str, forget: bool) {
        if let Ok(mut entries) = self.entries.lock() {
            if forget {
                entries.remove(key);
            } else if let Some(entry) = entries.get_mut(key) {
                entry.0 = entry.0.saturating_sub(1);
                // Nothing counted: the key takes no room (attempts given back cannot fill the
                // limiter and make it forget the others' counts).
                if entry.0 == 0 {
                    entries.remove(key);
                }
            }
        }
    }

    /// Drops keys whose window has ended.
    pub fn sweep(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            let window = self.window;
            entries.retain(|_, (_, since)| since.elapsed() < window);
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
    fn attempts_block_after_the_maximum_and_only_that_key() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(limiter.attempt("a").is_ok());
        }
        assert!(limiter.blocked("a").is_some());
        let left = limiter.attempt("a").expect_err("blocked");
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(55));
        assert!(limiter.attempt("b").is_ok());
        limiter.succeeded("a", true);
        assert_eq!(limiter.blocked("a"), None);
    }

    /// An attempt given back leaves no key behind: otherwise attempts given back (logins shed
    /// before their check) could fill the limiter at no cost and make it forget every partial
    /// count of the others.
    #[test]
    fn an_attempt_given_back_leaves_no_key() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        limiter.attempt("a").unwrap();
        limiter.attempt("b").unwrap();
        limiter.attempt("b").unwrap();
        limiter.succeeded("a", false);
        limiter.succeeded("b", false);
        let entries = limiter.entries.lock().unwrap();
        assert!(!entries.contains_key("a"));
        assert_eq!(entries.get("b").map(|e| e.0), Some(1));
    }

    #[test]
    fn a_success_takes_its_attempt_back() {
        let limiter = FailureLimiter::new(2, Duration::from_secs(60));
        for _ in 0..10 {
            assert!(limiter.attempt("a").is_ok());
            limiter.succeeded("a", false);
        }
        assert!(limiter.attempt("a").is_ok());
        assert!(limiter.attempt("a").is_ok());
        assert!(limiter.attempt("a").is_err());
    }

    #[test]
    fn a_block_ends_with_its_window() {
        let limiter = FailureLimiter::new(1, Duration::from_millis(30));
        assert!(limiter.attempt("a").is_ok());
        assert!(limiter.blocked("a").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(limiter.blocked("a"), None);
        limiter.sweep();
        assert!(limiter.entries.lock().unwrap().is_empty());
    }

    #[test]
    fn a_full_table_forgets_partial_counts_not_blocks_and_refuses_only_when_all_are_blocked() {
        let limiter = FailureLimiter::new(2, Duration::from_secs(60));
        for _ in 0..2 {
            assert!(limiter.attempt("guesser").is_ok());
        }
        for i in 1..MAX_KEYS {
            assert!(limiter.attempt(&i.to_string()).is_ok());
        }
        // Full: a new client is counted (before, it was refused for the window).
        assert!(limiter.attempt("newcomer").is_ok());
        assert!(limiter.entries.lock().unwrap().len() <= 2);
        assert!(limiter.blocked("guesser").is_some(), "a block outlives it");
        assert!(limiter.attempt("guesser").is_err());

        let blocking = FailureLimiter::new(1, Duration::from_secs(60));
        for i in 0..MAX_KEYS {
            assert!(blocking.attempt(&i.to_string()).is_ok());
        }
        assert!(
            blocking.attempt("one-more").is_err(),
            "every key blocked: the table stays bounded"
        );
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
