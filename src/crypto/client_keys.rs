//! The private keys clients encrypt to (contract §3): every configured RSA key (and HPKE key,
//! X25519 or post-quantum X-Wing), the JWKS that publishes them, and the lookup by `kid` that JWE values and
//! envelopes use.
//!
//! Several keys may be live at once so that a rotation never strands a client: the new key is
//! listed first (it is the one the seed-compatible endpoint hands out and the first a client
//! picks from the JWKS), while values encrypted to the previous key still open until the
//! operator removes it from the config. The JWKS and seed documents are serialised once here,
//! at load, because every client fetches them and they only change on reload.

use bytes::Bytes;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::hpke::{HpkeKey, Suite};
use super::jwe::KeyUnwrap;
use super::rsa_keys::RsaKey;

/// The proxy's client-facing key set, compiled once per config load.
pub struct ClientKeys {
    rsa: Vec<RsaKey>,
    hpke: Vec<HpkeKey>,
    jwks: Bytes,
    seed: Option<Bytes>,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKeys")
            .field("rsa", &self.rsa)
            .field("hpke", &self.hpke)
            .finish_non_exhaustive()
    }
}

impl ClientKeys {
    /// Builds the set. Key ids must be unique across all keys (a JWE names exactly one);
    /// the caller reports the error against the config.
    pub fn new(rsa: Vec<RsaKey>, hpke: Vec<HpkeKey>) -> Result<Self, String> {
        let mut seen = std::collections::HashSet::new();
        for kid in rsa
            .iter()
            .map(|k| k.kid.as_str())
            .chain(hpke.iter().map(HpkeKey::kid))
        {
            if !seen.insert(kid) {
                return Err(format!("the same key is configured twice (kid `{kid}`)"));
            }
        }
        let keys: Vec<Value> = rsa
            .iter()
            .map(RsaKey::jwk)
            .chain(hpke.iter().map(HpkeKey::jwk))
            .collect();
        let jwks = Bytes::from(json!({ "keys": keys }).to_string());
        let seed = rsa
            .first()
            .map(|k| Bytes::from(k.seed_public_key().to_string()));
        Ok(Self {
            rsa,
            hpke,
            jwks,
            seed,
        })
    }

    /// The JWKS document (RFC 7517): RSA keys first, in configured order, then HPKE keys.
    pub fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }

    /// The seed-compatible public key document of the first RSA key, if any.
    pub fn seed_public_key(&self) -> Option<Bytes> {
        self.seed.clone()
    }

    /// The RSA key `kid`, for envelopes.
    pub fn rsa(&self, kid: &str) -> Option<&RsaKey> {
        self.rsa.iter().find(|k| k.kid == kid)
    }

    /// The HPKE key `kid`.
    pub fn hpke(&self, kid: &str) -> Option<&HpkeKey> {
        self.hpke.iter().find(|k| k.kid() == kid)
    }

    pub fn rsa_keys(&self) -> &[RsaKey] {
        &self.rsa
    }

    pub fn hpke_keys(&self) -> &[HpkeKey] {
        &self.hpke
    }

    pub fn is_empty(&self) -> bool {
        self.rsa.is_empty() && self.hpke.is_empty()
    }
}

impl KeyUnwrap for ClientKeys {
    fn unwrap_cek(&self, kid: &str, encrypted_key: &[u8]) -> Result<Zeroizing<Vec<u8>>, ()> {
        self.rsa(kid)
            .ok_or(())
            .and_then(|k| k.decrypt_oaep_sha256(encrypted_key))
    }

    fn knows(&self, kid: &str) -> bool {
        self.rsa(kid).is_some()
    }

    fn hpke_open(
        &self,
        kid: &str,
        suite: Suite,
        encapsulated: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Option<Result<Zeroizing<Vec<u8>>, ()>> {
        self.hpke(kid)
            .map(|k| k.open(suite, encapsulated, b"", aad, ciphertext))
    }
}
