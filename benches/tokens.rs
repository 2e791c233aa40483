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

/// A list answer of 100 records, each SSN sealed per subject: one subject for the request
/// (a path parameter: the byte engine) beside each record's own `id` member (`member:id`:
/// the `Value` engine, which reads every record's subject first), and plain fs1 for scale.
fn list_subjects(c: &mut Criterion) {
    use fieldseal::config::raw::OnNonJson;
    use fieldseal::config::settings::ResponseRules;
    use fieldseal::transform::rules::rewrite_response_body_as;
    use fieldseal::transform::selector::Selector;
    use fieldseal::transform::subject::DataSubject;
    use fieldseal::transform::view::Sight;
    let ring = keyring();
    let records: Vec<_> = (0..100)
        .map(|i| json!({"id": i, "name": "Ada Lovelace", "ssn": format!("000-00-{i:04}")}))
        .collect();
    let body = serde_json::to_vec(&records).unwrap();
    let rules = |per_subject: bool| {
        let mut ssn = Selector::compile("$[*].ssn", None).unwrap();
        ssn.tokens.per_subject = per_subject;
        ResponseRules::new(vec![ssn], vec![], vec![], OnNonJson::Fail)
    };
    let mut group = c.benchmark_group("list_100_records");
    for (name, rules, subject) in [
        ("fs1", rules(false), DataSubject::Unknown),
        (
            "fsb1_request_subject",
            rules(true),
            DataSubject::Known("42".into()),
        ),
        (
            "fsb1_member_subject",
            rules(true),
            DataSubject::Member("id".into()),
        ),
    ] {
        let sight = Sight::default().with_subject(subject);
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut ops = Vec::new();
                rewrite_response_body_as(black_box(&body), &rules, Some(&ring), &sight, &mut ops)
                    .unwrap()
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, tokens, list_subjects);
criterion_main!(benches);
