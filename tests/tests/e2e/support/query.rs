//! The query API in this process ([`spawn_query_api`]) and its client ([`QueryClient`]: reads
//! at a minimum version, polls lists), and [`spawn_read_stack`]: the write stack, the projector
//! with its process manager and the query API together.

use std::time::{Duration, Instant};

use infra::settings::Settings;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::app::{read, Answer};
use crate::support::kafka::shared_bootstrap;
use crate::support::processes::metric_line;
use crate::support::projector::InProcessProjector;
use crate::support::stack::{spawn_stack, Stack};

/// The write stack, a projector with the process manager (in this process) and the query API.
pub struct ReadStack {
    /// Declared first: dropped (told to stop) before the stack and its database.
    _projector: InProcessProjector,
    pub stack: Stack,
    pub query: QueryClient,
}

pub struct QueryClient {
    pub url: String,
    client: reqwest::Client,
    /// Sent as `Authorization: Bearer` (an admin's, unless a test sets another).
    pub token: Option<String>,
}

impl QueryClient {
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.get_as(self.token.as_deref(), path, headers).await
    }

    /// `GET` with this token (or none).
    pub async fn get_as(
        &self,
        token: Option<&str>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.client.get(format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.send().await.expect("query request failed")).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.get_with(path, &[]).await
    }

    /// `GET path?min_version=N`, asserting 200 and that version N (or newer) came back. A 504
    /// `read-model-behind` (the read side did not get there within the API's wait, 5 s) is
    /// retried as its `Retry-After` asks, for up to a minute, as a client would: on a loaded
    /// machine a projector that has just started can take longer than one wait to join its
    /// group and apply its first batch. Whatever comes back is never older than N.
    pub async fn at_least(&self, path: &str, version: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        let answer = loop {
            let answer = self.get(&format!("{path}?min_version={version}")).await;
            let behind = answer.status == StatusCode::GATEWAY_TIMEOUT
                && answer.body["type"] == "/problems/read-model-behind";
            if !behind || Instant::now() >= deadline {
                break answer;
            }
            eprintln!("{path} at min_version {version}: behind, retrying in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        assert!(
            answer.body["version"].as_i64().unwrap_or(-1) >= version,
            "{path} at min_version {version} returned {}",
            answer.body
        );
        answer.body
    }

    /// Polls `path` until `check` accepts the body (for lists, which have no `min_version`).
    pub async fn eventually(&self, path: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = self.get(path).await;
            if answer.status == StatusCode::OK && check(&answer.body) {
                return answer.body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never matched; last answer {} {}",
                answer.status,
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Starts the query API in this process on the stack's database.
pub async fn spawn_query_api(settings: &Settings) -> QueryClient {
    let app = query_api::build(settings)
        .await
        .expect("build the query API");
    let url = format!("http://{}", app.address());
    tokio::spawn(app.run_until(std::future::pending()));
    let client = reqwest::Client::new();
    // Ready once its change listener is up (until then it serves, but caches nothing).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metric_line(&client, &url, "query_cache_listening 1")
        .await
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "the query API's listener never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    QueryClient {
        url,
        client,
        token: Some(crate::support::auth::admin_token()),
    }
}

pub async fn spawn_read_stack(adjust: impl FnOnce(&mut Settings)) -> ReadStack {
    let stack = spawn_stack(&shared_bootstrap(), adjust).await;
    let projector = InProcessProjector::start(&stack, Some(&stack.app.url));
    let query = spawn_query_api(&stack.settings).await;
    ReadStack {
        _projector: projector,
        stack,
        query,
    }
}
