//! Keys at rest: a keyring file sealed with a key-encryption key (KEK).
//!
//! A wrapped keyring file is
//!
//! ```json
//! {"wrapped": {"version": 1, "kdf": "argon2id", "m_cost_kib": 65536, "t_cost": 3, "p_cost": 1,
//!              "salt": "<base64, 16 bytes>", "nonce": "<base64, 12 bytes>",
//!              "ciphertext": "<base64 of AES-256-GCM(KEK, nonce, plain keyring JSON, AAD)>"}}
//! ```
//!
//! with AAD `fieldseal-keyring-v1` and the KEK derived by Argon2id (version 0x13, 32 bytes) from
//! a passphrase and the salt; or, with a raw 32-byte KEK, `"kdf": "none"` and no salt or cost
//! fields. The ciphertext ends with the 16-byte GCM tag. `docs/keys.md` documents the format and
//! what wrapping protects against.
//!
//! The KEK comes from, in priority order: command-line flags, the configuration
//! (`keys.keyring_passphrase_file`, `keys.keyring_kek_file`), the environment
//! (`FIELDSEAL_KEYRING_PASSPHRASE`, `FIELDSEAL_KEYRING_KEK`). Its value is only read when a
//! file is wrapped (or is being wrapped). Its presence is a promise: wherever any of these
//! sources is set, a plain keyring is refused ([`KekSource::expects_wrapped`]) — otherwise
//! whoever can replace the keyring file could swap in a plain one with keys of their choosing.
//! The one exception is `keys rewrap-keyring`, whose job is to change the wrapping
//! ([`KekSource::plain_allowed_from_env`]).

use std::fmt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::Nonce;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::keyring::ZeroizingAesGcm;
use crate::secret_file;

/// Additional authenticated data of the wrapping cipher.
pub const AAD: &[u8] = b"fieldseal-keyring-v1";
/// Length of a KEK (AES-256).
pub const KEK_LEN: usize = 32;
/// The only format version.
pub const VERSION: u32 = 1;
/// Shortest passphrase accepted when wrapping (not checked when unwrapping).
pub const MIN_PASSPHRASE_CHARS: usize = 12;
/// Salt length written (readers accept [`MIN_SALT_LEN`]..=[`MAX_SALT_LEN`]).
pub const SALT_LEN: usize = 16;
pub const MIN_SALT_LEN: usize = 8;
pub const MAX_SALT_LEN: usize = 64;
/// AES-GCM nonce length.
pub const NONCE_LEN: usize = 12;

/// Environment variables of the KEK (lowest priority).
pub const ENV_PASSPHRASE: &str = "FIELDSEAL_KEYRING_PASSPHRASE";
pub const ENV_KEK: &str = "FIELDSEAL_KEYRING_KEK";
/// Environment variables of the new KEK for `keys rewrap-keyring`.
pub const ENV_NEW_PASSPHRASE: &str = "FIELDSEAL_NEW_KEYRING_PASSPHRASE";
pub const ENV_NEW_KEK: &str = "FIELDSEAL_NEW_KEYRING_KEK";

/// Argon2id costs. Written as [`Argon2Params::DEFAULT`]; bounded on read so that a hostile file
/// cannot make the proxy allocate gigabytes or spin for minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes over the memory.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Argon2Params {
    /// What the CLI writes: 64 MiB, 3 passes, 1 lane (RFC 9106's second recommended option).
    pub const DEFAULT: Self = Self {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
    /// Largest accepted memory cost: 1 GiB.
    pub const MAX_M_COST_KIB: u32 = 1024 * 1024;
    pub const MAX_T_COST: u32 = 10;
    pub const MAX_P_COST: u32 = 16;

    /// Cheap costs for unit tests only (the CLI always writes [`Argon2Params::DEFAULT`]).
    #[cfg(test)]
    pub(crate) const TEST: Self = Self {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    /// Refuses costs outside the accepted bounds.
    pub fn validate(&self) -> Result<(), String> {
        let Self {
            m_cost_kib,
            t_cost,
            p_cost,
        } = *self;
        if !(1..=Self::MAX_P_COST).contains(&p_cost) {
            return Err(format!(
                "p_cost {p_cost} is outside 1..={}",
                Self::MAX_P_COST
            ));
        }
        if !(1..=Self::MAX_T_COST).contains(&t_cost) {
            return Err(format!(
                "t_cost {t_cost} is outside 1..={}",
                Self::MAX_T_COST
            ));
        }
        let min_m = 8 * p_cost;
        if !(min_m..=Self::MAX_M_COST_KIB).contains(&m_cost_kib) {
            return Err(format!(
                "m_cost_kib {m_cost_kib} is outside {min_m}..={} (1 GiB)",
                Self::MAX_M_COST_KIB
            ));
        }
        Ok(())
    }

    /// Derives a 32-byte KEK from `passphrase` and `salt`. The working memory is zeroized.
    fn derive(&self, passphrase: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; KEK_LEN]>, String> {
        self.validate()?;
        let params = argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(KEK_LEN))
            .map_err(|e| format!("invalid Argon2 parameters: {e}"))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut blocks = vec![argon2::Block::default(); argon.params().block_count()];
        let mut out = Zeroizing::new([0u8; KEK_LEN]);
        let result =
            argon.hash_password_into_with_memory(passphrase, salt, &mut out[..], &mut blocks);
        for block in &mut blocks {
            block.as_mut().zeroize();
        }
        result.map_err(|e| format!("Argon2id failed: {e}"))?;
        Ok(out)
    }
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self::DEFAULT
    }
}

