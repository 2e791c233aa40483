//! What issue 15's §2 and §3 add to a request, beside what it replaces:
//! - verifying the caller's JWT (EdDSA, RS256) — paid once per request on routes with views,
//!   the signature only on a token's first use;
//! - sealing the 1 KiB record with a view chosen (the owner sees one field plain) beside the
//!   same rules without views;
//! - opening a token in a query string, a header and a urlencoded form beside the same token
//!   in a JSON body.

use std::hint::black_box;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use fieldseal::config::raw::OnNonJson;
use fieldseal::config::settings::{RequestRules, ResponseRules};
use fieldseal::crypto::token;
use fieldseal::identity::{self, Identity, RawIdentity};
use fieldseal::proxy::carriers;
use fieldseal::transform::carrier::NamedField;
use fieldseal::transform::rules::{
    rewrite_request_body, rewrite_response_body, rewrite_response_body_as, Openers,
};
use fieldseal::transform::selector::Selector;
use fieldseal::transform::view::{Condition, Seen, View};
use http::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

mod common;
use common::{keyring, small, SMALL_FIELDS};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn claims() -> Value {
    json!({"iss": "https://issuer.test", "aud": "api", "sub": "42", "role": "support",
           "scope": "profiles:read", "iat": 1_700_000_000u64, "exp": 4_000_000_000u64})
}

fn jws(alg: &str, kid: &str, jti: usize, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
    let mut claims = claims();
    claims["jti"] = json!(jti);
    let message = format!(
        "{}.{}",
        b64(&serde_json::to_vec(&header).unwrap()),
        b64(&serde_json::to_vec(&claims).unwrap())
    );
    let sig = sign(message.as_bytes());
    format!("{message}.{}", b64(&sig))
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

fn jwt(c: &mut Criterion) {
    let ed = Ed25519KeyPair::generate().unwrap();
    let rsa = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let public = rsa.public_key();
    let jwks = json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": b64(ed.public_key().as_ref()), "kid": "ed", "alg": "EdDSA", "use": "sig"},
        {"kty": "RSA", "n": b64(public.modulus().big_endian_without_leading_zero()),
         "e": b64(public.exponent().big_endian_without_leading_zero()), "kid": "rsa", "alg": "RS256", "use": "sig"},
    ]});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    let raw: RawIdentity = serde_json::from_value(json!({"jwt": {
        "jwks_file": "jwks.json", "issuer": "https://issuer.test", "audience": "api",
        "algorithms": ["EdDSA", "RS256"]}}))
    .unwrap();
    let verifier = identity::compile(&raw, dir.path()).unwrap();
    let sign_rsa = |m: &[u8]| {
        let mut sig = vec![0; rsa.public_modulus_len()];
        rsa.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), m, &mut sig)
            .unwrap();
        sig
    };
    // More distinct tokens than the cache holds, used in turn: every verification is a
    // first use (the signature is checked). One token used again: the cache's cost.
    let distinct = identity::MAX_VERIFIED_TOKENS * 2;
    let mut group = c.benchmark_group("identity");
    for (name, tokens) in [
        (
            "EdDSA",
            (0..distinct)
                .map(|i| bearer(&jws("EdDSA", "ed", i, |m| ed.sign(m).as_ref().to_vec())))
                .collect::<Vec<_>>(),
        ),
        (
            "RS256",
            (0..distinct)
                .map(|i| bearer(&jws("RS256", "rsa", i, sign_rsa)))
                .collect::<Vec<_>>(),
        ),
    ] {
        assert!(matches!(verifier.verify(&tokens[0]), Identity::Verified(_)));
        let mut next = 0;
        group.bench_function(format!("verify/{name}/first_use"), |b| {
            b.iter(|| {
                next = (next + 1) % tokens.len();
                black_box(verifier.verify(black_box(&tokens[next])))
            })
        });
        let again = &tokens[0];
        group.bench_function(format!("verify/{name}/again"), |b| {
            b.iter(|| black_box(verifier.verify(black_box(again))))
        });
    }
    let none = HeaderMap::new();
    group.bench_function("verify/no_token", |b| {
        b.iter(|| black_box(verifier.verify(black_box(&none))))
    });
    group.finish();
}

