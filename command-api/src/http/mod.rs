//! Request extraction: the JSON body (strict, size-limited, field-named errors), the command
//! context (actor, correlation, causation, trace, `If-Match`, `Idempotency-Key`) and the
//! collector of field validation errors.

mod context;
mod json;
mod validate;

pub use context::{Actor, CommandContext};
pub use json::{EmptyBody, JsonBody};
pub use validate::{parse_id, Validator};