enum Secret {
    Passphrase(Zeroizing<String>),
    Raw(Zeroizing<[u8; KEK_LEN]>),
}

/// A key-encryption key: a passphrase (stretched with Argon2id) or 32 raw bytes. Never printed.
pub struct Kek {
    secret: Secret,
    /// Where it came from, for messages: `--passphrase-file /run/pw`, `FIELDSEAL_KEYRING_KEK`.
    origin: String,
    /// Costs used when this passphrase wraps a keyring.
    params: Argon2Params,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("kind", &self.kind())
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Kek {
    pub fn passphrase(passphrase: Zeroizing<String>, origin: impl Into<String>) -> Self {
        Self {
            secret: Secret::Passphrase(passphrase),
            origin: origin.into(),
            params: Argon2Params::DEFAULT,
        }
    }

    pub fn raw(key: Zeroizing<[u8; KEK_LEN]>, origin: impl Into<String>) -> Self {
        Self {
            secret: Secret::Raw(key),
            origin: origin.into(),
            params: Argon2Params::DEFAULT,
        }
    }

    /// Where the KEK came from (a flag, a config key or an environment variable; never the value).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `passphrase` or `raw KEK`.
    pub fn kind(&self) -> &'static str {
        match self.secret {
            Secret::Passphrase(_) => "passphrase",
            Secret::Raw(_) => "raw KEK",
        }
    }

    pub fn is_passphrase(&self) -> bool {
        matches!(self.secret, Secret::Passphrase(_))
    }

    /// Argon2id costs for wrapping with this passphrase (tests use cheap ones; the CLI never
    /// changes the default).
    #[cfg(test)]
    pub(crate) fn with_params(mut self, params: Argon2Params) -> Self {
        self.params = params;
        self
    }

    /// Whether this KEK may wrap a keyring: passphrases need [`MIN_PASSPHRASE_CHARS`].
    pub fn check_for_wrapping(&self) -> Result<(), String> {
        match &self.secret {
            Secret::Passphrase(p) if p.chars().count() < MIN_PASSPHRASE_CHARS => Err(format!(
                "the passphrase from {} is too short to wrap a keyring: use at least {MIN_PASSPHRASE_CHARS} characters (a random one, e.g. `openssl rand -base64 24`)",
                self.origin
            )),
            _ => Ok(()),
        }
    }
}

/// The `"wrapped"` object as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wrapped {
    pub version: u32,
    pub kdf: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m_cost_kib: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_cost: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_cost: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    pub nonce: String,
    pub ciphertext: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WrappedDoc {
    wrapped: Wrapped,
}

/// How a wrapped file derives its KEK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    Argon2id(Argon2Params),
    None,
}

impl Wrapped {
    /// The KDF and its validated parameters.
    pub fn kdf(&self) -> Result<Kdf, String> {
        if self.version != VERSION {
            return Err(format!(
                "wrapped.version {} is not supported (this build reads version {VERSION})",
                self.version
            ));
        }
        match self.kdf.as_str() {
            "argon2id" => {
                let (Some(m_cost_kib), Some(t_cost), Some(p_cost), Some(_)) =
                    (self.m_cost_kib, self.t_cost, self.p_cost, &self.salt)
                else {
                    return Err(
                        "wrapped.kdf argon2id needs m_cost_kib, t_cost, p_cost and salt".into(),
                    );
                };
                let params = Argon2Params {
                    m_cost_kib,
                    t_cost,
                    p_cost,
                };
                params
                    .validate()
                    .map_err(|m| format!("wrapped Argon2id parameters refused: {m}"))?;
                Ok(Kdf::Argon2id(params))
            }
            "none" => {
                if self.m_cost_kib.is_some()
                    || self.t_cost.is_some()
                    || self.p_cost.is_some()
                    || self.salt.is_some()
                {
                    return Err("wrapped.kdf none takes no salt or cost fields".into());
                }
                Ok(Kdf::None)
            }
            _ => Err("wrapped.kdf must be `argon2id` or `none`".into()),
        }
    }
}

