//! A route's field rules applied to one JSON document with the keyring: responses get their
//! selected fields sealed (`fs1`), redacted or masked; requests get their selected tokens
//! opened. Pure functions over `serde_json::Value` — no I/O — so the proxy stage that buffers
//! bodies stays thin and this stays easy to test and to bench.
//!
//! Failures name the field (normalized JSONPath), a stable reason and, where relevant, the key
//! id — never the value or the token.

use serde_json::Value;

use crate::config::settings::{RequestRules, ResponseRules};
use crate::crypto::token::{self, looks_like_token};
use crate::crypto::Keyring;
use crate::selector::Selector;
use crate::transform::{self, Location};

/// What was done to one field, for metrics and the audit event (no values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldOp {
    pub path: String,
    pub action: Action,
    /// The key used (sealing, opening).
    pub kid: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Sealed,
    Redacted,
    Masked,
    Opened,
    /// Plaintext at a decrypt path, allowed because the route does not require tokens.
    PassedPlaintext,
}

impl Action {
    /// Label for metrics and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Sealed => "sealed",
            Action::Redacted => "redacted",
            Action::Masked => "masked",
            Action::Opened => "opened",
            Action::PassedPlaintext => "plaintext_passed",
        }
    }
}

/// A field the rules could not be applied to; the whole body is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldFailure {
    /// Normalized JSONPath of the field (`$` when selection itself failed).
    pub path: String,
    /// Stable snake_case reason (`authentication_failed`, `unknown_key`, `plaintext_not_allowed`…).
    pub reason: &'static str,
    pub kid: Option<String>,
}

