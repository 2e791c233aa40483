//! The field tokens the keyring seals and opens:
//!
//! - `fs1` (contract §1): `fs1.<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>`;
//! - `fse1`, an expiring token (docs/tokens.md): `fse1.<kid>.<base64url(exp ‖ nonce ‖
//!   ciphertext ‖ tag)>`, its expiry (8 bytes, big-endian Unix seconds) in the clear and bound
//!   into the AAD, so it cannot be edited and the token does not open after it.
//!
//! The plaintext is the compact JSON of the value, so opening restores its type; the AAD
//! `<prefix><kid>.<context>` binds a token to its kind of field, so a `password` token cannot
//! be opened as a `nickname` (which would turn an app that echoes nicknames into a decryption
//! oracle).

use crate::reason::Reason;
use std::fmt;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::Nonce;
use base64::Engine;
use serde_json::Value;

use super::keyring::{valid_key_id, Key, KeyState, Keyring};

/// Every `fs1` token starts with this.
pub const TOKEN_PREFIX: &str = "fs1.";

/// Every expiring token starts with this.
pub const EXPIRING_PREFIX: &str = "fse1.";

/// Every searchable (deterministic) token starts with this.
pub const SEARCHABLE_PREFIX: &str = "fsd1.";

/// Every subject-bound token starts with this.
pub const SUBJECT_PREFIX: &str = "fsb1.";

/// AES-SIV's synthetic IV, first in an `fsd1` payload.
const SIV_LEN: usize = 16;

/// Clock skew tolerated when an expiring token is opened: it still opens this long after its
/// expiry, because the replica opening it may run a little behind the one that sealed it.
/// Replicas synchronised by NTP are milliseconds apart; 30 s also covers a VM resumed with a
/// stale clock, and is small beside any TTL a rule may set ([`MIN_TOKEN_TTL`]).
pub const EXPIRY_SKEW_SECS: u64 = 30;

/// The shortest `ttl` a rule may set: ten times the skew, so the skew is a small part of it.
pub const MIN_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// The token formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `fs1` (contract §1).
    Fs1,
    /// `fse1`: opens until the Unix time it carries (seconds).
    Expiring { expires_at: u64 },
    /// `fsd1`: AES-SIV, so equal plaintexts under one key and context give equal tokens.
    Searchable,
    /// `fsb1`: AES-256-GCM under a key derived for one data subject ([`seal_for_subject`]).
    SubjectBound,
}

impl Format {
    fn prefix(self) -> &'static str {
        match self {
            Format::Fs1 => TOKEN_PREFIX,
            Format::Expiring { .. } => EXPIRING_PREFIX,
            Format::Searchable => SEARCHABLE_PREFIX,
            Format::SubjectBound => SUBJECT_PREFIX,
        }
    }

    /// What the payload carries before the nonce.
    fn header(self) -> Option<[u8; 8]> {
        match self {
            Format::Fs1 | Format::Searchable | Format::SubjectBound => None,
            Format::Expiring { expires_at } => Some(expires_at.to_be_bytes()),
        }
    }
}

/// Length of `fse1`'s expiry in the payload.
const EXPIRY_LEN: usize = 8;

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
    /// An authentic expiring token past its expiry (and the skew).
    Expired,
    /// A subject-bound token where no data subject is known (it opens only for its subject).
    NoSubject,
    /// The data subject was erased (`keys shred`): its tokens never open again.
    SubjectErased,
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
            OpenError::Expired => Reason::Expired,
            OpenError::NoSubject => Reason::NoSubject,
            OpenError::SubjectErased => Reason::SubjectErased,
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
            OpenError::Expired => f.write_str("the token has expired"),
            OpenError::NoSubject => {
                f.write_str("a subject-bound token, where this request names no data subject")
            }
            OpenError::SubjectErased => f.write_str("the token's data subject was erased"),
        }
    }
}

impl std::error::Error for OpenError {}

/// A token's prefix and the rest after it (`<kid>.<payload>`), for either format.
pub fn split_prefix(s: &str) -> Option<(&'static str, &str)> {
    [
        TOKEN_PREFIX,
        EXPIRING_PREFIX,
        SEARCHABLE_PREFIX,
        SUBJECT_PREFIX,
    ]
    .into_iter()
    .find_map(|p| s.strip_prefix(p).map(|rest| (p, rest)))
}

