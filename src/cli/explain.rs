//! `fieldseal explain --config F --method M --path P [--body FILE]`: a dry run of one request
//! against a configuration, for the question users of path-rule proxies ask most — "which rule
//! applies here, and what will it do?".
//!
//! It prints the route that matches (after the same path normalisation the proxy applies), the
//! routes that match the path but not the method (the usual confusion), the route's rules, and
//! with a sample body: which selectors hit which fields, and the body the client (response) or
//! the app (request) would get. The rewriting is the proxy's own code
//! ([`crate::transform::rules::rewrite_response_body`] / `rewrite_request_body`), with the
//! configured keys, so the dry run cannot drift from what `run` does. Nothing is sent anywhere;
//! freshness (`max_age`) is checked against the clock with a replay store of its own, which
//! ends with the dry run: no running proxy's `jti`s are consumed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use http::Method;
use serde_json::Value;

use crate::config::settings::{Operation, RequestRules, ResponseRules, RuleSource};
use crate::config::Settings;
use crate::proxy::well_known::JWKS_PATH;
use crate::routing::{normalize_path, Matchable};
use crate::transform;
use crate::transform::rules::{self as field_rules, BodyFailure, FieldOp, Openers};
use crate::transform::selector::Selector;
use crate::transform::subject::DataSubject;
use crate::transform::view::{Seen, Sight};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[arg(long)]
    pub config: PathBuf,
    /// The request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// The request path as the client sends it; a query string is opened as `run` would
    /// (carrier rules `query:NAME`).
    #[arg(long)]
    pub path: String,
    /// A sample JSON body (`-` reads stdin): a response of the app or a request of the client.
    #[arg(long)]
    pub body: Option<PathBuf>,
    /// Treat the body as a response, a request, both, or — `auto` — a response for
    /// GET/HEAD/DELETE (which carry no body worth a rule) and a request for every other method
    /// (it is the client's body that method sends).
    #[arg(long, value_enum, default_value_t = Direction::Auto)]
    pub direction: Direction,
    /// The verified caller to show views for: the token's claims as JSON, `sub` included
    /// (`'{"sub":"42","role":"support"}'`). Not verified here; without it, no caller (what
    /// a request without a valid token gets).
    #[arg(long)]
    pub caller: Option<String>,
    /// The request's data subject, for subject-bound tokens (`fsb1`); without it, the route's
    /// `subject` read from `--path` (a path parameter) or `--caller` (a claim).
    #[arg(long)]
    pub subject: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Direction {
    Auto,
    Response,
    Request,
    /// The same sample read both ways (an app that echoes what it was sent).
    Both,
}

pub fn run(args: ExplainArgs) -> ExitCode {
    let settings = match crate::config::load(&args.config) {
        Ok(s) => s,
        Err(errors) => {
            for p in &errors.0 {
                eprintln!("error: {p}");
            }
            return ExitCode::from(1);
        }
    };
    let Ok(method) = args.method.to_ascii_uppercase().parse::<Method>() else {
        eprintln!("error: `{}` is not an HTTP method", args.method);
        return ExitCode::from(1);
    };
    let caller = match args.caller.as_deref().map(parse_caller).transpose() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: --caller: {e}");
            return ExitCode::from(1);
        }
    };
    let body = match args.body.as_deref().map(read_body).transpose() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    print!(
        "{}",
        explain(
            &settings,
            &method,
            &args.path,
            body.as_deref(),
            args.direction,
            caller.as_ref(),
            args.subject.as_deref()
        )
    );
    ExitCode::SUCCESS
}

/// `--caller`: a JSON object of claims with a string `sub`.
fn parse_caller(text: &str) -> Result<serde_json::Map<String, Value>, String> {
    let claims: serde_json::Map<String, Value> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object of claims: {e}"))?;
    if !claims.get("sub").is_some_and(Value::is_string) {
        return Err("the claims need a string `sub`".into());
    }
    Ok(claims)
}

