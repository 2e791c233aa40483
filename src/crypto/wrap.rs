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
//! (`keys.keyring_passphrase_file`, `keys.keyring_kek_file`, `keys.keyring_kek_command`), the
//! environment (`FIELDSEAL_KEYRING_PASSPHRASE`, `FIELDSEAL_KEYRING_KEK`,
//! `FIELDSEAL_KEYRING_KEK_COMMAND`). A command prints a raw KEK, typically one a KMS unwraps
//! ([`super::kek_command`]). Its value is only read when a
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

use super::kek_command::{self, KekCommand, Limits};
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
/// A command that prints the raw KEK: a JSON array of strings ([`kek_command::JSON_FORM`]).
pub const ENV_KEK_COMMAND: &str = "FIELDSEAL_KEYRING_KEK_COMMAND";
/// Environment variables of the new KEK for `keys rewrap-keyring`.
pub const ENV_NEW_PASSPHRASE: &str = "FIELDSEAL_NEW_KEYRING_PASSPHRASE";
pub const ENV_NEW_KEK: &str = "FIELDSEAL_NEW_KEYRING_KEK";
pub const ENV_NEW_KEK_COMMAND: &str = "FIELDSEAL_NEW_KEYRING_KEK_COMMAND";

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
    /// Printed by a command (`keys.keyring_kek_command` and the like).
    from_command: bool,
    /// Taken from the in-memory cache of a command's KEK rather than a run of the command.
    cached: bool,
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
            from_command: false,
            cached: false,
        }
    }

    pub fn raw(key: Zeroizing<[u8; KEK_LEN]>, origin: impl Into<String>) -> Self {
        Self {
            secret: Secret::Raw(key),
            origin: origin.into(),
            params: Argon2Params::DEFAULT,
            from_command: false,
            cached: false,
        }
    }

    /// Whether a command printed this KEK (or printed it earlier, for a cached one).
    pub fn from_command(&self) -> bool {
        self.from_command
    }

    /// Whether this KEK came from the in-memory cache instead of a run of its command.
    pub fn is_cached(&self) -> bool {
        self.cached
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
    /// An environment variable holding the passphrase or the KEK itself.
    Env(&'static str),
    /// A command named by a flag or config key (`setting`).
    Command {
        command: KekCommand,
        setting: &'static str,
    },
    /// An environment variable holding a command (a JSON array), parsed when used.
    EnvCommand(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, setting } => write!(f, "{setting} {}", path.display()),
            Origin::Env(name) | Origin::EnvCommand(name) => {
                write!(f, "environment variable {name}")
            }
            Origin::Command { setting, .. } => f.write_str(setting),
        }
    }
}

impl Origin {
    fn present(&self, env: &dyn Fn(&str) -> Option<Zeroizing<String>>) -> bool {
        match self {
            Origin::File { .. } | Origin::Command { .. } => true,
            Origin::Env(name) | Origin::EnvCommand(name) => env(name).is_some(),
        }
    }

    /// Set by a flag or configuration key (which always demands a wrapped keyring), not by
    /// the environment.
    fn is_explicit(&self) -> bool {
        matches!(self, Origin::File { .. } | Origin::Command { .. })
    }

    /// How [`KekSource::expects_wrapped`] names it: the setting alone for flags and keys.
    fn demand(&self) -> String {
        match self {
            Origin::File { setting, .. } | Origin::Command { setting, .. } => setting.to_string(),
            Origin::Env(_) | Origin::EnvCommand(_) => self.to_string(),
        }
    }
}

/// What a source supplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Supplies {
    Passphrase,
    Kek,
    /// A raw KEK, printed by a command.
    Command,
}

/// One priority level: a passphrase, a raw KEK or a command printing one (more than one at a
/// level is ambiguous).
#[derive(Debug, Clone, Default)]
struct Level {
    passphrase: Option<Origin>,
    kek: Option<Origin>,
    command: Option<Origin>,
}

