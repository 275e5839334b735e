//! Writes need HTTP Basic credentials: `POST`, `PUT`, `DELETE` (and any method other than
//! `GET`, `HEAD`, `OPTIONS`) are refused with 401 unless `Authorization: Basic` carries
//! `schema_registry.user` and its password, as Confluent clients send them. With no password
//! configured every write is refused. Reads stay open, so consumers need no credentials.

use std::sync::Arc;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::CONTENT_TYPE;

/// The digest of `user:password`, or none when writes are closed.
#[derive(Clone)]
pub struct WriteCredentials(Option<Arc<[u8; 32]>>);

impl WriteCredentials {
    pub fn new(user: &str, password: &str) -> Self {
        if password.is_empty() {
            return Self(None);
        }
        Self(Some(Arc::new(
            Sha256::digest(format!("{user}:{password}").as_bytes()).into(),
        )))
    }

    /// Whether an `Authorization` header value carries the credentials.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some(expected) = &self.0 else {
            return false;
        };
        let Some(encoded) = authorization.and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        }) else {
            return false;
        };
        let Ok(decoded) = STANDARD.decode(encoded) else {
            return false;
        };
        let offered: [u8; 32] = Sha256::digest(&decoded).into();
        verify_slices_are_equal(&offered, expected.as_ref()).is_ok()
    }
}

pub async fn require_for_writes(
    State(credentials): State<WriteCredentials>,
    request: Request,
    next: Next,
) -> Response {
    let read = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if read || credentials.accepts(authorization) {
        return next.run(request).await;
    }
    metrics::counter!("registry_writes_refused_total").increment(1);
    let body = serde_json::json!({
        "error_code": 40101,
        "message": "Unauthorized: writes need HTTP Basic credentials"
    });
    let mut response = (StatusCode::UNAUTHORIZED, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Basic realm="schema-registry""#),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(user_pass))
    }

    #[test]
    fn only_the_configured_pair_is_accepted() {
        let credentials = WriteCredentials::new("registry", "s3cret-password");
        assert!(credentials.accepts(Some(&basic("registry:s3cret-password"))));
        assert!(credentials.accepts(Some(&format!(
            "basic {}",
            STANDARD.encode("registry:s3cret-password")
        ))));
        for wrong in [
            basic("registry:wrong"),
            basic("other:s3cret-password"),
            basic("registry"),
            "Basic !!!".to_owned(),
            "Bearer registry:s3cret-password".to_owned(),
        ] {
            assert!(!credentials.accepts(Some(&wrong)), "{wrong}");
        }
        assert!(!credentials.accepts(None));
    }

    #[test]
    fn without_a_password_nothing_is_accepted() {
        let closed = WriteCredentials::new("registry", "");
        assert!(!closed.accepts(Some(&basic("registry:"))));
    }
}
