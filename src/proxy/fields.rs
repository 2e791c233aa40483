//! The field stage: on routes with rules, buffer the JSON body (bounded by
//! `limits.max_body_bytes`), apply the rules with [`crate::transform::rules`], and send on the
//! re-serialised document with a correct `Content-Length`.
//!
//! Requests fail as the client's fault (400/413/415) before anything reaches the app.
//! Responses fail closed: a body the route must seal but cannot becomes a 502
//! `response_not_encryptable` and its plaintext is dropped, never forwarded.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Method, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;

use super::carriers;
use super::decode;
use super::error::ProxyError;
use crate::body::{full, ProxyBody};
use crate::config::raw::GuardMode;
use crate::config::raw::OnNonJson;
use crate::config::settings::{RequestRules, ResponseRules};
use crate::crypto::Keyring;
use crate::guard::{Findings, Guard};
use crate::transform::rules::{self as field_rules, BodyFailure, FieldOp, Openers};

/// What a `Content-Type` says about JSON (contract §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Media {
    /// `application/json` or `application/*+json`.
    Json,
    /// No type, or `text/plain`: JSON if the body parses as JSON (apps and frameworks send
    /// JSON unlabelled or as text often enough that a label cannot decide).
    Unlabelled,
    /// Anything else.
    Other,
}

fn media(headers: &HeaderMap) -> Media {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Media::Unlabelled;
    };
    let Ok(ct) = ct.to_str() else {
        return Media::Other;
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media == "application/json"
        || (media.starts_with("application/") && media.ends_with("+json"))
    {
        Media::Json
    } else if media == "text/plain" || media.is_empty() {
        Media::Unlabelled
    } else {
        Media::Other
    }
}

/// Whether a `Content-Type` is JSON (`application/json`, `application/*+json`).
fn is_json(headers: &HeaderMap) -> bool {
    media(headers) == Media::Json
}

