//! Requests refused before routing: ones the proxy and the app could frame or route
//! differently (request smuggling, authority confusion, respelled paths), and methods a
//! reverse proxy in front of a JSON app has no business forwarding.
//!
//! hyper's HTTP/1.1 parser refuses most broken framing itself (conflicting `Content-Length`s,
//! unknown transfer codings, obs-fold, bad bytes) with a bare 400 and a closed connection. What
//! RFC 9112 lets it accept it normalises before this module sees the request: `Content-Length`
//! beside `Transfer-Encoding` is dropped (the body is read as chunked and the connection closes
//! after the response, §6.1), identical repeated lengths are merged (§6.3). The app gets one
//! request framed by the proxy either way. The header checks here therefore matter for HTTP/2,
//! where the h2 crate validates only the first `content-length` and a second would travel on
//! to the app's HTTP/1.1 parser.

use http::header::{HeaderName, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Method, Request};

use super::error::ProxyError;
use crate::routing;

/// Longest method forwarded. The registered methods are at most 17 characters
/// (`UPDATEREDIRECTREF`); anything much longer is a probe, and it would otherwise travel to
/// the app inside a head of up to 64 KiB.
pub const MAX_METHOD_LEN: usize = 32;

/// Headers that make an app (or a framework middleware in front of it) route the request by
/// another method or path than the request line's (contract §7). Rules are chosen by the
/// request line, so forwarding one would let `DELETE /x` + `X-HTTP-Method-Override: GET` reach
/// a sealed `GET` handler under no rule. Refused on every route, whatever their value (an empty
/// value is still a header some middleware reads).
///
/// Beyond the contract's five, the names path-rewriting middlewares read: `X-Script-Name` (the
/// widely copied Flask "ReverseProxied" snippet, ASGI `root_path` setters) strips a prefix, so
/// `/api/public/api/records/7` reaches the app as `/api/records/7`; `X-Forwarded-Path`,
/// `X-Forwarded-Uri`, `X-Original-URI`, `X-Original-Path`, `X-Envoy-Original-Path` carry a path
/// to route by.
pub const ROUTING_OVERRIDES: [HeaderName; 11] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-script-name"),
    HeaderName::from_static("x-forwarded-path"),
    HeaderName::from_static("x-forwarded-uri"),
    HeaderName::from_static("x-original-uri"),
    HeaderName::from_static("x-original-path"),
    HeaderName::from_static("x-envoy-original-path"),
];

/// The query parameter with which Rails, Laravel, Symfony and several Flask/Express
/// middlewares override the method (`?_method=GET`): the same bypass as the headers above, so
/// the same refusal (our choice beyond the contract, which lists headers only).
const METHOD_QUERY_PARAMETER: &[u8] = b"_method";

/// Why a request is refused, and whether its connection must close with the answer (the
/// framing of anything after it on the same HTTP/1.1 connection cannot be trusted).
#[derive(Debug)]
pub struct Refusal {
    pub error: ProxyError,
    pub close: bool,
}

/// `None` when the request may be routed and forwarded.
pub fn refusal<B>(req: &Request<B>) -> Option<Refusal> {
    let keep = |error| {
        Some(Refusal {
            error,
            close: false,
        })
    };
    let close = |why| {
        Some(Refusal {
            error: ProxyError::AmbiguousRequest(why),
            close: true,
        })
    };
    let method = req.method();
    if method.as_str().len() > MAX_METHOD_LEN {
        return keep(ProxyError::BadRequest("method_too_long"));
    }
    if let Some(why) = routing::ambiguous_request(method, req.uri().path()) {
        return keep(ProxyError::AmbiguousRequest(why));
    }
    // CONNECT would make the app a tunnel; TRACE echoes the request, credentials included.
    if method == Method::CONNECT || method == Method::TRACE {
        return keep(ProxyError::MethodNotAllowed);
    }
    let headers = req.headers();
    if ROUTING_OVERRIDES.iter().any(|h| headers.contains_key(h)) {
        return keep(ProxyError::AmbiguousRequest("routing_override_header"));
    }
    if req.uri().query().is_some_and(overrides_method) {
        return keep(ProxyError::AmbiguousRequest("routing_override_parameter"));
    }
    if headers.get_all(CONTENT_LENGTH).iter().nth(1).is_some() {
        return close("duplicate_content_length");
    }
    if headers.contains_key(CONTENT_LENGTH) && headers.contains_key(TRANSFER_ENCODING) {
        return close("content_length_with_transfer_encoding");
    }
    // An absolute-form target (HTTP/1.1) or `:authority` (HTTP/2) that names another host
    // than `Host`: the proxy forwards `Host`, an app may route by either (RFC 9113 §8.3.1).
    if let (Some(authority), Some(host)) = (req.uri().authority(), headers.get(HOST)) {
        if !host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
        {
            return keep(ProxyError::AmbiguousRequest("authority_differs_from_host"));
        }
    }
    None
}

