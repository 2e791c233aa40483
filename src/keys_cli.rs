//! `fieldseal keys init|list`, `seal` and `open` (contract §5): the keyring and tokens from
//! the command line, for operators and for checking other implementations against ours.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use std::path::PathBuf;

use clap::Subcommand;

use crate::cli::EXIT_STARTUP;
use crate::crypto::{keyring, token, Keyring};
use crate::secret_file::{self, Exposure};

/// A command-line operation failed (bad input, token that does not open).
const EXIT_FAILED: u8 = 1;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new keyring with one active key (mode 0600; refuses to overwrite a file).
    Init {
        #[arg(long)]
        out: PathBuf,
        /// Id of the first key.
        #[arg(long, default_value = "k1")]
        id: String,
    },
    /// Show ids, states and dates; never secrets.
    List {
        #[arg(long)]
        keyring: PathBuf,
    },
}

pub fn keys(command: KeysCommand) -> ExitCode {
    match command {
        KeysCommand::Init { out, id } => init(&out, &id),
        KeysCommand::List { keyring } => list(&keyring),
    }
}

fn init(out: &Path, id: &str) -> ExitCode {
    if out.exists() {
        eprintln!(
            "error: {} exists; refusing to overwrite a keyring (its keys open existing tokens)",
            out.display()
        );
        return ExitCode::from(EXIT_FAILED);
    }
    let file = match keyring::generate(id) {
        Ok(f) => f,
        Err(m) => {
            eprintln!("error: {m}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let json =
        zeroize::Zeroizing::new(serde_json::to_vec_pretty(&file).expect("a keyring serialises"));
    match secret_file::write_private(out, &json) {
        Ok(()) => {
            println!(
                "wrote {} (mode 0600) with active primary key `{id}`",
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", out.display());
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn load(path: &Path) -> Result<Keyring, ExitCode> {
    match Keyring::load(path) {
        Ok((ring, exposure)) => {
            if exposure == Exposure::GroupReadable {
                eprintln!("warning: {} is readable by its group", path.display());
            }
            Ok(ring)
        }
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            Err(ExitCode::from(EXIT_STARTUP))
        }
    }
}

fn list(path: &Path) -> ExitCode {
    let ring = match load(path) {
        Ok(r) => r,
        Err(code) => return code,
    };
    println!("{:<34} {:<13} {:<22} primary", "id", "state", "created_at");
    for key in ring.keys() {
        let primary = if key.id == ring.primary().id { "*" } else { "" };
        println!(
            "{:<34} {:<13} {:<22} {primary}",
            key.id, key.state, key.created_at
        );
    }
    ExitCode::SUCCESS
}

/// The argument, or stdin when it is `-` (trailing newline removed).
fn argument(value: &str) -> Result<String, ExitCode> {
    if value != "-" {
        return Ok(value.to_string());
    }
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("error: cannot read stdin: {e}");
        return Err(ExitCode::from(EXIT_FAILED));
    }
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

pub fn seal(path: &Path, context: &str, value: &str) -> ExitCode {
    let (ring, text) = match (load(path), argument(value)) {
        (Ok(r), Ok(t)) => (r, zeroize::Zeroizing::new(t)),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: the value is not JSON ({e}); quote strings: '\"123-45-6789\"'");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match token::seal(ring.primary(), context, &value) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: the OS random source failed: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

pub fn open(path: &Path, context: &str, token_text: &str) -> ExitCode {
    let (ring, text) = match (load(path), argument(token_text)) {
        (Ok(r), Ok(t)) => (r, t),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    match token::open(&ring, context, text.trim()) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e} ({})", e.reason());
            ExitCode::from(EXIT_FAILED)
        }
    }
}
