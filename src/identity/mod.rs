//! Who calls: verifies the caller's JWT so the view of a response can depend on it.
//!
//! A [`Verifier`] is compiled once from `identity.jwt` ([`RawIdentity`]) and answers, for the
//! headers of each request, an [`Identity`]: [`Identity::Anonymous`] when the token header is
//! absent, [`Identity::Invalid`] with a stable [`InvalidReason`] when anything about it is
//! wrong, and [`Identity::Verified`] with the [`Caller`] otherwise. It fails closed: the caller
//! maps both `Anonymous` and `Invalid` to the most restrictive view.
//!
//! What is checked, in order: one header, `Bearer <token>`, at most [`MAX_TOKEN_BYTES`]; the
//! JOSE header's `alg` is in the configured list (never `none`, never `HS*`: a JWKS is public,
//! so a shared secret in one lets anyone sign); the key is picked by `kid` (a token without
//! `kid` may use the only key of a one-key set) and its type and own `alg` agree with the
//! token's; the signature (jsonwebtoken 12 on aws-lc-rs); `iss` is one configured issuer (a
//! string: jsonwebtoken alone also accepts a list); `aud` names a configured audience; `exp` is
//! present and not past, `nbf` and `iat` not in the future — each with the configured leeway;
//! `sub` is a non-empty string. The time claims are checked here rather than by jsonwebtoken
//! because it has no `iat` check and reads the clock itself, which the leeway tests need to set.
//!
//! Nothing in this module logs a token, a claim value or key material: reasons are names, and
//! [`Caller`]'s `Debug` prints claim names only.

mod jwks;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{HeaderMap, HeaderName};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::raw::OneOrMany;

pub use jwks::{FETCH_TIMEOUT, MAX_JWKS_BYTES, MIN_RSA_MODULUS_BITS, UNKNOWN_KID_REFETCH_INTERVAL};

use jwks::{KeySet, Remote};

/// Longest token accepted, checked before any decoding. Access tokens are a few hundred bytes
/// to 2 KiB; 8 KiB leaves room for generous claim sets while bounding the base64 and JSON work
/// an unauthenticated caller can make the proxy do on every request.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Clock skew tolerated on `exp`, `nbf` and `iat` when `leeway` is not set.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Largest `leeway`: beyond a few minutes it stops being skew and starts extending the life of
/// expired tokens.
pub const MAX_LEEWAY: Duration = Duration::from_secs(5 * 60);

/// The request header carrying the token when `header` is not set.
pub const DEFAULT_HEADER: &str = "authorization";

/// Interval of the background JWKS refresh when `refresh` is not set.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5 * 60);

/// Shortest `refresh`: the same pace as the unknown-`kid` refetch, so the proxy never polls
/// the issuer faster than it would on demand.
pub const MIN_REFRESH: Duration = UNKNOWN_KID_REFETCH_INTERVAL;

/// Longest `refresh`: a key the issuer withdrew (compromised, rotated out) stays trusted until
/// the next refresh, so it must come at least daily.
pub const MAX_REFRESH: Duration = Duration::from_secs(24 * 60 * 60);

/// Prefix of [`Verifier::subject_hash`]'s input, so the pseudonym cannot collide with a
/// SHA-256 computed for any other purpose over the same strings.
const SUBJECT_HASH_DOMAIN: &[u8] = b"fieldseal/identity/subject-hash/v1\0";

/// Bytes of SHA-256 kept by [`Verifier::subject_hash`]: 128 bits, collision-free in practice
/// for any number of callers, and short enough for a log line.
const SUBJECT_HASH_BYTES: usize = 16;

/// Tokens whose signature has verified, remembered so a caller's next requests skip the
/// signature (24 µs for RS256, 42 µs for EdDSA on the development machine; a token seen
/// again costs ~1 µs: `cargo bench --bench callers`). Bounded because each entry holds the token's claims (at most [`MAX_TOKEN_BYTES`]
/// each): 1,024 entries are at most 8 MiB, typically ~1 MiB; when full it is emptied and
/// refills with the callers still active.
pub const MAX_VERIFIED_TOKENS: usize = 1024;

/// The key prefix of every configuration problem.
const KEY: &str = "identity.jwt";

/// `identity` as written in the configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub jwt: RawJwt,
}

