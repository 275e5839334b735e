//! The command API as the process manager's dispatcher calls it, and how its answers are
//! understood. Problem types are recognised by their exact code (shared constants in
//! `domain::problem_types`), never by matching text.

use std::time::{Duration, Instant};

use domain::problem_types::{AVAILABLE, REFUND_EXCEEDS_CAPTURED, VERSION_CONFLICT};
use infra::secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::Mutex;

use super::command::Command;

/// The process manager's client credentials (`auth.clients` on the command API). Its commands
/// carry `sub = service:<client_id>`, which scopes its idempotency keys.
#[derive(Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: SecretString,
}

/// What became of one attempt to send a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 2xx: the command took effect (or had, under this key).
    Done,
    /// 404 or 409 naming an aggregate's refusal (`domain::problem_types::is_refusal`): the
    /// aggregate decided; retrying changes nothing.
    Refused {
        status: u16,
        code: Option<String>,
        problem: Value,
    },
    /// Version conflict, 429, 5xx or no answer: may succeed later.
    Retry(String),
    /// Any other 4xx: the command itself is wrong; a person must look.
    Reject(String),
}

impl Answer {
    /// For a refused refund: how much the payment says is left, when that is less than
    /// asked and more than nothing (so refunding it instead makes sense).
    pub fn refund_left(&self, asked: i64) -> Option<i64> {
        match self {
            Self::Refused {
                status: 409,
                code: Some(code),
                problem,
            } if code == REFUND_EXCEEDS_CAPTURED => problem[AVAILABLE]
                .as_i64()
                .filter(|&left| left > 0 && left < asked),
            _ => None,
        }
    }

    /// A short label for `process_manager_commands_total{outcome}`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Refused { .. } => "refused",
            Self::Retry(_) => "retry",
            Self::Reject(_) => "rejected",
        }
    }
}

/// Understands an HTTP answer: its status and, for an error, its problem document.
pub fn classify(status: u16, problem: Value) -> Answer {
    let code = problem["type"]
        .as_str()
        .and_then(infra::http::problem_code)
        .map(str::to_owned);
    match status {
        200..=299 => Answer::Done,
        409 if code.as_deref() == Some(VERSION_CONFLICT) => {
            Answer::Retry(format!("409 {VERSION_CONFLICT}"))
        }
        404 | 409
            if code
                .as_deref()
                .is_some_and(domain::problem_types::is_refusal) =>
        {
            Answer::Refused {
                status,
                code,
                problem,
            }
        }
        // Not an aggregate's answer (a route the command API does not have, a proxy's error
        // page during a deploy, a URL set wrong): retried, and parked for a person if it lasts,
        // never taken for a decision.
        404 | 409 => Answer::Retry(format!(
            "status {status} {}: not an aggregate's refusal",
            code.unwrap_or_default()
        )),
        // 401: the token expired or the signing key rotated under it; a new one is fetched.
        401 | 429 | 500..=599 => {
            Answer::Retry(format!("status {status} {}", code.unwrap_or_default()))
        }
        _ => Answer::Reject(format!("status {status}: {problem}")),
    }
}

/// Sends commands to the command API, authenticated with an access token from the
/// client-credentials grant, kept until shortly before it expires.
#[derive(Clone)]
pub struct Commands {
    http: reqwest::Client,
    base: String,
    credentials: ClientCredentials,
    token: std::sync::Arc<Mutex<Option<(String, Instant)>>>,
}

