//! A route's field rules applied to one JSON document with the keyring: responses get their
//! selected fields sealed (`fs1`), redacted or masked; requests get their selected tokens
//! opened. Pure functions over `serde_json::Value` — no I/O — so the proxy stage that buffers
//! bodies stays thin and this stays easy to test and to bench.
//!
//! Failures name the field (normalized JSONPath), a stable reason and, where relevant, the key
//! id — never the value or the token.
//!
//! A decrypt path accepts two kinds of sealed value: `fs1` tokens the proxy sealed itself
//! (keyring), and JWE values a client encrypted to the proxy's RSA or HPKE public key
//! (contract §3). JWEs cost a private-key operation each, so a request may carry at most
//! `limits.max_encrypted_values` of them; on routes with `request.max_age` each must also be
//! fresh and unreplayed ([`crate::replay`]).

use std::borrow::Cow;

use serde_json::Value;
use zeroize::Zeroizing;

use crate::config::settings::{Operation, RequestRules, ResponseRule, ResponseRules};
use crate::crypto::client_keys::ClientKeys;
use crate::crypto::jwe::{self, KeyUnwrap};
use crate::crypto::token::{self, looks_like_token};
use crate::crypto::Keyring;
use crate::reason::Reason;
use crate::replay::{self, Replay};
use crate::transform::carrier::{self, NamedField};
use crate::transform::operation::TokenOptions;
use crate::transform::selector::JsonTypes;
use crate::transform::view::{Choice, Sight};
use crate::transform::{self, splice};

pub use super::outcome::{Action, FieldFailure, FieldOp};

/// The keyring a rule needs, or the failure that says it is missing (config validation
/// prevents that; this fails closed regardless).
fn require_keyring<'k>(
    keyring: Option<&'k Keyring>,
    path: &str,
) -> Result<&'k Keyring, FieldFailure> {
    keyring.ok_or_else(|| FieldFailure::new(path, Reason::KeyringUnavailable, None))
}

impl std::fmt::Display for FieldFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field {}: {}", self.path, self.reason)?;
        if let Some(kid) = &self.kid {
            write!(f, " (key `{kid}`)")?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldFailure {}

fn select_failure(e: transform::SelectError) -> FieldFailure {
    tracing::warn!(error = %e, "JSONPath evaluation failed; refusing the body");
    FieldFailure::new("$", Reason::SelectionFailed, None)
}

/// A selected node as each engine holds it: the byte-level engine has its JSON text, the
/// document engine the parsed value.
#[derive(Clone, Copy)]
enum Node<'a> {
    Raw(&'a str),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn is_null(self) -> bool {
        match self {
            Node::Raw(raw) => raw == "null",
            Node::Value(v) => v.is_null(),
        }
    }

    /// The node as a value (borrowed from the document engine, parsed from the text).
    fn value(self, path: &str) -> Result<Cow<'a, Value>, FieldFailure> {
        match self {
            Node::Value(v) => Ok(Cow::Borrowed(v)),
            Node::Raw(raw) => serde_json::from_str(raw)
                .map(Cow::Owned)
                .map_err(|_| FieldFailure::new(path, Reason::InvalidValue, None)),
        }
    }

    /// The node's compact JSON text (what a token seals).
    fn compact(self, path: &str) -> Result<Cow<'a, [u8]>, FieldFailure> {
        match self {
            Node::Raw(raw) => compact(raw),
            Node::Value(v) => serde_json::to_vec(v).ok().map(Cow::Owned),
        }
        .ok_or_else(|| FieldFailure::new(path, Reason::InvalidValue, None))
    }
}

/// What replaces a node, in a form each engine turns into its own cheaply.
enum Replacement {
    /// A token (`fs1`): its characters never need escaping.
    Token(String),
    Value(Value),
}

impl Replacement {
    fn into_value(self) -> Value {
        match self {
            Replacement::Token(t) => Value::String(t),
            Replacement::Value(v) => v,
        }
    }

    fn into_json(self) -> Zeroizing<Vec<u8>> {
        match self {
            Replacement::Token(t) => {
                let mut quoted = Vec::with_capacity(t.len() + 2);
                quoted.push(b'"');
                quoted.extend_from_slice(t.as_bytes());
                quoted.push(b'"');
                Zeroizing::new(quoted)
            }
            Replacement::Value(v) => {
                Zeroizing::new(serde_json::to_vec(&v).expect("a JSON value serialises"))
            }
        }
    }
}

/// One operation done to one node.
struct Done {
    replacement: Replacement,
    action: Action,
    kid: Option<String>,
}

/// How a rule seals: whether a `null` is sealed too (JSON members only), and the format of
/// its tokens.
#[derive(Debug, Clone, Copy, Default)]
struct Sealing {
    seal_null: bool,
    tokens: TokenOptions,
}

impl Sealing {
    fn of(selector: &crate::transform::selector::Selector) -> Self {
        Self {
            seal_null: selector.seal_null,
            tokens: selector.tokens,
        }
    }

    fn of_named(named: &NamedField) -> Self {
        Self {
            seal_null: false,
            tokens: named.tokens,
        }
    }
}

/// Applies `rule`'s operation to one selected node: the one place an operation is defined,
/// used by both engines (a new operation is a variant of [`Operation`] and an arm here).
/// `None` leaves the node as it is.
fn operate(
    op: Operation,
    sealing: Sealing,
    subject: Option<&str>,
    node: Node<'_>,
    context: &str,
    keyring: Option<&Keyring>,
    path: &str,
) -> Result<Option<Done>, FieldFailure> {
    let done = |replacement, action| Done {
        replacement,
        action,
        kid: None,
    };
    Ok(Some(match op {
        // Nothing to protect in a `null` (contract §7), unless the rule says otherwise.
        Operation::Seal if node.is_null() && !sealing.seal_null => return Ok(None),
        Operation::Seal => {
            let key = require_keyring(keyring, path)?.primary();
            let plaintext = node.compact(path)?;
            let tokens = sealing.tokens;
            let format = match (tokens.searchable, tokens.ttl) {
                _ if tokens.per_subject => token::Format::SubjectBound,
                (true, _) => token::Format::Searchable,
                (false, None) => token::Format::Fs1,
                (false, Some(ttl)) => token::Format::Expiring {
                    expires_at: token::unix_now().saturating_add(ttl.as_secs()),
                },
            };
            let sealed = if tokens.per_subject {
                // Sealed for the request's data subject: no subject (an anonymous caller on a
                // `claim:` route), or an erased one, and the answer is withheld.
                let subject = subject.ok_or_else(|| {
                    FieldFailure::new(path, Reason::NoSubject, Some(key.id.clone()))
                })?;
                let ring = require_keyring(keyring, path)?;
                token::seal_for_subject(ring, subject, context, &plaintext)
                    .map_err(|reason| FieldFailure::new(path, reason, Some(key.id.clone())))?
            } else {
                token::seal_json_as(key, format, context, &plaintext).map_err(|_| {
                    FieldFailure::new(path, Reason::RandomSourceFailed, Some(key.id.clone()))
                })?
            };
            Done {
                replacement: Replacement::Token(sealed),
                action: match format {
                    token::Format::Fs1 => Action::Sealed,
                    token::Format::Expiring { .. } => Action::SealedExpiring,
                    token::Format::Searchable => Action::SealedSearchable,
                    token::Format::SubjectBound => Action::SealedForSubject,
                },
                kid: Some(key.id.clone()),
            }
        }
        Operation::Redact => done(Replacement::Value(Value::Null), Action::Redacted),
        Operation::Mask { keep_last } => done(
            Replacement::Value(transform::mask(node.value(path)?.as_ref(), keep_last)),
            Action::Masked,
        ),
        Operation::MaskEmail => done(
            Replacement::Value(transform::mask_email(node.value(path)?.as_ref())),
            Action::Masked,
        ),
        Operation::Year => done(
            Replacement::Value(transform::year(node.value(path)?.as_ref())),
            Action::Masked,
        ),
    }))
}

/// Seals, redacts and masks the fields `rules` select in a response document, each node by
/// the first rule (in the table's precedence order) that selects it. `keyring` may be `None`
/// only for rules without `encrypt` (redact and mask need no key).
pub fn apply_response(
    doc: &mut Value,
    rules: &ResponseRules,
    keyring: Option<&Keyring>,
) -> Result<Vec<FieldOp>, FieldFailure> {
    apply_response_as(doc, rules, keyring, &Sight::default())
}

