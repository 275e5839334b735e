//! Test harness: every test spawns the real command API (the same `build` as `main`) on port 0
//! against its own fresh PostgreSQL database, and drops that database afterwards.

use std::sync::OnceLock;

use infra::secrecy::SecretString;
use infra::settings::Settings;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

pub fn admin_url() -> String {
    std::env::var("DATABASE_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:55432/postgres".to_owned())
}

fn database_url(name: &str) -> String {
    let admin = admin_url();
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&admin);
    format!("{base}/{name}")
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var("TEST_LOG").is_ok() {
            let mut settings = Settings::load_from(None).expect("default settings");
            settings.log.filter = std::env::var("TEST_LOG").unwrap_or_default();
            infra::telemetry::init_tracing(&settings.log);
        }
    });
}

/// A fresh database, dropped when this is dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        init_logs();
        let name = format!("test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("PostgreSQL must be running: run `make stack` (make test does it)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = database_url(&name);
        Self { name, url }
    }

    /// Default settings pointing at this database, with ephemeral ports.
    pub fn settings(&self) -> Settings {
        let mut settings = Settings::load_from(None).expect("default settings");
        settings.database.url = SecretString::from(self.url.clone());
        settings.database.max_connections = 10;
        settings.command_api.port = 0;
        settings.schema_registry.port = 0;
        settings.query_api.port = 0;
        settings.projector.port = 0;
        // Tests that need the relay turn it on (see `kafka.rs`).
        settings.relay.enabled = false;
        settings
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Async work cannot run in Drop; a scoped thread with its own runtime can.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    runtime.block_on(async {
                        if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
                            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                            let _ = sqlx::query(&sql).execute(&mut admin).await;
                        }
                    });
                }
            });
        });
    }
}

pub struct TestApp {
    pub url: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    /// Dropped (and the database with it) when the app is.
    _db: TestDatabase,
}

/// Spawns the command API on its own database with default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDatabase::create().await;
    let mut settings = db.settings();
    adjust(&mut settings);
    spawn_app_on(db, settings).await
}

/// Spawns the command API on `db` with exactly `settings`.
pub async fn spawn_app_on(db: TestDatabase, settings: Settings) -> TestApp {
    let app = command_api::build(&settings).await.expect("build the app");
    let url = format!("http://{}", app.address());
    let pool = app.pool().clone();
    tokio::spawn(app.run_until(std::future::pending()));
    TestApp {
        url,
        client: reqwest::Client::new(),
        pool,
        _db: db,
    }
}

/// A response, already read.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a problem response with this status and `type` ending in `code`.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.content_type(), "application/problem+json");
        assert_eq!(
            self.body["type"],
            format!("/problems/{code}"),
            "body: {}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(self.body["detail"].as_str().is_some_and(|t| !t.is_empty()));
    }

    /// The `field` names in the problem's `errors`.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn id(&self) -> String {
        self.body["id"].as_str().unwrap_or_default().to_owned()
    }

    pub fn version(&self) -> i64 {
        self.body["version"].as_i64().unwrap_or(-1)
    }
}

impl TestApp {
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request failed");
        read(response).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(body), &[]).await
    }

    pub async fn post_empty(&self, path: &str) -> Answer {
        self.send(Method::POST, path, None, &[]).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None, &[]).await
    }

    pub async fn raw_post(&self, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
        let mut request = self.client.post(format!("{}{path}", self.url)).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        read(request.send().await.expect("request failed")).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("request failed");
        let status = response.status();
        (status, response.text().await.unwrap_or_default())
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await
            .expect("count events")
    }

    pub async fn register(&self, email: &str) -> String {
        let answer = self
            .post(
                "/v1/users",
                json!({"email": email, "display_name": "Test User"}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        answer.id()
    }

    pub async fn place_order(&self, customer_id: &str) -> Answer {
        self.post("/v1/orders", order_body(customer_id)).await
    }

    /// A user and an order of 2 x 1250 + 1 x 500 = 3000 EUR minor units.
    pub async fn user_and_order(&self) -> (String, String) {
        let user = self.register(&unique_email()).await;
        let order = self.place_order(&user).await;
        assert_eq!(order.status, StatusCode::CREATED, "{}", order.body);
        (user, order.id())
    }
}

pub async fn read(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

pub fn unique_email() -> String {
    format!("u-{}@example.com", Uuid::now_v7().simple())
}

pub fn address() -> Value {
    json!({"label": "home", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"})
}

pub fn order_body(customer_id: &str) -> Value {
    json!({
        "customer_id": customer_id,
        "currency": "EUR",
        "items": [
            {"sku": "SKU-1", "quantity": 2, "unit_price_minor": 1250},
            {"sku": "SKU-2", "quantity": 1, "unit_price_minor": 500}
        ],
        "shipping_address": address(),
    })
}

/// A schema registry service on its own database.
pub struct TestRegistry {
    pub url: String,
    pub client: reqwest::Client,
    pub db: TestDatabase,
}

pub async fn spawn_registry() -> TestRegistry {
    let db = TestDatabase::create().await;
    let url = start_registry(&db).await;
    TestRegistry {
        url,
        client: reqwest::Client::new(),
        db,
    }
}

/// Starts one more registry instance on `db`; returns its base URL.
pub async fn start_registry(db: &TestDatabase) -> String {
    let service = schema_registry::service::build(&db.settings())
        .await
        .expect("build the registry");
    let url = format!("http://{}", service.address());
    tokio::spawn(service.run_until(std::future::pending()));
    url
}

impl TestRegistry {
    /// Sends a request with the registry's content type; returns status, content type, body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String, Value) {
        call_registry(&self.client, &self.url, method, path, body).await
    }
}

pub async fn call_registry(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, String, Value) {
    let mut request = client
        .request(method, format!("{base}{path}"))
        .header("accept", "application/vnd.schemaregistry.v1+json");
    if let Some(body) = body {
        request = request
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("registry request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        content_type,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
