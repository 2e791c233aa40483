//! Route matching: path templates (`/api/users/{id}`, `/api/secure/**`) and methods,
//! first match wins.
//!
//! Request paths are normalised before matching — empty and `.` segments dropped, `..` applied,
//! percent-escapes decoded — so `/api//users/%31/` selects the same route as `/api/users/1`.
//! Matching leniently is the safe direction: a rule must not be bypassed by spelling a path
//! differently from how the app will read it. The forwarded path is never rewritten.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, LazyLock};

use http::Method;

/// Route label for requests that match no configured route (proxied untouched, or with the
/// field policy alone). Here, below both the proxy and the metrics that name it.
pub static UNMATCHED: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("unmatched"));

/// One segment of a compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: exactly one non-empty segment.
    Param(String),
}

/// A compiled path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    source: String,
    segments: Vec<Segment>,
    /// Trailing `/**`: any number (including zero) of further segments.
    rest: bool,
}

impl PathTemplate {
    /// Parses a template; the error says what is wrong with it.
    pub fn parse(source: &str) -> Result<Self, String> {
        let Some(body) = source.strip_prefix('/') else {
            return Err("a path template must start with `/`".into());
        };
        // Routes match the path only: a template with a query or fragment would never match.
        if source.contains(['?', '#']) {
            return Err(
                "query strings (`?…`) and fragments (`#…`) are not part of a path: match on the path alone"
                    .into(),
            );
        }
        let mut segments = Vec::new();
        let mut rest = false;
        let mut names: Vec<&str> = Vec::new();
        let parts: Vec<&str> = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if *part == "**" {
                if !last {
                    return Err("`**` is only allowed as the last segment".into());
                }
                rest = true;
            } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let valid = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(format!(
                        "segment {} must be `{{name}}` with a name of letters, digits and `_`",
                        i + 1
                    ));
                }
                if names.contains(&name) {
                    return Err(format!("parameter `{name}` appears twice"));
                }
                names.push(name);
                segments.push(Segment::Param(name.to_string()));
            } else if part.is_empty() {
                if last {
                    // "/users/" is written like "/users": trailing slashes are normalised away.
                    continue;
                }
                return Err(format!("segment {} is empty (`//`)", i + 1));
            } else if part.contains(['{', '}', '*']) || *part == "." || *part == ".." {
                return Err(format!(
                    "segment {} (`{part}`) mixes literal text with `{{`, `}}` or `*`, or is a dot segment",
                    i + 1
                ));
            } else {
                segments.push(Segment::Literal(part.to_string()));
            }
        }
        Ok(Self {
            source: source.to_string(),
            segments,
            rest,
        })
    }

    /// Whether the normalised request segments match this template.
    pub fn matches<S: AsRef<str>>(&self, request: &[S]) -> bool {
        if request.len() < self.segments.len()
            || (!self.rest && request.len() != self.segments.len())
        {
            return false;
        }
        self.segments
            .iter()
            .zip(request)
            .all(|(seg, actual)| match seg {
                Segment::Literal(lit) => lit == actual.as_ref(),
                Segment::Param(_) => !actual.as_ref().is_empty(),
            })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the template has parameter `{name}`.
    pub fn has_param(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Param(p) if p == name))
    }

    /// The value of parameter `{name}` in the normalised request segments this template
    /// matches (`None`: no such parameter).
    pub fn param<'s, S: AsRef<str>>(&self, name: &str, request: &'s [S]) -> Option<&'s str> {
        self.segments
            .iter()
            .zip(request)
            .find_map(|(seg, actual)| match seg {
                Segment::Param(p) if p == name => Some(actual.as_ref()),
                _ => None,
            })
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Why a request target is refused before routing, if it is: spellings that the proxy and the
/// app could read differently, so that a rule matched by one would not be the resource served
/// by the other.
///
/// - An encoded slash or backslash (`%2F`, `%5C`, any case): segments are split *before*
///   escapes are decoded here, while uvicorn, werkzeug and most servers decode the whole path
///   first — `/api%2Fusers/7` would match no route here and be `/api/users/7` in the app.
/// - A method with lowercase letters (`get`, `Get`): methods are case-sensitive (RFC 9110
///   §9.1) and routes list canonical ones, but werkzeug upper-cases the method and serves
///   `get` as `GET`.
pub fn ambiguous_request(method: &http::Method, path: &str) -> Option<&'static str> {
    if method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Some("method_not_uppercase");
    }
    let bytes = path.as_bytes();
    let encoded_separator = bytes.windows(3).any(|w| {
        w[0] == b'%'
            && ((w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f'))
                || (w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c')))
    });
    encoded_separator.then_some("encoded_path_separator")
}

/// Splits a request path into normalised segments: `//` and `.` dropped, `..` applied,
/// percent-escapes decoded (left as written when they do not decode to UTF-8). Segments
/// borrow from `path` unless they had to be decoded.
pub fn normalize_path(path: &str) -> Vec<Cow<'_, str>> {
    let mut out: Vec<Cow<'_, str>> = Vec::with_capacity(8);
    for raw in path.split('/') {
        let seg = percent_decode(raw);
        match seg.as_ref() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(seg),
        }
    }
    out
}

