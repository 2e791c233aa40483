//! Hot reload: re-read the configuration and everything it names (keyring, certificates,
//! keys), compile it, and swap the serving state as a whole.
//!
//! - **Atomic**: the new [`Runtime`] replaces the old one in one `ArcSwap` store. A request
//!   holds the runtime it started with until it ends, so in-flight requests finish on the
//!   state they began with, and listeners never close.
//! - **All or nothing**: a new state that does not compile (bad YAML, a keyring that does not
//!   validate or unwrap, a certificate that does not parse) is refused as a whole; the old
//!   state keeps serving, every problem is logged, and `fieldseal_config_reload_failures_total`
//!   counts it.
//! - **Triggers**: SIGHUP, and — with `reload.watch: true` — a change of any watched file,
//!   found by polling. Polling rather than inotify because Kubernetes updates a mounted Secret
//!   by swapping a `..data` symlink to a new directory: watches on the old files see nothing,
//!   while `stat` through the path sees the new inode at once.
//! - **Restart-only settings** (listen and admin addresses, worker count, connection limit,
//!   HTTP/1.1 header-read timeout, the audit sink) keep their startup values; a reload that
//!   changes one says so in the log.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{self, Settings};
use crate::state::{Runtime, Shared};

/// What identifies a file's content without reading it: through symlinks, the inode, size and
/// modification time of whatever the path points at now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    /// `None` when the file cannot be read (it may be mid-swap); that is a change too.
    stamp: Option<(u64, u64, u64, Option<SystemTime>)>,
}

fn stamp_files(files: &[PathBuf]) -> Vec<FileStamp> {
    files
        .iter()
        .map(|path| FileStamp {
            path: path.clone(),
            stamp: std::fs::metadata(path).ok().map(|m| {
                #[cfg(unix)]
                let (dev, ino) = {
                    use std::os::unix::fs::MetadataExt;
                    (m.dev(), m.ino())
                };
                #[cfg(not(unix))]
                let (dev, ino) = (0, 0);
                (dev, ino, m.len(), m.modified().ok())
            }),
        })
        .collect()
}

/// Why a reload was refused.
#[derive(Debug)]
pub struct ReloadError {
    pub problems: Vec<String>,
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.problems.join("; "))
    }
}

/// Reloads the serving state of one running proxy.
pub struct Reloader {
    config: PathBuf,
    shared: Arc<Shared>,
    /// Stamps of the files the serving state was built from.
    stamps: Mutex<Vec<FileStamp>>,
    /// One reload at a time (a signal during a watch-triggered reload waits).
    busy: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(config: PathBuf, shared: Arc<Shared>) -> Arc<Self> {
        let files = shared.runtime.load().settings.files.clone();
        Arc::new(Self {
            config,
            shared,
            stamps: Mutex::new(stamp_files(&files)),
            busy: tokio::sync::Mutex::new(()),
        })
    }

    /// Loads, compiles and swaps in the configuration. `trigger` labels the metric
    /// (`signal`, `watch`). Returns how long it took.
    pub async fn reload(&self, trigger: &'static str) -> Result<Duration, ReloadError> {
        let _one = self.busy.lock().await;
        let started = Instant::now();
        let path = self.config.clone();
        // Compiling reads files and may derive a KEK with Argon2id: not on the control
        // thread, which also accepts connections.
        let loaded = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(|e| ReloadError {
                problems: vec![format!("the reload task failed: {e}")],
            })?;
        let settings = match loaded {
            Ok(s) => s,
            Err(errors) => {
                let problems = errors.0.iter().map(ToString::to_string).collect();
                return Err(self.refused(trigger, problems));
            }
        };
        if let Some(identity) = &settings.identity {
            if let Err(e) = identity.start().await {
                return Err(self.refused(trigger, vec![e]));
            }
        }
        let old = self.shared.runtime.load_full();
        for change in restart_only_changes(&old.settings, &settings) {
            tracing::warn!(
                setting = change,
                "reload: this setting changed but takes effect only after a restart; keeping the running value"
            );
        }
        for w in &settings.warnings {
            tracing::warn!(origin = %w.origin, key = %w.key, message = %w.message, "configuration warning");
        }
        let stamps = stamp_files(&settings.files);
        let routes = settings.routes.len();
        let primary = settings.keys.ring.as_ref().map(|r| r.primary().id.clone());
        let new = Arc::new(Runtime::reusing(settings, &old));
        self.shared.metrics.register_selectors(&new.settings);
        if let (Some(audit), Some(new_ring)) = (&self.shared.audit, &new.settings.keys.ring) {
            audit.keyring_reloaded(old.settings.keys.ring.as_deref(), new_ring);
        }
        self.shared.runtime.store(new);
        *self.stamps.lock().expect("stamps lock") = stamps;
        drop(old);
        let took = started.elapsed();
        self.shared.metrics.reload("ok", trigger);
        self.shared.metrics.loaded_now();
        self.shared.check_rotation();
        tracing::info!(
            trigger,
            routes,
            primary_kid = primary.as_deref().unwrap_or("-"),
            reload_ms = took.as_secs_f64() * 1000.0,
            "configuration reloaded"
        );
        Ok(took)
    }

