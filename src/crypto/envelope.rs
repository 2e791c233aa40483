//! Whole-body envelopes (contract §3): the client encrypts its entire JSON body under a fresh
//! 32-byte session key, wraps that key with one of the proxy's public keys, and gets the app's
//! response sealed under the same session key.
//!
//! ```text
//! request  {"encrypted_session_key": b64(RSA-OAEP-SHA256(session key))
//!                                 or b64(HPKE enc || HPKE ciphertext of the session key),
//!           "encrypted_data": b64(nonce12 || ciphertext || tag16), "kid": "<JWKS kid>"}
//!           AES-256-GCM, AAD "fieldseal-envelope-request"
//! response {"encrypted_data": b64(nonce12 || ciphertext || tag16)}
//!           same session key, fresh nonce, AAD "fieldseal-envelope-response"
//! ```
//! (`b64` = standard base64 with padding.) The two AADs differ so that a response can never be
//! replayed to the proxy as a request body, nor a request reflected as a response.
//!
//! The contract wraps the session key with RSA-OAEP. When `kid` names one of the proxy's HPKE
//! keys instead (X25519, or the post-quantum X-Wing), the session key is HPKE-sealed (base
//! mode, single shot) with the suite that key's JWK `alg` names, `info` [`HPKE_WRAP_INFO`] and
//! an empty AAD; `encrypted_session_key` is the encapsulated key followed by that ciphertext —
//! exactly what `cryptography`'s `hpke.Suite.encrypt(key, public_key, info=…)` returns, so a
//! Python client needs nothing but the stock API.
//!
//! Like JWE values, the RSA step must not be a padding oracle: a session key that does not
//! unwrap is replaced by a random one and the AES-GCM decryption runs anyway, so a bad wrapped
//! key and a bad tag end in the same error after the same work. AES-CBC envelopes (as some
//! hand-rolled apps use) are deliberately not accepted: without a MAC they are a padding oracle.

use crate::reason::Reason;
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::Nonce;
use base64::Engine;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::client_keys::ClientKeys;

/// AAD of request envelopes.
pub const REQUEST_AAD: &[u8] = b"fieldseal-envelope-request";
/// AAD of response envelopes.
pub const RESPONSE_AAD: &[u8] = b"fieldseal-envelope-response";

/// HPKE `info` of a session key wrapped to an HPKE key: binds the wrap to this use, so an HPKE
/// JWE value's ciphertext can never stand in for a session key.
pub const HPKE_WRAP_INFO: &[u8] = b"fieldseal-envelope-session-key/v1";

const SESSION_KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// An HPKE-wrapped session key: the key and the AEAD tag (both HPKE suites use a 16-byte tag).
const SESSION_KEY_WITH_TAG: usize = SESSION_KEY_LEN + TAG_LEN;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why a request envelope was refused. All are the client's fault (400); none carries key
/// bytes or plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Not a JSON object with exactly the three string members, or bad base64 / lengths.
    Malformed,
    /// `kid` names no RSA or HPKE key of the proxy.
    UnknownKey(String),
    /// The session key did not unwrap or the data failed authentication (not told apart).
    DecryptionFailed,
    /// The decrypted body is not one JSON document.
    NotJson,
}

impl EnvelopeError {
    /// The reason, in the crate's one vocabulary.
    pub fn reason(&self) -> Reason {
        match self {
            EnvelopeError::Malformed => Reason::Malformed,
            EnvelopeError::UnknownKey(_) => Reason::UnknownKey,
            EnvelopeError::DecryptionFailed => Reason::DecryptionFailed,
            EnvelopeError::NotJson => Reason::NotJson,
        }
    }

    pub fn kid(&self) -> Option<&str> {
        match self {
            EnvelopeError::UnknownKey(kid) => Some(kid),
            _ => None,
        }
    }
}

