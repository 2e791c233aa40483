//! Client-encrypted JWE values (contract §3): the compact parser/opener with the proxy's fixed
//! RSA (RSA-OAEP-256 + A256GCM) and X25519 (HPKE) keys, directly and through the request
//! field stage (`field_rules::rewrite_request_body`, both engines, with a `max_age` replay
//! check) exactly as a decrypt path sees a JSON string value.
//!
//! Input: the raw bytes are the compact JWE. The same bytes also drive (via `arbitrary`) a
//! round trip: a JWE a client would make (HPKE, or RSA for one input in eight) of arbitrary
//! plaintext and header members must open to that plaintext, and must not open after any
//! one-bit change to one of its segments.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine;
use fieldseal::config::settings::RequestRules;
use fieldseal::crypto::hpke::Suite;
use fieldseal::crypto::jwe::{self, looks_like_jwe, JweError, MAX_JWE_LEN};
use fieldseal::replay::MemoryReplayStore;
use fieldseal::replay::Replay;
use fieldseal::transform::rules::{rewrite_request_body, Openers};
use fieldseal::transform::selector::Selector;
use fieldseal_fuzz::{
    client_keys, fixed_wrapped_key, hpke_key_for, jwe_hpke, jwe_rsa_with, keyring, rsa_kid, B64URL,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fn rules() -> &'static [RequestRules; 2] {
    static RULES: OnceLock<[RequestRules; 2]> = OnceLock::new();
    RULES.get_or_init(|| {
        let max_age = Some(Duration::from_secs(300));
        [
            // Byte-level engine (simple selector).
            RequestRules::new(
                vec![Selector::compile("$.v", None).unwrap()],
                false,
                max_age,
            ),
            // Document engine (a union is not simple).
            RequestRules::new(
                vec![Selector::compile("$['v','w']", Some("v".into())).unwrap()],
                true,
                max_age,
            ),
        ]
    })
}

fn store() -> &'static MemoryReplayStore {
    static STORE: OnceLock<MemoryReplayStore> = OnceLock::new();
    STORE.get_or_init(|| MemoryReplayStore::new(1 << 12))
}

#[derive(Debug, Arbitrary)]
struct RoundTrip {
    scheme: u8,
    cty_json: bool,
    iat: Option<i64>,
    jti: Option<String>,
    extra: Option<(String, String)>,
    flip_segment: u8,
    flip_byte: u16,
    flip_bit: u8,
    plaintext: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    let keys = client_keys();
    if let Ok(compact) = std::str::from_utf8(data) {
        parse_and_open(compact);
    }

