//! Writes the hand-made seed inputs into `fuzz/corpus/<target>/seed-*` (real tokens, JWEs and
//! envelopes made with the fixed fuzz keys, configs, tricky paths). Run from `fuzz/`:
//!
//!     cargo run --example gen_seeds
//!
//! Tokens, JWEs and envelopes use fresh nonces and keys, so each run writes different bytes
//! for them; the seeds only need to be valid.

use std::path::Path;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use fieldseal::crypto::hpke::Suite;
use fieldseal::crypto::token;
use fieldseal_fuzz::*;
use serde_json::json;

fn write(target: &str, name: &str, data: impl AsRef<[u8]>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
}

/// A token sealed with any key of the fixed keyring (`seal` itself only takes active keys).
fn token_with(kid: &str, secret: [u8; 32], context: &str, json: &[u8]) -> String {
    let nonce = [3u8; 12];
    let aad = format!("fs1.{kid}.{context}");
    let ct = Aes256Gcm::new_from_slice(&secret)
        .unwrap()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: json,
                aad: aad.as_bytes(),
            },
        )
        .unwrap();
    format!(
        "fs1.{kid}.{}",
        B64URL.encode([&nonce[..], &ct[..]].concat())
    )
}

fn fs1_token() {
    let t = "fs1_token";
    write(
        t,
        "vector-ssn",
        "ssn\nfs1.k1.AAECAwQFBgcICQoLZTPkKOjR9za7dq-ykx8A-Aa_3auBzhqAiXYp9yI",
    );
    write(
        t,
        "vector-age",
        "age\nfs1.k1.AAECAwQFBgcICQoLczA4rdYfC_5aNxtjfrqyzTyv",
    );
    let ring = keyring();
    let k1 = ring.primary();
    for (name, ctx, v) in [
        ("object", "card", json!({"a": [1, {"b": "ü"}], "n": null})),
        ("array", "tags", json!([1.5, -2, true, "x\"y\\z"])),
        ("root", "", json!("whole document")),
        ("unicode-context", "pässwörd", json!("🦀")),
    ] {
        let tok = token::seal(k1, ctx, &v).unwrap();
        write(t, name, format!("{ctx}\n{tok}"));
    }
    write(
        t,
        "decrypt-only",
        format!("ssn\n{}", token_with("old", [7; 32], "ssn", b"\"x\"")),
    );
    write(
        t,
        "disabled",
        format!("ssn\n{}", token_with("gone", [9; 32], "ssn", b"1")),
    );
    write(
        t,
        "not-json",
        format!(
            "ssn\n{}",
            token_with("k1", core::array::from_fn(|i| i as u8), "ssn", b"not json")
        ),
    );
    write(
        t,
        "unknown-kid",
        "ssn\nfs1.k9.AAECAwQFBgcICQoLczA4rdYfC_5aNxtjfrqyzTyv",
    );
    write(t, "bad-b64", "ssn\nfs1.k1.!!!");
    write(t, "short", "ssn\nfs1.k1.AAAA");
    write(t, "bad-kid", "ssn\nfs1.bad kid.AAAA");
    write(
        t,
        "plain-json",
        r#"{"card":"4111 1111 1111 1111","exp":[12,2030]}"#,
    );
}

