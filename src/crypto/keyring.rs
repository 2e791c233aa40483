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

use super::wrap::{self, Kek, KekSource};
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
    /// Subjects erased with `keys shred` (docs/tokens.md, `fsb1`): their subject-bound tokens
    /// never open again, on every replica that loads this file. Absent when empty, so files
    /// without erasures stay as contract §2 writes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shredded: Vec<Shred>,
}

/// One erased subject: its [`subject_digest`] (never the subject) and when it was erased.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shred {
    /// Lowercase hex of [`subject_digest`].
    pub subject_sha256: String,
    /// RFC 3339, UTC.
    pub at: String,
}

/// How the keyring file names a subject: SHA-256 over a domain prefix and the subject, so the
/// file does not spell out who was erased (the file is secret anyway; a guessable subject id
/// can be confirmed by whoever reads it).
pub fn subject_digest(subject: &str) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"fieldseal/shred/v1\0");
    ctx.update(subject.as_bytes());
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// HKDF `info` prefix of a subject's key (`fsb1`): the format, then the subject's bytes.
const SUBJECT_KEY_INFO: &[u8] = b"fieldseal fsb1 subject\0";

/// `HKDF-SHA256(ikm = secret, salt = none, info = SUBJECT_KEY_INFO ‖ subject)`, 32 bytes: the
/// AES-256-GCM key of the subject's `fsb1` tokens under this keyring key.
fn derive_subject_key(secret: &[u8; SECRET_LEN], subject: &str) -> Zeroizing<[u8; SECRET_LEN]> {
    let mut out = Zeroizing::new([0u8; SECRET_LEN]);
    hkdf_sha256(
        secret,
        &[SUBJECT_KEY_INFO, subject.as_bytes()],
        &mut out[..],
    );
    out
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
    pub(crate) cipher: ZeroizingAesGcm,
    /// The AES-SIV key of searchable tokens (`fsd1`, docs/tokens.md), derived from the secret
    /// with HKDF-SHA256 so the two formats never use one key in two constructions. Kept as
    /// bytes (zeroized on drop); the cipher is built per use.
    pub(crate) siv_key: Zeroizing<[u8; SIV_KEY_LEN]>,
    /// The secret itself, for per-subject keys (`fsb1`), derived per token.
    secret: Zeroizing<[u8; SECRET_LEN]>,
}

impl Key {
    /// The AES-256-GCM cipher of `subject`'s tokens under this key (`fsb1`).
    pub(crate) fn subject_cipher(&self, subject: &str) -> ZeroizingAesGcm {
        ZeroizingAesGcm::new(&derive_subject_key(&self.secret, subject))
    }
}

impl Key {
    /// The AES-256-GCM key that wraps a file's key to this keyring key (docs/files.md):
    /// derived, so file keys and tokens never share a key.
    pub(crate) fn file_wrap_cipher(&self) -> ZeroizingAesGcm {
        let mut key = Zeroizing::new([0u8; SECRET_LEN]);
        hkdf_sha256(&self.secret, &[FILE_WRAP_KEY_INFO], &mut key[..]);
        ZeroizingAesGcm::new(&key)
    }
}

/// HKDF `info` of the key that wraps file keys (`fieldseal file`).
const FILE_WRAP_KEY_INFO: &[u8] = b"fieldseal file key wrap v1";

/// AES-SIV-512 (two AES-256 keys: S2V/CMAC and CTR).
pub(crate) const SIV_KEY_LEN: usize = 64;

/// HKDF `info` of the `fsd1` key: names the format and the construction.
const SIV_KEY_INFO: &[u8] = b"fieldseal fsd1 aes-siv-512";

/// `HKDF-SHA256(ikm = secret, salt = none, info = SIV_KEY_INFO)`, 64 bytes.
pub(crate) fn derive_siv_key(secret: &[u8; SECRET_LEN]) -> Zeroizing<[u8; SIV_KEY_LEN]> {
    let mut out = Zeroizing::new([0u8; SIV_KEY_LEN]);
    hkdf_sha256(secret, &[SIV_KEY_INFO], &mut out[..]);
    out
}