/// Whether a body's first bytes could begin a JSON document with fields in it (an object or
/// an array; leading whitespace allowed). `None` when they are all whitespace.
fn starts_like_json(bytes: &[u8]) -> Option<bool> {
    bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .map(|b| matches!(b, b'{' | b'['))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Why a body could not be read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadFailed {
    /// The sender broke the message (or, for a request, went away).
    Broken,
    /// The sender went quiet for longer than its read timeout ([`crate::body::ReadGap`]).
    Quiet,
}

impl ReadFailed {
    /// What a failed upstream body read tells the client.
    fn upstream(self) -> ProxyError {
        match self {
            ReadFailed::Broken => ProxyError::UpstreamProtocol,
            ReadFailed::Quiet => ProxyError::UpstreamTimeout,
        }
    }
}

/// Reads a body of at most `limit` bytes. `Err(None)` = too large.
async fn read_bounded(body: ProxyBody, limit: usize) -> Result<Bytes, Option<ReadFailed>> {
    match read_up_to(body, limit, false).await {
        Ok(Buffered::Whole(bytes)) => Ok(bytes),
        Ok(Buffered::Over(_) | Buffered::NotJson(_)) => Err(None),
        Err(failed) => Err(Some(failed)),
    }
}

/// A body read up to a bound.
enum Buffered {
    /// All of it.
    Whole(Bytes),
    /// More than the bound: what was read, and the same body continuing after it.
    Over(ProxyBody),
    /// `sniff` was asked and the first bytes cannot begin a JSON object or array: the whole
    /// body, unread past its first frame.
    NotJson(ProxyBody),
}

/// The body `rest` with `prefix` in front of it again.
fn rejoin(prefix: Bytes, rest: ProxyBody) -> ProxyBody {
    use futures_util::StreamExt;
    let head = futures_util::stream::once(async move { Ok(http_body::Frame::data(prefix)) });
    let stream = head.chain(http_body_util::BodyStream::new(rest));
    http_body_util::StreamBody::new(stream).boxed_unsync()
}

/// Reads at most `limit` bytes of `body`; with `sniff`, gives up after the first data if it
/// cannot begin a JSON object or array. (A hand-written loop rather
/// than `http_body_util::Limited`, whose `Into<BoxError>` bound trips rustc's higher-ranked
/// lifetime inference in this async context and makes the request future non-`Send`.)
async fn read_up_to(
    mut body: ProxyBody,
    limit: usize,
    sniff: bool,
) -> Result<Buffered, ReadFailed> {
    let mut buf = bytes::BytesMut::new();
    let mut first: Option<Bytes> = None;
    let mut sniffed = !sniff;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match crate::body::timed_out(&*e) {
            true => ReadFailed::Quiet,
            false => ReadFailed::Broken,
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let held = first.as_ref().map_or(buf.len(), Bytes::len);
        if !sniffed {
            match starts_like_json(&data) {
                None => {}
                Some(json) => {
                    sniffed = true;
                    if !json {
                        let mut prefix = bytes::BytesMut::with_capacity(held + data.len());
                        prefix.extend_from_slice(first.as_deref().unwrap_or(&buf));
                        prefix.extend_from_slice(&data);
                        return Ok(Buffered::NotJson(rejoin(prefix.freeze(), body)));
                    }
                }
            }
        }
        if held + data.len() > limit {
            let mut prefix = bytes::BytesMut::with_capacity(held + data.len());
            prefix.extend_from_slice(first.as_deref().unwrap_or(&buf));
            prefix.extend_from_slice(&data);
            return Ok(Buffered::Over(rejoin(prefix.freeze(), body)));
        }
        // A small body usually arrives in one frame: keep it as it is, copy only from a second.
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            None => buf.extend_from_slice(&data),
            Some(one) => {
                buf.reserve(one.len() + data.len());
                buf.extend_from_slice(&one);
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(Buffered::Whole(first.unwrap_or_else(|| buf.freeze())))
}

/// Reads a JSON request body a stage must buffer: `None` when there is no body, 415 when it
/// is not declared JSON, 413 past `limit` (checked against `Content-Length` before reading,
/// and while reading).
pub(super) async fn read_request_json(
    headers: &HeaderMap,
    body: ProxyBody,
    limit: usize,
) -> Result<Option<Bytes>, ProxyError> {
    if body.is_end_stream() || declared_length(headers) == Some(0) {
        return Ok(None);
    }
    if !is_json(headers) {
        crate::body::drain_refused(body).await;
        return Err(ProxyError::UnsupportedMediaType);
    }
    read_request_body(headers, body, limit).await
}

/// A request body as the field stage reads it.
enum RequestJson {
    /// No body.
    Empty,
    /// A JSON document to open tokens in.
    Json(Bytes),
    /// Not JSON, and the route lets such bodies pass (the field policy alone).
    Untouched(ProxyBody),
}

/// Reads a request body the field stage may rewrite. Labelled JSON is read (413 past
/// `limit`). On a route with decrypt rules of its own (`strict`) anything else is a 415; under
/// the field policy alone an unlabelled or `text/plain` body counts as JSON when it parses
/// (contract §8), and any other body passes untouched.
async fn read_field_request(
    headers: &HeaderMap,
    body: ProxyBody,
    limit: usize,
    strict: bool,
) -> Result<RequestJson, ProxyError> {
    let declared = declared_length(headers);
    if body.is_end_stream() || declared == Some(0) {
        return Ok(RequestJson::Empty);
    }
    let refuse = |body: ProxyBody| async move {
        crate::body::drain_refused(body).await;
        Err(ProxyError::UnsupportedMediaType)
    };
    // A route with decrypt rules of its own asks for labelled JSON, as it always has (a
    // client that opens values there knows what it sends); the policy alone also reads
    // unlabelled and `text/plain` bodies, which FastAPI and `get_json(force=True)` parse.
    let labelled = match media(headers) {
        Media::Json => true,
        _ if strict => return refuse(body).await,
        Media::Unlabelled => false,
        Media::Other => return Ok(RequestJson::Untouched(body)),
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge);
    }
    let bytes = match read_up_to(body, limit, !labelled).await {
        Err(_) => return Err(ProxyError::ClientBody),
        Ok(Buffered::Over(_)) => return Err(ProxyError::BodyTooLarge),
        Ok(Buffered::NotJson(body)) if strict => return refuse(body).await,
        Ok(Buffered::NotJson(body)) => return Ok(RequestJson::Untouched(body)),
        Ok(Buffered::Whole(bytes)) => bytes,
    };
    if bytes.is_empty() {
        return Ok(RequestJson::Empty);
    }
    if !labelled && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
        return if strict {
            Err(ProxyError::UnsupportedMediaType)
        } else {
            Ok(RequestJson::Untouched(full(bytes)))
        };
    }
    Ok(RequestJson::Json(bytes))
}

/// Reads a request body a stage must buffer, whatever its type: `None` when there is none,
/// 413 past `limit` (checked against `Content-Length` before reading, and while reading).
async fn read_request_body(
    headers: &HeaderMap,
    body: ProxyBody,
    limit: usize,
) -> Result<Option<Bytes>, ProxyError> {
    let declared = declared_length(headers);
    if body.is_end_stream() || declared == Some(0) {
        return Ok(None);
    }
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge);
    }
    read_bounded(body, limit)
        .await
        .map(Some)
        .map_err(|failed| match failed {
            None => ProxyError::BodyTooLarge,
            Some(_) => ProxyError::ClientBody,
        })
}

