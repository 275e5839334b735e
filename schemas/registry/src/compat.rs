//! Compatibility levels and checks, with Confluent's semantics, on top of apache-avro's
//! reader/writer resolution check.

use apache_avro::schema::{
    ArraySchema, MapSchema, Name, NamesRef, ResolvedSchema, UnionSchema, UuidSchema,
};
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "NONE" => Self::None,
            "BACKWARD" => Self::Backward,
            "BACKWARD_TRANSITIVE" => Self::BackwardTransitive,
            "FORWARD" => Self::Forward,
            "FORWARD_TRANSITIVE" => Self::ForwardTransitive,
            "FULL" => Self::Full,
            "FULL_TRANSITIVE" => Self::FullTransitive,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(&self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }

    /// Checks `new` against a subject's live schemas, oldest first. Non-transitive levels look
    /// at the latest one only. Returns the messages of every failed check.
    pub fn check(&self, new: &Schema, existing: &[Schema]) -> Vec<String> {
        let against: &[Schema] = match (self, existing) {
            (Self::None, _) | (_, []) => return Vec::new(),
            (level, all) if level.transitive() => all,
            (_, all) => &all[all.len() - 1..],
        };
        let backward = matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        );
        let forward = matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        );
        // Each schema is written out once, not once per pair it is checked in.
        let new = match inlined(new) {
            Ok(new) => new,
            Err(error) => return vec![format!("the new schema cannot be checked: {error}")],
        };
        let mut problems = Vec::new();
        for old in against {
            let old = match inlined(old) {
                Ok(old) => old,
                Err(error) => {
                    problems.push(format!("an earlier schema cannot be checked: {error}"));
                    continue;
                }
            };
            if backward {
                if let Err(error) = reads_written_out(&old, &new) {
                    problems.push(format!(
                        "the new schema cannot read data written with an earlier one: {error}"
                    ));
                }
            }
            if forward {
                if let Err(error) = reads_written_out(&new, &old) {
                    problems.push(format!(
                        "an earlier schema cannot read data written with the new one: {error}"
                    ));
                }
            }
        }
        problems
    }
}

/// Whether `reader` reads every datum `writer` can write, as Confluent's checks require. The
/// library's partial compatibility (an enum symbol the reader lacks, a union branch that no
/// longer matches, a union narrowed to one of its types) reads some data and fails on the
/// rest: a schema registered so would stop consumers on the first such message.
///
/// Both schemas are compared as written out in full ([`inlined`]): the library compares a
/// named type used by name (a `Ref`, every use after its definition) by its name alone, so a
/// definition changed where it first appears was accepted for every later use, and a
/// definition moved from one field to another was refused as a change of type.
pub fn reads_all(writer: &Schema, reader: &Schema) -> Result<(), String> {
    reads_written_out(&inlined(writer)?, &inlined(reader)?)
}

/// [`reads_all`] for schemas already written out ([`inlined`]).
fn reads_written_out(writer: &Schema, reader: &Schema) -> Result<(), String> {
    use apache_avro::schema_compatibility::Compatibility;
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(Compatibility::Partial) => {
            Err("only some data of the writer's schema can be read (an enum symbol or a union branch is missing)".to_owned())
        }
        // The library's message can print both schemas whole.
        Err(error) => Err(shortened(error.to_string())),
    }
}

/// At most [`MAX_MESSAGE`] bytes of `message`, cut at a character boundary.
fn shortened(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(" …");
    }
    message
}

/// The longest message of one failed check.
const MAX_MESSAGE: usize = 2_000;

/// `schema` with every use of a named type by name replaced by the type's definition (a use
/// inside its own definition, a recursive type, stays a name), and every uuid as the type it
/// is written as (string, bytes or fixed): Confluent's checker ignores logical types, and
/// the library takes any two uuids as the same, a string one and a 16-byte fixed one too.
///
/// Written out, a small schema can be huge (each type using the one before it twice doubles
/// it): past [`MAX_NODES`] types, or [`MAX_DEPTH`] levels of nesting, the schema is refused
/// instead of checked, so that no registration can take the registry's memory or stack.
pub fn inlined(schema: &Schema) -> Result<Schema, String> {
    let resolved = ResolvedSchema::try_from(schema).map_err(|error| error.to_string())?;
    let mut inliner = Inliner {
        names: resolved.get_names(),
        expanding: Vec::new(),
        nodes: 0,
    };
    inliner.inline(schema, 0)
}

