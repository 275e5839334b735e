//! Shared application state handed to every handler.

use std::sync::Arc;

use crate::core::CommandBus;
use crate::identity::Identity;
use crate::webhook::Webhook;

#[derive(Clone)]
pub struct AppState {
    pub bus: Arc<CommandBus>,
    pub identity: Arc<Identity>,
    pub webhook: Arc<Webhook>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
}
