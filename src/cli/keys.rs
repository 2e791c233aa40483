//! `fieldseal keys init|rotate|list|retire|rewrap-keyring`, `seal` and `open` (contract §5):
//! the key lifecycle and tokens from the command line, for operators and for checking other
//! implementations against ours. `docs/keys.md` is the operations guide.
//!
//! Every command reads plain and wrapped keyrings alike and writes the file back the way it
//! found it (wrapped with the same KEK, fresh salt and nonce), atomically with mode 0600.
//!
//! A plain keyring is refused, as by the proxy, wherever a passphrase or KEK is supplied — by
//! `--passphrase-file`/`--kek-file` or by `FIELDSEAL_KEYRING_PASSPHRASE`/`FIELDSEAL_KEYRING_KEK`
//! — because a plain file where a wrapped one is expected may have been swapped in by whoever
//! could replace it: `keys list|rotate|retire`, `seal`, `open` (and `rewrap`). Per command:
//! - `keys init` reads no keyring; without `--wrap` it writes a plain one even when a KEK
//!   variable is set, and says that proxies and commands with that variable will refuse it.
//! - `keys rewrap-keyring` exists to change the wrapping: it wraps a plain keyring, and says
//!   "already plain" to `--unwrap`, whatever KEK variables the shell exports (its
//!   `--passphrase-file`/`--kek-file` flags, which name the current KEK, still demand a wrapped
//!   file).
//! - Everything else reads plain keyrings when no KEK is supplied (unset the variable, or set
//!   it empty, to work on a plain keyring from a shell that exports one).

use crate::cli::exit;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Subcommand;

use super::replicas::ReplicaArgs;
use crate::crypto::kek_command::{self, KekCommand};
use crate::crypto::keyring::{self, KeyringFile, ReadKeyring, Rotation};
use crate::crypto::wrap::{self, Kek, KekSource};
use crate::crypto::{token, Keyring};
use crate::secret_file::{self, Exposure};

/// Where the KEK of a wrapped keyring comes from on the command line (else the environment).
#[derive(Debug, Clone, clap::Args)]
pub struct KekArgs {
    /// File holding the passphrase of a wrapped keyring (else $FIELDSEAL_KEYRING_PASSPHRASE).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kek_file", "kek_command"])]
    pub passphrase_file: Option<PathBuf>,
    /// File holding the raw 32-byte KEK of a wrapped keyring, raw or standard base64 (else
    /// $FIELDSEAL_KEYRING_KEK).
    #[arg(long, value_name = "FILE", conflicts_with = "kek_command")]
    pub kek_file: Option<PathBuf>,
    /// Command printing the raw KEK as standard base64 (a KMS decrypting a data key), as a
    /// JSON array run without a shell: '["aws","kms","decrypt",…]' (else
    /// $FIELDSEAL_KEYRING_KEK_COMMAND). docs/keys.md has the protocol and recipes.
    #[arg(long, value_name = "JSON", value_parser = parse_kek_command)]
    pub kek_command: Option<KekCommand>,
    /// How long a KEK command may run (1s to 5m).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_kek_command_timeout)]
    pub kek_command_timeout: std::time::Duration,
}

/// No flags: the environment alone, and the default command timeout (not zero).
impl Default for KekArgs {
    fn default() -> Self {
        Self {
            passphrase_file: None,
            kek_file: None,
            kek_command: None,
            kek_command_timeout: kek_command::DEFAULT_TIMEOUT,
        }
    }
}

impl KekArgs {
    fn source(&self) -> KekSource {
        warn_if_group_readable(self.passphrase_file.as_deref());
        warn_if_group_readable(self.kek_file.as_deref());
        KekSource::for_cli(self.passphrase_file.clone(), self.kek_file.clone())
            .with_command(self.kek_command.clone())
            .with_command_limits(self.limits())
    }

    /// The command's timeout; no cache (a command runs once per CLI process anyway).
    fn limits(&self) -> kek_command::Limits {
        kek_command::Limits {
            timeout: self.kek_command_timeout,
            ..kek_command::Limits::CLI
        }
    }
}

/// `--kek-command` / `--new-kek-command`: a JSON array of strings (the same form as
/// `$FIELDSEAL_KEYRING_KEK_COMMAND`, and as the YAML list of `keys.keyring_kek_command`).
fn parse_kek_command(text: &str) -> Result<KekCommand, String> {
    KekCommand::from_json(text, None)
}

