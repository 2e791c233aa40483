//! The carrier stage: values a request carries outside a JSON body — query parameters, named
//! headers, urlencoded and multipart form fields — opened before the request goes on, and
//! response headers sealed, redacted or masked before the answer goes back. Parsing and the
//! strict multipart reading live in [`crate::transform::carrier`]; each value is opened or
//! transformed by the field engine's one function for it ([`field_rules::open_named`],
//! [`field_rules::operate_named`]), so a token opens here exactly as in a JSON body.
//!
//! Requests fail as the client's fault (400/413/415) before anything reaches the app.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::uri::PathAndQuery;

use super::error::ProxyError;
use crate::body::{full, ProxyBody};
use crate::config::settings::{RequestRules, ResponseRules};
use crate::crypto::Keyring;
use crate::reason::Reason;
use crate::transform::carrier::{self, Carrier, Splice};
use crate::transform::outcome::FieldFailure;
use crate::transform::rules::{self as field_rules, Action, FieldOp, Openers};

fn rejected(f: FieldFailure) -> ProxyError {
    if f.reason == Reason::ReplayCacheFull {
        return ProxyError::ReplayCacheFull;
    }
    ProxyError::FieldRejected {
        path: f.path,
        reason: f.reason,
        kid: f.kid,
    }
}

/// JWE values this request may still open: the route's budget less those already opened
/// (one budget for every carrier of a request).
pub fn remaining_budget(openers: &Openers<'_>, ops: &[FieldOp]) -> usize {
    let used = ops
        .iter()
        .filter(|op| op.action == Action::Decrypted)
        .count();
    openers.max_encrypted_values.saturating_sub(used)
}

/// Opens the tokens in the query parameters the rules name (every occurrence). The rest of
/// the query string is kept byte for byte; an opened value is percent-encoded in its place.
pub fn open_query(
    path_and_query: Option<&PathAndQuery>,
    rules: &RequestRules,
    openers: &Openers<'_>,
    ops: &mut Vec<FieldOp>,
) -> Result<Option<PathAndQuery>, ProxyError> {
    let Some(pq) = path_and_query else {
        return Ok(None);
    };
    let Some(query) = pq.query() else {
        return Ok(None);
    };
    if !rules.reads_query() {
        return Ok(None);
    }
    let Some(rewritten) = open_pairs(query.as_bytes(), Carrier::Query, rules, openers, ops)? else {
        return Ok(None);
    };
    let mut text = String::with_capacity(pq.path().len() + 1 + rewritten.len());
    text.push_str(pq.path());
    text.push('?');
    // Only bytes `encode` and the client's own query produced: ASCII.
    let rewritten = std::str::from_utf8(&rewritten)
        .map_err(|_| ProxyError::BadRequest("a query string that cannot be rebuilt"))?;
    text.push_str(rewritten);
    PathAndQuery::try_from(text)
        .map(Some)
        .map_err(|_| ProxyError::BadRequest("a query string that cannot be rebuilt"))
}

/// Opens the named values in a urlencoded text; `None` when nothing was opened.
fn open_pairs(
    text: &[u8],
    carrier: Carrier,
    rules: &RequestRules,
    openers: &Openers<'_>,
    ops: &mut Vec<FieldOp>,
) -> Result<Option<Vec<u8>>, ProxyError> {
    let mut budget = remaining_budget(openers, ops);
    let mut edits = Vec::new();
    for pair in carrier::pairs(text) {
        let Some(named) = rules.rule_for(carrier, &pair.name) else {
            continue;
        };
        if let Some(plain) = field_rules::open_named(
            &pair.value,
            named,
            carrier,
            rules,
            openers,
            &mut budget,
            ops,
        )
        .map_err(rejected)?
        {
            edits.push(Splice {
                at: pair.value_at,
                with: carrier::encode(&plain).into_bytes(),
            });
        }
    }
    Ok((!edits.is_empty()).then(|| carrier::splice(text, &edits)))
}

/// Opens the tokens in the request headers the rules name (every value of each).
pub fn open_headers(
    headers: &mut HeaderMap,
    rules: &RequestRules,
    openers: &Openers<'_>,
    ops: &mut Vec<FieldOp>,
) -> Result<(), ProxyError> {
    let mut budget = remaining_budget(openers, ops);
    for named in rules.named_in(Carrier::Header) {
        let name = HeaderName::from_bytes(named.name.as_bytes())
            .expect("header rules are valid names (checked at load)");
        if !headers.contains_key(&name) {
            continue;
        }
        let mut values = Vec::new();
        let mut changed = false;
        for value in headers.get_all(&name) {
            // A value that is not visible ASCII is not a token: plaintext to the rules.
            let text = String::from_utf8_lossy(value.as_bytes());
            match field_rules::open_named(
                &text,
                named,
                Carrier::Header,
                rules,
                openers,
                &mut budget,
                ops,
            )
            .map_err(rejected)?
            {
                Some(plain) => {
                    let mut opened =
                        carrier::header_value(&plain).ok_or_else(|| ProxyError::FieldRejected {
                            path: named.path(),
                            reason: Reason::InvalidValue,
                            kid: None,
                        })?;
                    opened.set_sensitive(true);
                    values.push(opened);
                    changed = true;
                }
                None => values.push(value.clone()),
            }
        }
        if changed {
            headers.remove(&name);
            for v in values {
                headers.append(name.clone(), v);
            }
        }
    }
    Ok(())
}

