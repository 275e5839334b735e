//! The OpenAPI 3 document served at `GET /openapi.json`, generated from the handlers' and
//! views' annotations so it cannot drift from the code. Every `/v1/...` operation requires the
//! `bearer` security scheme (an access token from the command API) and documents the 401 and
//! 403 answers of `crate::policy` ([`Bearer`]).

use std::sync::OnceLock;

use domain::values::{patterns, Currency, EMAIL_MAX_CHARS};
use infra::http::openapi::{Constraints, Problems};
use serde_json::{json, Value};
use utoipa::openapi::header::Header;
use utoipa::openapi::response::Response;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi};

use crate::routes::audit::AGGREGATE_TYPES;
use crate::routes::orders::STATUSES;
use crate::routes::{analytics, audit, customer_value, orders, payments, users, Page};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Commerce query API",
        version = "1",
        description = "Read endpoints over the read models. Single-resource reads accept \
            `?min_version=N` (wait, bounded, until the read model reaches version N; 504 with \
            problem type `/problems/read-model-behind` if it does not) and carry an `ETag`; \
            `If-None-Match` gives 304. Errors are `application/problem+json`. \
            Every `/v1/...` route needs `Authorization: Bearer <access token>` (issued by the \
            command API; 401 without a valid one). `support` and `admin` read everything, \
            `service` every user, order and payment; a `customer` reads only their own user, \
            orders and payments, and another customer's is answered 404 exactly as a missing \
            one. Lookup by email, analytics and audit are for `support` and `admin` (403 \
            otherwise)."
    ),
    paths(
        users::user, users::by_email, orders::order, orders::customer_orders,
        payments::payment, payments::order_payments, analytics::revenue, analytics::funnel,
        customer_value::customer_value,
        audit::history,
        audit::export,
    ),
    components(schemas(
        users::UserView, orders::OrderView, orders::OrderSummary, Page<orders::OrderSummary>,
        payments::PaymentView, payments::OrderPayments, analytics::Revenue,
        analytics::RevenueDay, analytics::Funnel,
        customer_value::CustomerValue, customer_value::CustomerValues, audit::AuditEntry, Page<audit::AuditEntry>,
    )),
    modifiers(&Bearer, &PROBLEMS),
    tags(
        (name = "users", description = "Users"),
        (name = "orders", description = "Orders"),
        (name = "payments", description = "Payments"),
        (name = "analytics", description = "Revenue and order funnel"),
        (name = "audit", description = "Aggregate histories with metadata"),
    )
)]
pub struct ApiDoc;

/// The name of the security scheme in `components.securitySchemes`.
pub const BEARER: &str = "bearer";

/// Declares the bearer scheme (a JWT access token) and requires it on every `/v1/...`
/// operation, with its 401 and 403 answers. Runs before [`PROBLEMS`], which gives those their
/// problem body; an operation's own description of 403 is kept.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "An EdDSA-signed access token from the command API (`POST /v1/auth/token`).",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(scheme));
        for (path, operation) in infra::http::openapi::operations_mut(openapi) {
            if !path.starts_with("/v1/") {
                continue;
            }
            operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
            let responses = &mut operation.responses.responses;
            responses
                .entry("401".to_owned())
                .or_insert_with(|| RefOr::T(unauthenticated()));
            responses.entry("403".to_owned()).or_insert_with(|| {
                RefOr::T(Response::new(
                    "no role of the token's principal allows this read \
                     (`/problems/forbidden`)",
                ))
            });
        }
    }
}

/// The 401 answer: no token, or one that is malformed, expired or not signed by a current key.
fn unauthenticated() -> Response {
    let mut response = Response::new(
        "no valid bearer access token: missing, malformed, expired or not signed by a current \
         key (`/problems/unauthenticated`)",
    );
    let mut challenge = Header::new(ObjectBuilder::new().schema_type(Type::String));
    challenge.description = Some(
        "`Bearer realm=\"commerce\"`, with `error=\"invalid_token\"` when a token was sent"
            .to_owned(),
    );
    response
        .headers
        .insert("WWW-Authenticate".to_owned(), challenge);
    response
}

