//! Shared application state handed to every handler.

use std::sync::Arc;

use crate::core::CommandBus;

#[derive(Clone)]
pub struct AppState {
    pub bus: Arc<CommandBus>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
}
