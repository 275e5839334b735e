//! Stable codes of the rules other services must recognise in the command API's answers.
//!
//! The command API renders each refusal as a problem whose `type` ends in one of these codes
//! (the prefix is in `infra::http::problem`); a client compares the code exactly, never by
//! matching text. Domain errors return these constants from `DomainError::code`, and the
//! command API uses them when it renders its own problems, so the two sides cannot drift.

/// Another command changed the aggregate first; reload and retry.
pub const VERSION_CONFLICT: &str = "version-conflict";
/// A refund asked for more than captured minus refunded; the problem names what is left.
pub const REFUND_EXCEEDS_CAPTURED: &str = "refund-exceeds-captured";
/// The problem member of [`REFUND_EXCEEDS_CAPTURED`] (and of a capture over the authorized
/// amount) that says how much is left, in minor units.
pub const AVAILABLE: &str = "available";
