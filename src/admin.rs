//! The admin listener (plain HTTP, keep it on loopback or a private port): `/healthz` (the
//! process is alive), `/readyz` (configuration and keys loaded, not draining), `/metrics`
//! (Prometheus/OpenMetrics text), `/keys` (per-key usage, for `keys list|retire --admin`).

use std::convert::Infallible;
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
                let Ok((tcp, _)) = accepted else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| respond(req, shared.clone()));
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

async fn respond(
    req: Request<Incoming>,
    shared: Arc<Shared>,
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
    let runtime = shared.runtime.load();
    let ring: Vec<(String, String)> = runtime
        .settings
        .keys
        .ring
        .as_ref()
        .map(|r| {
            r.keys()
                .iter()
                .map(|k| (k.id.clone(), k.state.to_string()))
                .collect()
        })
        .unwrap_or_default();
    json(StatusCode::OK, shared.metrics.key_usage.report_json(&ring))
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