fn parse_kek_command_timeout(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    kek_command::check_timeout(d)
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new keyring with one active key (mode 0600; refuses to overwrite a file).
    Init {
        #[arg(long)]
        out: PathBuf,
        /// Id of the first key.
        #[arg(long, default_value = "k1")]
        id: String,
        /// Wrap the file with a KEK: a passphrase (Argon2id) or a raw 32-byte key, from
        /// --passphrase-file / --kek-file / --kek-command or $FIELDSEAL_KEYRING_PASSPHRASE /
        /// $FIELDSEAL_KEYRING_KEK / $FIELDSEAL_KEYRING_KEK_COMMAND.
        #[arg(long)]
        wrap: bool,
        /// File holding the wrapping passphrase (at least 12 characters).
        #[arg(
            long,
            value_name = "FILE",
            requires = "wrap",
            conflicts_with_all = ["kek_file", "kek_command"]
        )]
        passphrase_file: Option<PathBuf>,
        /// File holding a raw 32-byte KEK (raw bytes or standard base64).
        #[arg(
            long,
            value_name = "FILE",
            requires = "wrap",
            conflicts_with = "kek_command"
        )]
        kek_file: Option<PathBuf>,
        /// Command printing the raw KEK as standard base64, as a JSON array (see
        /// docs/keys.md).
        #[arg(long, value_name = "JSON", requires = "wrap", value_parser = parse_kek_command)]
        kek_command: Option<KekCommand>,
        /// How long the KEK command may run (1s to 5m).
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_kek_command_timeout)]
        kek_command_timeout: std::time::Duration,
    },
    /// Erase a data subject: its subject-bound tokens (`fsb1`) never open again, on every
    /// replica that loads this keyring (docs/tokens.md says what this does and does not erase).
    Shred {
        #[arg(long)]
        keyring: PathBuf,
        /// The data subject (as the route names it: the path parameter's or claim's value).
        #[arg(long)]
        subject: String,
        #[command(flatten)]
        kek: KekArgs,
    },
    /// Add a fresh active primary key; the old primary becomes decrypt_only. With --stage,
    /// add it as decrypt_only and keep the primary: the first half of a rotation across
    /// replicas (`keys promote` is the second).
    Rotate {
        #[arg(long)]
        keyring: PathBuf,
        /// Id of the new key (default: k<N+1> after the largest k<N>).
        #[arg(long)]
        id: Option<String>,
        /// Stage the new key (decrypt_only) instead of making it the primary.
        #[arg(long)]
        stage: bool,
        #[command(flatten)]
        kek: KekArgs,
    },
    /// Make a staged key the primary (the old primary becomes decrypt_only), once every
    /// replica reports that it has loaded it: refused while one has not (docs/replicas.md).
    Promote {
        #[arg(long)]
        keyring: PathBuf,
        /// The staged key (default: the one staged key).
        kid: Option<String>,
        #[command(flatten)]
        replicas: super::replicas::ReplicaArgs,
        /// Promote without asking the replicas.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        kek: KekArgs,
    },
    /// Show ids, states, dates and (with --admin) what a running proxy did with each key; never
    /// secrets.
    List {
        #[arg(long)]
        keyring: PathBuf,
        /// A running proxy's admin listener (http://host:port): adds tokens opened and sealed
        /// per key since it started.
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
        #[command(flatten)]
        kek: KekArgs,
    },
    /// Disable a key (its tokens stop opening). Refused for the primary, and while a running
    /// proxy has opened tokens of the key within --window.
    Retire {
        #[arg(long)]
        keyring: PathBuf,
        /// The key to disable.
        kid: String,
        /// The replicas to ask whether they still open tokens of KID.
        #[command(flatten)]
        replicas: super::replicas::ReplicaArgs,
        /// How long the key must have gone unused.
        #[arg(long, default_value = "24h")]
        window: humantime::Duration,
        /// Retire even without usage figures, or despite recent use.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        kek: KekArgs,
    },
    /// Change how the keyring file is wrapped: a new passphrase or KEK, wrap a plain file, or
    /// --unwrap it. The keys inside do not change.
    RewrapKeyring {
        #[arg(long)]
        keyring: PathBuf,
        #[command(flatten)]
        kek: KekArgs,
        /// File holding the new passphrase (else $FIELDSEAL_NEW_KEYRING_PASSPHRASE).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["new_kek_file", "new_kek_command"])]
        new_passphrase_file: Option<PathBuf>,
        /// File holding the new raw 32-byte KEK (else $FIELDSEAL_NEW_KEYRING_KEK).
        #[arg(long, value_name = "FILE", conflicts_with = "new_kek_command")]
        new_kek_file: Option<PathBuf>,
        /// Command printing the new raw KEK, as a JSON array like --kek-command (else
        /// $FIELDSEAL_NEW_KEYRING_KEK_COMMAND); runs with --kek-command-timeout.
        #[arg(long, value_name = "JSON", value_parser = parse_kek_command)]
        new_kek_command: Option<KekCommand>,
        /// Store the keyring unwrapped (plain JSON secrets on disk).
        #[arg(long, conflicts_with_all = ["new_passphrase_file", "new_kek_file", "new_kek_command"])]
        unwrap: bool,
    },
}

