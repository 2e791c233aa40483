//! `fieldseal rewrap`: re-seal stored tokens under the keyring's primary key.
//!
//! Responses always seal with the primary, so tokens a client holds are renewed on its next
//! read (lazy rewrap in flight). Tokens stored elsewhere — databases, files, queues — are
//! renewed here: JSON documents (JSON lines, or one document, pretty or not) are read from
//! stdin and written to stdout, one compact document per line, with every fs1 token opened
//! with the keyring and sealed again with the primary. The context of each token is resolved
//! as the proxy resolves it: the member rule (contract §1), or, with `--config F --route NAME`,
//! the explicit `context` of the route's selector that selects the token's node.
//!
//! The documents are rewritten at the byte level, not through a `serde_json::Value`: outside
//! the tokens, the output is the input without its insignificant whitespace. Member order,
//! duplicate members, number spelling and precision (`1.50e3`, integers beyond 64 bits) and
//! string escapes all survive, which a parse/serialise round trip would not guarantee — stored
//! data must come back exactly as it went in. serde_json validates each document first
//! (memory is bounded by the largest document); a single pass over its text then tracks the
//! route to each string value.
//!
//! Nothing prints a value or a token: errors name the document number, the field's normalized
//! path, the reason and the key id.

use crate::cli::exit;
use crate::reason::Reason;
use crate::transform::path::{self, Step};
use crate::transform::Location;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::settings::SubjectSource;
use crate::crypto::token::{self, looks_like_token};
use crate::crypto::Keyring;
use crate::secret_file::Exposure;
use crate::transform;
use crate::transform::selector::Selector;
use crate::transform::subject::DataSubject;

#[derive(Debug, clap::Args)]
pub struct RewrapArgs {
    /// The keyring (its primary seals; every key that is not disabled opens).
    #[arg(long)]
    pub keyring: PathBuf,
    /// A configuration whose route's explicit contexts apply (with `--route`).
    #[arg(long, requires = "route")]
    pub config: Option<PathBuf>,
    /// The route whose selectors' contexts apply.
    #[arg(long, requires = "config")]
    pub route: Option<String>,
    /// Re-seal tokens already under the primary too (fresh nonces); by default they are
    /// checked and left as they are.
    #[arg(long)]
    pub all: bool,
    /// Every subject-bound (`fsb1`) token in the input belongs to this data subject (a dump
    /// of one person's records).
    #[arg(long, conflicts_with = "subject_member")]
    pub subject: Option<String>,
    /// Each subject-bound token belongs to this member of the record holding it, as a
    /// route's `subject: "member:NAME"` reads it (docs/tokens.md). Implied by `--route` when
    /// the route names its subject that way.
    #[arg(long, value_name = "NAME")]
    pub subject_member: Option<String>,
}

pub fn run(args: RewrapArgs) -> ExitCode {
    let keyring = match load_keyring(&args.keyring) {
        Ok(k) => k,
        Err(code) => return code,
    };
    let mut contexts = match (&args.config, &args.route) {
        (Some(config), Some(route)) => match RouteContexts::load(config, route) {
            Ok(c) => c,
            Err(code) => return code,
        },
        _ => RouteContexts::default(),
    };
    if let Some(subject) = args.subject {
        contexts.subject = DataSubject::Known(subject);
    } else if let Some(member) = args.subject_member {
        contexts.subject = DataSubject::Member(member.into());
    }
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut summary = Summary::default();
    let result = rewrap_stream(
        BufReader::with_capacity(64 * 1024, stdin.lock()),
        &mut out,
        &keyring,
        &contexts,
        args.all,
        &mut summary,
    );
    // What was written before a failure must reach stdout: those documents are done.
    let flushed = out.flush();
    let primary = &keyring.primary().id;
    match (result, flushed) {
        (Ok(()), Ok(())) => {
            eprintln!("{}", summary.describe(primary));
            ExitCode::SUCCESS
        }
        (Ok(()), Err(e)) => {
            eprintln!("error: {}", StreamError::Write(e));
            ExitCode::from(exit::FAILED)
        }
        (Err(e), flushed) => {
            eprintln!("error: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("note: {hint}");
            }
            let written = flushed.is_ok() && !matches!(e, StreamError::Write(_));
            if written && summary.documents > 0 {
                eprintln!(
                    "note: the documents before it were written: {}",
                    summary.describe(primary)
                );
            }
            ExitCode::from(exit::FAILED)
        }
    }
}