impl Level {
    fn sources(&self) -> impl Iterator<Item = (Supplies, &Origin)> {
        [
            (Supplies::Passphrase, &self.passphrase),
            (Supplies::Kek, &self.kek),
            (Supplies::Command, &self.command),
        ]
        .into_iter()
        .filter_map(|(what, o)| o.as_ref().map(|o| (what, o)))
    }
}

/// A keyring opened by [`KekSource::open_wrapped`]: its plain JSON and the KEK that opened it.
pub type Unwrapped = (Zeroizing<Vec<u8>>, Kek);

/// The places a KEK may come from, highest priority first. Resolved only when needed.
#[derive(Debug, Clone)]
pub struct KekSource {
    levels: Vec<Level>,
    /// How to supply a KEK, for the error when none is available.
    hint: String,
    /// Whether a KEK variable present in the environment demands a wrapped keyring (files
    /// and commands named by a flag or the configuration always do).
    env_demands_wrapping: bool,
    /// The flag or config key of a command at the first level ([`KekSource::with_command`]).
    command_setting: &'static str,
    /// Timeout and cache time of a command, wherever it comes from.
    limits: Limits,
}

impl Default for KekSource {
    fn default() -> Self {
        Self {
            levels: Vec::new(),
            hint: String::new(),
            env_demands_wrapping: false,
            command_setting: "",
            limits: Limits::CLI,
        }
    }
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
        command: None,
    }
}