    fn refused(&self, trigger: &'static str, problems: Vec<String>) -> ReloadError {
        for p in &problems {
            tracing::error!(trigger, problem = %p, "reload refused; still serving the previous configuration");
        }
        self.shared.metrics.reload("failed", trigger);
        // A broken file stays broken until it changes again: remember what was seen so the
        // watcher does not retry (and log) the same failure every interval.
        // (`files` starts with the config file itself.)
        let files = self.shared.runtime.load().settings.files.clone();
        *self.stamps.lock().expect("stamps lock") = stamp_files(&files);
        ReloadError { problems }
    }

    /// Whether any watched file differs from when the serving state was loaded (or from the
    /// last failed attempt).
    fn changed(&self) -> bool {
        let stamps = self.stamps.lock().expect("stamps lock");
        let files: Vec<PathBuf> = stamps.iter().map(|s| s.path.clone()).collect();
        stamp_files(&files) != *stamps
    }

    /// Polls the watched files every `interval` and reloads when one changes. Ends when the
    /// returned sender is dropped or sends `true`.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> tokio::sync::watch::Sender<bool> {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let reloader = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = tick.tick() => {}
                }
                if !reloader.changed() {
                    continue;
                }
                // A Secret update writes several files; let it settle before reading them.
                tokio::time::sleep(interval.min(Duration::from_millis(500))).await;
                tracing::info!("watched file changed; reloading");
                let _ = reloader.reload("watch").await;
            }
        });
        stop
    }
}

/// Settings a reload cannot apply to a running process, by name.
fn restart_only_changes(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.listen != new.listen {
        changed.push("listen");
    }
    if old.admin != new.admin {
        changed.push("admin");
    }
    if old.workers != new.workers {
        changed.push("workers");
    }
    if old.limits.max_connections != new.limits.max_connections {
        changed.push("limits.max_connections");
    }
    if old.limits.replay_cache_entries != new.limits.replay_cache_entries {
        changed.push("limits.replay_cache_entries");
    }
    if old.replay != new.replay {
        changed.push("replay");
    }
    if old.timeouts.client_header_read != new.timeouts.client_header_read {
        changed.push("timeouts.client_header_read");
    }
    if old.timeouts.shutdown_grace != new.timeouts.shutdown_grace {
        changed.push("timeouts.shutdown_grace");
    }
    let audit = |s: &Settings| {
        s.audit
            .as_ref()
            .map(|a| (a.sink.clone(), a.key_file.clone()))
    };
    if audit(old) != audit(new) {
        changed.push("audit");
    }
    if old.reload.watch != new.reload.watch || old.reload.interval != new.reload.interval {
        changed.push("reload");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_see_content_and_symlink_swaps() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("v1");
        let v2 = dir.path().join("v2");
        std::fs::create_dir(&v1).unwrap();
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v1.join("f"), "one").unwrap();
        std::fs::write(v2.join("f"), "one").unwrap();
        let data = dir.path().join("..data");
        std::os::unix::fs::symlink("v1", &data).unwrap();
        let file = dir.path().join("f");
        std::os::unix::fs::symlink("..data/f", &file).unwrap();
        let before = stamp_files(std::slice::from_ref(&file));
        assert_eq!(before, stamp_files(std::slice::from_ref(&file)));
        // Kubernetes' swap: a new symlink renamed over `..data`. Same size, maybe same mtime
        // second: the inode tells.
        let tmp = dir.path().join("..data_tmp");
        std::os::unix::fs::symlink("v2", &tmp).unwrap();
        std::fs::rename(&tmp, &data).unwrap();
        assert_ne!(before, stamp_files(std::slice::from_ref(&file)));
        // A missing file is a state of its own.
        let gone = stamp_files(&[dir.path().join("missing")]);
        assert_eq!(gone[0].stamp, None);
    }
}
