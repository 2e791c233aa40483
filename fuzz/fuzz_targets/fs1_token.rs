//! `fs1` field tokens (contract §1–2): parsing and opening arbitrary tokens with a fixed
//! keyring, and seal → open round trips of arbitrary plaintext.
//!
//! Input: `context "\n" token` (no newline: the whole input is the token, context `ssn`).
//! The input is also used, as it is, as the plaintext of the round trips.
//!
//! Checks, besides "never panics":
//! - `open` and `open_json` agree, and an opened token `looks_like_token`;
//! - an opened token does not open for another context, nor after any one-byte change;
//! - `seal` then `open` restores any JSON value; `seal_json` then `open_json` restores any
//!   JSON text byte for byte, and non-JSON plaintext never opens.
#![no_main]

use fieldseal::crypto::token::{self, looks_like_token, OpenError};
use fieldseal_fuzz::{keyring, Prng};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let ring = keyring();
    let (context, token_bytes) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"ssn"[..], data),
    };
    let (Ok(context), Ok(token_text)) = (
        std::str::from_utf8(context),
        std::str::from_utf8(token_bytes),
    ) else {
        round_trips(data, "ssn");
        return;
    };

    // Parsing and opening, as the request path does on a decrypt field.
    let looks = looks_like_token(token_text);
    let opened = token::open(ring, context, token_text);
    let opened_json = token::open_json(ring, context, token_text);
    match (&opened, &opened_json) {
        (Ok(value), Ok(json)) => {
            assert!(looks, "a token that opens must look like one");
            let reparsed: Value = serde_json::from_slice(json).expect("open_json returns JSON");
            assert_eq!(&reparsed, value, "open and open_json disagree");
            // Bound to its context: the same token must not open as another field.
            let other = format!("{context}x");
            assert_eq!(
                token::open(ring, &other, token_text),
                Err(OpenError::Rejected),
                "a token opened for another context"
            );
            // Not malleable: any one-byte change (to another ASCII byte) fails.
            let mut rng = Prng::from_bytes(data);
            let mut bytes = token_text.as_bytes().to_vec();
            let at = rng.below(bytes.len() as u64) as usize;
            if bytes[at].is_ascii() {
                let new = (bytes[at] ^ (1 + rng.below(127) as u8)) & 0x7f;
                bytes[at] = new;
                let changed = std::str::from_utf8(&bytes).unwrap();
                assert!(
                    token::open(ring, context, changed).is_err(),
                    "a modified token still opened"
                );
            }
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "open and open_json fail differently");
            // Every error has a reason and a message; neither may echo the token.
            let _ = (a.reason(), a.kid(), a.to_string());
        }
        _ => panic!("open and open_json disagree on success: {opened:?} vs {opened_json:?}"),
    }

    round_trips(data, context);
});

/// Seal with the primary key, then open: must restore the plaintext exactly.
fn round_trips(plaintext: &[u8], context: &str) {
    let ring = keyring();
    let key = ring.primary();

    // Byte-level engine: `seal_json` / `open_json` carry the JSON text as it is.
    let token_text = token::seal_json(key, context, plaintext).expect("OS random source");
    assert!(
        looks_like_token(&token_text),
        "a sealed token must look like one"
    );
    let is_json = std::str::from_utf8(plaintext)
        .ok()
        .and_then(|t| serde_json::from_str::<serde::de::IgnoredAny>(t).ok())
        .is_some();
    match token::open_json(ring, context, &token_text) {
        Ok(json) => {
            assert!(is_json, "non-JSON plaintext opened");
            assert_eq!(
                &json[..],
                plaintext,
                "seal_json/open_json changed the bytes"
            );
        }
        Err(e) => {
            assert!(!is_json, "JSON plaintext failed to open: {e}");
            assert_eq!(e, OpenError::NotJson);
        }
    }

    // Document engine: `seal` / `open` of a parsed value.
    if let Ok(value) = serde_json::from_slice::<Value>(plaintext) {
        let token_text = token::seal(key, context, &value).expect("OS random source");
        let opened = token::open(ring, context, &token_text).expect("a sealed value opens");
        assert!(
            opened == value,
            "seal/open changed the value: {opened} vs {value}"
        );
    }
}
