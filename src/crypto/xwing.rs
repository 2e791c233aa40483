//! Opening `HPKE-10` values (X-Wing, SHAKE256, AES-256-GCM) on AWS-LC, with the key expanded
//! once.
//!
//! Why not rust-hpke, which seals and checks these values elsewhere: its X-Wing key is the
//! 32-byte seed, and every open expands it again — an ML-KEM-768 key generation (matrix
//! sampling and NTTs) and an X25519 base-point multiplication — in portable Rust. That made a
//! post-quantum open cost as much as an RSA-2048 one (~247 µs), 3.6× what a Python app pays with
//! `cryptography` (~68 µs). Here the seed is expanded once, when the key is loaded, into AWS-LC
//! objects (ML-KEM-768 with its assembly, X25519), and an open is one decapsulation, one X25519,
//! the X-Wing combiner (SHA3-256), the one-stage key schedule (SHAKE256) and AES-256-GCM.
//!
//! Nothing here is new cryptography, and nothing is trusted on its own: the unit tests open what
//! rust-hpke seals (both directions agree on every byte), the draft's `HPKE-10` vector opens
//! (`super::jwe`), and Python's `cryptography` checks the same construction in the test suite.
//!
//! - X-Wing (draft-connolly-cfrg-xwing-kem): `SHAKE256(seed)` → 64-byte ML-KEM-768 seed, then
//!   the X25519 private key; the encapsulated key is the ML-KEM ciphertext (1,088 bytes) then the
//!   X25519 share (32); the shared secret is
//!   `SHA3-256(ss_M ‖ ss_X ‖ ct_X ‖ pk_X ‖ "\./" "/^\")`.
//! - HPKE base mode with a one-stage KDF (draft-ietf-hpke-pq):
//!   `SHAKE256(len16("") ‖ len16(ss) ‖ ss ‖ "HPKE-v1" ‖ suite_id ‖ len16("secret") ‖ "secret"
//!   ‖ len16(L) ‖ 0x00 ‖ len16("") ‖ len16(info) ‖ info)`, `L` = 32 + 12 + 64, gives the AEAD
//!   key, the base nonce (the first single-shot message uses it as is) and the exporter secret.
//!
//! An X25519 share that is a low-order point (an all-zero X25519 secret) is refused: AWS-LC's
//! X25519 fails on it. X-Wing does not require that check; it costs nothing and no honest client
//! produces such a share.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::agreement::{self, UnparsedPublicKey, X25519};
use aws_lc_rs::digest;
use aws_lc_rs::kem::{Ciphertext, DecapsulationKey, ML_KEM_768};
use zeroize::{Zeroize, Zeroizing};

use super::hpke::{XWING_ENC_LEN, XWING_SEED_LEN};

/// The ML-KEM-768 ciphertext at the start of an encapsulated key.
const MLKEM_CT_LEN: usize = 1088;
/// X-Wing's combiner label, `\./` `/^\`.
const LABEL: &[u8] = b"\\.//^\\";
/// `"HPKE"` ‖ KEM `0x647a` (X-Wing) ‖ KDF `0x0011` (SHAKE256) ‖ AEAD `0x0002` (AES-256-GCM).
const SUITE_ID: &[u8] = b"HPKE\x64\x7a\x00\x11\x00\x02";
/// Key schedule output: AES-256 key, GCM base nonce, SHAKE256's exporter secret (`Nh` = 64).
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const SCHEDULE_LEN: u16 = (KEY_LEN + NONCE_LEN + 64) as u16;
const TAG_LEN: usize = 16;

/// An X-Wing private key expanded for opening.
pub struct Opener {
    mlkem: DecapsulationKey,
    x25519: agreement::PrivateKey,
    x25519_public: [u8; 32],
}

impl Opener {
    /// Expands a 32-byte X-Wing seed.
    pub fn from_seed(seed: &[u8]) -> Result<Self, String> {
        use shake::{ExtendableOutput, Update, XofReader};
        if seed.len() != XWING_SEED_LEN {
            return Err("an X-Wing seed is 32 bytes".into());
        }
        let mut xof = shake::Shake256::default();
        xof.update(seed);
        let mut reader = xof.finalize_xof();
        let mut mlkem_seed = ml_kem::Seed::default();
        reader.read(&mut mlkem_seed);
        let mut x25519_secret = Zeroizing::new([0u8; 32]);
        reader.read(&mut x25519_secret[..]);

        // AWS-LC imports ML-KEM keys in FIPS 203's expanded form only; RustCrypto's ml-kem
        // expands the seed (its expanded encoding is deprecated for storage, which is not
        // this use: the bytes live only until AWS-LC has them).
        #[allow(deprecated)]
        let mut expanded = {
            use ml_kem::ExpandedKeyEncoding;
            ml_kem::ml_kem_768::DecapsulationKey::from_seed(mlkem_seed).to_expanded_bytes()
        };
        mlkem_seed.zeroize();
        let mlkem = DecapsulationKey::new(&ML_KEM_768, &expanded)
            .map_err(|_| "the ML-KEM-768 key was rejected".to_string());
        expanded.zeroize();
        let x25519 = agreement::PrivateKey::from_private_key(&X25519, &x25519_secret[..])
            .map_err(|_| "the X25519 key was rejected".to_string())?;
        let x25519_public = x25519
            .compute_public_key()
            .map_err(|_| "cannot compute the X25519 public key".to_string())?
            .as_ref()
            .try_into()
            .map_err(|_| "X25519 public key has the wrong length".to_string())?;
        Ok(Opener {
            mlkem: mlkem?,
            x25519,
            x25519_public,
        })
    }

