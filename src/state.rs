//! State shared by every connection: the compiled runtime (swapped atomically as a whole, so a
//! request sees one consistent configuration from start to end), metrics, and the drain flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::proxy::upstream::Upstream;

/// Everything built from one configuration.
pub struct Runtime {
    pub settings: Arc<Settings>,
    pub upstream: Upstream,
}

impl Runtime {
    pub fn new(settings: Settings) -> Self {
        let upstream = Upstream::new(&settings.upstream, &settings.timeouts);
        Self {
            settings: Arc::new(settings),
            upstream,
        }
    }
}

pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Arc<Metrics>,
    draining: AtomicBool,
}

impl Shared {
    pub fn new(runtime: Runtime, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            draining: AtomicBool::new(false),
        })
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