/// The session key of one exchange, kept to seal the response. Zeroized on drop.
pub struct SessionKey {
    key: Zeroizing<[u8; SESSION_KEY_LEN]>,
    /// The RSA or HPKE key that unwrapped it (for metrics and the audit log).
    pub kid: String,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestEnvelope<'a> {
    #[serde(borrow)]
    encrypted_session_key: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    encrypted_data: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    kid: std::borrow::Cow<'a, str>,
    /// Freshness (contract §3 of 1.1): with `jti`, bound into the AAD.
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default, borrow)]
    jti: Option<std::borrow::Cow<'a, str>>,
}

/// An opened request envelope.
pub struct OpenedEnvelope {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub session: SessionKey,
    /// The envelope's `iat` and `jti`. Authenticated (part of the AAD) only when both are
    /// present; a `jti` alone is still recorded, so the same envelope cannot be sent twice.
    pub iat: Option<i64>,
    pub jti: Option<String>,
}

/// The plaintext is the client's: never print it.
impl std::fmt::Debug for OpenedEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedEnvelope")
            .field("session", &self.session)
            .field("iat", &self.iat)
            .field("jti", &self.jti)
            .finish_non_exhaustive()
    }
}

/// The AAD of a request envelope: `fieldseal-envelope-request`, or with both freshness members
/// `fieldseal-envelope-request.<iat>.<jti>` so they cannot be changed without the session key.
pub fn request_aad(iat: Option<i64>, jti: Option<&str>) -> Vec<u8> {
    match (iat, jti) {
        (Some(iat), Some(jti)) => format!("fieldseal-envelope-request.{iat}.{jti}").into_bytes(),
        _ => REQUEST_AAD.to_vec(),
    }
}

/// Opens a request envelope: returns the plaintext JSON body and the session key for the
/// response.
pub fn open_request(body: &[u8], keys: &ClientKeys) -> Result<OpenedEnvelope, EnvelopeError> {
    let envelope: RequestEnvelope<'_> =
        serde_json::from_slice(body).map_err(|_| EnvelopeError::Malformed)?;
    if envelope.kid.len() > super::jwe::MAX_KID_LEN
        || envelope
            .jti
            .as_ref()
            .is_some_and(|j| j.len() > super::jwe::MAX_JTI_LEN)
    {
        return Err(EnvelopeError::Malformed);
    }
    let aad = request_aad(envelope.iat, envelope.jti.as_deref());
    let wrapped = B64
        .decode(envelope.encrypted_session_key.as_bytes())
        .map_err(|_| EnvelopeError::Malformed)?;
    let data = B64
        .decode(envelope.encrypted_data.as_bytes())
        .map_err(|_| EnvelopeError::Malformed)?;
    if data.len() < NONCE_LEN + TAG_LEN {
        return Err(EnvelopeError::Malformed);
    }
    // Unwrap, or fall back to a random key without branching on which (see the module doc).
    let unwrapped = if let Some(rsa) = keys.rsa(&envelope.kid) {
        rsa.decrypt_oaep_sha256(&wrapped)
    } else if let Some(hpke) = keys.hpke(&envelope.kid) {
        let kem = hpke.kem();
        match wrapped.len().checked_sub(kem.enc_len()) {
            Some(SESSION_KEY_WITH_TAG) => {
                let (enc, ct) = wrapped.split_at(kem.enc_len());
                hpke.open(kem.published_suite(), enc, HPKE_WRAP_INFO, b"", ct)
            }
            _ => Err(()),
        }
    } else {
        return Err(EnvelopeError::UnknownKey(envelope.kid.to_string()));
    };
    let kid = envelope.kid.to_string();
    let key = super::jwe::key_or_random(unwrapped).map_err(|()| EnvelopeError::DecryptionFailed)?;

    let (nonce, ciphertext) = data.split_at(NONCE_LEN);
    // Per-request cipher: zeroized on drop, GHASH's key included.
    let plaintext = super::keyring::ZeroizingAesGcm::from_slice(&key[..])
        .ok_or(EnvelopeError::DecryptionFailed)?
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| EnvelopeError::DecryptionFailed)?;
    if serde_json::from_slice::<serde::de::IgnoredAny>(&plaintext).is_err() {
        return Err(EnvelopeError::NotJson);
    }
    Ok(OpenedEnvelope {
        plaintext,
        session: SessionKey { key, kid },
        iat: envelope.iat,
        jti: envelope.jti.map(std::borrow::Cow::into_owned),
    })
}

