//! JWE compact values encrypted by the client for the proxy (contract §3, RFC 7516).
//!
//! A request field at a `decrypt` path may carry `header.encrypted_key.iv.ciphertext.tag`
//! instead of an `fs1` token. Two profiles are accepted, and nothing else — other algorithms,
//! `zip`, `crit` are refused rather than half-supported: a proxy that guesses at a header it
//! does not understand can be steered into a weaker mode.
//! - `alg` `RSA-OAEP-256`, `enc` `A256GCM` (contract §3): the content-encryption key (CEK) is
//!   wrapped with one of the proxy's RSA keys, named by the required `kid`.
//! - HPKE integrated encryption (draft-ietf-jose-hpke-encrypt-20 §5): `alg`
//!   `HPKE-X25519-A256GCM`, `HPKE-3` or the post-quantum `HPKE-10` and no `enc`; the encrypted-key segment is the HPKE
//!   encapsulated key, the IV and tag segments are empty, the ciphertext segment is the HPKE
//!   ciphertext (tag included), the HPKE `aad` is the protected header as received and `info`
//!   is empty. See [`super::hpke`].
//!
//! The RSA step must not become an oracle (Bleichenbacher / Manger): whatever goes wrong while
//! unwrapping the CEK (bad padding, wrong key, wrong length), [`open`] substitutes a random CEK
//! and runs the AES-GCM decryption anyway (RFC 7516 §11.5), so a bad encrypted key and a bad
//! tag end in the same [`JweError::DecryptionFailed`] after the same steps. The private-key
//! operation itself sits behind [`KeyUnwrap`], implemented by the RSA key set with aws-lc-rs
//! (constant-time OAEP decoding; the `rsa` crate has RUSTSEC-2023-0071).
//!
//! The protected header's `iat` and `jti` are returned in [`Opened`] so routes with `max_age`
//! can check freshness and replay; this module checks only their types.

use crate::reason::Reason;
use std::fmt;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Nonce, Tag};
use base64::Engine;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

pub use super::hpke::Suite;

/// Longest compact JWE accepted, in bytes (64 KiB).
///
/// A JWE here replaces one JSON field, not a document: with an RSA-2048 key the fixed overhead
/// (header, 342-char encrypted key, IV, tag) is well under 1 KiB, which leaves ~47 KiB of
/// plaintext after base64url — far more than any form field. Whole bodies use the envelope
/// (contract §3) instead. The bound caps the base64 decoding and AES-GCM work an
/// unauthenticated client can make us do per value before anything is verified.
pub const MAX_JWE_LEN: usize = 64 * 1024;

/// Longest `kid` accepted: it is echoed in the error for an unknown key and logged.
pub const MAX_KID_LEN: usize = 256;

/// Longest `jti` accepted: a route with `max_age` remembers every `jti` for the window.
pub const MAX_JTI_LEN: usize = 256;

/// The only key-management algorithm accepted.
pub const ALG: &str = "RSA-OAEP-256";
/// The only content-encryption algorithm accepted.
pub const ENC: &str = "A256GCM";

const CEK_LEN: usize = 32;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Unwraps a JWE content-encryption key: RSA-OAEP with SHA-256 and MGF1-SHA-256 under the
/// private key named `kid`. Implemented by the proxy's RSA key set.
///
/// Implementations must not reveal *why* an unwrap failed (no logging of padding errors, no
/// distinct timing beyond what the RSA primitive does): every failure is `Err(())`, and
/// [`open`] turns it into the same error as a bad authentication tag.
pub trait KeyUnwrap {
    /// Decrypts `encrypted_key` with the private key `kid`.
    // The unit error is the point: a failure must carry nothing about why it failed.
    #[allow(clippy::result_unit_err)]
    fn unwrap_cek(&self, kid: &str, encrypted_key: &[u8]) -> Result<Zeroizing<Vec<u8>>, ()>;

    /// Whether a private key with this id is available (for the `unknown_key` error, which
    /// names the kid and is safe to distinguish: the kid is public, from the JWKS).
    fn knows(&self, kid: &str) -> bool;

    /// HPKE base-mode open with the HPKE key `kid` (empty `info`). `None` when there is no
    /// such key; `Some(Err(()))` for every decryption failure alike, a suite of another KEM
    /// than the key's included. The default has no keys.
    #[allow(clippy::result_unit_err)]
    fn hpke_open(
        &self,
        _kid: &str,
        _suite: Suite,
        _encapsulated: &[u8],
        _aad: &[u8],
        _ciphertext: &[u8],
    ) -> Option<Result<Zeroizing<Vec<u8>>, ()>> {
        None
    }
}

/// A successfully opened JWE.
#[derive(Clone, PartialEq)]
pub struct Opened {
    /// The plaintext: a JSON string, or any JSON value when the header has `cty: json`.
    pub value: Value,
    /// The key that unwrapped the CEK.
    pub kid: String,
    /// The protected header's `iat` (NumericDate, seconds since the epoch), unchecked.
    pub iat: Option<i64>,
    /// The protected header's `jti`, unchecked.
    pub jti: Option<String>,
    /// The protected header's `fsc`: the field context the client made the value for
    /// (contract §3 of 1.1), compared with the field it arrives in by the caller.
    pub fsc: Option<String>,
}

/// The value is plaintext from the client: never print it.
impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("value", &"<redacted>")
            .field("kid", &self.kid)
            .field("iat", &self.iat)
            .field("jti", &self.jti)
            .field("fsc", &self.fsc)
            .finish()
    }
}

/// Why a JWE did not open. All are the client's fault (a 400 with the contract's error JSON);
/// none carries plaintext, key bytes or the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JweError {
    /// Not five base64url segments, the protected header is not a JSON object, or the IV or tag
    /// has the wrong length.
    Malformed,
    /// Neither `alg` `RSA-OAEP-256` with `enc` `A256GCM`, nor an accepted HPKE `alg` without
    /// `enc`.
    UnsupportedAlgorithm,
    /// The header asks for something not supported: `zip` (compression), `crit`, or the HPKE
    /// parameters of modes not implemented (`psk_id`, `ek`).
    UnsupportedHeader,
    /// No private key with this id.
    UnknownKey(String),
    /// Longer than [`MAX_JWE_LEN`].
    TooLarge,
    /// The encrypted key did not unwrap or the content failed authentication — deliberately
    /// indistinguishable (no padding oracle).
    DecryptionFailed,
    /// `cty` is `json` but the plaintext is not one JSON value.
    NotJson,
    /// Without `cty: json`, the plaintext must be a UTF-8 string, and is not.
    NotUtf8,
    /// A header member has the wrong type or size (`kid` missing or not a string, `iat` not an
    /// integer, `jti` or `cty` not a string), or a member name is repeated.
    BadHeader,
}