/// Loads the keyring as `seal`/`open` do: unusable → exit 64, group-readable → a warning.
fn load_keyring(path: &Path) -> Result<Keyring, ExitCode> {
    match Keyring::load(path, &crate::crypto::KekSource::from_env()) {
        Ok((ring, exposure)) => {
            if exposure == Exposure::GroupReadable {
                eprintln!("warning: {} is readable by its group", path.display());
            }
            Ok(ring)
        }
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            Err(ExitCode::from(exit::STARTUP))
        }
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

// ---------------------------------------------------------------------------------------
// Contexts

/// The selectors of one route whose explicit contexts apply, in the proxy's priority order:
/// `response.encrypt` (which sealed the tokens) first, then `request.decrypt`.
#[derive(Debug, Default)]
pub(crate) struct RouteContexts {
    groups: Vec<Vec<Selector>>,
    /// Whose subject-bound tokens the documents hold: `--subject`, `--subject-member`, or
    /// the route's `subject: "member:…"`. Unknown: they are left as they are, and counted.
    pub subject: DataSubject,
}

/// JSON Pointer of a selected node → the context the proxy binds there.
pub(crate) type Overrides = HashMap<String, String>;

impl RouteContexts {
    /// Loads `config` and takes route `name`'s selectors; failures print and exit 64.
    fn load(config: &Path, name: &str) -> Result<Self, ExitCode> {
        let settings = match crate::config::load(config) {
            Ok(s) => s,
            Err(errors) => {
                for p in &errors.0 {
                    eprintln!("error: {p}");
                }
                eprintln!("{} problem(s) in {}", errors.0.len(), config.display());
                return Err(ExitCode::from(exit::STARTUP));
            }
        };
        let Some(route) = settings.routes.iter().find(|r| &*r.name == name) else {
            let names: Vec<&str> = settings.routes.iter().map(|r| &*r.name).collect();
            eprintln!(
                "error: {}: no route named `{name}` (routes: {})",
                config.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            );
            return Err(ExitCode::from(exit::STARTUP));
        };
        let contexts = Self::from_route(&route.rules);
        if !contexts.has_explicit() {
            eprintln!(
                "note: route `{name}` sets no explicit `context`; the member rule applies to every token"
            );
        }
        Ok(contexts)
    }

    pub(crate) fn from_route(rules: &crate::config::RouteRules) -> Self {
        let mut groups = Vec::new();
        if let Some(r) = &rules.response {
            groups.push(r.sealing().cloned().collect());
        }
        if let Some(r) = &rules.request {
            groups.push(r.decrypt.clone());
        }
        // A path parameter or a claim is not in the documents: `--subject` says it.
        let subject = match &rules.subject {
            Some(SubjectSource::Member(name)) => DataSubject::Member(name.clone()),
            _ => DataSubject::Unknown,
        };
        Self { groups, subject }
    }

    /// Whether any selector names a context; if none does, the member rule applies
    /// everywhere and documents need no selection.
    pub(crate) fn has_explicit(&self) -> bool {
        self.groups.iter().flatten().any(|s| s.context.is_some())
    }

    /// The context of every node the route's selectors pick in `doc`. Within a group the
    /// proxy's selection rules apply (the first selector wins, outermost wins); a node already
    /// claimed by `response.encrypt` keeps that context.
    pub(crate) fn overrides(&self, doc: &Value) -> Result<Overrides, transform::SelectError> {
        let mut map = Overrides::new();
        for group in &self.groups {
            for (index, location) in transform::select_selectors(group, doc)? {
                let context = transform::context(&group[index], &location).to_string();
                map.entry(location.pointer).or_insert(context);
            }
        }
        Ok(map)
    }
}

// ---------------------------------------------------------------------------------------
// The stream

/// Counts for the summary line; never values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Tokens re-sealed, by the key that had sealed them.
    pub rewrapped: BTreeMap<String, u64>,
    /// Tokens already under the primary, checked and left as they were.
    pub current: u64,
    /// Expiring tokens past their expiry: they open nowhere, so they are left as they are
    /// (retiring their key changes nothing for them).
    pub expired: u64,
    /// Subject-bound tokens (`fsb1`) whose subject was not given (`--subject`,
    /// `--subject-member`, or a route whose subject is a member): left as they are.
    pub subject_bound: u64,
    /// Subject-bound tokens of erased subjects (`keys shred`): they open nowhere; left as
    /// they are.
    pub erased: u64,
}