/// The most types a schema may have once its named types are written out.
pub const MAX_NODES: usize = 10_000;
/// The deepest a schema may nest once its named types are written out.
pub const MAX_DEPTH: usize = 128;

struct Inliner<'a, 's> {
    names: &'a NamesRef<'s>,
    expanding: Vec<Name>,
    nodes: usize,
}

impl Inliner<'_, '_> {
    fn inline(&mut self, schema: &Schema, depth: usize) -> Result<Schema, String> {
        self.nodes += 1;
        if self.nodes > MAX_NODES || depth > MAX_DEPTH {
            return Err(format!(
                "the schema is too large to check with its named types written out (more than \
                 {MAX_NODES} types or {MAX_DEPTH} levels)"
            ));
        }
        let next = depth + 1;
        Ok(match schema {
            Schema::Ref { name } if self.expanding.contains(name) => schema.clone(),
            Schema::Ref { name } => {
                let names = self.names;
                let definition = names
                    .get(name)
                    .ok_or_else(|| format!("the named type {name} is used but not defined"))?;
                self.inline(definition, next)?
            }
            Schema::Record(record) => {
                self.expanding.push(record.name.clone());
                let mut copy = record.clone();
                for field in &mut copy.fields {
                    field.schema = self.inline(&field.schema, next)?;
                }
                self.expanding.pop();
                Schema::Record(copy)
            }
            Schema::Array(array) => Schema::Array(ArraySchema {
                items: Box::new(self.inline(&array.items, next)?),
                attributes: array.attributes.clone(),
            }),
            Schema::Map(map) => Schema::Map(MapSchema {
                types: Box::new(self.inline(&map.types, next)?),
                attributes: map.attributes.clone(),
            }),
            Schema::Union(union) => {
                let variants = union
                    .variants()
                    .iter()
                    .map(|variant| self.inline(variant, next))
                    .collect::<Result<Vec<_>, _>>()?;
                Schema::Union(UnionSchema::new(variants).map_err(|error| error.to_string())?)
            }
            Schema::Uuid(UuidSchema::String) => Schema::String,
            Schema::Uuid(UuidSchema::Bytes) => Schema::Bytes,
            Schema::Uuid(UuidSchema::Fixed(fixed)) => Schema::Fixed(fixed.clone()),
            other => other.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type": "record", "name": "R", "fields": [{fields}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn levels_follow_confluent_semantics() {
        let a = schema(r#"{"name": "a", "type": "string"}"#);
        let with_default = schema(
            r#"{"name": "a", "type": "string"}, {"name": "b", "type": "long", "default": 1}"#,
        );
        let required = schema(r#"{"name": "a", "type": "string"}, {"name": "b", "type": "long"}"#);
        assert!(Level::Backward
            .check(&with_default, std::slice::from_ref(&a))
            .is_empty());
        assert!(!Level::Backward
            .check(&required, std::slice::from_ref(&a))
            .is_empty());
        // Adding a required field is forward compatible: old readers ignore it.
        assert!(Level::Forward
            .check(&required, std::slice::from_ref(&a))
            .is_empty());
        assert!(!Level::Full
            .check(&required, std::slice::from_ref(&a))
            .is_empty());
        assert!(Level::None
            .check(&required, std::slice::from_ref(&a))
            .is_empty());
        // Transitive levels look past the latest version.
        let history = [a.clone(), required.clone()];
        let drops_b = schema(r#"{"name": "a", "type": "string"}, {"name": "c", "type": "long"}"#);
        assert!(Level::Backward.check(&with_default, &history).is_empty());
        assert!(!Level::BackwardTransitive
            .check(&drops_b, &history)
            .is_empty());
        assert_eq!(Level::parse("FULL_TRANSITIVE"), Some(Level::FullTransitive));
    }

    /// Changes that read some old data and fail on the rest are incompatible, as Confluent
    /// has them. The library calls them partially compatible, which the check took for
    /// compatible: a union's string changed to a long was accepted.
    #[test]
    fn partly_readable_changes_are_refused() {
        let parse = |json: &str| Schema::parse_str(json).unwrap();
        let enum_of = |symbols: &str| {
            parse(&format!(
                r#"{{"type": "record", "name": "R", "fields": [{{"name": "e", "type":
                    {{"type": "enum", "name": "E", "symbols": [{symbols}]}}}}]}}"#
            ))
        };
        let union_of = |branches: &str| schema(&format!(r#"{{"name": "u", "type": {branches}}}"#));
        for (old, new) in [
            (enum_of(r#""A", "B", "C""#), enum_of(r#""A", "B""#)),
            (
                union_of(r#"["null", "string"]"#),
                union_of(r#"["null", "long"]"#),
            ),
            (union_of(r#"["null", "string"]"#), union_of(r#""string""#)),
        ] {
            assert!(
                !Level::Backward
                    .check(&new, std::slice::from_ref(&old))
                    .is_empty(),
                "{new:?}"
            );
        }
        // Widening stays compatible.
        let wider = union_of(r#"["null", "string", "long"]"#);
        let old = union_of(r#"["null", "string"]"#);
        assert!(Level::Backward.check(&wider, &[old]).is_empty());
        assert_eq!(Level::parse("full"), None);
    }

    /// A named type used by name is compared by its definition. Before, the library compared
    /// such a use by name alone: a definition that gained a required field where it first
    /// appears was accepted for a later use (whose old data cannot be read), and a definition
    /// moved to another field was refused as a change of type.
    #[test]
    fn named_types_used_by_name_are_compared_by_their_definitions() {
        let parse = |json: &str| Schema::parse_str(json).unwrap();
        let old = parse(
            r#"{"type": "record", "name": "R", "fields": [
                {"name": "a", "type": {"type": "record", "name": "A",
                    "fields": [{"name": "x", "type": "int"}]}},
                {"name": "b", "type": "A"}]}"#,
        );
        let gains_a_required_field = parse(
            r#"{"type": "record", "name": "R", "fields": [
                {"name": "c", "type": ["null", {"type": "record", "name": "A", "fields": [
                    {"name": "x", "type": "int"}, {"name": "y", "type": "string"}]}],
                 "default": null},
                {"name": "b", "type": "A"}]}"#,
        );
        let definition_moved = parse(
            r#"{"type": "record", "name": "R", "fields": [
                {"name": "b", "type": {"type": "record", "name": "A",
                    "fields": [{"name": "x", "type": "int"}]}},
                {"name": "a", "type": "A"}]}"#,
        );
        assert!(!Level::Backward
            .check(&gains_a_required_field, std::slice::from_ref(&old))
            .is_empty());
        assert_eq!(
            Level::Backward.check(&definition_moved, std::slice::from_ref(&old)),
            Vec::<String>::new()
        );
        // A recursive type stays a name inside its own definition, and still checks.
        let list = parse(
            r#"{"type": "record", "name": "Node", "fields": [
                {"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"]}]}"#,
        );
        assert!(Level::Full
            .check(&list, std::slice::from_ref(&list))
            .is_empty());
    }

    /// A uuid is checked as what it is written as: before, any two uuids were taken as the
    /// same, and a string uuid (36 characters) was accepted as readable as a 16-byte fixed.
    #[test]
    fn a_uuid_is_checked_as_the_type_it_is_written_as() {
        let string = schema(r#"{"name": "id", "type": {"type": "string", "logicalType": "uuid"}}"#);
        let fixed = schema(
            r#"{"name": "id", "type": {"type": "fixed", "name": "U", "size": 16,
                "logicalType": "uuid"}}"#,
        );
        assert!(!Level::Backward
            .check(&fixed, std::slice::from_ref(&string))
            .is_empty());
        assert!(Level::Full
            .check(&string, std::slice::from_ref(&string))
            .is_empty());
    }

    /// A schema that is small as written but huge written out (each type using the one before
    /// it twice) is refused at once. Before the limit, its check built 2^30 copies and took
    /// the registry's memory.
    #[test]
    fn a_schema_too_large_written_out_is_refused_instead_of_checked() {
        let mut fields = vec![
            r#"{"name": "f0", "type": {"type": "record", "name": "T0", "fields": [{"name": "v", "type": "int"}]}}"#
                .to_owned(),
        ];
        for i in 1..=30 {
            let before = i - 1;
            fields.push(format!(
                r#"{{"name": "f{i}", "type": {{"type": "record", "name": "T{i}", "fields": [
                    {{"name": "x", "type": "T{before}"}}, {{"name": "y", "type": "T{before}"}}]}}}}"#
            ));
        }
        let bomb = Schema::parse_str(&format!(
            r#"{{"type": "record", "name": "R", "fields": [{}]}}"#,
            fields.join(", ")
        ))
        .unwrap();
        let problems = Level::Backward.check(&bomb, std::slice::from_ref(&bomb));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("too large"), "{problems:?}");
        assert!(problems[0].len() < 3_000);
    }
}
