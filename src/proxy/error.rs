//! Errors a request can meet on its way through the proxy, and the one function that turns
//! each into a status and the contract's error JSON (§6).

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use serde_json::json;

use crate::body::{full, ProxyBody};

/// Who is at fault, for the `kind` metric label and log fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something the proxy refuses.
    Downstream,
    /// The app failed or could not be reached.
    Upstream,
}

/// A request that the proxy answers itself instead of relaying the upstream's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// The upstream refused or could not accept a connection (app down, wrong port).
    UpstreamUnreachable,
    /// No connection or no response head within the configured timeout.
    UpstreamTimeout,
    /// The upstream closed the connection or sent a response that is not valid HTTP/1.1.
    UpstreamProtocol,
    /// Client: a request target or method the proxy and the app could read differently (see
    /// `routing::ambiguous_request`); refused so no rule can be bypassed by respelling.
    AmbiguousRequest(&'static str),
    /// Client: a request no route could serve as sent (an absurdly long method).
    BadRequest(&'static str),
    /// Client: `CONNECT` or `TRACE`, which a reverse proxy in front of an app never forwards.
    MethodNotAllowed,
    /// Client: a body the route must read is larger than `limits.max_body_bytes`.
    BodyTooLarge,
    /// Client: a route with decrypt rules got a body that is not JSON.
    UnsupportedMediaType,
    /// Client: the body is not valid JSON, or nests deeper than the parser allows.
    InvalidJson,
    /// Client: the body could not be read (connection aborted mid-body).
    ClientBody,
    /// Client: a field at a decrypt path did not open (or was plaintext where tokens are
    /// required). Names the field, the reason and the key id — never the value.
    FieldRejected {
        path: String,
        reason: crate::reason::Reason,
        kid: Option<String>,
    },
    /// Client: the request envelope of an `envelope: true` route did not open (or was
    /// missing). Names the reason and, for an unknown key, the kid.
    EnvelopeRejected {
        reason: crate::reason::Reason,
        kid: Option<String>,
    },
    /// The `jti` store of `request.max_age` routes is full of live entries: refusing is the
    /// only way not to forget one (which would reopen a replay window).
    ReplayCacheFull,
    /// The shared replay store (Redis) did not answer, and a value came through a route with
    /// `max_age`: its once-only promise cannot be kept by this replica alone. Retryable.
    ReplayStoreUnavailable,
    /// Upstream: a response the route must seal cannot be (not JSON, too large, encoded in a
    /// way the proxy cannot decode). Fail closed: the plaintext is never sent.
    ResponseNotEncryptable(&'static str),
    /// Upstream: one field of an answer could not be sealed (no data subject for a
    /// `per_subject` rule, an erased subject, the random source). Withheld like
    /// `ResponseNotEncryptable`; the audit log and the metrics name the field and the reason,
    /// the client gets the same message as for any answer that cannot be sealed.
    ResponseFieldFailed(crate::transform::rules::FieldFailure),
    /// The guard in `block` mode found sensitive data in the answer (contract §9).
    SensitiveDataDetected,
}

/// A failure as the field metrics and the audit log record it: which field, why, with which
/// key, and whether it was the client's value (`Rejected`) or the app's answer (`Failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldRejection<'a> {
    /// Normalized JSONPath of the field (`$` for whole-body failures).
    pub field: &'a str,
    /// The audit record's reason: the field reason, or what kept an answer from being sealed.
    pub reason: &'static str,
    /// The `reason` label of `fieldseal_field_failures_total`.
    pub metric: &'static str,
    pub kid: Option<&'a str>,
    pub outcome: crate::audit::Outcome,
}

impl ProxyError {
    /// The one classification of failures for the field metrics and the audit log (beside
    /// `status`/`code` for the client); `None` for failures that are not about fields.
    pub fn field_rejection(&self) -> Option<FieldRejection<'_>> {
        use crate::audit::Outcome;
        let (field, reason, metric, kid, outcome) = match self {
            ProxyError::FieldRejected { path, reason, kid } => (
                path.as_str(),
                reason.as_str(),
                reason.as_str(),
                kid.as_deref(),
                Outcome::Rejected,
            ),
            ProxyError::EnvelopeRejected { reason, kid } => (
                "$",
                reason.as_str(),
                reason.as_str(),
                kid.as_deref(),
                Outcome::Rejected,
            ),
            ProxyError::ReplayStoreUnavailable => {
                let reason = crate::reason::Reason::ReplayCheckUnavailable.as_str();
                ("$", reason, reason, None, Outcome::Failed)
            }
            ProxyError::ReplayCacheFull => {
                let reason = crate::reason::Reason::ReplayCacheFull.as_str();
                ("$", reason, reason, None, Outcome::Rejected)
            }
            ProxyError::ResponseNotEncryptable(why) => {
                ("$", *why, "response_not_encryptable", None, Outcome::Failed)
            }
            ProxyError::ResponseFieldFailed(f) => (
                f.path.as_str(),
                f.reason.as_str(),
                f.reason.as_str(),
                f.kid.as_deref(),
                Outcome::Failed,
            ),
            ProxyError::SensitiveDataDetected => (
                "$",
                "sensitive_data_detected",
                "sensitive_data_detected",
                None,
                Outcome::Failed,
            ),
            _ => return None,
        };
        Some(FieldRejection {
            field,
            reason,
            metric,
            kid,
            outcome,
        })
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::UpstreamUnreachable
            | ProxyError::UpstreamProtocol
            | ProxyError::ResponseNotEncryptable(_)
            | ProxyError::ResponseFieldFailed(_)
            | ProxyError::SensitiveDataDetected => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::InvalidJson
            | ProxyError::BadRequest(_)
            | ProxyError::AmbiguousRequest(_)
            | ProxyError::ClientBody
            | ProxyError::FieldRejected { .. }
            | ProxyError::EnvelopeRejected { .. } => StatusCode::BAD_REQUEST,
            ProxyError::ReplayCacheFull | ProxyError::ReplayStoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The stable `error.code` of the contract's error JSON.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::UpstreamUnreachable => "upstream_unreachable",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::UpstreamProtocol => "upstream_protocol_error",
            ProxyError::BodyTooLarge => "body_too_large",
            ProxyError::UnsupportedMediaType => "unsupported_media_type",
            ProxyError::InvalidJson => "invalid_json",
            ProxyError::AmbiguousRequest(_) => "ambiguous_request",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::ClientBody => "client_body_error",
            ProxyError::FieldRejected { .. } => "field_rejected",
            ProxyError::EnvelopeRejected { .. } => "envelope_rejected",
            ProxyError::ReplayCacheFull => "replay_cache_full",
            ProxyError::ReplayStoreUnavailable => "replay_check_unavailable",
            ProxyError::ResponseNotEncryptable(_) | ProxyError::ResponseFieldFailed(_) => {
                "response_not_encryptable"
            }
            ProxyError::SensitiveDataDetected => "sensitive_data_detected",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ProxyError::UpstreamUnreachable => {
                "The upstream application could not be reached.".into()
            }
            ProxyError::UpstreamTimeout => {
                "The upstream application did not respond in time.".into()
            }
            ProxyError::UpstreamProtocol => {
                "The upstream application closed the connection or sent an invalid response.".into()
            }
            ProxyError::BodyTooLarge => {
                "The request body is larger than this route accepts.".into()
            }
            ProxyError::UnsupportedMediaType => {
                "This route needs a request body its rules read: JSON (Content-Type: application/json), or a form where the route opens form fields.".into()
            }
            ProxyError::InvalidJson => {
                "The request body is not valid JSON (or nests too deeply).".into()
            }
            ProxyError::ClientBody => "The request body could not be read.".into(),
            ProxyError::BadRequest(why) => format!("The request was refused: {why}."),
            ProxyError::MethodNotAllowed => {
                "This method is not forwarded to the application.".into()
            }
            ProxyError::AmbiguousRequest(why) => format!(
                "The request was refused: {why} (the proxy and the application could read it differently)."
            ),
            ProxyError::FieldRejected { path, reason, kid } => match kid {
                Some(kid) => format!("Field {path} was rejected: {reason} (key {kid})."),
                None => format!("Field {path} was rejected: {reason}."),
            },
            ProxyError::EnvelopeRejected { reason, kid } => match kid {
                Some(kid) => format!("The request envelope was rejected: {reason} (key {kid})."),
                None => format!("The request envelope was rejected: {reason}."),
            },
            ProxyError::ReplayStoreUnavailable => {
                "The shared replay check is unavailable; retry shortly.".into()
            }
            ProxyError::ReplayCacheFull => {
                "Too many recent encrypted values to check for replay; retry later.".into()
            }
            ProxyError::SensitiveDataDetected => {
                "The application's answer contained data the guard withholds.".into()
            }
            ProxyError::ResponseNotEncryptable(why) => {
                format!("The upstream response could not be encrypted as this route requires ({why}); it was withheld.")
            }
            ProxyError::ResponseFieldFailed(_) => {
                "The upstream response could not be encrypted as this route requires (sealing failed); it was withheld.".into()
            }
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::UpstreamUnreachable
            | ProxyError::UpstreamTimeout
            | ProxyError::UpstreamProtocol
            | ProxyError::ResponseNotEncryptable(_)
            | ProxyError::ResponseFieldFailed(_)
            | ProxyError::SensitiveDataDetected => Fault::Upstream,
            ProxyError::BodyTooLarge
            | ProxyError::UnsupportedMediaType
            | ProxyError::InvalidJson
            | ProxyError::AmbiguousRequest(_)
            | ProxyError::BadRequest(_)
            | ProxyError::MethodNotAllowed
            | ProxyError::ClientBody
            | ProxyError::FieldRejected { .. }
            | ProxyError::EnvelopeRejected { .. }
            | ProxyError::ReplayCacheFull => Fault::Downstream,
            ProxyError::ReplayStoreUnavailable => Fault::Upstream,
        }
    }

    /// Short label for metrics (`upstream_errors_total{kind}`), for upstream faults.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::UpstreamUnreachable => "unreachable",
            ProxyError::UpstreamTimeout => "timeout",
            ProxyError::UpstreamProtocol => "protocol",
            ProxyError::ResponseNotEncryptable(_) | ProxyError::ResponseFieldFailed(_) => {
                "not_encryptable"
            }
            ProxyError::SensitiveDataDetected => "sensitive_data",
            _ => "downstream",
        }
    }

    /// The response the client gets (security headers are added by the caller, as for every
    /// response).
    pub fn into_response(self, request_id: &str) -> Response<ProxyBody> {
        error_response(self.status(), self.code(), &self.message(), request_id)
    }
}

/// Builds `{"error": {"code", "message", "request_id"}}` with the given status.
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<ProxyBody> {
    let body = json!({"error": {"code": code, "message": message, "request_id": request_id}});
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn error_json_matches_the_contract() {
        let resp = ProxyError::UpstreamTimeout.into_response("req-1");
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "upstream_timeout");
        assert_eq!(v["error"]["request_id"], "req-1");
        assert!(v["error"]["message"].as_str().unwrap().ends_with('.'));
    }
}
