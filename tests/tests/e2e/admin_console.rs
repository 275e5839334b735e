//! The admin console (`/admin` on the query API) in a real browser: headless Chromium over
//! WebDriver (`support::browser`) against the whole stack. The admin logs in through the form,
//! sees the projections, opens an order's history in the event browser, retries one dead
//! letter (an audit entry removed to simulate a transient failure comes back) and discards
//! another; a support user sees the pages but is refused an action; a customer is refused the
//! console. A screenshot of every page goes to `.data/artifacts/admin/`. Then, without a
//! browser: the security headers, the cookie's attributes, CSRF and bearer tokens.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::support::app::{unique_email, Customer};
use crate::support::auth::{login, ADMIN_EMAIL, ADMIN_PASSWORD, CUSTOMER_PASSWORD};
use crate::support::browser::Browser;
use crate::support::kafka::shared_bootstrap;
use crate::support::projector::{wait_until_projected, InProcessProjector};
use crate::support::query::spawn_query_api;
use crate::support::stack::{spawn_stack, wait_until_published, Stack};

/// An error text no page may run.
const HOSTILE: &str = "timeout <script>alert('x')</script>";
const LETTER_SQL: &str = "SELECT count(*) FROM dead_letters WHERE id = $1::text::bigint";

/// The stack, its projector and query API, and what the steps share.
struct Console {
    stack: Stack,
    _projector: InProcessProjector,
    /// The query API.
    base: String,
    customer: Customer,
    order_id: String,
    support_email: String,
    /// The event ids of the order's and the customer's first events.
    placed: String,
    registered: String,
}

impl Console {
    /// The whole stack with a bootstrap admin; an order and a support user, projected.
    async fn start() -> Self {
        let stack = spawn_stack(&shared_bootstrap(), |s| {
            s.auth.bootstrap_admin_email = ADMIN_EMAIL.to_owned();
            s.auth.bootstrap_admin_password =
                infra::secrecy::SecretString::from(ADMIN_PASSWORD.to_owned());
        })
        .await;
        let projector = InProcessProjector::start(&stack, Some(&stack.app.url));
        let mut settings = stack.settings.clone();
        settings.query_api.command_api_url = stack.app.url.clone();
        let base = spawn_query_api(&settings).await.url;
        let app = &stack.app;
        let customer = app.customer().await;
        let order = app.place_order(&customer.id).await;
        assert_eq!(order.status, StatusCode::CREATED, "{}", order.body);
        let support_email = unique_email();
        let support_id = app.register(&support_email).await;
        let role = json!({"role": "support"});
        let granted = app
            .post(&format!("/v1/users/{support_id}/roles"), role)
            .await;
        assert_eq!(granted.status, StatusCode::OK, "{}", granted.body);
        wait_until_published(&app.pool, Duration::from_secs(60)).await;
        wait_until_projected(&app.pool, Duration::from_secs(60)).await;
        let placed = first_event(&app.pool, "order", &order.id()).await;
        let registered = first_event(&app.pool, "user", &customer.id).await;
        Self {
            _projector: projector,
            base,
            order_id: order.id(),
            customer,
            support_email,
            placed,
            registered,
            stack,
        }
    }

