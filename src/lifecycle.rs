//! The process lifecycle of `run` and `demo`: the control runtime, loading the configuration
//! for serving, the servers, signals (SIGHUP reloads, SIGTERM/SIGINT drain) and the exit code.
//! Kept out of the argument parser (`cli`), which only dispatches here.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::exit;
use crate::config::{self, Settings};
use crate::server;

/// The control runtime: acceptor, admin listener and signals. One thread is plenty; requests
/// run on the worker threads (`server::workers`).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

/// Loads the config for `run`/`demo`; on failure prints every problem and returns the exit code.
fn load_for_serving(path: &Path) -> Result<Settings, ExitCode> {
    let settings = match config::load(path) {
        Ok(s) => s,
        Err(errors) => {
            for p in &errors.0 {
                eprintln!("error: {p}");
            }
            tracing::error!(problems = errors.0.len(), "configuration rejected");
            return Err(ExitCode::from(exit::STARTUP));
        }
    };
    for w in &settings.warnings {
        tracing::warn!(origin = %w.origin, key = %w.key, message = %w.message, "configuration warning");
    }
    Ok(settings)
}

pub fn run(path: &Path) -> ExitCode {
    let settings = match load_for_serving(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    runtime().block_on(serve(settings, path, false))
}

pub fn demo(listen: SocketAddr, admin: SocketAddr) -> ExitCode {
    runtime().block_on(async move {
        let ws = match crate::demo::Workspace::create() {
            Ok(ws) => ws,
            Err(e) => {
                eprintln!("error: cannot create the demo directory: {e}");
                return ExitCode::from(exit::STARTUP);
            }
        };
        let app = match crate::demo::app::start().await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: cannot start the demo app: {e}");
                return ExitCode::from(exit::STARTUP);
            }
        };
        let config = match crate::demo::write_files(&ws, listen, admin, app) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(exit::STARTUP);
            }
        };
        let settings = match load_for_serving(&config) {
            Ok(s) => s,
            Err(code) => return code,
        };
        serve(settings, &config, true).await
    })
}

/// Serves until SIGTERM/SIGINT, then drains; SIGHUP (and watched file changes) reload.
async fn serve(settings: Settings, config: &Path, demo: bool) -> ExitCode {
    let routes = settings.routes.len();
    let upstream = settings.upstream.to_string();
    let reload = settings.reload;
    // Handlers go in before the listener opens and before "ready" is logged: a SIGHUP that
    // arrives earlier would otherwise hit the default action and kill the process.
    let signals = StopSignals::install();
    // A JWKS URL is fetched before serving (and refreshed in the background): a proxy that
    // could verify no token would serve every caller the most restrictive view.
    if let Some(identity) = &settings.identity {
        if let Err(e) = identity.start().await {
            eprintln!("error: {e}");
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(exit::STARTUP);
        }
    }
    let running = match server::start(settings).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(exit::STARTUP);
        }
    };
    let shared = running.shared.clone();
    shared.metrics.loaded_now();
    shared.check_rotation();
    let rotation_checks = tokio::spawn({
        let shared = shared.clone();
        async move {
            let mut tick = tokio::time::interval(crate::limits::ROTATION_CHECK_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                shared.check_rotation();
            }
        }
    });
    let reloader = crate::reload::Reloader::new(config.to_path_buf(), shared);
    let _watch = reload.watch.then(|| reloader.watch(reload.interval));
    tracing::info!(
        listen = %running.listen_addr,
        admin = %running.admin_addr,
        upstream = %upstream,
        routes,
        "fieldseal ready"
    );
    if demo {
        println!(
            "{}",
            crate::demo::banner(running.listen_addr, running.admin_addr, config)
        );
    }
    signals.wait(&reloader).await;
    rotation_checks.abort();
    tracing::info!("stop signal received; draining");
    let drained = running.shutdown().await;
    tracing::info!(drained, "stopped");
    ExitCode::SUCCESS
}

/// The process's signal handlers, installed once at startup.
#[cfg(unix)]
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl StopSignals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler installs"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler installs"),
            hup: signal(SignalKind::hangup()).expect("SIGHUP handler installs"),
        }
    }

    /// Returns on SIGTERM/SIGINT; every SIGHUP in between reloads.
    async fn wait(mut self, reloader: &crate::reload::Reloader) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP received; reloading");
                    // Failures are logged and counted inside; the old state keeps serving.
                    let _ = reloader.reload("signal").await;
                }
            }
        }
    }
}

#[cfg(not(unix))]
struct StopSignals;

#[cfg(not(unix))]
impl StopSignals {
    fn install() -> Self {
        Self
    }

    async fn wait(self, _reloader: &crate::reload::Reloader) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