/// `HKDF-SHA256(ikm = secret, salt = none, info = the concatenation of info)` into `out`
/// (at most 255 × 32 bytes; fieldseal asks for 32 or 64).
fn hkdf_sha256(secret: &[u8; SECRET_LEN], info: &[&[u8]], out: &mut [u8]) {
    struct Len(usize);
    impl aws_lc_rs::hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, &[])
        .extract(secret)
        .expand(info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("HKDF-SHA256 expands up to 8160 bytes");
}

/// An AES-256-GCM cipher whose whole key schedule is cleared when it is dropped — when a
/// reload retires the keyring that held it, or a CLI command ends.
///
/// With the `zeroize` features on (see Cargo.toml), the `aes` crate clears the AES round keys
/// on drop. GHASH's key H = AES-K(0¹²⁸), held by `polyval` 0.6, is not cleared by polyval
/// itself on x86-64 (and aarch64 with `polyval_armv8`): its CPU-detecting wrapper keeps the
/// backend in a `ManuallyDrop` and never drops it, so the backend's zeroizing `Drop` never
/// runs. So this type's `Drop` first overwrites the cipher in place with one built from the
/// all-zero key: the assignment drops the old value (the round keys are zeroized) and stores
/// the new one over all of it, H included; `black_box` keeps the compiler from discarding that
/// store as dead. What it cannot reach, like any zeroization: copies left behind by moves,
/// registers and the stack.
pub(crate) struct ZeroizingAesGcm(Aes256Gcm);

impl ZeroizingAesGcm {
    pub(crate) fn new(key: &[u8; SECRET_LEN]) -> Self {
        Self(Aes256Gcm::new(key.into()))
    }

    /// For per-request keys (JWE content keys, envelope session keys); `None` unless 32 bytes.
    pub(crate) fn from_slice(key: &[u8]) -> Option<Self> {
        <&[u8; SECRET_LEN]>::try_from(key).ok().map(Self::new)
    }
}

impl std::ops::Deref for ZeroizingAesGcm {
    type Target = Aes256Gcm;

    fn deref(&self) -> &Aes256Gcm {
        &self.0
    }
}

impl Drop for ZeroizingAesGcm {
    fn drop(&mut self) {
        self.0 = Aes256Gcm::new(&Default::default());
        std::hint::black_box(&self.0);
    }
}

impl zeroize::ZeroizeOnDrop for ZeroizingAesGcm {}

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
    /// [`subject_digest`]s of erased subjects, with when each was erased.
    shredded: std::collections::HashMap<[u8; 32], String>,
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
    /// Reads and validates a keyring file, plain or wrapped, with the refusals of
    /// [`read_keyring_file`] (file mode and owner; a plain file where `kek` expects a wrapped
    /// one). A wrapped file is opened with the KEK from `kek` (looked up only then). Returns the
    /// keyring and whether the file is group-readable (worth a warning).
    pub fn load(path: &Path, kek: &KekSource) -> Result<(Self, Exposure), KeyringError> {
        let read = read_keyring_file(path, kek)?;
        Ok((Self::from_file(read.file)?, read.exposure))
    }

    /// Validates a parsed keyring; collects every problem.
    pub fn from_file(file: KeyringFile) -> Result<Self, KeyringError> {
        Self::build(&file)
    }

    /// Validates a parsed keyring without consuming it (the CLI edits and rewrites the file).
    pub fn build(file: &KeyringFile) -> Result<Self, KeyringError> {
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
                cipher: ZeroizingAesGcm::new(&secret),
                siv_key: derive_siv_key(&secret),
                secret: Zeroizing::new(*secret),
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
        let mut shredded = std::collections::HashMap::new();
        for (i, shred) in file.shredded.iter().enumerate() {
            let digest = (shred.subject_sha256.len() == 64)
                .then(|| {
                    (0..32)
                        .map(|j| u8::from_str_radix(&shred.subject_sha256[2 * j..2 * j + 2], 16))
                        .collect::<Result<Vec<u8>, _>>()
                        .ok()
                })
                .flatten()
                .and_then(|v| <[u8; 32]>::try_from(v).ok());
            match digest {
                Some(d) => {
                    shredded.insert(d, shred.at.clone());
                }
                None => problems.push(format!(
                    "shredded.{i}: subject_sha256 must be 64 hex digits"
                )),
            }
        }
        match primary {
            Some(primary) if problems.is_empty() => Ok(Self {
                keys,
                primary,
                shredded,
            }),
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
            shredded: Vec::new(),
            primary: id.to_string(),
            keys: vec![KeyEntry {
                id: id.to_string(),
                secret: Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(secret)),
                created_at: created_at.to_string(),
                state: KeyState::Active,
            }],
        })
    }

    /// Whether `subject` was erased (`keys shred`): its `fsb1` tokens neither seal nor open.
    pub fn is_shredded(&self, subject: &str) -> bool {
        !self.shredded.is_empty() && self.shredded.contains_key(&subject_digest(subject))
    }

    /// The erased subjects' digests and when each was erased (for the audit log).
    pub fn shredded(&self) -> impl Iterator<Item = (&[u8; 32], &str)> {
        self.shredded.iter().map(|(d, at)| (d, at.as_str()))
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

fn decode_secret(b64: &str) -> Result<Zeroizing<[u8; SECRET_LEN]>, String> {
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
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    secret.copy_from_slice(&bytes);
    Ok(secret)
}

/// A new keyring file with one fresh active key (`keys init`).
pub fn generate(id: &str) -> Result<KeyringFile, String> {
    if !valid_key_id(id) {
        return Err("key id must be 1-32 characters of A-Z, a-z, 0-9, `_` or `-`".into());
    }
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    getrandom::fill(&mut secret[..]).map_err(|e| format!("the OS random source failed: {e}"))?;
    Ok(KeyringFile {
        shredded: Vec::new(),
        primary: id.to_string(),
        keys: vec![KeyEntry {
            id: id.to_string(),
            secret: Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&secret[..])),
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            state: KeyState::Active,
        }],
    })
}