fn read_body(path: &Path) -> Result<Vec<u8>, String> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| format!("cannot read the body from stdin: {e}"))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The whole report (also used by tests).
pub fn explain(
    settings: &Settings,
    method: &Method,
    raw_path: &str,
    body: Option<&[u8]>,
    direction: Direction,
    caller: Option<&serde_json::Map<String, Value>>,
    subject: Option<&str>,
) -> String {
    let mut out = String::new();
    let path = raw_path.split('?').next().unwrap_or_default();
    let segments = normalize_path(path);
    let normalised = format!(
        "/{}",
        segments
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<&str>>()
            .join("/")
    );
    let _ = writeln!(out, "request: {method} {path}");
    if normalised != path {
        let _ = writeln!(
            out,
            "  matched as {normalised} (normalised; the app still receives {path})"
        );
    }
    if let Some(doc) = local_document(settings, path) {
        let _ = writeln!(
            out,
            "served by fieldseal itself: {doc} (never forwarded, before any route)"
        );
        return out;
    }

    let mut route = None;
    for (i, r) in settings.routes.iter().enumerate() {
        let path_matches = r.template().matches(&segments);
        if path_matches && r.methods().contains(method) {
            route = Some((i, r));
            break;
        }
        if path_matches {
            let _ = writeln!(
                out,
                "  routes.{i} `{}` ({} {}) matches the path but not {method}",
                r.name, r.methods, r.path
            );
        }
    }
    // The same choice `run` makes: the route, the rules of each direction (the field policy
    // included), and another route whose response rules cover every method of its path.
    let matched = settings.matched(method, path);
    let cover_line = |out: &mut String, c: &crate::config::Route| {
        let index = settings
            .routes
            .iter()
            .position(|r| std::ptr::eq(r, c))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  the answer gets the response rules of routes.{index} `{}` ({} {}): they cover their path for every method",
            c.name,
            c.methods,
            c.path
        );
    };
    let policy_rules = settings.fields.entries.len();
    match route {
        None => {
            let policy_opens = settings.unmatched_rules.request_rules().is_some();
            match matched.cover {
                Some(c) => {
                    let _ = if policy_opens {
                        writeln!(
                            out,
                            "no route matches {method}: route label `unmatched`; the field policy opens tokens in a JSON body"
                        )
                    } else {
                        writeln!(
                            out,
                            "no route matches {method}: the request is forwarded untouched (route label `unmatched`)"
                        )
                    };
                    cover_line(&mut out, c);
                }
                None if policy_rules > 0 => {
                    let _ = writeln!(
                        out,
                        "no route matches: route label `unmatched`; the field policy's {policy_rules} rule(s) apply to JSON bodies (and the forms, query parameters and headers they name), other bodies stream untouched"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "no route matches: proxied untouched (route label `unmatched`; bodies stream, no rules)"
                    );
                }
            }
        }
        Some((index, route)) => {
            let _ = writeln!(
                out,
                "routes.{index} `{}` ({} {}) matches (first match wins)",
                route.name, route.methods, route.path
            );
            let rules = route.rules.describe();
            if rules.is_empty() && matched.cover.is_none() {
                let _ = writeln!(out, "  pass-through: no rules, bodies stream untouched");
            }
            for rule in &rules {
                let _ = writeln!(out, "  {rule}");
            }
            if let Some(c) = matched.cover {
                cover_line(&mut out, c);
            }
            let headers: Vec<&str> = route.headers.names().collect();
            let _ = writeln!(out, "  response headers set: {}", headers.join(", "));
            if route.rules.envelope && body.is_some() {
                let _ = writeln!(
                    out,
                    "envelope route: the whole request body is an encrypted envelope and the whole \
                     response is sealed; fields are not inspected"
                );
                return out;
            }
        }
    }
    if let Some(g) = &settings.guard {
        let names: Vec<&str> = g.detectors.iter().map(|d| d.name()).collect();
        let _ = writeln!(
            out,
            "  guard ({}): {} in every JSON answer, after the rules",
            mode_name(g.mode),
            names.join(", ")
        );
    }

    if let (Some((_, query)), Some(rules)) = (raw_path.split_once('?'), matched.request) {
        explain_query(&mut out, settings, rules, path, query);
    }
    let Some(body) = body else {
        return out;
    };
    let route_name = route.map_or("unmatched", |(_, r)| &*r.name);
    let response_route = matched.cover.map_or(route_name, |c| &*c.name);
    let (response, request) = (matched.response, matched.request);
    // The data subject, as `run` reads it (or as given).
    let data_subject = match subject {
        Some(s) => DataSubject::Known(s.to_string()),
        None => route.map_or(DataSubject::Unknown, |(_, r)| {
            r.data_subject(&segments, caller)
        }),
    };
    let (as_response, as_request) = match direction {
        Direction::Response => (response, None),
        Direction::Request => (None, request),
        Direction::Both => (response, request),
        // GET, HEAD and DELETE requests carry no body worth a rule: the sample is a response.
        Direction::Auto if matches!(*method, Method::GET | Method::HEAD | Method::DELETE) => {
            (response, None)
        }
        // Any other method carries the client's body: the sample is that request. (Reading
        // it "as a response" too showed the request body sealed again, which confused.)
        Direction::Auto => (None, request),
    };
    if as_response.is_none() && as_request.is_none() {
        let _ = writeln!(
            out,
            "the body passes untouched: this route has no rules for that direction"
        );
    }
    if let Some(rules) = as_response {
        // Views: what this caller (or no caller) gets from each rule that has views, with
        // the route's path parameters, as `run` decides it.
        let seen = caller.map(|claims| Seen {
            subject: claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            claims,
        });
        let template = matched
            .cover
            .or(route.map(|(_, r)| r))
            .map(|r| r.template());
        let param = |name: &str| {
            template
                .and_then(|t| t.param(name, &segments))
                .map(str::to_string)
        };
        let sight = rules.sight(seen, &param).with_subject(data_subject.clone());
        if rules.has_views() {
            let _ = match (caller, &settings.identity) {
                (_, None) => writeln!(out, "  views: `identity` is not configured"),
                (Some(c), Some(_)) => writeln!(
                    out,
                    "  views for the caller `{}` (claims as given; explain does not verify tokens)",
                    c.get("sub").and_then(Value::as_str).unwrap_or_default()
                ),
                (None, Some(_)) => writeln!(
                    out,
                    "  views for a caller without a valid token: every rule's own action (give --caller to see another)"
                ),
            };
        }
        explain_response(&mut out, settings, response_route, rules, &sight, body);
    }
    if let Some(rules) = as_request {
        explain_request(&mut out, settings, rules, body, data_subject.of_request());
    }
    out
}

