//! The OpenAPI 3 document served at `GET /openapi.json`, generated from the handlers' and
//! DTOs' annotations so it cannot drift from the code.

use std::sync::OnceLock;

use domain::order::MAX_LINE_ITEMS;
use domain::values::{
    patterns, CountryCode, Currency, PaymentMethod, Preferences, Quantity, Role, EMAIL_MAX_CHARS,
    MAX_AMOUNT_MINOR,
};
use infra::http::openapi::{Constraints, Problems};
use serde_json::{json, Value};
use utoipa::OpenApi;

use crate::http::{IDEMPOTENCY_KEY_MAX, ID_HEADER_MAX, IF_MATCH_PATTERN, TOKEN_PATTERN};
use crate::identity::passwords::{MAX_LENGTH, MIN_LENGTH};
use crate::routes::{orders, payments, users, CommandAccepted};
use crate::{identity, webhook};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Commerce command API",
        version = "1",
        description = "Write endpoints and identity. Every accepted command returns \
            `{id, version, position}`. Errors are `application/problem+json`. Every command needs \
            `Authorization: Bearer <access token>` (from `POST /v1/auth/token`), except \
            registration (a token is optional there) and the signed payments webhook; a customer \
            acts only on what is theirs (anything else is answered as if it did not exist), \
            fulfilment and payment state changes are for `admin` and `service`, roles for \
            `admin`. The actor recorded with the events is the token's `sub`. Optional headers: \
            `Idempotency-Key` (scoped to the token's `sub`), `If-Match: \"N\"`, \
            `X-Correlation-Id`, `X-Causation-Id`, `traceparent`."
    ),
    paths(
        users::register, users::change_profile, users::change_email, users::add_address,
        users::remove_address, users::grant_role, users::revoke_role, users::deactivate,
        orders::place, orders::confirm, orders::start_processing, orders::ship, orders::deliver,
        orders::cancel,
        payments::initiate, payments::authorize, payments::capture, payments::fail,
        payments::refund,
        identity::routes::token, identity::routes::logout, identity::resets::password_reset,
        identity::resets::password_reset_confirm, identity::routes::jwks,
        webhook::payments,
    ),
    components(schemas(
        CommandAccepted, users::RegisterUser, users::ChangeProfile, users::ChangeEmail,
        users::AddressBody, users::GrantRole, users::Deactivate, orders::PlaceOrder,
        orders::LineItemBody, orders::ShipOrder, orders::CancelOrder, payments::InitiatePayment,
        payments::Amount, payments::FailPayment, payments::RefundPayment,
        identity::routes::TokenRequest, identity::routes::TokenResponse,
        identity::routes::LogoutRequest, identity::resets::ResetRequest,
        identity::resets::ResetConfirm, webhook::PaymentCallback, webhook::CallbackKind,
    )),
    modifiers(&PROBLEMS),
    tags(
        (name = "users", description = "User registration and profile"),
        (name = "orders", description = "Order life cycle"),
        (name = "payments", description = "Payments of orders"),
        (name = "auth", description = "Tokens, logout, password reset and the signing keys"),
        (name = "webhooks", description = "Signed callbacks of the payment provider"),
    )
)]
pub struct ApiDoc;

