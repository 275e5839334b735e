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

/// Whether `code` names an aggregate's refusal of a well-formed command: no such aggregate
/// (404) or a rule its state breaks (409). A client told one of these knows the aggregate
/// decided and retrying changes nothing; a 404 or 409 with any other code (a route the
/// command API does not have, a proxy's own error page) says nothing about the command.
pub fn is_refusal(code: &str) -> bool {
    refusals().any(|refusal| refusal == code)
}

/// The codes of every refusal of every aggregate, from one error of each kind.
fn refusals() -> impl Iterator<Item = &'static str> {
    use crate::{DomainError, ErrorKind, OrderError, PaymentError, UserError};
    let decided = |kind: ErrorKind| matches!(kind, ErrorKind::NotFound | ErrorKind::Conflict);
    let orders = every_order_error()
        .into_iter()
        .filter(move |e| decided(e.kind()));
    let payments = every_payment_error()
        .into_iter()
        .filter(move |e| decided(e.kind()));
    let users = every_user_error()
        .into_iter()
        .filter(move |e| decided(e.kind()));
    orders
        .map(|e: OrderError| e.code())
        .chain(payments.map(|e: PaymentError| e.code()))
        .chain(users.map(|e: UserError| e.code()))
}

// One error of each kind. The `match` in each lists every variant, so that adding one to an
// error fails to compile here until it is added to the list above it too.

fn every_order_error() -> Vec<crate::OrderError> {
    use crate::order::OrderStatus;
    use crate::OrderError::*;
    let all = vec![
        NotFound,
        AlreadyPlaced,
        NoItems,
        TooManyItems { max: 1 },
        DuplicateSku { index: 0 },
        TotalTooLarge,
        NothingToPay,
        IllegalTransition {
            from: OrderStatus::Created,
            action: "ship",
        },
    ];
    for e in &all {
        match e {
            NotFound
            | AlreadyPlaced
            | NoItems
            | TooManyItems { .. }
            | DuplicateSku { .. }
            | TotalTooLarge
            | NothingToPay
            | IllegalTransition { .. } => {}
        }
    }
    all
}

fn every_payment_error() -> Vec<crate::PaymentError> {
    use crate::order::OrderStatus;
    use crate::payment::PaymentStatus;
    use crate::PaymentError::*;
    let currency = crate::values::Currency::parse("EUR").expect("a known currency");
    let all = vec![
        NotFound,
        AlreadyInitiated,
        CurrencyMismatch { expected: currency },
        AmountMismatch { expected: 1 },
        OrderNotPayable {
            status: OrderStatus::Created,
        },
        IllegalTransition {
            from: PaymentStatus::Initiated,
            action: "capture",
        },
        AuthorizationExceedsAmount { max: 1 },
        CaptureExceedsAuthorized { available: 1 },
        RefundExceedsCaptured { available: 1 },
    ];
    for e in &all {
        match e {
            NotFound
            | AlreadyInitiated
            | CurrencyMismatch { .. }
            | AmountMismatch { .. }
            | OrderNotPayable { .. }
            | IllegalTransition { .. }
            | AuthorizationExceedsAmount { .. }
            | CaptureExceedsAuthorized { .. }
            | RefundExceedsCaptured { .. } => {}
        }
    }
    all
}

fn every_user_error() -> Vec<crate::UserError> {
    use crate::values::Role;
    use crate::UserError::*;
    let all = vec![
        NotFound,
        AlreadyRegistered,
        Deactivated,
        NothingToChange,
        EmailUnchanged,
        TooManyAddresses { max: 1 },
        AddressIdTaken,
        AddressNotFound,
        RoleAlreadyGranted(Role::Customer),
        RoleNotGranted(Role::Customer),
    ];
    for e in &all {
        match e {
            NotFound
            | AlreadyRegistered
            | Deactivated
            | NothingToChange
            | EmailUnchanged
            | TooManyAddresses { .. }
            | AddressIdTaken
            | AddressNotFound
            | RoleAlreadyGranted(_)
            | RoleNotGranted(_) => {}
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_the_aggregates_not_found_and_conflict_codes_only() {
        for code in [
            "order-not-found",
            "payment-not-found",
            "illegal-order-transition",
            "illegal-payment-transition",
            REFUND_EXCEEDS_CAPTURED,
            "capture-exceeds-authorized",
        ] {
            assert!(is_refusal(code), "{code}");
        }
        for code in [
            "route-not-found",
            VERSION_CONFLICT,
            "validation-failed",
            "currency-mismatch",
            "",
        ] {
            assert!(!is_refusal(code), "{code}");
        }
    }
}