/// A keyring file as read from disk: its contents, the KEK that unwrapped it (`None` for a
/// plain file), and how exposed the file is.
#[derive(Debug)]
pub struct ReadKeyring {
    pub file: KeyringFile,
    pub kek: Option<Kek>,
    pub exposure: Exposure,
}

impl fmt::Debug for KeyringFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyringFile")
            .field("primary", &self.primary)
            .field("keys", &self.keys)
            .finish()
    }
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// Reads a keyring file, plain (contract §2) or wrapped (`{"wrapped": …}`, see [`wrap`]).
///
/// This is the one place keyring files are read — the proxy at startup, `check` and every
/// reload (through [`Keyring::load`]), and every CLI command — so its two refusals hold
/// everywhere:
/// - a file that [`secret_file`] refuses (readable by others, writable by the group or others,
///   owned by another user than the process's or root);
/// - a plain file while `kek` says a wrapped one is expected ([`KekSource::expects_wrapped`]:
///   a passphrase/KEK file in the configuration or on the command line, or a KEK variable in
///   the environment).
///
/// The KEK's value is looked up only for a wrapped file. The contents are parsed, not
/// validated ([`Keyring::build`] does that).
pub fn read_keyring_file(path: &Path, kek: &KekSource) -> Result<ReadKeyring, KeyringError> {
    let one = |m: String| KeyringError(vec![m]);
    let (mut bytes, exposure) = secret_file::read(path).map_err(one)?;
    let text = match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Zeroizing::new(text),
        Err(e) => {
            // The rejected bytes may be key material: zeroized on drop.
            drop(Zeroizing::new(e.into_bytes()));
            return Err(one(format!(
                "{} is not a keyring (not UTF-8 text)",
                path.display()
            )));
        }
    };
    let (plain, used) = match wrap::parse(&text)
        .map_err(|m| one(format!("{} {m}", path.display())))?
    {
        None => {
            if let Some(source) = kek.expects_wrapped() {
                return Err(one(format!(
                    "{} is not wrapped, but {source} is set: a configured passphrase or KEK means the keyring must be wrapped, and a plain one may have been put in its place by whoever could replace the file (with keys they chose); wrap it with `fieldseal keys rewrap-keyring --keyring {}`, or stop supplying {source} if this keyring is meant to be plain",
                    path.display(),
                    path.display()
                )));
            }
            (text, None)
        }
        Some(wrapped) => {
            let Some((bytes, key)) = kek.open_wrapped(&wrapped, path).map_err(one)? else {
                return Err(one(format!(
                    "{} is wrapped (sealed with a key-encryption key), but no passphrase or KEK was supplied: {}",
                    path.display(),
                    kek.hint()
                )));
            };
            let text = std::str::from_utf8(&bytes)
                .map(|t| Zeroizing::new(t.to_string()))
                .map_err(|_| {
                    one(format!(
                        "{}: the unwrapped keyring is not UTF-8",
                        path.display()
                    ))
                })?;
            (text, Some(key))
        }
    };
    // serde_json errors name line and column, never the value.
    let file: KeyringFile = serde_json::from_str(&plain).map_err(|e| {
        one(format!(
            "{} is not a valid keyring{}: {e}",
            path.display(),
            if used.is_some() {
                " (after unwrapping)"
            } else {
                ""
            }
        ))
    })?;
    Ok(ReadKeyring {
        file,
        kek: used,
        exposure,
    })
}

