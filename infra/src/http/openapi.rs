//! The problem responses every operation of an API can give besides its own outcomes: those
//! of the shared JSON and parameter extractors and of the service skeleton (`crate::server`:
//! 503 when overloaded, 504 when a request times out). [`Problems`] adds them to each
//! operation of a generated OpenAPI document, with the problem schema, so the document lists
//! every status a client can see; an operation's own description of a status is kept.

use utoipa::openapi::content::Content;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::Response;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{OpenApi, Ref, RefOr};
use utoipa::Modify;

/// Every operation of a generated document, with its path.
pub fn operations_mut(openapi: &mut OpenApi) -> impl Iterator<Item = (&str, &mut Operation)> {
    openapi.paths.paths.iter_mut().flat_map(|(path, item)| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        .map(move |operation| (path.as_str(), operation))
    })
}

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Adds `statuses` (status, description) with a problem body to every operation.
pub struct Problems {
    pub statuses: &'static [(u16, &'static str)],
}

/// Statuses any route of either API can answer whatever it does.
pub const SKELETON_STATUSES: &[(u16, &str)] = &[
    (
        503,
        "the service is overloaded, or its database is unavailable or rolled the request back \
         (as the loser of a deadlock with a concurrent one); nothing was done (`Retry-After`)",
    ),
    (
        504,
        "the request did not finish within the request timeout (`/problems/request-timeout`)",
    ),
];

impl Modify for Problems {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .schemas
            .insert("Problem".to_owned(), RefOr::T(problem_schema()));
        for (_, operation) in operations_mut(openapi) {
            let responses = &mut operation.responses.responses;
            for (status, description) in self.statuses.iter().chain(SKELETON_STATUSES) {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| RefOr::T(Response::new(*description)));
            }
            for (status, response) in responses.iter_mut() {
                if let RefOr::T(response) = response {
                    if status.starts_with('4') || status.starts_with('5') {
                        as_problem(status, response);
                    }
                }
            }
        }
    }
}

/// Gives an error response the problem body (and `Retry-After` where it is sent).
fn as_problem(status: &str, response: &mut Response) {
    if response.content.is_empty() {
        response.content.insert(
            PROBLEM_JSON.to_owned(),
            Content::new(Some(Ref::from_schema_name("Problem"))),
        );
    }
    if matches!(status, "429" | "503" | "504") {
        let seconds = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0));
        response
            .headers
            .entry("Retry-After".to_owned())
            .or_insert_with(|| Header::new(seconds));
    }
}

/// RFC 9457 problem details as the services send them (`crate::http::Problem`).
fn problem_schema() -> Schema {
    let text = || ObjectBuilder::new().schema_type(Type::String);
    let field = ObjectBuilder::new()
        .property("field", text())
        .property("message", text())
        .required("field")
        .required("message");
    ObjectBuilder::new()
        .property("type", text())
        .property("title", text())
        .property(
            "status",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(400))
                .maximum(Some(599)),
        )
        .property("detail", text())
        .property("errors", ArrayBuilder::new().items(field))
        .required("type")
        .required("title")
        .required("status")
        .required("detail")
        .into()
}

/// The constraints a server enforces that its DTO derives do not state, merged into the
/// generated document (a JSON value) by name, so they can be computed from the checking code.
/// A name that is not in the document is a bug in the caller: it panics, and the unit test that
/// builds each document finds it.
pub struct Constraints<'a>(pub &'a mut serde_json::Value);

