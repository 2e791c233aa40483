//! Documents the proxy answers itself, never forwarding: the JWKS of its client-facing public
//! keys at [`JWKS_PATH`], and — when `keys.public_key_path` is set — the seed-compatible
//! `{"public_key": PEM, …}` document (contract §3).
//!
//! Both are public, identical for every client and change only on reload, so they are
//! serialised once per config load ([`ClientKeys`]) and served with a strong `ETag` and a
//! short `Cache-Control` max-age. The max-age is what bounds how long a client may keep
//! encrypting to a key after it was rotated out; the rotation procedure in `docs/keys.md`
//! keeps the old key configured for longer than that.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::{empty, full, ProxyBody};
use crate::config::Settings;
use crate::crypto::client_keys::ClientKeys;
use crate::proxy::error::error_response;

/// Where the JWKS is served (contract §3).
pub const JWKS_PATH: &str = "/.well-known/fieldseal/jwks.json";

/// How long clients and caches may keep the documents: five minutes, so a new key is picked
/// up quickly while clients do not refetch on every request.
pub const MAX_AGE_SECS: u32 = 300;

/// Route labels for logs and metrics.
pub static JWKS_ROUTE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("fieldseal_jwks"));
pub static PUBLIC_KEY_ROUTE: LazyLock<Arc<str>> =
    LazyLock::new(|| Arc::from("fieldseal_public_key"));

/// Which local document a request asks for, if any.
pub fn route_for<B>(req: &Request<B>, settings: &Settings) -> Option<&'static Arc<str>> {
    settings.keys.client.as_ref()?;
    let path = req.uri().path();
    if path == JWKS_PATH {
        return Some(&JWKS_ROUTE);
    }
    let seed = settings.keys.public_key_path.as_deref()?;
    (path == seed).then_some(&PUBLIC_KEY_ROUTE)
}

/// The response for a local document (see [`route_for`]).
pub fn respond<B>(
    req: &Request<B>,
    route: &Arc<str>,
    keys: &ClientKeys,
    request_id: &str,
) -> Response<ProxyBody> {
    let (body, content_type) = if Arc::ptr_eq(route, &JWKS_ROUTE) {
        (Some(keys.jwks()), "application/jwk-set+json")
    } else {
        (keys.seed_public_key(), "application/json")
    };
    let Some(body) = body else {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "No RSA key is configured.",
            request_id,
        );
    };
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        let mut resp = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Public keys are read with GET.",
            request_id,
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let etag = etag(&body);
    let not_modified = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        });
    let mut resp = if not_modified {
        status_only(StatusCode::NOT_MODIFIED)
    } else {
        let len = body.len();
        let mut resp = Response::new(if method == Method::HEAD {
            empty()
        } else {
            full(body)
        });
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        resp
    };
    let headers = resp.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("public, max-age={MAX_AGE_SECS}"))
            .expect("ASCII header value"),
    );
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex ETag"),
    );
    // Browsers fetch the JWKS cross-origin from the page that encrypts.
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

fn status_only(status: StatusCode) -> Response<ProxyBody> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = status;
    resp
}

/// A strong validator of the document: the first 16 bytes of its SHA-256, quoted.
fn etag(body: &Bytes) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{hex}\"")
}
