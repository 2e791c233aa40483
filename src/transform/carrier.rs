//! Carriers other than a JSON body: form fields (`application/x-www-form-urlencoded` and
//! `multipart/form-data`), query parameters and named headers. A rule names one with a prefix
//! in the same lists as JSONPath selectors (`form:ssn`, `query:ssn`, `header:x-account`), so
//! the config reads like the JSON rules; each value found there goes through the same opener
//! as a JSON node ([`super::rules`]), with the same context binding and fail-closed rules.
//!
//! What the app parses must be what was checked: every occurrence of a selected name is
//! opened (apps differ on whether the first or the last wins), names are compared after the
//! decoding the apps do (`+` and percent escapes; header names case-insensitively), and a
//! multipart body is read strictly — anything two parsers could split differently (a
//! boundary string outside a delimiter, bare LF line endings, RFC 2231 `name*`, duplicate
//! parameters, a preamble, `Content-Transfer-Encoding`) is refused, since the app's parser
//! might find a part this one did not. Opened values are written back so they cannot forge
//! structure: percent-encoded in forms and query strings, refused in a multipart part when
//! they contain the boundary, refused in a header when they hold control characters.

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use memchr::memmem;
use serde_json::Value;

use super::selector::JsonTypes;

/// Where a named value travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Carrier {
    /// A field of a urlencoded or multipart form body.
    Form,
    /// A query-string parameter.
    Query,
    /// A header (requests: opened; responses: sealed, redacted or masked).
    Header,
}

impl Carrier {
    /// Every carrier, by the prefix a rule writes.
    pub const ALL: [Carrier; 3] = [Carrier::Form, Carrier::Query, Carrier::Header];

    /// The prefix in a rule (`form:ssn`); also how failures and audit records name the field.
    pub fn prefix(self) -> &'static str {
        match self {
            Carrier::Form => "form",
            Carrier::Query => "query",
            Carrier::Header => "header",
        }
    }

    /// Whether responses have this carrier (only headers: answers have no forms or query).
    pub fn in_responses(self) -> bool {
        self == Carrier::Header
    }
}

/// Headers a rule may not name: they frame or route the message, carry many values in one
/// (cookies), or are rewritten by the proxy itself, so opening or sealing them would change
/// what the message means rather than one value in it.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "cookie",
    "set-cookie",
    "x-request-id",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// A value a rule names in a carrier, compiled once.
#[derive(Debug, Clone)]
pub struct NamedField {
    /// The rule as written (`query:ssn`): the `fieldseal_selector_matches_total` label.
    pub source: Arc<str>,
    pub carrier: Carrier,
    /// The name (a header's in lower case).
    pub name: String,
    /// The AAD context: the rule's, else the name (as a JSON member's name is its context).
    pub context: String,
    /// Decrypt rules: the JSON types accepted once opened (only scalars travel here).
    pub accepts: Option<JsonTypes>,
    /// `encrypt` rules: how their tokens are made; decrypt rules: `per_subject` takes
    /// subject-bound tokens only (as for a JSON member).
    pub tokens: super::operation::TokenOptions,
}

impl NamedField {
    /// Parses a rule written with a carrier prefix. `None` when `rule` has none (a JSONPath
    /// selector or a mistake the JSONPath compiler reports).
    pub fn parse(rule: &str, context: Option<String>) -> Option<Result<Self, String>> {
        let (prefix, name) = rule.split_once(':')?;
        let carrier = Carrier::ALL.into_iter().find(|c| c.prefix() == prefix)?;
        Some(Self::compile(rule, carrier, name, context))
    }

    fn compile(
        rule: &str,
        carrier: Carrier,
        name: &str,
        context: Option<String>,
    ) -> Result<Self, String> {
        if name.is_empty() {
            return Err(format!("`{}:` needs a name after it", carrier.prefix()));
        }
        let name = if carrier == Carrier::Header {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a header name"))?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(format!(
                    "`{}` frames, routes or bundles the message (or the proxy sets it): it cannot carry a sealed value",
                    header.as_str()
                ));
            }
            if header.as_str().contains('_') {
                return Err(
                    "header names with `_` are dropped before the app (WSGI/ASGI servers read them as `-`): use `-`"
                        .into(),
                );
            }
            header.as_str().to_string()
        } else {
            name.to_string()
        };
        if context.as_deref() == Some("") {
            return Err("context must not be empty".into());
        }
        Ok(Self {
            source: Arc::from(rule),
            carrier,
            context: context.unwrap_or_else(|| name.clone()),
            name,
            accepts: None,
            tokens: Default::default(),
        })
    }

    /// How failures and audit records name the field: `query:ssn`.
    pub fn path(&self) -> String {
        format!("{}:{}", self.carrier.prefix(), self.name)
    }
}

