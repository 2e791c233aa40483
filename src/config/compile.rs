//! Loads a configuration (YAML file + `FIELDSEAL_…` environment overrides) and compiles it into
//! [`Settings`], collecting every problem instead of stopping at the first.
//!
//! Each top-level section and each route is deserialised on its own, so one typo does not hide
//! the next; semantic checks (addresses, templates, JSONPaths, files) run on whatever parsed.

use crate::transform::operation::TokenOptions;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::providers::{Env, Format, Yaml};
use figment::value::Value;
use figment::Figment;
use http::uri::{Authority, Uri};
use http::Method;
use serde::de::DeserializeOwned;

use super::error::{redacted_message, ConfigErrors, ConfigProblem};
use super::raw::*;
use super::settings::*;
use crate::crypto::client_keys::ClientKeys;
use crate::limits;
use crate::routing::{MethodSet, PathTemplate, RouteTable};
use crate::secret_file::{self, Exposure};
use crate::security_headers::HeaderPolicy;
use crate::tls;
use crate::transform::carrier::{Carrier, NamedField};
use crate::transform::selector::{JsonTypes, Selector};
use zeroize::Zeroizing;

/// Prefix of environment overrides; `__` separates nested keys (`FIELDSEAL_TLS__CERT`).
pub const ENV_PREFIX: &str = "FIELDSEAL_";

const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// Loads and compiles the configuration at `path`, with environment overrides applied.
pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
    let env = Env::prefixed(ENV_PREFIX)
        .filter(|key| {
            let top = key.as_str().split("__").next().unwrap_or_default();
            TOP_LEVEL_KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
        })
        .split("__");
    load_from(
        path,
        Figment::new().merge(Yaml::file_exact(path)).merge(env),
    )
}

/// Compiles an already assembled figment whose file provider is `path`.
pub fn load_from(path: &Path, figment: Figment) -> Result<Settings, ConfigErrors> {
    let mut c = Compiler::new(path, &figment);
    if let Err(e) = std::fs::metadata(path).and_then(|m| {
        if m.is_file() {
            Ok(())
        } else {
            Err(std::io::Error::other("not a regular file"))
        }
    }) {
        c.problem("", format!("cannot read the configuration file: {e}"));
        return Err(ConfigErrors(c.problems));
    }
    let settings = c.compile();
    match settings {
        Some(s) if c.problems.is_empty() => Ok(s),
        _ => Err(ConfigErrors(c.problems)),
    }
}

struct Compiler<'a> {
    fig: &'a Figment,
    file: String,
    base_dir: PathBuf,
    problems: Vec<ConfigProblem>,
    warnings: Vec<ConfigProblem>,
    /// Every file the configuration names, for the reload watcher.
    files: std::cell::RefCell<Vec<PathBuf>>,
    /// Some rule has views (which need `identity`).
    views_written: bool,
    /// Some route takes its data subject from a JWT claim (which needs `identity`).
    claim_subjects: bool,
    /// Some `fields` entry seals per subject (routes without a `subject` are warned about).
    policy_per_subject: bool,
}

impl<'a> Compiler<'a> {
    fn new(path: &Path, fig: &'a Figment) -> Self {
        Self {
            fig,
            file: path.display().to_string(),
            base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            problems: Vec::new(),
            warnings: Vec::new(),
            files: std::cell::RefCell::new(vec![path.to_path_buf()]),
            views_written: false,
            claim_subjects: false,
            policy_per_subject: false,
        }
    }

    /// Where the value at `key` came from: the file, or the environment variable that set it.
    fn origin(&self, key: &str) -> String {
        let from_env = self
            .fig
            .find_metadata(key)
            .is_some_and(|md| !matches!(md.source, Some(figment::Source::File(_))));
        if from_env && !key.is_empty() {
            format!(
                "env {ENV_PREFIX}{}",
                key.replace('.', "__").to_ascii_uppercase()
            )
        } else {
            self.file.clone()
        }
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        let origin = if key.is_empty() {
            self.file.clone()
        } else {
            self.origin(key)
        };
        self.problems.push(ConfigProblem {
            origin,
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn warning(&mut self, key: &str, message: impl Into<String>) {
        let origin = self.origin(key);
        self.warnings.push(ConfigProblem {
            origin,
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Records every error in a figment error chain; `prefix` is prepended to their paths.
    fn figment_errors(&mut self, err: figment::Error, prefix: &str) {
        for e in err {
            let mut path: Vec<String> = Vec::new();
            if !prefix.is_empty() {
                path.push(prefix.to_string());
            }
            // figment already names an unknown field in `path`.
            path.extend(e.path.iter().cloned());
            let key = path.join(".");
            self.problem(&key, redacted_message(&e.kind));
        }
    }

    fn present(&self, key: &str) -> bool {
        self.fig.find_value(key).is_ok()
    }

    /// Deserialises an optional top-level section.
    fn section<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        if !self.present(key) {
            return None;
        }
        // Deserialise the value itself (not `extract_inner`, which appends `key` to the end
        // of the error path instead of prefixing it).
        let value = self.fig.find_value(key).ok()?;
        match value.deserialize::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                self.figment_errors(e, key);
                None
            }
        }
    }

    fn required<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        if !self.present(key) {
            self.problem(key, format!("missing required key `{key}`"));
            return None;
        }
        self.section(key)
    }

    /// Resolves a configured file path: relative paths are relative to the config file.
    fn file_path(&self, p: &Path) -> PathBuf {
        let resolved = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        };
        let mut files = self.files.borrow_mut();
        if !files.contains(&resolved) {
            files.push(resolved.clone());
        }
        resolved
    }

    fn compile(&mut self) -> Option<Settings> {
        let top: BTreeMap<String, Value> = match self.fig.extract() {
            Ok(t) => t,
            Err(e) => {
                self.figment_errors(e, "");
                return None;
            }
        };
        for key in top.keys() {
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                self.problem(
                    key,
                    format!("unknown key (known keys: {})", TOP_LEVEL_KEYS.join(", ")),
                );
            }
        }

        let listen = self
            .required::<String>("listen")
            .and_then(|s| self.socket_addr("listen", &s));
        let admin_raw = self
            .section::<String>("admin")
            .unwrap_or_else(|| DEFAULT_ADMIN.to_string());
        let admin = self.socket_addr("admin", &admin_raw);
        if let (Some(l), Some(a)) = (listen, admin) {
            if l == a && l.port() != 0 {
                self.problem("admin", "must differ from `listen`");
            }
        }
        let workers = match self.section::<usize>("workers") {
            Some(0) => {
                self.problem("workers", "must be at least 1");
                1
            }
            Some(n) if n > limits::MAX_WORKERS => {
                self.problem(
                    "workers",
                    format!("must be at most {}", limits::MAX_WORKERS),
                );
                1
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let upstream = self
            .required::<String>("upstream")
            .and_then(|s| self.upstream(&s));
        let tls = self.required::<RawTls>("tls").and_then(|t| self.tls(t));
        let keys = self.keys();
        let audit = self.audit();
        let replay = self.replay();
        let reload = self.reload_settings();
        let global_headers = self
            .section::<BTreeMap<String, String>>("headers")
            .unwrap_or_default();
        let default_headers = self.header_policy("headers", &global_headers, None);
        let timeouts = self.timeouts();
        let limits = self.limits();
        let fields = self.field_policy(&keys);
        let guard = self.guard();
        let routes = self.routes(&global_headers, &keys, &fields);
        let identity = self.identity();
        if self.claim_subjects && identity.is_none() && !self.present("identity") {
            self.problem(
                "identity",
                "a route's `subject: \"claim:…\"` reads the caller's verified token: configure `identity.jwt`",
            );
        }
        if self.views_written && identity.is_none() && !self.present("identity") {
            self.problem(
                "identity",
                "rules with `views` choose by the caller's verified token: configure `identity.jwt`",
            );
        }
        let trusted_proxies = self.trusted_proxies();

        let (tls, mtls) = tls?;
        let routes = RouteTable::new(routes?);
        // Global replay (contract §3 of 1.1): a `jti` is remembered at least as long as the
        // largest `max_age` anywhere.
        let replay_window = routes
            .iter()
            .filter_map(|r| r.rules.request.as_ref().and_then(|q| q.max_age))
            .fold(
                std::time::Duration::from_secs(crate::replay::DEFAULT_WINDOW_SECS),
                std::time::Duration::max,
            );
        Some(Settings {
            source: PathBuf::from(&self.file),
            files: self.files.borrow().clone(),
            listen: listen?,
            admin: admin?,
            workers,
            upstream: upstream?,
            tls,
            mtls,
            keys,
            audit,
            reload,
            routes,
            identity,
            unmatched_rules: fields.rules_alone(),
            fields,
            guard,
            replay,
            replay_window,
            default_headers: default_headers?,
            timeouts,
            limits,
            trusted_proxies,
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    /// `identity`: the verifier of callers' JWTs (views by caller identity). Compiled without
    /// the network: a `jwks_url` is fetched when serving starts ([`crate::identity::Verifier::start`]).
    fn identity(&mut self) -> Option<crate::identity::Verifier> {
        if !self.present("identity") {
            return None;
        }
        let raw = self.section::<crate::identity::RawIdentity>("identity")?;
        if let Some(file) = &raw.jwt.jwks_file {
            // Watched: a new key set is picked up by a reload.
            self.file_path(file);
        }
        match crate::identity::compile(&raw, &self.base_dir) {
            Ok(v) => Some(v),
            Err(problems) => {
                for p in problems {
                    match p.split_once(": ") {
                        Some((key, message)) if key.starts_with("identity") => {
                            self.problem(key, message)
                        }
                        _ => self.problem("identity", p),
                    }
                }
                None
            }
        }
    }

    /// `trusted_proxies`: the CIDRs of peers whose forwarding headers are kept (contract §7).
    fn trusted_proxies(&mut self) -> Vec<ipnet::IpNet> {
        let Some(raw) = self.section::<Vec<String>>("trusted_proxies") else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(raw.len());
        for (i, text) in raw.iter().enumerate() {
            // A bare address is a one-address network.
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => out.push(net.trunc()),
                Err(_) => self.problem(
                    &format!("trusted_proxies.{i}"),
                    "not an IP network (e.g. `10.0.0.0/8` or `::1/128`)",
                ),
            }
        }
        out
    }

    fn socket_addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    key,
                    "not an IP socket address (e.g. `0.0.0.0:8443` or `[::]:8443`)",
                );
                None
            }
        }
    }

