//! The sender's signature over a sealed file (docs/files.md): Ed25519 or RSA-PSS, detached in
//! `<file>.sig`, so the sealed file itself stays a plain age file every age tool reads.
//!
//! age authenticates a file only to its recipients, and any recipient could write another file
//! for the same recipients. The signature binds the sealed bytes to the sender's key: `open
//! --verify` checks it over the whole file before any plaintext is written, and again over the
//! bytes it actually decrypted, so a file swapped between the two reads is refused too.
//!
//! The signed message is `"fieldseal-signature/v1\n" ‖ SHA-512(sealed file)`: a fixed-size
//! message, so a file of any size is signed and verified in one streaming pass. The `.sig`
//! file is two lines:
//!
//! ```text
//! fieldseal-signature/v1 <scheme> <key id>
//! <base64 of the signature>
//! ```
//!
//! `<scheme>` is `ed25519` (RFC 8032), `ml-dsa-65` (FIPS 204, pure ML-DSA with an empty
//! context: post-quantum, for backups that must stay attributable beyond the reach of a future
//! quantum computer) or `rsa-pss-sha512` (RSASSA-PSS, SHA-512, MGF1-SHA-512, a 64-byte salt;
//! RSA keys of 2048 to 8192 bits) — the latter for teams whose backups are signed with RSA keys
//! today. The key id is the first 16 characters of unpadded base64url of SHA-256 of the public
//! key (the raw 32 bytes for Ed25519, the raw 1,952 bytes for ML-DSA-65, the DER
//! `RSAPublicKey` for RSA): it names the key a signature claims, so a mismatch is reported as
//! such.

use std::io::{self, Write};
use std::path::Path;

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, PqdsaKeyPair, RsaKeyPair};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use super::FileError;

const CONTEXT: &[u8] = b"fieldseal-signature/v1\n";
const FORMAT: &str = "fieldseal-signature/v1";
/// RFC 8410: id-Ed25519.
const ED25519_OID: &str = "1.3.101.112";
/// PKCS #1: rsaEncryption.
const RSA_OID: &str = "1.2.840.113549.1.1.1";
/// FIPS 204 (NIST CSOR): id-ml-dsa-65.
const ML_DSA_65_OID: &str = "2.16.840.1.101.3.4.3.18";

/// The sealed file's digest, as signed.
pub type Digest = [u8; 64];

/// A signature scheme, by its name in the `.sig` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Ed25519,
    MlDsa65,
    RsaPss,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Ed25519 => "ed25519",
            Scheme::MlDsa65 => "ml-dsa-65",
            Scheme::RsaPss => "rsa-pss-sha512",
        }
    }

    fn verification(self) -> &'static dyn signature::VerificationAlgorithm {
        match self {
            Scheme::Ed25519 => &signature::ED25519,
            Scheme::MlDsa65 => &signature::ML_DSA_65,
            Scheme::RsaPss => &signature::RSA_PSS_2048_8192_SHA512,
        }
    }
}

fn message(digest: &Digest) -> Vec<u8> {
    [CONTEXT, &digest[..]].concat()
}

fn key_id(public: &[u8]) -> String {
    let hash = digest::digest(&digest::SHA256, public);
    URL_SAFE_NO_PAD.encode(hash.as_ref())[..16].to_string()
}

