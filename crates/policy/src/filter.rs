//! Response minimisation: keep only the field paths a grant releases.
//!
//! A grant's `fields` are expanded at compile time into the service's
//! declared leaf paths, so a field the registry adds later (say
//! `name.middle`) is never released until a policy declares it. A declared
//! leaf passes only scalars and arrays of scalars: if the upstream puts an
//! object where a leaf was declared, the object is dropped rather than passed
//! whole, because its members were never reviewed.

mod stream;

use std::collections::BTreeMap;

use crate::error::FilterError;

/// The set of JSON paths a caller may receive. Built only by the policy
/// compiler (or [`FieldFilter::allow_all`]); immutable afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldFilter {
    /// `None` means unrestricted.
    tree: Option<Node>,
    released: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Node {
    children: BTreeMap<String, Child>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Child {
    Leaf,
    Object(Node),
    ArrayOf(Box<Child>),
}

impl FieldFilter {
    /// A filter that passes the body unchanged; `released()` is `["*"]`.
    /// Policies cannot produce it; it exists for callers that have decided
    /// minimisation does not apply.
    pub fn allow_all() -> Self {
        FieldFilter {
            tree: None,
            released: vec!["*".to_string()],
        }
    }

    pub fn is_unrestricted(&self) -> bool {
        self.tree.is_none()
    }

    /// The released leaf paths (sorted), written to the audit record.
    pub fn released(&self) -> &[String] {
        &self.released
    }

    /// Builds a filter from declared leaf paths such as
    /// `citizenships[].country`. Fails on malformed paths or on a path that
    /// is both a leaf and a parent.
    pub(crate) fn from_paths<'a>(
        paths: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, FieldPathError> {
        let mut root = Node::default();
        let mut released = Vec::new();
        for path in paths {
            insert(&mut root, path)?;
            released.push(path.to_string());
        }
        released.sort();
        released.dedup();
        Ok(FieldFilter {
            tree: Some(root),
            released,
        })
    }

    /// Returns the body with every field not released removed. Top-level
    /// arrays are treated as lists of records and each element is filtered.
    pub fn filter_json(&self, body: &[u8]) -> Result<Vec<u8>, FilterError> {
        let Some(root) = &self.tree else {
            return Ok(body.to_vec());
        };
        stream::filter_body(root, body)
    }
}

/// Why a field path was refused; turned into a diagnostic by the compiler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldPathError {
    Malformed,
    Conflict,
}

/// Splits `a.b[].c` into `[("a", false), ("b", true), ("c", false)]`, or
/// `None` when the path is malformed.
pub(crate) fn parse_path(path: &str) -> Option<Vec<(&str, bool)>> {
    if path.is_empty() {
        return None;
    }
    path.split('.')
        .map(|seg| {
            let (name, array) = match seg.strip_suffix("[]") {
                Some(name) => (name, true),
                None => (seg, false),
            };
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            ok.then_some((name, array))
        })
        .collect()
}

/// True when `prefix` names `leaf` or one of its ancestors, comparing whole
/// segments and ignoring `[]` (so `citizenships` covers
/// `citizenships[].country`, but `name.giv` covers nothing).
pub(crate) fn path_covers(prefix: &str, leaf: &str) -> bool {
    let (Some(p), Some(l)) = (parse_path(prefix), parse_path(leaf)) else {
        return false;
    };
    p.len() <= l.len() && p.iter().zip(&l).all(|(a, b)| a.0 == b.0)
}

fn insert(root: &mut Node, path: &str) -> Result<(), FieldPathError> {
    let segs = parse_path(path).ok_or(FieldPathError::Malformed)?;
    let mut node = root;
    let last = segs.len() - 1;
    for (i, (name, array)) in segs.into_iter().enumerate() {
        let wanted_leaf = i == last;
        let child = node
            .children
            .entry(name.to_string())
            .or_insert_with(|| shape(array, wanted_leaf));
        if *child != shape(array, wanted_leaf) && !same_kind(child, array, wanted_leaf) {
            return Err(FieldPathError::Conflict);
        }
        if wanted_leaf {
            return Ok(());
        }
        node = match child {
            Child::Object(n) => n,
            Child::ArrayOf(inner) => match inner.as_mut() {
                Child::Object(n) => n,
                _ => return Err(FieldPathError::Conflict),
            },
            Child::Leaf => return Err(FieldPathError::Conflict),
        };
    }
    Ok(())
}

fn shape(array: bool, leaf: bool) -> Child {
    let inner = if leaf {
        Child::Leaf
    } else {
        Child::Object(Node::default())
    };
    if array {
        Child::ArrayOf(Box::new(inner))
    } else {
        inner
    }
}

