//! The keys a caller's JWT may be signed with: a JWK Set read from a file or fetched from a
//! URL, reduced to the keys that can verify one of the allowed algorithms.
//!
//! Only public signature keys are kept: RSA (2048 to 8192 bits), EC P-256/P-384 and Ed25519.
//! A symmetric (`oct`) key is never used — a JWKS is public, so a shared secret in one would
//! let anyone mint tokens — and neither is a key marked for encryption. Every kept key has been
//! parsed by aws-lc once here, so a broken key is dropped at load rather than failing each
//! request.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::uri::Scheme;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::{ConfigBuilderExt as _, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Largest JWKS accepted, from a file or a URL. A real set holds a handful of keys (a 4096-bit
/// RSA JWK is under 1 KiB); the bound keeps a hostile or broken endpoint from making the proxy
/// buffer without limit.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// How long one JWKS fetch (connect, TLS, answer and body) may take. A startup fetch that
/// hangs would otherwise hold the proxy back forever, and a refresh would pile up behind it.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A token whose `kid` is not in the set triggers a refetch at most this often: a new key
/// is picked up at once after the issuer rotates, yet a stream of tokens with made-up `kid`s
/// cannot turn the proxy into a request amplifier against the issuer.
pub const UNKNOWN_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Smallest RSA modulus accepted. Below 2048 bits RSA is no longer considered safe (NIST SP
/// 800-131A), and aws-lc's verification refuses such keys anyway: drop them at load.
pub const MIN_RSA_MODULUS_BITS: usize = 2048;

/// Algorithms each kind of key can verify (before the JWK's own `alg` and the allowed list
/// narrow them).
const RSA_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// One key that can verify tokens.
pub(super) struct VerifyingKey {
    pub kid: Option<String>,
    /// The allowed algorithms this key may verify: never empty.
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

/// The usable keys of one JWKS: never empty once built by [`parse_key_set`].
#[derive(Default)]
pub(super) struct KeySet {
    pub keys: Vec<VerifyingKey>,
}

/// Why a JWKS could not be used. The messages never quote the document (no key material, no
/// values): only where it broke and how many keys it had.
#[derive(Debug)]
pub(super) enum JwksError {
    /// Not JSON, or not a `{"keys": [...]}` of well-formed JWKs.
    NotAJwkSet { line: usize, column: usize },
    /// Parsed, but no key can verify any of the allowed algorithms.
    NoUsableKey { keys: usize },
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksError::NotAJwkSet { line, column } => write!(
                f,
                "not a JWK Set (a JSON object with a `keys` list of JWKs); broken at line {line}, column {column}"
            ),
            JwksError::NoUsableKey { keys } => write!(
                f,
                "no key usable with the allowed algorithms ({keys} key(s) in the set; symmetric \
                 `oct` keys, encryption keys, RSA under {MIN_RSA_MODULUS_BITS} bits and keys whose \
                 `alg` is not allowed are skipped)"
            ),
        }
    }
}

/// Parses a JWK Set and keeps the keys usable with `allowed`.
pub(super) fn parse_key_set(bytes: &[u8], allowed: &[Algorithm]) -> Result<KeySet, JwksError> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| JwksError::NotAJwkSet {
        line: e.line(),
        column: e.column(),
    })?;
    let keys: Vec<VerifyingKey> = set
        .keys
        .iter()
        .filter_map(|jwk| usable_key(jwk, allowed))
        .collect();
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey {
            keys: set.keys.len(),
        });
    }
    Ok(KeySet { keys })
}