pub fn keys(command: KeysCommand) -> ExitCode {
    let result = match command {
        KeysCommand::Init {
            out,
            id,
            wrap,
            passphrase_file,
            kek_file,
            kek_command,
            kek_command_timeout,
        } => init(
            &out,
            &id,
            wrap.then_some(KekArgs {
                passphrase_file,
                kek_file,
                kek_command,
                kek_command_timeout,
            }),
        ),
        KeysCommand::Rotate {
            keyring,
            id,
            stage: false,
            kek,
        } => rotate(&keyring, id.as_deref(), &kek),
        KeysCommand::Rotate {
            keyring,
            id,
            stage: true,
            kek,
        } => stage(&keyring, id.as_deref(), &kek),
        KeysCommand::Promote {
            keyring,
            kid,
            replicas,
            force,
            kek,
        } => promote(&keyring, kid.as_deref(), &replicas, force, &kek),
        KeysCommand::Shred {
            keyring,
            subject,
            kek,
        } => shred(&keyring, &subject, &kek),
        KeysCommand::List {
            keyring,
            admin,
            kek,
        } => list(&keyring, admin.as_deref(), &kek),
        KeysCommand::Retire {
            keyring,
            kid,
            replicas,
            window,
            force,
            kek,
        } => retire(&keyring, &kid, &replicas, window.into(), force, &kek),
        KeysCommand::RewrapKeyring {
            keyring,
            kek,
            new_passphrase_file,
            new_kek_file,
            new_kek_command,
            unwrap,
        } => {
            let limits = kek.limits();
            rewrap_keyring(
                &keyring,
                &kek,
                (!unwrap).then(|| {
                    KekSource::for_cli_new(new_passphrase_file, new_kek_file)
                        .with_command(new_kek_command)
                        .with_command_limits(limits)
                }),
            )
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            ExitCode::from(code)
        }
    }
}

/// An exit code and the message to print.
struct Failure(u8, String);

fn failed(message: impl Into<String>) -> Failure {
    Failure(exit::FAILED, message.into())
}

fn warn_if_group_readable(path: Option<&Path>) {
    if let Some(path) = path {
        if secret_file::check(path) == Ok(Exposure::GroupReadable) {
            eprintln!("warning: {} is readable by its group", path.display());
        }
    }
}

/// Resolves the KEK for wrapping the keyring at `path`: required, and long enough.
fn wrapping_kek(source: &KekSource, path: &Path) -> Result<Kek, Failure> {
    let kek = source.resolve_for(path).map_err(failed)?.ok_or_else(|| {
        failed(format!(
            "no passphrase or KEK to wrap with: {}",
            source.hint()
        ))
    })?;
    kek.check_for_wrapping().map_err(failed)?;
    Ok(kek)
}

fn init(out: &Path, id: &str, wrap: Option<KekArgs>) -> Result<(), Failure> {
    if out.exists() {
        return Err(failed(format!(
            "{} exists; refusing to overwrite a keyring (its keys open existing tokens)",
            out.display()
        )));
    }
    if wrap.is_none() {
        if let Some(source) = KekSource::from_env().expects_wrapped() {
            eprintln!(
                "note: {source} is set but --wrap was not given: writing a plain keyring, which commands and proxies that see {source} refuse; pass --wrap to wrap it"
            );
        }
    }
    let kek = match &wrap {
        Some(args) => Some(wrapping_kek(&args.source(), out)?),
        None => None,
    };
    let file = keyring::generate(id).map_err(failed)?;
    keyring::write_keyring_file(out, &file, kek.as_ref()).map_err(failed)?;
    match kek {
        None => println!(
            "wrote {} (mode 0600) with active primary key `{id}`",
            out.display()
        ),
        Some(kek) => println!(
            "wrote {} (mode 0600, wrapped with the {} from {}) with active primary key `{id}`",
            out.display(),
            kek.kind(),
            kek.origin()
        ),
    }
    Ok(())
}

/// Reads and validates a keyring file (exit 64 when it cannot be used, like the proxy).
fn read(path: &Path, kek: &KekSource) -> Result<(ReadKeyring, Keyring), Failure> {
    let startup = |e: crate::crypto::KeyringError| Failure(exit::STARTUP, e.to_string());
    let read = keyring::read_keyring_file(path, kek).map_err(startup)?;
    if read.exposure == Exposure::GroupReadable {
        eprintln!("warning: {} is readable by its group", path.display());
    }
    let ring = Keyring::build(&read.file).map_err(|e| {
        Failure(
            exit::STARTUP,
            format!("{} is not a usable keyring: {e}", path.display()),
        )
    })?;
    Ok((read, ring))
}

/// Writes the file back, wrapped the way it was read.
fn write_back(path: &Path, file: &KeyringFile, kek: Option<&Kek>) -> Result<(), Failure> {
    keyring::write_keyring_file(path, file, kek).map_err(failed)
}

fn rotate(path: &Path, id: Option<&str>, kek: &KekArgs) -> Result<(), Failure> {
    let (mut read, _) = read(path, &kek.source())?;
    let rotation = keyring::rotate(&mut read.file, id).map_err(failed)?;
    write_back(path, &read.file, read.kek.as_ref())?;
    let Rotation {
        new_primary,
        old_primary,
    } = rotation;
    println!("rotated: primary {new_primary} (new), {old_primary} now decrypt_only");
    println!(
        "wrote {} (mode 0600{})",
        path.display(),
        if read.kek.is_some() { ", wrapped" } else { "" }
    );
    println!("next:");
    println!("  1. reload the proxy (`kill -HUP <pid>`, or update the Secret and let it reload); until then it seals with {old_primary}");
    println!("  2. re-seal stored tokens under {new_primary}: `fieldseal rewrap --keyring {}` (docs/rewrap.md)", path.display());
    println!("  3. once nothing presents {old_primary} tokens any more: `fieldseal keys retire --keyring {} {old_primary} --admin http://ADMIN`", path.display());
    Ok(())
}