/// `identity.jwt` as written. The required keys are `Option`s so that [`compile`] can report
/// every missing one at once rather than serde stopping at the first.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    /// A JWK Set file (relative to the configuration's directory). Exactly one of
    /// `jwks_file` and `jwks_url`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWK Set served over `https://` (or `http://` to a loopback host).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Accepted `iss` values (required).
    #[serde(default)]
    pub issuer: Option<OneOrMany<String>>,
    /// Accepted `aud` values: the token must name at least one (required).
    #[serde(default)]
    pub audience: Option<OneOrMany<String>>,
    /// Accepted signature algorithms (required, non-empty; `none` and `HS*` refused).
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// Clock skew tolerated on `exp`, `nbf`, `iat` (default [`DEFAULT_LEEWAY`], at most
    /// [`MAX_LEEWAY`]).
    #[serde(default, with = "humantime_serde")]
    pub leeway: Option<Duration>,
    /// Request header carrying `Bearer <jwt>` (default [`DEFAULT_HEADER`]).
    #[serde(default)]
    pub header: Option<String>,
    /// `jwks_url` only: background refetch interval (default [`DEFAULT_REFRESH`]).
    #[serde(default, with = "humantime_serde")]
    pub refresh: Option<Duration>,
}

/// Who made a request.
#[derive(Debug, Clone)]
pub enum Identity {
    /// No token header at all.
    Anonymous,
    /// A token header that did not verify; the caller gets the most restrictive view.
    Invalid(InvalidReason),
    /// A verified token.
    Verified(Caller),
}

/// A caller whose token verified.
#[derive(Clone)]
pub struct Caller {
    /// The token's `sub` (non-empty).
    pub subject: String,
    /// Every claim of the token, as sent (signature, `iss`, `aud` and times verified).
    pub claims: Map<String, Value>,
}

impl fmt::Debug for Caller {
    /// Claim names only: the subject and the claim values are personal data and never logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("subject", &"[redacted]")
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why a token did not verify: stable snake_case names for metrics labels and audit lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidReason {
    /// The header is there but is not `Bearer <token>` (other scheme, no token).
    NotBearer,
    /// The token header was sent more than once: which one counts is ambiguous, so neither does.
    MultipleHeaders,
    /// Longer than [`MAX_TOKEN_BYTES`].
    TooLarge,
    /// Not a compact JWS: wrong number of parts, bad base64 or JSON, a claim of the wrong type,
    /// an unknown critical header.
    Malformed,
    /// `alg` not in the allowed list (`none` and `HS*` never are), or not one the selected key
    /// can verify (its type or its own `alg` disagree).
    AlgorithmNotAllowed,
    /// No key with the token's `kid` (or no `kid` and more than one key).
    UnknownKey,
    /// The signature does not verify with the selected key.
    BadSignature,
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    IssuedInFuture,
    /// No `exp`: a token that never expires is refused.
    MissingExpiry,
    /// `iss` missing, not a string, or not a configured issuer.
    WrongIssuer,
    /// `aud` missing or naming no configured audience.
    WrongAudience,
    /// `sub` missing, not a string, or empty.
    MissingSubject,
}

impl InvalidReason {
    /// Every reason, for pre-registering metrics labels.
    pub const ALL: &'static [InvalidReason] = &[
        InvalidReason::NotBearer,
        InvalidReason::MultipleHeaders,
        InvalidReason::TooLarge,
        InvalidReason::Malformed,
        InvalidReason::AlgorithmNotAllowed,
        InvalidReason::UnknownKey,
        InvalidReason::BadSignature,
        InvalidReason::Expired,
        InvalidReason::NotYetValid,
        InvalidReason::IssuedInFuture,
        InvalidReason::MissingExpiry,
        InvalidReason::WrongIssuer,
        InvalidReason::WrongAudience,
        InvalidReason::MissingSubject,
    ];