/// Whether `s` looks like a field token of either format (prefix and kid shape); says nothing
/// of validity.
pub fn looks_like_token(s: &str) -> bool {
    split_prefix(s)
        .and_then(|(_, rest)| rest.split_once('.'))
        .is_some_and(|(kid, _)| valid_key_id(kid))
}

/// The format of a token that looks like one (an expiring token's expiry read from its
/// payload, unauthenticated: for re-sealing what has just been opened).
pub fn format_of(s: &str) -> Option<Format> {
    let (prefix, rest) = split_prefix(s)?;
    match prefix {
        TOKEN_PREFIX => return Some(Format::Fs1),
        SEARCHABLE_PREFIX => return Some(Format::Searchable),
        SUBJECT_PREFIX => return Some(Format::SubjectBound),
        _ => {}
    }
    let payload = B64URL.decode(rest.split_once('.')?.1).ok()?;
    let exp: [u8; EXPIRY_LEN] = payload.get(..EXPIRY_LEN)?.try_into().ok()?;
    Some(Format::Expiring {
        expires_at: u64::from_be_bytes(exp),
    })
}

/// The key id a token names, when it looks like one.
pub fn token_kid(s: &str) -> Option<&str> {
    split_prefix(s)
        .and_then(|(_, rest)| rest.split_once('.'))
        .map(|(kid, _)| kid)
        .filter(|kid| valid_key_id(kid))
}

/// `<prefix><kid>.<context>`, then for `fse1` a zero byte and the expiry: every byte of the
/// token but the nonce and the ciphertext is authenticated.
fn aad(format: Format, kid: &str, context: &str) -> Vec<u8> {
    let prefix = format.prefix();
    let mut aad = Vec::with_capacity(prefix.len() + kid.len() + 1 + context.len() + 1 + EXPIRY_LEN);
    aad.extend_from_slice(prefix.as_bytes());
    aad.extend_from_slice(kid.as_bytes());
    aad.push(b'.');
    aad.extend_from_slice(context.as_bytes());
    if let Some(header) = format.header() {
        aad.push(0);
        aad.extend_from_slice(&header);
    }
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
    Ok(seal_json_with_nonce(
        key,
        Format::Fs1,
        context,
        json,
        nonces::next()?,
    ))
}

/// Seals `json` in `format` (an expiring token carries its expiry).
pub fn seal_json_as(
    key: &Key,
    format: Format,
    context: &str,
    json: &[u8],
) -> Result<String, getrandom::Error> {
    if format == Format::Searchable {
        return Ok(seal_searchable(key, context, json));
    }
    // A subject's key needs the subject: `seal_for_subject` is the only way to one.
    assert!(
        format != Format::SubjectBound,
        "subject-bound tokens are sealed with seal_for_subject"
    );
    Ok(seal_json_with_nonce(
        key,
        format,
        context,
        json,
        nonces::next()?,
    ))
}

/// An `fsd1` token: `fsd1.<kid>.<base64url(siv ‖ ciphertext)>`, AES-SIV under the key's
/// derived SIV key with the one associated datum `fsd1.<kid>.<context>`. No nonce: the same
/// value, key and context always give the same token (that is the point, and all it leaks).
pub fn seal_searchable(key: &Key, context: &str, json: &[u8]) -> String {
    use aes_siv::{siv::Aes256Siv, KeyInit};
    let aad = aad(Format::Searchable, &key.id, context);
    let mut cipher = Aes256Siv::new((&*key.siv_key).into());
    let sealed = cipher
        .encrypt([&aad[..]], json)
        .expect("AES-SIV encryption of an in-memory buffer cannot fail");
    token_text(SEARCHABLE_PREFIX, &key.id, &[&sealed])
}

/// `<prefix><kid>.<base64url(parts…)>`.
fn token_text(prefix: &str, kid: &str, parts: &[&[u8]]) -> String {
    let joined;
    let payload: &[u8] = match parts {
        [one] => one,
        _ => {
            joined = parts.concat();
            &joined
        }
    };
    let mut token = String::with_capacity(prefix.len() + kid.len() + 1 + payload.len() * 4 / 3 + 4);
    token.push_str(prefix);
    token.push_str(kid);
    token.push('.');
    B64URL.encode_string(payload, &mut token);
    token
}

/// The key a token's `<kid>.<payload>` names, usable for opening, and its decoded payload.
fn usable_key<'k>(keyring: &'k Keyring, rest: &str) -> Result<(&'k Key, Vec<u8>), OpenError> {
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
    Ok((key, bytes))
}

