//! Micro-benchmarks of the per-request work fieldseal adds on top of hyper and rustls:
//! route matching, hop-by-hop stripping, forwarding headers, the security-header policy and
//! request ids. What each measures and how to run it: benches/README.md.

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fieldseal::config::settings::RouteRules;
use fieldseal::config::Route;
use fieldseal::proxy::{hop, request_id};
use fieldseal::routing::{MethodSet, PathTemplate, RouteTable};
use fieldseal::security_headers::HeaderPolicy;
use http::header::{HeaderMap, HeaderValue};
use http::Method;
use std::hint::black_box;
use std::sync::Arc;

fn table(routes: usize) -> RouteTable<Route> {
    let policy = HeaderPolicy::compile(&BTreeMap::new(), None).unwrap();
    RouteTable::new(
        (0..routes)
            .map(|i| Route {
                name: Arc::from(format!("r{i}").as_str()),
                methods: MethodSet::Only(vec![Method::GET, Method::PUT]),
                path: PathTemplate::parse(&format!("/api/v1/resource{i}/{{id}}/items/**")).unwrap(),
                headers: policy.clone(),
                rules: RouteRules::default(),
            })
            .collect(),
    )
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing");
    for n in [1usize, 20] {
        let t = table(n);
        let last = format!("/api/v1/resource{}/42/items/a/b", n - 1);
        group.bench_with_input(BenchmarkId::new("match_last_route", n), &last, |b, p| {
            b.iter(|| black_box(t.find(&Method::GET, black_box(p))).is_some())
        });
        group.bench_with_input(
            BenchmarkId::new("unmatched", n),
            "/static/app.js",
            |b, p| b.iter(|| black_box(t.find(&Method::GET, black_box(p))).is_none()),
        );
    }
    let empty = table(0);
    group.bench_function("no_routes", |b| {
        b.iter(|| black_box(empty.find(&Method::GET, black_box("/api/users/1"))).is_none())
    });
    group.finish();
}

fn browser_like_request() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/140"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("cookie", "session=abc"),
        ("authorization", "Bearer xyz"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

fn headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("headers");
    let clean = browser_like_request();
    group.bench_function("hop_strip_none_present", |b| {
        b.iter_batched_ref(
            || clean.clone(),
            |h| hop::strip(h, false),
            criterion::BatchSize::SmallInput,
        )
    });
    let mut dirty = browser_like_request();
    dirty.insert("connection", HeaderValue::from_static("keep-alive, x-hop"));
    dirty.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    dirty.insert("x-hop", HeaderValue::from_static("1"));
    group.bench_function("hop_strip_connection_listed", |b| {
        b.iter_batched_ref(
            || dirty.clone(),
            |h| hop::strip(h, false),
            criterion::BatchSize::SmallInput,
        )
    });
    let host = HeaderValue::from_static("api.example.com");
    let client = "203.0.113.9".parse().unwrap();
    group.bench_function("set_forwarded", |b| {
        b.iter_batched_ref(
            || clean.clone(),
            |h| hop::set_forwarded(h, client, Some(&host), false),
            criterion::BatchSize::SmallInput,
        )
    });
    let policy = HeaderPolicy::compile(&BTreeMap::new(), None).unwrap();
    let mut upstream = HeaderMap::new();
    upstream.insert("content-type", HeaderValue::from_static("application/json"));
    upstream.insert("server", HeaderValue::from_static("uvicorn"));
    upstream.insert(
        "date",
        HeaderValue::from_static("Mon, 23 Nov 2026 06:44:51 GMT"),
    );
    group.bench_function("security_policy_apply", |b| {
        b.iter_batched_ref(
            || upstream.clone(),
            |h| policy.apply(h),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn request_ids(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_id");
    let none = HeaderMap::new();
    group.bench_function("generate", |b| {
        b.iter(|| request_id::resolve(black_box(&none)))
    });
    let mut given = HeaderMap::new();
    given.insert(
        "x-request-id",
        HeaderValue::from_static("3f2a9c1e-client-supplied"),
    );
    group.bench_function("accept_client_id", |b| {
        b.iter(|| request_id::resolve(black_box(&given)))
    });
    group.finish();
}

criterion_group!(benches, routing, headers, request_ids);
criterion_main!(benches);
