//! Keeping a read in the cache, or dropping what it supersedes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use moka::ops::compute::Op;

use super::{Key, ReadCache, Representation, Shard};

impl ReadCache {
    /// Stores `fresh` unless a change was notified since `generation` was read (then `fresh`
    /// may be superseded already), the listener is down, or its owner is not known yet;
    /// never replaces one of higher rank (a newer version, or an order's same version with
    /// more money moved: a reader whose snapshot predates a capture must not put back the
    /// order as it was before it). The check is repeated after the store: a notification
    /// that arrived in between may have invalidated the key before the store, so the store is
    /// undone.
    pub(super) async fn store(
        &self,
        key: Key,
        fresh: &Arc<Representation>,
        shard: &Shard,
        generation: u64,
    ) {
        let unchanged =
            || self.is_listening() && shard.generation.load(Ordering::SeqCst) == generation;
        if fresh.owner.is_none() || !unchanged() {
            self.drop_older(key, fresh.rank()).await;
            return;
        }
        let fresh = fresh.clone();
        self.entries
            .entry(key)
            .and_compute_with(|existing| {
                let newer_cached = existing.is_some_and(|e| e.value().rank() > fresh.rank());
                std::future::ready(if newer_cached {
                    Op::Nop
                } else {
                    Op::Put(fresh)
                })
            })
            .await;
        if !unchanged() {
            self.entries.invalidate(&key).await;
        }
    }

    /// Drops the entry of `key` if it ranks below `rank` (what was just read).
    pub(super) async fn drop_older(&self, key: Key, rank: (i64, i64, i64)) {
        self.entries
            .entry(key)
            .and_compute_with(|existing| {
                let older = existing.is_some_and(|e| e.value().rank() < rank);
                std::future::ready(if older { Op::Remove } else { Op::Nop })
            })
            .await;
    }
}
