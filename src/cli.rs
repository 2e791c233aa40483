//! The command line (contract §5): `run`, `check`, `demo`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Settings};
use crate::server;
use crate::telemetry::{self, LogFormat};

/// Exit code for startup errors (bad configuration, unusable files, unbindable ports):
/// `EX_USAGE` from sysexits.h, so supervisors can tell them from crashes.
pub const EXIT_STARTUP: u8 = 64;

/// Exit code of `check` when the configuration has problems.
pub const EXIT_CHECK_FAILED: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "fieldseal",
    version,
    about = "TLS 1.3 sidecar that seals sensitive JSON fields in flight"
)]
pub struct Cli {
    /// Log output format (default: json for `run`, pretty for `demo`).
    #[arg(long, global = true, env = "FIELDSEAL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve: TLS listener in front of the upstream, admin listener beside it.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration and print the compiled routes (exit 0), or list every problem (exit 1).
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Keyring management (contract §2).
    Keys {
        #[command(subcommand)]
        command: crate::keys_cli::KeysCommand,
    },
    /// Re-seal every fs1 token in JSON read from stdin under the primary key (stored tokens,
    /// after a rotation).
    Rewrap(crate::rewrap::RewrapArgs),
    /// RSA keys for client-side encryption (contract §3).
    Rsa {
        #[command(subcommand)]
        command: crate::client_keys_cli::RsaCommand,
    },
    /// X25519 keys for HPKE client-side encryption.
    Hpke {
        #[command(subcommand)]
        command: crate::client_keys_cli::HpkeCommand,
    },
    /// Dry run of one request: which route matches, which selectors hit which fields of a
    /// sample body, and what the client (or the app) would receive.
    Explain(crate::explain::ExplainArgs),
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: crate::audit::AuditCommand,
    },
    /// Print the fs1 token of a JSON value (`-` reads it from stdin), sealed with the primary key.
    Seal {
        #[arg(long)]
        keyring: PathBuf,
        #[arg(long)]
        context: String,
        /// JSON text: '"123-45-6789"' seals a string, 42 a number (negative numbers too).
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Print the JSON value inside an fs1 token (`-` reads it from stdin), compactly.
    Open {
        #[arg(long)]
        keyring: PathBuf,
        #[arg(long)]
        context: String,
        token: String,
    },
    /// Write a starting point for your app: fieldseal.yaml (fields proposed from its OpenAPI
    /// document), keyring.json and a development certificate. Never overwrites a file.
    Init(crate::init::InitArgs),
    /// Zero-setup demo: self-signed certificate, a demo JSON app, and the proxy in front of it.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Keys { command } => crate::keys_cli::keys(command),
        Command::Rewrap(args) => crate::rewrap::run(args),
        Command::Explain(args) => crate::explain::run(args),
        Command::Init(args) => crate::init::run(args),
        Command::Audit { command } => crate::audit::cli(command),
        Command::Rsa { command } => crate::client_keys_cli::rsa(command),
        Command::Hpke { command } => crate::client_keys_cli::hpke(command),
        Command::Seal {
            keyring,
            context,
            value,
        } => crate::keys_cli::seal(&keyring, &context, &value),
        Command::Open {
            keyring,
            context,
            token,
        } => crate::keys_cli::open(&keyring, &context, &token),
        Command::Check { config } => check(&config),
        Command::Run { config } => {
            telemetry::init(cli.log_format.unwrap_or(LogFormat::Json));
            run(&config)
        }
        Command::Demo { listen, admin } => {
            telemetry::init(cli.log_format.unwrap_or(LogFormat::Pretty));
            demo(listen, admin)
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(settings) => {
            print!("{}", describe(&settings));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for p in &errors.0 {
                eprintln!("error: {p}");
            }
            eprintln!("{} problem(s) in {}", errors.0.len(), path.display());
            ExitCode::from(EXIT_CHECK_FAILED)
        }
    }
}

