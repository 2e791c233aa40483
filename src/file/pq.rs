//! age's post-quantum recipient type, `mlkem768x25519` (C2SP age specification, since age
//! v1.3.0): a file key wrapped with HPKE to an X-Wing (MLKEM768-X25519) public key, so a backup
//! recorded today stays closed to a future quantum computer as long as *either* ML-KEM-768 or
//! X25519 holds.
//!
//! Why it is written here: the `age` crate's releases (0.11) do not carry this type yet. It is
//! the specification's stanza on age's public `Recipient`/`Identity` traits, with no new
//! cryptography, and is meant to give way to the crate's own type once a release has one:
//!
//! - recipient `age1pq1…`: Bech32 (HRP `age1pq`) of the 1,216-byte X-Wing public key;
//!   identity `AGE-SECRET-KEY-PQ-1…`: Bech32 (HRP `age-secret-key-pq-`, upper case) of the
//!   32-byte X-Wing seed. Bech32's 90-character limit does not apply, as in age;
//! - stanza `-> mlkem768x25519 <base64 of the 1,120-byte encapsulated key>`, body the 32-byte
//!   HPKE ciphertext of the 16-byte file key: HPKE base mode, KEM X-Wing (`0x647a`), KDF
//!   HKDF-SHA256, AEAD ChaCha20-Poly1305, `info` [`INFO`], empty AAD;
//! - the stanzas carry the label `postquantum`, so age refuses to mix them with classical
//!   recipients in one file (which would give the file only classical strength);
//! - a stanza whose X25519 share is a low-order point (an all-zero X25519 shared secret) is
//!   refused as an invalid header, as age requires. rust-hpke's X-Wing does not check this
//!   (X-Wing itself does not need it), so the identity keeps the X25519 half of its seed and
//!   runs that exchange once more with AWS-LC, which refuses an all-zero result.
//!
//! The HPKE and X-Wing primitives are rust-hpke's, the same as the proxy's `HPKE-10`
//! ([`crate::crypto::hpke`]).

use std::collections::HashSet;
use std::fmt;

use age::secrecy::ExposeSecret;
use age_core::format::{FileKey, Stanza, FILE_KEY_BYTES};
use base64::Engine;
use bech32::{FromBase32, ToBase32, Variant};
use hpke::{Deserializable, Kem as _, Serializable};
use zeroize::Zeroizing;

use crate::crypto::hpke::{XWING_ENC_LEN, XWING_PUBLIC_LEN, XWING_SEED_LEN};

/// The stanza tag.
pub const TAG: &str = "mlkem768x25519";
/// HPKE `info` of the wrap.
pub const INFO: &[u8] = b"age-encryption.org/mlkem768x25519";
/// The label every stanza of this type carries.
pub const LABEL: &str = "postquantum";

const RECIPIENT_HRP: &str = "age1pq";
const IDENTITY_HRP: &str = "age-secret-key-pq-";
/// The 16-byte file key and ChaCha20-Poly1305's 16-byte tag.
const BODY_LEN: usize = FILE_KEY_BYTES + 16;

type XWing = hpke::kem::XWing;
type Aead = hpke::aead::ChaCha20Poly1305;
type Kdf = hpke::kdf::HkdfSha256;
type PublicKey = <XWing as hpke::Kem>::PublicKey;
type PrivateKey = <XWing as hpke::Kem>::PrivateKey;
type EncappedKey = <XWing as hpke::Kem>::EncappedKey;

/// Stanza arguments are age's base64: standard alphabet, no padding.
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

/// An `age1pq1…` recipient.
#[derive(Clone)]
pub struct PqRecipient(Box<PublicKey>);

/// An `AGE-SECRET-KEY-PQ-1…` identity: the X-Wing key (its seed zeroized on drop by x-wing)
/// and the X25519 half expanded from that seed, for the low-order check.
pub struct PqIdentity {
    key: Box<PrivateKey>,
    x25519: Zeroizing<[u8; 32]>,
}

/// X-Wing's seed expansion (draft-connolly-cfrg-xwing-kem): SHAKE256(seed) gives 64 bytes of
/// ML-KEM-768 seed, then the 32-byte X25519 private key.
fn x25519_half(seed: &[u8]) -> Zeroizing<[u8; 32]> {
    use shake::{ExtendableOutput, Update, XofReader};
    let mut shake = shake::Shake256::default();
    shake.update(seed);
    let mut reader = shake.finalize_xof();
    let mut mlkem_seed = Zeroizing::new([0u8; 64]);
    reader.read(&mut mlkem_seed[..]);
    let mut x25519 = Zeroizing::new([0u8; 32]);
    reader.read(&mut x25519[..]);
    x25519
}