/// What any read can answer besides its own outcomes (503 and 504 are added for every
/// service): an unknown id and a parameter that is unknown, malformed or out of range.
const PROBLEMS: Problems = Problems {
    statuses: &[
        (404, "no such resource"),
        (
            422,
            "a query parameter is unknown, malformed or out of range; `errors` names it",
        ),
    ],
};

/// The published document: the generated one plus the constraints of [`constrain`].
pub fn document() -> Value {
    Constraints::apply(ApiDoc::openapi(), constrain)
}

pub async fn openapi_json() -> axum::Json<Value> {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    axum::Json(DOCUMENT.get_or_init(document).clone())
}

/// A day of the years 1 to 9999 (`check_range` in `routes/analytics.rs`).
const DAY_PATTERN: &str = "^(?:[0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})-";

/// Every constraint the parameter parsing enforces, computed from the same constants. Rules a
/// schema cannot state are in the descriptions, and `tests/fuzz/hooks.py` keeps the fuzzer to
/// them.
fn constrain(c: &mut Constraints<'_>) {
    let version = json!({"schema": {"minimum": 0, "maximum": i64::MAX}});
    for path in ["/v1/users/{id}", "/v1/orders/{id}", "/v1/payments/{id}"] {
        c.parameter("get", path, "min_version", version.clone());
    }
    let as_of = json!({"description": "The name of an as-of set (`projector replay --as-of`): \
        the read is answered from what the read models said at that point of the log instead \
        of the live ones. Operators only (403 for a customer); not with `min_version` (422); \
        404 when no set of that name holds the read models the read needs.",
        "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,39}$"}});
    for path in [
        "/v1/users/{id}",
        "/v1/orders/{id}",
        "/v1/payments/{id}",
        "/v1/users/{id}/orders",
        "/v1/orders/{id}/payments",
        "/v1/analytics/revenue",
        "/v1/analytics/order-funnel",
        "/v1/analytics/customer-value",
        "/v1/audit/{aggregate_type}/{id}",
    ] {
        c.parameter("get", path, "as_of", as_of.clone());
    }
    let value = "/v1/analytics/customer-value";
    c.parameter(
        "get",
        value,
        "customer_id",
        json!({"schema": {"type": "string", "format": "uuid", "minLength": 36, "maxLength": 36,
            "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"}}),
    );
    c.parameter(
        "get",
        value,
        "limit",
        json!({"schema": {"minimum": 1, "maximum": 100}}),
    );
    c.parameter(
        "get",
        value,
        "currency",
        json!({"schema": {"enum": Currency::codes().collect::<Vec<_>>()}}),
    );
    c.parameter(
        "get",
        "/v1/users",
        "email",
        json!({"required": true, "schema": {"format": "email", "minLength": 1,
            "maxLength": EMAIL_MAX_CHARS, "pattern": patterns::EMAIL}}),
    );
    let cursor = json!({"description": "`next_cursor` of the previous page, unchanged: \
        an opaque value this API returned (422 otherwise)."});
    let orders = "/v1/users/{id}/orders";
    c.parameter(
        "get",
        orders,
        "status",
        json!({"schema": {"enum": STATUSES}}),
    );
    c.parameter(
        "get",
        orders,
        "limit",
        json!({"schema": {"minimum": 1, "maximum": 100}}),
    );
    c.parameter("get", orders, "cursor", cursor.clone());
    let audit = "/v1/audit/{aggregate_type}/{id}";
    c.parameter(
        "get",
        audit,
        "aggregate_type",
        json!({"schema": {"enum": AGGREGATE_TYPES}}),
    );
    c.parameter(
        "get",
        audit,
        "limit",
        json!({"schema": {"minimum": 1, "maximum": 1000}}),
    );
    c.parameter("get", audit, "cursor", cursor);
    for path in ["/v1/analytics/revenue", "/v1/analytics/order-funnel"] {
        for (name, what) in [("from", "First"), ("to", "Last")] {
            let description = format!(
                "{what} day, `YYYY-MM-DD` (UTC), of the years 1 to 9999; `from` must not be \
                 after `to` (422 otherwise)."
            );
            c.parameter(
                "get",
                path,
                name,
                json!({"description": description, "schema": {"pattern": DAY_PATTERN}}),
            );
        }
    }
    c.parameter(
        "get",
        "/v1/analytics/revenue",
        "currency",
        json!({"schema": {"enum": Currency::codes().collect::<Vec<_>>()}}),
    );
    let export = "/v1/audit/export";
    c.parameter(
        "get",
        export,
        "aggregate_type",
        json!({"schema": {"enum": AGGREGATE_TYPES}}),
    );
    c.parameter("get", export, "after_position", version);
    for (name, what) in [("from", "at or after"), ("to", "before")] {
        let description = format!(
            "Events that occurred {what} this instant (RFC 3339); `from` must be before `to` \
             (422 otherwise)."
        );
        c.parameter(
            "get",
            export,
            name,
            json!({"description": description, "schema": {"format": "date-time"}}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameter(doc: &Value, path: &str, name: &str) -> Value {
        let all = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .cloned()
            .unwrap();
        all.into_iter().find(|p| p["name"] == name).unwrap()
    }

    #[test]
    fn the_document_carries_the_parameter_constraints() {
        let doc = document();
        let status = parameter(&doc, "/v1/users/{id}/orders", "status");
        let statuses: Vec<String> =
            serde_json::from_value(status["schema"]["enum"].clone()).unwrap();
        let expected: Vec<_> = domain::OrderStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(statuses, expected);
        let limit = parameter(&doc, "/v1/audit/{aggregate_type}/{id}", "limit");
        assert_eq!(limit["schema"]["maximum"], 1000);
        let currency = parameter(&doc, "/v1/analytics/revenue", "currency");
        assert_eq!(
            currency["schema"]["enum"],
            json!(Currency::codes().collect::<Vec<_>>())
        );
        let email = parameter(&doc, "/v1/users", "email");
        assert_eq!(email["required"], true);
        let kinds = parameter(&doc, "/v1/audit/{aggregate_type}/{id}", "aggregate_type");
        assert_eq!(kinds["schema"]["enum"], json!(["user", "order", "payment"]));
        let export = "/v1/audit/export";
        assert_eq!(
            parameter(&doc, export, "aggregate_type")["schema"]["enum"],
            json!(["user", "order", "payment"])
        );
        assert_eq!(
            parameter(&doc, export, "after_position")["schema"]["minimum"],
            0
        );
        for name in ["from", "to"] {
            assert_eq!(
                parameter(&doc, export, name)["schema"]["format"],
                "date-time"
            );
        }
        let ok = &doc["paths"][export]["get"]["responses"]["200"]["content"];
        assert!(ok["application/x-ndjson"].is_object(), "{ok}");
    }

    #[test]
    fn every_route_requires_the_bearer_scheme_and_documents_401_and_403() {
        let doc = document();
        let scheme = &doc["components"]["securitySchemes"][BEARER];
        assert_eq!(scheme["type"], "http");
        assert_eq!(scheme["scheme"], "bearer");
        assert_eq!(scheme["bearerFormat"], "JWT");
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 11);
        for (path, item) in paths {
            assert!(path.starts_with("/v1/"), "{path}");
            let get = &item["get"];
            assert_eq!(get["security"], json!([{BEARER: []}]), "{path}");
            for status in ["401", "403"] {
                let problem = &get["responses"][status]["content"]["application/problem+json"];
                assert!(problem.is_object(), "{status} of {path}");
            }
            assert!(get["responses"]["401"]["headers"]["WWW-Authenticate"].is_object());
        }
        let analytics = &doc["paths"]["/v1/analytics/revenue"]["get"]["responses"]["403"];
        assert!(analytics["description"]
            .as_str()
            .unwrap()
            .contains("`support` and `admin`"));
    }

    #[test]
    fn the_day_pattern_refuses_year_zero_only() {
        let regex = regex_lite::Regex::new(DAY_PATTERN).unwrap();
        for good in [
            "0001-01-01",
            "0999-12-31",
            "2026-11-30",
            "9999-12-31",
            "1000-01-01",
        ] {
            assert!(regex.is_match(good), "{good}");
        }
        assert!(!regex.is_match("0000-01-01"));
    }
}
