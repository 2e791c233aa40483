//! `fieldseal rewrap`: re-seal stored fs1 tokens under the keyring's primary key.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct RewrapArgs {
    /// The keyring (its primary seals; every key that is not disabled opens).
    #[arg(long)]
    pub keyring: PathBuf,
    /// A configuration whose route's explicit contexts apply (with `--route`).
    #[arg(long, requires = "route")]
    pub config: Option<PathBuf>,
    /// The route whose selectors' contexts apply.
    #[arg(long, requires = "config")]
    pub route: Option<String>,
}

pub fn run(_args: RewrapArgs) -> ExitCode {
    eprintln!("error: rewrap is not implemented yet");
    ExitCode::from(1)
}
