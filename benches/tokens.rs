//! Seal/open of one 16-byte field in each token format (fs1 target: ≤ 0.5 µs per seal). fs1
//! and fse1 seals include drawing a 12-byte nonce from the OS CSPRNG, as every seal must; fsd1
//! (AES-SIV) has no nonce.

use criterion::{criterion_group, criterion_main, Criterion};
use fieldseal::crypto::{token, Keyring};
use serde_json::json;
use std::hint::black_box;

fn keyring() -> Keyring {
    Keyring::single("k1", &[7u8; 32], "2026-11-01T00:00:00Z").unwrap()
}

fn tokens(c: &mut Criterion) {
    let ring = keyring();
    // 16 bytes of plaintext: the JSON string "123456789012-34" with its quotes.
    let value = json!("4111111111110366"[..14].to_string());
    assert_eq!(serde_json::to_vec(&value).unwrap().len(), 16);
    let mut group = c.benchmark_group("fs1");
    group.bench_function("seal_16_bytes", |b| {
        b.iter(|| token::seal(ring.primary(), "card", black_box(&value)).unwrap())
    });
    let sealed = token::seal(ring.primary(), "card", &value).unwrap();
    group.bench_function("open_16_bytes", |b| {
        b.iter(|| token::open(&ring, "card", black_box(&sealed)).unwrap())
    });
    let mut nonce = [0u8; 12];
    group.bench_function("os_csprng_12_bytes", |b| {
        b.iter(|| getrandom::fill(black_box(&mut nonce)).unwrap())
    });
    group.finish();

    let json = serde_json::to_vec(&value).unwrap();
    for (name, format) in [
        (
            "fse1",
            token::Format::Expiring {
                expires_at: 4_000_000_000,
            },
        ),
        ("fsd1", token::Format::Searchable),
    ] {
        let mut group = c.benchmark_group(name);
        group.bench_function("seal_16_bytes", |b| {
            b.iter(|| {
                token::seal_json_as(ring.primary(), format, "card", black_box(&json)).unwrap()
            })
        });
        let sealed = token::seal_json_as(ring.primary(), format, "card", &json).unwrap();
        group.bench_function("open_16_bytes", |b| {
            b.iter(|| token::open(&ring, "card", black_box(&sealed)).unwrap())
        });
        group.finish();
    }

    // fsb1: a per-subject key derived (HKDF-SHA256) for every token, then AES-256-GCM.
    let mut group = c.benchmark_group("fsb1");
    group.bench_function("seal_16_bytes", |b| {
        b.iter(|| token::seal_for_subject(&ring, "user-42", "card", black_box(&json)).unwrap())
    });
    let sealed = token::seal_for_subject(&ring, "user-42", "card", &json).unwrap();
    group.bench_function("open_16_bytes", |b| {
        b.iter(|| {
            token::open_json_for_subject(&ring, "card", black_box(&sealed), Some("user-42"))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, tokens);
criterion_main!(benches);
