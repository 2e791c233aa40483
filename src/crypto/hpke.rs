//! HPKE (RFC 9180) keys, the client-side schemes beside RSA-OAEP: X25519 and the post-quantum
//! hybrid X-Wing.
//!
//! A client encrypts a field to one of the proxy's public keys (published in the JWKS) with
//! HPKE base mode. Compared with RSA-OAEP the value is smaller, opening is cheaper, and every
//! value has its own ephemeral key: a later leak of one value's keys says nothing about
//! another's.
//!
//! Two KEMs:
//! - **X25519** (DHKEM(X25519, HKDF-SHA256), published as an `OKP`/`X25519` JWK): the HPKE
//!   primitive is rustls' aws-lc-rs implementation (`rustls::crypto::aws_lc_rs::hpke`, the one
//!   rustls uses for Encrypted Client Hello, checked there against the RFC 9180 vectors).
//! - **X-Wing** (MLKEM768-X25519, HPKE KEM `0x647a`, draft-ietf-hpke-pq; published as an `AKP`
//!   JWK): secure while *either* ML-KEM-768 or X25519 holds, so a value recorded today stays
//!   closed to a future quantum computer ("harvest now, decrypt later"). The primitive is
//!   rust-hpke with RustCrypto's `x-wing` and `ml-kem`; aws-lc-rs has ML-KEM but neither the
//!   X-Wing combiner nor the SHAKE256 one-stage KDF the JOSE suite uses. Opening runs on AWS-LC
//!   with the key expanded once ([`super::xwing`]), 3–4× faster than rust-hpke's open.
//!
//! This module only loads keys and picks the suite; the JWE framing lives in [`super::jwe`] and
//! the envelope framing in [`super::envelope`].
//!
//! Suites (the JWE `alg`, draft-ietf-jose-hpke-encrypt-20 §5.1 "Integrated Encryption"):
//! - [`ALG_A256GCM`] `HPKE-X25519-A256GCM`: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//!   AES-256-GCM — the suite published with X25519 keys. The draft registers no identifier for
//!   X25519 with AES-256-GCM (its AES-256 suites use P-256, P-384, P-521 or X448), so this is a
//!   private-use name in the draft's style that cannot collide with a registered `HPKE-<n>`.
//! - [`ALG_HPKE_3`] `HPKE-3`: the draft's registered X25519 suite, with AES-128-GCM. Accepted
//!   for clients that implement the draft as written (and checked against its test vector).
//! - [`ALG_XWING`] `HPKE-10`: MLKEM768-X25519, SHAKE256, AES-256-GCM, as
//!   draft-skokan-jose-hpke-pq-pqt registers it (and checked against its test vector) — the
//!   suite published with X-Wing keys.

use std::fmt;
use std::path::Path;

use base64::Engine;
use hpke::{Deserializable, Kem as _, Serializable};
use rustls::crypto::aws_lc_rs::hpke::{
    DH_KEM_X25519_HKDF_SHA256_AES_128, DH_KEM_X25519_HKDF_SHA256_AES_256,
};
use rustls::crypto::hpke::{EncapsulatedSecret, Hpke, HpkePrivateKey};
use serde_json::{json, Value};
use zeroize::Zeroizing;

/// JWE `alg` of the suite fieldseal publishes with X25519 keys: X25519, HKDF-SHA256,
/// AES-256-GCM.
pub const ALG_A256GCM: &str = "HPKE-X25519-A256GCM";
/// JWE `alg` registered by draft-ietf-jose-hpke-encrypt for X25519, HKDF-SHA256, AES-128-GCM.
pub const ALG_HPKE_3: &str = "HPKE-3";
/// JWE `alg` of draft-skokan-jose-hpke-pq-pqt for MLKEM768-X25519 (X-Wing), SHAKE256,
/// AES-256-GCM: the suite fieldseal publishes with X-Wing keys.
pub const ALG_XWING: &str = "HPKE-10";

/// Length of an X25519 key and of its encapsulated key.
pub const X25519_LEN: usize = 32;
/// Length of an X-Wing private key (the seed both halves are derived from).
pub const XWING_SEED_LEN: usize = 32;
/// Length of an X-Wing public key: ML-KEM-768's 1,184 bytes, then X25519's 32.
pub const XWING_PUBLIC_LEN: usize = 1216;
/// Length of an X-Wing encapsulated key: ML-KEM-768's 1,088-byte ciphertext, then X25519's 32.
pub const XWING_ENC_LEN: usize = 1120;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `id-X25519` (RFC 8410).
const X25519_OID: &str = "1.3.101.110";
/// `id-XWing` (draft-connolly-cfrg-xwing-kem): the PKCS#8 private key is the 32-byte seed.
const XWING_OID: &str = "1.3.6.1.4.1.62253.25722";

