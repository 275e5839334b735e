//! Request extraction: the JSON body (strict, size-limited, field-named errors), the request
//! metadata the core needs (actor, correlation, causation, trace, `If-Match`,
//! `Idempotency-Key`) and the collector of field validation errors.

mod context;
mod json;
mod validate;

pub(crate) use context::header_token;
pub use context::{
    metadata, Admins, Admitted, Operators, Owners, OwnersAndServices, Registration, RouteAccess,
};
pub use context::{IDEMPOTENCY_KEY_MAX, ID_HEADER_MAX, IF_MATCH_PATTERN, TOKEN_PATTERN};
pub use json::{parse, read_limited, EmptyBody, JsonBody};
pub use validate::{parse_id, Validator};
