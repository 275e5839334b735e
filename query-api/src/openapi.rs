//! The OpenAPI 3 document served at `GET /openapi.json`, generated from the handlers' and
//! views' annotations so it cannot drift from the code.

use std::sync::OnceLock;

use domain::values::{patterns, Currency, EMAIL_MAX_CHARS};
use infra::http::openapi::{Constraints, Problems};
use serde_json::{json, Value};
use utoipa::OpenApi;

use crate::routes::audit::AGGREGATE_TYPES;
use crate::routes::orders::STATUSES;
use crate::routes::{analytics, audit, orders, payments, users, Page};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Commerce query API",
        version = "1",
        description = "Read endpoints over the read models. Single-resource reads accept \
            `?min_version=N` (wait, bounded, until the read model reaches version N; 504 with \
            problem type `/problems/read-model-behind` if it does not) and carry an `ETag`; \
            `If-None-Match` gives 304. Errors are `application/problem+json`."
    ),
    paths(
        users::user, users::by_email, orders::order, orders::customer_orders,
        payments::payment, payments::order_payments, analytics::revenue, analytics::funnel,
        audit::history,
    ),
    components(schemas(
        users::UserView, orders::OrderView, orders::OrderSummary, Page<orders::OrderSummary>,
        payments::PaymentView, payments::OrderPayments, analytics::Revenue,
        analytics::RevenueDay, analytics::Funnel, audit::AuditEntry, Page<audit::AuditEntry>,
    )),
    modifiers(&PROBLEMS),
    tags(
        (name = "users", description = "Users"),
        (name = "orders", description = "Orders"),
        (name = "payments", description = "Payments"),
        (name = "analytics", description = "Revenue and order funnel"),
        (name = "audit", description = "Aggregate histories with metadata"),
    )
)]
pub struct ApiDoc;

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
