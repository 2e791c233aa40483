//! The seal boundary (contract §7): what a route that transforms responses must not let
//! through, whatever the app is configured to honour.
//!
//! A response transform sees one whole representation of a resource. Anything that lets the
//! client obtain another one — a byte range of it, a `304` that confirms a guess, a validator
//! or digest computed over the plaintext — walks around the transform without breaking it:
//!
//! - **Range** (`Range`, `If-Range`): a slice covering exactly one value (`"123-45-6789"`, or a
//!   card number, which is valid JSON alone) parses as JSON, selects nothing, and would leave in
//!   plaintext. The headers are removed before the app; a `206` that comes back anyway is a 502.
//! - **Conditional requests** (`If-None-Match`, `If-Match`, `If-Modified-Since`,
//!   `If-Unmodified-Since`): with an ETag computed over the plaintext, `If-None-Match` makes the
//!   app an equality oracle (a `304` on a right guess). Removed before the app.
//! - **Validators and digests** (`ETag`, weak or strong, `Content-MD5`, `Digest`,
//!   `Content-Digest`, `Repr-Digest`): a hash of the plaintext lets low-entropy fields be
//!   guessed offline. Removed from every response of the route, `HEAD` and `304` included.
//!   `Last-Modified` stays: it is a date, not a function of the content.
//!
//! Ambiguous framing from the app is refused on every route in [`super::upstream`]: it is not
//! about transforms but about which body the proxy and the client each think they got.

use http::header::{self, HeaderMap, HeaderName};
use http::StatusCode;

use super::error::ProxyError;

/// Request headers that ask the app for part of a representation, or for one only if it
/// matches a guess.
const PARTIAL_AND_CONDITIONAL: [HeaderName; 7] = [
    header::RANGE,
    // Apache's pre-standard spelling of `Range`, still honoured by some servers.
    HeaderName::from_static("request-range"),
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// Response headers computed over the app's plaintext body.
const PLAINTEXT_DIGESTS: [HeaderName; 5] = [
    header::ETAG,
    HeaderName::from_static("content-md5"),
    HeaderName::from_static("digest"),
    HeaderName::from_static("content-digest"),
    HeaderName::from_static("repr-digest"),
];

/// Removes the range and conditional request headers (routes that transform responses).
pub fn strip_request(headers: &mut HeaderMap) {
    for name in &PARTIAL_AND_CONDITIONAL {
        headers.remove(name);
    }
}

/// Checks and cleans the head of a response the route transforms: a partial answer fails
/// closed; validators and digests over the plaintext are dropped.
pub fn check_response(status: StatusCode, headers: &mut HeaderMap) -> Result<(), ProxyError> {
    if status == StatusCode::PARTIAL_CONTENT {
        return Err(ProxyError::ResponseNotEncryptable("partial content"));
    }
    forget_plaintext_digests(headers);
    Ok(())
}

/// Drops every validator and digest of the app's body (after a body rewrite, and on every
/// response of a transformed route).
pub fn forget_plaintext_digests(headers: &mut HeaderMap) {
    for name in &PLAINTEXT_DIGESTS {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn range_and_conditionals_are_removed_and_the_rest_kept() {
        let mut h = HeaderMap::new();
        for name in PARTIAL_AND_CONDITIONAL.iter().chain([&header::ACCEPT]) {
            h.insert(name, HeaderValue::from_static("x"));
        }
        strip_request(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn partial_answers_fail_and_digests_go() {
        let mut h = HeaderMap::new();
        assert!(check_response(StatusCode::PARTIAL_CONTENT, &mut h).is_err());
        for name in &PLAINTEXT_DIGESTS {
            h.insert(name, HeaderValue::from_static("W/\"abc\""));
        }
        h.insert(header::LAST_MODIFIED, HeaderValue::from_static("x"));
        check_response(StatusCode::NOT_MODIFIED, &mut h).unwrap();
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::LAST_MODIFIED));
    }
}