/// Why a form body could not be read unambiguously.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormError {
    /// Not a well-formed multipart body, or one two parsers could read differently.
    Ambiguous(&'static str),
}

impl FormError {
    pub fn detail(self) -> &'static str {
        match self {
            FormError::Ambiguous(why) => why,
        }
    }
}

/// One `name=value` pair of a urlencoded text, with where its value's bytes lie.
pub struct Pair {
    pub name: String,
    pub value: String,
    /// Byte range of the (encoded) value in the text.
    pub value_at: std::ops::Range<usize>,
}

/// The pairs of a urlencoded text (a query string or a form body), decoded as the apps do:
/// split on `&` only (Python's `parse_qsl` since 3.9.2, werkzeug and Starlette), `+` is a
/// space, percent escapes decode, invalid UTF-8 becomes U+FFFD.
pub fn pairs(text: &[u8]) -> Vec<Pair> {
    let mut out = Vec::new();
    let mut start = 0;
    for piece in text.split(|b| *b == b'&') {
        let end = start + piece.len();
        if !piece.is_empty() {
            let (name, value_at) = match memchr::memchr(b'=', piece) {
                Some(eq) => (&piece[..eq], start + eq + 1..end),
                None => (piece, end..end),
            };
            out.push(Pair {
                name: decode(name),
                value: decode(&text[value_at.clone()]),
                value_at,
            });
        }
        start = end + 1;
    }
    out
}

/// A name or value decoded: `+` is a space, then percent escapes (an invalid one stays as
/// written), then UTF-8 with U+FFFD for invalid sequences — what `urllib.parse.unquote_plus`,
/// werkzeug and the URL Standard's urlencoded parser all do.
fn decode(bytes: &[u8]) -> String {
    let plus: Vec<u8> = bytes
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    percent_encoding::percent_decode(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// `value` encoded for a urlencoded text (spaces as `+`, everything but unreserved bytes
/// percent-escaped): it cannot end the pair or start another.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A replacement of `at` in a text by `with`.
pub struct Splice {
    pub at: std::ops::Range<usize>,
    pub with: Vec<u8>,
}

/// `text` with `edits` (in order, non-overlapping) applied.
pub fn splice(text: &[u8], edits: &[Splice]) -> Vec<u8> {
    let grown: usize = edits.iter().map(|e| e.with.len()).sum();
    let mut out = Vec::with_capacity(text.len() + grown);
    let mut at = 0;
    for edit in edits {
        out.extend_from_slice(&text[at..edit.at.start]);
        out.extend_from_slice(&edit.with);
        at = edit.at.end;
    }
    out.extend_from_slice(&text[at..]);
    out
}

/// Parts of a multipart body at most (werkzeug's own default `max_form_parts`): each costs a
/// header parse here and in the app.
pub const MAX_MULTIPART_PARTS: usize = 1000;

/// Bytes of one part's header block at most (a browser writes ~100).
const MAX_PART_HEADER_BYTES: usize = 8 * 1024;

/// One part of a multipart body.
#[derive(Debug)]
pub struct Part {
    pub name: String,
    /// The part's content.
    pub body: std::ops::Range<usize>,
}

/// The `boundary` of a `multipart/form-data` content type (RFC 2046 §5.1.1: 1 to 70
/// characters of a restricted set), or why there is none usable.
pub fn boundary(content_type: &str) -> Result<String, FormError> {
    let params = parameters(content_type.split_once(';').map_or("", |(_, p)| p))?;
    let mut found = None;
    for (name, value) in params {
        if name.eq_ignore_ascii_case("boundary") {
            if found.is_some() {
                return Err(FormError::Ambiguous("two boundary parameters"));
            }
            found = Some(value);
        }
    }
    let b = found.ok_or(FormError::Ambiguous("no boundary parameter"))?;
    let allowed = |c: u8| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c);
    if b.is_empty() || b.len() > 70 || !b.bytes().all(allowed) || b.ends_with(' ') {
        return Err(FormError::Ambiguous("boundary outside RFC 2046's limits"));
    }
    Ok(b)
}

/// `; name=value` parameters (token or quoted string; a backslash in a quoted string is
/// refused, since parsers disagree on escapes).
fn parameters(text: &str) -> Result<Vec<(String, String)>, FormError> {
    let mut out = Vec::new();
    let mut rest = text.trim_start_matches([' ', '\t']);
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or(FormError::Ambiguous("a parameter without `=`"))?;
        let name = name.trim_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(|c| c.is_ascii_graphic() && c != b'"') {
            return Err(FormError::Ambiguous("a malformed parameter name"));
        }
        let after = after.trim_start_matches([' ', '\t']);
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let close = quoted
                .find('"')
                .ok_or(FormError::Ambiguous("an unclosed quoted parameter"))?;
            let value = &quoted[..close];
            if value.contains('\\') {
                return Err(FormError::Ambiguous("a backslash in a quoted parameter"));
            }
            (value, &quoted[close + 1..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim_end_matches([' ', '\t']), &after[end..])
        };
        out.push((name.to_ascii_lowercase(), value.to_string()));
        let tail = tail.trim_start_matches([' ', '\t']);
        rest = match tail.strip_prefix(';') {
            Some(r) => r.trim_start_matches([' ', '\t']),
            None if tail.is_empty() => tail,
            None => return Err(FormError::Ambiguous("text after a parameter")),
        };
    }
    Ok(out)
}

