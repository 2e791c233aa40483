//! The keyring as an age recipient and identity: a file key wrapped under a keyring key, so
//! the keyring that seals fields in flight also opens the backups that hold them.
//!
//! The stanza (docs/files.md, with vectors):
//!
//! ```text
//! -> fieldseal-keyring <kid>
//! base64(nonce ‖ AES-256-GCM(K, nonce, file key, aad = "fieldseal-keyring/v1 " ‖ kid))
//! ```
//!
//! `K` is `HKDF-SHA256(ikm = the key's secret, salt = none, info = "fieldseal file key wrap
//! v1")`, never the token key itself. Sealing uses the primary key; opening looks the key up
//! by `kid` in the whole keyring (decrypt-only keys too), so files keep opening after a
//! rotation, and `fieldseal file rewrap` moves them to the new primary.

use std::collections::HashSet;
use std::sync::Arc;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::Nonce;
use age::secrecy::ExposeSecret;
use age_core::format::{FileKey, Stanza, FILE_KEY_BYTES};

use crate::crypto::{Key, KeyState, Keyring};

/// The stanza's tag.
pub const TAG: &str = "fieldseal-keyring";

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

fn aad(kid: &str) -> Vec<u8> {
    [b"fieldseal-keyring/v1 ", kid.as_bytes()].concat()
}

/// Seals file keys to the keyring's primary key.
pub struct KeyringRecipient {
    ring: Arc<Keyring>,
    /// Whether the stanza carries age's `postquantum` label (see [`Self::post_quantum`]).
    post_quantum: bool,
}

impl KeyringRecipient {
    pub fn new(ring: Arc<Keyring>) -> Self {
        Self {
            ring,
            post_quantum: false,
        }
    }

    /// With `true`, the stanza carries age's `postquantum` label, so that it can stand beside
    /// post-quantum recipients (age seals only to recipients whose labels agree). Honest
    /// either way: the wrap is AES-256-GCM under a 256-bit key, which a quantum computer does
    /// not open; the label only says which company the stanza keeps. Nothing of it is written
    /// into the file.
    pub fn post_quantum(mut self, on: bool) -> Self {
        self.post_quantum = on;
        self
    }

    /// The kid of the key files are sealed to: the keyring's primary.
    pub fn kid(&self) -> &str {
        &self.ring.primary().id
    }
}

impl age::Recipient for KeyringRecipient {
    fn wrap_file_key(
        &self,
        file_key: &FileKey,
    ) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        let key = self.ring.primary();
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| {
            age::EncryptError::Io(std::io::Error::other(format!("random source: {e}")))
        })?;
        let labels = if self.post_quantum {
            HashSet::from([super::pq::LABEL.to_string()])
        } else {
            HashSet::new()
        };
        Ok((vec![stanza(key, &nonce, file_key)], labels))
    }
}

/// The stanza wrapping `file_key` to `key` with `nonce` (fresh from the OS for every file;
/// fixed only in the documented vector).
fn stanza(key: &Key, nonce: &[u8; NONCE_LEN], file_key: &FileKey) -> Stanza {
    let sealed = key
        .file_wrap_cipher()
        .encrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: file_key.expose_secret(),
                aad: &aad(&key.id),
            },
        )
        .expect("AES-GCM of 16 bytes cannot fail");
    Stanza {
        tag: TAG.into(),
        args: vec![key.id.clone()],
        body: [&nonce[..], &sealed].concat(),
    }
}

/// Opens file keys wrapped to any key of the keyring.
pub struct KeyringIdentity {
    ring: Arc<Keyring>,
}

impl KeyringIdentity {
    pub fn new(ring: Arc<Keyring>) -> Self {
        Self { ring }
    }
}

