//! One access-log line and the request metrics per request, emitted when the response body
//! has been fully sent (or dropped because the client went away), so `bytes` and `duration`
//! cover the whole exchange even for streamed bodies.
//!
//! Only the request id, route, method, status, timings and byte counts are logged — never
//! paths with queries, header values or bodies, which can hold secrets.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Version};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::{BoxError, OnEnd, ProxyBody};
use crate::metrics::Metrics;

/// Everything the log line needs, gathered along the request path.
pub struct Exchange {
    pub request_id: String,
    pub route: Arc<str>,
    pub method: Method,
    pub version: Version,
    pub status: u16,
    /// The app's status when the proxy answered with another (a body withheld, a 502 for a
    /// response it could not seal): the operator sees what the app said as well.
    pub upstream_status: Option<u16>,
    pub started: Instant,
    pub bytes_in: Arc<AtomicU64>,
    pub metrics: Arc<Metrics>,
}

impl Exchange {
    fn finish(&self, bytes_out: u64, complete: bool) {
        let elapsed = self.started.elapsed();
        self.metrics
            .observe_request(&self.route, &self.method, self.status, elapsed);
        tracing::info!(
            target: "fieldseal::access",
            request_id = %self.request_id,
            route = %self.route,
            method = %self.method,
            version = ?self.version,
            status = self.status,
            upstream_status = self.upstream_status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            bytes_in = self.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            complete,
            "request"
        );
    }
}

/// The response body as sent to the client: reports its exchange when it ends.
pub type ObservedBody = OnEnd<ProxyBody, Box<dyn FnOnce(u64, bool) + Send>>;

impl Exchange {
    /// Wraps the response body so the exchange is logged and measured when it ends.
    pub fn observe(self, body: ProxyBody) -> ObservedBody {
        OnEnd::new(
            body,
            Box::new(move |bytes, complete| self.finish(bytes, complete)),
        )
    }
}

pin_project! {
    /// Counts request bytes into a shared counter as the upstream consumes them.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        count: Arc<AtomicU64>,
    }
}

impl<B> CountedBody<B> {
    pub fn new(inner: B, count: Arc<AtomicU64>) -> Self {
        Self { inner, count }
    }
}

impl<B> Body for CountedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.count.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