fn mode_name(mode: crate::guard::Mode) -> &'static str {
    match mode {
        crate::guard::Mode::Observe => "observe",
        crate::guard::Mode::Block => "block",
    }
}

/// What the guard finds in the body the client would get (paths and detectors, never
/// values); `true` when it would withhold it.
fn guard_blocks(out: &mut String, settings: &Settings, sent: &[u8], ops: &[FieldOp]) -> bool {
    let Some(guard) = &settings.guard else {
        return false;
    };
    // Fields a view showed are declared, as in `run`.
    let shown: Vec<&str> = ops
        .iter()
        .filter(|op| op.action == crate::transform::rules::Action::Shown)
        .map(|op| op.path.as_str())
        .collect();
    let findings = guard.scan_bytes_showing(sent, &shown);
    for d in &findings.detections {
        let _ = writeln!(out, "  guard: {} at {}", d.detector.name(), d.path);
    }
    if findings.total() == 0 {
        return false;
    }
    match guard.mode {
        crate::guard::Mode::Block => {
            let _ = writeln!(
                out,
                "the client gets 502 sensitive_data_detected (guard: block); declare these fields in `fields` or a route rule"
            );
            true
        }
        crate::guard::Mode::Observe => {
            let _ = writeln!(
                out,
                "  (guard: observe — counted in fieldseal_guard_detections_total and logged; the answer goes out)"
            );
            false
        }
    }
}

/// Which of the proxy's own documents `path` is, if any.
fn local_document(settings: &Settings, path: &str) -> Option<&'static str> {
    settings.keys.client.as_ref()?;
    if path == JWKS_PATH {
        return Some("the JWKS of the client keys");
    }
    (settings.keys.public_key_path.as_deref() == Some(path))
        .then_some("the seed-compatible public key document")
}

