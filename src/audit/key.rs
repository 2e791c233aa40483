//! The audit chain key: 32 bytes, kept apart from the keyring, never printed.

use std::fmt;
use std::path::Path;

use aws_lc_rs::{constant_time, hmac};
use base64::Engine;
use zeroize::Zeroizing;

use super::chain::{Mac, MAC_LEN};
use crate::secret_file::{self, Exposure};

/// Length of the audit key.
pub const AUDIT_KEY_LEN: usize = 32;

/// The HMAC-SHA256 key of the chain. Only the HMAC context is kept; `Debug` shows nothing.
pub struct AuditKey(hmac::Key);

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    pub fn from_bytes(bytes: &[u8; AUDIT_KEY_LEN]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// Reads a key file: exactly 32 raw bytes, or the standard base64 of 32 bytes (surrounding
    /// whitespace, such as a trailing newline, is ignored). Refuses a file other users can
    /// read. Error messages name the file and sizes, never its contents.
    pub fn load(path: &Path) -> Result<(Self, Exposure), String> {
        let exposure = secret_file::check(path)?;
        let bytes = Zeroizing::new(
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        );
        let key = decode(&bytes).map_err(|m| format!("{}: {m}", path.display()))?;
        Ok((Self::from_bytes(&key), exposure))
    }

    /// HMAC-SHA256(key, previous ‖ body).
    pub fn mac(&self, previous: &Mac, body: &[u8]) -> Mac {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(previous);
        ctx.update(body);
        let tag = ctx.sign();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether `mac` is the MAC of `body` after `previous` (constant-time comparison).
    pub fn verify(&self, previous: &Mac, body: &[u8], mac: &Mac) -> bool {
        let expected = self.mac(previous, body);
        constant_time::verify_slices_are_equal(&expected, mac).is_ok()
    }
}

fn decode(bytes: &[u8]) -> Result<Zeroizing<[u8; AUDIT_KEY_LEN]>, String> {
    secret_file::key_32(bytes, "the audit key")
}

/// Standard base64 of 32 fresh bytes from the OS CSPRNG, with a trailing newline
/// (`audit keygen`).
pub fn generate() -> Result<Zeroizing<String>, String> {
    let mut key = Zeroizing::new([0u8; AUDIT_KEY_LEN]);
    getrandom::fill(&mut key[..]).map_err(|e| format!("the OS random source failed: {e}"))?;
    let mut text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&key[..]));
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_base64_keys_decode_to_the_same_bytes() {
        let raw: Vec<u8> = (0u8..32).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        assert_eq!(&decode(&raw).unwrap()[..], &raw[..]);
        assert_eq!(&decode(b64.as_bytes()).unwrap()[..], &raw[..]);
        assert_eq!(
            &decode(format!("{b64}\n").as_bytes()).unwrap()[..],
            &raw[..]
        );
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let err = decode(short.as_bytes()).unwrap_err();
        assert!(err.contains("decodes to 16"), "{err}");
        assert!(!err.contains(&short));
        let err = decode(b"not base64 at all, and not 32 bytes long").unwrap_err();
        assert!(
            err.contains("neither") && !err.contains("not base64 at"),
            "{err}"
        );
    }

    #[test]
    fn generated_keys_decode_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(*a, *b);
        assert!(a.ends_with('\n'));
        decode(a.as_bytes()).unwrap();
    }

    #[test]
    fn mac_is_hmac_sha256_of_previous_then_body() {
        // RFC 4231 test case 2 split across `previous` and `body` is not possible (its key is
        // 4 bytes), so check against a one-shot HMAC over the concatenation instead.
        let key = AuditKey::from_bytes(&[0x0b; 32]);
        let prev = [1u8; 32];
        let mac = key.mac(&prev, b"{\"seq\":1}");
        let mut joined = prev.to_vec();
        joined.extend_from_slice(b"{\"seq\":1}");
        let one_shot = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[0x0b; 32]), &joined);
        assert_eq!(&mac[..], one_shot.as_ref());
        assert!(key.verify(&prev, b"{\"seq\":1}", &mac));
        assert!(!key.verify(&prev, b"{\"seq\":2}", &mac));
    }
}
