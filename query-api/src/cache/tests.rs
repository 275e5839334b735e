use bytes::Bytes;
use uuid::Uuid;

use super::*;

/// The customer who owns every representation of these tests.
const OWNER: Uuid = Uuid::from_u128(7);

fn rep(version: i64) -> Representation {
    Representation {
        version,
        money: (0, 0),
        etag: format!("\"{version}\""),
        body: Bytes::from(format!("{{\"version\":{version}}}")),
        owner: Some(OWNER),
    }
}

/// The event store's answer: the aggregate is at `version`.
fn committed(version: i64) -> impl FnOnce() -> std::future::Ready<Result<Option<i64>, ()>> {
    move || std::future::ready(Ok(Some(version)))
}

fn cache() -> ReadCache {
    let cache = ReadCache::new(
        1 << 20,
        Duration::from_secs(60),
        Duration::from_millis(300),
        8,
    );
    cache.listening.store(true, Ordering::SeqCst);
    cache
}

#[tokio::test]
async fn a_cached_entry_is_served_until_a_change_is_notified() {
    let cache = cache();
    let key = Key::User(Uuid::now_v7());
    let loads = AtomicU64::new(0);
    let load = |v: i64| {
        let loads = &loads;
        move || {
            loads.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<_, ()>(Some(rep(v))))
        }
    };
    assert_eq!(
        cache
            .get(key, None, load(1), committed(100))
            .await
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        cache
            .get(key, None, load(2), committed(100))
            .await
            .unwrap()
            .version,
        1
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    cache.changed(key).await;
    assert_eq!(
        cache
            .get(key, None, load(2), committed(100))
            .await
            .unwrap()
            .version,
        2
    );
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn min_version_bypasses_an_older_cached_entry() {
    let cache = cache();
    let key = Key::Order(Uuid::now_v7());
    cache
        .get(
            key,
            None,
            || std::future::ready(Ok::<_, ()>(Some(rep(3)))),
            committed(100),
        )
        .await
        .unwrap();
    // No notification yet (it is in flight): the cache still holds version 3.
    let got = cache
        .get(
            key,
            Some(4),
            || std::future::ready(Ok::<_, ()>(Some(rep(4)))),
            committed(100),
        )
        .await
        .unwrap();
    assert_eq!(got.version, 4);
}

#[tokio::test]
async fn min_version_not_reached_says_behind_after_the_bounded_wait() {
    let cache = cache();
    let key = Key::Payment(Uuid::now_v7());
    let started = Instant::now();
    let miss = cache
        .get(
            key,
            Some(9),
            || std::future::ready(Ok::<_, ()>(Some(rep(2)))),
            committed(100),
        )
        .await
        .unwrap_err();
    match miss {
        Miss::Behind { current, .. } => assert_eq!(current, Some(2)),
        other => panic!("expected Behind, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_read_that_raced_a_change_is_not_stored() {
    let cache = cache();
    let key = Key::User(Uuid::now_v7());
    let cache_ref = &cache;
    // The change is notified while the load is in flight: what it read may be stale.
    let got = cache
        .get(
            key,
            None,
            || async move {
                cache_ref.changed(key).await;
                Ok::<_, ()>(Some(rep(1)))
            },
            committed(100),
        )
        .await
        .unwrap();
    assert_eq!(got.version, 1);
    assert!(cache.entries.get(&key).await.is_none());
}

#[tokio::test]
async fn nothing_is_stored_while_the_listener_is_down() {
    let cache = cache();
    cache.listening.store(false, Ordering::SeqCst);
    let key = Key::User(Uuid::now_v7());
    cache
        .get(
            key,
            None,
            || std::future::ready(Ok::<_, ()>(Some(rep(1)))),
            committed(100),
        )
        .await
        .unwrap();
    assert!(cache.entries.get(&key).await.is_none());
}

#[test]
fn notification_payloads_parse() {
    let id = Uuid::now_v7();
    assert_eq!(Key::parse(&format!("order:{id}")), Some(Key::Order(id)));
    assert_eq!(Key::parse(&format!("invoice:{id}")), None);
    assert_eq!(Key::parse("user:not-a-uuid"), None);
}

#[tokio::test(start_paused = true)]
async fn a_missing_aggregate_is_answered_at_once() {
    let cache = cache();
    let key = Key::Order(Uuid::now_v7());
    let none = || std::future::ready(Ok::<_, ()>(None));
    let started = Instant::now();
    let miss = cache
        .get(key, Some(1), none, || std::future::ready(Ok(None)))
        .await
        .unwrap_err();
    assert!(matches!(miss, Miss::NoSuchAggregate), "{miss:?}");
    // It did not wait (the clock is paused: it moves only while every task waits on a timer).
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn waiters_past_the_cap_are_refused_and_waiters_on_one_key_share_reads() {
    let cache = Arc::new(cache());
    let key = Key::User(Uuid::now_v7());
    let loads = Arc::new(AtomicU64::new(0));
    let read = |cache: Arc<ReadCache>, loads: Arc<AtomicU64>| async move {
        let load = || {
            loads.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<_, ()>(Some(rep(1))))
        };
        cache.get(key, Some(2), load, committed(2)).await
    };
    // The cap is 8: eight wait, the ninth is refused at once.
    let waiting: Vec<_> = (0..8)
        .map(|_| tokio::spawn(read(cache.clone(), loads.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = read(cache.clone(), loads.clone()).await.unwrap_err();
    assert!(matches!(refused, Miss::Overloaded), "{refused:?}");
    for task in waiting {
        assert!(matches!(task.await.unwrap(), Err(Miss::Behind { .. })));
    }
    // Nine first reads and one on joining each, then one shared read per poll (about three in
    // 300 ms) instead of three for each of the eight waiters (which would be 9 + 8 + 24).
    let loads = loads.load(Ordering::SeqCst);
    assert!(loads < 9 + 8 + 8, "{loads} database reads");
    assert_eq!(cache.waits.keys(), 0);
}

#[tokio::test]
async fn a_skipped_store_leaves_no_older_entry_behind() {
    let cache = cache();
    let key = Key::User(Uuid::now_v7());
    // Another key in the same shard: its change makes the store of `key` unsafe.
    let neighbour = std::iter::repeat_with(|| Key::User(Uuid::now_v7()))
        .find(|k| std::ptr::eq(cache.shard(k), cache.shard(&key)))
        .unwrap();
    let got = |v: i64| move || std::future::ready(Ok::<_, ()>(Some(rep(v))));
    cache.get(key, None, got(1), committed(1)).await.unwrap();
    let cache_ref = &cache;
    let fresh = cache
        .get(
            key,
            Some(2),
            || async move {
                cache_ref.changed(neighbour).await;
                Ok::<_, ()>(Some(rep(2)))
            },
            committed(2),
        )
        .await
        .unwrap();
    assert_eq!(fresh.version, 2);
    // Version 1 must not be served any more once version 2 was read.
    assert!(cache.entries.get(&key).await.is_none());
}

#[tokio::test]
async fn the_cache_is_bounded_by_bytes() {
    let cache = ReadCache::new(
        64 * 1024,
        Duration::from_secs(60),
        Duration::from_millis(10),
        1,
    );
    cache.listening.store(true, Ordering::SeqCst);
    let big = |v: i64| Representation {
        version: v,
        money: (0, 0),
        etag: "\"1\"".to_owned(),
        body: Bytes::from(vec![b'x'; 16 * 1024]),
        owner: Some(OWNER),
    };
    for _ in 0..32 {
        let key = Key::Order(Uuid::now_v7());
        cache
            .get(
                key,
                None,
                || std::future::ready(Ok::<_, ()>(Some(big(1)))),
                committed(1),
            )
            .await
            .unwrap();
    }
    cache.entries.run_pending_tasks().await;
    assert!(cache.entries.weighted_size() <= 64 * 1024);
    assert!(cache.entries.entry_count() <= 4);
}

#[tokio::test]
async fn a_wait_on_a_resource_the_read_model_has_does_not_ask_the_event_store() {
    let cache = cache();
    let key = Key::User(Uuid::now_v7());
    let asked = AtomicU64::new(0);
    let committed = || {
        asked.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok::<_, ()>(Some(2)))
    };
    let miss = cache
        .get(
            key,
            Some(2),
            || std::future::ready(Ok::<_, ()>(Some(rep(1)))),
            committed,
        )
        .await
        .unwrap_err();
    assert!(matches!(miss, Miss::Behind { .. }), "{miss:?}");
    // Version 1 is in the read model: the aggregate exists, so only waiting can help.
    assert_eq!(asked.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_listening_cache_waits_for_notifications_instead_of_polling() {
    let cache = cache();
    let key = Key::User(Uuid::now_v7());
    let loads = AtomicU64::new(0);
    let load = || {
        loads.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok::<_, ()>(Some(rep(1))))
    };
    let miss = cache
        .get(key, Some(2), load, committed(2))
        .await
        .unwrap_err();
    assert!(matches!(miss, Miss::Behind { .. }), "{miss:?}");
    // The first read only: nothing changed since, so joining the waiters reads nothing again,
    // and no notification came in the 300 ms (a 100 ms poll would have made three more).
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_change_notified_during_the_first_read_is_read_before_waiting() {
    let cache = cache();
    let key = Key::User(Uuid::now_v7());
    let loads = AtomicU64::new(0);
    // The first read finds version 1 while version 2 is committed and notified; the
    // notification arrives before the read has joined the waiters, so only a second read
    // can see version 2 (no notification will come to wake it).
    let load = || async {
        if loads.fetch_add(1, Ordering::SeqCst) == 0 {
            cache.changed(key).await;
            Ok::<_, ()>(Some(rep(1)))
        } else {
            Ok(Some(rep(2)))
        }
    };
    let started = Instant::now();
    let found = cache.get(key, Some(2), load, committed(2)).await.unwrap();
    assert_eq!(found.version, 2);
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    // The clock is paused: it moves only while every task waits on a timer.
    assert_eq!(started.elapsed(), Duration::ZERO, "it waited for a poll");
}

#[tokio::test]
async fn a_deaf_cache_polls_while_it_waits() {
    let cache = cache();
    cache.listening.store(false, Ordering::SeqCst);
    let key = Key::User(Uuid::now_v7());
    let started = Instant::now();
    // The read model reaches version 2 after 150 ms; no notification says so.
    let load = || {
        let version = if started.elapsed() >= Duration::from_millis(150) {
            2
        } else {
            1
        };
        std::future::ready(Ok::<_, ()>(Some(rep(version))))
    };
    let found = cache.get(key, Some(2), load, committed(2)).await.unwrap();
    assert_eq!(found.version, 2);
}

#[tokio::test]
async fn a_notification_wakes_a_waiting_read() {
    let cache = Arc::new(cache());
    let key = Key::User(Uuid::now_v7());
    let version = Arc::new(AtomicU64::new(1));
    let waiting = {
        let (cache, version) = (cache.clone(), version.clone());
        tokio::spawn(async move {
            let load = || {
                let v = version.load(Ordering::SeqCst) as i64;
                std::future::ready(Ok::<_, ()>(Some(rep(v))))
            };
            cache.get(key, Some(2), load, committed(2)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    version.store(2, Ordering::SeqCst);
    cache.changed(key).await;
    let found = waiting.await.unwrap().unwrap();
    assert_eq!(found.version, 2);
}

#[tokio::test]
async fn a_representation_without_a_known_owner_is_served_but_not_stored() {
    let cache = cache();
    let key = Key::Payment(Uuid::now_v7());
    let orphan = || {
        std::future::ready(Ok::<_, ()>(Some(Representation {
            owner: None,
            ..rep(1)
        })))
    };
    let found = cache.get(key, None, orphan, committed(1)).await.unwrap();
    assert_eq!((found.version, found.owner), (1, None));
    assert!(cache.entries.get(&key).await.is_none());
    // Once its owner is known, it is stored as usual.
    let owned = || std::future::ready(Ok::<_, ()>(Some(rep(1))));
    cache.get(key, None, owned, committed(1)).await.unwrap();
    let cached = cache.entries.get(&key).await.map(|e| e.owner);
    assert_eq!(cached, Some(Some(OWNER)));
}

/// Readers who may not see a representation are told it is absent, while what was loaded and
/// cached stays whole for those who may: two waiters on one key never hand each other a view
/// filtered for the other.
#[tokio::test]
async fn a_reader_who_may_not_see_it_is_told_absent_and_the_cache_stays_whole() {
    let cache = cache();
    let key = Key::Payment(Uuid::now_v7());
    let load = || std::future::ready(Ok::<_, ()>(Some(rep(3))));
    let nobody = |_: &Representation| false;
    let owner = |r: &Representation| r.owner == Some(OWNER);
    let refused = cache
        .get_for(key, None, load, committed(3), &nobody, None)
        .await;
    assert!(matches!(refused, Err(Miss::NotFound)));
    // Loaded once, stored whole: the owner gets it from the cache.
    let loads = AtomicU64::new(0);
    let counting = || {
        loads.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok::<_, ()>(Some(rep(3))))
    };
    let seen = cache
        .get_for(key, Some(3), counting, committed(3), &owner, None)
        .await;
    assert_eq!(seen.unwrap().version, 3);
    assert_eq!(loads.load(Ordering::SeqCst), 0, "served from the cache");
    // Waiting cannot make it visible to someone who may not see it: the wait runs out.
    let waited = cache
        .get_for(key, Some(3), load, committed(3), &nobody, None)
        .await;
    assert!(
        matches!(waited, Err(Miss::Behind { current: None, .. })),
        "{waited:?}"
    );
}

/// A waiter's first read is offered to the other waiters on its key whole, not filtered for
/// its reader: an owner waiting beside someone who may not see the resource still learns its
/// current version. Before, the other's filtered read (absent) was handed to the owner, whose
/// wait then ended with no current version.
#[tokio::test]
async fn a_waiter_hands_the_others_its_first_read_unfiltered() {
    let cache = Arc::new(cache());
    let key = Key::Payment(Uuid::now_v7());
    let load = || std::future::ready(Ok::<_, ()>(Some(rep(3))));
    let owner = {
        let cache = cache.clone();
        tokio::spawn(async move {
            let owner = |r: &Representation| r.owner == Some(OWNER);
            cache
                .get_for(key, Some(5), load, committed(5), &owner, None)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let nobody = |_: &Representation| false;
    let refused = cache
        .get_for(key, Some(5), load, committed(5), &nobody, None)
        .await;
    assert!(
        matches!(refused, Err(Miss::Behind { current: None, .. })),
        "{refused:?}"
    );
    let owners = owner.await.unwrap();
    assert!(
        matches!(
            owners,
            Err(Miss::Behind {
                current: Some(3),
                ..
            })
        ),
        "{owners:?}"
    );
}

/// An order's body changes at the same version when a payment of it is captured. A reader
/// whose snapshot was taken before the capture, storing after one who read it, must not put
/// the order back as it was: before, only versions were compared, and until the capture's
/// notification arrived every read answered the order without the money already shown.
#[tokio::test]
async fn an_order_read_before_a_capture_does_not_replace_one_read_after_it() {
    let cache = cache();
    let key = Key::Order(Uuid::now_v7());
    let unpaid = Arc::new(rep(3));
    let paid = Arc::new(rep(3).with_money(500, 0));
    let shard = cache.shard(&key);
    let generation = shard.generation.load(Ordering::SeqCst);
    cache.store(key, &paid, shard, generation).await;
    cache.store(key, &unpaid, shard, generation).await;
    let cached = cache.entries.get(&key).await.expect("an entry");
    assert_eq!(cached.rank(), (3, 500, 0));
    // The other way round, the later read replaces the earlier one.
    let key = Key::Order(Uuid::now_v7());
    cache.store(key, &unpaid, shard, generation).await;
    cache.store(key, &paid, shard, generation).await;
    let cached = cache.entries.get(&key).await.expect("an entry");
    assert_eq!(cached.rank(), (3, 500, 0));
}

/// `customer`'s read of a new order at version 1, waiting for version 2 (which the store has).
async fn waiting_for_an_order(
    cache: Arc<ReadCache>,
    customer: Option<Uuid>,
) -> Result<Arc<Representation>, Miss<()>> {
    let key = Key::Order(Uuid::now_v7());
    let load = || std::future::ready(Ok::<_, ()>(Some(rep(1))));
    cache
        .get_for(key, Some(2), load, committed(2), &|_| true, customer)
        .await
}

/// One customer holds at most their own share of the waiting places: past it their next
/// wait is refused at once, while another customer and staff still wait. Before, one customer
/// sending hopeless `min_version` reads could hold every place, and everyone else's
/// read-your-writes was refused.
#[tokio::test]
async fn one_customer_cannot_hold_every_waiting_place() {
    let cache = Arc::new(cache().with_waiters_per_customer(2));
    let (greedy, other) = (Uuid::now_v7(), Uuid::now_v7());
    let wait = waiting_for_an_order;
    let waiting: Vec<_> = (0..2)
        .map(|_| tokio::spawn(wait(cache.clone(), Some(greedy))))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = wait(cache.clone(), Some(greedy)).await.unwrap_err();
    assert!(matches!(refused, Miss::Overloaded), "{refused:?}");
    let others = [Some(other), None].map(|who| tokio::spawn(wait(cache.clone(), who)));
    for task in waiting.into_iter().chain(others) {
        let waited = task.await.unwrap().unwrap_err();
        assert!(matches!(waited, Miss::Behind { .. }), "{waited:?}");
    }
    // Their places are given back: the customer waits again.
    let waited = wait(cache.clone(), Some(greedy)).await.unwrap_err();
    assert!(matches!(waited, Miss::Behind { .. }), "{waited:?}");
}

/// A `min_version` further past the event store's version than any wait can bring is answered
/// at once as behind, with what the read model has. Before, it waited the whole bounded wait,
/// holding a waiter's place: a few accounts asking for the largest version filled them all.
#[tokio::test]
async fn a_version_no_wait_can_reach_is_answered_at_once() {
    let key = Key::User(Uuid::now_v7());
    let answer = read_far_ahead(key, || std::future::ready(Ok::<_, ()>(Some(rep(1))))).await;
    assert!(
        matches!(
            answer,
            Err(Miss::Behind {
                current: Some(1),
                ..
            })
        ),
        "{answer:?}"
    );
}

/// The same before the read model has the resource at all (its projector lagging behind the
/// aggregate's first event): the event store alone says how far the version lies. Before, any
/// version of an aggregate the store had was waited for in full.
#[tokio::test]
async fn a_version_no_wait_can_reach_is_answered_at_once_before_the_read_model_has_it() {
    let key = Key::Order(Uuid::now_v7());
    let load = || std::future::ready(Ok::<_, ()>(None));
    let answer = read_far_ahead(key, load).await;
    assert!(
        matches!(answer, Err(Miss::Behind { current: None, .. })),
        "{answer:?}"
    );
    // Within reach of the store's version, it is waited for (here until the bounded wait ends).
    let cache = ReadCache::new(
        1 << 20,
        Duration::from_secs(60),
        Duration::from_millis(300),
        8,
    );
    cache.listening.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let answer = cache.get(key, Some(3), load, committed(1)).await;
    assert!(
        matches!(answer, Err(Miss::Behind { current: None, .. })),
        "{answer:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}

/// A read of `key` for the largest version, the event store at version 1 and a wait of 30 s,
/// given 10 s to answer: it must answer without waiting.
async fn read_far_ahead<F>(key: Key, load: impl Fn() -> F) -> Result<Arc<Representation>, Miss<()>>
where
    F: Future<Output = Result<Option<Representation>, ()>>,
{
    let cache = ReadCache::new(1 << 20, Duration::from_secs(60), Duration::from_secs(30), 8);
    cache.listening.store(true, Ordering::SeqCst);
    tokio::time::timeout(
        Duration::from_secs(10),
        cache.get(key, Some(i64::MAX), load, committed(1)),
    )
    .await
    .expect("the read waited for a version no wait can reach")
}

/// Customers together hold at most three quarters of the waiting places: whatever number of
/// accounts wait, staff and services still get one. Before, a few dozen accounts, each at
/// its own cap, took every place and every other reader was refused.
#[tokio::test]
async fn customers_together_leave_a_quarter_of_the_waiting_places() {
    // Eight places (six for customers), two per customer.
    let cache = Arc::new(cache().with_waiters_per_customer(2));
    let wait = waiting_for_an_order;
    let customers: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let waiting: Vec<_> = customers
        .iter()
        .flat_map(|c| [*c, *c])
        .map(|c| tokio::spawn(wait(cache.clone(), Some(c))))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = wait(cache.clone(), Some(Uuid::now_v7())).await.unwrap_err();
    assert!(matches!(refused, Miss::Overloaded), "{refused:?}");
    let staff = wait(cache.clone(), None).await.unwrap_err();
    assert!(matches!(staff, Miss::Behind { .. }), "{staff:?}");
    for task in waiting {
        let waited = task.await.unwrap().unwrap_err();
        assert!(matches!(waited, Miss::Behind { .. }), "{waited:?}");
    }
}