fn env_level(names: (&'static str, &'static str, &'static str)) -> Level {
    Level {
        passphrase: Some(Origin::Env(names.0)),
        kek: Some(Origin::Env(names.1)),
        command: Some(Origin::EnvCommand(names.2)),
    }
}

impl KekSource {
    /// No source: wrapped keyrings cannot be opened.
    pub fn none() -> Self {
        Self::default()
    }

    /// The proxy: `keys.keyring_passphrase_file` / `keys.keyring_kek_file` (and
    /// `keys.keyring_kek_command`, [`KekSource::with_command`]), then the environment.
    pub fn for_config(passphrase_file: Option<PathBuf>, kek_file: Option<PathBuf>) -> Self {
        Self {
            levels: vec![
                file_level(
                    passphrase_file,
                    kek_file,
                    ("keys.keyring_passphrase_file", "keys.keyring_kek_file"),
                ),
                env_level((ENV_PASSPHRASE, ENV_KEK, ENV_KEK_COMMAND)),
            ],
            hint: format!(
                "set keys.keyring_passphrase_file, keys.keyring_kek_file or keys.keyring_kek_command in the configuration, or the environment variable {ENV_PASSPHRASE} (a passphrase), {ENV_KEK} (standard base64 of 32 bytes) or {ENV_KEK_COMMAND} (a command printing the KEK, as a JSON array)"
            ),
            env_demands_wrapping: true,
            command_setting: "keys.keyring_kek_command",
            limits: Limits::PROXY,
        }
    }

    /// The command line: `--passphrase-file` / `--kek-file` (and `--kek-command`,
    /// [`KekSource::with_command`]), then the environment.
    pub fn for_cli(passphrase_file: Option<PathBuf>, kek_file: Option<PathBuf>) -> Self {
        Self {
            levels: vec![
                file_level(passphrase_file, kek_file, ("--passphrase-file", "--kek-file")),
                env_level((ENV_PASSPHRASE, ENV_KEK, ENV_KEK_COMMAND)),
            ],
            hint: format!(
                "pass --passphrase-file FILE, --kek-file FILE or --kek-command JSON, or set the environment variable {ENV_PASSPHRASE} (a passphrase), {ENV_KEK} (standard base64 of 32 bytes) or {ENV_KEK_COMMAND} (a command printing the KEK, as a JSON array); a proxy reads keys.keyring_passphrase_file, keys.keyring_kek_file or keys.keyring_kek_command from its configuration"
            ),
            env_demands_wrapping: true,
            command_setting: "--kek-command",
            limits: Limits::CLI,
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

    /// The new KEK of `keys rewrap-keyring`: `--new-passphrase-file` / `--new-kek-file` /
    /// `--new-kek-command`, then `FIELDSEAL_NEW_KEYRING_PASSPHRASE` / `FIELDSEAL_NEW_KEYRING_KEK`
    /// / `FIELDSEAL_NEW_KEYRING_KEK_COMMAND`.
    pub fn for_cli_new(passphrase_file: Option<PathBuf>, kek_file: Option<PathBuf>) -> Self {
        Self {
            levels: vec![
                file_level(
                    passphrase_file,
                    kek_file,
                    ("--new-passphrase-file", "--new-kek-file"),
                ),
                env_level((ENV_NEW_PASSPHRASE, ENV_NEW_KEK, ENV_NEW_KEK_COMMAND)),
            ],
            hint: format!(
                "pass --new-passphrase-file FILE, --new-kek-file FILE or --new-kek-command JSON, or set {ENV_NEW_PASSPHRASE}, {ENV_NEW_KEK} or {ENV_NEW_KEK_COMMAND}; or --unwrap to store the keyring unwrapped"
            ),
            // Only ever used to wrap, never to read a keyring.
            env_demands_wrapping: false,
            command_setting: "--new-kek-command",
            limits: Limits::CLI,
        }
    }

    /// Adds a command printing the raw KEK at the highest level (beside the passphrase and KEK
    /// files): `keys.keyring_kek_command`, `--kek-command`, `--new-kek-command`.
    pub fn with_command(mut self, command: Option<KekCommand>) -> Self {
        if let (Some(command), Some(level)) = (command, self.levels.first_mut()) {
            level.command = Some(Origin::Command {
                command,
                setting: self.command_setting,
            });
        }
        self
    }

    /// The timeout and cache time of a command, from any level.
    pub fn with_command_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The timeout and cache time a command runs with.
    pub fn command_limits(&self) -> Limits {
        self.limits
    }

    /// How to supply a KEK (for "no KEK available" errors).
    pub fn hint(&self) -> &str {
        &self.hint
    }

    /// The source that says the keyring is wrapped, if any, highest priority first: a file or
    /// command named by a flag or configuration key (`keys.keyring_passphrase_file`), or —
    /// unless [`KekSource::plain_allowed_from_env`] — a KEK variable present in the environment
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
            .flat_map(Level::sources)
            .find(|(_, o)| o.is_explicit() || (self.env_demands_wrapping && o.present(env)))
            .map(|(_, o)| o.demand())
    }

    /// The KEK of the highest-priority source that is present, or `None` when none is. A
    /// command is told no keyring path ([`KekSource::resolve_for`] does).
    pub fn resolve(&self) -> Result<Option<Kek>, String> {
        self.resolve_inner(None, &process_env, false)
    }

    /// [`KekSource::resolve`] for the keyring file at `keyring` (what a command is told in
    /// `FIELDSEAL_KEYRING`).
    pub fn resolve_for(&self, keyring: &Path) -> Result<Option<Kek>, String> {
        self.resolve_inner(Some(keyring), &process_env, false)
    }

    /// [`KekSource::resolve`] with an injected environment (tests).
    pub fn resolve_with(
        &self,
        env: &dyn Fn(&str) -> Option<Zeroizing<String>>,
    ) -> Result<Option<Kek>, String> {
        self.resolve_inner(None, env, false)
    }

    /// Opens the wrapped keyring `wrapped` read from `path` with the KEK of the highest-priority
    /// source: the plain keyring JSON and the KEK, or `None` when no source is present. A KEK
    /// from a command's cache that fails to open the file (the keyring was rewrapped under
    /// another data key since) is replaced by a fresh run of the command, once.
    pub fn open_wrapped(
        &self,
        wrapped: &Wrapped,
        path: &Path,
    ) -> Result<Option<Unwrapped>, String> {
        self.open_wrapped_with(wrapped, path, &process_env)
    }

    fn open_wrapped_with(
        &self,
        wrapped: &Wrapped,
        path: &Path,
        env: &dyn Fn(&str) -> Option<Zeroizing<String>>,
    ) -> Result<Option<Unwrapped>, String> {
        let Some(kek) = self.resolve_inner(Some(path), env, false)? else {
            return Ok(None);
        };
        match open(wrapped, &kek, path) {
            Err(e) if kek.cached && e == unwrap_failed(path) => {
                tracing::info!(
                    keyring = %path.display(),
                    source = kek.origin(),
                    "the cached KEK does not open the keyring (rewrapped?); running the KEK command again"
                );
                let kek = self
                    .resolve_inner(Some(path), env, true)?
                    .ok_or_else(|| format!("{}: the KEK source went away", path.display()))?;
                let plain = open(wrapped, &kek, path)?;
                Ok(Some((plain, kek)))
            }
            result => result.map(|plain| Some((plain, kek))),
        }
    }

    /// `fresh`: run a command even when its KEK is cached.
    fn resolve_inner(
        &self,
        keyring: Option<&Path>,
        env: &dyn Fn(&str) -> Option<Zeroizing<String>>,
        fresh: bool,
    ) -> Result<Option<Kek>, String> {
        for level in &self.levels {
            let present: Vec<(Supplies, &Origin)> =
                level.sources().filter(|(_, o)| o.present(env)).collect();
            match present.as_slice() {
                [] => continue,
                [(Supplies::Passphrase, origin)] => return read_passphrase(origin, env).map(Some),
                [(Supplies::Kek, origin)] => return read_kek(origin, env).map(Some),
                [(Supplies::Command, origin)] => {
                    return self.read_command(origin, keyring, env, fresh).map(Some)
                }
                [(_, a), (_, b)] => {
                    return Err(format!(
                        "both {a} and {b} are set; give one passphrase or KEK source, not both"
                    ))
                }
                many => {
                    let names: Vec<String> = many.iter().map(|(_, o)| o.to_string()).collect();
                    return Err(format!(
                        "{} are all set; give one passphrase or KEK source, not several",
                        names.join(", ")
                    ));
                }
            }
        }
        Ok(None)
    }

    /// Runs a command for its KEK, or takes it from the cache (unless `fresh`).
    fn read_command(
        &self,
        origin: &Origin,
        keyring: Option<&Path>,
        env: &dyn Fn(&str) -> Option<Zeroizing<String>>,
        fresh: bool,
    ) -> Result<Kek, String> {
        let parsed;
        let command = match origin {
            Origin::Command { command, .. } => command,
            Origin::EnvCommand(name) => {
                let text = env(name).expect("present");
                parsed = KekCommand::from_json(&text, None)
                    .map_err(|m| format!("{origin}: the command {m}"))?;
                &parsed
            }
            Origin::File { .. } | Origin::Env(_) => unreachable!("not a command"),
        };
        let label = format!("{origin} ({})", command.describe());
        let limits = self.limits;
        if !fresh && !limits.cache.is_zero() {
            if let Some(key) = kek_command::cached(command, keyring) {
                tracing::debug!(source = %label, "KEK taken from the cache");
                let mut kek = Kek::raw(key, label);
                kek.from_command = true;
                kek.cached = true;
                return Ok(kek);
            }
        }
        let key = command
            .run(limits.timeout, keyring)
            .map_err(|m| format!("{origin}: {m}"))?;
        kek_command::remember(command, keyring, &key, limits.cache);
        let mut kek = Kek::raw(key, label);
        kek.from_command = true;
        Ok(kek)
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
        Origin::Command { .. } | Origin::EnvCommand(_) => unreachable!("commands print KEKs"),
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
        Origin::Command { .. } | Origin::EnvCommand(_) => unreachable!("read by read_command"),
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

    /// A command printing `b` 32 times, base64, and appending a line to `counter` per run.
    fn counting_command(counter: &Path, b: u8) -> KekCommand {
        KekCommand::new(
            vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "echo run >> '{}'; echo {}",
                    counter.display(),
                    STANDARD.encode([b; KEK_LEN])
                ),
            ],
            None,
        )
        .unwrap()
    }

    fn runs(counter: &Path) -> usize {
        std::fs::read_to_string(counter)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    #[test]
    fn commands_sit_beside_files_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("count");
        let kek_file = private_file(dir.path(), "kek", &[5u8; 32]);
        let env_cmd = format!(
            r#"["sh", "-c", "echo {}"]"#,
            STANDARD.encode([8u8; KEK_LEN])
        );
        let env_cmd: &'static str = Box::leak(env_cmd.into_boxed_str());
        let env_pairs: &'static [(&str, &str)] =
            Box::leak(vec![(ENV_KEK_COMMAND, env_cmd)].into_boxed_slice());
        let env = env_of(env_pairs);

        // A configured command wins over the environment's; it supplies a raw KEK.
        let source = KekSource::for_config(None, None)
            .with_command(Some(counting_command(&counter, 6)))
            .with_command_limits(Limits::CLI);
        let kek = source.resolve_with(&env).unwrap().unwrap();
        assert!(!kek.is_passphrase() && kek.from_command() && !kek.is_cached());
        let Secret::Raw(k) = &kek.secret else {
            panic!()
        };
        assert_eq!(**k, [6u8; 32]);
        assert_eq!(
            kek.origin(),
            "keys.keyring_kek_command (program `sh`, 2 arguments)"
        );
        assert_eq!(
            source.expects_wrapped_with(&|_| None).as_deref(),
            Some("keys.keyring_kek_command")
        );

        // The environment's command, when nothing else is set.
        let kek = KekSource::from_env().resolve_with(&env).unwrap().unwrap();
        let Secret::Raw(k) = &kek.secret else {
            panic!()
        };
        assert_eq!(**k, [8u8; 32]);
        assert_eq!(
            kek.origin(),
            "environment variable FIELDSEAL_KEYRING_KEK_COMMAND (program `sh`, 2 arguments)"
        );
        assert_eq!(
            KekSource::from_env().expects_wrapped_with(&env).as_deref(),
            Some("environment variable FIELDSEAL_KEYRING_KEK_COMMAND")
        );
        assert!(KekSource::from_env()
            .plain_allowed_from_env()
            .expects_wrapped_with(&env)
            .is_none());

        // Two kinds at one level are ambiguous, commands included.
        let err = KekSource::for_cli(None, Some(kek_file.clone()))
            .with_command(Some(counting_command(&counter, 6)))
            .resolve_with(&env)
            .unwrap_err();
        assert!(
            err.contains("both --kek-file") && err.contains("and --kek-command are set"),
            "{err}"
        );
        const TWO: &[(&str, &str)] = &[(ENV_KEK, "a"), (ENV_KEK_COMMAND, "[\"true\"]")];
        let err = KekSource::from_env()
            .resolve_with(&env_of(TWO))
            .unwrap_err();
        assert!(
            err.contains("FIELDSEAL_KEYRING_KEK_COMMAND are set"),
            "{err}"
        );
        const THREE: &[(&str, &str)] = &[
            (ENV_PASSPHRASE, "a"),
            (ENV_KEK, "b"),
            (ENV_KEK_COMMAND, "c"),
        ];
        let err = KekSource::from_env()
            .resolve_with(&env_of(THREE))
            .unwrap_err();
        assert!(err.contains("are all set"), "{err}");
        // A higher level with one source is not ambiguous with the environment's.
        assert!(KekSource::for_cli(None, Some(kek_file))
            .resolve_with(&env)
            .is_ok());
        // The new-KEK side of rewrap-keyring has its own variable.
        const NEW: &[(&str, &str)] = &[(ENV_NEW_KEK_COMMAND, "not json secret")];
        let err = KekSource::for_cli_new(None, None)
            .resolve_with(&env_of(NEW))
            .unwrap_err();
        assert!(
            err.starts_with("environment variable FIELDSEAL_NEW_KEYRING_KEK_COMMAND: the command must be a JSON array")
                && !err.contains("secret"),
            "{err}"
        );
        // The configured command did not run from the cache (Limits::CLI): once per resolve.
        assert_eq!(runs(&counter), 1);
    }

    #[test]
    fn a_command_kek_is_cached_and_refreshed_when_it_stops_opening() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("count");
        let path = dir.path().join("ring.json");
        let limits = Limits {
            timeout: kek_command::DEFAULT_TIMEOUT,
            cache: std::time::Duration::from_secs(3600),
        };
        let source = |b: u8| {
            KekSource::for_config(None, None)
                .with_command(Some(counting_command(&counter, b)))
                .with_command_limits(limits)
        };
        let sealed = parsed(&seal(PLAIN, &raw(1)).unwrap());
        let none = |_: &str| None;
        let (plain, kek) = source(1)
            .open_wrapped_with(&sealed, &path, &none)
            .unwrap()
            .unwrap();
        assert_eq!(&plain[..], PLAIN);
        assert!(!kek.is_cached());
        assert_eq!(runs(&counter), 1);
        // Within the cache time: no run.
        let (_, kek) = source(1)
            .open_wrapped_with(&sealed, &path, &none)
            .unwrap()
            .unwrap();
        assert!(kek.is_cached());
        assert_eq!(runs(&counter), 1);
        // Another keyring path is another entry.
        source(1)
            .open_wrapped_with(&sealed, &dir.path().join("other.json"), &none)
            .unwrap()
            .unwrap();
        assert_eq!(runs(&counter), 2);

        // The keyring is rewrapped under another KEK, and the data key file the command reads
        // is replaced (its argv stays the same): the cached KEK fails, the command runs
        // again, once, and the new KEK is cached.
        let data_key = dir.path().join("data-key.b64");
        std::fs::write(&data_key, STANDARD.encode([1u8; KEK_LEN])).unwrap();
        let reading = || {
            KekSource::for_config(None, None)
                .with_command(Some(
                    KekCommand::new(
                        vec![
                            "sh".into(),
                            "-c".into(),
                            format!(
                                "echo run >> '{}'; cat '{}'",
                                counter.display(),
                                data_key.display()
                            ),
                        ],
                        None,
                    )
                    .unwrap(),
                ))
                .with_command_limits(limits)
        };
        let ring2 = dir.path().join("ring2.json");
        reading().open_wrapped_with(&sealed, &ring2, &none).unwrap();
        assert_eq!(runs(&counter), 3);
        let rewrapped = parsed(&seal(PLAIN, &raw(2)).unwrap());
        std::fs::write(&data_key, STANDARD.encode([2u8; KEK_LEN])).unwrap();
        let (plain, kek) = reading()
            .open_wrapped_with(&rewrapped, &ring2, &none)
            .unwrap()
            .unwrap();
        assert_eq!(&plain[..], PLAIN);
        assert!(!kek.is_cached());
        assert_eq!(runs(&counter), 4);
        let (_, kek) = reading()
            .open_wrapped_with(&rewrapped, &ring2, &none)
            .unwrap()
            .unwrap();
        assert!(kek.is_cached());
        assert_eq!(runs(&counter), 4);

        // A KEK that is simply wrong, fresh from the command: one run, the usual error.
        let err = source(9)
            .with_command_limits(Limits::CLI)
            .open_wrapped_with(&sealed, &path, &none)
            .unwrap_err();
        assert_eq!(err, unwrap_failed(&path));
        // A failing command is an error naming the setting and the program.
        let failing = KekSource::for_config(None, None)
            .with_command(Some(KekCommand::new(vec!["false".into()], None).unwrap()));
        let err = failing
            .open_wrapped_with(&sealed, &path, &none)
            .unwrap_err();
        assert_eq!(
            err,
            "keys.keyring_kek_command: the KEK command `false` exited with status 1"
        );
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