/// Whether a query string carries `_method` as a parameter name, in any case and whether or
/// not percent-encoded (`%5Fmethod`, `_%6Dethod`): frameworks decode names before looking.
fn overrides_method(query: &str) -> bool {
    query.split(['&', ';']).any(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        let decoded = crate::routing::percent_decode(name);
        decoded
            .trim()
            .as_bytes()
            .eq_ignore_ascii_case(METHOD_QUERY_PARAMETER)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(req: Request<()>) -> Option<(&'static str, bool)> {
        refusal(&req).map(|r| (r.error.code(), r.close))
    }

    fn get(uri: &str) -> http::request::Builder {
        Request::builder().method("GET").uri(uri)
    }

    #[test]
    fn ordinary_requests_pass() {
        assert!(code(get("/api/users/7").body(()).unwrap()).is_none());
        let h2 = get("https://localhost:8443/api/users/7")
            .header(HOST, "LocalHost:8443")
            .body(())
            .unwrap();
        assert!(code(h2).is_none(), "same authority, any case");
        let post = Request::builder()
            .method("POST")
            .uri("/x")
            .header(CONTENT_LENGTH, "2")
            .body(())
            .unwrap();
        assert!(code(post).is_none());
        let webdav = Request::builder()
            .method("UPDATEREDIRECTREF")
            .uri("/x")
            .body(())
            .unwrap();
        assert!(code(webdav).is_none());
    }

    #[test]
    fn smuggling_shapes_close_the_connection() {
        let both = Request::builder()
            .method("POST")
            .uri("/x")
            .header(CONTENT_LENGTH, "5")
            .header(TRANSFER_ENCODING, "chunked")
            .body(())
            .unwrap();
        assert_eq!(code(both), Some(("ambiguous_request", true)));
        let twice = Request::builder()
            .method("POST")
            .uri("/x")
            .header(CONTENT_LENGTH, "5")
            .header(CONTENT_LENGTH, "5")
            .body(())
            .unwrap();
        assert_eq!(code(twice), Some(("ambiguous_request", true)));
    }

    #[test]
    fn methods_and_authorities_are_refused() {
        let other = get("http://evil.example/api/users/7")
            .header(HOST, "localhost:8443")
            .body(())
            .unwrap();
        assert_eq!(code(other), Some(("ambiguous_request", false)));
        for (m, c) in [
            ("CONNECT", "method_not_allowed"),
            ("TRACE", "method_not_allowed"),
            ("get", "ambiguous_request"),
        ] {
            let req = Request::builder().method(m).uri("/x").body(()).unwrap();
            assert_eq!(code(req), Some((c, false)), "{m}");
        }
        for name in ROUTING_OVERRIDES.iter().map(HeaderName::as_str) {
            for value in ["GET", "", "/api/users/7"] {
                let req = Request::builder()
                    .method("DELETE")
                    .uri("/x")
                    .header(name.to_ascii_uppercase(), value)
                    .body(())
                    .unwrap();
                assert_eq!(code(req), Some(("ambiguous_request", false)), "{name}");
            }
        }
        for query in [
            "_method=GET",
            "a=1&_METHOD=get",
            "%5Fmethod=GET",
            "_%6Dethod",
            "x;_method=",
        ] {
            let req = get(&format!("/x?{query}")).body(()).unwrap();
            assert_eq!(code(req), Some(("ambiguous_request", false)), "{query}");
        }
        for query in ["method=GET", "a=_method", "_methods=1", "x_method=1"] {
            let req = get(&format!("/x?{query}")).body(()).unwrap();
            assert!(code(req).is_none(), "{query}");
        }
        let long = Request::builder()
            .method("A".repeat(MAX_METHOD_LEN + 1).as_str())
            .uri("/x")
            .body(())
            .unwrap();
        assert_eq!(code(long), Some(("bad_request", false)));
    }
}
