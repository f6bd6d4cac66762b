//! Asks a serde-derived struct which keys it accepts, so unknown keys can all be reported
//! with their paths from the same field list serde itself uses (one source of truth).
//!
//! serde's derive hands the field list to `Deserializer::deserialize_struct`; a deserializer
//! that stops right there and returns the list is all it takes.

use std::fmt;

use serde::de::{self, Deserialize, Visitor};

/// The keys a `#[derive(Deserialize)]` struct accepts.
pub(crate) fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    match T::deserialize(Probe) {
        Err(Stop::Fields(fields)) => fields,
        _ => &[],
    }
}

struct Probe;

/// How the probe ends: with the field list, or with nothing for a non-struct type.
#[derive(Debug)]
enum Stop {
    /// The struct's accepted keys.
    Fields(&'static [&'static str]),
    /// The type was not a struct.
    NotStruct,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field probe")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<M: fmt::Display>(_msg: M) -> Self {
        Stop::NotStruct
    }
}

impl<'de> de::Deserializer<'de> for Probe {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stop> {
        Err(Stop::NotStruct)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        Err(Stop::Fields(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        alpha: String,
        beta: Option<u32>,
    }

    #[test]
    fn lists_the_fields_of_a_struct() {
        assert_eq!(fields_of::<Sample>(), &["alpha", "beta"]);
    }

    #[test]
    fn lists_nothing_for_a_non_struct() {
        assert!(fields_of::<String>().is_empty());
    }
}