fn shred(path: &Path, subject: &str, kek: &KekArgs) -> Result<(), Failure> {
    let (mut read, _) = read(path, &kek.source())?;
    let digest: String = keyring::subject_digest(subject)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if read
        .file
        .shredded
        .iter()
        .any(|s| s.subject_sha256 == digest)
    {
        println!("this subject is already erased; nothing to do");
        return Ok(());
    }
    read.file.shredded.push(keyring::Shred {
        subject_sha256: digest.clone(),
        at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    });
    write_back(path, &read.file, read.kek.as_ref())?;
    // The subject itself is never printed or written: only its digest.
    println!(
        "erased: subject {digest} added to the shred list of {}",
        path.display()
    );
    println!("next: reload every replica (update the Secret; `kill -HUP <pid>`); from then on its fsb1 tokens fail with subject_erased");
    println!("to erase the keys themselves: docs/tokens.md, \"Erasure that survives the keyring\"");
    Ok(())
}

fn list(path: &Path, admin: Option<&str>, kek: &KekArgs) -> Result<(), Failure> {
    let (read, ring) = read(path, &kek.source())?;
    let staged = keyring::staged(&read.file);
    let usage = admin.map(|url| fetch_usage(url).map(|r| (url, r)));
    let now = SystemTime::now();
    let with_usage = matches!(usage, Some(Ok(_)));
    let mut header = format!(
        "{:<32} {:<13} {:<21} {:>5} {:<7}",
        "id", "state", "created_at", "age", "primary"
    );
    if with_usage {
        header.push_str(&format!(
            " {:>12} {:>12} last_opened",
            "opened_total", "sealed_total"
        ));
    }
    println!("{}", header.trim_end());
    for key in ring.keys() {
        // The primary column: `*` for the primary, `staged` for a key `keys promote` may make it.
        let primary = if key.id == ring.primary().id {
            "*"
        } else if staged.contains(&key.id.as_str()) {
            "staged"
        } else {
            ""
        };
        let age = humantime::parse_rfc3339_weak(&key.created_at)
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .map_or(0, |d| d.as_secs() / 86_400);
        let mut line = format!(
            "{:<32} {:<13} {:<21} {:>4}d {:<7}",
            key.id, key.state, key.created_at, age, primary
        );
        if let Some(Ok((_, report))) = &usage {
            match report.keys.iter().find(|r| r.id == key.id) {
                Some(row) => line.push_str(&format!(
                    " {:>12} {:>12} {}",
                    row.opened_total,
                    row.sealed_total,
                    row.last_opened.map_or("never".to_string(), rfc3339)
                )),
                None => line.push_str(&format!(" {:>12} {:>12} not loaded by the proxy", "-", "-")),
            }
        }
        println!("{}", line.trim_end());
    }
    let erased = ring.shredded().count();
    if erased > 0 {
        // How many, never who (the file holds digests only).
        println!("erased subjects: {erased} (their fsb1 tokens no longer open; docs/tokens.md)");
    }
    match usage {
        None => Ok(()),
        Some(Ok((url, report))) => {
            println!(
                "usage from {url}: counted since {} ({} ago)",
                rfc3339(report.since),
                ago(report.now, report.since)
            );
            for row in report.keys.iter().filter(|r| ring.get(&r.id).is_none()) {
                println!(
                    "note: the proxy knows key `{}` ({}), which is not in {}: opened {}, sealed {}",
                    row.id,
                    row.state,
                    path.display(),
                    row.opened_total,
                    row.sealed_total
                );
            }
            Ok(())
        }
        Some(Err(m)) => Err(failed(m)),
    }
}

fn retire(
    path: &Path,
    kid: &str,
    replicas: &ReplicaArgs,
    window: Duration,
    force: bool,
    kek: &KekArgs,
) -> Result<(), Failure> {
    let (mut read, _) = read(path, &kek.source())?;
    if !keyring::disable(&mut read.file, kid).map_err(failed)? {
        println!("{kid} is already disabled; nothing to do");
        return Ok(());
    }
    let verdict = |report: &UsageReport| retire_verdict(kid, report, window);
    ask_replicas(
        replicas,
        force,
        (&format!("retire {kid}"), &format!("retiring {kid}")),
        &format!("still opens {kid} tokens"),
        verdict,
    )?;
    write_back(path, &read.file, read.kek.as_ref())?;
    println!("retired: {kid} is now disabled in {}", path.display());
    println!("next: reload the proxy (`kill -HUP <pid>`); from then on tokens of {kid} fail to open with key_disabled");
    Ok(())
}

/// Asks the replicas `replicas` names for their reports and holds each to `verdict`: one that
/// refuses, one that cannot be asked, fewer than `--expect`, or none named refuses the change
/// (`what` says what could not be ruled out), unless `force`.
fn ask_replicas(
    replicas: &ReplicaArgs,
    force: bool,
    (action, doing): (&str, &str),
    what: &str,
    verdict: impl Fn(&UsageReport) -> Result<String, String>,
) -> Result<(), Failure> {
    if replicas.is_empty() {
        if !force {
            return Err(failed(format!(
                "cannot tell whether the running proxy {what}; pass --admin URL (each replica) or --redis URL, or --force"
            )));
        }
        eprintln!("warning: {doing} without asking a running proxy (--force)");
        return Ok(());
    }
    let refuse = |m: String| {
        if force {
            eprintln!("warning: {m} ({doing} anyway: --force)");
            Ok(())
        } else {
            Err(failed(format!(
                "refusing to {action}: {m}; pass --force to do it anyway"
            )))
        }
    };
    let reports = match replicas.reports() {
        Ok(r) if r.is_empty() => return refuse("no replica reported".into()),
        Ok(r) => r,
        Err(m) => return refuse(m),
    };
    for report in &reports {
        match verdict(&report.usage) {
            Ok(m) => println!("{}: {m}", report.from),
            Err(m) => refuse(format!("{}: {m}", report.from))?,
        }
    }
    Ok(())
}

