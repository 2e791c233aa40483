//! Listeners and connections: accept → connection limit → hand-off to a worker thread →
//! TLS 1.3 handshake (bounded) → HTTP/1.1 or HTTP/2 (sniffed) → [`proxy::handle`] per
//! request; plus graceful shutdown.
//!
//! Shutdown order: mark draining (`/readyz` turns 503), close the listener (no new
//! connections), ask every connection to finish its in-flight requests, wait up to the grace
//! period, then stop the admin listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::audit::AuditLog;
use crate::body::OnEnd;

mod idle;
mod workers;

use crate::admin;
use crate::config::settings::Timeouts;
use crate::config::Settings;
use crate::limits::{
    H2_MAX_CONCURRENT_STREAMS, H2_MAX_LOCAL_ERROR_RESET_STREAMS,
    H2_MAX_PENDING_ACCEPT_RESET_STREAMS, MAX_REQUEST_HEADERS, MAX_REQUEST_HEAD_BYTES,
};
use crate::metrics::Metrics;
use crate::proxy::{self, ConnInfo};
use crate::state::{Runtime, Shared};
use workers::WorkerPool;

/// After an accept error (typically EMFILE), wait before trying again instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// A started proxy: its bound addresses and the handle to stop it.
pub struct RunningProxy {
    pub listen_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop_proxy: watch::Sender<bool>,
    stop_admin: watch::Sender<bool>,
    proxy_task: JoinHandle<bool>,
    admin_task: JoinHandle<()>,
    /// The replica report written to the shared Redis, when there is one.
    heartbeat: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

/// How long shutdown waits for queued audit events to be written.
const AUDIT_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Binds both listeners and starts serving.
pub async fn start(settings: Settings) -> std::io::Result<RunningProxy> {
    let listener = TcpListener::bind(settings.listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", settings.listen),
        )
    })?;
    let admin_listener = TcpListener::bind(settings.admin).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {} (admin): {e}", settings.admin),
        )
    })?;
    let listen_addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let audit = match &settings.audit {
        Some(a) => Some(Arc::new(AuditLog::open(a).map_err(|m| {
            std::io::Error::other(format!("cannot open the audit log: {m}"))
        })?)),
        None => None,
    };
    if let Some(audit) = &audit {
        audit.startup(settings.keys.ring.as_deref());
    }
    let pool = WorkerPool::start(settings.workers)?;
    let shared = Shared::new(
        Runtime::new(settings, pool.len()),
        Arc::new(Metrics::new()),
        audit,
    )
    .map_err(std::io::Error::other)?;
    let (stop_proxy, proxy_rx) = watch::channel(false);
    let (stop_admin, admin_rx) = watch::channel(false);
    let proxy_task = tokio::spawn(accept_loop(listener, pool, shared.clone(), proxy_rx));
    let admin_task = tokio::spawn(admin::serve(admin_listener, shared.clone(), admin_rx));
    let heartbeat = shared.shared_replay.as_ref().map(|store| {
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(crate::replicas::heartbeat(
            shared.clone(),
            store.connection(),
            store.prefix().to_string(),
            rx,
        ));
        (stop, task)
    });
    Ok(RunningProxy {
        listen_addr,
        admin_addr,
        shared,
        stop_proxy,
        stop_admin,
        proxy_task,
        admin_task,
        heartbeat,
    })
}

impl RunningProxy {
    /// Drains and stops. Returns whether every in-flight request finished within the grace
    /// period.
    pub async fn shutdown(self) -> bool {
        self.shared.start_draining();
        let _ = self.stop_proxy.send(true);
        let drained = self.proxy_task.await.unwrap_or(false);
        let _ = self.stop_admin.send(true);
        let _ = self.admin_task.await;
        if let Some((stop, task)) = self.heartbeat {
            // Gone from the reports at once: `keys promote --expect N` notices.
            let _ = stop.send(true);
            let _ = task.await;
        }
        if let Some(audit) = self.shared.audit.clone() {
            // Everything the drained requests queued reaches the sink (and disk) before exit.
            let _ = tokio::task::spawn_blocking(move || audit.flush(AUDIT_FLUSH_TIMEOUT)).await;
        }
        drained
    }
}