/// The DER of a PKCS#8 X25519 private key up to the 32 key bytes (RFC 8410 §7): version 0,
/// algorithm id-X25519 without parameters, and the key as an OCTET STRING in an OCTET STRING.
const PKCS8_X25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
];

/// The DER of a PKCS#8 X-Wing private key up to the 32 seed bytes: version 0, algorithm
/// id-XWing without parameters, and the seed as the privateKey OCTET STRING.
const PKCS8_XWING_PREFIX: [u8; 22] = [
    0x30, 0x34, 0x02, 0x01, 0x00, 0x30, 0x0d, 0x06, 0x0b, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xe6,
    0x2d, 0x81, 0xc8, 0x7a, 0x04, 0x20,
];

/// X-Wing through rust-hpke.
type XWing = hpke::kem::XWing;
type XWingPrivate = <XWing as hpke::Kem>::PrivateKey;
type XWingPublic = <XWing as hpke::Kem>::PublicKey;

/// A key encapsulation mechanism fieldseal accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KemKind {
    X25519,
    XWing,
}

impl KemKind {
    /// The name operators type (`fieldseal hpke generate --kem`) and `check` prints.
    pub fn name(self) -> &'static str {
        match self {
            KemKind::X25519 => "x25519",
            KemKind::XWing => "xwing",
        }
    }

    /// The suite published with keys of this KEM (the JWK `alg`), which envelopes also use.
    pub fn published_suite(self) -> Suite {
        match self {
            KemKind::X25519 => Suite::X25519Aes256Gcm,
            KemKind::XWing => Suite::XWingShake256Aes256Gcm,
        }
    }

    /// Length of this KEM's encapsulated key.
    pub fn enc_len(self) -> usize {
        match self {
            KemKind::X25519 => X25519_LEN,
            KemKind::XWing => XWING_ENC_LEN,
        }
    }
}

/// An HPKE suite a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    X25519Aes256Gcm,
    X25519Aes128Gcm,
    XWingShake256Aes256Gcm,
}

impl Suite {
    /// The suite a JWE `alg` names, if accepted.
    pub fn from_alg(alg: &str) -> Option<Self> {
        match alg {
            ALG_A256GCM => Some(Suite::X25519Aes256Gcm),
            ALG_HPKE_3 => Some(Suite::X25519Aes128Gcm),
            ALG_XWING => Some(Suite::XWingShake256Aes256Gcm),
            _ => None,
        }
    }

    /// The JWE `alg` of this suite.
    pub fn alg(self) -> &'static str {
        match self {
            Suite::X25519Aes256Gcm => ALG_A256GCM,
            Suite::X25519Aes128Gcm => ALG_HPKE_3,
            Suite::XWingShake256Aes256Gcm => ALG_XWING,
        }
    }

    /// The KEM of this suite: a key opens only values of its own KEM.
    pub fn kem(self) -> KemKind {
        match self {
            Suite::X25519Aes256Gcm | Suite::X25519Aes128Gcm => KemKind::X25519,
            Suite::XWingShake256Aes256Gcm => KemKind::XWing,
        }
    }

    fn x25519(self) -> Option<&'static dyn Hpke> {
        match self {
            Suite::X25519Aes256Gcm => Some(DH_KEM_X25519_HKDF_SHA256_AES_256),
            Suite::X25519Aes128Gcm => Some(DH_KEM_X25519_HKDF_SHA256_AES_128),
            Suite::XWingShake256Aes256Gcm => None,
        }
    }
}

/// The private half of a loaded key, by KEM.
enum Material {
    X25519 {
        public: [u8; X25519_LEN],
        private: HpkePrivateKey,
    },
    XWing {
        /// rust-hpke's public key: the JWK, and seals (tests, benchmarks, the demo client).
        public: Box<XWingPublic>,
        /// The private key expanded once into AWS-LC objects: what opens values. (rust-hpke's
        /// private key, used to derive both, zeroizes its seed when dropped after loading.)
        opener: Box<super::xwing::Opener>,
    },
}