/// [`apply_response`] for one caller: `sight` says what each rule with views does for them.
pub fn apply_response_as(
    doc: &mut Value,
    rules: &ResponseRules,
    keyring: Option<&Keyring>,
    sight: &Sight,
) -> Result<Vec<FieldOp>, FieldFailure> {
    let table = rules.rules();
    let queries: Vec<&jsonpath_rust::parser::model::JpQuery> =
        table.iter().map(|r| &r.selector.query).collect();
    let found = transform::select_all(&queries, doc).map_err(select_failure)?;
    // Per-value subjects are read before anything changes: a rule that seals or redacts the
    // subject member itself must not change whose the other values are.
    let subjects: Vec<Option<String>> = if sight.subject().per_value() {
        found
            .iter()
            .map(|(_, l)| sight.subject().at(doc, &l.pointer).map(Cow::into_owned))
            .collect()
    } else {
        Vec::new()
    };
    let mut ops = Vec::with_capacity(found.len());
    for (at, (index, location)) in found.iter().enumerate() {
        let subject = match subjects.get(at) {
            Some(s) => s.as_deref(),
            None => sight.subject().of_request(),
        };
        let Some(node) = doc.pointer_mut(&location.pointer) else {
            continue;
        };
        let rule = &table[*index];
        let choice = sight.choice(*index, rule.op);
        let Some(op) = choice.show else {
            ops.push(shown(location.path.clone(), rule, choice));
            continue;
        };
        let context = transform::context(&rule.selector, location);
        let Some(done) = operate(
            op,
            Sealing::of(&rule.selector),
            subject,
            Node::Value(node),
            context,
            keyring,
            &location.path,
        )?
        else {
            continue;
        };
        *node = done.replacement.into_value();
        let (action, kid) = (done.action, done.kid);
        ops.push(FieldOp {
            path: location.path.clone(),
            action,
            kid,
            selector: Some(rule.selector.source.clone()),
            view: choice.mark,
        });
    }
    Ok(ops)
}

/// What a request's decrypt paths can open, and the bounds on client-encrypted values.
#[derive(Clone, Copy)]
pub struct Openers<'a> {
    /// Opens `fs1` tokens.
    pub keyring: Option<&'a Keyring>,
    /// Opens JWE values (RSA-OAEP-256 or HPKE).
    pub client: Option<&'a ClientKeys>,
    /// JWE values opened per request at most.
    pub max_encrypted_values: usize,
    /// The process-wide replay check (every `jti` recorded, on every route); `None` only
    /// where nothing is consumed (a dry run, the rewrap tool, tests). A route with `max_age`
    /// fails closed without it.
    pub replay: Option<Replay<'a>>,
    /// The request's data subject (the route's `subject`): subject-bound tokens (`fsb1`) open
    /// only for it.
    pub subject: Option<&'a str>,
}

impl<'a> Openers<'a> {
    /// Only `fs1` tokens (tests, the rewrap tool).
    pub fn fs1(keyring: &'a Keyring) -> Self {
        Self {
            keyring: Some(keyring),
            client: None,
            max_encrypted_values: crate::limits::MAX_ENCRYPTED_VALUES,
            replay: None,
            subject: None,
        }
    }
}

/// A key set with no keys: a JWE on a proxy without client keys fails as `unknown_key`,
/// naming the kid it asked for.
struct NoClientKeys;

impl KeyUnwrap for NoClientKeys {
    fn unwrap_cek(&self, _kid: &str, _encrypted_key: &[u8]) -> Result<Zeroizing<Vec<u8>>, ()> {
        Err(())
    }

    fn knows(&self, _kid: &str) -> bool {
        false
    }
}

/// Where a value at a decrypt path is being opened, and under which rules.
struct Field<'r> {
    /// Normalized JSONPath, for failures.
    path: &'r str,
    /// The AAD context of the field (contract §1): the rule's, else the member name.
    context: &'r str,
    /// The rule's `seal_null`: a `null` here is plaintext, not left alone.
    seal_null: bool,
    /// The rule's `type`.
    accepts: Option<JsonTypes>,
    /// The field is sealed per subject (`per_subject`): only a subject-bound token opens
    /// here, so another user's `fs1` token of the same field is no way around the binding.
    subject_bound: bool,
    rules: &'r RequestRules,
}

impl Field<'_> {
    fn failure(&self, reason: Reason, kid: Option<String>) -> FieldFailure {
        FieldFailure::new(self.path, reason, kid)
    }
}

/// Opens one client-encrypted value and admits it: bound to this field (`fsc`), of a type
/// the rule accepts, fresh on `max_age` routes, never seen before on any route. `budget`
/// counts down the JWEs this request may still open.
fn open_client_value(
    text: &str,
    field: &Field<'_>,
    openers: &Openers<'_>,
    budget: &mut usize,
) -> Result<(Value, String), FieldFailure> {
    if *budget == 0 {
        return Err(field.failure(Reason::TooManyEncryptedValues, None));
    }
    *budget -= 1;
    let keys: &dyn KeyUnwrap = match openers.client {
        Some(c) => c,
        None => &NoClientKeys,
    };
    let opened = jwe::open(text, keys)
        .map_err(|e| field.failure(e.reason(), e.kid().map(str::to_string)))?;
    let kid = || Some(opened.kid.clone());
    // Binding (contract §3 of 1.1): a value made for another field is refused here, so a
    // captured `password` JWE cannot be replayed as a `nickname` the app echoes back.
    match opened.fsc.as_deref() {
        Some(fsc) if fsc != field.context => {
            return Err(field.failure(Reason::ContextMismatch, kid()))
        }
        None if field.rules.require_context => {
            return Err(field.failure(Reason::MissingContext, kid()))
        }
        _ => {}
    }
    if !JsonTypes::accepts_opened(field.accepts, &opened.value) {
        return Err(field.failure(Reason::UnexpectedType, kid()));
    }
    match &openers.replay {
        Some(replay) => replay::admit(
            opened.iat,
            opened.jti.as_deref(),
            field.rules.max_age,
            replay,
            replay::Origin {
                field: field.path,
                kid: Some(&opened.kid),
                envelope: false,
            },
        )
        .map_err(|e| field.failure(e.reason(), kid()))?,
        None if field.rules.max_age.is_some() => {
            return Err(field.failure(Reason::ReplayCheckUnavailable, kid()))
        }
        None => {}
    }
    Ok((opened.value, opened.kid))
}

/// The record of a field a view shows as the app sent it.
fn shown(path: String, rule: &ResponseRule, choice: Choice) -> FieldOp {
    FieldOp {
        path,
        action: Action::Shown,
        kid: None,
        selector: Some(rule.selector.source.clone()),
        view: choice.mark,
    }
}

/// Opens the tokens at the fields `rules` select in a request document. Any token that does
/// not open — or, with `require_encrypted`, any plaintext — fails the whole request.
pub fn apply_request(
    doc: &mut Value,
    rules: &RequestRules,
    openers: &Openers<'_>,
) -> Result<Vec<FieldOp>, FieldFailure> {
    let found = transform::select_selectors(&rules.decrypt, doc).map_err(select_failure)?;
    let mut ops = Vec::with_capacity(found.len());
    let mut budget = openers.max_encrypted_values;
    for (index, location) in &found {
        let Some(node) = doc.pointer_mut(&location.pointer) else {
            continue;
        };
        let selector = &rules.decrypt[*index];
        let field = Field {
            path: &location.path,
            context: transform::context(selector, location),
            seal_null: selector.seal_null,
            accepts: selector.accepts,
            subject_bound: selector.tokens.per_subject,
            rules,
        };
        let Some(opened) = open_node(Node::Value(node), &field, openers, &mut budget)? else {
            continue;
        };
        if let Some(plain) = opened.plaintext {
            *node = plain.into_value(&field, &opened.kid)?;
        }
        ops.push(FieldOp {
            path: location.path.clone(),
            action: opened.action,
            kid: opened.kid,
            selector: Some(selector.source.clone()),
            view: None,
        });
    }
    Ok(ops)
}

/// What opening one request value produced.
struct OpenedField {
    /// The plaintext to put in its place; `None` when the value passes as it is (plaintext).
    plaintext: Option<Plain>,
    action: Action,
    kid: Option<String>,
}

/// An opened value, in the form its opener produced it.
enum Plain {
    /// JSON text (an `fs1` token opens to the bytes it sealed).
    Json(Zeroizing<Vec<u8>>),
    /// A value (a JWE opens to one).
    Value(Value),
}

impl Plain {
    fn into_value(self, field: &Field<'_>, kid: &Option<String>) -> Result<Value, FieldFailure> {
        match self {
            Plain::Value(v) => Ok(v),
            Plain::Json(bytes) => serde_json::from_slice(&bytes)
                .map_err(|_| field.failure(Reason::InvalidValue, kid.clone())),
        }
    }

    fn into_json(self) -> Zeroizing<Vec<u8>> {
        match self {
            Plain::Json(bytes) => bytes,
            Plain::Value(v) => {
                Zeroizing::new(serde_json::to_vec(&v).expect("a JSON value serialises"))
            }
        }
    }
}

