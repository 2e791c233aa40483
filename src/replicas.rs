//! What each replica reports about its keys, where every replica's report can be read at once:
//! with a shared Redis (`replay.store: redis`), each process writes its `GET /keys` document
//! (the keys of the keyring it has loaded, their states, and its usage of each) to
//! `<prefix>replica:<instance>` every [`HEARTBEAT_INTERVAL`], with a lifetime of
//! [`HEARTBEAT_TTL`], and deletes it when it shuts down.
//!
//! `keys promote` reads them to promote a staged key only once every replica can open its
//! tokens, and `keys retire` to retire a key only once no replica still opens them
//! (docs/replicas.md). A replica that stops reporting drops out after [`HEARTBEAT_TTL`]; the
//! commands' `--expect N` says how many must report, so a missing one is noticed.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::state::Shared;

/// How often a replica writes its report. A reload is visible to `keys promote` within this.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// How long a report lives without being renewed: a few missed beats, so one slow round trip
/// does not make a replica vanish, yet a dead one is gone within seconds.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(10);

/// This process's name in the reports: the host name (a pod's name in Kubernetes) and the
/// process id, so replicas on one host stay apart.
pub fn instance_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "fieldseal".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(64)
        .collect();
    format!("{host}-{}", std::process::id())
}

/// The Redis key of `instance`'s report.
pub fn report_key(prefix: &str, instance: &str) -> String {
    format!("{prefix}replica:{instance}")
}

/// The current `GET /keys` document of this process.
pub fn report(shared: &Shared) -> String {
    let runtime = shared.runtime.load();
    let ring: Vec<(String, String)> = runtime
        .settings
        .keys
        .ring
        .as_ref()
        .map(|r| {
            r.keys()
                .iter()
                .map(|k| (k.id.clone(), k.state.to_string()))
                .collect()
        })
        .unwrap_or_default();
    shared.metrics.key_usage.report_json(&ring)
}

/// Writes this process's report every [`HEARTBEAT_INTERVAL`] until `stop` changes, then
/// deletes it. Failures are logged once per outage and retried at the next beat.
pub async fn heartbeat(
    shared: Arc<Shared>,
    mut conn: ConnectionManager,
    prefix: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let instance = instance_name();
    let key = report_key(&prefix, &instance);
    let ttl = HEARTBEAT_TTL.as_secs();
    let mut failing = false;
    loop {
        let doc = report(&shared);
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(doc).arg("EX").arg(ttl);
        match tokio::time::timeout(HEARTBEAT_INTERVAL, set.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) if failing => {
                failing = false;
                tracing::info!(instance = %instance, "replica report written to Redis again");
            }
            Ok(Ok(())) => {}
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(instance = %instance, error = %e, "cannot write the replica report to Redis");
            }
            Err(_) if !failing => {
                failing = true;
                tracing::warn!(instance = %instance, "writing the replica report to Redis timed out");
            }
            _ => {}
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
        }
    }
    let mut del = redis::cmd("DEL");
    del.arg(&key);
    let _ = tokio::time::timeout(Duration::from_secs(1), del.query_async::<()>(&mut conn)).await;
}