fn stage(path: &Path, id: Option<&str>, kek: &KekArgs) -> Result<(), Failure> {
    let (mut read, _) = read(path, &kek.source())?;
    let staged = keyring::stage(&mut read.file, id).map_err(failed)?;
    write_back(path, &read.file, read.kek.as_ref())?;
    let primary = &read.file.primary;
    println!("staged: {staged} (decrypt_only); {primary} stays the primary");
    println!(
        "wrote {} (mode 0600{})",
        path.display(),
        if read.kek.is_some() { ", wrapped" } else { "" }
    );
    println!("next:");
    println!("  1. give every replica this keyring (update the Secret) and let each reload: they open {staged} tokens, and still seal with {primary}");
    println!("  2. `fieldseal keys promote --keyring {} {staged} --redis URL --expect N` (or --admin URL per replica): refused until every replica has {staged}", path.display());
    Ok(())
}

fn promote(
    path: &Path,
    kid: Option<&str>,
    replicas: &ReplicaArgs,
    force: bool,
    kek: &KekArgs,
) -> Result<(), Failure> {
    let (mut read, _) = read(path, &kek.source())?;
    let kid = match (kid, keyring::staged(&read.file).as_slice()) {
        (Some(kid), _) => kid.to_string(),
        (None, [one]) => one.to_string(),
        (None, []) => {
            return Err(failed(
                "no staged key in this keyring: stage one with `keys rotate --stage`",
            ))
        }
        (None, many) => {
            return Err(failed(format!(
                "several staged keys ({}): name the one to promote",
                many.join(", ")
            )))
        }
    };
    let rotation = keyring::promote(&mut read.file, &kid).map_err(failed)?;
    let verdict = |report: &UsageReport| super::replicas::promote_verdict(&kid, report);
    ask_replicas(
        replicas,
        force,
        (&format!("promote {kid}"), &format!("promoting {kid}")),
        &format!("can open {kid} tokens"),
        verdict,
    )?;
    write_back(path, &read.file, read.kek.as_ref())?;
    let Rotation {
        new_primary,
        old_primary,
    } = rotation;
    println!("promoted: primary {new_primary}, {old_primary} now decrypt_only");
    println!("next:");
    println!("  1. give every replica this keyring again and let each reload: each seals with {new_primary} from its reload on, and every replica opens both");
    println!("  2. re-seal stored tokens under {new_primary}: `fieldseal rewrap --keyring {}` (docs/rewrap.md)", path.display());
    println!("  3. once nothing presents {old_primary} tokens any more: `fieldseal keys retire --keyring {} {old_primary} --redis URL --expect N`", path.display());
    Ok(())
}

fn rewrap_keyring(path: &Path, kek: &KekArgs, new: Option<KekSource>) -> Result<(), Failure> {
    // Wrapping a plain keyring is this command's job: a KEK variable in the environment does not
    // make a plain file an error here (the flags naming the current KEK still do).
    let (read, _) = read(path, &kek.source().plain_allowed_from_env())?;
    let was = match &read.kek {
        Some(k) => format!("wrapped with the {} from {}", k.kind(), k.origin()),
        None => "plain".to_string(),
    };
    let Some(new) = new else {
        if read.kek.is_none() {
            println!("{} is already plain; nothing to do", path.display());
            return Ok(());
        }
        write_back(path, &read.file, None)?;
        eprintln!("WARNING: {} is now UNWRAPPED: its key secrets are plain JSON on disk, protected only by the file mode (0600).", path.display());
        eprintln!("WARNING: anyone who copies the file, a backup or an image layer holding it can open every token. Wrap it again with `fieldseal keys rewrap-keyring`.");
        println!("unwrapped {} (was {was})", path.display());
        return Ok(());
    };
    let new_kek = wrapping_kek(&new, path)?;
    write_back(path, &read.file, Some(&new_kek))?;
    println!(
        "rewrapped {} with the {} from {} (was {was}); the keys inside are unchanged",
        path.display(),
        new_kek.kind(),
        new_kek.origin()
    );
    println!("next: give the proxy the new {} (keys.keyring_passphrase_file / keys.keyring_kek_file / keys.keyring_kek_command, or {} / {} / {}) before it next reloads or restarts: it cannot open the file with the old one", new_kek.kind(), wrap::ENV_PASSPHRASE, wrap::ENV_KEK, wrap::ENV_KEK_COMMAND);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Usage figures of a running proxy (`GET {admin}/keys`)

/// What a proxy reports about its keys: counted since `since` (process start), at `now` (its
/// clock, used for every comparison so the local clock does not matter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    pub since: SystemTime,
    pub now: SystemTime,
    pub keys: Vec<UsageRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub id: String,
    pub state: String,
    pub opened_total: u64,
    pub sealed_total: u64,
    pub last_opened: Option<SystemTime>,
    pub last_sealed: Option<SystemTime>,
}