impl Stats {
    pub(crate) fn rewrapped_total(&self) -> u64 {
        self.rewrapped.values().sum()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// Documents written.
    pub documents: u64,
    pub stats: Stats,
}

impl Summary {
    /// `rewrapped 8 tokens in 2 documents (k1: 3, k2: 5 → primary k3); 1 already current`
    pub(crate) fn describe(&self, primary: &str) -> String {
        let by_key: Vec<String> = self
            .stats
            .rewrapped
            .iter()
            .map(|(kid, n)| format!("{kid}: {n}"))
            .collect();
        let from = if by_key.is_empty() {
            String::new()
        } else {
            format!("{} ", by_key.join(", "))
        };
        let mut expired = match self.stats.expired {
            0 => String::new(),
            n => format!("; {n} expired, left as they are"),
        };
        if self.stats.subject_bound > 0 {
            expired.push_str(&format!(
                "; {} subject-bound with no subject given (--subject, --subject-member), left as they are",
                self.stats.subject_bound
            ));
        }
        if self.stats.erased > 0 {
            expired.push_str(&format!(
                "; {} of erased subjects, left as they are",
                self.stats.erased
            ));
        }
        format!(
            "rewrapped {} in {} ({from}→ primary {primary}); {} already current{expired}",
            plural(self.stats.rewrapped_total(), "token"),
            plural(self.documents, "document"),
            self.stats.current
        )
    }
}

#[derive(Debug)]
pub(crate) enum StreamError {
    /// A token did not open (or the OS random source failed sealing it).
    Token {
        document: u64,
        failure: Failure,
    },
    /// Document `document` is not JSON (serde_json's message: what and where, no value).
    NotJson {
        document: u64,
        error: serde_json::Error,
    },
    /// The route's selectors could not be evaluated on a document.
    Select {
        document: u64,
        why: String,
    },
    Read(serde_json::Error),
    Write(std::io::Error),
}

impl StreamError {
    fn hint(&self) -> Option<&'static str> {
        match self {
            StreamError::Token { failure, .. }
                if failure.reason == Reason::AuthenticationFailed =>
            {
                Some(
                    "the token was tampered with, sealed under another secret, sealed for \
                     another context (if the route sets an explicit `context`, pass \
                     `--config F --route NAME`), or sealed for another subject than the one \
                     given (`--subject`, `--subject-member`)",
                )
            }
            StreamError::Token { failure, .. } if failure.reason == Reason::UnknownKey => {
                Some("that key is not in this keyring (retired too early?)")
            }
            StreamError::Token { failure, .. } if failure.reason == Reason::KeyDisabled => {
                Some("that key is disabled; set it to decrypt_only to rewrap its tokens")
            }
            _ => None,
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Token { document, failure } => {
                write!(f, "document {document}, {failure}")
            }
            StreamError::NotJson { document, error } => {
                write!(f, "document {document} is not JSON: {error}")
            }
            StreamError::Select { document, why } => write!(
                f,
                "document {document}: the route's selectors cannot be evaluated on it ({why})"
            ),
            StreamError::Read(e) => write!(f, "cannot read stdin: {e}"),
            StreamError::Write(e) => write!(f, "cannot write stdout: {e}"),
        }
    }
}

impl std::error::Error for StreamError {}

/// Reads JSON documents from `input` and writes each, compact and rewrapped, on its own line
/// to `output`. Stops at the first failure; `summary` then counts what was written before it.
pub(crate) fn rewrap_stream<R: Read, W: Write>(
    input: R,
    output: &mut W,
    keyring: &Keyring,
    contexts: &RouteContexts,
    all: bool,
    summary: &mut Summary,
) -> Result<(), StreamError> {
    let use_route = contexts.has_explicit();
    let per_value = contexts.subject.per_value();
    let no_overrides = Overrides::new();
    let mut out = Vec::new();
    for doc in serde_json::Deserializer::from_reader(input).into_iter::<Box<RawValue>>() {
        let document = summary.documents + 1;
        let doc = doc.map_err(|error| match error.classify() {
            serde_json::error::Category::Io => StreamError::Read(error),
            _ => StreamError::NotJson { document, error },
        })?;
        // Selection and per-record subjects need a tree; it is built only when the route
        // names contexts or subjects are members. Its limits are the proxy's: 127 levels of
        // nesting, numbers within f64's range.
        let tree: Option<Value> = if use_route || per_value {
            Some(
                serde_json::from_str(doc.get()).map_err(|e| StreamError::Select {
                    document,
                    why: e.to_string(),
                })?,
            )
        } else {
            None
        };
        let overrides = match &tree {
            Some(tree) if use_route => {
                Cow::Owned(contexts.overrides(tree).map_err(|_| StreamError::Select {
                    document,
                    why: "JSONPath evaluation failed".into(),
                })?)
            }
            _ => Cow::Borrowed(&no_overrides),
        };
        let bindings = Bindings {
            overrides: &overrides,
            subject: &contexts.subject,
            tree: tree.as_ref(),
        };
        out.clear();
        let mut stats = Stats::default();
        rewrap_document(&doc, keyring, &bindings, all, &mut stats, &mut out)
            .map_err(|failure| StreamError::Token { document, failure })?;
        out.push(b'\n');
        output.write_all(&out).map_err(StreamError::Write)?;
        summary.documents += 1;
        for (kid, n) in stats.rewrapped {
            *summary.stats.rewrapped.entry(kid).or_default() += n;
        }
        summary.stats.current += stats.current;
        summary.stats.expired += stats.expired;
        summary.stats.subject_bound += stats.subject_bound;
        summary.stats.erased += stats.erased;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// One document

/// A token that did not open. Names the field, the reason and the key; never the value or
/// the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// RFC 9535 Normalized Path of the field.
    pub path: String,
    /// [`token::OpenError::reason`], or [`Reason::RandomSourceFailed`].
    pub reason: Reason,
    /// The key id the token names.
    pub kid: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "field {}: {} (key `{}`)",
            self.path, self.reason, self.kid
        )
    }
}

impl std::error::Error for Failure {}

/// What binds one document's tokens besides their key: each one's context and, for
/// subject-bound tokens, its subject.
pub(crate) struct Bindings<'a> {
    /// JSON Pointers of selected nodes → explicit contexts; elsewhere the member rule.
    pub overrides: &'a Overrides,
    /// Whose subject-bound tokens these are.
    pub subject: &'a DataSubject,
    /// The parsed document, where the subject is a member of each record.
    pub tree: Option<&'a Value>,
}

