//! A read model added to a running system by replay alone: the projector runs without
//! `customer_value` (as before the model existed) while commands flow; `projector replay
//! customer_value` builds it from the event store and swaps it in while reads and writes go
//! on, with no read failing; a projector that runs it then keeps it current from Kafka
//! (skipping what the replay applied), and its route answers what an independent fold of the
//! events says.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::app::unique_email;
use crate::support::commerce::commerce_load;
use crate::support::processes::{
    free_port, output_within_limit, run_projector, service_command, Process,
};
use crate::support::projector::{unprojected, wait_until_models_projected};
use crate::support::query::spawn_read_stack;
use crate::support::stack::wait_until_published;

const WITHOUT: &str = "users,orders,payments,analytics,audit";

/// Per (customer, currency): orders, captured, refunded, folded from the events table in SQL,
/// independently of the projector.
async fn expected(pool: &sqlx::PgPool) -> BTreeMap<(String, String), (i64, i64, i64)> {
    let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
        "WITH placed AS (
             SELECT aggregate_id AS order_id, payload->>'customer_id' AS customer,
                    payload->>'currency' AS currency
             FROM events WHERE event_type = 'OrderPlaced'),
         money AS (
             SELECT payload->>'order_id' AS order_id,
                    sum(CASE WHEN event_type = 'PaymentCaptured' THEN (payload->>'amount_minor')::bigint ELSE 0 END) AS captured,
                    sum(CASE WHEN event_type = 'PaymentRefunded' THEN (payload->>'amount_minor')::bigint ELSE 0 END) AS refunded
             FROM events WHERE event_type IN ('PaymentCaptured', 'PaymentRefunded')
             GROUP BY 1)
         SELECT p.customer, p.currency, count(*),
                COALESCE(sum(m.captured), 0)::bigint, COALESCE(sum(m.refunded), 0)::bigint
         FROM placed p LEFT JOIN money m USING (order_id)
         GROUP BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(c, cur, n, cap, refd)| ((c, cur), (n, cap, refd)))
        .collect()
}

fn served(body: &serde_json::Value) -> BTreeMap<(String, String), (i64, i64, i64)> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let n = |k: &str| row[k].as_i64().unwrap();
            assert_eq!(n("net_minor"), n("captured_minor") - n("refunded_minor"));
            (
                (
                    row["customer_id"].as_str().unwrap().to_owned(),
                    row["currency"].as_str().unwrap().to_owned(),
                ),
                (n("orders"), n("captured_minor"), n("refunded_minor")),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_read_model_is_brought_live_by_replay_alone() {
    let read = spawn_read_stack(|s| s.projector.read_models = WITHOUT.into()).await;
    let (app, query, settings) = (&read.stack.app, &read.query, &read.stack.settings);
    let pool = &app.pool;
    // A model added after `projection_versions` was partitioned has no partition of its own:
    // its versions live in the default partition until its first replay gives it one.
    for statement in [
        "ALTER TABLE projection_versions DETACH PARTITION projection_versions_customer_value",
        "DROP TABLE projection_versions_customer_value",
    ] {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
    commerce_load(app, 10).await;
    wait_until_published(pool, Duration::from_secs(60)).await;
    let running = |name: &str| WITHOUT.split(',').any(|m| m == name);
    wait_until_models_projected(pool, running, Duration::from_secs(60)).await;
    let before = query.get("/v1/analytics/customer-value?limit=100").await;
    assert_eq!(before.status, 200, "{}", before.body);
    assert!(
        before.body["items"].as_array().unwrap().is_empty(),
        "not run yet: {}",
        before.body
    );

    // The replay, under reads and writes.
    let stop = AtomicBool::new(false);
    let (reads, failures) = (AtomicU64::new(0), AtomicU64::new(0));
    let replay = async {
        let settings = settings.clone();
        let out = tokio::task::spawn_blocking(move || {
            run_projector(&settings, &["replay", "customer_value"])
        })
        .await
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        out
    };
    let load = async {
        while !stop.load(Ordering::Relaxed) {
            app.register(&unique_email()).await;
            for path in ["/v1/analytics/customer-value", "/v1/analytics/revenue"] {
                let answer = query.get(path).await;
                reads.fetch_add(1, Ordering::Relaxed);
                if answer.status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    let (out, ()) = tokio::join!(replay, load);
    assert!(out.status.success(), "replay customer_value: {out:?}");
    let partitioned: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits
             WHERE inhrelid = 'public.projection_versions_customer_value'::regclass
               AND inhparent = 'projection_versions'::regclass)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(
        partitioned,
        "the replay gave the model its partition of projection_versions"
    );
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no read failed");
    let after = query.get("/v1/analytics/customer-value?limit=100").await;
    assert_eq!(
        served(&after.body),
        expected(pool).await,
        "the replayed model"
    );

    // New orders and payments after the swap: a projector running the model (the new
    // version, deployed) keeps it current, from its topics' start, skipping what the replay
    // applied.
    commerce_load(app, 3).await;
    let mut command = service_command("projector", settings);
    command
        .env("APP__PROJECTOR__READ_MODELS", "customer_value")
        .env("APP__PROJECTOR__PROCESS_MANAGER", "false")
        .env("APP__PROJECTOR__PORT", free_port().to_string());
    let _projector = Process::spawn(command, "a projector running customer_value");
    wait_until_published(pool, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while unprojected(pool, "customer_value", &["order", "payment"]).await > 0 {
        assert!(Instant::now() < deadline, "customer_value did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let current = query.get("/v1/analytics/customer-value?limit=100").await;
    let want = expected(pool).await;
    assert_eq!(
        want.len(),
        13,
        "ten customers and three more, one currency each"
    );
    assert_eq!(served(&current.body), want);
    // One customer's rows alone, with and without the currency.
    let ((customer, currency), row) = want.iter().next().expect("a customer");
    for filter in [
        format!("customer_id={customer}"),
        format!("customer_id={customer}&currency={currency}"),
    ] {
        let one = query
            .get(&format!("/v1/analytics/customer-value?{filter}"))
            .await;
        let only: BTreeMap<_, _> = [((customer.clone(), currency.clone()), *row)].into();
        assert_eq!(served(&one.body), only, "{filter}");
    }
    let out = run_projector(settings, &["verify", "customer_value"]);
    assert!(out.status.success(), "verify customer_value: {out:?}");

    // An unknown name in the selection stops the projector at start, naming it.
    let mut command = service_command("projector", settings);
    command
        .env("APP__PROJECTOR__READ_MODELS", "users,nonsense")
        .env("APP__PROJECTOR__PORT", free_port().to_string());
    let out = output_within_limit(command, "projector with an unknown read model");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nonsense"),
        "{out:?}"
    );
}