/// Whether `text` is a wrapped keyring: `Some` with the parsed header, `None` for anything else
/// (a plain keyring, or text the plain parser will explain). Nothing secret is copied: the members
/// of a plain keyring are skipped, not built.
pub fn parse(text: &str) -> Result<Option<Wrapped>, String> {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow, default)]
        wrapped: Option<&'a serde_json::value::RawValue>,
    }
    match serde_json::from_str::<Probe>(text) {
        Ok(Probe { wrapped: Some(_) }) => serde_json::from_str::<WrappedDoc>(text)
            .map(|d| Some(d.wrapped))
            .map_err(|e| format!("is not a valid wrapped keyring: {e}")),
        _ => Ok(None),
    }
}

fn decode(
    field: &str,
    text: &str,
    len: std::ops::RangeInclusive<usize>,
) -> Result<Vec<u8>, String> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|_| format!("wrapped.{field} is not standard base64"))?;
    if !len.contains(&bytes.len()) {
        return Err(if len.start() == len.end() {
            format!(
                "wrapped.{field} must be {} bytes, found {}",
                len.start(),
                bytes.len()
            )
        } else {
            format!(
                "wrapped.{field} must be {}-{} bytes, found {}",
                len.start(),
                len.end(),
                bytes.len()
            )
        });
    }
    Ok(bytes)
}

/// The message for a failed authentication: wrong KEK, or a modified file — indistinguishable.
pub fn unwrap_failed(path: &Path) -> String {
    format!(
        "cannot unwrap {}: wrong passphrase/KEK, or the file was modified",
        path.display()
    )
}

/// Opens a wrapped keyring: returns the plain keyring JSON bytes.
pub fn open(wrapped: &Wrapped, kek: &Kek, path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let kdf = wrapped
        .kdf()
        .map_err(|m| format!("{}: {m}", path.display()))?;
    let nonce = decode("nonce", &wrapped.nonce, NONCE_LEN..=NONCE_LEN)
        .map_err(|m| format!("{}: {m}", path.display()))?;
    let ciphertext = STANDARD.decode(&wrapped.ciphertext).map_err(|_| {
        format!(
            "{}: wrapped.ciphertext is not standard base64",
            path.display()
        )
    })?;
    let key = match (kdf, &kek.secret) {
        (Kdf::Argon2id(params), Secret::Passphrase(p)) => {
            let salt = decode(
                "salt",
                wrapped.salt.as_deref().unwrap_or_default(),
                MIN_SALT_LEN..=MAX_SALT_LEN,
            )
            .map_err(|m| format!("{}: {m}", path.display()))?;
            params.derive(p.as_bytes(), &salt)?
        }
        (Kdf::None, Secret::Raw(k)) => k.clone(),
        (Kdf::Argon2id(_), Secret::Raw(_)) => {
            return Err(format!(
                "{} is wrapped with a passphrase (kdf argon2id), but {} supplies a raw KEK",
                path.display(),
                kek.origin
            ))
        }
        (Kdf::None, Secret::Passphrase(_)) => {
            return Err(format!(
                "{} is wrapped with a raw KEK (kdf none), but {} supplies a passphrase",
                path.display(),
                kek.origin
            ))
        }
    };
    // Zeroized on drop, key schedule and GHASH key alike.
    let cipher = ZeroizingAesGcm::new(&key);
    cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &ciphertext,
                aad: AAD,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| unwrap_failed(path))
}

/// Seals the plain keyring JSON `plain` with `kek` (fresh salt and nonce): the file's bytes.
pub fn seal(plain: &[u8], kek: &Kek) -> Result<Vec<u8>, String> {
    kek.check_for_wrapping()?;
    let random = |n: usize| -> Result<Vec<u8>, String> {
        let mut bytes = vec![0u8; n];
        getrandom::fill(&mut bytes).map_err(|e| format!("the OS random source failed: {e}"))?;
        Ok(bytes)
    };
    let nonce = random(NONCE_LEN)?;
    let (key, header) = match &kek.secret {
        Secret::Passphrase(p) => {
            let salt = random(SALT_LEN)?;
            let key = kek.params.derive(p.as_bytes(), &salt)?;
            (
                key,
                Wrapped {
                    version: VERSION,
                    kdf: "argon2id".into(),
                    m_cost_kib: Some(kek.params.m_cost_kib),
                    t_cost: Some(kek.params.t_cost),
                    p_cost: Some(kek.params.p_cost),
                    salt: Some(STANDARD.encode(&salt)),
                    nonce: String::new(),
                    ciphertext: String::new(),
                },
            )
        }
        Secret::Raw(k) => (
            k.clone(),
            Wrapped {
                version: VERSION,
                kdf: "none".into(),
                m_cost_kib: None,
                t_cost: None,
                p_cost: None,
                salt: None,
                nonce: String::new(),
                ciphertext: String::new(),
            },
        ),
    };
    // Zeroized on drop, key schedule and GHASH key alike.
    let cipher = ZeroizingAesGcm::new(&key);
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: AAD,
            },
        )
        .map_err(|_| "AES-GCM refused to seal the keyring".to_string())?;
    let doc = WrappedDoc {
        wrapped: Wrapped {
            nonce: STANDARD.encode(&nonce),
            ciphertext: STANDARD.encode(&ciphertext),
            ..header
        },
    };
    let mut bytes = serde_json::to_vec_pretty(&doc).expect("a wrapped keyring serialises");
    bytes.push(b'\n');
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------------
// Where the KEK comes from