/// One loaded HPKE private key with its public half.
pub struct HpkeKey {
    kid: String,
    material: Material,
}

impl fmt::Debug for HpkeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HpkeKey")
            .field("kid", &self.kid)
            .field("kem", &self.kem())
            .finish_non_exhaustive()
    }
}

/// Reads an HPKE private key: X25519 or X-Wing, PKCS#8 PEM (as `openssl genpkey -algorithm
/// X25519` or `fieldseal hpke generate [--kem xwing]` write them). Errors name the file and
/// never contain key bytes.
pub fn load(path: &Path) -> Result<HpkeKey, String> {
    let text = crate::secret_file::read_pem(path, "HPKE key")?;
    from_pem(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses an X25519 or X-Wing private key from PKCS#8 PEM text.
pub fn from_pem(pem: &str) -> Result<HpkeKey, String> {
    let start = pem
        .find("-----BEGIN PRIVATE KEY-----")
        .ok_or("is not a PKCS#8 private key: expected a -----BEGIN PRIVATE KEY----- block")?;
    let (_, der) = pkcs8::SecretDocument::from_pem(&pem[start..])
        .map_err(|_| "is not valid PEM (bad base64 or framing)".to_string())?;
    let info = pkcs8::PrivateKeyInfo::try_from(der.as_bytes())
        .map_err(|_| "is not a valid PKCS#8 private key".to_string())?;
    match info.algorithm.oid.to_string().as_str() {
        // RFC 8410 §7: the privateKey OCTET STRING wraps a CurvePrivateKey OCTET STRING.
        X25519_OID => match info.private_key {
            [0x04, 0x20, rest @ ..] if rest.len() == X25519_LEN => from_x25519_secret(rest),
            _ => Err("is not a valid X25519 private key (expected 32 bytes)".to_string()),
        },
        // The seed itself; the OCTET STRING-in-OCTET STRING form of RFC 8410 is accepted too,
        // as some tools write it that way for every 32-byte key.
        XWING_OID => match info.private_key {
            seed if seed.len() == XWING_SEED_LEN => from_xwing_seed(seed),
            [0x04, 0x20, seed @ ..] if seed.len() == XWING_SEED_LEN => from_xwing_seed(seed),
            _ => Err("is not a valid X-Wing private key (expected a 32-byte seed)".to_string()),
        },
        other => Err(format!(
            "is not an X25519 or X-Wing key (PKCS#8 algorithm {other}); HPKE needs one of those"
        )),
    }
}

fn from_x25519_secret(secret: &[u8]) -> Result<HpkeKey, String> {
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
        kid: thumbprint(&format!(r#"{{"crv":"X25519","kty":"OKP","x":"{x}"}}"#)),
        material: Material::X25519 {
            public,
            private: HpkePrivateKey::from(secret.to_vec()),
        },
    })
}

fn from_xwing_seed(seed: &[u8]) -> Result<HpkeKey, String> {
    let private =
        XWingPrivate::from_bytes(seed).map_err(|_| "X-Wing private key rejected".to_string())?;
    let public = XWing::sk_to_pk(&private);
    let pub_b64 = B64URL.encode(public.to_bytes());
    Ok(HpkeKey {
        // draft-ietf-cose-dilithium §6: an AKP key's thumbprint members are alg, kty, pub.
        kid: thumbprint(&format!(
            r#"{{"alg":"{ALG_XWING}","kty":"AKP","pub":"{pub_b64}"}}"#
        )),
        material: Material::XWing {
            public: Box::new(public),
            opener: Box::new(super::xwing::Opener::from_seed(seed)?),
        },
    })
}

/// RFC 7638 thumbprint: SHA-256 over the key's required members, canonical JSON.
fn thumbprint(canonical: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    B64URL.encode(digest.as_ref())
}

/// A new private key of `kem` as PKCS#8 PEM: 32 bytes from the OS CSPRNG (X25519 accepts any
/// 32 bytes as a private key, clamping them; an X-Wing private key *is* a 32-byte seed).
pub fn generate(kem: KemKind) -> Result<Zeroizing<String>, String> {
    let mut secret = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut secret[..]).map_err(|e| format!("the OS random source failed: {e}"))?;
    Ok(pem(kem, &secret))
}

/// The PKCS#8 PEM of a 32-byte X25519 private key or X-Wing seed.
pub(crate) fn pem(kem: KemKind, secret: &[u8; 32]) -> Zeroizing<String> {
    let prefix: &[u8] = match kem {
        KemKind::X25519 => &PKCS8_X25519_PREFIX,
        KemKind::XWing => &PKCS8_XWING_PREFIX,
    };
    let der = Zeroizing::new([prefix, &secret[..]].concat());
    let body = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&der[..]));
    let mut pem = Zeroizing::new(String::from("-----BEGIN PRIVATE KEY-----\n"));
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

