//! The streaming field engine (issue 18) over an export, fed in 16 KiB pieces as an upstream
//! body arrives: the scan alone (every selected value handed back unchanged), the whole sealing
//! body the proxy runs, and a plain copy of the same bytes (the floor: what a pass-through
//! route does with them). `benches/load/streaming.py` measures the same shape end to end.
//!
//!     cargo bench --bench streaming

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fieldseal::body::ProxyBody;
use fieldseal::proxy::streaming::{Sealing, SealingBody, StreamReport, MAX_STREAMED_VALUE};
use fieldseal::transform::stream::Streamer;
use fieldseal::transform::view::Sight;
use http_body_util::BodyExt;

mod common;
use common::{keyring, rules};

/// The size of the pieces an upstream body arrives in (hyper's reads from a local socket).
const PIECE: usize = 16 * 1024;

/// An export like the load script's: a JSON array of ~250-byte records, one SSN each.
fn export(records: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(records * 260);
    out.push(b'[');
    for i in 0..records {
        if i > 0 {
            out.push(b',');
        }
        let record = serde_json::json!({
            "id": i, "name": format!("user {i}"), "email": format!("user{i}@example.com"),
            "ssn": format!("{:09}", i), "city": "London", "pad": "p".repeat(150),
        });
        out.extend_from_slice(&serde_json::to_vec(&record).unwrap());
    }
    out.push(b']');
    out
}

fn pieces(doc: &[u8]) -> Vec<Bytes> {
    doc.chunks(PIECE).map(Bytes::copy_from_slice).collect()
}

fn body_of(pieces: &[Bytes]) -> ProxyBody {
    let frames: Vec<Result<http_body::Frame<Bytes>, fieldseal::body::BoxError>> = pieces
        .iter()
        .map(|p| Ok(http_body::Frame::data(p.clone())))
        .collect();
    http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

fn bench(c: &mut Criterion) {
    let doc = export(16_000); // ~4 MiB
    let parts = pieces(&doc);
    let rules = rules(&["$[*].ssn"]);
    let plan = rules.plan().expect("a byte-level rule").clone();
    let ring = Arc::new(keyring());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    let mut group = c.benchmark_group("streaming");
    group.throughput(Throughput::Bytes(doc.len() as u64));
    group.sample_size(20);
    group.bench_function("4MiB_16000_fields/copy", |b| {
        b.iter(|| {
            let mut n = 0;
            for p in &parts {
                let mut out = Vec::with_capacity(p.len());
                out.extend_from_slice(black_box(p));
                n += Bytes::from(out).len();
            }
            n
        })
    });
    group.bench_function("4MiB_16000_fields/scan", |b| {
        b.iter(|| {
            let mut s = Streamer::new(plan.clone(), MAX_STREAMED_VALUE);
            let mut keep = |v: fieldseal::transform::stream::Selected<'_>, out: &mut Vec<u8>| {
                out.extend_from_slice(v.raw);
                Ok::<_, ()>(())
            };
            let mut n = 0;
            for p in &parts {
                let mut out = Vec::new();
                s.feed(black_box(p), &mut out, &mut keep).unwrap();
                n += out.len();
            }
            n
        })
    });
    group.bench_function("4MiB_16000_fields/seal", |b| {
        b.iter(|| {
            let sealing = Sealing {
                rules: rules.clone(),
                keyring: Some(ring.clone()),
                sight: Sight::default(),
            };
            let body = SealingBody::new(
                body_of(&parts),
                plan.clone(),
                sealing,
                Arc::new(StreamReport::default()),
            );
            rt.block_on(async {
                let mut body = std::pin::pin!(body);
                let mut n = 0;
                while let Some(frame) = body.frame().await {
                    n += frame.unwrap().into_data().unwrap().len();
                }
                n
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