    fn upstream(&mut self, value: &str) -> Option<UpstreamTarget> {
        let uri: Uri = match value.parse() {
            Ok(u) => u,
            Err(_) => {
                self.problem("upstream", "not a URL (e.g. `http://127.0.0.1:8000`)");
                return None;
            }
        };
        if uri.scheme_str() != Some("http") {
            self.problem(
                "upstream",
                "must be a plain `http://` URL: fieldseal terminates TLS in front of the app",
            );
            return None;
        }
        if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
            self.problem(
                "upstream",
                "must not have a path or query (requests keep their own)",
            );
            return None;
        }
        let authority: Authority = match uri.authority() {
            Some(a) if a.port_u16().is_some() || !a.host().is_empty() => a.clone(),
            _ => {
                self.problem("upstream", "has no host");
                return None;
            }
        };
        if authority.as_str().contains('@') {
            self.problem("upstream", "must not contain credentials");
            return None;
        }
        Some(UpstreamTarget { authority })
    }

    /// Checks a secret file's permissions, recording a problem or a warning.
    fn secret_file(&mut self, key: &str, path: &Path) -> bool {
        match secret_file::check(path) {
            Ok(Exposure::OwnerOnly) => true,
            Ok(Exposure::GroupReadable) => {
                self.warning(
                    key,
                    format!(
                        "{} is readable by its group; make sure that group is trusted",
                        path.display()
                    ),
                );
                true
            }
            Err(m) => {
                self.problem(key, m);
                false
            }
        }
    }

    fn tls(&mut self, raw: RawTls) -> Option<(Arc<rustls::ServerConfig>, bool)> {
        let cert_path = self.file_path(&raw.cert);
        let key_path = self.file_path(&raw.key);
        let chain = tls::read_cert_chain(&cert_path)
            .map_err(|m| self.problem("tls.cert", m))
            .ok();
        let key = if self.secret_file("tls.key", &key_path) {
            tls::read_private_key(&key_path)
                .map_err(|m| self.problem("tls.key", m))
                .ok()
        } else {
            None
        };
        let client_ca = match &raw.client_ca {
            None => Some(None),
            Some(p) => {
                let p = self.file_path(p);
                tls::read_cert_chain(&p)
                    .map_err(|m| self.problem("tls.client_ca", m))
                    .ok()
                    .map(Some)
            }
        };
        let (chain, key, client_ca) = (chain?, key?, client_ca?);
        let mtls = client_ca.is_some();
        match tls::server_config(chain, key, client_ca) {
            Ok(cfg) => Some((cfg, mtls)),
            Err(m) => {
                self.problem("tls", m);
                None
            }
        }
    }

    fn keys(&mut self) -> KeySources {
        let Some(raw) = self.section::<RawKeys>("keys") else {
            return KeySources::default();
        };
        let (kek_command, limits, kek_ok) = self.kek_command(&raw);
        let keyring = raw.keyring.map(|p| self.file_path(&p));
        // A wrapped keyring's KEK: the configured files or command, else the environment.
        let kek = crate::crypto::KekSource::for_config(
            raw.keyring_passphrase_file
                .as_ref()
                .map(|p| self.file_path(p)),
            raw.keyring_kek_file.as_ref().map(|p| self.file_path(p)),
        )
        .with_command(kek_command.clone())
        .with_command_limits(limits);
        let mut keyring_kek = None;
        let ring = keyring.as_ref().filter(|_| kek_ok).and_then(|p| {
            let read = crate::crypto::keyring::read_keyring_file(p, &kek)
                .and_then(|read| Ok((crate::crypto::Keyring::build(&read.file)?, read)));
            match read {
                Ok((ring, read)) => {
                    if read.exposure == Exposure::GroupReadable {
                        self.warning(
                            "keys.keyring",
                            format!(
                                "{} is readable by its group; make sure that group is trusted",
                                p.display()
                            ),
                        );
                    }
                    keyring_kek = read.kek.as_ref().map(|k| KeyringKek {
                        kind: k.kind(),
                        origin: k.origin().to_string(),
                        command: k.from_command().then_some(limits),
                        cached: k.is_cached(),
                    });
                    Some(Arc::new(ring))
                }
                Err(e) => {
                    for m in e.0 {
                        self.problem("keys.keyring", m);
                    }
                    None
                }
            }
        });
        let client = self.client_keys(
            raw.rsa_private_key
                .map(OneOrMany::into_vec)
                .unwrap_or_default(),
            raw.rsa_key_passphrase_file.as_deref(),
            raw.hpke_private_key
                .map(OneOrMany::into_vec)
                .unwrap_or_default(),
        );
        if let Some(p) = &raw.public_key_path {
            if !p.starts_with('/') {
                self.problem(
                    "keys.public_key_path",
                    "must be an absolute URL path starting with `/`",
                );
            }
            if client.as_ref().is_none_or(|c| c.rsa_keys().is_empty()) {
                self.problem(
                    "keys.public_key_path",
                    "serves an RSA public key: needs `keys.rsa_private_key`",
                );
            }
        }
        let keyring_passphrase_file = raw.keyring_passphrase_file.map(|p| self.file_path(&p));
        if let Some(p) = &keyring_passphrase_file {
            self.secret_file("keys.keyring_passphrase_file", p);
        }
        let keyring_kek_file = raw.keyring_kek_file.map(|p| self.file_path(&p));
        if let Some(p) = &keyring_kek_file {
            self.secret_file("keys.keyring_kek_file", p);
        }
        let rotation = self.rotation(raw.rotation.unwrap_or_default());
        KeySources {
            keyring,
            ring,
            client,
            public_key_path: raw.public_key_path,
            keyring_passphrase_file,
            keyring_kek_file,
            keyring_kek_command: kek_command,
            keyring_kek,
            rotation,
        }
    }

    /// `keys.keyring_kek_command` and its timeout and cache time. The flag is false when one
    /// of them is wrong (then the keyring is not opened: the problem is already reported).
    fn kek_command(
        &mut self,
        raw: &RawKeys,
    ) -> (
        Option<crate::crypto::kek_command::KekCommand>,
        crate::crypto::kek_command::Limits,
        bool,
    ) {
        use crate::crypto::kek_command::{self as kc, KekCommand, Limits};
        let mut ok = true;
        let mut limits = Limits::PROXY;
        if let Some(t) = raw.keyring_kek_command_timeout {
            match kc::check_timeout(t) {
                Ok(t) => limits.timeout = t,
                Err(m) => {
                    self.problem("keys.keyring_kek_command_timeout", m);
                    ok = false;
                }
            }
        }
        if let Some(c) = raw.keyring_kek_command_cache {
            match kc::check_cache(c) {
                Ok(c) => limits.cache = c,
                Err(m) => {
                    self.problem("keys.keyring_kek_command_cache", m);
                    ok = false;
                }
            }
        }
        let command = match &raw.keyring_kek_command {
            None => None,
            Some(RawCommand::Text(_)) => {
                self.problem(
                    "keys.keyring_kek_command",
                    r#"must be a list: the program and its arguments, run without a shell, e.g. ["/usr/local/bin/kek-helper", "--key", "prod"]; for a pipeline write ["sh", "-c", "… | base64 -w0"]"#,
                );
                ok = false;
                None
            }
            // Relative program paths and the command's working directory: the config file's
            // directory, like every other path in it.
            Some(RawCommand::Argv(argv)) => {
                match KekCommand::new(argv.clone(), Some(self.base_dir_or_cwd())) {
                    Ok(c) => Some(c),
                    Err(m) => {
                        self.problem("keys.keyring_kek_command", m);
                        ok = false;
                        None
                    }
                }
            }
        };
        let tuned =
            raw.keyring_kek_command_timeout.is_some() || raw.keyring_kek_command_cache.is_some();
        if tuned
            && command.is_none()
            && ok
            && std::env::var_os(crate::crypto::wrap::ENV_KEK_COMMAND).is_none_or(|v| v.is_empty())
        {
            self.warning(
                "keys.keyring_kek_command_timeout",
                format!(
                    "keys.keyring_kek_command_timeout and keys.keyring_kek_command_cache apply to a KEK command, but neither keys.keyring_kek_command nor {} is set",
                    crate::crypto::wrap::ENV_KEK_COMMAND
                ),
            );
        }
        (command, limits, ok)
    }

    /// The directory relative paths are resolved against: the config file's, else the current
    /// one.
    fn base_dir_or_cwd(&self) -> PathBuf {
        if self.base_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            self.base_dir.clone()
        }
    }

    /// Loads the RSA and HPKE private keys clients encrypt to. `None` when none is configured
    /// (or one failed: the problems are recorded and the config is refused).
    fn client_keys(
        &mut self,
        rsa_paths: Vec<PathBuf>,
        passphrase_file: Option<&Path>,
        hpke_paths: Vec<PathBuf>,
    ) -> Option<Arc<ClientKeys>> {
        if rsa_paths.is_empty() && hpke_paths.is_empty() {
            if passphrase_file.is_some() {
                self.problem(
                    "keys.rsa_key_passphrase_file",
                    "is set but `keys.rsa_private_key` is not",
                );
            }
            return None;
        }
        let passphrase = match passphrase_file.map(|p| self.file_path(p)) {
            Some(p) if !self.secret_file("keys.rsa_key_passphrase_file", &p) => return None,
            p => match crate::crypto::rsa_keys::passphrase(p.as_deref()) {
                Ok(pass) => pass,
                Err(m) => {
                    self.problem("keys.rsa_key_passphrase_file", m);
                    return None;
                }
            },
        };
        let key_name = |base: &str, i: usize, n: usize| {
            if n == 1 {
                base.to_string()
            } else {
                format!("{base}.{i}")
            }
        };
        let mut ok = true;
        let mut rsa = Vec::new();
        for (i, p) in rsa_paths.iter().enumerate() {
            let name = key_name("keys.rsa_private_key", i, rsa_paths.len());
            let p = self.file_path(p);
            if !self.secret_file(&name, &p) {
                ok = false;
                continue;
            }
            match crate::crypto::rsa_keys::load_with_passphrase(
                &p,
                passphrase.as_deref().map(|v| &v[..]),
            ) {
                Ok(k) => rsa.push(k),
                Err(m) => {
                    self.problem(&name, m);
                    ok = false;
                }
            }
        }
        let mut hpke = Vec::new();
        for (i, p) in hpke_paths.iter().enumerate() {
            let name = key_name("keys.hpke_private_key", i, hpke_paths.len());
            let p = self.file_path(p);
            if !self.secret_file(&name, &p) {
                ok = false;
                continue;
            }
            match crate::crypto::hpke::load(&p) {
                Ok(k) => hpke.push(k),
                Err(m) => {
                    self.problem(&name, m);
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        match ClientKeys::new(rsa, hpke) {
            Ok(keys) => Some(Arc::new(keys)),
            Err(m) => {
                self.problem("keys", m);
                None
            }
        }
    }

    fn rotation(&mut self, raw: RawRotation) -> RotationPolicy {
        let mut policy = RotationPolicy::default();
        if let Some(age) = raw.max_age {
            if age.is_zero() {
                self.problem("keys.rotation.max_age", "must be greater than zero");
            }
            policy.max_age = Some(age);
        }
        match raw.max_encryptions {
            Some(0) => self.problem("keys.rotation.max_encryptions", "must be greater than zero"),
            Some(n) if n > limits::MAX_ENCRYPTIONS_CEILING => self.problem(
                "keys.rotation.max_encryptions",
                format!(
                    "must be at most 2^32 ({}): AES-GCM with random nonces is not safe beyond",
                    limits::MAX_ENCRYPTIONS_CEILING
                ),
            ),
            Some(n) => policy.max_encryptions = n,
            None => {}
        }
        policy
    }

    fn audit(&mut self) -> Option<AuditSettings> {
        let raw = self.section::<RawAudit>("audit")?;
        let sink = match raw.sink.as_str() {
            "" => {
                self.problem("audit.sink", "must be `stdout` or a file path");
                AuditSinkTarget::Stdout
            }
            "stdout" | "-" => AuditSinkTarget::Stdout,
            // Not `file_path`: the log is written, not read, and must not trigger reloads.
            path if Path::new(path).is_absolute() => AuditSinkTarget::File(PathBuf::from(path)),
            path => AuditSinkTarget::File(self.base_dir.join(path)),
        };
        let key_file = self.file_path(&raw.key_file);
        self.secret_file("audit.key_file", &key_file);
        Some(AuditSettings { sink, key_file })
    }

    /// `replay`: this process's memory (the default) or a Redis all replicas share.
    fn replay(&mut self) -> ReplayStoreSettings {
        let raw = self.section::<RawReplay>("replay").unwrap_or_default();
        match (raw.store.as_deref(), raw.redis) {
            (None | Some("memory"), None) => ReplayStoreSettings::Memory,
            (None | Some("memory"), Some(_)) => {
                self.problem(
                    "replay.redis",
                    "set `replay.store: redis` to use it (the store is `memory` otherwise)",
                );
                ReplayStoreSettings::Memory
            }
            (Some("redis"), None) => {
                self.problem(
                    "replay.redis",
                    "`replay.store: redis` needs `replay.redis.url` and `replay.redis.key_file`",
                );
                ReplayStoreSettings::Memory
            }
            (Some("redis"), Some(r)) => self.redis(r).map_or(ReplayStoreSettings::Memory, |s| {
                ReplayStoreSettings::Redis(Box::new(s))
            }),
            (Some(other), _) => {
                self.problem(
                    "replay.store",
                    format!("`{other}`: must be `memory` or `redis`"),
                );
                ReplayStoreSettings::Memory
            }
        }
    }

    fn redis(&mut self, raw: RawRedis) -> Option<crate::replay::redis::RedisSettings> {
        match raw.url.split_once("://") {
            Some(("redis", rest)) if !rest.is_empty() && !rest.contains('@') => {}
            Some(("redis", rest)) if rest.contains('@') => {
                self.problem(
                    "replay.redis.url",
                    "must not contain credentials: use `username` and `password_file`",
                );
                return None;
            }
            Some(("rediss", _)) => {
                self.problem(
                    "replay.redis.url",
                    "TLS to Redis (`rediss://`) is not supported yet: keep Redis on a private network (docs/replicas.md)",
                );
                return None;
            }
            _ => {
                self.problem("replay.redis.url", "must be `redis://host:port/db`");
                return None;
            }
        }
        let timeout = raw.timeout.unwrap_or(limits::REPLAY_STORE_TIMEOUT);
        if !(limits::MIN_REPLAY_STORE_TIMEOUT..=limits::MAX_REPLAY_STORE_TIMEOUT).contains(&timeout)
        {
            self.problem(
                "replay.redis.timeout",
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(limits::MIN_REPLAY_STORE_TIMEOUT),
                    humantime::format_duration(limits::MAX_REPLAY_STORE_TIMEOUT)
                ),
            );
        }
        let key_path = self.file_path(&raw.key_file);
        let key = match crate::secret_file::read_key_32(&key_path, "the replay key") {
            Ok((key, exposure)) => {
                if exposure == Exposure::GroupReadable {
                    self.warning(
                        "replay.redis.key_file",
                        format!(
                            "{} is readable by its group; make sure that group is trusted",
                            key_path.display()
                        ),
                    );
                }
                key
            }
            Err(m) => {
                self.problem("replay.redis.key_file", m);
                return None;
            }
        };
        let password = match &raw.password_file {
            None => None,
            Some(p) => {
                let path = self.file_path(p);
                match crate::secret_file::read(&path) {
                    Ok((bytes, _)) => match std::str::from_utf8(bytes.trim_ascii()) {
                        Ok(text) if !text.is_empty() => Some(Zeroizing::new(text.to_string())),
                        _ => {
                            self.problem(
                                "replay.redis.password_file",
                                format!("{}: must hold the password as UTF-8 text", path.display()),
                            );
                            return None;
                        }
                    },
                    Err(m) => {
                        self.problem("replay.redis.password_file", m);
                        return None;
                    }
                }
            }
        };
        let prefix = raw.prefix.unwrap_or_else(|| "fieldseal:".into());
        if prefix.is_empty()
            || prefix.len() > 64
            || prefix.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            self.problem(
                "replay.redis.prefix",
                "1 to 64 characters, no spaces or control characters",
            );
        }
        Some(crate::replay::redis::RedisSettings {
            url: raw.url,
            username: raw.username,
            password,
            key,
            prefix,
            timeout,
        })
    }

    fn reload_settings(&mut self) -> ReloadSettings {
        let raw = self.section::<RawReload>("reload").unwrap_or_default();
        let interval = raw.interval.unwrap_or(limits::RELOAD_WATCH_INTERVAL);
        if interval < limits::MIN_RELOAD_WATCH_INTERVAL {
            self.problem(
                "reload.interval",
                format!(
                    "must be at least {}",
                    humantime::format_duration(limits::MIN_RELOAD_WATCH_INTERVAL)
                ),
            );
        }
        ReloadSettings {
            watch: raw.watch.unwrap_or(false),
            interval,
        }
    }

    fn header_policy(
        &mut self,
        key: &str,
        global: &BTreeMap<String, String>,
        route: Option<&BTreeMap<String, String>>,
    ) -> Option<HeaderPolicy> {
        match HeaderPolicy::compile(global, route) {
            Ok(p) => Some(p),
            Err(errors) => {
                for (name, reason) in errors {
                    // Report against the layer that configured the bad header.
                    let in_route =
                        route.is_some_and(|r| r.keys().any(|k| k.eq_ignore_ascii_case(&name)));
                    if route.is_none() || in_route {
                        self.problem(&format!("{key}.{name}"), reason);
                    }
                }
                None
            }
        }
    }

    fn timeouts(&mut self) -> Timeouts {
        let raw = self.section::<RawTimeouts>("timeouts").unwrap_or_default();
        let mut pick = |name: &str, v: Option<std::time::Duration>, default| match v {
            Some(d) if d.is_zero() => {
                self.problem(&format!("timeouts.{name}"), "must be greater than zero");
                default
            }
            Some(d) => d,
            None => default,
        };
        Timeouts {
            tls_handshake: pick(
                "tls_handshake",
                raw.tls_handshake,
                limits::TLS_HANDSHAKE_TIMEOUT,
            ),
            upstream_connect: pick(
                "upstream_connect",
                raw.upstream_connect,
                limits::UPSTREAM_CONNECT_TIMEOUT,
            ),
            upstream_response: pick(
                "upstream_response",
                raw.upstream_response,
                limits::UPSTREAM_RESPONSE_TIMEOUT,
            ),
            upstream_idle: pick(
                "upstream_idle",
                raw.upstream_idle,
                limits::UPSTREAM_IDLE_TIMEOUT,
            ),
            upstream_read: pick(
                "upstream_read",
                raw.upstream_read,
                limits::UPSTREAM_READ_TIMEOUT,
            ),
            client_header_read: pick(
                "client_header_read",
                raw.client_header_read,
                limits::CLIENT_HEADER_READ_TIMEOUT,
            ),
            client_idle: pick("client_idle", raw.client_idle, limits::CLIENT_IDLE_TIMEOUT),
            shutdown_grace: pick("shutdown_grace", raw.shutdown_grace, limits::SHUTDOWN_GRACE),
        }
    }

    fn limits(&mut self) -> Limits {
        let raw = self.section::<RawLimits>("limits").unwrap_or_default();
        let mut positive = |name: &str, v: Option<usize>, default: usize| match v {
            Some(0) => {
                self.problem(&format!("limits.{name}"), "must be greater than zero");
                default
            }
            Some(n) => n,
            None => default,
        };
        Limits {
            max_body_bytes: positive("max_body_bytes", raw.max_body_bytes, limits::MAX_BODY_BYTES),
            max_connections: positive(
                "max_connections",
                raw.max_connections,
                limits::MAX_CONNECTIONS,
            ),
            max_encrypted_values: positive(
                "max_encrypted_values",
                raw.max_encrypted_values,
                limits::MAX_ENCRYPTED_VALUES,
            ),
            replay_cache_entries: positive(
                "replay_cache_entries",
                raw.replay_cache_entries,
                crate::replay::DEFAULT_CAPACITY,
            ),
            max_upstream_requests: positive(
                "max_upstream_requests",
                raw.max_upstream_requests,
                limits::MAX_UPSTREAM_REQUESTS,
            ),
        }
    }

    /// The top-level `fields` list (contract §8).
    fn field_policy(&mut self, keys: &KeySources) -> FieldPolicy {
        let mut policy = FieldPolicy::default();
        if !self.present("fields") {
            return policy;
        }
        let Some(values) = self.section::<Vec<Value>>("fields") else {
            return policy;
        };
        let mut seen = HashSet::new();
        for (i, value) in values.iter().enumerate() {
            let at = format!("fields.{i}");
            let raw: RawFieldRule = match value.deserialize() {
                Ok(r) => r,
                Err(e) => {
                    self.figment_errors(e, &at);
                    continue;
                }
            };
            if !seen.insert(raw.select.clone()) {
                self.problem(&at, "the same selector is listed twice");
                continue;
            }
            let op = match operation(raw.action, raw.keep_last) {
                Ok(op) => op,
                Err(message) => {
                    self.problem(&format!("{at}.keep_last"), message);
                    continue;
                }
            };
            if op != Operation::Seal && (raw.context.is_some() || raw.seal_null) {
                let key = if raw.context.is_some() {
                    "context"
                } else {
                    "seal_null"
                };
                self.problem(&format!("{at}.{key}"), "applies to `encrypt` only");
                continue;
            }
            policy.entries.push(describe_entry(&raw, op));
            let format = TokenOptions {
                ttl: raw.ttl,
                searchable: raw.searchable,
                per_subject: raw.per_subject,
            };
            if let Some(named) = NamedField::parse(&raw.select, raw.context.clone()) {
                let mut named = match named {
                    Ok(n) => n,
                    Err(m) => {
                        self.problem(&format!("{at}.select"), m);
                        continue;
                    }
                };
                if raw.seal_null {
                    self.problem(&format!("{at}.seal_null"), "applies to JSON members only");
                    continue;
                }
                named.tokens = self.token_options(&at, format, op == Operation::Seal, "`encrypt`");
                self.policy_per_subject |= named.tokens.per_subject;
                if !raw.views.is_empty() {
                    self.problem(&format!("{at}.views"), "apply to JSON members only");
                    continue;
                }
                if op == Operation::Seal {
                    if keys.keyring.is_none() {
                        self.problem(&at, "`encrypt` needs `keys.keyring`");
                    }
                    policy.named.push(named.clone());
                } else if !named.carrier.in_responses() {
                    self.problem(
                        &format!("{at}.action"),
                        "a response has no form fields or query string: only `encrypt` (which opens them in requests) applies",
                    );
                    continue;
                }
                if named.carrier.in_responses() {
                    policy.headers.push(HeaderRule {
                        field: named,
                        op,
                        source: RuleSource::Policy,
                    });
                }
                continue;
            }
            let mut selector = match Selector::compile(&raw.select, raw.context.clone()) {
                Ok(s) => s,
                Err(m) => {
                    self.problem(&format!("{at}.select"), m);
                    continue;
                }
            };
            selector.seal_null = raw.seal_null;
            selector.views = self.views(&format!("{at}.views"), &raw.views);
            selector.tokens = self.token_options(&at, format, op == Operation::Seal, "`encrypt`");
            self.policy_per_subject |= selector.tokens.per_subject;
            if keys.keyring.is_none()
                && selector
                    .views
                    .iter()
                    .any(|v| v.show == Some(Operation::Seal))
            {
                self.problem(
                    &format!("{at}.views"),
                    "`show: encrypt` needs `keys.keyring`",
                );
            }
            if op == Operation::Seal {
                if keys.keyring.is_none() {
                    self.problem(&at, "`encrypt` needs `keys.keyring`");
                }
                if selector.context.is_none() && !selector.has_fixed_context() {
                    self.problem(
                        &format!("{at}.select"),
                        "`encrypt` entries also open tokens in requests, and the member names this selector \
                         matches are chosen by the client, so any token would open under them: give it an \
                         explicit `context`",
                    );
                }
                policy.decrypt.push(selector.clone());
            }
            policy
                .response
                .push(ResponseRule::new(selector, op, RuleSource::Policy));
        }
        policy
    }

    /// The `guard` section (contract §9).
    fn guard(&mut self) -> Option<crate::guard::Guard> {
        let raw: RawGuard = self.section("guard")?;
        let mut detectors = Vec::new();
        for (i, name) in raw.detect.iter().enumerate() {
            match crate::guard::Detector::parse(name) {
                Some(d) if !detectors.contains(&d) => detectors.push(d),
                Some(_) => self.problem(&format!("guard.detect.{i}"), "listed twice"),
                None => {
                    let known: Vec<&str> = crate::guard::Detector::ALL
                        .iter()
                        .map(|(n, _)| *n)
                        .collect();
                    self.problem(
                        &format!("guard.detect.{i}"),
                        format!("unknown detector `{name}` (known: {})", known.join(", ")),
                    );
                }
            }
        }
        if raw.detect.is_empty() {
            self.problem("guard.detect", "list at least one detector");
        }
        Some(crate::guard::Guard {
            detectors,
            mode: raw.mode,
        })
    }

    fn routes(
        &mut self,
        global_headers: &BTreeMap<String, String>,
        keys: &KeySources,
        policy: &FieldPolicy,
    ) -> Option<Vec<Route>> {
        if !self.present("routes") {
            return Some(Vec::new());
        }
        let values: Vec<Value> = self.section("routes")?;
        let mut routes = Vec::with_capacity(values.len());
        let mut names = HashSet::new();
        let mut ok = true;
        for (i, value) in values.iter().enumerate() {
            let key = format!("routes.{i}");
            let raw: RawRoute = match value.deserialize() {
                Ok(r) => r,
                Err(e) => {
                    self.figment_errors(e, &key);
                    // Report the route's path too, in the same round: one broken rule must
                    // not hide a broken path behind it.
                    self.route_path_alone(&key, value);
                    ok = false;
                    continue;
                }
            };
            if !names.insert(raw.name.clone()) {
                self.problem(&format!("{key}.name"), "duplicate route name");
                ok = false;
            }
            match self.route(&key, raw, global_headers, keys, policy) {
                Some(r) => routes.push(r),
                None => ok = false,
            }
        }
        if ok {
            self.warn_unsealed_answers(&routes);
        }
        ok.then_some(routes)
    }

    /// A route that opens values but whose answers no response rule covers hands the app's
    /// echo of an opened value (an update returning the stored record, `Prefer:
    /// return=representation`, a validation error quoting the input) to the client in
    /// plaintext: the proxy would be a decryption oracle. Worth a warning, not an error: an
    /// app may never echo.
    fn warn_unsealed_answers(&mut self, routes: &[Route]) {
        for (i, route) in routes.iter().enumerate() {
            // The field policy opens and seals the same selectors: only the route's own
            // decrypt rules can be left uncovered.
            let opens = route
                .rules
                .request_rules()
                .is_some_and(RequestRules::has_own);
            if !opens || route.rules.has_own_response_rules() {
                continue;
            }
            // A path this route matches: `{name}` segments as a placeholder, `/**` as nothing.
            let sample: String = route
                .path
                .to_string()
                .trim_end_matches("/**")
                .split('/')
                .map(|seg| if seg.starts_with('{') { "x" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let segments = crate::routing::normalize_path(&sample);
            let covered = routes
                .iter()
                .any(|r| r.rules.has_own_response_rules() && r.path.matches(&segments));
            if !covered {
                self.warning(
                    &format!("routes.{i}"),
                    "this route opens values but no response rule covers its path: if the app echoes \
                     an opened value (an update returning the record, a validation error quoting \
                     the input), the client gets it in plaintext; add response rules for the same \
                     fields on this path",
                );
            }
        }
    }

    /// The `match.path` of a route whose other parts did not deserialise, checked on its own.
    fn route_path_alone(&mut self, key: &str, value: &Value) {
        let Some(path) = value
            .find_ref("match.path")
            .and_then(|v| v.as_str().map(str::to_string))
        else {
            return;
        };
        if let Err(m) = PathTemplate::parse(&path) {
            self.problem(
                &format!("{key}.match.path"),
                format!("bad path template: {m}"),
            );
        }
    }

    fn route(
        &mut self,
        key: &str,
        raw: RawRoute,
        global_headers: &BTreeMap<String, String>,
        keys: &KeySources,
        policy: &FieldPolicy,
    ) -> Option<Route> {
        let before = self.problems.len();
        let name_ok = !raw.name.is_empty()
            && raw.name.len() <= 64
            && raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            self.problem(
                &format!("{key}.name"),
                "must be 1-64 characters of letters, digits, `-`, `_` or `.` (it is a metric label)",
            );
        }
        let path = PathTemplate::parse(&raw.matcher.path)
            .map_err(|m| {
                self.problem(
                    &format!("{key}.match.path"),
                    format!("bad path template: {m}"),
                )
            })
            .ok();
        let methods = match &raw.matcher.methods {
            None => MethodSet::Any,
            Some(list) => {
                let mut parsed = Vec::new();
                for (j, m) in list.iter().enumerate() {
                    let upper = m.to_ascii_uppercase();
                    match Method::from_bytes(upper.as_bytes()) {
                        Ok(method) => parsed.push(method),
                        Err(_) => {
                            self.problem(&format!("{key}.match.methods.{j}"), "not an HTTP method")
                        }
                    }
                }
                if list.is_empty() {
                    self.problem(
                        &format!("{key}.match.methods"),
                        "must not be empty (omit it to match every method)",
                    );
                }
                MethodSet::Only(parsed)
            }
        };
        let headers = self.header_policy(
            &format!("{key}.headers"),
            global_headers,
            Some(&raw.headers),
        );
        let rules = self.rules(key, &raw, keys, policy);
        if self.policy_per_subject && raw.fields && rules.subject.is_none() && !rules.envelope {
            self.warning(
                key,
                "the field policy seals some fields per subject, and this route names no `subject`: its answers holding them are withheld (502); give it a `subject`, or `fields: false`",
            );
        }
        match (&path, &rules.subject) {
            (Some(template), Some(SubjectSource::Param(name))) if !template.has_param(name) => {
                self.problem(
                    &format!("{key}.subject"),
                    format!("`{{{name}}}` is not a parameter of `{template}`"),
                );
            }
            (_, Some(SubjectSource::Claim(_))) => self.claim_subjects = true,
            _ => {}
        }
        // A route's own view naming a path parameter the route does not have would never
        // hold: a typo that silently hides data from its owners.
        if let (Some(template), Some(response)) = (&path, &rules.response) {
            for rule in response
                .rules()
                .iter()
                .filter(|r| r.source == RuleSource::Route)
            {
                for view in rule.selector.views.iter() {
                    if let Some(name) = &view.when.subject_param {
                        if !template.has_param(name) {
                            self.problem(
                                &format!("{key}.response"),
                                format!(
                                    "a view of `{}` compares the subject with `{{{name}}}`, which `{}` does not have",
                                    rule.selector.source, template
                                ),
                            );
                        }
                    }
                }
            }
        }
        if self.problems.len() != before {
            return None;
        }
        Some(Route {
            name: Arc::from(raw.name.as_str()),
            methods,
            path: path?,
            headers: headers?,
            rules,
        })
    }

    /// Sets how an `encrypt` rule's tokens are made, naming every misuse at `at`: the
    /// options on another kind of rule (`not_encrypt` says which kind takes them), a lifetime
    /// outside [`ttl_problem`]'s bounds, and combinations that contradict each other.
    fn token_options(
        &mut self,
        at: &str,
        format: TokenOptions,
        encrypt: bool,
        not_encrypt: &str,
    ) -> TokenOptions {
        if !encrypt {
            if let Some(option) = format.first_set() {
                self.problem(
                    &format!("{at}.{option}"),
                    format!("applies to {not_encrypt} only"),
                );
            }
            return TokenOptions::default();
        }
        if let Some(problem) = format.ttl.and_then(ttl_problem) {
            self.problem(&format!("{at}.ttl"), problem);
        }
        if format.per_subject && (format.searchable || format.ttl.is_some()) {
            self.problem(
                at,
                "`per_subject` tokens are neither searchable nor expiring",
            );
        } else if format.searchable && format.ttl.is_some() {
            self.problem(
                at,
                "a token is searchable or expiring, not both (equal values must give equal tokens)",
            );
        }
        format
    }

    /// A rule's views by caller identity, compiled; each names what is wrong with it.
    fn views(&mut self, at: &str, raw: &[RawView]) -> Arc<[crate::transform::view::View]> {
        use crate::transform::view::{Condition, View};
        let mut out = Vec::new();
        for (i, v) in raw.iter().enumerate() {
            let key = format!("{at}.{i}");
            let show = match (v.show, v.keep_last) {
                (RawShow::Plain, None) => None,
                (RawShow::Plain, Some(_)) => {
                    self.problem(&format!("{key}.keep_last"), "applies to `mask` only");
                    continue;
                }
                (RawShow::Action(action), keep_last) => match operation(action, keep_last) {
                    Ok(op) => Some(op),
                    Err(message) => {
                        self.problem(&format!("{key}.keep_last"), message);
                        continue;
                    }
                },
            };
            let w = &v.when;
            let subject_param = match &w.subject {
                None => None,
                Some(s) => match s.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    Some(name) if !name.is_empty() => Some(name.to_string()),
                    _ => {
                        self.problem(
                            &format!("{key}.when.subject"),
                            "name a path parameter of the route, as `{id}`",
                        );
                        continue;
                    }
                },
            };
            let mut claims = Vec::new();
            for (name, value) in &w.claims {
                if value.is_object() || value.is_array() || value.is_null() {
                    self.problem(
                        &format!("{key}.when.claims.{name}"),
                        "compare a claim with a string, number or boolean",
                    );
                }
                claims.push((name.clone(), value.clone()));
            }
            let scopes = w.scope.clone().map(OneOrMany::into_vec).unwrap_or_default();
            let when = Condition {
                authenticated: w.authenticated,
                subject_param,
                claims,
                scopes,
            };
            if when == Condition::default() {
                self.problem(
                    &format!("{key}.when"),
                    "say who sees this view: `authenticated`, `subject`, `claims` or `scope`",
                );
                continue;
            }
            out.push(View { when, show });
        }
        if !out.is_empty() {
            self.views_written = true;
        }
        Arc::from(out)
    }

    /// A rule list's JSONPath selectors, and its carrier rules (`form:`, `query:`,
    /// `header:`): requests (`decrypt`) take every carrier, responses headers only.
    fn selectors(
        &mut self,
        key: &str,
        raw: &[RawSelector],
        decrypt: bool,
    ) -> (Vec<Selector>, Vec<NamedField>) {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut named_out = Vec::new();
        for (i, sel) in raw.iter().enumerate() {
            let at = format!("{key}.{i}");
            let (path, context, seal_null, value_type, views) = match sel {
                RawSelector::Path(p) => (p.as_str(), None, false, None, &[][..]),
                RawSelector::WithContext(w) => (
                    w.path.as_str(),
                    w.context.clone(),
                    w.seal_null,
                    w.value_type.clone(),
                    &w.views[..],
                ),
            };
            // How an `encrypt` rule's tokens are made (`ttl`, `searchable`, `per_subject`).
            let format = match sel {
                RawSelector::WithContext(w) => TokenOptions {
                    ttl: w.ttl,
                    searchable: w.searchable,
                    per_subject: w.per_subject,
                },
                RawSelector::Path(_) => TokenOptions::default(),
            };
            if decrypt && !views.is_empty() {
                self.problem(
                    &format!("{at}.views"),
                    "views choose what a caller sees in answers: they apply to response rules only",
                );
            }
            if !seen.insert(path.to_string()) {
                self.problem(&at, "the same selector is listed twice");
                continue;
            }
            let encrypt = !decrypt && key.ends_with(".response.encrypt");
            if let Some(named) = NamedField::parse(path, context.clone()) {
                let mut named = match named {
                    Ok(n) => n,
                    Err(m) => {
                        self.problem(&at, m);
                        continue;
                    }
                };
                if !decrypt && !named.carrier.in_responses() {
                    self.problem(
                        &at,
                        format!(
                            "a response has no {} to transform (`{}:` opens values in requests: list it in `request.decrypt`)",
                            if named.carrier == Carrier::Form { "form fields" } else { "query string" },
                            named.carrier.prefix()
                        ),
                    );
                    continue;
                }
                if seal_null {
                    self.problem(&format!("{at}.seal_null"), "applies to JSON members only");
                }
                if !views.is_empty() {
                    self.problem(&format!("{at}.views"), "apply to JSON members only");
                }
                named.tokens = self.token_options(&at, format, encrypt, "`encrypt` rules");
                if let Some(types) = value_type {
                    if !decrypt {
                        self.problem(
                            &format!("{at}.type"),
                            "applies to `request.decrypt` rules only",
                        );
                    }
                    match JsonTypes::parse(types.into_vec().iter().map(String::as_str)) {
                        Ok(t) => named.accepts = Some(t),
                        Err(m) => self.problem(&format!("{at}.type"), m),
                    }
                }
                named_out.push(named);
                continue;
            }
            let mut selector = match Selector::compile(path, context) {
                Ok(s) => s,
                Err(m) => {
                    self.problem(&at, m);
                    continue;
                }
            };
            selector.seal_null = seal_null;
            if !decrypt {
                selector.views = self.views(&format!("{at}.views"), views);
            }
            selector.tokens = self.token_options(&at, format, encrypt, "`encrypt` rules");
            if let Some(types) = value_type {
                if !decrypt {
                    self.problem(
                        &format!("{at}.type"),
                        "applies to `request.decrypt` rules only",
                    );
                }
                let names = types.into_vec();
                match JsonTypes::parse(names.iter().map(String::as_str)) {
                    Ok(t) => selector.accepts = Some(t),
                    Err(m) => self.problem(&format!("{at}.type"), m),
                }
            }
            if decrypt && selector.context.is_none() && !selector.has_fixed_context() {
                self.problem(
                    &at,
                    "the member names this selector matches are chosen by the client, so any token would open under them: \
                     give it an explicit `context` (the one its tokens were sealed with)",
                );
            }
            out.push(selector);
        }
        (out, named_out)
    }

    fn rules(
        &mut self,
        key: &str,
        raw: &RawRoute,
        keys: &KeySources,
        policy: &FieldPolicy,
    ) -> RouteRules {
        let response = raw.response.as_ref().map(|r| {
            let mut headers = Vec::new();
            let mut header_rules = |named: Vec<NamedField>, op: Operation| {
                headers.extend(named.into_iter().map(|field| HeaderRule {
                    field,
                    op,
                    source: RuleSource::Route,
                }));
            };
            let (encrypt, named) =
                self.selectors(&format!("{key}.response.encrypt"), &r.encrypt, false);
            header_rules(named, Operation::Seal);
            let (redact, named) =
                self.selectors(&format!("{key}.response.redact"), &r.redact, false);
            header_rules(named, Operation::Redact);
            let mut mask = Vec::new();
            for (i, m) in r.mask.iter().enumerate() {
                let op = Operation::Mask {
                    keep_last: m.keep_last,
                };
                match NamedField::parse(&m.path, None) {
                    Some(Ok(field)) if field.carrier.in_responses() => {
                        header_rules(vec![field], op)
                    }
                    Some(Ok(_)) => self.problem(
                        &format!("{key}.response.mask.{i}.path"),
                        "a response has no form fields or query string",
                    ),
                    Some(Err(msg)) => self.problem(&format!("{key}.response.mask.{i}.path"), msg),
                    None => match Selector::compile(&m.path, None) {
                        Ok(selector) => mask.push(MaskRule {
                            selector,
                            keep_last: m.keep_last,
                        }),
                        Err(msg) => self.problem(&format!("{key}.response.mask.{i}.path"), msg),
                    },
                }
            }
            let mut rules = ResponseRules::new(encrypt, redact, mask, r.on_non_json)
                .rules()
                .to_vec();
            for (list, name, op) in [
                (&r.mask_email, "mask_email", Operation::MaskEmail),
                (&r.year, "year", Operation::Year),
            ] {
                let (selectors, named) =
                    self.selectors(&format!("{key}.response.{name}"), list, false);
                header_rules(named, op);
                for selector in selectors {
                    rules.push(ResponseRule::new(selector, op, RuleSource::Route));
                }
            }
            ResponseRules::ordered(rules, r.on_non_json).with_headers(headers)
        });
        let request = raw.request.as_ref().map(|r| {
            if r.max_age == Some(0) {
                self.problem(
                    &format!("{key}.request.max_age"),
                    "must be greater than zero",
                );
            }
            let (decrypt, named) =
                self.selectors(&format!("{key}.request.decrypt"), &r.decrypt, true);
            if r.require_encrypted && keys.client.is_some() {
                for (i, s) in decrypt.iter().enumerate() {
                    if s.accepts.is_none() {
                        self.warning(
                            &format!("{key}.request.decrypt.{i}"),
                            "a client-encrypted value with `cty: json` may open to any JSON value here, objects included \
                             (e.g. a query operator); declare `type` (string, number, …) to accept only what the app expects",
                        );
                    }
                }
            }
            RequestRules::new(
                decrypt,
                r.require_encrypted,
                r.max_age.map(std::time::Duration::from_secs),
            )
            .with_named(named)
            .require_context(r.require_context)
        });
        let subject = raw.subject.as_deref().and_then(|s| {
            if let Some(name) = s.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                return Some(SubjectSource::Param(name.to_string()));
            }
            if let Some(claim) = s.strip_prefix("claim:").filter(|c| !c.is_empty()) {
                return Some(SubjectSource::Claim(claim.to_string()));
            }
            if let Some(member) = s.strip_prefix("member:").filter(|m| !m.is_empty()) {
                return Some(SubjectSource::Member(member.into()));
            }
            self.problem(
                &format!("{key}.subject"),
                "name a path parameter (`\"{id}\"`), a JWT claim (`\"claim:sub\"`) or a member of each record in the answer (`\"member:owner_id\"`)",
            );
            None
        });
        let per_subject = response.as_ref().is_some_and(|r| {
            r.rules()
                .iter()
                .any(|rule| rule.selector.tokens.per_subject)
                || r.headers().iter().any(|h| h.field.tokens.per_subject)
        });
        // A decrypt path (or header) the route seals per subject takes subject-bound tokens
        // only.
        let mut request = request;
        if let (Some(resp), Some(req)) = (&response, request.as_mut()) {
            for sel in req.decrypt.iter_mut() {
                sel.tokens.per_subject |= resp
                    .rules()
                    .iter()
                    .any(|r| r.selector.tokens.per_subject && r.selector.source == sel.source);
            }
            for named in req.named.iter_mut() {
                named.tokens.per_subject |= resp.headers().iter().any(|h| {
                    h.field.tokens.per_subject
                        && h.field.carrier == named.carrier
                        && h.field.name == named.name
                });
            }
        }
        let opens_per_subject = request.as_ref().is_some_and(|r| {
            r.decrypt.iter().any(|sel| sel.tokens.per_subject)
                || r.named.iter().any(|n| n.tokens.per_subject)
        });
        if opens_per_subject && matches!(subject, Some(SubjectSource::Member(_))) {
            self.warning(
                &format!("{key}.subject"),
                "a request's own members never name its subject (the client would choose whose tokens open): this route opens no subject-bound token in requests; give writes a route with a path parameter or claim subject",
            );
        }
        if per_subject && raw.subject.is_none() {
            self.problem(
                &format!("{key}.response.encrypt"),
                "`per_subject` seals for the route's data subject: give the route a `subject`",
            );
        }
        let mut rules = RouteRules {
            response,
            request,
            subject,
            envelope: raw.envelope,
            policy_opt_out: !raw.fields,
        };
        let seals = rules.response.as_ref().is_some_and(ResponseRules::seals);
        let opens = rules.request.as_ref().is_some_and(|r| !r.is_empty());
        if seals && keys.keyring.is_none() {
            self.problem(key, "encrypt rules need `keys.keyring`");
        }
        // Decrypt paths open fs1 tokens (keyring) and client-encrypted JWE values (RSA/HPKE
        // keys): either is enough.
        if opens && keys.keyring.is_none() && keys.client.is_none() {
            self.problem(
                key,
                "decrypt rules need `keys.keyring` (fs1 tokens) or `keys.rsa_private_key`/`keys.hpke_private_key` (JWE values)",
            );
        }
        // The policy's `encrypt` entries open values on this route too, and `max_age` applies
        // to them.
        let policy_opens = raw.fields && (!policy.decrypt.is_empty() || !policy.named.is_empty());
        if !rules.envelope
            && !policy_opens
            && rules
                .request
                .as_ref()
                .is_some_and(|r| r.max_age.is_some() && r.is_empty())
        {
            self.problem(
                &format!("{key}.request.max_age"),
                "applies to JWE values at `request.decrypt` paths, and this route has none",
            );
        }
        if rules.envelope {
            if !keys.has_envelope_keys() {
                self.problem(
                    &format!("{key}.envelope"),
                    "needs `keys.rsa_private_key` or `keys.hpke_private_key`",
                );
            }
            if !rules.response.as_ref().is_none_or(ResponseRules::is_empty)
                || !rules.request.as_ref().is_none_or(RequestRules::is_empty)
            {
                self.problem(
                    &format!("{key}.envelope"),
                    "an envelope route seals whole bodies and cannot also have field rules",
                );
            }
        }
        // The field policy, after the route's own rules (which win on the nodes they select).
        // An envelope route's bodies are sealed whole: there are no fields to apply it to.
        if raw.fields && !rules.envelope && !policy.is_empty() {
            if !policy.response.is_empty() || !policy.headers.is_empty() {
                rules.response = Some(ResponseRules::with_policy(rules.response.as_ref(), policy));
            }
            if !policy.decrypt.is_empty() || !policy.named.is_empty() {
                rules.request = Some(RequestRules::with_policy(rules.request.as_ref(), policy));
            }
        }
        rules
    }
}

