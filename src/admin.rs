//! The admin listener (plain HTTP, keep it on loopback or a private port): `/healthz` (the
//! process is alive), `/readyz` (configuration and keys loaded, not draining), `/metrics`
//! (Prometheus/OpenMetrics text), `/keys` (per-key usage, for `keys list|retire --admin`).
//!
//! The admin listener has no authentication, and in a pod it must bind `0.0.0.0` because the
//! kubelet probes the pod IP. `/keys` is therefore answered only to a TCP peer on a loopback
//! address (`127.0.0.0/8`, `::1`, or `::ffff:127.x.y.z` on a dual-stack socket): from inside
//! the pod (`kubectl exec`) or through `kubectl port-forward`, which connects over the pod's
//! loopback. Any other peer gets 403. The peer is the socket's, never a header
//! (`X-Forwarded-For` and the like are ignored): nothing a client sends can make it loopback.
//! `/healthz`, `/readyz` and `/metrics` stay open to every peer the network lets through.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::limits::CLIENT_HEADER_READ_TIMEOUT;
use crate::state::Shared;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else { continue };
                let peer = Peer::of(peer.ip());
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| respond(req, shared.clone(), peer));
                    let _ = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(CLIENT_HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        }
    }
}

/// Who is at the other end of an admin connection, as far as access goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// A loopback address: a process in the same network namespace (the pod).
    Loopback,
    /// Anything else: another pod, a node, a load balancer.
    Remote,
}

impl Peer {
    fn of(ip: IpAddr) -> Self {
        if is_loopback_peer(ip) {
            Peer::Loopback
        } else {
            Peer::Remote
        }
    }
}

/// Whether a TCP peer address is loopback: `127.0.0.0/8`, `::1`, or an IPv4-mapped loopback
/// (`::ffff:127.0.0.1`, what an IPv4 client looks like on a dual-stack `[::]` listener).
/// The deprecated IPv4-compatible form (`::127.0.0.1`) is not loopback: the kernel never
/// reports a loopback peer that way, and on the wire it is an ordinary global IPv6 address.
pub(crate) fn is_loopback_peer(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

const KEYS_LOOPBACK_ONLY: &str = r#"{"status":"forbidden","message":"/keys is served to loopback peers only: run `fieldseal keys list|retire --admin http://127.0.0.1:<port>` inside the pod (kubectl exec) or through kubectl port-forward"}"#;

async fn respond(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    peer: Peer,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(json(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"status":"method not allowed"}"#,
        ));
    }
    Ok(match req.uri().path() {
        "/healthz" => json(StatusCode::OK, r#"{"status":"ok"}"#),
        "/readyz" if shared.is_draining() => {
            json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#)
        }
        "/readyz" => ready(&shared),
        "/keys" if peer != Peer::Loopback => json(StatusCode::FORBIDDEN, KEYS_LOOPBACK_ONLY),
        "/keys" => keys(&shared),
        "/metrics" => {
            let mut resp = Response::new(Full::new(Bytes::from(shared.metrics.encode())));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
            resp
        }
        _ => json(StatusCode::NOT_FOUND, r#"{"status":"not found"}"#),
    })
}

/// Ready, with the rotation policy's verdict as detail: a key due for rotation is an
/// operator's task, not a reason to take the pod out of service.
fn ready(shared: &Shared) -> Response<Full<Bytes>> {
    let body = match shared.rotation.last() {
        Some(status) => serde_json::json!({
            "status": "ready",
            "primary_key": status,
        })
        .to_string(),
        None => r#"{"status":"ready"}"#.to_string(),
    };
    json(StatusCode::OK, body)
}

/// Per-key usage since the process started (`fieldseal keys list|retire --admin`). Ids,
/// states, counts and dates only.
fn keys(shared: &Shared) -> Response<Full<Bytes>> {
    json(StatusCode::OK, crate::replicas::report(shared))
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_peers_are_the_loopback_ranges_only() {
        for s in [
            "127.0.0.1",
            "127.0.0.2",
            "127.255.255.254",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:127.1.2.3",
        ] {
            assert!(is_loopback_peer(ip(s)), "{s} is loopback");
            assert_eq!(Peer::of(ip(s)), Peer::Loopback, "{s}");
        }
        for s in [
            "0.0.0.0",
            "10.0.0.7",
            "192.168.1.1",
            "172.17.0.1",
            "169.254.1.1",
            "128.0.0.1",
            "126.255.255.255",
            "255.255.255.255",
            "::",
            "::2",
            "fe80::1",
            "fd00::2",
            "::ffff:10.0.0.7",
            "::ffff:0.0.0.0",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2001:db8::1",
        ] {
            assert!(!is_loopback_peer(ip(s)), "{s} is not loopback");
            assert_eq!(Peer::of(ip(s)), Peer::Remote, "{s}");
        }
    }

    #[test]
    fn the_refusal_is_json_and_says_why() {
        let v: serde_json::Value = serde_json::from_str(KEYS_LOOPBACK_ONLY).unwrap();
        assert_eq!(v["status"], "forbidden");
        assert!(v["message"].as_str().unwrap().contains("loopback"));
    }
}
