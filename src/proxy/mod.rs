//! The request path for one request, top to bottom:
//! request id → route → upstream request (hop-by-hop stripped, forwarding headers set) →
//! upstream → response (hop-by-hop stripped) → security headers → access log.
//!
//! Routes without transforms stream both bodies untouched: nothing here buffers.

pub mod boundary;
pub mod carriers;
mod decode;
pub mod envelope;
pub mod error;
pub mod fields;
pub mod hop;
pub mod request_id;
pub mod streaming;
pub mod strict;
pub mod upgrade;
pub mod upstream;
pub mod well_known;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderValue, HOST};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::access_log::{CountedBody, Exchange, ObservedBody};
use crate::audit::{FieldFailureInfo, FieldsEvent, Outcome as AuditOutcome};
use crate::body::{empty, ProxyBody};
use crate::config::settings::{Matched, SubjectSource};
use crate::guard::Findings;
use crate::identity::Identity;
use crate::replay::redis::{RedisReplayStore, Refusal};
use crate::replay::{Deferred, Replay, ReplayStore};
use crate::routing::Matchable;
use crate::state::{Runtime, Shared};
use crate::transform::rules::{Action, FieldOp, Openers};
use crate::transform::subject::DataSubject;
use crate::transform::view::{Seen, Sight};
use error::ProxyError;
use request_id::X_REQUEST_ID;

pub use crate::routing::UNMATCHED;

/// Facts about the client connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// Index of the worker thread serving the connection (selects its upstream pool).
    pub worker: usize,
}

/// Serves one request. Never fails: every error becomes a response.
pub async fn handle(
    req: Request<Incoming>,
    conn: ConnInfo,
    shared: Arc<Shared>,
) -> Result<Response<ObservedBody>, Infallible> {
    let started = Instant::now();
    let runtime = shared.runtime.load_full();
    let request_id = request_id::resolve(req.headers());
    let request_id_text = request_id.to_str().unwrap_or_default().to_string();
    let method = req.method().clone();
    let version = req.version();
    let bytes_in = Arc::new(AtomicU64::new(0));
    let mut report = Report::default();
    // The proxy's own public documents (JWKS, seed public key) are answered here, before
    // routing: a route must not be able to forward them to the app.
    let local = well_known::route_for(&req, &runtime.settings);
    // The route chosen by method and path, and the rules of each direction (the field
    // policy's included; the answer's may come from another route on the same path whose
    // rules cover every method).
    let matched = match local {
        Some(_) => None,
        None => Some(runtime.settings.matched(&method, req.uri().path())),
    };
    let route = matched.and_then(|m| m.route);
    let route_name = match local {
        Some(name) => name.clone(),
        None => route.map_or_else(|| UNMATCHED.clone(), |r| r.name.clone()),
    };

    // Requests the app could frame or route differently from the proxy (respelled paths,
    // smuggling shapes, another authority) are refused before anything else: no rule can be
    // bypassed by respelling a request.
    let refusal = strict::refusal(&req);
    let close = refusal.as_ref().is_some_and(|r| r.close);
    let forwarded = match (refusal, local, runtime.settings.keys.client.as_deref()) {
        (Some(refused), _, _) => {
            // A small body is read first so the client sees the answer, not a reset; never
            // when the framing itself is in doubt.
            if !refused.close {
                crate::body::drain_refused(req.into_body()).await;
            }
            Err(refused.error)
        }
        (None, Some(name), Some(keys)) => {
            Ok(well_known::respond(&req, name, keys, &request_id_text))
        }
        _ => {
            let context = Context {
                runtime: &runtime,
                replay: shared.replay.as_ref(),
                shared_replay: shared.shared_replay.as_deref(),
                metrics: &shared.metrics,
                conn,
                request_id: &request_id,
            };
            forward(
                req,
                &context,
                matched.expect("a request not served locally is routed"),
                bytes_in.clone(),
                &mut report,
            )
            .await
        }
    };
    guard_report(&shared, &request_id_text, &route_name, &report.findings);
    if let Some(caller) = &report.caller {
        shared.metrics.identity(caller.result);
    }
    audit(
        &shared,
        &request_id_text,
        &route_name,
        conn.peer,
        (report.fields, report.caller),
        forwarded.as_ref().err(),
    );
    // A streamed answer's fields are sealed after this returns: audited when it ends.
    if let Some(stream) = report.streamed.take() {
        let (shared, id, route, peer) = (
            shared.clone(),
            request_id_text.clone(),
            route_name.clone(),
            conn.peer,
        );
        stream.on_end(Box::new(move |ops, failure| {
            let counted: u64 = ops.counted.iter().map(|(_, _, n)| n).sum();
            for (action, kid, n) in &ops.counted {
                shared.metrics.field_ops(&route, *action, kid.as_deref(), *n);
            }
            if counted > 0 {
                tracing::info!(request_id = %id, route = %route, fields = counted, "streamed answer: fields past the audit detail, counted");
            }
            audit(&shared, &id, &route, peer, (ops.detail, None), failure);
        }));
    }
    let mut response = match forwarded {
        Ok(resp) => resp,
        Err(err) => {
            if err.fault() == error::Fault::Upstream {
                shared.metrics.upstream_error(&route_name, err.kind());
            }
            tracing::warn!(
                request_id = %request_id_text,
                route = %route_name,
                code = err.code(),
                fault = ?err.fault(),
                "request failed"
            );
            err.into_response(&request_id_text)
        }
    };

    let policy = route.map_or(&runtime.settings.default_headers, |r| &r.headers);
    policy.apply(response.headers_mut());
    // Unique per request: HPACK must not add it to the HTTP/2 dynamic table, where it would
    // only evict the security headers that repeat on every response.
    let mut request_id = request_id;
    request_id.set_sensitive(true);
    response.headers_mut().insert(X_REQUEST_ID, request_id);
    if close && version == Version::HTTP_11 {
        // hyper closes the connection after a response that says so.
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }

    let status = response.status().as_u16();
    let exchange = Exchange {
        request_id: request_id_text,
        route: route_name,
        method,
        version,
        status,
        upstream_status: report.upstream_status.filter(|s| *s != status),
        started,
        bytes_in,
        metrics: shared.metrics.clone(),
    };
    Ok(response.map(|body| exchange.observe(body)))
}

