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
use crate::transform::carrier::NamedField;
pub use crate::transform::operation::Operation;
use crate::transform::selector::Selector;
use crate::transform::splice::Plan;
use crate::transform::subject::DataSubject;

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
    /// Who calls (the JWT verifier), for views by caller identity; `None` without `identity`.
    pub identity: Option<crate::identity::Verifier>,
    /// The top-level field policy (contract §8), already merged into every route's rules;
    /// kept for `check` and `explain`.
    pub fields: FieldPolicy,
    /// The rules for requests that match no route: the field policy's alone.
    pub unmatched_rules: RouteRules,
    /// The guard (contract §9), when configured.
    pub guard: Option<crate::guard::Guard>,
    /// How long a client value's `jti` is remembered, on every route: the largest
    /// `request.max_age` configured, at least 300 s (contract §3 of 1.1).
    pub replay_window: Duration,
    /// Where `jti`s are remembered: this process, or a Redis the replicas share.
    pub replay: ReplayStoreSettings,
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

/// What applies to one request: the route it matches and the field rules of each direction.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    /// The first route matching method and path (`None`: the request matches no route).
    pub route: Option<&'a Route>,
    /// Another route on the same path whose own response rules the answer gets (they cover
    /// their path for every method, contract §7), when it is not `route` itself.
    pub cover: Option<&'a Route>,
    /// The rules applied to the app's answer: the cover's, else the route's (its own merged
    /// with the field policy), else, for a request matching no route, the policy's alone.
    pub response: Option<&'a ResponseRules>,
    /// The rules applied to the client's body: the route's, or the policy's alone.
    pub request: Option<&'a RequestRules>,
}

impl Settings {
    /// The route and rules for `method` and `path` (one function, so `run` and `explain`
    /// cannot disagree).
    pub fn matched(&self, method: &http::Method, path: &str) -> Matched<'_> {
        let (route, cover) = self
            .routes
            .find_with_cover(method, path, |r| r.rules.has_own_response_rules());
        let rules = route.map_or(&self.unmatched_rules, |r| &r.rules);
        let response = match cover {
            Some(c) => c.rules.response_rules(),
            None => rules.response_rules(),
        };
        Matched {
            route,
            cover: cover.filter(|c| route.is_none_or(|r| !std::ptr::eq(*c, r))),
            response,
            request: rules.request_rules(),
        }
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
    /// `keys.keyring_kek_command` (the argv is not shown by `Debug`).
    pub keyring_kek_command: Option<crate::crypto::kek_command::KekCommand>,
    /// How the loaded keyring was unwrapped; `None` for a plain one (or none).
    pub keyring_kek: Option<KeyringKek>,
    pub rotation: RotationPolicy,
}

/// Where the KEK that opened the keyring came from (for `check`; never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringKek {
    /// `passphrase` or `raw KEK`.
    pub kind: &'static str,
    /// The flag, key or variable, e.g. `keys.keyring_kek_command (program `sh`, 2 arguments)`.
    pub origin: String,
    /// The timeout and cache time, when a command printed it.
    pub command: Option<crate::crypto::kek_command::Limits>,
    /// Whether it came from the in-memory cache of a command's KEK.
    pub cached: bool,
}

impl fmt::Display for KeyringKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the {} from {}", self.kind, self.origin)?;
        if let Some(l) = self.command {
            write!(
                f,
                "; timeout {}, cache {}",
                humantime::format_duration(l.timeout),
                if l.cache.is_zero() {
                    "off (runs at every load)".to_string()
                } else {
                    humantime::format_duration(l.cache).to_string()
                }
            )?;
        }
        Ok(())
    }
}

