//! The registry's HTTP routes and handlers: request bodies are parsed and checked here, stored
//! through [`Store`], and answered in the registry's content type.

use apache_avro::Schema;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::compat::Level;
use crate::error::{RegistryError, CONTENT_TYPE};
use crate::store::{Store, Which};

/// The registry's routes (without the shared `/healthz`, `/readyz`, `/metrics`).
pub fn routes(store: Store) -> Router {
    Router::new()
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_raw_schema),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_version),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_all),
        )
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .with_state(store)
}

/// A JSON body in the registry's content type.
struct Sr(Value);

impl IntoResponse for Sr {
    fn into_response(self) -> Response {
        let mut response = self.0.to_string().into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

type Result<T> = std::result::Result<T, RegistryError>;

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

/// Parses a registration body (any content type: clients send several) and the Avro schema.
fn schema_body(bytes: &[u8]) -> Result<(String, Schema, Vec<u8>)> {
    let body: SchemaBody =
        serde_json::from_slice(bytes).map_err(|e| RegistryError::BadRequest(e.to_string()))?;
    if body.schema_type.as_deref().is_some_and(|t| t != "AVRO") {
        return Err(RegistryError::InvalidSchema(
            "only AVRO schemas are supported".to_owned(),
        ));
    }
    if !body.references.is_empty() {
        return Err(RegistryError::InvalidSchema(
            "schema references are not supported".to_owned(),
        ));
    }
    let schema =
        Schema::parse_str(&body.schema).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
    let fingerprint = fingerprint(&body.schema)?;
    Ok((body.schema, schema, fingerprint))
}

/// SHA-256 of the schema JSON with object keys sorted and whitespace removed: equal for the
/// same schema however it is formatted, different whenever anything (defaults, docs) differs.
fn fingerprint(text: &str) -> Result<Vec<u8>> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
    let mut normal = String::new();
    write_sorted(&value, &mut normal);
    Ok(Sha256::digest(normal.as_bytes()).to_vec())
}

fn write_sorted(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*key).clone()).to_string());
                out.push(':');
                write_sorted(&map[key.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn which(raw: &str) -> Result<Which> {
    match raw {
        "latest" | "-1" => Ok(Which::Latest),
        n => n
            .parse::<i32>()
            .ok()
            .filter(|n| *n > 0)
            .map(Which::Number)
            .ok_or_else(|| RegistryError::InvalidVersion(raw.to_owned())),
    }
}

/// A subject a write names (a registration, a subject's level), refused with Confluent's
/// invalid-subject error (422, 42208) when it holds a control character, as Confluent's own
/// registry refuses it. Before, a NUL reached PostgreSQL, which cannot store one in text, and
/// the answer was a 500.
fn valid(subject: String) -> Result<String> {
    match subject.chars().any(char::is_control) {
        true => Err(RegistryError::InvalidSubject(
            subject.escape_default().to_string(),
        )),
        false => Ok(subject),
    }
}

/// A subject a read or a deletion names. One with a NUL cannot have been stored, so it is not
/// found; other control characters are looked up as they are (a subject registered with one
/// before they were refused stays readable and deletable).
fn stored(subject: String) -> Result<String> {
    match subject.contains('\0') {
        true => Err(RegistryError::SubjectNotFound(
            subject.escape_default().to_string(),
        )),
        false => Ok(subject),
    }
}

#[derive(Deserialize, Default)]
struct DeletedFlag {
    #[serde(default)]
    deleted: bool,
}

async fn register(
    State(store): State<Store>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Sr> {
    let subject = valid(subject)?;
    let (text, schema, fingerprint) = schema_body(&body)?;
    let id = store
        .register(&subject, &text, &schema, &fingerprint)
        .await?;
    Ok(Sr(json!({ "id": id })))
}

async fn lookup(
    State(store): State<Store>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Sr> {
    let subject = stored(subject)?;
    let (_, _, fingerprint) = schema_body(&body)?;
    let v = store.lookup(&subject, &fingerprint).await?;
    Ok(Sr(
        json!({ "subject": v.subject, "id": v.id, "version": v.version, "schema": v.schema }),
    ))
}

async fn schema_by_id(State(store): State<Store>, Path(id): Path<String>) -> Result<Sr> {
    let id: i32 = id
        .parse()
        .map_err(|_| RegistryError::SchemaNotFound(id.clone()))?;
    Ok(Sr(json!({ "schema": store.schema_by_id(id).await? })))
}

async fn list_subjects(State(store): State<Store>, Query(flag): Query<DeletedFlag>) -> Result<Sr> {
    Ok(Sr(json!(store.subjects(flag.deleted).await?)))
}

async fn list_versions(
    State(store): State<Store>,
    Path(subject): Path<String>,
    Query(flag): Query<DeletedFlag>,
) -> Result<Sr> {
    let subject = stored(subject)?;
    Ok(Sr(json!(store.versions(&subject, flag.deleted).await?)))
}

async fn get_version(
    State(store): State<Store>,
    Path((subject, version)): Path<(String, String)>,
    Query(flag): Query<DeletedFlag>,
) -> Result<Sr> {
    let subject = stored(subject)?;
    let v = store
        .version(&subject, which(&version)?, flag.deleted)
        .await?;
    Ok(Sr(
        json!({ "subject": v.subject, "version": v.version, "id": v.id, "schema": v.schema }),
    ))
}

async fn get_raw_schema(
    State(store): State<Store>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response> {
    let subject = stored(subject)?;
    let v = store.version(&subject, which(&version)?, false).await?;
    Ok(v.schema.into_response())
}

async fn delete_version(
    State(store): State<Store>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Sr> {
    let subject = stored(subject)?;
    Ok(Sr(json!(
        store.delete_version(&subject, which(&version)?).await?
    )))
}

async fn delete_subject(State(store): State<Store>, Path(subject): Path<String>) -> Result<Sr> {
    let subject = stored(subject)?;
    Ok(Sr(json!(store.delete_subject(&subject).await?)))
}

async fn check_version(
    State(store): State<Store>,
    Path((subject, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<Sr> {
    let subject = stored(subject)?;
    let (_, schema, _) = schema_body(&body)?;
    let which = which(&version)?;
    let against = match store.version(&subject, which, false).await {
        Ok(against) => against,
        // Nothing registered yet: nothing to be incompatible with, as Confluent answers (a
        // build checking a schema for a subject it is about to create). A numbered version
        // of a missing subject is 40402.
        Err(RegistryError::SubjectNotFound(_)) => match which {
            Which::Latest => return Ok(Sr(json!({ "is_compatible": true, "messages": [] }))),
            // As Confluent answers: the version is what is missing.
            Which::Number(n) => return Err(RegistryError::VersionNotFound(n.to_string())),
        },
        Err(error) => return Err(error),
    };
    let old = Schema::parse_str(&against.schema)
        .map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
    let level = store.level(Some(&subject)).await?;
    // Against one named version the transitive levels mean the same as the plain ones.
    let problems = level.check(&schema, std::slice::from_ref(&old));
    Ok(Sr(
        json!({ "is_compatible": problems.is_empty(), "messages": problems }),
    ))
}

async fn check_all(
    State(store): State<Store>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Sr> {
    let subject = stored(subject)?;
    let (_, schema, _) = schema_body(&body)?;
    let live = store.live_schemas(&subject).await?;
    let problems = store.level(Some(&subject)).await?.check(&schema, &live);
    Ok(Sr(
        json!({ "is_compatible": problems.is_empty(), "messages": problems }),
    ))
}

#[derive(Deserialize)]
struct ConfigBody {
    compatibility: String,
}

fn level_from(bytes: &[u8]) -> Result<Level> {
    let body: ConfigBody =
        serde_json::from_slice(bytes).map_err(|e| RegistryError::BadRequest(e.to_string()))?;
    Level::parse(&body.compatibility.to_uppercase()).ok_or(RegistryError::InvalidCompatibility)
}

async fn get_global_config(State(store): State<Store>) -> Result<Sr> {
    Ok(Sr(
        json!({ "compatibilityLevel": store.level(None).await?.as_str() }),
    ))
}

async fn put_global_config(State(store): State<Store>, body: Bytes) -> Result<Sr> {
    let level = level_from(&body)?;
    store.set_level(None, level).await?;
    Ok(Sr(json!({ "compatibility": level.as_str() })))
}

#[derive(Deserialize, Default)]
struct DefaultToGlobal {
    #[serde(default, rename = "defaultToGlobal")]
    default_to_global: bool,
}

async fn get_subject_config(
    State(store): State<Store>,
    Path(subject): Path<String>,
    Query(query): Query<DefaultToGlobal>,
) -> Result<Sr> {
    let subject = stored(subject)?;
    let level = match store.configured_level(Some(&subject)).await? {
        Some(level) => level,
        None if query.default_to_global => store.level(None).await?,
        None => return Err(RegistryError::SubjectConfigNotFound(subject)),
    };
    Ok(Sr(json!({ "compatibilityLevel": level.as_str() })))
}

async fn put_subject_config(
    State(store): State<Store>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Sr> {
    let subject = valid(subject)?;
    let level = level_from(&body)?;
    store.set_level(Some(&subject), level).await?;
    Ok(Sr(json!({ "compatibility": level.as_str() })))
}

async fn delete_subject_config(
    State(store): State<Store>,
    Path(subject): Path<String>,
) -> Result<Sr> {
    let subject = stored(subject)?;
    match store.delete_level(&subject).await? {
        Some(level) => Ok(Sr(json!({ "compatibilityLevel": level.as_str() }))),
        None => Err(RegistryError::SubjectConfigNotFound(subject)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_ignore_formatting_but_not_content() {
        let a =
            fingerprint(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#)
                .unwrap();
        let b = fingerprint("{ \"name\": \"R\", \"type\": \"record\",\n \"fields\": [ {\"type\": \"long\", \"name\": \"a\"} ] }").unwrap();
        let c = fingerprint(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long","default":1}]}"#,
        )
        .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn versions_parse_like_confluent() {
        assert!(matches!(which("latest"), Ok(Which::Latest)));
        assert!(matches!(which("3"), Ok(Which::Number(3))));
        assert!(matches!(which("0"), Err(RegistryError::InvalidVersion(_))));
        assert!(matches!(which("x"), Err(RegistryError::InvalidVersion(_))));
    }
}
