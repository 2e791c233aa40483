//! Prometheus metrics, served as text on the admin listener's `/metrics`.
//!
//! Label values are bounded: routes come from the config (plus `unmatched`), methods outside
//! the standard set are reported as `OTHER`, so a client cannot grow the series count.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets in seconds: sub-millisecond resolution where a sidecar lives, up to the
/// upstream response timeout's order of magnitude.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// A shared string label value that costs a refcount, not an allocation, per request.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Label(pub Arc<str>);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Label,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    route: Label,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FieldLabels {
    route: Label,
    action: &'static str,
    kid: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KidLabels {
    kid: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RotationLabels {
    kid: Label,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    outcome: &'static str,
    trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuardLabels {
    route: Label,
    detector: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SelectorLabels {
    route: Label,
    selector: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViewLabels {
    route: Label,
    selector: Label,
    /// `default` or `views.N`.
    view: Label,
    /// What the field got: `shown`, `sealed`, `redacted`, `masked`.
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdentityLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplayStoreLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FieldFailureLabels {
    route: Label,
    reason: &'static str,
}

/// Every metric fieldseal exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    tls_handshake_failures: Counter,
    open_connections: Gauge,
    rejected_connections: Counter,
    fields: Family<FieldLabels, Counter>,
    field_failures: Family<FieldFailureLabels, Counter>,
    tokens_opened: Family<KidLabels, Counter>,
    tokens_sealed: Family<KidLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    reload_failures: Counter,
    last_reload_success: Gauge,
    rotation_due: Family<RotationLabels, Gauge>,
    primary_key_age: Gauge,
    /// Per-key usage for `GET /keys` and the rotation policy.
    pub key_usage: crate::key_usage::KeyUsage,
    audit_events: Counter,
    audit_dropped: Counter,
    guard_detections: Family<GuardLabels, Counter>,
    guard_unscanned: Family<RouteLabels, Counter>,
    selector_matches: Family<SelectorLabels, Counter>,
    view_decisions: Family<ViewLabels, Counter>,
    identity: Family<IdentityLabels, Counter>,
    replay_store: Family<ReplayStoreLabels, Counter>,
    replay_store_up: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fieldseal");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(LATENCY_BUCKETS.iter().copied())) as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to the end of the response body, by route",
            latency.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Requests that failed at the upstream, by route and kind (unreachable, timeout, protocol)",
            upstream_errors.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            tls_handshake_failures.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections currently open",
            open_connections.clone(),
        );
        let rejected_connections = Counter::default();
        registry.register(
            "rejected_connections",
            "Client connections refused because limits.max_connections was reached",
            rejected_connections.clone(),
        );
        let fields = Family::<FieldLabels, Counter>::default();
        registry.register(
            "fields",
            "JSON fields processed, by route, action (sealed, sealed_expiring, sealed_searchable, sealed_for_subject, opened, opened_expiring, opened_searchable, opened_for_subject, decrypted, redacted, masked, shown, plaintext_passed, envelope_opened, envelope_sealed) and key id",
            fields.clone(),
        );
        let field_failures = Family::<FieldFailureLabels, Counter>::default();
        registry.register(
            "field_failures",
            "Bodies refused by the field stage, by route and reason",
            field_failures.clone(),
        );
        let tokens_opened = Family::<KidLabels, Counter>::default();
        registry.register(
            "tokens_opened",
            "fs1 tokens opened, by key id: when an old key's count stops growing, it can be retired",
            tokens_opened.clone(),
        );
        let tokens_sealed = Family::<KidLabels, Counter>::default();
        registry.register(
            "tokens_sealed",
            "Tokens sealed (fs1 and fse1), by key id (AES-GCM with random nonces: keep each key well below 2^32)",
            tokens_sealed.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Reload attempts, by outcome (ok, failed, unchanged) and trigger (signal, watch)",
            reloads.clone(),
        );
        let reload_failures = Counter::default();
        registry.register(
            "config_reload_failures",
            "Reloads refused because the new config, keyring or certificate was invalid; the old state kept serving",
            reload_failures.clone(),
        );
        let last_reload_success = Gauge::default();
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time the serving state was last loaded (startup or reload)",
            last_reload_success.clone(),
        );
        let rotation_due = Family::<RotationLabels, Gauge>::default();
        registry.register(
            "key_rotation_due",
            "1 when the primary key has passed keys.rotation.max_age (reason=age) or max_encryptions (reason=encryptions)",
            rotation_due.clone(),
        );
        let primary_key_age = Gauge::default();
        registry.register(
            "primary_key_age_seconds",
            "Age of the primary key, from its created_at",
            primary_key_age.clone(),
        );
        let audit_events = Counter::default();
        registry.register(
            "audit_events",
            "Request `fields` events queued for the audit log",
            audit_events.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "audit_dropped",
            "Request `fields` events dropped because the audit log queue was full",
            audit_dropped.clone(),
        );
        let guard_detections = Family::<GuardLabels, Counter>::default();
        registry.register(
            "guard_detections",
            "Sensitive values the guard found in answers, by route and detector (ssn, card, email)",
            guard_detections.clone(),
        );
        let guard_unscanned = Family::<RouteLabels, Counter>::default();
        registry.register(
            "guard_unscanned",
            "JSON answers above limits.max_body_bytes that went out uninspected (guard in observe mode, no field rules)",
            guard_unscanned.clone(),
        );
        let selector_matches = Family::<SelectorLabels, Counter>::default();
        registry.register(
            "selector_matches",
            "Fields each selector picked, by route and selector as written: one that stays at 0 under live traffic is probably misspelt",
            selector_matches.clone(),
        );
        let view_decisions = Family::<ViewLabels, Counter>::default();
        registry.register(
            "view_decisions",
            "Fields of rules with views, by route, selector, the view that chose (default or views.N) and what the field got",
            view_decisions.clone(),
        );
        let identity = Family::<IdentityLabels, Counter>::default();
        registry.register(
            "identity",
            "Requests whose caller a view asked about: verified, anonymous, or why the token was refused",
            identity.clone(),
        );
        for result in ["verified", "anonymous"].into_iter().chain(
            crate::identity::InvalidReason::ALL
                .iter()
                .map(|r| r.as_str()),
        ) {
            let _ = identity.get_or_create(&IdentityLabels { result });
        }
        let replay_store = Family::<ReplayStoreLabels, Counter>::default();
        registry.register(
            "replay_store",
            "Requests whose jtis were settled with the shared replay store (Redis): recorded, replayed, or - while it did not answer - fallback (checked by this replica alone), fallback_full, unavailable (refused: a max_age route)",
            replay_store.clone(),
        );
        let replay_store_up = Gauge::default();
        registry.register(
            "replay_store_up",
            "1 while the shared replay store (Redis) answers (or none is configured), 0 after a round trip it did not answer",
            replay_store_up.clone(),
        );
        replay_store_up.set(1);
        Self {
            replay_store,
            replay_store_up,
            view_decisions,
            identity,
            guard_detections,
            guard_unscanned,
            selector_matches,
            audit_events,
            audit_dropped,
            tokens_opened,
            tokens_sealed,
            reloads,
            reload_failures,
            last_reload_success,
            rotation_due,
            primary_key_age,
            key_usage: crate::key_usage::KeyUsage::new(),
            fields,
            field_failures,
            registry,
            requests,
            latency,
            upstream_errors,
            tls_handshake_failures,
            open_connections,
            rejected_connections,
        }
    }

    pub fn observe_request(
        &self,
        route: &Arc<str>,
        method: &Method,
        status: u16,
        elapsed: Duration,
    ) {
        let route = Label(route.clone());
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                method: method_label(method),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }

    pub fn upstream_error(&self, route: &Arc<str>, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                route: Label(route.clone()),
                kind,
            })
            .inc();
    }

    /// Counts `n` field operations of one kind (callers aggregate per request: a label
    /// lookup costs more than the increment).
    pub fn field_ops(
        &self,
        route: &Arc<str>,
        action: crate::transform::outcome::Action,
        kid: Option<&str>,
        n: u64,
    ) {
        let kid_label = Label(Arc::from(kid.unwrap_or("-")));
        self.fields
            .get_or_create(&FieldLabels {
                route: Label(route.clone()),
                action: action.as_str(),
                kid: kid_label.clone(),
            })
            .inc_by(n);
        let Some(kid) = kid else { return };
        match action {
            // Every format's opening is a use of the key (`keys retire` asks about it).
            crate::transform::outcome::Action::Opened
            | crate::transform::outcome::Action::OpenedExpiring
            | crate::transform::outcome::Action::OpenedSearchable
            | crate::transform::outcome::Action::OpenedForSubject => {
                self.tokens_opened
                    .get_or_create(&KidLabels { kid: kid_label })
                    .inc_by(n);
                self.key_usage.opened(kid, n);
            }
            // Both formats use the key: the rotation policy's `max_encryptions` counts both.
            crate::transform::outcome::Action::Sealed
            | crate::transform::outcome::Action::SealedExpiring
            | crate::transform::outcome::Action::SealedSearchable
            | crate::transform::outcome::Action::SealedForSubject => {
                self.tokens_sealed
                    .get_or_create(&KidLabels { kid: kid_label })
                    .inc_by(n);
                self.key_usage.sealed(kid, n);
            }
            _ => {}
        }
    }

    /// A reload attempt's outcome: `ok`, `failed` or `unchanged`; trigger `signal` or `watch`.
    pub fn reload(&self, outcome: &'static str, trigger: &'static str) {
        self.reloads
            .get_or_create(&ReloadLabels { outcome, trigger })
            .inc();
        if outcome == "failed" {
            self.reload_failures.inc();
        }
    }

    /// The serving state was (re)loaded now.
    pub fn loaded_now(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_reload_success
            .set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    /// Publishes the rotation state of the primary key `kid`.
    pub fn rotation_state(&self, kid: &str, age: Duration, age_due: bool, encryptions_due: bool) {
        self.primary_key_age
            .set(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
        self.rotation_due.clear();
        let kid = Label(Arc::from(kid));
        for (reason, due) in [("age", age_due), ("encryptions", encryptions_due)] {
            self.rotation_due
                .get_or_create(&RotationLabels {
                    kid: kid.clone(),
                    reason,
                })
                .set(i64::from(due));
        }
    }

    pub fn field_failure(&self, route: &Arc<str>, reason: &'static str) {
        self.field_failures
            .get_or_create(&FieldFailureLabels {
                route: Label(route.clone()),
                reason,
            })
            .inc();
    }

    /// What the guard found in one answer: `n` detections by `detector`.
    pub fn guard_detections(&self, route: &Arc<str>, detector: &'static str, n: u64) {
        self.guard_detections
            .get_or_create(&GuardLabels {
                route: Label(route.clone()),
                detector,
            })
            .inc_by(n);
    }

    /// An answer the guard could not inspect (above the body limit, `observe` mode).
    pub fn guard_unscanned(&self, route: &Arc<str>) {
        self.guard_unscanned
            .get_or_create(&RouteLabels {
                route: Label(route.clone()),
            })
            .inc();
    }

    /// One field of a rule with views: which view chose, and what the field got.
    pub fn view_decision(
        &self,
        route: &Arc<str>,
        selector: &Arc<str>,
        view: crate::transform::view::ViewMark,
        action: &'static str,
    ) {
        self.view_decisions
            .get_or_create(&ViewLabels {
                route: Label(route.clone()),
                selector: Label(selector.clone()),
                view: Label(Arc::from(view.label())),
                action,
            })
            .inc();
    }

    /// A request whose caller a view asked about.
    /// Names every outcome of the shared replay store at 0 when one is configured, so a
    /// dashboard shows the series before the first outage.
    pub fn replay_store_configured(&self, configured: bool) {
        if configured {
            for result in [
                "recorded",
                "replayed",
                "fallback",
                "fallback_full",
                "unavailable",
            ] {
                let _ = self
                    .replay_store
                    .get_or_create(&ReplayStoreLabels { result });
            }
        }
    }

    pub fn replay_store(&self, result: &'static str) {
        self.replay_store
            .get_or_create(&ReplayStoreLabels { result })
            .inc();
    }

    pub fn replay_store_up(&self, up: bool) {
        self.replay_store_up.set(i64::from(up));
    }

    pub fn identity(&self, result: &'static str) {
        self.identity
            .get_or_create(&IdentityLabels { result })
            .inc();
    }

    /// `n` fields picked by `selector` on `route`.
    pub fn selector_matches(&self, route: &Arc<str>, selector: &Arc<str>, n: u64) {
        self.selector_matches
            .get_or_create(&SelectorLabels {
                route: Label(route.clone()),
                selector: Label(selector.clone()),
            })
            .inc_by(n);
    }

    /// Every configured (route, selector) pair at 0, so a selector that never matches shows
    /// up as one rather than as a missing series.
    pub fn register_selectors(&self, settings: &crate::config::Settings) {
        let routes = settings
            .routes
            .iter()
            .map(|r| (&r.name, &r.rules))
            .chain(std::iter::once((
                &*crate::routing::UNMATCHED,
                &settings.unmatched_rules,
            )));
        for (route, rules) in routes {
            let response = rules.response.iter().flat_map(|r| {
                let body = r.rules().iter().map(|x| &x.selector.source);
                body.chain(r.headers().iter().map(|h| &h.field.source))
            });
            let request = rules.request.iter().flat_map(|r| {
                let body = r.decrypt.iter().map(|s| &s.source);
                body.chain(r.named.iter().map(|n| &n.source))
            });
            for source in response.chain(request) {
                let _ = self.selector_matches.get_or_create(&SelectorLabels {
                    route: Label(route.clone()),
                    selector: Label(source.clone()),
                });
            }
        }
    }

    /// A request's `fields` event was queued for the audit log.
    pub fn audit_event(&self) {
        self.audit_events.inc();
    }

    /// A request's `fields` event was dropped: the audit log queue was full.
    pub fn audit_dropped(&self) {
        self.audit_dropped.inc();
    }

    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    pub fn connection_rejected(&self) {
        self.rejected_connections.inc();
    }

    /// Counts a connection as open until the guard drops.
    pub fn connection_opened(self: &Arc<Self>) -> ConnectionGuard {
        self.open_connections.inc();
        ConnectionGuard(self.clone())
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
            let _ = writeln!(out, "# metrics encoding failed");
        }
        out
    }
}

/// Decrements the open-connection gauge when the connection ends.
pub struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open_connections.dec();
    }
}

/// Bounded method label.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_request_counts_and_bounded_methods() {
        let m = Arc::new(Metrics::new());
        let route: Arc<str> = Arc::from("user");
        m.observe_request(&route, &Method::GET, 200, Duration::from_millis(3));
        m.observe_request(
            &route,
            &Method::from_bytes(b"BREW").unwrap(),
            200,
            Duration::from_millis(3),
        );
        m.upstream_error(&route, "timeout");
        let guard = m.connection_opened();
        let text = m.encode();
        assert!(
            text.contains(r#"fieldseal_requests_total{route="user",method="GET",status="200"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"method="OTHER""#));
        assert!(!text.contains("BREW"));
        assert!(text.contains(r#"fieldseal_upstream_errors_total{route="user",kind="timeout"} 1"#));
        assert!(text.contains("fieldseal_open_connections 1"));
        drop(guard);
        assert!(m.encode().contains("fieldseal_open_connections 0"));
    }
}