impl Commands {
    pub fn new(base_url: &str, credentials: ClientCredentials) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()?,
            base: base_url.trim_end_matches('/').to_owned(),
            credentials,
            token: Default::default(),
        })
    }

    /// A live access token, fetched when there is none or it is about to expire.
    async fn token(&self) -> Result<String, String> {
        let mut cached = self.token.lock().await;
        if let Some((token, renew_at)) = cached.as_ref() {
            if Instant::now() < *renew_at {
                return Ok(token.clone());
            }
        }
        let requested = Instant::now();
        let response = self
            .http
            .post(format!("{}/v1/auth/token", self.base))
            .json(&serde_json::json!({
                "grant_type": "client_credentials",
                "client_id": self.credentials.client_id,
                "client_secret": self.credentials.client_secret.expose_secret(),
            }))
            .send()
            .await
            .map_err(|e| format!("token request: {}", infra::error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!("token request answered {}", response.status()));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("token response: {e}"))?;
        let token = body["access_token"]
            .as_str()
            .ok_or("token response without access_token")?
            .to_owned();
        let expires_in = body["expires_in"].as_u64().unwrap_or(60);
        let renew_at = infra::auth::token::renew_at(requested, expires_in);
        *cached = Some((token.clone(), renew_at));
        Ok(token)
    }

    /// One attempt; the headers say why (the triggering event) and under which key, so the
    /// command API can answer a repeat with its first response; the token says who acts.
    pub async fn send(&self, command: &Command) -> Answer {
        let cause = &command.cause;
        let token = match self.token().await {
            Ok(token) => token,
            Err(error) => return Answer::Retry(error),
        };
        // The client span's context while spans are exported, else the triggering event's.
        let traceparent = infra::telemetry::propagation::current_traceparent()
            .unwrap_or_else(|| cause.traceparent.clone());
        let sent = self
            .http
            .post(format!("{}{}", self.base, command.path))
            .bearer_auth(&token)
            .header("Idempotency-Key", &command.idempotency_key)
            .header("X-Correlation-Id", &cause.correlation_id)
            .header("X-Causation-Id", cause.event_id.to_string())
            .header("traceparent", traceparent)
            .json(&command.body)
            .send()
            .await;
        let span = tracing::Span::current();
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                span.record("otel.status_code", "error");
                return Answer::Retry(infra::error_chain(&error));
            }
        };
        let status = response.status().as_u16();
        span.record("http.response.status_code", status);
        if status >= 500 {
            span.record("otel.status_code", "error");
        }
        if status == 401 {
            // Forget the token; the retry fetches a new one.
            *self.token.lock().await = None;
        }
        let problem = match response.status().is_success() {
            true => Value::Null,
            // A body that is not a problem document is classified by its status alone.
            false => response.json().await.unwrap_or(Value::Null),
        };
        classify(status, problem)
    }
}

/// The longest one attempt waits; a claimed row's lease outlasts it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problem(code: &str) -> Value {
        json!({ "type": format!("{}{code}", infra::http::PROBLEM_PREFIX), "status": 409 })
    }

    #[test]
    fn success_is_done() {
        assert_eq!(classify(200, Value::Null), Answer::Done);
        assert_eq!(classify(201, Value::Null), Answer::Done);
    }

    #[test]
    fn a_version_conflict_is_retried_and_other_conflicts_are_refusals() {
        assert!(matches!(
            classify(409, problem(VERSION_CONFLICT)),
            Answer::Retry(_)
        ));
        let refused = classify(409, problem("illegal-order-transition"));
        assert!(
            matches!(refused, Answer::Refused { status: 409, .. }),
            "{refused:?}"
        );
        assert!(matches!(
            classify(404, problem("order-not-found")),
            Answer::Refused { .. }
        ));
    }

    #[test]
    fn a_code_that_merely_ends_like_a_known_one_is_not_it() {
        let lookalike = problem("not-a-version-conflict");
        assert!(matches!(classify(409, lookalike), Answer::Retry(_)));
        let foreign = json!({ "type": "https://elsewhere.invalid/illegal-order-transition" });
        assert!(matches!(classify(409, foreign), Answer::Retry(_)));
    }

    /// A 404 or 409 that no aggregate gave (the command API's own "no such route", a proxy's
    /// page without a problem document) was taken for a refusal: the row was closed for good
    /// as refused, with no alert, and a customer's refund never sent.
    #[test]
    fn only_an_aggregates_refusal_is_a_refusal() {
        assert!(matches!(
            classify(404, problem("route-not-found")),
            Answer::Retry(_)
        ));
        assert!(matches!(classify(404, Value::Null), Answer::Retry(_)));
        assert!(matches!(classify(409, Value::Null), Answer::Retry(_)));
        assert!(matches!(
            classify(404, problem("order-not-found")),
            Answer::Refused { status: 404, .. }
        ));
        assert!(matches!(
            classify(409, problem("illegal-payment-transition")),
            Answer::Refused { status: 409, .. }
        ));
    }

    #[test]
    fn overload_and_server_errors_are_retried_other_client_errors_rejected() {
        assert!(matches!(classify(429, Value::Null), Answer::Retry(_)));
        assert!(matches!(classify(503, Value::Null), Answer::Retry(_)));
        assert!(matches!(
            classify(422, problem("validation-failed")),
            Answer::Reject(_)
        ));
        assert!(matches!(classify(400, Value::Null), Answer::Reject(_)));
    }

    #[test]
    fn a_refund_over_what_is_left_names_the_rest() {
        let mut body = problem(REFUND_EXCEEDS_CAPTURED);
        body[AVAILABLE] = json!(2000);
        let answer = classify(409, body);
        assert_eq!(answer.refund_left(3000), Some(2000));
        assert_eq!(answer.refund_left(2000), None, "not less than asked");
        let mut nothing = problem(REFUND_EXCEEDS_CAPTURED);
        nothing[AVAILABLE] = json!(0);
        assert_eq!(classify(409, nothing).refund_left(3000), None);
        assert_eq!(
            classify(409, problem("illegal-payment-transition")).refund_left(3000),
            None
        );
    }
}
