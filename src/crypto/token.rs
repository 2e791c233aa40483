//! The `fs1` field token (contract §1): `fs1.<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>`.
//!
//! The plaintext is the compact JSON of the value, so opening restores its type; the AAD
//! `fs1.<kid>.<context>` binds a token to its kind of field, so a `password` token cannot be
//! opened as a `nickname` (which would turn an app that echoes nicknames into a decryption
//! oracle).

use crate::reason::Reason;
use std::fmt;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::Nonce;
use base64::Engine;
use serde_json::Value;

use super::keyring::{valid_key_id, Key, KeyState, Keyring};

/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "fs1.";

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why a token did not open. Each says who is at fault in terms a client can act on; none
/// carries the value or the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Not of the form `fs1.<kid>.<payload>`.
    Malformed,
    /// The payload is not unpadded base64url, or too short to hold nonce and tag.
    BadEncoding,
    /// No key with this id in the keyring.
    UnknownKey(String),
    /// The key exists but is disabled.
    KeyDisabled(String),
    /// Authentication failed: tampered, sealed for another context, or another key's secret.
    Rejected,
    /// Authentic, but the plaintext is not JSON (sealed by something other than fs1).
    NotJson,
}

impl OpenError {
    /// The reason, in the crate's one vocabulary.
    pub fn reason(&self) -> Reason {
        match self {
            OpenError::Malformed => Reason::MalformedToken,
            OpenError::BadEncoding => Reason::BadEncoding,
            OpenError::UnknownKey(_) => Reason::UnknownKey,
            OpenError::KeyDisabled(_) => Reason::KeyDisabled,
            OpenError::Rejected => Reason::AuthenticationFailed,
            OpenError::NotJson => Reason::NotJson,
        }
    }

    /// The key id involved, when there is one.
    pub fn kid(&self) -> Option<&str> {
        match self {
            OpenError::UnknownKey(k) | OpenError::KeyDisabled(k) => Some(k),
            _ => None,
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Malformed => f.write_str("not an fs1 token (expected fs1.<kid>.<payload>)"),
            OpenError::BadEncoding => f.write_str(
                "the token payload is not valid unpadded base64url of nonce, ciphertext and tag",
            ),
            OpenError::UnknownKey(k) => write!(f, "key `{k}` is not in the keyring"),
            OpenError::KeyDisabled(k) => write!(f, "key `{k}` is disabled"),
            OpenError::Rejected => f.write_str(
                "the token failed authentication (tampered, or sealed for another field or key)",
            ),
            OpenError::NotJson => f.write_str("the token's plaintext is not JSON"),
        }
    }
}

impl std::error::Error for OpenError {}

/// Whether `s` looks like an fs1 token (prefix and kid shape); says nothing of validity.
pub fn looks_like_token(s: &str) -> bool {
    s.strip_prefix(TOKEN_PREFIX)
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(kid, _)| valid_key_id(kid))
}

fn aad(kid: &str, context: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(TOKEN_PREFIX.len() + kid.len() + 1 + context.len());
    aad.extend_from_slice(TOKEN_PREFIX.as_bytes());
    aad.extend_from_slice(kid.as_bytes());
    aad.push(b'.');
    aad.extend_from_slice(context.as_bytes());
    aad
}

/// Seals `value` with `key` for `context`, with a fresh nonce from the OS CSPRNG.
/// Errors only if the OS random source fails (the caller must then fail closed).
pub fn seal(key: &Key, context: &str, value: &Value) -> Result<String, getrandom::Error> {
    Ok(seal_with_nonce(key, context, value, nonces::next()?))
}

/// Seals `json`, which must already be the compact JSON text of a value (the byte-level
/// transform has it without building a `Value`).
pub fn seal_json(key: &Key, context: &str, json: &[u8]) -> Result<String, getrandom::Error> {
    Ok(seal_json_with_nonce(key, context, json, nonces::next()?))
}

/// Nonces from the OS CSPRNG, fetched in batches: one `getrandom` call per 12-byte nonce cost
/// ~300 ns (more than the AES-GCM seal itself). Each thread keeps a buffer filled by the OS and
/// hands out every byte exactly once, so nonces stay fresh OS randomness, never reused.
mod nonces {
    use std::cell::RefCell;

