//! [`JsonBody`]: reads the body under the configured limit, insists on JSON, rejects unknown
//! fields (the DTOs say `deny_unknown_fields`), and reports wrong types and missing or unknown
//! fields as 422 naming the field path. Syntax errors are 400. A NUL character in any string
//! (key or value) is 422 naming the field too: PostgreSQL stores neither text nor jsonb with
//! NUL in it. It also digests the raw body for idempotency checks.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

pub struct JsonBody<T> {
    pub value: T,
    /// SHA-256 of the raw body bytes.
    pub digest: [u8; 32],
}

/// For commands without a body: accepts an empty body or `{}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.body_limit;
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(is_json_content_type);
        let bytes = read_limited(request, limit).await?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
            // No body at all: only acceptable where the DTO has no required fields.
            Bytes::from_static(b"{}")
        } else {
            if is_json != Some(true) {
                return Err(ApiError::UnsupportedMediaType);
            }
            bytes
        };
        let value = parse(&bytes)?;
        Ok(Self { value, digest })
    }
}

fn is_json_content_type(value: &str) -> bool {
    let mime = value.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
        || (mime.starts_with("application/") && mime.ends_with("+json"))
}

pub async fn read_limited(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })
}

/// Parses with the failing field's path in the error.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Valid JSON can carry NUL only as the escape `\u0000`; only then is a second look needed.
    if bytes.windows(6).any(|w| w == b"\\u0000") {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
            if let Some(field) = nul_path(&value, String::new()) {
                return Err(ApiError::field(field, "must not contain NUL characters"));
            }
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => field_error(&path, &inner),
            _ => ApiError::MalformedJson(inner.to_string()),
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(value)
}

/// The path (as serde_path_to_error writes it) of the first string holding a NUL; for a key
/// holding one, the path of that key.
fn nul_path(value: &serde_json::Value, path: String) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(text) if text.contains('\0') => Some(if path.is_empty() {
            ".".to_owned()
        } else {
            path
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let here = if path.is_empty() {
                key.replace('\0', "\\u0000")
            } else {
                format!("{path}.{}", key.replace('\0', "\\u0000"))
            };
            if key.contains('\0') {
                Some(here)
            } else {
                nul_path(item, here)
            }
        }),
        _ => None,
    }
}

/// serde names unknown and missing fields in the message, relative to the path.
fn field_error(path: &str, error: &serde_json::Error) -> ApiError {
    let message = strip_position(&error.to_string());
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    let field = match (named, path) {
        // serde_path_to_error already ends the path with an unknown field's name.
        (Some(name), path) if path == name || path.ends_with(&format!(".{name}")) => {
            path.to_owned()
        }
        (Some(name), "." | "") => name.to_owned(),
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, path) => path.to_owned(),
    };
    let message = if message.starts_with("unknown field") {
        "unknown field".to_owned()
    } else {
        message
    };
    ApiError::field(field, message)
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infra::http::FieldProblem;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        sku: String,
        quantity: i64,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        items: Vec<Item>,
    }

    fn field_of(json: &str) -> FieldProblem {
        match parse::<Body>(json.as_bytes()) {
            Err(ApiError::Validation(mut errors)) => errors.remove(0),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"name": "a", "items": [], "x": 1}"#).field, "x");
        assert_eq!(field_of(r#"{"items": []}"#).field, "name");
        assert_eq!(
            field_of(r#"{"name": "a", "items": [{"sku": "s", "quantity": "two"}]}"#).field,
            "items[0].quantity"
        );
        assert_eq!(
            field_of(r#"{"name": "a", "items": [{"sku": "s", "quantity": 1, "z": 0}]}"#).field,
            "items[0].z"
        );
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        assert!(matches!(
            parse::<Body>(b"{\"name\": "),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            parse::<Body>(b"{\"name\": \"a\", \"items\": []} trailing"),
            Err(ApiError::MalformedJson(_))
        ));
    }

    #[test]
    fn nul_characters_are_refused_naming_the_field() {
        assert_eq!(
            field_of(r#"{"name": "a\u0000b", "items": []}"#).field,
            "name"
        );
        let nested = r#"{"name": "a", "items": [{"sku": "s", "quantity": 1}, {"sku": "\u0000", "quantity": 1}]}"#;
        assert_eq!(field_of(nested).field, "items[1].sku");
        let value: serde_json::Value =
            serde_json::from_str(r#"{"preferences": {"k\u0000": 1}}"#).unwrap();
        assert_eq!(
            nul_path(&value, String::new()).as_deref(),
            Some("preferences.k\\u0000")
        );
        // An escaped backslash followed by `u0000` is six ordinary characters.
        assert!(parse::<Body>(br#"{"name": "a\\u0000", "items": []}"#).is_ok());
    }

    #[test]
    fn content_types() {
        assert!(is_json_content_type("application/json; charset=utf-8"));
        assert!(is_json_content_type("application/merge-patch+json"));
        assert!(!is_json_content_type("text/plain"));
    }
}
