//! `fieldseal rsa generate` (contract §5): a new RSA private key for client-side encryption
//! (contract §3), PKCS#8 PEM, written atomically with mode 0600.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::crypto::rsa_keys;
use crate::secret_file;

/// The command failed or was refused.
const EXIT_FAILED: u8 = 1;

#[derive(Debug, Subcommand)]
pub enum RsaCommand {
    /// Write a new RSA private key (PKCS#8 PEM, mode 0600; refuses to overwrite a file) for
    /// `keys.rsa_private_key`; prints its kid (the RFC 7638 JWK thumbprint).
    Generate {
        #[arg(long)]
        out: PathBuf,
        /// Modulus size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 3072)]
        bits: usize,
    },
}

pub fn rsa(command: RsaCommand) -> ExitCode {
    let result = match command {
        RsaCommand::Generate { out, bits } => generate(&out, bits),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn generate(out: &Path, bits: usize) -> Result<(), String> {
    if out.exists() || out.is_symlink() {
        return Err(format!(
            "{} exists; refusing to overwrite an RSA key (clients may hold its public key)",
            out.display()
        ));
    }
    let pem = rsa_keys::generate(bits)?;
    // Parse what was generated exactly as the proxy will, which also gives the kid.
    let key =
        rsa_keys::from_pem(&pem).map_err(|e| format!("the generated key does not load: {e}"))?;
    secret_file::create_private(out, pem.as_bytes()).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => format!(
            "{} exists; refusing to overwrite an RSA key (clients may hold its public key)",
            out.display()
        ),
        _ => format!("cannot write {}: {e}", out.display()),
    })?;
    println!(
        "wrote {} (RSA-{}, kid {})",
        out.display(),
        key.bits,
        key.kid
    );
    Ok(())
}
