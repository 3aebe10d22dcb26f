//! Filtering while parsing: members that are not released are skipped by
//! the parser (`IgnoredAny`) instead of being built and then dropped, so
//! the cost of a large unreleased subtree is one scan, not an allocation per
//! node.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{Child, Node, contains_object};
use crate::error::FilterError;

/// Filters `body` through `root`: a top-level object is filtered, a
/// top-level array is filtered per object element; anything else is refused.
pub(super) fn filter_body(root: &Node, body: &[u8]) -> Result<Value, FilterError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let top = Top(root).deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(json_error)?;
    top.map_err(|kind| FilterError::NotAnObject { kind })
}

fn json_error(e: serde_json::Error) -> FilterError {
    FilterError::InvalidJson {
        line: e.line(),
        column: e.column(),
    }
}

/// Scalars (and, where noted, the other container kind) that a visitor
/// does not want: reported as `$out` after being consumed.
macro_rules! refuse_scalars {
    ($out:expr) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($out("boolean"))
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($out("number"))
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($out("number"))
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($out("number"))
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($out("string"))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($out("null"))
        }
    };
}

struct Top<'a>(&'a Node);

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = Result<Value, &'static str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Result<Value, &'static str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object or array")
    }
    refuse_scalars!(Err);
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        filter_map(self.0, map).map(|m| Ok(Value::Object(m)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let element = Child::Object(self.0.clone());
        let mut out = Vec::new();
        while let Some(item) = seq.next_element_seed(Select(&element))? {
            out.extend(item);
        }
        Ok(Ok(Value::Array(out)))
    }
}

/// Reads one value against `Child`; `None` when it must not be passed.
struct Select<'a>(&'a Child);

impl<'de> DeserializeSeed<'de> for Select<'_> {
    type Value = Option<Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.0 {
            Child::Leaf => {
                let v = <Value as serde::Deserialize>::deserialize(d)?;
                Ok((!contains_object(&v)).then_some(v))
            }
            _ => d.deserialize_any(self),
        }
    }
}

fn none(_: &'static str) -> Option<Value> {
    None
}

impl<'de> Visitor<'de> for Select<'_> {
    type Value = Option<Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any json value")
    }
    refuse_scalars!(none);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        match self.0 {
            Child::Object(node) => filter_map(node, map).map(|m| Some(Value::Object(m))),
            _ => {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(None)
            }
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        match self.0 {
            Child::ArrayOf(inner) => {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element_seed(Select(inner))? {
                    out.extend(item);
                }
                Ok(Some(Value::Array(out)))
            }
            _ => {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(None)
            }
        }
    }
}

fn filter_map<'de, A: MapAccess<'de>>(
    node: &Node,
    mut map: A,
) -> Result<Map<String, Value>, A::Error> {
    let mut out = Map::new();
    while let Some(key) = map.next_key_seed(Key)? {
        match node.children.get(key.as_ref()) {
            Some(child) => {
                if let Some(v) = map.next_value_seed(Select(child))? {
                    out.insert(key.into_owned(), v);
                }
            }
            None => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(out)
}

/// An object key, borrowed from the body when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}