#[derive(Debug, Clone)]
enum Origin {
    /// A file; `setting` is the flag or config key that named it.
    File {
        path: PathBuf,
        setting: &'static str,
    },
    Env(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, setting } => write!(f, "{setting} {}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// One priority level: a passphrase or a raw KEK (both at once is ambiguous).
#[derive(Debug, Clone, Default)]
struct Level {
    passphrase: Option<Origin>,
    kek: Option<Origin>,
}

/// The places a KEK may come from, highest priority first. Resolved only when needed.
#[derive(Debug, Clone, Default)]
pub struct KekSource {
    levels: Vec<Level>,
    /// How to supply a KEK, for the error when none is available.
    hint: String,
    /// Whether a KEK variable present in the environment demands a wrapped keyring (files
    /// named by a flag or the configuration always do).
    env_demands_wrapping: bool,
}

/// Reads the process environment; empty values count as unset.
fn process_env(name: &str) -> Option<Zeroizing<String>> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(|v| Zeroizing::new(v.to_string_lossy().into_owned()))
}

fn file_level(
    passphrase: Option<PathBuf>,
    kek: Option<PathBuf>,
    names: (&'static str, &'static str),
) -> Level {
    Level {
        passphrase: passphrase.map(|path| Origin::File {
            path,
            setting: names.0,
        }),
        kek: kek.map(|path| Origin::File {
            path,
            setting: names.1,
        }),
    }
}

fn env_level(names: (&'static str, &'static str)) -> Level {
    Level {
        passphrase: Some(Origin::Env(names.0)),
        kek: Some(Origin::Env(names.1)),
    }
}

impl KekSource {
    /// No source: wrapped keyrings cannot be opened.
    pub fn none() -> Self {
        Self::default()
    }

    /// The proxy: `keys.keyring_passphrase_file` / `keys.keyring_kek_file`, then the environment.
    pub fn for_config(passphrase_file: Option<PathBuf>, kek_file: Option<PathBuf>) -> Self {
        Self {
            levels: vec![
                file_level(
                    passphrase_file,
                    kek_file,
                    ("keys.keyring_passphrase_file", "keys.keyring_kek_file"),
                ),
                env_level((ENV_PASSPHRASE, ENV_KEK)),
            ],
            hint: format!(
                "set keys.keyring_passphrase_file or keys.keyring_kek_file in the configuration, or the environment variable {ENV_PASSPHRASE} (a passphrase) or {ENV_KEK} (standard base64 of 32 bytes)"
            ),
            env_demands_wrapping: true,
        }
    }

    /// The command line: `--passphrase-file` / `--kek-file`, then the environment.
    pub fn for_cli(passphrase_file: Option<PathBuf>, kek_file: Option<PathBuf>) -> Self {
        Self {
            levels: vec![
                file_level(passphrase_file, kek_file, ("--passphrase-file", "--kek-file")),
                env_level((ENV_PASSPHRASE, ENV_KEK)),
            ],
            hint: format!(
                "pass --passphrase-file FILE or --kek-file FILE, or set the environment variable {ENV_PASSPHRASE} (a passphrase) or {ENV_KEK} (standard base64 of 32 bytes); a proxy reads keys.keyring_passphrase_file or keys.keyring_kek_file from its configuration"
            ),
            env_demands_wrapping: true,
        }
    }

    /// Only the environment (`seal`, `open`, `rewrap`, tests).
    pub fn from_env() -> Self {
        Self::for_cli(None, None)
    }

    /// A KEK variable in the environment no longer makes a plain keyring an error (flags and
    /// configuration keys still do). For `keys rewrap-keyring`, which exists to wrap plain
    /// keyrings (and to say "already plain" to `--unwrap`), and may well run in a shell that
    /// exports the old KEK.
    pub fn plain_allowed_from_env(mut self) -> Self {
        self.env_demands_wrapping = false;
        self
    }

    /// The new KEK of `keys rewrap-keyring`: `--new-passphrase-file` / `--new-kek-file`, then
    /// `FIELDSEAL_NEW_KEYRING_PASSPHRASE` / `FIELDSEAL_NEW_KEYRING_KEK`.
    pub fn for_cli_new(passphrase_file: Option<PathBuf>, kek_file: Option<PathBuf>) -> Self {
        Self {
            levels: vec![
                file_level(
                    passphrase_file,
                    kek_file,
                    ("--new-passphrase-file", "--new-kek-file"),
                ),
                env_level((ENV_NEW_PASSPHRASE, ENV_NEW_KEK)),
            ],
            hint: format!(
                "pass --new-passphrase-file FILE or --new-kek-file FILE, or set {ENV_NEW_PASSPHRASE} or {ENV_NEW_KEK}; or --unwrap to store the keyring unwrapped"
            ),
            // Only ever used to wrap, never to read a keyring.
            env_demands_wrapping: false,
        }
    }