/// The parts of a multipart body, read strictly (see the module documentation): no
/// preamble, CRLF line endings, the boundary string only in delimiter lines, exactly one
/// `Content-Disposition: form-data` with one `name` per part, no `name*`/`filename*`, no
/// `Content-Transfer-Encoding`, and a closing delimiter.
pub fn multipart(body: &[u8], boundary: &str) -> Result<Vec<Part>, FormError> {
    let mut dash = Vec::with_capacity(boundary.len() + 2);
    dash.extend_from_slice(b"--");
    dash.extend_from_slice(boundary.as_bytes());
    let mut crlf_dash = Vec::with_capacity(dash.len() + 2);
    crlf_dash.extend_from_slice(b"\r\n");
    crlf_dash.extend_from_slice(&dash);
    if !body.starts_with(&dash) {
        return Err(FormError::Ambiguous("text before the first boundary"));
    }
    let finder = memmem::Finder::new(&crlf_dash);
    let mut parts = Vec::new();
    let mut delimiters = 1;
    let mut at = dash.len();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            // The close delimiter; an epilogue is ignored by every parser, but must not hold
            // the boundary (checked below with every other occurrence).
            let epilogue = &rest[2..];
            if !(epilogue.is_empty() || epilogue.starts_with(b"\r\n")) {
                return Err(FormError::Ambiguous("text after the closing boundary"));
            }
            break;
        }
        if !rest.starts_with(b"\r\n") {
            return Err(FormError::Ambiguous("a boundary not followed by CRLF"));
        }
        if parts.len() == MAX_MULTIPART_PARTS {
            return Err(FormError::Ambiguous("too many parts"));
        }
        at += 2;
        let (name, body_start) = part_headers(body, at)?;
        let body_end = finder
            .find(&body[body_start..])
            .map(|i| body_start + i)
            .ok_or(FormError::Ambiguous("no closing boundary"))?;
        parts.push(Part {
            name,
            body: body_start..body_end,
        });
        delimiters += 1;
        at = body_end + crlf_dash.len();
    }
    // Every occurrence of the boundary string must be one of the delimiters read: one
    // anywhere else (after a bare LF, inside a part, in the epilogue) is where another parser
    // might start a part this one did not see.
    if memmem::find_iter(body, &dash).count() != delimiters {
        return Err(FormError::Ambiguous(
            "the boundary string outside a delimiter line",
        ));
    }
    Ok(parts)
}