/// Parses the `GET /keys` document ([`crate::key_usage::UsageDocument`]), timestamps into
/// times.
pub fn parse_usage(json: &str) -> Result<UsageReport, String> {
    let doc: crate::key_usage::UsageDocument =
        serde_json::from_str(json).map_err(|e| format!("not a /keys usage report: {e}"))?;
    let time = |field: &str, t: &str| {
        humantime::parse_rfc3339_weak(t)
            .map_err(|_| format!("{field} `{t}` is not an RFC 3339 timestamp"))
    };
    let opt = |field: &str, t: Option<String>| t.map(|t| time(field, &t)).transpose();
    Ok(UsageReport {
        since: time("since", &doc.since)?,
        now: time("now", &doc.now)?,
        keys: doc
            .keys
            .into_iter()
            .map(|r| {
                Ok(UsageRow {
                    last_opened: opt("last_opened", r.last_opened)?,
                    last_sealed: opt("last_sealed", r.last_sealed)?,
                    id: r.id,
                    state: r.state,
                    opened_total: r.opened_total,
                    sealed_total: r.sealed_total,
                })
            })
            .collect::<Result<_, String>>()?,
    })
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `now - then` for messages, whole seconds.
fn ago(now: SystemTime, then: SystemTime) -> String {
    let secs = now.duration_since(then).map_or(0, |d| d.as_secs());
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// Whether `kid` may be retired given one proxy's report: `Ok` explains why it may, `Err` why
/// not. Refused when the proxy opened (or sealed) a token of `kid` within `window`, when it
/// has not been counting for a whole window, or when it does not know `kid` at all.
pub fn retire_verdict(kid: &str, report: &UsageReport, window: Duration) -> Result<String, String> {
    let now = report.now;
    let within = |t: SystemTime| now.duration_since(t).map_or(true, |d| d < window);
    let win = humantime::format_duration(window);
    let since = rfc3339(report.since);
    let Some(row) = report.keys.iter().find(|r| r.id == kid) else {
        return Err(format!(
            "the proxy does not know key {kid} (not in its keyring, no token of it seen since {since}); is it running this keyring?"
        ));
    };
    let last_opened = row.last_opened.map_or("never".to_string(), rfc3339);
    let figures = format!(
        "opened_total {} since {since}, last_opened {last_opened}",
        row.opened_total
    );
    match row.last_opened {
        Some(t) if within(t) => {
            return Err(format!(
                "the proxy opened a token of {kid} {} ago, within the {win} window ({figures}); re-seal stored tokens with `fieldseal rewrap` and wait",
                ago(now, t)
            ))
        }
        None if row.opened_total > 0 => {
            return Err(format!(
                "the proxy reports opened tokens of {kid} without a time ({figures})"
            ))
        }
        _ => {}
    }
    if let Some(t) = row.last_sealed.filter(|t| within(*t)) {
        return Err(format!(
            "the proxy sealed {} token(s) with {kid}, the last {} ago, within the {win} window ({figures}); reload it after `keys rotate` and wait a window",
            row.sealed_total,
            ago(now, t)
        ));
    }
    if now
        .duration_since(report.since)
        .map_or(true, |up| up < window)
    {
        return Err(format!(
            "the proxy has been counting for only {} (since {since}), less than the {win} window, so it cannot have seen a whole window ({figures})",
            ago(now, report.since)
        ));
    }
    Ok(format!(
        "no token of {kid} opened in the last {win} ({figures})"
    ))
}

/// `http://host:port[/prefix][/]` (or `host:port`) → (authority, path of `/keys`).
fn admin_target(url: &str) -> Result<(String, String), String> {
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if url.starts_with("https://") {
        return Err(format!(
            "{url}: the admin listener speaks plain HTTP; use http://"
        ));
    } else if url.contains("://") {
        return Err(format!("{url}: expected http://host:port"));
    } else {
        url
    };
    let (authority, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url}: expected http://host:port"));
    }
    let has_port = authority.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !port.contains(']') && port.parse::<u16>().is_ok()
    });
    let authority = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, format!("{}/keys", prefix.trim_end_matches('/'))))
}

/// Largest `/keys` document accepted.
const MAX_USAGE_BYTES: usize = 1 << 20;