    /// The stable name (metrics label, audit field).
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::NotBearer => "not_bearer",
            InvalidReason::MultipleHeaders => "multiple_headers",
            InvalidReason::TooLarge => "too_large",
            InvalidReason::Malformed => "malformed",
            InvalidReason::AlgorithmNotAllowed => "algorithm_not_allowed",
            InvalidReason::UnknownKey => "unknown_key",
            InvalidReason::BadSignature => "bad_signature",
            InvalidReason::Expired => "expired",
            InvalidReason::NotYetValid => "not_yet_valid",
            InvalidReason::IssuedInFuture => "issued_in_future",
            InvalidReason::MissingExpiry => "missing_expiry",
            InvalidReason::WrongIssuer => "wrong_issuer",
            InvalidReason::WrongAudience => "wrong_audience",
            InvalidReason::MissingSubject => "missing_subject",
        }
    }
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Verifies callers' JWTs. Cheap to clone (one `Arc`); the key set is swapped atomically when
/// a `jwks_url` is refetched, so verification never waits on a fetch.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    header: HeaderName,
    issuers: Vec<String>,
    algorithms: Vec<Algorithm>,
    /// One jsonwebtoken `Validation` per allowed algorithm: jsonwebtoken refuses a
    /// `Validation` that lists algorithms of more than one family, so each token is decoded
    /// with the one of its own (already checked) `alg`.
    validations: HashMap<Algorithm, Validation>,
    leeway: Duration,
    keys: ArcSwap<KeySet>,
    /// `Some` for `jwks_url`.
    remote: Option<Remote>,
    /// Tokens already verified ([`MAX_VERIFIED_TOKENS`]): by SHA-256 of the token, the key
    /// set they verified under and their claims. The time claims are checked again on every
    /// use; a new key set (a refresh, a reload) makes every entry a miss.
    verified: std::sync::Mutex<HashMap<[u8; 32], Verified>>,
}

/// A token whose signature verified under `keys`.
struct Verified {
    keys: Arc<KeySet>,
    claims: Map<String, Value>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("header", &self.inner.header)
            .field("algorithms", &self.inner.algorithms)
            .field("keys", &self.inner.keys.load().keys.len())
            .field("remote", &self.inner.remote.is_some())
            .finish_non_exhaustive()
    }
}

/// A refusal, and whether fetching the JWKS again might help (a `kid` we do not know).
struct Rejection {
    reason: InvalidReason,
    kid_not_found: bool,
}

impl From<InvalidReason> for Rejection {
    fn from(reason: InvalidReason) -> Self {
        Rejection {
            reason,
            kid_not_found: false,
        }
    }
}

/// The part of the JOSE header read before the key is chosen. `alg` as a plain string so that
/// `none` is reported as a refused algorithm, not as an unparsable header.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Compiles `identity.jwt`, collecting every problem (each message starts with its key).
///
/// With `jwks_file` the verifier is complete: the file is read and parsed here. With
/// `jwks_url` nothing is fetched — this stays synchronous and network-free so that `check`
/// can validate a configuration offline — and the key set starts empty, so every token is
/// refused (fail closed) until [`Verifier::start`] (or [`load`]) has fetched it.
pub fn compile(raw: &RawIdentity, base_dir: &Path) -> Result<Verifier, Vec<String>> {
    let jwt = &raw.jwt;
    let mut problems = Vec::new();

    let issuers = non_empty_strings(&jwt.issuer, "issuer", &mut problems);
    let audiences = non_empty_strings(&jwt.audience, "audience", &mut problems);
    let algorithms = compile_algorithms(jwt.algorithms.as_deref(), &mut problems);

    let leeway = jwt.leeway.unwrap_or(DEFAULT_LEEWAY);
    if leeway > MAX_LEEWAY {
        problems.push(format!(
            "{KEY}.leeway: must be at most {}",
            humantime::format_duration(MAX_LEEWAY)
        ));
    }

    let header_name = jwt.header.as_deref().unwrap_or(DEFAULT_HEADER);
    let header = match HeaderName::from_str(&header_name.to_ascii_lowercase()) {
        Ok(h) => Some(h),
        Err(_) => {
            problems.push(format!("{KEY}.header: not a valid HTTP header name"));
            None
        }
    };

    let mut keys = KeySet::default();
    let mut remote = None;
    match (&jwt.jwks_file, &jwt.jwks_url) {
        (Some(_), Some(_)) => problems.push(format!(
            "{KEY}: set exactly one of `jwks_file` and `jwks_url`, not both"
        )),
        (None, None) => problems.push(format!(
            "{KEY}: one of `jwks_file` or `jwks_url` is required"
        )),
        (Some(file), None) => {
            if jwt.refresh.is_some() {
                problems.push(format!(
                    "{KEY}.refresh: only applies to `jwks_url` (a `jwks_file` is read once)"
                ));
            }
            match read_jwks_file(&base_dir.join(file)) {
                Err(e) => problems.push(format!("{KEY}.jwks_file: {e}")),
                // Which keys are usable depends on the algorithms: only judged when those are.
                Ok(bytes) => match algorithms.as_deref() {
                    Some(allowed) => match jwks::parse_key_set(&bytes, allowed) {
                        Ok(set) => keys = set,
                        Err(e) => problems.push(format!("{KEY}.jwks_file: {e}")),
                    },
                    None => {
                        if let Err(e) = jwks::parse_key_set(&bytes, EVERY_ASYMMETRIC_ALGORITHM) {
                            if matches!(e, jwks::JwksError::NotAJwkSet { .. }) {
                                problems.push(format!("{KEY}.jwks_file: {e}"));
                            }
                        }
                    }
                },
            }
        }
        (None, Some(url)) => {
            let refresh = jwt.refresh.unwrap_or(DEFAULT_REFRESH);
            if refresh < MIN_REFRESH || refresh > MAX_REFRESH {
                problems.push(format!(
                    "{KEY}.refresh: must be between {} and {}",
                    humantime::format_duration(MIN_REFRESH),
                    humantime::format_duration(MAX_REFRESH)
                ));
            }
            match jwks::check_url(url).and_then(|uri| Remote::new(uri, refresh)) {
                Ok(r) => remote = Some(r),
                Err(e) => problems.push(format!("{KEY}.jwks_url: {e}")),
            }
        }
    }

    let (Some(issuers), Some(audiences), Some(algorithms), Some(header), true) =
        (issuers, audiences, algorithms, header, problems.is_empty())
    else {
        return Err(problems);
    };

    let validations = algorithms
        .iter()
        .map(|alg| (*alg, validation(*alg, &issuers, &audiences)))
        .collect();
    Ok(Verifier {
        inner: Arc::new(Inner {
            header,
            issuers,
            algorithms,
            validations,
            leeway,
            keys: ArcSwap::from_pointee(keys),
            remote,
            verified: std::sync::Mutex::new(HashMap::new()),
        }),
    })
}

