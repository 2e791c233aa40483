//! Worker threads: each runs a single-threaded tokio runtime that owns the connections handed
//! to it, their requests and its own upstream pool.
//!
//! Why not one work-stealing runtime: on a CPU-saturated 2-core machine the P0 benchmark spent
//! ~12% less CPU per request with everything on one thread (no cross-thread wake-ups between a
//! client connection's task and the upstream connection's task). Thread-per-core keeps that
//! locality and still uses every core, like nginx's worker processes. One acceptor hands each
//! new connection to the worker with the fewest open connections (no `SO_REUSEPORT`, which
//! would let another process silently share the port).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

struct Worker {
    handle: Handle,
    open: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A fixed set of worker threads.
pub struct WorkerPool {
    workers: Vec<Worker>,
}

/// Counts a connection against its worker until dropped.
pub struct Assignment {
    open: Arc<AtomicUsize>,
}

impl Drop for Assignment {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl WorkerPool {
    pub fn start(count: usize) -> std::io::Result<Self> {
        let mut workers = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("fieldseal-worker-{index}"))
                .spawn(move || {
                    // Drives every task spawned onto this worker until told to stop; dropping
                    // the runtime then cancels whatever is left (after the drain).
                    let _ = runtime.block_on(stop_rx);
                })?;
            workers.push(Worker {
                handle,
                open: Arc::new(AtomicUsize::new(0)),
                stop: Some(stop_tx),
                thread: Some(thread),
            });
        }
        Ok(Self { workers })
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Runs `make(worker_index, assignment)`'s future on the least-loaded worker.
    pub fn spawn<F, Fut>(&self, make: F)
    where
        F: FnOnce(usize) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (index, worker) = self
            .workers
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.open.load(Ordering::Relaxed))
            .expect("at least one worker");
        worker.open.fetch_add(1, Ordering::Relaxed);
        let assignment = Assignment {
            open: worker.open.clone(),
        };
        // `map`, not `async move { fut.await }`: an async block keeps the captured future and
        // the one it awaits side by side, which doubled every connection's task (~4.7 KiB
        // each, measured with `-Zprint-type-sizes`).
        let fut = futures_util::FutureExt::map(make(index), move |()| drop(assignment));
        worker.handle.spawn(fut);
    }

    /// Stops every worker and waits for its thread to end.
    pub fn stop(mut self) {
        for w in &mut self.workers {
            if let Some(stop) = w.stop.take() {
                let _ = stop.send(());
            }
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}
