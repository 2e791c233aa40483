//! Field sealing over whole documents, beside a plain serde_json parse + serialise of the same
//! bytes (the floor any JSON rewrite pays). Issue targets: the 1 MiB / 1,000-field transform at
//! most 1.25x the serde round trip.

use criterion::{criterion_group, criterion_main, Criterion};
use fieldseal::guard::{Detector, Guard};
use fieldseal::transform::rules::{apply_response, rewrite_response_body};
use serde_json::Value;
use std::hint::black_box;

mod common;
use common::{keyring, large, rules, small};

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
