//! The proxy's RSA keys for client-side encryption (contract §3): `keys.rsa_private_key`,
//! PKCS#8 PEM, 2048–4096 bits. Several may be loaded at once during a rotation; the JWKS lists
//! them all and a JWE (or envelope) names the one it used by `kid`.
//!
//! Split of duties (see `../shared/NOTES.md`, RSA): the `rsa` crate has RUSTSEC-2023-0071
//! (Marvin timing attack on private-key operations) with no fixed release, so it is used only
//! for key generation, PEM encoding and public-key/JWK work. The private-key operation on
//! attacker-supplied ciphertexts — RSA-OAEP-SHA256 decryption — is done with aws-lc-rs.
//!
//! The `kid` is the RFC 7638 JWK thumbprint of the public key, so it is stable across reloads
//! and restarts and any JOSE library can compute it independently.

use std::fmt;
use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA256_MGF1SHA256};
use base64::Engine;
use rsa::pkcs8::{DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use zeroize::Zeroizing;

/// Smallest RSA modulus accepted, in bits.
pub const MIN_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits.
pub const MAX_BITS: usize = 4096;
/// Key sizes `generate` produces.
pub const GENERATE_BITS: [usize; 3] = [2048, 3072, 4096];

/// The JWK `alg` of every key: RSA-OAEP with SHA-256 and MGF1-SHA-256.
pub const JWK_ALG: &str = "RSA-OAEP-256";

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `rsaEncryption` (RFC 8017 A.1), the only PKCS#8 algorithm accepted.
const RSA_ENCRYPTION_OID: &str = "1.2.840.113549.1.1.1";

/// One loaded RSA private key with its public parts precomputed.
pub struct RsaKey {
    /// RFC 7638 JWK thumbprint (SHA-256, base64url without padding).
    pub kid: String,
    /// Modulus size in bits.
    pub bits: usize,
    decrypting: OaepPrivateDecryptingKey,
    /// Public modulus, base64url without padding.
    n: String,
    /// Public exponent, base64url without padding.
    e: String,
    /// SubjectPublicKeyInfo PEM, for the seed-compatible endpoint.
    spki_pem: String,
}

impl fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaKey")
            .field("kid", &self.kid)
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

/// Reads an RSA private key (PKCS#8 PEM) from `path`. Errors name the file and never contain
/// key bytes. File permissions are checked by the config compiler, not here.
pub fn load(path: &Path) -> Result<RsaKey, String> {
    let text = crate::secret_file::read_pem(path, "RSA key")?;
    from_pem(&text).map_err(|e| format!("{}: {e}", path.display()))
}

const ENCRYPTED_BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";

/// Environment variable holding the passphrase of an encrypted RSA key (when no
/// `keys.rsa_key_passphrase_file` is configured).
pub const PASSPHRASE_ENV: &str = "FIELDSEAL_RSA_KEY_PASSPHRASE";

/// The passphrase of an encrypted RSA key: from `file` (trailing newline trimmed; the caller
/// checks its permissions like any secret file) or else from [`PASSPHRASE_ENV`].
pub fn passphrase(file: Option<&Path>) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    if let Some(file) = file {
        let mut bytes = Zeroizing::new(std::fs::read(file).map_err(|e| {
            format!(
                "cannot read RSA key passphrase file {}: {e}",
                file.display()
            )
        })?);
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        return Ok(Some(bytes));
    }
    Ok(std::env::var_os(PASSPHRASE_ENV).map(|v| Zeroizing::new(v.into_encoded_bytes())))
}

/// Reads a PKCS#8 PEM key that may be encrypted (`BEGIN ENCRYPTED PRIVATE KEY`: PBES2 with
/// PBKDF2 or scrypt, as `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes) with `passphrase`.
pub fn load_with_passphrase(path: &Path, passphrase: Option<&[u8]>) -> Result<RsaKey, String> {
    let text = crate::secret_file::read_pem(path, "RSA key")?;
    from_pem_with_passphrase(&text, passphrase).map_err(|e| format!("{}: {e}", path.display()))
}

