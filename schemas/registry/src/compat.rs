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
                if let Err(error) = SchemaCompatibility::can_read(old, new) {
                    problems.push(format!(
                        "the new schema cannot read data written with an earlier one: {error}"
                    ));
                }
            }
            if forward {
                if let Err(error) = SchemaCompatibility::can_read(new, old) {
                    problems.push(format!(
                        "an earlier schema cannot read data written with the new one: {error}"
                    ));
                }
            }
        }
        problems
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
        assert_eq!(Level::parse("full"), None);
    }
}
