//! Reads that wait for `min_version`: capped in number, and sharing one database read per key.
//!
//! Every waiter on one resource wakes on the same change notification (its shard's `Notify`)
//! or poll; the first to get there reads the database and the others take that read instead of
//! making their own, so many waiters on one resource cost about one query per wake-up. A read
//! woken by a notification only takes a read that started after it woke (so it sees the
//! change); one woken by its poll timer takes any read of the last poll interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::{Key, Representation};

/// The last database read of one key made on behalf of its waiters.
#[derive(Default)]
pub(super) struct KeyWait {
    last: tokio::sync::Mutex<Option<(Instant, Option<Arc<Representation>>)>>,
}

impl KeyWait {
    /// What `load` returns, or what a read that started at or after `fresh_since` returned.
    pub(super) async fn read<E, F, Fut>(
        &self,
        fresh_since: Instant,
        load: F,
    ) -> Result<Option<Arc<Representation>>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<Arc<Representation>>, E>>,
    {
        let mut last = self.last.lock().await;
        if let Some((started, found)) = &*last {
            if *started >= fresh_since {
                return Ok(found.clone());
            }
        }
        let started = Instant::now();
        let found = load().await?;
        *last = Some((started, found.clone()));
        Ok(found)
    }

    /// Offers a read a waiter made before it joined (begun at `started`) to the others, as if
    /// it had been made through [`Self::read`], unless a later one is already there.
    pub(super) async fn offer(&self, started: Instant, found: Option<Arc<Representation>>) {
        let mut last = self.last.lock().await;
        if last.as_ref().is_none_or(|(at, _)| *at < started) {
            *last = Some((started, found));
        }
    }
}

/// The waiters of every key, and the caps on how many there are at once: in all, and per
/// customer (so that one customer cannot hold every place and refuse everyone else's reads).
pub(super) struct Waits {
    keys: Mutex<HashMap<Key, Weak<KeyWait>>>,
    permits: Arc<Semaphore>,
    /// Customers' waiters now.
    customers: Mutex<CustomerWaits>,
    /// The most one customer may have (the overall cap unless lowered).
    pub(super) per_customer: usize,
    /// The most all customers together may have: three quarters of the places, the rest kept
    /// for staff and services (the process manager among them). Accounts cost nothing to
    /// open, so a per-customer cap alone let a few dozen of them, each waiting for versions
    /// nothing would write, take every place.
    customers_in_all: usize,
}

/// Customers' waiters: per customer (one with none has no entry), and in all.
#[derive(Default)]
struct CustomerWaits {
    each: HashMap<Uuid, usize>,
    all: usize,
}

/// One waiter: its share of the key's reads and its permit; leaving cleans up after the last.
pub(super) struct Waiter<'a> {
    /// Always `Some` until dropped.
    wait: Option<Arc<KeyWait>>,
    key: Key,
    customer: Option<Uuid>,
    waits: &'a Waits,
    _permit: OwnedSemaphorePermit,
}

impl Waits {
    /// `max_waiters` in all, any of them one customer's until `per_customer` is lowered.
    pub(super) fn new(max_waiters: usize) -> Self {
        Self {
            keys: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(max_waiters)),
            customers: Mutex::new(CustomerWaits::default()),
            per_customer: max_waiters,
            // A quarter kept, at least one place once there are two.
            customers_in_all: max_waiters - (max_waiters / 4).max(usize::from(max_waiters > 1)),
        }
    }

    /// Joins the waiters of `key`, for `customer` (`None`: staff or a service, held only to
    /// the overall cap); `None` when a cap is reached.
    pub(super) fn join(&self, key: Key, customer: Option<Uuid>) -> Option<Waiter<'_>> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        if let Some(customer) = customer {
            let mut customers = self.customers.lock().unwrap_or_else(|e| e.into_inner());
            if customers.all >= self.customers_in_all {
                return None;
            }
            let waiting = customers.each.entry(customer).or_insert(0);
            if *waiting >= self.per_customer {
                if *waiting == 0 {
                    customers.each.remove(&customer);
                }
                return None;
            }
            *waiting += 1;
            customers.all += 1;
        }
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let wait = match keys.get(&key).and_then(Weak::upgrade) {
            Some(wait) => wait,
            None => {
                let wait = Arc::new(KeyWait::default());
                keys.insert(key, Arc::downgrade(&wait));
                wait
            }
        };
        metrics::gauge!("query_min_version_waiters").increment(1.0);
        Some(Waiter {
            wait: Some(wait),
            key,
            customer,
            waits: self,
            _permit: permit,
        })
    }

    /// How many keys have waiters.
    #[cfg(test)]
    pub(super) fn keys(&self) -> usize {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Waiter<'_> {
    pub(super) fn wait(&self) -> &KeyWait {
        self.wait
            .as_deref()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        metrics::gauge!("query_min_version_waiters").decrement(1.0);
        let mut keys = self.waits.keys.lock().unwrap_or_else(|e| e.into_inner());
        // Dropped under the lock, so the last waiter to leave sees no one left.
        drop(self.wait.take());
        if keys.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
            keys.remove(&self.key);
        }
        drop(keys);
        if let Some(customer) = self.customer {
            let mut customers = self
                .waits
                .customers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(waiting) = customers.each.get_mut(&customer) {
                *waiting -= 1;
                if *waiting == 0 {
                    customers.each.remove(&customer);
                }
                customers.all -= 1;
            }
        }
    }
}

/// Since when a read counts as fresh for a waiter that woke at `woke`: after a notification
/// only a read begun since; after a poll, any read of the last `poll`.
pub(super) fn fresh_since(woke: Instant, notified: bool, poll: Duration) -> Instant {
    if notified {
        woke
    } else {
        woke.checked_sub(poll).unwrap_or(woke)
    }
}