/// Reads one part's headers from `at`; returns its `name` and where its content starts.
fn part_headers(body: &[u8], mut at: usize) -> Result<(String, usize), FormError> {
    let start = at;
    let mut name = None;
    let mut dispositions = 0;
    loop {
        let line_end = memmem::find(&body[at..], b"\r\n")
            .map(|i| at + i)
            .ok_or(FormError::Ambiguous("unterminated part headers"))?;
        if line_end - start > MAX_PART_HEADER_BYTES {
            return Err(FormError::Ambiguous("part headers too long"));
        }
        let line = &body[at..line_end];
        at = line_end + 2;
        if line.is_empty() {
            break;
        }
        if line.contains(&b'\n') || line.contains(&b'\r') || line.contains(&0) {
            return Err(FormError::Ambiguous("a bare CR or LF in part headers"));
        }
        if matches!(line[0], b' ' | b'\t') {
            return Err(FormError::Ambiguous("a folded part header"));
        }
        let line = std::str::from_utf8(line)
            .map_err(|_| FormError::Ambiguous("part headers not UTF-8"))?;
        let (field, value) = line
            .split_once(':')
            .ok_or(FormError::Ambiguous("a part header without `:`"))?;
        if field.is_empty() || field.ends_with([' ', '\t']) {
            return Err(FormError::Ambiguous("a malformed part header name"));
        }
        let value = value.trim_matches([' ', '\t']);
        if field.eq_ignore_ascii_case("content-transfer-encoding") {
            return Err(FormError::Ambiguous("Content-Transfer-Encoding in a part"));
        }
        if !field.eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        dispositions += 1;
        let (kind, params) = value.split_once(';').unwrap_or((value, ""));
        if !kind
            .trim_matches([' ', '\t'])
            .eq_ignore_ascii_case("form-data")
        {
            return Err(FormError::Ambiguous("a part that is not form-data"));
        }
        let params = parameters(params)?;
        let mut seen: Vec<&str> = Vec::new();
        for (p, v) in &params {
            if p.ends_with('*') {
                return Err(FormError::Ambiguous("an RFC 2231 `name*` parameter"));
            }
            if seen.contains(&p.as_str()) {
                return Err(FormError::Ambiguous("a repeated disposition parameter"));
            }
            seen.push(p);
            if p == "name" {
                name = Some(v.clone());
            }
        }
    }
    if dispositions != 1 {
        return Err(FormError::Ambiguous(
            "a part without exactly one Content-Disposition",
        ));
    }
    let name = name.ok_or(FormError::Ambiguous("a part without a name"))?;
    Ok((name, at))
}

/// An opened value as the text a form field, query parameter or header carries: strings as
/// they are, numbers and booleans as their JSON text. `None` for `null`, objects and arrays,
/// which these carriers cannot hold.
pub fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Object(_) | Value::Array(_) => None,
    }
}