/// [`from_pem`], also accepting an encrypted PKCS#8 key when `passphrase` is given. A wrong
/// passphrase and a corrupted key give one message (nothing to tell them apart by).
pub fn from_pem_with_passphrase(pem: &str, passphrase: Option<&[u8]>) -> Result<RsaKey, String> {
    let (Some(passphrase), true) = (passphrase, pem.contains(ENCRYPTED_BEGIN)) else {
        return from_pem(pem);
    };
    let start = pem.find(ENCRYPTED_BEGIN).unwrap_or(0);
    let (label, der) = pkcs8::Document::from_pem(&pem[start..])
        .map_err(|_| "is not valid PEM (bad base64 or framing)".to_string())?;
    if label != "ENCRYPTED PRIVATE KEY" {
        return Err("is not an encrypted PKCS#8 key".to_string());
    }
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_bytes())
        .map_err(|_| "is not a valid encrypted PKCS#8 key".to_string())?;
    let plain = info.decrypt(passphrase).map_err(|_| {
        "cannot decrypt the RSA key: wrong passphrase, or the file was modified".to_string()
    })?;
    from_pkcs8_der(plain.as_bytes())
}

/// Parses an RSA private key from PKCS#8 PEM text (`-----BEGIN PRIVATE KEY-----`).
pub fn from_pem(pem: &str) -> Result<RsaKey, String> {
    if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
        return Err(
            "is a PKCS#1 RSA key (BEGIN RSA PRIVATE KEY); convert it to PKCS#8 with \
             `openssl pkcs8 -topk8 -nocrypt -in OLD.pem -out NEW.pem`"
                .to_string(),
        );
    }
    if pem.contains(ENCRYPTED_BEGIN) {
        return Err(format!(
            "is an encrypted PKCS#8 key (BEGIN ENCRYPTED PRIVATE KEY) and no passphrase was \
             given: set `keys.rsa_key_passphrase_file` or {PASSPHRASE_ENV}"
        ));
    }
    let start = pem
        .find("-----BEGIN PRIVATE KEY-----")
        .ok_or("is not a PKCS#8 private key: expected a -----BEGIN PRIVATE KEY----- block")?;
    // Only the first block; anything after its END line is ignored.
    let block = &pem[start..];
    const END: &str = "-----END PRIVATE KEY-----";
    let block = match block.find(END) {
        Some(i) => &block[..i + END.len()],
        None => return Err("has no -----END PRIVATE KEY----- line".to_string()),
    };
    let (_, der) = rsa::pkcs8::SecretDocument::from_pem(block)
        .map_err(|_| "is not valid PEM (bad base64 or framing)".to_string())?;
    from_pkcs8_der(der.as_bytes())
}

fn from_pkcs8_der(der: &[u8]) -> Result<RsaKey, String> {
    let bits = modulus_bits(der)?;
    if bits < MIN_BITS {
        return Err(format!(
            "RSA key has {bits} bits; at least {MIN_BITS} are required \
             (`fieldseal rsa generate` makes 3072)"
        ));
    }
    if bits > MAX_BITS {
        return Err(format!(
            "RSA key has {bits} bits; at most {MAX_BITS} are supported"
        ));
    }
    let private = PrivateDecryptingKey::from_pkcs8(der)
        .map_err(|e| format!("RSA private key rejected: {e}"))?;
    let spki = private
        .public_key()
        .as_der()
        .map_err(|_| "cannot encode the RSA public key".to_string())?;
    let public = rsa::RsaPublicKey::from_public_key_der(spki.as_ref())
        .map_err(|e| format!("cannot read the RSA public key: {e}"))?;
    let n = B64URL.encode(public.n().to_bytes_be());
    let e = B64URL.encode(public.e().to_bytes_be());
    let spki_pem = public
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode the RSA public key as PEM: {e}"))?;
    let decrypting = OaepPrivateDecryptingKey::new(private)
        .map_err(|_| "RSA private key rejected for RSA-OAEP".to_string())?;
    Ok(RsaKey {
        kid: thumbprint(&n, &e),
        bits,
        decrypting,
        n,
        e,
        spki_pem,
    })
}

