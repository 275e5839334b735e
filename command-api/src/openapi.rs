//! The OpenAPI 3 document served at `GET /openapi.json`, generated from the handlers' and
//! DTOs' annotations so it cannot drift from the code.

use infra::http::openapi::Problems;
use utoipa::OpenApi;

use crate::routes::{orders, payments, users, CommandAccepted};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Commerce command API",
        version = "1",
        description = "Write endpoints. Every accepted command returns `{id, version, position}`. \
            Errors are `application/problem+json`. Optional headers: `Idempotency-Key`, \
            `If-Match: \"N\"`, `X-Actor`, `X-Correlation-Id`, `X-Causation-Id`, `traceparent`."
    ),
    paths(
        users::register, users::change_profile, users::change_email, users::add_address,
        users::remove_address, users::grant_role, users::revoke_role, users::deactivate,
        orders::place, orders::confirm, orders::start_processing, orders::ship, orders::deliver,
        orders::cancel,
        payments::initiate, payments::authorize, payments::capture, payments::fail,
        payments::refund,
    ),
    components(schemas(
        CommandAccepted, users::RegisterUser, users::ChangeProfile, users::ChangeEmail,
        users::AddressBody, users::GrantRole, users::Deactivate, orders::PlaceOrder,
        orders::LineItemBody, orders::ShipOrder, orders::CancelOrder, payments::InitiatePayment,
        payments::Amount, payments::FailPayment, payments::RefundPayment,
    )),
    modifiers(&PROBLEMS),
    tags(
        (name = "users", description = "User registration and profile"),
        (name = "orders", description = "Order life cycle"),
        (name = "payments", description = "Payments of orders"),
    )
)]
pub struct ApiDoc;

/// What any command can answer besides its own outcomes (503 and 504 are added for every
/// service): the JSON body extractor's and header parsing's refusals, an unknown id, a
/// conflict and a refused value.
const PROBLEMS: Problems = Problems {
    statuses: &[
        (400, "malformed JSON or an invalid header (`/problems/malformed-json`, `/problems/bad-header`)"),
        (404, "no aggregate with this id"),
        (409, "version conflict, a value already taken, or the aggregate's rules refuse the command"),
        (413, "the body exceeds the configured limit"),
        (415, "the body is not `application/json`"),
        (422, "a field is missing, unknown, of the wrong type or invalid; `errors` names it"),
    ],
};

pub async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