fn views(c: &mut Criterion) {
    let ring = keyring();
    let body = small();
    let plain = ResponseRules::new(
        SMALL_FIELDS
            .iter()
            .map(|p| Selector::compile(p, None).unwrap())
            .collect(),
        vec![],
        vec![],
        OnNonJson::Fail,
    );
    let mut ssn = Selector::compile("$.ssn", None).unwrap();
    ssn.views = vec![View {
        when: Condition {
            subject_param: Some("id".into()),
            ..Default::default()
        },
        show: None,
    }]
    .into();
    let viewed = ResponseRules::new(
        vec![
            ssn,
            Selector::compile("$.password", None).unwrap(),
            Selector::compile("$.cards[*].number", None).unwrap(),
        ],
        vec![],
        vec![],
        OnNonJson::Fail,
    );
    let claims = claims().as_object().unwrap().clone();
    let owner = Seen {
        subject: "42",
        claims: &claims,
    };
    let id = |n: &str| (n == "id").then(|| "42".to_string());
    let mut group = c.benchmark_group("views");
    group.bench_function("1KiB_3_fields/seal_no_views", |b| {
        b.iter(|| {
            let mut ops = Vec::new();
            black_box(
                rewrite_response_body(black_box(&body), &plain, Some(&ring), &mut ops).unwrap(),
            )
        })
    });
    group.bench_function("1KiB_3_fields/seal_owner_view", |b| {
        b.iter(|| {
            let sight = viewed.sight(Some(owner), &id);
            let mut ops = Vec::new();
            black_box(
                rewrite_response_body_as(black_box(&body), &viewed, Some(&ring), &sight, &mut ops)
                    .unwrap(),
            )
        })
    });
    group.finish();
}

fn carriers_bench(c: &mut Criterion) {
    let ring = keyring();
    let sealed = token::seal(ring.primary(), "ssn", &json!("123-45-6789")).unwrap();
    let json_rules = RequestRules::new(vec![Selector::compile("$.ssn", None).unwrap()], true, None);
    let named = |rule: &str| {
        NamedField::parse(rule, Some("ssn".into()))
            .unwrap()
            .unwrap()
    };
    let query_rules = RequestRules::new(vec![], true, None).with_named(vec![named("query:ssn")]);
    let header_rules =
        RequestRules::new(vec![], true, None).with_named(vec![named("header:x-ssn")]);
    let form_rules = RequestRules::new(vec![], true, None).with_named(vec![named("form:ssn")]);
    let openers = Openers::fs1(&ring);
    let json_body = serde_json::to_vec(&json!({"name": "Ada", "ssn": sealed})).unwrap();
    let pq: http::uri::PathAndQuery = format!("/api/search?name=Ada&ssn={sealed}")
        .parse()
        .unwrap();
    let form_body = bytes::Bytes::from(format!("name=Ada&ssn={sealed}"));
    let mut group = c.benchmark_group("carriers");
    group.bench_function("open/json_body", |b| {
        b.iter(|| {
            let mut ops = Vec::new();
            black_box(
                rewrite_request_body(black_box(&json_body), &json_rules, &openers, &mut ops)
                    .unwrap(),
            )
        })
    });
    group.bench_function("open/query", |b| {
        b.iter(|| {
            let mut ops = Vec::new();
            black_box(
                carriers::open_query(Some(black_box(&pq)), &query_rules, &openers, &mut ops)
                    .unwrap(),
            )
        })
    });
    group.bench_function("open/header", |b| {
        b.iter(|| {
            let mut headers = HeaderMap::new();
            headers.insert("x-ssn", HeaderValue::from_str(&sealed).unwrap());
            let mut ops = Vec::new();
            carriers::open_headers(&mut headers, &header_rules, &openers, &mut ops).unwrap();
            black_box(headers)
        })
    });
    group.bench_function("open/urlencoded_form", |b| {
        b.iter(|| {
            let mut headers = HeaderMap::new();
            let mut ops = Vec::new();
            black_box(
                carriers::rewrite_form(
                    &mut headers,
                    form_body.clone(),
                    carriers::FormKind::Urlencoded,
                    &form_rules,
                    &openers,
                    &mut ops,
                )
                .unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, jwt, views, carriers_bench);
criterion_main!(benches);
