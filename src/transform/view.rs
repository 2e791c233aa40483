//! Field views: what a response rule does to a field can depend on who calls. A rule's
//! `views` are tried in order for each request; the first whose condition holds for the
//! verified caller chooses what the caller sees (`plain`, or any operation); when none holds —
//! and always when the caller has no valid token — the rule's own action applies, so a rule
//! without a matching view is exactly as restrictive as it was without views (fail closed).
//!
//! The caller is decided once per request (the JWT verified by [`crate::identity`]); this
//! module only evaluates conditions against its subject and claims, and the route's path
//! parameters, so a view is chosen per rule per request, not per node, and both engines (byte
//! splice and `Value`) stay what they are.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::operation::Operation;
pub use super::outcome::ViewMark;
use super::subject::DataSubject;

/// A caller whose token verified: what conditions may look at.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub subject: &'a str,
    pub claims: &'a Map<String, Value>,
}

/// When a view applies: every part written must hold (and none holds without a verified
/// caller).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Condition {
    /// `authenticated: true`: any verified caller.
    pub authenticated: bool,
    /// `subject: "{id}"`: the caller's `sub` equals this path parameter of the route.
    pub subject_param: Option<String>,
    /// `claims: {role: admin, "realm_access.roles": auditor}`: each claim (a dotted path into
    /// nested objects) equals the value, or is an array holding it.
    pub claims: Vec<(String, Value)>,
    /// `scope: [profiles:read]`: every scope is granted (`scope`, space-separated, or `scp`).
    pub scopes: Vec<String>,
}

impl Condition {
    /// Whether the condition holds for `caller` on a request with path parameters `param`.
    pub fn holds(&self, caller: Option<Seen<'_>>, param: &dyn Fn(&str) -> Option<String>) -> bool {
        let Some(caller) = caller else {
            return false;
        };
        if let Some(name) = &self.subject_param {
            // A route without the parameter (or a request matching no route) has no owner.
            if param(name).is_none_or(|value| value != caller.subject) {
                return false;
            }
        }
        self.claims
            .iter()
            .all(|(path, want)| claim(caller.claims, path).is_some_and(|got| matches(got, want)))
            && self.scopes.iter().all(|s| granted(caller.claims, s))
    }
}

fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    // An exact member first (`"https://example.com/roles"` has dots of its own).
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut at = claims.get(parts.next()?)?;
    for part in parts {
        at = at.as_object()?.get(part)?;
    }
    Some(at)
}

fn matches(got: &Value, want: &Value) -> bool {
    match got {
        Value::Array(items) => items.iter().any(|i| i == want),
        other => other == want,
    }
}

fn granted(claims: &Map<String, Value>, scope: &str) -> bool {
    let listed = |v: &Value| match v {
        Value::String(s) => s.split(' ').any(|x| x == scope),
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(scope)),
        _ => false,
    };
    claims.get("scope").is_some_and(listed) || claims.get("scp").is_some_and(listed)
}

/// One view of a rule: when it applies and what the caller then sees.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub when: Condition,
    /// `None`: the value as the app sent it (`show: plain`).
    pub show: Option<Operation>,
}

impl View {
    /// The name `show` has in the config, metrics and audit records.
    pub fn show_name(show: Option<Operation>) -> &'static str {
        show.map_or("plain", Operation::name)
    }

    /// `subject = {id} -> plain`, for `check` and `explain`.
    pub fn describe(&self) -> String {
        let w = &self.when;
        let mut parts = Vec::new();
        if w.authenticated {
            parts.push("authenticated".to_string());
        }
        if let Some(p) = &w.subject_param {
            parts.push(format!("subject = {{{p}}}"));
        }
        for (name, value) in &w.claims {
            parts.push(format!("{name} = {value}"));
        }
        for s in &w.scopes {
            parts.push(format!("scope {s}"));
        }
        let show = match self.show {
            Some(Operation::Mask { keep_last }) => format!("mask (keep_last {keep_last})"),
            other => Self::show_name(other).to_string(),
        };
        format!("{} -> {show}", parts.join(" and "))
    }

    /// Every view of a rule, for `check` and `explain`: `views: a -> plain; b -> mask`.
    pub fn describe_all(views: &[View]) -> Option<String> {
        (!views.is_empty()).then(|| {
            let all: Vec<String> = views.iter().map(View::describe).collect();
            format!("views: {}", all.join("; "))
        })
    }
}

/// What each rule of a table does for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// `None`: the node is shown as the app sent it.
    pub show: Option<Operation>,
    /// `None` when the rule has no views (nothing was decided).
    pub mark: Option<ViewMark>,
}

/// The views chosen for one request, per rule of a response rule table (same indexes; see
/// `ResponseRules::sight`).
/// Empty when no rule has views: every rule does its own action, nothing allocated.
#[derive(Debug, Clone, Default)]
pub struct Sight {
    choices: Vec<Choice>,
    /// The data subject (the route's `subject`), for subject-bound tokens.
    subject: DataSubject,
}

