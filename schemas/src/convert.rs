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
    to_avro(json, schema, false, "")
}

/// Avro value -> JSON payload; `event_type` becomes the `type` tag of the top-level object.
pub fn avro_to_json(avro: &Avro, schema: &Schema, event_type: &str) -> Result<Json, SchemaError> {
    let mut json = to_json(avro, schema, false, "")?;
    if let Json::Object(fields) = &mut json {
        fields.insert("type".to_owned(), Json::String(event_type.to_owned()));
    }
    Ok(json)
}

fn mismatch(path: &str, expected: &str) -> SchemaError {
    SchemaError::Mismatch {
        path: if path.is_empty() {
            "$".to_owned()
        } else {
            path.to_owned()
        },
        expected: expected.to_owned(),
    }
}

fn is_json_text(field: &RecordField) -> bool {
    field.custom_attributes.get("x-json") == Some(&Json::Bool(true))
}

fn to_avro(json: &Json, schema: &Schema, json_text: bool, path: &str) -> Result<Avro, SchemaError> {
    match (schema, json) {
        (Schema::Record(record), Json::Object(fields)) => {
            let mut out = Vec::with_capacity(record.fields.len());
            for field in &record.fields {
                let at = format!("{path}.{}", field.name);
                let value = match fields.get(&field.name) {
                    Some(value) => to_avro(value, &field.schema, is_json_text(field), &at)?,
                    None => match &field.default {
                        Some(default) => to_avro(default, &field.schema, false, &at)?,
                        None => to_avro(&Json::Null, &field.schema, false, &at)?,
                    },
                };
                out.push((field.name.clone(), value));
            }
            Ok(Avro::Record(out))
        }
        (Schema::Union(union), value) => {
            let variants = union.variants();
            let wanted = if value.is_null() {
                variants.iter().position(|v| matches!(v, Schema::Null))
            } else {
                variants.iter().position(|v| !matches!(v, Schema::Null))
            };
            let index = wanted.ok_or_else(|| mismatch(path, "a union member"))?;
            let inner = to_avro(value, &variants[index], json_text, path)?;
            Ok(Avro::Union(index as u32, Box::new(inner)))
        }
        (Schema::Null, Json::Null) => Ok(Avro::Null),
        (Schema::String, value) if json_text && !value.is_null() => {
            Ok(Avro::String(value.to_string()))
        }
        (Schema::String, Json::String(s)) => Ok(Avro::String(s.clone())),
        (Schema::Long, Json::Number(n)) => n
            .as_i64()
            .map(Avro::Long)
            .ok_or_else(|| mismatch(path, "long")),
        (Schema::Int, Json::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .map(Avro::Int)
            .ok_or_else(|| mismatch(path, "int")),
        (Schema::Boolean, Json::Bool(b)) => Ok(Avro::Boolean(*b)),
        (Schema::Array(array), Json::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| to_avro(item, &array.items, false, &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Avro::Array),
        (schema, _) => Err(mismatch(path, &format!("{schema:?}"))),
    }
}

fn to_json(avro: &Avro, schema: &Schema, json_text: bool, path: &str) -> Result<Json, SchemaError> {
    match (schema, avro) {
        (Schema::Record(record), Avro::Record(values)) => {
            let mut out = Map::new();
            for (field, (name, value)) in record.fields.iter().zip(values) {
                let at = format!("{path}.{name}");
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
            .map(|(i, item)| to_json(item, &array.items, false, &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Json::Array),
        (schema, _) => Err(mismatch(path, &format!("{schema:?}"))),
    }
}
