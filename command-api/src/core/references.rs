//! Checks of other aggregates that a command names. They are reference checks, not invariants:
//! a customer deactivated a moment after placing an order still has that order, exactly as if
//! they had ordered a moment earlier, so no lock spans the two aggregates.

use domain::order::PaymentTerms;
use domain::{Order, User, UserStatus};
use uuid::Uuid;

use super::{CommandBus, CommandError};

impl CommandBus {
    /// `Ok` when `customer_id` is an active user.
    pub async fn require_active_customer(&self, customer_id: Uuid) -> Result<(), CommandError> {
        let customer = self.load::<User>(customer_id).await?;
        if customer.and_then(|u| u.status()) != Some(UserStatus::Active) {
            return Err(CommandError::InvalidReference {
                field: "customer_id",
                message: "no active user with this id",
            });
        }
        Ok(())
    }

    /// What a payment for `order_id` must match.
    pub async fn payment_terms(&self, order_id: Uuid) -> Result<PaymentTerms, CommandError> {
        self.load::<Order>(order_id)
            .await?
            .and_then(|o| o.payment_terms())
            .ok_or(CommandError::InvalidReference {
                field: "order_id",
                message: "no order with this id",
            })
    }
}
