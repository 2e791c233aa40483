//! The field stage: on routes with rules, buffer the JSON body (bounded by
//! `limits.max_body_bytes`), apply the rules with [`crate::field_rules`], and send on the
//! re-serialised document with a correct `Content-Length`.
//!
//! Requests fail as the client's fault (400/413/415) before anything reaches the app.
//! Responses fail closed: a body the route must seal but cannot becomes a 502
//! `response_not_encryptable` and its plaintext is dropped, never forwarded.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;

use super::decode;
use super::error::ProxyError;
use crate::body::{full, ProxyBody};
use crate::config::raw::OnNonJson;
use crate::config::settings::{RequestRules, ResponseRules};
use crate::crypto::Keyring;
use crate::field_rules::{self, BodyFailure, FieldOp, Openers};

/// Whether a `Content-Type` is JSON (`application/json`, `application/*+json`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Reads a body of at most `limit` bytes. `Err(true)` = too large, `Err(false)` = read error.
/// (A hand-written loop rather than `http_body_util::Limited`, whose `Into<BoxError>` bound
/// trips rustc's higher-ranked lifetime inference in this async context and makes the request
/// future non-`Send`.)
async fn read_bounded(mut body: ProxyBody, limit: usize) -> Result<Bytes, bool> {
    // A small body usually arrives in one frame: keep it as it is, copy only from a second.
    let mut first = Bytes::new();
    let mut rest: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| false)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let held = rest.as_ref().map_or(first.len(), |b| b.len());
        if held + data.len() > limit {
            return Err(true);
        }
        match &mut rest {
            Some(buf) => buf.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let mut buf = bytes::BytesMut::with_capacity(first.len() + data.len());
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&data);
                rest = Some(buf);
            }
        }
    }
    Ok(rest.map_or(first, bytes::BytesMut::freeze))
}

pub(super) fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

/// Reads a JSON request body a stage must buffer: `None` when there is no body, 415 when it
/// is not declared JSON, 413 past `limit` (checked against `Content-Length` before reading,
/// and while reading).
pub(super) async fn read_request_json(
    headers: &HeaderMap,
    body: ProxyBody,
    limit: usize,
) -> Result<Option<Bytes>, ProxyError> {
    let declared = declared_length(headers);
    if body.is_end_stream() || declared == Some(0) {
        return Ok(None);
    }
    if !is_json(headers) {
        crate::body::drain_refused(body).await;
        return Err(ProxyError::UnsupportedMediaType);
    }
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge);
    }
    read_bounded(body, limit)
        .await
        .map(Some)
        .map_err(|too_large| {
            if too_large {
                ProxyError::BodyTooLarge
            } else {
                ProxyError::ClientBody
            }
        })
}

/// Opens the tokens at the route's decrypt paths. Returns the body to forward.
pub async fn rewrite_request(
    headers: &mut HeaderMap,
    body: ProxyBody,
    rules: &RequestRules,
    openers: &Openers<'_>,
    limit: usize,
    ops: &mut Vec<FieldOp>,
) -> Result<ProxyBody, ProxyError> {
    let Some(bytes) = read_request_json(headers, body, limit).await? else {
        return Ok(crate::body::empty());
    };
    // Both engines refuse nesting deeper than 127 levels: a hostile body cannot exhaust a
    // stack, here or in the app.
    let rewritten =
        field_rules::rewrite_request_body(&bytes, rules, openers, ops).map_err(|failure| {
            match failure {
                BodyFailure::InvalidJson => ProxyError::InvalidJson,
                BodyFailure::Field(f)
                    if f.reason == crate::replay::FreshnessError::StoreFull.reason() =>
                {
                    ProxyError::ReplayCacheFull
                }
                BodyFailure::Field(f) => ProxyError::FieldRejected {
                    path: f.path,
                    reason: f.reason,
                    kid: f.kid,
                },
            }
        })?;
    // Nothing opened: the app gets the client's bytes exactly.
    let out = rewritten.map_or(bytes, Bytes::from);
    set_length(headers, out.len());
    Ok(full(out))
}