pub(crate) fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).map_or(Cow::Borrowed(s), Cow::Owned)
}

/// Methods a route accepts. `GET` implies `HEAD`, as in Flask and Starlette.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodSet {
    Any,
    Only(Vec<Method>),
}

impl MethodSet {
    pub fn contains(&self, method: &Method) -> bool {
        match self {
            MethodSet::Any => true,
            MethodSet::Only(list) => {
                list.contains(method) || (method == Method::HEAD && list.contains(&Method::GET))
            }
        }
    }
}

impl fmt::Display for MethodSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MethodSet::Any => f.write_str("*"),
            MethodSet::Only(list) => {
                let names: Vec<&str> = list.iter().map(Method::as_str).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

/// Anything that can be matched by method and path.
pub trait Matchable {
    fn methods(&self) -> &MethodSet;
    fn template(&self) -> &PathTemplate;
}

/// Ordered routes; the first whose method set and template match wins.
#[derive(Debug, Clone)]
pub struct RouteTable<R> {
    routes: Vec<R>,
}

impl<R: Matchable> RouteTable<R> {
    pub fn new(routes: Vec<R>) -> Self {
        Self { routes }
    }

    pub fn find(&self, method: &Method, path: &str) -> Option<&R> {
        if self.routes.is_empty() {
            return None;
        }
        let segments = normalize_path(path);
        self.routes
            .iter()
            .find(|r| r.methods().contains(method) && r.template().matches(&segments))
    }

    /// The route for `method` + `path` (first match wins), and the route whose response rules
    /// apply: that same route when `covers` it, else the first route on the same path, for any
    /// method, that `covers`. Response rules protect data at a path, not a method: an app that
    /// also answers `POST`, `DELETE` or an overridden method there with the record must not
    /// send it in the clear because the route that seals it lists only `GET`.
    pub fn find_with_cover(
        &self,
        method: &Method,
        path: &str,
        covers: impl Fn(&R) -> bool,
    ) -> (Option<&R>, Option<&R>) {
        if self.routes.is_empty() {
            return (None, None);
        }
        let segments = normalize_path(path);
        let route = self
            .routes
            .iter()
            .find(|r| r.methods().contains(method) && r.template().matches(&segments));
        let cover = match route {
            Some(r) if covers(r) => Some(r),
            _ => self
                .routes
                .iter()
                .find(|r| covers(r) && r.template().matches(&segments)),
        };
        (route, cover)
    }

    pub fn iter(&self) -> impl Iterator<Item = &R> {
        self.routes.iter()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respellings_the_app_could_read_otherwise_are_refused() {
        let get = http::Method::GET;
        for path in [
            "/api%2Fusers/7",
            "/api/users%2f7",
            "/%2Fapi",
            "/api%5Cusers",
            "/a%5cb",
        ] {
            assert_eq!(
                ambiguous_request(&get, path),
                Some("encoded_path_separator"),
                "{path}"
            );
        }
        for path in ["/api/users/7", "/api/users/%37", "/a%252Fb", "/%2", "/a%2"] {
            assert_eq!(ambiguous_request(&get, path), None, "{path}");
        }
        for method in ["get", "Get", "head", "purge"] {
            let m = http::Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(
                ambiguous_request(&m, "/"),
                Some("method_not_uppercase"),
                "{method}"
            );
        }
        let custom = http::Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(ambiguous_request(&custom, "/"), None);
    }

    fn t(s: &str) -> PathTemplate {
        PathTemplate::parse(s).unwrap()
    }

    fn m(tpl: &str, path: &str) -> bool {
        t(tpl).matches(&normalize_path(path))
    }

    #[test]
    fn params_match_exactly_one_segment() {
        assert!(m("/api/users/{id}", "/api/users/42"));
        assert!(!m("/api/users/{id}", "/api/users"));
        assert!(!m("/api/users/{id}", "/api/users/42/cards"));
        assert!(!m("/api/users/{id}", "/api/accounts/42"));
    }

    #[test]
    fn rest_matches_zero_or_more_segments() {
        assert!(m("/api/secure/**", "/api/secure"));
        assert!(m("/api/secure/**", "/api/secure/a/b/c"));
        assert!(!m("/api/secure/**", "/api/securex/a"));
        assert!(m("/**", "/"));
        assert!(m("/**", "/anything/at/all"));
    }

    #[test]
    fn root_template_matches_only_root() {
        assert!(m("/", "/"));
        assert!(!m("/", "/a"));
    }

    #[test]
    fn spelling_variants_cannot_bypass_a_route() {
        for path in [
            "/api/users/1/",
            "/api//users/1",
            "/api/./users/1",
            "/api/x/../users/1",
            "/api/%75sers/1",
        ] {
            assert!(m("/api/users/{id}", path), "{path}");
        }
    }

    #[test]
    fn invalid_percent_escapes_are_kept_literally() {
        assert_eq!(normalize_path("/a/%zz/%"), vec!["a", "%zz", "%"]);
        assert_eq!(normalize_path("/a/%ff"), vec!["a", "%ff"]);
    }

    #[test]
    fn bad_templates_are_rejected_with_a_reason() {
        for (tpl, needle) in [
            ("api/users", "start with"),
            ("/api/**/x", "last segment"),
            ("/api/{id", "mixes"),
            ("/api/{1d}", "letters"),
            ("/api/{id}/{id}", "twice"),
            ("/api//x", "empty"),
            ("/api/x*", "mixes"),
            ("/api/users?id={id}", "query strings"),
            ("/api/users#top", "query strings"),
        ] {
            let err = PathTemplate::parse(tpl).unwrap_err();
            assert!(err.contains(needle), "{tpl}: {err}");
        }
    }

    struct R(&'static str, MethodSet, PathTemplate);
    impl Matchable for R {
        fn methods(&self) -> &MethodSet {
            &self.1
        }
        fn template(&self) -> &PathTemplate {
            &self.2
        }
    }

    #[test]
    fn first_match_wins_and_methods_filter() {
        let table = RouteTable::new(vec![
            R(
                "put-only",
                MethodSet::Only(vec![Method::PUT]),
                t("/api/users/{id}"),
            ),
            R(
                "user",
                MethodSet::Only(vec![Method::GET]),
                t("/api/users/{id}"),
            ),
            R("all", MethodSet::Any, t("/**")),
        ]);
        let name = |meth: Method, p: &str| table.find(&meth, p).map(|r| r.0);
        assert_eq!(name(Method::PUT, "/api/users/1"), Some("put-only"));
        assert_eq!(name(Method::GET, "/api/users/1"), Some("user"));
        assert_eq!(name(Method::HEAD, "/api/users/1"), Some("user"));
        assert_eq!(name(Method::POST, "/api/users/1"), Some("all"));
    }

    #[test]
    fn response_rules_cover_their_path_for_every_method() {
        let table = RouteTable::new(vec![
            R(
                "write",
                MethodSet::Only(vec![Method::PUT]),
                t("/api/users/{id}"),
            ),
            R(
                "sealed",
                MethodSet::Only(vec![Method::GET]),
                t("/api/users/{id}"),
            ),
            R("other", MethodSet::Only(vec![Method::GET]), t("/api/other")),
        ]);
        let covers = |r: &R| r.0 == "sealed";
        let names = |meth: Method, p: &str| {
            let (route, cover) = table.find_with_cover(&meth, p, covers);
            (route.map(|r| r.0), cover.map(|r| r.0))
        };
        assert_eq!(
            names(Method::GET, "/api/users/1"),
            (Some("sealed"), Some("sealed"))
        );
        assert_eq!(
            names(Method::PUT, "/api/users/1"),
            (Some("write"), Some("sealed"))
        );
        assert_eq!(
            names(Method::DELETE, "/api//users/1/"),
            (None, Some("sealed"))
        );
        assert_eq!(names(Method::POST, "/api/other"), (None, None));
        assert_eq!(names(Method::GET, "/api/other"), (Some("other"), None));
    }
}