impl KeySources {
    /// Whether a client key is configured that envelopes can wrap their session key with (RSA,
    /// or HPKE: X25519 or X-Wing). During `check` with a broken key file this is false, but the
    /// file's problem is reported too.
    pub fn has_envelope_keys(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_empty())
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
    /// Longest quiet gap inside a response body once its head has arrived.
    pub upstream_read: Duration,
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
    /// Requests in flight to the app at once, across every worker.
    pub max_upstream_requests: usize,
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

/// The transforms a route asks for: its own rules merged with the field policy's (contract
/// §8), compiled once.
#[derive(Debug, Clone, Default)]
pub struct RouteRules {
    pub response: Option<ResponseRules>,
    pub request: Option<RequestRules>,
    /// Whose data the route carries, for subject-bound tokens (`fsb1`).
    pub subject: Option<SubjectSource>,
    pub envelope: bool,
    /// `fields: false`: the field policy does not apply here.
    pub policy_opt_out: bool,
}

impl RouteRules {
    /// The response rules, when there are any.
    pub fn response_rules(&self) -> Option<&ResponseRules> {
        self.response.as_ref().filter(|r| !r.is_empty())
    }

    /// The request rules, when there are any.
    pub fn request_rules(&self) -> Option<&RequestRules> {
        self.request.as_ref().filter(|r| !r.is_empty())
    }

    /// Whether the route wrote response rules of its own; such a route covers its path for
    /// every method (see `RouteTable::find_with_cover`). The field policy alone does not.
    pub fn has_own_response_rules(&self) -> bool {
        self.response_rules().is_some_and(ResponseRules::has_own)
    }

    /// Whether the route wrote any field rule of its own (or is an envelope route).
    pub fn has_own_rules(&self) -> bool {
        self.envelope
            || self.has_own_response_rules()
            || self.request_rules().is_some_and(RequestRules::has_own)
    }

    /// True when the route only proxies (its bodies stream untouched).
    pub fn is_passthrough(&self) -> bool {
        !self.envelope && self.response_rules().is_none() && self.request_rules().is_none()
    }

