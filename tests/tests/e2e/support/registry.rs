//! The schema registry service in this process: [`spawn_registry`] on a fresh database,
//! [`start_registry`] for one more instance on a database, [`call_registry`] for requests
//! in the registry's content type (with the write credentials), and [`encoder`].

use reqwest::Method;
use serde_json::Value;

use crate::support::auth::{REGISTRY_PASSWORD, REGISTRY_USER};
use crate::support::database::TestDatabase;

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
        .basic_auth(REGISTRY_USER, Some(REGISTRY_PASSWORD))
        .header("accept", "application/vnd.schemaregistry.v1+json");
    if let Some(body) = body {
        request = request
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("registry request");
    let (status, content_type, text) = crate::support::app::status_type_text(response).await;
    (
        status,
        content_type,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// An encoder that registers schemas with the test credentials.
pub fn encoder(url: &str) -> schemas::wire::EventEncoder {
    schemas::wire::EventEncoder::with_basic(url, REGISTRY_USER, REGISTRY_PASSWORD)
        .expect("a registry client")
}