    use super::NONCE_LEN;

    /// 341 nonces per refill.
    const BATCH: usize = 4096;

    struct Pool {
        bytes: [u8; BATCH],
        used: usize,
    }

    thread_local! {
        static POOL: RefCell<Pool> = const { RefCell::new(Pool { bytes: [0; BATCH], used: BATCH }) };
    }

    pub fn next() -> Result<[u8; NONCE_LEN], getrandom::Error> {
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.used + NONCE_LEN > BATCH {
                getrandom::fill(&mut pool.bytes)?;
                pool.used = 0;
            }
            let start = pool.used;
            let mut nonce = [0u8; NONCE_LEN];
            nonce.copy_from_slice(&pool.bytes[start..start + NONCE_LEN]);
            // Spent bytes are cleared so a later read of this memory cannot replay them.
            pool.bytes[start..start + NONCE_LEN].fill(0);
            pool.used += NONCE_LEN;
            Ok(nonce)
        })
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn nonces_never_repeat_across_refills() {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..2_000 {
                assert!(seen.insert(super::next().unwrap()), "a nonce repeated");
            }
        }
    }
}

/// Seals with a given nonce. Only tests (the contract's vectors) may choose the nonce: a
/// repeated nonce under one key breaks AES-GCM.
pub(crate) fn seal_with_nonce(
    key: &Key,
    context: &str,
    value: &Value,
    nonce: [u8; NONCE_LEN],
) -> String {
    let plaintext =
        zeroize::Zeroizing::new(serde_json::to_vec(value).expect("a JSON value serialises"));
    seal_json_with_nonce(key, context, &plaintext, nonce)
}

fn seal_json_with_nonce(key: &Key, context: &str, json: &[u8], nonce: [u8; NONCE_LEN]) -> String {
    debug_assert!(key.state == KeyState::Active, "only active keys seal");
    let aad = aad(&key.id, context);
    let sealed = key
        .cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: json,
                aad: &aad,
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut payload = Vec::with_capacity(NONCE_LEN + sealed.len());
    payload.extend_from_slice(&nonce);
    payload.extend_from_slice(&sealed);
    let mut token =
        String::with_capacity(TOKEN_PREFIX.len() + key.id.len() + 1 + payload.len() * 4 / 3 + 4);
    token.push_str(TOKEN_PREFIX);
    token.push_str(&key.id);
    token.push('.');
    B64URL.encode_string(&payload, &mut token);
    token
}

/// Opens a token sealed for `context`, restoring the exact JSON value.
pub fn open(keyring: &Keyring, context: &str, token: &str) -> Result<Value, OpenError> {
    let json = open_json(keyring, context, token)?;
    serde_json::from_slice(&json).map_err(|_| OpenError::NotJson)
}

