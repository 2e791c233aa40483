//! `fieldseal file keygen|seal|open|rewrap|verify`: files and backups sealed with age v1
//! (docs/files.md).

use std::fs;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::exit;
use crate::audit::{AuditLog, FileEvent};
use crate::config::settings::{AuditSettings, AuditSinkTarget};
use crate::file::{self, FileError, KeyringIdentity};

#[derive(Subcommand, Debug)]
pub enum FileCommand {
    /// Write a new age identity file (mode 0600; refuses to overwrite) and print its recipient:
    /// post-quantum (`age1pq1…`, X-Wing) with `--pq`, X25519 (`age1…`) otherwise. With
    /// `--sign`, a signing key (ML-DSA-65 with `--pq`, Ed25519 otherwise) and its public key.
    Keygen(KeygenArgs),
    #[command(flatten)]
    Audited(AuditedCommand),
}

/// The operations on sealed files, each one an audit event.
#[derive(Subcommand, Debug)]
pub enum AuditedCommand {
    /// Seal a file (any size, constant memory) to one or more recipients: age post-quantum
    /// (`age1pq1…`), X25519 (`age1…`) or OpenSSH public keys, and/or the keyring's primary key.
    Seal(SealArgs),
    /// Open a sealed file. The output appears only once the whole file authenticated.
    Open(OpenArgs),
    /// Rewrap a sealed file's header for new recipients without re-encrypting its payload:
    /// after `keys rotate`, `--keyring` opens with any key and seals to the new primary.
    Rewrap(RewrapArgs),
    /// Check a sealed file's signature without opening it (no identity needed).
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// The identity (or, with `--sign`, signing key) file; it must not exist yet.
    #[arg(long = "out")]
    output: PathBuf,
    /// Post-quantum: an age `mlkem768x25519` identity (X-Wing, ML-KEM-768 + X25519), or with
    /// `--sign` an ML-DSA-65 signing key.
    #[arg(long)]
    pq: bool,
    /// A sender's signing key for `seal --sign` instead of an identity: PKCS#8 PEM (Ed25519, or
    /// ML-DSA-65 with `--pq`); its public key (SubjectPublicKeyInfo PEM, for `--verify` and
    /// `verify --key`) is printed.
    #[arg(long)]
    sign: bool,
}

#[derive(Args, Debug)]
pub struct RewrapArgs {
    /// The sealed file (binary).
    #[arg(long = "in")]
    input: PathBuf,
    /// The rewrapped file; it must not exist yet.
    #[arg(long = "out")]
    output: PathBuf,
    /// An identity that opens the file today (repeatable).
    #[arg(long = "identity")]
    identity: Vec<PathBuf>,
    /// Open with this keyring and seal to its primary key.
    #[arg(long)]
    keyring: Option<PathBuf>,
    #[command(flatten)]
    recipients: RecipientArgs,
    #[command(flatten)]
    audit: AuditArgs,
}