/// Opens the value at one decrypt path — a JWE, an `fs1` token, or plaintext the route may
/// refuse — for both engines (the one place this is decided). `None` for a `null` left alone
/// (contract §7).
fn open_node(
    node: Node<'_>,
    field: &Field<'_>,
    openers: &Openers<'_>,
    budget: &mut usize,
) -> Result<Option<OpenedField>, FieldFailure> {
    if node.is_null() && !field.seal_null {
        return Ok(None);
    }
    let text: Option<Cow<'_, str>> = match node {
        Node::Value(Value::String(s)) => Some(Cow::Borrowed(s)),
        Node::Value(_) => None,
        Node::Raw(raw) => match raw.as_bytes() {
            [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => {
                Some(Cow::Borrowed(&raw[1..raw.len() - 1]))
            }
            [b'"', ..] => serde_json::from_str::<String>(raw).ok().map(Cow::Owned),
            _ => None,
        },
    };
    if let Some(text) = text.as_deref().filter(|t| jwe::looks_like_jwe(t)) {
        let (value, kid) = open_client_value(text, field, openers, budget)?;
        return Ok(Some(OpenedField {
            plaintext: Some(Plain::Value(value)),
            action: Action::Decrypted,
            kid: Some(kid),
        }));
    }
    let Some(token_text) = text.filter(|t| looks_like_token(t)) else {
        if field.rules.require_encrypted {
            return Err(field.failure(Reason::PlaintextNotAllowed, None));
        }
        return Ok(Some(OpenedField {
            plaintext: None,
            action: Action::PassedPlaintext,
            kid: None,
        }));
    };
    let kid = token_kid(&token_text);
    if field.subject_bound && !token_text.starts_with(token::SUBJECT_PREFIX) {
        return Err(field.failure(Reason::NotSubjectBound, kid));
    }
    let Some(keyring) = openers.keyring else {
        return Err(field.failure(Reason::KeyringUnavailable, kid));
    };
    let plaintext =
        token::open_json_for_subject(keyring, field.context, &token_text, openers.subject)
            .map_err(|e| field.failure(e.reason(), e.kid().map(str::to_string).or(kid.clone())))?;
    if let Some(types) = field.accepts {
        let value: Value = serde_json::from_slice(&plaintext)
            .map_err(|_| field.failure(Reason::InvalidValue, kid.clone()))?;
        if !types.contains(&value) {
            return Err(field.failure(Reason::UnexpectedType, kid));
        }
    }
    Ok(Some(OpenedField {
        plaintext: Some(Plain::Json(plaintext)),
        action: match token::format_of(&token_text) {
            Some(token::Format::Expiring { .. }) => Action::OpenedExpiring,
            Some(token::Format::Searchable) => Action::OpenedSearchable,
            Some(token::Format::SubjectBound) => Action::OpenedForSubject,
            Some(token::Format::Fs1) | None => Action::Opened,
        },
        kid,
    }))
}

/// Opens one value a form field, query parameter or header carries, by the same rules as a
/// JSON node ([`open_node`]): `Some(text)` to put in its place, `None` when it passes as
/// plaintext. The opened value must be one a text carrier holds (a string, number or
/// boolean; see [`carrier::as_text`]).
/// `found_in` is where the value was (a form rule also reads the query string), which
/// failures and audit records name.
pub fn open_named(
    text: &str,
    named: &NamedField,
    found_in: carrier::Carrier,
    rules: &RequestRules,
    openers: &Openers<'_>,
    budget: &mut usize,
    ops: &mut Vec<FieldOp>,
) -> Result<Option<String>, FieldFailure> {
    let path = format!("{}:{}", found_in.prefix(), named.name);
    let field = Field {
        path: &path,
        context: &named.context,
        seal_null: false,
        accepts: named.accepts,
        subject_bound: named.tokens.per_subject,
        rules,
    };
    let value = Value::String(text.to_string());
    let Some(opened) = open_node(Node::Value(&value), &field, openers, budget)? else {
        return Ok(None);
    };
    let text = match opened.plaintext {
        None => None,
        Some(plain) => {
            let value = plain.into_value(&field, &opened.kid)?;
            let text = carrier::as_text(&value)
                .ok_or_else(|| field.failure(Reason::UnexpectedType, opened.kid.clone()))?;
            Some(text)
        }
    };
    ops.push(FieldOp {
        path,
        action: opened.action,
        kid: opened.kid,
        selector: Some(named.source.clone()),
        view: None,
    });
    Ok(text)
}

/// Applies a response rule's operation to one header value (the same [`operate`] as a JSON
/// node's): `Some(text)` to send instead, `None` to drop the header (redaction).
pub fn operate_named(
    op: Operation,
    named: &NamedField,
    text: &str,
    keyring: Option<&Keyring>,
    subject: Option<&str>,
    ops: &mut Vec<FieldOp>,
) -> Result<Option<String>, FieldFailure> {
    let path = named.path();
    let value = Value::String(text.to_string());
    let Some(done) = operate(
        op,
        Sealing::of_named(named),
        subject,
        Node::Value(&value),
        &named.context,
        keyring,
        &path,
    )?
    else {
        return Ok(Some(text.to_string()));
    };
    let out = match done.replacement {
        Replacement::Token(t) => Some(t),
        Replacement::Value(Value::Null) => None,
        Replacement::Value(Value::String(s)) => Some(s),
        Replacement::Value(other) => Some(other.to_string()),
    };
    ops.push(FieldOp {
        path,
        action: done.action,
        kid: done.kid,
        selector: Some(named.source.clone()),
        view: None,
    });
    Ok(out)
}

/// Why a body could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyFailure {
    /// Not one valid JSON document (UTF-8 included).
    InvalidJson,
    /// A field could not be processed.
    Field(FieldFailure),
}

impl From<FieldFailure> for BodyFailure {
    fn from(f: FieldFailure) -> Self {
        BodyFailure::Field(f)
    }
}

/// Applies a route's response rules to a body. Returns the new body, or `None` when no field
/// was selected (the original bytes may be forwarded as they are).
///
/// Rules whose selectors are all simple run on the byte-level engine (`transform::splice`):
/// the document is validated but never materialised, and bytes outside the selected fields
/// are kept exactly, member order included. Others parse into a `Value` and re-serialise.
pub fn rewrite_response_body(
    body: &[u8],
    rules: &ResponseRules,
    keyring: Option<&Keyring>,
    ops: &mut Vec<FieldOp>,
) -> Result<Option<Vec<u8>>, BodyFailure> {
    rewrite_response_body_as(body, rules, keyring, &Sight::default(), ops)
}

/// [`rewrite_response_body`] for one caller: `sight` says what each rule with views does for
/// them (a field shown plain is left as the app sent it, and reported `shown`).
pub fn rewrite_response_body_as(
    body: &[u8],
    rules: &ResponseRules,
    keyring: Option<&Keyring>,
    sight: &Sight,
    ops: &mut Vec<FieldOp>,
) -> Result<Option<Vec<u8>>, BodyFailure> {
    // Per-value subjects are found in the document around each value: the `Value` engine.
    let plan = rules.plan().filter(|_| !sight.subject().per_value());
    let Some(plan) = plan else {
        let mut doc: Value = serde_json::from_slice(body).map_err(|_| BodyFailure::InvalidJson)?;
        let applied = apply_response_as(&mut doc, rules, keyring, sight)?;
        let changed = applied.iter().any(|op| op.action != Action::Shown);
        ops.extend(applied);
        if !changed {
            return Ok(None);
        }
        return serde_json::to_vec(&doc)
            .map(Some)
            .map_err(|_| BodyFailure::InvalidJson);
    };
    let text = std::str::from_utf8(body).map_err(|_| BodyFailure::InvalidJson)?;
    let mut spans = splice::scan(plan, text).map_err(|_| BodyFailure::InvalidJson)?;
    if spans.is_empty() {
        return Ok(None);
    }
    let mut edits = Vec::with_capacity(spans.len());
    for span in &mut spans {
        let path = std::mem::take(&mut span.path);
        let found = Found {
            selector: span.selector,
            raw: span.raw,
            path,
            member: &span.member,
        };
        if let Some(replacement) = replace_found(rules, keyring, sight, found, ops)? {
            edits.push(splice::Edit {
                start: span.start,
                end: span.end,
                replacement,
            });
        }
    }
    if edits.is_empty() {
        return Ok(None);
    }
    Ok(Some(splice::splice(text, &edits)))
}

/// A value a byte-level engine (the splice engine, or the streaming one) selected.
pub struct Found<'a> {
    /// Index of the rule (in the table's order) that selected it.
    pub selector: usize,
    /// Its JSON text as the app sent it.
    pub raw: &'a str,
    /// RFC 9535 Normalized Path.
    pub path: String,
    /// The member rule's context.
    pub member: &'a str,
}

/// What one selected value becomes, for both byte-level engines: its replacement's JSON text,
/// or `None` to leave it as the app sent it (a view shows it, or there is nothing to do);
/// `ops` records what was done.
pub fn replace_found(
    rules: &ResponseRules,
    keyring: Option<&Keyring>,
    sight: &Sight,
    found: Found<'_>,
    ops: &mut Vec<FieldOp>,
) -> Result<Option<Zeroizing<Vec<u8>>>, FieldFailure> {
    let rule = &rules.rules()[found.selector];
    let choice = sight.choice(found.selector, rule.op);
    let Some(op) = choice.show else {
        ops.push(shown(found.path, rule, choice));
        return Ok(None);
    };
    let context = rule.selector.context.as_deref().unwrap_or(found.member);
    let Some(done) = operate(
        op,
        Sealing::of(&rule.selector),
        sight.subject().of_request(),
        Node::Raw(found.raw),
        context,
        keyring,
        &found.path,
    )?
    else {
        return Ok(None);
    };
    let (replacement, action, kid) = (done.replacement.into_json(), done.action, done.kid);
    ops.push(FieldOp {
        path: found.path,
        action,
        kid,
        selector: Some(rule.selector.source.clone()),
        view: choice.mark,
    });
    Ok(Some(replacement))
}