/// Every asymmetric algorithm: used to check a JWKS file's syntax when the configured
/// algorithms are themselves broken.
const EVERY_ASYMMETRIC_ALGORITHM: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// [`compile`], then for a `jwks_url` the first fetch and the background refresh
/// ([`Verifier::start`]). A first fetch that fails is a problem: the proxy would otherwise run
/// refusing every token. Must run inside a tokio runtime.
pub async fn load(raw: &RawIdentity, base_dir: &Path) -> Result<Verifier, Vec<String>> {
    let verifier = compile(raw, base_dir)?;
    verifier.start().await.map_err(|e| vec![e])?;
    Ok(verifier)
}

/// jsonwebtoken's checks for one algorithm: signature, and the presence of `exp`, `iss`,
/// `aud`, `sub`, with `iss` and `aud` matched. Its own clock checks are off (done in
/// [`Verifier::check_claims`], with `iat` and an injectable clock).
fn validation(alg: Algorithm, issuers: &[String], audiences: &[String]) -> Validation {
    let mut v = Validation::new(alg);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.set_issuer(issuers);
    v.set_audience(audiences);
    v.validate_aud = true;
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    v
}

fn non_empty_strings(
    value: &Option<OneOrMany<String>>,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<Vec<String>> {
    let values: &[String] = match value {
        None => {
            problems.push(format!("{KEY}.{name}: required"));
            return None;
        }
        Some(OneOrMany::One(v)) => std::slice::from_ref(v),
        Some(OneOrMany::Many(v)) => v,
    };
    if values.is_empty() {
        problems.push(format!("{KEY}.{name}: must list at least one value"));
        return None;
    }
    if values.iter().any(|v| v.is_empty()) {
        problems.push(format!("{KEY}.{name}: values must not be empty"));
        return None;
    }
    Some(values.to_vec())
}

/// The allowed algorithms, in order and without repeats; `None` after a problem.
fn compile_algorithms(
    names: Option<&[String]>,
    problems: &mut Vec<String>,
) -> Option<Vec<Algorithm>> {
    let key = format!("{KEY}.algorithms");
    let Some(names) = names else {
        problems.push(format!("{key}: required (e.g. [RS256, ES256, EdDSA])"));
        return None;
    };
    if names.is_empty() {
        problems.push(format!("{key}: must list at least one algorithm"));
        return None;
    }
    let before = problems.len();
    let mut out = Vec::new();
    for name in names {
        if name.eq_ignore_ascii_case("none") {
            problems.push(format!(
                "{key}: `none` is never accepted (an unsigned token proves nothing)"
            ));
            continue;
        }
        match Algorithm::from_str(name) {
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => problems.push(format!(
                "{key}: `{name}` is refused: HMAC needs a shared secret, and a JWKS is public"
            )),
            Ok(alg) => {
                if !out.contains(&alg) {
                    out.push(alg);
                }
            }
            Err(_) => problems.push(format!(
                "{key}: unknown algorithm (known: RS256, RS384, RS512, PS256, PS384, PS512, \
                 ES256, ES384, EdDSA)"
            )),
        }
    }
    (problems.len() == before).then_some(out)
}

/// The JWKS file, at most [`MAX_JWKS_BYTES`].
fn read_jwks_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_JWKS_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!(
            "{} is larger than {MAX_JWKS_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

impl Verifier {
    /// Who made a request with these headers (see the module documentation for the checks).
    ///
    /// Synchronous and never waits on the network. With a `jwks_url`, a token whose `kid` is
    /// unknown also starts a background refetch of the set (at most once per
    /// [`UNKNOWN_KID_REFETCH_INTERVAL`], and only inside a tokio runtime), so that a key the
    /// issuer just rotated in verifies on the next request; [`Verifier::verify_async`] waits
    /// for that refetch instead.
    pub fn verify(&self, headers: &HeaderMap) -> Identity {
        match self.check(headers, SystemTime::now()) {
            Ok(identity) => identity,
            Err(rejection) => {
                if rejection.kid_not_found {
                    self.refetch_in_background();
                }
                Identity::Invalid(rejection.reason)
            }
        }
    }

    /// [`Verifier::verify`], but a token with an unknown `kid` waits for a refetch of the
    /// `jwks_url` (rate-limited as there, bounded by [`FETCH_TIMEOUT`]) and is checked again,
    /// so the first request signed with a freshly rotated key already verifies.
    pub async fn verify_async(&self, headers: &HeaderMap) -> Identity {
        match self.check(headers, SystemTime::now()) {
            Ok(identity) => identity,
            Err(rejection) if rejection.kid_not_found && self.inner.remote.is_some() => {
                self.refetch_on_demand().await;
                match self.check(headers, SystemTime::now()) {
                    Ok(identity) => identity,
                    Err(rejection) => Identity::Invalid(rejection.reason),
                }
            }
            Err(rejection) => Identity::Invalid(rejection.reason),
        }
    }

    /// A short stable pseudonym of the caller for audit logs: lowercase hex of the first
    /// [`SUBJECT_HASH_BYTES`] bytes of SHA-256 over a domain-separation prefix, the issuer and
    /// the subject (each length-prefixed, so no two pairs share an input).
    ///
    /// Pseudonymous, not anonymous: the same caller always gets the same value, so their
    /// requests can be linked to each other, and anyone who can guess a subject (an email, a
    /// user id) can compute its hash and confirm the guess. Treat it as personal data.
    pub fn subject_hash(&self, caller: &Caller) -> String {
        let issuer = caller
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(SUBJECT_HASH_DOMAIN);
        for part in [issuer, caller.subject.as_str()] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        let digest = ctx.finish();
        digest.as_ref()[..SUBJECT_HASH_BYTES]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The request header the token is read from (lowercase).
    pub fn header(&self) -> &HeaderName {
        &self.inner.header
    }

    /// How many usable keys the current set holds (0 for a `jwks_url` not yet fetched).
    pub fn key_count(&self) -> usize {
        self.inner.keys.load().keys.len()
    }

    /// For a `jwks_url`: fetches the set now (an error if that fails) and spawns the
    /// background refresh every `refresh`. Nothing for a `jwks_file`. The refresh task holds
    /// only a weak reference and ends once every clone of this verifier is dropped (a reload
    /// replaces the verifier). Calling it again only refetches. Must run inside a tokio runtime.
    pub async fn start(&self) -> Result<(), String> {
        let Some(remote) = &self.inner.remote else {
            return Ok(());
        };
        self.inner
            .refresh()
            .await
            .map_err(|e| format!("{KEY}.jwks_url: first fetch failed: {e}"))?;
        if remote.mark_started() {
            spawn_refresher(Arc::downgrade(&self.inner), remote.refresh);
        }
        Ok(())
    }

    /// The whole check at time `now`: `Ok(Anonymous | Verified)` or the rejection.
    fn check(&self, headers: &HeaderMap, now: SystemTime) -> Result<Identity, Rejection> {
        let Some(token) = self.bearer_token(headers)? else {
            return Ok(Identity::Anonymous);
        };
        self.verify_token(token, now).map(Identity::Verified)
    }

    /// The token of the one `Bearer` header, `None` without the header.
    fn bearer_token<'h>(&self, headers: &'h HeaderMap) -> Result<Option<&'h str>, InvalidReason> {
        let mut values = headers.get_all(&self.inner.header).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(InvalidReason::MultipleHeaders);
        }
        let bytes = value.as_bytes();
        // RFC 6750 §2.1: `Bearer` (any case), one or more spaces, the token.
        let scheme_len = "bearer".len();
        if bytes.len() <= scheme_len
            || !bytes[..scheme_len].eq_ignore_ascii_case(b"bearer")
            || bytes[scheme_len] != b' '
        {
            return Err(InvalidReason::NotBearer);
        }
        let token = bytes[scheme_len..].trim_ascii();
        if token.is_empty() {
            return Err(InvalidReason::NotBearer);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(InvalidReason::TooLarge);
        }
        // A compact JWS is base64url parts joined by dots: anything else is not one.
        if !token
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(InvalidReason::Malformed);
        }
        // All ASCII (checked above), so this cannot fail.
        std::str::from_utf8(token)
            .map(Some)
            .map_err(|_| InvalidReason::Malformed)
    }

    fn verify_token(&self, token: &str, now: SystemTime) -> Result<Caller, Rejection> {
        let digest: [u8; 32] =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
                .as_ref()
                .try_into()
                .expect("SHA-256 is 32 bytes");
        let current = self.inner.keys.load_full();
        let remembered = self.inner.verified.lock().ok().and_then(|cache| {
            cache
                .get(&digest)
                .filter(|v| Arc::ptr_eq(&v.keys, &current))
                .map(|v| v.claims.clone())
        });
        if let Some(claims) = remembered {
            // The same bytes under the same keys: the signature holds; the clock may not.
            return self.check_claims(claims, now).map_err(Rejection::from);
        }
        let caller = self.verify_signed(token, now)?;
        if let Ok(mut cache) = self.inner.verified.lock() {
            if cache.len() >= MAX_VERIFIED_TOKENS {
                cache.clear();
            }
            cache.insert(
                digest,
                Verified {
                    keys: current,
                    claims: caller.claims.clone(),
                },
            );
        }
        Ok(caller)
    }

    /// The whole check of a token not verified before: header, key, signature, claims.
    fn verify_signed(&self, token: &str, now: SystemTime) -> Result<Caller, Rejection> {
        let inner = &*self.inner;
        let mut parts = token.split('.');
        let (Some(header_b64), Some(_), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(InvalidReason::Malformed.into());
        };
        let header: JoseHeader = URL_SAFE_NO_PAD
            .decode(header_b64)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(InvalidReason::Malformed)?;
        let alg = Algorithm::from_str(&header.alg)
            .ok()
            .filter(|a| inner.algorithms.contains(a))
            .ok_or(InvalidReason::AlgorithmNotAllowed)?;
        if signature.is_empty() {
            return Err(InvalidReason::BadSignature.into());
        }

        let keys = inner.keys.load();
        let key = match &header.kid {
            Some(kid) => {
                let mut with_kid = keys
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                    .peekable();
                if with_kid.peek().is_none() {
                    return Err(Rejection {
                        reason: InvalidReason::UnknownKey,
                        kid_not_found: true,
                    });
                }
                with_kid
                    .find(|k| k.algorithms.contains(&alg))
                    .ok_or(InvalidReason::AlgorithmNotAllowed)?
            }
            None => match keys.keys.as_slice() {
                [only] if only.algorithms.contains(&alg) => only,
                [_] => return Err(InvalidReason::AlgorithmNotAllowed.into()),
                _ => return Err(InvalidReason::UnknownKey.into()),
            },
        };
        let validation = inner
            .validations
            .get(&alg)
            .ok_or(InvalidReason::AlgorithmNotAllowed)?;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation)
            .map_err(|e| reason_of(e.kind()))?
            .claims;
        self.check_claims(claims, now).map_err(Rejection::from)
    }

    /// The checks jsonwebtoken leaves to us, on claims whose signature has verified: `iss` a
    /// string, `sub` a non-empty string, and the three time claims against `now`.
    fn check_claims(
        &self,
        claims: Map<String, Value>,
        now: SystemTime,
    ) -> Result<Caller, InvalidReason> {
        let inner = &*self.inner;
        match claims.get("iss") {
            Some(Value::String(iss)) if inner.issuers.iter().any(|i| i == iss) => {}
            _ => return Err(InvalidReason::WrongIssuer),
        }
        let subject = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            _ => return Err(InvalidReason::MissingSubject),
        };
        let now = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        let leeway = inner.leeway.as_secs_f64();
        // RFC 7519 §4.1.4: valid only before `exp`.
        let exp = numeric_date(&claims, "exp")?.ok_or(InvalidReason::MissingExpiry)?;
        if now >= exp + leeway {
            return Err(InvalidReason::Expired);
        }
        // §4.1.5: valid from `nbf` on.
        if numeric_date(&claims, "nbf")?.is_some_and(|nbf| now + leeway < nbf) {
            return Err(InvalidReason::NotYetValid);
        }
        if numeric_date(&claims, "iat")?.is_some_and(|iat| now + leeway < iat) {
            return Err(InvalidReason::IssuedInFuture);
        }
        Ok(Caller { subject, claims })
    }

    fn refetch_in_background(&self) {
        let Some(remote) = &self.inner.remote else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if remote.claim_on_demand() {
            let inner = Arc::clone(&self.inner);
            runtime.spawn(async move {
                let _ = inner.refresh().await;
            });
        }
    }

    /// Refetches for an unknown `kid` if the rate limit allows; otherwise waits for a fetch
    /// already in flight (its result is what a retry will see).
    async fn refetch_on_demand(&self) {
        let Some(remote) = &self.inner.remote else {
            return;
        };
        if remote.claim_on_demand() {
            let _ = self.inner.refresh().await;
        } else {
            drop(remote.gate.lock().await);
        }
    }
}

