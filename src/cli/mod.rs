//! The command line (contract §5): the parser and one dispatch. Each command lives in a
//! module of its own here; the process lifecycle of `run` and `demo` (runtime, serving,
//! signals) is [`crate::lifecycle`]; exit codes are [`exit`].

pub mod audit;
pub mod check;
pub mod client_keys;
pub mod exit;
pub mod explain;
pub mod file;
pub mod init;
pub mod keys;
pub mod replicas;
pub mod rewrap;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::{self, LogFormat};

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
        command: keys::KeysCommand,
    },
    /// Re-seal every fs1 token in JSON read from stdin under the primary key (stored tokens,
    /// after a rotation).
    Rewrap(rewrap::RewrapArgs),
    /// RSA keys for client-side encryption (contract §3).
    Rsa {
        #[command(subcommand)]
        command: client_keys::RsaCommand,
    },
    /// X25519 keys for HPKE client-side encryption.
    Hpke {
        #[command(subcommand)]
        command: client_keys::HpkeCommand,
    },
    /// Files and backups sealed to recipients and/or the keyring (age v1, docs/files.md).
    File {
        #[command(subcommand)]
        command: file::FileCommand,
    },
    /// Dry run of one request: which route matches, which selectors hit which fields of a
    /// sample body, and what the client (or the app) would receive.
    Explain(explain::ExplainArgs),
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
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
        /// Seal an expiring token (`fse1`) that opens for this long (`1h`, `90d`).
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "searchable")]
        ttl: Option<std::time::Duration>,
        /// Seal a searchable token (`fsd1`): the same value always gives the same token.
        #[arg(long, conflicts_with = "subject")]
        searchable: bool,
        /// Seal a subject-bound token (`fsb1`) for this data subject.
        #[arg(long, conflicts_with = "ttl")]
        subject: Option<String>,
    },
    /// Print the searchable token (`fsd1`) of a JSON value under every key still in use (active
    /// and decrypt-only), one `<kid> <token>` line each: what to search stored tokens for
    /// across a key rotation.
    Index {
        #[arg(long)]
        keyring: PathBuf,
        #[arg(long)]
        context: String,
        /// JSON text, as for `seal` (`-` reads it from stdin).
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
        /// The data subject a subject-bound token (`fsb1`) was sealed for.
        #[arg(long)]
        subject: Option<String>,
    },
    /// Write a starting point for your app: fieldseal.yaml (fields proposed from its OpenAPI
    /// document), keyring.json and a development certificate. Never overwrites a file.
    Init(init::InitArgs),
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
        Command::Keys { command } => keys::keys(command),
        Command::Rewrap(args) => rewrap::run(args),
        Command::Explain(args) => explain::run(args),
        Command::File { command } => file::file(command),
        Command::Init(args) => init::run(args),
        Command::Audit { command } => audit::cli(command),
        Command::Rsa { command } => client_keys::rsa(command),
        Command::Hpke { command } => client_keys::hpke(command),
        Command::Seal {
            keyring,
            context,
            value,
            ttl,
            searchable,
            subject,
        } => keys::seal(
            &keyring,
            &context,
            &value,
            ttl,
            searchable,
            subject.as_deref(),
        ),
        Command::Index {
            keyring,
            context,
            value,
        } => keys::index(&keyring, &context, &value),
        Command::Open {
            keyring,
            context,
            token,
            subject,
        } => keys::open(&keyring, &context, &token, subject.as_deref()),
        Command::Check { config } => check::check(&config),
        Command::Run { config } => {
            telemetry::init(cli.log_format.unwrap_or(LogFormat::Json));
            crate::lifecycle::run(&config)
        }
        Command::Demo { listen, admin } => {
            telemetry::init(cli.log_format.unwrap_or(LogFormat::Pretty));
            crate::lifecycle::demo(listen, admin)
        }
    }
}