enum SigningKey {
    Ed25519(Ed25519KeyPair),
    MlDsa65(PqdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A new signing key: its PKCS#8 PEM (the secret) and its SubjectPublicKeyInfo PEM. Ed25519, or
/// ML-DSA-65 with `post_quantum` (the seed form of RFC 9881, which OpenSSL 3.5 and Python
/// `cryptography` read).
pub fn generate(post_quantum: bool) -> Result<(zeroize::Zeroizing<String>, String), FileError> {
    let failed = |what: &str| FileError::Identity(format!("key generation failed: {what}"));
    let (private_der, public_der) = if post_quantum {
        let pair = PqdsaKeyPair::generate(&signature::ML_DSA_65_SIGNING)
            .map_err(|_| failed("ML-DSA-65"))?;
        let private = pair.to_pkcs8v1().map_err(|_| failed("ML-DSA-65 PKCS#8"))?;
        let public = pair
            .public_key()
            .as_der()
            .map_err(|_| failed("ML-DSA-65 SPKI"))?;
        (private.as_ref().to_vec(), public.as_ref().to_vec())
    } else {
        let private = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|_| failed("Ed25519"))?;
        let pair =
            Ed25519KeyPair::from_pkcs8(private.as_ref()).map_err(|_| failed("Ed25519 PKCS#8"))?;
        let public = pair
            .public_key()
            .as_der()
            .map_err(|_| failed("Ed25519 SPKI"))?;
        (private.as_ref().to_vec(), public.as_ref().to_vec())
    };
    let private_der = zeroize::Zeroizing::new(private_der);
    let pem = |label, der: &[u8]| {
        pkcs8::der::pem::encode_string(label, pkcs8::LineEnding::LF, der).map_err(|_| failed("PEM"))
    };
    Ok((
        zeroize::Zeroizing::new(pem("PRIVATE KEY", &private_der)?),
        pem("PUBLIC KEY", &public_der)?,
    ))
}

/// A sender's private key, PKCS#8 PEM: Ed25519 (`fieldseal file keygen --sign`, `openssl
/// genpkey -algorithm ed25519`), ML-DSA-65 (`fieldseal file keygen --sign --pq`, `openssl
/// genpkey -algorithm ML-DSA-65` from OpenSSL 3.5) or RSA (`openssl genpkey -algorithm rsa
/// -pkeyopt rsa_keygen_bits:4096`, `fieldseal rsa generate`).
pub struct Signer {
    key: SigningKey,
    kid: String,
}

impl Signer {
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let bad = |m: &str| FileError::Identity(format!("{}: {m}", path.display()));
        let text = crate::secret_file::read_pem(path, "signing key").map_err(|m| bad(&m))?;
        let start = text
            .find("-----BEGIN PRIVATE KEY-----")
            .ok_or_else(|| bad("expected a PKCS#8 -----BEGIN PRIVATE KEY----- block"))?;
        let (_, der) =
            pkcs8::SecretDocument::from_pem(&text[start..]).map_err(|_| bad("is not valid PEM"))?;
        let info = pkcs8::PrivateKeyInfo::try_from(der.as_bytes())
            .map_err(|_| bad("is not a PKCS#8 private key"))?;
        let key = match info.algorithm.oid.to_string().as_str() {
            ED25519_OID => SigningKey::Ed25519(
                Ed25519KeyPair::from_pkcs8(der.as_bytes())
                    .map_err(|_| bad("is not a valid Ed25519 private key"))?,
            ),
            ML_DSA_65_OID => SigningKey::MlDsa65(
                PqdsaKeyPair::from_pkcs8(&signature::ML_DSA_65_SIGNING, der.as_bytes())
                    .map_err(|_| bad("is not a valid ML-DSA-65 private key"))?,
            ),
            RSA_OID => SigningKey::Rsa(
                RsaKeyPair::from_pkcs8(der.as_bytes())
                    .map_err(|_| bad("is not a usable RSA private key (2048 to 8192 bits)"))?,
            ),
            _ => {
                return Err(bad(
                    "is neither an Ed25519, an ML-DSA-65 nor an RSA private key",
                ))
            }
        };
        let kid = match &key {
            SigningKey::Ed25519(pair) => key_id(pair.public_key().as_ref()),
            SigningKey::MlDsa65(pair) => key_id(pair.public_key().as_ref()),
            SigningKey::Rsa(pair) => key_id(pair.public_key().as_ref()),
        };
        Ok(Self { key, kid })
    }

    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// The `.sig` file's text for a sealed file with this digest.
    pub fn sign(&self, digest: &Digest) -> Result<String, FileError> {
        let message = message(digest);
        let (scheme, sig) = match &self.key {
            SigningKey::Ed25519(pair) => (Scheme::Ed25519, pair.sign(&message).as_ref().to_vec()),
            SigningKey::MlDsa65(pair) => {
                let mut sig = vec![0u8; pair.algorithm().signature_len()];
                let n = pair
                    .sign(&message, &mut sig)
                    .map_err(|_| FileError::Identity("ML-DSA-65 signing failed".into()))?;
                sig.truncate(n);
                (Scheme::MlDsa65, sig)
            }
            SigningKey::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(
                    &signature::RSA_PSS_SHA512,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    &message,
                    &mut sig,
                )
                .map_err(|_| FileError::Identity("RSA-PSS signing failed".into()))?;
                (Scheme::RsaPss, sig)
            }
        };
        Ok(format!(
            "{FORMAT} {} {}\n{}\n",
            scheme.name(),
            self.kid,
            STANDARD.encode(sig)
        ))
    }
}