/// One audit event per request that touched fields (paths, actions, key ids — never values):
/// a `fieldseal::audit` log event, and a `fields` line queued for the audit log when one is
/// configured; plus the field metrics.
fn audit(
    shared: &Shared,
    request_id: &str,
    route: &Arc<str>,
    client: SocketAddr,
    (ops, caller): (Vec<FieldOp>, Option<CallerRecord>),
    failure: Option<&ProxyError>,
) {
    // One metric update per distinct (action, key) — usually a single one per request.
    let mut counts: Vec<(Action, Option<&str>, u64)> = Vec::new();
    for op in &ops {
        let kid = op.kid.as_deref();
        match counts
            .iter_mut()
            .find(|(a, k, _)| *a == op.action && *k == kid)
        {
            Some((_, _, n)) => *n += 1,
            None => counts.push((op.action, kid, 1)),
        }
    }
    for (action, kid, n) in counts {
        shared.metrics.field_ops(route, action, kid, n);
    }
    let mut by_selector: Vec<(&Arc<str>, u64)> = Vec::new();
    for selector in ops.iter().filter_map(|op| op.selector.as_ref()) {
        match by_selector
            .iter_mut()
            .find(|(s, _)| Arc::ptr_eq(s, selector))
        {
            Some((_, n)) => *n += 1,
            None => by_selector.push((selector, 1)),
        }
    }
    for (selector, n) in by_selector {
        shared.metrics.selector_matches(route, selector, n);
    }
    // Every view decision (rule, view, what was shown), one count per field.
    for op in &ops {
        if let (Some(mark), Some(selector)) = (op.view, &op.selector) {
            shared
                .metrics
                .view_decision(route, selector, mark, op.action.as_str());
        }
    }
    let rejected = failure.and_then(ProxyError::field_rejection);
    if let Some(r) = &rejected {
        shared.metrics.field_failure(route, r.metric);
    }
    if ops.is_empty() && rejected.is_none() {
        return;
    }
    // Formatting the field list costs an allocation per field: only when someone listens.
    let enabled = if rejected.is_some() {
        tracing::enabled!(target: "fieldseal::audit", tracing::Level::WARN)
    } else {
        tracing::enabled!(target: "fieldseal::audit", tracing::Level::INFO)
    };
    if enabled {
        let fields: Vec<String> = ops
            .iter()
            .map(|op| match op.view {
                None => format!(
                    "{}:{}:{}",
                    op.path,
                    op.action.as_str(),
                    op.kid.as_deref().unwrap_or("-")
                ),
                Some(view) => format!(
                    "{}:{}:{}:{}",
                    op.path,
                    op.action.as_str(),
                    op.kid.as_deref().unwrap_or("-"),
                    view.label()
                ),
            })
            .collect();
        let subject = caller
            .as_ref()
            .and_then(|c| c.subject.as_deref())
            .unwrap_or("-");
        let identity = caller.as_ref().map_or("-", |c| c.result);
        match rejected {
            None => {
                tracing::info!(target: "fieldseal::audit", request_id, route = %route, fields = ?fields, identity, subject, outcome = "ok", "fields")
            }
            Some(r) => tracing::warn!(
                target: "fieldseal::audit",
                request_id,
                route = %route,
                fields = ?fields,
                outcome = r.outcome.as_str(),
                identity,
                subject,
                field = r.field,
                reason = r.reason,
                kid = r.kid.unwrap_or("-"),
                "fields"
            ),
        }
    }
    if let Some(log) = &shared.audit {
        // The ops move into the event; the writer thread formats them.
        let outcome = rejected.map_or(AuditOutcome::Ok, |r| r.outcome);
        let failure = rejected.map(|r| FieldFailureInfo {
            reason: r.reason,
            field: r.field.to_string(),
            kid: r.kid.map(str::to_string),
        });
        let queued = log.fields(FieldsEvent {
            request_id: request_id.to_string(),
            route: route.clone(),
            client: Some(client),
            outcome,
            fields: ops,
            failure,
            caller: caller.map(|c| crate::audit::CallerInfo {
                identity: c.result,
                subject: c.subject,
            }),
        });
        if queued {
            shared.metrics.audit_event();
        } else {
            shared.metrics.audit_dropped();
        }
    }
}

