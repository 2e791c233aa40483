//! The built-in demo upstream: a small JSON API with the kind of record fieldseal protects.
//! It deliberately sends `Server` and `X-Powered-By` so the demo shows them removed.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

/// Largest body the demo's PUT and echo endpoints accept.
const ECHO_LIMIT: usize = 1024 * 1024;

/// Starts the demo app on an ephemeral loopback port and returns its address.
pub async fn start() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(respond))
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The demo user record (fake data).
pub fn user(id: &str) -> serde_json::Value {
    json!({
        "id": id,
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "ssn": "123-45-6789",
        "password": "correct horse battery staple",
        "cards": [{"brand": "visa", "number": "4111111111110366"}],
        "phone": "+44 20 7946 0958",
    })
}

async fn respond(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (status, body) = match (req.method(), segments.as_slice()) {
        (&Method::GET, ["api", "users", id]) => (StatusCode::OK, user(id)),
        (&Method::GET, ["api", "health"]) => (StatusCode::OK, json!({"status": "ok"})),
        // An index, so probes that start with `GET /` (h2check) see a 200.
        (&Method::GET, [""]) => (
            StatusCode::OK,
            json!({"endpoints": ["GET /api/users/{id}", "PUT /api/users/{id}", "POST /api/echo", "GET /api/health"]}),
        ),
        // An update answers with the updated record, shaped like the GET's. The proxy opened
        // the record's sealed fields on the way in (route `user`, request.decrypt), and seals
        // the same paths on the way out (response.encrypt): the plaintext the app got leaves
        // as fresh tokens, never as text. So the record goes back at the paths it came in —
        // never wrapped under another member, where no response rule would find it.
        (&Method::PUT, ["api", "users", id]) => match read_json(req).await {
            Ok(serde_json::Value::Object(mut record)) => {
                record.insert("id".into(), json!(id));
                (StatusCode::OK, serde_json::Value::Object(record))
            }
            Ok(_) => (
                StatusCode::BAD_REQUEST,
                json!({"detail": "body is not a JSON object"}),
            ),
            Err(answer) => answer,
        },
        // Only reached through route `echo`, which has no rules: the proxy opens nothing there,
        // so the echo is exactly what the client sent (tokens stay tokens).
        (&Method::POST, ["api", "echo"]) => match read_json(req).await {
            Ok(v) => (StatusCode::OK, json!({"received": v})),
            Err(answer) => answer,
        },
        _ => (StatusCode::NOT_FOUND, json!({"detail": "not found"})),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert("server", HeaderValue::from_static("demo-app/1.0"));
    h.insert("x-powered-by", HeaderValue::from_static("fieldseal-demo"));
    Ok(resp)
}

/// The request body as JSON, or the error answer. Error answers never quote the body.
async fn read_json(
    req: Request<Incoming>,
) -> Result<serde_json::Value, (StatusCode, serde_json::Value)> {
    let collected = Limited::new(req.into_body(), ECHO_LIMIT)
        .collect()
        .await
        .map_err(|_| {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"detail": "body too large"}),
            )
        })?;
    serde_json::from_slice(&collected.to_bytes()).map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            json!({"detail": "body is not JSON"}),
        )
    })
}
