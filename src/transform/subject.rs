//! Whose data a value is: the data subject that `per_subject` rules seal for (`fsb1`,
//! docs/tokens.md) and that subject-bound tokens open for.
//!
//! A request has one subject, known before its body is read: a path parameter (`/users/{id}`)
//! or a claim of the caller's verified token. An answer may hold many people's records (a list
//! endpoint, an export), so a route may instead name a **member** of each record: every sealed
//! value then belongs to the record that holds it. "The record" is defined so that a value is
//! never sealed for somebody else's record:
//!
//! - the member is looked for in the objects around the value, innermost first
//!   (`{"id": 42, "profile": {"ssn": …}}` finds `42` one level up);
//! - the search stops at the first object that is an element of an array: a list element is a
//!   record of its own, and a list's owner is not its elements' subject
//!   (`{"id": 1, "items": [{"ssn": …}]}` finds nothing, and the answer is withheld);
//! - the member's value must be a non-empty string or an integer (spelled as JSON spells it,
//!   so `42` and `"42"` are the same subject, as a path parameter `42` is); anything else finds
//!   nothing.
//!
//! Requests never take their subject from their own body: a client would choose whose tokens
//! open (the cross-user oracle subject binding closes). A route whose subject is a member
//! opens no subject-bound token in requests, and `check` says so.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

/// The data subject of one request or answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DataSubject {
    /// The route names none, or the request lacks it (no such parameter, an anonymous
    /// caller): `per_subject` rules fail closed.
    #[default]
    Unknown,
    /// One subject for the whole request and its answer.
    Known(String),
    /// Per value, in answers: this member of the record holding the value.
    Member(Arc<str>),
}

impl DataSubject {
    /// `Known` for `Some`, `Unknown` for `None`.
    pub fn known(subject: Option<String>) -> Self {
        subject.map_or(DataSubject::Unknown, DataSubject::Known)
    }

    /// The request's own subject: what its subject-bound tokens open for. `None` for a
    /// member subject too (see the module documentation).
    pub fn of_request(&self) -> Option<&str> {
        match self {
            DataSubject::Known(s) => Some(s),
            DataSubject::Unknown | DataSubject::Member(_) => None,
        }
    }

    /// Whether each value has its own subject (the document is needed to find it).
    pub fn per_value(&self) -> bool {
        matches!(self, DataSubject::Member(_))
    }

    /// The subject of the value at `pointer` (RFC 6901) in `doc`.
    pub fn at<'a>(&'a self, doc: &Value, pointer: &str) -> Option<Cow<'a, str>> {
        match self {
            DataSubject::Unknown => None,
            DataSubject::Known(s) => Some(Cow::Borrowed(s)),
            DataSubject::Member(name) => member_subject(doc, pointer, name).map(Cow::Owned),
        }
    }
}

/// The subject a record's `name` member gives the value at `pointer`: see the module
/// documentation for which objects are searched.
pub fn member_subject(doc: &Value, pointer: &str, name: &str) -> Option<String> {
    let mut end = pointer.len();
    // Whether the previous ancestor looked at was an object: stepping from an object into an
    // array leaves the record.
    let mut left_object = false;
    while let Some(cut) = pointer[..end].rfind('/') {
        end = cut;
        match doc.pointer(&pointer[..end])? {
            Value::Object(map) => {
                if let Some(found) = map.get(name) {
                    return subject_value(found);
                }
                left_object = true;
            }
            Value::Array(_) if left_object => return None,
            Value::Array(_) => {}
            _ => return None,
        }
    }
    None
}

/// A member's value as a subject: a non-empty string, or an integer in its JSON spelling.
fn subject_value(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(doc: &Value, pointer: &str) -> Option<String> {
        member_subject(doc, pointer, "id")
    }

    #[test]
    fn finds_the_member_of_the_record_holding_the_value() {
        let doc = json!({"id": 42, "ssn": "x", "profile": {"tax": "y"}, "ssns": ["a", "b"]});
        assert_eq!(at(&doc, "/ssn").as_deref(), Some("42"));
        assert_eq!(at(&doc, "/profile/tax").as_deref(), Some("42"));
        // Scalars in a list belong to the record holding the list.
        assert_eq!(at(&doc, "/ssns/1").as_deref(), Some("42"));
    }

    #[test]
    fn each_list_element_is_its_own_record() {
        let doc = json!([
            {"id": "u-1", "ssn": "a"},
            {"id": 2, "profile": {"ssn": "b"}},
            {"ssn": "c"}
        ]);
        assert_eq!(at(&doc, "/0/ssn").as_deref(), Some("u-1"));
        assert_eq!(at(&doc, "/1/profile/ssn").as_deref(), Some("2"));
        assert_eq!(at(&doc, "/2/ssn"), None);
    }

    #[test]
    fn never_takes_a_lists_owner_for_its_elements() {
        let doc = json!({"id": 1, "items": [{"ssn": "a"}, {"id": 7, "ssn": "b"}]});
        assert_eq!(at(&doc, "/items/0/ssn"), None);
        assert_eq!(at(&doc, "/items/1/ssn").as_deref(), Some("7"));
        let nested = json!({"id": 1, "rows": [[{"ssn": "a"}]]});
        assert_eq!(at(&nested, "/rows/0/0/ssn"), None);
    }

    #[test]
    fn only_strings_and_integers_name_a_subject() {
        for id in [
            json!(""),
            json!(null),
            json!(1.5),
            json!(true),
            json!({"a": 1}),
            json!([1]),
        ] {
            let doc = json!({"id": id, "ssn": "x"});
            assert_eq!(at(&doc, "/ssn"), None, "{id}");
        }
        // The innermost record's member decides, even when it names nothing.
        let doc = json!({"id": 42, "inner": {"id": null, "ssn": "x"}});
        assert_eq!(at(&doc, "/inner/ssn"), None);
        let big = json!({"id": u64::MAX, "ssn": "x"});
        assert_eq!(at(&big, "/ssn").as_deref(), Some("18446744073709551615"));
    }

    #[test]
    fn escaped_pointer_tokens_and_the_root() {
        let doc = json!({"a/b": {"id": "s", "x~y": "v"}});
        assert_eq!(at(&doc, "/a~1b/x~0y").as_deref(), Some("s"));
        assert_eq!(at(&json!("ssn"), ""), None);
        assert_eq!(at(&json!({"id": 3}), ""), None);
    }

    #[test]
    fn a_request_subject_is_never_a_member() {
        assert_eq!(DataSubject::Member("id".into()).of_request(), None);
        assert_eq!(
            DataSubject::known(Some("42".into())).of_request(),
            Some("42")
        );
        assert_eq!(DataSubject::known(None), DataSubject::Unknown);
    }
}