/// Seals, redacts or masks the response headers the rules name (every value of each; a
/// redacted header is removed). On every answer of the route, whatever its status or body.
/// `subject` is the request's data subject, for `per_subject` rules (a header belongs to the
/// whole answer, so a member subject names none: such a rule withholds the answer).
pub fn transform_response_headers(
    headers: &mut HeaderMap,
    rules: &ResponseRules,
    keyring: Option<&Keyring>,
    subject: Option<&str>,
    ops: &mut Vec<FieldOp>,
) -> Result<(), ProxyError> {
    let mut done: Vec<&str> = Vec::new();
    for rule in rules.headers() {
        // The first rule naming a header handles it (precedence order).
        if done.contains(&rule.field.name.as_str()) {
            continue;
        }
        done.push(&rule.field.name);
        let name = HeaderName::from_bytes(rule.field.name.as_bytes())
            .expect("header rules are valid names (checked at load)");
        if !headers.contains_key(&name) {
            continue;
        }
        let mut values = Vec::new();
        for value in headers.get_all(&name) {
            let text = String::from_utf8_lossy(value.as_bytes());
            let out =
                field_rules::operate_named(rule.op, &rule.field, &text, keyring, subject, ops)
                    .map_err(ProxyError::ResponseFieldFailed)?;
            if let Some(out) = out {
                values.push(
                    carrier::header_value(&out)
                        .ok_or(ProxyError::ResponseNotEncryptable("invalid header value"))?,
                );
            }
        }
        headers.remove(&name);
        for v in values {
            headers.append(name.clone(), v);
        }
    }
    Ok(())
}

/// The kind of form a `Content-Type` declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormKind {
    Urlencoded,
    /// With its boundary (or the reason it has none usable).
    Multipart(Result<String, &'static str>),
}

/// Whether a request body is a form, by its `Content-Type`.
pub fn form_kind(headers: &HeaderMap) -> Option<FormKind> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media = ct.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Some(FormKind::Urlencoded)
    } else if media.eq_ignore_ascii_case("multipart/form-data") {
        Some(FormKind::Multipart(
            carrier::boundary(ct).map_err(carrier::FormError::detail),
        ))
    } else {
        None
    }
}

/// Opens the form fields the rules name in a form body (already read, within the limit).
/// Returns the body to forward: the client's bytes when nothing was opened.
pub fn rewrite_form(
    headers: &mut HeaderMap,
    bytes: Bytes,
    kind: FormKind,
    rules: &RequestRules,
    openers: &Openers<'_>,
    ops: &mut Vec<FieldOp>,
) -> Result<ProxyBody, ProxyError> {
    let rewritten = match kind {
        FormKind::Urlencoded => open_pairs(&bytes, Carrier::Form, rules, openers, ops)?,
        FormKind::Multipart(boundary) => {
            let boundary = boundary.map_err(ProxyError::AmbiguousRequest)?;
            open_multipart(&bytes, &boundary, rules, openers, ops)?
        }
    };
    let out = rewritten.map_or(bytes, Bytes::from);
    crate::body::set_length(headers, out.len());
    Ok(full(out))
}

fn open_multipart(
    body: &[u8],
    boundary: &str,
    rules: &RequestRules,
    openers: &Openers<'_>,
    ops: &mut Vec<FieldOp>,
) -> Result<Option<Vec<u8>>, ProxyError> {
    let parts =
        carrier::multipart(body, boundary).map_err(|e| ProxyError::AmbiguousRequest(e.detail()))?;
    let mut budget = remaining_budget(openers, ops);
    let mut edits = Vec::new();
    let delimiter = format!("--{boundary}");
    for part in parts {
        let Some(named) = rules.named_in(Carrier::Form).find(|n| n.name == part.name) else {
            continue;
        };
        let path = || named.path();
        let text = std::str::from_utf8(&body[part.body.clone()]).map_err(|_| {
            ProxyError::FieldRejected {
                path: path(),
                reason: Reason::NotUtf8,
                kid: None,
            }
        })?;
        let Some(plain) =
            field_rules::open_named(text, named, Carrier::Form, rules, openers, &mut budget, ops)
                .map_err(rejected)?
        else {
            continue;
        };
        // An opened value holding the boundary would end its part and start another, one the
        // client sealed rather than sent.
        if plain.contains(&delimiter) {
            return Err(ProxyError::FieldRejected {
                path: path(),
                reason: Reason::InvalidValue,
                kid: None,
            });
        }
        edits.push(Splice {
            at: part.body,
            with: plain.into_bytes(),
        });
    }
    Ok((!edits.is_empty()).then(|| carrier::splice(body, &edits)))
}