/// A field policy entry as `check` lists it.
fn describe_entry(raw: &RawFieldRule, op: Operation) -> String {
    let mut notes = Vec::new();
    if let Operation::Mask { keep_last } = op {
        notes.push(format!("keep_last {keep_last}"));
    }
    if let Some(c) = &raw.context {
        notes.push(format!("context {c}"));
    }
    notes.extend(
        TokenOptions {
            ttl: raw.ttl,
            searchable: raw.searchable,
            per_subject: raw.per_subject,
        }
        .notes(),
    );
    if !raw.views.is_empty() {
        let views: Vec<String> = raw
            .views
            .iter()
            .map(|v| {
                let show = v.show.name();
                let mut who = Vec::new();
                if v.when.authenticated {
                    who.push("authenticated".to_string());
                }
                if let Some(s) = &v.when.subject {
                    who.push(format!("subject = {s}"));
                }
                for (k, val) in &v.when.claims {
                    who.push(format!("{k} = {val}"));
                }
                for s in v
                    .when
                    .scope
                    .clone()
                    .map(OneOrMany::into_vec)
                    .unwrap_or_default()
                {
                    who.push(format!("scope {s}"));
                }
                format!("{} -> {show}", who.join(" and "))
            })
            .collect();
        notes.push(format!("views: {}", views.join("; ")));
    }
    let carrier = NamedField::parse(&raw.select, None)
        .and_then(Result::ok)
        .map(|n| n.carrier);
    match (op, carrier) {
        (Operation::Seal, Some(c)) if !c.in_responses() => notes.push("opened in requests".into()),
        (Operation::Seal, _) => notes.push("also opened in requests".into()),
        _ => {}
    }
    if notes.is_empty() {
        format!("{} {}", op.name(), raw.select)
    } else {
        format!("{} {} ({})", op.name(), raw.select, notes.join("; "))
    }
}

