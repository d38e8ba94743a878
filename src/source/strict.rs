//! JSON as OData JSON allows it: an object never names a member twice. serde_json keeps the last
//! of two equal keys, while SQLite's JSON functions (which read `raw` for mappings) find the
//! first, so a record with a duplicate key would be staged one way and mapped another. These
//! parsers refuse such text instead, naming the key.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

/// Parses one JSON value, refusing an object (at any depth) that names a key twice.
pub(crate) fn value(text: &str) -> serde_json::Result<Value> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = deserializer.deserialize_any(StrictValue)?;
    deserializer.end()?;
    Ok(value)
}

/// Parses a JSON object's members, each kept as its raw text, refusing a key named twice.
pub(crate) fn object_members(text: &str) -> serde_json::Result<BTreeMap<String, &RawValue>> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let members = deserializer.deserialize_map(Members)?;
    deserializer.end()?;
    Ok(members)
}

fn duplicate<E: de::Error>(key: &str) -> E {
    E::custom(format!(
        "the key `{key}` appears twice (OData JSON forbids duplicate keys)"
    ))
}

struct StrictValue;

/// `StrictValue` as a `Deserialize` type, for nested elements.
struct Nested(Value);

impl<'de> de::Deserialize<'de> for Nested {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Nested, D::Error> {
        deserializer.deserialize_any(StrictValue).map(Nested)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Nested(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.contains_key(&key) {
                return Err(duplicate(&key));
            }
            let Nested(value) = map.next_value()?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

struct Members;

impl<'de> Visitor<'de> for Members {
    type Value = BTreeMap<String, &'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value: &'de RawValue = map.next_value()?;
            if members.insert(key.clone(), value).is_some() {
                return Err(duplicate(&key));
            }
        }
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_serde_json_parses_them() {
        let text = r#"{"a": [1, -2, 3.5, "x", null, true, {"b": {}}], "c": 18446744073709551615}"#;
        assert_eq!(
            value(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
    }

    #[test]
    fn a_duplicate_key_at_any_depth_is_refused_by_name() {
        for (text, key) in [
            (r#"{"name": "a", "name": "b"}"#, "name"),
            (r#"{"x": [{"id": 1, "id": 2}]}"#, "id"),
        ] {
            let err = value(text).unwrap_err();
            assert!(
                err.to_string().contains(&format!("`{key}` appears twice")),
                "{err}"
            );
        }
        let err =
            object_members(r#"{"value": [], "@odata.nextLink": "a", "@odata.nextLink": "b"}"#)
                .unwrap_err();
        assert!(
            err.to_string().contains("`@odata.nextLink` appears twice"),
            "{err}"
        );
    }

    #[test]
    fn trailing_text_is_refused() {
        assert!(value("{} {}").is_err());
        assert!(object_members("{} x").is_err());
    }
}