/// AES-256-GCM opening of `nonce ‖ ciphertext ‖ tag`.
fn gcm_open(
    cipher: &aes_gcm::Aes256Gcm,
    bytes: &[u8],
    aad: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, OpenError> {
    if bytes.len() < NONCE_LEN + TAG_LEN {
        return Err(OpenError::BadEncoding);
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
        .map(zeroize::Zeroizing::new)
        .map_err(|_| OpenError::Rejected)
}

/// The plaintext, if it is one JSON value in valid UTF-8: skipping a string does not check
/// it, and this text goes to the app.
fn checked_json(
    plaintext: zeroize::Zeroizing<Vec<u8>>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, OpenError> {
    std::str::from_utf8(&plaintext)
        .ok()
        .and_then(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).ok())
        .ok_or(OpenError::NotJson)?;
    Ok(plaintext)
}

/// The Unix time now, in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
    seal_json_with_nonce(key, Format::Fs1, context, &plaintext, nonce)
}

/// [`seal_with_nonce`] in any format (tests and the documented vectors).
#[cfg(test)]
pub(crate) fn seal_as_with_nonce(
    key: &Key,
    format: Format,
    context: &str,
    value: &Value,
    nonce: [u8; NONCE_LEN],
) -> String {
    let plaintext =
        zeroize::Zeroizing::new(serde_json::to_vec(value).expect("a JSON value serialises"));
    seal_json_with_nonce(key, format, context, &plaintext, nonce)
}

fn seal_json_with_nonce(
    key: &Key,
    format: Format,
    context: &str,
    json: &[u8],
    nonce: [u8; NONCE_LEN],
) -> String {
    debug_assert!(key.state == KeyState::Active, "only active keys seal");
    let header = format.header();
    let header: &[u8] = header.as_ref().map_or(&[], |h| &h[..]);
    let aad = aad(format, &key.id, context);
    gcm_token(
        format.prefix(),
        &key.id,
        &key.cipher,
        header,
        &nonce,
        &aad,
        json,
    )
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
    open_json_at(keyring, context, token, unix_now())
}

/// [`open_json`] at the Unix time `now` (an expiring token's expiry is checked against it,
/// after the token authenticated).
pub fn open_json_at(
    keyring: &Keyring,
    context: &str,
    token: &str,
    now: u64,
) -> Result<zeroize::Zeroizing<Vec<u8>>, OpenError> {
    let (prefix, rest) = split_prefix(token).ok_or(OpenError::Malformed)?;
    let (key, bytes) = usable_key(keyring, rest)?;
    let kid = key.id.as_str();
    if prefix == SUBJECT_PREFIX {
        return Err(OpenError::NoSubject);
    }
    if prefix == SEARCHABLE_PREFIX {
        return open_searchable(key, kid, context, &bytes);
    }
    let (format, bytes) = if prefix == EXPIRING_PREFIX {
        if bytes.len() < EXPIRY_LEN {
            return Err(OpenError::BadEncoding);
        }
        let (exp, rest) = bytes.split_at(EXPIRY_LEN);
        let expires_at = u64::from_be_bytes(exp.try_into().expect("eight bytes"));
        (Format::Expiring { expires_at }, rest)
    } else {
        (Format::Fs1, &bytes[..])
    };
    let plaintext = gcm_open(&key.cipher, bytes, &aad(format, kid, context))?;
    // Authentic first, then on time: an edited expiry fails authentication above.
    if let Format::Expiring { expires_at } = format {
        if now > expires_at.saturating_add(EXPIRY_SKEW_SECS) {
            return Err(OpenError::Expired);
        }
    }
    checked_json(plaintext)
}

/// Seals `json` for data subject `subject` under the primary key: an `fsb1` token,
/// `fsb1.<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>`, AES-256-GCM under
/// `HKDF-SHA256(secret, info = "fieldseal fsb1 subject\0" ‖ subject)` with the AAD
/// `fsb1.<kid>.<context>`. It opens only where the same subject is named
/// ([`open_json_for_subject`]), and never once the subject is erased.
pub fn seal_for_subject(
    keyring: &Keyring,
    subject: &str,
    context: &str,
    json: &[u8],
) -> Result<String, Reason> {
    if keyring.is_shredded(subject) {
        return Err(Reason::SubjectErased);
    }
    let nonce = nonces::next().map_err(|_| Reason::RandomSourceFailed)?;
    Ok(seal_subject_with_nonce(
        keyring.primary(),
        subject,
        context,
        json,
        nonce,
    ))
}

fn seal_subject_with_nonce(
    key: &Key,
    subject: &str,
    context: &str,
    json: &[u8],
    nonce: [u8; NONCE_LEN],
) -> String {
    let aad = aad(Format::SubjectBound, &key.id, context);
    let cipher = key.subject_cipher(subject);
    gcm_token(SUBJECT_PREFIX, &key.id, &cipher, &[], &nonce, &aad, json)
}

/// `<prefix><kid>.<base64url(header ‖ nonce ‖ AES-256-GCM(json) ‖ tag)>`: the one encryption
/// of every GCM-based format. The payload is built in one buffer and encrypted in place (a
/// token is sealed for every selected value of every answer: one allocation, not three).
fn gcm_token(
    prefix: &str,
    kid: &str,
    cipher: &aes_gcm::Aes256Gcm,
    header: &[u8],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    json: &[u8],
) -> String {
    use aes_gcm::aead::AeadInPlace;
    let at = header.len() + NONCE_LEN;
    let mut payload = Vec::with_capacity(at + json.len() + TAG_LEN);
    payload.extend_from_slice(header);
    payload.extend_from_slice(nonce);
    payload.extend_from_slice(json);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, &mut payload[at..])
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    payload.extend_from_slice(&tag);
    token_text(prefix, kid, &[&payload])
}

