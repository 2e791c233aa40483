//! JSON documents × selectors through both transform engines: the byte-level one
//! (`transform::splice`, used by `field_rules::rewrite_*_body` when every selector is simple)
//! and the document one (`field_rules::apply_*` over a `serde_json::Value`, used otherwise).
//!
//! Input (text): selector lines, a blank line, then the document bytes. A selector line is
//! `[r |m<digit> ]<JSONPath>[\t<context>]`: `r ` redacts, `m4 ` masks keeping 4, otherwise the
//! field is sealed (`encrypt`), with the optional explicit context. Without a blank line the
//! whole input is the document and a fixed rule set applies.
//!
//! Checks, besides "never panics" (both engines, response and request side, on the raw input):
//! - round trip: when every rule seals and every selector is structural (names, indexes,
//!   slices, wildcards, descendants — no filters, whose results depend on values), sealing then
//!   opening with the same selectors restores the original document, on each engine;
//! - the engines agree: on the canonical text of the document (no duplicate members), the
//!   byte-level engine reports the same fields and actions as the document engine, and the
//!   same output when no rule seals (redact and mask are deterministic).
#![no_main]

use fieldseal::config::raw::OnNonJson;
use fieldseal::config::settings::{MaskRule, RequestRules, ResponseRules};
use fieldseal::transform::rules::{
    apply_request, apply_response, rewrite_request_body, rewrite_response_body, Action, Openers,
};
use fieldseal::transform::selector::Selector;
use fieldseal_fuzz::keyring;
use jsonpath_rust::parser::model::{Segment, Selector as JpSelector};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const DEFAULT_RULES: &str =
    "$.ssn\n$..password\n$.cards[*].number\tcard\nm4 $.phone\nr $.internal_notes";

/// Whether a selector selects by position alone (the same nodes before and after sealing).
fn structural(selector: &Selector) -> bool {
    fn plain(s: &JpSelector) -> bool {
        !matches!(s, JpSelector::Filter(_))
    }
    fn segment(s: &Segment) -> bool {
        match s {
            Segment::Descendant(inner) => segment(inner),
            Segment::Selector(s) => plain(s),
            Segment::Selectors(list) => list.iter().all(plain),
        }
    }
    selector.query.segments.iter().all(segment)
}

struct Rules {
    encrypt: Vec<Selector>,
    redact: Vec<Selector>,
    mask: Vec<MaskRule>,
}

fn parse_rules(text: &str) -> Option<Rules> {
    let mut rules = Rules {
        encrypt: Vec::new(),
        redact: Vec::new(),
        mask: Vec::new(),
    };
    for line in text.lines().take(8) {
        let (path, context) = match line.split_once('\t') {
            Some((p, c)) => (p, Some(c.to_string())),
            None => (line, None),
        };
        if let Some(path) = path.strip_prefix("r ") {
            rules.redact.push(Selector::compile(path, None).ok()?);
        } else if let Some(rest) = path
            .strip_prefix('m')
            .filter(|r| r.as_bytes().get(1) == Some(&b' '))
        {
            let keep_last = usize::from(rest.as_bytes()[0].wrapping_sub(b'0') % 10);
            rules.mask.push(MaskRule {
                selector: Selector::compile(&rest[2..], None).ok()?,
                keep_last,
            });
        } else {
            rules.encrypt.push(Selector::compile(path, context).ok()?);
        }
    }
    Some(rules)
}

/// (path, action) of each operation, sorted.
fn summary(ops: &[fieldseal::transform::rules::FieldOp]) -> Vec<(String, Action)> {
    let mut out: Vec<(String, Action)> = ops.iter().map(|o| (o.path.clone(), o.action)).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fuzz_target!(|data: &[u8]| {
    let (rules_bytes, doc) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (DEFAULT_RULES.as_bytes(), data),
    };
    let Ok(rules_text) = std::str::from_utf8(rules_bytes) else {
        return;
    };
    let Some(rules) = parse_rules(rules_text) else {
        return;
    };
    let ring = keyring();
    let seal_only = rules.redact.is_empty() && rules.mask.is_empty();
    let all_structural = rules
        .encrypt
        .iter()
        .chain(&rules.redact)
        .chain(rules.mask.iter().map(|m| &m.selector))
        .all(structural);
    let request = RequestRules::new(rules.encrypt.clone(), false, None);
    let strict = RequestRules::new(rules.encrypt.clone(), true, None);
    let response = ResponseRules::new(rules.encrypt, rules.redact, rules.mask, OnNonJson::Fail);
    let openers = Openers::fs1(ring);

    // Request side on the raw input (tokens a client might send back, or anything else).
    for r in [&request, &strict] {
        let mut ops = Vec::new();
        if let Ok(Some(out)) = rewrite_request_body(doc, r, &openers, &mut ops) {
            serde_json::from_slice::<serde::de::IgnoredAny>(&out).expect("request output is JSON");
        }
    }

    // Response side on the raw input.
    let mut ops = Vec::new();
    let sealed = rewrite_response_body(doc, &response, Some(ring), &mut ops);
    let original: Option<Value> = serde_json::from_slice(doc).ok();

    // Document engine directly on the parsed document.
    let mut doc_sealed = original.clone();
    let doc_ops = doc_sealed
        .as_mut()
        .map(|v| apply_response(v, &response, Some(ring)));
    if let Some(v) = &original {
        let mut w = v.clone();
        let _ = apply_request(&mut w, &request, &openers);
    }

    let Some(original) = original else { return };

    // Round trips.
    if seal_only && all_structural {
        if let Ok(out) = &sealed {
            let sealed_bytes: &[u8] = out.as_deref().unwrap_or(doc);
            let mut ops = Vec::new();
            let opened = rewrite_request_body(sealed_bytes, &request, &openers, &mut ops)
                .unwrap_or_else(|e| panic!("a sealed body did not open: {e:?}"));
            let opened: Value = serde_json::from_slice(opened.as_deref().unwrap_or(sealed_bytes))
                .expect("an opened body is JSON");
            assert!(
                opened == original,
                "byte-level seal/open changed the document: {opened} vs {original}"
            );
        }
        if let (Some(Ok(_)), Some(mut v)) = (&doc_ops, doc_sealed.clone()) {
            apply_request(&mut v, &request, &openers)
                .unwrap_or_else(|e| panic!("a sealed document did not open: {e:?}"));
            assert!(
                v == original,
                "document seal/open changed the document: {v} vs {original}"
            );
        }
    }

    // The engines agree on the canonical text.
    if response.plan().is_some() {
        let canonical = serde_json::to_vec(&original).unwrap();
        let mut byte_ops = Vec::new();
        let byte_out = rewrite_response_body(&canonical, &response, Some(ring), &mut byte_ops);
        match (&byte_out, &doc_ops) {
            (Ok(out), Some(Ok(d_ops))) => {
                assert_eq!(
                    summary(&byte_ops),
                    summary(d_ops),
                    "the engines selected differently"
                );
                if seal_only {
                    return;
                }
                if !response.seals() {
                    let byte_doc: Value = match out {
                        Some(b) => serde_json::from_slice(b).expect("output is JSON"),
                        None => original.clone(),
                    };
                    assert!(
                        doc_sealed.as_ref().is_some_and(|d| &byte_doc == d),
                        "the engines redacted or masked differently"
                    );
                }
            }
            (Err(e), Some(Ok(_))) => panic!("only the byte-level engine failed: {e:?}"),
            _ => {}
        }
    }
});