/// One line per selector: the fields it selects in `doc`, with the AAD context for sealing
/// and opening rules.
fn selector_hits(
    out: &mut String,
    doc: &Value,
    action: &str,
    selector: &Selector,
    with_context: bool,
    handled_elsewhere: &dyn Fn(&str) -> bool,
) {
    match transform::select_selectors(std::slice::from_ref(selector), doc) {
        Ok(found) if found.is_empty() => {
            let _ = writeln!(
                out,
                "  {action} {}: matches nothing in this sample (a misspelt name fails open: on live \
                 traffic, fieldseal_selector_matches_total shows whether it ever matches)",
                selector.source
            );
        }
        Ok(found) => {
            for (_, location) in &found {
                if handled_elsewhere(&location.pointer) {
                    let _ = writeln!(
                        out,
                        "  {action} {} -> {} (handled by another rule: route rules first, then encrypt, redact, mask; outermost wins)",
                        selector.source, location.path
                    );
                } else if with_context {
                    let context = transform::context(selector, location);
                    let _ = writeln!(
                        out,
                        "  {action} {} -> {} (context \"{context}\")",
                        selector.source, location.path
                    );
                } else {
                    let _ = writeln!(out, "  {action} {} -> {}", selector.source, location.path);
                }
            }
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "  {action} {}: cannot be evaluated: {e}",
                selector.source
            );
        }
    }
}

fn explain_response(
    out: &mut String,
    settings: &Settings,
    route: &str,
    rules: &ResponseRules,
    sight: &Sight,
    body: &[u8],
) {
    let _ = writeln!(out, "as a response of the app:");
    let Ok(doc) = serde_json::from_slice::<Value>(body) else {
        let _ = writeln!(
            out,
            "  not valid JSON: the client gets 502 response_not_encryptable (fail closed)"
        );
        return;
    };
    // In precedence order: a node two rules select is handled by the first (route rules
    // before the policy's), a node inside another selected node by the outer one.
    let queries: Vec<_> = rules.rules().iter().map(|r| &r.selector.query).collect();
    let winners: std::collections::HashMap<String, usize> = transform::select_all(&queries, &doc)
        .map(|found| found.into_iter().map(|(i, l)| (l.pointer, i)).collect())
        .unwrap_or_default();
    for (index, rule) in rules.rules().iter().enumerate() {
        let choice = sight.choice(index, rule.op);
        let mut action = match choice.show {
            Some(Operation::Mask { keep_last }) => format!("mask (keep_last {keep_last})"),
            Some(op) => op.name().to_string(),
            None => "plain".to_string(),
        };
        if let Some(mark) = choice.mark {
            action.push_str(&format!(" ({})", mark.label()));
        }
        if rule.source == RuleSource::Policy {
            action.push_str(" [fields]");
        }
        selector_hits(
            out,
            &doc,
            &action,
            &rule.selector,
            choice.show == Some(Operation::Seal),
            &|pointer| winners.get(pointer) != Some(&index),
        );
    }
    let mut ops = Vec::new();
    match field_rules::rewrite_response_body_as(
        body,
        rules,
        settings.keys.ring.as_deref(),
        sight,
        &mut ops,
    ) {
        Ok(rewritten) => {
            let sent = rewritten.as_deref().unwrap_or(body);
            if guard_blocks(out, settings, sent, &ops) {
                return;
            }
            match rewritten {
                Some(rewritten) => {
                    let _ = writeln!(out, "the client receives (tokens differ on every run):");
                    let _ = writeln!(out, "{}", String::from_utf8_lossy(&rewritten).trim_end());
                }
                None if ops.is_empty() => {
                    let _ = writeln!(
                        out,
                        "no field selected: the client receives the app's bytes unchanged"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "every selected field is shown to this caller: the client receives the app's bytes unchanged"
                    );
                }
            }
        }
        Err(failure) => {
            let why = match failure {
                BodyFailure::InvalidJson => "invalid JSON".to_string(),
                BodyFailure::Field(f) => f.to_string(),
            };
            let _ = writeln!(
                out,
                "the client gets 502 response_not_encryptable on route `{route}` ({why})"
            );
        }
    }
}

