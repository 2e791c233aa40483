//! The compiled configuration: everything parsed, validated and built, ready to serve.
//! Nothing here is parsed again per request.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use jsonpath_rust::parser::model::JpQuery;

use super::error::ConfigProblem;
use super::raw::OnNonJson;
use crate::routing::{Matchable, MethodSet, PathTemplate, RouteTable};
use crate::security_headers::HeaderPolicy;
use crate::selector::Selector;
use crate::transform::splice::Plan;

/// A whole compiled configuration.
pub struct Settings {
    /// The file it was loaded from (for messages and reloads).
    pub source: PathBuf,
    /// Every file this configuration was built from (itself, certificates, keys), which the
    /// reload watcher polls.
    pub files: Vec<PathBuf>,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// Worker threads serving connections (each a single-threaded runtime).
    pub workers: usize,
    pub upstream: UpstreamTarget,
    pub tls: Arc<rustls::ServerConfig>,
    /// Whether client certificates are required.
    pub mtls: bool,
    pub keys: KeySources,
    pub audit: Option<AuditSettings>,
    pub reload: ReloadSettings,
    pub routes: RouteTable<Route>,
    /// How long a client value's `jti` is remembered, on every route: the largest
    /// `request.max_age` configured, at least 300 s (contract §3 of 1.1).
    pub replay_window: Duration,
    /// Header policy for requests that match no route.
    pub default_headers: HeaderPolicy,
    pub timeouts: Timeouts,
    pub limits: Limits,
    /// Peers whose `Forwarded`/`X-Forwarded-*`/`X-Real-IP` headers are kept (contract §7);
    /// from anyone else they are removed. Empty by default: fieldseal is the TLS edge.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Accepted but worth saying (e.g. a group-readable key file).
    pub warnings: Vec<ConfigProblem>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("source", &self.source)
            .field("listen", &self.listen)
            .field("admin", &self.admin)
            .field("upstream", &self.upstream)
            .field("mtls", &self.mtls)
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

/// The unmodified app: plain HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    pub authority: Authority,
}

impl fmt::Display for UpstreamTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

/// Key material: the loaded keyring, and where the rest lives.
#[derive(Debug, Clone, Default)]
pub struct KeySources {
    pub keyring: Option<PathBuf>,
    /// The validated keyring (ciphers built), when `keys.keyring` is set.
    pub ring: Option<Arc<crate::crypto::Keyring>>,
    /// The RSA and HPKE keys clients encrypt to (JWKS, JWE values, envelopes), when any is
    /// configured.
    pub client: Option<Arc<crate::crypto::client_keys::ClientKeys>>,
    pub public_key_path: Option<String>,
    /// Where the KEK of a wrapped keyring comes from (besides the environment).
    pub keyring_passphrase_file: Option<PathBuf>,
    pub keyring_kek_file: Option<PathBuf>,
    pub rotation: RotationPolicy,
}

impl KeySources {
    /// Whether an RSA key is configured (envelopes and the seed endpoint need one). During
    /// `check` with a broken key file this is false, but the file's problem is reported too.
    pub fn has_rsa_keys(&self) -> bool {
        self.client
            .as_ref()
            .is_some_and(|c| !c.rsa_keys().is_empty())
    }
}

/// When the primary key is due for rotation: a metric, a warning and `/readyz` detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    pub max_age: Option<Duration>,
    /// Seals with one key, counted by this process. AES-GCM with random 96-bit nonces must
    /// stay well below 2^32 messages per key.
    pub max_encryptions: u64,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            max_age: None,
            max_encryptions: crate::limits::DEFAULT_MAX_ENCRYPTIONS,
        }
    }
}

/// Where audit events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSinkTarget {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub sink: AuditSinkTarget,
    /// The HMAC chain key file (checked like a keyring: never readable by others).
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Copy)]
pub struct ReloadSettings {
    /// Poll the watched files and reload when they change.
    pub watch: bool,
    pub interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tls_handshake: Duration,
    pub upstream_connect: Duration,
    pub upstream_response: Duration,
    pub upstream_idle: Duration,
    pub client_header_read: Duration,
    /// Close client connections with no request in flight for this long.
    pub client_idle: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_connections: usize,
    /// Client-encrypted values (JWE/HPKE) opened per request.
    pub max_encrypted_values: usize,
    /// Capacity of the in-memory `jti` store (restart to change).
    pub replay_cache_entries: usize,
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Used as the `route` label in logs and metrics.
    pub name: Arc<str>,
    pub methods: MethodSet,
    pub path: PathTemplate,
    pub headers: HeaderPolicy,
    pub rules: RouteRules,
}

impl Matchable for Route {
    fn methods(&self) -> &MethodSet {
        &self.methods
    }
    fn template(&self) -> &PathTemplate {
        &self.path
    }
}

/// The transforms a route asks for.
#[derive(Debug, Clone, Default)]
pub struct RouteRules {
    pub response: Option<ResponseRules>,
    pub request: Option<RequestRules>,
    pub envelope: bool,
}

