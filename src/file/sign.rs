//! The sender's signature over a sealed file (docs/files.md): Ed25519, detached in
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
//! fieldseal-signature/v1 ed25519 <key id>
//! <base64 of the 64-byte signature>
//! ```
//!
//! The key id is the first 16 characters of unpadded base64url of SHA-256 of the raw 32-byte
//! public key: it names the key a signature claims, so a mismatch is reported as such.

use std::io::{self, Write};
use std::path::Path;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use super::FileError;

const CONTEXT: &[u8] = b"fieldseal-signature/v1\n";
const FIRST_LINE: &str = "fieldseal-signature/v1 ed25519";
/// RFC 8410: id-Ed25519.
const ED25519_OID: &str = "1.3.101.112";

/// The sealed file's digest, as signed.
pub type Digest = [u8; 64];

fn message(digest: &Digest) -> Vec<u8> {
    [CONTEXT, &digest[..]].concat()
}

fn key_id(public: &[u8]) -> String {
    let hash = digest::digest(&digest::SHA256, public);
    URL_SAFE_NO_PAD.encode(hash.as_ref())[..16].to_string()
}

/// A sender's Ed25519 private key (PKCS#8 PEM: `openssl genpkey -algorithm ed25519`).
pub struct Signer {
    pair: Ed25519KeyPair,
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
        let pair = Ed25519KeyPair::from_pkcs8(der.as_bytes())
            .map_err(|_| bad("is not an Ed25519 private key"))?;
        let kid = key_id(pair.public_key().as_ref());
        Ok(Self { pair, kid })
    }

    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// The `.sig` file's text for a sealed file with this digest.
    pub fn sign(&self, digest: &Digest) -> String {
        let sig = self.pair.sign(&message(digest));
        format!(
            "{FIRST_LINE} {}\n{}\n",
            self.kid,
            STANDARD.encode(sig.as_ref())
        )
    }
}

/// A sender's Ed25519 public key (SubjectPublicKeyInfo PEM: `openssl pkey -pubout`).
pub struct Verifier {
    public: [u8; 32],
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
        if spki.algorithm.oid.to_string() != ED25519_OID {
            return Err(bad("is not an Ed25519 public key"));
        }
        let public: [u8; 32] = spki
            .subject_public_key
            .as_bytes()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("is not a 32-byte Ed25519 public key"))?;
        Ok(Self {
            kid: key_id(&public),
            public,
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
        let kid = head
            .strip_prefix(FIRST_LINE)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or_else(|| refused("not a fieldseal-signature/v1 ed25519 file"))?;
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
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.public)
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

    #[test]
    fn a_signature_verifies_for_its_digest_and_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = pem_pair(dir.path(), "a");
        let (_, other) = pem_pair(dir.path(), "b");
        let signer = Signer::load(&secret).unwrap();
        let digest = [7u8; 64];
        let text = signer.sign(&digest);
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