/// The key as a [`VerifyingKey`] if it is a well-formed public signature key that can verify
/// one of `allowed` (and its own `alg`, when it names one).
fn usable_key(jwk: &Jwk, allowed: &[Algorithm]) -> Option<VerifyingKey> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    if let Some(ops) = &jwk.common.key_operations {
        if !ops.contains(&KeyOperations::Verify) {
            return None;
        }
    }
    let compatible: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            rsa_key_is_sound(&p.n, &p.e)?;
            RSA_ALGORITHMS
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let (verification, algorithm): (
                &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
                _,
            ) = match p.curve {
                EllipticCurve::P256 => (
                    &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
                    Algorithm::ES256,
                ),
                EllipticCurve::P384 => (
                    &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED,
                    Algorithm::ES384,
                ),
                _ => return None,
            };
            let mut point = vec![0x04];
            point.extend(URL_SAFE_NO_PAD.decode(&p.x).ok()?);
            point.extend(URL_SAFE_NO_PAD.decode(&p.y).ok()?);
            aws_lc_rs::signature::ParsedPublicKey::new(verification, &point).ok()?;
            match algorithm {
                Algorithm::ES256 => &[Algorithm::ES256],
                _ => &[Algorithm::ES384],
            }
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 {
                return None;
            }
            let x = URL_SAFE_NO_PAD.decode(&p.x).ok()?;
            aws_lc_rs::signature::ParsedPublicKey::new(&aws_lc_rs::signature::ED25519, &x).ok()?;
            &[Algorithm::EdDSA]
        }
        // A shared secret published in a JWKS: anyone could sign with it. Never.
        AlgorithmParameters::OctetKey(_) => return None,
        _ => return None,
    };
    // The JWK's own `alg`, when present, pins the key to that one algorithm; one we cannot
    // verify with (HS*, an encryption algorithm, an unknown name) makes the key unusable.
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(Algorithm::try_from(a).ok()?),
    };
    let algorithms: Vec<Algorithm> = compatible
        .iter()
        .copied()
        .filter(|a| allowed.contains(a) && declared.is_none_or(|d| d == *a))
        .collect();
    if algorithms.is_empty() {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyingKey {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key,
    })
}

/// `Some(())` when `n`/`e` decode to an RSA public key of at least [`MIN_RSA_MODULUS_BITS`]
/// that aws-lc accepts.
fn rsa_key_is_sound(n: &str, e: &str) -> Option<()> {
    let n = URL_SAFE_NO_PAD.decode(n).ok()?;
    let e = URL_SAFE_NO_PAD.decode(e).ok()?;
    let significant = n.iter().position(|b| *b != 0).map_or(0, |i| n.len() - i);
    if significant * 8 < MIN_RSA_MODULUS_BITS {
        return None;
    }
    aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e }
        .to_parsed_public_key(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256)
        .ok()?;
    Some(())
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A JWKS served over HTTP(S), and the bookkeeping of its refetches.
pub(super) struct Remote {
    pub uri: Uri,
    client: HttpClient,
    /// Interval of the background refresh.
    pub refresh: Duration,
    /// [`FETCH_TIMEOUT`], shortened by the tests.
    pub fetch_timeout: Duration,
    /// When the last refetch caused by an unknown `kid` started (rate limit).
    pub last_on_demand: Mutex<Option<Instant>>,
    /// Held during every fetch: one at a time, and a caller waiting for a fresh set can wait
    /// for the fetch in flight.
    pub gate: tokio::sync::Mutex<()>,
    /// The background refresher was spawned (once per verifier).
    pub started: AtomicBool,
}

/// Why a JWKS fetch failed; no URL, header or body content in the message.
#[derive(Debug)]
pub(super) enum FetchError {
    Timeout(Duration),
    Request(String),
    Status(StatusCode),
    TooLarge,
    Body(String),
    Jwks(JwksError),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Timeout(d) => write!(
                f,
                "no complete answer within {}",
                humantime::format_duration(*d)
            ),
            FetchError::Request(e) => write!(f, "request failed: {e}"),
            FetchError::Status(s) => write!(f, "answered HTTP {}", s.as_u16()),
            FetchError::TooLarge => write!(f, "answer larger than {MAX_JWKS_BYTES} bytes"),
            FetchError::Body(e) => write!(f, "reading the answer failed: {e}"),
            FetchError::Jwks(e) => write!(f, "{e}"),
        }
    }
}

