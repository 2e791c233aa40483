//! Request-target normalisation and route matching (`routing`): `normalize_path`,
//! `ambiguous_request` and `RouteTable::find` against a fixed route table, on the path the
//! proxy routes by (`Uri::path()` of the parsed request target) and on the raw text.
//!
//! Input: `METHOD SP request-target` (like a request line; without a space, the whole input is
//! the target and the method is GET). Respellings are derived from a hash of the input.
//!
//! Checks (see `routing.rs` for why they hold):
//! - `find` returns the first route whose methods and template match the normalised segments;
//! - normalising is idempotent: the normalised segments, joined with `/`, normalise to
//!   themselves (when no decoded segment holds `%` or `/`, which would be decoded again);
//! - respelling cannot bypass a route: the same segments spelled with `//`, `/./`, `x/../`,
//!   a trailing `/` and percent-escapes of their characters select the same route, normalise
//!   to the same segments and are not refused as ambiguous;
//! - `ambiguous_request` flags exactly lowercase methods and encoded `/` or `\`.
//! - a template parsed from the target (as config would) matches its own literal path.
#![no_main]

use std::borrow::Cow;
use std::sync::OnceLock;

use fieldseal::routing::{
    ambiguous_request, normalize_path, Matchable, MethodSet, PathTemplate, RouteTable,
};
use fieldseal_fuzz::Prng;
use http::{Method, Uri};
use libfuzzer_sys::fuzz_target;

struct R(MethodSet, PathTemplate);

impl Matchable for R {
    fn methods(&self) -> &MethodSet {
        &self.0
    }
    fn template(&self) -> &PathTemplate {
        &self.1
    }
}

fn table() -> &'static RouteTable<R> {
    static TABLE: OnceLock<RouteTable<R>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let only = |m: &[Method]| MethodSet::Only(m.to_vec());
        let routes = [
            (only(&[Method::PUT]), "/api/users/{id}"),
            (only(&[Method::GET, Method::PUT]), "/api/users/{id}"),
            (MethodSet::Any, "/api/users/{id}/cards/{card}"),
            (only(&[Method::POST]), "/api/signup"),
            (only(&[Method::POST]), "/api/secure/**"),
            (only(&[Method::GET]), "/docs/**"),
            (MethodSet::Any, "/api/é/{x}"),
            (MethodSet::Any, "/a b/c%d/"),
            (only(&[Method::DELETE]), "/"),
            (only(&[Method::from_bytes(b"PURGE").unwrap()]), "/cache/**"),
        ];
        RouteTable::new(
            routes
                .into_iter()
                .map(|(m, t)| R(m, PathTemplate::parse(t).expect("fixed template")))
                .collect(),
        )
    })
}

/// Index of the route `find` chose.
fn chosen(method: &Method, path: &str) -> Option<usize> {
    let t = table();
    let found = t.find(method, path)?;
    Some(t.iter().position(|r| std::ptr::eq(r, found)).unwrap())
}

/// Percent-encodes every byte of `c`.
fn encode_char(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    for b in c.encode_utf8(&mut buf).bytes() {
        out.push_str(&format!("%{b:02X}"));
    }
}

/// The segments spelled another way that must normalise to the same segments.
fn respell(segments: &[Cow<'_, str>], rng: &mut Prng) -> String {
    let mut out = String::new();
    for seg in segments {
        out.push('/');
        match rng.below(8) {
            0 => out.push('/'),
            1 => out.push_str("./"),
            2 => out.push_str("zz/../"),
            3 => out.push_str("%2e/"),
            4 => out.push_str("x/%2E%2e/"),
            _ => {}
        }
        for c in seg.chars() {
            // `\` would become `%5C`, which is refused as ambiguous on purpose.
            if c != '\\' && rng.below(4) == 0 {
                encode_char(&mut out, c);
            } else {
                out.push(c);
            }
        }
    }
    if segments.is_empty() || rng.below(3) == 0 {
        out.push('/');
    }
    out
}

fn check_path(method: &Method, path: &str, rng: &mut Prng) {
    let segments = normalize_path(path);
    let t = table();

    // `find` is "first route whose methods and template match".
    let expected = t
        .iter()
        .position(|r| r.methods().contains(method) && r.template().matches(&segments));
    assert_eq!(chosen(method, path), expected, "find is not first-match");
    for s in &segments {
        assert!(
            !s.is_empty() && s != "." && s != "..",
            "{s:?} survived normalisation"
        );
    }

    let reencodable = segments.iter().all(|s| !s.contains(['%', '/']));
    if !reencodable {
        return;
    }
    // Idempotent.
    let joined: String = segments.iter().flat_map(|s| ["/", s.as_ref()]).collect();
    let again = normalize_path(&joined);
    assert_eq!(again, segments, "normalising {joined:?} again changed it");
    assert_eq!(chosen(method, &joined), expected);

    // Respellings select the same route.
    for _ in 0..3 {
        let other = respell(&segments, rng);
        assert_eq!(
            normalize_path(&other),
            segments,
            "respelling {other:?} of {path:?}"
        );
        assert_eq!(
            chosen(method, &other),
            expected,
            "respelling {other:?} of {path:?} routes elsewhere"
        );
        if !method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
            assert_eq!(
                ambiguous_request(method, &other),
                None,
                "respelling {other:?} refused"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (method_text, target) = match text.split_once(' ') {
        Some((m, t)) => (m, t),
        None => ("GET", text),
    };
    let Ok(method) = Method::from_bytes(method_text.as_bytes()) else {
        return;
    };
    let mut rng = Prng::from_bytes(data);

    // What the proxy routes by: the path of the parsed request target.
    if let Ok(uri) = target.parse::<Uri>() {
        let path = uri.path();
        let why = ambiguous_request(&method, path);
        let lower = method.as_str().bytes().any(|b| b.is_ascii_lowercase());
        let encoded_sep = {
            let p = path.to_ascii_lowercase();
            p.contains("%2f") || p.contains("%5c")
        };
        let want = if lower {
            Some("method_not_uppercase")
        } else if encoded_sep {
            Some("encoded_path_separator")
        } else {
            None
        };
        assert_eq!(why, want, "ambiguous_request({method}, {path:?})");
        check_path(&method, path, &mut rng);
    }
    // The raw text too (the functions take any &str).
    let _ = ambiguous_request(&method, target);
    check_path(&method, target, &mut rng);

    // A template written like this path (as config would) matches its own spelling.
    if let Ok(template) = PathTemplate::parse(target) {
        let _ = template.to_string();
        let literal = !target.contains(['{', '%']) && !target.ends_with("/**");
        if literal {
            assert!(
                template.matches(&normalize_path(target)),
                "template {target:?} does not match its own path"
            );
        }
    }
});
