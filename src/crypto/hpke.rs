//! X25519 keys for HPKE (RFC 9180), the second client-side scheme beside RSA-OAEP.
//!
//! A client encrypts a field to the proxy's X25519 public key (published in the JWKS as an
//! `OKP`/`X25519` JWK) with HPKE base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and an
//! AES-GCM AEAD. Compared with RSA-OAEP the value is smaller (a 32-byte encapsulated key
//! instead of a 256–512-byte wrapped CEK), opening is ~20× cheaper, and every value has its own
//! ephemeral key: a later leak of one value's keys says nothing about another's.
//!
//! The HPKE primitive is rustls' aws-lc-rs implementation (`rustls::crypto::aws_lc_rs::hpke`,
//! the one rustls uses for Encrypted Client Hello, checked there against the RFC 9180 test
//! vectors); this module only loads keys and picks the suite. The JWE framing lives in
//! [`super::jwe`].
//!
//! Suites (the JWE `alg`, following draft-ietf-jose-hpke-encrypt-20 §5.1 "Integrated
//! Encryption"):
//! - [`ALG_A256GCM`] `HPKE-X25519-A256GCM`: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//!   AES-256-GCM — the suite fieldseal publishes. The draft registers no identifier for X25519
//!   with AES-256-GCM (its AES-256 suites use P-256, P-384, P-521 or X448), so this is a
//!   private-use name in the draft's style that cannot collide with a registered `HPKE-<n>`.
//! - [`ALG_HPKE_3`] `HPKE-3`: the draft's registered X25519 suite, with AES-128-GCM. Accepted
//!   for clients that implement the draft as written (and checked against its test vector).

use std::fmt;
use std::path::Path;

use base64::Engine;
use rustls::crypto::aws_lc_rs::hpke::{
    DH_KEM_X25519_HKDF_SHA256_AES_128, DH_KEM_X25519_HKDF_SHA256_AES_256,
};
use rustls::crypto::hpke::{EncapsulatedSecret, Hpke, HpkePrivateKey};
use serde_json::{json, Value};
use zeroize::Zeroizing;

/// JWE `alg` of the suite fieldseal publishes: X25519, HKDF-SHA256, AES-256-GCM.
pub const ALG_A256GCM: &str = "HPKE-X25519-A256GCM";
/// JWE `alg` registered by draft-ietf-jose-hpke-encrypt for X25519, HKDF-SHA256, AES-128-GCM.
pub const ALG_HPKE_3: &str = "HPKE-3";

/// Length of an X25519 key and of its encapsulated key.
pub const X25519_LEN: usize = 32;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `id-X25519` (RFC 8410).
const X25519_OID: &str = "1.3.101.110";

/// The DER of a PKCS#8 X25519 private key up to the 32 key bytes (RFC 8410 §7): version 0,
/// algorithm id-X25519 without parameters, and the key as an OCTET STRING in an OCTET STRING.
const PKCS8_X25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
];

/// An HPKE suite a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    X25519Aes256Gcm,
    X25519Aes128Gcm,
}

impl Suite {
    /// The suite a JWE `alg` names, if accepted.
    pub fn from_alg(alg: &str) -> Option<Self> {
        match alg {
            ALG_A256GCM => Some(Suite::X25519Aes256Gcm),
            ALG_HPKE_3 => Some(Suite::X25519Aes128Gcm),
            _ => None,
        }
    }

    fn hpke(self) -> &'static dyn Hpke {
        match self {
            Suite::X25519Aes256Gcm => DH_KEM_X25519_HKDF_SHA256_AES_256,
            Suite::X25519Aes128Gcm => DH_KEM_X25519_HKDF_SHA256_AES_128,
        }
    }
}

/// One loaded X25519 private key with its public half.
pub struct HpkeKey {
    kid: String,
    public: [u8; X25519_LEN],
    private: HpkePrivateKey,
}

