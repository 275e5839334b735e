//! The read cache: serialized single-resource representations (a user, an order, a payment) in
//! a `moka` cache, invalidated by PostgreSQL change notifications, plus the bounded wait behind
//! `min_version`.
//!
//! # How stale can a cached entry be?
//! Every committed change to `rm_users`, `rm_orders` or `rm_payments` sends `<kind>:<id>` on
//! channel `read_models` (a trigger; a payment also names its order). A listener task
//! invalidates the entry when the notification arrives. Notifications are delivered after the
//! projector's commit, so a cached entry can be older than the database only for the time the
//! notification takes to reach this process: normally a millisecond or two on one host.
//!
//! Three rules keep that bound honest:
//! - **No caching while deaf.** Entries are stored only while the listener is connected. When
//!   its connection drops, notifications may be lost, so the whole cache is cleared and nothing
//!   is stored until it listens again.
//! - **No stale inserts.** A reader that missed records its shard's change generation before
//!   reading the database and keeps what it read in the cache only if no notification for
//!   that shard arrived before or during the store; otherwise the row it read may already be
//!   superseded.
//! - **Time to live.** Entries expire after `query_api.cache_ttl_secs` regardless, bounding
//!   the damage of a notification lost in a way nobody noticed.
//!
//! A store that is skipped for one of these reasons also drops an entry older than what was
//! read, so no reader is served a version older than one already read from the database.
//! Nor is a representation whose owner is not known yet stored: a payment read before its
//! order was projected would, once cached, stay hidden from its customer until it expired,
//! since the order's arrival notifies the order, not its payments.
//!
//! The cache is bounded by bytes (`query_api.cache_max_bytes`): each entry weighs its body and
//! entity tag plus a fixed overhead.
//!
//! And whatever the cache holds, a read with `min_version = N` is never answered from an entry
//! older than N: such a read goes to the database. If the read model is behind and the event
//! store has no such aggregate either, waiting cannot help: `NoSuchAggregate` at once.
//! Otherwise the read waits (woken by the same
//! notifications; polling every 100 ms while the listener is down and once a second as a
//! safety net while it is up; sharing each database read with the other waiters on
//! the resource; see `wait`) until the read model catches up or the bounded wait runs out,
//! which the caller is told about explicitly. At most `query_api.max_version_waiters` reads
//! wait at once, customers' reads at most three quarters of them (the rest kept for staff
//! and services), and `query_api.max_version_waiters_per_customer` of one customer's; past
//! any, `Overloaded`. A read for a version more than [`REACHABLE_AHEAD`] past both the read
//! model's and the event store's is answered `Behind` at once.

use std::future::Future;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

// The clock tokio's timers run on, so that tests can pause it.
use tokio::time::Instant;

use moka::future::Cache;
use tokio::sync::Notify;
use uuid::Uuid;

use wait::Waits;

pub use entry::{Key, Miss, Representation};

/// The notification channel the read-model triggers send on.
pub const CHANNEL: &str = "read_models";

/// Shards of change generations and wake-ups; a notification touches one shard.
const SHARDS: usize = 1024;

/// How often a waiting read re-checks the database while the listener is down (no
/// notification can wake it then).
const POLL: Duration = Duration::from_millis(100);

/// How often a waiting read re-checks the database while the listener is up. Every change of
/// its row wakes it then, so this is only a safety net; a short interval here would make each
/// waiter read the database ten times a second, and a read model that falls behind (many
/// waiters) would then be slowed further by the reads of those waiting for it.
const LISTENING_POLL: Duration = Duration::from_secs(1);

/// What an entry weighs beyond its body and tag: key, version, pointers and moka's own share.
const ENTRY_OVERHEAD: usize = 128;

/// How far past the event store's version of an aggregate a `min_version` may lie and still
/// be waited for: the process manager, say, may append a few events within a wait, never
/// this many. A read asking for more is answered at once (and the store asked only when the
/// read model is this far behind it too): it held a waiter's place and a connection slot for
/// the whole wait, and a few accounts asking for the largest version kept every other reader
/// from waiting at all.
const REACHABLE_AHEAD: i64 = 100;

struct Shard {
    generation: AtomicU64,
    changed: Notify,
}

/// A `min_version` read's first answer from the database (begun at the read's `started`),
/// unfiltered (other principals' waiters may take it), and its shard's change generation read
/// just before it.
struct FirstRead {
    generation: u64,
    found: Option<Arc<Representation>>,
}

pub struct ReadCache {
    entries: Cache<Key, Arc<Representation>>,
    shards: Box<[Shard]>,
    hasher: std::collections::hash_map::RandomState,
    listening: AtomicBool,
    max_wait: Duration,
    waits: Waits,
}