/// Counts and logs what the guard found in an answer: route, JSON path and detector, never
/// the value (contract §9).
fn guard_report(shared: &Shared, request_id: &str, route: &Arc<str>, findings: &Findings) {
    if findings.unscanned {
        shared.metrics.guard_unscanned(route);
    }
    for (detector, n) in &findings.counts {
        shared.metrics.guard_detections(route, detector.name(), *n);
    }
    if findings.counts.is_empty() && !findings.unscanned {
        return;
    }
    // Every detection is counted above; lines are limited (`limits::GUARD_LOG_LINES_PER_SECOND`).
    let Some(held_back) = shared.guard_log.admit(crate::replay::unix_now()) else {
        return;
    };
    if findings.unscanned {
        tracing::warn!(
            target: "fieldseal::guard",
            request_id,
            route = %route,
            held_back,
            "answer above limits.max_body_bytes went out uninspected (guard: observe)"
        );
        return;
    }
    let found: Vec<String> = findings
        .detections
        .iter()
        .map(|d| format!("{}:{}", d.path, d.detector.name()))
        .collect();
    tracing::warn!(
        target: "fieldseal::guard",
        request_id,
        route = %route,
        detections = findings.total(),
        found = ?found,
        held_back,
        "sensitive data in an answer"
    );
}

/// What happened to one request besides its answer, for metrics, logs and the audit event.
#[derive(Default)]
struct Report {
    /// Every field operation (paths, actions, key ids, views — never values).
    fields: Vec<FieldOp>,
    /// What the guard found in the answer.
    findings: Findings,
    /// The app's own status, when it answered.
    upstream_status: Option<u16>,
    /// Who called, when a rule's views needed to know.
    caller: Option<CallerRecord>,
    /// Set when the answer is sealed as it streams: its fields are audited when it ends.
    streamed: Option<Arc<streaming::StreamReport>>,
}

