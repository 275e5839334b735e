//! Conversion between the JSON form of events (as stored and as serde writes the domain
//! events) and Avro values, guided by the schema. One generic converter serves every event
//! type, so adding an event needs a schema file, not code.
//!
//! Mapping: records <-> objects (the JSON `type` tag is the record name and is not a field),
//! `["null", T]` <-> null or T, arrays, strings, longs, ints, booleans. A string field marked
//! `"x-json": true` carries an arbitrary JSON value as text (user preferences).

use apache_avro::schema::{RecordField, Schema};
use apache_avro::types::Value as Avro;
use serde_json::{Map, Value as Json};

use crate::error::SchemaError;

/// JSON payload -> Avro value of `schema`.
pub fn json_to_avro(json: &Json, schema: &Schema) -> Result<Avro, SchemaError> {
    to_avro(json, schema, false, &Path::Root)
}

/// Avro value -> JSON payload; `event_type` becomes the `type` tag of the top-level object.
pub fn avro_to_json(avro: &Avro, schema: &Schema, event_type: &str) -> Result<Json, SchemaError> {
    let mut json = to_json(avro, schema, false, &Path::Root)?;
    tag(&mut json, event_type);
    Ok(json)
}

/// What `avro_to_json(json_to_avro(json))` gives, in one walk and without the Avro value: the
/// JSON a consumer decodes from a message carrying `json` (a replay does this a million
/// times). Fails where either of them fails, with the same error; the schemas' tests hold the
/// two ways equal.
pub fn round_trip(json: &Json, schema: &Schema, event_type: &str) -> Result<Json, SchemaError> {
    let mut json = through(json, schema, false, &Path::Root)?;
    tag(&mut json, event_type);
    Ok(json)
}

fn tag(json: &mut Json, event_type: &str) {
    if let Json::Object(fields) = json {
        fields.insert("type".to_owned(), Json::String(event_type.to_owned()));
    }
}

/// Where a value stands in the payload, written out only for an error (`.field`, `[index]`).
enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

fn mismatch(path: &Path, expected: &str) -> SchemaError {
    SchemaError::Mismatch {
        path: match path {
            Path::Root => "$".to_owned(),
            path => path.to_string(),
        },
        expected: expected.to_owned(),
    }
}

fn is_json_text(field: &RecordField) -> bool {
    field.custom_attributes.get("x-json") == Some(&Json::Bool(true))
}

/// The union member a JSON value is written as: null as the null member, anything else as
/// the other one.
fn member<'s>(
    union: &'s apache_avro::schema::UnionSchema,
    value: &Json,
    path: &Path,
) -> Result<(usize, &'s Schema), SchemaError> {
    let variants = union.variants();
    let wanted = if value.is_null() {
        variants.iter().position(|v| matches!(v, Schema::Null))
    } else {
        variants.iter().position(|v| !matches!(v, Schema::Null))
    };
    let index = wanted.ok_or_else(|| mismatch(path, "a union member"))?;
    Ok((index, &variants[index]))
}

/// A record field's JSON value: the payload's, else the field's default, else null.
fn field_value<'j>(fields: &'j Map<String, Json>, field: &'j RecordField) -> (&'j Json, bool) {
    match fields.get(&field.name) {
        Some(value) => (value, is_json_text(field)),
        None => (field.default.as_ref().unwrap_or(&Json::Null), false),
    }
}

fn long(n: &serde_json::Number, path: &Path) -> Result<i64, SchemaError> {
    n.as_i64().ok_or_else(|| mismatch(path, "long"))
}

fn int(n: &serde_json::Number, path: &Path) -> Result<i32, SchemaError> {
    n.as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| mismatch(path, "int"))
}

fn to_avro(
    json: &Json,
    schema: &Schema,
    json_text: bool,
    path: &Path,
) -> Result<Avro, SchemaError> {
    match (schema, json) {
        (Schema::Record(record), Json::Object(fields)) => {
            let mut out = Vec::with_capacity(record.fields.len());
            for field in &record.fields {
                let at = Path::Field(path, &field.name);
                let (value, json_text) = field_value(fields, field);
                out.push((
                    field.name.clone(),
                    to_avro(value, &field.schema, json_text, &at)?,
                ));
            }
            Ok(Avro::Record(out))
        }
        (Schema::Union(union), value) => {
            let (index, variant) = member(union, value, path)?;
            let inner = to_avro(value, variant, json_text, path)?;
            Ok(Avro::Union(index as u32, Box::new(inner)))
        }
        (Schema::Null, Json::Null) => Ok(Avro::Null),
        (Schema::String, value) if json_text && !value.is_null() => {
            Ok(Avro::String(value.to_string()))
        }
        (Schema::String, Json::String(s)) => Ok(Avro::String(s.clone())),
        (Schema::Long, Json::Number(n)) => long(n, path).map(Avro::Long),
        (Schema::Int, Json::Number(n)) => int(n, path).map(Avro::Int),
        (Schema::Boolean, Json::Bool(b)) => Ok(Avro::Boolean(*b)),
        (Schema::Array(array), Json::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| to_avro(item, &array.items, false, &Path::Index(path, i)))
            .collect::<Result<Vec<_>, _>>()
            .map(Avro::Array),
        (schema, _) => Err(mismatch(path, &format!("{schema:?}"))),
    }
}