impl std::fmt::Display for FieldFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field {}: {}", self.path, self.reason)?;
        if let Some(kid) = &self.kid {
            write!(f, " (key `{kid}`)")?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldFailure {}

fn select_failure(e: transform::SelectError) -> FieldFailure {
    tracing::warn!(error = %e, "JSONPath evaluation failed; refusing the body");
    FieldFailure {
        path: "$".into(),
        reason: "selection_failed",
        kid: None,
    }
}

/// Kinds of response rule, in priority order: when two rules select the same node, the first
/// kind wins (sealing keeps the value recoverable for the client round trip; a mask or
/// redaction on the same node would lose it).
enum ResponseAction<'a> {
    Seal(&'a Selector),
    Redact,
    Mask(usize),
}

/// Seals, redacts and masks the fields `rules` select in a response document. `keyring` may
/// be `None` only for routes without `encrypt` rules (redact and mask need no key).
pub fn apply_response(
    doc: &mut Value,
    rules: &ResponseRules,
    keyring: Option<&Keyring>,
) -> Result<Vec<FieldOp>, FieldFailure> {
    let mut actions: Vec<ResponseAction<'_>> = Vec::new();
    let mut queries = Vec::new();
    for s in &rules.encrypt {
        actions.push(ResponseAction::Seal(s));
        queries.push(&s.query);
    }
    for s in &rules.redact {
        actions.push(ResponseAction::Redact);
        queries.push(&s.query);
    }
    for m in &rules.mask {
        actions.push(ResponseAction::Mask(m.keep_last));
        queries.push(&m.selector.query);
    }
    let found = transform::select_all(&queries, doc).map_err(select_failure)?;
    let mut ops = Vec::with_capacity(found.len());
    for (index, location) in &found {
        let Some(node) = doc.pointer_mut(&location.pointer) else {
            continue;
        };
        let (action, kid) = match &actions[*index] {
            ResponseAction::Seal(selector) => {
                let key = keyring
                    .ok_or(FieldFailure {
                        path: location.path.clone(),
                        reason: "keyring_unavailable",
                        kid: None,
                    })?
                    .primary();
                let context = transform::context(selector, location);
                let sealed = token::seal(key, context, node).map_err(|_| FieldFailure {
                    path: location.path.clone(),
                    reason: "random_source_failed",
                    kid: Some(key.id.clone()),
                })?;
                *node = Value::String(sealed);
                (Action::Sealed, Some(key.id.clone()))
            }
            ResponseAction::Redact => {
                *node = transform::redact(node);
                (Action::Redacted, None)
            }
            ResponseAction::Mask(keep_last) => {
                *node = transform::mask(node, *keep_last);
                (Action::Masked, None)
            }
        };
        ops.push(FieldOp {
            path: location.path.clone(),
            action,
            kid,
        });
    }
    Ok(ops)
}

/// Opens the tokens at the fields `rules` select in a request document. Any token that does
/// not open — or, with `require_encrypted`, any plaintext — fails the whole request.
pub fn apply_request(
    doc: &mut Value,
    rules: &RequestRules,
    keyring: &Keyring,
) -> Result<Vec<FieldOp>, FieldFailure> {
    let found = transform::select_selectors(&rules.decrypt, doc).map_err(select_failure)?;
    let mut ops = Vec::with_capacity(found.len());
    for (index, location) in &found {
        let Some(node) = doc.pointer_mut(&location.pointer) else {
            continue;
        };
        let op = open_field(
            node,
            &rules.decrypt[*index],
            location,
            rules.require_encrypted,
            keyring,
        )?;
        ops.push(op);
    }
    Ok(ops)
}

fn open_field(
    node: &mut Value,
    selector: &Selector,
    location: &Location,
    require_encrypted: bool,
    keyring: &Keyring,
) -> Result<FieldOp, FieldFailure> {
    let token_text = match node {
        Value::String(s) if looks_like_token(s) => s.as_str(),
        _ if require_encrypted => {
            return Err(FieldFailure {
                path: location.path.clone(),
                reason: "plaintext_not_allowed",
                kid: None,
            })
        }
        _ => {
            return Ok(FieldOp {
                path: location.path.clone(),
                action: Action::PassedPlaintext,
                kid: None,
            })
        }
    };
    let kid = token_text
        .strip_prefix(token::TOKEN_PREFIX)
        .and_then(|r| r.split_once('.'))
        .map(|(k, _)| k.to_string());
    let context = transform::context(selector, location);
    match token::open(keyring, context, token_text) {
        Ok(value) => {
            *node = value;
            Ok(FieldOp {
                path: location.path.clone(),
                action: Action::Opened,
                kid,
            })
        }
        Err(e) => Err(FieldFailure {
            path: location.path.clone(),
            reason: e.reason(),
            kid: e.kid().map(str::to_string).or(kid),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::MaskRule;
    use crate::crypto::keyring::tests::test_keyring;
    use proptest::prelude::*;
    use serde_json::json;

    /// Where `user()` holds the fields `response_rules()` seals.
    const SEALED_POINTERS: [&str; 5] = [
        "/ssn",
        "/password",
        "/age",
        "/cards/0/number",
        "/cards/1/number",
    ];

    fn sel(path: &str) -> Selector {
        Selector::compile(path, None).unwrap()
    }

    fn user() -> Value {
        json!({
            "id": 7, "name": "Ada", "ssn": "123-45-6789", "password": "pw", "age": 36,
            "cards": [{"brand": "visa", "number": "4111111111110366"}, {"brand": "amex", "number": 378282246310005u64}],
            "phone": "+44 20 7946 0958", "notes": {"internal": true}
        })
    }

    fn response_rules() -> ResponseRules {
        ResponseRules {
            encrypt: vec![
                sel("$.ssn"),
                sel("$.password"),
                sel("$.age"),
                Selector::compile("$.cards[*].number", Some("card".into())).unwrap(),
            ],
            redact: vec![sel("$.notes")],
            mask: vec![MaskRule {
                selector: sel("$.phone"),
                keep_last: 4,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn response_rules_seal_redact_and_mask() {
        let ring = test_keyring();
        let mut doc = user();
        let ops = apply_response(&mut doc, &response_rules(), Some(&ring)).unwrap();
        assert_eq!(ops.iter().filter(|o| o.action == Action::Sealed).count(), 5);
        for p in SEALED_POINTERS {
            let t = doc.pointer(p).unwrap().as_str().unwrap();
            assert!(t.starts_with("fs1.k1."), "{p}: {t}");
        }
        assert_eq!(doc["notes"], Value::Null);
        assert_eq!(doc["phone"], "************0958");
        assert_eq!(doc["name"], "Ada");
        // Member rule vs explicit context.
        assert_eq!(
            token::open(&ring, "ssn", doc["ssn"].as_str().unwrap()).unwrap(),
            "123-45-6789"
        );
        assert_eq!(
            token::open(&ring, "age", doc["age"].as_str().unwrap()).unwrap(),
            36
        );
        assert_eq!(
            token::open(&ring, "card", doc["cards"][1]["number"].as_str().unwrap()).unwrap(),
            json!(378282246310005u64)
        );
        let text = doc.to_string();
        for secret in [
            "123-45-6789",
            "4111111111110366",
            "378282246310005",
            "\"pw\"",
        ] {
            assert!(!text.contains(secret), "{secret} survived");
        }
    }

    #[test]
    fn request_rules_open_what_the_response_sealed() {
        let ring = test_keyring();
        let mut doc = user();
        apply_response(&mut doc, &response_rules(), Some(&ring)).unwrap();
        let request = RequestRules {
            decrypt: vec![
                sel("$.ssn"),
                sel("$.password"),
                sel("$.age"),
                Selector::compile("$.cards[*].number", Some("card".into())).unwrap(),
            ],
            require_encrypted: true,
            max_age: None,
        };
        let ops = apply_request(&mut doc, &request, &ring).unwrap();
        assert_eq!(ops.len(), 5);
        let original = user();
        for p in SEALED_POINTERS {
            assert_eq!(doc.pointer(p), original.pointer(p), "{p}");
        }
    }

    #[test]
    fn request_failures_name_field_reason_and_kid() {
        let ring = test_keyring();
        let rules = |require| RequestRules {
            decrypt: vec![sel("$.ssn"), sel("$.nick")],
            require_encrypted: require,
            max_age: None,
        };
        let password_token = token::seal(ring.primary(), "password", &json!("x")).unwrap();
        let cases = [
            (
                json!({"ssn": password_token}),
                "authentication_failed",
                Some("k1"),
            ),
            (json!({"ssn": "fs1.k9.AAAA"}), "unknown_key", Some("k9")),
            (
                json!({"ssn": "fs1.gone.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
                "key_disabled",
                Some("gone"),
            ),
            (json!({"ssn": "fs1.k1.%%%"}), "bad_encoding", Some("k1")),
        ];
        for (mut doc, reason, kid) in cases {
            let err = apply_request(&mut doc, &rules(false), &ring).unwrap_err();
            assert_eq!(
                (err.path.as_str(), err.reason, err.kid.as_deref()),
                ("$['ssn']", reason, kid)
            );
        }
        // Plaintext: passes unless tokens are required.
        let mut doc = json!({"ssn": "123-45-6789"});
        let ops = apply_request(&mut doc, &rules(false), &ring).unwrap();
        assert_eq!(ops[0].action, Action::PassedPlaintext);
        assert_eq!(doc["ssn"], "123-45-6789");
        let err = apply_request(&mut doc, &rules(true), &ring).unwrap_err();
        assert_eq!(err.reason, "plaintext_not_allowed");
        assert!(!err.to_string().contains("123-45-6789"));
    }

    /// JSON documents of bounded size, with member names worth escaping.
    fn json_doc() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z0-9 ~/'é]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-z~/'é]{1,5}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Simple selectors built from the document's own paths (and `[*]` in place of indexes).
    fn selectors_for(doc: &Value, picks: &[usize]) -> Vec<String> {
        fn paths(v: &Value, prefix: String, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    for (k, c) in m {
                        let p = format!(
                            "{prefix}['{}']",
                            k.replace('\\', "\\\\").replace('\'', "\\'")
                        );
                        out.push(p.clone());
                        paths(c, p, out);
                    }
                }
                Value::Array(a) => {
                    for (i, c) in a.iter().enumerate() {
                        let p = if i % 2 == 0 {
                            format!("{prefix}[{i}]")
                        } else {
                            format!("{prefix}[*]")
                        };
                        out.push(p.clone());
                        paths(c, p, out);
                    }
                }
                _ => {}
            }
        }
        let mut all = Vec::new();
        paths(doc, "$".into(), &mut all);
        let mut chosen: Vec<String> = picks
            .iter()
            .filter_map(|i| all.get(i % all.len().max(1)).cloned())
            .collect();
        chosen.sort();
        chosen.dedup();
        chosen
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// open(seal(doc)) == doc, and every selected field is a token in between.
        #[test]
        fn sealing_then_opening_restores_the_document(doc in json_doc(), picks in prop::collection::vec(any::<usize>(), 1..4)) {
            let ring = test_keyring();
            let paths = selectors_for(&doc, &picks);
            prop_assume!(!paths.is_empty());
            let selectors: Vec<Selector> = paths.iter().map(|p| sel(p)).collect();
            let mut sealed = doc.clone();
            let ops = apply_response(&mut sealed, &ResponseRules { encrypt: selectors.clone(), ..Default::default() }, Some(&ring)).unwrap();
            let locations = transform::select_selectors(&selectors, &doc).unwrap();
            prop_assert_eq!(ops.len(), locations.len());
            for (_, loc) in &locations {
                let node = sealed.pointer(&loc.pointer).unwrap();
                prop_assert!(node.as_str().is_some_and(looks_like_token), "{} not sealed: {}", loc.path, node);
            }
            let mut opened = sealed.clone();
            apply_request(&mut opened, &RequestRules { decrypt: selectors, require_encrypted: true, max_age: None }, &ring).unwrap();
            prop_assert_eq!(opened, doc);
        }
    }
}