impl Inner {
    /// Fetches the `jwks_url` and swaps the set in. A failure keeps the last good set and is
    /// logged (the reason only: no URL, no body).
    async fn refresh(&self) -> Result<(), String> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let _one_at_a_time = remote.gate.lock().await;
        match remote.fetch(&self.algorithms).await {
            Ok(set) => {
                tracing::debug!(keys = set.keys.len(), "identity: JWKS fetched");
                self.keys.store(Arc::new(set));
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "identity: fetching identity.jwt.jwks_url failed; keeping the last good key set"
                );
                Err(e.to_string())
            }
        }
    }
}

/// Refetches every `period` while the verifier lives. The first refetch is one period after
/// the start (the start itself just fetched).
fn spawn_refresher(inner: Weak<Inner>, period: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let _ = inner.refresh().await;
        }
    });
}

/// A NumericDate claim (RFC 7519 §2: seconds, possibly fractional): `None` when absent,
/// [`InvalidReason::Malformed`] when not a finite number.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, InvalidReason> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|t| t.is_finite())
            .map(Some)
            .ok_or(InvalidReason::Malformed),
    }
}

/// Our reason for a jsonwebtoken error (signature and the claims it checks).
fn reason_of(kind: &ErrorKind) -> InvalidReason {
    match kind {
        ErrorKind::InvalidSignature => InvalidReason::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => InvalidReason::AlgorithmNotAllowed,
        ErrorKind::InvalidIssuer => InvalidReason::WrongIssuer,
        ErrorKind::InvalidAudience => InvalidReason::WrongAudience,
        ErrorKind::InvalidSubject => InvalidReason::MissingSubject,
        ErrorKind::ExpiredSignature => InvalidReason::Expired,
        ErrorKind::ImmatureSignature => InvalidReason::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            match claim.as_str() {
                "exp" if matches!(kind, ErrorKind::MissingRequiredClaim(_)) => {
                    InvalidReason::MissingExpiry
                }
                "iss" => InvalidReason::WrongIssuer,
                "aud" => InvalidReason::WrongAudience,
                "sub" => InvalidReason::MissingSubject,
                _ => InvalidReason::Malformed,
            }
        }
        _ => InvalidReason::Malformed,
    }
}
