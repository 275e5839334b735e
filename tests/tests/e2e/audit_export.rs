//! The audit export: `GET /v1/audit/export` streams every audit entry in log order as NDJSON
//! (support and admin only), filtered by aggregate type and time and resumable by position;
//! `projector audit-export` writes the same entries to a file as JSON lines or CSV, and with
//! `--resume` appends only what came after the file's last record.

use std::time::Duration;

use serde_json::Value;

use crate::support::app::{status_type_text, unique_email};
use crate::support::processes::run_projector;
use crate::support::projector::{projected_commerce, wait_until_projected};
use crate::support::query::spawn_query_api;
use crate::support::stack::wait_until_published;

/// Waits until everything written is projected; returns the audit log's size.
async fn projected_audit(pool: &sqlx::PgPool) -> i64 {
    wait_until_published(pool, Duration::from_secs(30)).await;
    wait_until_projected(pool, Duration::from_secs(30)).await;
    sqlx::query_scalar("SELECT count(*) FROM rm_audit")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn export(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    query: &str,
) -> (u16, String, String) {
    let mut request = client.get(format!("{url}/v1/audit/export{query}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    status_type_text(request.send().await.expect("export request")).await
}

/// The export, asked again (for up to 60 s, as long as the tests wait for the relay, which
/// has the same bound) until it holds `count` entries: it leaves out transactions newer than
/// any still open in the PostgreSQL cluster, and a test running beside this one may hold one
/// open for a moment. If it never does, the panic names the sessions holding transactions.
async fn complete_export(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    count: usize,
) -> (u16, String, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answer = export(client, url, Some(token), query).await;
        if answer.0 != 200 || answer.2.lines().count() >= count {
            return answer;
        }
        if std::time::Instant::now() >= deadline {
            panic!(
                "the export held {} of {count} entries after 60 s; transactions open in the cluster: {:?}",
                answer.2.lines().count(),
                open_transactions().await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The cluster's sessions holding a transaction id, oldest first: what holds the export back.
async fn open_transactions() -> Vec<(String, String, String, String)> {
    let url = std::env::var("DATABASE_ADMIN_URL").unwrap_or_default();
    let Ok(pool) = sqlx::PgPool::connect(&url).await else {
        return Vec::new();
    };
    sqlx::query_as(
        "SELECT coalesce(datname, ''), coalesce(state, ''),
             coalesce((now() - xact_start)::text, ''), left(coalesce(query, ''), 200)
         FROM pg_stat_activity WHERE backend_xid IS NOT NULL ORDER BY age(backend_xid) DESC",
    )
    .fetch_all(&pool)
    .await
    .unwrap_or_default()
}

fn lines(body: &str) -> Vec<Value> {
    body.lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect()
}

fn positions(entries: &[Value]) -> Vec<i64> {
    entries
        .iter()
        .map(|e| e["global_position"].as_i64().unwrap())
        .collect()
}

/// The stored events' positions in the order the relay publishes them (transaction, then
/// position).
async fn log_order(pool: &sqlx::PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT global_position FROM events ORDER BY tx_id, global_position")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_log_exports_in_order_filtered_and_resumable() {
    let (stack, _projector) = projected_commerce(3).await;
    let pool = &stack.app.pool;
    let query = spawn_query_api(&stack.settings).await;
    let client = reqwest::Client::new();
    let admin = query.token.clone().unwrap();
    let stored = projected_audit(pool).await;
    let in_store: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(stored, in_store, "every event is in the audit log");

    let (status, content_type, body) =
        complete_export(&client, &query.url, &admin, "", stored as usize).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "application/x-ndjson");
    let all = lines(&body);
    assert_eq!(all.len() as i64, stored);
    let all_positions = positions(&all);
    assert_eq!(all_positions, log_order(pool).await, "log order");
    // Each entry is the stored event with its metadata.
    let first = &all[0];
    let (event_type, actor): (String, String) = sqlx::query_as(
        "SELECT event_type, metadata->>'actor' FROM events WHERE global_position = $1",
    )
    .bind(all_positions[0])
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(first["event_type"], event_type);
    assert_eq!(first["actor"], actor);
    for key in [
        "event_id",
        "occurred_at",
        "correlation_id",
        "causation_id",
        "traceparent",
        "payload",
    ] {
        assert!(!first[key].is_null(), "{key} missing from {first}");
    }

    // Resumable: after a position, exactly the rest.
    let middle = all_positions[all.len() / 2];
    let expected = all.len() - (all.len() / 2 + 1);
    let (_, _, rest) = complete_export(
        &client,
        &query.url,
        &admin,
        &format!("?after_position={middle}"),
        expected,
    )
    .await;
    let rest = positions(&lines(&rest));
    assert_eq!(rest, all_positions[all.len() / 2 + 1..].to_vec());

    // Filtered by aggregate type and by time.
    let in_orders = all
        .iter()
        .filter(|e| e["aggregate_type"] == "order")
        .count();
    let (_, _, orders) = complete_export(
        &client,
        &query.url,
        &admin,
        "?aggregate_type=order",
        in_orders,
    )
    .await;
    let orders = lines(&orders);
    assert!(!orders.is_empty());
    assert!(orders.iter().all(|e| e["aggregate_type"] == "order"));
    assert_eq!(
        orders.len(),
        all.iter()
            .filter(|e| e["aggregate_type"] == "order")
            .count()
    );
    let cut = all[all.len() / 2]["occurred_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let cut_at = chrono::DateTime::parse_from_rfc3339(&cut).unwrap();
    let occurred = |e: &Value| {
        chrono::DateTime::parse_from_rfc3339(e["occurred_at"].as_str().unwrap()).unwrap()
    };
    let earlier = all.iter().filter(|e| occurred(e) < cut_at).count();
    let (status, _, before) =
        complete_export(&client, &query.url, &admin, &format!("?to={cut}"), earlier).await;
    assert_eq!(status, 200, "{before}");
    let before = lines(&before);
    assert!(before.iter().all(|e| {
        chrono::DateTime::parse_from_rfc3339(e["occurred_at"].as_str().unwrap()).unwrap() < cut_at
    }));
    let (_, _, after) = complete_export(
        &client,
        &query.url,
        &admin,
        &format!("?from={cut}"),
        all.len() - earlier,
    )
    .await;
    assert_eq!(
        before.len() + lines(&after).len(),
        all.len(),
        "from and to split it"
    );

    // Support and admin only; bad parameters are 422.
    let customer = stack.app.customer().await;
    let (status, _, _) = export(&client, &query.url, Some(&customer.token), "").await;
    assert_eq!(status, 403);
    let (status, _, _) = export(&client, &query.url, None, "").await;
    assert_eq!(status, 401);
    for bad in [
        "?aggregate_type=invoice",
        "?after_position=-1",
        "?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        "?from=2026-01-01%2000:00:00Z",
        "?limit=5",
    ] {
        let (status, _, body) = export(&client, &query.url, Some(&admin), bad).await;
        assert_eq!(status, 422, "{bad}: {body}");
    }

    // The same offline, as CSV, then resumed after more events. (The customer above added
    // its registration: count again once it is projected.)
    let stored = projected_audit(pool).await;
    let dir = std::env::temp_dir().join(format!("audit-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("audit.csv");
    let run = |args: &[&str]| run_projector(&stack.settings, &[&["audit-export"], args].concat());
    let out = run(&["--format", "csv", "--out", csv.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let progress = String::from_utf8_lossy(&out.stderr);
    let last: Value = serde_json::from_str(
        progress
            .lines()
            .rev()
            .find(|l| l.contains("\"job\""))
            .expect("progress as JSON lines when not on a terminal"),
    )
    .unwrap();
    assert_eq!(last["finished"], true);
    assert_eq!(last["done"], stored);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(
        text.lines().count() as i64,
        stored + 1,
        "a header and every entry"
    );
    assert!(text.starts_with(infra::audit_export::CSV_HEADER));

    stack.app.register(&unique_email()).await;
    let now = projected_audit(pool).await;
    let resume = [
        "--format",
        "csv",
        "--out",
        csv.to_str().unwrap(),
        "--resume",
    ];
    assert!(now > stored);
    let out = run(&resume);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(
        text.lines().count() as i64,
        now + 1,
        "only the new entries were appended, once"
    );
    let out = run(&resume);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        text,
        "nothing new, nothing appended"
    );
    // An export interrupted half-way through a record: the resume cuts the half line off and
    // goes on after the last whole record (before, the half line named no position, and the
    // resume appended every entry again).
    let mut cut = text.clone();
    cut.push_str("123,user,half a rec");
    std::fs::write(&csv, &cut).unwrap();
    let out = run(&resume);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        text,
        "the half record cut off, nothing appended twice"
    );

    let jsonl = dir.join("audit.jsonl");
    let out = run(&[
        "--out",
        jsonl.to_str().unwrap(),
        "--after-position",
        &middle.to_string(),
        "--aggregate-type",
        "order",
    ]);
    assert!(out.status.success(), "{out:?}");
    let written = lines(&std::fs::read_to_string(&jsonl).unwrap());
    assert!(written.iter().all(|e| e["aggregate_type"] == "order"));
    let order = log_order(pool).await;
    let past_middle = &order[order.iter().position(|p| *p == middle).unwrap() + 1..];
    let orders: Vec<i64> =
        sqlx::query_scalar("SELECT global_position FROM events WHERE aggregate_type = 'order'")
            .fetch_all(pool)
            .await
            .unwrap();
    let expected: Vec<i64> = past_middle
        .iter()
        .copied()
        .filter(|p| orders.contains(p))
        .collect();
    assert!(
        !expected.is_empty(),
        "no order events after position {middle}"
    );
    assert_eq!(
        positions(&written),
        expected,
        "every order entry after the position, in log order"
    );
    let out = run(&[
        "--out",
        jsonl.to_str().unwrap(),
        "--aggregate-type",
        "invoice",
    ]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}

/// An export never passes an event it has not returned: not one the audit read model has not
/// applied yet (its topics are consumed apart, so one can lag another), nor one whose
/// transaction is still open with a lower position than a committed one. Before, the export
/// read the read model in position order, and resuming after the last position it returned
/// skipped for good what was missing below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resumed_export_skips_nothing_that_was_late() {
    let (stack, _projector) = projected_commerce(1).await;
    let pool = &stack.app.pool;
    let query = spawn_query_api(&stack.settings).await;
    let client = reqwest::Client::new();
    let admin = query.token.clone().unwrap();
    projected_audit(pool).await;
    // An entry the read model has not applied yet (taken out again, as if its topic lagged).
    let order = log_order(pool).await;
    let lagging = order[order.len() / 2];
    sqlx::query("DELETE FROM rm_audit WHERE global_position = $1")
        .bind(lagging)
        .execute(pool)
        .await
        .unwrap();
    let (status, _, body) = complete_export(&client, &query.url, &admin, "", order.len()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        positions(&lines(&body)),
        order,
        "the lagging entry is exported in its place"
    );
    let last = *order.last().unwrap();

    // A transaction holding a position open while a later one commits.
    let mut open = pool.begin().await.unwrap();
    let held = crate::support::database::insert_registration(&mut *open, "held@example.com").await;
    stack.app.register(&unique_email()).await;
    let resume = format!("?after_position={last}");
    let (_, _, body) = export(&client, &query.url, Some(&admin), &resume).await;
    assert!(
        lines(&body).is_empty(),
        "exported past an open transaction: {body}"
    );
    open.commit().await.unwrap();
    let (_, _, body) = complete_export(&client, &query.url, &admin, &resume, 2).await;
    let resumed = lines(&body);
    assert_eq!(
        resumed.len(),
        2,
        "the held event and the registration: {body}"
    );
    assert_eq!(
        resumed[0]["event_id"],
        held.to_string(),
        "the held event first"
    );
    let (status, _, body) = export(
        &client,
        &query.url,
        Some(&admin),
        "?after_position=999999999",
    )
    .await;
    assert_eq!(status, 404, "a position no event has: {body}");
}

/// At most `query_api.max_exports` exports stream at once; past that an export is 503
/// `overloaded` with `Retry-After`, and the place comes back when a stream ends. An export
/// streams after its handler returned, beyond the request limits, so before, a few of them
/// could hold every connection the reads need.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exports_streaming_at_once_are_capped() {
    let place = OneExportPlace::start(|_| {}).await;
    let open = || place.open();
    let streaming = open().await.unwrap();
    assert_eq!(streaming.status(), 200);
    let refused = open().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["type"], "/problems/overloaded");
    // The first client goes away: its place comes back.
    drop(streaming);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = open().await.unwrap();
        if again.status() == 200 {
            let text = again.text().await.unwrap();
            assert_eq!(text.lines().count(), 20_000);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the place did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    place.pool.close().await;
}

/// A query API with one export place, over a database seeded with more than a client's
/// socket buffers take.
struct OneExportPlace {
    _db: crate::support::database::TestDatabase,
    pool: sqlx::PgPool,
    query: crate::support::query::QueryClient,
    client: reqwest::Client,
    token: String,
}

impl OneExportPlace {
    async fn start(tune: impl FnOnce(&mut infra::settings::Settings)) -> Self {
        let db = crate::support::database::TestDatabase::create().await;
        let mut settings = db.settings();
        settings.query_api.max_exports = 1;
        tune(&mut settings);
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        infra::db::migrate(&pool).await.unwrap();
        seed_more_than_socket_buffers_take(&pool).await;
        // An export reads only transactions older than every one still running in the
        // cluster; tests running beside this one can hold one open for a while, and an export
        // meanwhile is empty (and frees its place at once).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let exportable: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if exportable == 20_000 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the seeded events stayed behind a running transaction for 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let query = spawn_query_api(&settings).await;
        Self {
            _db: db,
            pool,
            query,
            client: reqwest::Client::new(),
            token: crate::support::auth::admin_token(),
        }
    }

    async fn open(&self) -> reqwest::Result<reqwest::Response> {
        self.client
            .get(format!("{}/v1/audit/export", self.query.url))
            .bearer_auth(&self.token)
            .send()
            .await
    }
}

/// Far more than a client's socket buffers take (20,000 events of about 2 kB): an export
/// cannot end while its client reads nothing.
async fn seed_more_than_socket_buffers_take(pool: &sqlx::PgPool) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, event_id)
         SELECT 'user', 'u' || n, 1, 'UserRegistered', '1',
                jsonb_build_object('display_name', repeat('x', 2000)),
                '{\"occurred_at\": \"2026-12-01T00:00:00Z\", \"actor\": \"test\"}', gen_random_uuid()
         FROM generate_series(1, 20000) AS n",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// A client that stops reading without closing its connection loses its place once it has
/// left a page untaken for `query_api.export_stall_ms`, and its download breaks off rather
/// than looking complete. Before, it held the place for as long as the connection lived:
/// `max_exports` such clients refused every export with 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_loses_its_export_place() {
    let place = OneExportPlace::start(|s| s.query_api.export_stall_ms = 2_000).await;
    let open = || place.open();
    let stalled = open().await.unwrap();
    assert_eq!(stalled.status(), 200);
    // It reads nothing, and keeps its connection: after the stall limit another export gets
    // the place.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let next = loop {
        let again = open().await.unwrap();
        if again.status() == 200 {
            break again;
        }
        assert_eq!(again.status(), 503, "while the place is held");
        assert!(
            std::time::Instant::now() < deadline,
            "a client reading nothing kept the only export place for 30 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let text = next.text().await.unwrap();
    assert_eq!(text.lines().count(), 20_000);
    // The stalled download, read now, breaks off before its end.
    assert!(
        stalled.text().await.is_err(),
        "the stalled download ended as if complete"
    );
    place.pool.close().await;
}
