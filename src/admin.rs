//! The admin listener (plain HTTP, keep it on loopback or a private port): `/healthz` (the
//! process is alive), `/readyz` (configuration and keys loaded, not draining), `/metrics`
//! (Prometheus/OpenMetrics text).

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
        "/readyz" => json(StatusCode::OK, r#"{"status":"ready"}"#),
        "/metrics" => {
            let mut resp = Response::new(Full::new(Bytes::from(shared.metrics.encode())));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
            resp
        }
        _ => json(StatusCode::NOT_FOUND, r#"{"status":"not found"}"#),
    })
}

fn json(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