/// Public-key recipients, as age writes them.
#[derive(Args, Debug)]
pub struct RecipientArgs {
    /// A recipient: `age1pq1…`, `age1…` or an OpenSSH public key line (repeatable). Post-quantum
    /// recipients cannot be mixed with classical ones (age's rule: the file would only have
    /// classical strength).
    #[arg(long = "to")]
    to: Vec<String>,
    /// A file of recipients, one per line, `#` comments (repeatable).
    #[arg(long = "recipients-file")]
    recipients_file: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SealArgs {
    /// The file to seal (`-`: stdin).
    #[arg(long = "in", default_value = "-")]
    input: PathBuf,
    /// Where the sealed file goes (`-`: stdout). An existing file is not overwritten.
    #[arg(long = "out")]
    output: PathBuf,
    #[command(flatten)]
    recipients: RecipientArgs,
    /// Also seal to this keyring's primary key (it opens with the keyring).
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// ASCII armor (PEM-like text) instead of binary.
    #[arg(long)]
    armor: bool,
    /// Sign the sealed file with this Ed25519, ML-DSA-65 or RSA (RSA-PSS) private key (PKCS#8
    /// PEM); the signature goes to `--signature`, by default `<out>.sig`.
    #[arg(long)]
    sign: Option<PathBuf>,
    /// Where the signature goes (with `--sign`).
    #[arg(long)]
    signature: Option<PathBuf>,
    #[command(flatten)]
    audit: AuditArgs,
}

#[derive(Args, Debug)]
pub struct OpenArgs {
    /// The sealed file.
    #[arg(long = "in")]
    input: PathBuf,
    /// Where the plaintext goes; it must not exist yet.
    #[arg(long = "out")]
    output: PathBuf,
    /// A file of age identities (`AGE-SECRET-KEY-1…`, `AGE-SECRET-KEY-PQ-1…`) or an OpenSSH
    /// private key (repeatable).
    #[arg(long = "identity")]
    identity: Vec<PathBuf>,
    /// Open with this keyring's keys (any key that is not disabled).
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// Require the sender's signature by this Ed25519, ML-DSA-65 or RSA public key (PEM),
    /// verified over the whole file before anything is written.
    #[arg(long)]
    verify: Option<PathBuf>,
    /// The signature file (with `--verify`), by default `<in>.sig`.
    #[arg(long)]
    signature: Option<PathBuf>,
    #[command(flatten)]
    audit: AuditArgs,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The sealed file.
    #[arg(long = "in")]
    input: PathBuf,
    /// The sender's Ed25519, ML-DSA-65 or RSA public key (PEM).
    #[arg(long = "key")]
    key: PathBuf,
    /// The signature file, by default `<in>.sig`.
    #[arg(long)]
    signature: Option<PathBuf>,
    #[command(flatten)]
    audit: AuditArgs,
}

/// Where a `file` event goes: the proxy's audit log (docs/audit.md), when both are given.
#[derive(Args, Debug, Clone)]
pub struct AuditArgs {
    /// Append a `file` event to this audit log (the chain `fieldseal audit verify` checks).
    #[arg(long = "audit-log", requires = "audit_key")]
    audit_log: Option<PathBuf>,
    /// The audit log's HMAC key file.
    #[arg(long = "audit-key", requires = "audit_log")]
    audit_key: Option<PathBuf>,
}

pub fn file(command: FileCommand) -> ExitCode {
    match command {
        FileCommand::Keygen(args) => keygen(&args),
        FileCommand::Audited(command) => audited(command),
    }
}

/// Writes a new identity file as `age-keygen` does (comment lines with the creation time and
/// the public key, then the secret) and prints the recipient on stdout; with `--sign`, a
/// signing key, printing its public key.
fn keygen(args: &KeygenArgs) -> ExitCode {
    let (secret, public) = if args.sign {
        match file::sign::generate(args.pq) {
            Ok((private, public)) => (private, public.trim_end().to_string()),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(exit::FAILED);
            }
        }
    } else if args.pq {
        let id = file::PqIdentity::generate();
        (id.to_secret_string(), id.to_public().to_string())
    } else {
        use age::secrecy::ExposeSecret;
        let id = age::x25519::Identity::generate();
        (
            zeroize::Zeroizing::new(id.to_string().expose_secret().to_string()),
            id.to_public().to_string(),
        )
    };
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let text = if args.sign {
        secret
    } else {
        zeroize::Zeroizing::new(format!(
            "# created: {created}\n# public key: {public}\n{}\n",
            *secret
        ))
    };
    match crate::secret_file::create_private(&args.output, text.as_bytes()) {
        Ok(()) => {
            println!("{public}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let why = match e.kind() {
                io::ErrorKind::AlreadyExists => "it exists; refusing to overwrite a key".into(),
                _ => e.to_string(),
            };
            eprintln!("error: cannot write {}: {why}", args.output.display());
            ExitCode::from(exit::FAILED)
        }
    }
}