/// Opens the tokens at the route's decrypt paths (its own and the field policy's). Returns
/// the body to forward.
pub async fn rewrite_request(
    headers: &mut HeaderMap,
    body: ProxyBody,
    rules: &RequestRules,
    openers: &Openers<'_>,
    limit: usize,
    ops: &mut Vec<FieldOp>,
) -> Result<ProxyBody, ProxyError> {
    // A route with body rules of its own (JSON paths or form fields) takes only the bodies
    // they read; under the field policy alone, other bodies pass untouched.
    let strict = rules.strict_body();
    if let Some(kind) = carriers::form_kind(headers) {
        if rules.opens_forms() {
            let Some(bytes) = read_request_body(headers, body, limit).await? else {
                return Ok(crate::body::empty());
            };
            return carriers::rewrite_form(headers, bytes, kind, rules, openers, ops);
        }
    } else if rules.decrypt.is_empty() || (strict && !rules.has_own_json()) {
        // No JSON rule reads this body (or the route's own rules name only form fields).
        let empty = body.is_end_stream() || declared_length(headers) == Some(0);
        if strict && !empty {
            crate::body::drain_refused(body).await;
            return Err(ProxyError::UnsupportedMediaType);
        }
        return Ok(body);
    }
    let bytes = match read_field_request(headers, body, limit, strict).await? {
        RequestJson::Empty => return Ok(crate::body::empty()),
        RequestJson::Untouched(body) => return Ok(body),
        RequestJson::Json(bytes) => bytes,
    };
    // Both engines refuse nesting deeper than 127 levels: a hostile body cannot exhaust a
    // stack, here or in the app.
    let rewritten =
        field_rules::rewrite_request_body(&bytes, rules, openers, ops).map_err(|failure| {
            match failure {
                BodyFailure::InvalidJson => ProxyError::InvalidJson,
                BodyFailure::Field(f) if f.reason == crate::reason::Reason::ReplayCacheFull => {
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
    crate::body::set_length(headers, out.len());
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
        Ok(Err(None)) => return Err(ProxyError::ResponseNotEncryptable("too large")),
        Ok(Err(Some(failed))) => return Err(failed.upstream()),
        Ok(Ok(b)) => b,
    };
    let decoded = !codings.is_empty();
    Ok(if decoded {
        // The limit bounds the decoded size of every layer: a zip bomb stops at `limit + 1`.
        let bytes = decode::decode_body(&codings, bytes, limit)
            .map_err(|e| ProxyError::ResponseNotEncryptable(e.reason()))?;
        // Whatever is forwarded below is these decoded bytes (rewritten or not), uncompressed.
        parts.headers.remove(header::CONTENT_ENCODING);
        crate::body::set_length(&mut parts.headers, bytes.len());
        bytes
    } else {
        bytes
    })
}

/// What the response stage applies to an answer besides the answer itself.
pub struct ResponseStage<'a> {
    /// The field rules (the route's own and the field policy's), if any.
    pub rules: Option<&'a ResponseRules>,
    /// The guard, if configured (contract §9).
    pub guard: Option<&'a Guard>,
    pub keyring: Option<&'a Keyring>,
    /// The same keyring, for an answer sealed as it streams (the body outlives the stage).
    pub keyring_shared: Option<&'a std::sync::Arc<Keyring>>,
    pub limit: usize,
    pub deadline: Duration,
    pub request_id: &'a str,
    /// What each rule with views does for this caller.
    pub sight: &'a crate::transform::view::Sight,
}

impl ResponseStage<'_> {
    /// Whether the stage has anything to do with this answer.
    pub fn applies(&self) -> bool {
        self.rules.is_some() || self.guard.is_some()
    }

    /// Whether a body that is not JSON fails (the route's own rules, `on_non_json: fail`);
    /// under the field policy or the guard alone it passes untouched.
    fn refuses_non_json(&self) -> bool {
        self.rules.is_some_and(|r| r.on_non_json == OnNonJson::Fail)
    }
}

/// Seals, redacts and masks the answer's fields, then lets the guard inspect what would go
/// out; fails closed. A body is JSON when labelled so, or when unlabelled or `text/plain` and
/// it parses as JSON (contract §8); other bodies stream untouched unless the route's own rules
/// refuse them. (Validators and digests of the app's body were already dropped by
/// [`super::boundary`] on routes with rules.)
pub async fn rewrite_response(
    resp: Response<ProxyBody>,
    stage: &ResponseStage<'_>,
    ops: &mut Vec<FieldOp>,
    findings: &mut Findings,
    streamed: &mut Option<std::sync::Arc<super::streaming::StreamReport>>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    // The body's own framing says whether it is empty: a `Content-Length: 0` header alone is
    // not trusted (contract §7; a head with both lengths is refused in `upstream`).
    if body.is_end_stream() {
        return Ok(Response::from_parts(parts, body));
    }
    let labelled = match media(&parts.headers) {
        Media::Other => return not_json(parts, body, stage),
        Media::Json => true,
        Media::Unlabelled => false,
    };
    let encoded = parts.headers.contains_key(header::CONTENT_ENCODING);
    // A large labelled answer whose rules the byte-level engine applies is sealed as it
    // streams, rather than buffered (or, above the limit, withheld): docs/streaming.md.
    let plan = stage
        .rules
        .and_then(ResponseRules::plan)
        .filter(|_| labelled && !encoded && stage.guard.is_none())
        .filter(|_| !stage.sight.subject().per_value());
    let limit = match plan {
        Some(_) => stage.limit.min(super::streaming::STREAM_ABOVE),
        None => stage.limit,
    };
    let bytes = if encoded {
        // Compressed although we asked for `identity`: decoded whole (bounded) first.
        read_response_body(&mut parts, body, stage.limit, stage.deadline).await?
    } else {
        if labelled && declared_length(&parts.headers).is_some_and(|n| n > limit as u64) {
            return match plan {
                Some(plan) => Ok(stream(parts, body, plan, stage, streamed)),
                None => too_large(parts, body, stage, findings),
            };
        }
        let read = tokio::time::timeout(stage.deadline, read_up_to(body, limit, !labelled));
        match read.await {
            Err(_) => return Err(ProxyError::UpstreamTimeout),
            Ok(Err(failed)) => return Err(failed.upstream()),
            Ok(Ok(Buffered::NotJson(body))) => return not_json(parts, body, stage),
            Ok(Ok(Buffered::Over(body))) => {
                return match plan {
                    Some(plan) => Ok(stream(parts, body, plan, stage, streamed)),
                    None => too_large(parts, body, stage, findings),
                }
            }
            Ok(Ok(Buffered::Whole(bytes))) => bytes,
        }
    };
    // Unlabelled bodies count as JSON only when they parse: the rules' own parse decides
    // (no second pass); the guard alone checks first.
    let rewritten = match stage.rules {
        None if !labelled && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() => {
            return not_json(parts, full(bytes), stage);
        }
        None => None,
        Some(rules) => {
            match field_rules::rewrite_response_body_as(
                &bytes,
                rules,
                stage.keyring,
                stage.sight,
                ops,
            ) {
                Ok(rewritten) => rewritten,
                Err(BodyFailure::InvalidJson) if !labelled => {
                    return not_json(parts, full(bytes), stage)
                }
                Err(BodyFailure::InvalidJson) => {
                    return Err(ProxyError::ResponseNotEncryptable("invalid JSON"))
                }
                Err(BodyFailure::Field(failure)) => {
                    return Err(ProxyError::ResponseFieldFailed(failure))
                }
            }
        }
    };
    let out = rewritten.map_or(bytes, Bytes::from);
    if let Some(guard) = stage.guard {
        // Fields a view showed their caller are declared, not leaks.
        let shown: Vec<&str> = ops
            .iter()
            .filter(|op| op.action == crate::transform::rules::Action::Shown)
            .map(|op| op.path.as_str())
            .collect();
        *findings = guard.scan_bytes_showing(&out, &shown);
        if guard.mode == GuardMode::Block && findings.total() > 0 {
            return Err(ProxyError::SensitiveDataDetected);
        }
    }
    crate::body::set_length(&mut parts.headers, out.len());
    Ok(Response::from_parts(parts, full(out)))
}

/// An answer whose body is not JSON: refused or withheld where the route's own rules say
/// so, else forwarded untouched.
fn not_json(
    parts: http::response::Parts,
    body: ProxyBody,
    stage: &ResponseStage<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if !stage.refuses_non_json() {
        return Ok(Response::from_parts(parts, body));
    }
    if parts.status.as_u16() >= 300 {
        // An error or redirect keeps its status (contract §6): the client learns what
        // happened, and an HTML error page, which may echo anything, never passes.
        return Ok(withhold_body(parts, stage.request_id));
    }
    Err(ProxyError::ResponseNotEncryptable("not JSON"))
}

/// The answer, sealed as it streams (its length is no longer known: chunked on HTTP/1.1).
fn stream(
    mut parts: http::response::Parts,
    body: ProxyBody,
    plan: &crate::transform::splice::Plan,
    stage: &ResponseStage<'_>,
    streamed: &mut Option<std::sync::Arc<super::streaming::StreamReport>>,
) -> Response<ProxyBody> {
    use super::streaming::{Sealing, SealingBody, StreamReport};
    parts.headers.remove(header::CONTENT_LENGTH);
    let report = std::sync::Arc::new(StreamReport::default());
    *streamed = Some(report.clone());
    let sealing = Sealing {
        rules: stage.rules.expect("a plan comes from rules").clone(),
        keyring: stage.keyring_shared.cloned(),
        sight: stage.sight.clone(),
    };
    let body = SealingBody::new(body, plan.clone(), sealing, report);
    Response::from_parts(parts, body.boxed_unsync())
}

/// A JSON answer above `limits.max_body_bytes`. Field rules cannot be applied to what is not
/// read, so it fails closed; only the guard alone in `observe` mode lets it out, uninspected
/// (and counted).
fn too_large(
    parts: http::response::Parts,
    body: ProxyBody,
    stage: &ResponseStage<'_>,
    findings: &mut Findings,
) -> Result<Response<ProxyBody>, ProxyError> {
    match (stage.rules, stage.guard) {
        (None, Some(guard)) if guard.mode == GuardMode::Observe => {
            findings.unscanned = true;
            Ok(Response::from_parts(parts, body))
        }
        _ => Err(ProxyError::ResponseNotEncryptable("too large")),
    }
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
    crate::body::set_length(&mut parts.headers, usize::try_from(len).unwrap_or_default());
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
            h.insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
            assert_eq!(is_json(&h), json, "{ct}");
        }
        h.clear();
        assert!(!is_json(&h));
    }
}
