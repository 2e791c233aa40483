//! The envelope stage of `envelope: true` routes (contract §3): open the client's request
//! envelope and forward the plain JSON body; seal the app's whole response under the same
//! session key.
//!
//! Fail closed both ways: a request envelope that does not open is a 400 and the app is never
//! called (a request without a body has no session key to seal the answer with, so it is
//! refused too); a response that cannot be sealed (too large, undecodable, upstream error
//! mid-body) becomes a 502 and its plaintext is dropped. The crypto is in
//! [`crate::crypto::envelope`].

use crate::reason::Reason;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response};

use super::error::ProxyError;
use super::fields::{read_request_json, read_response_body, response_has_no_body};
use crate::body::set_length;
use crate::body::{full, ProxyBody};
use crate::crypto::client_keys::ClientKeys;
use crate::crypto::envelope::{self, SessionKey};
use crate::replay::Replay;
use crate::transform::outcome::{Action, FieldOp};

/// Opens the request envelope and admits it (fresh on a `max_age` route; its `jti`, if any,
/// never seen before on any route). Returns the plain body to forward and the session key.
pub async fn open_request(
    headers: &mut HeaderMap,
    body: ProxyBody,
    keys: Option<&ClientKeys>,
    limit: usize,
    (replay, max_age): (&Replay<'_>, Option<Duration>),
    ops: &mut Vec<FieldOp>,
) -> Result<(ProxyBody, SessionKey), ProxyError> {
    let bytes = read_request_json(headers, body, limit)
        .await?
        .ok_or_else(|| rejected(Reason::Missing, None))?;
    // Config validation guarantees RSA keys on envelope routes; fail closed regardless.
    let keys = keys.ok_or_else(|| rejected(Reason::UnknownKey, None))?;
    let opened = envelope::open_request(&bytes, keys)
        .map_err(|e| rejected(e.reason(), e.kid().map(str::to_string)))?;
    let (plain, session) = (opened.plaintext, opened.session);
    let origin = crate::replay::Origin {
        field: "$",
        kid: Some(&session.kid),
        envelope: true,
    };
    crate::replay::admit(opened.iat, opened.jti.as_deref(), max_age, replay, origin).map_err(
        |e| match e {
            crate::replay::FreshnessError::StoreFull => ProxyError::ReplayCacheFull,
            e => rejected(e.reason(), Some(session.kid.clone())),
        },
    )?;
    ops.push(FieldOp {
        path: "$".into(),
        action: Action::EnvelopeOpened,
        kid: Some(session.kid.clone()),
        selector: None,
        view: None,
    });
    // The body is forwarded as plain JSON; the client's encoding headers described the
    // envelope, not this.
    headers.remove(header::CONTENT_ENCODING);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    set_length(headers, plain.len());
    Ok((full(Bytes::copy_from_slice(&plain)), session))
}

/// Seals the app's whole response body under the session key (any status, any content type:
/// the client gets nothing in the clear).
pub async fn seal_response(
    resp: Response<ProxyBody>,
    method: &Method,
    session: &SessionKey,
    limit: usize,
    deadline: Duration,
    ops: &mut Vec<FieldOp>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if response_has_no_body(method, resp.status()) {
        return Ok(resp);
    }
    let (mut parts, body) = resp.into_parts();
    let plain = read_response_body(&mut parts, body, limit, deadline).await?;
    let sealed = session
        .seal_response(&plain)
        .ok_or(ProxyError::ResponseNotEncryptable("sealing failed"))?;
    ops.push(FieldOp {
        path: "$".into(),
        action: Action::EnvelopeSealed,
        kid: Some(session.kid.clone()),
        selector: None,
        view: None,
    });
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    set_length(&mut parts.headers, sealed.len());
    Ok(Response::from_parts(parts, full(sealed)))
}

fn rejected(reason: Reason, kid: Option<String>) -> ProxyError {
    ProxyError::EnvelopeRejected { reason, kid }
}