/// Writes a keyring file atomically with mode 0600, wrapped with `kek` (fresh salt and nonce)
/// when given, plain otherwise.
pub fn write_keyring_file(
    path: &Path,
    file: &KeyringFile,
    kek: Option<&Kek>,
) -> Result<(), String> {
    let mut plain = Zeroizing::new(serde_json::to_vec_pretty(file).expect("a keyring serialises"));
    plain.push(b'\n');
    let bytes = match kek {
        None => plain,
        Some(kek) => Zeroizing::new(wrap::seal(&plain, kek)?),
    };
    secret_file::write_private(path, &bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The id `keys rotate` gives a new key: `k<N+1>` for the largest N among ids `k<digits>`,
/// else `k<count+1>`; never an id already in the file.
pub fn next_key_id(file: &KeyringFile) -> Result<String, String> {
    let largest = file
        .keys
        .iter()
        .filter_map(|k| k.id.strip_prefix('k'))
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|digits| digits.parse::<u128>().ok())
        .max();
    let n = match largest {
        Some(n) => n.checked_add(1),
        None => u128::try_from(file.keys.len() + 1).ok(),
    };
    let id = n
        .map(|n| format!("k{n}"))
        .filter(|id| valid_key_id(id) && !file.keys.iter().any(|k| &k.id == id))
        .ok_or("cannot choose a new key id; pass --id")?;
    Ok(id)
}

/// What [`rotate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub new_primary: String,
    pub old_primary: String,
}

/// Adds a fresh active key as the primary and demotes the old primary to `decrypt_only`. Every
/// other key (and every secret) is kept as it was. The file must be a valid keyring.
pub fn rotate(file: &mut KeyringFile, new_id: Option<&str>) -> Result<Rotation, String> {
    Keyring::build(file).map_err(|e| e.to_string())?;
    let id = match new_id {
        Some(id) if !valid_key_id(id) => {
            return Err("key id must be 1-32 characters of A-Z, a-z, 0-9, `_` or `-`".into())
        }
        Some(id) if file.keys.iter().any(|k| k.id == id) => {
            return Err(format!(
                "key id `{id}` is already in the keyring; ids are never reused (tokens name them)"
            ))
        }
        Some(id) => id.to_string(),
        None => next_key_id(file)?,
    };
    let fresh = generate(&id)?.keys.pop().expect("one key");
    let old = file.primary.clone();
    for key in &mut file.keys {
        if key.id == old {
            key.state = KeyState::DecryptOnly;
        }
    }
    file.keys.push(fresh);
    file.primary = id.clone();
    Keyring::build(file).map_err(|e| e.to_string())?;
    Ok(Rotation {
        new_primary: id,
        old_primary: old,
    })
}

/// Adds a fresh key as `decrypt_only`, leaving the primary as it is: the first half of a
/// rotation across replicas. Every replica that loads the file can open the new key's tokens
/// before any replica seals with it ([`promote`] makes it the primary). Returns its id.
pub fn stage(file: &mut KeyringFile, new_id: Option<&str>) -> Result<String, String> {
    let primary = file.primary.clone();
    let rotation = rotate(file, new_id)?;
    // Undo the switch `rotate` made: the old primary stays the primary, the new key opens only.
    for key in &mut file.keys {
        if key.id == primary {
            key.state = KeyState::Active;
        } else if key.id == rotation.new_primary {
            key.state = KeyState::DecryptOnly;
        }
    }
    file.primary = primary;
    Keyring::build(file).map_err(|e| e.to_string())?;
    Ok(rotation.new_primary)
}