/// Bit length of the modulus, read from the ASN.1 structure (no big-number arithmetic on the
/// private key). Refuses anything that is not an `rsaEncryption` PKCS#8 key.
fn modulus_bits(der: &[u8]) -> Result<usize, String> {
    let info = rsa::pkcs8::PrivateKeyInfo::try_from(der)
        .map_err(|_| "is not a valid PKCS#8 private key".to_string())?;
    if info.algorithm.oid.to_string() != RSA_ENCRYPTION_OID {
        return Err(format!(
            "is not an RSA key (PKCS#8 algorithm {}); an rsaEncryption key is required",
            info.algorithm.oid
        ));
    }
    let key = rsa::pkcs1::RsaPrivateKey::try_from(info.private_key)
        .map_err(|_| "is not a valid RSA private key (PKCS#1 structure)".to_string())?;
    let n = key.modulus.as_bytes();
    Ok(match n.first() {
        None => 0,
        Some(&top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    })
}

/// RFC 7638 JWK thumbprint of an RSA public key: SHA-256 over the members `e`, `kty`, `n` in
/// lexicographic order, without whitespace, base64url without padding.
fn thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    B64URL.encode(digest.as_ref())
}

impl RsaKey {
    /// The public key as a JWK (RFC 7517) for the JWKS endpoint.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "RSA",
            "kid": self.kid,
            "use": "enc",
            "alg": JWK_ALG,
            "n": self.n,
            "e": self.e,
        })
    }

    /// The seed-compatible public key document (contract §3).
    pub fn seed_public_key(&self) -> Value {
        json!({
            "public_key": self.spki_pem,
            "key_size": self.bits,
            "algorithm": "RSA",
            "kid": self.kid,
        })
    }

    /// The public key as SubjectPublicKeyInfo PEM.
    pub fn spki_pem(&self) -> &str {
        &self.spki_pem
    }

    /// Ciphertext length this key accepts (the modulus size in bytes).
    pub fn ciphertext_len(&self) -> usize {
        self.decrypting.key_size_bytes()
    }

    /// RSA-OAEP decryption with SHA-256 and MGF1-SHA-256, no label (aws-lc-rs).
    ///
    /// Every failure — wrong length, bad padding, wrong key — is the same `Err(())`, so callers
    /// cannot become a padding oracle by reporting different errors.
    // The unit error is the point: a failure must carry nothing about why it failed.
    #[allow(clippy::result_unit_err)]
    pub fn decrypt_oaep_sha256(&self, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, ()> {
        if ciphertext.len() != self.decrypting.key_size_bytes() {
            return Err(());
        }
        let mut out = Zeroizing::new(vec![0u8; self.decrypting.min_output_size()]);
        let len = self
            .decrypting
            .decrypt(&OAEP_SHA256_MGF1SHA256, ciphertext, &mut out, None)
            .map_err(|_| ())?
            .len();
        out.truncate(len);
        Ok(out)
    }
}

/// The JWKS document (RFC 7517) listing every key: `{"keys":[…]}`.
pub fn jwks(keys: &[RsaKey]) -> String {
    let keys: Vec<Value> = keys.iter().map(RsaKey::jwk).collect();
    json!({ "keys": keys }).to_string()
}

/// Generates a new RSA private key of `bits` (2048, 3072 or 4096) as PKCS#8 PEM.
pub fn generate(bits: usize) -> Result<Zeroizing<String>, String> {
    if !GENERATE_BITS.contains(&bits) {
        return Err(format!(
            "unsupported RSA key size {bits}; use 2048, 3072 or 4096"
        ));
    }
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
        .map_err(|e| format!("RSA key generation failed: {e}"))?;
    key.to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode the RSA key as PKCS#8 PEM: {e}"))
}