/// The compiled configuration as `check` prints it.
pub fn describe(s: &Settings) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "configuration {} is valid", s.source.display());
    let _ = writeln!(
        out,
        "listen {} (TLS 1.3{}) -> upstream {}; admin http://{}",
        s.listen,
        if s.mtls {
            ", client certificates required"
        } else {
            ""
        },
        s.upstream,
        s.admin
    );
    for w in &s.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if let Some(client) = &s.keys.client {
        // Public ids only: what clients will see in the JWKS, in that order.
        let _ = writeln!(
            out,
            "client keys (JWKS at {}):",
            crate::proxy::well_known::JWKS_PATH
        );
        for k in client.rsa_keys() {
            let _ = writeln!(out, "  RSA-{} kid {}", k.bits, k.kid);
        }
        for k in client.hpke_keys() {
            let _ = writeln!(out, "  X25519 (HPKE) kid {}", k.kid());
        }
        if let Some(p) = &s.keys.public_key_path {
            let _ = writeln!(out, "  seed-compatible public key at {p}");
        }
    }
    if !s.fields.is_empty() {
        let _ = writeln!(
            out,
            "fields (every JSON body of every route without `fields: false`; a route's own rules win on the nodes they select):"
        );
        for (i, rule) in s.fields.response.iter().enumerate() {
            let detail = match (rule.op, &rule.selector.context) {
                (crate::config::settings::Operation::Mask { keep_last }, _) => {
                    format!(" (keep_last {keep_last})")
                }
                (crate::config::settings::Operation::Seal, Some(c)) => {
                    format!(" (context {c}; also opened in requests)")
                }
                (crate::config::settings::Operation::Seal, None) => {
                    " (also opened in requests)".to_string()
                }
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  fields.{i} {} {}{detail}",
                rule.op.name(),
                rule.selector.source
            );
        }
    }
    if let Some(g) = &s.guard {
        let names: Vec<&str> = g.detectors.iter().map(|d| d.name()).collect();
        let _ = writeln!(
            out,
            "guard: {} on every JSON answer, mode {}",
            names.join(", "),
            match g.mode {
                crate::guard::Mode::Observe => "observe (count and log)",
                crate::guard::Mode::Block => "block (502 sensitive_data_detected)",
            }
        );
    }
    let _ = writeln!(
        out,
        "selectors that never match live traffic stay at 0 in fieldseal_selector_matches_total{{route,selector}}"
    );
    let _ = writeln!(out, "routes ({}, first match wins):", s.routes.len());
    for (i, r) in s.routes.iter().enumerate() {
        // Numbered as in error messages and config keys (`routes.0`).
        let _ = writeln!(out, "  routes.{i} {} {} {}", r.name, r.methods, r.path);
        let rules = r.rules.describe();
        if rules.is_empty() {
            let _ = writeln!(out, "       pass-through (bodies stream untouched)");
        }
        for rule in rules {
            let _ = writeln!(out, "       {rule}");
        }
        let names: Vec<&str> = r.headers.names().collect();
        let _ = writeln!(out, "       headers: {}", names.join(", "));
    }
    if s.fields.is_empty() {
        let _ = writeln!(out, "  unmatched requests: pass-through");
    } else {
        let _ = writeln!(out, "  unmatched requests: the field policy alone");
    }
    out
}

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
            return Err(ExitCode::from(EXIT_STARTUP));
        }
    };
    for w in &settings.warnings {
        tracing::warn!(origin = %w.origin, key = %w.key, message = %w.message, "configuration warning");
    }
    Ok(settings)
}

fn run(path: &Path) -> ExitCode {
    let settings = match load_for_serving(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    runtime().block_on(serve(settings, path, false))
}

fn demo(listen: SocketAddr, admin: SocketAddr) -> ExitCode {
    runtime().block_on(async move {
        let ws = match crate::demo::Workspace::create() {
            Ok(ws) => ws,
            Err(e) => {
                eprintln!("error: cannot create the demo directory: {e}");
                return ExitCode::from(EXIT_STARTUP);
            }
        };
        let app = match crate::demo::app::start().await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: cannot start the demo app: {e}");
                return ExitCode::from(EXIT_STARTUP);
            }
        };
        let config = match crate::demo::write_files(&ws, listen, admin, app) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_STARTUP);
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
    let running = match server::start(settings).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(EXIT_STARTUP);
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
