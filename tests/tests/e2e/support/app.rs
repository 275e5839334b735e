//! The command API in this process: [`spawn_app`] starts the real service (the same `build` as
//! its binary) on port 0 against a fresh database; [`TestApp`] sends it requests (as the
//! bootstrap admin unless told otherwise, see [`Auth`]) and reads [`Answer`]s; request bodies
//! and unique values for commands.

use infra::settings::Settings;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::auth::{login, CUSTOMER_PASSWORD};
use crate::support::database::TestDatabase;

pub struct TestApp {
    pub url: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    admin: tokio::sync::OnceCell<String>,
    /// Dropped (and the database with it) when the app is.
    _db: TestDatabase,
}

/// Who a request is sent as.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// An admin.
    Admin,
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
    /// No `Authorization` header.
    Anonymous,
}

/// A registered, logged-in customer.
#[derive(Debug, Clone)]
pub struct Customer {
    pub id: String,
    pub email: String,
    pub token: String,
    pub refresh_token: String,
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
        admin: tokio::sync::OnceCell::new(),
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
    /// Default settings pointing at this app's database (for a one-off command on it).
    pub fn settings(&self) -> infra::settings::Settings {
        self._db.settings()
    }

    /// An admin's access token (minted with the test key: see `auth::admin_token`).
    pub async fn admin_token(&self) -> String {
        self.admin
            .get_or_init(|| async { crate::support::auth::admin_token() })
            .await
            .clone()
    }

    /// Registers a customer (without a token, as anyone may) and logs them in.
    pub async fn customer(&self) -> Customer {
        let email = unique_email();
        let id = self.register(&email).await;
        let (token, refresh_token) =
            login(&self.client, &self.url, &email, CUSTOMER_PASSWORD).await;
        Customer {
            id,
            email,
            token,
            refresh_token,
        }
    }

    /// Sends a request as the admin.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.send_as(Auth::Admin, method, path, body, headers).await
    }

    pub async fn send_as(
        &self,
        auth: Auth<'_>,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        match auth {
            Auth::Admin => request = request.bearer_auth(self.admin_token().await),
            Auth::Bearer(token) => request = request.bearer_auth(token),
            Auth::Anonymous => {}
        }
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

    /// `POST` as someone else (a customer's token, or nobody).
    pub async fn post_as(&self, auth: Auth<'_>, path: &str, body: Value) -> Answer {
        self.send_as(auth, Method::POST, path, Some(body), &[])
            .await
    }

    pub async fn raw_post(&self, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
        let mut request = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(self.admin_token().await)
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        read(request.send().await.expect("request failed")).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(self.admin_token().await)
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

    /// Registers a user (without a token) with [`CUSTOMER_PASSWORD`]; returns its id.
    pub async fn register(&self, email: &str) -> String {
        let answer = self
            .post_as(Auth::Anonymous, "/v1/users", registration(email))
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

    /// Makes the idempotency records (all of them, or the one of `key`) 30 days old and runs
    /// the command API's expiry with a 24-hour TTL, as if that time had passed.
    pub async fn age_idempotency_keys(&self, key: Option<&str>) {
        sqlx::query(
            "UPDATE idempotency_keys SET created_at = now() - interval '30 days'
             WHERE $1::text IS NULL OR key = $1",
        )
        .bind(key)
        .execute(&self.pool)
        .await
        .expect("ageing idempotency keys");
        infra::event_store::EventStore::new(self.pool.clone(), 100, 24)
            .expire_idempotency_keys()
            .await
            .expect("expiring idempotency keys");
    }

    /// A payment of the whole order of [`Self::user_and_order`] (3000 EUR, by card), as its
    /// id.
    pub async fn payment(&self) -> String {
        let (_, order) = self.user_and_order().await;
        let answer = self
            .post(
                "/v1/payments",
                json!({"order_id": order, "amount_minor": 3000, "currency": "EUR", "method": "card"}),
            )
            .await;
        accepted(&answer);
        answer.id()
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

/// A registration body with [`CUSTOMER_PASSWORD`].
pub fn registration(email: &str) -> Value {
    json!({"email": email, "display_name": "Test User", "password": CUSTOMER_PASSWORD})
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

/// Asserts that a command succeeded; returns the version it produced.
#[track_caller]
pub fn accepted(answer: &Answer) -> i64 {
    assert!(answer.status.is_success(), "{}", answer.body);
    answer.version()
}

/// A response's status, content type and body text.
pub async fn status_type_text(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (
        status,
        content_type,
        response.text().await.unwrap_or_default(),
    )
}
