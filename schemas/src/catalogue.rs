//! The schema catalogue: every event type's Avro schemas, by version, parsed once.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use apache_avro::Schema;

use crate::error::SchemaError;

/// One `.avsc` file of `schemas/avro/<aggregate>/<EventType>.v<N>.avsc`.
#[derive(Debug, Clone, Copy)]
pub struct SchemaFile {
    pub aggregate: &'static str,
    pub event_type: &'static str,
    pub version: u32,
    pub text: &'static str,
}

include!("catalogue_table.rs");

/// A parsed schema with what it belongs to.
#[derive(Debug, Clone)]
pub struct EventSchema {
    pub file: SchemaFile,
    pub schema: Schema,
    /// The record's full name, e.g. `commerce.user.UserRegistered`: the record name of the
    /// topic + record name subject strategy.
    pub full_name: String,
}

/// Every event type's schemas, oldest version first.
pub fn catalogue() -> &'static BTreeMap<&'static str, Vec<EventSchema>> {
    static CATALOGUE: OnceLock<BTreeMap<&'static str, Vec<EventSchema>>> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        let mut map: BTreeMap<&'static str, Vec<EventSchema>> = BTreeMap::new();
        for file in FILES {
            // The files are checked by tests; a broken one is skipped here and reported there.
            if let Ok(parsed) = parse(file) {
                map.entry(file.event_type).or_default().push(parsed);
            }
        }
        for versions in map.values_mut() {
            versions.sort_by_key(|s| s.file.version);
        }
        map
    })
}

pub(crate) fn parse(file: &SchemaFile) -> Result<EventSchema, SchemaError> {
    let schema = Schema::parse_str(file.text).map_err(|source| SchemaError::Invalid {
        event_type: file.event_type.to_owned(),
        version: file.version,
        source: Box::new(source),
    })?;
    let full_name = match &schema {
        Schema::Record(record) => record.name.fullname(None),
        _ => {
            return Err(SchemaError::NotARecord {
                event_type: file.event_type.to_owned(),
            })
        }
    };
    Ok(EventSchema {
        file: *file,
        schema,
        full_name,
    })
}

/// The newest schema of an event type: the one the relay writes with.
pub fn latest(event_type: &str) -> Result<&'static EventSchema, SchemaError> {
    catalogue()
        .get(event_type)
        .and_then(|versions| versions.last())
        .ok_or_else(|| SchemaError::UnknownEvent(event_type.to_owned()))
}