impl fmt::Debug for PqIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PqIdentity({})", self.to_public())
    }
}

impl std::str::FromStr for PqRecipient {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (hrp, data, variant) =
            bech32::decode(s).map_err(|e| format!("not a valid age1pq1… recipient: {e}"))?;
        let bytes = Vec::<u8>::from_base32(&data)
            .map_err(|e| format!("not a valid age1pq1… recipient: {e}"))?;
        if hrp != RECIPIENT_HRP || variant != Variant::Bech32 || bytes.len() != XWING_PUBLIC_LEN {
            return Err("not an age1pq1… recipient (expected a 1,216-byte X-Wing key)".into());
        }
        PublicKey::from_bytes(&bytes)
            .map(|k| PqRecipient(Box::new(k)))
            .map_err(|_| "the age1pq1… recipient is not a valid X-Wing key".into())
    }
}

impl fmt::Display for PqRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = bech32::encode(
            RECIPIENT_HRP,
            self.0.to_bytes().to_base32(),
            Variant::Bech32,
        )
        .map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl PqIdentity {
    /// A new identity from the OS CSPRNG.
    pub fn generate() -> Self {
        let (private, _) = XWing::gen_keypair();
        Self::from_key(private)
    }

    fn from_key(key: PrivateKey) -> Self {
        let seed = Zeroizing::new(key.to_bytes());
        PqIdentity {
            x25519: x25519_half(&seed),
            key: Box::new(key),
        }
    }

    /// Whether the X25519 share of a stanza gives a non-zero shared secret with this identity
    /// (AWS-LC's X25519 fails on an all-zero result, i.e. on a low-order point).
    fn contributory(&self, share: &[u8]) -> bool {
        use aws_lc_rs::agreement::{agree, PrivateKey, UnparsedPublicKey, X25519};
        let Ok(private) = PrivateKey::from_private_key(&X25519, &self.x25519[..]) else {
            return false;
        };
        agree(&private, UnparsedPublicKey::new(&X25519, share), (), |_| {
            Ok(())
        })
        .is_ok()
    }

    /// Parses an `AGE-SECRET-KEY-PQ-1…` line (case-insensitive, as Bech32 is).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (hrp, data, variant) =
            bech32::decode(s.trim()).map_err(|_| "not a valid AGE-SECRET-KEY-PQ-1… identity")?;
        let seed = Zeroizing::new(
            Vec::<u8>::from_base32(&data)
                .map_err(|_| "not a valid AGE-SECRET-KEY-PQ-1… identity")?,
        );
        if hrp != IDENTITY_HRP || variant != Variant::Bech32 || seed.len() != XWING_SEED_LEN {
            return Err("not an AGE-SECRET-KEY-PQ-1… identity (expected a 32-byte seed)".into());
        }
        PrivateKey::from_bytes(&seed)
            .map(Self::from_key)
            .map_err(|_| "the AGE-SECRET-KEY-PQ-1… identity is not a valid X-Wing seed".into())
    }

    /// The identity as age writes it, upper case; zeroized when dropped.
    pub fn to_secret_string(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(self.key.to_bytes());
        let text = Zeroizing::new(
            bech32::encode(IDENTITY_HRP, seed.to_base32(), Variant::Bech32)
                .expect("the HRP is valid"),
        );
        Zeroizing::new(text.to_uppercase())
    }

    /// The recipient that seals to this identity.
    pub fn to_public(&self) -> PqRecipient {
        PqRecipient(Box::new(XWing::sk_to_pk(&self.key)))
    }
}

/// Whether a line is a post-quantum identity (so the identity-file reader hands it here).
pub fn is_identity_line(line: &str) -> bool {
    line.trim()
        .get(..IDENTITY_HRP.len() + 1)
        .is_some_and(|p| p.eq_ignore_ascii_case("AGE-SECRET-KEY-PQ-1"))
}