    /// Human summary for `fieldseal check`: the route's own rules, then what the field policy
    /// adds.
    pub fn describe(&self) -> Vec<String> {
        let list = |sels: &mut dyn Iterator<Item = &Selector>| -> String {
            sels.map(|s| match &s.context {
                Some(c) => format!("{} (context {c})", s.source),
                None => s.source.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
        };
        let mut out = Vec::new();
        if let Some(r) = &self.response {
            for kind in Operation::KINDS {
                let own: Vec<String> = r
                    .rules()
                    .iter()
                    .filter(|rule| rule.source == RuleSource::Route && rule.op.name() == kind)
                    .map(|rule| {
                        let mut notes = Vec::new();
                        match (rule.op, &rule.selector.context) {
                            (Operation::Mask { keep_last }, _) => {
                                notes.push(format!("keep_last {keep_last}"))
                            }
                            (_, Some(c)) => notes.push(format!("context {c}")),
                            (_, None) => {}
                        }
                        notes.extend(rule.selector.tokens.notes());
                        notes.extend(crate::transform::view::View::describe_all(
                            &rule.selector.views,
                        ));
                        if notes.is_empty() {
                            rule.selector.source.to_string()
                        } else {
                            format!("{} ({})", rule.selector.source, notes.join("; "))
                        }
                    })
                    .collect();
                let own_headers = r
                    .headers()
                    .iter()
                    .filter(|h| h.source == RuleSource::Route && h.op.name() == kind)
                    .map(|h| match h.op {
                        Operation::Mask { keep_last } => {
                            format!("{} (keep_last {keep_last})", h.field.source)
                        }
                        _ => describe_named(&h.field),
                    });
                let own: Vec<String> = own.into_iter().chain(own_headers).collect();
                if !own.is_empty() {
                    out.push(format!("response.{kind}: {}", own.join(", ")));
                }
            }
            if r.has_own() && r.on_non_json == OnNonJson::Pass {
                out.push("response.on_non_json: pass".into());
            }
        }
        if let Some(r) = &self.request {
            if r.has_own() {
                let json = (r.own > 0).then(|| list(&mut r.decrypt[..r.own].iter()));
                let named = r.named[..r.own_named].iter().map(describe_named);
                let all: Vec<String> = json.into_iter().chain(named).collect();
                out.push(format!("request.decrypt: {}", all.join(", ")));
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
        match &self.subject {
            Some(SubjectSource::Param(p)) => out.push(format!("subject: {{{p}}}")),
            Some(SubjectSource::Claim(c)) => out.push(format!("subject: claim:{c}")),
            Some(SubjectSource::Member(m)) => out.push(format!("subject: member:{m}")),
            None => {}
        }
        if self.envelope {
            out.push("envelope: true".into());
        }
        let policy = self.response.as_ref().map_or(0, |r| {
            r.rules()
                .iter()
                .filter(|rule| rule.source == RuleSource::Policy)
                .count()
        });
        if self.policy_opt_out {
            out.push("fields: false (the field policy does not apply)".into());
        } else if policy > 0 {
            out.push(format!(
                "fields: the policy's {policy} rule(s) on every JSON body (this route's own rules win on the nodes they select)"
            ));
        }
        out
    }
}

/// `replay.store`.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayStoreSettings {
    /// This process's memory (`limits.replay_cache_entries`): one replica.
    Memory,
    /// Redis, shared by every replica (docs/replicas.md).
    Redis(Box<crate::replay::redis::RedisSettings>),
}

/// Where a route's data subject comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectSource {
    /// `"{id}"`: a path parameter of the route.
    Param(String),
    /// `"claim:sub"`: a string claim of the caller's verified JWT (`identity.jwt`).
    Claim(String),
    /// `"member:owner_id"`: in answers, this member of the record holding each value
    /// (`transform::subject`); requests get no subject from it.
    Member(Arc<str>),
}

impl Route {
    /// This request's data subject, as the route's `subject` names it: `segments` are the
    /// request's normalised path segments, `claims` the caller's verified claims (if any).
    /// The proxy and `explain` both read it here.
    pub fn data_subject<S: AsRef<str>>(
        &self,
        segments: &[S],
        claims: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> DataSubject {
        match &self.rules.subject {
            None => DataSubject::Unknown,
            Some(SubjectSource::Param(name)) => {
                DataSubject::known(self.path.param(name, segments).map(str::to_string))
            }
            Some(SubjectSource::Claim(claim)) => DataSubject::known(
                claims
                    .and_then(|c| c.get(claim))
                    .and_then(|v| v.as_str())
                    .filter(|v| !v.is_empty())
                    .map(str::to_string),
            ),
            Some(SubjectSource::Member(name)) => DataSubject::Member(name.clone()),
        }
    }
}

/// A carrier rule as `check` lists it.
fn describe_named(n: &NamedField) -> String {
    let name = n.source.split_once(':').map_or("", |(_, name)| name);
    let mut notes = Vec::new();
    if n.context != name {
        notes.push(format!("context {}", n.context));
    }
    notes.extend(n.tokens.notes());
    if notes.is_empty() {
        n.source.to_string()
    } else {
        format!("{} ({})", n.source, notes.join("; "))
    }
}

/// The top-level `fields` list, compiled (contract §8).
#[derive(Debug, Clone, Default)]
pub struct FieldPolicy {
    /// Response rules, in the order written (`source: Policy`).
    pub response: Vec<ResponseRule>,
    /// The `encrypt` entries' selectors, which also open tokens in request bodies.
    pub decrypt: Vec<Selector>,
    /// Entries naming a response header (`header:…`), any action.
    pub headers: Vec<HeaderRule>,
    /// `encrypt` entries naming a form field, query parameter or header: opened in requests.
    pub named: Vec<NamedField>,
    /// Every entry as `check` lists it, in the order written (`fields.N` is the N-th).
    pub entries: Vec<String>,
}

impl FieldPolicy {
    pub fn is_empty(&self) -> bool {
        self.response.is_empty() && self.headers.is_empty() && self.named.is_empty()
    }

    /// The rules of a route that writes none of its own, or of a request that matches no
    /// route.
    pub fn rules_alone(&self) -> RouteRules {
        RouteRules {
            response: (!self.response.is_empty() || !self.headers.is_empty())
                .then(|| ResponseRules::with_policy(None, self)),
            request: (!self.decrypt.is_empty() || !self.named.is_empty())
                .then(|| RequestRules::with_policy(None, self)),
            subject: None,
            envelope: false,
            policy_opt_out: false,
        }
    }
}

/// Where a rule was written: on the route, or in the top-level `fields` policy (contract §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleSource {
    Route,
    Policy,
}

/// A response rule on a header (`header:x-account`): what to do to its values.
#[derive(Debug, Clone)]
pub struct HeaderRule {
    pub field: NamedField,
    pub op: Operation,
    pub source: RuleSource,
}

/// One response rule: a selector and what to do to the nodes it selects.
#[derive(Debug, Clone)]
pub struct ResponseRule {
    pub selector: Selector,
    /// What every caller gets unless one of `views` holds (contract §8's action).
    pub op: Operation,
    pub source: RuleSource,
}

impl ResponseRule {
    pub fn new(selector: Selector, op: Operation, source: RuleSource) -> Self {
        Self {
            selector,
            op,
            source,
        }
    }
}

/// A route's response rules as one table in precedence order: when several rules select the
/// same node, the first of them handles it (and a node inside another selected node belongs
/// to the outer one). Both engines (`Value` and byte splice) and `explain` read this one
/// order, so it is decided here and nowhere else:
///
/// 1. the route's own rules before the field policy's (contract §8: "a node a route rule
///    selects is handled by the route rule alone");
/// 2. within each, `encrypt` before `redact` before `mask`: sealing keeps the value
///    recoverable for the client's round trip, which a mask or redaction on the same node
///    would lose;
/// 3. then the order written.
#[derive(Debug, Clone, Default)]
pub struct ResponseRules {
    rules: Vec<ResponseRule>,
    /// Rules on response headers, in the same precedence order (the first naming a header
    /// handles it).
    headers: Vec<HeaderRule>,
    pub on_non_json: OnNonJson,
    /// The byte-level plan over the rules' selectors (same indexes), when they are all
    /// simple enough for it.
    plan: Option<Plan>,
}

impl ResponseRules {
    /// A route's own rules, by kind.
    pub fn new(
        encrypt: Vec<Selector>,
        redact: Vec<Selector>,
        mask: Vec<MaskRule>,
        on_non_json: OnNonJson,
    ) -> Self {
        let rules = encrypt
            .into_iter()
            .map(|selector| (selector, Operation::Seal))
            .chain(redact.into_iter().map(|s| (s, Operation::Redact)))
            .chain(mask.into_iter().map(|m| {
                (
                    m.selector,
                    Operation::Mask {
                        keep_last: m.keep_last,
                    },
                )
            }))
            .map(|(selector, op)| ResponseRule::new(selector, op, RuleSource::Route))
            .collect();
        Self::ordered(rules, on_non_json)
    }

    /// Rules already in precedence order (see the type's documentation).
    pub fn ordered(mut rules: Vec<ResponseRule>, on_non_json: OnNonJson) -> Self {
        // Stable: the written order survives within each (source, kind).
        rules.sort_by_key(|r| (r.source as u8, kind_rank(r.op)));
        let queries: Vec<&JpQuery> = rules.iter().map(|r| &r.selector.query).collect();
        let plan = Plan::compile(&queries);
        Self {
            rules,
            headers: Vec::new(),
            on_non_json,
            plan,
        }
    }

    /// With rules on response headers (sorted into the same precedence order).
    pub fn with_headers(mut self, mut headers: Vec<HeaderRule>) -> Self {
        headers.sort_by_key(|h| (h.source as u8, kind_rank(h.op)));
        self.headers = headers;
        self
    }

    /// The rules on response headers, in precedence order.
    pub fn headers(&self) -> &[HeaderRule] {
        &self.headers
    }

    /// These rules followed by the field policy's (which the route's own win over). A route
    /// with no rules of its own lets non-JSON bodies pass, as the policy does everywhere.
    pub fn with_policy(own: Option<&ResponseRules>, policy: &FieldPolicy) -> Self {
        let mut rules: Vec<ResponseRule> = own.map(|o| o.rules.clone()).unwrap_or_default();
        let on_non_json = match own {
            Some(o) if !o.rules.is_empty() => o.on_non_json,
            _ => OnNonJson::Pass,
        };
        rules.extend(policy.response.iter().cloned());
        let mut headers: Vec<HeaderRule> = own.map(|o| o.headers.clone()).unwrap_or_default();
        headers.extend(policy.headers.iter().cloned());
        Self::ordered(rules, on_non_json).with_headers(headers)
    }

    /// Every rule, in precedence order.
    pub fn rules(&self) -> &[ResponseRule] {
        &self.rules
    }

    /// The selectors whose nodes are sealed (route rules first), for the rewrap tool.
    pub fn sealing(&self) -> impl Iterator<Item = &Selector> + '_ {
        self.rules
            .iter()
            .filter(|r| r.op == Operation::Seal)
            .map(|r| &r.selector)
    }

    /// Whether any rule seals (and so needs the keyring).
    pub fn seals(&self) -> bool {
        let view_seals = self.rules.iter().any(|r| {
            r.selector
                .views
                .iter()
                .any(|v| v.show == Some(Operation::Seal))
        });
        self.sealing().next().is_some()
            || view_seals
            || self.headers.iter().any(|h| h.op == Operation::Seal)
    }

    /// Whether the route wrote rules of its own (not only the field policy's).
    pub fn has_own(&self) -> bool {
        self.rules.iter().any(|r| r.source == RuleSource::Route)
            || self.headers.iter().any(|h| h.source == RuleSource::Route)
    }

    /// Whether the route wrote rules of its own on the body (a route with header rules
    /// alone leaves bodies to the field policy).
    pub fn has_own_body_rules(&self) -> bool {
        self.rules.iter().any(|r| r.source == RuleSource::Route)
    }

    /// What each rule does for one caller (`None`: no valid token) on a request whose path
    /// parameters `param` gives: the first view that holds, else the rule's own action.
    pub fn sight(
        &self,
        caller: Option<crate::transform::view::Seen<'_>>,
        param: &dyn Fn(&str) -> Option<String>,
    ) -> crate::transform::view::Sight {
        use crate::transform::view::{choose, Sight};
        if !self.has_views() {
            return Sight::default();
        }
        Sight::new(
            self.rules
                .iter()
                .map(|rule| choose(rule.op, &rule.selector.views, caller, param))
                .collect(),
        )
    }

    /// Whether any rule's action depends on who calls (views).
    pub fn has_views(&self) -> bool {
        self.rules.iter().any(|r| !r.selector.views.is_empty())
    }

    /// Whether any rule applies to the body (the rest apply to headers alone).
    pub fn has_body_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.headers.is_empty()
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

/// Precedence among kinds when two rules select one node: the order of [`Operation::KINDS`]
/// (sealing keeps a value recoverable; then the more destructive transforms first).
fn kind_rank(op: Operation) -> usize {
    Operation::KINDS
        .iter()
        .position(|k| *k == op.name())
        .expect("every operation is listed in KINDS")
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
    /// How many of `decrypt` (the first ones) the route wrote itself; the rest come from the
    /// field policy's `encrypt` entries (contract §8), which the route's own win over.
    own: usize,
    /// Values named in forms, query strings and headers (the route's own, then the field
    /// policy's `encrypt` entries naming one).
    pub named: Vec<NamedField>,
    /// How many of `named` (the first ones) the route wrote itself.
    own_named: usize,
    /// The byte-level plan over the decrypt selectors, when they are simple enough for it.
    plan: Option<Plan>,
}

impl RequestRules {
    pub fn new(decrypt: Vec<Selector>, require_encrypted: bool, max_age: Option<Duration>) -> Self {
        let queries: Vec<&JpQuery> = decrypt.iter().map(|s| &s.query).collect();
        let plan = Plan::compile(&queries);
        Self {
            own: decrypt.len(),
            decrypt,
            require_encrypted,
            max_age,
            require_context: false,
            named: Vec::new(),
            own_named: 0,
            plan,
        }
    }

    /// With values to open in forms, query strings and headers.
    pub fn with_named(mut self, named: Vec<NamedField>) -> Self {
        self.own_named = named.len();
        self.named = named;
        self
    }

    /// The values this request opens in `carrier`.
    pub fn named_in(
        &self,
        carrier: crate::transform::carrier::Carrier,
    ) -> impl Iterator<Item = &NamedField> {
        self.named.iter().filter(move |n| n.carrier == carrier)
    }

    /// The rule for a value named `name` found in `carrier`. A query parameter falls back to
    /// the form rules: WSGI frameworks merge the two (Flask's `request.values` reads the query
    /// string first), so `?ssn=` must not carry what `form:ssn` refuses.
    pub fn rule_for(
        &self,
        carrier: crate::transform::carrier::Carrier,
        name: &str,
    ) -> Option<&NamedField> {
        use crate::transform::carrier::Carrier;
        let exact = self.named_in(carrier).find(|n| n.name == name);
        match carrier {
            Carrier::Query => {
                exact.or_else(|| self.named_in(Carrier::Form).find(|n| n.name == name))
            }
            _ => exact,
        }
    }

    /// Whether the query string has names to check (its own rules, or form rules).
    pub fn reads_query(&self) -> bool {
        use crate::transform::carrier::Carrier;
        self.named
            .iter()
            .any(|n| matches!(n.carrier, Carrier::Query | Carrier::Form))
    }

    /// Whether a form body has fields to open (so form bodies are read, and JSON bodies
    /// refused unless there are JSON rules too).
    pub fn opens_forms(&self) -> bool {
        self.named_in(crate::transform::carrier::Carrier::Form)
            .next()
            .is_some()
    }

    /// Whether the route wrote body rules of its own (JSON paths or form fields): then it
    /// takes only the bodies they read (415 for others).
    pub fn strict_body(&self) -> bool {
        self.own > 0
            || self.named[..self.own_named]
                .iter()
                .any(|n| n.carrier == crate::transform::carrier::Carrier::Form)
    }

    /// Whether the route wrote JSON decrypt rules of its own: then a body that is not JSON
    /// (nor a form the route opens) is refused (415).
    pub fn has_own_json(&self) -> bool {
        self.own > 0
    }

    /// These rules (if any) with the field policy's sealing selectors after them: tokens the
    /// policy sealed are opened wherever they come back, as if listed in `request.decrypt`;
    /// the route's `require_encrypted`, `max_age` and `require_context` apply to them too.
    pub fn with_policy(own: Option<&RequestRules>, policy: &FieldPolicy) -> Self {
        let mut decrypt: Vec<Selector> = own.map(|o| o.decrypt.clone()).unwrap_or_default();
        let written = decrypt.len();
        decrypt.extend(policy.decrypt.iter().cloned());
        let mut named: Vec<NamedField> = own.map(|o| o.named.clone()).unwrap_or_default();
        let named_written = named.len();
        named.extend(policy.named.iter().cloned());
        let base = Self::new(
            decrypt,
            own.is_some_and(|o| o.require_encrypted),
            own.and_then(|o| o.max_age),
        )
        .require_context(own.is_some_and(|o| o.require_context));
        Self {
            own: written,
            named,
            own_named: named_written,
            ..base
        }
    }

    /// Whether the route wrote decrypt rules of its own. Only then is a request body that is
    /// not JSON refused (415); the policy alone lets other bodies pass untouched.
    pub fn has_own(&self) -> bool {
        self.own > 0 || self.own_named > 0
    }

    /// With `request.require_context`.
    pub fn require_context(mut self, required: bool) -> Self {
        self.require_context = required;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.decrypt.is_empty() && self.named.is_empty()
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