impl RouteRules {
    /// The response rules, when there are any (a route with them covers its path for every
    /// method: see `RouteTable::find_with_cover`).
    pub fn response_rules(&self) -> Option<&ResponseRules> {
        self.response.as_ref().filter(|r| !r.is_empty())
    }

    /// True when the route only proxies (its bodies stream untouched).
    pub fn is_passthrough(&self) -> bool {
        !self.envelope
            && self.response.as_ref().is_none_or(ResponseRules::is_empty)
            && self.request.as_ref().is_none_or(RequestRules::is_empty)
    }

    /// Human summary for `fieldseal check`.
    pub fn describe(&self) -> Vec<String> {
        let list = |sels: &[Selector]| -> String {
            sels.iter()
                .map(|s| match &s.context {
                    Some(c) => format!("{} (context {c})", s.source),
                    None => s.source.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = Vec::new();
        if let Some(r) = &self.response {
            if !r.encrypt.is_empty() {
                out.push(format!("response.encrypt: {}", list(&r.encrypt)));
            }
            if !r.redact.is_empty() {
                out.push(format!("response.redact: {}", list(&r.redact)));
            }
            if !r.mask.is_empty() {
                let masks: Vec<String> = r
                    .mask
                    .iter()
                    .map(|m| format!("{} (keep_last {})", m.selector.source, m.keep_last))
                    .collect();
                out.push(format!("response.mask: {}", masks.join(", ")));
            }
            if r.on_non_json == OnNonJson::Pass {
                out.push("response.on_non_json: pass".into());
            }
        }
        if let Some(r) = &self.request {
            if !r.decrypt.is_empty() {
                out.push(format!("request.decrypt: {}", list(&r.decrypt)));
            }
            if r.require_encrypted {
                out.push("request.require_encrypted: true".into());
            }
            if let Some(age) = r.max_age {
                out.push(format!("request.max_age: {}s", age.as_secs()));
            }
            if r.require_context {
                out.push("request.require_context: true".into());
            }
        }
        if self.envelope {
            out.push("envelope: true".into());
        }
        out
    }
}

#[derive(Debug, Clone, Default)]
pub struct ResponseRules {
    pub encrypt: Vec<Selector>,
    pub redact: Vec<Selector>,
    pub mask: Vec<MaskRule>,
    pub on_non_json: OnNonJson,
    /// The byte-level plan over encrypt, redact and mask selectors (in that order), when
    /// they are all simple enough for it.
    plan: Option<Plan>,
}

impl ResponseRules {
    pub fn new(
        encrypt: Vec<Selector>,
        redact: Vec<Selector>,
        mask: Vec<MaskRule>,
        on_non_json: OnNonJson,
    ) -> Self {
        let queries: Vec<&JpQuery> = encrypt
            .iter()
            .chain(&redact)
            .chain(mask.iter().map(|m| &m.selector))
            .map(|s| &s.query)
            .collect();
        let plan = Plan::compile(&queries);
        Self {
            encrypt,
            redact,
            mask,
            on_non_json,
            plan,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.encrypt.is_empty() && self.redact.is_empty() && self.mask.is_empty()
    }

    pub fn plan(&self) -> Option<&Plan> {
        self.plan.as_ref()
    }

    /// The same rules on the `Value` engine, for tests comparing the two engines.
    #[cfg(test)]
    pub fn without_plan(mut self) -> Self {
        self.plan = None;
        self
    }
}

#[derive(Debug, Clone)]
pub struct MaskRule {
    pub selector: Selector,
    pub keep_last: usize,
}

#[derive(Debug, Clone, Default)]
pub struct RequestRules {
    pub decrypt: Vec<Selector>,
    pub require_encrypted: bool,
    pub max_age: Option<Duration>,
    /// JWE values must say which field they were made for (`fsc`, contract §3 of 1.1).
    pub require_context: bool,
    /// The byte-level plan over the decrypt selectors, when they are simple enough for it.
    plan: Option<Plan>,
}

impl RequestRules {
    pub fn new(decrypt: Vec<Selector>, require_encrypted: bool, max_age: Option<Duration>) -> Self {
        let queries: Vec<&JpQuery> = decrypt.iter().map(|s| &s.query).collect();
        let plan = Plan::compile(&queries);
        Self {
            decrypt,
            require_encrypted,
            max_age,
            require_context: false,
            plan,
        }
    }

    /// With `request.require_context`.
    pub fn require_context(mut self, required: bool) -> Self {
        self.require_context = required;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.decrypt.is_empty()
    }

    pub fn plan(&self) -> Option<&Plan> {
        self.plan.as_ref()
    }

    /// The same rules on the `Value` engine, for tests comparing the two engines.
    #[cfg(test)]
    pub fn without_plan(mut self) -> Self {
        self.plan = None;
        self
    }
}
