//! Real keys (RSA-2048, P-256, Ed25519 from aws-lc), real signatures (made here with aws-lc
//! directly, so the verifier is not checked against its own library's signer — one test also
//! uses jsonwebtoken's `encode`), and a real HTTP(S) JWKS server on 127.0.0.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    RSA_PKCS1_SHA256, RSA_PKCS1_SHA384, RSA_PSS_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::jwks::{parse_key_set, FetchError, Remote};
use super::*;

const ISS: &str = "https://issuer.test";
const ISS2: &str = "https://other-issuer.test";
const AUD: &str = "profiles-api";
const AUD2: &str = "admin-api";
/// The fixed "now" of the clock-sensitive tests (2030-03-17).
const NOW: u64 = 1_900_000_000;

// ---------------------------------------------------------------------------------------------
// Keys and tokens.

fn rsa_a() -> &'static RsaKeyPair {
    static KEY: OnceLock<RsaKeyPair> = OnceLock::new();
    KEY.get_or_init(|| RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA keygen"))
}

fn rsa_b() -> &'static RsaKeyPair {
    static KEY: OnceLock<RsaKeyPair> = OnceLock::new();
    KEY.get_or_init(|| RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA keygen"))
}

fn ec() -> &'static EcdsaKeyPair {
    static KEY: OnceLock<EcdsaKeyPair> = OnceLock::new();
    KEY.get_or_init(|| EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC keygen"))
}

fn ed() -> &'static Ed25519KeyPair {
    static KEY: OnceLock<Ed25519KeyPair> = OnceLock::new();
    KEY.get_or_init(|| Ed25519KeyPair::generate().expect("Ed25519 keygen"))
}

#[derive(Clone, Copy)]
enum Signer<'k> {
    Rsa(&'k RsaKeyPair),
    Ec(&'k EcdsaKeyPair),
    Ed(&'k Ed25519KeyPair),
    /// HMAC with these bytes as the secret (the key-confusion attack).
    Hmac(&'k [u8]),
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The public JWK of a signer, with `kid` and optionally `alg`.
fn jwk(signer: Signer<'_>, kid: &str, alg: Option<&str>) -> Value {
    let mut key = match signer {
        Signer::Rsa(k) => {
            let public = k.public_key();
            json!({
                "kty": "RSA",
                "n": b64(public.modulus().big_endian_without_leading_zero()),
                "e": b64(public.exponent().big_endian_without_leading_zero()),
            })
        }
        Signer::Ec(k) => {
            let point = k.public_key().as_ref();
            json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])})
        }
        Signer::Ed(k) => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.public_key().as_ref())}),
        Signer::Hmac(secret) => json!({"kty": "oct", "k": b64(secret)}),
    };
    key["kid"] = json!(kid);
    key["use"] = json!("sig");
    if let Some(alg) = alg {
        key["alg"] = json!(alg);
    }
    key
}

fn signature(signer: Signer<'_>, alg: &str, message: &[u8]) -> Vec<u8> {
    let rng = SystemRandom::new();
    match signer {
        Signer::Rsa(k) => {
            let padding: &'static dyn aws_lc_rs::signature::RsaEncoding = match alg {
                "RS384" => &RSA_PKCS1_SHA384,
                "PS256" => &RSA_PSS_SHA256,
                _ => &RSA_PKCS1_SHA256,
            };
            let mut sig = vec![0; k.public_modulus_len()];
            k.sign(padding, &rng, message, &mut sig).expect("RSA sign");
            sig
        }
        Signer::Ec(k) => k.sign(&rng, message).expect("EC sign").as_ref().to_vec(),
        Signer::Ed(k) => k.sign(message).as_ref().to_vec(),
        Signer::Hmac(secret) => {
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
            aws_lc_rs::hmac::sign(&key, message).as_ref().to_vec()
        }
    }
}

/// A compact JWS over exactly these header and payload bytes, signed with the header's `alg`.
fn jws_raw(signer: Signer<'_>, header: &[u8], payload: &[u8]) -> String {
    let alg = serde_json::from_slice::<Value>(header)
        .ok()
        .and_then(|h| h["alg"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let message = format!("{}.{}", b64(header), b64(payload));
    let sig = signature(signer, &alg, message.as_bytes());
    format!("{message}.{}", b64(&sig))
}

fn jws(signer: Signer<'_>, header: Value, claims: Value) -> String {
    jws_raw(
        signer,
        &serde_json::to_vec(&header).unwrap(),
        &serde_json::to_vec(&claims).unwrap(),
    )
}

/// The usual token: RS256 with kid `rsa-a`.
fn rs256(claims: Value) -> String {
    jws(
        Signer::Rsa(rsa_a()),
        json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-a"}),
        claims,
    )
}

fn claims_at(now: u64) -> Value {
    json!({
        "iss": ISS,
        "aud": AUD,
        "sub": "user-42",
        "exp": now + 600,
        "iat": now - 10,
        "nbf": now - 10,
        "role": "admin",
        "scope": "profiles:read",
    })
}

fn claims() -> Value {
    claims_at(NOW)
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn real_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers
}

// ---------------------------------------------------------------------------------------------
// Verifiers.

/// The standard set: RSA `rsa-a` (no `alg`), EC `ec` (ES256), Ed25519 `ed` (EdDSA).
fn standard_jwks() -> Value {
    json!({"keys": [
        jwk(Signer::Rsa(rsa_a()), "rsa-a", None),
        jwk(Signer::Ec(ec()), "ec", Some("ES256")),
        jwk(Signer::Ed(ed()), "ed", Some("EdDSA")),
    ]})
}

fn raw_for_file(algorithms: &[&str]) -> RawIdentity {
    RawIdentity {
        jwt: RawJwt {
            jwks_file: Some("jwks.json".into()),
            issuer: Some(OneOrMany::Many(vec![ISS.into(), ISS2.into()])),
            audience: Some(OneOrMany::Many(vec![AUD.into(), AUD2.into()])),
            algorithms: Some(algorithms.iter().map(|a| a.to_string()).collect()),
            ..RawJwt::default()
        },
    }
}

fn compile_file(jwks: &Value, raw: &RawIdentity) -> Result<Verifier, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jwks.json"),
        serde_json::to_vec(jwks).unwrap(),
    )
    .unwrap();
    compile(raw, dir.path())
}