/// What an entry counts against `max_bytes`.
fn weigh(_: &Key, representation: &Arc<Representation>) -> u32 {
    let bytes = representation.body.len() + representation.etag.len() + ENTRY_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl ReadCache {
    pub fn new(max_bytes: u64, ttl: Duration, max_wait: Duration, max_waiters: usize) -> Self {
        Self {
            entries: Cache::builder()
                .weigher(weigh)
                .max_capacity(max_bytes)
                .time_to_live(ttl)
                .build(),
            shards: (0..SHARDS)
                .map(|_| Shard {
                    generation: AtomicU64::new(0),
                    changed: Notify::new(),
                })
                .collect(),
            hasher: Default::default(),
            listening: AtomicBool::new(false),
            max_wait,
            waits: Waits::new(max_waiters),
        }
    }

    /// Holds one customer to `per_customer` reads waiting at once (by default only the
    /// overall cap applies).
    pub fn with_waiters_per_customer(mut self, per_customer: usize) -> Self {
        self.waits.per_customer = per_customer;
        self
    }

    fn shard(&self, key: &Key) -> &Shard {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// Reports the cache's size (`query_cache_entries`, `query_cache_bytes`) every
    /// `every`, after moka's pending maintenance; runs until dropped.
    pub async fn report_size(self: Arc<Self>, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            self.entries.run_pending_tasks().await;
            metrics::gauge!("query_cache_entries").set(self.entries.entry_count() as f64);
            metrics::gauge!("query_cache_bytes").set(self.entries.weighted_size() as f64);
        }
    }

    /// Whether the cache is hearing change notifications (and so storing entries).
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// A notification: the resource changed in the database.
    pub async fn changed(&self, key: Key) {
        let shard = self.shard(&key);
        shard.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate(&key).await;
        shard.changed.notify_waiters();
    }

    /// Forgets everything: notifications may have been missed.
    fn forget_all(&self) {
        for shard in self.shards.iter() {
            shard.generation.fetch_add(1, Ordering::SeqCst);
            shard.changed.notify_waiters();
        }
        self.entries.invalidate_all();
    }

    /// The representation of `key`, from the cache or from `load`; with `min_version`, one at
    /// that version or newer, waiting (bounded) for the read model to reach it. `committed`
    /// answers the aggregate's version in the event store (`None`: no such aggregate); it is
    /// asked only when the read model is behind `min_version`.
    pub async fn get<E, F, Fut, C, CFut>(
        &self,
        key: Key,
        min_version: Option<i64>,
        load: F,
        committed: C,
    ) -> Result<Arc<Representation>, Miss<E>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<Representation>, E>>,
        C: FnOnce() -> CFut,
        CFut: Future<Output = Result<Option<i64>, E>>,
    {
        self.get_for(key, min_version, load, committed, &|_| true, None)
            .await
    }

    /// As [`Self::get`], for a reader who may see only representations `accept` allows: one
    /// it may not see counts as absent. Loads and the cache stay shared by all readers (what
    /// is loaded and stored is never filtered), so waiters of different principals on one
    /// resource never hand each other a view filtered for someone else. `customer` is the
    /// reader when a customer (held to their own cap of waiting reads), `None` for staff.
    pub async fn get_for<E, F, Fut, C, CFut>(
        &self,
        key: Key,
        min_version: Option<i64>,
        load: F,
        committed: C,
        accept: &(dyn Fn(&Representation) -> bool + Sync),
        customer: Option<Uuid>,
    ) -> Result<Arc<Representation>, Miss<E>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<Representation>, E>>,
        C: FnOnce() -> CFut,
        CFut: Future<Output = Result<Option<i64>, E>>,
    {
        let kind = key.kind();
        if let Some(hit) = self.entries.get(&key).await.filter(|hit| accept(hit)) {
            if min_version.is_none_or(|min| hit.version >= min) {
                metrics::counter!("query_cache_requests_total", "resource" => kind, "result" => "hit")
                    .increment(1);
                return Ok(hit);
            }
        }
        metrics::counter!("query_cache_requests_total", "resource" => kind, "result" => "miss")
            .increment(1);
        let started = Instant::now();
        let generation = self.shard(&key).generation.load(Ordering::SeqCst);
        let loaded = self
            .load_and_store(key, &load)
            .await
            .map_err(Miss::Failed)?;
        let found = loaded.clone().filter(|found| accept(found));
        let Some(min) = min_version else {
            return found.ok_or(Miss::NotFound);
        };
        match &found {
            Some(found) if found.version >= min => return Ok(found.clone()),
            // The read model has the resource, so the aggregate exists: wait for the version,
            // unless no wait can bring it (see `REACHABLE_AHEAD`).
            Some(found) => {
                if min - found.version > REACHABLE_AHEAD
                    && (committed().await.map_err(Miss::Failed)?)
                        .is_none_or(|stored| min - stored > REACHABLE_AHEAD)
                {
                    return Err(Miss::Behind {
                        current: Some(found.version),
                        waited: started.elapsed(),
                    });
                }
            }
            // A version beyond the event store's may still be written within the wait (by the
            // process manager, say), so only an aggregate without any event, or one whose
            // store is too far behind the version asked for, ends it at once (the read model
            // not having the resource yet says nothing of how far the version lies).
            None => match committed().await.map_err(Miss::Failed)? {
                None => return Err(Miss::NoSuchAggregate),
                Some(stored) if min - stored > REACHABLE_AHEAD => {
                    return Err(Miss::Behind {
                        current: None,
                        waited: started.elapsed(),
                    });
                }
                Some(_) => {}
            },
        }
        // Unfiltered: other principals' waiters may take this read.
        let first = FirstRead {
            generation,
            found: loaded,
        };
        let found = self
            .wait_for(key, min, started, first, &load, Reader { accept, customer })
            .await?;
        metrics::histogram!("query_min_version_wait_seconds", "resource" => kind)
            .record(started.elapsed().as_secs_f64());
        Ok(found)
    }

    /// Waits until `load` returns version `min` or newer, or the bounded wait runs out. `first`
    /// is the read that found the read model behind: while no change has been notified on the
    /// key's shard since just before it, it is still the newest answer, so the wait starts on
    /// it instead of reading the database again at once.
    async fn wait_for<E, F, Fut>(
        &self,
        key: Key,
        min: i64,
        started: Instant,
        first: FirstRead,
        load: &F,
        Reader { accept, customer }: Reader<'_>,
    ) -> Result<Arc<Representation>, Miss<E>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<Representation>, E>>,
    {
        let kind = key.kind();
        let Some(waiter) = self.waits.join(key, customer) else {
            metrics::counter!("query_min_version_overloaded_total", "resource" => kind)
                .increment(1);
            return Err(Miss::Overloaded);
        };
        let deadline = started + self.max_wait;
        let mut fresh_since = started;
        let mut first = Some(first);
        loop {
            let shard = self.shard(&key);
            let notified = shard.changed.notified();
            tokio::pin!(notified);
            // From here on a notification wakes this wait, so checking the generation after
            // this misses none: one counted before the check forces a read, one after wakes.
            notified.as_mut().enable();
            let found = match first.take() {
                Some(first) if shard.generation.load(Ordering::SeqCst) == first.generation => {
                    waiter.wait().offer(started, first.found.clone()).await;
                    first.found.filter(|found| accept(found))
                }
                _ => waiter
                    .wait()
                    .read(fresh_since, || self.load_and_store(key, load))
                    .await
                    .map_err(Miss::Failed)?
                    .filter(|found| accept(found)),
            };
            if let Some(found) = found.as_ref().filter(|f| f.version >= min) {
                return Ok(found.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                metrics::counter!("query_min_version_timeouts_total", "resource" => kind)
                    .increment(1);
                return Err(Miss::Behind {
                    current: found.map(|f| f.version),
                    waited: started.elapsed(),
                });
            }
            // Losing the listener wakes every waiter (`forget_all`), which then polls quickly.
            let poll = if self.is_listening() {
                LISTENING_POLL
            } else {
                POLL
            };
            let nap = (deadline - now).min(poll);
            let woken = tokio::time::timeout(nap, notified).await.is_ok();
            fresh_since = wait::fresh_since(Instant::now(), woken, poll);
        }
    }

    /// Reads `key` from the database and keeps it in the cache when that is safe.
    async fn load_and_store<E, F, Fut>(
        &self,
        key: Key,
        load: &F,
    ) -> Result<Option<Arc<Representation>>, E>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<Representation>, E>>,
    {
        let shard = self.shard(&key);
        let generation = shard.generation.load(Ordering::SeqCst);
        let loaded = load().await?.map(Arc::new);
        if let Some(fresh) = &loaded {
            self.store(key, fresh, shard, generation).await;
        }
        Ok(loaded)
    }
}

/// Who waits: what they may see, and the customer they are (`None`: staff or a service).
struct Reader<'a> {
    accept: &'a (dyn Fn(&Representation) -> bool + Sync),
    customer: Option<Uuid>,
}

mod entry;
mod listen;
mod store;
#[cfg(test)]
mod tests;
mod wait;