/// The caller as views saw them: the verification result and, for a verified token, the
/// subject's pseudonym (never the subject or a claim).
#[derive(Debug, Clone)]
pub struct CallerRecord {
    /// `verified`, `anonymous`, or why the token was refused (`expired`, `bad_signature`, …).
    pub result: &'static str,
    /// [`crate::identity::Verifier::subject_hash`] of a verified caller.
    pub subject: Option<String>,
}

/// Adds `header` to the answer's `Vary` (once; `Vary: *` already covers it).
fn vary_on(headers: &mut http::HeaderMap, header: http::header::HeaderName) {
    let listed = headers.get_all(http::header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|n| n == "*" || n.eq_ignore_ascii_case(header.as_str()))
        })
    });
    if !listed {
        headers.append(
            http::header::VARY,
            HeaderValue::from_str(header.as_str()).expect("a header name is a header value"),
        );
    }
}

/// What [`forward`] needs besides the request: the state it began with and facts about it.
struct Context<'a> {
    runtime: &'a Runtime,
    /// `jti`s of client-encrypted values (process-wide, kept across reloads).
    replay: &'a dyn ReplayStore,
    /// The store the replicas share, when configured: `jti`s are settled there before the
    /// request is forwarded, `replay` being its fallback.
    shared_replay: Option<&'a RedisReplayStore>,
    metrics: &'a crate::metrics::Metrics,
    conn: ConnInfo,
    request_id: &'a HeaderValue,
}

