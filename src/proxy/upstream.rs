//! The connection to the unmodified app: plain HTTP/1.1 over a keep-alive pool, with a
//! connect timeout and a deadline for the response head. Failures are classified into the
//! errors the client sees (502 unreachable/protocol, 504 timeout).
//!
//! Each worker thread has its own [`Upstream`] (see `server::workers`), so the pool is a
//! plain LIFO stack behind an uncontended mutex: no hashing, no cross-thread hand-offs. A
//! connection goes back to the pool when its response body has been read to the end; one
//! whose body was abandoned is closed instead (it cannot carry another request).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ProxyError;
use crate::body::{OnEnd, ProxyBody, ReadGap};
use crate::config::settings::{Timeouts, UpstreamTarget};
use crate::limits::UPSTREAM_MAX_IDLE_PER_HOST;

/// A pooled HTTP/1.1 client for one upstream, used by one worker thread.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    /// `host:port` to connect to (port 80 when the URL has none).
    target: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    idle_timeout: Duration,
    /// Longest quiet gap inside a response body ([`crate::body::ReadGap`]).
    read_timeout: Duration,
    /// Requests in flight to the app (`limits.max_upstream_requests`), shared by the workers.
    in_flight: Arc<Semaphore>,
    /// Idle connections, most recently used last.
    idle: Mutex<Vec<IdleConn>>,
    /// Whether the idle sweeper runs (started with the first connection, on the worker).
    sweeper: std::sync::atomic::AtomicBool,
}

impl Inner {
    /// Closes idle connections older than the idle timeout (the oldest are at the bottom).
    fn sweep(&self) {
        let mut stack = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let expired = stack
            .iter()
            .take_while(|c| c.since.elapsed() > self.idle_timeout)
            .count();
        stack.drain(..expired);
    }
}

