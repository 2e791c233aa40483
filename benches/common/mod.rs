//! The documents, keys and rules the benchmarks share, so every figure in benches/README.md
//! is over the same bytes (criterion benches `mod common;`; the callgrind harness includes
//! this file by path). Not every bench uses every item.
#![allow(dead_code)]

use fieldseal::config::raw::OnNonJson;
use fieldseal::config::settings::ResponseRules;
use fieldseal::crypto::Keyring;
use fieldseal::transform::selector::Selector;
use serde_json::{json, Value};

/// A keyring of one fixed key (benchmarks need no secrecy, only the same work every run).
pub fn keyring() -> Keyring {
    Keyring::single("k1", &[7u8; 32], "2026-11-01T00:00:00Z").unwrap()
}

/// A ~1 KiB user record like the P1 load benchmark's.
pub fn small() -> Vec<u8> {
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

/// ~1 MiB: 1,000 records, each with one sealed field.
pub fn large() -> Vec<u8> {
    let users: Vec<Value> = (0..1000)
        .map(|i| json!({"id": i, "name": format!("user {i}"), "ssn": format!("{i:03}-45-6789"), "pad": "p".repeat(1000)}))
        .collect();
    serde_json::to_vec(&json!({ "users": users })).unwrap()
}

/// The three fields the 1 KiB record's rules seal.
pub const SMALL_FIELDS: [&str; 3] = ["$.ssn", "$.password", "$.cards[*].number"];

/// The 1 MiB document's rule.
pub const LARGE_FIELDS: [&str; 1] = ["$.users[*].ssn"];

pub fn selectors(paths: &[&str]) -> Vec<Selector> {
    paths
        .iter()
        .map(|p| Selector::compile(p, None).unwrap())
        .collect()
}

/// Sealing rules for `paths`.
pub fn rules(paths: &[&str]) -> ResponseRules {
    ResponseRules::new(selectors(paths), vec![], vec![], OnNonJson::Fail)
}
