//! The body type every stage passes along, and small constructors.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body of any origin (client, upstream or proxy-made).
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Reads and discards a request body the proxy refuses, so the client finishes sending it
/// before the answer (see `limits::REFUSED_BODY_DRAIN_BYTES`): at most that many bytes, for
/// at most `REFUSED_BODY_DRAIN_TIMEOUT`; a larger or slower body is abandoned as before.
pub async fn drain_refused<B>(body: B)
where
    B: http_body::Body + Unpin,
{
    use crate::limits::{REFUSED_BODY_DRAIN_BYTES, REFUSED_BODY_DRAIN_TIMEOUT};
    let mut body = body;
    let read = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen += bytes::Buf::remaining(data);
                if seen > REFUSED_BODY_DRAIN_BYTES {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(REFUSED_BODY_DRAIN_TIMEOUT, read).await;
}

pin_project_lite::pin_project! {
    /// Wraps a body and runs `on_end(bytes, complete)` exactly once: when the body has been
    /// read to its end (`complete = true`), or when it is dropped first (`complete` = whether
    /// it had reached its end anyway). `bytes` counts the data that passed through.
    ///
    /// Both end-of-exchange duties hang off this: the access log / request metrics, and giving
    /// an upstream connection back to its pool.
    pub struct OnEnd<B: http_body::Body, F: FnOnce(u64, bool)> {
        #[pin]
        inner: B,
        on_end: Option<F>,
        bytes: u64,
    }

    impl<B: http_body::Body, F: FnOnce(u64, bool)> PinnedDrop for OnEnd<B, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(on_end) = this.on_end.take() {
                on_end(*this.bytes, this.inner.is_end_stream());
            }
        }
    }
}

impl<B: http_body::Body, F: FnOnce(u64, bool)> OnEnd<B, F> {
    pub fn new(inner: B, on_end: F) -> Self {
        Self {
            inner,
            on_end: Some(on_end),
            bytes: 0,
        }
    }
}

impl<B, F> http_body::Body for OnEnd<B, F>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    F: FnOnce(u64, bool),
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
                // hyper stops polling once `is_end_stream` is true.
                this.inner.is_end_stream()
            }
            Poll::Ready(None) => true,
            _ => false,
        };
        if ended {
            if let Some(on_end) = this.on_end.take() {
                on_end(*this.bytes, true);
            }
        }
        polled.map(|frame| frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The error a body ends with when its sender went quiet for longer than allowed.
#[derive(Debug)]
pub struct ReadTimedOut;

impl std::fmt::Display for ReadTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no body data within the read timeout")
    }
}

impl std::error::Error for ReadTimedOut {}

pin_project_lite::pin_project! {
    /// Ends a body with [`ReadTimedOut`] when no frame arrives for `gap`: an app that sends
    /// its head and then drips (or stops) cannot hold a client connection, an upstream
    /// connection and, on a sealed stream, a held value forever (nginx's
    /// `proxy_read_timeout`). The timer exists only while the body is waiting, so a body that
    /// is already in memory costs no timer at all.
    pub struct ReadGap<B> {
        #[pin]
        inner: B,
        gap: std::time::Duration,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        armed: bool,
    }
}

impl<B> ReadGap<B> {
    pub fn new(inner: B, gap: std::time::Duration) -> Self {
        Self {
            inner,
            gap,
            timer: None,
            armed: false,
        }
    }
}

impl<B> http_body::Body for ReadGap<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.armed = false;
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        // Armed at the first wait after a frame, so the gap counts from the last data.
        let timer = match this.timer {
            Some(timer) if *this.armed => timer,
            Some(timer) => {
                timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + *this.gap);
                timer
            }
            None => this.timer.insert(Box::pin(tokio::time::sleep(*this.gap))),
        };
        *this.armed = true;
        match std::future::Future::poll(timer.as_mut(), cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(ReadTimedOut)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a body ended because its sender went quiet ([`ReadGap`]), wherever it was wrapped.
pub fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if e.is::<ReadTimedOut>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Frames a body the proxy rebuilt: `Content-Length` of its new size, no `Transfer-Encoding`.
pub fn set_length(headers: &mut http::HeaderMap, len: usize) {
    headers.remove(http::header::TRANSFER_ENCODING);
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn on_end_fires_once_with_the_byte_count() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let body = OnEnd::new(Full::new(Bytes::from_static(b"hello")), move |n, done| {
            s.lock().unwrap().push((n, done))
        });
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"hello");
        assert_eq!(*seen.lock().unwrap(), vec![(5, true)]);
    }

    #[tokio::test]
    async fn on_end_reports_an_abandoned_body_as_incomplete() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        // Two chunks; the reader stops after the first.
        struct Chunks(Vec<Bytes>);
        impl http_body::Body for Chunks {
            type Data = Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
                Poll::Ready(
                    (!self.0.is_empty()).then(|| Ok(http_body::Frame::data(self.0.remove(0)))),
                )
            }
            fn is_end_stream(&self) -> bool {
                self.0.is_empty()
            }
        }
        let chunks = Chunks(vec![Bytes::from_static(b"abc"), Bytes::from_static(b"def")]);
        let mut body = OnEnd::new(chunks, move |n, done| s.lock().unwrap().push((n, done)));
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "abc");
        drop(body);
        assert_eq!(*seen.lock().unwrap(), vec![(3, false)]);
    }

    /// A body whose frames arrive on a channel, as an upstream body does.
    fn channel() -> (
        tokio::sync::mpsc::Sender<Bytes>,
        impl http_body::Body<Data = Bytes, Error = std::convert::Infallible>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok(http_body::Frame::data(b)), rx))
        });
        (tx, http_body_util::StreamBody::new(stream))
    }

    #[tokio::test(start_paused = true)]
    async fn read_gap_counts_each_quiet_gap_not_the_whole_body() {
        let gap = std::time::Duration::from_secs(5);
        let (tx, inner) = channel();
        let mut body = std::pin::pin!(ReadGap::new(inner, gap));
        // Ten pieces 4 s apart: 40 s in all, never 5 s quiet.
        tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(std::time::Duration::from_secs(4)).await;
                tx.send(Bytes::from_static(b"x")).await.unwrap();
            }
        });
        let mut got = 0;
        while let Some(frame) = body.frame().await {
            got += frame.unwrap().into_data().unwrap().len();
        }
        assert_eq!(got, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn read_gap_ends_a_body_that_goes_quiet() {
        let gap = std::time::Duration::from_secs(5);
        let (tx, inner) = channel();
        let mut body = std::pin::pin!(ReadGap::new(inner, gap));
        tx.send(Bytes::from_static(b"first")).await.unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let started = tokio::time::Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(timed_out(&*err), "{err}");
        assert_eq!(started.elapsed(), gap);
        drop(tx);
    }
}