impl JweError {
    /// The reason, in the crate's one vocabulary.
    pub fn reason(&self) -> Reason {
        match self {
            JweError::Malformed => Reason::Malformed,
            JweError::UnsupportedAlgorithm => Reason::UnsupportedAlgorithm,
            JweError::UnsupportedHeader => Reason::UnsupportedHeader,
            JweError::UnknownKey(_) => Reason::UnknownKey,
            JweError::TooLarge => Reason::TooLarge,
            JweError::DecryptionFailed => Reason::DecryptionFailed,
            JweError::NotJson => Reason::NotJson,
            JweError::NotUtf8 => Reason::NotUtf8,
            JweError::BadHeader => Reason::BadHeader,
        }
    }

    /// The key id involved, when there is one.
    pub fn kid(&self) -> Option<&str> {
        match self {
            JweError::UnknownKey(k) => Some(k),
            _ => None,
        }
    }
}

impl fmt::Display for JweError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JweError::Malformed => f.write_str(
                "not a JWE compact serialization (expected five base64url parts, a JSON object \
                 header, a 12-byte IV and a 16-byte tag)",
            ),
            JweError::UnsupportedAlgorithm => {
                write!(f, "the JWE must use alg `{ALG}` and enc `{ENC}`")
            }
            JweError::UnsupportedHeader => {
                f.write_str("the JWE header uses `zip` or `crit`, which are not supported")
            }
            JweError::UnknownKey(k) => write!(f, "key `{k}` is not one of the proxy's keys"),
            JweError::TooLarge => write!(f, "the JWE is longer than {MAX_JWE_LEN} bytes"),
            JweError::DecryptionFailed => f.write_str(
                "the JWE failed to decrypt (wrong key, tampered, or not encrypted for this proxy)",
            ),
            JweError::NotJson => {
                f.write_str("the JWE header says `cty: json` but the plaintext is not JSON")
            }
            JweError::NotUtf8 => f.write_str("the JWE plaintext is not UTF-8 text"),
            JweError::BadHeader => f.write_str(
                "the JWE header is invalid (`kid` required as a string, `iat` an integer, \
                 `jti` and `cty` strings, no repeated members)",
            ),
        }
    }
}

impl std::error::Error for JweError {}

/// Whether `s` looks like a JWE compact serialization: exactly five segments of base64url
/// characters, the first decoding to a JSON object. Says nothing of validity; no size limit, so
/// that an oversized JWE is recognised and refused by [`open`] rather than passed on.
pub fn looks_like_jwe(s: &str) -> bool {
    let mut segments = 0;
    for segment in s.split('.') {
        segments += 1;
        if segments > 5
            || !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    if segments != 5 {
        return false;
    }
    let header = s.split('.').next().unwrap_or_default();
    B64URL
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
        .is_some()
}

/// The protected header as a JSON object, remembering whether a member name was repeated
/// (serde_json keeps the last silently; RFC 7515 §5.2 lets us reject, and we do, since two
/// parsers could read two different `alg`s).
struct Header {
    members: Map<String, Value>,
    duplicate: bool,
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;

        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Header;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
                let mut header = Header {
                    members: Map::new(),
                    duplicate: false,
                };
                while let Some(name) = map.next_key::<String>()? {
                    let value = map.next_value::<Value>()?;
                    if header.members.insert(name, value).is_some() {
                        header.duplicate = true;
                    }
                }
                Ok(header)
            }
        }

        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// How the content is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// RSA-OAEP-256 key wrapping, A256GCM content.
    Rsa,
    /// HPKE integrated encryption.
    Hpke(Suite),
}

/// The checked protected header.
struct Checked {
    scheme: Scheme,
    kid: String,
    json: bool,
    iat: Option<i64>,
    jti: Option<String>,
    fsc: Option<String>,
}

fn check_header(header: &Header) -> Result<Checked, JweError> {
    let members = &header.members;
    if header.duplicate {
        return Err(JweError::BadHeader);
    }
    let alg = members.get("alg").and_then(Value::as_str);
    let enc = members.get("enc");
    let scheme = match (alg, enc) {
        (Some(ALG), Some(Value::String(enc))) if enc == ENC => Scheme::Rsa,
        // Integrated encryption: the draft forbids `enc` (the suite fixes the AEAD).
        (Some(alg), None) => {
            Scheme::Hpke(Suite::from_alg(alg).ok_or(JweError::UnsupportedAlgorithm)?)
        }
        _ => return Err(JweError::UnsupportedAlgorithm),
    };
    // `crit` lists extensions the recipient must understand; we implement none (and RFC 7515
    // §4.1.11 forbids listing registered names such as `iat`), so any `crit` is refused.
    // `psk_id` asks for HPKE PSK mode and `ek` belongs to HPKE key encryption: neither is
    // implemented, and ignoring them would decrypt something other than what was meant.
    if ["zip", "crit", "psk_id", "ek"]
        .iter()
        .any(|name| members.contains_key(*name))
    {
        return Err(JweError::UnsupportedHeader);
    }
    let kid = match members.get("kid") {
        Some(Value::String(kid))
            if !kid.is_empty()
                && kid.len() <= MAX_KID_LEN
                && !kid.chars().any(char::is_control) =>
        {
            kid.clone()
        }
        _ => return Err(JweError::BadHeader),
    };
    // RFC 7515 §4.1.10: media types are case-insensitive and `application/` may be omitted.
    let json = match members.get("cty") {
        None => false,
        Some(Value::String(cty)) => {
            cty.eq_ignore_ascii_case("json") || cty.eq_ignore_ascii_case("application/json")
        }
        Some(_) => return Err(JweError::BadHeader),
    };
    let iat = match members.get("iat") {
        None => None,
        Some(v) => Some(v.as_i64().ok_or(JweError::BadHeader)?),
    };
    let jti = match members.get("jti") {
        None => None,
        Some(Value::String(jti)) if jti.len() <= MAX_JTI_LEN => Some(jti.clone()),
        Some(_) => return Err(JweError::BadHeader),
    };
    // A field context is a member name or a configured context: bounded like a `jti`.
    let fsc = match members.get("fsc") {
        None => None,
        Some(Value::String(fsc)) if fsc.len() <= MAX_JTI_LEN => Some(fsc.clone()),
        Some(_) => return Err(JweError::BadHeader),
    };
    Ok(Checked {
        scheme,
        kid,
        json,
        iat,
        jti,
        fsc,
    })
}