    /// How to supply a KEK (for "no KEK available" errors).
    pub fn hint(&self) -> &str {
        &self.hint
    }

    /// The source that says the keyring is wrapped, if any, highest priority first: a file named
    /// by a flag or configuration key (`keys.keyring_passphrase_file`), or — unless
    /// [`KekSource::plain_allowed_from_env`] — a KEK variable present in the environment
    /// (`environment variable FIELDSEAL_KEYRING_KEK`). A plain keyring is then refused:
    /// otherwise whoever can replace the file could swap in keys they know. Names the source,
    /// never its value.
    pub fn expects_wrapped(&self) -> Option<String> {
        self.expects_wrapped_with(&process_env)
    }

    /// [`KekSource::expects_wrapped`] with an injected environment (tests).
    pub fn expects_wrapped_with(
        &self,
        env: &dyn Fn(&str) -> Option<Zeroizing<String>>,
    ) -> Option<String> {
        self.levels
            .iter()
            .flat_map(|l| [&l.passphrase, &l.kek])
            .flatten()
            .find(|o| match o {
                Origin::File { .. } => true,
                Origin::Env(name) => self.env_demands_wrapping && env(name).is_some(),
            })
            .map(|o| match o {
                Origin::File { setting, .. } => (*setting).to_string(),
                Origin::Env(_) => o.to_string(),
            })
    }

    /// The KEK of the highest-priority source that is present, or `None` when none is.
    pub fn resolve(&self) -> Result<Option<Kek>, String> {
        self.resolve_with(&process_env)
    }