/// Opens a token sealed for `context` and returns its plaintext, checked to be one JSON
/// value, as the text to splice into a body.
pub fn open_json(
    keyring: &Keyring,
    context: &str,
    token: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, OpenError> {
    let rest = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(OpenError::Malformed)?;
    let (kid, payload) = rest.split_once('.').ok_or(OpenError::Malformed)?;
    if !valid_key_id(kid) {
        return Err(OpenError::Malformed);
    }
    let key = keyring
        .get(kid)
        .ok_or_else(|| OpenError::UnknownKey(kid.to_string()))?;
    if key.state == KeyState::Disabled {
        return Err(OpenError::KeyDisabled(kid.to_string()));
    }
    let bytes = B64URL.decode(payload).map_err(|_| OpenError::BadEncoding)?;
    if bytes.len() < NONCE_LEN + TAG_LEN {
        return Err(OpenError::BadEncoding);
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let aad = aad(kid, context);
    let plaintext = zeroize::Zeroizing::new(
        key.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| OpenError::Rejected)?,
    );
    // Valid UTF-8 first: skipping a string does not check it, and this text goes to the app.
    std::str::from_utf8(&plaintext)
        .ok()
        .and_then(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).ok())
        .ok_or(OpenError::NotJson)?;
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keyring::tests::test_keyring;
    use serde_json::json;

    const NONCE: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

    #[test]
    fn contract_test_vectors() {
        let ring = test_keyring();
        let k1 = ring.get("k1").unwrap();
        assert_eq!(
            seal_with_nonce(k1, "ssn", &json!("123-45-6789"), NONCE),
            "fs1.k1.AAECAwQFBgcICQoLZTPkKOjR9za7dq-ykx8A-Aa_3auBzhqAiXYp9yI"
        );
        assert_eq!(
            seal_with_nonce(k1, "age", &json!(42), NONCE),
            "fs1.k1.AAECAwQFBgcICQoLczA4rdYfC_5aNxtjfrqyzTyv"
        );
        assert_eq!(
            open(
                &ring,
                "ssn",
                "fs1.k1.AAECAwQFBgcICQoLZTPkKOjR9za7dq-ykx8A-Aa_3auBzhqAiXYp9yI"
            )
            .unwrap(),
            json!("123-45-6789")
        );
        assert_eq!(
            open(
                &ring,
                "age",
                "fs1.k1.AAECAwQFBgcICQoLczA4rdYfC_5aNxtjfrqyzTyv"
            )
            .unwrap(),
            json!(42)
        );
    }

    #[test]
    fn every_json_type_round_trips() {
        let ring = test_keyring();
        for v in [
            json!("s"),
            json!(""),
            json!(-1.5),
            json!(0),
            json!(true),
            json!(null),
            json!({"a": [1, {"b": "ü"}]}),
            json!([]),
            // Exact floats: without serde_json's `float_roundtrip` this came back one ulp off
            // (1.281811118111882e26) — found by the fs1 fuzz target.
            json!(1.2818111181118819e26),
            json!(5e-324),
            json!(f64::MAX),
        ] {
            let token = seal(ring.primary(), "ctx", &v).unwrap();
            assert!(looks_like_token(&token), "{token}");
            assert_eq!(open(&ring, "ctx", &token).unwrap(), v);
        }
    }

    #[test]
    fn nonces_are_fresh() {
        let ring = test_keyring();
        let a = seal(ring.primary(), "c", &json!("same")).unwrap();
        let b = seal(ring.primary(), "c", &json!("same")).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn failures_say_why_without_values() {
        let ring = test_keyring();
        let token = seal(ring.primary(), "password", &json!("hunter2")).unwrap();
        assert_eq!(open(&ring, "nickname", &token), Err(OpenError::Rejected));
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            open(&ring, "password", std::str::from_utf8(&tampered).unwrap()),
            Err(OpenError::Rejected)
        );
        assert_eq!(
            open(&ring, "password", "fs1.nope.AAAA"),
            Err(OpenError::UnknownKey("nope".into()))
        );
        assert_eq!(
            open(&ring, "password", &token.replacen("k1", "gone", 1)),
            Err(OpenError::KeyDisabled("gone".into()))
        );
        assert_eq!(
            open(&ring, "password", "fs1.k1.!!!"),
            Err(OpenError::BadEncoding)
        );
        assert_eq!(
            open(&ring, "password", "fs1.k1.AAAA"),
            Err(OpenError::BadEncoding)
        );
        assert_eq!(
            open(&ring, "password", "hunter2"),
            Err(OpenError::Malformed)
        );
        assert_eq!(
            open(&ring, "password", "fs1.bad kid.AAAA"),
            Err(OpenError::Malformed)
        );
        let e = OpenError::UnknownKey("k9".into());
        assert_eq!((e.reason().as_str(), e.kid()), ("unknown_key", Some("k9")));
        assert!(!OpenError::Rejected.to_string().contains("hunter2"));
    }

    #[test]
    fn decrypt_only_keys_still_open() {
        let ring = test_keyring();
        let old = ring.get("old").unwrap();
        // Sealed while `old` was active (state is only checked in debug builds' seal).
        let token = {
            let mut nonce = [0u8; 12];
            getrandom::fill(&mut nonce).unwrap();
            let aad = aad("old", "ssn");
            let sealed = old
                .cipher
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: b"\"x\"",
                        aad: &aad,
                    },
                )
                .unwrap();
            format!(
                "fs1.old.{}",
                B64URL.encode([&nonce[..], &sealed[..]].concat())
            )
        };
        assert_eq!(open(&ring, "ssn", &token).unwrap(), json!("x"));
    }
}
