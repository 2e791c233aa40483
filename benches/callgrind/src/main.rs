//! Callgrind harness: the operations of fieldseal's benches/transform.rs ("transform" group),
//! one case per process, N iterations. Usage: harness CASE [N]
//! Cases: small_seal small_value small_apply large_seal serde_small serde_large open_small
use fieldseal::config::raw::OnNonJson;
use fieldseal::config::settings::{RequestRules, ResponseRules};
use fieldseal::crypto::Keyring;
use fieldseal::transform::rules::{
    apply_response, rewrite_request_body, rewrite_response_body, Openers,
};
use fieldseal::transform::selector::Selector;
use serde_json::{json, Value};
use std::hint::black_box;

fn keyring() -> Keyring {
    Keyring::single("k1", &[7u8; 32], "2026-11-01T00:00:00Z").unwrap()
}

/// As benches/transform.rs: a ~1 KiB user record.
fn small() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": 1042, "username": "ada.lovelace", "email": "ada@example.com", "full_name": "Ada Lovelace",
        "ssn": "123-45-6789", "password": "correct horse battery staple",
        "address": {"street": "12 St James's Square", "city": "London", "postcode": "SW1Y 4JH", "country": "GB"},
        "cards": [{"brand": "visa", "number": "4111111111110366", "exp": "12/29"}],
        "preferences": {"newsletter": true, "theme": "dark", "language": "en-GB", "timezone": "Europe/London"},
        "roles": ["analyst", "engineer"], "created_at": "2025-01-01T00:00:00Z", "bio": "x".repeat(400),
    }))
    .unwrap()
}

/// As benches/transform.rs: ~1 MiB, 1,000 records, each with one sealed field.
fn large() -> Vec<u8> {
    let users: Vec<Value> = (0..1000)
        .map(|i| json!({"id": i, "name": format!("user {i}"), "ssn": format!("{i:03}-45-6789"), "pad": "p".repeat(1000)}))
        .collect();
    serde_json::to_vec(&json!({ "users": users })).unwrap()
}

const SMALL_PATHS: &[&str] = &["$.ssn", "$.password", "$.cards[*].number"];
const LARGE_PATHS: &[&str] = &["$.users[*].ssn"];

fn selectors(paths: &[&str]) -> Vec<Selector> {
    paths
        .iter()
        .map(|p| Selector::compile(p, None).unwrap())
        .collect()
}

fn rules(paths: &[&str]) -> ResponseRules {
    ResponseRules::new(selectors(paths), vec![], vec![], OnNonJson::Fail)
}

fn count_tokens(out: &[u8]) -> usize {
    out.windows(5).filter(|w| w == b"\"fs1.").count()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let case = args.get(1).map(String::as_str).unwrap_or("");
    let default_n = if case.starts_with("large") || case.ends_with("large") {
        5
    } else {
        2000
    };
    let n: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(default_n);
    let ring = keyring();

    match case {
        // rewrite_response_body on the 1 KiB record (byte-level engine), 3 fields sealed.
        "small_seal" | "large_seal" => {
            let (bytes, rules, expect) = if case == "small_seal" {
                (small(), rules(SMALL_PATHS), 3)
            } else {
                (large(), rules(LARGE_PATHS), 1000)
            };
            // Sanity check, outside the loop (same in every run, so it cancels).
            let out = rewrite_response_body(&bytes, &rules, Some(&ring), &mut Vec::new())
                .unwrap()
                .unwrap();
            assert_eq!(count_tokens(&out), expect);
            for _ in 0..n {
                let mut ops = Vec::new();
                let out = rewrite_response_body(black_box(&bytes), &rules, Some(&ring), &mut ops)
                    .unwrap()
                    .unwrap();
                black_box((out, ops));
            }
        }
        // The Value engine as the bench runs it: parse, apply_response, serialise.
        "small_value" => {
            let bytes = small();
            let rules = rules(SMALL_PATHS);
            for _ in 0..n {
                let mut doc: Value = serde_json::from_slice(black_box(&bytes)).unwrap();
                let ops = apply_response(&mut doc, &rules, Some(&ring)).unwrap();
                black_box((serde_json::to_vec(&doc).unwrap(), ops));
            }
        }
        // apply_response alone, on a clone of a document parsed once (clone + apply).
        "small_apply" => {
            let parsed: Value = serde_json::from_slice(&small()).unwrap();
            let rules = rules(SMALL_PATHS);
            for _ in 0..n {
                let mut doc = black_box(&parsed).clone();
                let ops = apply_response(&mut doc, &rules, Some(&ring)).unwrap();
                assert_eq!(ops.len(), 3);
                black_box((doc, ops));
            }
        }
        // The floor: parse + serialise.
        "serde_small" | "serde_large" => {
            let bytes = if case == "serde_small" {
                small()
            } else {
                large()
            };
            for _ in 0..n {
                let doc: Value = serde_json::from_slice(black_box(&bytes)).unwrap();
                black_box(serde_json::to_vec(&doc).unwrap());
            }
        }
        // Seal once, then open the sealed body N times.
        "open_small" => {
            let bytes = small();
            let sealed =
                rewrite_response_body(&bytes, &rules(SMALL_PATHS), Some(&ring), &mut Vec::new())
                    .unwrap()
                    .unwrap();
            assert_eq!(count_tokens(&sealed), 3);
            let req = RequestRules::new(selectors(SMALL_PATHS), false, None);
            let openers = Openers::fs1(&ring);
            let opened = rewrite_request_body(&sealed, &req, &openers, &mut Vec::new())
                .unwrap()
                .unwrap();
            assert_eq!(
                serde_json::from_slice::<Value>(&opened).unwrap(),
                serde_json::from_slice::<Value>(&bytes).unwrap()
            );
            for _ in 0..n {
                let mut ops = Vec::new();
                let out = rewrite_request_body(black_box(&sealed), &req, &openers, &mut ops)
                    .unwrap()
                    .unwrap();
                black_box((out, ops));
            }
        }
        other => {
            eprintln!("unknown case {other:?}; usage: harness CASE [N]");
            std::process::exit(2);
        }
    }
}