/// A header value for `text`; `None` when it holds control characters (CR, LF, NUL…), which
/// would split or end the header.
pub fn header_value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_bytes(text.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_by_prefix() {
        let q = NamedField::parse("query:ssn", None).unwrap().unwrap();
        assert_eq!(
            (q.carrier, q.name.as_str(), q.context.as_str()),
            (Carrier::Query, "ssn", "ssn")
        );
        let h = NamedField::parse("header:X-Account", Some("account".into()))
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.name.as_str(), h.context.as_str()),
            ("x-account", "account")
        );
        assert_eq!(h.path(), "header:x-account");
        assert!(NamedField::parse("$.ssn", None).is_none());
        assert!(NamedField::parse("cookie:ssn", None).is_none());
        for bad in [
            "form:",
            "header:cookie",
            "header:Host",
            "header:x_ssn",
            "header:a b",
        ] {
            assert!(NamedField::parse(bad, None).unwrap().is_err(), "{bad}");
        }
        assert!(NamedField::parse("form:a", Some(String::new()))
            .unwrap()
            .is_err());
    }

    #[test]
    fn pairs_decode_as_the_apps_do() {
        let text = b"a=1&ss%6E=tok%2B&&x+y=a+b;c=d&flag&ssn=";
        let got: Vec<(String, String, &[u8])> = pairs(text)
            .into_iter()
            .map(|p| (p.name, p.value, &text[p.value_at]))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), "1".into(), &b"1"[..]),
                ("ssn".into(), "tok+".into(), &b"tok%2B"[..]),
                ("x y".into(), "a b;c=d".into(), &b"a+b;c=d"[..]),
                ("flag".into(), String::new(), &b""[..]),
                ("ssn".into(), String::new(), &b""[..]),
            ]
        );
    }

    #[test]
    fn encoded_values_cannot_forge_pairs() {
        let forged = "1&admin=true #=%";
        let text = format!("x={}&y=2", encode(forged));
        let p = pairs(text.as_bytes());
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].value, forged);
    }

    fn form(parts: &[(&str, &str)], b: &str) -> Vec<u8> {
        let mut out = String::new();
        for (headers, body) in parts {
            out.push_str(&format!("--{b}\r\n{headers}\r\n\r\n{body}\r\n"));
        }
        out.push_str(&format!("--{b}--\r\n"));
        out.into_bytes()
    }

    #[test]
    fn multipart_reads_well_formed_bodies() {
        let body = form(
            &[
                ("Content-Disposition: form-data; name=\"ssn\"", "fs1.k.abc"),
                (
                    "content-disposition: form-data; name=doc; filename=\"a.txt\"\r\nContent-Type: text/plain",
                    "line1\r\nline2",
                ),
            ],
            "XyZ",
        );
        let parts = multipart(&body, "XyZ").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "ssn");
        assert_eq!(&body[parts[0].body.clone()], b"fs1.k.abc");
        assert_eq!(parts[1].name, "doc");
        assert_eq!(&body[parts[1].body.clone()], b"line1\r\nline2");
        assert_eq!(
            boundary("multipart/form-data; boundary=\"a b'c\"").unwrap(),
            "a b'c"
        );
    }

    #[test]
    fn multipart_refuses_what_parsers_read_differently() {
        let b = "B0";
        let ok = |h: &str| form(&[(h, "v")], b);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            ([b"preamble\r\n".as_slice(), &ok("Content-Disposition: form-data; name=a")].concat(), "preamble"),
            (b"--B0\r\nContent-Disposition: form-data; name=a\r\n\r\nv\n--B0\nContent-Disposition: form-data; name=ssn\n\nplain\r\n--B0--".to_vec(), "bare LF delimiter"),
            (ok("Content-Disposition: form-data; name*=UTF-8''ssn"), "name*"),
            (ok("Content-Disposition: form-data; name=a; name=ssn"), "repeated"),
            (ok("Content-Disposition: form-data; name=\"a\\\"b\""), "backslash"),
            (ok("Content-Disposition: form-data; name=a\r\nContent-Transfer-Encoding: base64"), "cte"),
            (ok("Content-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=ssn"), "two dispositions"),
            (ok("Content-Disposition: attachment; name=a"), "not form-data"),
            (ok("Content-Disposition: form-data; filename=a"), "no name"),
            (ok("Content-Disposition: form-data;\r\n name=ssn"), "folded"),
            (b"--B0\r\nContent-Disposition: form-data; name=a\r\n\r\nv".to_vec(), "unclosed"),
            (form(&[("Content-Disposition: form-data; name=a", "x--B0y")], b), "boundary inside"),
            ([ok("Content-Disposition: form-data; name=a"), b"--B0\r\n".to_vec()].concat(), "boundary in epilogue"),
            (b"--B0 \r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--B0--".to_vec(), "padding"),
        ];
        for (body, what) in cases {
            assert!(multipart(&body, b).is_err(), "{what}");
        }
        assert!(boundary("multipart/form-data").is_err());
        assert!(boundary("multipart/form-data; boundary=a; boundary=b").is_err());
        assert!(boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71))).is_err());
    }

    #[test]
    fn multipart_counts_parts() {
        let parts: Vec<(&str, &str)> = (0..=MAX_MULTIPART_PARTS)
            .map(|_| ("Content-Disposition: form-data; name=a", "v"))
            .collect();
        assert!(multipart(&form(&parts, "b"), "b").is_err());
        assert_eq!(
            multipart(&form(&parts[1..], "b"), "b").unwrap().len(),
            MAX_MULTIPART_PARTS
        );
    }

    #[test]
    fn opened_values_as_carrier_text() {
        use serde_json::json;
        assert_eq!(as_text(&json!("a b")).as_deref(), Some("a b"));
        assert_eq!(as_text(&json!(42)).as_deref(), Some("42"));
        assert_eq!(as_text(&json!(true)).as_deref(), Some("true"));
        assert!(as_text(&json!(null)).is_none());
        assert!(as_text(&json!({"$ne": 1})).is_none());
        assert!(header_value("a\r\nb: c").is_none());
        assert!(header_value("078-05-1120").is_some());
    }
}