/// Makes the staged key `kid` (a `decrypt_only` key added after the primary) the active
/// primary; the old primary becomes `decrypt_only`. The second half of a staged rotation.
pub fn promote(file: &mut KeyringFile, kid: &str) -> Result<Rotation, String> {
    Keyring::build(file).map_err(|e| e.to_string())?;
    let old = file.primary.clone();
    if kid == old {
        return Err(format!("`{kid}` is already the primary"));
    }
    let Some(key) = file.keys.iter().find(|k| k.id == kid) else {
        return Err(format!("no key `{kid}` in this keyring"));
    };
    if !staged(file).contains(&kid) {
        return Err(format!(
            "`{kid}` ({}) is not a staged key: only a decrypt_only key added after the primary `{old}` is (stage one with `keys rotate --stage`)",
            key.state
        ));
    }
    for key in &mut file.keys {
        if key.id == old {
            key.state = KeyState::DecryptOnly;
        } else if key.id == kid {
            key.state = KeyState::Active;
        }
    }
    file.primary = kid.to_string();
    Keyring::build(file).map_err(|e| e.to_string())?;
    Ok(Rotation {
        new_primary: kid.to_string(),
        old_primary: old,
    })
}

/// The keys staged for promotion: `decrypt_only` keys added after the primary (keys are
/// appended as they are made, so the file's order is their order; creation times can tie).
pub fn staged(file: &KeyringFile) -> Vec<&str> {
    let Some(primary) = file.keys.iter().position(|k| k.id == file.primary) else {
        return Vec::new();
    };
    file.keys[primary + 1..]
        .iter()
        .filter(|k| k.state == KeyState::DecryptOnly)
        .map(|k| k.id.as_str())
        .collect()
}

