//! `fieldseal rsa generate` (contract §5) and `fieldseal hpke generate`: new private keys for
//! client-side encryption (contract §3) — RSA for JWE RSA-OAEP-256 and envelopes, X25519 for
//! HPKE — as PKCS#8 PEM, written with mode 0600 and never over an existing file (clients may
//! hold the old key's public half).

use crate::cli::exit;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::crypto::{hpke, rsa_keys};
use crate::secret_file;

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

#[derive(Debug, Subcommand)]
pub enum HpkeCommand {
    /// Write a new HPKE private key (PKCS#8 PEM, mode 0600; refuses to overwrite a file) for
    /// `keys.hpke_private_key`; prints its kid (the RFC 7638 JWK thumbprint).
    Generate {
        #[arg(long)]
        out: PathBuf,
        /// `x25519` (JWE `alg` HPKE-X25519-A256GCM) or `xwing`, the post-quantum hybrid
        /// MLKEM768-X25519 (JWE `alg` HPKE-10).
        #[arg(long, default_value = "x25519", value_parser = ["x25519", "xwing"])]
        kem: String,
    },
}

pub fn rsa(command: RsaCommand) -> ExitCode {
    exit(match command {
        RsaCommand::Generate { out, bits } => generate(&out, bits),
    })
}

pub fn hpke(command: HpkeCommand) -> ExitCode {
    exit(match command {
        HpkeCommand::Generate { out, kem } => generate_hpke(&out, &kem),
    })
}

fn exit(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(exit::FAILED)
        }
    }
}

fn refuse_existing(out: &Path, what: &str) -> String {
    format!(
        "{} exists; refusing to overwrite an {what} key (clients may hold its public key)",
        out.display()
    )
}

/// Writes a new key file that must not exist yet.
fn write_new(out: &Path, pem: &str, what: &str) -> Result<(), String> {
    secret_file::create_private(out, pem.as_bytes()).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => refuse_existing(out, what),
        _ => format!("cannot write {}: {e}", out.display()),
    })
}

fn generate(out: &Path, bits: usize) -> Result<(), String> {
    if out.exists() || out.is_symlink() {
        return Err(refuse_existing(out, "RSA"));
    }
    let pem = rsa_keys::generate(bits)?;
    // Parse what was generated exactly as the proxy will, which also gives the kid.
    let key =
        rsa_keys::from_pem(&pem).map_err(|e| format!("the generated key does not load: {e}"))?;
    write_new(out, &pem, "RSA")?;
    println!(
        "wrote {} (RSA-{}, kid {})",
        out.display(),
        key.bits,
        key.kid
    );
    Ok(())
}

fn generate_hpke(out: &Path, kem: &str) -> Result<(), String> {
    let (kem, what) = match kem {
        "xwing" => (hpke::KemKind::XWing, "X-Wing"),
        _ => (hpke::KemKind::X25519, "X25519"),
    };
    if out.exists() || out.is_symlink() {
        return Err(refuse_existing(out, what));
    }
    let pem = hpke::generate(kem)?;
    let key = hpke::from_pem(&pem).map_err(|e| format!("the generated key does not load: {e}"))?;
    write_new(out, &pem, what)?;
    println!(
        "wrote {} ({what} for HPKE, JWE alg {}, kid {})",
        out.display(),
        kem.published_suite().alg(),
        key.kid()
    );
    Ok(())
}
