use super::*;

fn rep(version: i64) -> Representation {
    Representation {
        version,
        etag: format!("\"{version}\""),
        body: Bytes::from(format!("{{\"version\":{version}}}")),
    }
}

fn cache() -> ReadCache {
    let cache = ReadCache::new(100, Duration::from_secs(60), Duration::from_millis(300));
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
    assert_eq!(cache.get(key, None, load(1)).await.unwrap().version, 1);
    assert_eq!(cache.get(key, None, load(2)).await.unwrap().version, 1);
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    cache.changed(key).await;
    assert_eq!(cache.get(key, None, load(2)).await.unwrap().version, 2);
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn min_version_bypasses_an_older_cached_entry() {
    let cache = cache();
    let key = Key::Order(Uuid::now_v7());
    cache
        .get(key, None, || std::future::ready(Ok::<_, ()>(Some(rep(3)))))
        .await
        .unwrap();
    // No notification yet (it is in flight): the cache still holds version 3.
    let got = cache
        .get(key, Some(4), || {
            std::future::ready(Ok::<_, ()>(Some(rep(4))))
        })
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
        .get(key, Some(9), || {
            std::future::ready(Ok::<_, ()>(Some(rep(2))))
        })
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
        .get(key, None, || async move {
            cache_ref.changed(key).await;
            Ok::<_, ()>(Some(rep(1)))
        })
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
        .get(key, None, || std::future::ready(Ok::<_, ()>(Some(rep(1)))))
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
