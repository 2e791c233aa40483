//! The configuration file as written: serde types that mirror the YAML (contract §4).
//!
//! Nothing here is validated beyond its shape; `compile` turns these into runtime types.
//! `deny_unknown_fields` everywhere, so a misspelt key is an error, never silently ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Top-level keys, in the order they are reported. Environment overrides are restricted to
/// these so unrelated `FIELDSEAL_*` variables (Kubernetes service links such as
/// `FIELDSEAL_SERVICE_HOST`) do not break startup.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "upstream",
    "admin",
    "workers",
    "tls",
    "keys",
    "headers",
    "routes",
    "fields",
    "guard",
    "identity",
    "timeouts",
    "limits",
    "audit",
    "reload",
    "replay",
    "trusted_proxies",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    #[serde(default)]
    pub keyring: Option<PathBuf>,
    /// One path or a list: during a rotation the new key first, then the old one.
    #[serde(default)]
    pub rsa_private_key: Option<OneOrMany<PathBuf>>,
    /// File holding the passphrase of encrypted RSA keys (else `FIELDSEAL_RSA_KEY_PASSPHRASE`).
    #[serde(default)]
    pub rsa_key_passphrase_file: Option<PathBuf>,
    /// X25519 private keys (PKCS#8 PEM) for HPKE values; one path or a list.
    #[serde(default)]
    pub hpke_private_key: Option<OneOrMany<PathBuf>>,
    #[serde(default)]
    pub public_key_path: Option<String>,
    /// File holding the passphrase of a wrapped keyring (else `FIELDSEAL_KEYRING_PASSPHRASE`).
    #[serde(default)]
    pub keyring_passphrase_file: Option<PathBuf>,
    /// File holding a raw 32-byte KEK of a wrapped keyring (else `FIELDSEAL_KEYRING_KEK`).
    #[serde(default)]
    pub keyring_kek_file: Option<PathBuf>,
    /// A command (argv, no shell) printing the raw KEK of a wrapped keyring as base64 (else
    /// `FIELDSEAL_KEYRING_KEK_COMMAND`).
    #[serde(default)]
    pub keyring_kek_command: Option<RawCommand>,
    /// How long the command may run (default 10s).
    #[serde(default, with = "humantime_serde")]
    pub keyring_kek_command_timeout: Option<Duration>,
    /// How long its KEK is kept in memory for reloads (default 1h; `0s`: run it every load).
    #[serde(default, with = "humantime_serde")]
    pub keyring_kek_command_cache: Option<Duration>,
    #[serde(default)]
    pub rotation: Option<RawRotation>,
}

/// A command: an argv list. A string is accepted by the parser only to be refused with an
/// explanation (no shell splitting).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawCommand {
    Argv(Vec<String>),
    Text(String),
}

/// A setting that takes one value or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }
    }
}

/// When the primary key is due for rotation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRotation {
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    #[serde(default)]
    pub max_encryptions: Option<u64>,
}

/// The tamper-evident audit log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// `stdout`, or a file path (appended to).
    pub sink: String,
    /// File holding the HMAC-SHA256 chain key (32 bytes, raw or standard base64).
    pub key_file: PathBuf,
}

/// Where the `jti`s of client-encrypted values are remembered (contract §3 of 1.1).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplay {
    /// `memory` (this process; the default) or `redis` (shared by every replica).
    #[serde(default)]
    pub store: Option<String>,
    pub redis: Option<RawRedis>,
}

