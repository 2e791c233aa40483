//! The tamper-evident audit log: one JSON line per field-operation batch and per key event,
//! each carrying an HMAC-SHA256 chained over the previous line's MAC.

use std::process::ExitCode;

use crate::config::settings::AuditSettings;

/// The open audit log. (Stub: the sink, events and chain arrive with the audit work.)
#[derive(Debug)]
pub struct AuditLog {
    _private: (),
}

impl AuditLog {
    /// Opens the sink named by `settings` (startup fails if it cannot be opened).
    pub fn open(_settings: &AuditSettings) -> Result<Self, String> {
        Ok(Self { _private: () })
    }
}

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check an audit log's HMAC chain; report the first broken line.
    Verify {
        /// The audit log (JSON lines).
        file: std::path::PathBuf,
        /// The chain key file (`audit.key_file`).
        #[arg(long)]
        key: std::path::PathBuf,
    },
}

pub fn cli(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify { .. } => {
            eprintln!("error: audit verify is not implemented yet");
            ExitCode::from(1)
        }
    }
}
