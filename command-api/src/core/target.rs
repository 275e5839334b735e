//! The aggregates the command bus drives and the unique claims their events make.

use super::policy;
use cqrs_es::Aggregate;
use domain::{DomainError, Order, Payment, UniqueClaim, User};

/// An aggregate the bus can drive.
pub trait Target: Aggregate<Services = ()> + policy::Governed + Send + Sync
where
    Self::Error: DomainError,
{
    fn claims(_event: &Self::Event) -> Vec<UniqueClaim> {
        Vec::new()
    }
}

impl Target for User {
    fn claims(event: &Self::Event) -> Vec<UniqueClaim> {
        event.unique_claims()
    }
}
impl Target for Order {}
impl Target for Payment {
    fn claims(event: &Self::Event) -> Vec<UniqueClaim> {
        event.unique_claims()
    }
}