fn jwe_compact() {
    let t = "jwe_compact";
    write(t, "rsa-string", jwe_rsa(&rsa_header(false), b"123-45-6789"));
    write(
        t,
        "rsa-json",
        jwe_rsa(&rsa_header(true), br#"{"card":"4111","exp":[12,2030]}"#),
    );
    let h = json!({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": rsa_kid(), "iat": 1_795_392_000, "jti": "b7e6c1a4"});
    write(t, "rsa-iat-jti", jwe_rsa(&h.to_string(), b"x"));
    let h = json!({"alg": "HPKE-X25519-A256GCM", "kid": hpke_kid(), "cty": "json"});
    write(
        t,
        "hpke-json",
        jwe_hpke(
            &h.to_string(),
            Suite::X25519Aes256Gcm,
            b"[1,2,{\"a\":null}]",
        ),
    );
    let h = json!({"alg": "HPKE-3", "kid": hpke_kid(), "iat": 1, "jti": "j"});
    write(
        t,
        "hpke3",
        jwe_hpke(&h.to_string(), Suite::X25519Aes128Gcm, "plain ü".as_bytes()),
    );
    let h = json!({"alg": "HPKE-10", "kid": hpke_key_for(Suite::XWingShake256Aes256Gcm).kid(), "iat": 1, "jti": "pq"});
    write(
        t,
        "hpke10-xwing",
        jwe_hpke(
            &h.to_string(),
            Suite::XWingShake256Aes256Gcm,
            b"\"post-quantum\"",
        ),
    );
    // draft-ietf-jose-hpke-encrypt-20 Appendix A.7 (encrypted to the fixed HPKE key).
    write(t, "hpke3-draft-vector", "eyJhbGciOiJIUEtFLTMiLCJraWQiOiJuOWhqT3JoWHhzUV9sVE11M1Bxa2pIZ3dKVVJIWlBGM0hZNXAtTEZFZ3lnIn0.UkLR0N2IgxHkSZMhcCfxVO_F12kcq32ccJ8x8M4MfBE..I8Obflj3vInszfr9sC1tnnhaGPSGAL9L1-mURYJqYWWxTlI0OZrFSKiPY7dAuyrITxTiaboZTF2yNo0swzp8S5DTil1KdxCzrMUtz5Lb-rMbR5Q5uNO7NXegJceIQkR8p7iMfNXETCI8Pv36J45yDQDHrjNc6ZuJ8Xn6pHNFFot67L1GI0ULsrS2TCqztg2p76A1nObMGvA-1w5zwU6NN7p9WPCrvIKwO6MIl-LR4MV0-jnlmd5dlw3wGP5DDfqms7lZNbZ5X2d5U0s_7aT4Zar6ixUZrI6bSj4gntrEg8nLz9IlBT6tE6Gic3I2Abxbj1Ewn20WAZetzAQzWNdJk7lIZYAJZLeeBip605kw5DuwSEK_3jlXnPsDO3Zs.");
    // jwcrypto's output for kid `rsa1` (not a kid of these keys: unknown_key).
    write(t, "jwcrypto-rsa1", "eyJhbGciOiAiUlNBLU9BRVAtMjU2IiwgImVuYyI6ICJBMjU2R0NNIiwgImtpZCI6ICJyc2ExIn0.K3J4k0owlZY19DVnbJ1yJY9KfotIfVwSZgUrj1Svbs3hlYtTikHwvfEDVd2FLr-ljUNmTC40mdX53sFizA5uURkD460dthY4dWt0iquaBaf_EHAy43j7wiGPmRjUakvlFhDOvzKCohNarP5Lr0tekD1-cGoaJTCS-NHHXmUPTHv0nmzVl3hb0YjvRU7uBym2KWmNeyfJygDbJbYm-T3axfbvBE_oThVDqxy8lPpvLwSiNOuBcUM3M_ep3qPjz7qasOEfGdZFnDNDlBRHoRfQ4h2cyq5Hve5Yzvr4Np1Z-KeBX1NpeVgAyov6NCOLIcgExNwWS6UlAMCmtsDEIR_qiA.1q6a_r3eSezq7kTI.KsFuCSDVuJC-z9c.vLtxYs7UEA9_1udCnN-GIw");
    for (name, header) in [
        (
            "zip",
            json!({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": rsa_kid(), "zip": "DEF"}),
        ),
        (
            "crit",
            json!({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": rsa_kid(), "crit": ["exp"]}),
        ),
        (
            "rsa1_5",
            json!({"alg": "RSA1_5", "enc": "A256GCM", "kid": rsa_kid()}),
        ),
        (
            "hpke-enc",
            json!({"alg": "HPKE-3", "enc": "A256GCM", "kid": hpke_kid()}),
        ),
        (
            "cty-number",
            json!({"alg": "HPKE-3", "kid": hpke_kid(), "cty": 1}),
        ),
    ] {
        let h = B64URL.encode(header.to_string());
        write(
            t,
            &format!("header-{name}"),
            format!("{h}.AAAA.AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA"),
        );
    }
    let dup = B64URL.encode(format!(
        r#"{{"alg":"HPKE-3","alg":"RSA-OAEP-256","kid":"{}"}}"#,
        hpke_kid()
    ));
    write(t, "header-duplicate", format!("{dup}.AAAA..AAAA."));
    write(t, "four-parts", "e30.AAAA.AAAA.AAAA");
    write(t, "empty-parts", "....");
}

fn envelope() {
    let t = "envelope";
    let (body, _) = envelope_request(br#"{"amount":42,"card":"4111 1111 1111 1111"}"#, rsa_kid());
    write(t, "object", body);
    let (body, _) = envelope_request(b"[1,2,3]", rsa_kid());
    write(t, "array", body);
    let (body, _) = envelope_request(b"not json", rsa_kid());
    write(t, "not-json", body);
    let (body, _) = envelope_request(b"{}", "unknown");
    write(t, "unknown-kid", body);
    write(
        t,
        "missing-member",
        r#"{"encrypted_session_key":"AAAA","kid":"x"}"#,
    );
    write(
        t,
        "extra-member",
        r#"{"encrypted_session_key":"AAAA","encrypted_data":"AAAA","kid":"x","iv":"AAAA"}"#,
    );
    write(
        t,
        "short-data",
        format!(
            r#"{{"encrypted_session_key":"AAAA","encrypted_data":"AAAA","kid":"{}"}}"#,
            rsa_kid()
        ),
    );
    write(
        t,
        "cbc-style",
        r#"{"encrypted_session_key":"AAAA","encrypted_data":"AAAA","iv":"AAAA"}"#,
    );
}

fn json_transform() {
    let t = "json_transform";
    let user = r#"{"id":7,"ssn":"123-45-6789","password":"hunter2","phone":"+1 555 0100","internal_notes":"vip","cards":[{"number":"4111 1111 1111 1111","exp":"12/30"},{"number":"5500 0000 0000 0004"}]}"#;
    write(t, "default-rules", user);
    write(
        t,
        "user-rules",
        format!(
            "$.ssn\n$.password\n$.cards[*].number\tcard\nm4 $.phone\nr $.internal_notes\n\n{user}"
        ),
    );
    write(t, "descendant", "$..password\n\n{\"password\":{\"password\":1},\"a\":[{\"password\":\"x\"},{\"b\":{\"password\":null}}]}");
    write(t, "filter", "$.a[?@.k==1]\n$.a[?length(@.s)>2].s\n\n{\"a\":[{\"k\":1,\"s\":\"abc\"},{\"k\":2,\"s\":\"abcd\"}]}");
    write(
        t,
        "union-slice",
        "$['a','b']\n$.c[1:3]\n$.c[-1]\n$.c[::2]\n\n{\"a\":1,\"b\":[true],\"c\":[0,1,2,3,4]}",
    );
    write(t, "root", "$\n\n{\"x\":[1,2.5e3,-0,\"\\u00e9\\n\"]}");
    write(
        t,
        "wildcards",
        "$.*.*\n$[*][0]\n\n{\"u\":{\"a\":1,\"b\":[1,2]},\"v\":[[1],[2,3]]}",
    );
    write(t, "duplicates", "$.a\n\n{\"a\":1,\"a\":{\"a\":2}}");
    write(
        t,
        "escaped-names",
        "$['a\\'b']\n$[\"\\u00e9\"]\n$['~/']\tctx\n\n{\"a'b\":1,\"é\":\"x\",\"~/\":[null]}",
    );
    write(
        t,
        "mask-redact-only",
        "m2 $..phone\nr $.x[*]\n\n{\"phone\":\"12345\",\"x\":[1,{\"phone\":77}]}",
    );
    write(
        t,
        "request-tokens",
        "$.ssn\n$.age\n\n{\"ssn\":\"fs1.k1.AAECAwQFBgcICQoLZTPkKOjR9za7dq-ykx8A-Aa_3auBzhqAiXYp9yI\",\"age\":\"fs1.k1.AAECAwQFBgcICQoLczA4rdYfC_5aNxtjfrqyzTyv\"}",
    );
    let jwe = jwe_hpke(
        &json!({"alg": "HPKE-3", "kid": hpke_kid()}).to_string(),
        Suite::X25519Aes128Gcm,
        b"s",
    );
    write(t, "request-jwe", format!("$.v\n\n{{\"v\":\"{jwe}\"}}"));
    let deep = format!(
        "$.a\n\n{{\"a\":1,\"b\":{}1{}}}",
        "[".repeat(130),
        "]".repeat(130)
    );
    write(t, "deep", deep);
}

fn config_compile() {
    let t = "config_compile";
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    for entry in std::fs::read_dir(&repo).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            write(t, &format!("repo-{name}"), &text);
            // The same config pointing at the fuzz fixture files.
            let local = text
                .replace("/etc/fieldseal/tls/tls.crt", "cert.pem")
                .replace("/etc/fieldseal/tls/tls.key", "key.pem")
                .replace("/etc/fieldseal/tls/client-ca.crt", "ca.pem")
                .replace("/etc/fieldseal/keys/keyring.json", "keyring.json")
                .replace("/etc/fieldseal/keys/rsa.pem", "rsa.pem")
                .replace("/etc/fieldseal/keys/x25519.pem", "x25519.pem");
            write(t, &format!("local-{name}"), local);
        }
    }
    write(
        t,
        "everything",
        r#"listen: "127.0.0.1:8443"
upstream: "http://127.0.0.1:8000"
admin: "[::1]:9901"
workers: 2
tls: { cert: cert.pem, key: key.pem, client_ca: ca.pem }
keys:
  keyring: keyring-wrapped.json
  keyring_kek_file: kek.bin
  rsa_private_key: [rsa.pem]
  hpke_private_key: x25519.pem
  public_key_path: "/api/encryption/public-key/"
  rotation: { max_age: 90d, max_encryptions: 1000000 }
headers:
  strict-transport-security: "max-age=63072000; includeSubDomains"
  x-frame-options: ""
timeouts: { tls_handshake: 10s, upstream_response: 1m 30s }
limits: { max_body_bytes: 1048576, max_encrypted_values: 8, replay_cache_entries: 1024 }
audit: { sink: audit.log, key_file: audit.key }
reload: { watch: true, interval: 2s }
routes:
  - name: user
    match: { path: "/api/users/{id}", methods: [get, PUT] }
    headers: { cache-control: "no-store" }
    response:
      encrypt: ["$.ssn", { path: "$.cards[*].number", context: card }]
      redact: ["$..internal"]
      mask: [{ path: "$.phone", keep_last: 4 }]
      on_non_json: pass
    request:
      decrypt: ["$.ssn"]
      require_encrypted: true
      max_age: 300
  - name: secure
    match: { path: "/api/secure/**" }
    envelope: true
"#,
    );
    write(
        t,
        "problems",
        r#"listen: "nope"
upstream: "https://user@host/path"
admin: "nope"
workers: 0
tls: { cert: missing.pem, key: open.pem }
keys: { keyring: rsa.pem, rsa_key_passphrase_file: passphrase.txt, public_key_path: "relative" }
unknown: 1
routes:
  - name: "bad name!"
    match: { path: "api//{1d}/**/x", methods: [] }
    response: { encrypt: ["ssn", "$[", "$.a", "$.a"] }
    request: { max_age: 0 }
    envelope: true
  - name: "bad name!"
    match: { path: "/" }
    bogus: true
"#,
    );
    write(t, "not-a-map", "- 1\n- 2\n");
    write(t, "empty", "");
}

fn path_normalize() {
    let t = "path_normalize";
    for (name, line) in [
        ("plain", "GET /api/users/1"),
        ("dots-slashes", "PUT /api//users/./1/"),
        ("dotdot-escape", "GET /api/x/../users/%31"),
        ("rest", "POST /api/secure/a/b/../c"),
        ("lowercase-method", "get /api/users/1"),
        ("encoded-slash", "GET /api%2Fusers/7"),
        ("encoded-backslash", "GET /a%5cb"),
        ("custom-method", "PURGE /cache/x"),
        ("root", "DELETE /"),
        ("encoded-dotdot", "GET /docs/%2e%2e/api/users/1"),
        ("absolute-form", "GET http://example.com/api/users/1?x=y#f"),
        ("utf8-escape", "HEAD /api/%C3%A9/x"),
        ("bad-utf8-escape", "GET /%ff/../%zz/%"),
        ("asterisk", "OPTIONS *"),
        ("template", "GET /api/users/{id}/cards/{card}"),
        ("space-percent", "GET /a b/c%d/"),
        ("above-root", "GET /../../api/signup"),
        ("double-encoded", "POST /api/signup%252F"),
    ] {
        write(t, name, line);
    }
}

/// Largest age file kept as a seed.
const MAX_AGE_SEED: usize = 16 * 1024;

/// Every vector of the C2SP age suite (`tests/fixtures/age-cctv/`) made for the fixed X25519
/// identity, as the bare file (decompressed; up to [`MAX_AGE_SEED`]), and files fieldseal seals to it: binary, armored,
/// empty, and across a chunk boundary.
fn age_file() {
    use std::io::Read;
    let identity: age::x25519::Identity = AGE_IDENTITY.parse().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/age-cctv");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".md"))
        .collect();
    names.sort();
    for name in names {
        let raw = std::fs::read(dir.join(&name)).unwrap();
        let split = raw.windows(2).position(|w| w == b"\n\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]);
        if !head
            .lines()
            .any(|l| l == format!("identity: {AGE_IDENTITY}"))
        {
            continue;
        }
        let mut body = raw[split + 2..].to_vec();
        if head.lines().any(|l| l == "compressed: zlib") {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            body = out;
        }
        // The suite's full-chunk stream vectors (64 KiB to megabytes) would slow every run and
        // swell the corpus; the Python tests open them all, `sealed-two-chunks` covers a
        // chunk boundary here.
        if body.len() <= MAX_AGE_SEED {
            write("age_file", &format!("cctv-{name}"), body);
        }
    }
    let recipients = [fieldseal::file::Recipient::X25519(identity.to_public())];
    for (name, len, armor) in [
        ("empty", 0, false),
        ("short", 5, false),
        ("two-chunks", 65_536 + 3, false),
        ("armored", 40, true),
    ] {
        let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut sealed = Vec::new();
        fieldseal::file::seal(&recipients, &mut &plain[..], &mut sealed, armor).unwrap();
        write("age_file", &format!("sealed-{name}"), sealed);
    }
}

fn main() {
    age_file();
    fs1_token();
    jwe_compact();
    envelope();
    json_transform();
    config_compile();
    path_normalize();
    println!("seeds written");
}
