//! Compatibility levels and checks, with Confluent's semantics, on top of apache-avro's
//! reader/writer resolution check.

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
        let mut problems = Vec::new();
        for old in against {
            if backward {
                if let Err(error) = reads_all(old, new) {
                    problems.push(format!(
                        "the new schema cannot read data written with an earlier one: {error}"
                    ));
                }
            }
            if forward {
                if let Err(error) = reads_all(new, old) {
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
pub fn reads_all(writer: &Schema, reader: &Schema) -> Result<(), String> {
    use apache_avro::schema_compatibility::Compatibility;
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(Compatibility::Partial) => {
            Err("only some data of the writer's schema can be read (an enum symbol or a union branch is missing)".to_owned())
        }
        Err(error) => Err(error.to_string()),
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
}