    fn pool(&self) -> &PgPool {
        &self.stack.app.pool
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A dead letter of `projection` for the stored event `event_id` (a simulated failure),
    /// on the topic its aggregate's events are on.
    async fn dead_letter(&self, projection: &str, event_id: &str, error: &str) -> i64 {
        sqlx::query_scalar(
            "INSERT INTO dead_letters (projection, topic, partition, \"offset\", event_id, aggregate_id, error)
             SELECT $1, $2 || e.aggregate_type || 's.events', 0, 1000000 + e.global_position, $3,
                    e.aggregate_id, $4
             FROM events e WHERE e.event_id = $3::uuid
             RETURNING id",
        )
        .bind(projection)
        .bind(&self.stack.prefix)
        .bind(event_id)
        .bind(error)
        .fetch_one(self.pool())
        .await
        .expect("insert a dead letter")
    }

    async fn count(&self, sql: &str, bind: &str) -> i64 {
        sqlx::query_scalar(sql)
            .bind(bind)
            .fetch_one(self.pool())
            .await
            .expect("count")
    }

    /// Logs in through the form.
    async fn log_in(&self, browser: &Browser, email: &str, password: &str) {
        browser.goto(&self.url("/admin/login")).await;
        browser.type_into("input[name=email]", email).await;
        browser.type_into("input[name=password]", password).await;
        browser.submit("main form button").await;
    }

    /// Waits (up to 15 s: a login hashes a password, slow while the whole suite runs) until
    /// the browser is at `path`; otherwise fails with the page's text.
    async fn at(&self, browser: &Browser, path: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let url = browser.url().await;
            if url.ends_with(path) {
                return;
            }
            if std::time::Instant::now() > deadline {
                let page = browser.text("body").await;
                panic!("at {url}, not {path}; the page says: {page}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

async fn first_event(pool: &PgPool, aggregate_type: &str, id: &str) -> String {
    sqlx::query_scalar(
        "SELECT event_id::text FROM events
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = 1",
    )
    .bind(aggregate_type)
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("the aggregate's first event")
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_and_support_use_the_console_in_a_browser() {
    let console = Console::start().await;
    // A transient failure: the order's audit entry is gone and its event dead-lettered.
    sqlx::query("DELETE FROM rm_audit WHERE event_id = $1::uuid")
        .bind(&console.placed)
        .execute(console.pool())
        .await
        .unwrap();
    let retried = console.dead_letter("audit", &console.placed, HOSTILE).await;
    let registered = &console.registered;
    let discarded = console
        .dead_letter("users", registered, "refused: test")
        .await;

    let browser = Browser::start().await;
    browser.goto(&console.url("/admin")).await;
    console.at(&browser, "/admin/login").await;
    browser.screenshot("login").await;
    console.log_in(&browser, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    console.at(&browser, "/admin").await;
    overview(&console, &browser).await;
    event_browser(&console, &browser).await;
    replays(&console, &browser).await;
    retry_and_discard(&console, &browser, retried, discarded).await;
    browser.submit("header form button").await;
    console.at(&browser, "/admin/login").await;
    browser.goto(&console.url("/admin")).await;
    console.at(&browser, "/admin/login").await;
    support_and_customer(&console, &browser).await;
    browser.quit().await;
    headers_cookie_and_tokens(&console).await;
}

/// Every projection, the hostile error shown as text and run nowhere, the relay.
async fn overview(console: &Console, browser: &Browser) {
    assert_eq!(browser.text("h1").await, "Overview");
    let table = browser.text("#projections").await;
    for name in projections::projections(true).iter().map(|p| p.name()) {
        assert!(table.contains(name), "{name} missing: {table}");
    }
    assert!(table.contains(HOSTILE), "{table}");
    assert_eq!(
        browser.count("script").await,
        0,
        "a script got into the page"
    );
    assert!(browser.text("#relay").await.contains("default"));
    // The newest dead letters link to their aggregates' histories.
    let link = format!("a[href*='aggregate_id={}']", console.order_id);
    assert_eq!(browser.count(&link).await, 1);
    browser.screenshot("overview").await;
}

/// The order's history, through the form; a bad id is a 400 page.
async fn event_browser(console: &Console, browser: &Browser) {
    browser.goto(&console.url("/admin/events")).await;
    browser
        .type_into("input[name=aggregate_id]", &console.order_id)
        .await;
    browser.submit("main form button").await;
    let history = browser.text("#events").await;
    assert!(history.contains("OrderPlaced"), "{history}");
    assert!(history.contains("correlation_id"), "{history}");
    assert!(history.contains("\"currency\": \"EUR\""), "{history}");
    browser.screenshot("events").await;
    let bad = "/admin/events?aggregate_type=order&aggregate_id=nope";
    browser.goto(&console.url(bad)).await;
    assert_eq!(browser.text("h1").await, "Bad request");
    browser.screenshot("events-bad-request").await;
}

/// A replay in progress shows its progress.
async fn replays(console: &Console, browser: &Browser) {
    sqlx::query(
        "INSERT INTO replay_runs (projection, kind, events, total) VALUES ('orders', 'replay', 500, 1000)",
    )
    .execute(console.pool())
    .await
    .unwrap();
    browser.goto(&console.url("/admin/replays")).await;
    assert!(browser.text("#replays").await.contains("500 / 1000"));
    browser.screenshot("replays").await;
}

/// Retry brings the audit entry back; discard removes the other.
async fn retry_and_discard(console: &Console, browser: &Browser, retried: i64, discarded: i64) {
    browser.goto(&console.url("/admin/dead-letters")).await;
    assert!(browser.text("#dead-letters").await.contains(HOSTILE));
    browser.screenshot("dead-letters").await;
    let retry = format!("#dead-letter-{retried} form[action$='/retry'] button");
    browser.submit(&retry).await;
    let notice = browser.text(".notice").await;
    assert!(notice.contains("applied and removed"), "{notice}");
    let audit = "SELECT count(*) FROM rm_audit WHERE event_id = $1::uuid";
    assert_eq!(console.count(audit, &console.placed).await, 1, "back");
    assert_eq!(console.count(LETTER_SQL, &retried.to_string()).await, 0);
    let discard = format!("#dead-letter-{discarded} form[action$='/discard'] button");
    browser.submit(&discard).await;
    assert!(browser.text(".notice").await.contains("discarded"));
    assert_eq!(console.count(LETTER_SQL, &discarded.to_string()).await, 0);
    browser.screenshot("dead-letters-after").await;
}

/// Support sees the pages without buttons, and its own session's action is 403; a customer
/// is refused the console and gets no session.
async fn support_and_customer(console: &Console, browser: &Browser) {
    let waiting = console
        .dead_letter("users", &console.registered, "refused: again")
        .await;
    let support = &console.support_email;
    console.log_in(browser, support, CUSTOMER_PASSWORD).await;
    assert_eq!(browser.text("h1").await, "Overview");
    browser.goto(&console.url("/admin/dead-letters")).await;
    assert!(browser
        .text("#dead-letters")
        .await
        .contains("refused: again"));
    assert_eq!(browser.count("form[action$='/retry']").await, 0);
    browser.screenshot("support-dead-letters").await;
    let cookie = browser.cookie("admin_session").await;
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    let session = cookie["value"].as_str().unwrap().to_owned();
    let csrf = browser.property("header input[name=csrf]", "value").await;
    let refused = no_redirects()
        .post(console.url(&format!("/admin/dead-letters/{waiting}/retry")))
        .header("cookie", format!("admin_session={session}"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(console.count(LETTER_SQL, &waiting.to_string()).await, 1);

    browser.delete_cookies().await;
    let customer = &console.customer.email;
    console.log_in(browser, customer, CUSTOMER_PASSWORD).await;
    assert_eq!(browser.text("h1").await, "Forbidden");
    browser.screenshot("customer-forbidden").await;
    browser.goto(&console.url("/admin")).await;
    console.at(browser, "/admin/login").await;
}

/// The security headers, the cookie's attributes, a forged form, support's bearer token, a
/// wrong password.
async fn headers_cookie_and_tokens(console: &Console) {
    let app = &console.stack.app;
    let http = no_redirects();
    let (admin, _) = login(&app.client, &app.url, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let page = http
        .get(console.url("/admin"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let header = |name: &str| page.headers()[name].to_str().unwrap().to_owned();
    let policy = header("content-security-policy");
    assert!(policy.starts_with("default-src 'none'") && !policy.contains("script-src"));
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("cache-control"), "no-store");
    let credentials = [("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)];
    let form = console.url("/admin/login");
    let logged_in = http.post(&form).form(&credentials).send().await.unwrap();
    assert_eq!(logged_in.status(), StatusCode::SEE_OTHER);
    let set_cookie = logged_in.headers()["set-cookie"].to_str().unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age="] {
        assert!(set_cookie.contains(part), "{set_cookie}");
    }
    let session = set_cookie.split(';').next().unwrap().to_owned();
    let letter = console.dead_letter("audit", &console.placed, "again").await;
    let action = console.url(&format!("/admin/dead-letters/{letter}/discard"));
    let forged = http
        .post(&action)
        .header("cookie", &session)
        .form(&[("csrf", "0".repeat(64))])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN, "a forged form");
    let (support, _) = login(
        &app.client,
        &app.url,
        &console.support_email,
        CUSTOMER_PASSWORD,
    )
    .await;
    let as_support = http
        .post(&action)
        .bearer_auth(&support)
        .send()
        .await
        .unwrap();
    assert_eq!(as_support.status(), StatusCode::FORBIDDEN);
    assert_eq!(console.count(LETTER_SQL, &letter.to_string()).await, 1);
    let as_admin = http.post(&action).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(
        as_admin.status(),
        StatusCode::SEE_OTHER,
        "a bearer needs no CSRF"
    );
    // The page the action leads to says what was done; a link made up to say so does not
    // (before, `?done=retried&id=N` alone showed "was applied and removed").
    let notice_of = |path: String| {
        let http = http.clone();
        let admin = admin.clone();
        async move {
            let page = http
                .get(console.url(&path))
                .bearer_auth(&admin)
                .send()
                .await;
            page.unwrap().text().await.unwrap()
        }
    };
    let location = as_admin.headers()["location"].to_str().unwrap().to_owned();
    assert!(notice_of(location).await.contains("was discarded"));
    for made_up in [
        "/admin/dead-letters?done=retried&id=999999".to_owned(),
        format!(
            "/admin/dead-letters?done=retried&id={letter}&seal={}",
            "0".repeat(64)
        ),
    ] {
        let page = notice_of(made_up).await;
        assert!(!page.contains("class=\"notice\""), "{page}");
    }
    let wrong = [("email", ADMIN_EMAIL), ("password", "not the password")];
    let refused = http.post(&form).form(&wrong).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get("set-cookie").is_none());
    // Login CSRF: another site's page posting the form (right credentials) sets no session.
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://elsewhere.example"),
    ] {
        let cross = http
            .post(&form)
            .header(name, value)
            .form(&credentials)
            .send()
            .await
            .unwrap();
        assert_eq!(cross.status(), StatusCode::FORBIDDEN, "{name}: {value}");
        assert!(cross.headers().get("set-cookie").is_none());
    }
}

/// A session dropped without `quit` (a test that failed half-way) leaves no Chromium behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_dropped_without_quitting_leaves_no_process_behind() {
    let browser = Browser::start().await;
    let profile = browser.profile().display().to_string();
    let running = || !crate::support::processes::pids_naming(&profile).is_empty();
    assert!(running(), "Chromium runs with the session's profile");
    drop(browser);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while running() {
        assert!(
            std::time::Instant::now() < deadline,
            "Chromium outlived its dropped session"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Console logins count against the command API's per-address limit as the browser's address,
/// which the query API forwards: a guesser that exhausts its own count leaves the console open
/// to everyone else. Before, every console login reached the command API from the query API's
/// address, so a guesser's failures locked the console for every member of staff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_guesser_locks_out_only_its_own_address() {
    let stack = spawn_stack(&shared_bootstrap(), |s| {
        s.auth.bootstrap_admin_email = ADMIN_EMAIL.to_owned();
        s.auth.bootstrap_admin_password =
            infra::secrecy::SecretString::from(ADMIN_PASSWORD.to_owned());
        s.auth.login_failures_per_account = 100;
        s.auth.login_failures_per_address = 3;
        // The query API is the command API's trusted proxy; browsers reach the query API
        // through an ingress on the same address.
        s.auth.trusted_proxies = "127.0.0.1".to_owned();
    })
    .await;
    let mut settings = stack.settings.clone();
    settings.query_api.command_api_url = stack.app.url.clone();
    let base = spawn_query_api(&settings).await.url;
    let http = no_redirects();
    let log_in = |browser: &'static str, email: String, password: &'static str| {
        let request = http
            .post(format!("{base}/admin/login"))
            .header("x-forwarded-for", browser)
            .form(&[("email", email), ("password", password.to_owned())]);
        async move { request.send().await.expect("the console answers").status() }
    };
    for _ in 0..3 {
        let status = log_in("198.51.100.7", unique_email(), "wrong-password-1").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let locked = log_in("198.51.100.7", ADMIN_EMAIL.to_owned(), ADMIN_PASSWORD).await;
    assert_eq!(
        locked,
        StatusCode::TOO_MANY_REQUESTS,
        "the guesser is locked out"
    );
    let staff = log_in("198.51.100.8", ADMIN_EMAIL.to_owned(), ADMIN_PASSWORD).await;
    assert_eq!(
        staff,
        StatusCode::SEE_OTHER,
        "another browser was locked out by the guesser's failures"
    );
}