/// `replay.redis`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://host:port/db`, without credentials.
    pub url: String,
    pub username: Option<String>,
    /// File holding the password (AUTH / ACL), owner-readable only.
    pub password_file: Option<PathBuf>,
    /// File holding the 32-byte HMAC key of the `jti` digests, the same on every replica.
    pub key_file: PathBuf,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// Hot reload (SIGHUP always reloads).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    /// Also reload when the config, keyring or certificate files change (polled).
    #[serde(default)]
    pub watch: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    #[serde(default, with = "humantime_serde")]
    pub tls_handshake: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub upstream_connect: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub upstream_response: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub upstream_idle: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub upstream_read: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub client_header_read: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub client_idle: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Client-encrypted values (JWE, HPKE) opened per request: each costs a private-key
    /// operation, so a body cannot make the proxy do unbounded RSA work.
    #[serde(default)]
    pub max_encrypted_values: Option<usize>,
    /// `jti`s remembered for `request.max_age` routes (replay protection).
    #[serde(default)]
    pub replay_cache_entries: Option<usize>,
    /// Requests in flight to the app at once; more wait for one to finish.
    #[serde(default)]
    pub max_upstream_requests: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub response: Option<RawResponseRules>,
    #[serde(default)]
    pub request: Option<RawRequestRules>,
    #[serde(default)]
    pub envelope: bool,
    /// `false` opts the route out of the top-level field policy (contract §8); `true` is the
    /// default.
    #[serde(default = "yes")]
    pub fields: bool,
    /// The data subject of the route's requests and answers, for subject-bound tokens
    /// (`fsb1`): `"{id}"` (a path parameter) or `"claim:sub"` (a claim of the verified JWT).
    #[serde(default)]
    pub subject: Option<String>,
}

fn yes() -> bool {
    true
}

/// One entry of the top-level field policy (contract §8).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFieldRule {
    pub select: String,
    pub action: RawAction,
    /// `encrypt` only: the AAD context (else the member name).
    #[serde(default)]
    pub context: Option<String>,
    /// `mask` only: characters kept at the end.
    #[serde(default)]
    pub keep_last: Option<usize>,
    /// `encrypt` only: seal a selected `null` too.
    #[serde(default)]
    pub seal_null: bool,
    /// Views by caller identity: the first that holds replaces `action` for that caller.
    #[serde(default)]
    pub views: Vec<RawView>,
    /// `encrypt` only: seal expiring tokens (`fse1`) that open for this long.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// `encrypt` only: seal searchable tokens (`fsd1`): equal values give equal tokens.
    #[serde(default)]
    pub searchable: bool,
    /// `encrypt` only: seal subject-bound tokens (`fsb1`) for each route's `subject`; on a
    /// route without one (or a request that matches no route) an answer holding the field is
    /// withheld.
    #[serde(default)]
    pub per_subject: bool,
}

/// One view of a response rule: when it holds, the caller sees `show` instead of the action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawView {
    pub when: RawWhen,
    pub show: RawShow,
    /// `show: mask` only.
    #[serde(default)]
    pub keep_last: Option<usize>,
}

/// What must hold of the verified caller (every key written).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWhen {
    /// `true`: any caller with a valid token.
    #[serde(default)]
    pub authenticated: bool,
    /// `"{id}"`: the token's `sub` equals this path parameter of the route.
    #[serde(default)]
    pub subject: Option<String>,
    /// Claim (dotted path for nested objects) → value it equals or, for an array, holds.
    #[serde(default)]
    pub claims: BTreeMap<String, serde_json::Value>,
    /// Scopes every one of which the token grants (`scope` or `scp`).
    #[serde(default)]
    pub scope: Option<OneOrMany<String>>,
}

/// What a view shows: the value as the app sent it, or any action a rule can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawShow {
    /// The value as the app sent it.
    Plain,
    Action(RawAction),
}

impl<'de> Deserialize<'de> for RawShow {
    /// `plain`, or an action's name (one list of names: [`RawAction`]'s), with serde's own
    /// "unknown variant, expected one of …" message for anything else.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{value::StrDeserializer, Error, IntoDeserializer};
        let name = String::deserialize(d)?;
        if name == "plain" {
            return Ok(RawShow::Plain);
        }
        let as_action: StrDeserializer<'_, D::Error> = name.as_str().into_deserializer();
        RawAction::deserialize(as_action)
            .map(RawShow::Action)
            .map_err(|_| D::Error::unknown_variant(&name, RAW_SHOW_NAMES))
    }
}