/// The operation an action names (a `fields` entry's `action`, a view's `show`): the one
/// place a configured name becomes an [`Operation`]. The error is about `keep_last`.
fn operation(action: RawAction, keep_last: Option<usize>) -> Result<Operation, &'static str> {
    Ok(match (action, keep_last) {
        (RawAction::Mask, Some(keep_last)) => Operation::Mask { keep_last },
        (RawAction::Mask, None) => {
            return Err("`mask` needs `keep_last` (how many characters stay visible)")
        }
        (_, Some(_)) => return Err("applies to `mask` only"),
        (RawAction::Encrypt, None) => Operation::Seal,
        (RawAction::Redact, None) => Operation::Redact,
        (RawAction::MaskEmail, None) => Operation::MaskEmail,
        (RawAction::Year, None) => Operation::Year,
    })
}

/// Why a token lifetime is refused, if it is: shorter than [`token::MIN_TOKEN_TTL`] (the
/// clock skew every opening tolerates would be a large part of it), or in fractions of a second
/// (tokens carry whole seconds).
fn ttl_problem(ttl: std::time::Duration) -> Option<String> {
    use crate::crypto::token;
    if ttl < token::MIN_TOKEN_TTL {
        return Some(format!(
            "must be at least {} (openings tolerate {} s of clock skew)",
            humantime::format_duration(token::MIN_TOKEN_TTL),
            token::EXPIRY_SKEW_SECS
        ));
    }
    if ttl.subsec_nanos() != 0 {
        return Some("whole seconds only".into());
    }
    None
}
