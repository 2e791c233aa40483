//! Opening client-encrypted values (contract §3), per operation: a JWE with RSA-OAEP-256 +
//! A256GCM under RSA-2048 and RSA-3072 keys, an HPKE JWE under X25519 (`HPKE-X25519-A256GCM`)
//! and under the post-quantum X-Wing (`HPKE-10`), and a whole-body envelope whose session key
//! is wrapped with each of RSA-2048, X25519 and X-Wing. The private-key operation dominates
//! every case: this is the open cost of each scheme side by side.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use fieldseal::crypto::client_keys::ClientKeys;
use fieldseal::crypto::hpke;
use fieldseal::crypto::{envelope, jwe, rsa_keys};
use rsa::rand_core::OsRng;
use std::hint::black_box;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const VALUE: &[u8] = b"123-45-6789";

/// The public half of a loaded key, from its JWK (as a client would get it from the JWKS).
fn public_key(key: &rsa_keys::RsaKey) -> rsa::RsaPublicKey {
    let jwk = key.jwk();
    let n = B64URL.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = B64URL.decode(jwk["e"].as_str().unwrap()).unwrap();
    rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(&n),
        rsa::BigUint::from_bytes_be(&e),
    )
    .unwrap()
}

fn wrap(public: &rsa::RsaPublicKey, key: &[u8]) -> Vec<u8> {
    public
        .encrypt(&mut OsRng, rsa::Oaep::new::<rsa::sha2::Sha256>(), key)
        .unwrap()
}

/// A JWE compact value as a client makes it.
fn rsa_jwe(key: &rsa_keys::RsaKey) -> String {
    let header = B64URL.encode(format!(
        r#"{{"alg":"RSA-OAEP-256","enc":"A256GCM","kid":"{}"}}"#,
        key.kid
    ));
    let cek = [9u8; 32];
    let iv = [3u8; 12];
    let mut ct = VALUE.to_vec();
    let tag = Aes256Gcm::new_from_slice(&cek)
        .unwrap()
        .encrypt_in_place_detached(Nonce::from_slice(&iv), header.as_bytes(), &mut ct)
        .unwrap();
    [
        header,
        B64URL.encode(wrap(&public_key(key), &cek)),
        B64URL.encode(iv),
        B64URL.encode(ct),
        B64URL.encode(tag),
    ]
    .join(".")
}

fn hpke_jwe(key: &hpke::HpkeKey) -> String {
    let suite = key.kem().published_suite();
    let header = B64URL.encode(format!(
        r#"{{"alg":"{}","kid":"{}"}}"#,
        suite.alg(),
        key.kid()
    ));
    let (enc, ct) = key.seal(suite, b"", header.as_bytes(), VALUE).unwrap();
    [
        header,
        B64URL.encode(enc),
        String::new(),
        B64URL.encode(ct),
        String::new(),
    ]
    .join(".")
}

/// An envelope's request body around `data` (nonce ‖ ciphertext ‖ tag).
fn envelope_json(wrapped: &[u8], data: &[u8], kid: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "encrypted_session_key": B64.encode(wrapped),
        "encrypted_data": B64.encode(data),
        "kid": kid,
    }))
    .unwrap()
}

/// An envelope whose session key is HPKE-wrapped to `key`, as a client makes it.
fn hpke_envelope_body(key: &hpke::HpkeKey, body: &[u8]) -> Vec<u8> {
    let (session, data) = envelope_data(body);
    let (enc, ct) = key
        .seal(
            key.kem().published_suite(),
            envelope::HPKE_WRAP_INFO,
            b"",
            &session,
        )
        .unwrap();
    envelope_json(&[enc, ct].concat(), &data, key.kid())
}

/// A fixed session key and the body sealed under it.
fn envelope_data(body: &[u8]) -> ([u8; 32], Vec<u8>) {
    let session = [5u8; 32];
    let nonce = [1u8; 12];
    let mut data = body.to_vec();
    let tag = Aes256Gcm::new_from_slice(&session)
        .unwrap()
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), envelope::REQUEST_AAD, &mut data)
        .unwrap();
    (session, [&nonce[..], &data, &tag].concat())
}

fn envelope_body(key: &rsa_keys::RsaKey, body: &[u8]) -> Vec<u8> {
    let (session, data) = envelope_data(body);
    envelope_json(&wrap(&public_key(key), &session), &data, &key.kid)
}

fn client_values(c: &mut Criterion) {
    let load = |bits| rsa_keys::from_pem(&rsa_keys::generate(bits).unwrap()).unwrap();
    let (k2048, k3072) = (load(2048), load(3072));
    let x25519 = hpke::from_pem(&hpke::generate(hpke::KemKind::X25519).unwrap()).unwrap();
    let xwing = hpke::from_pem(&hpke::generate(hpke::KemKind::XWing).unwrap()).unwrap();
    let jwe_2048 = rsa_jwe(&k2048);
    let jwe_3072 = rsa_jwe(&k3072);
    let hpke_value = hpke_jwe(&x25519);
    let xwing_value = hpke_jwe(&xwing);
    let doc = serde_json::json!({ "pad": "x".repeat(1010) }).to_string();
    let env_x25519 = hpke_envelope_body(&x25519, doc.as_bytes());
    let env_xwing = hpke_envelope_body(&xwing, doc.as_bytes());
    let keys = ClientKeys::new(vec![k2048, k3072], vec![x25519, xwing]).unwrap();
    let env_1k = envelope_body(&keys.rsa_keys()[0], doc.as_bytes());

    let mut group = c.benchmark_group("client_values");
    group.bench_function("jwe_open_rsa2048", |b| {
        b.iter(|| jwe::open(black_box(&jwe_2048), &keys).unwrap())
    });
    group.bench_function("jwe_open_rsa3072", |b| {
        b.iter(|| jwe::open(black_box(&jwe_3072), &keys).unwrap())
    });
    group.bench_function("jwe_open_hpke_x25519_a256gcm", |b| {
        b.iter(|| jwe::open(black_box(&hpke_value), &keys).unwrap())
    });
    group.bench_function("jwe_open_hpke_10_xwing", |b| {
        b.iter(|| jwe::open(black_box(&xwing_value), &keys).unwrap())
    });
    group.bench_function("envelope_open_rsa2048_1KiB", |b| {
        b.iter(|| envelope::open_request(black_box(&env_1k), &keys).unwrap())
    });
    group.bench_function("envelope_open_x25519_1KiB", |b| {
        b.iter(|| envelope::open_request(black_box(&env_x25519), &keys).unwrap())
    });
    group.bench_function("envelope_open_xwing_1KiB", |b| {
        b.iter(|| envelope::open_request(black_box(&env_xwing), &keys).unwrap())
    });
    group.finish();
}

criterion_group!(benches, client_values);
criterion_main!(benches);