fn verifier_with(jwks: &Value, algorithms: &[&str]) -> Verifier {
    compile_file(jwks, &raw_for_file(algorithms)).expect("compiles")
}

fn verifier() -> Verifier {
    verifier_with(&standard_jwks(), &["RS256", "PS256", "ES256", "EdDSA"])
}

fn outcome(result: Result<Identity, Rejection>) -> Identity {
    result.unwrap_or_else(|r| Identity::Invalid(r.reason))
}

/// The identity of `headers` at [`NOW`].
fn identify(v: &Verifier, headers: &HeaderMap) -> Identity {
    outcome(v.check(headers, at(NOW)))
}

fn check(v: &Verifier, token: &str) -> Identity {
    identify(v, &bearer(token))
}

#[track_caller]
fn assert_invalid(identity: Identity, want: InvalidReason) {
    match identity {
        Identity::Invalid(got) => assert_eq!(got, want, "wrong reason"),
        other => panic!("expected Invalid({want}), got {other:?}"),
    }
}

#[track_caller]
fn assert_verified(identity: Identity) -> Caller {
    match identity {
        Identity::Verified(caller) => caller,
        other => panic!("expected Verified, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration.

#[derive(Deserialize)]
struct Doc {
    identity: RawIdentity,
}

fn parse_yaml(yaml: &str) -> Result<Doc, String> {
    use figment::providers::Format as _;
    figment::Figment::from(figment::providers::Yaml::string(yaml))
        .extract::<Doc>()
        .map_err(|e| e.to_string())
}

#[test]
fn config_as_written_parses_durations_lists_and_refuses_unknown_keys() {
    let doc = parse_yaml(
        r#"
identity:
  jwt:
    jwks_url: "http://127.0.0.1:8000/.well-known/jwks.json"
    issuer: "https://issuer.example"
    audience: [orders-api, billing-api]
    algorithms: [RS256, ES256, EdDSA]
    leeway: 45s
    header: X-Caller-Token
    refresh: 10m
"#,
    )
    .expect("parses");
    let jwt = &doc.identity.jwt;
    assert_eq!(jwt.leeway, Some(Duration::from_secs(45)));
    assert_eq!(jwt.refresh, Some(Duration::from_secs(600)));
    assert!(matches!(&jwt.issuer, Some(OneOrMany::One(i)) if i == "https://issuer.example"));
    assert!(matches!(&jwt.audience, Some(OneOrMany::Many(a)) if a.len() == 2));
    let v = compile(&doc.identity, Path::new(".")).expect("compiles");
    assert_eq!(v.header().as_str(), "x-caller-token");
    assert_eq!(v.key_count(), 0, "a jwks_url is not fetched by compile");

    let err = parse_yaml("identity:\n  jwt:\n    jwks_file: a.json\n    isuser: x\n")
        .err()
        .expect("a misspelt key is refused");
    assert!(err.to_string().contains("isuser"), "{err}");
}

#[test]
fn defaults_are_the_authorization_header_and_30s_leeway() {
    let v = verifier();
    assert_eq!(v.header().as_str(), "authorization");
    assert_eq!(v.inner.leeway, DEFAULT_LEEWAY);
    assert_eq!(v.key_count(), 3);
}

#[test]
fn compile_collects_every_problem_with_its_key() {
    let raw = RawIdentity {
        jwt: RawJwt {
            jwks_file: Some("jwks.json".into()),
            jwks_url: Some("http://127.0.0.1:1/jwks".into()),
            issuer: None,
            audience: Some(OneOrMany::Many(vec![])),
            algorithms: Some(vec![
                "none".into(),
                "HS256".into(),
                "XS999".into(),
                "RS256".into(),
            ]),
            leeway: Some(Duration::from_secs(600)),
            header: Some("bad header".into()),
            refresh: None,
        },
    };
    let problems = compile(&raw, Path::new("/nonexistent")).expect_err("refused");
    let expect = [
        "identity.jwt: set exactly one of `jwks_file` and `jwks_url`",
        "identity.jwt.issuer: required",
        "identity.jwt.audience: must list at least one value",
        "identity.jwt.algorithms: `none` is never accepted",
        "identity.jwt.algorithms: `HS256` is refused",
        "identity.jwt.algorithms: unknown algorithm",
        "identity.jwt.leeway: must be at most 5m",
        "identity.jwt.header: not a valid HTTP header name",
    ];
    for want in expect {
        assert!(
            problems.iter().any(|p| p.starts_with(want)),
            "missing {want:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    assert!(
        problems.iter().all(|p| !p.contains("XS999")),
        "values are not echoed"
    );
}

#[test]
fn compile_requires_a_source_and_algorithms_and_refuses_refresh_on_a_file() {
    let raw = RawIdentity {
        jwt: RawJwt {
            issuer: Some(OneOrMany::One(ISS.into())),
            audience: Some(OneOrMany::One(AUD.into())),
            ..RawJwt::default()
        },
    };
    let problems = compile(&raw, Path::new(".")).expect_err("refused");
    assert_eq!(
        problems,
        vec![
            "identity.jwt.algorithms: required (e.g. [RS256, ES256, EdDSA])".to_string(),
            "identity.jwt: one of `jwks_file` or `jwks_url` is required".to_string(),
        ]
    );

    let mut raw = raw_for_file(&["RS256"]);
    raw.jwt.refresh = Some(Duration::from_secs(60));
    let problems = compile_file(&standard_jwks(), &raw).expect_err("refused");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("identity.jwt.refresh: only applies to `jwks_url`"));

    let mut raw = raw_for_file(&[]);
    raw.jwt.algorithms = Some(vec![]);
    let problems = compile_file(&standard_jwks(), &raw).expect_err("refused");
    assert_eq!(
        problems,
        vec!["identity.jwt.algorithms: must list at least one algorithm".to_string()]
    );
}

#[test]
fn jwks_file_that_is_missing_too_large_or_not_a_jwks_is_a_problem() {
    let raw = raw_for_file(&["RS256"]);
    let problems = compile(&raw, Path::new("/nonexistent-dir")).expect_err("refused");
    assert!(
        problems[0].starts_with("identity.jwt.jwks_file: cannot open"),
        "{problems:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), b"{\"keys\": [ {\"kty\": ").unwrap();
    let problems = compile(&raw, dir.path()).expect_err("refused");
    assert!(
        problems[0].starts_with("identity.jwt.jwks_file: not a JWK Set"),
        "{problems:?}"
    );

    std::fs::write(dir.path().join("jwks.json"), vec![b' '; MAX_JWKS_BYTES + 1]).unwrap();
    let problems = compile(&raw, dir.path()).expect_err("refused");
    assert!(
        problems[0].contains("larger than 1048576 bytes"),
        "{problems:?}"
    );
}

#[test]
fn jwks_without_a_key_usable_for_the_allowed_algorithms_is_a_problem() {
    static SECRET: &[u8] = b"a shared secret that must never be used";
    let mut small_rsa = jwk(Signer::Rsa(rsa_a()), "small", None);
    // A 1024-bit modulus (odd, top bit set): below MIN_RSA_MODULUS_BITS.
    let mut n = vec![0xC5u8; 128];
    n[127] |= 1;
    small_rsa["n"] = json!(b64(&n));
    let mut encryption = jwk(Signer::Rsa(rsa_a()), "enc", None);
    encryption["use"] = json!("enc");
    let mut sign_only = jwk(Signer::Ed(ed()), "ops", None);
    sign_only["key_ops"] = json!(["sign"]);
    let mut pinned_elsewhere = jwk(Signer::Ec(ec()), "pinned", Some("ES384"));
    pinned_elsewhere["crv"] = json!("P-256");
    let mut broken_point = jwk(Signer::Ec(ec()), "broken", None);
    broken_point["x"] = json!(b64(&[7u8; 32]));
    let useless = json!({"keys": [
        jwk(Signer::Hmac(SECRET), "oct", Some("HS256")),
        small_rsa,
        encryption,
        sign_only,
        pinned_elsewhere,
        broken_point,
    ]});
    let all = ["RS256", "PS256", "ES256", "ES384", "EdDSA"];
    let problems = compile_file(&useless, &raw_for_file(&all)).expect_err("refused");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(
            "identity.jwt.jwks_file: no key usable with the allowed algorithms (6 key(s)"
        ),
        "{problems:?}"
    );

    // Each of those keys, made sound, is usable: the test above refuses them for the right reason.
    let fixed = json!({"keys": [
        jwk(Signer::Rsa(rsa_a()), "small", None),
        jwk(Signer::Rsa(rsa_a()), "enc", None),
        jwk(Signer::Ed(ed()), "ops", None),
        jwk(Signer::Ec(ec()), "pinned", Some("ES256")),
        jwk(Signer::Ec(ec()), "broken", None),
    ]});
    assert_eq!(verifier_with(&fixed, &all).key_count(), 5);

    // A sound set whose keys serve only algorithms that are not allowed.
    let problems = compile_file(&standard_jwks(), &raw_for_file(&["ES384"])).expect_err("refused");
    assert!(problems[0].contains("no key usable"), "{problems:?}");
}

#[test]
fn jwks_url_must_be_https_or_plain_http_to_loopback() {
    let raw_url = |url: &str, refresh: Option<Duration>| RawIdentity {
        jwt: RawJwt {
            jwks_url: Some(url.into()),
            issuer: Some(OneOrMany::One(ISS.into())),
            audience: Some(OneOrMany::One(AUD.into())),
            algorithms: Some(vec!["RS256".into()]),
            refresh,
            ..RawJwt::default()
        },
    };
    for ok in [
        "http://127.0.0.1:8000/.well-known/jwks.json",
        "http://127.9.9.9/jwks",
        "http://[::1]:9000/jwks",
        "http://localhost/jwks",
    ] {
        compile(&raw_url(ok, None), Path::new(".")).unwrap_or_else(|p| panic!("{ok}: {p:?}"));
    }
    for (bad, why) in [
        (
            "http://issuer.example/jwks",
            "plain `http://` is only accepted for a loopback host",
        ),
        (
            "http://10.0.0.1/jwks",
            "plain `http://` is only accepted for a loopback host",
        ),
        ("ftp://127.0.0.1/jwks", "must be an absolute http(s) URL"),
        ("/relative/jwks.json", "must be an absolute http(s) URL"),
        (
            "http://user:pw@127.0.0.1/jwks",
            "must not carry credentials",
        ),
        ("http://bad host/", "is not a valid URL"),
    ] {
        let problems = compile(&raw_url(bad, None), Path::new(".")).expect_err(bad);
        assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
        assert!(
            problems[0].starts_with(&format!("identity.jwt.jwks_url: {why}")),
            "{bad}: {problems:?}"
        );
    }
    for refresh in [Duration::from_secs(29), Duration::from_secs(25 * 3600)] {
        let problems = compile(
            &raw_url("http://127.0.0.1/j", Some(refresh)),
            Path::new("."),
        )
        .expect_err("refresh out of bounds");
        assert!(
            problems[0].starts_with("identity.jwt.refresh: must be between 30s and 1day"),
            "{problems:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Verification: what verifies.

#[test]
fn tokens_signed_with_rs256_ps256_es256_and_eddsa_verify() {
    let v = verifier();
    let cases = [
        (Signer::Rsa(rsa_a()), "RS256", "rsa-a"),
        (Signer::Rsa(rsa_a()), "PS256", "rsa-a"),
        (Signer::Ec(ec()), "ES256", "ec"),
        (Signer::Ed(ed()), "EdDSA", "ed"),
    ];
    for (signer, alg, kid) in cases {
        let token = jws(signer, json!({"alg": alg, "kid": kid}), claims());
        let caller = assert_verified(check(&v, &token));
        assert_eq!(caller.subject, "user-42", "{alg}");
        assert_eq!(caller.claims["role"], "admin");
        assert_eq!(caller.claims["scope"], "profiles:read");
    }
}

#[test]
fn a_token_made_by_jsonwebtoken_encode_verifies() {
    let v = verifier();
    let pkcs8 = ed().to_pkcs8().unwrap();
    let key = jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref());
    let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
    header.kid = Some("ed".into());
    let token = jsonwebtoken::encode(&header, &claims(), &key).unwrap();
    assert_eq!(assert_verified(check(&v, &token)).subject, "user-42");
}

#[test]
fn each_configured_issuer_and_audience_is_accepted() {
    let v = verifier();
    let token = rs256(with(with(claims(), "iss", json!(ISS2)), "aud", json!(AUD2)));
    assert_verified(check(&v, &token));
    let token = rs256(with(claims(), "aud", json!(["someone-else", AUD])));
    assert_verified(check(&v, &token));
}

// ---------------------------------------------------------------------------------------------
// The header.

#[test]
fn no_token_header_is_anonymous() {
    let v = verifier();
    assert!(matches!(
        identify(&v, &HeaderMap::new()),
        Identity::Anonymous
    ));
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-token",
        HeaderValue::from_str(&format!("Bearer {}", rs256(claims()))).unwrap(),
    );
    assert!(matches!(identify(&v, &headers), Identity::Anonymous));
}

#[test]
fn the_configured_header_is_the_only_one_read() {
    let mut raw = raw_for_file(&["RS256"]);
    raw.jwt.header = Some("X-Caller-Token".into());
    let v = compile_file(&standard_jwks(), &raw).unwrap();
    let token = rs256(claims());
    assert!(
        matches!(identify(&v, &bearer(&token)), Identity::Anonymous),
        "Authorization is not read when another header is configured"
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-caller-token",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    assert_verified(identify(&v, &headers));
}

#[test]
fn bearer_scheme_is_case_insensitive_and_any_other_form_is_not_bearer() {
    let v = verifier();
    let token = rs256(claims());
    for form in [
        format!("bearer {token}"),
        format!("BEARER   {token}"),
        format!("Bearer {token} "),
    ] {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_str(&form).unwrap());
        assert_verified(identify(&v, &headers));
    }
    for form in [
        format!("Basic {token}"),
        format!("Bearer{token}"),
        format!("Bearer\t{token}"),
        "Bearer".to_string(),
        "Bearer    ".to_string(),
        String::new(),
        format!("Token {token}"),
    ] {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_str(&form).unwrap());
        assert_invalid(identify(&v, &headers), InvalidReason::NotBearer);
    }
}

#[test]
fn two_token_headers_are_refused_even_when_both_verify() {
    let v = verifier();
    let value = HeaderValue::from_str(&format!("Bearer {}", rs256(claims()))).unwrap();
    let mut headers = HeaderMap::new();
    headers.append("authorization", value.clone());
    headers.append("authorization", value);
    assert_invalid(identify(&v, &headers), InvalidReason::MultipleHeaders);
}

#[test]
fn token_size_is_bounded_before_parsing() {
    let v = verifier();
    let token_with = |pad: usize| {
        jws(
            Signer::Ed(ed()),
            json!({"alg": "EdDSA", "kid": "ed"}),
            with(claims(), "pad", json!("x".repeat(pad))),
        )
    };
    let base = token_with(0).len();
    // Base64 grows by 4 characters per 3 bytes: the largest padding still within the bound
    // and the smallest beyond it.
    let mut pad = (MAX_TOKEN_BYTES - base) * 3 / 4 + 8;
    while token_with(pad).len() > MAX_TOKEN_BYTES {
        pad -= 1;
    }
    let fits = token_with(pad);
    assert!(fits.len() > MAX_TOKEN_BYTES - 4, "{}", fits.len());
    assert_verified(check(&v, &fits));
    let over = token_with(pad + 1);
    assert!(over.len() > MAX_TOKEN_BYTES);
    assert_invalid(check(&v, &over), InvalidReason::TooLarge);
}

// ---------------------------------------------------------------------------------------------
// Each reason, from a token that really has that defect.

#[test]
fn malformed_tokens() {
    let v = verifier();
    let good = rs256(claims());
    let parts: Vec<&str> = good.split('.').collect();
    let rsa = Signer::Rsa(rsa_a());
    let header = br#"{"alg":"RS256","kid":"rsa-a"}"#;
    let payload = serde_json::to_vec(&claims()).unwrap();
    let cases = [
        ("two parts", format!("{}.{}", parts[0], parts[1])),
        ("four parts", format!("{good}.{}", parts[2])),
        ("characters outside base64url", format!("{good}=")),
        (
            "header not JSON",
            format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2]),
        ),
        (
            "header without alg",
            format!("{}.{}.{}", b64(br#"{"kid":"rsa-a"}"#), parts[1], parts[2]),
        ),
        (
            "header base64 broken",
            format!("A{}.{}.{}", parts[0], parts[1], parts[2]),
        ),
        (
            "payload not JSON, validly signed",
            jws_raw(rsa, header, b"this is not json"),
        ),
        (
            "unknown critical header, validly signed",
            jws_raw(
                rsa,
                br#"{"alg":"RS256","kid":"rsa-a","crit":["exp-v2"],"exp-v2":1}"#,
                &payload,
            ),
        ),
        (
            "nbf not a number",
            rs256(with(claims(), "nbf", json!("soon"))),
        ),
        (
            "iat not a number",
            rs256(with(claims(), "iat", json!(null))),
        ),
    ];
    for (what, token) in cases {
        match check(&v, &token) {
            Identity::Invalid(InvalidReason::Malformed) => {}
            other => panic!("{what}: expected malformed, got {other:?}"),
        }
    } // The same extra header parameter without `crit` is fine: `crit` is what was refused.
    assert_verified(check(
        &v,
        &jws_raw(
            rsa,
            br#"{"alg":"RS256","kid":"rsa-a","exp-v2":1}"#,
            &payload,
        ),
    ));
}

#[test]
fn alg_none_is_refused_in_any_spelling() {
    let v = verifier();
    let payload = b64(&serde_json::to_vec(&claims()).unwrap());
    for alg in ["none", "None", "NONE"] {
        let header = b64(format!(r#"{{"alg":"{alg}","kid":"rsa-a"}}"#).as_bytes());
        assert_invalid(
            check(&v, &format!("{header}.{payload}.")),
            InvalidReason::AlgorithmNotAllowed,
        );
        // With a signature borrowed from a valid token, too.
        let sig = rs256(claims()).rsplit('.').next().unwrap().to_string();
        assert_invalid(
            check(&v, &format!("{header}.{payload}.{sig}")),
            InvalidReason::AlgorithmNotAllowed,
        );
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic key confusion: the attacker signs HS256 with the RSA public key as the
    // HMAC secret and hopes the verifier feeds the same key bytes to HMAC.
    let v = verifier();
    let public = rsa_a().public_key();
    let spki = public.as_der().unwrap().as_ref().to_vec();
    let pkcs1 = public.as_ref().to_vec();
    let jwk_json = serde_json::to_vec(&jwk(Signer::Rsa(rsa_a()), "rsa-a", None)).unwrap();
    for secret in [&spki[..], &pkcs1[..], &jwk_json[..]] {
        let token = jws(
            Signer::Hmac(secret),
            json!({"alg": "HS256", "kid": "rsa-a"}),
            claims(),
        );
        assert_invalid(check(&v, &token), InvalidReason::AlgorithmNotAllowed);
        let no_kid = jws(Signer::Hmac(secret), json!({"alg": "HS256"}), claims());
        assert_invalid(check(&v, &no_kid), InvalidReason::AlgorithmNotAllowed);
    }

    // A JWKS that does publish an `oct` key: still never used, HS256 still refused.
    static SECRET: &[u8] = b"published shared secret";
    let jwks = json!({"keys": [jwk(Signer::Hmac(SECRET), "oct", Some("HS256")), jwk(Signer::Rsa(rsa_a()), "rsa-a", None)]});
    let v = verifier_with(&jwks, &["RS256"]);
    assert_eq!(v.key_count(), 1, "the oct key is not usable");
    let token = jws(
        Signer::Hmac(SECRET),
        json!({"alg": "HS256", "kid": "oct"}),
        claims(),
    );
    assert_invalid(check(&v, &token), InvalidReason::AlgorithmNotAllowed);
}

#[test]
fn alg_must_be_allowed_and_fit_the_key() {
    let v = verifier_with(&standard_jwks(), &["RS256", "ES256"]);
    // PS256 is a fine RSA algorithm, but not in this list.
    let token = jws(
        Signer::Rsa(rsa_a()),
        json!({"alg": "PS256", "kid": "rsa-a"}),
        claims(),
    );
    assert_invalid(check(&v, &token), InvalidReason::AlgorithmNotAllowed);
    // ES256 is allowed, validly signed by the EC key, but the kid names the RSA key.
    let token = jws(
        Signer::Ec(ec()),
        json!({"alg": "ES256", "kid": "rsa-a"}),
        claims(),
    );
    assert_invalid(check(&v, &token), InvalidReason::AlgorithmNotAllowed);
    // EdDSA is not allowed here, so the Ed25519 key is not even kept.
    let token = jws(
        Signer::Ed(ed()),
        json!({"alg": "EdDSA", "kid": "ed"}),
        claims(),
    );
    assert_invalid(check(&v, &token), InvalidReason::AlgorithmNotAllowed);
    assert_eq!(v.key_count(), 2);

    // The JWK pins RS256: an RS384 token signed by the same key is refused even though
    // RS384 is allowed.
    let pinned = json!({"keys": [jwk(Signer::Rsa(rsa_a()), "rsa-a", Some("RS256"))]});
    let v = verifier_with(&pinned, &["RS256", "RS384"]);
    let token = jws(
        Signer::Rsa(rsa_a()),
        json!({"alg": "RS384", "kid": "rsa-a"}),
        claims(),
    );
    assert_invalid(check(&v, &token), InvalidReason::AlgorithmNotAllowed);
    // The same token against the unpinned key verifies: the refusal above is the pin's.
    let v = verifier_with(
        &json!({"keys": [jwk(Signer::Rsa(rsa_a()), "rsa-a", None)]}),
        &["RS256", "RS384"],
    );
    assert_verified(check(&v, &token));
}

#[test]
fn the_key_is_chosen_by_kid() {
    let v = verifier();
    let signed_by_a = |kid: Option<&str>| {
        let mut header = json!({"alg": "RS256"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        jws(Signer::Rsa(rsa_a()), header, claims())
    };
    assert_invalid(
        check(&v, &signed_by_a(Some("rsa-z"))),
        InvalidReason::UnknownKey,
    );
    assert_invalid(check(&v, &signed_by_a(None)), InvalidReason::UnknownKey);

    // Without kid, the only key of a one-key set is used.
    let one = verifier_with(
        &json!({"keys": [jwk(Signer::Rsa(rsa_a()), "rsa-a", None)]}),
        &["RS256"],
    );
    assert_verified(check(&one, &signed_by_a(None)));
    // ...but only for an algorithm it serves.
    let token = jws(Signer::Ec(ec()), json!({"alg": "ES256"}), claims());
    let one = verifier_with(
        &json!({"keys": [jwk(Signer::Rsa(rsa_a()), "rsa-a", None)]}),
        &["RS256", "ES256"],
    );
    assert_invalid(check(&one, &token), InvalidReason::AlgorithmNotAllowed);
}

#[test]
fn bad_signatures() {
    let v = verifier();
    // Signed by another RSA key under rsa-a's kid.
    let forged = jws(
        Signer::Rsa(rsa_b()),
        json!({"alg": "RS256", "kid": "rsa-a"}),
        claims(),
    );
    assert_invalid(check(&v, &forged), InvalidReason::BadSignature);

    // A valid token whose payload is swapped for another subject.
    let good = rs256(claims());
    let parts: Vec<&str> = good.split('.').collect();
    let other = b64(&serde_json::to_vec(&with(claims(), "sub", json!("admin"))).unwrap());
    assert_invalid(
        check(&v, &format!("{}.{other}.{}", parts[0], parts[2])),
        InvalidReason::BadSignature,
    );

    // One flipped signature bit, for each key type.
    for (signer, alg, kid) in [
        (Signer::Rsa(rsa_a()), "RS256", "rsa-a"),
        (Signer::Ec(ec()), "ES256", "ec"),
        (Signer::Ed(ed()), "EdDSA", "ed"),
    ] {
        let token = jws(signer, json!({"alg": alg, "kid": kid}), claims());
        let (message, sig) = token.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        sig[5] ^= 0x01;
        assert_invalid(
            check(&v, &format!("{message}.{}", b64(&sig))),
            InvalidReason::BadSignature,
        );
    }

    // No signature at all.
    assert_invalid(
        check(&v, &format!("{}.{}.", parts[0], parts[1])),
        InvalidReason::BadSignature,
    );
}

#[test]
fn expiry_with_leeway_edges() {
    let v = verifier(); // leeway 30 s
    let exp_at = |exp: f64| rs256(with(claims(), "exp", json!(exp)));
    let now = NOW as f64;
    assert_verified(check(&v, &exp_at(now - 29.0)));
    assert_verified(check(&v, &exp_at(now - 29.5)));
    assert_invalid(check(&v, &exp_at(now - 30.0)), InvalidReason::Expired);
    assert_invalid(check(&v, &exp_at(now - 3600.0)), InvalidReason::Expired);
    assert_invalid(
        check(&v, &rs256(without(claims(), "exp"))),
        InvalidReason::MissingExpiry,
    );

    // With no leeway, `exp` itself is the first invalid second (RFC 7519 §4.1.4).
    let mut raw = raw_for_file(&["RS256"]);
    raw.jwt.leeway = Some(Duration::ZERO);
    let strict = compile_file(&standard_jwks(), &raw).unwrap();
    assert_verified(check(&strict, &exp_at(now + 1.0)));
    assert_invalid(check(&strict, &exp_at(now)), InvalidReason::Expired);
}

#[test]
fn not_before_and_issued_at_with_leeway_edges() {
    let v = verifier(); // leeway 30 s
    let now = NOW as f64;
    let nbf_at = |t: f64| rs256(with(claims(), "nbf", json!(t)));
    assert_verified(check(&v, &nbf_at(now + 30.0)));
    assert_invalid(check(&v, &nbf_at(now + 31.0)), InvalidReason::NotYetValid);
    assert_verified(check(&v, &rs256(without(claims(), "nbf"))));

    let iat_at = |t: f64| rs256(with(claims(), "iat", json!(t)));
    assert_verified(check(&v, &iat_at(now + 30.0)));
    assert_invalid(
        check(&v, &iat_at(now + 30.5)),
        InvalidReason::IssuedInFuture,
    );
    assert_verified(check(&v, &rs256(without(claims(), "iat"))));
}

#[test]
fn issuer_must_be_one_configured_string() {
    let v = verifier();
    for iss in [
        json!("https://evil.test"),
        json!(42),
        json!([ISS]),
        json!([ISS, "https://evil.test"]),
        json!(""),
    ] {
        assert_invalid(
            check(&v, &rs256(with(claims(), "iss", iss.clone()))),
            InvalidReason::WrongIssuer,
        );
    }
    assert_invalid(
        check(&v, &rs256(without(claims(), "iss"))),
        InvalidReason::WrongIssuer,
    );
}

#[test]
fn audience_must_name_a_configured_one() {
    let v = verifier();
    for aud in [
        json!("orders-api"),
        json!(["orders-api", "billing"]),
        json!([]),
        json!(7),
        json!([7]),
    ] {
        assert_invalid(
            check(&v, &rs256(with(claims(), "aud", aud.clone()))),
            InvalidReason::WrongAudience,
        );
    }
    assert_invalid(
        check(&v, &rs256(without(claims(), "aud"))),
        InvalidReason::WrongAudience,
    );
}

#[test]
fn subject_must_be_a_non_empty_string() {
    let v = verifier();
    for sub in [json!(""), json!(42), json!(null)] {
        assert_invalid(
            check(&v, &rs256(with(claims(), "sub", sub.clone()))),
            InvalidReason::MissingSubject,
        );
    }
    assert_invalid(
        check(&v, &rs256(without(claims(), "sub"))),
        InvalidReason::MissingSubject,
    );
    // A list where a string belongs stops jsonwebtoken's claims parser outright: refused all
    // the same, as malformed.
    assert_invalid(
        check(&v, &rs256(with(claims(), "sub", json!(["user-42"])))),
        InvalidReason::Malformed,
    );
}

#[test]
fn verify_uses_the_real_clock() {
    let v = verifier();
    let now = real_now();
    assert_verified(v.verify(&bearer(&rs256(claims_at(now)))));
    // A token valid at the fixed test time (2030) is not yet valid today.
    assert_invalid(
        v.verify(&bearer(&rs256(claims()))),
        InvalidReason::NotYetValid,
    );
}

// ---------------------------------------------------------------------------------------------
// Names, pseudonyms, logs.

#[test]
fn reason_names_are_stable_distinct_snake_case() {
    let names: Vec<&str> = InvalidReason::ALL.iter().map(|r| r.as_str()).collect();
    for required in [
        "malformed",
        "bad_signature",
        "unknown_key",
        "algorithm_not_allowed",
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "missing_subject",
    ] {
        assert!(names.contains(&required), "{required}");
    }
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len());
    assert!(names
        .iter()
        .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    assert_eq!(InvalidReason::TooLarge.to_string(), "too_large");
}

#[test]
fn subject_hash_is_a_stable_pseudonym_of_issuer_and_subject() {
    let v = verifier();
    let caller = assert_verified(check(&v, &rs256(claims())));
    let hash = v.subject_hash(&caller);
    // SHA-256("fieldseal/identity/subject-hash/v1\0" || u64be(len) || iss || u64be(len) || sub),
    // first 16 bytes, computed independently (Python hashlib).
    assert_eq!(hash, "5e6d13a382ca7dd5acaad27ef2fef8e3");
    let other_sub = assert_verified(check(&v, &rs256(with(claims(), "sub", json!("user-43")))));
    assert_ne!(v.subject_hash(&other_sub), hash);
    let other_iss = assert_verified(check(&v, &rs256(with(claims(), "iss", json!(ISS2)))));
    assert_ne!(v.subject_hash(&other_iss), hash);
    // Extra claims do not change who the caller is.
    let more = assert_verified(check(&v, &rs256(with(claims(), "role", json!("viewer")))));
    assert_eq!(v.subject_hash(&more), hash);
}

#[test]
fn debug_output_shows_no_claim_values() {
    let v = verifier();
    let caller = assert_verified(check(&v, &rs256(claims())));
    let shown = format!("{:?} {:?}", Identity::Verified(caller), v);
    for secret in ["user-42", "admin", "profiles:read", ISS] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("role"), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// JWKS over HTTP(S).

/// A JWKS endpoint on 127.0.0.1 whose answer the test changes, counting the requests.
struct JwksServer {
    addr: SocketAddr,
    answer: Arc<Mutex<(StatusCode, Vec<u8>)>>,
    hits: Arc<AtomicUsize>,
    hang: Arc<AtomicBool>,
}

impl JwksServer {
    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = JwksServer {
            addr: listener.local_addr().unwrap(),
            answer: Arc::new(Mutex::new((StatusCode::OK, b"{}".to_vec()))),
            hits: Arc::new(AtomicUsize::new(0)),
            hang: Arc::new(AtomicBool::new(false)),
        };
        let (answer, hits, hang) = (
            server.answer.clone(),
            server.hits.clone(),
            server.hang.clone(),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (answer, hits, hang, tls) =
                    (answer.clone(), hits.clone(), hang.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        let (answer, hits, hang) = (answer.clone(), hits.clone(), hang.clone());
                        async move {
                            hits.fetch_add(1, Ordering::SeqCst);
                            if hang.load(Ordering::SeqCst) {
                                std::future::pending::<()>().await;
                            }
                            let (status, body) = answer.lock().unwrap().clone();
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        server
    }

    fn serve(&self, status: StatusCode, body: Vec<u8>) {
        *self.answer.lock().unwrap() = (status, body);
    }

    fn serve_keys(&self, keys: &[Value]) {
        self.serve(
            StatusCode::OK,
            serde_json::to_vec(&json!({ "keys": keys })).unwrap(),
        );
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/.well-known/jwks.json", self.addr)
    }
}

fn raw_for_url(url: &str) -> RawIdentity {
    RawIdentity {
        jwt: RawJwt {
            jwks_url: Some(url.into()),
            issuer: Some(OneOrMany::One(ISS.into())),
            audience: Some(OneOrMany::One(AUD.into())),
            algorithms: Some(vec!["RS256".into(), "EdDSA".into()]),
            ..RawJwt::default()
        },
    }
}

/// A currently valid RS256 token signed by `signer` under `kid`.
fn live_token(signer: &'static RsaKeyPair, kid: &str) -> HeaderMap {
    bearer(&jws(
        Signer::Rsa(signer),
        json!({"alg": "RS256", "kid": kid}),
        claims_at(real_now()),
    ))
}

fn remote(v: &Verifier) -> &Remote {
    v.inner.remote.as_ref().expect("a jwks_url verifier")
}

#[tokio::test]
async fn jwks_url_is_fetched_at_load_and_refetched_for_an_unknown_kid_at_most_every_30s() {
    let server = JwksServer::start(None).await;
    let key_a = jwk(Signer::Rsa(rsa_a()), "a", Some("RS256"));
    let key_b = jwk(Signer::Rsa(rsa_b()), "b", Some("RS256"));
    let key_c = jwk(Signer::Ed(ed()), "c", Some("EdDSA"));
    server.serve_keys(std::slice::from_ref(&key_a));

    let v = load(&raw_for_url(&server.url("http")), Path::new("."))
        .await
        .expect("loads");
    assert_eq!(server.hits(), 1, "fetched once at load");
    assert_eq!(v.key_count(), 1);
    assert_verified(v.verify_async(&live_token(rsa_a(), "a")).await);
    assert_eq!(server.hits(), 1, "a known kid fetches nothing");

    // The issuer rotates b in: the first token signed with it triggers one refetch and verifies.
    server.serve_keys(&[key_a.clone(), key_b.clone()]);
    assert_verified(v.verify_async(&live_token(rsa_b(), "b")).await);
    assert_eq!(server.hits(), 2);

    // Another new kid within 30 s: no refetch, refused.
    server.serve_keys(&[key_a, key_b, key_c]);
    let ed_token = bearer(&jws(
        Signer::Ed(ed()),
        json!({"alg": "EdDSA", "kid": "c"}),
        claims_at(real_now()),
    ));
    assert_invalid(v.verify_async(&ed_token).await, InvalidReason::UnknownKey);
    assert_invalid(v.verify_async(&ed_token).await, InvalidReason::UnknownKey);
    assert_eq!(server.hits(), 2, "rate-limited");

    // Once the interval has passed, the next unknown kid refetches again.
    let past = Instant::now()
        .checked_sub(UNKNOWN_KID_REFETCH_INTERVAL + Duration::from_secs(1))
        .expect("uptime over 31 s");
    *remote(&v).last_on_demand.lock().unwrap() = Some(past);
    assert_verified(v.verify_async(&ed_token).await);
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn sync_verify_refetches_in_the_background() {
    let server = JwksServer::start(None).await;
    server.serve_keys(&[jwk(Signer::Rsa(rsa_a()), "a", None)]);
    let v = load(&raw_for_url(&server.url("http")), Path::new("."))
        .await
        .expect("loads");
    server.serve_keys(&[
        jwk(Signer::Rsa(rsa_a()), "a", None),
        jwk(Signer::Rsa(rsa_b()), "b", None),
    ]);

    let token = live_token(rsa_b(), "b");
    assert_invalid(v.verify(&token), InvalidReason::UnknownKey);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if matches!(v.verify(&token), Identity::Verified(_)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the background refetch never landed"
        );
    }
    assert_eq!(
        server.hits(),
        2,
        "one background refetch, however many tries"
    );
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_key_set() {
    let server = JwksServer::start(None).await;
    server.serve_keys(&[jwk(Signer::Rsa(rsa_a()), "a", None)]);
    let v = load(&raw_for_url(&server.url("http")), Path::new("."))
        .await
        .expect("loads");
    let token = live_token(rsa_a(), "a");

    static SECRET: &[u8] = b"shared";
    let failures: [(StatusCode, Vec<u8>, &str); 4] = [
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            b"oops".to_vec(),
            "answered HTTP 500",
        ),
        (StatusCode::OK, b"<html>".to_vec(), "not a JWK Set"),
        (
            StatusCode::OK,
            serde_json::to_vec(&json!({"keys": [jwk(Signer::Hmac(SECRET), "a", None)]})).unwrap(),
            "no key usable",
        ),
        (
            StatusCode::OK,
            vec![b' '; MAX_JWKS_BYTES + 1],
            "answer larger than 1048576 bytes",
        ),
    ];
    for (status, body, why) in failures {
        server.serve(status, body);
        let err = v.inner.refresh().await.expect_err(why);
        assert!(err.contains(why), "{err}");
        assert_eq!(v.key_count(), 1);
        assert_verified(v.verify(&token));
    }
}

#[tokio::test]
async fn load_fails_when_the_first_fetch_fails() {
    let server = JwksServer::start(None).await;
    server.serve(StatusCode::NOT_FOUND, Vec::new());
    let problems = load(&raw_for_url(&server.url("http")), Path::new("."))
        .await
        .expect_err("refused");
    assert_eq!(
        problems,
        vec!["identity.jwt.jwks_url: first fetch failed: answered HTTP 404".to_string()]
    );

    // Nothing listening: also refused, and the URL is not in the message.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{closed}/jwks");
    let problems = load(&raw_for_url(&url), Path::new("."))
        .await
        .expect_err("refused");
    assert!(
        problems[0].starts_with("identity.jwt.jwks_url: first fetch failed: request failed"),
        "{problems:?}"
    );
    assert!(
        !problems[0].contains(&closed.port().to_string()),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_hanging_jwks_endpoint_times_out() {
    let server = JwksServer::start(None).await;
    server.hang.store(true, Ordering::SeqCst);
    let uri = jwks::check_url(&server.url("http")).unwrap();
    let mut remote = Remote::new(uri, DEFAULT_REFRESH).unwrap();
    assert_eq!(remote.fetch_timeout, FETCH_TIMEOUT);
    remote.fetch_timeout = Duration::from_millis(200);
    let started = Instant::now();
    let err = remote
        .fetch(&[Algorithm::RS256])
        .await
        .err()
        .expect("times out");
    assert!(matches!(err, FetchError::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(server.hits(), 1, "the request did reach the server");
}

#[tokio::test]
async fn the_background_refresh_follows_the_issuer_and_stops_with_the_verifier() {
    let server = JwksServer::start(None).await;
    server.serve_keys(&[jwk(Signer::Rsa(rsa_a()), "a", None)]);
    let v = compile(&raw_for_url(&server.url("http")), Path::new(".")).unwrap();
    assert_eq!(v.key_count(), 0, "compile does not fetch");
    assert_invalid(
        outcome(v.check(&live_token(rsa_a(), "a"), SystemTime::now())),
        InvalidReason::UnknownKey,
    );
    v.inner.refresh().await.unwrap();
    // No on-demand refetch may interfere: only the periodic one can bring b in.
    assert!(remote(&v).claim_on_demand());
    spawn_refresher(Arc::downgrade(&v.inner), Duration::from_millis(50));

    server.serve_keys(&[jwk(Signer::Rsa(rsa_b()), "b", None)]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while v.key_count() == 0
        || !matches!(v.verify(&live_token(rsa_b(), "b")), Identity::Verified(_))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            Instant::now() < deadline,
            "the periodic refresh never landed"
        );
    }
    // The issuer withdrew a: it is no longer trusted.
    assert_invalid(
        v.verify(&live_token(rsa_a(), "a")),
        InvalidReason::UnknownKey,
    );

    drop(v);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let after_drop = server.hits();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        server.hits(),
        after_drop,
        "the refresher ended with the verifier"
    );
}

#[tokio::test]
async fn https_jwks_url_is_verified_against_the_trust_store() {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let server = JwksServer::start(Some(tokio_rustls::TlsAcceptor::from(Arc::new(
        server_config,
    ))))
    .await;
    server.serve_keys(&[jwk(Signer::Rsa(rsa_a()), "a", None)]);
    let uri = jwks::check_url(&server.url("https")).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let trusting = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let set = Remote::with_tls(uri.clone(), DEFAULT_REFRESH, trusting)
        .fetch(&[Algorithm::RS256])
        .await
        .expect("fetched over TLS");
    assert_eq!(set.keys.len(), 1);

    let untrusting = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let err = Remote::with_tls(uri, DEFAULT_REFRESH, untrusting)
        .fetch(&[Algorithm::RS256])
        .await
        .err()
        .expect("an untrusted certificate is refused");
    assert!(matches!(err, FetchError::Request(_)), "{err}");
}

#[test]
fn parse_key_set_keeps_only_the_allowed_algorithms_of_each_key() {
    let bytes = serde_json::to_vec(&standard_jwks()).unwrap();
    let set = parse_key_set(&bytes, &[Algorithm::PS256, Algorithm::EdDSA]).unwrap();
    let summary: Vec<(Option<&str>, &[Algorithm])> = set
        .keys
        .iter()
        .map(|k| (k.kid.as_deref(), k.algorithms.as_slice()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (Some("rsa-a"), &[Algorithm::PS256][..]),
            (Some("ed"), &[Algorithm::EdDSA][..]),
        ]
    );
}

#[test]
fn a_verifier_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Verifier>();
    fn sendable<T: Send + 'static>() {}
    sendable::<Identity>();
}

// ---------------------------------------------------------------------------------------------
// The cache of verified tokens.

#[test]
fn a_remembered_token_is_checked_against_the_clock_every_time() {
    let v = verifier();
    let token = rs256(claims());
    assert_verified(check(&v, &token));
    assert_eq!(v.inner.verified.lock().unwrap().len(), 1);
    // Still valid a minute later (from the cache), expired after `exp` + leeway.
    assert!(matches!(
        outcome(v.check(&bearer(&token), at(NOW + 60))),
        Identity::Verified(_)
    ));
    assert_invalid(
        outcome(v.check(&bearer(&token), at(NOW + 600 + 31))),
        InvalidReason::Expired,
    );
}

#[test]
fn a_new_key_set_forgets_what_the_old_one_verified() {
    let v = verifier();
    let token = rs256(claims());
    assert_verified(check(&v, &token));
    // The issuer withdraws `rsa-a` (a refresh or a reload brings a set without it).
    let without: Value = json!({"keys": standard_jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kid"] != "rsa-a")
        .cloned()
        .collect::<Vec<_>>()});
    let set = parse_key_set(
        without.to_string().as_bytes(),
        &[Algorithm::RS256, Algorithm::EdDSA],
    )
    .unwrap();
    v.inner.keys.store(Arc::new(set));
    assert_invalid(check(&v, &token), InvalidReason::UnknownKey);
}

#[test]
fn refused_tokens_are_not_remembered_and_the_cache_is_bounded() {
    let v = verifier();
    assert_invalid(
        check(&v, &rs256(with(claims(), "aud", json!("other")))),
        InvalidReason::WrongAudience,
    );
    assert!(v.inner.verified.lock().unwrap().is_empty());
    for i in 0..=MAX_VERIFIED_TOKENS {
        let token = jws(
            Signer::Ed(ed()),
            json!({"alg": "EdDSA", "kid": "ed"}),
            with(claims(), "jti", json!(i)),
        );
        assert_verified(check(&v, &token));
    }
    assert!(v.inner.verified.lock().unwrap().len() <= MAX_VERIFIED_TOKENS);
}