impl SessionKey {
    /// Seals a response body: `{"encrypted_data": b64(nonce || ciphertext || tag)}`. `None`
    /// only if the OS random source fails (the caller fails closed).
    pub fn seal_response(&self, body: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).ok()?;
        let sealed = super::keyring::ZeroizingAesGcm::from_slice(&self.key[..])?
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: body,
                    aad: RESPONSE_AAD,
                },
            )
            .ok()?;
        let mut data = Vec::with_capacity(NONCE_LEN + sealed.len());
        data.extend_from_slice(&nonce);
        data.extend_from_slice(&sealed);
        Some(
            serde_json::to_vec(&serde_json::json!({ "encrypted_data": B64.encode(data) }))
                .expect("a JSON object serialises"),
        )
    }

    /// The session key from raw bytes (tests and the reference client).
    #[cfg(test)]
    fn from_bytes(bytes: [u8; SESSION_KEY_LEN]) -> Self {
        Self {
            key: Zeroizing::new(bytes),
            kid: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::Aead;
    use aes_gcm::{Aes256Gcm, KeyInit};
    use rsa::rand_core::OsRng;
    use rsa::sha2::Sha256;
    use rsa::traits::PublicKeyParts;
    use serde_json::json;

    fn keys() -> (ClientKeys, rsa::RsaPublicKey) {
        let key = crate::crypto::rsa_keys::from_pem(crate::crypto::rsa_keys::TEST_KEY_PEM).unwrap();
        let jwk = key.jwk();
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwk["n"].as_str().unwrap())
            .unwrap();
        let public = rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(&n),
            rsa::BigUint::from(65537u32),
        )
        .unwrap();
        (ClientKeys::new(vec![key], vec![]).unwrap(), public)
    }

    /// Builds a request envelope like a client: returns the body and the session key.
    fn client_envelope(
        public: &rsa::RsaPublicKey,
        kid: &str,
        plaintext: &[u8],
        aad: &[u8],
    ) -> (Vec<u8>, [u8; 32]) {
        let mut session = [0u8; 32];
        getrandom::fill(&mut session).unwrap();
        let wrapped = public
            .encrypt(&mut OsRng, rsa::Oaep::new::<Sha256>(), &session)
            .unwrap();
        let nonce = [7u8; 12];
        let ct = Aes256Gcm::new_from_slice(&session)
            .unwrap()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap();
        let data = [&nonce[..], &ct[..]].concat();
        let body = json!({
            "encrypted_session_key": B64.encode(wrapped),
            "encrypted_data": B64.encode(data),
            "kid": kid,
        });
        (serde_json::to_vec(&body).unwrap(), session)
    }

    /// An envelope whose session key is HPKE-wrapped to an X25519 or X-Wing key opens, its
    /// response seals under the same session key, and every wrong wrap fails like a bad tag.
    #[test]
    fn hpke_wrapped_session_keys_open_for_both_kems() {
        use crate::crypto::hpke::{self, KemKind};
        for kem in [KemKind::X25519, KemKind::XWing] {
            let pem = hpke::generate(kem).unwrap();
            let key = hpke::from_pem(&pem).unwrap();
            let kid = key.kid().to_string();
            let session = [3u8; 32];
            let seal_with = |info: &[u8]| {
                let (enc, ct) = key
                    .seal(kem.published_suite(), info, b"", &session)
                    .unwrap();
                [enc, ct].concat()
            };
            let good = seal_with(HPKE_WRAP_INFO);
            let nonce = [9u8; 12];
            let data = Aes256Gcm::new_from_slice(&session)
                .unwrap()
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: br#"{"ssn":"123-45-6789"}"#,
                        aad: REQUEST_AAD,
                    },
                )
                .unwrap();
            let body = |wrapped: &[u8]| {
                serde_json::to_vec(&json!({
                    "encrypted_session_key": B64.encode(wrapped),
                    "encrypted_data": B64.encode([&nonce[..], &data].concat()),
                    "kid": kid,
                }))
                .unwrap()
            };
            let keys = ClientKeys::new(vec![], vec![hpke::from_pem(&pem).unwrap()]).unwrap();
            let opened = open_request(&body(&good), &keys).unwrap();
            assert_eq!(&opened.plaintext[..], br#"{"ssn":"123-45-6789"}"#);
            assert_eq!(opened.session.kid, kid);
            assert_eq!(&opened.session.key[..], &session);

            // Another info (e.g. a JWE value's ciphertext), a flipped bit, a cut: refused alike.
            let mut flipped = good.clone();
            flipped[kem.enc_len() + 1] ^= 1;
            for bad in [
                seal_with(b""),
                flipped,
                good[..good.len() - 1].to_vec(),
                good[1..].to_vec(),
            ] {
                assert_eq!(
                    open_request(&body(&bad), &keys).unwrap_err(),
                    EnvelopeError::DecryptionFailed
                );
            }
        }
    }

    #[test]
    fn freshness_members_are_bound_into_the_aad() {
        let (keys, public) = keys();
        let kid = keys.rsa_keys()[0].kid.clone();
        let aad = request_aad(Some(1_800_000_000), Some("j-1"));
        assert_eq!(aad, b"fieldseal-envelope-request.1800000000.j-1");
        let (body, _) = client_envelope(&public, &kid, b"{}", &aad);
        let mut doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        doc["iat"] = json!(1_800_000_000);
        doc["jti"] = json!("j-1");
        let opened = open_request(&serde_json::to_vec(&doc).unwrap(), &keys).unwrap();
        assert_eq!(opened.iat, Some(1_800_000_000));
        assert_eq!(opened.jti.as_deref(), Some("j-1"));
        // Another jti or iat than the one sealed: authentication fails, so a captured
        // envelope cannot be given a new jti to pass the replay check.
        for (member, value) in [("jti", json!("j-2")), ("iat", json!(1_800_000_001))] {
            let mut changed = doc.clone();
            changed[member] = value;
            let err = open_request(&serde_json::to_vec(&changed).unwrap(), &keys).unwrap_err();
            assert_eq!(err, EnvelopeError::DecryptionFailed, "{member}");
        }
        // Without them, the plain AAD no longer opens it either.
        let mut bare = doc.clone();
        bare.as_object_mut().unwrap().remove("iat");
        bare.as_object_mut().unwrap().remove("jti");
        let err = open_request(&serde_json::to_vec(&bare).unwrap(), &keys).unwrap_err();
        assert_eq!(err, EnvelopeError::DecryptionFailed);
        // A jti alone is carried (recorded by the proxy) but not bound.
        let (plain_body, _) = client_envelope(&public, &kid, b"{}", REQUEST_AAD);
        let mut with_jti: serde_json::Value = serde_json::from_slice(&plain_body).unwrap();
        with_jti["jti"] = json!("only");
        let opened = open_request(&serde_json::to_vec(&with_jti).unwrap(), &keys).unwrap();
        assert_eq!((opened.iat, opened.jti.as_deref()), (None, Some("only")));
        // A float iat is not a NumericDate this format accepts.
        with_jti["iat"] = json!(1.5);
        let err = open_request(&serde_json::to_vec(&with_jti).unwrap(), &keys).unwrap_err();
        assert_eq!(err, EnvelopeError::Malformed);
    }

    #[test]
    fn request_opens_and_response_seals_with_the_same_session_key() {
        let (keys, public) = keys();
        assert_eq!(public.size(), 256);
        let kid = keys.rsa_keys()[0].kid.clone();
        let (body, session) = client_envelope(&public, &kid, br#"{"amount": 12}"#, REQUEST_AAD);
        let opened = open_request(&body, &keys).unwrap();
        let (plain, key) = (opened.plaintext, opened.session);
        assert_eq!(&plain[..], br#"{"amount": 12}"#);
        assert_eq!(key.kid, kid);
        assert_eq!((opened.iat, opened.jti), (None, None));

        let sealed = key.seal_response(br#"{"ok":true}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        let data = B64.decode(v["encrypted_data"].as_str().unwrap()).unwrap();
        let cipher = Aes256Gcm::new_from_slice(&session).unwrap();
        let open = |aad: &[u8]| {
            cipher.decrypt(
                Nonce::from_slice(&data[..12]),
                Payload {
                    msg: &data[12..],
                    aad,
                },
            )
        };
        assert_eq!(open(RESPONSE_AAD).unwrap(), br#"{"ok":true}"#);
        // The request AAD does not open a response: the directions cannot be swapped.
        assert!(open(REQUEST_AAD).is_err());
        // Fresh nonce per response.
        let again = SessionKey::from_bytes(session)
            .seal_response(b"{}")
            .unwrap();
        assert_ne!(
            again,
            SessionKey::from_bytes(session)
                .seal_response(b"{}")
                .unwrap()
        );
    }

    #[test]
    fn bad_envelopes_are_refused_with_reasons() {
        let (keys, public) = keys();
        let kid = keys.rsa_keys()[0].kid.clone();
        // Sealed with the response AAD: authentication fails.
        let (body, _) = client_envelope(&public, &kid, b"{}", RESPONSE_AAD);
        assert_eq!(
            open_request(&body, &keys).unwrap_err(),
            EnvelopeError::DecryptionFailed
        );
        // Not JSON inside.
        let (body, _) = client_envelope(&public, &kid, b"not json", REQUEST_AAD);
        assert_eq!(
            open_request(&body, &keys).unwrap_err(),
            EnvelopeError::NotJson
        );
        // Unknown kid.
        let (body, _) = client_envelope(&public, "other", b"{}", REQUEST_AAD);
        assert_eq!(
            open_request(&body, &keys).unwrap_err(),
            EnvelopeError::UnknownKey("other".into())
        );
        // A tampered wrapped key and a tampered tag: the same error.
        let (body, _) = client_envelope(&public, &kid, b"{}", REQUEST_AAD);
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for member in ["encrypted_session_key", "encrypted_data"] {
            let mut t = v.clone();
            let mut bytes = B64.decode(t[member].as_str().unwrap()).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            t[member] = json!(B64.encode(bytes));
            assert_eq!(
                open_request(&serde_json::to_vec(&t).unwrap(), &keys).unwrap_err(),
                EnvelopeError::DecryptionFailed,
                "{member}"
            );
        }
        // Shape: extra or missing members, bad base64, short data, not an object.
        v["extra"] = json!(1);
        assert_eq!(
            open_request(&serde_json::to_vec(&v).unwrap(), &keys).unwrap_err(),
            EnvelopeError::Malformed
        );
        for bad in [
            json!({"encrypted_session_key": "AA==", "encrypted_data": "AA==", "kid": kid}),
            json!({"encrypted_session_key": "!!", "encrypted_data": "AA==", "kid": kid}),
            json!({"encrypted_data": "AA==", "kid": kid}),
            json!([1]),
        ] {
            assert_eq!(
                open_request(&serde_json::to_vec(&bad).unwrap(), &keys).unwrap_err(),
                EnvelopeError::Malformed,
                "{bad}"
            );
        }
    }
}