impl Bindings<'_> {
    fn subject_at(&self, pointer: &str) -> Option<Cow<'_, str>> {
        match (self.subject, self.tree) {
            (DataSubject::Member(_), Some(tree)) => self.subject.at(tree, pointer),
            (DataSubject::Member(_), None) => None,
            (subject, _) => subject.of_request().map(Cow::Borrowed),
        }
    }
}

/// Appends `doc` to `out`, compact (insignificant whitespace dropped, everything else byte for
/// byte), with every token re-sealed under the primary in its own format — except tokens
/// already under the primary, which are opened (checked) and kept unless `all`, expired
/// tokens, and subject-bound tokens whose subject `bindings` does not say or that were erased
/// (left as they are, and counted). On failure `out` holds a partial document and must be
/// discarded.
pub(crate) fn rewrap_document(
    doc: &RawValue,
    keyring: &Keyring,
    bindings: &Bindings<'_>,
    all: bool,
    stats: &mut Stats,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    let primary = keyring.primary();
    walk(doc, out, |site, value| {
        let kid = token::token_kid(value).unwrap_or_default();
        let location = site.location();
        let context = bindings
            .overrides
            .get(&location.pointer)
            .map_or(location.member.as_str(), String::as_str);
        let failure = |reason| Failure {
            path: location.path.clone(),
            reason,
            kid: kid.to_string(),
        };
        let subject = bindings.subject_at(&location.pointer);
        let plaintext =
            match token::open_json_for_subject(keyring, context, value, subject.as_deref()) {
                Ok(p) => p,
                Err(token::OpenError::Expired) => {
                    stats.expired += 1;
                    return Ok(None);
                }
                Err(token::OpenError::NoSubject) => {
                    stats.subject_bound += 1;
                    return Ok(None);
                }
                Err(token::OpenError::SubjectErased) => {
                    stats.erased += 1;
                    return Ok(None);
                }
                Err(e) => return Err(failure(e.reason())),
            };
        if kid == primary.id && !all {
            stats.current += 1;
            return Ok(None);
        }
        // An expiring token keeps its expiry: re-sealing must not extend it. A subject-bound
        // token stays bound to its subject.
        let format = token::format_of(value).unwrap_or(token::Format::Fs1);
        let sealed = match (format, subject.as_deref()) {
            (token::Format::SubjectBound, Some(subject)) => {
                token::seal_for_subject(keyring, subject, context, &plaintext).map_err(failure)?
            }
            _ => token::seal_json_as(primary, format, context, &plaintext)
                .map_err(|_| failure(Reason::RandomSourceFailed))?,
        };
        *stats.rewrapped.entry(kid.to_string()).or_default() += 1;
        Ok(Some(sealed))
    })
}

/// An open container on the way to the current value.
enum Frame {
    /// The byte range of the current member name's literal (quotes included), and whether
    /// the next string is a member name.
    Object {
        key: (usize, usize),
        expect_key: bool,
    },
    /// The current element's index.
    Array { index: usize },
}

/// Where a string value sits: the containers around it. Spellings are built on demand (only
/// for tokens).
pub(crate) struct Site<'a> {
    text: &'a str,
    stack: &'a [Frame],
}

impl Site<'_> {
    fn key(&self, (start, end): (usize, usize)) -> Cow<'_, str> {
        decode(&self.text[start..end])
    }

    /// Where the value is, spelled by the field engine's own [`path::locate`]: the member
    /// rule (contract §1), the Normalized Path and the JSON Pointer have one definition, in
    /// `transform`, for the proxy and this tool alike.
    pub(crate) fn location(&self) -> Location {
        let steps: Vec<Step> = self
            .stack
            .iter()
            .map(|frame| match frame {
                Frame::Object { key, .. } => Step::Key(self.key(*key).into_owned()),
                Frame::Array { index } => Step::Index(*index),
            })
            .collect();
        path::locate(&steps)
    }
}

/// The value of a JSON string literal (quotes included) from a validated document.
fn decode(literal: &str) -> Cow<'_, str> {
    let inner = &literal[1..literal.len() - 1];
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    Cow::Owned(serde_json::from_str(literal).expect("serde_json validated this string literal"))
}

/// Index of the closing quote of the string literal opening at `start`.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i,
            _ => i += 1,
        }
    }
    bytes.len() - 1
}