impl Constraints<'_> {
    /// `generated` as a JSON value with `constrain`'s constraints merged in.
    pub fn apply(generated: OpenApi, constrain: fn(&mut Constraints<'_>)) -> serde_json::Value {
        let mut doc = serde_json::to_value(generated).unwrap_or_default();
        constrain(&mut Constraints(&mut doc));
        doc
    }

    /// Merges `members` into the schema of `property` of component `schema`.
    pub fn property(&mut self, schema: &str, property: &str, members: serde_json::Value) {
        let pointer = format!("/components/schemas/{schema}/properties/{property}");
        merge(self.at(&pointer), members);
    }

    /// Merges `members` into component `schema` itself.
    pub fn schema(&mut self, schema: &str, members: serde_json::Value) {
        merge(self.at(&format!("/components/schemas/{schema}")), members);
    }

    /// Merges `members` into parameter `name` of `method path`; a `schema` member is merged
    /// into the parameter's schema.
    pub fn parameter(&mut self, method: &str, path: &str, name: &str, members: serde_json::Value) {
        let pointer = format!("/paths/{}/{method}/parameters", path.replace('/', "~1"));
        let parameter = self
            .at(&pointer)
            .as_array_mut()
            .and_then(|all| all.iter_mut().find(|p| p["name"] == name))
            .unwrap_or_else(|| panic!("no parameter {name} of {method} {path}"));
        merge(parameter, members);
    }

    /// Adds `parameter` to every operation (e.g. an optional header every route reads).
    pub fn parameter_everywhere(&mut self, parameter: serde_json::Value) {
        self.parameter_where(|_| true, parameter);
    }

    /// Adds a parameter to every operation of the paths `applies` accepts.
    pub fn parameter_where(
        &mut self,
        applies: impl Fn(&str) -> bool,
        parameter: serde_json::Value,
    ) {
        for operation in self.operations_where(applies) {
            let parameters = operation
                .entry("parameters")
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let Some(parameters) = parameters.as_array_mut() {
                parameters.push(parameter.clone());
            }
        }
    }

    /// Declares a security scheme under `components.securitySchemes`.
    pub fn security_scheme(&mut self, name: &str, scheme: serde_json::Value) {
        let components = self.at("/components");
        if let Some(components) = components.as_object_mut() {
            let schemes = components
                .entry("securitySchemes")
                .or_insert_with(|| serde_json::json!({}));
            schemes[name] = scheme;
        }
    }

    /// Sets `security` on every operation of the paths `applies` accepts.
    pub fn security_where(&mut self, applies: impl Fn(&str) -> bool, security: serde_json::Value) {
        for operation in self.operations_where(applies) {
            operation.insert("security".to_owned(), security.clone());
        }
    }

    /// Every operation object of the paths `applies` accepts.
    fn operations_where(
        &mut self,
        applies: impl Fn(&str) -> bool,
    ) -> impl Iterator<Item = &mut serde_json::Map<String, serde_json::Value>> {
        self.at("/paths")
            .as_object_mut()
            .into_iter()
            .flat_map(|p| p.iter_mut())
            .filter(move |(path, _)| applies(path))
            .flat_map(|(_, item)| item.as_object_mut())
            .flat_map(|item| item.values_mut())
            .flat_map(|operation| operation.as_object_mut())
    }

    fn at(&mut self, pointer: &str) -> &mut serde_json::Value {
        self.0
            .pointer_mut(pointer)
            .unwrap_or_else(|| panic!("the document has no {pointer}"))
    }
}

/// Object members are merged recursively; anything else replaces what was there.
fn merge(target: &mut serde_json::Value, members: serde_json::Value) {
    match (target, members) {
        (serde_json::Value::Object(target), serde_json::Value::Object(members)) => {
            for (key, value) in members {
                match target.get_mut(&key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge(existing, value)
                    }
                    _ => {
                        target.insert(key, value);
                    }
                }
            }
        }
        (target, members) => *target = members,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::{OpenApiBuilder, PathsBuilder};

    #[test]
    fn every_operation_gets_every_problem_status_with_the_problem_schema() {
        let operation = OperationBuilder::new()
            .response("200", Response::new("ok"))
            .response("404", Response::new("no such thing"));
        let mut doc = OpenApiBuilder::new()
            .paths(PathsBuilder::new().path("/x", PathItem::new(HttpMethod::Post, operation)))
            .build();
        Problems {
            statuses: &[(400, "malformed"), (404, "not found")],
        }
        .modify(&mut doc);
        let json = serde_json::to_value(&doc).unwrap();
        let responses = &json["paths"]["/x"]["post"]["responses"];
        for status in ["400", "404", "503", "504"] {
            let problem = &responses[status]["content"][PROBLEM_JSON]["schema"]["$ref"];
            assert_eq!(problem, "#/components/schemas/Problem", "{status}");
        }
        assert_eq!(responses["404"]["description"], "no such thing");
        assert!(responses["503"]["headers"]["Retry-After"].is_object());
        assert!(responses["200"]["content"].is_null());
        assert!(json["components"]["schemas"]["Problem"].is_object());
    }
}