/// Sets `kid` to `disabled`. Refuses the primary and unknown ids; `Ok(false)` when it already is.
pub fn disable(file: &mut KeyringFile, kid: &str) -> Result<bool, String> {
    if file.primary == kid {
        return Err(format!(
            "`{kid}` is the primary key; run `fieldseal keys rotate` first, then retire it once nothing uses it"
        ));
    }
    let key = file
        .keys
        .iter_mut()
        .find(|k| k.id == kid)
        .ok_or_else(|| format!("no key `{kid}` in this keyring"))?;
    if key.state == KeyState::Disabled {
        return Ok(false);
    }
    key.state = KeyState::Disabled;
    Ok(true)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Lowercase hex, for comparing derived keys with documented values.
    pub fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The contract's test key `k1` = bytes 00..1f.
    pub fn test_keyring() -> Keyring {
        Keyring::from_file(test_keyring_file()).unwrap()
    }

    /// The file of [`test_keyring`], to edit before building.
    pub fn test_keyring_file() -> KeyringFile {
        let secret =
            base64::engine::general_purpose::STANDARD.encode((0u8..32).collect::<Vec<_>>());
        KeyringFile {
            shredded: Vec::new(),
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
        }
    }

    fn entry(id: &str, secret: &str, state: KeyState) -> KeyEntry {
        KeyEntry {
            id: id.into(),
            secret: Zeroizing::new(secret.into()),
            created_at: "2026-11-01T00:00:00Z".into(),
            state,
        }
    }

    /// Compile-time checks that every key schedule the proxy keeps is cleared on drop: these
    /// fail to build when a `zeroize` feature in Cargo.toml is turned off.
    #[test]
    fn key_schedules_are_zeroized_on_drop() {
        fn assert_zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        // The keyring's ciphers (and the KEK's): AES round keys by `aes`, H by our wrapper.
        assert_zeroize_on_drop::<ZeroizingAesGcm>();
        assert_zeroize_on_drop::<aes::Aes256>();
        assert_zeroize_on_drop::<aes::Aes128>();
        // RSA keys generated or parsed with the `rsa` crate.
        assert_zeroize_on_drop::<rsa::RsaPrivateKey>();
        assert!(std::mem::needs_drop::<ZeroizingAesGcm>());
        // Why the wrapper exists: polyval 0.6's CPU-detecting GHASH state has no `Drop` at
        // all on x86-64, so H would stay in memory. When this fails, polyval clears it
        // itself: the wrapper can go (and docs/keys.md, SECURITY.md can say so).
        #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
        assert!(
            !std::mem::needs_drop::<polyval::Polyval>(),
            "polyval now zeroizes its state on drop"
        );
    }

    #[test]
    fn a_dropped_cipher_still_worked_until_then() {
        // The wrapper is transparent: token vectors (contract §1) still come out right.
        let ring = test_keyring();
        let key = ring.primary();
        let nonce: [u8; 12] = core::array::from_fn(|i| i as u8);
        let token = crate::crypto::token::seal_with_nonce(
            key,
            "ssn",
            &serde_json::json!("123-45-6789"),
            nonce,
        );
        assert_eq!(
            token,
            "fs1.k1.AAECAwQFBgcICQoLZTPkKOjR9za7dq-ykx8A-Aa_3auBzhqAiXYp9yI"
        );
        drop(ring);
    }

    #[test]
    fn validation_collects_every_problem() {
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![1u8; n]);
        let err = Keyring::from_file(KeyringFile {
            shredded: Vec::new(),
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
            shredded: Vec::new(),
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

    fn file_of(ids: &[(&str, KeyState)], primary: &str) -> KeyringFile {
        KeyringFile {
            shredded: Vec::new(),
            primary: primary.into(),
            keys: ids
                .iter()
                .enumerate()
                .map(|(i, (id, state))| {
                    entry(
                        id,
                        &base64::engine::general_purpose::STANDARD.encode([i as u8 + 1; 32]),
                        *state,
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn a_staged_key_opens_everywhere_before_it_is_promoted() {
        use KeyState::*;
        let mut file = generate("k1").unwrap();
        let staged_id = stage(&mut file, None).unwrap();
        assert_eq!((staged_id.as_str(), file.primary.as_str()), ("k2", "k1"));
        let ring = Keyring::build(&file).unwrap();
        assert_eq!(ring.primary().id, "k1");
        assert_eq!(ring.keys()[1].state, DecryptOnly);
        assert_eq!(staged(&file), ["k2"]);
        // Tokens of the staged key open with the staged keyring (before any replica seals).
        let mut promoted_file = file;
        promote(&mut promoted_file, "k2").unwrap();
        let new = Keyring::build(&promoted_file).unwrap();
        assert_eq!(new.primary().id, "k2");
        let token =
            crate::crypto::token::seal(new.primary(), "ssn", &serde_json::json!("x")).unwrap();
        assert_eq!(
            crate::crypto::token::open(&ring, "ssn", &token).unwrap(),
            "x"
        );
        // ...and the old primary's tokens still open after the promotion.
        let old =
            crate::crypto::token::seal(ring.primary(), "ssn", &serde_json::json!("y")).unwrap();
        assert_eq!(crate::crypto::token::open(&new, "ssn", &old).unwrap(), "y");
        assert_eq!(promoted_file.keys[0].state, DecryptOnly);
        assert!(staged(&promoted_file).is_empty());
    }

    #[test]
    fn only_a_staged_key_is_promoted() {
        let mut file = generate("k1").unwrap();
        assert!(promote(&mut file, "k1")
            .unwrap_err()
            .contains("already the primary"));
        assert!(promote(&mut file, "k9")
            .unwrap_err()
            .contains("no key `k9`"));
        // A key left decrypt_only by an ordinary rotation is older than the primary.
        rotate(&mut file, None).unwrap();
        let err = promote(&mut file, "k1").unwrap_err();
        assert!(err.contains("not a staged key"), "{err}");
        assert_eq!(file.primary, "k2");
        stage(&mut file, Some("next")).unwrap();
        disable(&mut file, "next").unwrap();
        assert!(promote(&mut file, "next")
            .unwrap_err()
            .contains("not a staged key"));
    }

    #[test]
    fn rotate_chooses_the_next_unused_id() {
        use KeyState::*;
        type Case<'a> = (&'a [(&'a str, KeyState)], &'a str, &'a str);
        let cases: &[Case] = &[
            (&[("k1", Active)], "k1", "k2"),
            (
                &[("k1", Disabled), ("k9", DecryptOnly), ("k3", Active)],
                "k3",
                "k10",
            ),
            (&[("main", Active)], "main", "k2"),
            (&[("a", Disabled), ("b", Active)], "b", "k3"),
            (&[("k", Active), ("k1x", Disabled)], "k", "k3"),
            (&[("k007", Active)], "k007", "k8"),
        ];
        for (ids, primary, want) in cases {
            let file = file_of(ids, primary);
            assert_eq!(next_key_id(&file).unwrap(), *want, "{ids:?}");
        }
        // No room left for another digit: the operator picks.
        let long = format!("k{}", "9".repeat(31));
        let file = file_of(&[(long.as_str(), Active)], &long);
        assert!(next_key_id(&file).unwrap_err().contains("--id"));
    }

    #[test]
    fn rotation_keeps_old_secrets_and_states() {
        use KeyState::*;
        let mut file = file_of(
            &[
                ("k1", Disabled),
                ("k2", DecryptOnly),
                ("k3", Active),
                ("x", Active),
            ],
            "k3",
        );
        let before: Vec<(String, String, KeyState, String)> = file
            .keys
            .iter()
            .map(|k| {
                (
                    k.id.clone(),
                    k.secret.to_string(),
                    k.state,
                    k.created_at.clone(),
                )
            })
            .collect();
        let r = rotate(&mut file, None).unwrap();
        assert_eq!(
            r,
            Rotation {
                new_primary: "k4".into(),
                old_primary: "k3".into()
            }
        );
        assert_eq!(file.primary, "k4");
        assert_eq!(file.keys.len(), 5);
        for (old, now) in before.iter().zip(&file.keys) {
            assert_eq!(old.0, now.id);
            assert_eq!(old.1, *now.secret, "secret of {} kept", old.0);
            assert_eq!(old.3, now.created_at);
            let want = if old.0 == "k3" { DecryptOnly } else { old.2 };
            assert_eq!(now.state, want, "{}", old.0);
        }
        let new = &file.keys[4];
        assert_eq!((new.id.as_str(), new.state), ("k4", Active));
        assert!(before.iter().all(|b| b.1 != *new.secret));
        let ring = Keyring::build(&file).unwrap();
        assert_eq!(ring.primary().id, "k4");

        // An explicit id; reuse and bad ids refused, the file untouched.
        let r = rotate(&mut file, Some("2027-q1")).unwrap();
        assert_eq!(r.old_primary, "k4");
        assert_eq!(
            file.keys.iter().find(|k| k.id == "k4").unwrap().state,
            DecryptOnly
        );
        for bad in ["k1", "x", "has space", ""] {
            assert!(rotate(&mut file, Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(file.keys.len(), 6);
        assert_eq!(file.primary, "2027-q1");
    }

    #[test]
    fn rotate_refuses_an_invalid_keyring() {
        let mut file = file_of(&[("k1", KeyState::DecryptOnly)], "k1");
        assert!(rotate(&mut file, None)
            .unwrap_err()
            .contains("must be active"));
        assert_eq!(file.keys.len(), 1);
    }

    #[test]
    fn disable_rules() {
        use KeyState::*;
        let mut file = file_of(&[("k1", DecryptOnly), ("k2", Active)], "k2");
        assert!(disable(&mut file, "k2").unwrap_err().contains("primary"));
        assert!(disable(&mut file, "k9")
            .unwrap_err()
            .contains("no key `k9`"));
        assert_eq!(disable(&mut file, "k1"), Ok(true));
        assert_eq!(file.keys[0].state, Disabled);
        assert_eq!(disable(&mut file, "k1"), Ok(false));
    }

    fn cheap_passphrase(p: &str) -> Kek {
        Kek::passphrase(Zeroizing::new(p.into()), "test")
            .with_params(crate::crypto::wrap::Argon2Params::TEST)
    }

    #[test]
    fn files_round_trip_plain_and_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let mut file = generate("k1").unwrap();
        rotate(&mut file, None).unwrap();

        // Plain: the KEK sources are never consulted.
        write_keyring_file(&path, &file, None).unwrap();
        assert_eq!(secret_file::check(&path), Ok(Exposure::OwnerOnly));
        let read = read_keyring_file(&path, &KekSource::none()).unwrap();
        assert!(read.kek.is_none());
        assert_eq!(read.file.primary, "k2");

        // Wrapped with a passphrase file.
        let pw = dir.path().join("pw");
        secret_file::write_private(&pw, b"correct horse battery staple\n").unwrap();
        let kek = cheap_passphrase("correct horse battery staple");
        write_keyring_file(&path, &file, Some(&kek)).unwrap();
        assert_eq!(secret_file::check(&path), Ok(Exposure::OwnerOnly));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"wrapped\"") && !text.contains(file.keys[0].secret.as_str()));
        let source = KekSource::for_cli(Some(pw.clone()), None);
        let (ring, exposure) = Keyring::load(&path, &source).unwrap();
        assert_eq!(
            (ring.primary().id.as_str(), exposure),
            ("k2", Exposure::OwnerOnly)
        );
        let read = read_keyring_file(&path, &source).unwrap();
        let reread = read.kek.expect("wrapped");
        assert!(reread.is_passphrase());
        assert_eq!(
            read.file
                .keys
                .iter()
                .map(|k| k.secret.to_string())
                .collect::<Vec<_>>(),
            file.keys
                .iter()
                .map(|k| k.secret.to_string())
                .collect::<Vec<_>>()
        );

        // Wrong passphrase.
        secret_file::write_private(&pw, b"correct horse battery stapler").unwrap();
        let err = Keyring::load(&path, &source).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "cannot unwrap {}: wrong passphrase/KEK, or the file was modified",
                path.display()
            )
        );
        // No KEK at all: the error says how to supply one.
        let err = Keyring::load(&path, &KekSource::none())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is wrapped") && err.contains("no passphrase or KEK"),
            "{err}"
        );

        // A plain file where the configuration expects a wrapped one is refused.
        write_keyring_file(&path, &file, None).unwrap();
        let err = Keyring::load(&path, &KekSource::for_config(Some(pw.clone()), None))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is not wrapped, but keys.keyring_passphrase_file is set"),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "fieldseal keys rewrap-keyring --keyring {}",
                path.display()
            )),
            "{err}"
        );
        // So does a KEK variable in the environment, for the proxy and the CLI alike
        // (`keys rewrap-keyring` excepted); an empty one counts as unset.
        let env = |name: &str| {
            (name == crate::crypto::wrap::ENV_KEK).then(|| Zeroizing::new("set".to_string()))
        };
        for source in [
            KekSource::for_config(None, None),
            KekSource::for_cli(None, None),
        ] {
            assert_eq!(
                source.expects_wrapped_with(&env).as_deref(),
                Some("environment variable FIELDSEAL_KEYRING_KEK")
            );
            assert_eq!(source.expects_wrapped_with(&|_| None), None);
            assert_eq!(
                source.plain_allowed_from_env().expects_wrapped_with(&env),
                None
            );
        }
        // A configured file is named first, and is not waived by `plain_allowed_from_env`.
        assert_eq!(
            KekSource::for_config(None, Some(pw.clone()))
                .plain_allowed_from_env()
                .expects_wrapped_with(&env)
                .as_deref(),
            Some("keys.keyring_kek_file")
        );

        // Raw KEK file.
        let kek_path = dir.path().join("kek");
        secret_file::write_private(&kek_path, &[3u8; 32]).unwrap();
        let raw = KekSource::for_cli(None, Some(kek_path))
            .resolve()
            .unwrap()
            .unwrap();
        write_keyring_file(&path, &file, Some(&raw)).unwrap();
        let read = read_keyring_file(
            &path,
            &KekSource::for_cli(None, Some(dir.path().join("kek"))),
        )
        .unwrap();
        assert_eq!(read.file.primary, "k2");
        assert!(!read.kek.unwrap().is_passphrase());
    }

    #[test]
    fn a_wrapped_file_whose_content_is_not_a_keyring_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let kek = Kek::raw(Zeroizing::new([4u8; 32]), "test");
        let bytes = crate::crypto::wrap::seal(br#"{"primary": 1}"#, &kek).unwrap();
        secret_file::write_private(&path, &bytes).unwrap();
        let kek_path = dir.path().join("kek");
        secret_file::write_private(&kek_path, &[4u8; 32]).unwrap();
        let err = read_keyring_file(&path, &KekSource::for_cli(None, Some(kek_path))).unwrap_err();
        assert!(
            err.to_string()
                .contains("not a valid keyring (after unwrapping)"),
            "{err}"
        );
    }

    #[test]
    fn others_readable_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        write_keyring_file(&path, &generate("k1").unwrap(), None).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = Keyring::load(&path, &KekSource::none()).unwrap_err();
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
    }
}
