//! Strict JSON for signed data.
//!
//! Everything we parse from a token, a disclosure or a vector goes through [`parse`]: the input is
//! bounded in size before any parsing, nesting is bounded while parsing, and an object that names
//! the same member twice is refused (RFC 7515 §4 and RFC 9901 §4.2 leave duplicates to the
//! parser; two parsers that keep different duplicates would see two different documents).
//! It does not canonicalize: bytes that were signed are kept by the caller, never re-serialized.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// How deep objects and arrays may nest in anything we parse.
pub const MAX_DEPTH: usize = 32;

/// Why a JSON text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// The text is longer than the caller allows.
    #[error("JSON text is too large")]
    TooLarge,
    /// Objects or arrays nest deeper than [`MAX_DEPTH`].
    #[error("JSON nests too deeply")]
    TooDeep,
    /// An object names the same member twice.
    #[error("JSON object has a duplicate member name")]
    DuplicateMember,
    /// The text is not JSON.
    #[error("malformed JSON")]
    Syntax,
}

/// Parses `bytes` as one JSON value, refusing duplicates, deep nesting and texts over `max_len`.
pub fn parse(bytes: &[u8], max_len: usize) -> Result<Value, JsonError> {
    if bytes.len() > max_len {
        return Err(JsonError::TooLarge);
    }

    let fault = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = StrictSeed {
        depth: 0,
        fault: &fault,
    };
    let value = seed
        .deserialize(&mut de)
        .map_err(|_| fault.get().unwrap_or(JsonError::Syntax))?;
    de.end().map_err(|_| JsonError::Syntax)?;
    Ok(value)
}

/// Parses `bytes` as a JSON object (the shape of every JWS header and JWT payload).
pub fn parse_object(bytes: &[u8], max_len: usize) -> Result<Map<String, Value>, JsonError> {
    match parse(bytes, max_len)? {
        Value::Object(map) => Ok(map),
        _ => Err(JsonError::Syntax),
    }
}

#[derive(Clone, Copy)]
struct StrictSeed<'a> {
    depth: usize,
    fault: &'a Cell<Option<JsonError>>,
}

impl StrictSeed<'_> {
    fn fail<E: serde::de::Error>(&self, fault: JsonError) -> E {
        self.fault.set(Some(fault));
        E::custom(fault)
    }

    fn nested<E: serde::de::Error>(&self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            return Err(self.fail(JsonError::TooDeep));
        }
        Ok(StrictSeed {
            depth: self.depth + 1,
            fault: self.fault,
        })
    }
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| self.fail(JsonError::Syntax))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value_seed(inner)?;
            // One lookup: a member that was already there is a duplicate.
            if members.insert(name, value).is_some() {
                return Err(self.fail(JsonError::DuplicateMember));
            }
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_member_is_refused() {
        assert_eq!(
            parse(br#"{"a":1,"a":2}"#, 100),
            Err(JsonError::DuplicateMember)
        );
        assert_eq!(
            parse(br#"{"x":{"a":1,"a":1}}"#, 100),
            Err(JsonError::DuplicateMember)
        );
    }

    #[test]
    fn escaped_duplicate_is_still_a_duplicate() {
        assert_eq!(
            parse(br#"{"a":1,"\u0061":2}"#, 100),
            Err(JsonError::DuplicateMember)
        );
    }

    #[test]
    fn nesting_past_the_limit_is_refused() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(ok.as_bytes(), 1000).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(deep.as_bytes(), 1000), Err(JsonError::TooDeep));
    }

    #[test]
    fn oversized_text_is_refused_before_parsing() {
        assert_eq!(parse(b"[1,2,3]", 3), Err(JsonError::TooLarge));
    }

    #[test]
    fn trailing_garbage_is_refused() {
        assert_eq!(parse(b"{} {}", 100), Err(JsonError::Syntax));
        assert_eq!(parse(b"{", 100), Err(JsonError::Syntax));
    }

    #[test]
    fn lookalike_names_are_distinct_members() {
        // Cyrillic "а" is not Latin "a": both members stay, compared as bytes.
        let v = parse("{\"a\":1,\"\u{0430}\":2}".as_bytes(), 100).unwrap();
        assert_eq!(v.as_object().map(|m| m.len()), Some(2));
    }
}
