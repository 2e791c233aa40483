//! The rotation policy (`keys.rotation`): is the primary key due for rotation, by age or by
//! the number of seals it has made? A running proxy cannot rotate its own keyring (it is
//! usually a read-only Kubernetes Secret), so "due" means: a metric, a warning log line once
//! per key and reason, and detail on `/readyz` — for an operator or a CronJob to act on with
//! `fieldseal keys rotate`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::settings::RotationPolicy;
use crate::crypto::Keyring;
use crate::key_usage::KeyUsage;
use crate::metrics::Metrics;

/// The primary key's standing against the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotationStatus {
    pub kid: String,
    #[serde(skip)]
    pub age: Duration,
    pub age_days: u64,
    pub encryptions: u64,
    /// Reasons rotation is due: `age`, `encryptions`.
    pub due: Vec<&'static str>,
}

/// Evaluates the primary of `ring` against `policy` at `now`. `encryptions` counts seals
/// made by this process (see `key_usage`).
pub fn evaluate(
    ring: &Keyring,
    policy: &RotationPolicy,
    encryptions: u64,
    now: SystemTime,
) -> RotationStatus {
    let primary = ring.primary();
    // Validated at load; an unparsable date would read as brand new, never as overdue.
    let created = humantime::parse_rfc3339_weak(&primary.created_at).unwrap_or(now);
    let age = now.duration_since(created).unwrap_or_default();
    let mut due = Vec::new();
    if policy.max_age.is_some_and(|max| age >= max) {
        due.push("age");
    }
    if encryptions >= policy.max_encryptions {
        due.push("encryptions");
    }
    RotationStatus {
        kid: primary.id.clone(),
        age,
        age_days: age.as_secs() / 86_400,
        encryptions,
        due,
    }
}

/// Publishes the status to metrics and warns once per key and reason.
#[derive(Debug, Default)]
pub struct RotationMonitor {
    warned: Mutex<HashSet<(String, &'static str)>>,
    last: Mutex<Option<RotationStatus>>,
}

impl RotationMonitor {
    pub fn check(
        &self,
        ring: &Keyring,
        policy: &RotationPolicy,
        usage: &KeyUsage,
        metrics: &Metrics,
    ) -> RotationStatus {
        let kid = &ring.primary().id;
        let status = evaluate(ring, policy, usage.sealed_total(kid), SystemTime::now());
        metrics.rotation_state(
            &status.kid,
            status.age,
            status.due.contains(&"age"),
            status.due.contains(&"encryptions"),
        );
        let mut warned = self.warned.lock().expect("rotation lock");
        for reason in &status.due {
            if warned.insert((status.kid.clone(), reason)) {
                tracing::warn!(
                    kid = %status.kid,
                    reason,
                    age_days = status.age_days,
                    encryptions = status.encryptions,
                    "primary key is due for rotation: run `fieldseal keys rotate`, update the keyring, reload"
                );
            }
        }
        *self.last.lock().expect("rotation lock") = Some(status.clone());
        status
    }

    /// The last status computed, for `/readyz`.
    pub fn last(&self) -> Option<RotationStatus> {
        self.last.lock().expect("rotation lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keyring::tests::test_keyring;

    #[test]
    fn due_by_age_and_by_encryptions() {
        let ring = test_keyring();
        let created = humantime::parse_rfc3339_weak(&ring.primary().created_at).unwrap();
        let day = Duration::from_secs(86_400);
        let policy = RotationPolicy {
            max_age: Some(90 * day),
            max_encryptions: 1000,
        };
        let fresh = evaluate(&ring, &policy, 10, created + 10 * day);
        assert_eq!((fresh.age_days, fresh.due.clone()), (10, vec![]));
        let old = evaluate(&ring, &policy, 10, created + 90 * day);
        assert_eq!(old.due, ["age"]);
        let busy = evaluate(&ring, &policy, 1000, created + day);
        assert_eq!(busy.due, ["encryptions"]);
        let both = evaluate(&ring, &policy, 5000, created + 400 * day);
        assert_eq!(both.due, ["age", "encryptions"]);
        // No max_age: age never makes rotation due; a clock before created_at reads as age 0.
        let no_age = RotationPolicy {
            max_age: None,
            max_encryptions: 1000,
        };
        assert!(evaluate(&ring, &no_age, 0, created + 4000 * day)
            .due
            .is_empty());
        assert_eq!(
            evaluate(&ring, &policy, 0, created - day).age,
            Duration::ZERO
        );
    }

    #[test]
    fn monitor_publishes_and_remembers() {
        let ring = test_keyring();
        let metrics = Metrics::new();
        let policy = RotationPolicy {
            max_age: None,
            max_encryptions: 2,
        };
        let monitor = RotationMonitor::default();
        assert!(monitor.last().is_none());
        metrics.key_usage.sealed(&ring.primary().id, 3);
        let status = monitor.check(&ring, &policy, &metrics.key_usage, &metrics);
        assert_eq!(status.due, ["encryptions"]);
        assert_eq!(monitor.last(), Some(status));
        let text = metrics.encode();
        assert!(
            text.contains(r#"fieldseal_key_rotation_due{kid="k1",reason="encryptions"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"fieldseal_key_rotation_due{kid="k1",reason="age"} 0"#));
    }
}