/// The compact JSON text of a raw value: the raw text itself when it is already compact (a
/// string without escapes, a literal, an integer), else re-serialised.
fn compact(raw: &str) -> Option<Cow<'_, [u8]>> {
    let bytes = raw.as_bytes();
    let already = match bytes.first() {
        Some(b'"') => !bytes.contains(&b'\\'),
        Some(b't' | b'f' | b'n') => true,
        Some(b'-' | b'0'..=b'9') => bytes[1..].iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if already {
        return Some(Cow::Borrowed(bytes));
    }
    let value: Value = serde_json::from_str(raw).ok()?;
    serde_json::to_vec(&value).ok().map(Cow::Owned)
}

/// Applies a route's request rules to a body: opens the tokens at its decrypt paths. Returns
/// the new body, or `None` when nothing was opened (forward the client's bytes as they are).
pub fn rewrite_request_body(
    body: &[u8],
    rules: &RequestRules,
    openers: &Openers<'_>,
    ops: &mut Vec<FieldOp>,
) -> Result<Option<Vec<u8>>, BodyFailure> {
    let Some(plan) = rules.plan() else {
        let mut doc: Value = serde_json::from_slice(body).map_err(|_| BodyFailure::InvalidJson)?;
        let applied = apply_request(&mut doc, rules, openers)?;
        let changed = applied.iter().any(|op| op.action.opened_a_value());
        ops.extend(applied);
        if !changed {
            return Ok(None);
        }
        return serde_json::to_vec(&doc)
            .map(Some)
            .map_err(|_| BodyFailure::InvalidJson);
    };
    let text = std::str::from_utf8(body).map_err(|_| BodyFailure::InvalidJson)?;
    if splice::nesting_exceeds(text, splice::MAX_NESTING) {
        return Err(BodyFailure::InvalidJson);
    }
    let mut spans = splice::scan(plan, text).map_err(|_| BodyFailure::InvalidJson)?;
    let mut edits = Vec::new();
    let mut budget = openers.max_encrypted_values;
    for span in &mut spans {
        let path = std::mem::take(&mut span.path);
        let selector = &rules.decrypt[span.selector];
        let field = Field {
            path: &path,
            context: selector.context.as_deref().unwrap_or(&span.member),
            seal_null: selector.seal_null,
            accepts: selector.accepts,
            subject_bound: selector.tokens.per_subject,
            rules,
        };
        let Some(opened) = open_node(Node::Raw(span.raw), &field, openers, &mut budget)? else {
            continue;
        };
        if let Some(plain) = opened.plaintext {
            edits.push(splice::Edit {
                start: span.start,
                end: span.end,
                replacement: plain.into_json(),
            });
        }
        ops.push(FieldOp {
            path,
            action: opened.action,
            kid: opened.kid,
            selector: Some(selector.source.clone()),
            view: None,
        });
    }
    if edits.is_empty() {
        return Ok(None);
    }
    Ok(Some(splice::splice(text, &edits)))
}

