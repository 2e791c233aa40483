//! Answers sealed while they stream (issue 18): a JSON body above [`STREAM_ABOVE`] on a route
//! whose rules the byte-level engine can apply goes out chunk by chunk through a
//! [`Streamer`], instead of being buffered whole (or, above `limits.max_body_bytes`, withheld).
//! Memory per answer is bounded by [`MAX_STREAMED_VALUE`] (the largest selected value held) and
//! the nesting depth, whatever the body's size.
//!
//! The status and head are sent before the body is read, so a failure found later cannot
//! become a 502: the body is **aborted** instead — on HTTP/1.1 the connection closes without
//! the terminating chunk, on HTTP/2 the stream is reset — and the client is left with an
//! incomplete, unusable body that never holds a selected value's plaintext (docs/streaming.md).
//! What the answer's fields went through is audited when it ends, like any other request's.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::error::ProxyError;
use crate::body::{BoxError, ProxyBody};
use crate::config::settings::ResponseRules;
use crate::crypto::Keyring;
use crate::transform::rules::{replace_found, Action, FieldOp, Found};
use crate::transform::splice::Plan;
use crate::transform::stream::{Selected, StreamError, Streamer};
use crate::transform::view::Sight;

/// Answers up to this size are buffered and rewritten whole (their failures are clean 502s
/// and their `Content-Length` is exact); larger ones stream. Large enough for nearly every
/// record an API returns, small enough that concurrency × this stays modest.
pub const STREAM_ABOVE: usize = 256 * 1024;

/// The largest selected value held while streaming: a field is a value to seal, not a
/// document; a larger one aborts the answer.
pub const MAX_STREAMED_VALUE: usize = 1024 * 1024;

/// Field operations of a streamed answer kept one by one for the audit; past this many, they
/// are only counted (by action and key), so memory does not grow with the answer.
pub const MAX_AUDITED_OPS: usize = 1024;

/// What a streamed answer's fields went through: the first [`MAX_AUDITED_OPS`] in detail,
/// the rest counted.
#[derive(Debug, Default)]
pub struct StreamedOps {
    pub detail: Vec<FieldOp>,
    /// (action, key id, count) of the operations past the detail.
    pub counted: Vec<(Action, Option<String>, u64)>,
}

impl StreamedOps {
    fn record(&mut self, op: FieldOp) {
        if self.detail.len() < MAX_AUDITED_OPS {
            self.detail.push(op);
            return;
        }
        match self
            .counted
            .iter_mut()
            .find(|(a, k, _)| *a == op.action && *k == op.kid)
        {
            Some((_, _, n)) => *n += 1,
            None => self.counted.push((op.action, op.kid, 1)),
        }
    }
}

/// Called once when a streamed answer ends, with what its fields went through and how it
/// ended (`None`: complete).
pub type OnEnd = Box<dyn FnOnce(StreamedOps, Option<&ProxyError>) + Send>;

/// Where the request's handler leaves the audit of a streamed answer, for the body to call.
#[derive(Default)]
pub struct StreamReport(Mutex<Option<OnEnd>>);

impl StreamReport {
    pub fn on_end(&self, f: OnEnd) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(f);
    }

    fn end(&self, ops: StreamedOps, failure: Option<&ProxyError>) {
        let f = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(f) = f {
            f(ops, failure);
        }
    }
}

/// What the rules need while the answer streams (owned: the body outlives the handler).
pub struct Sealing {
    pub rules: ResponseRules,
    pub keyring: Option<Arc<Keyring>>,
    pub sight: Sight,
}

/// The answer's body, sealed as it streams.
pub struct SealingBody {
    inner: ProxyBody,
    streamer: Streamer,
    sealing: Sealing,
    ops: StreamedOps,
    /// One value's operations, moved to `ops` after each.
    scratch: Vec<FieldOp>,
    report: Arc<StreamReport>,
    done: bool,
}

impl SealingBody {
    pub fn new(inner: ProxyBody, plan: Plan, sealing: Sealing, report: Arc<StreamReport>) -> Self {
        Self {
            inner,
            streamer: Streamer::new(plan, MAX_STREAMED_VALUE),
            sealing,
            ops: StreamedOps::default(),
            scratch: Vec::new(),
            report,
            done: false,
        }
    }

    /// Ends the stream with `failure`: audited, and an error that makes hyper abort it.
    fn abort(&mut self, failure: ProxyError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        tracing::warn!(code = failure.code(), "a streamed answer was aborted");
        self.report
            .end(std::mem::take(&mut self.ops), Some(&failure));
        Poll::Ready(Some(Err(Box::new(Aborted(failure.code())))))
    }

    fn failure(e: StreamError<crate::transform::rules::FieldFailure>) -> ProxyError {
        match e {
            StreamError::Invalid { .. } => ProxyError::ResponseNotEncryptable("invalid JSON"),
            StreamError::TooLarge { .. } => ProxyError::ResponseNotEncryptable("too large"),
            StreamError::Replace(f) => ProxyError::ResponseFieldFailed(f),
        }
    }
}

/// The error a streamed answer ends with (hyper aborts the response on it).
#[derive(Debug)]
struct Aborted(&'static str);

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "streamed answer aborted: {}", self.0)
    }
}

impl std::error::Error for Aborted {}

impl Body for SealingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(frame) => frame,
            };
            let Sealing {
                rules,
                keyring,
                sight,
            } = &this.sealing;
            let (ops, scratch) = (&mut this.ops, &mut this.scratch);
            let mut replace = |v: Selected<'_>, out: &mut Vec<u8>| {
                let raw = std::str::from_utf8(v.raw).expect("the streamer validated UTF-8");
                // The path is spelled for the operations the audit keeps one by one; past
                // those they are only counted, and a failure spells its own.
                let path = if ops.detail.len() < MAX_AUDITED_OPS {
                    v.path.spell()
                } else {
                    String::new()
                };
                let found = Found {
                    selector: v.selector,
                    raw,
                    path,
                    member: v.member,
                };
                let done = replace_found(rules, keyring.as_deref(), sight, found, scratch)
                    .map_err(|mut failure| {
                        if failure.path.is_empty() {
                            failure.path = v.path.spell();
                        }
                        failure
                    })?;
                for op in scratch.drain(..) {
                    ops.record(op);
                }
                out.extend_from_slice(done.as_deref().map_or(v.raw, |r| r.as_slice()));
                Ok(())
            };
            // Room for the chunk and its tokens (a token is longer than what it seals), so
            // the output is not regrown and copied while it is written.
            let mut out = Vec::new();
            match frame {
                None => {
                    if let Err(e) = this.streamer.finish(&mut out, &mut replace) {
                        return this.abort(Self::failure(e));
                    }
                    this.done = true;
                    this.report.end(std::mem::take(&mut this.ops), None);
                    if out.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
                Some(Err(e)) if crate::body::timed_out(&*e) => {
                    return this.abort(ProxyError::UpstreamTimeout)
                }
                Some(Err(_)) => return this.abort(ProxyError::UpstreamProtocol),
                Some(Ok(frame)) => {
                    // Trailers describe the app's bytes, not these: dropped.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    out.reserve(data.len() + data.len() / 2);
                    if let Err(e) = this.streamer.feed(&data, &mut out, &mut replace) {
                        return this.abort(Self::failure(e));
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for SealingBody {
    /// An answer dropped before its end (the client went away) is audited as such.
    fn drop(&mut self) {
        if !self.done {
            self.report
                .end(std::mem::take(&mut self.ops), Some(&ProxyError::ClientBody));
        }
    }
}
