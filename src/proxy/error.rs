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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The upstream refused or could not accept a connection (app down, wrong port).
    UpstreamUnreachable,
    /// No connection or no response head within the configured timeout.
    UpstreamTimeout,
    /// The upstream closed the connection or sent a response that is not valid HTTP/1.1.
    UpstreamProtocol,
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::UpstreamUnreachable | ProxyError::UpstreamProtocol => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The stable `error.code` of the contract's error JSON.
    pub fn code(self) -> &'static str {
        match self {
            ProxyError::UpstreamUnreachable => "upstream_unreachable",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::UpstreamProtocol => "upstream_protocol_error",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            ProxyError::UpstreamUnreachable => "The upstream application could not be reached.",
            ProxyError::UpstreamTimeout => "The upstream application did not respond in time.",
            ProxyError::UpstreamProtocol => {
                "The upstream application closed the connection or sent an invalid response."
            }
        }
    }

    pub fn fault(self) -> Fault {
        match self {
            ProxyError::UpstreamUnreachable
            | ProxyError::UpstreamTimeout
            | ProxyError::UpstreamProtocol => Fault::Upstream,
        }
    }

    /// Short label for metrics (`upstream_errors_total{kind}`).
    pub fn kind(self) -> &'static str {
        match self {
            ProxyError::UpstreamUnreachable => "unreachable",
            ProxyError::UpstreamTimeout => "timeout",
            ProxyError::UpstreamProtocol => "protocol",
        }
    }

    /// The response the client gets (security headers are added by the caller, as for every
    /// response).
    pub fn into_response(self, request_id: &str) -> Response<ProxyBody> {
        error_response(self.status(), self.code(), self.message(), request_id)
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
