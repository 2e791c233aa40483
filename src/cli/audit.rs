//! `fieldseal audit verify` and `fieldseal audit keygen`.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::exit;
use crate::audit::chain::{self, hex, VerifyError};
use crate::audit::key::{self, AuditKey};
use crate::secret_file::{self, Exposure};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check an audit log's HMAC chain and the links between its segments; report the first
    /// broken line (exit 1), or the line count and the last MAC (exit 0). Exit 2 when the log
    /// or the key cannot be read.
    Verify {
        /// The audit log (JSON lines).
        file: PathBuf,
        /// The chain key file (`audit.key_file`).
        #[arg(long)]
        key: PathBuf,
    },
    /// Write a new audit key: 32 random bytes as base64, mode 0600; never overwrites.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn cli(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify { file, key } => verify(&file, &key),
        AuditCommand::Keygen { out } => keygen(&out),
    }
}

fn verify(file: &Path, key_path: &Path) -> ExitCode {
    let key = match AuditKey::load(key_path) {
        Ok((key, exposure)) => {
            if exposure == Exposure::GroupReadable {
                eprintln!("warning: {} is readable by its group", key_path.display());
            }
            key
        }
        Err(m) => {
            eprintln!("error: {m}");
            return ExitCode::from(exit::AUDIT_CANNOT_CHECK);
        }
    };
    let log = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(exit::AUDIT_CANNOT_CHECK);
        }
    };
    match chain::verify(&key, BufReader::with_capacity(64 << 10, log)) {
        Ok(v) => {
            for note in &v.notes {
                println!("note: {note}");
            }
            println!(
                "ok: {} lines, chain intact, last mac {}",
                v.lines,
                hex(&v.last_mac)
            );
            ExitCode::SUCCESS
        }
        Err(VerifyError::Broken(b)) => {
            eprintln!("error: line {}: {}", b.line, b.why);
            ExitCode::from(exit::AUDIT_BROKEN)
        }
        Err(VerifyError::Io(e)) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            ExitCode::from(exit::AUDIT_CANNOT_CHECK)
        }
    }
}

fn keygen(out: &Path) -> ExitCode {
    let exists = || {
        eprintln!(
            "error: {} exists; refusing to overwrite an audit key (it verifies existing logs)",
            out.display()
        );
        ExitCode::from(exit::AUDIT_BROKEN)
    };
    if out.exists() {
        return exists();
    }
    let text = match key::generate() {
        Ok(t) => t,
        Err(m) => {
            eprintln!("error: {m}");
            return ExitCode::from(exit::AUDIT_BROKEN);
        }
    };
    match secret_file::create_private(out, text.as_bytes()) {
        Ok(()) => {
            println!(
                "wrote {} (mode 0600): a 32-byte audit key; keep it apart from the keyring",
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => exists(),
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", out.display());
            ExitCode::from(exit::AUDIT_BROKEN)
        }
    }
}