/// A sender's public key, SubjectPublicKeyInfo PEM (`openssl pkey -pubout`, or what `fieldseal
/// file keygen --sign` prints): Ed25519, ML-DSA-65 or RSA.
pub struct Verifier {
    scheme: Scheme,
    /// The raw Ed25519 or ML-DSA-65 key, or the DER `RSAPublicKey`.
    public: Vec<u8>,
    kid: String,
}

impl Verifier {
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let bad = |m: &str| FileError::Identity(format!("{}: {m}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(&e.to_string()))?;
        let (_, der) =
            pkcs8::Document::from_pem(text.trim()).map_err(|_| bad("is not a PEM public key"))?;
        let spki = pkcs8::SubjectPublicKeyInfoRef::try_from(der.as_bytes())
            .map_err(|_| bad("is not a SubjectPublicKeyInfo"))?;
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| bad("is not a valid public key"))?;
        let scheme = match spki.algorithm.oid.to_string().as_str() {
            ED25519_OID if bits.len() == 32 => Scheme::Ed25519,
            ED25519_OID => return Err(bad("is not a 32-byte Ed25519 public key")),
            ML_DSA_65_OID if bits.len() == signature::ML_DSA_65_SIGNING.public_key_len() => {
                Scheme::MlDsa65
            }
            ML_DSA_65_OID => return Err(bad("is not a 1,952-byte ML-DSA-65 public key")),
            RSA_OID => Scheme::RsaPss,
            _ => {
                return Err(bad(
                    "is neither an Ed25519, an ML-DSA-65 nor an RSA public key",
                ))
            }
        };
        Ok(Self {
            scheme,
            kid: key_id(bits),
            public: bits.to_vec(),
        })
    }

    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// Whether `sig_text` is this key's signature over a file with `digest`.
    pub fn verify(&self, sig_text: &str, digest: &Digest) -> Result<(), FileError> {
        let refused = |m: &str| FileError::Refused(format!("signature: {m}"));
        let mut lines = sig_text.lines();
        let head = lines.next().unwrap_or_default();
        let mut fields = head.split(' ');
        let (Some(FORMAT), Some(scheme), Some(kid), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(refused("not a fieldseal-signature/v1 file"));
        };
        if scheme != self.scheme.name() {
            return Err(refused(&format!(
                "an {scheme} signature, and the given key is {}",
                self.scheme.name()
            )));
        }
        if kid != self.kid {
            return Err(refused(&format!(
                "made by key {kid}, not by the given key {}",
                self.kid
            )));
        }
        let sig = lines
            .next()
            .and_then(|l| STANDARD.decode(l.trim()).ok())
            .ok_or_else(|| refused("the signature line is not base64"))?;
        signature::UnparsedPublicKey::new(self.scheme.verification(), &self.public)
            .verify(&message(digest), &sig)
            .map_err(|_| refused("does not verify: the file is not the one that was signed"))
    }
}

/// SHA-512 of what passes through.
pub struct Hashing<W> {
    inner: W,
    ctx: digest::Context,
}

impl<W> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            ctx: digest::Context::new(&digest::SHA512),
        }
    }

    /// The digest of everything so far.
    pub fn digest(&self) -> Digest {
        let d = self.ctx.clone().finish();
        d.as_ref().try_into().expect("SHA-512 is 64 bytes")
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.ctx.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: io::Read> io::Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx.update(&buf[..n]);
        Ok(n)
    }
}

