//! The OpenAPI 3 document served at `GET /openapi.json`, generated from the handlers' and
//! views' annotations so it cannot drift from the code.

use infra::http::openapi::Problems;
use utoipa::OpenApi;

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

pub async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