impl Sight {
    /// The choices of a table's rules, in its order (see [`choose`]).
    pub fn new(choices: Vec<Choice>) -> Self {
        Self {
            choices,
            subject: DataSubject::Unknown,
        }
    }

    /// With the data subject (what `per_subject` rules seal for).
    pub fn with_subject(mut self, subject: DataSubject) -> Self {
        self.subject = subject;
        self
    }

    /// The data subject, if the route names one and the request has it.
    pub fn subject(&self) -> &DataSubject {
        &self.subject
    }

    /// What rule `index` (with action `op`) does this request.
    pub fn choice(&self, index: usize, op: Operation) -> Choice {
        self.choices.get(index).copied().unwrap_or(Choice {
            show: Some(op),
            mark: None,
        })
    }
}

/// The first view whose condition holds, else the rule's own action.
pub fn choose(
    op: Operation,
    views: &Arc<[View]>,
    caller: Option<Seen<'_>>,
    param: &dyn Fn(&str) -> Option<String>,
) -> Choice {
    if views.is_empty() {
        return Choice {
            show: Some(op),
            mark: None,
        };
    }
    for (i, view) in views.iter().enumerate() {
        if view.when.holds(caller, param) {
            return Choice {
                show: view.show,
                mark: Some(ViewMark::View(i as u16)),
            };
        }
    }
    Choice {
        show: Some(op),
        mark: Some(ViewMark::Default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn conditions_need_a_verified_caller_and_every_part() {
        let no_params = |_: &str| None;
        let id42 = |n: &str| (n == "id").then(|| "42".to_string());
        let c = claims(json!({
            "role": "admin", "groups": ["a", "b"], "realm_access": {"roles": ["auditor"]},
            "scope": "profiles:read profiles:write", "https://x.test/tier": "gold"
        }));
        let me = Seen {
            subject: "42",
            claims: &c,
        };
        let other = Seen {
            subject: "43",
            claims: &c,
        };
        let owner = Condition {
            subject_param: Some("id".into()),
            ..Default::default()
        };
        assert!(owner.holds(Some(me), &id42));
        assert!(!owner.holds(Some(other), &id42));
        assert!(!owner.holds(None, &id42), "no token: nothing holds");
        assert!(
            !owner.holds(Some(me), &no_params),
            "no such parameter: no owner"
        );
        let any = Condition {
            authenticated: true,
            ..Default::default()
        };
        assert!(any.holds(Some(other), &no_params));
        assert!(!any.holds(None, &no_params));
        let role = |k: &str, v: Value| Condition {
            claims: vec![(k.into(), v)],
            ..Default::default()
        };
        assert!(role("role", json!("admin")).holds(Some(me), &no_params));
        assert!(!role("role", json!("Admin")).holds(Some(me), &no_params));
        assert!(role("groups", json!("b")).holds(Some(me), &no_params));
        assert!(role("realm_access.roles", json!("auditor")).holds(Some(me), &no_params));
        assert!(role("https://x.test/tier", json!("gold")).holds(Some(me), &no_params));
        assert!(!role("missing", json!("x")).holds(Some(me), &no_params));
        let scoped = |s: &[&str]| Condition {
            scopes: s.iter().map(|x| x.to_string()).collect(),
            ..Default::default()
        };
        assert!(scoped(&["profiles:read"]).holds(Some(me), &no_params));
        assert!(scoped(&["profiles:read", "profiles:write"]).holds(Some(me), &no_params));
        assert!(
            !scoped(&["profiles"]).holds(Some(me), &no_params),
            "whole scopes only"
        );
        assert!(!scoped(&["admin"]).holds(Some(me), &no_params));
        let both = Condition {
            subject_param: Some("id".into()),
            claims: vec![("role".into(), json!("admin"))],
            ..Default::default()
        };
        assert!(both.holds(Some(me), &id42));
        assert!(!both.holds(Some(other), &id42));
    }

    #[test]
    fn the_first_view_that_holds_chooses_else_the_rule() {
        let c = claims(json!({"role": "support"}));
        let support = Seen {
            subject: "7",
            claims: &c,
        };
        let views: Arc<[View]> = vec![
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
                show: Some(Operation::Mask { keep_last: 4 }),
            },
        ]
        .into();
        let id = |n: &str| (n == "id").then(|| "7".to_string());
        let not_theirs = |n: &str| (n == "id").then(|| "8".to_string());
        let got = choose(Operation::Redact, &views, Some(support), &id);
        assert_eq!((got.show, got.mark), (None, Some(ViewMark::View(0))));
        let got = choose(Operation::Redact, &views, Some(support), &not_theirs);
        assert_eq!(got.show, Some(Operation::Mask { keep_last: 4 }));
        assert_eq!(got.mark, Some(ViewMark::View(1)));
        let got = choose(Operation::Redact, &views, None, &id);
        assert_eq!(
            (got.show, got.mark),
            (Some(Operation::Redact), Some(ViewMark::Default))
        );
        let none: Arc<[View]> = Vec::new().into();
        let got = choose(Operation::Seal, &none, Some(support), &id);
        assert_eq!((got.show, got.mark), (Some(Operation::Seal), None));
    }
}
