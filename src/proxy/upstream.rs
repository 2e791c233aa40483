//! The connection to the unmodified app: plain HTTP/1.1 over a keep-alive pool, with a
//! connect timeout and a deadline for the response head. Failures are classified into the
//! errors the client sees (502 unreachable/protocol, 504 timeout).

use std::error::Error as _;

use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::error::ProxyError;
use crate::body::ProxyBody;
use crate::config::settings::{Timeouts, UpstreamTarget};
use crate::limits::UPSTREAM_MAX_IDLE_PER_HOST;

/// A pooled client for one upstream.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, ProxyBody>,
    authority: Authority,
    response_timeout: std::time::Duration,
}

impl Upstream {
    pub fn new(target: &UpstreamTarget, timeouts: &Timeouts) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeouts.upstream_connect));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(timeouts.upstream_idle)
            .pool_max_idle_per_host(UPSTREAM_MAX_IDLE_PER_HOST)
            .build(connector);
        Self {
            client,
            authority: target.authority.clone(),
            response_timeout: timeouts.upstream_response,
        }
    }

    /// The absolute URI the pool needs; HTTP/1.1 sends it in origin form.
    pub fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(
            path_and_query
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).expect("scheme, authority and path form a valid URI")
    }

    /// Sends the request and waits for the response head (the body streams afterwards).
    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, ProxyError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(ProxyError::UpstreamTimeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(&e)),
        }
    }
}

fn classify(err: &hyper_util::client::legacy::Error) -> ProxyError {
    let mut source = err.source();
    let mut timed_out = false;
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            timed_out = true;
            break;
        }
        source = e.source();
    }
    if timed_out {
        ProxyError::UpstreamTimeout
    } else if err.is_connect() {
        ProxyError::UpstreamUnreachable
    } else {
        ProxyError::UpstreamProtocol
    }
}