    let Ok(rt) = RoundTrip::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let rsa = rt.scheme % 8 == 0;
    let mut header = if rsa {
        json!({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": rsa_kid()})
    } else {
        let alg = match rt.scheme % 3 {
            0 => "HPKE-3",
            1 => "HPKE-X25519-A256GCM",
            _ => "HPKE-10",
        };
        let suite = Suite::from_alg(alg).unwrap();
        json!({"alg": alg, "kid": hpke_key_for(suite).kid()})
    };
    if rt.cty_json {
        header["cty"] = json!("json");
    }
    if let Some(iat) = rt.iat {
        header["iat"] = json!(iat);
    }
    if let Some(jti) = &rt.jti {
        header["jti"] = json!(jti);
    }
    if let Some((name, value)) = rt.extra {
        // An unregistered member is ignored; the checked ones are covered by the raw input.
        const CHECKED: [&str; 10] = [
            "alg", "enc", "kid", "cty", "iat", "jti", "zip", "crit", "psk_id", "ek",
        ];
        if !CHECKED.contains(&name.as_str()) {
            header[name] = json!(value);
        }
    }
    let header_text = header.to_string();
    let compact = if rsa {
        let (cek, wrapped) = fixed_wrapped_key();
        jwe_rsa_with(&header_text, &rt.plaintext, cek, wrapped)
    } else {
        let suite = Suite::from_alg(header["alg"].as_str().unwrap()).unwrap();
        jwe_hpke(&header_text, suite, &rt.plaintext)
    };

    // What `open` must return, in the order it checks.
    let expected: Result<Value, JweError> = if compact.len() > MAX_JWE_LEN {
        Err(JweError::TooLarge)
    } else if rt.jti.as_ref().is_some_and(|j| j.len() > jwe::MAX_JTI_LEN) {
        Err(JweError::BadHeader)
    } else if rt.cty_json {
        serde_json::from_slice(&rt.plaintext).map_err(|_| JweError::NotJson)
    } else {
        std::str::from_utf8(&rt.plaintext)
            .map(|s| Value::String(s.to_string()))
            .map_err(|_| JweError::NotUtf8)
    };
    let opened = jwe::open(&compact, keys);
    match (&opened, &expected) {
        (Ok(o), Ok(want)) => {
            assert_eq!(&o.value, want, "the JWE opened to another value");
            assert_eq!(o.iat, rt.iat);
            assert_eq!(o.jti, rt.jti);
            assert_eq!(o.kid, header["kid"].as_str().unwrap());
        }
        (Err(e), Err(want)) => assert_eq!(e, want, "header {header_text}"),
        _ => panic!(
            "round trip: opened {:?}, expected {:?} (header {header_text})",
            opened.as_ref().map(|o| o.kid.clone()),
            expected.as_ref().map(|_| ())
        ),
    }

    // One flipped bit anywhere in a non-empty segment: never opens.
    if opened.is_ok() {
        let mut parts: Vec<String> = compact.split('.').map(str::to_owned).collect();
        let candidates: Vec<usize> = (0..parts.len()).filter(|&i| !parts[i].is_empty()).collect();
        let seg = candidates[rt.flip_segment as usize % candidates.len()];
        let mut bytes = B64URL.decode(&parts[seg]).unwrap();
        if !bytes.is_empty() {
            let at = rt.flip_byte as usize % bytes.len();
            bytes[at] ^= 1 << (rt.flip_bit % 8);
            parts[seg] = B64URL.encode(bytes);
            let tampered = parts.join(".");
            assert!(
                jwe::open(&tampered, keys).is_err(),
                "a JWE opened after a bit flip in segment {seg}"
            );
        }
    }
});

/// An arbitrary string as a compact JWE: directly, then as a request field value.
fn parse_and_open(compact: &str) {
    let keys = client_keys();
    let looks = looks_like_jwe(compact);
    match jwe::open(compact, keys) {
        Ok(opened) => {
            assert!(looks, "a JWE that opens must look like one");
            assert!(
                opened.kid == rsa_kid()
                    || client_keys()
                        .hpke_keys()
                        .iter()
                        .any(|k| k.kid() == opened.kid)
            );
            let _ = format!("{opened:?}");
        }
        Err(e) => {
            let _ = (e.reason(), e.kid(), e.to_string());
            if let Some(kid) = e.kid() {
                assert!(kid.len() <= jwe::MAX_KID_LEN, "an over-long kid is echoed");
            }
        }
    }

    // The request field stage, as on a `decrypt` path with `max_age`.
    let body = serde_json::to_vec(&json!({ "v": compact, "w": 1 })).unwrap();
    for rules in rules() {
        let openers = Openers {
            keyring: Some(keyring()),
            client: Some(keys),
            max_encrypted_values: 4,
            replay: Some(Replay {
                store: store(),
                window: Duration::from_secs(300),
                now: fieldseal::replay::unix_now(),
                deferred: None,
            }),
            subject: None,
        };
        let mut ops = Vec::new();
        match rewrite_request_body(&body, rules, &openers, &mut ops) {
            Ok(Some(out)) => {
                let doc: Value = serde_json::from_slice(&out).expect("rewritten body is JSON");
                assert!(doc.get("v").is_some());
            }
            Ok(None) => {}
            Err(f) => {
                let _ = format!("{f:?}");
            }
        }
    }
}