impl fmt::Debug for HpkeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HpkeKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Reads an X25519 private key (PKCS#8 PEM, as `openssl genpkey -algorithm X25519` or
/// `fieldseal hpke generate` write it). Errors name the file and never contain key bytes.
pub fn load(path: &Path) -> Result<HpkeKey, String> {
    let text = crate::secret_file::read_pem(path, "HPKE key")?;
    from_pem(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses an X25519 private key from PKCS#8 PEM text.
pub fn from_pem(pem: &str) -> Result<HpkeKey, String> {
    let start = pem
        .find("-----BEGIN PRIVATE KEY-----")
        .ok_or("is not a PKCS#8 private key: expected a -----BEGIN PRIVATE KEY----- block")?;
    let (_, der) = pkcs8::SecretDocument::from_pem(&pem[start..])
        .map_err(|_| "is not valid PEM (bad base64 or framing)".to_string())?;
    let info = pkcs8::PrivateKeyInfo::try_from(der.as_bytes())
        .map_err(|_| "is not a valid PKCS#8 private key".to_string())?;
    if info.algorithm.oid.to_string() != X25519_OID {
        return Err(format!(
            "is not an X25519 key (PKCS#8 algorithm {}); HPKE needs an X25519 key",
            info.algorithm.oid
        ));
    }
    // RFC 8410 §7: the privateKey OCTET STRING wraps a CurvePrivateKey OCTET STRING.
    let secret = match info.private_key {
        [0x04, 0x20, rest @ ..] if rest.len() == X25519_LEN => rest,
        _ => return Err("is not a valid X25519 private key (expected 32 bytes)".to_string()),
    };
    from_secret(secret)
}

fn from_secret(secret: &[u8]) -> Result<HpkeKey, String> {
    let agreement =
        aws_lc_rs::agreement::PrivateKey::from_private_key(&aws_lc_rs::agreement::X25519, secret)
            .map_err(|_| "X25519 private key rejected".to_string())?;
    let public_key = agreement
        .compute_public_key()
        .map_err(|_| "cannot compute the X25519 public key".to_string())?;
    let public: [u8; X25519_LEN] = public_key
        .as_ref()
        .try_into()
        .map_err(|_| "X25519 public key has the wrong length".to_string())?;
    let x = B64URL.encode(public);
    Ok(HpkeKey {
        kid: thumbprint(&x),
        public,
        private: HpkePrivateKey::from(secret.to_vec()),
    })
}

/// RFC 7638 thumbprint of an OKP key: SHA-256 over `{"crv","kty","x"}` in that order.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"X25519","kty":"OKP","x":"{x}"}}"#);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    B64URL.encode(digest.as_ref())
}

/// A new X25519 private key as PKCS#8 PEM (32 bytes from the OS CSPRNG; X25519 accepts any
/// 32 bytes as a private key, clamping them).
pub fn generate() -> Result<Zeroizing<String>, String> {
    let mut der = Zeroizing::new(Vec::with_capacity(PKCS8_X25519_PREFIX.len() + X25519_LEN));
    der.extend_from_slice(&PKCS8_X25519_PREFIX);
    der.resize(PKCS8_X25519_PREFIX.len() + X25519_LEN, 0);
    getrandom::fill(&mut der[PKCS8_X25519_PREFIX.len()..])
        .map_err(|e| format!("the OS random source failed: {e}"))?;
    let body = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&der[..]));
    let mut pem = Zeroizing::new(String::from("-----BEGIN PRIVATE KEY-----\n"));
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

impl HpkeKey {
    /// RFC 7638 JWK thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK for the JWKS: `OKP`/`X25519`, `alg` the published suite.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "X25519",
            "kid": self.kid,
            "use": "enc",
            "alg": ALG_A256GCM,
            "x": B64URL.encode(self.public),
        })
    }

    /// HPKE base-mode single-shot open with an empty `info`. Every failure is the same
    /// `Err(())`: a wrong encapsulated key and a bad tag are not told apart.
    // The unit error is the point: a failure must carry nothing about why it failed.
    #[allow(clippy::result_unit_err)]
    pub fn open(
        &self,
        suite: Suite,
        encapsulated: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ()> {
        if encapsulated.len() != X25519_LEN {
            return Err(());
        }
        suite
            .hpke()
            .open(
                &EncapsulatedSecret(encapsulated.to_vec()),
                b"",
                aad,
                ciphertext,
                &self.private,
            )
            .map(Zeroizing::new)
            .map_err(|_| ())
    }

    /// HPKE base-mode single-shot seal to this key (tests, benchmarks and the demo client).
    #[allow(clippy::result_unit_err)]
    pub fn seal(
        &self,
        suite: Suite,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), ()> {
        let public = rustls::crypto::hpke::HpkePublicKey(self.public.to_vec());
        suite
            .hpke()
            .seal(b"", aad, plaintext, &public)
            .map(|(enc, ct)| (enc.0, ct))
            .map_err(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_round_trip_both_suites() {
        let pem = generate().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let key = from_pem(&pem).unwrap();
        for suite in [Suite::X25519Aes256Gcm, Suite::X25519Aes128Gcm] {
            let (enc, ct) = key.seal(suite, b"aad", b"secret").unwrap();
            assert_eq!(enc.len(), X25519_LEN);
            assert_eq!(&key.open(suite, &enc, b"aad", &ct).unwrap()[..], b"secret");
            assert!(key.open(suite, &enc, b"other aad", &ct).is_err());
            let mut bad = ct.clone();
            bad[0] ^= 1;
            assert!(key.open(suite, &enc, b"aad", &bad).is_err());
        }
        // A value sealed under one suite does not open under the other.
        let (enc, ct) = key.seal(Suite::X25519Aes256Gcm, b"", b"x").unwrap();
        assert!(key.open(Suite::X25519Aes128Gcm, &enc, b"", &ct).is_err());
        // Another key cannot open it.
        let other = from_pem(&generate().unwrap()).unwrap();
        assert_ne!(other.kid(), key.kid());
        assert!(other.open(Suite::X25519Aes256Gcm, &enc, b"", &ct).is_err());
    }

    /// draft-ietf-jose-hpke-encrypt-20, Appendix A.7: the JWK `d`/`x` pair and its kid.
    #[test]
    fn jwk_and_kid_match_the_draft_example_key() {
        let d = B64URL
            .decode("VtBu3AuB4_RKgDCDqj1j-_Kzf12ekvaGxoAGmMDcDks")
            .unwrap();
        let key = from_secret(&d).unwrap();
        let jwk = key.jwk();
        assert_eq!(jwk["x"], "Pyv22rGl5uY-24SOA_wda7PO4bIw6bobrD1_5VgF3H4");
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "X25519");
        assert_eq!(key.kid(), "n9hjOrhXxsQ_lTMu3PqkjHgwJURHZPF3HY5p-LFEgyg");
    }

    #[test]
    fn other_keys_are_refused_with_a_reason() {
        // A P-256 key: PKCS#8, but not X25519.
        let p256 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(p256.as_ref());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        );
        let e = from_pem(&pem).unwrap_err();
        assert!(e.contains("not an X25519 key"), "{e}");
        assert!(from_pem("not pem").unwrap_err().contains("PKCS#8"));
        assert!(
            from_pem("-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n")
                .unwrap_err()
                .contains("not valid PEM")
        );
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let key = from_pem(&generate().unwrap()).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains(key.kid()));
        assert!(!shown.contains(&B64URL.encode(key.private.secret_bytes())));
    }
}