struct IdleConn {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

impl Upstream {
    pub fn new(target: &UpstreamTarget, timeouts: &Timeouts, in_flight: Arc<Semaphore>) -> Self {
        let authority = &target.authority;
        let connect = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        Self {
            inner: Arc::new(Inner {
                target: connect,
                connect_timeout: timeouts.upstream_connect,
                response_timeout: timeouts.upstream_response,
                idle_timeout: timeouts.upstream_idle,
                read_timeout: timeouts.upstream_read,
                in_flight,
                idle: Mutex::new(Vec::new()),
                sweeper: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The request target sent to the upstream: origin form (`/path?query`), as RFC 9112
    /// §3.2.1 requires of a request to an origin server. (hyper writes the URI as given, and
    /// apps such as uvicorn answer 404 to the absolute form.)
    pub fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Uri {
        let pq = path_and_query
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Uri::from(pq)
    }

    /// Sends the request and waits for the response head (the body streams afterwards).
    /// An `upgrade` request's connection is handed over to the tunnel, never pooled.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
        upgrade: bool,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // A turn among the requests in flight to the app: at once below the bound, else
        // after one finishes (bounded like a connection attempt).
        let turn = match self.inner.in_flight.clone().try_acquire_owned() {
            Ok(turn) => turn,
            Err(_) => {
                let wait = self.inner.in_flight.clone().acquire_owned();
                match tokio::time::timeout(self.inner.connect_timeout, wait).await {
                    Ok(Ok(turn)) => turn,
                    _ => return Err(ProxyError::UpstreamTimeout),
                }
            }
        };
        match tokio::time::timeout(
            self.inner.response_timeout,
            self.exchange(req, upgrade, turn),
        )
        .await
        {
            Err(_) => Err(ProxyError::UpstreamTimeout),
            Ok(result) => result,
        }
    }

    async fn exchange(
        &self,
        mut req: Request<ProxyBody>,
        upgrade: bool,
        turn: OwnedSemaphorePermit,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let mut fresh_only = false;
        loop {
            let pooled = if fresh_only {
                None
            } else {
                self.checkout().await
            };
            let reused = pooled.is_some();
            let mut sender = match pooled {
                Some(sender) => sender,
                None => self.connect().await?,
            };
            // A pooled connection can be closed by the app just as the request is written
            // (keep-alive race). Keep a copy of requests that are safe to send again.
            let replay = if reused { replayable(&req) } else { None };
            match sender.try_send_request(req).await {
                // A switch nobody asked for would turn the response into an unfiltered
                // tunnel (and a 101 cannot end an HTTP/2 stream): the app is broken.
                Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS && !upgrade => {
                    return Err(ProxyError::UpstreamProtocol)
                }
                // The proxy and the client could each read another body (contract §7).
                // Dropping the response closes the connection: it is never pooled.
                Ok(resp) if ambiguous_framing(resp.headers()) => {
                    return Err(ProxyError::UpstreamProtocol)
                }
                Ok(resp) => return Ok(self.attach(resp, sender, upgrade, turn)),
                Err(mut err) => match (err.take_message(), replay) {
                    // Nothing was sent: always safe to retry.
                    (Some(unsent), _) if reused => req = unsent,
                    // Sent, and the connection closed before a complete response head: a
                    // bodyless idempotent request is replayed (RFC 9112 §9.3.1). Never after
                    // an invalid response: the app answered, and answered wrongly.
                    (None, Some(copy)) if closed_early(err.error()) => req = copy,
                    _ => return Err(classify(err.error())),
                },
            }
            // Retries go to a new connection, so they are bounded.
            fresh_only = true;
        }
    }

    /// The most recently used idle connection that is still open and ready.
    async fn checkout(&self) -> Option<SendRequest<ProxyBody>> {
        loop {
            let idle = {
                let mut stack = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
                let top = stack.pop()?;
                if top.since.elapsed() > self.inner.idle_timeout {
                    // The stack is ordered by use: everything below is older still.
                    stack.clear();
                    return None;
                }
                top
            };
            let mut sender = idle.sender;
            // Ready at once for a live idle connection; an error if the app closed it.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn checkin(&self, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let mut stack = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        if stack.len() < UPSTREAM_MAX_IDLE_PER_HOST {
            stack.push(IdleConn {
                sender,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<SendRequest<ProxyBody>, ProxyError> {
        self.start_sweeper();
        let target = self.inner.target.as_str();
        let stream = match tokio::time::timeout(
            self.inner.connect_timeout,
            TcpStream::connect(target),
        )
        .await
        {
            Err(_) => return Err(ProxyError::UpstreamTimeout),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(ProxyError::UpstreamTimeout)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "upstream connect failed");
                return Err(ProxyError::UpstreamUnreachable);
            }
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| ProxyError::UpstreamUnreachable)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Without a sweep, connections idle since a burst would stay open until the app closes
    /// them. The task holds a weak reference, so it ends with the pool (e.g. after a reload).
    fn start_sweeper(&self) {
        if self
            .inner
            .sweeper
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let pool = Arc::downgrade(&self.inner);
        let period = self.inner.idle_timeout;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match pool.upgrade() {
                    Some(inner) => inner.sweep(),
                    None => break,
                }
            }
        });
    }

    /// Wraps the response body so the connection returns to the pool, and the request's turn
    /// ends, when it is read out (an upgraded connection is no longer a request in flight).
    fn attach(
        &self,
        resp: Response<Incoming>,
        sender: SendRequest<ProxyBody>,
        upgrade: bool,
        turn: OwnedSemaphorePermit,
    ) -> Response<ProxyBody> {
        if upgrade || resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return resp.map(|b| b.map_err(Into::into).boxed_unsync());
        }
        if resp.body().is_end_stream() {
            self.checkin(sender);
            return resp.map(|b| b.map_err(Into::into).boxed_unsync());
        }
        let upstream = self.clone();
        let gap = self.inner.read_timeout;
        resp.map(|inner| {
            OnEnd::new(ReadGap::new(inner, gap), move |_, complete| {
                // An abandoned body leaves the connection mid-message: never reuse it.
                if complete {
                    upstream.checkin(sender);
                }
                drop(turn);
            })
            .boxed_unsync()
        })
    }
}

/// A response head whose framing two HTTP parsers could read differently: `Content-Length`
/// beside `Transfer-Encoding` (hyper reads the chunked body, while the headers still say
/// `Content-Length: 0` to anyone who trusts them: RFC 9112 §6.1 calls it a smuggling
/// attempt), or several `Content-Length` fields. A body shorter than its length is a read
/// error and a longer one leaves bytes hyper refuses on the idle connection; both already fail
/// closed.
fn ambiguous_framing(headers: &http::HeaderMap) -> bool {
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let Some(length) = lengths.next() else {
        return false;
    };
    // A list in one field (`48, 48`): hyper accepts identical values (RFC 9112 §6.3), but the
    // field would be forwarded as written, and HTTP/2 clients refuse it.
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || lengths.next().is_some()
        || length.as_bytes().contains(&b',')
}

/// A copy of a bodyless `GET`/`HEAD`/`OPTIONS` request, which may be sent twice without
/// effect (RFC 9110 §9.2.2); `None` for anything else.
fn replayable(req: &Request<ProxyBody>) -> Option<Request<ProxyBody>> {
    let safe = matches!(
        *req.method(),
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    if !safe || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(crate::body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// The connection ended (closed or reset) before a complete response head: not an answer.
fn closed_early(err: &hyper::Error) -> bool {
    !(err.is_parse() || err.is_parse_status() || err.is_timeout() || err.is_user())
}

fn classify(err: &hyper::Error) -> ProxyError {
    if err.is_user() {
        // The request body we were streaming failed: the client's fault (an aborted upload,
        // a broken chunked encoding), not the app's.
        ProxyError::ClientBody
    } else if err.is_timeout() {
        ProxyError::UpstreamTimeout
    } else {
        ProxyError::UpstreamProtocol
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
    use http::{HeaderMap, HeaderValue};

    fn head(fields: &[(http::HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in fields {
            h.append(name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn framing_two_parsers_could_read_differently_is_ambiguous() {
        for fields in [
            vec![(CONTENT_LENGTH, "0"), (TRANSFER_ENCODING, "chunked")],
            vec![(TRANSFER_ENCODING, "chunked"), (CONTENT_LENGTH, "12")],
            vec![(CONTENT_LENGTH, "5"), (CONTENT_LENGTH, "5")],
            vec![(CONTENT_LENGTH, "5"), (CONTENT_LENGTH, "6")],
            vec![(CONTENT_LENGTH, "48, 48")],
        ] {
            assert!(ambiguous_framing(&head(&fields)), "{fields:?}");
        }
        for fields in [
            vec![(CONTENT_LENGTH, "5")],
            vec![(TRANSFER_ENCODING, "chunked")],
            vec![],
        ] {
            assert!(!ambiguous_framing(&head(&fields)), "{fields:?}");
        }
    }
}