/// Opens a JWE compact serialization (RFC 7516 §5.2) encrypted for one of `keys`.
pub fn open(compact: &str, keys: &dyn KeyUnwrap) -> Result<Opened, JweError> {
    if compact.len() > MAX_JWE_LEN {
        return Err(JweError::TooLarge);
    }
    let mut parts = compact.split('.');
    let (Some(header_b64), Some(key_b64), Some(iv_b64), Some(ct_b64), Some(tag_b64), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(JweError::Malformed);
    };

    let header_bytes = B64URL.decode(header_b64).map_err(|_| JweError::Malformed)?;
    let header: Header = serde_json::from_slice(&header_bytes).map_err(|_| JweError::Malformed)?;
    let checked = check_header(&header)?;

    let encrypted_key = B64URL.decode(key_b64).map_err(|_| JweError::Malformed)?;
    let iv = B64URL.decode(iv_b64).map_err(|_| JweError::Malformed)?;
    let tag = B64URL.decode(tag_b64).map_err(|_| JweError::Malformed)?;
    // Decoded into a zeroizing buffer: it becomes the plaintext in place.
    let mut buffer = Zeroizing::new(B64URL.decode(ct_b64).map_err(|_| JweError::Malformed)?);

    let buffer = match checked.scheme {
        Scheme::Rsa => {
            if iv.len() != IV_LEN || tag.len() != TAG_LEN {
                return Err(JweError::Malformed);
            }
            if !keys.knows(&checked.kid) {
                return Err(JweError::UnknownKey(checked.kid));
            }
            let cek = unwrap_or_random(keys, &checked.kid, &encrypted_key)?;
            // Per-request cipher: zeroized on drop, GHASH's key included.
            let cipher = super::keyring::ZeroizingAesGcm::from_slice(&cek[..])
                .ok_or(JweError::DecryptionFailed)?;
            // RFC 7516 §5.2 step 14: the AAD is the ASCII of the protected header *as received*.
            cipher
                .decrypt_in_place_detached(
                    Nonce::from_slice(&iv),
                    header_b64.as_bytes(),
                    &mut buffer[..],
                    Tag::from_slice(&tag),
                )
                .map_err(|_| JweError::DecryptionFailed)?;
            buffer
        }
        Scheme::Hpke(suite) => {
            // draft-ietf-jose-hpke-encrypt-20 §5: IV and tag are empty (the tag is inside the
            // HPKE ciphertext).
            if !iv.is_empty() || !tag.is_empty() {
                return Err(JweError::Malformed);
            }
            keys.hpke_open(
                &checked.kid,
                suite,
                &encrypted_key,
                header_b64.as_bytes(),
                &buffer,
            )
            .ok_or_else(|| JweError::UnknownKey(checked.kid.clone()))?
            .map_err(|()| JweError::DecryptionFailed)?
        }
    };

    let value = if checked.json {
        serde_json::from_slice::<Value>(&buffer).map_err(|_| JweError::NotJson)?
    } else {
        Value::String(
            std::str::from_utf8(&buffer)
                .map_err(|_| JweError::NotUtf8)?
                .to_owned(),
        )
    };
    Ok(Opened {
        value,
        kid: checked.kid,
        iat: checked.iat,
        jti: checked.jti,
        fsc: checked.fsc,
    })
}

/// The CEK from `encrypted_key`, or a random one when the unwrap fails (see [`key_or_random`]).
fn unwrap_or_random(
    keys: &dyn KeyUnwrap,
    kid: &str,
    encrypted_key: &[u8],
) -> Result<Zeroizing<[u8; CEK_LEN]>, JweError> {
    key_or_random(keys.unwrap_cek(kid, encrypted_key)).map_err(|()| JweError::DecryptionFailed)
}

