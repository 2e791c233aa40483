//! fs1 seal/open of one 16-byte field (issue target: ≤ 0.5 µs per seal). The seal includes
//! drawing its 12-byte nonce from the OS CSPRNG, as the contract requires for every seal.

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
}

criterion_group!(benches, tokens);
criterion_main!(benches);