/// Every `show` a view may name.
const RAW_SHOW_NAMES: &[&str] = &["plain", "encrypt", "redact", "mask", "mask_email", "year"];

impl RawShow {
    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            RawShow::Plain => "plain",
            RawShow::Action(a) => a.name(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawAction {
    Encrypt,
    Redact,
    Mask,
    MaskEmail,
    Year,
}

impl RawAction {
    /// The name as written (and as [`crate::config::settings::Operation::name`] prints it).
    pub fn name(self) -> &'static str {
        match self {
            RawAction::Encrypt => "encrypt",
            RawAction::Redact => "redact",
            RawAction::Mask => "mask",
            RawAction::MaskEmail => "mask_email",
            RawAction::Year => "year",
        }
    }
}

/// The guard (contract §9).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    pub detect: Vec<String>,
    #[serde(default)]
    pub mode: GuardMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardMode {
    /// Count and log detections; the response goes out.
    #[default]
    Observe,
    /// Withhold the response: 502 `sensitive_data_detected`.
    Block,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub path: String,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
}

/// A JSONPath selector: a bare string, or a path with an explicit AAD context.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSelector {
    Path(String),
    WithContext(RawSelectorWithContext),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelectorWithContext {
    pub path: String,
    #[serde(default)]
    pub context: Option<String>,
    /// Seal a selected `null` too (by default a `null` stays `null`, contract §7).
    #[serde(default)]
    pub seal_null: bool,
    /// Decrypt rules: the JSON types accepted once a value is opened.
    #[serde(default, rename = "type")]
    pub value_type: Option<OneOrMany<String>>,
    /// Response rules: views by caller identity.
    #[serde(default)]
    pub views: Vec<RawView>,
    /// `response.encrypt` only: seal expiring tokens (`fse1`) that open for this long.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// `response.encrypt` only: seal searchable tokens (`fsd1`).
    #[serde(default)]
    pub searchable: bool,
    /// `response.encrypt` only: seal subject-bound tokens (`fsb1`) for the route's `subject`.
    #[serde(default)]
    pub per_subject: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMask {
    pub path: String,
    pub keep_last: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNonJson {
    /// A body that cannot be transformed becomes a 502: plaintext never leaks.
    #[default]
    Fail,
    /// Non-JSON bodies pass untouched (explicit per-route opt-out).
    Pass,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponseRules {
    #[serde(default)]
    pub encrypt: Vec<RawSelector>,
    #[serde(default)]
    pub redact: Vec<RawSelector>,
    #[serde(default)]
    pub mask: Vec<RawMask>,
    /// Email addresses with their first character and domain kept.
    #[serde(default)]
    pub mask_email: Vec<RawSelector>,
    /// Dates generalised to their year.
    #[serde(default)]
    pub year: Vec<RawSelector>,
    #[serde(default)]
    pub on_non_json: OnNonJson,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequestRules {
    #[serde(default)]
    pub decrypt: Vec<RawSelector>,
    #[serde(default)]
    pub require_encrypted: bool,
    #[serde(default)]
    pub max_age: Option<u64>,
    /// Refuse JWE values whose protected header carries no `fsc` (contract §3 of 1.1).
    #[serde(default)]
    pub require_context: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A view shows `plain` or any operation, by the one list of operation names: a new
    /// operation listed in `Operation::KINDS` and `RawAction` is a `show` too.
    #[test]
    fn show_names_are_plain_and_every_operation() {
        use crate::config::settings::Operation;
        assert_eq!(RAW_SHOW_NAMES[0], "plain");
        assert_eq!(&RAW_SHOW_NAMES[1..], &Operation::KINDS[..]);
        for name in RAW_SHOW_NAMES {
            let show: RawShow = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(show.name(), *name);
        }
        assert!(serde_json::from_value::<RawShow>(serde_json::json!("bogus")).is_err());
    }
}
