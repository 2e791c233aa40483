//! Security response headers: defaults, global and per-route overrides, compiled once.
//!
//! Configured values replace whatever the upstream sent for the same header, so the policy is
//! enforced rather than suggested. An empty value in the config drops that header from the
//! policy: fieldseal then neither adds nor replaces it, and the app's own value (if any) passes.
//! `Server` and `X-Powered-By` are always removed: they only advertise what to attack.

use std::collections::BTreeMap;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The headers every response gets unless the config says otherwise.
pub const DEFAULT_SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
];

/// Upstream headers that disclose the software stack (pre-parsed: applied to every response).
const DISCLOSING_HEADERS: [HeaderName; 2] = [
    http::header::SERVER,
    HeaderName::from_static("x-powered-by"),
];

/// Headers the proxy owns (framing, connection management): configuring them would corrupt
/// responses, so the config rejects them.
const RESERVED: &[&str] = &[
    "connection",
    "content-length",
    "content-type",
    "content-encoding",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-request-id",
];

/// The compiled header policy for one route (or for requests matching no route).
#[derive(Debug, Clone, Default)]
pub struct HeaderPolicy {
    set: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderPolicy {
    /// Defaults, then `global` overrides, then `route` overrides; empty values remove.
    /// Errors are `(header name, reason)` pairs.
    pub fn compile(
        global: &BTreeMap<String, String>,
        route: Option<&BTreeMap<String, String>>,
    ) -> Result<Self, Vec<(String, String)>> {
        let mut merged: BTreeMap<String, String> = DEFAULT_SECURITY_HEADERS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut errors = Vec::new();
        for layer in std::iter::once(global).chain(route) {
            for (name, value) in layer {
                merged.insert(name.to_ascii_lowercase(), value.clone());
            }
        }
        let mut set = Vec::new();
        for (name, value) in merged {
            if value.is_empty() {
                continue;
            }
            match validate(&name, &value) {
                Ok(pair) => set.push(pair),
                Err(reason) => errors.push((name, reason)),
            }
        }
        if errors.is_empty() {
            Ok(Self { set })
        } else {
            Err(errors)
        }
    }

    /// Applies the policy to a response's headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        // One growth up front instead of rehashing the map as each header is added.
        headers.reserve(self.set.len());
        for name in &DISCLOSING_HEADERS {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.set.iter().map(|(n, _)| n.as_str())
    }
}

fn validate(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| "not a valid header name".to_string())?;
    if RESERVED.contains(&header.as_str()) || DISCLOSING_HEADERS.contains(&header) {
        return Err("this header is managed by the proxy and cannot be configured".into());
    }
    let value = HeaderValue::from_str(value)
        .map_err(|_| "the value has characters not allowed in a header".to_string())?;
    Ok((header, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_overrides_and_removals() {
        let global = map(&[
            ("Content-Security-Policy", "default-src 'self'"),
            ("x-frame-options", ""),
        ]);
        let route = map(&[("cache-control", "no-store"), ("referrer-policy", "")]);
        let policy = HeaderPolicy::compile(&global, Some(&route)).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("server", HeaderValue::from_static("uvicorn"));
        headers.insert("x-powered-by", HeaderValue::from_static("PHP"));
        headers.insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
        headers.insert("content-security-policy", HeaderValue::from_static("app"));
        policy.apply(&mut headers);
        assert_eq!(headers["content-security-policy"], "default-src 'self'");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(
            headers["strict-transport-security"],
            "max-age=63072000; includeSubDomains"
        );
        // Removed from the policy: the app's own value passes.
        assert_eq!(headers["x-frame-options"], "SAMEORIGIN");
        assert!(!headers.contains_key("referrer-policy"));
        assert!(!headers.contains_key("server"));
        assert!(!headers.contains_key("x-powered-by"));
    }

    #[test]
    fn reserved_and_invalid_headers_are_errors() {
        let global = map(&[
            ("content-length", "1"),
            ("bad header", "x"),
            ("x-ok", "a\nb"),
        ]);
        let errs = HeaderPolicy::compile(&global, None).unwrap_err();
        let names: Vec<&str> = errs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["bad header", "content-length", "x-ok"]);
    }
}
