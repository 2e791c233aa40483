//! The keyring file (contract §2): versioned AES-256 keys with a state each, one primary.
//!
//! Loaded and validated once; every key's AES-256-GCM cipher is built here, not per request.
//! Secrets live only in zeroizing buffers and never print (`Debug` shows ids and states).

use std::fmt;
use std::path::Path;

use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::secret_file::{self, Exposure};

/// Length of every key secret: AES-256.
pub const SECRET_LEN: usize = 32;

/// What a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Seals and opens.
    Active,
    /// Opens tokens sealed earlier; never seals.
    DecryptOnly,
    /// Neither: tokens naming it fail to open.
    Disabled,
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            KeyState::Active => "active",
            KeyState::DecryptOnly => "decrypt_only",
            KeyState::Disabled => "disabled",
        })
    }
}

/// The file as written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringFile {
    pub primary: String,
    pub keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub id: String,
    /// Standard base64 of the 32-byte secret. Zeroized when the entry is dropped.
    pub secret: Zeroizing<String>,
    pub created_at: String,
    pub state: KeyState,
}

/// One usable key: id, state, and its cipher (the raw secret is not kept).
pub struct Key {
    pub id: String,
    pub state: KeyState,
    pub created_at: String,
    pub(crate) cipher: Aes256Gcm,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A validated keyring.
#[derive(Debug)]
pub struct Keyring {
    keys: Vec<Key>,
    primary: usize,
}

/// Why a keyring cannot be used. Messages name keys by id, never secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringError(pub Vec<String>);

impl fmt::Display for KeyringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

impl std::error::Error for KeyringError {}

/// Whether `id` is a valid key id: 1–32 of `[A-Za-z0-9_-]` (it appears inside tokens).
pub fn valid_key_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Keyring {
    /// Reads and validates a keyring file, refusing one that other users can read. Returns the
    /// keyring and whether the file is group-readable (worth a warning).
    pub fn load(path: &Path) -> Result<(Self, Exposure), KeyringError> {
        let exposure = secret_file::check(path).map_err(|m| KeyringError(vec![m]))?;
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| KeyringError(vec![format!("cannot read {}: {e}", path.display())]))?,
        );
        // serde_json errors name line and column, never the value.
        let file: KeyringFile = serde_json::from_str(&text).map_err(|e| {
            KeyringError(vec![format!(
                "{} is not a valid keyring: {e}",
                path.display()
            )])
        })?;
        Ok((Self::from_file(file)?, exposure))
    }

    /// Validates a parsed keyring; collects every problem.
    pub fn from_file(file: KeyringFile) -> Result<Self, KeyringError> {
        let mut problems = Vec::new();
        let mut keys: Vec<Key> = Vec::with_capacity(file.keys.len());
        for (i, entry) in file.keys.iter().enumerate() {
            if !valid_key_id(&entry.id) {
                problems.push(format!(
                    "keys[{i}].id must be 1-32 characters of A-Z, a-z, 0-9, `_` or `-`"
                ));
                continue;
            }
            if keys.iter().any(|k| k.id == entry.id) {
                problems.push(format!("key id `{}` appears more than once", entry.id));
                continue;
            }
            if humantime::parse_rfc3339_weak(&entry.created_at).is_err() {
                problems.push(format!(
                    "key `{}`: created_at is not an RFC 3339 timestamp",
                    entry.id
                ));
            }
            let secret = match decode_secret(&entry.secret) {
                Ok(s) => s,
                Err(m) => {
                    problems.push(format!("key `{}`: {m}", entry.id));
                    continue;
                }
            };
            keys.push(Key {
                id: entry.id.clone(),
                state: entry.state,
                created_at: entry.created_at.clone(),
                cipher: Aes256Gcm::new_from_slice(&secret[..]).expect("32-byte key"),
            });
        }
        let primary = keys.iter().position(|k| k.id == file.primary);
        match primary.map(|p| keys[p].state) {
            None if file.keys.iter().any(|k| k.id == file.primary) => {}
            None => problems.push(format!(
                "primary `{}` is not a key in this keyring",
                file.primary
            )),
            Some(KeyState::Active) => {}
            Some(state) => problems.push(format!(
                "primary `{}` must be active, not {state}",
                file.primary
            )),
        }
        if keys.is_empty() && problems.is_empty() {
            problems.push("the keyring has no keys".into());
        }
        match primary {
            Some(primary) if problems.is_empty() => Ok(Self { keys, primary }),
            _ => Err(KeyringError(problems)),
        }
    }

    /// A keyring of one active key (embedding, benchmarks). Files go through [`Keyring::load`].
    pub fn single(
        id: &str,
        secret: &[u8; SECRET_LEN],
        created_at: &str,
    ) -> Result<Self, KeyringError> {
        Self::from_file(KeyringFile {
            primary: id.to_string(),
            keys: vec![KeyEntry {
                id: id.to_string(),
                secret: Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(secret)),
                created_at: created_at.to_string(),
                state: KeyState::Active,
            }],
        })
    }

    /// The key every new seal uses.
    pub fn primary(&self) -> &Key {
        &self.keys[self.primary]
    }

    /// The key named `id`, if any (whatever its state).
    pub fn get(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }
}