/// `GET {url}/keys` over plain HTTP/1.1, parsed.
pub(crate) fn fetch_usage(url: &str) -> Result<UsageReport, String> {
    use http_body_util::BodyExt;
    let (authority, path) = admin_target(url)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let body = runtime.block_on(async {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(authority.as_str())
                .await
                .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .map_err(|e| format!("{authority}: {e}"))?;
            tokio::spawn(conn);
            let request = http::Request::get(path.as_str())
                .header(http::header::HOST, authority.as_str())
                .header(http::header::ACCEPT, "application/json")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .map_err(|e| format!("{url}: {e}"))?;
            let response = send
                .send_request(request)
                .await
                .map_err(|e| format!("GET {path} on {authority}: {e}"))?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_USAGE_BYTES)
                .collect()
                .await
                .map_err(|e| format!("GET {path} on {authority}: {e}"))?
                .to_bytes();
            if status == http::StatusCode::FORBIDDEN {
                // The admin listener says why (loopback peers only) and how to get there.
                let why = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| {
                        v["message"]
                            .as_str()
                            .map(|m| m.chars().filter(|c| !c.is_control()).take(300).collect())
                    })
                    .unwrap_or_else(|| "refused".to_string());
                return Err(format!("GET {path} on {authority} answered {status}: {why}"));
            }
            if status != http::StatusCode::OK {
                return Err(format!(
                    "GET {path} on {authority} answered {status}; does this proxy build serve key usage?"
                ));
            }
            Ok(body)
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| format!("GET {path} on {authority} timed out"))?
    })?;
    let text = std::str::from_utf8(&body).map_err(|_| format!("{url}/keys: not UTF-8"))?;
    parse_usage(text).map_err(|m| format!("{url}/keys: {m}"))
}

// ---------------------------------------------------------------------------------------------
// seal / open

/// The keyring at `path` (unwrapped with the configured KEK source), or the exit code and
/// message of why not — for other commands that take `--keyring`.
pub(super) fn load_keyring(path: &Path) -> Result<Keyring, (u8, String)> {
    read(path, &KekSource::from_env())
        .map(|(_, ring)| ring)
        .map_err(|Failure(code, m)| (code, m))
}

fn load(path: &Path) -> Result<Keyring, ExitCode> {
    match read(path, &KekSource::from_env()) {
        Ok((_, ring)) => Ok(ring),
        Err(Failure(code, m)) => {
            eprintln!("error: {m}");
            Err(ExitCode::from(code))
        }
    }
}

/// The argument, or stdin when it is `-` (trailing newline removed).
fn argument(value: &str) -> Result<String, ExitCode> {
    if value != "-" {
        return Ok(value.to_string());
    }
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("error: cannot read stdin: {e}");
        return Err(ExitCode::from(exit::FAILED));
    }
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

pub fn seal(
    path: &Path,
    context: &str,
    value: &str,
    ttl: Option<std::time::Duration>,
    searchable: bool,
    subject: Option<&str>,
) -> ExitCode {
    let (ring, json) = match (load(path), json_argument(value)) {
        (Ok(r), Ok(j)) => (r, j),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let format = match (searchable, ttl) {
        (true, _) => token::Format::Searchable,
        (false, None) => token::Format::Fs1,
        (false, Some(ttl)) => token::Format::Expiring {
            expires_at: token::unix_now().saturating_add(ttl.as_secs()),
        },
    };
    if let Some(subject) = subject {
        return match token::seal_for_subject(&ring, subject, context, &json) {
            Ok(t) => {
                println!("{t}");
                ExitCode::SUCCESS
            }
            Err(reason) => {
                eprintln!("error: cannot seal for this subject: {reason}");
                ExitCode::from(exit::FAILED)
            }
        };
    }
    match token::seal_json_as(ring.primary(), format, context, &json) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: the OS random source failed: {e}");
            ExitCode::from(exit::FAILED)
        }
    }
}

/// A JSON value argument (`-` reads stdin) as its compact JSON text, or the exit code after
/// saying why it is not JSON.
fn json_argument(value: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, ExitCode> {
    let text = zeroize::Zeroizing::new(argument(value)?);
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        eprintln!("error: the value is not JSON ({e}); quote strings: '\"123-45-6789\"'");
        ExitCode::from(exit::FAILED)
    })?;
    Ok(zeroize::Zeroizing::new(
        serde_json::to_vec(&value).expect("a JSON value serialises"),
    ))
}

