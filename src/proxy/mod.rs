//! The request path for one request, top to bottom:
//! request id → route → upstream request (hop-by-hop stripped, forwarding headers set) →
//! upstream → response (hop-by-hop stripped) → security headers → access log.
//!
//! Routes without transforms stream both bodies untouched: nothing here buffers.

pub mod error;
pub mod hop;
pub mod request_id;
pub mod upgrade;
pub mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use http::header::{HeaderValue, HOST};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::access_log::{CountedBody, Exchange, ObservedBody};
use crate::body::{empty, ProxyBody};
use crate::state::{Runtime, Shared};
use error::ProxyError;
use request_id::X_REQUEST_ID;

/// Route label for requests that match no configured route (they are proxied untouched).
pub static UNMATCHED: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("unmatched"));

/// Facts about the client connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// Index of the worker thread serving the connection (selects its upstream pool).
    pub worker: usize,
}

/// Serves one request. Never fails: every error becomes a response.
pub async fn handle(
    req: Request<Incoming>,
    conn: ConnInfo,
    shared: Arc<Shared>,
) -> Result<Response<ObservedBody>, Infallible> {
    let started = Instant::now();
    let runtime = shared.runtime.load_full();
    let request_id = request_id::resolve(req.headers());
    let request_id_text = request_id.to_str().unwrap_or_default().to_string();
    let method = req.method().clone();
    let version = req.version();
    let route = runtime.settings.routes.find(&method, req.uri().path());
    let route_name = route.map_or_else(|| UNMATCHED.clone(), |r| r.name.clone());
    let bytes_in = Arc::new(AtomicU64::new(0));

    let mut response = match forward(req, &runtime, conn, &request_id, bytes_in.clone()).await {
        Ok(resp) => resp,
        Err(err) => {
            shared.metrics.upstream_error(&route_name, err.kind());
            tracing::warn!(
                request_id = %request_id_text,
                route = %route_name,
                code = err.code(),
                fault = ?err.fault(),
                "request failed"
            );
            err.into_response(&request_id_text)
        }
    };

    let policy = route.map_or(&runtime.settings.default_headers, |r| &r.headers);
    policy.apply(response.headers_mut());
    // Unique per request: HPACK must not add it to the HTTP/2 dynamic table, where it would
    // only evict the security headers that repeat on every response.
    let mut request_id = request_id;
    request_id.set_sensitive(true);
    response.headers_mut().insert(X_REQUEST_ID, request_id);

    let exchange = Exchange {
        request_id: request_id_text,
        route: route_name,
        method,
        version,
        status: response.status().as_u16(),
        started,
        bytes_in,
        metrics: shared.metrics.clone(),
    };
    Ok(response.map(|body| exchange.observe(body)))
}

/// Relays the request to the upstream and returns its response, ready for the client.
async fn forward(
    mut req: Request<Incoming>,
    runtime: &Runtime,
    conn: ConnInfo,
    request_id: &HeaderValue,
    bytes_in: Arc<AtomicU64>,
) -> Result<Response<ProxyBody>, ProxyError> {
    // Only HTTP/1.1 can upgrade; HTTP/2 forbids the Upgrade header (RFC 9113 §8.2.2).
    let upgrade = req.version() == Version::HTTP_11 && hop::wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    // HTTP/2 carries the host in `:authority`; HTTP/1.1 in `Host`.
    let host = parts.headers.get(HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    hop::strip(&mut parts.headers, upgrade);
    // The proxy already answered `Expect: 100-continue` to the client; the upstream gets the body.
    parts.headers.remove(http::header::EXPECT);
    hop::set_forwarded(&mut parts.headers, conn.peer.ip(), host.as_ref());
    if let Some(h) = host {
        parts.headers.insert(HOST, h);
    }
    parts.headers.insert(X_REQUEST_ID, request_id.clone());
    let upstream = runtime.upstream(conn.worker);
    parts.uri = upstream.uri_for(parts.uri.path_and_query());
    parts.version = Version::HTTP_11;

    let body = if upgrade {
        empty()
    } else {
        CountedBody::new(body, bytes_in).boxed_unsync()
    };
    let mut resp = upstream
        .send(Request::from_parts(parts, body), upgrade)
        .await?;

    if let Some(client_upgrade) = client_upgrade {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let request_id = request_id.to_str().unwrap_or_default().to_string();
            upgrade::tunnel(client_upgrade, upstream_upgrade, request_id);
            let (mut parts, _) = resp.into_parts();
            hop::strip(&mut parts.headers, true);
            return Ok(Response::from_parts(parts, empty()));
        }
    }
    hop::strip(resp.headers_mut(), false);
    Ok(resp)
}
