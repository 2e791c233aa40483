//! Request ids: the client's `X-Request-Id` when it is a sane token, a fresh UUID otherwise.
//! The id is forwarded upstream, returned to the client, and logged.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::limits::MAX_REQUEST_ID_LEN;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Returns the id to use for this request.
pub fn resolve(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&X_REQUEST_ID)
        .filter(|v| is_acceptable(v.as_bytes()))
        .cloned()
        .unwrap_or_else(generate)
}

/// Bounded length and a conservative alphabet, so a client cannot inject log or header syntax.
fn is_acceptable(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn generate() -> HeaderValue {
    let id = uuid::Uuid::new_v4();
    let mut buf = uuid::Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf))
        .expect("a UUID is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123_x.y:z"));
        assert_eq!(resolve(&h), "abc-123_x.y:z");
        h.insert(X_REQUEST_ID, HeaderValue::from_static("has space"));
        let generated = resolve(&h);
        assert_eq!(generated.len(), 36);
        h.insert(
            X_REQUEST_ID,
            HeaderValue::from_str(&"a".repeat(129)).unwrap(),
        );
        assert_eq!(resolve(&h).len(), 36);
        assert_ne!(resolve(&HeaderMap::new()), resolve(&HeaderMap::new()));
    }
}