impl age::Recipient for PqRecipient {
    fn wrap_file_key(
        &self,
        file_key: &FileKey,
    ) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        let (enc, body) = hpke::single_shot_seal::<Aead, Kdf, XWing>(
            &hpke::OpModeS::Base,
            &self.0,
            INFO,
            file_key.expose_secret(),
            b"",
        )
        .map_err(|e| age::EncryptError::Io(std::io::Error::other(format!("HPKE: {e}"))))?;
        let stanza = Stanza {
            tag: TAG.into(),
            args: vec![B64.encode(enc.to_bytes())],
            body,
        };
        Ok((vec![stanza], HashSet::from([LABEL.to_string()])))
    }
}

impl age::Identity for PqIdentity {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        if stanza.tag != TAG {
            return None;
        }
        // A stanza of this type that is malformed makes the header invalid (age's rule).
        let [arg] = stanza.args.as_slice() else {
            return Some(Err(age::DecryptError::InvalidHeader));
        };
        let enc = match B64.decode(arg) {
            Ok(enc) if enc.len() == XWING_ENC_LEN && stanza.body.len() == BODY_LEN => enc,
            _ => return Some(Err(age::DecryptError::InvalidHeader)),
        };
        // The last 32 bytes of the encapsulated key are the X25519 share.
        if !self.contributory(&enc[XWING_ENC_LEN - 32..]) {
            return Some(Err(age::DecryptError::InvalidHeader));
        }
        let enc = EncappedKey::from_bytes(&enc).ok()?;
        // A stanza for another identity does not open: not this identity's, so `None`.
        let opened = hpke::single_shot_open::<Aead, Kdf, XWing>(
            &hpke::OpModeR::Base,
            &self.key,
            &enc,
            INFO,
            &stanza.body,
            b"",
        )
        .ok()?;
        let opened = Zeroizing::new(opened);
        Some(Ok(FileKey::init_with_mut(|k| k.copy_from_slice(&opened))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::{open, seal, Recipient};
    use age::Identity as _;

    fn sealed_to(recipients: &[Recipient], plain: &[u8]) -> Vec<u8> {
        let mut file = Vec::new();
        seal(recipients, &mut &plain[..], &mut file, false).unwrap();
        file
    }

    fn opened(id: PqIdentity, file: &[u8]) -> Result<Vec<u8>, crate::file::FileError> {
        let ids: Vec<Box<dyn age::Identity>> = vec![Box::new(id)];
        let mut out = Vec::new();
        open(&ids, &mut &file[..], &mut out).map(|_| out)
    }

    #[test]
    fn strings_round_trip_and_the_recipient_follows_the_identity() {
        let id = PqIdentity::generate();
        let secret = id.to_secret_string();
        assert!(secret.starts_with("AGE-SECRET-KEY-PQ-1"));
        assert!(is_identity_line(&secret) && is_identity_line(&secret.to_lowercase()));
        assert!(!is_identity_line("AGE-SECRET-KEY-1QQQ"));
        let again = PqIdentity::parse(&secret).unwrap();
        let recipient = id.to_public().to_string();
        assert!(recipient.starts_with("age1pq1"));
        assert_eq!(again.to_public().to_string(), recipient);
        let parsed: PqRecipient = recipient.parse().unwrap();
        assert_eq!(parsed.to_string(), recipient);
        // Debug shows the public half only.
        assert!(!format!("{id:?}").contains(&secret.to_lowercase()[19..]));
        // A classical age recipient, a corrupted checksum and a short key are refused.
        assert!(
            "age1ysxuaeqlk7xd8uqsh8lsnfwt9jzzjlqf49ruhpjrrj5yatlcuf7qke4pqe"
                .parse::<PqRecipient>()
                .is_err()
        );
        let mut bad = recipient.clone();
        bad.pop();
        bad.push(if recipient.ends_with('q') { 'p' } else { 'q' });
        assert!(bad.parse::<PqRecipient>().is_err());
        let short = bech32::encode(RECIPIENT_HRP, [0u8; 32].to_base32(), Variant::Bech32).unwrap();
        assert!(short.parse::<PqRecipient>().is_err());
    }

    #[test]
    fn files_round_trip_and_only_the_identity_opens() {
        let id = PqIdentity::generate();
        let plain = vec![7u8; 200_000];
        let file = sealed_to(&[Recipient::PostQuantum(id.to_public())], &plain);
        assert!(file
            .windows(TAG.len() + 3)
            .any(|w| w == format!("-> {TAG}").as_bytes()));
        assert_eq!(
            opened(PqIdentity::parse(&id.to_secret_string()).unwrap(), &file).unwrap(),
            plain
        );
        assert!(opened(PqIdentity::generate(), &file).is_err());
    }

    #[test]
    fn stanzas_are_checked() {
        let id = PqIdentity::generate();
        let file_key = FileKey::new(Box::new([9u8; 16]));
        use age::Recipient as _;
        let (stanzas, labels) = id.to_public().wrap_file_key(&file_key).unwrap();
        assert_eq!(labels, HashSet::from(["postquantum".to_string()]));
        let good = &stanzas[0];
        assert_eq!(good.body.len(), BODY_LEN);
        let key = id.unwrap_stanza(good).unwrap().unwrap();
        assert_eq!(key.expose_secret(), file_key.expose_secret());

        let with = |f: &dyn Fn(&mut Stanza)| {
            let mut s = Stanza {
                tag: good.tag.clone(),
                args: good.args.clone(),
                body: good.body.clone(),
            };
            f(&mut s);
            s
        };
        // Another tag is not ours.
        assert!(id
            .unwrap_stanza(&with(&|s| s.tag = "X25519".into()))
            .is_none());
        // Malformed: the header is invalid.
        for bad in [
            with(&|s| s.args.push("x".into())),
            with(&|s| s.args[0].pop().map(drop).unwrap_or(())),
            with(&|s| s.body.push(0)),
        ] {
            assert!(matches!(
                id.unwrap_stanza(&bad),
                Some(Err(age::DecryptError::InvalidHeader))
            ));
        }
        // A low-order X25519 share (here the all-zero point): invalid, as age requires.
        let zero_share = with(&|s| {
            let mut enc = B64.decode(&s.args[0]).unwrap();
            enc[XWING_ENC_LEN - 32..].fill(0);
            s.args[0] = B64.encode(enc);
        });
        assert!(matches!(
            id.unwrap_stanza(&zero_share),
            Some(Err(age::DecryptError::InvalidHeader))
        ));
        // Tampered body or another identity: not opened by this identity.
        assert!(id.unwrap_stanza(&with(&|s| s.body[0] ^= 1)).is_none());
        assert!(PqIdentity::generate().unwrap_stanza(good).is_none());
    }

    #[test]
    fn mixing_with_a_classical_recipient_is_refused() {
        let pq = PqIdentity::generate().to_public();
        let classical = age::x25519::Identity::generate().to_public();
        let mut file = Vec::new();
        let recipients = [Recipient::PostQuantum(pq), Recipient::X25519(classical)];
        assert!(seal(&recipients, &mut &b"x"[..], &mut file, false).is_err());
    }

    /// The keyring stanza (a symmetric wrap) joins post-quantum recipients as it joins
    /// classical ones: each opens the file; a classical recipient is still refused beside them.
    #[test]
    fn the_keyring_stands_beside_post_quantum_recipients() {
        use crate::file::KeyringIdentity;
        use std::sync::Arc;
        let ring = Arc::new(
            crate::crypto::Keyring::single("k1", &[5; 32], "2026-12-01T00:00:00Z").unwrap(),
        );
        let id = PqIdentity::generate();
        let pq = [Recipient::PostQuantum(id.to_public())];
        let recipients = [
            Recipient::PostQuantum(id.to_public()),
            Recipient::keyring(ring.clone(), &pq),
        ];
        let mut file = Vec::new();
        seal(&recipients, &mut &b"backup"[..], &mut file, false).unwrap();
        let ids: [Vec<Box<dyn age::Identity>>; 2] = [
            vec![Box::new(id)],
            vec![Box::new(KeyringIdentity::new(ring.clone()))],
        ];
        for ids in &ids {
            let mut out = Vec::new();
            open(ids, &mut &file[..], &mut out).unwrap();
            assert_eq!(out, b"backup");
        }
        // Labelled for the post-quantum company it keeps, the keyring does not make a
        // classical recipient acceptable beside them.
        let classical = Recipient::X25519(age::x25519::Identity::generate().to_public());
        let mixed = [
            Recipient::PostQuantum(PqIdentity::generate().to_public()),
            Recipient::keyring(ring, &pq),
            classical,
        ];
        assert!(seal(&mixed, &mut &b"x"[..], &mut Vec::new(), false).is_err());
    }
}