impl age::Identity for KeyringIdentity {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        if stanza.tag != TAG {
            return None;
        }
        let [kid] = stanza.args.as_slice() else {
            return Some(Err(age::DecryptError::InvalidHeader));
        };
        // Another keyring's key: not ours to try.
        let key = self.ring.get(kid)?;
        if key.state == KeyState::Disabled {
            return Some(Err(age::DecryptError::KeyDecryptionFailed));
        }
        if stanza.body.len() != NONCE_LEN + FILE_KEY_BYTES + TAG_LEN {
            return Some(Err(age::DecryptError::InvalidHeader));
        }
        let (nonce, sealed) = stanza.body.split_at(NONCE_LEN);
        let opened = key.file_wrap_cipher().decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: &aad(kid),
            },
        );
        Some(match opened {
            Ok(bytes) => {
                let bytes = zeroize::Zeroizing::new(bytes);
                Ok(FileKey::init_with_mut(|k| k.copy_from_slice(&bytes)))
            }
            Err(_) => Err(age::DecryptError::DecryptionFailed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::{open, seal, Recipient};

    fn ring(id: &str, byte: u8) -> Arc<Keyring> {
        Arc::new(Keyring::single(id, &[byte; 32], "2026-12-01T00:00:00Z").unwrap())
    }

    /// The vector of docs/files.md (computed with Python `cryptography`).
    #[test]
    fn the_documented_vector() {
        let secret: [u8; 32] = std::array::from_fn(|i| i as u8);
        let ring = Keyring::single("k2026", &secret, "2026-12-01T00:00:00Z").unwrap();
        let nonce: [u8; 12] = std::array::from_fn(|i| i as u8);
        let file_key = FileKey::new(Box::new([
            0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87, 0x78, 0x69, 0x5a, 0x4b, 0x3c, 0x2d,
            0x1e, 0x0f,
        ]));
        let s = stanza(ring.primary(), &nonce, &file_key);
        assert_eq!(s.tag, "fieldseal-keyring");
        assert_eq!(s.args, ["k2026"]);
        use base64::Engine;
        assert_eq!(
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(&s.body),
            "AAECAwQFBgcICQoLNVXDeI0caWyWMNqPHCIyuFM8V5UmJsNQufR8B9dD8Rk"
        );
        use age::Identity as _;
        let opened = KeyringIdentity::new(Arc::new(ring))
            .unwrap_stanza(&s)
            .unwrap()
            .unwrap();
        assert_eq!(opened.expose_secret(), file_key.expose_secret());
    }

    #[test]
    fn the_keyring_seals_and_opens_and_another_does_not() {
        let ours = ring("k1", 7);
        let plain = vec![42u8; 100_000];
        let mut file = Vec::new();
        let recipients = [Recipient::keyring(ours.clone(), &[])];
        seal(&recipients, &mut &plain[..], &mut file, false).unwrap();
        assert!(file.windows(22).any(|w| w == b"-> fieldseal-keyring k"));
        let open_with = |ring: Arc<Keyring>| {
            let ids: Vec<Box<dyn age::Identity>> = vec![Box::new(KeyringIdentity::new(ring))];
            let mut out = Vec::new();
            open(&ids, &mut &file[..], &mut out).map(|_| out)
        };
        assert_eq!(open_with(ours).unwrap(), plain);
        // The same kid with another secret fails; an unknown kid is no match.
        assert!(open_with(ring("k1", 8)).is_err());
        assert!(open_with(ring("k9", 7)).is_err());
    }

    /// After a rotation the old key (now `decrypt_only`) still opens its files; once retired
    /// (`disabled`) it refuses them, with the same secret still in the keyring.
    #[test]
    fn a_rotated_key_opens_until_it_is_disabled() {
        use crate::crypto::keyring::{disable, generate, rotate};
        let mut file = generate("k1").unwrap();
        let sealed_under = |file: &crate::crypto::keyring::KeyringFile| {
            let ring = Arc::new(Keyring::build(file).unwrap());
            let mut out = Vec::new();
            let recipients = [Recipient::keyring(ring, &[])];
            seal(&recipients, &mut &b"backup"[..], &mut out, false).unwrap();
            out
        };
        let open_with = |file: &crate::crypto::keyring::KeyringFile, sealed: &[u8]| {
            let ids: Vec<Box<dyn age::Identity>> = vec![Box::new(KeyringIdentity::new(Arc::new(
                Keyring::build(file).unwrap(),
            )))];
            let mut out = Vec::new();
            open(&ids, &mut &sealed[..], &mut out).map(|_| out)
        };
        let old = sealed_under(&file);
        rotate(&mut file, Some("k2")).unwrap();
        assert_eq!(open_with(&file, &old).unwrap(), b"backup");
        assert!(disable(&mut file, "k1").unwrap());
        assert!(open_with(&file, &old).is_err());
        // Files sealed to the new primary are unaffected.
        let new = sealed_under(&file);
        assert_eq!(open_with(&file, &new).unwrap(), b"backup");
    }
}
