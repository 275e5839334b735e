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
    /// No database connection came free in time (or the server had no connection slot left)
    /// while the database went on answering other commands: the service is overloaded, the
    /// database is not gone. Nothing was written.
    #[error("no database connection came free in time")]
    Busy(#[source] Source),
    /// PostgreSQL rolled the command's transaction back because of a concurrent one (SQLSTATE
    /// class 40): the loser of a deadlock (two users trading emails), a serialization
    /// failure. Nothing was written and sending it again decides it afresh.
    #[error("the database rolled the command back")]
    Transient(#[source] Source),
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
            Self::Busy(_) => "overloaded",
            Self::Transient(_) => "rolled_back",
            Self::Internal(_) => "error",
        }
    }

    /// Whether this refusal needed the database's answer (what it holds refused the command),
    /// which proves the database reachable. Refusals decided before any database call
    /// (`Unauthenticated`, and `Forbidden` by role) and failures do not count.
    pub fn database_answered(&self) -> bool {
        matches!(
            self,
            Self::Rule { .. } | Self::VersionConflict { .. } | Self::Taken { .. }
        )
    }
}

/// What an "unavailable" database error means: a wait for a pooled connection that timed out,
/// or a server out of connection slots, is overload when the database answered other commands
/// in the meantime (`answered_meanwhile`); anything else (a refused or broken connection, or no
/// answer to anyone) is the database being unavailable.
pub(super) fn unavailable_or_busy(source: Source, answered_meanwhile: bool) -> CommandError {
    let error = database_cause(source.as_ref());
    let busy_kind = matches!(error, Some(sqlx::Error::PoolTimedOut))
        || matches!(error, Some(sqlx::Error::Database(db)) if db.code().as_deref() == Some("53300"));
    if busy_kind && answered_meanwhile {
        CommandError::Busy(source)
    } else {
        CommandError::Unavailable(source)
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
    } else if sqlstate(error).is_some_and(|code| code.starts_with("40")) {
        CommandError::Transient
    } else if sqlstate(error).is_some_and(|code| code.starts_with("53") || code == "57014") {
        // Resources short (disk full, out of memory) or the statement cancelled: the database
        // is not serving this command; nothing was written.
        CommandError::Unavailable
    } else {
        CommandError::Internal
    }
}

/// The database error a command error's source is: its own, or one a group commit shared.
fn database_cause<'a>(
    source: &'a (dyn std::error::Error + Send + Sync + 'static),
) -> Option<&'a sqlx::Error> {
    source.downcast_ref::<sqlx::Error>().or_else(|| {
        source
            .downcast_ref::<std::sync::Arc<sqlx::Error>>()
            .map(|e| &**e)
    })
}

/// The SQLSTATE of a database error, if it is one.
fn sqlstate(error: &sqlx::Error) -> Option<std::borrow::Cow<'_, str>> {
    match error {
        sqlx::Error::Database(db) => db.code(),
        _ => None,
    }
}

/// The SQLSTATE of a command error's database cause (its own, or one a group commit shared),
/// for the log.
pub fn source_sqlstate(source: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    database_cause(source)
        .and_then(sqlstate)
        .map(|code| code.into_owned())
        .unwrap_or_default()
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
        AppendError::DatabaseDown => CommandError::Unavailable(Box::new(infra::db::DatabaseDown)),
        AppendError::Empty | AppendError::IdempotencyKeyUsed(_) => {
            CommandError::Internal(Box::new(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn pool_timeout() -> Source {
        Box::new(sqlx::Error::PoolTimedOut)
    }

    #[test]
    fn a_pool_timeout_while_others_are_answered_is_overload() {
        assert!(matches!(
            unavailable_or_busy(pool_timeout(), true),
            CommandError::Busy(_)
        ));
        // The group commit's shared error too.
        let shared: Source = Box::new(Arc::new(sqlx::Error::PoolTimedOut));
        assert!(matches!(
            unavailable_or_busy(shared, true),
            CommandError::Busy(_)
        ));
    }

    #[test]
    fn a_pool_timeout_with_nothing_answered_is_unavailability() {
        assert!(matches!(
            unavailable_or_busy(pool_timeout(), false),
            CommandError::Unavailable(_)
        ));
    }

    #[test]
    fn a_broken_connection_is_unavailability_even_while_others_are_answered() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(matches!(
            unavailable_or_busy(Box::new(sqlx::Error::Io(refused)), true),
            CommandError::Unavailable(_)
        ));
        assert!(matches!(
            unavailable_or_busy(Box::new(AppendError::Closed), true),
            CommandError::Unavailable(_)
        ));
    }

    /// A database error with only a SQLSTATE, as PostgreSQL's would carry.
    #[derive(Debug)]
    struct Refused(&'static str);

    impl std::fmt::Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "refused with SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Refused {}

    impl sqlx::error::DatabaseError for Refused {
        fn message(&self) -> &str {
            "refused"
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    /// A deadlock's loser and a serialization failure are the command rolled back (503, send
    /// it again); resources short and a cancelled statement are the database not serving it
    /// (503); anything else unexpected stays ours (500). Before, all of these were 500s.
    #[test]
    fn rolled_back_commands_and_a_database_short_of_resources_are_not_internal_errors() {
        let of = |code| database_error(sqlx::Error::Database(Box::new(Refused(code))));
        for code in ["40P01", "40001"] {
            let error = of(code);
            assert!(matches!(error, CommandError::Transient(_)), "{code}");
            let CommandError::Transient(source) = error else {
                unreachable!()
            };
            assert_eq!(source_sqlstate(source.as_ref()), code);
        }
        for code in ["53100", "53200", "57014", "25006", "53300"] {
            assert!(matches!(of(code), CommandError::Unavailable(_)), "{code}");
        }
        assert!(matches!(of("42P01"), CommandError::Internal(_)));
        assert!(matches!(of("22021"), CommandError::Unstorable(_)));
    }
}