    /// [`KekSource::resolve`] with an injected environment (tests).
    pub fn resolve_with(
        &self,
        env: &dyn Fn(&str) -> Option<Zeroizing<String>>,
    ) -> Result<Option<Kek>, String> {
        for level in &self.levels {
            let present = |o: &Option<Origin>| match o {
                Some(Origin::File { .. }) => true,
                Some(Origin::Env(name)) => env(name).is_some(),
                None => false,
            };
            match (present(&level.passphrase), present(&level.kek)) {
                (false, false) => continue,
                (true, true) => {
                    return Err(format!(
                        "both {} and {} are set; give a passphrase or a KEK, not both",
                        level.passphrase.as_ref().expect("present"),
                        level.kek.as_ref().expect("present")
                    ))
                }
                (true, false) => {
                    let origin = level.passphrase.as_ref().expect("present");
                    return read_passphrase(origin, env).map(Some);
                }
                (false, true) => {
                    let origin = level.kek.as_ref().expect("present");
                    return read_kek(origin, env).map(Some);
                }
            }
        }
        Ok(None)
    }
}

/// Reads a passphrase or KEK file, refusing one that [`secret_file`] refuses (others can read
/// it, the group or others can write it, another user owns it).
fn read_secret_file(path: &Path, setting: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    secret_file::read(path)
        .map(|(bytes, _)| bytes)
        .map_err(|m| format!("{setting}: {m}"))
}

fn trim_newlines(text: &mut Zeroizing<String>) {
    let len = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(len);
}

fn read_passphrase(
    origin: &Origin,
    env: &dyn Fn(&str) -> Option<Zeroizing<String>>,
) -> Result<Kek, String> {
    let mut text = match origin {
        Origin::Env(name) => env(name).expect("present"),
        Origin::File { path, setting } => {
            let mut bytes = read_secret_file(path, setting)?;
            let taken = std::mem::take(&mut *bytes);
            match String::from_utf8(taken) {
                Ok(s) => Zeroizing::new(s),
                Err(e) => {
                    // Zeroize the bytes the error hands back.
                    let _ = Zeroizing::new(e.into_bytes());
                    return Err(format!("{origin}: the passphrase is not UTF-8 text"));
                }
            }
        }
    };
    trim_newlines(&mut text);
    if text.is_empty() {
        return Err(format!("{origin}: the passphrase is empty"));
    }
    Ok(Kek::passphrase(text, origin.to_string()))
}

/// Decodes standard base64 of exactly 32 bytes without echoing the input in errors.
fn kek_from_base64(text: &str, origin: &Origin) -> Result<Zeroizing<[u8; KEK_LEN]>, String> {
    let bytes = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| {
        format!("{origin}: a KEK must be standard base64 of {KEK_LEN} bytes (e.g. `openssl rand -base64 32`)")
    })?);
    let mut key = Zeroizing::new([0u8; KEK_LEN]);
    if bytes.len() != KEK_LEN {
        return Err(format!(
            "{origin}: a KEK must be {KEK_LEN} bytes, found {}",
            bytes.len()
        ));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

fn read_kek(
    origin: &Origin,
    env: &dyn Fn(&str) -> Option<Zeroizing<String>>,
) -> Result<Kek, String> {
    let key = match origin {
        Origin::Env(name) => kek_from_base64(&env(name).expect("present"), origin)?,
        Origin::File { path, setting } => {
            let bytes = read_secret_file(path, setting)?;
            if bytes.len() == KEK_LEN {
                // 32 raw bytes.
                let mut key = Zeroizing::new([0u8; KEK_LEN]);
                key.copy_from_slice(&bytes);
                key
            } else {
                let text = std::str::from_utf8(&bytes).map_err(|_| {
                    format!(
                        "{origin}: a KEK file holds 32 raw bytes or standard base64 of 32 bytes"
                    )
                })?;
                kek_from_base64(text, origin)?
            }
        }
    };
    Ok(Kek::raw(key, origin.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::{Aes256Gcm, KeyInit};

    fn pass(p: &str) -> Kek {
        Kek::passphrase(Zeroizing::new(p.into()), "test").with_params(Argon2Params::TEST)
    }

    fn raw(b: u8) -> Kek {
        Kek::raw(Zeroizing::new([b; KEK_LEN]), "test")
    }

    const PLAIN: &[u8] = br#"{"primary":"k1","keys":[]}"#;

    fn parsed(bytes: &[u8]) -> Wrapped {
        parse(std::str::from_utf8(bytes).unwrap()).unwrap().unwrap()
    }

    #[test]
    fn passphrase_round_trip_and_fresh_salt_and_nonce() {
        let kek = pass("correct horse battery staple");
        let a = seal(PLAIN, &kek).unwrap();
        let b = seal(PLAIN, &kek).unwrap();
        let (wa, wb) = (parsed(&a), parsed(&b));
        assert_ne!(wa.salt, wb.salt);
        assert_ne!(wa.nonce, wb.nonce);
        assert_eq!(wa.kdf, "argon2id");
        assert_eq!(
            (wa.m_cost_kib, wa.t_cost, wa.p_cost),
            (Some(64), Some(1), Some(1))
        );
        assert_eq!(
            STANDARD.decode(wa.salt.as_ref().unwrap()).unwrap().len(),
            SALT_LEN
        );
        let path = Path::new("ring.json");
        assert_eq!(&open(&wa, &kek, path).unwrap()[..], PLAIN);
        assert_eq!(&open(&wb, &kek, path).unwrap()[..], PLAIN);
        // Ciphertext = plaintext + 16-byte tag.
        assert_eq!(
            STANDARD.decode(&wa.ciphertext).unwrap().len(),
            PLAIN.len() + 16
        );
    }

    #[test]
    fn wrong_passphrase_is_one_message() {
        let sealed = parsed(&seal(PLAIN, &pass("correct horse battery staple")).unwrap());
        let err = open(
            &sealed,
            &pass("correct horse battery stapler"),
            Path::new("/x/ring.json"),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "cannot unwrap /x/ring.json: wrong passphrase/KEK, or the file was modified"
        );
        assert!(!err.contains("staple"));
    }

    #[test]
    fn raw_kek_round_trip_and_wrong_kek() {
        let sealed = seal(PLAIN, &raw(1)).unwrap();
        let w = parsed(&sealed);
        assert_eq!(w.kdf, "none");
        assert!(w.salt.is_none() && w.m_cost_kib.is_none());
        let text = String::from_utf8(sealed).unwrap();
        assert!(!text.contains("salt") && !text.contains("cost"), "{text}");
        assert_eq!(&open(&w, &raw(1), Path::new("r")).unwrap()[..], PLAIN);
        assert_eq!(
            open(&w, &raw(2), Path::new("r")).unwrap_err(),
            unwrap_failed(Path::new("r"))
        );
        // A passphrase cannot open a raw-KEK file, and the other way round: a clear mismatch.
        let err = open(&w, &pass("correct horse battery staple"), Path::new("r")).unwrap_err();
        assert!(err.contains("wrapped with a raw KEK"), "{err}");
        let pw = parsed(&seal(PLAIN, &pass("correct horse battery staple")).unwrap());
        let err = open(&pw, &raw(1), Path::new("r")).unwrap_err();
        assert!(err.contains("wrapped with a passphrase"), "{err}");
    }

    #[test]
    fn tampering_fails_authentication() {
        let kek = pass("correct horse battery staple");
        let good = parsed(&seal(PLAIN, &kek).unwrap());
        let path = Path::new("r");
        let flip = |b64: &str| {
            let mut bytes = STANDARD.decode(b64).unwrap();
            bytes[0] ^= 1;
            STANDARD.encode(bytes)
        };
        let mut ct = good.clone();
        ct.ciphertext = flip(&good.ciphertext);
        let mut nonce = good.clone();
        nonce.nonce = flip(&good.nonce);
        let mut salt = good.clone();
        salt.salt = Some(flip(good.salt.as_ref().unwrap()));
        let mut t = good.clone();
        t.t_cost = Some(2);
        let mut m = good.clone();
        m.m_cost_kib = Some(128);
        for (what, w) in [
            ("ciphertext", ct),
            ("nonce", nonce),
            ("salt", salt),
            ("t_cost", t),
            ("m_cost", m),
        ] {
            assert_eq!(
                open(&w, &kek, path).unwrap_err(),
                unwrap_failed(path),
                "{what}"
            );
        }
        // Another AAD: sealed by hand with the same derived key, it does not open.
        let salt = STANDARD.decode(good.salt.as_ref().unwrap()).unwrap();
        let key = Argon2Params::TEST
            .derive(b"correct horse battery staple", &salt)
            .unwrap();
        let nonce = STANDARD.decode(&good.nonce).unwrap();
        let other = Aes256Gcm::new_from_slice(&key[..])
            .unwrap()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: PLAIN,
                    aad: b"fieldseal-keyring-v2",
                },
            )
            .unwrap();
        let mut aad = good.clone();
        aad.ciphertext = STANDARD.encode(other);
        assert_eq!(open(&aad, &kek, path).unwrap_err(), unwrap_failed(path));
        // And with the right AAD it does: the check above is about the AAD alone.
        let right = Aes256Gcm::new_from_slice(&key[..])
            .unwrap()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: PLAIN,
                    aad: AAD,
                },
            )
            .unwrap();
        aad.ciphertext = STANDARD.encode(right);
        assert_eq!(&open(&aad, &kek, path).unwrap()[..], PLAIN);
    }

    #[test]
    fn hostile_parameters_are_refused_before_any_work() {
        let kek = pass("correct horse battery staple");
        let good = parsed(&seal(PLAIN, &kek).unwrap());
        type Mutation = fn(&mut Wrapped);
        let cases: [(&str, Mutation); 9] = [
            ("m_cost_kib", |w| w.m_cost_kib = Some(4 * 1024 * 1024)),
            ("m_cost_kib", |w| w.m_cost_kib = Some(u32::MAX)),
            ("m_cost_kib", |w| w.m_cost_kib = Some(4)),
            ("t_cost", |w| w.t_cost = Some(11)),
            ("t_cost", |w| w.t_cost = Some(0)),
            ("p_cost", |w| w.p_cost = Some(1000)),
            ("version", |w| w.version = 2),
            ("argon2id needs", |w| w.salt = None),
            ("kdf must be", |w| w.kdf = "scrypt".into()),
        ];
        for (needle, mutate) in cases {
            let mut w = good.clone();
            mutate(&mut w);
            let err = open(&w, &kek, Path::new("r")).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let mut short_salt = good.clone();
        short_salt.salt = Some(STANDARD.encode([0u8; 4]));
        let err = open(&short_salt, &kek, Path::new("r")).unwrap_err();
        assert!(err.contains("salt must be 8-64 bytes"), "{err}");
        let mut none_with_salt = good.clone();
        none_with_salt.kdf = "none".into();
        let err = open(&none_with_salt, &raw(1), Path::new("r")).unwrap_err();
        assert!(err.contains("no salt or cost"), "{err}");
        assert_eq!(Argon2Params::DEFAULT.validate(), Ok(()));
        assert!(Argon2Params {
            m_cost_kib: Argon2Params::MAX_M_COST_KIB,
            t_cost: 10,
            p_cost: 16
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn parse_tells_wrapped_from_plain() {
        assert!(
            parse(r#"{"primary":"k1","keys":[{"id":"k1","secret":"x"}]}"#)
                .unwrap()
                .is_none()
        );
        assert!(parse("not json").unwrap().is_none());
        let err = parse(r#"{"wrapped":{"version":1},"primary":"k1"}"#).unwrap_err();
        assert!(err.contains("not a valid wrapped keyring"), "{err}");
        let err =
            parse(r#"{"wrapped":{"version":1,"kdf":"none","nonce":"","ciphertext":"","extra":1}}"#)
                .unwrap_err();
        assert!(err.contains("extra"), "{err}");
    }

    #[test]
    fn short_passphrases_cannot_wrap_but_anything_unwraps() {
        let err = seal(PLAIN, &pass("short")).unwrap_err();
        assert!(
            err.contains("at least 12 characters") && !err.contains("short\""),
            "{err}"
        );
        // Twelve characters (not bytes) is enough.
        assert!(seal(PLAIN, &pass("ééééééééééé€")).is_ok());
    }

    fn env_of(
        pairs: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<Zeroizing<String>> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| Zeroizing::new(v.to_string()))
        }
    }

    fn private_file(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
        let path = dir.join(name);
        secret_file::write_private(&path, contents).unwrap();
        path
    }

    #[test]
    fn sources_in_priority_order() {
        let dir = tempfile::tempdir().unwrap();
        let pw = private_file(dir.path(), "pw", b"from the file, long enough\n");
        let kek_b64 = STANDARD.encode([5u8; 32]);
        let kek_file = private_file(dir.path(), "kek", format!("{kek_b64}\n").as_bytes());
        let kek_bin = private_file(dir.path(), "kek.bin", &[6u8; 32]);
        const ENV: &[(&str, &str)] = &[
            (ENV_PASSPHRASE, "from the environment"),
            (ENV_NEW_KEK, "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="),
        ];
        let env = env_of(ENV);

        // Flags/config first.
        let kek = KekSource::for_cli(Some(pw.clone()), None)
            .resolve_with(&env)
            .unwrap()
            .unwrap();
        assert!(kek.is_passphrase());
        assert_eq!(kek.origin(), format!("--passphrase-file {}", pw.display()));
        let Secret::Passphrase(p) = &kek.secret else {
            panic!()
        };
        assert_eq!(p.as_str(), "from the file, long enough");

        let kek = KekSource::for_config(None, Some(kek_file.clone()))
            .resolve_with(&env)
            .unwrap()
            .unwrap();
        let Secret::Raw(k) = &kek.secret else {
            panic!()
        };
        assert_eq!(**k, [5u8; 32]);
        assert!(kek.origin().starts_with("keys.keyring_kek_file "));
        let kek = KekSource::for_cli(None, Some(kek_bin))
            .resolve_with(&env)
            .unwrap()
            .unwrap();
        let Secret::Raw(k) = &kek.secret else {
            panic!()
        };
        assert_eq!(**k, [6u8; 32]);

        // Then the environment.
        let kek = KekSource::from_env().resolve_with(&env).unwrap().unwrap();
        assert_eq!(
            kek.origin(),
            "environment variable FIELDSEAL_KEYRING_PASSPHRASE"
        );
        let kek = KekSource::for_cli_new(None, None)
            .resolve_with(&env)
            .unwrap()
            .unwrap();
        let Secret::Raw(k) = &kek.secret else {
            panic!()
        };
        assert_eq!(**k, [7u8; 32]);

        // Nothing at all.
        assert!(KekSource::from_env()
            .resolve_with(&|_| None)
            .unwrap()
            .is_none());
        assert!(KekSource::none().resolve_with(&env).unwrap().is_none());

        // Both at one level is ambiguous.
        let err = KekSource::for_config(Some(pw), Some(kek_file))
            .resolve_with(&env)
            .unwrap_err();
        assert!(err.contains("not both"), "{err}");
        const BOTH: &[(&str, &str)] = &[(ENV_PASSPHRASE, "a"), (ENV_KEK, "b")];
        assert!(KekSource::from_env().resolve_with(&env_of(BOTH)).is_err());
    }

    #[test]
    fn bad_sources_are_explained_without_echoing_them() {
        let dir = tempfile::tempdir().unwrap();
        const ENV: &[(&str, &str)] = &[(ENV_KEK, "c2VjcmV0LXNlY3JldA==")];
        let err = KekSource::from_env()
            .resolve_with(&env_of(ENV))
            .unwrap_err();
        assert!(err.contains("must be 32 bytes, found 13"), "{err}");
        const ENV2: &[(&str, &str)] = &[(ENV_KEK, "not%base64%secret")];
        let err = KekSource::from_env()
            .resolve_with(&env_of(ENV2))
            .unwrap_err();
        assert!(!err.contains("not%base64"), "{err}");
        assert!(err.contains("standard base64"), "{err}");

        let open_file = dir.path().join("pw");
        std::fs::write(&open_file, "a passphrase anyone reads").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&open_file, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = KekSource::for_cli(Some(open_file.clone()), None)
                .resolve_with(&|_| None)
                .unwrap_err();
            assert!(
                err.contains("--passphrase-file") && err.contains("chmod 600"),
                "{err}"
            );
        }
        let missing = dir.path().join("missing");
        let err = KekSource::for_config(None, Some(missing))
            .resolve_with(&|_| None)
            .unwrap_err();
        assert!(err.contains("keys.keyring_kek_file"), "{err}");
        let empty = private_file(dir.path(), "empty", b"\n");
        let err = KekSource::for_cli(Some(empty), None)
            .resolve_with(&|_| None)
            .unwrap_err();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn debug_shows_no_secret() {
        let kek = Kek::passphrase(Zeroizing::new("hunter2hunter2".into()), "env");
        let text = format!("{kek:?}");
        assert!(
            text.contains("passphrase") && !text.contains("hunter2"),
            "{text}"
        );
    }
}