    /// HPKE base-mode single-shot open of an `HPKE-10` ciphertext. Every failure is `Err(())`.
    // The unit error is the point: a failure must carry nothing about why it failed.
    #[allow(clippy::result_unit_err)]
    pub fn open(
        &self,
        encapsulated: &[u8],
        info: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ()> {
        if encapsulated.len() != XWING_ENC_LEN || ciphertext.len() < TAG_LEN {
            return Err(());
        }
        let info_len = u16::try_from(info.len()).map_err(|_| ())?;
        let (ct_m, ct_x) = encapsulated.split_at(MLKEM_CT_LEN);
        let ss_m = self
            .mlkem
            .decapsulate(Ciphertext::from(ct_m))
            .map_err(|_| ())?;
        let shared = agreement::agree(
            &self.x25519,
            UnparsedPublicKey::new(&X25519, ct_x),
            (),
            |ss_x| {
                let mut combiner = digest::Context::new(&digest::SHA3_256);
                for part in [ss_m.as_ref(), ss_x, ct_x, &self.x25519_public, LABEL] {
                    combiner.update(part);
                }
                let mut out = Zeroizing::new([0u8; 32]);
                out.copy_from_slice(combiner.finish().as_ref());
                Ok(out)
            },
        )?;

        let mut schedule = Zeroizing::new([0u8; KEY_LEN + NONCE_LEN]);
        {
            use shake::{ExtendableOutput, Update, XofReader};
            let mut xof = shake::Shake256::default();
            for part in [
                &0u16.to_be_bytes()[..],
                &32u16.to_be_bytes(),
                &shared[..],
                b"HPKE-v1",
                SUITE_ID,
                &6u16.to_be_bytes(),
                b"secret",
                &SCHEDULE_LEN.to_be_bytes(),
                &[0x00], // mode: base
                &0u16.to_be_bytes(),
                &info_len.to_be_bytes(),
                info,
            ] {
                xof.update(part);
            }
            // An XOF's output does not depend on how much is read: the first 44 of the `L`
            // bytes are the key and the base nonce.
            xof.finalize_xof().read(&mut schedule[..]);
        }
        let (key, nonce) = schedule.split_at(KEY_LEN);
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| ())?);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| ())?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let plain_len = key
            .open_in_place(nonce, Aad::from(aad), &mut buffer)
            .map_err(|_| ())?
            .len();
        buffer.truncate(plain_len);
        Ok(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpke::{Deserializable, Kem as _, Serializable};

    type XWing = hpke::kem::XWing;

    fn rust_hpke_seal(seed: &[u8], info: &[u8], aad: &[u8], plain: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let sk = <XWing as hpke::Kem>::PrivateKey::from_bytes(seed).unwrap();
        let pk = XWing::sk_to_pk(&sk);
        let (enc, ct) = hpke::single_shot_seal::<
            hpke::aead::AesGcm256,
            hpke::kdf::KdfShake256,
            XWing,
        >(&hpke::OpModeS::Base, &pk, info, plain, aad)
        .unwrap();
        (enc.to_bytes().to_vec(), ct)
    }

    /// What rust-hpke seals opens here to the same bytes, for many keys, infos, AADs and
    /// lengths; any change to the encapsulated key, ciphertext, info or AAD fails.
    #[test]
    fn opens_what_rust_hpke_seals() {
        for i in 0..24u8 {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).unwrap();
            let opener = Opener::from_seed(&seed).unwrap();
            let plain: Vec<u8> = (0..usize::from(i) * 7).map(|n| n as u8).collect();
            let info: &[u8] = if i % 2 == 0 {
                b""
            } else {
                b"fieldseal-envelope-session-key/v1"
            };
            let aad = vec![i; usize::from(i % 5) * 9];
            let (enc, ct) = rust_hpke_seal(&seed, info, &aad, &plain);
            assert_eq!(&opener.open(&enc, info, &aad, &ct).unwrap()[..], &plain[..]);
            let mut bad_enc = enc.clone();
            bad_enc[usize::from(i) * 40] ^= 1;
            assert!(opener.open(&bad_enc, info, &aad, &ct).is_err());
            let mut bad_ct = ct.clone();
            bad_ct[ct.len() - 1 - usize::from(i % 3)] ^= 0x80;
            assert!(opener.open(&enc, info, &aad, &bad_ct).is_err());
            assert!(opener.open(&enc, b"other", &aad, &ct).is_err());
            assert!(opener.open(&enc, info, b"other", &ct).is_err());
            assert!(opener.open(&enc[1..], info, &aad, &ct).is_err());
            assert!(opener.open(&enc, info, &aad, &ct[..15]).is_err());
            // Another key's opener does not open it.
            let mut other = seed;
            other[0] ^= 1;
            assert!(Opener::from_seed(&other)
                .unwrap()
                .open(&enc, info, &aad, &ct)
                .is_err());
        }
    }

    #[test]
    fn a_low_order_x25519_share_is_refused() {
        let seed = [7u8; 32];
        let (mut enc, ct) = rust_hpke_seal(&seed, b"", b"", b"x");
        enc[MLKEM_CT_LEN..].fill(0);
        assert!(Opener::from_seed(&seed)
            .unwrap()
            .open(&enc, b"", b"", &ct)
            .is_err());
        assert!(Opener::from_seed(&[1u8; 31]).is_err());
    }
}
