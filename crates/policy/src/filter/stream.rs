//! Filtering while parsing, written straight to the output. Members that are
//! not released are skipped by the parser (`IgnoredAny`); a released leaf is
//! copied as the registry wrote it (`RawValue`). Nothing is built as a tree
//! and serialised again, and numbers keep their exact digits (a `Value`
//! would round integers beyond 64 bits and rewrite `1e3` as `1000.0`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{Child, Node};
use crate::error::FilterError;

/// Filters `body` through `root`: a top-level object is filtered, a
/// top-level array is filtered per object element; anything else is refused.
pub(super) fn filter_body(root: &Node, body: &[u8]) -> Result<Vec<u8>, FilterError> {
    let mut output = Output {
        bytes: Vec::with_capacity(body.len()),
        duplicate: None,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let top = Top {
        node: root,
        output: &mut output,
    }
    .deserialize(&mut de);
    if let Some(name) = output.duplicate.take() {
        return Err(FilterError::DuplicateMember { name });
    }
    let top = top.map_err(json_error)?;
    de.end().map_err(json_error)?;
    top.map_err(|kind| FilterError::NotAnObject { kind })?;
    // The output never outgrows the body, so one allocation of the body's
    // size was enough; give back what a mostly withheld answer did not use,
    // as the answer is held until the caller has read it.
    let mut bytes = output.bytes;
    if bytes.capacity() > 2 * bytes.len() {
        bytes.shrink_to_fit();
    }
    Ok(bytes)
}

fn json_error(e: serde_json::Error) -> FilterError {
    FilterError::InvalidJson {
        line: e.line(),
        column: e.column(),
    }
}

/// The filtered body as it is written, and the released member that was
/// found twice in one object, if any (the parse is then aborted).
struct Output {
    bytes: Vec<u8>,
    duplicate: Option<String>,
}

/// What a value must be to be passed on.
#[derive(Clone, Copy)]
enum Expect<'a> {
    /// A scalar or an array of scalars, copied as written.
    Leaf,
    Object(&'a Node),
    ArrayOf(&'a Child),
}

impl<'a> From<&'a Child> for Expect<'a> {
    fn from(child: &'a Child) -> Self {
        match child {
            Child::Leaf => Expect::Leaf,
            Child::Object(node) => Expect::Object(node),
            Child::ArrayOf(inner) => Expect::ArrayOf(inner),
        }
    }
}

/// Scalars that a visitor does not want: reported as `$out` after being
/// consumed.
macro_rules! refuse_scalars {
    ($out:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($out("boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($out("number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($out("number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($out("number"))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($out("string"))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($out("null"))
        }
    };
}

struct Top<'a> {
    node: &'a Node,
    output: &'a mut Output,
}

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = Result<(), &'static str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Result<(), &'static str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object or array")
    }
    refuse_scalars!(Err);
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        filter_map(self.node, map, self.output).map(Ok)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        filter_seq(Expect::Object(self.node), seq, self.output).map(Ok)
    }
}

/// Reads one value against `expect` and writes it if it may be passed;
/// yields whether it was written.
struct Select<'a> {
    expect: Expect<'a>,
    output: &'a mut Output,
}

impl<'de> DeserializeSeed<'de> for Select<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.expect {
            Expect::Leaf => {
                let raw = <&'de RawValue as de::Deserialize>::deserialize(d)?;
                let text = raw.get();
                if holds_object(text) {
                    return Ok(false);
                }
                self.output.bytes.extend_from_slice(text.as_bytes());
                Ok(true)
            }
            _ => d.deserialize_any(self),
        }
    }
}

fn dropped(_: &'static str) -> bool {
    false
}

impl<'de> Visitor<'de> for Select<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any json value")
    }
    refuse_scalars!(dropped);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        match self.expect {
            Expect::Object(node) => filter_map(node, map, self.output).map(|()| true),
            _ => {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(false)
            }
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        match self.expect {
            Expect::ArrayOf(inner) => {
                filter_seq(Expect::from(inner), seq, self.output).map(|()| true)
            }
            _ => {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(false)
            }
        }
    }
}

/// Writes the array's elements that match `element`, dropping the others.
fn filter_seq<'de, A: SeqAccess<'de>>(
    element: Expect<'_>,
    mut seq: A,
    output: &mut Output,
) -> Result<(), A::Error> {
    output.bytes.push(b'[');
    let mut written = 0usize;
    loop {
        let mark = output.bytes.len();
        if written > 0 {
            output.bytes.push(b',');
        }
        let seed = Select {
            expect: element,
            output: &mut *output,
        };
        match seq.next_element_seed(seed)? {
            None => {
                output.bytes.truncate(mark);
                break;
            }
            Some(true) => written += 1,
            Some(false) => output.bytes.truncate(mark),
        }
    }
    output.bytes.push(b']');
    Ok(())
}

/// Writes the object's released members in the order the registry sent
/// them. A released member name that appears twice is refused: parsers
/// disagree on which one counts, so callers could read different data.
fn filter_map<'de, A: MapAccess<'de>>(
    node: &Node,
    mut map: A,
    output: &mut Output,
) -> Result<(), A::Error> {
    output.bytes.push(b'{');
    let mut seen: Vec<Cow<'de, str>> = Vec::new();
    let mut any_written = false;
    while let Some(key) = map.next_key_seed(Key)? {
        let Some((name, child)) = node.children.get_key_value(key.as_ref()) else {
            map.next_value::<IgnoredAny>()?;
            continue;
        };
        if seen.contains(&key) {
            // The policy's own name for it: the message quotes nothing
            // from the body.
            output.duplicate = Some(name.clone());
            return Err(de::Error::custom("duplicate member"));
        }
        let mark = output.bytes.len();
        if any_written {
            output.bytes.push(b',');
        }
        write_key(&key, matches!(key, Cow::Owned(_)), &mut output.bytes);
        output.bytes.push(b':');
        let seed = Select {
            expect: Expect::from(child),
            output: &mut *output,
        };
        if map.next_value_seed(seed)? {
            any_written = true;
        } else {
            output.bytes.truncate(mark);
        }
        seen.push(key);
    }
    output.bytes.push(b'}');
    Ok(())
}

/// Writes `key` as a JSON string. A key borrowed from the body had no
/// escapes there, so it needs none now; a decoded one is escaped afresh.
fn write_key(key: &str, decoded: bool, out: &mut Vec<u8>) {
    if decoded {
        // Writing a `str` into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut *out, key);
    } else {
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.push(b'"');
    }
}

/// True when the JSON text `raw` is an object or has one inside (outside
/// its strings).
fn holds_object(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    match bytes.first() {
        Some(b'{') => return true,
        Some(b'[') => {}
        _ => return false,
    }
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b'{' {
            return true;
        }
    }
    false
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
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}
