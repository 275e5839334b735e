//! Query-string parameters: parsed strictly (unknown parameters and wrong types are 422 with
//! the parameter named), and the pieces several routes share.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::QueryError;

/// Query parameters deserialized into `T` (which should `deny_unknown_fields`).
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = QueryError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Params)
            .map_err(|error| {
                let path = error.path().to_string();
                let message = error.inner().to_string();
                let field = if path == "." {
                    // Unknown parameters are reported at the top level, named in the message.
                    unknown_parameter(&message).unwrap_or_else(|| "query".to_owned())
                } else {
                    path
                };
                QueryError::invalid(&field, message)
            })
    }
}

/// Whether the query string names `as_of` at all, whatever its value and whether or not the
/// other parameters parse: a reader who may not read as-of sets and names one is refused
/// before anything else about the request is judged ([`crate::routes::as_of_permitted`]).
pub struct NamesAsOf(pub bool);

impl<S: Send + Sync> FromRequestParts<S> for NamesAsOf {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        Ok(Self(
            form_urlencoded::parse(query.as_bytes()).any(|(key, _)| key == "as_of"),
        ))
    }
}

impl NamesAsOf {
    /// As the `as_of` parameter, for [`crate::routes::as_of_permitted`].
    pub fn as_param(&self) -> Option<&str> {
        self.0.then_some("")
    }
}

/// The parameter named by serde's "unknown field `x`" or "duplicate field `x`" message.
fn unknown_parameter(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("duplicate field `"))?;
    Some(rest.split('`').next()?.to_owned())
}

/// A day parameter exactly as RFC 3339's `full-date` (`YYYY-MM-DD`), what `format: date` in the
/// document means; chrono's own parser would also take `2024-1-5`, spaces or a signed year.
pub fn day<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<NaiveDate>, D::Error> {
    let raw = <String as serde::Deserialize>::deserialize(deserializer)?;
    let shaped = raw.len() == 10
        && raw.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    shaped
        .then(|| NaiveDate::parse_from_str(&raw, "%Y-%m-%d").ok())
        .flatten()
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("must be a day, `YYYY-MM-DD`"))
}

/// `?currency=`: an ISO 4217 code this system knows, as stored (422 otherwise).
pub fn currency(raw: Option<&str>) -> Result<Option<String>, QueryError> {
    raw.map(domain::values::Currency::parse)
        .transpose()
        .map_err(|e| QueryError::invalid("currency", e.to_string()))
        .map(|c| c.map(|c| c.code().to_owned()))
}

/// A path id: anything that is not a UUID names no resource, so it is 404.
pub fn path_id(raw: &str, what: &'static str) -> Result<Uuid, QueryError> {
    Uuid::parse_str(raw).map_err(|_| QueryError::NotFound { what })
}

/// `limit`: 1 to `max`, `default` when absent.
pub fn limit(raw: Option<i64>, default: i64, max: i64) -> Result<i64, QueryError> {
    match raw {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(QueryError::invalid(
            "limit",
            format!("must be between 1 and {max}"),
        )),
    }
}

/// `min_version`: a version number, 0 or more.
pub fn min_version(raw: Option<i64>) -> Result<Option<i64>, QueryError> {
    match raw {
        Some(n) if n < 0 => Err(QueryError::invalid("min_version", "must be 0 or more")),
        other => Ok(other),
    }
}

/// An opaque keyset cursor over `(timestamp, id)`: where the previous page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}|{}", self.at.timestamp_micros(), self.id))
    }

    pub fn decode(raw: &str) -> Result<Self, QueryError> {
        let invalid = || QueryError::invalid("cursor", "not a cursor this API returned");
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (micros, id) = text.split_once('|').ok_or_else(invalid)?;
        let micros: i64 = micros.parse().map_err(|_| invalid())?;
        let at = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
        // PostgreSQL's timestamps end at year 294276; keep to what an order can carry.
        if !(1..=9999).contains(&chrono::Datelike::year(&at)) {
            return Err(invalid());
        }
        Ok(Self {
            at,
            id: Uuid::parse_str(id).map_err(|_| invalid())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let cursor = Cursor {
            at: DateTime::from_timestamp_micros(1_795_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        assert!(Cursor::decode("not-a-cursor").is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("12|nope")).is_err());
        let far = format!("600000000000000000|{}", Uuid::now_v7()); // year 20983
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode(far)).is_err());
    }

    #[derive(Debug, serde::Deserialize)]
    struct Days {
        #[serde(default, deserialize_with = "day")]
        from: Option<NaiveDate>,
    }

    #[test]
    fn days_are_full_dates_only() {
        let parse = |query: &str| serde_urlencoded::from_str::<Days>(query).map(|d| d.from);
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(
            parse("from=2024-01-05").unwrap(),
            NaiveDate::from_ymd_opt(2024, 1, 5)
        );
        assert!(parse("from=0001-01-01").is_ok());
        for bad in [
            "2024-1-5",
            "2024-01-5",
            "+2024-01-05",
            "2024-01-05%20",
            "%202024-01-05",
            "2024-02-30",
            "24-01-05",
            "2024-01-05T00:00:00Z",
            "",
        ] {
            assert!(parse(&format!("from={bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_parameters_are_named() {
        assert_eq!(
            unknown_parameter("unknown field `colour`, expected one of `status`").as_deref(),
            Some("colour")
        );
        assert_eq!(
            unknown_parameter("duplicate field `limit`").as_deref(),
            Some("limit")
        );
    }
}
