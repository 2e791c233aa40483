//! JSONPath selectors of route rules and of the field policy, compiled once at config time, so
//! `check` reports a bad selector before anything runs, with what each selector carries: the
//! AAD context of its tokens, whether a `null` is sealed, the JSON types a decrypt rule accepts.

use jsonpath_rust::parser::model::{JpQuery, Segment, Selector as Step};
use jsonpath_rust::parser::parse_json_path;
use serde_json::Value;

/// A compiled selector and the AAD context its tokens are bound to (contract §1).
#[derive(Debug, Clone)]
pub struct Selector {
    /// The selector as written, for `check` output, error messages and the
    /// `fieldseal_selector_matches_total` label (shared: a refcount per use, not a copy).
    pub source: std::sync::Arc<str>,
    pub query: JpQuery,
    /// Explicit context; `None` means the member-name rule of contract §1.
    pub context: Option<String>,
    /// Seal (or, at a decrypt path, treat as plaintext) a selected `null`. Off by default:
    /// a `null` has nothing to protect and stays `null` in both directions (contract §7).
    pub seal_null: bool,
    /// The JSON types a decrypt path accepts once a value is opened; `None` = the default
    /// (see [`JsonTypes::accepts_opened`]).
    pub accepts: Option<JsonTypes>,
    /// Response rules: views by caller identity, tried in order (empty: the rule's action
    /// for everyone; see [`super::view`]).
    pub views: std::sync::Arc<[super::view::View]>,
    /// `encrypt` rules: how their tokens are made; decrypt paths: `per_subject` takes
    /// subject-bound tokens only.
    pub tokens: super::operation::TokenOptions,
}

/// A set of JSON value types, for the `type` of a decrypt rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonTypes(u8);

impl JsonTypes {
    const STRING: u8 = 1;
    const NUMBER: u8 = 2;
    const BOOLEAN: u8 = 4;
    const OBJECT: u8 = 8;
    const ARRAY: u8 = 16;
    const NULL: u8 = 32;

    /// Parses the names of `type` (`string`, `number`, `boolean`, `object`, `array`, `null`,
    /// `any`).
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut bits = 0;
        for name in names {
            bits |= match name {
                "string" => Self::STRING,
                "number" => Self::NUMBER,
                "boolean" => Self::BOOLEAN,
                "object" => Self::OBJECT,
                "array" => Self::ARRAY,
                "null" => Self::NULL,
                "any" => u8::MAX,
                other => {
                    return Err(format!(
                        "unknown type `{other}` (string, number, boolean, object, array, null, any)"
                    ))
                }
            };
        }
        if bits == 0 {
            return Err("list at least one type".into());
        }
        Ok(Self(bits))
    }

    fn bit(value: &Value) -> u8 {
        match value {
            Value::String(_) => Self::STRING,
            Value::Number(_) => Self::NUMBER,
            Value::Bool(_) => Self::BOOLEAN,
            Value::Object(_) => Self::OBJECT,
            Value::Array(_) => Self::ARRAY,
            Value::Null => Self::NULL,
        }
    }

    pub fn contains(self, value: &Value) -> bool {
        self.0 & Self::bit(value) != 0
    }

    /// Whether an opened value may be forwarded at a decrypt path: a rule's declared `type`
    /// decides; without one any value is accepted, as contract §3 says of `cty: json` values.
    /// (Declaring `type` is what keeps `{"$ne": null}` from reaching an app that expects a
    /// string there; `check` warns about `require_encrypted` routes without it.)
    pub fn accepts_opened(declared: Option<Self>, value: &Value) -> bool {
        declared.is_none_or(|types| types.contains(value))
    }
}

impl Selector {
    /// Compiles `path`; the error is the parser's readable explanation.
    pub fn compile(path: &str, context: Option<String>) -> Result<Self, String> {
        if !path.starts_with('$') {
            return Err(
                "a selector is a JSONPath starting with `$`, or names a carrier: `form:NAME`, `query:NAME`, `header:NAME`"
                    .into(),
            );
        }
        let query = parse_json_path(path).map_err(|e| format!("invalid JSONPath: {e}"))?;
        if let Some(c) = &context {
            if c.is_empty() {
                return Err("context must not be empty".into());
            }
        }
        Ok(Self {
            source: std::sync::Arc::from(path),
            query,
            context,
            seal_null: false,
            accepts: None,
            views: std::sync::Arc::from(Vec::new()),
            tokens: Default::default(),
        })
    }