fn connection_builder(timeouts: &Timeouts) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.client_header_read)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .max_headers(MAX_REQUEST_HEADERS)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_REQUEST_HEAD_BYTES as u32)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS);
    builder
}

async fn accept_loop(
    listener: TcpListener,
    pool: WorkerPool,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> bool {
    let settings = shared.runtime.load().settings.clone();
    let builder = Arc::new(connection_builder(&settings.timeouts));
    let permits = Arc::new(Semaphore::new(settings.limits.max_connections));
    // Every connection holds a permit until it ends, so "all permits back" means drained.
    let (drain, draining) = watch::channel(false);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    shared.metrics.connection_rejected();
                    tracing::warn!("connection refused: limits.max_connections reached");
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                // Move the socket to the worker's reactor: deregister here, register there.
                let Ok(tcp) = tcp.into_std() else { continue };
                let draining = draining.clone();
                let shared = shared.clone();
                let builder = builder.clone();
                let open = shared.metrics.connection_opened();
                pool.spawn(move |worker| async move {
                    let _permit = permit;
                    let _open = open;
                    let Ok(tcp) = tokio::net::TcpStream::from_std(tcp) else { return };
                    serve_connection(tcp, ConnInfo { peer, worker }, shared, &builder, draining).await;
                });
            }
        }
    }
    drop(listener);
    tracing::info!("listener closed; draining in-flight requests");
    let _ = drain.send(true);
    let all = u32::try_from(settings.limits.max_connections).unwrap_or(u32::MAX);
    let drained = tokio::select! {
        _ = permits.acquire_many(all) => true,
        _ = tokio::time::sleep(settings.timeouts.shutdown_grace) => {
            tracing::warn!(grace_s = settings.timeouts.shutdown_grace.as_secs_f64(), "grace period over with requests still in flight");
            false
        }
    };
    let _ = tokio::task::spawn_blocking(move || pool.stop()).await;
    drained
}

/// [`proxy::handle`], with the request counted as in flight until its response body is done.
async fn counted(
    req: hyper::Request<hyper::body::Incoming>,
    info: ConnInfo,
    shared: Arc<Shared>,
    in_flight: idle::InFlight,
) -> Result<
    hyper::Response<OnEnd<crate::access_log::ObservedBody, impl FnOnce(u64, bool) + Send>>,
    std::convert::Infallible,
> {
    let Ok(response) = proxy::handle(req, info, shared).await;
    Ok(response.map(|body| OnEnd::new(body, move |_, _| drop(in_flight))))
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    info: ConnInfo,
    shared: Arc<Shared>,
    builder: &auto::Builder<TokioExecutor>,
    mut draining: watch::Receiver<bool>,
) {
    let peer = info.peer;
    let runtime = shared.runtime.load_full();
    let client_idle = runtime.settings.timeouts.client_idle;
    let acceptor = TlsAcceptor::from(runtime.settings.tls.clone());
    let handshake = tokio::time::timeout(
        runtime.settings.timeouts.tls_handshake,
        acceptor.accept(tcp),
    );
    drop(runtime);
    // Awaited inside an expression, so its result does not keep a slot (~1.2 KiB) in the
    // connection's future for the connection's whole life.
    let tls = match handshake.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            shared.metrics.tls_handshake_failed();
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            shared.metrics.tls_handshake_failed();
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let activity = idle::Activity::new();
    let requests = activity.clone();
    let service =
        service_fn(move |req| Box::pin(counted(req, info, shared.clone(), requests.start())));
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(tls), service)
        .into_owned();
    let mut conn = std::pin::pin!(conn);
    // Asked to close (drain or idle): hyper finishes what is in flight, then ends the future.
    let mut closing = *draining.borrow_and_update();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    let mut idle_closing = false;
    let ended = loop {
        tokio::select! {
            ended = conn.as_mut() => break ended,
            _ = draining.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = activity.idle_for(client_idle), if !closing => {
                closing = true;
                idle_closing = true;
                tracing::debug!(%peer, "closing idle connection");
                conn.as_mut().graceful_shutdown();
                activity.touch();
            }
            // HTTP/2's graceful close waits for the client to acknowledge a PING; a client
            // that never does (or never reads) is dropped after another idle period.
            _ = activity.idle_for(client_idle), if idle_closing => break Ok(()),
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