/// `fieldseal index`: the `fsd1` token of a value under every key that can still open one.
pub fn index(path: &Path, context: &str, value: &str) -> ExitCode {
    let (ring, json) = match (load(path), json_argument(value)) {
        (Ok(r), Ok(j)) => (r, j),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    for key in ring
        .keys()
        .iter()
        .filter(|k| k.state != crate::crypto::KeyState::Disabled)
    {
        println!("{} {}", key.id, token::seal_searchable(key, context, &json));
    }
    ExitCode::SUCCESS
}

pub fn open(path: &Path, context: &str, token_text: &str, subject: Option<&str>) -> ExitCode {
    let (ring, text) = match (load(path), argument(token_text)) {
        (Ok(r), Ok(t)) => (r, t),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let opened =
        token::open_json_for_subject(&ring, context, text.trim(), subject).and_then(|json| {
            serde_json::from_slice::<serde_json::Value>(&json)
                .map_err(|_| token::OpenError::NotJson)
        });
    match opened {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e} ({})", e.reason());
            ExitCode::from(exit::FAILED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn report(uptime: u64, rows: Vec<UsageRow>) -> UsageReport {
        UsageReport {
            since: at(0),
            now: at(uptime),
            keys: rows,
        }
    }

    fn row(id: &str, opened: u64, last_opened: Option<u64>) -> UsageRow {
        UsageRow {
            id: id.into(),
            state: "decrypt_only".into(),
            opened_total: opened,
            sealed_total: 0,
            last_opened: last_opened.map(at),
            last_sealed: None,
        }
    }

    const DAY: Duration = Duration::from_secs(24 * H);

    #[test]
    fn retire_allowed_when_unused_for_a_whole_window() {
        // Up 3 days; k1 last opened 2 days ago.
        let r = report(
            72 * H,
            vec![row("k1", 40, Some(24 * H - 1)), row("k2", 0, None)],
        );
        let ok = retire_verdict("k1", &r, DAY).unwrap();
        assert!(
            ok.contains("opened_total 40") && ok.contains("last_opened"),
            "{ok}"
        );
        // Never opened at all, up longer than the window.
        let ok = retire_verdict("k2", &r, DAY).unwrap();
        assert!(ok.contains("last_opened never"), "{ok}");
        // Exactly one window ago is outside it.
        let r = report(48 * H, vec![row("k1", 1, Some(24 * H))]);
        assert!(retire_verdict("k1", &r, DAY).is_ok());
    }

    #[test]
    fn retire_refused_when_opened_within_the_window() {
        let r = report(72 * H, vec![row("k1", 12, Some(72 * H - 60))]);
        let err = retire_verdict("k1", &r, DAY).unwrap_err();
        assert!(
            err.contains("1m ago")
                && err.contains("opened_total 12")
                && err.contains("within the 1day window"),
            "{err}"
        );
        assert!(err.contains(&rfc3339(at(0))), "names since: {err}");
        // A shorter window lets it through.
        assert!(retire_verdict("k1", &r, Duration::from_secs(30)).is_ok());
        // A last_opened in the proxy's future counts as recent.
        let r = report(72 * H, vec![row("k1", 1, Some(73 * H))]);
        assert!(retire_verdict("k1", &r, DAY).is_err());
    }

    #[test]
    fn retire_refused_when_the_proxy_has_not_seen_a_whole_window() {
        let r = report(2 * H, vec![row("k1", 0, None)]);
        let err = retire_verdict("k1", &r, DAY).unwrap_err();
        assert!(
            err.contains("counting for only 2h") && err.contains("cannot have seen a whole window"),
            "{err}"
        );
        assert!(retire_verdict("k1", &r, Duration::from_secs(H)).is_ok());
    }

    #[test]
    fn retire_refused_for_unknown_keys_recent_seals_and_inconsistent_reports() {
        let r = report(72 * H, vec![row("k2", 0, None)]);
        assert!(retire_verdict("k1", &r, DAY)
            .unwrap_err()
            .contains("does not know key k1"));
        let mut sealing = row("k1", 0, None);
        sealing.sealed_total = 5;
        sealing.last_sealed = Some(at(72 * H - 5));
        let r = report(72 * H, vec![sealing]);
        let err = retire_verdict("k1", &r, DAY).unwrap_err();
        assert!(err.contains("sealed 5 token(s)"), "{err}");
        let r = report(72 * H, vec![row("k1", 3, None)]);
        assert!(retire_verdict("k1", &r, DAY)
            .unwrap_err()
            .contains("without a time"));
    }

    #[test]
    fn usage_documents_parse() {
        let r = parse_usage(
            r#"{"since":"2027-01-01T00:00:00Z","now":"2027-01-03T00:00:00Z","keys":[
                {"id":"k1","state":"decrypt_only","opened_total":12,"sealed_total":0,"last_opened":"2027-01-02T00:00:00Z","last_sealed":null},
                {"id":"k2","state":"active","opened_total":0,"sealed_total":3,"last_opened":null,"last_sealed":"2027-01-02T23:00:00Z","extra":true}]}"#,
        )
        .unwrap();
        assert_eq!(r.keys.len(), 2);
        assert_eq!(r.keys[0].opened_total, 12);
        assert_eq!(
            r.now.duration_since(r.since).unwrap(),
            Duration::from_secs(48 * H)
        );
        assert!(retire_verdict("k1", &r, DAY).is_ok());
        assert!(retire_verdict("k1", &r, 2 * DAY).is_err());
        assert!(
            parse_usage(r#"{"since":"yesterday","now":"2027-01-03T00:00:00Z","keys":[]}"#)
                .unwrap_err()
                .contains("since")
        );
        assert!(parse_usage("<html>").is_err());
    }

    #[test]
    fn admin_urls() {
        for (url, authority, path) in [
            ("http://127.0.0.1:9901", "127.0.0.1:9901", "/keys"),
            ("http://127.0.0.1:9901/", "127.0.0.1:9901", "/keys"),
            ("127.0.0.1:9901", "127.0.0.1:9901", "/keys"),
            ("http://admin.local", "admin.local:80", "/keys"),
            ("http://[::1]:9901/", "[::1]:9901", "/keys"),
            ("http://[::1]", "[::1]:80", "/keys"),
            ("http://h:1/fieldseal/", "h:1", "/fieldseal/keys"),
        ] {
            assert_eq!(
                admin_target(url).unwrap(),
                (authority.to_string(), path.to_string()),
                "{url}"
            );
        }
        for bad in ["https://h:1", "ftp://h", "http://", "http://u@h:1"] {
            assert!(admin_target(bad).is_err(), "{bad}");
        }
    }
}