/// A fixed RSA-2048 test key (PKCS#8), generated once with Python `cryptography` for these
/// tests only; it protects nothing. Fixed rather than generated per run because 2048-bit
/// generation is slow in debug builds, and because the jwcrypto vectors below were
/// encrypted to it.
#[cfg(test)]
pub(crate) const TEST_KEY_PEM: &str = include_str!("../../tests/keys/rsa-2048-test-only.pem");

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use std::sync::OnceLock;

    /// One generated 2048-bit key per test binary (generation is slow in debug builds).
    fn pem_2048() -> &'static str {
        static PEM: OnceLock<Zeroizing<String>> = OnceLock::new();
        PEM.get_or_init(|| generate(2048).unwrap())
    }

    fn key() -> RsaKey {
        from_pem(pem_2048()).unwrap()
    }

    fn public_of(pem: &str) -> rsa::RsaPublicKey {
        use rsa::pkcs8::DecodePrivateKey;
        rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .unwrap()
            .to_public_key()
    }

    #[test]
    fn generates_pkcs8_and_loads_round_trip() {
        let pem = pem_2048();
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----"),
            "{}",
            &pem[..40]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rsa.pem");
        std::fs::write(&path, pem.as_bytes()).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.bits, 2048);
        assert_eq!(loaded.ciphertext_len(), 256);
        let jwk = loaded.jwk();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["use"], "enc");
        assert_eq!(jwk["alg"], "RSA-OAEP-256");
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(jwk["kid"], loaded.kid.as_str());
        let seed = loaded.seed_public_key();
        assert_eq!(seed["key_size"], 2048);
        assert_eq!(seed["algorithm"], "RSA");
        assert_eq!(seed["kid"], loaded.kid.as_str());
        let spki = seed["public_key"].as_str().unwrap();
        assert!(spki.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(
            rsa::RsaPublicKey::from_public_key_pem(spki).unwrap(),
            public_of(pem)
        );
        assert_eq!(
            generate(1024).unwrap_err(),
            "unsupported RSA key size 1024; use 2048, 3072 or 4096"
        );
    }

    #[test]
    fn kid_is_stable_and_an_rfc7638_thumbprint() {
        let a = key();
        let b = key();
        assert_eq!(a.kid, b.kid);
        // Independently: from the rsa crate's public key and sha2, via serde_json's sorted
        // map (serde_json without preserve_order sorts keys).
        use rsa::sha2::{Digest, Sha256};
        let public = public_of(pem_2048());
        let mut members = serde_json::Map::new();
        members.insert("n".into(), B64URL.encode(public.n().to_bytes_be()).into());
        members.insert("kty".into(), "RSA".into());
        members.insert("e".into(), B64URL.encode(public.e().to_bytes_be()).into());
        let canonical = serde_json::to_string(&members).unwrap();
        assert!(
            canonical.starts_with(r#"{"e":"AQAB","kty":"RSA","n":""#),
            "{canonical}"
        );
        let expected = B64URL.encode(Sha256::digest(canonical.as_bytes()));
        assert_eq!(a.kid, expected);
        assert_eq!(a.kid.len(), 43);
    }

    #[test]
    fn jwks_lists_every_key() {
        let a = key();
        let doc: Value = serde_json::from_str(&jwks(&[a])).unwrap();
        let keys = doc["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["kty"], "RSA");
        let empty: Value = serde_json::from_str(&jwks(&[])).unwrap();
        assert_eq!(empty, json!({"keys": []}));
    }

    #[test]
    fn small_keys_are_refused() {
        let small = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let pem = small.to_pkcs8_pem(LineEnding::LF).unwrap();
        let err = from_pem(&pem).unwrap_err();
        assert!(err.contains("1024 bits") && err.contains("2048"), "{err}");
        assert!(!err.contains("MII"), "{err}");
    }

    #[test]
    fn pkcs1_and_encrypted_pem_are_refused_with_a_hint() {
        use rsa::pkcs8::DecodePrivateKey;
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(pem_2048()).unwrap();
        let pkcs1 = private.to_pkcs1_pem(LineEnding::LF).unwrap();
        assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pkcs1.pem");
        std::fs::write(&path, pkcs1.as_bytes()).unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.contains("PKCS#1"), "{err}");
        assert!(err.contains("openssl pkcs8 -topk8 -nocrypt"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(!err.contains("MII"), "{err}");

        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let err = from_pem(encrypted).unwrap_err();
        assert!(err.contains(PASSPHRASE_ENV), "{err}");

        let err = from_pem("hello").unwrap_err();
        assert!(err.contains("BEGIN PRIVATE KEY"), "{err}");
        let err =
            from_pem("-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n").unwrap_err();
        assert!(err.contains("not valid PEM"), "{err}");
        let err = load(&dir.path().join("missing.pem")).unwrap_err();
        assert!(err.contains("cannot read RSA key"), "{err}");
    }

    #[test]
    fn non_rsa_pkcs8_is_refused() {
        let ec = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        )
        .unwrap();
        let der = ec.to_pkcs8v1().unwrap();
        let err = from_pkcs8_der(der.as_ref()).unwrap_err();
        assert!(err.contains("not an RSA key"), "{err}");
    }

    #[test]
    fn decrypts_what_the_rsa_crate_encrypts() {
        let key = key();
        let public = public_of(pem_2048());
        let cek = [7u8; 32];
        let ct = public
            .encrypt(
                &mut rsa::rand_core::OsRng,
                rsa::Oaep::new::<rsa::sha2::Sha256>(),
                &cek,
            )
            .unwrap();
        assert_eq!(ct.len(), 256);
        assert_eq!(key.decrypt_oaep_sha256(&ct).unwrap().as_slice(), &cek);

        // Empty plaintext works too.
        let ct0 = public
            .encrypt(
                &mut rsa::rand_core::OsRng,
                rsa::Oaep::new::<rsa::sha2::Sha256>(),
                b"",
            )
            .unwrap();
        assert!(key.decrypt_oaep_sha256(&ct0).unwrap().is_empty());

        // Tampered: every flipped byte position tried fails the same way.
        for i in [0, 1, 100, 255] {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            assert_eq!(key.decrypt_oaep_sha256(&bad), Err(()));
        }
        // Wrong lengths.
        assert_eq!(key.decrypt_oaep_sha256(&ct[..255]), Err(()));
        let mut long = ct.clone();
        long.push(0);
        assert_eq!(key.decrypt_oaep_sha256(&long), Err(()));
        assert_eq!(key.decrypt_oaep_sha256(&[]), Err(()));
        // Another OAEP hash (SHA-224) does not decrypt as OAEP-SHA-256.
        let other_hash = public
            .encrypt(
                &mut rsa::rand_core::OsRng,
                rsa::Oaep::new::<rsa::sha2::Sha224>(),
                &cek,
            )
            .unwrap();
        assert_eq!(key.decrypt_oaep_sha256(&other_hash), Err(()));
    }

    #[test]
    fn debug_prints_no_key_material() {
        let key = key();
        let shown = format!("{key:?}");
        assert!(shown.contains(&key.kid));
        assert!(!shown.contains(key.n.as_str()));
        assert!(!shown.contains("PUBLIC KEY"));
    }

    #[test]
    fn encrypted_pkcs8_opens_with_its_passphrase_only() {
        use rsa::pkcs8::DecodePrivateKey;
        let plain = from_pem(pem_2048()).unwrap();
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(pem_2048()).unwrap();
        let der = rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(&private).unwrap();
        let info = pkcs8::PrivateKeyInfo::try_from(der.as_bytes()).unwrap();
        // What `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes: PBES2, PBKDF2-SHA256, AES-256-CBC.
        let params =
            pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, &[7u8; 16], &[9u8; 16])
                .unwrap();
        let encrypted = info.encrypt_with_params(params, b"correct horse").unwrap();
        let pem = encrypted
            .to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
            .unwrap();

        let key = from_pem_with_passphrase(&pem, Some(b"correct horse")).unwrap();
        assert_eq!((key.kid.as_str(), key.bits), (plain.kid.as_str(), 2048));
        let err = from_pem_with_passphrase(&pem, Some(b"wrong horse")).unwrap_err();
        assert!(err.contains("wrong passphrase"), "{err}");
        assert!(!err.contains("horse"), "{err}");
        let err = from_pem_with_passphrase(&pem, None).unwrap_err();
        assert!(err.contains(PASSPHRASE_ENV), "{err}");
        // A plain key ignores a passphrase.
        assert!(from_pem_with_passphrase(pem_2048(), Some(b"x")).is_ok());

        let dir = tempfile::tempdir().unwrap();
        let (key_path, pass_path) = (dir.path().join("k.pem"), dir.path().join("pass"));
        std::fs::write(&key_path, pem.as_bytes()).unwrap();
        std::fs::write(&pass_path, "correct horse\n").unwrap();
        let pass = passphrase(Some(&pass_path)).unwrap().unwrap();
        assert_eq!(&pass[..], b"correct horse");
        assert_eq!(
            load_with_passphrase(&key_path, Some(&pass)).unwrap().kid,
            plain.kid
        );
    }
}