fn to_json(
    avro: &Avro,
    schema: &Schema,
    json_text: bool,
    path: &Path,
) -> Result<Json, SchemaError> {
    match (schema, avro) {
        (Schema::Record(record), Avro::Record(values)) => {
            let mut out = Map::new();
            for (field, (name, value)) in record.fields.iter().zip(values) {
                let at = Path::Field(path, name);
                out.insert(
                    name.clone(),
                    to_json(value, &field.schema, is_json_text(field), &at)?,
                );
            }
            Ok(Json::Object(out))
        }
        (Schema::Union(union), Avro::Union(index, inner)) => {
            let variant = union
                .variants()
                .get(*index as usize)
                .ok_or_else(|| mismatch(path, "a union member"))?;
            to_json(inner, variant, json_text, path)
        }
        (_, Avro::Null) => Ok(Json::Null),
        (Schema::String, Avro::String(s)) if json_text => {
            serde_json::from_str(s).map_err(|_| mismatch(path, "JSON text"))
        }
        (_, Avro::String(s)) => Ok(Json::String(s.clone())),
        (_, Avro::Long(n)) => Ok(Json::from(*n)),
        (_, Avro::Int(n)) => Ok(Json::from(*n)),
        (_, Avro::Boolean(b)) => Ok(Json::Bool(*b)),
        (Schema::Array(array), Avro::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| to_json(item, &array.items, false, &Path::Index(path, i)))
            .collect::<Result<Vec<_>, _>>()
            .map(Json::Array),
        (schema, _) => Err(mismatch(path, &format!("{schema:?}"))),
    }
}

/// [`to_json`] of [`to_avro`], branch by branch: each Avro value `to_avro` makes is read back
/// by the `to_json` branch of the same schema (a missing field's default takes both walks).
fn through(
    json: &Json,
    schema: &Schema,
    json_text: bool,
    path: &Path,
) -> Result<Json, SchemaError> {
    match (schema, json) {
        (Schema::Record(record), Json::Object(fields)) => {
            let mut out = Map::new();
            for field in &record.fields {
                let at = Path::Field(path, &field.name);
                let value = match fields.get(&field.name) {
                    Some(value) => through(value, &field.schema, is_json_text(field), &at)?,
                    // A default is written as plain JSON but read back as the field's kind
                    // (an `x-json` field's default string is parsed): the two walks, as the
                    // round trip does (rare: a payload without the field).
                    None => {
                        let (default, _) = field_value(fields, field);
                        let avro = to_avro(default, &field.schema, false, &at)?;
                        to_json(&avro, &field.schema, is_json_text(field), &at)?
                    }
                };
                out.insert(field.name.clone(), value);
            }
            Ok(Json::Object(out))
        }
        (Schema::Union(union), value) => {
            let (_, variant) = member(union, value, path)?;
            through(value, variant, json_text, path)
        }
        (Schema::Null, Json::Null) => Ok(Json::Null),
        // Written as its text and parsed back, as a consumer does.
        (Schema::String, value) if json_text && !value.is_null() => {
            serde_json::from_str(&value.to_string()).map_err(|_| mismatch(path, "JSON text"))
        }
        (Schema::String, Json::String(s)) => Ok(Json::String(s.clone())),
        (Schema::Long, Json::Number(n)) => long(n, path).map(Json::from),
        (Schema::Int, Json::Number(n)) => int(n, path).map(Json::from),
        (Schema::Boolean, Json::Bool(b)) => Ok(Json::Bool(*b)),
        (Schema::Array(array), Json::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| through(item, &array.items, false, &Path::Index(path, i)))
            .collect::<Result<Vec<_>, _>>()
            .map(Json::Array),
        (schema, _) => Err(mismatch(path, &format!("{schema:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A missing `x-json` field's default goes out as a plain string and comes back parsed,
    /// and a default that is no JSON text fails as the round trip through Avro does.
    #[test]
    fn a_missing_json_text_field_takes_its_default_as_the_avro_round_trip_does() {
        let schema = Schema::parse_str(
            r#"{"type": "record", "name": "Changed", "fields": [
                {"name": "prefs", "type": "string", "default": "{\"a\": [1]}", "x-json": true},
                {"name": "broken", "type": "string", "default": "not json", "x-json": true}]}"#,
        )
        .unwrap();
        let avro_way = |json: &Json| {
            json_to_avro(json, &schema)
                .and_then(|avro| avro_to_json(&avro, &schema, "Changed"))
                .map_err(|e| e.to_string())
        };
        let one_walk =
            |json: &Json| round_trip(json, &schema, "Changed").map_err(|e| e.to_string());
        let present = serde_json::json!({"prefs": {"b": true}, "broken": [2]});
        assert_eq!(one_walk(&present), avro_way(&present));
        assert!(one_walk(&present).is_ok());
        let missing = serde_json::json!({"broken": "x"});
        assert_eq!(one_walk(&missing), avro_way(&missing));
        assert_eq!(
            one_walk(&missing).unwrap()["prefs"],
            serde_json::json!({"a": [1]})
        );
        let bad_default = serde_json::json!({"prefs": 1});
        assert_eq!(one_walk(&bad_default), avro_way(&bad_default));
        assert!(one_walk(&bad_default).is_err());
    }
}
