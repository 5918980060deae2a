//! JSON values read strictly, for event patterns (in rule files, in
//! subscription filters, over the network): a key given twice, or a number
//! JSON cannot hold (YAML's `.inf`, `.nan`), is an error instead of the
//! last value winning or a silent `null`, either of which would change what
//! the pattern matches without anyone noticing.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// For `#[serde(deserialize_with = "...")]` on a pattern field.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    deserializer.deserialize_any(StrictVisitor)
}

/// For an optional pattern field.
pub fn deserialize_option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Value>, D::Error> {
    deserialize(deserializer).map(|value| (!value.is_null()).then_some(value))
}

/// Parses JSON text strictly.
pub fn from_str(text: &str) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v).map(Value::Number).ok_or_else(|| {
            E::custom(format!(
                "{v} is not a number a pattern can hold; write a finite number"
            ))
        })
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictSeed)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "key {key:?} is given twice; give each key once"
                )));
            }
            let value = map.next_value_seed(StrictSeed)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

struct StrictSeed;

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserialize(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_and_non_finite_numbers_are_refused() {
        let error = from_str(r#"{"type": ["a"], "type": ["b"]}"#).expect_err("twice");
        assert!(
            error.to_string().contains("\"type\" is given twice"),
            "{error}"
        );
        let nested = from_str(r#"{"data": {"x": [1], "x": [2]}}"#).expect_err("twice");
        assert!(nested.to_string().contains("\"x\""), "{nested}");
        #[derive(serde::Deserialize)]
        struct Rule {
            #[serde(deserialize_with = "deserialize")]
            pattern: Value,
        }
        let ok = serde_yaml_ng::from_str::<Rule>("pattern: {type: [a]}\n").expect("valid");
        assert_eq!(ok.pattern["type"][0], "a");
        let yaml = "pattern: {data: {total: [{numeric: ['>', .inf]}]}}\n";
        let error = serde_yaml_ng::from_str::<Rule>(yaml)
            .err()
            .expect("infinity");
        assert!(error.to_string().contains("not a number"), "{error}");
        let fine =
            from_str(r#"{"type": ["a"], "data": {"n": [1.5, -2, null, true]}}"#).expect("valid");
        assert_eq!(fine["data"]["n"][0], 1.5);
    }
}