fn decode_secret(b64: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| "secret is not standard base64".to_string())?,
    );
    if bytes.len() != SECRET_LEN {
        return Err(format!(
            "secret must be {SECRET_LEN} bytes, found {}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// A new keyring file with one fresh active key (`keys init`).
pub fn generate(id: &str) -> Result<KeyringFile, String> {
    if !valid_key_id(id) {
        return Err("key id must be 1-32 characters of A-Z, a-z, 0-9, `_` or `-`".into());
    }
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    getrandom::fill(&mut secret[..]).map_err(|e| format!("the OS random source failed: {e}"))?;
    Ok(KeyringFile {
        primary: id.to_string(),
        keys: vec![KeyEntry {
            id: id.to_string(),
            secret: Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&secret[..])),
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            state: KeyState::Active,
        }],
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The contract's test key `k1` = bytes 00..1f.
    pub fn test_keyring() -> Keyring {
        let secret =
            base64::engine::general_purpose::STANDARD.encode((0u8..32).collect::<Vec<_>>());
        Keyring::from_file(KeyringFile {
            primary: "k1".into(),
            keys: vec![
                entry("k1", &secret, KeyState::Active),
                entry(
                    "old",
                    &base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
                    KeyState::DecryptOnly,
                ),
                entry(
                    "gone",
                    &base64::engine::general_purpose::STANDARD.encode([9u8; 32]),
                    KeyState::Disabled,
                ),
            ],
        })
        .unwrap()
    }

    fn entry(id: &str, secret: &str, state: KeyState) -> KeyEntry {
        KeyEntry {
            id: id.into(),
            secret: Zeroizing::new(secret.into()),
            created_at: "2026-11-01T00:00:00Z".into(),
            state,
        }
    }

    #[test]
    fn validation_collects_every_problem() {
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![1u8; n]);
        let err = Keyring::from_file(KeyringFile {
            primary: "b".into(),
            keys: vec![
                entry("a", &b64(16), KeyState::Active),
                entry("b", &b64(32), KeyState::DecryptOnly),
                entry("b", &b64(32), KeyState::Active),
                entry("bad id!", &b64(32), KeyState::Active),
                entry("c", "%%%", KeyState::Active),
            ],
        })
        .unwrap_err();
        let all = err.to_string();
        for needle in [
            "key `a`: secret must be 32 bytes, found 16",
            "appears more than once",
            "keys[3].id",
            "key `c`: secret is not standard base64",
            "primary `b` must be active, not decrypt_only",
        ] {
            assert!(all.contains(needle), "{needle} missing from: {all}");
        }
    }

    #[test]
    fn unknown_primary_is_an_error() {
        let err = Keyring::from_file(KeyringFile {
            primary: "zz".into(),
            keys: vec![entry(
                "a",
                &base64::engine::general_purpose::STANDARD.encode([1u8; 32]),
                KeyState::Active,
            )],
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("primary `zz` is not a key"),
            "{err}"
        );
    }

    #[test]
    fn debug_never_prints_secrets() {
        let ring = test_keyring();
        let text = format!("{ring:?}");
        assert!(text.contains("k1") && text.contains("DecryptOnly"));
        let secret =
            base64::engine::general_purpose::STANDARD.encode((0u8..32).collect::<Vec<_>>());
        assert!(!text.contains(&secret));
        assert!(!text.contains("cipher"));
    }

    #[test]
    fn generated_keyrings_are_valid_and_distinct() {
        let a = generate("k1").unwrap();
        let b = generate("k1").unwrap();
        assert_ne!(*a.keys[0].secret, *b.keys[0].secret);
        let ring = Keyring::from_file(a).unwrap();
        assert_eq!(ring.primary().id, "k1");
        assert!(generate("no spaces").is_err());
    }
}
