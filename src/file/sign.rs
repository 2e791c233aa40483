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
//! `<scheme>` is `ed25519` (RFC 8032) or `rsa-pss-sha512` (RSASSA-PSS, SHA-512, MGF1-SHA-512, a
//! 64-byte salt; RSA keys of 2048 to 8192 bits) — the latter for teams whose backups are signed
//! with RSA keys today. The key id is the first 16 characters of unpadded base64url of SHA-256
//! of the public key (the raw 32 bytes for Ed25519, the DER `RSAPublicKey` for RSA): it names the
//! key a signature claims, so a mismatch is reported as such.

use std::io::{self, Write};
use std::path::Path;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use super::FileError;

const CONTEXT: &[u8] = b"fieldseal-signature/v1\n";
const FORMAT: &str = "fieldseal-signature/v1";
/// RFC 8410: id-Ed25519.
const ED25519_OID: &str = "1.3.101.112";
/// PKCS #1: rsaEncryption.
const RSA_OID: &str = "1.2.840.113549.1.1.1";

/// The sealed file's digest, as signed.
pub type Digest = [u8; 64];

/// A signature scheme, by its name in the `.sig` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Ed25519,
    RsaPss,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Ed25519 => "ed25519",
            Scheme::RsaPss => "rsa-pss-sha512",
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
    Rsa(RsaKeyPair),
}

/// A sender's private key, PKCS#8 PEM: Ed25519 (`openssl genpkey -algorithm ed25519`) or RSA
/// (`openssl genpkey -algorithm rsa -pkeyopt rsa_keygen_bits:4096`, `fieldseal rsa generate`).
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
            RSA_OID => SigningKey::Rsa(
                RsaKeyPair::from_pkcs8(der.as_bytes())
                    .map_err(|_| bad("is not a usable RSA private key (2048 to 8192 bits)"))?,
            ),
            _ => return Err(bad("is neither an Ed25519 nor an RSA private key")),
        };
        let kid = match &key {
            SigningKey::Ed25519(pair) => key_id(pair.public_key().as_ref()),
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

/// A sender's public key, SubjectPublicKeyInfo PEM (`openssl pkey -pubout`): Ed25519 or RSA.
pub struct Verifier {
    scheme: Scheme,
    /// The raw Ed25519 key, or the DER `RSAPublicKey`.
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
            RSA_OID => Scheme::RsaPss,
            _ => return Err(bad("is neither an Ed25519 nor an RSA public key")),
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
        let algorithm: &dyn signature::VerificationAlgorithm = match self.scheme {
            Scheme::Ed25519 => &signature::ED25519,
            Scheme::RsaPss => &signature::RSA_PSS_2048_8192_SHA512,
        };
        signature::UnparsedPublicKey::new(algorithm, &self.public)
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

    fn pem_pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        use pkcs8::der::pem::LineEnding;
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        let secret = dir.join(format!("{name}.pem"));
        let pem =
            pkcs8::der::pem::encode_string("PRIVATE KEY", LineEnding::LF, doc.as_ref()).unwrap();
        std::fs::write(&secret, pem).unwrap();
        // SubjectPublicKeyInfo: the fixed RFC 8410 prefix, then the 32 raw bytes.
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        let public = dir.join(format!("{name}.pub.pem"));
        let pem = pkcs8::der::pem::encode_string("PUBLIC KEY", LineEnding::LF, &spki).unwrap();
        std::fs::write(&public, pem).unwrap();
        (secret, public)
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
        let e = Verifier::load(&other)
            .unwrap()
            .verify(&text, &digest)
            .unwrap_err()
            .to_string();
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