    /// Whether the context of every node this selector can select is fixed by the selector
    /// itself rather than by member names in the document. At a decrypt path the context
    /// decides which tokens open (contract §1); when the document chooses it (`$.x.*`,
    /// `$..*`, filters), a client can put any token under a member named after its context
    /// and have it opened, so such selectors need an explicit `context`.
    ///
    /// Fixed: the last step names members (`.ssn`, `..ssn`, `['a','b']`), possibly followed
    /// by array indexes or slices (whose context is the member holding the array), or the
    /// selector is the root or indexes into a root array (context `""`).
    pub fn has_fixed_context(&self) -> bool {
        for segment in self.query.segments.iter().rev() {
            let steps: Vec<&Step> = match segment {
                Segment::Selector(step) => vec![step],
                Segment::Selectors(steps) => steps.iter().collect(),
                // `..[0]` reaches array elements held by any member: the holder varies.
                Segment::Descendant(inner) => match inner.as_ref() {
                    Segment::Selector(step) => vec![step],
                    Segment::Selectors(steps) => steps.iter().collect(),
                    Segment::Descendant(_) => return false,
                },
            };
            let descendant = matches!(segment, Segment::Descendant(_));
            if steps.iter().all(|s| matches!(s, Step::Name(_))) {
                return true;
            }
            let indexes = steps
                .iter()
                .all(|s| matches!(s, Step::Index(_) | Step::Slice(..)));
            if !indexes || descendant {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_common_selectors() {
        for p in ["$.ssn", "$.cards[*].number", "$..password", "$['a b'][0]"] {
            Selector::compile(p, None).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
    }

    #[test]
    fn fixed_and_client_chosen_contexts() {
        for p in [
            "$",
            "$.ssn",
            "$..ssn",
            "$.cards[*].number",
            "$['a','b']",
            "$.tags[0]",
            "$.tags[1:3]",
            "$[0]",
            "$.a[0][1]",
        ] {
            assert!(
                Selector::compile(p, None).unwrap().has_fixed_context(),
                "{p}"
            );
        }
        for p in [
            "$.x.*",
            "$..*",
            "$.x[*]",
            "$.x[?@.a]",
            "$.x['a',*]",
            "$..[0]",
            "$.x.*[0]",
        ] {
            assert!(
                !Selector::compile(p, None).unwrap().has_fixed_context(),
                "{p}"
            );
        }
    }

    #[test]
    fn opened_value_types() {
        use serde_json::json;
        let object = json!({"$ne": null});
        assert!(JsonTypes::accepts_opened(None, &object));
        let strings = JsonTypes::parse(["string"]).unwrap();
        assert!(!JsonTypes::accepts_opened(Some(strings), &json!(42)));
        assert!(!JsonTypes::accepts_opened(Some(strings), &object));
        assert!(JsonTypes::accepts_opened(Some(strings), &json!("x")));
        let scalars = JsonTypes::parse(["string", "number", "boolean"]).unwrap();
        assert!(!JsonTypes::accepts_opened(Some(scalars), &json!([1])));
        assert!(JsonTypes::accepts_opened(Some(scalars), &json!(true)));
        let any = JsonTypes::parse(["any"]).unwrap();
        assert!(JsonTypes::accepts_opened(Some(any), &object));
        assert!(JsonTypes::parse(["str"]).is_err());
        assert!(JsonTypes::parse([]).is_err());
    }

    #[test]
    fn rejects_bad_selectors() {
        assert!(Selector::compile("ssn", None).is_err());
        assert!(Selector::compile("$.cards[", None).is_err());
        assert!(Selector::compile("$.a", Some(String::new())).is_err());
    }
}