/// Relays the request to the upstream and returns its response, ready for the client.
async fn forward(
    mut req: Request<Incoming>,
    context: &Context<'_>,
    matched: Matched<'_>,
    bytes_in: Arc<AtomicU64>,
    report: &mut Report,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Report {
        fields: ops,
        findings,
        upstream_status,
        caller,
        streamed,
    } = report;
    let Context {
        runtime,
        replay,
        shared_replay,
        metrics,
        conn,
        request_id,
    } = *context;
    let Matched {
        route,
        cover,
        response: response_rules,
        request: request_rules,
    } = matched;
    let keyring = runtime.settings.keys.ring.as_deref();
    let limit = runtime.settings.limits.max_body_bytes;
    // Only HTTP/1.1 can upgrade; HTTP/2 forbids the Upgrade header (RFC 9113 §8.2.2). Routes
    // with field rules of their own never upgrade: a tunnel would carry their fields
    // unexamined. The field policy alone does not stop a WebSocket (its messages are not
    // HTTP bodies; SECURITY.md says so); an app that answers the upgrade with a body instead
    // still has that body transformed.
    let upgrade = req.version() == Version::HTTP_11
        && hop::wants_upgrade(req.headers())
        && request_rules.is_none_or(|r| !r.has_own())
        && response_rules.is_none_or(|r| !r.has_own());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    // Views by caller identity: the caller's token is verified once, and only where a rule
    // asks who calls. No token or an invalid one: every rule's own action (fail closed).
    let viewed_by = response_rules
        .filter(|r| r.has_views())
        .and(runtime.settings.identity.as_ref())
        .map(|v| v.header().clone());
    // The caller's token is verified once, and only where a rule asks who calls: views, or
    // a route whose data subject is a claim. No token or an invalid one: every rule's own
    // action (fail closed), and no subject.
    let subject_source = route.and_then(|r| r.rules.subject.as_ref());
    let asks_caller = response_rules.is_some_and(|r| r.has_views())
        || matches!(subject_source, Some(SubjectSource::Claim(_)));
    let identity = match (&runtime.settings.identity, asks_caller) {
        (Some(verifier), true) => Some((verifier, verifier.verify_async(&parts.headers).await)),
        _ => None,
    };
    // Path parameters are read only where a view or the data subject names one: routing
    // normalised the path already, and most requests need nothing from it here.
    let needs_params = response_rules.is_some_and(|r| r.has_views())
        || matches!(subject_source, Some(SubjectSource::Param(_)));
    let segments = if needs_params {
        crate::routing::normalize_path(parts.uri.path())
    } else {
        Vec::new()
    };
    let seen = match &identity {
        Some((verifier, identity)) => {
            let (seen, record) = match identity {
                Identity::Verified(c) => (
                    Some(Seen {
                        subject: &c.subject,
                        claims: &c.claims,
                    }),
                    CallerRecord {
                        result: "verified",
                        subject: Some(verifier.subject_hash(c)),
                    },
                ),
                Identity::Anonymous => (
                    None,
                    CallerRecord {
                        result: "anonymous",
                        subject: None,
                    },
                ),
                Identity::Invalid(why) => (
                    None,
                    CallerRecord {
                        result: why.as_str(),
                        subject: None,
                    },
                ),
            };
            *caller = Some(record);
            seen
        }
        None => None,
    };
    // The data subject, for subject-bound tokens (`fsb1`).
    let data_subject = route.map_or(DataSubject::Unknown, |r| {
        r.data_subject(&segments, seen.map(|s| s.claims))
    });
    let sight = match response_rules {
        Some(rules) => {
            let template = cover.or(route).map(|r| r.template());
            let param = |name: &str| {
                template
                    .and_then(|t| t.param(name, &segments))
                    .map(str::to_string)
            };
            rules.sight(seen, &param)
        }
        None => Sight::default(),
    }
    .with_subject(data_subject.clone());
    // HTTP/2 carries the host in `:authority`; HTTP/1.1 in `Host`.
    let host = parts.headers.get(HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    hop::strip(&mut parts.headers, upgrade);
    hop::strip_underscored(&mut parts.headers);
    // The proxy already answered `Expect: 100-continue` to the client; the upstream gets the body.
    parts.headers.remove(http::header::EXPECT);
    let peer = conn.peer.ip().to_canonical();
    let trusted_peer = runtime
        .settings
        .trusted_proxies
        .iter()
        .any(|net| net.contains(&peer));
    hop::set_forwarded(&mut parts.headers, peer, host.as_ref(), trusted_peer);
    if let Some(h) = host {
        parts.headers.insert(HOST, h);
    }
    parts.headers.insert(X_REQUEST_ID, request_id.clone());

    let envelope_route = route.is_some_and(|r| r.rules.envelope);
    // With a shared store, the `jti`s opened below are queued and settled in one round trip
    // before anything is forwarded.
    let deferred = Deferred::default();
    let replay_check = Replay {
        store: replay,
        window: runtime.settings.replay_window,
        now: crate::replay::unix_now(),
        deferred: shared_replay.map(|_| &deferred),
    };
    let openers = Openers {
        keyring,
        client: runtime.settings.keys.client.as_deref(),
        max_encrypted_values: runtime.settings.limits.max_encrypted_values,
        replay: Some(replay_check),
        subject: data_subject.of_request(),
    };
    // Values carried in the query string and in headers are opened before the body (one
    // budget of client-encrypted values for the whole request).
    let mut path_and_query = parts.uri.path_and_query().cloned();
    if let Some(rules) = request_rules.filter(|_| !envelope_route) {
        if let Some(opened) = carriers::open_query(path_and_query.as_ref(), rules, &openers, ops)? {
            path_and_query = Some(opened);
        }
        carriers::open_headers(&mut parts.headers, rules, &openers, ops)?;
    }
    let upstream = runtime.upstream(conn.worker);
    parts.uri = upstream.uri_for(path_and_query.as_ref());
    parts.version = Version::HTTP_11;
    // Routes whose responses are transformed get one whole representation from the app,
    // never a slice of it or a verdict on a guess (contract §7).
    let transforms_response = response_rules.is_some_and(|r| r.has_body_rules()) || envelope_route;
    if transforms_response {
        boundary::strip_request(&mut parts.headers);
    }
    // The guard reads every JSON answer but an envelope's (sealed whole).
    let guard = runtime.settings.guard.as_ref().filter(|_| !envelope_route);
    let mut session = None;
    let body = if upgrade {
        empty()
    } else if envelope_route {
        let counted = CountedBody::new(body, bytes_in).boxed_unsync();
        let (plain, key) = envelope::open_request(
            &mut parts.headers,
            counted,
            runtime.settings.keys.client.as_deref(),
            limit,
            (
                &replay_check,
                route
                    .and_then(|r| r.rules.request.as_ref())
                    .and_then(|q| q.max_age),
            ),
            ops,
        )
        .await?;
        session = Some(key);
        plain
    } else if let Some(rules) = request_rules {
        let counted = CountedBody::new(body, bytes_in).boxed_unsync();
        let openers = Openers {
            max_encrypted_values: carriers::remaining_budget(&openers, ops),
            ..openers
        };
        fields::rewrite_request(&mut parts.headers, counted, rules, &openers, limit, ops).await?
    } else {
        CountedBody::new(body, bytes_in).boxed_unsync()
    };
    if let Some(store) = shared_replay {
        settle_replay(store, &deferred, replay, replay_check.now, metrics).await?;
    }
    if transforms_response || guard.is_some() {
        // Ask for a body the proxy can read without decoding; gzip, deflate and br are still
        // decoded if sent, anything else is refused below (fail closed).
        parts.headers.insert(
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    let method = parts.method.clone();
    let mut resp = upstream
        .send(Request::from_parts(parts, body), upgrade)
        .await?;
    *upstream_status = Some(resp.status().as_u16());
    // Named response headers are sealed on every answer of the route, an upgrade's included.
    if let Some(rules) = response_rules {
        let subject = data_subject.of_request();
        carriers::transform_response_headers(resp.headers_mut(), rules, keyring, subject, ops)?;
    }

    if let Some(client_upgrade) = client_upgrade {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let request_id = request_id.to_str().unwrap_or_default().to_string();
            upgrade::tunnel(client_upgrade, upstream_upgrade, request_id);
            let (mut parts, _) = resp.into_parts();
            hop::strip(&mut parts.headers, true);
            return Ok(Response::from_parts(parts, empty()));
        }
    }
    hop::strip(resp.headers_mut(), false);
    if transforms_response {
        let status = resp.status();
        boundary::check_response(status, resp.headers_mut())?;
    }
    if let Some(session) = &session {
        let deadline = runtime.settings.timeouts.upstream_response;
        return envelope::seal_response(resp, &method, session, limit, deadline, ops).await;
    }
    // The answer depends on who asks: no shared cache may give one caller's view to another.
    if let Some(header) = viewed_by {
        vary_on(resp.headers_mut(), header);
    }
    let stage = fields::ResponseStage {
        rules: response_rules.filter(|r| r.has_body_rules()),
        guard,
        keyring,
        keyring_shared: runtime.settings.keys.ring.as_ref(),
        limit,
        deadline: runtime.settings.timeouts.upstream_response,
        request_id: request_id.to_str().unwrap_or_default(),
        sight: &sight,
    };
    if stage.applies() && !fields::response_has_no_body(&method, resp.status()) {
        fields::rewrite_response(resp, &stage, ops, findings, streamed).await
    } else {
        Ok(resp)
    }
}

/// Records the request's `jti`s in the shared store (one round trip), or refuses it: a replay
/// names the field like any rejected value; Redis not answering where freshness is required
/// is a 503 (docs/replicas.md).
async fn settle_replay(
    store: &RedisReplayStore,
    deferred: &Deferred,
    fallback: &dyn ReplayStore,
    now: u64,
    metrics: &crate::metrics::Metrics,
) -> Result<(), ProxyError> {
    let claims = deferred.take();
    if claims.is_empty() {
        return Ok(());
    }
    let settled = store.settle(claims, fallback, now).await;
    metrics.replay_store_up(settled.answered);
    let result = match (&settled.outcome, settled.answered) {
        (Ok(()), true) => "recorded",
        (Ok(()), false) => "fallback",
        (Err(Refusal::Replayed(_)), _) => "replayed",
        (Err(Refusal::Unavailable(_)), _) => "unavailable",
        (Err(Refusal::StoreFull(_)), _) => "fallback_full",
    };
    metrics.replay_store(result);
    match settled.outcome {
        Ok(()) => Ok(()),
        Err(Refusal::Replayed(claim)) if claim.envelope => Err(ProxyError::EnvelopeRejected {
            reason: crate::reason::Reason::Replayed,
            kid: claim.kid,
        }),
        Err(Refusal::Replayed(claim)) => Err(ProxyError::FieldRejected {
            path: claim.field,
            reason: crate::reason::Reason::Replayed,
            kid: claim.kid,
        }),
        Err(Refusal::Unavailable(_)) => Err(ProxyError::ReplayStoreUnavailable),
        Err(Refusal::StoreFull(_)) => Err(ProxyError::ReplayCacheFull),
    }
}