/// Responses whose body is absent by definition pass untouched.
pub fn response_has_no_body(method: &Method, status: StatusCode) -> bool {
    method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Reads a response body the route must transform, bounded by `limit` and `deadline`. A body
/// the app compressed anyway (we asked for `identity`) is decoded — gzip, deflate, br, with
/// the limit on every decoded layer, so a zip bomb stops at `limit + 1` — and the headers are
/// made to describe the uncompressed bytes returned. Anything else fails closed.
pub(super) async fn read_response_body(
    parts: &mut http::response::Parts,
    body: ProxyBody,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, ProxyError> {
    // We asked for `identity`; an app that compresses anyway is decoded (gzip, deflate, br), or
    // refused before its body is read.
    let codings = decode::parse_codings(parts.headers.get_all(header::CONTENT_ENCODING))
        .map_err(|e| ProxyError::ResponseNotEncryptable(e.reason()))?;
    if declared_length(&parts.headers).is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::ResponseNotEncryptable("too large"));
    }
    let bytes = match tokio::time::timeout(deadline, read_bounded(body, limit)).await {
        Err(_) => return Err(ProxyError::UpstreamTimeout),
        Ok(Err(true)) => return Err(ProxyError::ResponseNotEncryptable("too large")),
        Ok(Err(false)) => return Err(ProxyError::UpstreamProtocol),
        Ok(Ok(b)) => b,
    };
    let decoded = !codings.is_empty();
    Ok(if decoded {
        // The limit bounds the decoded size of every layer: a zip bomb stops at `limit + 1`.
        let bytes = decode::decode_body(&codings, bytes, limit)
            .map_err(|e| ProxyError::ResponseNotEncryptable(e.reason()))?;
        // Whatever is forwarded below is these decoded bytes (rewritten or not), uncompressed.
        parts.headers.remove(header::CONTENT_ENCODING);
        set_length(&mut parts.headers, bytes.len());
        bytes
    } else {
        bytes
    })
}

/// Seals, redacts and masks the route's response fields; fails closed. (Validators and
/// digests of the app's body were already dropped by [`super::boundary`].)
pub async fn rewrite_response(
    resp: Response<ProxyBody>,
    rules: &ResponseRules,
    keyring: Option<&Keyring>,
    limit: usize,
    deadline: Duration,
    ops: &mut Vec<FieldOp>,
    request_id: &str,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    // The body's own framing says whether it is empty: a `Content-Length: 0` header alone is
    // not trusted (contract §7; a head with both lengths is refused in `upstream`).
    if body.is_end_stream() {
        return Ok(Response::from_parts(parts, body));
    }
    if !is_json(&parts.headers) {
        return match rules.on_non_json {
            OnNonJson::Pass => Ok(Response::from_parts(parts, body)),
            // An error or redirect keeps its status (contract §6): the client learns what
            // happened, and an HTML error page, which may echo anything, never passes.
            OnNonJson::Fail if parts.status.as_u16() >= 300 => Ok(withhold_body(parts, request_id)),
            OnNonJson::Fail => Err(ProxyError::ResponseNotEncryptable("not JSON")),
        };
    }
    let bytes = read_response_body(&mut parts, body, limit, deadline).await?;
    let rewritten =
        field_rules::rewrite_response_body(&bytes, rules, keyring, ops).map_err(|failure| {
            match failure {
                BodyFailure::InvalidJson => ProxyError::ResponseNotEncryptable("invalid JSON"),
                BodyFailure::Field(_) => ProxyError::ResponseNotEncryptable("sealing failed"),
            }
        })?;
    let Some(out) = rewritten else {
        return Ok(Response::from_parts(parts, full(bytes)));
    };
    set_length(&mut parts.headers, out.len());
    Ok(Response::from_parts(parts, full(out)))
}

/// Headers that describe the body being replaced; the rest of the app's head (`Location`,
/// `WWW-Authenticate`, `Retry-After`, `Allow`, cookies) stays, because it is what makes the
/// status useful.
const BODY_HEADERS: [header::HeaderName; 5] = [
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_LOCATION,
    header::CONTENT_RANGE,
    header::CONTENT_DISPOSITION,
];

/// The app's error or redirect answer with its body replaced by the error JSON
/// `upstream_body_withheld` (contract §6 of 1.1). The unread body is dropped, which closes
/// that upstream connection rather than reading an unbounded page to the end.
fn withhold_body(mut parts: http::response::Parts, request_id: &str) -> Response<ProxyBody> {
    let replacement = super::error::error_response(
        parts.status,
        "upstream_body_withheld",
        "The application answered with a body that is not JSON; it was withheld.",
        request_id,
    );
    for name in &BODY_HEADERS {
        parts.headers.remove(name);
    }
    let (replaced, body) = replacement.into_parts();
    for (name, value) in &replaced.headers {
        parts.headers.insert(name, value.clone());
    }
    let len = body.size_hint().exact().unwrap_or_default();
    set_length(&mut parts.headers, usize::try_from(len).unwrap_or_default());
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        let mut h = HeaderMap::new();
        for (ct, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/problem+json", true),
            ("text/plain", false),
            ("text/json", false),
            ("application/jsonx", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_json(&h), json, "{ct}");
        }
        h.clear();
        assert!(!is_json(&h));
    }
}