impl HpkeKey {
    /// RFC 7638 JWK thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key's KEM.
    pub fn kem(&self) -> KemKind {
        match self.material {
            Material::X25519 { .. } => KemKind::X25519,
            Material::XWing { .. } => KemKind::XWing,
        }
    }

    /// The public key as a JWK for the JWKS, `alg` the published suite: `OKP`/`X25519` for
    /// X25519, `AKP` with `pub` (draft-skokan-jose-hpke-pq-pqt §4) for X-Wing.
    pub fn jwk(&self) -> Value {
        match &self.material {
            Material::X25519 { public, .. } => json!({
                "kty": "OKP",
                "crv": "X25519",
                "kid": self.kid,
                "use": "enc",
                "alg": ALG_A256GCM,
                "x": B64URL.encode(public),
            }),
            Material::XWing { public, .. } => json!({
                "kty": "AKP",
                "kid": self.kid,
                "use": "enc",
                "alg": ALG_XWING,
                "pub": B64URL.encode(public.to_bytes()),
            }),
        }
    }

    /// HPKE base-mode single-shot open. Every failure is the same `Err(())`: a suite of
    /// another KEM, a wrong encapsulated key and a bad tag are not told apart.
    // The unit error is the point: a failure must carry nothing about why it failed.
    #[allow(clippy::result_unit_err)]
    pub fn open(
        &self,
        suite: Suite,
        encapsulated: &[u8],
        info: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ()> {
        if suite.kem() != self.kem() || encapsulated.len() != suite.kem().enc_len() {
            return Err(());
        }
        match &self.material {
            Material::X25519 { private, .. } => suite
                .x25519()
                .ok_or(())?
                .open(
                    &EncapsulatedSecret(encapsulated.to_vec()),
                    info,
                    aad,
                    ciphertext,
                    private,
                )
                .map(Zeroizing::new)
                .map_err(|_| ()),
            Material::XWing { opener, .. } => opener.open(encapsulated, info, aad, ciphertext),
        }
    }

    /// HPKE base-mode single-shot seal to this key: `(encapsulated key, ciphertext)` (tests,
    /// benchmarks and the demo client).
    #[allow(clippy::result_unit_err)]
    pub fn seal(
        &self,
        suite: Suite,
        info: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), ()> {
        if suite.kem() != self.kem() {
            return Err(());
        }
        match &self.material {
            Material::X25519 { public, .. } => {
                let public = rustls::crypto::hpke::HpkePublicKey(public.to_vec());
                suite
                    .x25519()
                    .ok_or(())?
                    .seal(info, aad, plaintext, &public)
                    .map(|(enc, ct)| (enc.0, ct))
                    .map_err(|_| ())
            }
            Material::XWing { public, .. } => hpke::single_shot_seal::<
                hpke::aead::AesGcm256,
                hpke::kdf::KdfShake256,
                XWing,
            >(
                &hpke::OpModeS::Base, public, info, plaintext, aad
            )
            .map(|(enc, ct)| (enc.to_bytes().to_vec(), ct))
            .map_err(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_round_trip_every_suite() {
        for (kem, suites) in [
            (
                KemKind::X25519,
                &[Suite::X25519Aes256Gcm, Suite::X25519Aes128Gcm][..],
            ),
            (KemKind::XWing, &[Suite::XWingShake256Aes256Gcm][..]),
        ] {
            let pem = generate(kem).unwrap();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            let key = from_pem(&pem).unwrap();
            assert_eq!(key.kem(), kem);
            for &suite in suites {
                let (enc, ct) = key.seal(suite, b"info", b"aad", b"secret").unwrap();
                assert_eq!(enc.len(), kem.enc_len());
                let open =
                    |info: &[u8], aad: &[u8], ct: &[u8]| key.open(suite, &enc, info, aad, ct);
                assert_eq!(&open(b"info", b"aad", &ct).unwrap()[..], b"secret");
                assert!(open(b"info", b"other aad", &ct).is_err());
                assert!(open(b"other info", b"aad", &ct).is_err());
                let mut bad = ct.clone();
                bad[0] ^= 1;
                assert!(open(b"info", b"aad", &bad).is_err());
                let mut bad_enc = enc.clone();
                bad_enc[enc.len() - 1] ^= 1;
                assert!(key.open(suite, &bad_enc, b"info", b"aad", &ct).is_err());
                assert!(key.open(suite, &enc[1..], b"info", b"aad", &ct).is_err());
            }
            // Another key of the same KEM cannot open it.
            let (enc, ct) = key.seal(suites[0], b"", b"", b"x").unwrap();
            let other = from_pem(&generate(kem).unwrap()).unwrap();
            assert_ne!(other.kid(), key.kid());
            assert!(other.open(suites[0], &enc, b"", b"", &ct).is_err());
        }
        // A value sealed under one suite does not open under another, nor a key of the other KEM.
        let x = from_pem(&generate(KemKind::X25519).unwrap()).unwrap();
        let (enc, ct) = x.seal(Suite::X25519Aes256Gcm, b"", b"", b"x").unwrap();
        assert!(x.open(Suite::X25519Aes128Gcm, &enc, b"", b"", &ct).is_err());
        assert!(x
            .open(Suite::XWingShake256Aes256Gcm, &enc, b"", b"", &ct)
            .is_err());
        assert!(x
            .seal(Suite::XWingShake256Aes256Gcm, b"", b"", b"x")
            .is_err());
        let w = from_pem(&generate(KemKind::XWing).unwrap()).unwrap();
        assert!(w.seal(Suite::X25519Aes256Gcm, b"", b"", b"x").is_err());
    }

    /// draft-skokan-jose-hpke-pq-pqt, test vectors, HPKE-10: the seed in `priv` gives the
    /// draft's `pub` and `kid`, and a PKCS#8 file of that seed loads to the same key.
    #[test]
    fn xwing_key_matches_the_hpke_10_vector() {
        let jwk: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/jose-hpke-pq/HPKE-10.jwk.json"
        ))
        .unwrap();
        let seed = B64URL.decode(jwk["priv"].as_str().unwrap()).unwrap();
        let key = from_xwing_seed(&seed).unwrap();
        assert_eq!(key.kid(), jwk["kid"]);
        let published = key.jwk();
        assert_eq!(published["pub"], jwk["pub"]);
        assert_eq!(published["kty"], "AKP");
        assert_eq!(published["alg"], "HPKE-10");
        assert_eq!(
            B64URL.decode(jwk["pub"].as_str().unwrap()).unwrap().len(),
            XWING_PUBLIC_LEN
        );
        let der = [&PKCS8_XWING_PREFIX[..], &seed].concat();
        let info = pkcs8::PrivateKeyInfo::try_from(&der[..]).unwrap();
        assert_eq!(info.algorithm.oid.to_string(), XWING_OID);
        let pem = pem(KemKind::XWing, &seed.try_into().unwrap());
        assert_eq!(from_pem(&pem).unwrap().kid(), key.kid());
    }

    /// draft-ietf-jose-hpke-encrypt-20, Appendix A.7: the JWK `d`/`x` pair and its kid.
    #[test]
    fn jwk_and_kid_match_the_draft_example_key() {
        let d = B64URL
            .decode("VtBu3AuB4_RKgDCDqj1j-_Kzf12ekvaGxoAGmMDcDks")
            .unwrap();
        let key = from_x25519_secret(&d).unwrap();
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
        assert!(e.contains("not an X25519 or X-Wing key"), "{e}");
        assert!(from_pem("not pem").unwrap_err().contains("PKCS#8"));
        assert!(
            from_pem("-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n")
                .unwrap_err()
                .contains("not valid PEM")
        );
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let key = from_pem(&generate(KemKind::X25519).unwrap()).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains(key.kid()));
        let Material::X25519 { private, .. } = &key.material else {
            unreachable!()
        };
        assert!(!shown.contains(&B64URL.encode(private.secret_bytes())));
        let key = from_pem(&generate(KemKind::XWing).unwrap()).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains(key.kid()) && shown.contains("XWing"));
        assert!(!shown.contains("opener") && shown.len() < 200, "{shown}");
    }
}
