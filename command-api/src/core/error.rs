//! [`CommandError`]: why the core did not run a command. HTTP-agnostic; the edge turns it into a
//! problem response in one place (`crate::error`).

use domain::{DomainError, ErrorKind};
use infra::event_store::AppendError;

type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The aggregate's rules refused the command (or it does not exist).
    #[error("{detail}")]
    Rule {
        kind: ErrorKind,
        code: &'static str,
        detail: String,
        /// Figures that explain the refusal, e.g. the amount still available to refund.
        facts: Vec<(&'static str, i64)>,
    },
    /// A field names another aggregate that does not exist or cannot take part.
    #[error("{field}: {message}")]
    InvalidReference {
        field: &'static str,
        message: &'static str,
    },
    #[error("version conflict, current version {current_version}")]
    VersionConflict { current_version: i64 },
    #[error("{scope} already taken")]
    Taken { scope: String },
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyMismatch,
    /// The command needs a principal and has none.
    #[error("not authenticated")]
    Unauthenticated,
    /// The principal's roles do not allow this command.
    #[error("forbidden")]
    Forbidden,
    /// PostgreSQL refused a value the command carried (SQLSTATE class 22); the request is at
    /// fault. Values are checked before they get this far, so this is the last line.
    #[error("the event store refused a value of the request")]
    Unstorable(#[source] Source),
    #[error("database unavailable")]
    Unavailable(#[source] Source),
    #[error("internal error")]
    Internal(#[source] Source),
}

impl CommandError {
    pub fn from_domain<E: DomainError>(error: &E) -> Self {
        Self::Rule {
            kind: error.kind(),
            code: error.code(),
            detail: error.to_string(),
            facts: error.facts(),
        }
    }

    /// A short label for the `commands_total{outcome}` metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Rule { kind, .. } => match kind {
                ErrorKind::NotFound => "not_found",
                ErrorKind::Conflict => "rejected",
                ErrorKind::Invalid { .. } => "invalid",
            },
            Self::InvalidReference { .. } | Self::IdempotencyKeyMismatch | Self::Unstorable(_) => {
                "invalid"
            }
            Self::VersionConflict { .. } | Self::Taken { .. } => "conflict",
            Self::Unauthenticated | Self::Forbidden => "forbidden",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "error",
        }
    }
}

/// Maps a database error: unreachable means unavailable, a refused value is the request's,
/// anything else is ours.
pub fn database_error(error: sqlx::Error) -> CommandError {
    kind(&error)(Box::new(error))
}

/// As [`database_error`], for an error shared by every request of a group commit.
pub fn shared_database_error(error: std::sync::Arc<sqlx::Error>) -> CommandError {
    kind(&error)(Box::new(error))
}

/// The one decision both of the above share: which error a database failure becomes.
fn kind(error: &sqlx::Error) -> fn(Source) -> CommandError {
    if infra::db::is_unavailable(error) {
        CommandError::Unavailable
    } else if infra::db::is_data_exception(error) {
        CommandError::Unstorable
    } else {
        CommandError::Internal
    }
}

/// A failed append as the command's error.
pub(super) fn append_failed(error: AppendError) -> CommandError {
    match error {
        AppendError::VersionConflict { current_version } => {
            CommandError::VersionConflict { current_version }
        }
        AppendError::ClaimTaken { scope } => CommandError::Taken { scope },
        AppendError::Database(error) => shared_database_error(error),
        AppendError::InvalidData(error) => CommandError::Unstorable(Box::new(error)),
        AppendError::Closed => CommandError::Unavailable(Box::new(AppendError::Closed)),
        AppendError::Empty | AppendError::IdempotencyKeyUsed(_) => {
            CommandError::Internal(Box::new(error))
        }
    }
}