/// Opens the query parameters the rules name, as `run` would (the sample's query string).
fn explain_query(
    out: &mut String,
    settings: &Settings,
    rules: &RequestRules,
    path: &str,
    query: &str,
) {
    if !rules.reads_query() {
        return;
    }
    let Ok(pq) = format!("{path}?{query}").parse::<http::uri::PathAndQuery>() else {
        let _ = writeln!(out, "the query string is not valid in a request target");
        return;
    };
    let store = crate::replay::MemoryReplayStore::new(
        settings.limits.max_encrypted_values.saturating_mul(16),
    );
    let openers = dry_run_openers(settings, &store);
    let mut ops = Vec::new();
    let _ = writeln!(out, "query string:");
    match crate::proxy::carriers::open_query(Some(&pq), rules, &openers, &mut ops) {
        Ok(opened) => {
            for op in &ops {
                let _ = writeln!(out, "  {}: {}", op.path, op.action.as_str());
            }
            match opened {
                Some(pq) => {
                    let _ = writeln!(out, "the app receives {pq}");
                }
                None => {
                    let _ = writeln!(out, "the app receives the query string unchanged");
                }
            }
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "the client gets {} {} ({}); the app is not called",
                e.status().as_u16(),
                e.code(),
                e.message()
            );
        }
    }
}

/// What a dry run opens values with: the configured keys, and a replay store of its own so
/// the dry run sees the same checks as `run` without touching one. Sized so every value one
/// request may carry fits even if all land in one of the 16 shards.
fn dry_run_openers<'a>(
    settings: &'a Settings,
    store: &'a crate::replay::MemoryReplayStore,
) -> Openers<'a> {
    Openers {
        keyring: settings.keys.ring.as_deref(),
        client: settings.keys.client.as_deref(),
        max_encrypted_values: settings.limits.max_encrypted_values,
        replay: Some(crate::replay::Replay {
            store,
            window: settings.replay_window,
            now: crate::replay::unix_now(),
            // A dry run consumes nothing shared: this process's store only.
            deferred: None,
        }),
        subject: None,
    }
}

fn explain_request(
    out: &mut String,
    settings: &Settings,
    rules: &RequestRules,
    body: &[u8],
    subject: Option<&str>,
) {
    let _ = writeln!(out, "as a request of the client:");
    let Ok(doc) = serde_json::from_slice::<Value>(body) else {
        let _ = writeln!(
            out,
            "  not valid JSON: the client gets 400 invalid_json; the app is not called"
        );
        return;
    };
    for s in &rules.decrypt {
        selector_hits(out, &doc, "decrypt", s, true, &|_| false);
    }
    if rules.max_age.is_some() {
        let _ = writeln!(
            out,
            "  (max_age: iat is checked against this machine's clock; jti replay only within this dry run)"
        );
    }
    let store = crate::replay::MemoryReplayStore::new(
        settings.limits.max_encrypted_values.saturating_mul(16),
    );
    let openers = Openers {
        subject,
        ..dry_run_openers(settings, &store)
    };
    let mut ops: Vec<FieldOp> = Vec::new();
    match field_rules::rewrite_request_body(body, rules, &openers, &mut ops) {
        Ok(rewritten) => {
            for op in &ops {
                let kid = op
                    .kid
                    .as_deref()
                    .map(|k| format!(" (key {k})"))
                    .unwrap_or_default();
                let _ = writeln!(out, "  {}: {}{kid}", op.path, op.action.as_str());
            }
            match rewritten {
                Some(bytes) => {
                    let _ = writeln!(out, "the app receives:");
                    let _ = writeln!(out, "{}", String::from_utf8_lossy(&bytes).trim_end());
                }
                None => {
                    let _ = writeln!(out, "the app receives the client's bytes unchanged");
                }
            }
        }
        Err(BodyFailure::InvalidJson) => {
            let _ = writeln!(
                out,
                "the client gets 400 invalid_json; the app is not called"
            );
        }
        Err(BodyFailure::Field(f)) => {
            let _ = writeln!(
                out,
                "the client gets 400 field_rejected ({f}); the app is not called"
            );
        }
    }
}
