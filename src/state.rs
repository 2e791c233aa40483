//! State shared by every connection: the compiled runtime (swapped atomically as a whole, so a
//! request sees one consistent configuration from start to end), metrics, and the drain flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::audit::AuditLog;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::proxy::upstream::Upstream;
use crate::replay::{MemoryReplayStore, ReplayStore};
use crate::rotation::RotationMonitor;

/// Everything built from one configuration.
pub struct Runtime {
    pub settings: Arc<Settings>,
    /// One upstream pool per worker thread, so a request and the pooled connection it uses
    /// live on the same thread (no cross-thread wake-ups on the hot path).
    upstreams: Vec<Upstream>,
}

impl Runtime {
    pub fn new(settings: Settings, workers: usize) -> Self {
        // One bound on requests in flight to the app, shared by every worker's pool.
        let in_flight = Arc::new(tokio::sync::Semaphore::new(
            settings
                .limits
                .max_upstream_requests
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        ));
        let upstreams = (0..workers.max(1))
            .map(|_| Upstream::new(&settings.upstream, &settings.timeouts, in_flight.clone()))
            .collect();
        Self {
            settings: Arc::new(settings),
            upstreams,
        }
    }

    /// A runtime for a reloaded configuration. The upstream pools (and their warm
    /// connections) carry over when the upstream and its timeouts are unchanged, so a reload
    /// costs the app no reconnections.
    pub fn reusing(settings: Settings, old: &Runtime) -> Self {
        let same_upstream = old.settings.upstream == settings.upstream
            && old.settings.timeouts == settings.timeouts
            && old.settings.limits.max_upstream_requests == settings.limits.max_upstream_requests;
        if same_upstream && old.upstreams.len() == settings.workers.max(1) {
            return Self {
                upstreams: old.upstreams.clone(),
                settings: Arc::new(settings),
            };
        }
        Self::new(settings, old.upstreams.len())
    }

    /// The upstream pool of worker `worker`.
    pub fn upstream(&self, worker: usize) -> &Upstream {
        &self.upstreams[worker % self.upstreams.len()]
    }
}

pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Arc<Metrics>,
    /// The audit sink, when `audit` is configured. Opened once at startup: a reload does not
    /// move the log (so one process writes one chain).
    pub audit: Option<Arc<AuditLog>>,
    /// The primary key's standing against `keys.rotation`, for metrics and `/readyz`.
    pub rotation: RotationMonitor,
    /// `jti`s of client-encrypted values seen on `request.max_age` routes. Shared by every
    /// route and kept across reloads: a value captured from one route cannot be replayed to
    /// another, nor after a reload.
    pub replay: Arc<dyn ReplayStore>,
    /// The store every replica shares (`replay.store: redis`): `jti`s are settled there, and
    /// `replay` above is its fallback while it does not answer (docs/replicas.md). Built once:
    /// changing it takes a restart.
    pub shared_replay: Option<Arc<crate::replay::redis::RedisReplayStore>>,
    draining: AtomicBool,
    /// Rate limit of the guard's log lines (its counters count everything).
    pub guard_log: crate::guard::LogLimiter,
}

impl Shared {
    /// Needs a tokio runtime context (the shared replay store's connection runs on it).
    pub fn new(
        runtime: Runtime,
        metrics: Arc<Metrics>,
        audit: Option<Arc<AuditLog>>,
    ) -> Result<Arc<Self>, String> {
        let replay = Arc::new(MemoryReplayStore::new(
            runtime.settings.limits.replay_cache_entries,
        ));
        let shared_replay = match &runtime.settings.replay {
            crate::config::ReplayStoreSettings::Memory => None,
            crate::config::ReplayStoreSettings::Redis(settings) => Some(Arc::new(
                crate::replay::redis::RedisReplayStore::new(settings)?,
            )),
        };
        metrics.replay_store_configured(shared_replay.is_some());
        metrics.register_selectors(&runtime.settings);
        Ok(Arc::new(Self {
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            audit,
            rotation: RotationMonitor::default(),
            replay,
            shared_replay,
            draining: AtomicBool::new(false),
            guard_log: crate::guard::LogLimiter::default(),
        }))
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Re-evaluates the rotation policy against the serving keyring (if any).
    pub fn check_rotation(&self) {
        let runtime = self.runtime.load();
        let keys = &runtime.settings.keys;
        if let Some(ring) = &keys.ring {
            self.rotation
                .check(ring, &keys.rotation, &self.metrics.key_usage, &self.metrics);
        }
    }
}