/// An error and its sources on one line (hyper's top-level message alone says little).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Checks a `jwks_url`: `https://`, or plain `http://` to a loopback host only — over any
/// other network a plain-HTTP JWKS lets whoever is on the path swap in their own keys and
/// sign any token. Messages never echo the URL (it may carry a secret in its query).
pub(super) fn check_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|_| "is not a valid URL".to_string())?;
    let host = uri
        .host()
        .ok_or_else(|| "must be an absolute http(s) URL with a host".to_string())?;
    match uri.scheme() {
        Some(s) if *s == Scheme::HTTPS => {}
        Some(s) if *s == Scheme::HTTP => {
            if !is_loopback(host) {
                return Err(
                    "plain `http://` is only accepted for a loopback host (127.0.0.0/8, \
                            [::1], localhost): anyone on the path could swap the keys; use \
                            `https://`"
                        .into(),
                );
            }
        }
        _ => return Err("must be an absolute http(s) URL with a host".into()),
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("must not carry credentials (`user:password@`)".into());
    }
    Ok(uri)
}

fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The rustls client configuration of the JWKS fetcher: the proxy's aws-lc-rs provider and
/// its safe protocol versions; for `https://` the system's trust store (so a private CA is
/// trusted the way the OS trusts it), for plain `http://` (never used) an empty one.
fn tls_config(https: bool) -> Result<rustls::ClientConfig, String> {
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client setup failed: {e}"))?;
    let builder = if https {
        builder.with_native_roots().map_err(|_| {
            "no usable CA certificate in the system trust store for `https://`".to_string()
        })?
    } else {
        builder.with_root_certificates(rustls::RootCertStore::empty())
    };
    Ok(builder.with_no_client_auth())
}

impl Remote {
    /// A remote JWKS at `uri` (already checked by [`check_url`]). For `https://` the system
    /// trust store must hold at least one CA; a plain `http://` URL needs none.
    pub fn new(uri: Uri, refresh: Duration) -> Result<Remote, String> {
        let tls = tls_config(uri.scheme() == Some(&Scheme::HTTPS))?;
        Ok(Remote::with_tls(uri, refresh, tls))
    }

    /// A remote JWKS fetched with the given TLS client configuration.
    pub fn with_tls(uri: Uri, refresh: Duration, tls: rustls::ClientConfig) -> Remote {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        // A fetch every few minutes gains nothing from a pooled connection.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Remote {
            uri,
            client,
            refresh,
            fetch_timeout: FETCH_TIMEOUT,
            last_on_demand: Mutex::new(None),
            gate: tokio::sync::Mutex::new(()),
            started: AtomicBool::new(false),
        }
    }

    /// Claims the right to an on-demand refetch: `true` (and the clock restarted) when none
    /// started within [`UNKNOWN_KID_REFETCH_INTERVAL`].
    pub fn claim_on_demand(&self) -> bool {
        let mut last = self
            .last_on_demand
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < UNKNOWN_KID_REFETCH_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Marks the background refresher as started; `false` if it already was.
    pub fn mark_started(&self) -> bool {
        !self.started.swap(true, Ordering::SeqCst)
    }

    /// Fetches and parses the JWKS once, within [`Remote::fetch_timeout`] and
    /// [`MAX_JWKS_BYTES`].
    pub async fn fetch(&self, allowed: &[Algorithm]) -> Result<KeySet, FetchError> {
        let fetch = async {
            let request = Request::get(self.uri.clone())
                .header(
                    header::ACCEPT,
                    "application/jwk-set+json, application/json;q=0.9",
                )
                .header(header::USER_AGENT, "fieldseal")
                .body(Empty::<Bytes>::new())
                .map_err(|e| FetchError::Request(e.to_string()))?;
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| FetchError::Request(chain(&e)))?;
            if response.status() != StatusCode::OK {
                return Err(FetchError::Status(response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        FetchError::TooLarge
                    } else {
                        FetchError::Body(chain(e.as_ref()))
                    }
                })?
                .to_bytes();
            parse_key_set(&body, allowed).map_err(FetchError::Jwks)
        };
        tokio::time::timeout(self.fetch_timeout, fetch)
            .await
            .map_err(|_| FetchError::Timeout(self.fetch_timeout))?
    }
}