/// Opens a token of any format where `subject` (if any) is the request's data subject: an
/// `fsb1` token opens only for the subject it was sealed for (another subject's key fails
/// authentication), never for an erased one; other formats as [`open_json`].
pub fn open_json_for_subject(
    keyring: &Keyring,
    context: &str,
    token: &str,
    subject: Option<&str>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, OpenError> {
    let Some(rest) = token.strip_prefix(SUBJECT_PREFIX) else {
        return open_json(keyring, context, token);
    };
    let subject = subject.ok_or(OpenError::NoSubject)?;
    let (key, bytes) = usable_key(keyring, rest)?;
    if keyring.is_shredded(subject) {
        return Err(OpenError::SubjectErased);
    }
    let aad = aad(Format::SubjectBound, &key.id, context);
    checked_json(gcm_open(&key.subject_cipher(subject), &bytes, &aad)?)
}

fn open_searchable(
    key: &Key,
    kid: &str,
    context: &str,
    bytes: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, OpenError> {
    use aes_siv::{siv::Aes256Siv, KeyInit};
    if bytes.len() < SIV_LEN {
        return Err(OpenError::BadEncoding);
    }
    let aad = aad(Format::Searchable, kid, context);
    let mut cipher = Aes256Siv::new((&*key.siv_key).into());
    let plaintext = zeroize::Zeroizing::new(
        cipher
            .decrypt([&aad[..]], bytes)
            .map_err(|_| OpenError::Rejected)?,
    );
    checked_json(plaintext)
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

    /// docs/tokens.md's `fse1` vectors (Python `cryptography` reproduces them: see
    /// tests/python/test_tokens.py).
    #[test]
    fn expiring_token_vectors() {
        let ring = test_keyring();
        let k1 = ring.get("k1").unwrap();
        let exp = |expires_at| Format::Expiring { expires_at };
        for (context, value, expires_at, token) in [
            (
                "cvv",
                json!("123"),
                1_900_000_000,
                "fse1.k1.AAAAAHE_swAAAQIDBAUGBwgJCgtlM-Qo55xBIXYYAP4fR2vf2Gn_9J0",
            ),
            (
                "ssn",
                json!("123-45-6789"),
                1_900_000_000,
                "fse1.k1.AAAAAHE_swAAAQIDBAUGBwgJCgtlM-Qo6NH3Nrt2r7KTsE2LyJm0ubHKqbP8MNyzHQ",
            ),
            (
                "age",
                json!(42),
                1_767_225_600,
                "fse1.k1.AAAAAGlVuQAAAQIDBAUGBwgJCgtzMAC3Q5W8paM9PJT2qCVrhGY",
            ),
        ] {
            assert_eq!(
                seal_as_with_nonce(k1, exp(expires_at), context, &value, NONCE),
                token
            );
            let opened = open_json_at(&ring, context, token, expires_at).unwrap();
            assert_eq!(serde_json::from_slice::<Value>(&opened).unwrap(), value);
            assert!(looks_like_token(token));
            assert_eq!(token_kid(token), Some("k1"));
        }
    }

    #[test]
    fn expiring_tokens_do_not_open_after_expiry_and_the_skew() {
        let ring = test_keyring();
        let k1 = ring.get("k1").unwrap();
        let expires_at = 1_900_000_000;
        let token = seal_json_as(k1, Format::Expiring { expires_at }, "cvv", b"\"123\"").unwrap();
        assert!(open_json_at(&ring, "cvv", &token, expires_at + EXPIRY_SKEW_SECS).is_ok());
        assert_eq!(
            open_json_at(&ring, "cvv", &token, expires_at + EXPIRY_SKEW_SECS + 1).unwrap_err(),
            OpenError::Expired
        );
        assert_eq!(OpenError::Expired.reason(), Reason::Expired);
        // Another field's context: refused before any expiry is looked at.
        assert_eq!(
            open_json_at(&ring, "ssn", &token, expires_at).unwrap_err(),
            OpenError::Rejected
        );
    }

    /// The expiry is in the clear but authenticated: moving it later (or earlier) breaks the
    /// token, and an `fse1` payload under the `fs1` prefix (or the reverse) does not open.
    #[test]
    fn an_edited_expiry_or_prefix_fails_authentication() {
        let ring = test_keyring();
        let k1 = ring.get("k1").unwrap();
        let expires_at = 1_900_000_000u64;
        let token = seal_json_as(k1, Format::Expiring { expires_at }, "cvv", b"\"123\"").unwrap();
        let payload = B64URL.decode(token.rsplit('.').next().unwrap()).unwrap();
        for later in [expires_at + 86_400, expires_at - 1, u64::MAX] {
            let mut edited = payload.clone();
            edited[..8].copy_from_slice(&later.to_be_bytes());
            let forged = format!("fse1.k1.{}", B64URL.encode(&edited));
            assert_eq!(
                open_json_at(&ring, "cvv", &forged, expires_at).unwrap_err(),
                OpenError::Rejected,
                "{later}"
            );
        }
        let as_fs1 = format!("fs1.k1.{}", B64URL.encode(&payload[8..]));
        assert_eq!(
            open_json_at(&ring, "cvv", &as_fs1, expires_at).unwrap_err(),
            OpenError::Rejected
        );
        let plain = seal_json(k1, "cvv", b"\"123\"").unwrap();
        let as_fse1 = plain.replacen("fs1.", "fse1.", 1);
        assert!(open_json_at(&ring, "cvv", &as_fse1, 0).is_err());
        let short = "fse1.k1.AAAA";
        assert_eq!(
            open_json_at(&ring, "cvv", short, 0).unwrap_err(),
            OpenError::BadEncoding
        );
    }

    /// docs/tokens.md's `fsd1` vectors (HKDF-SHA256 then AES-SIV; Python `cryptography`
    /// reproduces them in tests/python/test_tokens.py).
    #[test]
    fn searchable_token_vectors() {
        let ring = test_keyring();
        let k1 = ring.get("k1").unwrap();
        assert_eq!(
            crate::crypto::keyring::tests::hex(&k1.siv_key[..]),
            "f4ba092ffb178676299a1109e42252e2d019d01e8b312d96efbe3945bea975c347dec56a4bc27d732c05714986ee6b3f53bccd2be35aef576ec35188d5fcc074"
        );
        for (context, value, token) in [
            (
                "ssn",
                json!("123-45-6789"),
                "fsd1.k1.WC8lXF_GoTMd2Yu1U8p4MNm1OhoRXH8vUf8SZtQ",
            ),
            (
                "email",
                json!("ada@example.com"),
                "fsd1.k1.JaoyVDkrIF0IeXY7aSBzK-ygGUDtlRNKY_Cs8BWhnfiU",
            ),
            ("age", json!(42), "fsd1.k1.TyyKwYPUWxIjQTwMN9qVn2X3"),
        ] {
            let json = serde_json::to_vec(&value).unwrap();
            assert_eq!(seal_searchable(k1, context, &json), token);
            // Deterministic: every seal of the same value is the same token.
            assert_eq!(
                seal_json_as(k1, Format::Searchable, context, &json).unwrap(),
                token
            );
            assert_eq!(open(&ring, context, token).unwrap(), value);
            assert_eq!(format_of(token), Some(Format::Searchable));
            assert!(looks_like_token(token));
        }
        // Bound to its context and key, tamper-evident.
        let token = "fsd1.k1.WC8lXF_GoTMd2Yu1U8p4MNm1OhoRXH8vUf8SZtQ";
        assert_eq!(
            open(&ring, "tax_id", token).unwrap_err(),
            OpenError::Rejected
        );
        let mut raw = B64URL.decode(&token[8..]).unwrap();
        raw[20] ^= 1;
        let tampered = format!("fsd1.k1.{}", B64URL.encode(&raw));
        assert_eq!(
            open(&ring, "ssn", &tampered).unwrap_err(),
            OpenError::Rejected
        );
        assert_eq!(
            open(&ring, "ssn", "fsd1.k1.AAAA").unwrap_err(),
            OpenError::BadEncoding
        );
        // Different values, different tokens; an fs1 payload under fsd1 does not open.
        assert_ne!(seal_searchable(k1, "ssn", b"\"123-45-6780\""), token);
        let fs1 = seal_json(k1, "ssn", b"\"123-45-6789\"").unwrap();
        assert!(open(&ring, "ssn", &fs1.replacen("fs1.", "fsd1.", 1)).is_err());
    }

    /// docs/tokens.md's `fsb1` vectors (HKDF-SHA256 per subject, then AES-256-GCM; Python
    /// `cryptography` reproduces them in tests/python/test_tokens.py).
    #[test]
    fn subject_bound_token_vectors_and_erasure() {
        let ring = test_keyring();
        let k1 = ring.get("k1").unwrap();
        let json = br#""123-45-6789""#;
        for (subject, token) in [
            (
                "42",
                "fsb1.k1.AAECAwQFBgcICQoL3PyUQ4nYK8zPBaAX2uzjJmbqw1d5vKWJsA6P7RQ",
            ),
            (
                "43",
                "fsb1.k1.AAECAwQFBgcICQoLycN_dscX97y3qHJ43o7TbkfKvQaCJAm5x8idSfE",
            ),
        ] {
            assert_eq!(
                seal_subject_with_nonce(k1, subject, "ssn", json, NONCE),
                token
            );
            assert_eq!(
                &open_json_for_subject(&ring, "ssn", token, Some(subject)).unwrap()[..],
                json
            );
            assert_eq!(format_of(token), Some(Format::SubjectBound));
        }
        let for_42 = "fsb1.k1.AAECAwQFBgcICQoL3PyUQ4nYK8zPBaAX2uzjJmbqw1d5vKWJsA6P7RQ";
        // Another subject's request: the key differs, the token does not open.
        assert_eq!(
            open_json_for_subject(&ring, "ssn", for_42, Some("43")).unwrap_err(),
            OpenError::Rejected
        );
        // Without a subject, and through the subject-less entry points: refused by name.
        assert_eq!(
            open_json(&ring, "ssn", for_42).unwrap_err(),
            OpenError::NoSubject
        );
        assert_eq!(
            open_json_for_subject(&ring, "ssn", for_42, None).unwrap_err(),
            OpenError::NoSubject
        );
        assert_eq!(
            crate::crypto::keyring::tests::hex(&crate::crypto::keyring::subject_digest("42")),
            "d32def2b6b68aa14d94973fe3709c6874a622b627a0f81c2f25fddcc94cc6d90"
        );
        // Erased: neither opens nor seals again; other subjects are untouched.
        let mut file = crate::crypto::keyring::tests::test_keyring_file();
        file.shredded.push(crate::crypto::keyring::Shred {
            subject_sha256: "d32def2b6b68aa14d94973fe3709c6874a622b627a0f81c2f25fddcc94cc6d90"
                .into(),
            at: "2026-12-05T00:00:00Z".into(),
        });
        let erased = Keyring::from_file(file).unwrap();
        assert!(erased.is_shredded("42") && !erased.is_shredded("43"));
        assert_eq!(
            open_json_for_subject(&erased, "ssn", for_42, Some("42")).unwrap_err(),
            OpenError::SubjectErased
        );
        assert_eq!(
            seal_for_subject(&erased, "42", "ssn", json).unwrap_err(),
            Reason::SubjectErased
        );
        assert!(seal_for_subject(&erased, "43", "ssn", json).is_ok());
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
            let aad = aad(Format::Fs1, "old", "ssn");
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