/// The key id a token names (its shape was checked by `looks_like_token`).
fn token_kid(token_text: &str) -> Option<String> {
    token::token_kid(token_text).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::OnNonJson;
    use crate::config::settings::MaskRule;
    use crate::crypto::keyring::tests::test_keyring;
    use crate::transform::selector::Selector;
    use proptest::prelude::*;
    use serde_json::json;

    /// Where `user()` holds the fields `response_rules()` seals.
    const SEALED_POINTERS: [&str; 5] = [
        "/ssn",
        "/password",
        "/age",
        "/cards/0/number",
        "/cards/1/number",
    ];

    fn sel(path: &str) -> Selector {
        Selector::compile(path, None).unwrap()
    }

    fn sealing_nulls(path: &str) -> Selector {
        let mut s = sel(path);
        s.seal_null = true;
        s
    }

    fn user() -> Value {
        json!({
            "id": 7, "name": "Ada", "ssn": "123-45-6789", "password": "pw", "age": 36,
            "cards": [{"brand": "visa", "number": "4111111111110366"}, {"brand": "amex", "number": 378282246310005u64}],
            "phone": "+44 20 7946 0958", "notes": {"internal": true}
        })
    }

    fn response_rules() -> ResponseRules {
        ResponseRules::new(
            vec![
                sel("$.ssn"),
                sel("$.password"),
                sel("$.age"),
                Selector::compile("$.cards[*].number", Some("card".into())).unwrap(),
            ],
            vec![sel("$.notes")],
            vec![MaskRule {
                selector: sel("$.phone"),
                keep_last: 4,
            }],
            OnNonJson::Fail,
        )
    }

    #[test]
    fn response_rules_seal_redact_and_mask() {
        let ring = test_keyring();
        let mut doc = user();
        let ops = apply_response(&mut doc, &response_rules(), Some(&ring)).unwrap();
        assert_eq!(ops.iter().filter(|o| o.action == Action::Sealed).count(), 5);
        for p in SEALED_POINTERS {
            let t = doc.pointer(p).unwrap().as_str().unwrap();
            assert!(t.starts_with("fs1.k1."), "{p}: {t}");
        }
        assert_eq!(doc["notes"], Value::Null);
        assert_eq!(doc["phone"], "************0958");
        assert_eq!(doc["name"], "Ada");
        // Member rule vs explicit context.
        assert_eq!(
            token::open(&ring, "ssn", doc["ssn"].as_str().unwrap()).unwrap(),
            "123-45-6789"
        );
        assert_eq!(
            token::open(&ring, "age", doc["age"].as_str().unwrap()).unwrap(),
            36
        );
        assert_eq!(
            token::open(&ring, "card", doc["cards"][1]["number"].as_str().unwrap()).unwrap(),
            json!(378282246310005u64)
        );
        let text = doc.to_string();
        for secret in [
            "123-45-6789",
            "4111111111110366",
            "378282246310005",
            "\"pw\"",
        ] {
            assert!(!text.contains(secret), "{secret} survived");
        }
    }

    #[test]
    fn request_rules_open_what_the_response_sealed() {
        let ring = test_keyring();
        let mut doc = user();
        apply_response(&mut doc, &response_rules(), Some(&ring)).unwrap();
        let request = RequestRules::new(
            vec![
                sel("$.ssn"),
                sel("$.password"),
                sel("$.age"),
                Selector::compile("$.cards[*].number", Some("card".into())).unwrap(),
            ],
            true,
            None,
        );
        let ops = apply_request(&mut doc, &request, &Openers::fs1(&ring)).unwrap();
        assert_eq!(ops.len(), 5);
        let original = user();
        for p in SEALED_POINTERS {
            assert_eq!(doc.pointer(p), original.pointer(p), "{p}");
        }
    }

    #[test]
    fn request_failures_name_field_reason_and_kid() {
        let ring = test_keyring();
        let rules = |require| RequestRules::new(vec![sel("$.ssn"), sel("$.nick")], require, None);
        let password_token = token::seal(ring.primary(), "password", &json!("x")).unwrap();
        let cases = [
            (
                json!({"ssn": password_token}),
                "authentication_failed",
                Some("k1"),
            ),
            (json!({"ssn": "fs1.k9.AAAA"}), "unknown_key", Some("k9")),
            (
                json!({"ssn": "fs1.gone.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
                "key_disabled",
                Some("gone"),
            ),
            (json!({"ssn": "fs1.k1.%%%"}), "bad_encoding", Some("k1")),
        ];
        for (mut doc, reason, kid) in cases {
            let err = apply_request(&mut doc, &rules(false), &Openers::fs1(&ring)).unwrap_err();
            assert_eq!(
                (err.path.as_str(), err.reason.as_str(), err.kid.as_deref()),
                ("$['ssn']", reason, kid)
            );
        }
        // Plaintext: passes unless tokens are required.
        let mut doc = json!({"ssn": "123-45-6789"});
        let ops = apply_request(&mut doc, &rules(false), &Openers::fs1(&ring)).unwrap();
        assert_eq!(ops[0].action, Action::PassedPlaintext);
        assert_eq!(doc["ssn"], "123-45-6789");
        let err = apply_request(&mut doc, &rules(true), &Openers::fs1(&ring)).unwrap_err();
        assert_eq!(err.reason, "plaintext_not_allowed");
        assert!(!err.to_string().contains("123-45-6789"));
    }

    #[test]
    fn body_rewrite_seals_in_place_and_keeps_member_order() {
        let ring = test_keyring();
        let body = br#"{"name":"Ada", "ssn":"123-45-6789","cards":[{"number":"4111111111110366","brand":"visa"}],"phone":"+44 20 7946 0958","notes":{"x":1},"age":36,"password":"p\u00e9"}"#;
        let rules = response_rules();
        assert!(
            rules.plan().is_some(),
            "simple rules run on the byte-level engine"
        );
        let mut ops = Vec::new();
        let out = rewrite_response_body(body, &rules, Some(&ring), &mut ops)
            .unwrap()
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(r#"{"name":"Ada", "ssn":"fs1.k1."#),
            "{text}"
        );
        assert!(
            text.contains(
                r#""brand":"visa"}],"phone":"************0958","notes":null,"age":"fs1.k1."#
            ),
            "{text}"
        );
        let doc: Value = serde_json::from_str(&text).unwrap();
        for (pointer, context, plain) in [
            ("/ssn", "ssn", json!("123-45-6789")),
            ("/cards/0/number", "card", json!("4111111111110366")),
            ("/age", "age", json!(36)),
            ("/password", "password", json!("pé")),
        ] {
            let t = doc.pointer(pointer).unwrap().as_str().unwrap();
            assert_eq!(token::open(&ring, context, t).unwrap(), plain, "{pointer}");
        }
        let actions: Vec<(&str, Action)> =
            ops.iter().map(|o| (o.path.as_str(), o.action)).collect();
        assert_eq!(
            actions,
            [
                ("$['ssn']", Action::Sealed),
                ("$['cards'][0]['number']", Action::Sealed),
                ("$['phone']", Action::Masked),
                ("$['notes']", Action::Redacted),
                ("$['age']", Action::Sealed),
                ("$['password']", Action::Sealed),
            ]
        );
        for secret in [
            "123-45-6789",
            "4111111111110366",
            "7946",
            "\"x\"",
            "p\\u00e9",
        ] {
            assert!(!text.contains(secret), "{secret} survived");
        }
    }

    #[test]
    fn body_engines_refuse_the_same_bodies() {
        let ring = test_keyring();
        let deep = format!("{{\"ssn\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        for rules in [response_rules(), response_rules().without_plan()] {
            for body in [
                &b"{\"ssn\":"[..],
                b"{} x",
                b"{\"a\":\"\xff\"}",
                b"",
                b"nope",
            ] {
                let got = rewrite_response_body(body, &rules, Some(&ring), &mut Vec::new());
                assert_eq!(
                    got,
                    Err(BodyFailure::InvalidJson),
                    "{:?}",
                    String::from_utf8_lossy(body)
                );
            }
            let none =
                rewrite_response_body(br#"{"other":1}"#, &rules, Some(&ring), &mut Vec::new());
            assert_eq!(none, Ok(None));
            // Sealing needs the keyring: fail closed without it.
            let err = rewrite_response_body(br#"{"ssn":1}"#, &rules, None, &mut Vec::new());
            assert!(matches!(err, Err(BodyFailure::Field(f)) if f.reason == "keyring_unavailable"));
        }
        let request = RequestRules::new(vec![sel("$.ssn")], false, None);
        for rules in [request.clone(), request.without_plan()] {
            let got = rewrite_request_body(
                deep.as_bytes(),
                &rules,
                &Openers::fs1(&ring),
                &mut Vec::new(),
            );
            assert_eq!(got, Err(BodyFailure::InvalidJson), "too deep");
            let token = token::seal(ring.primary(), "password", &json!("x")).unwrap();
            let body = format!(r#"{{"ssn":"{token}"}}"#);
            let got = rewrite_request_body(
                body.as_bytes(),
                &rules,
                &Openers::fs1(&ring),
                &mut Vec::new(),
            );
            assert!(
                matches!(got, Err(BodyFailure::Field(f)) if f.reason == "authentication_failed" && f.path == "$['ssn']")
            );
            let mut ops = Vec::new();
            let plain =
                rewrite_request_body(br#"{"ssn":"123"}"#, &rules, &Openers::fs1(&ring), &mut ops);
            assert_eq!((plain, ops[0].action), (Ok(None), Action::PassedPlaintext));
        }
    }

    /// JSON documents of bounded size, with member names worth escaping.
    fn json_doc() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z0-9 ~/'é]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-z~/'é]{1,5}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Simple selectors built from the document's own paths (and `[*]` in place of indexes).
    fn selectors_for(doc: &Value, picks: &[usize]) -> Vec<String> {
        fn paths(v: &Value, prefix: String, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    for (k, c) in m {
                        let p = format!(
                            "{prefix}['{}']",
                            k.replace('\\', "\\\\").replace('\'', "\\'")
                        );
                        out.push(p.clone());
                        paths(c, p, out);
                    }
                }
                Value::Array(a) => {
                    for (i, c) in a.iter().enumerate() {
                        let p = if i % 2 == 0 {
                            format!("{prefix}[{i}]")
                        } else {
                            format!("{prefix}[*]")
                        };
                        out.push(p.clone());
                        paths(c, p, out);
                    }
                }
                _ => {}
            }
        }
        let mut all = Vec::new();
        paths(doc, "$".into(), &mut all);
        let mut chosen: Vec<String> = picks
            .iter()
            .filter_map(|i| all.get(i % all.len().max(1)).cloned())
            .collect();
        chosen.sort();
        chosen.dedup();
        chosen
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// open(seal(doc)) == doc, and every selected field is a token in between.
        #[test]
        fn sealing_then_opening_restores_the_document(doc in json_doc(), picks in prop::collection::vec(any::<usize>(), 1..4)) {
            let ring = test_keyring();
            let paths = selectors_for(&doc, &picks);
            prop_assume!(!paths.is_empty());
            // `seal_null`: every selected node, `null` included, takes the round trip.
            let selectors: Vec<Selector> = paths.iter().map(|p| sealing_nulls(p)).collect();
            let mut sealed = doc.clone();
            let ops = apply_response(&mut sealed, &ResponseRules::new(selectors.clone(), vec![], vec![], OnNonJson::Fail), Some(&ring)).unwrap();
            let locations = transform::select_selectors(&selectors, &doc).unwrap();
            prop_assert_eq!(ops.len(), locations.len());
            for (_, loc) in &locations {
                let node = sealed.pointer(&loc.pointer).unwrap();
                prop_assert!(node.as_str().is_some_and(looks_like_token), "{} not sealed: {}", loc.path, node);
            }
            let mut opened = sealed.clone();
            apply_request(&mut opened, &RequestRules::new(selectors, true, None), &Openers::fs1(&ring)).unwrap();
            prop_assert_eq!(opened, doc);
        }

        /// The same round trip through the body functions, crossing engines both ways: the
        /// byte-level engine's tokens open on the `Value` engine and vice versa.
        #[test]
        fn body_engines_round_trip_each_other(doc in json_doc(), picks in prop::collection::vec(any::<usize>(), 1..4), pretty in any::<bool>()) {
            let ring = test_keyring();
            let paths = selectors_for(&doc, &picks);
            prop_assume!(!paths.is_empty());
            // `seal_null`: every selected node, `null` included, takes the round trip.
            let selectors: Vec<Selector> = paths.iter().map(|p| sealing_nulls(p)).collect();
            let text = if pretty { serde_json::to_vec_pretty(&doc).unwrap() } else { serde_json::to_vec(&doc).unwrap() };
            let mut wanted: Vec<String> = transform::select_selectors(&selectors, &doc).unwrap().into_iter().map(|(_, l)| l.path).collect();
            wanted.sort();
            let response = ResponseRules::new(selectors.clone(), vec![], vec![], OnNonJson::Fail);
            let request = RequestRules::new(selectors, true, None);
            prop_assert!(response.plan().is_some() && request.plan().is_some());
            for (response, request) in [(response.clone(), request.clone().without_plan()), (response.without_plan(), request)] {
                let mut ops = Vec::new();
                let sealed = rewrite_response_body(&text, &response, Some(&ring), &mut ops).unwrap().unwrap_or_else(|| text.clone());
                let mut got: Vec<String> = ops.iter().map(|o| o.path.clone()).collect();
                got.sort();
                prop_assert_eq!(&got, &wanted);
                let opened = rewrite_request_body(&sealed, &request, &Openers::fs1(&ring), &mut Vec::new()).unwrap().unwrap_or(sealed);
                prop_assert_eq!(serde_json::from_slice::<Value>(&opened).unwrap(), doc.clone());
            }
        }
    }

    /// A client key set with one X25519 key, and HPKE JWE values made for it.
    fn client_keys() -> ClientKeys {
        let key = crate::crypto::hpke::from_pem(
            &crate::crypto::hpke::generate(crate::crypto::hpke::KemKind::X25519).unwrap(),
        )
        .unwrap();
        ClientKeys::new(vec![], vec![key]).unwrap()
    }

    fn client_jwe(keys: &ClientKeys, plaintext: &[u8], extra: Value) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let key = &keys.hpke_keys()[0];
        let mut header = json!({"alg": "HPKE-X25519-A256GCM", "kid": key.kid()});
        header
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let header = b64.encode(header.to_string());
        let (enc, ct) = key
            .seal(
                crate::crypto::hpke::Suite::X25519Aes256Gcm,
                b"",
                header.as_bytes(),
                plaintext,
            )
            .unwrap();
        [
            header,
            b64.encode(enc),
            String::new(),
            b64.encode(ct),
            String::new(),
        ]
        .join(".")
    }

    #[test]
    fn client_values_open_on_both_engines_within_the_budget() {
        let keys = client_keys();
        let ring = test_keyring();
        // `$.items[?@.secret]` is not a simple path: the Value engine runs it.
        let simple = RequestRules::new(vec![sel("$.ssn"), sel("$.items[*]")], false, None);
        let filtered = RequestRules::new(vec![sel("$.ssn"), sel("$.items[?@]")], false, None);
        assert!(simple.plan().is_some() && filtered.plan().is_none());
        let openers = Openers {
            keyring: Some(&ring),
            client: Some(&keys),
            max_encrypted_values: 3,
            replay: None,
            subject: None,
        };
        let body = json!({
            "ssn": client_jwe(&keys, b"123-45-6789", json!({})),
            "items": [client_jwe(&keys, br#"{"a":1}"#, json!({"cty": "json"})), "plain"],
            "other": client_jwe(&keys, b"not at a decrypt path", json!({})),
        });
        for rules in [&simple, &filtered] {
            let mut ops = Vec::new();
            let out = rewrite_request_body(body.to_string().as_bytes(), rules, &openers, &mut ops)
                .unwrap()
                .unwrap();
            let out: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(out["ssn"], "123-45-6789");
            assert_eq!(out["items"], json!([{"a": 1}, "plain"]));
            assert_eq!(out["other"], body["other"], "only decrypt paths are opened");
            let decrypted: Vec<_> = ops
                .iter()
                .filter(|o| o.action == Action::Decrypted)
                .collect();
            assert_eq!(decrypted.len(), 2);
            assert!(decrypted
                .iter()
                .all(|o| o.kid.as_deref() == Some(keys.hpke_keys()[0].kid())));

            // A third and a fourth value: over the budget of 3, refused before the fourth is opened.
            let mut over = body.clone();
            over["items"] = json!([body["ssn"], body["ssn"], body["ssn"]]);
            let err = rewrite_request_body(
                over.to_string().as_bytes(),
                rules,
                &openers,
                &mut Vec::new(),
            )
            .unwrap_err();
            assert!(
                matches!(&err, BodyFailure::Field(f) if f.reason == "too_many_encrypted_values"),
                "{err:?}"
            );

            // Without client keys, a JWE is an unknown key (named), not plaintext passed on.
            let fs1_only = Openers::fs1(&ring);
            let err = rewrite_request_body(
                body.to_string().as_bytes(),
                rules,
                &fs1_only,
                &mut Vec::new(),
            )
            .unwrap_err();
            assert!(
                matches!(&err, BodyFailure::Field(f) if f.reason == "unknown_key" && f.kid.as_deref() == Some(keys.hpke_keys()[0].kid())),
                "{err:?}"
            );
        }
    }

    fn client_jwe_json(keys: &ClientKeys, plaintext: &[u8]) -> String {
        client_jwe(keys, plaintext, json!({"cty": "json"}))
    }

    /// `"ok"`, or the reason the request body was refused.
    fn outcome(body: &[u8], rules: &RequestRules, openers: &Openers<'_>) -> &'static str {
        match rewrite_request_body(body, rules, openers, &mut Vec::new()) {
            Ok(_) => "ok",
            Err(BodyFailure::Field(f)) => f.reason.as_str(),
            Err(e) => panic!("{e:?}"),
        }
    }

    /// Openers for client values only (no keyring), with a replay store at `now`.
    fn jwe_openers<'a>(
        keys: &'a ClientKeys,
        store: &'a dyn crate::replay::ReplayStore,
        now: u64,
    ) -> Openers<'a> {
        Openers {
            keyring: None,
            client: Some(keys),
            max_encrypted_values: 16,
            replay: replay_at(store, now),
            subject: None,
        }
    }

    fn replay_at(store: &dyn crate::replay::ReplayStore, now: u64) -> Option<Replay<'_>> {
        Some(Replay {
            store,
            window: std::time::Duration::from_secs(300),
            now,
            deferred: None,
        })
    }

    #[test]
    fn freshness_is_checked_after_opening_and_remembers_jtis() {
        let keys = client_keys();
        let store = crate::replay::MemoryReplayStore::new(1024);
        let now = 1_800_000_000u64;
        let openers = jwe_openers(&keys, &store, now);
        let rules = RequestRules::new(
            vec![sel("$.ssn")],
            false,
            Some(std::time::Duration::from_secs(300)),
        );
        let body = |extra: Value| json!({"ssn": client_jwe(&keys, b"x", extra)}).to_string();
        let reason = |b: &str| outcome(b.as_bytes(), &rules, &openers);
        let fresh = body(json!({"iat": now, "jti": "one"}));
        assert_eq!(reason(&fresh), "ok");
        assert_eq!(reason(&fresh), "replayed");
        assert_eq!(
            reason(&body(json!({"iat": now - 301, "jti": "two"}))),
            "stale"
        );
        assert_eq!(reason(&body(json!({"jti": "three"}))), "missing_iat");
        assert_eq!(reason(&body(json!({"iat": now}))), "missing_jti");
        // A value that does not open never reaches the store: its jti stays usable.
        let mut tampered = body(json!({"iat": now, "jti": "four"}));
        let at = tampered.len() - 6; // inside the ciphertext segment
        let flipped = if &tampered[at..=at] == "A" { "B" } else { "A" };
        tampered.replace_range(at..=at, flipped);
        assert_ne!(reason(&tampered), "ok");
        assert_eq!(reason(&body(json!({"iat": now, "jti": "four"}))), "ok");
        // No replay store (a dry run without one): a max_age route fails closed.
        let relaxed = Openers {
            replay: None,
            ..openers
        };
        let fresh5 = body(json!({"iat": now, "jti": "five"}));
        let err = rewrite_request_body(fresh5.as_bytes(), &rules, &relaxed, &mut Vec::new());
        assert!(
            matches!(&err, Err(BodyFailure::Field(f)) if f.reason == "replay_check_unavailable"),
            "{err:?}"
        );
    }

    /// Contract §3 of 1.1: a `jti` is global. A value used on a `max_age` route is refused on a
    /// route without one, under another field name, and the other way round; values without a
    /// `jti` still pass where no `max_age` demands one.
    #[test]
    fn replay_is_global_across_routes_and_fields() {
        let keys = client_keys();
        let store = crate::replay::MemoryReplayStore::new(1024);
        let now = 1_800_000_000u64;
        let openers = jwe_openers(&keys, &store, now);
        let strict = RequestRules::new(
            vec![sel("$.ssn")],
            false,
            Some(std::time::Duration::from_secs(60)),
        );
        let lax = RequestRules::new(vec![sel("$.nickname"), sel("$.ssn")], false, None);
        let reason = |rules: &RequestRules, body: String| outcome(body.as_bytes(), rules, &openers);
        let value = client_jwe(&keys, b"x", json!({"iat": now, "jti": "g1"}));
        assert_eq!(reason(&strict, json!({ "ssn": value }).to_string()), "ok");
        assert_eq!(
            reason(&lax, json!({ "nickname": value }).to_string()),
            "replayed"
        );
        let other = client_jwe(&keys, b"x", json!({"jti": "g2"}));
        assert_eq!(reason(&lax, json!({ "ssn": other }).to_string()), "ok");
        assert_eq!(
            reason(&lax, json!({ "ssn": other }).to_string()),
            "replayed"
        );
        let with_iat = client_jwe(&keys, b"x", json!({"iat": now, "jti": "g2"}));
        assert_eq!(
            reason(&strict, json!({ "ssn": with_iat }).to_string()),
            "replayed"
        );
        let unnamed = client_jwe(&keys, b"x", json!({}));
        for _ in 0..2 {
            assert_eq!(reason(&lax, json!({ "ssn": unnamed }).to_string()), "ok");
        }
        // The window outlives max_age: remembered for max(iat + max_age, now + window).
        let later = Openers {
            replay: replay_at(&store, now + 200),
            ..openers
        };
        let err = rewrite_request_body(
            json!({ "nickname": value }).to_string().as_bytes(),
            &lax,
            &later,
            &mut Vec::new(),
        );
        assert!(
            matches!(&err, Err(BodyFailure::Field(f)) if f.reason == "replayed"),
            "{err:?}"
        );
    }

    /// Contract §3 of 1.1: `fsc` binds a JWE to the field it was made for, on both engines.
    #[test]
    fn jwe_context_binding() {
        let keys = client_keys();
        let store = crate::replay::MemoryReplayStore::new(1024);
        let openers = jwe_openers(&keys, &store, 1_800_000_000);
        let simple = RequestRules::new(
            vec![
                sel("$.password"),
                Selector::compile("$.cards[*].number", Some("card".into())).unwrap(),
            ],
            false,
            None,
        );
        let required =
            RequestRules::new(vec![sel("$.password")], false, None).require_context(true);
        for rules in [simple.clone(), simple.clone().without_plan()] {
            let reason = |body: Value| outcome(body.to_string().as_bytes(), &rules, &openers);
            let for_password = client_jwe(&keys, b"pw", json!({"fsc": "password"}));
            assert_eq!(reason(json!({ "password": for_password })), "ok");
            let for_nickname = client_jwe(&keys, b"pw", json!({"fsc": "nickname"}));
            assert_eq!(
                reason(json!({ "password": for_nickname })),
                "context_mismatch"
            );
            // The explicit context is the field's, not the member name.
            let card = client_jwe(&keys, b"4111", json!({"fsc": "card"}));
            assert_eq!(reason(json!({"cards": [{ "number": card }]})), "ok");
            let by_member = client_jwe(&keys, b"4111", json!({"fsc": "number"}));
            assert_eq!(
                reason(json!({"cards": [{ "number": by_member }]})),
                "context_mismatch"
            );
            assert_eq!(
                reason(json!({ "password": client_jwe(&keys, b"pw", json!({})) })),
                "ok"
            );
        }
        for rules in [required.clone(), required.without_plan()] {
            let err = rewrite_request_body(
                json!({ "password": client_jwe(&keys, b"pw", json!({})) })
                    .to_string()
                    .as_bytes(),
                &rules,
                &openers,
                &mut Vec::new(),
            );
            assert!(
                matches!(&err, Err(BodyFailure::Field(f)) if f.reason == "missing_context"),
                "{err:?}"
            );
        }
    }

    /// Opened values must have a type the rule accepts (`type`), so a JWE cannot smuggle an
    /// object (`{"$ne": null}`) where a scalar is expected; without `type` any value opens
    /// (contract §3). Both engines.
    #[test]
    fn opened_types_are_checked() {
        let keys = client_keys();
        let ring = test_keyring();
        let openers = Openers {
            keyring: Some(&ring),
            client: Some(&keys),
            max_encrypted_values: 16,
            replay: None,
            subject: None,
        };
        let operator = client_jwe_json(&keys, br#"{"$ne":null}"#);
        let number = client_jwe_json(&keys, b"42");
        let mut numbers = sel("$.pin");
        numbers.accepts = Some(JsonTypes::parse(["number"]).unwrap());
        let mut anything = sel("$.pin");
        anything.accepts = Some(JsonTypes::parse(["any"]).unwrap());
        let sealed_object = token::seal(ring.primary(), "pin", &json!({"a": 1})).unwrap();
        let cases: [(Selector, &str, &str); 7] = [
            (sel("$.pin"), &operator, "ok"),
            (sel("$.pin"), &number, "ok"),
            (sel("$.pin"), &sealed_object, "ok"),
            (numbers.clone(), &operator, "unexpected_type"),
            (numbers.clone(), &number, "ok"),
            (numbers.clone(), &sealed_object, "unexpected_type"),
            (anything, &operator, "ok"),
        ];
        for (selector, value, expected) in cases {
            let rules = RequestRules::new(vec![selector], true, None);
            for rules in [rules.clone(), rules.without_plan()] {
                let got = outcome(
                    json!({ "pin": value }).to_string().as_bytes(),
                    &rules,
                    &openers,
                );
                assert_eq!(got, expected, "{value:.20}");
            }
        }
    }

    /// Contract §7: a selected `null` stays `null` both ways unless the rule says `seal_null`.
    #[test]
    fn nulls_are_left_alone_unless_asked() {
        let ring = test_keyring();
        let doc = json!({"ssn": null, "card": null});
        let mut sealing = sel("$.card");
        sealing.seal_null = true;
        let rules =
            ResponseRules::new(vec![sel("$.ssn"), sealing], vec![], vec![], OnNonJson::Fail);
        for rules in [rules.clone(), rules.without_plan()] {
            let mut ops = Vec::new();
            let out =
                rewrite_response_body(doc.to_string().as_bytes(), &rules, Some(&ring), &mut ops)
                    .unwrap()
                    .unwrap();
            let out: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(out["ssn"], Value::Null);
            let card = out["card"].as_str().unwrap();
            assert_eq!(token::open(&ring, "card", card).unwrap(), Value::Null);
            assert_eq!(ops.len(), 1);
        }
        let only_null = ResponseRules::new(vec![sel("$.ssn")], vec![], vec![], OnNonJson::Fail);
        for rules in [only_null.clone(), only_null.without_plan()] {
            let out =
                rewrite_response_body(br#"{"ssn":null}"#, &rules, Some(&ring), &mut Vec::new());
            assert_eq!(out, Ok(None), "nothing selected to seal");
        }
        // Requests: null passes under require_encrypted; with seal_null it is plaintext.
        let mut strict_null = sel("$.card");
        strict_null.seal_null = true;
        let request = RequestRules::new(vec![sel("$.ssn"), strict_null], true, None);
        for rules in [request.clone(), request.without_plan()] {
            let ok = rewrite_request_body(
                br#"{"ssn":null}"#,
                &rules,
                &Openers::fs1(&ring),
                &mut Vec::new(),
            );
            assert_eq!(ok, Ok(None));
            let err = rewrite_request_body(
                br#"{"card":null}"#,
                &rules,
                &Openers::fs1(&ring),
                &mut Vec::new(),
            );
            assert!(
                matches!(&err, Err(BodyFailure::Field(f)) if f.reason == "plaintext_not_allowed"),
                "{err:?}"
            );
        }
    }

    fn policy(entries: &[(&str, Operation)]) -> Vec<crate::config::settings::ResponseRule> {
        entries
            .iter()
            .map(|(path, op)| crate::config::settings::ResponseRule {
                selector: sel(path),
                op: *op,
                source: crate::config::settings::RuleSource::Policy,
            })
            .collect()
    }

    /// Contract §8: the policy applies everywhere, but a node a route rule selects is handled
    /// by the route rule alone — on both engines.
    #[test]
    fn route_rules_win_over_the_field_policy_on_the_nodes_they_select() {
        let ring = test_keyring();
        let own = ResponseRules::new(
            vec![],
            vec![],
            vec![MaskRule {
                selector: sel("$.user.email"),
                keep_last: 4,
            }],
            OnNonJson::Fail,
        );
        let table = policy(&[
            ("$..email", Operation::Seal),
            ("$..notes", Operation::Redact),
        ]);
        let table = crate::config::settings::FieldPolicy {
            response: table,
            ..Default::default()
        };
        let merged = ResponseRules::with_policy(Some(&own), &table);
        // The route's own on_non_json stays; the policy alone passes non-JSON bodies.
        assert_eq!(merged.on_non_json, OnNonJson::Fail);
        assert_eq!(
            ResponseRules::with_policy(None, &table).on_non_json,
            OnNonJson::Pass
        );
        assert!(
            merged.plan().is_some(),
            "descendant names stay on the splice engine"
        );
        let doc = json!({
            "user": {"email": "ada@example.com", "notes": "vip"},
            "author": {"email": "bob@example.com"},
            "comments": [{"by": {"email": "cy@example.com"}}]
        });
        for rules in [merged.clone(), merged.without_plan()] {
            let mut ops = Vec::new();
            let out =
                rewrite_response_body(doc.to_string().as_bytes(), &rules, Some(&ring), &mut ops)
                    .unwrap()
                    .unwrap();
            let out: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(
                out["user"]["email"],
                json!("***********.com"),
                "the route's mask, alone"
            );
            for (at, plain) in [
                (&out["author"]["email"], "bob@example.com"),
                (&out["comments"][0]["by"]["email"], "cy@example.com"),
            ] {
                assert_eq!(
                    token::open(&ring, "email", at.as_str().unwrap()).unwrap(),
                    json!(plain)
                );
            }
            assert_eq!(out["user"]["notes"], Value::Null);
            let mut actions: Vec<(&str, &str)> = ops
                .iter()
                .map(|o| (o.path.as_str(), o.action.as_str()))
                .collect();
            actions.sort();
            assert_eq!(
                actions,
                vec![
                    ("$['author']['email']", "sealed"),
                    ("$['comments'][0]['by']['email']", "sealed"),
                    ("$['user']['email']", "masked"),
                    ("$['user']['notes']", "redacted"),
                ]
            );
            // Each op names the selector that picked it (for the match counter).
            let masked = ops.iter().find(|o| o.action == Action::Masked).unwrap();
            assert_eq!(masked.selector.as_deref(), Some("$.user.email"));
        }
    }

    /// The policy's `encrypt` selectors open tokens in requests, after the route's own; the
    /// route's `require_encrypted` covers them.
    #[test]
    fn policy_selectors_open_tokens_in_requests() {
        let ring = test_keyring();
        let sealed = token::seal(ring.primary(), "email", &json!("ada@example.com")).unwrap();
        let body = json!({"profile": {"email": sealed}, "ssn": "plain"}).to_string();
        let policy = crate::config::settings::FieldPolicy {
            decrypt: vec![sel("$..email")],
            ..Default::default()
        };
        let alone = RequestRules::with_policy(None, &policy);
        assert!(!alone.has_own());
        let strict = RequestRules::with_policy(
            Some(&RequestRules::new(vec![sel("$.ssn")], true, None)),
            &policy,
        );
        assert!(strict.has_own());
        for rules in [alone.clone(), alone.without_plan()] {
            let mut ops = Vec::new();
            let out = rewrite_request_body(body.as_bytes(), &rules, &Openers::fs1(&ring), &mut ops)
                .unwrap()
                .unwrap();
            let out: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(out["profile"]["email"], json!("ada@example.com"));
            assert_eq!(ops.len(), 1);
        }
        for rules in [strict.clone(), strict.without_plan()] {
            let err = rewrite_request_body(
                body.as_bytes(),
                &rules,
                &Openers::fs1(&ring),
                &mut Vec::new(),
            );
            assert!(
                matches!(&err, Err(BodyFailure::Field(f)) if f.reason == "plaintext_not_allowed" && f.path == "$['ssn']"),
                "{err:?}"
            );
        }
    }

    /// The two operations added after the engine was made one (issue 15): each is a variant
    /// of `Operation`, an arm of `operate`, and its spelling; both engines run them alike.
    #[test]
    fn mask_email_and_year_run_on_both_engines() {
        let own = ResponseRules::ordered(
            vec![
                crate::config::settings::ResponseRule {
                    selector: sel("$..email"),
                    op: Operation::MaskEmail,
                    source: crate::config::settings::RuleSource::Route,
                },
                crate::config::settings::ResponseRule {
                    selector: sel("$..dob"),
                    op: Operation::Year,
                    source: crate::config::settings::RuleSource::Route,
                },
            ],
            OnNonJson::Fail,
        );
        assert!(own.plan().is_some());
        let body = br#"{"users":[{"email":"ada@example.com","dob":"1815-12-10"},{"email":"x","dob":"unknown"}]}"#;
        for rules in [own.clone(), own.without_plan()] {
            let mut ops = Vec::new();
            let out = rewrite_response_body(body, &rules, None, &mut ops)
                .unwrap()
                .unwrap();
            let out: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(
                out,
                json!({"users":[{"email":"a**@example.com","dob":"1815"},{"email":"*","dob":null}]})
            );
            assert_eq!(ops.len(), 4);
            assert!(ops.iter().all(|o| o.action == Action::Masked));
        }
    }
}

#[cfg(test)]
mod view_tests {
    use super::*;
    use crate::config::raw::OnNonJson;
    use crate::config::settings::{ResponseRule, RuleSource};
    use crate::crypto::keyring::tests::test_keyring;
    use crate::transform::selector::Selector;
    use crate::transform::view::{Condition, Seen, View, ViewMark};
    use serde_json::json;

    /// `$.bio` redacted unless the caller owns the record (plain) or is support (masked);
    /// `$.ssn` sealed for everyone.
    fn rules(plan: bool) -> ResponseRules {
        let mut bio = Selector::compile("$.bio", None).unwrap();
        bio.views = vec![
            View {
                when: Condition {
                    subject_param: Some("id".into()),
                    ..Default::default()
                },
                show: None,
            },
            View {
                when: Condition {
                    claims: vec![("role".into(), json!("support"))],
                    ..Default::default()
                },
                show: Some(Operation::Mask { keep_last: 3 }),
            },
        ]
        .into();
        let table = vec![
            ResponseRule::new(bio, Operation::Redact, RuleSource::Route),
            ResponseRule::new(
                Selector::compile("$.ssn", None).unwrap(),
                Operation::Seal,
                RuleSource::Route,
            ),
        ];
        let r = ResponseRules::ordered(table, OnNonJson::Fail);
        assert!(r.has_views());
        if plan {
            r
        } else {
            r.without_plan()
        }
    }

    #[test]
    fn views_choose_per_caller_on_both_engines() {
        let ring = test_keyring();
        let body = br#"{"id":"42","bio":"likes tea","ssn":"078-05-1120"}"#;
        let owner_claims = json!({"role": "user"}).as_object().unwrap().clone();
        let support_claims = json!({"role": "support"}).as_object().unwrap().clone();
        let id42 = |n: &str| (n == "id").then(|| "42".to_string());
        let cases: [(Option<Seen<'_>>, serde_json::Value, ViewMark); 3] = [
            (
                Some(Seen {
                    subject: "42",
                    claims: &owner_claims,
                }),
                json!("likes tea"),
                ViewMark::View(0),
            ),
            (
                Some(Seen {
                    subject: "7",
                    claims: &support_claims,
                }),
                json!("******tea"),
                ViewMark::View(1),
            ),
            (None, json!(null), ViewMark::Default),
        ];
        for plan in [true, false] {
            let rules = rules(plan);
            for (caller, bio, mark) in &cases {
                let sight = rules.sight(*caller, &id42);
                let mut ops = Vec::new();
                let out = rewrite_response_body_as(body, &rules, Some(&ring), &sight, &mut ops)
                    .unwrap()
                    .expect("the ssn is always sealed");
                let doc: Value = serde_json::from_slice(&out).unwrap();
                assert_eq!(&doc["bio"], bio, "plan {plan}, {mark:?}");
                assert!(doc["ssn"].as_str().unwrap().starts_with("fs1."));
                let bio_op = ops.iter().find(|o| o.path == "$['bio']").unwrap();
                assert_eq!(bio_op.view, Some(*mark));
                let ssn_op = ops.iter().find(|o| o.path == "$['ssn']").unwrap();
                assert_eq!((ssn_op.action, ssn_op.view), (Action::Sealed, None));
                if *mark == ViewMark::View(0) {
                    assert_eq!(bio_op.action, Action::Shown);
                    // Shown fields keep the app's bytes on the byte engine.
                    if plan {
                        assert!(out.starts_with(br#"{"id":"42","bio":"likes tea","ssn":"fs1."#));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;
    use crate::crypto::keyring::tests::test_keyring;
    use crate::transform::selector::Selector;

    /// A route whose subject is a member seals each record's values for that record's own
    /// member, read before any rule changes the document; a record without one withholds
    /// the answer; and the byte engine is never used for it (it cannot see the records).
    #[test]
    fn member_subjects_seal_each_record_for_itself() {
        use crate::transform::subject::DataSubject;
        let ring = test_keyring();
        let mut ssn = Selector::compile("$[*].ssn", None).unwrap();
        ssn.tokens.per_subject = true;
        // `id` is sealed too, and sorts first: the subjects must be read before it changes.
        let id = Selector::compile("$[*].id", None).unwrap();
        let rules = ResponseRules::new(
            vec![id, ssn],
            vec![],
            vec![],
            crate::config::raw::OnNonJson::Fail,
        );
        assert!(
            rules.plan().is_some(),
            "simple selectors: the byte engine would apply"
        );
        let sight = Sight::default().with_subject(DataSubject::Member("id".into()));
        let body = br#"[{"id":42,"ssn":"a"},{"id":"u-7","ssn":"b"}]"#;
        let mut ops = Vec::new();
        let out = rewrite_response_body_as(body, &rules, Some(&ring), &sight, &mut ops)
            .unwrap()
            .unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        for (i, (owner, plain)) in [("42", "a"), ("u-7", "b")].into_iter().enumerate() {
            let token_text = doc[i]["ssn"].as_str().unwrap();
            assert!(token_text.starts_with(token::SUBJECT_PREFIX));
            let opened = token::open_json_for_subject(&ring, "ssn", token_text, Some(owner));
            assert_eq!(*opened.unwrap(), format!("\"{plain}\"").into_bytes());
            let other = if owner == "42" { "u-7" } else { "42" };
            assert!(token::open_json_for_subject(&ring, "ssn", token_text, Some(other)).is_err());
            assert!(doc[i]["id"].as_str().unwrap().starts_with("fs1."));
        }
        assert_eq!(
            ops.iter()
                .filter(|o| o.action == Action::SealedForSubject)
                .count(),
            2
        );
        // A record without the member: the answer is withheld, naming the field.
        let orphan = br#"[{"id":42,"ssn":"a"},{"ssn":"b"}]"#;
        let err = rewrite_response_body_as(orphan, &rules, Some(&ring), &sight, &mut Vec::new())
            .unwrap_err();
        match err {
            BodyFailure::Field(f) => {
                assert_eq!(f.reason, Reason::NoSubject);
                assert_eq!(f.path, "$[1]['ssn']");
            }
            other => panic!("{other:?}"),
        }
        // The request direction never takes a member as its subject.
        assert_eq!(sight.subject().of_request(), None);
    }

    /// Every token format opens at a decrypt path on both engines, is reported by its own
    /// action, and the app gets the plaintext (the body is rewritten, never forwarded as sent).
    #[test]
    fn every_format_opens_on_both_engines() {
        let ring = test_keyring();
        let k1 = ring.primary();
        let json = br#""123""#;
        let far = token::unix_now() + 3600;
        let cases = [
            (token::seal_json(k1, "cvv", json).unwrap(), Action::Opened),
            (
                token::seal_json_as(k1, token::Format::Expiring { expires_at: far }, "cvv", json)
                    .unwrap(),
                Action::OpenedExpiring,
            ),
            (
                token::seal_searchable(k1, "cvv", json),
                Action::OpenedSearchable,
            ),
            (
                token::seal_for_subject(&ring, "42", "cvv", json).unwrap(),
                Action::OpenedForSubject,
            ),
        ];
        for plan in [true, false] {
            let rules =
                RequestRules::new(vec![Selector::compile("$.cvv", None).unwrap()], true, None);
            let rules = if plan { rules } else { rules.without_plan() };
            let openers = Openers {
                subject: Some("42"),
                ..Openers::fs1(&ring)
            };
            for (token_text, action) in &cases {
                let body = format!(r#"{{"cvv":"{token_text}"}}"#);
                let mut ops = Vec::new();
                let out = rewrite_request_body(body.as_bytes(), &rules, &openers, &mut ops)
                    .unwrap()
                    .expect("an opened value rewrites the body");
                assert_eq!(
                    serde_json::from_slice::<Value>(&out).unwrap(),
                    serde_json::json!({"cvv": "123"}),
                    "plan {plan}, {action:?}"
                );
                assert_eq!(ops[0].action, *action);
            }
        }
    }
}