fn audited(command: AuditedCommand) -> ExitCode {
    let (op, audit) = match &command {
        AuditedCommand::Seal(a) => ("seal", a.audit.clone()),
        AuditedCommand::Open(a) => ("open", a.audit.clone()),
        AuditedCommand::Rewrap(a) => ("rewrap", a.audit.clone()),
        AuditedCommand::Verify(a) => ("verify", a.audit.clone()),
    };
    // Opened first: an operation that cannot be audited is not performed.
    let log = match open_audit(&audit) {
        Ok(log) => log,
        Err(message) => {
            eprintln!("error: audit log: {message}");
            return ExitCode::from(exit::STARTUP);
        }
    };
    let mut event = FileEvent {
        op,
        outcome: "ok",
        file: String::new(),
        sha512: None,
        bytes: None,
        recipients: Vec::new(),
        signer: None,
        reason: None,
    };
    let result = match command {
        AuditedCommand::Seal(args) => seal(args, &mut event),
        AuditedCommand::Open(args) => open(args, &mut event),
        AuditedCommand::Rewrap(args) => rewrap(args, &mut event),
        AuditedCommand::Verify(args) => verify(args, &mut event),
    };
    if let Err((code, message)) = &result {
        event.outcome = if *code == exit::FAILED {
            "refused"
        } else {
            "failed"
        };
        event.reason = Some(message.clone());
    }
    if let Some(log) = &log {
        if !log.file(event) || !log.flush(AUDIT_FLUSH) {
            eprintln!("error: audit log: the event could not be written");
            return ExitCode::from(exit::FAILED);
        }
    }
    match result {
        Ok(message) => {
            eprintln!("{message}");
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

type Failure = (u8, String);

/// How long the command waits for its audit event to reach the disk.
const AUDIT_FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

/// The audit log named by `audit`, if any.
fn open_audit(audit: &AuditArgs) -> Result<Option<AuditLog>, String> {
    let (Some(log), Some(key)) = (&audit.audit_log, &audit.audit_key) else {
        return Ok(None);
    };
    AuditLog::open(&AuditSettings {
        sink: AuditSinkTarget::File(log.clone()),
        key_file: key.clone(),
    })
    .map(Some)
}

fn usage(e: FileError) -> Failure {
    (exit::STARTUP, e.to_string())
}

fn keyring(path: &Path) -> Result<Arc<crate::crypto::Keyring>, Failure> {
    super::keys::load_keyring(path).map(Arc::new)
}

type Recipients = Vec<file::Recipient>;
type Identities = Vec<Box<dyn age::Identity>>;

/// The recipients named by `--to`, `--recipients-file` and the keyring's primary (last, with
/// the label of the others: [`file::Recipient::keyring`]).
fn recipients(
    args: &RecipientArgs,
    ring: Option<&Arc<crate::crypto::Keyring>>,
    event: &mut FileEvent,
) -> Result<Recipients, Failure> {
    let mut recipients: Recipients = Vec::new();
    for r in &args.to {
        let recipient = file::parse_recipient(r).map_err(usage)?;
        event.recipients.push(recipient.kind());
        recipients.push(recipient);
    }
    for path in &args.recipients_file {
        let read = file::read_recipients(path).map_err(usage)?;
        event.recipients.extend(std::iter::repeat_n(
            format!("file:{}", path.display()),
            read.len(),
        ));
        recipients.extend(read);
    }
    if let Some(ring) = ring {
        let keyring = file::Recipient::keyring(ring.clone(), &recipients);
        event.recipients.push(keyring.kind());
        recipients.push(keyring);
    }
    if recipients.is_empty() {
        return Err((
            exit::STARTUP,
            "no recipient: give --to, --recipients-file or --keyring".into(),
        ));
    }
    Ok(recipients)
}

/// The identities named by `--identity` and the keyring.
fn identities(
    files: &[PathBuf],
    ring: Option<&Arc<crate::crypto::Keyring>>,
) -> Result<Identities, Failure> {
    let mut identities: Identities = Vec::new();
    for path in files {
        identities.extend(file::read_identities(path).map_err(usage)?);
    }
    if let Some(ring) = ring {
        identities.push(Box::new(KeyringIdentity::new(ring.clone())));
    }
    if identities.is_empty() {
        return Err((
            exit::STARTUP,
            "no identity: give --identity or --keyring".into(),
        ));
    }
    Ok(identities)
}

fn seal(args: SealArgs, event: &mut FileEvent) -> Result<String, Failure> {
    event.file = args.output.display().to_string();
    let ring = args.keyring.as_deref().map(keyring).transpose()?;
    let recipients = recipients(&args.recipients, ring.as_ref(), event)?;
    let count = recipients.len();
    let signer = args
        .sign
        .as_deref()
        .map(file::sign::Signer::load)
        .transpose()
        .map_err(usage)?;
    let sig_path = match (&signer, &args.signature) {
        (None, _) => None,
        (Some(_), Some(path)) => Some(path.clone()),
        (Some(_), None) if args.output == Path::new("-") => {
            return Err((
                exit::STARTUP,
                "--sign with --out - needs --signature PATH".into(),
            ))
        }
        (Some(_), None) => Some(sig_beside(&args.output)),
    };
    if let Some(path) = sig_path.as_deref().filter(|p| p.exists()) {
        return Err((
            exit::FAILED,
            format!("{} exists; not overwritten", path.display()),
        ));
    }
    let mut input: Box<dyn io::Read> = if args.input == Path::new("-") {
        Box::new(io::stdin().lock())
    } else {
        Box::new(BufReader::new(fs::File::open(&args.input).map_err(
            |e| (exit::STARTUP, format!("{}: {e}", args.input.display())),
        )?))
    };
    let failed = |e: FileError| (exit::FAILED, e.to_string());
    // The sealed file's SHA-512 is what a signature and an audit event name; without either it
    // is not computed (it costs more than the encryption itself).
    let hash = signer.is_some() || args.audit.audit_log.is_some();
    let mut digest = None;
    let n = if args.output == Path::new("-") {
        let mut out = BufWriter::new(io::stdout().lock());
        let n = seal_to(
            &recipients,
            &mut input,
            &mut out,
            args.armor,
            hash,
            &mut digest,
        )
        .map_err(failed)?;
        out.flush().map_err(|e| failed(e.into()))?;
        n
    } else {
        file::write_new(&args.output, |out| {
            seal_to(&recipients, &mut input, out, args.armor, hash, &mut digest)
        })
        .map_err(failed)?
    };
    event.bytes = Some(n);
    event.sha512 = digest.as_ref().map(|d| crate::audit::hex(d));
    if let (Some(signer), Some(path), Some(digest)) = (&signer, &sig_path, &digest) {
        event.signer = Some(signer.key_id().to_string());
        let text = signer.sign(digest).map_err(failed)?;
        file::write_new(path, |out| {
            out.write_all(text.as_bytes())?;
            Ok(text.len() as u64)
        })
        .map_err(failed)?;
        return Ok(format!(
            "sealed {n} bytes to {count} recipient(s); signed in {}",
            path.display()
        ));
    }
    Ok(format!("sealed {n} bytes to {count} recipient(s)"))
}

/// Seals into `out`, and with `hash` records the SHA-512 of what was written in `digest`.
fn seal_to(
    recipients: &[file::Recipient],
    input: &mut dyn io::Read,
    out: &mut dyn Write,
    armor: bool,
    hash: bool,
    digest: &mut Option<file::sign::Digest>,
) -> Result<u64, FileError> {
    if !hash {
        return file::seal(recipients, input, out, armor);
    }
    let mut hashing = file::sign::Hashing::new(out);
    let n = file::seal(recipients, input, &mut hashing, armor)?;
    *digest = Some(hashing.digest());
    Ok(n)
}

fn open(args: OpenArgs, event: &mut FileEvent) -> Result<String, Failure> {
    event.file = args.input.display().to_string();
    let ring = args.keyring.as_deref().map(keyring).transpose()?;
    let identities = identities(&args.identity, ring.as_ref())?;
    let failed = |e: FileError| (exit::FAILED, e.to_string());
    let n = match &args.verify {
        None => file::open_file(&identities, &args.input, &args.output).map_err(failed)?,
        Some(key) => {
            let verifier = file::sign::Verifier::load(key).map_err(usage)?;
            event.signer = Some(verifier.key_id().to_string());
            let sig = read_signature(&args.input, args.signature.as_deref())?;
            file::open_file_signed(&identities, &args.input, &args.output, &verifier, &sig)
                .map_err(failed)?
        }
    };
    event.bytes = Some(n);
    Ok(format!("opened {n} bytes into {}", args.output.display()))
}

fn verify(args: VerifyArgs, event: &mut FileEvent) -> Result<String, Failure> {
    event.file = args.input.display().to_string();
    let verifier = file::sign::Verifier::load(&args.key).map_err(usage)?;
    event.signer = Some(verifier.key_id().to_string());
    let sig = read_signature(&args.input, args.signature.as_deref())?;
    let digest = file::sign::digest_file(&args.input).map_err(usage)?;
    event.sha512 = Some(crate::audit::hex(&digest));
    verifier
        .verify(&sig, &digest)
        .map_err(|e| (exit::FAILED, e.to_string()))?;
    Ok(format!("{}: signature verified", args.input.display()))
}

/// `file.sig` beside `file`.
fn sig_beside(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

fn read_signature(input: &Path, given: Option<&Path>) -> Result<String, Failure> {
    let path = given.map_or_else(|| sig_beside(input), Path::to_path_buf);
    fs::read_to_string(&path)
        .map_err(|e| (exit::FAILED, format!("signature {}: {e}", path.display())))
}

fn rewrap(args: RewrapArgs, event: &mut FileEvent) -> Result<String, Failure> {
    event.file = args.output.display().to_string();
    let ring = args.keyring.as_deref().map(keyring).transpose()?;
    let identities = identities(&args.identity, ring.as_ref())?;
    let recipients = recipients(&args.recipients, ring.as_ref(), event)?;
    let count = recipients.len();
    let mut source = fs::File::open(&args.input)
        .map_err(|e| (exit::STARTUP, format!("{}: {e}", args.input.display())))?;
    let n = file::write_new(&args.output, |out| {
        file::rewrap::rewrap(&identities, &recipients, &mut source, out)
    })
    .map_err(|e| (exit::FAILED, e.to_string()))?;
    event.bytes = Some(n);
    Ok(format!(
        "rewrapped for {count} recipient(s); {n} payload bytes copied unchanged"
    ))
}
