//! Collects field errors while a DTO is turned into a command, so a client sees every bad field
//! in one response.

use infra::http::FieldProblem;
use uuid::Uuid;

use crate::error::ApiError;

#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<FieldProblem>,
}

impl Validator {
    /// Records the error (if any) under `field` and passes the value on.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: impl Into<String>,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.errors.push(FieldProblem {
                    field: field.into(),
                    message: error.to_string(),
                });
                None
            }
        }
    }

    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldProblem {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    /// The accumulated errors as a 422. Call when a required value is missing.
    pub fn into_error(self) -> ApiError {
        if self.errors.is_empty() {
            // A value was missing without an error being recorded: a bug in the caller, but
            // still the client's request that could not be turned into a command.
            ApiError::field("body", "the request could not be understood")
        } else {
            ApiError::Validation(self.errors)
        }
    }
}

/// Parses an id from the path; anything that is not a UUID names no aggregate, hence 404.
pub fn parse_id(raw: &str, aggregate: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(aggregate))
}
