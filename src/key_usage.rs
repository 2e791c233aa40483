//! Per-key usage seen by this process: tokens sealed and opened, and when each key was last
//! used. It answers the operator's question after a rotation — "is anything still presenting
//! tokens of the old key?" — before `keys retire` disables it (`GET /keys` on the admin
//! listener), and it feeds the rotation policy's encryption count.
//!
//! Counts live in memory and start at process start (`since`): several replicas, or a window
//! longer than the uptime, need the Prometheus counters (`fieldseal_tokens_opened_total{kid}`)
//! summed over replicas and time instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Counters of one key id.
#[derive(Debug, Default)]
pub struct KidUsage {
    opened: AtomicU64,
    sealed: AtomicU64,
    /// Unix seconds of the last use; 0 = never.
    last_opened: AtomicU64,
    last_sealed: AtomicU64,
}

/// Usage of every key id this process has sealed or opened with.
#[derive(Debug)]
pub struct KeyUsage {
    since: SystemTime,
    kids: RwLock<HashMap<String, Arc<KidUsage>>>,
}

impl Default for KeyUsage {
    fn default() -> Self {
        Self::new()
    }
}

/// The `GET /keys` document: written by the admin listener, read by `keys retire` and
/// `keys usage` — one definition for both sides, so they cannot drift apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageDocument {
    /// When counting began (process start), RFC 3339.
    pub since: String,
    /// The proxy's clock when it answered, RFC 3339: readers compare against it, not their own.
    pub now: String,
    pub keys: Vec<KidReport>,
}

/// One key's figures, as `GET /keys` reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KidReport {
    pub id: String,
    /// The key's state in the loaded keyring (`active`, `decrypt_only`, `disabled`), or
    /// `unknown` for a kid no longer in it.
    pub state: String,
    pub opened_total: u64,
    pub sealed_total: u64,
    pub last_opened: Option<String>,
    pub last_sealed: Option<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn rfc3339(unix: u64) -> Option<String> {
    (unix != 0).then(|| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
    })
}

impl KeyUsage {
    pub fn new() -> Self {
        Self {
            since: SystemTime::now(),
            kids: RwLock::new(HashMap::new()),
        }
    }

    /// When counting started (process start).
    pub fn since(&self) -> SystemTime {
        self.since
    }

    fn kid(&self, kid: &str) -> Arc<KidUsage> {
        if let Some(usage) = self.kids.read().expect("usage lock").get(kid) {
            return usage.clone();
        }
        self.kids
            .write()
            .expect("usage lock")
            .entry(kid.to_string())
            .or_default()
            .clone()
    }

    pub fn opened(&self, kid: &str, n: u64) {
        let usage = self.kid(kid);
        usage.opened.fetch_add(n, Ordering::Relaxed);
        usage.last_opened.store(unix_now(), Ordering::Relaxed);
    }

    pub fn sealed(&self, kid: &str, n: u64) {
        let usage = self.kid(kid);
        usage.sealed.fetch_add(n, Ordering::Relaxed);
        usage.last_sealed.store(unix_now(), Ordering::Relaxed);
    }

    /// Seals made with `kid` by this process.
    pub fn sealed_total(&self, kid: &str) -> u64 {
        self.kids
            .read()
            .expect("usage lock")
            .get(kid)
            .map_or(0, |u| u.sealed.load(Ordering::Relaxed))
    }

    /// Every key of the loaded keyring (with its state), then any other kid seen.
    pub fn report(&self, keyring: &[(String, String)]) -> Vec<KidReport> {
        let kids = self.kids.read().expect("usage lock");
        let row = |id: &str, state: &str| {
            let u = kids.get(id);
            let load = |f: fn(&KidUsage) -> &AtomicU64| {
                u.map_or(0, |u| f(u.as_ref()).load(Ordering::Relaxed))
            };
            KidReport {
                id: id.to_string(),
                state: state.to_string(),
                opened_total: load(|u| &u.opened),
                sealed_total: load(|u| &u.sealed),
                last_opened: rfc3339(load(|u| &u.last_opened)),
                last_sealed: rfc3339(load(|u| &u.last_sealed)),
            }
        };
        let mut out: Vec<KidReport> = keyring.iter().map(|(id, st)| row(id, st)).collect();
        let mut others: Vec<&String> = kids
            .keys()
            .filter(|k| !keyring.iter().any(|(id, _)| id == *k))
            .collect();
        others.sort();
        out.extend(others.into_iter().map(|k| row(k, "unknown")));
        out
    }

    /// The `GET /keys` document.
    pub fn report_json(&self, keyring: &[(String, String)]) -> String {
        serde_json::to_string(&UsageDocument {
            since: humantime::format_rfc3339_seconds(self.since).to_string(),
            now: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            keys: self.report(keyring),
        })
        .expect("the usage report serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_reports_keys_in_keyring_order_then_others() {
        let usage = KeyUsage::new();
        usage.sealed("k2", 3);
        usage.opened("k1", 2);
        usage.opened("k1", 1);
        usage.opened("old", 1);
        let ring = [
            ("k1".to_string(), "decrypt_only".to_string()),
            ("k2".to_string(), "active".to_string()),
            ("k3".to_string(), "disabled".to_string()),
        ];
        let report = usage.report(&ring);
        let ids: Vec<&str> = report.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["k1", "k2", "k3", "old"]);
        assert_eq!((report[0].opened_total, report[0].sealed_total), (3, 0));
        assert!(report[0].last_opened.is_some() && report[0].last_sealed.is_none());
        assert_eq!(
            (report[1].sealed_total, report[1].state.as_str()),
            (3, "active")
        );
        assert_eq!(report[2].opened_total, 0);
        assert!(report[2].last_opened.is_none());
        assert_eq!(report[3].state, "unknown");
        assert_eq!(usage.sealed_total("k2"), 3);
        let doc: serde_json::Value = serde_json::from_str(&usage.report_json(&ring)).unwrap();
        assert_eq!(doc["keys"][0]["id"], "k1");
        assert!(doc["since"].as_str().unwrap().ends_with('Z'));
    }
}