fn same_kind(child: &Child, array: bool, leaf: bool) -> bool {
    match (child, array, leaf) {
        (Child::Object(_), false, false) => true,
        (Child::ArrayOf(inner), true, false) => matches!(inner.as_ref(), Child::Object(_)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const PERSON_FIELDS: &[&str] = &[
        "pid",
        "name.given",
        "name.family",
        "birth_date",
        "address.street",
        "address.postal_code",
        "address.city",
        "marital_status",
        "citizenships[].country",
        "citizenships[].since",
    ];

    fn filter(paths: &[&str]) -> FieldFilter {
        FieldFilter::from_paths(paths.iter().copied()).unwrap()
    }

    fn person() -> Value {
        json!({"pid":"01019012345","name":{"given":"Kari","family":"Nordmann"},"birth_date":"1990-01-01",
               "address":{"street":"Storgata 1","postal_code":"0155","city":"Oslo"},"marital_status":"married",
               "citizenships":[{"country":"NOR","since":"1990-01-01"}]})
    }

    fn run(f: &FieldFilter, v: &Value) -> Value {
        serde_json::from_slice(&f.filter_json(&serde_json::to_vec(v).unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn keeps_only_released_paths_nested_and_in_arrays() {
        let f = filter(&["name.given", "citizenships[].country"]);
        assert_eq!(
            run(&f, &person()),
            json!({"name":{"given":"Kari"},"citizenships":[{"country":"NOR"}]})
        );
    }

    #[test]
    fn undeclared_members_and_objects_at_leaves_are_dropped() {
        let f = filter(&["name.given", "address.city"]);
        let body =
            json!({"name":{"given":{"secret":"x"},"middle":"M"},"address":{"city":["Oslo"],"x":1}});
        assert_eq!(
            run(&f, &body),
            json!({"name":{},"address":{"city":["Oslo"]}})
        );
    }

    #[test]
    fn type_mismatches_drop_the_field() {
        let f = filter(&["name.given", "citizenships[].country"]);
        let body = json!({"name":"Kari Nordmann","citizenships":{"country":"NOR"}});
        assert_eq!(run(&f, &body), json!({}));
    }

    #[test]
    fn top_level_arrays_are_filtered_per_record_and_scalars_refused() {
        let f = filter(&["pid"]);
        assert_eq!(
            run(&f, &json!([{"pid":"1","x":2}, 5])),
            json!([{"pid":"1"}])
        );
        assert_eq!(
            f.filter_json(b"\"hello\""),
            Err(FilterError::NotAnObject { kind: "string" })
        );
        assert!(matches!(
            f.filter_json(b"{\"pid\":"),
            Err(FilterError::InvalidJson { .. })
        ));
    }

    #[test]
    fn allow_all_is_unrestricted_and_passes_bytes_through() {
        let f = FieldFilter::allow_all();
        assert!(f.is_unrestricted());
        assert_eq!(f.filter_json(b"not json").unwrap(), b"not json");
        assert!(!filter(&["pid"]).is_unrestricted());
    }

    #[test]
    fn conflicting_and_malformed_paths_are_refused() {
        assert_eq!(
            FieldFilter::from_paths(["a", "a.b"]),
            Err(FieldPathError::Conflict)
        );
        assert_eq!(
            FieldFilter::from_paths(["a[].b", "a.c"]),
            Err(FieldPathError::Conflict)
        );
        assert_eq!(
            FieldFilter::from_paths(["a..b"]),
            Err(FieldPathError::Malformed)
        );
        assert_eq!(
            FieldFilter::from_paths(["a b"]),
            Err(FieldPathError::Malformed)
        );
        assert!(FieldFilter::from_paths(["a.b", "a.c", "d[].e", "d[].f"]).is_ok());
    }

    #[test]
    fn prefixes_cover_whole_segments_only() {
        assert!(path_covers("name", "name.given"));
        assert!(path_covers("citizenships", "citizenships[].country"));
        assert!(path_covers("citizenships[]", "citizenships[].country"));
        assert!(!path_covers("name.giv", "name.given"));
        assert!(!path_covers("name.given", "name"));
    }

    /// Every leaf path of `value`, in `a.b[].c` form.
    fn leaf_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaf_paths(v, &p, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    leaf_paths(item, &format!("{prefix}[]"), out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec![
            "pid",
            "name",
            "given",
            "address",
            "city",
            "citizenships",
            "country",
            "x",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key.clone().prop_map(String::from), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn trailing_bytes_and_escaped_keys_are_handled_like_a_json_parser() {
        let f = filter(&["pid"]);
        assert!(matches!(
            f.filter_json(b"{\"pid\":\"1\"} {\"x\":2}"),
            Err(FilterError::InvalidJson { .. })
        ));
        // `\u0069` is `i`: the key is `pid` to every client, so it is released.
        let out = f.filter_json(br#"{"p\u0069d":"1","pi\u0064x":2}"#).unwrap();
        assert_eq!(out, br#"{"pid":"1"}"#);
    }

    #[test]
    fn released_values_pass_byte_for_byte_in_the_registrys_order() {
        let f = filter(&["pid", "name.given", "citizenships[].country"]);
        let body = br#"{"x":1,"pid":12345678901234567890123,"name":{"given":"K\u00e5ri","middle":"M"},"citizenships":[{"since":1e3,"country":"NOR"}, 7]}"#;
        assert_eq!(
            f.filter_json(body).unwrap(),
            br#"{"pid":12345678901234567890123,"name":{"given":"K\u00e5ri"},"citizenships":[{"country":"NOR"}]}"#
        );
    }

    #[test]
    fn numbers_beyond_f64_pass_as_written_rather_than_being_refused() {
        // RFC 8259 leaves number range to each parser; the caller's, not ours.
        let f = filter(&["pid"]);
        assert_eq!(
            f.filter_json(br#"[{"pid":811e1111,"x":1}]"#).unwrap(),
            br#"[{"pid":811e1111}]"#
        );
    }

    #[test]
    fn braces_inside_strings_do_not_make_a_leaf_an_object() {
        let f = filter(&["marital_status", "pid"]);
        let body = br#"{"marital_status":["{\"a\":1}","}{"],"pid":["x",{"secret":"s"}]}"#;
        assert_eq!(
            f.filter_json(body).unwrap(),
            br#"{"marital_status":["{\"a\":1}","}{"]}"#
        );
    }

    #[test]
    fn a_released_member_named_twice_is_refused_and_unreleased_ones_are_skipped() {
        let f = filter(&["pid", "name.given"]);
        assert_eq!(
            f.filter_json(br#"{"pid":"1","name":{"given":"A","given":"B"}}"#),
            Err(FilterError::DuplicateMember {
                name: "given".into()
            })
        );
        // Escaped or not, it is the same name to every client.
        assert_eq!(
            f.filter_json(br#"{"pid":{"o":1},"p\u0069d":"2"}"#),
            Err(FilterError::DuplicateMember { name: "pid".into() })
        );
        assert_eq!(
            f.filter_json(br#"{"x":1,"pid":"1","x":2}"#).unwrap(),
            br#"{"pid":"1"}"#
        );
    }

    fn contains_object(value: &Value) -> bool {
        match value {
            Value::Object(_) => true,
            Value::Array(items) => items.iter().any(contains_object),
            _ => false,
        }
    }

    /// The obvious implementation over a parsed `Value`, to check the
    /// streaming filter against.
    fn reference(node: &Node, v: Value) -> Value {
        fn child(c: &Child, v: Value) -> Option<Value> {
            match (c, v) {
                (Child::Leaf, v) => (!contains_object(&v)).then_some(v),
                (Child::Object(n), v @ Value::Object(_)) => Some(reference(n, v)),
                (Child::ArrayOf(inner), Value::Array(items)) => Some(Value::Array(
                    items.into_iter().filter_map(|i| child(inner, i)).collect(),
                )),
                _ => None,
            }
        }
        match v {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .filter_map(|(k, v)| {
                        node.children
                            .get(&k)
                            .and_then(|c| child(c, v))
                            .map(|v| (k, v))
                    })
                    .collect(),
            ),
            other => other,
        }
    }

    proptest! {
        #[test]
        fn streaming_filter_agrees_with_the_reference(
            body in prop::collection::btree_map(
                prop::sample::select(vec!["pid", "name", "address", "citizenships", "x"]).prop_map(String::from),
                arb_json(), 0..5),
            picks in prop::sample::subsequence(PERSON_FIELDS.to_vec(), 0..PERSON_FIELDS.len()),
        ) {
            let f = FieldFilter::from_paths(picks.iter().copied()).unwrap();
            let input = Value::Object(body.into_iter().collect());
            let want = reference(f.tree.as_ref().unwrap(), input.clone());
            prop_assert_eq!(run(&f, &input), want);
        }

        #[test]
        fn filter_never_passes_an_unreleased_leaf(
            body in prop::collection::btree_map(
                prop::sample::select(vec!["pid", "name", "address", "citizenships", "x"]).prop_map(String::from),
                arb_json(), 0..5),
            picks in prop::sample::subsequence(PERSON_FIELDS.to_vec(), 0..PERSON_FIELDS.len()),
        ) {
            let f = FieldFilter::from_paths(picks.iter().copied()).unwrap();
            let input = Value::Object(body.into_iter().collect());
            let out = run(&f, &input);
            let mut leaves = Vec::new();
            leaf_paths(&out, "", &mut leaves);
            for leaf in leaves {
                // A scalar inside an array of scalars shows up as `path[]`.
                let base = leaf.trim_end_matches("[]");
                prop_assert!(
                    f.released().iter().any(|r| r.trim_end_matches("[]") == base),
                    "leaked {leaf}"
                );
            }
        }
    }
}
