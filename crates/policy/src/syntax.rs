//! Policy file text → syntax tree with source spans.
//!
//! Every key is declared here and unknown keys are refused, so a typo such as
//! `legal_bassis` is an error rather than a silently missing condition.
//! Nothing is interpreted here; meaning is given in `compile`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;
use toml::value::Datetime;

pub(crate) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    pub service: Option<S<ServiceDecl>>,
    #[serde(default)]
    pub grant: Vec<S<GrantDecl>>,
    #[serde(default)]
    pub denial: Vec<S<DenialDecl>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceDecl {
    pub id: S<String>,
    pub title: Option<S<String>>,
    pub subject: Option<S<SubjectDecl>>,
    pub fields: S<Vec<S<String>>>,
    #[serde(default)]
    pub operation: Vec<S<OperationDecl>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubjectDecl {
    pub param: S<String>,
    pub kind: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OperationDecl {
    pub id: S<String>,
    pub title: Option<S<String>>,
    pub method: S<String>,
    pub path: S<String>,
    #[serde(default)]
    pub query: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantDecl {
    pub id: S<String>,
    pub title: Option<S<String>>,
    pub agreement: Option<S<String>>,
    pub service: Option<S<String>>,
    pub consumer: S<ConsumerDecl>,
    pub supplier_allowed: Option<S<Vec<S<String>>>>,
    pub scopes: S<Vec<S<String>>>,
    pub operations: S<Vec<S<String>>>,
    pub purposes: S<Vec<S<String>>>,
    pub legal_basis: Option<S<String>>,
    pub consent: Option<S<ConsentDecl>>,
    pub fields: S<Vec<S<String>>>,
    pub valid_from: S<Datetime>,
    pub valid_to: S<Datetime>,
    pub rate_limit: Option<S<RateLimitDecl>>,
}

/// `consumer = ["310000019", …]` or `consumer = "any-with-consent"`.
///
/// Deserialised by hand rather than with `#[serde(untagged)]`, because
/// untagged enums buffer their input and lose the element spans.
#[derive(Debug)]
pub(crate) enum ConsumerDecl {
    Keyword(String),
    List(Vec<S<String>>),
}

impl<'de> Deserialize<'de> for ConsumerDecl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ConsumerDecl;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of organisation numbers or \"any-with-consent\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ConsumerDecl, E> {
                Ok(ConsumerDecl::Keyword(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ConsumerDecl, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<S<String>>()? {
                    out.push(item);
                }
                Ok(ConsumerDecl::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsentDecl {
    pub resource: S<String>,
    pub action: Option<S<String>>,
    #[serde(default)]
    pub metadata: BTreeMap<String, S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitDecl {
    pub requests: S<i64>,
    pub per_seconds: S<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DenialDecl {
    pub id: S<String>,
    pub service: Option<S<String>>,
    pub consumer: Option<S<Vec<S<String>>>>,
    pub supplier: Option<S<Vec<S<String>>>>,
    pub operations: Option<S<Vec<S<String>>>>,
    pub reason: S<String>,
}

/// Parses one policy file; the error carries the byte span toml reported.
pub(crate) fn parse(text: &str) -> Result<PolicyFile, (String, std::ops::Range<usize>)> {
    toml::from_str::<PolicyFile>(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        (e.message().trim_end().to_string(), span)
    })
}