/// What any command can answer besides its own outcomes (503 and 504 are added for every
/// service): the JSON body extractor's and header parsing's refusals, an unknown id, a
/// conflict and a refused value.
const PROBLEMS: Problems = Problems {
    statuses: &[
        (400, "malformed JSON or an invalid header (`/problems/malformed-json`, `/problems/bad-header`)"),
        (401, "no or an invalid access token (`/problems/unauthenticated`, with `WWW-Authenticate: Bearer`)"),
        (403, "the token's roles do not allow this (`/problems/forbidden`)"),
        (404, "no aggregate with this id"),
        (409, "version conflict, a value already taken, or the aggregate's rules refuse the command"),
        (413, "the body exceeds the configured limit"),
        (415, "the body is not `application/json`"),
        (422, "a field is missing, unknown, of the wrong type or invalid; `errors` names it"),
        (429, "too many requests for this principal or address (`/problems/rate-limited`, with `Retry-After`)"),
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

/// Free text of at most `max` characters (`clean_text`).
fn text(max: usize) -> Value {
    json!({"minLength": 1, "maxLength": max, "pattern": patterns::TEXT})
}

/// Every constraint the handlers and the domain's value types enforce, computed from them.
/// Rules a schema cannot state are in the descriptions, and `tests/fuzz/hooks.py` keeps the
/// fuzzer to them.
fn constrain(c: &mut Constraints<'_>) {
    let email = json!({"format": "email", "minLength": 1, "maxLength": EMAIL_MAX_CHARS,
        "pattern": patterns::EMAIL});
    let currency = json!({"enum": Currency::codes().collect::<Vec<_>>()});
    let amount = json!({"minimum": 1, "maximum": MAX_AMOUNT_MINOR});
    let reason = text(500);
    c.property("RegisterUser", "email", email.clone());
    c.property("RegisterUser", "display_name", text(100));
    c.property("ChangeProfile", "display_name", text(100));
    c.property(
        "ChangeProfile",
        "preferences",
        json!({"maxProperties": Preferences::MAX_KEYS, "propertyNames": {"pattern": "^[^\\x00]*$"},
            "description": format!("Any JSON object of at most {} keys and {} bytes as \
                compact JSON, without NUL characters in its strings; replaces the previous \
                preferences.", Preferences::MAX_KEYS, Preferences::MAX_BYTES)}),
    );
    c.schema(
        "ChangeProfile",
        json!({"anyOf": [
            {"required": ["display_name"], "properties": {"display_name": {"type": "string"}}},
            {"required": ["preferences"], "properties": {"preferences": {"type": "object"}}},
        ]}),
    );
    c.property("ChangeEmail", "email", email);
    c.property("AddressBody", "label", text(40));
    c.property("AddressBody", "line1", text(200));
    c.property(
        "AddressBody",
        "line2",
        json!({"maxLength": 200, "pattern": patterns::OPTIONAL_TEXT,
            "description": "Blank or absent means none."}),
    );
    c.property("AddressBody", "city", text(100));
    c.property(
        "AddressBody",
        "postal_code",
        json!({"minLength": 1, "maxLength": 16, "pattern": patterns::POSTAL_CODE}),
    );
    c.property(
        "AddressBody",
        "country",
        json!({"enum": CountryCode::codes().collect::<Vec<_>>()}),
    );
    let roles: Vec<_> = Role::ALL.iter().map(Role::as_str).collect();
    c.property("GrantRole", "role", json!({"enum": roles}));
    c.parameter(
        "delete",
        "/v1/users/{id}/roles/{role}",
        "role",
        json!({"schema": {"enum": roles}}),
    );
    c.property("Deactivate", "reason", reason.clone());
    let code = json!({"minLength": 1, "maxLength": 64, "pattern": patterns::CODE});
    c.property("LineItemBody", "sku", code.clone());
    c.property(
        "LineItemBody",
        "quantity",
        json!({"minimum": 1, "maximum": Quantity::MAX}),
    );
    c.property(
        "LineItemBody",
        "unit_price_minor",
        json!({"minimum": 0, "maximum": MAX_AMOUNT_MINOR}),
    );
    c.property(
        "PlaceOrder",
        "customer_id",
        json!({"format": "uuid",
        "description": "An active user's id (422 otherwise)."}),
    );
    c.property("PlaceOrder", "currency", currency.clone());
    c.property(
        "PlaceOrder",
        "items",
        json!({"minItems": 1, "maxItems": MAX_LINE_ITEMS, "description": format!(
            "Each `sku` at most once; the order's total (the sum of quantity times unit price) \
             at least 1 and at most {MAX_AMOUNT_MINOR} minor units (422 otherwise: \
             `order-total-zero`, `order-total-too-large`).")}),
    );
    c.property("ShipOrder", "carrier", text(64));
    c.property("ShipOrder", "tracking_number", code);
    c.property("CancelOrder", "reason", reason.clone());
    c.property(
        "InitiatePayment",
        "order_id",
        json!({"format": "uuid",
        "description": "An order awaiting payment (422 if there is no such order)."}),
    );
    c.property("InitiatePayment", "amount_minor", amount.clone());
    c.property("InitiatePayment", "currency", currency);
    let methods: Vec<_> = PaymentMethod::ALL
        .iter()
        .map(PaymentMethod::as_str)
        .collect();
    c.property("InitiatePayment", "method", json!({"enum": methods}));
    c.property("Amount", "amount_minor", amount.clone());
    c.property("FailPayment", "reason", reason.clone());
    c.property("RefundPayment", "amount_minor", amount);
    c.property("RefundPayment", "reason", reason);
    c.property(
        "RegisterUser",
        "password",
        json!({"minLength": MIN_LENGTH, "maxLength": MAX_LENGTH,
            "description": "Stored only as an argon2id hash; never in an event or a response."}),
    );
    c.property(
        "ResetConfirm",
        "new_password",
        json!({"minLength": MIN_LENGTH, "maxLength": MAX_LENGTH}),
    );
    c.property(
        "PaymentCallback",
        "provider_event_id",
        json!({"minLength": 1, "maxLength": webhook::PROVIDER_EVENT_ID_MAX, "pattern": TOKEN_PATTERN}),
    );
    c.property("PaymentCallback", "payment_id", json!({"format": "uuid"}));
    c.property(
        "PaymentCallback",
        "amount_minor",
        json!({"minimum": 1, "maximum": MAX_AMOUNT_MINOR}),
    );
    c.property("PaymentCallback", "reason", text(500));
    for schema in REQUEST_BODIES {
        c.schema(schema, json!({"additionalProperties": false}));
    }
    // Secrets may hold any character but NUL (no JSON body may carry one).
    let secret = json!({"pattern": "^[^\\x00]*$"});
    c.property("LogoutRequest", "refresh_token", secret.clone());
    c.property("ResetConfirm", "token", secret.clone());
    c.property("ResetConfirm", "new_password", secret.clone());
    c.property("RegisterUser", "password", secret.clone());
    c.property("ResetRequest", "email", secret.clone());
    // Each grant of the token request is closed, and its strings NUL-free, too.
    if let Some(grants) = c.0["components"]["schemas"]["TokenRequest"]["oneOf"].as_array_mut() {
        for grant in grants {
            grant["additionalProperties"] = json!(false);
            if let Some(properties) = grant["properties"].as_object_mut() {
                for (name, property) in properties.iter_mut() {
                    if name != "grant_type" {
                        property["pattern"] = secret["pattern"].clone();
                    }
                }
            }
        }
    }
    headers(c);
    security(c);
}

/// Routes that take no bearer token and read none of the command headers.
fn unauthenticated(path: &str) -> bool {
    path.starts_with("/v1/auth/")
        || path.starts_with("/v1/webhooks/")
        || path.starts_with("/.well-known/")
}

/// Bearer tokens: required on every command, optional on registration, absent elsewhere.
fn security(c: &mut Constraints<'_>) {
    c.security_scheme(
        "bearer",
        json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "An access token from `POST /v1/auth/token`."}),
    );
    // Registration takes a token but does not need one (its description says so).
    c.security_where(
        |path| !unauthenticated(path) && path != "/v1/users",
        json!([{"bearer": []}]),
    );
    c.security_where(
        |path| unauthenticated(path) || path == "/v1/users",
        json!([]),
    );
}

