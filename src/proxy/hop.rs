//! Hop-by-hop headers (RFC 9110 §7.6.1) and the forwarding headers a proxy adds.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Connection-specific headers never forwarded, in either direction.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

// Header names are pre-parsed constants: passing `&str` to `HeaderMap` re-parses the name on
// every call, which showed up in the P0 profile.

/// Not in `http`'s constants, equally hop-by-hop.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers through which an app learns who the client is and how it reached it (ProxyFix,
/// uvicorn `--proxy-headers`, Express `trust proxy`). fieldseal is the TLS edge: from a client
/// they are lies an app may trust (an allow-list by IP, an absolute redirect to another host, a
/// link prefix), so they are removed unless the peer is a `trusted_proxies` address
/// (contract §7). The proxy then sets `X-Forwarded-For`/`-Proto`/`-Host` itself.
///
/// The list is the contract's seven plus the other names frameworks read for the same facts:
/// the client's address (`True-Client-IP`, `X-Client-IP`, `CF-Connecting-IP`,
/// `Fastly-Client-IP`, `X-Cluster-Client-IP`; chi, Gin, Echo, request-ip) and the scheme
/// (`X-Forwarded-Scheme`, `X-Forwarded-Ssl`, `X-Forwarded-Protocol`, `X-Url-Scheme`,
/// `Front-End-Https`, `X-Scheme`; Rack, Spring, the Flask "ReverseProxied" snippet).
const CLIENT_FORWARDING: [HeaderName; 18] = [
    header::FORWARDED,
    X_FORWARDED_FOR,
    X_FORWARDED_HOST,
    X_FORWARDED_PROTO,
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("fastly-client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-forwarded-ssl"),
    HeaderName::from_static("x-forwarded-protocol"),
    HeaderName::from_static("x-url-scheme"),
    HeaderName::from_static("front-end-https"),
    HeaderName::from_static("x-scheme"),
];

/// Removes hop-by-hop headers, including every header the `Connection` header names.
/// With `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive so a WebSocket handshake
/// can reach the upstream (they are hop-by-hop, but an upgrade is negotiated end to end).
pub fn strip(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Fast path: most requests and responses carry none (one pass of cheap name compares
    // instead of a hashed removal per listed header).
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let upgrade = headers.get(header::UPGRADE).cloned();
    for name in named {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    if keep_upgrade {
        if let Some(up) = upgrade {
            headers.insert(header::UPGRADE, up);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
    }
}

/// Removes request headers whose names contain `_`. WSGI servers (werkzeug, gunicorn before
/// 22) and CGI-style frameworks turn both `X-Forwarded-For` and `X_Forwarded_For` into the same
/// `HTTP_X_FORWARDED_FOR`, so an underscore spelling would carry any header this proxy refuses,
/// strips or sets — a method override, a forwarding header, `If_None_Match` — past it under a
/// name no check recognises. nginx drops them by default (`underscores_in_headers off`) for the
/// same reason; so does this proxy, on every route.
pub fn strip_underscored(headers: &mut HeaderMap) {
    // Fast path: one byte scan of each name; almost no request has any.
    if !headers.keys().any(|n| n.as_str().contains('_')) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().contains('_'))
        .cloned()
        .collect();
    for name in named {
        headers.remove(name);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == KEEP_ALIVE || name == PROXY_CONNECTION
}

/// Whether the request asks to switch to WebSocket (`Connection: upgrade` + `Upgrade:
/// websocket`), the one upgrade relayed. Any other (`h2c`, `TLS/1.2`, lists) is not: `h2c`
/// would turn the connection into HTTP/2 straight to the app, where no route is matched and no
/// rule applies (h2c smuggling). Such a request is forwarded as an ordinary one, its `Upgrade`
/// stripped as hop-by-hop.
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    let mut upgrades = headers.get_all(header::UPGRADE).iter();
    let websocket = upgrades
        .next()
        .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"));
    websocket
        && upgrades.next().is_none()
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Sets `X-Forwarded-For`, `X-Forwarded-Proto: https` and `X-Forwarded-Host` (the host the
/// client asked for; replaced, never taken from the client). From a peer that is not a
/// trusted proxy every client-sent forwarding header is removed first, so `X-Forwarded-For`
/// is the peer alone; from a trusted one the peer is appended to its list, as nginx's
/// `$proxy_add_x_forwarded_for` does.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    host: Option<&HeaderValue>,
    trusted_peer: bool,
) {
    use std::fmt::Write;
    if !trusted_peer {
        for name in &CLIENT_FORWARDING {
            headers.remove(name);
        }
    }
    headers.reserve(3);
    let prior = headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let mut xff = String::with_capacity(prior.map_or(0, |p| p.len() + 2) + 39);
    if let Some(prior) = prior {
        xff.push_str(prior);
        xff.push_str(", ");
    }
    let _ = write!(xff, "{}", client.to_canonical());
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    match host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST, h.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_listed_and_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn underscore_spellings_are_dropped() {
        let mut h = HeaderMap::new();
        for name in [
            "x_http_method_override",
            "x_forwarded_for",
            "if_none_match",
            "api_key",
        ] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
        }
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_underscored(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn only_websocket_upgrades_are_relayed() {
        for (upgrade, relayed) in [
            ("websocket", true),
            ("WebSocket ", true),
            ("h2c", false),
            ("websocket, h2c", false),
            ("TLS/1.2", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert("connection", HeaderValue::from_static("Upgrade"));
            h.insert("upgrade", HeaderValue::from_static(upgrade));
            assert_eq!(wants_upgrade(&h), relayed, "{upgrade}");
        }
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade, x-hop"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        assert!(wants_upgrade(&h));
        strip(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!h.contains_key("x-hop"));
    }

    fn client_sent() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil.example"));
        h.insert("x-forwarded-port", HeaderValue::from_static("80"));
        h.insert("x-forwarded-prefix", HeaderValue::from_static("/admin"));
        h.insert("x-real-ip", HeaderValue::from_static("10.0.0.1"));
        h.insert(
            "forwarded",
            HeaderValue::from_static("for=10.0.0.1;host=evil.example;proto=http"),
        );
        h
    }

    #[test]
    fn forwarded_headers_from_a_trusted_proxy_are_appended_to() {
        let mut h = client_sent();
        let host = HeaderValue::from_static("api.example.com");
        set_forwarded(&mut h, "127.0.0.1".parse().unwrap(), Some(&host), true);
        assert_eq!(h[X_FORWARDED_FOR], "203.0.113.7, 127.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_HOST], "api.example.com");
        assert_eq!(h["x-real-ip"], "10.0.0.1");
        assert!(h.contains_key("forwarded"));
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, "::ffff:10.1.2.3".parse().unwrap(), None, true);
        assert_eq!(h[X_FORWARDED_FOR], "10.1.2.3");
    }

    #[test]
    fn forwarded_headers_from_anyone_else_are_replaced() {
        let mut h = client_sent();
        let host = HeaderValue::from_static("api.example.com");
        set_forwarded(&mut h, "192.0.2.9".parse().unwrap(), Some(&host), false);
        assert_eq!(h[X_FORWARDED_FOR], "192.0.2.9");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_HOST], "api.example.com");
        for gone in [
            "forwarded",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-real-ip",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
    }
}