/// The 32-byte key an RSA-OAEP unwrap produced, or — if it failed or yielded any other length —
/// a random one, chosen without branching on which (RFC 7516 §11.5). The AES-GCM decryption
/// that follows then fails on the tag exactly as it would for a tampered ciphertext, so neither
/// the error nor the steps taken say whether the RSA padding was valid. Used for JWE CEKs and
/// envelope session keys alike. `Err` only if the OS random source fails (fail closed).
#[allow(clippy::result_unit_err)]
pub(crate) fn key_or_random(
    unwrapped: Result<Zeroizing<Vec<u8>>, ()>,
) -> Result<Zeroizing<[u8; CEK_LEN]>, ()> {
    let mut key = Zeroizing::new([0u8; CEK_LEN]);
    // Drawn on every call, so both paths do the same work.
    getrandom::fill(&mut key[..]).map_err(|_| ())?;
    let mut candidate = Zeroizing::new([0u8; CEK_LEN]);
    let mut good = 0u8;
    if let Ok(k) = &unwrapped {
        let n = k.len().min(CEK_LEN);
        candidate[..n].copy_from_slice(&k[..n]);
        good = u8::from(k.len() == CEK_LEN);
    }
    // 0xff to take the unwrapped key, 0x00 to keep the random one.
    let mask = 0u8.wrapping_sub(std::hint::black_box(good));
    for (out, unwrapped) in key.iter_mut().zip(candidate.iter()) {
        *out = (*out & !mask) | (*unwrapped & mask);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use rsa::pkcs8::DecodePrivateKey;
    use rsa::rand_core::OsRng;
    use rsa::sha2::Sha256;
    use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
    use serde_json::json;

    use super::*;
    use aes_gcm::{Aes256Gcm, KeyInit};

    use crate::crypto::client_keys::ClientKeys;
    use crate::crypto::rsa_keys::TEST_KEY_PEM;

    /// The test key set: one key, `rsa1`, unwrapping with the `rsa` crate (fine in tests; the
    /// proxy's implementation uses aws-lc-rs).
    struct TestKeys {
        private: RsaPrivateKey,
        public: RsaPublicKey,
    }

    impl KeyUnwrap for TestKeys {
        fn unwrap_cek(&self, kid: &str, encrypted_key: &[u8]) -> Result<Zeroizing<Vec<u8>>, ()> {
            if kid != "rsa1" {
                return Err(());
            }
            self.private
                .decrypt(Oaep::new::<Sha256>(), encrypted_key)
                .map(Zeroizing::new)
                .map_err(|_| ())
        }

        fn knows(&self, kid: &str) -> bool {
            kid == "rsa1"
        }
    }

    fn keys() -> &'static TestKeys {
        static KEYS: OnceLock<TestKeys> = OnceLock::new();
        KEYS.get_or_init(|| {
            let private = RsaPrivateKey::from_pkcs8_pem(TEST_KEY_PEM).expect("test key parses");
            let public = RsaPublicKey::from(&private);
            TestKeys { private, public }
        })
    }

    /// The parts of a JWE, before encoding, so tests can change any of them.
    struct Parts {
        header: String,
        encrypted_key: Vec<u8>,
        iv: Vec<u8>,
        ciphertext: Vec<u8>,
        tag: Vec<u8>,
    }

    impl Parts {
        fn compact(&self) -> String {
            [
                B64URL.encode(&self.header),
                B64URL.encode(&self.encrypted_key),
                B64URL.encode(&self.iv),
                B64URL.encode(&self.ciphertext),
                B64URL.encode(&self.tag),
            ]
            .join(".")
        }
    }

    /// Encrypts `plaintext` like a client would: a random CEK wrapped with RSA-OAEP-256 under
    /// the test key, AES-256-GCM with the encoded header as AAD.
    fn encrypt_parts(header: &Value, plaintext: &[u8]) -> Parts {
        let header = serde_json::to_string(header).unwrap();
        let mut cek = [0u8; CEK_LEN];
        let mut iv = [0u8; IV_LEN];
        getrandom::fill(&mut cek).unwrap();
        getrandom::fill(&mut iv).unwrap();
        let encrypted_key = keys()
            .public
            .encrypt(&mut OsRng, Oaep::new::<Sha256>(), &cek)
            .unwrap();
        let mut ciphertext = plaintext.to_vec();
        let tag = Aes256Gcm::new_from_slice(&cek)
            .unwrap()
            .encrypt_in_place_detached(
                Nonce::from_slice(&iv),
                B64URL.encode(&header).as_bytes(),
                &mut ciphertext,
            )
            .unwrap();
        Parts {
            header,
            encrypted_key,
            iv: iv.to_vec(),
            ciphertext,
            tag: tag.to_vec(),
        }
    }

    fn encrypt(header: &Value, plaintext: &[u8]) -> String {
        encrypt_parts(header, plaintext).compact()
    }

    fn standard() -> Value {
        json!({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "rsa1"})
    }

    fn with(member: &str, value: Value) -> Value {
        let mut header = standard();
        header[member] = value;
        header
    }

    fn without(member: &str) -> Value {
        let mut header = standard();
        header.as_object_mut().unwrap().remove(member);
        header
    }

    fn open_err(compact: &str) -> JweError {
        open(compact, keys()).unwrap_err()
    }

    /// Flips one bit in a decoded segment and re-encodes.
    fn flip(compact: &str, segment: usize, byte: usize) -> String {
        let mut parts: Vec<String> = compact.split('.').map(str::to_owned).collect();
        let mut bytes = B64URL.decode(&parts[segment]).unwrap();
        bytes[byte] ^= 0x01;
        parts[segment] = B64URL.encode(bytes);
        parts.join(".")
    }

    #[test]
    fn opens_a_string() {
        let jwe = encrypt(&standard(), "123-45-6789".as_bytes());
        assert!(looks_like_jwe(&jwe));
        let opened = open(&jwe, keys()).unwrap();
        assert_eq!(opened.value, json!("123-45-6789"));
        assert_eq!(opened.kid, "rsa1");
        assert_eq!((opened.iat, opened.jti), (None, None));
        // Without `cty: json`, JSON-looking text is still just a string.
        let jwe = encrypt(&standard(), b"{\"a\":1}");
        assert_eq!(open(&jwe, keys()).unwrap().value, json!("{\"a\":1}"));
        let jwe = encrypt(&standard(), b"");
        assert_eq!(open(&jwe, keys()).unwrap().value, json!(""));
    }

    #[test]
    fn cty_json_opens_any_json_value() {
        for cty in ["json", "JSON", "application/json", "Application/JSON"] {
            let jwe = encrypt(
                &with("cty", json!(cty)),
                br#"{"card":"4111","exp":[12,2030]}"#,
            );
            assert_eq!(
                open(&jwe, keys()).unwrap().value,
                json!({"card": "4111", "exp": [12, 2030]}),
                "{cty}"
            );
        }
        let jwe = encrypt(&with("cty", json!("json")), b"42");
        assert_eq!(open(&jwe, keys()).unwrap().value, json!(42));
        let jwe = encrypt(&with("cty", json!("json")), br#""text""#);
        assert_eq!(open(&jwe, keys()).unwrap().value, json!("text"));
        // Another content type is opened as a string.
        let jwe = encrypt(&with("cty", json!("text/plain")), b"42");
        assert_eq!(open(&jwe, keys()).unwrap().value, json!("42"));
    }

    #[test]
    fn exposes_iat_and_jti() {
        let mut header = with("iat", json!(1_795_392_000));
        header["jti"] = json!("b7e6c1a4");
        let opened = open(&encrypt(&header, b"x"), keys()).unwrap();
        assert_eq!(opened.iat, Some(1_795_392_000));
        assert_eq!(opened.jti.as_deref(), Some("b7e6c1a4"));
        for bad in [
            with("iat", json!("1795392000")),
            with("iat", json!(1.5)),
            with("iat", json!(u64::MAX)),
            with("jti", json!(7)),
            with("jti", json!("j".repeat(MAX_JTI_LEN + 1))),
            with("cty", json!(1)),
        ] {
            assert_eq!(open_err(&encrypt(&bad, b"x")), JweError::BadHeader, "{bad}");
        }
    }

    #[test]
    fn refuses_other_algorithms() {
        for bad in [
            with("alg", json!("RSA1_5")),
            with("alg", json!("RSA-OAEP")),
            with("alg", json!("dir")),
            with("alg", json!("rsa-oaep-256")),
            without("alg"),
            with("enc", json!("A128GCM")),
            with("enc", json!("A256CBC-HS512")),
            without("enc"),
        ] {
            // The rest of the JWE is a valid RSA-OAEP-256 / A256GCM one: the header decides.
            assert_eq!(
                open_err(&encrypt(&bad, b"x")),
                JweError::UnsupportedAlgorithm,
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_zip_and_crit() {
        for bad in [
            with("zip", json!("DEF")),
            with("crit", json!(["exp"])),
            with("crit", json!([])),
        ] {
            assert_eq!(
                open_err(&encrypt(&bad, b"x")),
                JweError::UnsupportedHeader,
                "{bad}"
            );
        }
    }

    #[test]
    fn kid_is_required_and_must_be_known() {
        for bad in [
            without("kid"),
            with("kid", json!(1)),
            with("kid", json!("")),
            with("kid", json!("a\nb")),
            with("kid", json!("k".repeat(MAX_KID_LEN + 1))),
        ] {
            assert_eq!(open_err(&encrypt(&bad, b"x")), JweError::BadHeader, "{bad}");
        }
        let err = open_err(&encrypt(&with("kid", json!("rsa9")), b"x"));
        assert_eq!(err, JweError::UnknownKey("rsa9".into()));
        assert_eq!(
            (err.reason().as_str(), err.kid()),
            ("unknown_key", Some("rsa9"))
        );
    }

    #[test]
    fn duplicate_header_members_are_refused() {
        // Two `alg`s: a parser keeping the first and one keeping the last would disagree.
        let header = r#"{"alg":"RSA1_5","alg":"RSA-OAEP-256","enc":"A256GCM","kid":"rsa1"}"#;
        let mut parts = encrypt_parts(&standard(), b"x");
        parts.header = header.to_owned();
        assert!(looks_like_jwe(&parts.compact()));
        assert_eq!(open_err(&parts.compact()), JweError::BadHeader);
    }

    #[test]
    fn malformed_shapes() {
        let jwe = encrypt(&standard(), b"x");
        let segments: Vec<&str> = jwe.split('.').collect();
        let four = segments[..4].join(".");
        let six = format!("{jwe}.AAAA");
        let bad_b64 = jwe.replacen('.', ".!", 1);
        let padded = format!("{}=", jwe);
        let not_object = [B64URL.encode("[1]").as_str(), &segments[1..].join(".")].join(".");
        let not_json = [B64URL.encode("alg").as_str(), &segments[1..].join(".")].join(".");
        for bad in [
            four.as_str(),
            six.as_str(),
            bad_b64.as_str(),
            padded.as_str(),
            not_object.as_str(),
            not_json.as_str(),
            "",
            "....",
            "hunter2",
            "fs1.k1.AAECAwQFBgcICQoLczA4rdYfC_5aNxtjfrqyzTyv",
        ] {
            assert_eq!(open_err(bad), JweError::Malformed, "{bad}");
            assert!(!looks_like_jwe(bad), "{bad}");
        }
        // IV and tag lengths are fixed by A256GCM.
        let mut parts = encrypt_parts(&standard(), b"x");
        parts.iv = vec![0; 16];
        assert_eq!(open_err(&parts.compact()), JweError::Malformed);
        let mut parts = encrypt_parts(&standard(), b"x");
        parts.tag.truncate(12);
        assert_eq!(open_err(&parts.compact()), JweError::Malformed);
    }

    #[test]
    fn tampering_anywhere_fails_the_same_way() {
        let jwe = encrypt(&standard(), b"123-45-6789");
        let bad_ciphertext = flip(&jwe, 3, 0);
        let bad_tag = flip(&jwe, 4, 15);
        let bad_iv = flip(&jwe, 2, 0);
        // A bit flip in the RSA ciphertext breaks the OAEP padding check.
        let bad_key = flip(&jwe, 1, 100);
        // Another valid-looking key: a well-formed OAEP ciphertext of a different CEK.
        let mut other = encrypt_parts(&standard(), b"123-45-6789");
        other.encrypted_key = encrypt_parts(&standard(), b"").encrypted_key;
        // A CEK of the wrong size that unwraps fine.
        let mut short = encrypt_parts(&standard(), b"123-45-6789");
        short.encrypted_key = keys()
            .public
            .encrypt(&mut OsRng, Oaep::new::<Sha256>(), &[7u8; 16])
            .unwrap();
        // Garbage of the wrong length for the modulus.
        let mut garbage = encrypt_parts(&standard(), b"123-45-6789");
        garbage.encrypted_key = vec![0xAB; 5];
        let mut empty = encrypt_parts(&standard(), b"123-45-6789");
        empty.encrypted_key.clear();

        let tag_error = open_err(&bad_tag);
        assert_eq!(tag_error, JweError::DecryptionFailed);
        for bad in [
            bad_ciphertext,
            bad_iv,
            bad_key,
            other.compact(),
            short.compact(),
            garbage.compact(),
            empty.compact(),
        ] {
            let err = open_err(&bad);
            // Same variant, same reason, same message: nothing tells padding from tag.
            assert_eq!(err, tag_error, "{bad}");
            assert_eq!(err.reason(), tag_error.reason());
            assert_eq!(err.to_string(), tag_error.to_string());
        }
    }

    /// Counts unwraps and can be told to fail them, as a bad padding would.
    struct Counting {
        calls: std::cell::Cell<usize>,
        fail: bool,
    }

    impl KeyUnwrap for Counting {
        fn unwrap_cek(&self, kid: &str, encrypted_key: &[u8]) -> Result<Zeroizing<Vec<u8>>, ()> {
            self.calls.set(self.calls.get() + 1);
            let cek = keys().unwrap_cek(kid, encrypted_key)?;
            if self.fail {
                Err(())
            } else {
                Ok(cek)
            }
        }

        fn knows(&self, kid: &str) -> bool {
            keys().knows(kid)
        }
    }

    #[test]
    fn unwrap_failure_and_tag_failure_take_the_same_path() {
        let jwe = encrypt(&standard(), b"123-45-6789");
        let bad_tag = flip(&jwe, 4, 0);
        let failing = Counting {
            calls: 0.into(),
            fail: true,
        };
        let honest = Counting {
            calls: 0.into(),
            fail: false,
        };
        // An unwrap failure still goes on to AES-GCM (with a random CEK) and fails there.
        assert_eq!(open(&jwe, &failing), Err(JweError::DecryptionFailed));
        assert_eq!(open(&bad_tag, &honest), Err(JweError::DecryptionFailed));
        assert_eq!((failing.calls.get(), honest.calls.get()), (1, 1));
        // Checks before the unwrap do not reach the private key at all.
        assert_eq!(
            open(&encrypt(&with("kid", json!("rsa9")), b"x"), &honest),
            Err(JweError::UnknownKey("rsa9".into()))
        );
        assert_eq!(
            open(&encrypt(&with("alg", json!("RSA1_5")), b"x"), &honest),
            Err(JweError::UnsupportedAlgorithm)
        );
        assert_eq!(honest.calls.get(), 1);
        assert_eq!(open(&jwe, &honest).unwrap().value, json!("123-45-6789"));
    }

    #[test]
    fn the_header_is_authenticated() {
        // Re-encoding an equivalent header changes the AAD: it must not open.
        let parts = encrypt_parts(&standard(), b"x");
        let mut changed = encrypt_parts(&standard(), b"x");
        changed.header = format!(" {}", parts.header);
        changed.encrypted_key = parts.encrypted_key.clone();
        changed.iv = parts.iv.clone();
        changed.ciphertext = parts.ciphertext.clone();
        changed.tag = parts.tag.clone();
        assert_eq!(open(&parts.compact(), keys()).unwrap().value, json!("x"));
        assert_eq!(open_err(&changed.compact()), JweError::DecryptionFailed);
        // Adding a member (here `cty`, which would change how the plaintext is read).
        let mut with_cty = encrypt_parts(&standard(), b"42");
        with_cty.header = serde_json::to_string(&with("cty", json!("json"))).unwrap();
        assert_eq!(open_err(&with_cty.compact()), JweError::DecryptionFailed);
    }

    #[test]
    fn plaintext_checks() {
        let jwe = encrypt(&standard(), &[0xff, 0xfe, b'a']);
        assert_eq!(open_err(&jwe), JweError::NotUtf8);
        for bad in [&b"{\"a\":"[..], b"not json", b"1 2", b"", &[0xff]] {
            let jwe = encrypt(&with("cty", json!("json")), bad);
            assert_eq!(open_err(&jwe), JweError::NotJson);
        }
    }

    #[test]
    fn oversized_values_are_refused_before_parsing() {
        let big = "A".repeat(MAX_JWE_LEN);
        let jwe = encrypt(&standard(), big.as_bytes());
        assert!(jwe.len() > MAX_JWE_LEN);
        assert!(looks_like_jwe(&jwe));
        assert_eq!(open_err(&jwe), JweError::TooLarge);
        let junk = "x".repeat(MAX_JWE_LEN + 1);
        assert_eq!(open_err(&junk), JweError::TooLarge);
        // Just under the limit still opens.
        let fits = "A".repeat(MAX_JWE_LEN / 2);
        let jwe = encrypt(&standard(), fits.as_bytes());
        assert!(jwe.len() <= MAX_JWE_LEN);
        assert_eq!(open(&jwe, keys()).unwrap().value, json!(fits));
    }

    #[test]
    fn errors_and_debug_never_show_secrets() {
        let opened = open(&encrypt(&standard(), b"hunter2"), keys()).unwrap();
        assert!(!format!("{opened:?}").contains("hunter2"));
        for e in [
            JweError::Malformed,
            JweError::UnsupportedAlgorithm,
            JweError::UnsupportedHeader,
            JweError::UnknownKey("k".into()),
            JweError::TooLarge,
            JweError::DecryptionFailed,
            JweError::NotJson,
            JweError::NotUtf8,
            JweError::BadHeader,
        ] {
            let reason = e.reason().as_str();
            assert!(reason
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            assert!(!e.to_string().is_empty());
            assert_eq!(e.kid().is_some(), matches!(e, JweError::UnknownKey(_)));
        }
    }

    /// Interoperability: JWEs produced by Python jwcrypto (`JWE(payload, header)`,
    /// `add_recipient(public_jwk)`, `serialize(compact=True)`) with the test key's public half,
    /// generated once and committed as constants so this test needs no Python at test time
    /// (tests/python/test_jwe_vectors.py checks the constants with jwcrypto and regenerates them).
    /// jwcrypto's header has spaces after `:` and `,` — the AAD must be the segment as received.
    #[test]
    fn opens_jwcrypto_vectors() {
        let opened = open(JWCRYPTO_STRING, keys()).unwrap();
        assert_eq!(opened.value, json!("123-45-6789"));
        assert_eq!(
            (opened.kid.as_str(), opened.iat, opened.jti),
            ("rsa1", None, None)
        );

        let opened = open(JWCRYPTO_JSON, keys()).unwrap();
        assert_eq!(
            opened.value,
            json!({"card": "4111 1111 1111 1111", "exp": [12, 2030]})
        );
        assert_eq!(opened.iat, Some(1_795_392_000));
        assert_eq!(
            opened.jti.as_deref(),
            Some("b7e6c1a4-3f7e-4e55-9a53-0d5f1c7b2e90")
        );
    }

    const JWCRYPTO_STRING: &str = "eyJhbGciOiAiUlNBLU9BRVAtMjU2IiwgImVuYyI6ICJBMjU2R0NNIiwgImtpZCI6ICJyc2ExIn0.K3J4k0owlZY19DVnbJ1yJY9KfotIfVwSZgUrj1Svbs3hlYtTikHwvfEDVd2FLr-ljUNmTC40mdX53sFizA5uURkD460dthY4dWt0iquaBaf_EHAy43j7wiGPmRjUakvlFhDOvzKCohNarP5Lr0tekD1-cGoaJTCS-NHHXmUPTHv0nmzVl3hb0YjvRU7uBym2KWmNeyfJygDbJbYm-T3axfbvBE_oThVDqxy8lPpvLwSiNOuBcUM3M_ep3qPjz7qasOEfGdZFnDNDlBRHoRfQ4h2cyq5Hve5Yzvr4Np1Z-KeBX1NpeVgAyov6NCOLIcgExNwWS6UlAMCmtsDEIR_qiA.1q6a_r3eSezq7kTI.KsFuCSDVuJC-z9c.vLtxYs7UEA9_1udCnN-GIw";
    const JWCRYPTO_JSON: &str = "eyJhbGciOiAiUlNBLU9BRVAtMjU2IiwgImVuYyI6ICJBMjU2R0NNIiwgImtpZCI6ICJyc2ExIiwgImN0eSI6ICJqc29uIiwgImlhdCI6IDE3OTUzOTIwMDAsICJqdGkiOiAiYjdlNmMxYTQtM2Y3ZS00ZTU1LTlhNTMtMGQ1ZjFjN2IyZTkwIn0.dKe_xnjZHdyxJmu1S7-x06hGbcqbxdoNOuMoZSq21O2FOjovF8PDCIWItoAhkRHi0x4Q-lLRBjOdVqgfW7aAoCca4gjJi3UGPEVUMNgA8CRbOdzyMuQdfoclPJa0oSkR9YI9FlF31A1u-UgK-wBU3y-0gm1UTct5es6jMziNf8KaT7-4NgRuNaifK5d043K4ZvfdFp40ZVN5DLVVWDlaGvKPGsuljE5-QjpTXoZYyZJjDLe-ubnqmFWINKue9nUHlNnbH5X4nnPUijak-nM1izSFmWMR3Dy6ICnfINIujdbOJ6AZh09GkmmbbLb8xddxEnzwXkp4SUY8xU78Q_GCQA.5DzHYfxjxAg3dTwO.gLpka-SMVpiCWytg2DjmgAS5KyQBLpaZL14g3mCo5DOO1bQRsB4TX2R4FOP6yA.BxYk0pgR2chgu74w0H6v_g";

    /// The draft's example key (draft-ietf-jose-hpke-encrypt-20, Appendix A.7).
    /// The proxy's key set holding only that key.
    fn draft_key() -> ClientKeys {
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(
                [
                    &[
                        0x30u8, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e,
                        0x04, 0x22, 0x04, 0x20
                    ][..],
                    &B64URL
                        .decode("VtBu3AuB4_RKgDCDqj1j-_Kzf12ekvaGxoAGmMDcDks")
                        .unwrap()[..],
                ]
                .concat()
            )
        );
        ClientKeys::new(vec![], vec![crate::crypto::hpke::from_pem(&pem).unwrap()]).unwrap()
    }

    /// Appendix A.7 of draft-ietf-jose-hpke-encrypt-20: an `HPKE-3` integrated-encryption
    /// JWE made by the draft authors' implementation opens to the draft's plaintext.
    #[test]
    fn the_draft_hpke_3_vector_opens() {
        const VECTOR: &str = "eyJhbGciOiJIUEtFLTMiLCJraWQiOiJuOWhqT3JoWHhzUV9sVE11M1Bxa2pIZ3dKVVJIWlBGM0hZNXAtTEZFZ3lnIn0.UkLR0N2IgxHkSZMhcCfxVO_F12kcq32ccJ8x8M4MfBE..I8Obflj3vInszfr9sC1tnnhaGPSGAL9L1-mURYJqYWWxTlI0OZrFSKiPY7dAuyrITxTiaboZTF2yNo0swzp8S5DTil1KdxCzrMUtz5Lb-rMbR5Q5uNO7NXegJceIQkR8p7iMfNXETCI8Pv36J45yDQDHrjNc6ZuJ8Xn6pHNFFot67L1GI0ULsrS2TCqztg2p76A1nObMGvA-1w5zwU6NN7p9WPCrvIKwO6MIl-LR4MV0-jnlmd5dlw3wGP5DDfqms7lZNbZ5X2d5U0s_7aT4Zar6ixUZrI6bSj4gntrEg8nLz9IlBT6tE6Gic3I2Abxbj1Ewn20WAZetzAQzWNdJk7lIZYAJZLeeBip605kw5DuwSEK_3jlXnPsDO3Zs.";
        let keys = draft_key();
        assert!(looks_like_jwe(VECTOR));
        let opened = open(VECTOR, &keys).unwrap();
        let text = opened.value.as_str().unwrap();
        assert!(text.starts_with("You can trust us to stick with you through thick and thin"));
        assert!(text.ends_with("We are your friends, Frodo."));
        assert_eq!(opened.kid, "n9hjOrhXxsQ_lTMu3PqkjHgwJURHZPF3HY5p-LFEgyg");
        // One flipped bit in the ciphertext or the encapsulated key: refused, same error.
        assert_eq!(
            open(&flip(VECTOR, 3, 5), &keys).unwrap_err(),
            JweError::DecryptionFailed
        );
        assert_eq!(
            open(&flip(VECTOR, 1, 5), &keys).unwrap_err(),
            JweError::DecryptionFailed
        );
    }

    /// draft-skokan-jose-hpke-pq-pqt, test vectors, HPKE-10: the post-quantum JWE made by the
    /// draft authors' implementation opens with the vector's key; one flipped bit anywhere in
    /// it (header, encapsulated key, ciphertext) is refused.
    #[test]
    fn the_draft_hpke_10_vector_opens() {
        let jwk: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/jose-hpke-pq/HPKE-10.jwk.json"
        ))
        .unwrap();
        let seed = B64URL.decode(jwk["priv"].as_str().unwrap()).unwrap();
        let pem = crate::crypto::hpke::pem(
            crate::crypto::hpke::KemKind::XWing,
            &seed.try_into().unwrap(),
        );
        let keys =
            ClientKeys::new(vec![], vec![crate::crypto::hpke::from_pem(&pem).unwrap()]).unwrap();
        let vector = include_str!("../../tests/fixtures/jose-hpke-pq/HPKE-10-compact.txt").trim();
        assert!(looks_like_jwe(vector));
        let opened = open(vector, &keys).unwrap();
        let text = opened.value.as_str().unwrap();
        assert!(text.starts_with("You can trust us to stick with you through thick and thin"));
        assert!(text.ends_with("We are your friends, Frodo."));
        assert_eq!(opened.kid, jwk["kid"]);
        for segment in [1, 3] {
            assert_eq!(
                open(&flip(vector, segment, 7), &keys).unwrap_err(),
                JweError::DecryptionFailed
            );
        }
        // The same value under the X25519 suite's name: refused like a bad tag.
        let parts: Vec<&str> = vector.split('.').collect();
        let relabelled = B64URL.encode(
            serde_json::to_string(&json!({"alg": "HPKE-X25519-A256GCM", "kid": jwk["kid"]}))
                .unwrap(),
        );
        let forged = [relabelled.as_str(), parts[1], "", parts[3], ""].join(".");
        assert_eq!(
            open(&forged, &keys).unwrap_err(),
            JweError::DecryptionFailed
        );
    }

    /// Seals like a client: HPKE single-shot with the encoded header as AAD.
    fn hpke_compact(
        keys: &ClientKeys,
        header: &Value,
        plaintext: &[u8],
        iv: &[u8],
        tag: &[u8],
    ) -> String {
        let header = B64URL.encode(serde_json::to_string(header).unwrap());
        let suite = Suite::from_alg(header_alg(&header)).unwrap_or(Suite::X25519Aes256Gcm);
        let (enc, ct) = keys.hpke_keys()[0]
            .seal(suite, b"", header.as_bytes(), plaintext)
            .unwrap();
        [
            header,
            B64URL.encode(enc),
            B64URL.encode(iv),
            B64URL.encode(ct),
            B64URL.encode(tag),
        ]
        .join(".")
    }

    fn header_alg(header_b64: &str) -> &'static str {
        let header: Value = serde_json::from_slice(&B64URL.decode(header_b64).unwrap()).unwrap();
        match header["alg"].as_str() {
            Some("HPKE-3") => "HPKE-3",
            _ => "HPKE-X25519-A256GCM",
        }
    }

    #[test]
    fn hpke_values_open_and_their_header_rules_hold() {
        let keys = draft_key();
        let kid = keys.hpke_keys()[0].kid().to_string();
        let header =
            json!({"alg": "HPKE-X25519-A256GCM", "kid": kid, "cty": "json", "iat": 1, "jti": "j"});
        let opened = open(
            &hpke_compact(&keys, &header, br#"{"a":[1,2]}"#, b"", b""),
            &keys,
        )
        .unwrap();
        assert_eq!(opened.value, json!({"a": [1, 2]}));
        assert_eq!((opened.iat, opened.jti.as_deref()), (Some(1), Some("j")));
        let hpke3 = json!({"alg": "HPKE-3", "kid": kid});
        let opened = open(&hpke_compact(&keys, &hpke3, b"plain", b"", b""), &keys).unwrap();
        assert_eq!(opened.value, json!("plain"));

        // The draft forbids `enc` with integrated encryption; IV and tag must be empty.
        let mut with_enc = header.clone();
        with_enc["enc"] = json!("A256GCM");
        assert_eq!(
            open(&hpke_compact(&keys, &with_enc, b"x", b"", b""), &keys).unwrap_err(),
            JweError::UnsupportedAlgorithm
        );
        assert_eq!(
            open(&hpke_compact(&keys, &header, b"x", b"iv", b""), &keys).unwrap_err(),
            JweError::Malformed
        );
        assert_eq!(
            open(&hpke_compact(&keys, &header, b"x", b"", b"tag"), &keys).unwrap_err(),
            JweError::Malformed
        );
        // PSK mode and key-encryption mode are not implemented: refused, not ignored.
        for member in ["psk_id", "ek"] {
            let mut h = header.clone();
            h[member] = json!("AAAA");
            assert_eq!(
                open(&hpke_compact(&keys, &h, b"x", b"", b""), &keys).unwrap_err(),
                JweError::UnsupportedHeader,
                "{member}"
            );
        }
        // Other HPKE suites of the draft (P-256, ChaCha20) are not accepted.
        for alg in ["HPKE-0", "HPKE-4", "HPKE-7", "HPKE-3-KE"] {
            let h = json!({"alg": alg, "kid": kid});
            assert_eq!(
                open(&hpke_compact(&keys, &h, b"x", b"", b""), &keys).unwrap_err(),
                JweError::UnsupportedAlgorithm,
                "{alg}"
            );
        }
        // An unknown kid names the kid; an RSA kid is not an HPKE key.
        let other = json!({"alg": "HPKE-X25519-A256GCM", "kid": "nope"});
        assert_eq!(
            open(&hpke_compact(&keys, &other, b"x", b"", b""), &keys).unwrap_err(),
            JweError::UnknownKey("nope".into())
        );
        // The header is the AAD: a value re-labelled HPKE-3 after sealing fails authentication.
        let sealed = hpke_compact(&keys, &header, b"x", b"", b"");
        let relabelled = sealed.replacen(
            sealed.split('.').next().unwrap(),
            &B64URL.encode(serde_json::to_string(&json!({"alg": "HPKE-X25519-A256GCM", "kid": kid, "cty": "json", "iat": 2, "jti": "j"})).unwrap()),
            1,
        );
        assert_eq!(
            open(&relabelled, &keys).unwrap_err(),
            JweError::DecryptionFailed
        );
    }
}
