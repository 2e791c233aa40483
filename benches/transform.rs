//! Field sealing over whole documents, beside a plain serde_json parse + serialise of the same
//! bytes (the floor any JSON rewrite pays). Issue targets: the 1 MiB / 1,000-field transform at
//! most 1.25x the serde round trip.

use criterion::{criterion_group, criterion_main, Criterion};
use fieldseal::config::raw::OnNonJson;
use fieldseal::config::settings::ResponseRules;
use fieldseal::crypto::Keyring;
use fieldseal::guard::{Detector, Guard};
use fieldseal::transform::rules::{apply_response, rewrite_response_body};
use fieldseal::transform::selector::Selector;
use serde_json::{json, Value};
use std::hint::black_box;

fn keyring() -> Keyring {
    Keyring::single("k1", &[7u8; 32], "2026-11-01T00:00:00Z").unwrap()
}

/// A ~1 KiB user record like the P1 benchmark's.
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

/// ~1 MiB: 1,000 records, each with one sealed field.
fn large() -> Vec<u8> {
    let users: Vec<Value> = (0..1000)
        .map(|i| json!({"id": i, "name": format!("user {i}"), "ssn": format!("{i:03}-45-6789"), "pad": "p".repeat(1000)}))
        .collect();
    serde_json::to_vec(&json!({ "users": users })).unwrap()
}

fn rules(paths: &[&str]) -> ResponseRules {
    let encrypt = paths
        .iter()
        .map(|p| Selector::compile(p, None).unwrap())
        .collect();
    ResponseRules::new(encrypt, vec![], vec![], OnNonJson::Fail)
}

fn bench(c: &mut Criterion) {
    let ring = keyring();
    let mut group = c.benchmark_group("transform");
    for (name, bytes, rules) in [
        (
            "1KiB_3_fields",
            small(),
            rules(&["$.ssn", "$.password", "$.cards[*].number"]),
        ),
        ("1MiB_1000_fields", large(), rules(&["$.users[*].ssn"])),
    ] {
        group.bench_function(format!("{name}/serde_round_trip"), |b| {
            b.iter(|| {
                let doc: Value = serde_json::from_slice(black_box(&bytes)).unwrap();
                serde_json::to_vec(&doc).unwrap()
            })
        });
        // What the proxy runs: the byte-level engine for these simple selectors.
        group.bench_function(format!("{name}/seal"), |b| {
            b.iter(|| {
                let mut ops = Vec::new();
                rewrite_response_body(black_box(&bytes), &rules, Some(&ring), &mut ops)
                    .unwrap()
                    .unwrap()
            })
        });
        // The `Value` engine that selectors beyond the byte-level engine's reach use.
        group.bench_function(format!("{name}/seal_value_engine"), |b| {
            b.iter(|| {
                let mut doc: Value = serde_json::from_slice(black_box(&bytes)).unwrap();
                apply_response(&mut doc, &rules, Some(&ring)).unwrap();
                serde_json::to_vec(&doc).unwrap()
            })
        });
    }
    group.finish();

    // The field policy (contract §8): the same record through descendant selectors, which
    // must look at every member at every depth; and the guard (§9) over what goes out.
    let mut group = c.benchmark_group("policy");
    let record = small();
    let policy = rules(&["$..ssn", "$..password", "$..number", "$..email"]);
    group.bench_function("1KiB_4_descendant_fields/seal", |b| {
        b.iter(|| {
            let mut ops = Vec::new();
            rewrite_response_body(black_box(&record), &policy, Some(&ring), &mut ops)
                .unwrap()
                .unwrap()
        })
    });
    let sealed = rewrite_response_body(&record, &policy, Some(&ring), &mut Vec::new())
        .unwrap()
        .unwrap();
    let guard = Guard {
        detectors: Detector::ALL.iter().map(|(_, d)| *d).collect(),
        mode: fieldseal::guard::Mode::Observe,
    };
    // What the guard costs on an answer the rules made clean (the common case) and on one
    // that still holds an SSN, a card number and an email (parsed to find their paths).
    group.bench_function("1KiB_guard/clean", |b| {
        b.iter(|| guard.scan_bytes(black_box(&sealed)))
    });
    group.bench_function("1KiB_guard/three_detections", |b| {
        b.iter(|| guard.scan_bytes(black_box(&record)))
    });
    let big = large();
    group.bench_function("1MiB_guard/1000_detections", |b| {
        b.iter(|| guard.scan_bytes(black_box(&big)))
    });
    let big_sealed = rewrite_response_body(
        &big,
        &rules(&["$.users[*].ssn"]),
        Some(&ring),
        &mut Vec::new(),
    )
    .unwrap()
    .unwrap();
    group.bench_function("1MiB_guard/clean", |b| {
        b.iter(|| guard.scan_bytes(black_box(&big_sealed)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