/// Copies `doc` to `out` without insignificant whitespace, calling `on_token` for each string
/// value that looks like an fs1 token; when it returns a new token, that replaces the string.
///
/// `doc` has been validated by serde_json, so a single pass over its bytes that tracks the
/// containers suffices. Structural characters are ASCII and never occur inside a multi-byte
/// UTF-8 sequence; strings are copied as written (escapes kept) unless replaced. The walk is
/// iterative: nesting costs one small frame per level, however deep.
pub(crate) fn walk<E>(
    doc: &RawValue,
    out: &mut Vec<u8>,
    mut on_token: impl FnMut(&Site<'_>, &str) -> Result<Option<String>, E>,
) -> Result<(), E> {
    let text = doc.get();
    let bytes = text.as_bytes();
    let mut stack: Vec<Frame> = Vec::new();
    out.reserve(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'{' => stack.push(Frame::Object {
                key: (0, 0),
                expect_key: true,
            }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array { index }) => *index += 1,
                Some(Frame::Object { expect_key, .. }) => *expect_key = true,
                None => {}
            },
            b':' => {
                if let Some(Frame::Object { expect_key, .. }) = stack.last_mut() {
                    *expect_key = false;
                }
            }
            b'"' => {
                let end = string_end(bytes, i);
                let literal = &text[i..=end];
                i = end + 1;
                if let Some(Frame::Object {
                    key,
                    expect_key: true,
                }) = stack.last_mut()
                {
                    *key = (i - literal.len(), i);
                    out.extend_from_slice(literal.as_bytes());
                    continue;
                }
                let value = decode(literal);
                let replacement = if looks_like_token(&value) {
                    on_token(
                        &Site {
                            text,
                            stack: &stack,
                        },
                        &value,
                    )?
                } else {
                    None
                };
                match replacement {
                    // Token characters never need escaping.
                    Some(token) => {
                        out.push(b'"');
                        out.extend_from_slice(token.as_bytes());
                        out.push(b'"');
                    }
                    None => out.extend_from_slice(literal.as_bytes()),
                }
                continue;
            }
            _ => {}
        }
        out.push(b);
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keyring::{KeyEntry, KeyState, KeyringFile};
    use base64::Engine;
    use serde_json::json;
    use zeroize::Zeroizing;

    const K1: [u8; 32] = [1; 32];
    const K2: [u8; 32] = [2; 32];
    const K9: [u8; 32] = [9; 32];

    fn entry(id: &str, secret: &[u8; 32], state: KeyState) -> KeyEntry {
        KeyEntry {
            id: id.into(),
            secret: Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(secret)),
            created_at: "2026-11-01T00:00:00Z".into(),
            state,
        }
    }

    /// Before the rotation: k1 is the active primary.
    fn old_ring() -> Keyring {
        Keyring::single("k1", &K1, "2026-11-01T00:00:00Z").unwrap()
    }

    /// After it: k1 decrypt_only, k2 the primary, k0 disabled.
    fn ring() -> Keyring {
        Keyring::from_file(KeyringFile {
            shredded: Vec::new(),
            primary: "k2".into(),
            keys: vec![
                entry("k0", &K9, KeyState::Disabled),
                entry("k1", &K1, KeyState::DecryptOnly),
                entry("k2", &K2, KeyState::Active),
            ],
        })
        .unwrap()
    }

    fn seal_k1(context: &str, value: Value) -> String {
        token::seal(old_ring().primary(), context, &value).unwrap()
    }

    fn raw(text: &str) -> Box<RawValue> {
        serde_json::from_str(text).unwrap()
    }

    fn rewrap(text: &str, overrides: &Overrides, all: bool) -> Result<(String, Stats), Failure> {
        let mut stats = Stats::default();
        let mut out = Vec::new();
        let bindings = Bindings {
            overrides,
            subject: &DataSubject::Unknown,
            tree: None,
        };
        rewrap_document(&raw(text), &ring(), &bindings, all, &mut stats, &mut out)?;
        Ok((String::from_utf8(out).unwrap(), stats))
    }

    fn rewrapped(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    /// Asserts that the token at `pointer` in `out` is under k2 and opens with `context` to
    /// `expected`.
    fn assert_k2(out: &str, pointer: &str, context: &str, expected: &Value) {
        let doc: Value = serde_json::from_str(out).unwrap();
        let t = doc.pointer(pointer).unwrap().as_str().unwrap();
        assert!(t.starts_with("fs1.k2."), "{pointer}: {t}");
        assert_eq!(
            &token::open(&ring(), context, t).unwrap(),
            expected,
            "{pointer}"
        );
    }

    #[test]
    fn nested_objects_use_the_member_rule() {
        let ssn = seal_k1("ssn", json!("123-45-6789"));
        let age = seal_k1("age", json!(42));
        let text = format!(
            r#"{{"user": {{"ssn": "{ssn}", "name": "Ann", "profile": {{"age": "{age}"}}}}, "n": 1}}"#
        );
        let (out, stats) = rewrap(&text, &Overrides::new(), false).unwrap();
        assert_k2(&out, "/user/ssn", "ssn", &json!("123-45-6789"));
        assert_k2(&out, "/user/profile/age", "age", &json!(42));
        let doc: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(doc["user"]["name"], "Ann");
        assert_eq!(doc["n"], 1);
        assert_eq!(stats.rewrapped, rewrapped(&[("k1", 2)]));
        assert_eq!(stats.current, 0);
        assert!(!out.contains(&ssn) && !out.contains(&age));
    }

    #[test]
    fn array_elements_take_the_member_holding_the_array() {
        let a = seal_k1("tags", json!("a"));
        let b = seal_k1("tags", json!({"b": [1]}));
        let deep = seal_k1("m", json!(true));
        let number = seal_k1("number", json!("4111"));
        let text = format!(
            r#"{{"tags": ["{a}", "plain", "{b}"], "deep": {{"m": [[1, "{deep}"]]}}, "cards": [{{"number": "{number}"}}]}}"#
        );
        let (out, stats) = rewrap(&text, &Overrides::new(), false).unwrap();
        assert_k2(&out, "/tags/0", "tags", &json!("a"));
        assert_k2(&out, "/tags/2", "tags", &json!({"b": [1]}));
        assert_k2(&out, "/deep/m/0/1", "m", &json!(true));
        assert_k2(&out, "/cards/0/number", "number", &json!("4111"));
        assert_eq!(stats.rewrapped, rewrapped(&[("k1", 4)]));
    }

    #[test]
    fn root_tokens_and_root_arrays_use_the_empty_context() {
        let t = seal_k1("", json!("root"));
        let (out, _) = rewrap(&format!("\"{t}\""), &Overrides::new(), false).unwrap();
        assert_k2(&out, "", "", &json!("root"));
        let (out, _) = rewrap(
            &format!("[[\"{t}\"], {{\"x\": 1}}]"),
            &Overrides::new(),
            false,
        )
        .unwrap();
        assert_k2(&out, "/0/0", "", &json!("root"));
    }

    #[test]
    fn tokens_under_the_primary_are_checked_and_kept_unless_all() {
        let current = token::seal(ring().primary(), "ssn", &json!("x")).unwrap();
        let old = seal_k1("ssn", json!("y"));
        let text = format!(r#"{{"ssn": ["{current}", "{old}"]}}"#);
        let (out, stats) = rewrap(&text, &Overrides::new(), false).unwrap();
        let doc: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(doc["ssn"][0], current.as_str());
        assert_k2(&out, "/ssn/1", "ssn", &json!("y"));
        assert_eq!(
            (stats.rewrapped, stats.current),
            (rewrapped(&[("k1", 1)]), 1)
        );

        let (out, stats) = rewrap(&text, &Overrides::new(), true).unwrap();
        let doc: Value = serde_json::from_str(&out).unwrap();
        assert_ne!(doc["ssn"][0], current.as_str(), "fresh nonce under --all");
        assert_k2(&out, "/ssn/0", "ssn", &json!("x"));
        assert_eq!(
            (stats.rewrapped, stats.current),
            (rewrapped(&[("k1", 1), ("k2", 1)]), 0)
        );

        // A current token that does not open is still an error.
        let wrong = token::seal(ring().primary(), "nickname", &json!("x")).unwrap();
        let err = rewrap(
            &format!(r#"{{"ssn": "{wrong}"}}"#),
            &Overrides::new(),
            false,
        )
        .unwrap_err();
        assert_eq!(err.reason, "authentication_failed");
    }

    #[test]
    fn explicit_route_contexts_apply_where_the_route_selects() {
        let card = seal_k1("card", json!("4111 1111 1111 1111"));
        let other = seal_k1("number", json!("5"));
        let ssn = seal_k1("ssn", json!("123"));
        let encrypt = vec![
            Selector::compile("$.ssn", None).unwrap(),
            Selector::compile("$.cards[*].number", Some("card".into())).unwrap(),
        ];
        let decrypt = vec![Selector::compile("$.cards[*].number", Some("other".into())).unwrap()];
        let contexts = RouteContexts {
            groups: vec![encrypt, decrypt],
            ..Default::default()
        };
        assert!(contexts.has_explicit());
        let text = format!(
            r#"{{"ssn": "{ssn}", "cards": [{{"number": "{card}"}}], "other": {{"number": "{other}"}}}}"#
        );
        let overrides = contexts
            .overrides(&serde_json::from_str(&text).unwrap())
            .unwrap();
        // response.encrypt claims the node first; `$.ssn` keeps the member rule.
        assert_eq!(overrides["/cards/0/number"], "card");
        assert_eq!(overrides["/ssn"], "ssn");
        let (out, stats) = rewrap(&text, &overrides, false).unwrap();
        assert_k2(
            &out,
            "/cards/0/number",
            "card",
            &json!("4111 1111 1111 1111"),
        );
        assert_k2(&out, "/other/number", "number", &json!("5"));
        assert_k2(&out, "/ssn", "ssn", &json!("123"));
        assert_eq!(stats.rewrapped, rewrapped(&[("k1", 3)]));

        // Without the route the card token does not open: its context is not `number`.
        let err = rewrap(&text, &Overrides::new(), false).unwrap_err();
        assert_eq!(
            err,
            Failure {
                path: "$['cards'][0]['number']".into(),
                reason: Reason::AuthenticationFailed,
                kid: "k1".into()
            }
        );
    }

    #[test]
    fn failures_name_the_path_reason_and_kid_never_the_token() {
        let good = seal_k1("b", json!("secret-value"));
        let mut tampered = good.clone().into_bytes();
        let at = tampered.len() - 2;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let unknown = token::seal(
            Keyring::single("k9", &K9, "2026-11-01T00:00:00Z")
                .unwrap()
                .primary(),
            "b",
            &json!(1),
        )
        .unwrap();
        let disabled = unknown.replacen("k9", "k0", 1);
        let cases = [
            (tampered.as_str(), "authentication_failed", "k1"),
            (unknown.as_str(), "unknown_key", "k9"),
            (disabled.as_str(), "key_disabled", "k0"),
            ("fs1.k1.***not base64***", "bad_encoding", "k1"),
            ("fs1.k1.AAAA", "bad_encoding", "k1"),
        ];
        for (bad, reason, kid) in cases {
            let text = format!(r#"{{"a": [{{"b": "{good}"}}, {{"b": "{bad}"}}], "z": 1}}"#);
            let err = rewrap(&text, &Overrides::new(), false).unwrap_err();
            assert_eq!(
                (err.path.as_str(), err.reason.as_str(), err.kid.as_str()),
                ("$['a'][1]['b']", reason, kid),
                "{reason}"
            );
            let shown = err.to_string();
            assert_eq!(
                shown,
                format!("field $['a'][1]['b']: {reason} (key `{kid}`)")
            );
            assert!(!shown.contains(bad) && !shown.contains("secret-value"));
        }
    }

    #[test]
    fn everything_but_tokens_and_whitespace_is_kept_byte_for_byte() {
        let t = seal_k1("t", json!("v"));
        let text = format!(
            "{{ \"b\" : 1.50e3 ,\n \"a\": [ 1 , -0.0, 123456789012345678901234567890 ],\n\t\"b\": \"dup\",\r\n \
             \"s\": \"  spaced \\\" \\n \\u00e9 fs1.k1.notatoken \", \"e\": {{}}, \"f\": [], \
             \"n\": null, \"t\": \"{t}\", \"u\": true, \"x\": \"fs1\", \"y\": \"fs1.bad kid.x\" }}"
        );
        let (out, stats) = rewrap(&text, &Overrides::new(), false).unwrap();
        let new = serde_json::from_str::<Value>(&out).unwrap()["t"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            out,
            format!(
                "{{\"b\":1.50e3,\"a\":[1,-0.0,123456789012345678901234567890],\"b\":\"dup\",\
                 \"s\":\"  spaced \\\" \\n \\u00e9 fs1.k1.notatoken \",\"e\":{{}},\"f\":[],\
                 \"n\":null,\"t\":\"{new}\",\"u\":true,\"x\":\"fs1\",\"y\":\"fs1.bad kid.x\"}}"
            )
        );
        assert_eq!(stats.rewrapped, rewrapped(&[("k1", 1)]));
    }

    #[test]
    fn escaped_tokens_and_member_names_are_decoded() {
        let t = seal_k1("a/b~'c", json!(7));
        // The same token with its first character escaped, under an escaped member name.
        let escaped = format!("\\u0066{}", &t[1..]);
        let text = format!(r#"{{"a\/b~'c": "{escaped}"}}"#);
        let (out, _) = rewrap(&text, &Overrides::new(), false).unwrap();
        assert!(out.starts_with(r#"{"a\/b~'c":"fs1.k2."#), "{out}");
        assert_k2(&out, "/a~1b~0'c", "a/b~'c", &json!(7));
    }

    #[test]
    fn member_names_are_not_tokens() {
        let t = seal_k1("x", json!(1));
        // A member *name* that looks like a token is a name, not a value.
        let text = format!(r#"{{"{t}": {{"x": "{t}"}}}}"#);
        let (out, _) = rewrap(&text, &Overrides::new(), false).unwrap();
        assert!(
            out.starts_with(&format!(r#"{{"{t}":{{"x":"fs1.k2."#)),
            "{out}"
        );
    }

    /// The walk's spellings of each site equal `transform`'s for the same node: the member rule
    /// and path rendering are the proxy's, not a look-alike.
    #[test]
    fn sites_match_transform_locations() {
        let t = "fs1.k1.AAAA";
        let text = format!(
            r#"{{"plain": "{t}", "it's": ["{t}", [["{t}"]]], "a/b~c": {{"": "{t}"}},
               "ctl\u0001\b\n\t\\": "{t}", "émoji 🦀": [{{"x": ["{t}"]}}], "": "{t}"}}"#
        );
        let doc = raw(&text);
        let tree: Value = serde_json::from_str(&text).unwrap();
        let mut sites = Vec::new();
        walk(&doc, &mut Vec::new(), |site, _| {
            let l = site.location();
            sites.push((l.path, l.pointer, l.member));
            Ok::<_, ()>(None)
        })
        .unwrap();
        assert_eq!(sites.len(), 7);
        for (path, pointer, member) in sites {
            let selector = Selector::compile(&path, None).unwrap();
            let found = transform::select(&selector.query, &tree).unwrap();
            assert_eq!(found.len(), 1, "{path}");
            assert_eq!(
                (&found[0].path, &found[0].pointer, &found[0].member),
                (&path, &pointer, &member)
            );
            assert_eq!(tree.pointer(&pointer), Some(&json!(t)), "{pointer}");
        }
        // And the root.
        let mut root = None;
        walk(&raw(&format!("\"{t}\"")), &mut Vec::new(), |site, _| {
            let l = site.location();
            root = Some((l.path, l.pointer, l.member));
            Ok::<_, ()>(None)
        })
        .unwrap();
        assert_eq!(root, Some(("$".into(), String::new(), String::new())));
    }

    fn stream(input: &str, contexts: &RouteContexts) -> (String, Summary, Option<StreamError>) {
        let mut out = Vec::new();
        let mut summary = Summary::default();
        let result = rewrap_stream(
            input.as_bytes(),
            &mut out,
            &ring(),
            contexts,
            false,
            &mut summary,
        );
        (String::from_utf8(out).unwrap(), summary, result.err())
    }

    #[test]
    fn streams_json_lines_and_pretty_documents() {
        let a = seal_k1("ssn", json!("1"));
        let b = seal_k1("ssn", json!("2"));
        let c = seal_k1("tags", json!("3"));
        let input = format!(
            "{{\"ssn\":\"{a}\"}}\n{{\"ssn\":\"{b}\"}}\n\n{{\n  \"tags\": [\n    \"{c}\"\n  ]\n}}\n\"plain\"\n42\n"
        );
        let (out, summary, err) = stream(&input, &RouteContexts::default());
        assert!(err.is_none(), "{err:?}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_k2(lines[0], "/ssn", "ssn", &json!("1"));
        assert_k2(lines[1], "/ssn", "ssn", &json!("2"));
        assert_k2(lines[2], "/tags/0", "tags", &json!("3"));
        assert_eq!(&lines[3..], ["\"plain\"", "42"]);
        assert_eq!(summary.documents, 5);
        assert_eq!(
            summary.describe("k2"),
            "rewrapped 3 tokens in 5 documents (k1: 3 → primary k2); 0 already current"
        );
        let (out, summary, err) = stream("", &RouteContexts::default());
        assert!(out.is_empty() && err.is_none());
        assert_eq!(
            summary.describe("k2"),
            "rewrapped 0 tokens in 0 documents (→ primary k2); 0 already current"
        );
    }

    #[test]
    fn stream_stops_at_the_first_failure_after_writing_what_came_before() {
        let a = seal_k1("ssn", json!("1"));
        let input = format!("{{\"ssn\":\"{a}\"}}\n{{\"x\": [\"{a}\"]}}\n{{\"ssn\":\"{a}\"}}\n");
        let (out, summary, err) = stream(&input, &RouteContexts::default());
        assert_eq!(out.lines().count(), 1);
        assert_eq!(summary.documents, 1);
        let err = err.unwrap();
        assert_eq!(
            err.to_string(),
            "document 2, field $['x'][0]: authentication_failed (key `k1`)"
        );
        assert!(err.hint().is_some());

        let input = format!("{{\"ssn\":\"{a}\"}}\n{{\"ssn\": \"top secret\",\n  oops}}\n");
        let (out, summary, err) = stream(&input, &RouteContexts::default());
        assert_eq!((out.lines().count(), summary.documents), (1, 1));
        let shown = err.unwrap().to_string();
        assert!(
            shown.starts_with("document 2 is not JSON: ") && shown.contains("line 3 column 3"),
            "{shown}"
        );
        assert!(
            !shown.contains("top secret") && !shown.contains("oops"),
            "{shown}"
        );
    }

    #[test]
    fn documents_a_tree_cannot_hold_pass_without_a_route_and_fail_with_one() {
        let t = seal_k1("n", json!(1));
        let input = format!("{{\"n\": \"{t}\", \"huge\": 1e400}}\n");
        let (out, _, err) = stream(&input, &RouteContexts::default());
        assert!(err.is_none(), "{err:?}");
        assert!(out.ends_with(",\"huge\":1e400}\n"), "{out}");
        let contexts = RouteContexts {
            groups: vec![vec![Selector::compile("$.x", Some("x".into())).unwrap()]],
            ..Default::default()
        };
        let (out, _, err) = stream(&input, &contexts);
        assert!(out.is_empty());
        let shown = err.unwrap().to_string();
        assert!(
            shown.starts_with("document 1: the route's selectors cannot be evaluated on it (")
                && shown.contains("number out of range"),
            "{shown}"
        );
        // Elements of root arrays, however deep, have the context "".
        let root = seal_k1("", json!(1));
        let deep = format!("{}\"{root}\"{}", "[".repeat(200), "]".repeat(200));
        let (out, _, err) = stream(&deep, &RouteContexts::default());
        assert!(err.is_none(), "{err:?}");
        assert!(out.contains("fs1.k2."));
        let (_, _, err) = stream(&deep, &contexts);
        assert!(err.unwrap().to_string().contains("recursion limit"));
    }

    #[test]
    fn stream_applies_route_contexts_per_document() {
        let card = seal_k1("card", json!("4111"));
        let contexts = RouteContexts {
            groups: vec![vec![Selector::compile(
                "$.cards[*].number",
                Some("card".into()),
            )
            .unwrap()]],
            ..Default::default()
        };
        let input = format!(
            "{{\"cards\":[{{\"number\":\"{card}\"}},{{\"number\":\"{card}\"}}]}}\n\"{}\"\n",
            seal_k1("", json!(0))
        );
        let (out, summary, err) = stream(&input, &contexts);
        assert!(err.is_none(), "{err:?}");
        let lines: Vec<&str> = out.lines().collect();
        assert_k2(lines[0], "/cards/1/number", "card", &json!("4111"));
        assert_k2(lines[1], "", "", &json!(0));
        assert_eq!(summary.stats.rewrapped_total(), 3);
    }
}