/// The optional headers every command reads (`crate::http`'s request metadata); a value
/// outside these schemas is 400 `/problems/bad-header`.
fn headers(c: &mut Constraints<'_>) {
    let token = |max: usize| {
        json!({"type": "string", "minLength": 1, "maxLength": max,
        "pattern": TOKEN_PATTERN})
    };
    let optional = |name: &str, description: &str, schema: Value| {
        json!({"name": name, "in": "header", "required": false, "description": description,
            "schema": schema})
    };
    let commands = |path: &str| !unauthenticated(path);
    c.parameter_where(
        commands,
        optional(
            "Idempotency-Key",
            "The same key with the same body within 24 h (a machine client's: at any time) \
         answers as the first time and writes nothing; with a different body it is 422 (a rule \
         no schema can state).",
            token(IDEMPOTENCY_KEY_MAX),
        ),
    );
    c.parameter_where(
        commands,
        optional(
            "If-Match",
            "`\"N\"`: the aggregate's expected version (409 if it differs); `*` for any.",
            json!({"type": "string", "pattern": IF_MATCH_PATTERN}),
        ),
    );
    for (name, description) in [
        (
            "X-Correlation-Id",
            "Recorded with the events; a new id when absent.",
        ),
        (
            "X-Causation-Id",
            "Recorded with the events; the command's own id when absent.",
        ),
    ] {
        c.parameter_where(commands, optional(name, description, token(ID_HEADER_MAX)));
    }
}

/// Every request body: the server rejects unknown fields in all of them (`deny_unknown_fields`).
const REQUEST_BODIES: &[&str] = &[
    "RegisterUser",
    "ChangeProfile",
    "ChangeEmail",
    "AddressBody",
    "GrantRole",
    "Deactivate",
    "PlaceOrder",
    "LineItemBody",
    "ShipOrder",
    "CancelOrder",
    "InitiatePayment",
    "Amount",
    "FailPayment",
    "RefundPayment",
    "LogoutRequest",
    "ResetRequest",
    "ResetConfirm",
    "PaymentCallback",
];

#[cfg(test)]
#[path = "openapi_tests.rs"]
mod tests;