/// SHA-512 of a whole file, read in one pass.
pub fn digest_file(path: &Path) -> Result<Digest, FileError> {
    let mut hashing = Hashing::new(std::fs::File::open(path)?);
    super::copy(&mut hashing, &mut io::sink())?;
    Ok(hashing.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key pair as `fieldseal file keygen --sign [--pq]` writes it.
    fn pair_of(dir: &Path, name: &str, pq: bool) -> (std::path::PathBuf, std::path::PathBuf) {
        let (private, public) = generate(pq).unwrap();
        let secret = dir.join(format!("{name}.pem"));
        std::fs::write(&secret, private.as_bytes()).unwrap();
        let public_path = dir.join(format!("{name}.pub.pem"));
        std::fs::write(&public_path, public).unwrap();
        (secret, public_path)
    }

    fn pem_pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        pair_of(dir, name, false)
    }

    /// The generated Ed25519 public key is the RFC 8410 SubjectPublicKeyInfo of the key the
    /// private file holds (the fixed 12-byte prefix, then the raw 32 bytes).
    #[test]
    fn generated_ed25519_keys_are_rfc_8410() {
        let (private, public) = generate(false).unwrap();
        let (_, der) = pkcs8::SecretDocument::from_pem(&private).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(der.as_bytes()).unwrap();
        let (_, spki) = pkcs8::Document::from_pem(&public).unwrap();
        let prefix = [
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        assert_eq!(
            spki.as_bytes(),
            [&prefix[..], pair.public_key().as_ref()].concat()
        );
    }

    /// ML-DSA-65: generated keys sign and verify; the signature is FIPS 204's 3,309 bytes; it
    /// holds for its digest and key only, and is not taken for an Ed25519 one.
    #[test]
    fn ml_dsa_65_signatures_verify_for_their_digest_and_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = pair_of(dir.path(), "pq", true);
        let (_, other) = pair_of(dir.path(), "pq2", true);
        let (ed_secret, ed_public) = pem_pair(dir.path(), "e");
        let digest = [5u8; 64];
        let signer = Signer::load(&secret).unwrap();
        let text = signer.sign(&digest).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            format!("fieldseal-signature/v1 ml-dsa-65 {}", signer.key_id())
        );
        assert_eq!(STANDARD.decode(lines.next().unwrap()).unwrap().len(), 3309);
        let verifier = Verifier::load(&public).unwrap();
        assert_eq!(verifier.key_id(), signer.key_id());
        verifier.verify(&text, &digest).unwrap();
        let mut changed = digest;
        changed[10] ^= 0x80;
        assert!(verifier.verify(&text, &changed).is_err());
        let e = refusal(&other, &text, &digest);
        assert!(e.contains("made by key"), "{e}");
        let ed_text = Signer::load(&ed_secret).unwrap().sign(&digest).unwrap();
        assert!(verifier.verify(&ed_text, &digest).is_err());
        assert!(Verifier::load(&ed_public)
            .unwrap()
            .verify(&text, &digest)
            .is_err());
        // A signature line changed in one bit does not verify.
        let sig = lines_of(&text)[1].clone();
        let mut raw = STANDARD.decode(&sig).unwrap();
        raw[100] ^= 1;
        let forged = text.replace(&sig, &STANDARD.encode(raw));
        assert!(verifier.verify(&forged, &digest).is_err());
    }

    /// The documented vector (docs/files.md, "The `.sig` file"): Ed25519 is deterministic, so
    /// the seed 00..1f over the file `fieldseal signature vector\n` gives exactly this `.sig`.
    #[test]
    fn the_documented_ed25519_vector() {
        let dir = tempfile::tempdir().unwrap();
        let seed: Vec<u8> = (0u8..32).collect();
        let pkcs8 = [
            &[
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20,
            ][..],
            &seed,
        ]
        .concat();
        let path = dir.path().join("v.pem");
        std::fs::write(
            &path,
            pkcs8::der::pem::encode_string("PRIVATE KEY", pkcs8::LineEnding::LF, &pkcs8).unwrap(),
        )
        .unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"fieldseal signature vector\n").unwrap();
        let digest = digest_file(&file).unwrap();
        assert_eq!(
            digest[..8],
            [0xb9, 0xa2, 0xfd, 0x8c, 0x54, 0x8a, 0x29, 0xc0],
            "SHA-512 of the vector file"
        );
        assert_eq!(
            Signer::load(&path).unwrap().sign(&digest).unwrap(),
            "fieldseal-signature/v1 ed25519 Vkdap1RjR0wChd9d\n\
             JTAW7QfF/hZMhNXhbDgtxyJjVTVU7Hm8ZrmkfJ6lQqyLW28Mdnitay3Pt1NAHRAnE0BrZAaiD6osKxQWmsKcCA==\n"
        );
    }

    /// Why the public key at `public` refuses `text` for `digest`.
    fn refusal(public: &Path, text: &str, digest: &Digest) -> String {
        Verifier::load(public)
            .unwrap()
            .verify(text, digest)
            .unwrap_err()
            .to_string()
    }

    fn lines_of(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    /// An RSA key pair as `openssl genpkey` and `openssl pkey -pubout` write them.
    fn rsa_pair(dir: &Path, name: &str, bits: usize) -> (std::path::PathBuf, std::path::PathBuf) {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).unwrap();
        let secret = dir.join(format!("{name}.pem"));
        std::fs::write(
            &secret,
            key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
        let public = dir.join(format!("{name}.pub.pem"));
        std::fs::write(
            &public,
            key.to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
        .unwrap();
        (secret, public)
    }

    #[test]
    fn rsa_pss_signatures_verify_for_their_digest_and_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = rsa_pair(dir.path(), "r", 2048);
        let (ed_secret, ed_public) = pem_pair(dir.path(), "e");
        let digest = [9u8; 64];
        let text = Signer::load(&secret).unwrap().sign(&digest).unwrap();
        assert!(text.starts_with("fieldseal-signature/v1 rsa-pss-sha512 "));
        let verifier = Verifier::load(&public).unwrap();
        verifier.verify(&text, &digest).unwrap();
        // PSS is randomised: a second signature differs and verifies too.
        let again = Signer::load(&secret).unwrap().sign(&digest).unwrap();
        assert_ne!(again, text);
        verifier.verify(&again, &digest).unwrap();
        let mut changed = digest;
        changed[63] ^= 1;
        assert!(verifier.verify(&text, &changed).is_err());
        // Schemes are not crossed: an Ed25519 signature against an RSA key and back.
        let ed_text = Signer::load(&ed_secret).unwrap().sign(&digest).unwrap();
        let e = verifier.verify(&ed_text, &digest).unwrap_err().to_string();
        assert!(e.contains("ed25519"), "{e}");
        assert!(Verifier::load(&ed_public)
            .unwrap()
            .verify(&text, &digest)
            .is_err());
        // Another RSA key: named as such.
        let (_, other) = rsa_pair(dir.path(), "o", 2048);
        let e = refusal(&other, &text, &digest);
        assert!(e.contains("made by key"), "{e}");
        // A 1024-bit key is refused for signing.
        let (weak, _) = rsa_pair(dir.path(), "w", 1024);
        assert!(Signer::load(&weak).is_err());
    }

    #[test]
    fn a_signature_verifies_for_its_digest_and_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = pem_pair(dir.path(), "a");
        let (_, other) = pem_pair(dir.path(), "b");
        let signer = Signer::load(&secret).unwrap();
        let digest = [7u8; 64];
        let text = signer.sign(&digest).unwrap();
        let verifier = Verifier::load(&public).unwrap();
        verifier.verify(&text, &digest).unwrap();
        let mut changed = digest;
        changed[0] ^= 1;
        assert!(verifier.verify(&text, &changed).is_err());
        assert!(Verifier::load(&other)
            .unwrap()
            .verify(&text, &digest)
            .is_err());
        assert!(verifier
            .verify("fieldseal-signature/v1 ed25519 x\nAAAA\n", &digest)
            .is_err());
        // A private key is not taken for a public one, nor the other way round.
        assert!(Verifier::load(&secret).is_err());
        assert!(Signer::load(&public).is_err());
    }
}
