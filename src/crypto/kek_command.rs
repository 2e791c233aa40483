//! A KEK printed by a command: the exec provider behind `keys.keyring_kek_command`,
//! `--kek-command` and `FIELDSEAL_KEYRING_KEK_COMMAND`, so a KEK kept by a KMS (AWS KMS, GCP
//! Cloud KMS, Azure Key Vault, Vault Transit) unwraps a keyring without fieldseal linking their
//! SDKs. `docs/keys.md` ("KEK from a command") is the operator's side, with recipes.
//!
//! # Protocol, version 1
//!
//! - The command is an argv list run **without a shell** (`["sh", "-c", "…"]` for a pipeline).
//!   A program name without `/` is looked up in `PATH` (absolute entries only); a relative path
//!   with `/` is relative to the working directory given (the configuration file's directory for
//!   `keys.keyring_kek_command`, the current directory otherwise). The program file (after
//!   symlinks) must not be writable by its group or other users and must be owned by root or by
//!   the user fieldseal runs as: whoever can replace it runs code with fieldseal's cloud
//!   credentials and sees the KEK.
//! - Environment: fieldseal's own, inherited (cloud CLIs find their credentials there), minus
//!   the variables that hold secrets of fieldseal's ([`SCRUBBED_ENV`]), plus
//!   `FIELDSEAL_KEK_PROTOCOL=1` and `FIELDSEAL_KEYRING=<absolute path of the keyring file>`
//!   (unset when there is no keyring file to name). stdin is `/dev/null`. It runs in a process
//!   group of its own.
//! - Success: exit status 0 and, on stdout, standard base64 (RFC 4648 §4, padded) of exactly
//!   32 bytes, ASCII whitespace around it allowed, at most [`MAX_STDOUT`] bytes in all.
//! - Anything else fails, with a message that names the program and never quotes stdout:
//!   a non-zero exit or death by a signal, no end within the timeout (the whole process group
//!   is then killed with SIGKILL), more than [`MAX_STDOUT`] bytes of output (killed likewise),
//!   output that is not base64 or not 32 bytes. The first [`MAX_STDERR_SHOWN`] bytes of stderr
//!   (the command's own error message, control characters replaced) are quoted.
//!
//! Buffers that hold the output are zeroized; the KEK itself is a `Zeroizing<[u8; 32]>`.
//!
//! # Cache
//!
//! The proxy runs the command at startup and at every reload. With a cache time (default
//! [`DEFAULT_CACHE`], `0s` = none) the KEK is kept in memory, zeroized on drop, keyed by the argv,
//! working directory and keyring path, and reused by loads within that time. A cached KEK that
//! no longer opens the keyring (the keyring was rewrapped under a new data key) is dropped and
//! the command runs again once ([`super::wrap::KekSource::open_wrapped`]).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use zeroize::Zeroizing;

use super::wrap::KEK_LEN;

/// The protocol version, passed to the command as `FIELDSEAL_KEK_PROTOCOL`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Environment variable telling the command the protocol version.
pub const ENV_PROTOCOL: &str = "FIELDSEAL_KEK_PROTOCOL";
/// Environment variable telling the command which keyring file the KEK is for.
pub const ENV_KEYRING: &str = "FIELDSEAL_KEYRING";
/// Variables holding fieldseal's own secrets: never passed to the command.
pub const SCRUBBED_ENV: [&str; 5] = [
    "FIELDSEAL_KEYRING_PASSPHRASE",
    "FIELDSEAL_KEYRING_KEK",
    "FIELDSEAL_NEW_KEYRING_PASSPHRASE",
    "FIELDSEAL_NEW_KEYRING_KEK",
    "FIELDSEAL_RSA_KEY_PASSPHRASE",
];

/// Default time the command may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time the proxy keeps a KEK from a command for later loads.
pub const DEFAULT_CACHE: Duration = Duration::from_secs(3600);
pub const MAX_CACHE: Duration = Duration::from_secs(24 * 3600);
/// Most stdout accepted (a KEK is 44 characters of base64).
pub const MAX_STDOUT: usize = 4096;
/// Most stderr quoted in an error.
pub const MAX_STDERR_SHOWN: usize = 512;

/// How long a command may run and how long its KEK is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    /// `0s`: run the command at every load.
    pub cache: Duration,
}

impl Limits {
    /// The proxy's defaults: 10 s, cached for an hour.
    pub const PROXY: Self = Self {
        timeout: DEFAULT_TIMEOUT,
        cache: DEFAULT_CACHE,
    };
    /// The CLI's: 10 s, no cache (one load per process).
    pub const CLI: Self = Self {
        timeout: DEFAULT_TIMEOUT,
        cache: Duration::ZERO,
    };
}

/// Checks a timeout against [`MIN_TIMEOUT`]..=[`MAX_TIMEOUT`].
pub fn check_timeout(timeout: Duration) -> Result<Duration, String> {
    if (MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout) {
        Ok(timeout)
    } else {
        Err(format!(
            "must be between {} and {}",
            humantime::format_duration(MIN_TIMEOUT),
            humantime::format_duration(MAX_TIMEOUT)
        ))
    }
}

/// Checks a cache time against 0..=[`MAX_CACHE`].
pub fn check_cache(cache: Duration) -> Result<Duration, String> {
    if cache <= MAX_CACHE {
        Ok(cache)
    } else {
        Err(format!(
            "must be at most {} (0s runs the command at every load)",
            humantime::format_duration(MAX_CACHE)
        ))
    }
}

/// A command that prints a KEK: its argv and the directory it runs in.
#[derive(Clone, PartialEq, Eq)]
pub struct KekCommand {
    argv: Vec<String>,
    /// Where it runs, and what a relative program path is relative to (`None`: the current
    /// directory).
    cwd: Option<PathBuf>,
}

/// The argv itself is not shown: an argument may carry something the operator would rather
/// not see in logs (a token in a `sh -c` script).
impl fmt::Debug for KekCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KekCommand")
            .field("program", &self.program())
            .field("arguments", &(self.argv.len() - 1))
            .finish_non_exhaustive()
    }
}

/// How the argv is written outside YAML (a flag, an environment variable).
pub const JSON_FORM: &str = r#"a JSON array of strings: the program and its arguments, run without a shell, e.g. '["/usr/local/bin/kek-helper", "--key", "prod"]' (for a pipeline: '["sh", "-c", "… | base64 -w0"]')"#;

impl KekCommand {
    /// An argv (program first) run in `cwd`. Refuses an empty argv or program, and NUL bytes.
    pub fn new(argv: Vec<String>, cwd: Option<PathBuf>) -> Result<Self, String> {
        match argv.first() {
            None => return Err("is empty: give the program and its arguments".into()),
            Some(p) if p.trim().is_empty() => {
                return Err("names no program (argv[0] is empty)".into())
            }
            Some(_) => {}
        }
        if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
            return Err(format!("argument {i} contains a NUL byte"));
        }
        Ok(Self { argv, cwd })
    }

    /// Parses the JSON array form ([`JSON_FORM`]); errors never quote the text.
    pub fn from_json(text: &str, cwd: Option<PathBuf>) -> Result<Self, String> {
        let argv: Vec<String> =
            serde_json::from_str(text.trim()).map_err(|_| format!("must be {JSON_FORM}"))?;
        Self::new(argv, cwd)
    }

    /// The program as written (argv[0]).
    pub fn program(&self) -> &str {
        &self.argv[0]
    }

    /// `program `sh`, 2 arguments`: for messages and `check`, without the arguments.
    pub fn describe(&self) -> String {
        let n = self.argv.len() - 1;
        format!(
            "program `{}`, {n} argument{}",
            self.program(),
            if n == 1 { "" } else { "s" }
        )
    }

    /// Runs the command and returns the KEK it printed.
    pub fn run(
        &self,
        timeout: Duration,
        keyring: Option<&Path>,
    ) -> Result<Zeroizing<[u8; KEK_LEN]>, String> {
        let program = resolve_program(self.program(), self.cwd.as_deref())?;
        let started = Instant::now();
        let result = self.run_resolved(&program, timeout, keyring);
        if result.is_ok() {
            tracing::info!(
                program = self.program(),
                took_ms = started.elapsed().as_secs_f64() * 1000.0,
                "the KEK command printed a KEK"
            );
        }
        result
    }

    fn run_resolved(
        &self,
        program: &Path,
        timeout: Duration,
        keyring: Option<&Path>,
    ) -> Result<Zeroizing<[u8; KEK_LEN]>, String> {
        let name = self.program();
        let mut cmd = Command::new(program);
        cmd.args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env(ENV_PROTOCOL, PROTOCOL_VERSION.to_string());
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        match keyring.map(std::path::absolute) {
            Some(Ok(path)) => cmd.env(ENV_KEYRING, path),
            _ => cmd.env_remove(ENV_KEYRING),
        };
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // The program sees its name as written (multi-call binaries such as busybox need
            // it), and runs in a process group of its own so a timeout kills its children too.
            cmd.arg0(name).process_group(0);
        }
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot run the KEK command `{name}` ({}): {e}",
                program.display()
            )
        })?;
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let tx_out = tx.clone();
        std::thread::spawn(move || {
            let _ = tx_out.send(Output::Stdout(read_stdout(stdout)));
        });
        // Shared as it comes, so a timeout can still quote what the command said so far.
        let said = std::sync::Arc::new(Mutex::new(Vec::new()));
        let said_by_reader = said.clone();
        std::thread::spawn(move || {
            read_stderr(stderr, &said_by_reader);
            let _ = tx.send(Output::StderrDone);
        });
        let stderr_so_far = || said.lock().unwrap_or_else(|e| e.into_inner()).clone();

        let deadline = Instant::now() + timeout;
        let mut out: Option<Zeroizing<Vec<u8>>> = None;
        let mut err_done = false;
        let mut exited = false;
        loop {
            if !exited {
                exited = has_exited(&mut child);
            }
            if exited && out.is_some() && err_done {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                kill(&mut child);
                let what = if exited {
                    "exited but its output stayed open (a background process holding it?)"
                } else {
                    "did not finish"
                };
                return Err(format!(
                    "the KEK command `{name}` {what} within {}: killed it{}",
                    humantime::format_duration(timeout),
                    stderr_note(&stderr_so_far())
                ));
            }
            match rx.recv_timeout((deadline - now).min(Duration::from_millis(10))) {
                Ok(Output::Stdout(Ok(bytes))) => out = Some(bytes),
                Ok(Output::Stdout(Err(Overflow))) => {
                    kill(&mut child);
                    return Err(format!(
                        "the KEK command `{name}` printed more than {MAX_STDOUT} bytes on stdout (a KEK is {} characters of base64): killed it",
                        KEK_LEN.div_ceil(3) * 4
                    ));
                }
                Ok(Output::StderrDone) => err_done = true,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Both readers are done; only the exit is awaited.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
            }
        }
        let status = child
            .wait()
            .map_err(|e| format!("cannot wait for the KEK command `{name}`: {e}"))?;
        let (out, err) = (out.expect("read"), stderr_so_far());
        if !status.success() {
            return Err(format!(
                "the KEK command `{name}` {}{}",
                describe_status(status),
                stderr_note(&err)
            ));
        }
        parse_kek(&out).map_err(|m| format!("the KEK command `{name}` {m}{}", stderr_note(&err)))
    }
}

enum Output {
    Stdout(Result<Zeroizing<Vec<u8>>, Overflow>),
    StderrDone,
}

struct Overflow;

/// Reads stdout into a zeroizing buffer of fixed capacity (never reallocated, so no copy of
/// the KEK is left behind); more than [`MAX_STDOUT`] bytes is an [`Overflow`]. A read error
/// counts as the end of the output.
fn read_stdout(mut pipe: impl Read) -> Result<Zeroizing<Vec<u8>>, Overflow> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_STDOUT + 1]);
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Err(Overflow);
        }
        match pipe.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    // Truncating keeps the capacity, which `Zeroizing<Vec>` clears in full on drop.
    buf.truncate(len);
    Ok(buf)
}

/// Keeps the first [`MAX_STDERR_SHOWN`] bytes of stderr (and one more, to tell that there
/// was more) in `kept`, and drains the rest (so a chatty command never blocks on a full pipe).
fn read_stderr(mut pipe: impl Read, kept: &Mutex<Vec<u8>>) {
    let mut chunk = [0u8; 4096];
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                let room = (MAX_STDERR_SHOWN + 1).saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// `; its stderr: "…"` with the first [`MAX_STDERR_SHOWN`] bytes, control characters replaced
/// (no terminal escapes or forged log lines); empty when there was none.
fn stderr_note(err: &[u8]) -> String {
    let cut = &err[..err.len().min(MAX_STDERR_SHOWN)];
    let text = String::from_utf8_lossy(cut);
    let shown: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if shown.is_empty() {
        return String::new();
    }
    let more = if err.len() > MAX_STDERR_SHOWN {
        "…"
    } else {
        ""
    };
    format!("; its stderr: \"{shown}{more}\"")
}

fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("was killed by signal {signal}");
        }
    }
    format!("failed ({status})")
}

/// Whether the child has exited, without reaping it: while it is a zombie its pid (and so its
/// process group id) cannot be reused, so killing the group later hits only its own.
#[cfg(unix)]
fn has_exited(child: &mut Child) -> bool {
    use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};
    let pid = Pid::from_child(child);
    matches!(
        waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT
        ),
        Ok(Some(_))
    )
}

#[cfg(not(unix))]
fn has_exited(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(Some(_)))
}

/// Kills the command's whole process group (it is the group's leader) and reaps it.
fn kill(child: &mut Child) {
    #[cfg(unix)]
    {
        use rustix::process::{kill_process_group, Pid, Signal};
        let pid = Pid::from_child(child);
        // Never group 1 (that would mean every process we may signal).
        if pid.as_raw_nonzero().get() > 1 {
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// What the command printed, as a KEK: trimmed of ASCII whitespace, standard base64 of 32 bytes.
/// Errors never quote the output.
fn parse_kek(out: &[u8]) -> Result<Zeroizing<[u8; KEK_LEN]>, String> {
    let expected = format!(
        "(expected standard base64 of {KEK_LEN} bytes on stdout, {} characters)",
        KEK_LEN.div_ceil(3) * 4
    );
    let text = out.trim_ascii();
    if text.is_empty() {
        return Err(format!("exited 0 but printed nothing {expected}"));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(text.len()));
    if STANDARD.decode_vec(text, &mut bytes).is_err() {
        let hint = if text.iter().any(|b| matches!(b, b'-' | b'_')) {
            " (this looks like base64url: convert it with `tr '_-' '/+'` and add `=` padding)"
        } else {
            ""
        };
        return Err(format!(
            "printed something that is not standard base64{hint} {expected}"
        ));
    }
    if bytes.len() != KEK_LEN {
        return Err(format!(
            "printed base64 of {} bytes; a KEK is exactly {KEK_LEN} bytes",
            bytes.len()
        ));
    }
    let mut key = Zeroizing::new([0u8; KEK_LEN]);
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// The file to execute: a name without `/` from `PATH` (absolute entries only, like a careful
/// `execvp`), a path relative to `cwd` otherwise. Checked like a file that guards a secret.
fn resolve_program(program: &str, cwd: Option<&Path>) -> Result<PathBuf, String> {
    let path = if program.contains('/') {
        let p = Path::new(program);
        match cwd {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    } else {
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path_var)
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(program))
            .find(|candidate| is_executable_file(candidate))
            .ok_or_else(|| {
                format!(
                    "cannot run the KEK command `{program}`: not found in PATH (give its absolute path)"
                )
            })?
    };
    check_program(program, &path)?;
    Ok(path)
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        }
        #[cfg(not(unix))]
        {
            m.is_file()
        }
    })
}

/// Refuses a program file that its group or other users can write, or that another user than
/// root or fieldseal's own owns: they could make it do anything with fieldseal's credentials,
/// and see the KEK.
fn check_program(name: &str, path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "cannot run the KEK command `{name}` ({}): {e}",
            path.display()
        )
    })?;
    if !meta.is_file() {
        return Err(format!(
            "cannot run the KEK command `{name}`: {} is not a regular file",
            path.display()
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(format!(
                "refusing to run the KEK command `{name}`: {} is writable by {} (mode {mode:04o}), who could make it do anything with fieldseal's credentials and see the KEK; run `chmod go-w` on it",
                path.display(),
                if mode & 0o020 != 0 { "its group" } else { "other users" }
            ));
        }
        if let Some(euid) = crate::secret_file::effective_uid() {
            let owner = meta.uid();
            if owner != euid && owner != 0 {
                return Err(format!(
                    "refusing to run the KEK command `{name}`: {} is owned by uid {owner}, not by root or the user fieldseal runs as (uid {euid}), so its owner could change it at any time",
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The in-memory cache

#[derive(PartialEq, Eq)]
struct CacheKey {
    argv: Vec<String>,
    cwd: Option<PathBuf>,
    keyring: Option<PathBuf>,
}

struct Cached {
    key: CacheKey,
    until: Instant,
    kek: Zeroizing<[u8; KEK_LEN]>,
}

static CACHE: Mutex<Vec<Cached>> = Mutex::new(Vec::new());

fn cache_key(command: &KekCommand, keyring: Option<&Path>) -> CacheKey {
    CacheKey {
        argv: command.argv.clone(),
        cwd: command.cwd.clone(),
        keyring: keyring.map(Path::to_path_buf),
    }
}

fn cache() -> std::sync::MutexGuard<'static, Vec<Cached>> {
    // A panic while holding the lock leaves nothing half-written worth refusing.
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The KEK `command` printed for `keyring` less than its cache time ago; expired entries are
/// dropped (and zeroized) on the way.
pub(crate) fn cached(
    command: &KekCommand,
    keyring: Option<&Path>,
) -> Option<Zeroizing<[u8; KEK_LEN]>> {
    let now = Instant::now();
    let mut entries = cache();
    entries.retain(|e| e.until > now);
    let key = cache_key(command, keyring);
    entries.iter().find(|e| e.key == key).map(|e| e.kek.clone())
}

/// Remembers `kek` for `cache` (nothing for `0s`), replacing an older entry of the same key.
pub(crate) fn remember(
    command: &KekCommand,
    keyring: Option<&Path>,
    kek: &Zeroizing<[u8; KEK_LEN]>,
    cache_for: Duration,
) {
    let key = cache_key(command, keyring);
    let mut entries = cache();
    entries.retain(|e| e.key != key);
    if cache_for.is_zero() {
        return;
    }
    entries.push(Cached {
        key,
        until: Instant::now() + cache_for,
        kek: kek.clone(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> KekCommand {
        KekCommand::new(vec!["sh".into(), "-c".into(), script.into()], None).unwrap()
    }

    const KEK_B64: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

    #[test]
    fn prints_a_kek() {
        let kek = sh(&format!("printf '  {KEK_B64}\\n\\n'"))
            .run(DEFAULT_TIMEOUT, None)
            .unwrap();
        assert_eq!(*kek, [7u8; 32]);
    }

    #[test]
    fn the_environment_carries_the_protocol_and_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let ring = dir.path().join("ring.json");
        // Prints the KEK only if the environment and working directory are as documented
        // (that fieldseal's secrets are scrubbed is tested through the binary, in
        // tests/kek_command.rs: the test threads share this process's environment).
        let script = format!(
            r#"[ "$FIELDSEAL_KEK_PROTOCOL" = 1 ] && [ "$FIELDSEAL_KEYRING" = "{}" ] && [ -n "$PATH" ] && [ "$(pwd)" = "{}" ] && echo {KEK_B64}"#,
            ring.display(),
            dir.path().canonicalize().unwrap().display()
        );
        let mut cmd = sh(&script);
        cmd.cwd = Some(dir.path().to_path_buf());
        assert_eq!(*cmd.run(DEFAULT_TIMEOUT, Some(&ring)).unwrap(), [7u8; 32]);
        // No keyring to name: the variable is unset.
        let cmd = sh(&format!(
            r#"[ -z "${{FIELDSEAL_KEYRING+x}}" ] && echo {KEK_B64}"#
        ));
        assert_eq!(*cmd.run(DEFAULT_TIMEOUT, None).unwrap(), [7u8; 32]);
    }

    #[test]
    fn failures_name_the_program_and_never_the_output() {
        let cases: &[(&str, &str)] = &[
            ("echo $0 >&2; exit 3", "exited with status 3; its stderr: \"sh\""),
            ("kill -9 $$", "was killed by signal 9"),
            ("true", "printed nothing"),
            ("echo c2VjcmV0LXNlY3JldA==", "printed base64 of 13 bytes"),
            ("echo 'not%base64%secret'", "not standard base64"),
            (
                "echo BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc",
                "not standard base64",
            ),
            (
                "echo BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHB_-",
                "looks like base64url",
            ),
            ("head -c 5000 /dev/zero | tr '\\0' A", "more than 4096 bytes"),
            (
                "echo BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc= BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
                "not standard base64",
            ),
        ];
        for (script, needle) in cases {
            let err = sh(script).run(DEFAULT_TIMEOUT, None).unwrap_err();
            assert!(err.contains("the KEK command `sh`"), "{script}: {err}");
            assert!(err.contains(needle), "{script}: {err}");
            for secret in ["c2VjcmV0", "not%base64", "BwcHBwcH", "AAAA"] {
                assert!(!err.contains(secret), "{script}: {err}");
            }
        }
    }

    #[test]
    fn stderr_is_quoted_truncated_and_without_control_characters() {
        let err = sh(
            "printf 'bad\\033[31m\\nthing' >&2; head -c 2000 /dev/zero | tr '\\0' x >&2; exit 1",
        )
        .run(DEFAULT_TIMEOUT, None)
        .unwrap_err();
        assert!(err.contains("its stderr: \"bad [31m thing"), "{err}");
        assert!(!err.contains('\u{1b}') && !err.contains('\n'), "{err}");
        let quoted = err.split("its stderr: \"").nth(1).unwrap();
        assert!(
            quoted.len() <= MAX_STDERR_SHOWN + 4 && quoted.ends_with("…\""),
            "{err}"
        );
    }

    #[test]
    fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // A background grandchild that would outlive a plain kill of `sh`.
        let cmd = sh(&format!("sleep 30 & echo $! > {}; wait", pidfile.display()));
        let started = Instant::now();
        let err = cmd.run(Duration::from_secs(1), None).unwrap_err();
        let took = started.elapsed();
        assert!(err.contains("did not finish within 1s: killed it"), "{err}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let pid = pid.trim();
        // The grandchild is gone (a zombie reaped by init at most, never still sleeping).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let alive = state.as_deref().is_some_and(|s| {
                let after = s
                    .rsplit_once(')')
                    .map(|(_, r)| r.trim_start())
                    .unwrap_or("");
                s.contains("(sleep)") && !after.starts_with('Z')
            });
            if !alive {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sleep {pid} survived the timeout"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn output_left_open_by_a_background_process_times_out() {
        let started = Instant::now();
        let err = sh(&format!("echo {KEK_B64}; sleep 30 &"))
            .run(Duration::from_secs(1), None)
            .unwrap_err();
        assert!(err.contains("exited but its output stayed open"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn argv_is_validated_and_json_errors_do_not_echo() {
        assert!(KekCommand::new(vec![], None).unwrap_err().contains("empty"));
        assert!(KekCommand::new(vec![" ".into()], None)
            .unwrap_err()
            .contains("no program"));
        assert!(KekCommand::new(vec!["a".into(), "b\0".into()], None)
            .unwrap_err()
            .contains("NUL"));
        let err = KekCommand::from_json("aws kms decrypt --secret-thing", None).unwrap_err();
        assert!(
            err.contains("JSON array") && !err.contains("secret-thing"),
            "{err}"
        );
        let cmd = KekCommand::from_json(r#" ["aws", "kms", "decrypt"] "#, None).unwrap();
        assert_eq!(cmd.describe(), "program `aws`, 2 arguments");
        assert_eq!(
            format!("{cmd:?}"),
            "KekCommand { program: \"aws\", arguments: 2, .. }"
        );
    }

    #[test]
    fn programs_are_found_and_checked() {
        let err = KekCommand::new(vec!["no-such-kek-helper-xyz".into()], None)
            .unwrap()
            .run(DEFAULT_TIMEOUT, None)
            .unwrap_err();
        assert!(err.contains("not found in PATH"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("helper.sh");
        std::fs::write(&script, format!("#!/bin/sh\necho {KEK_B64}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let set = |mode| {
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        // Relative to the working directory given (the config file's directory).
        let cmd = KekCommand::new(vec!["./helper.sh".into()], Some(dir.path().into())).unwrap();
        set(0o700);
        assert_eq!(*cmd.run(DEFAULT_TIMEOUT, None).unwrap(), [7u8; 32]);
        set(0o775);
        let err = cmd.run(DEFAULT_TIMEOUT, None).unwrap_err();
        assert!(err.contains("writable by its group (mode 0775)"), "{err}");
        set(0o757);
        let err = cmd.run(DEFAULT_TIMEOUT, None).unwrap_err();
        assert!(err.contains("writable by other users"), "{err}");
        set(0o600);
        let err = cmd.run(DEFAULT_TIMEOUT, None).unwrap_err();
        assert!(err.contains("Permission denied"), "{err}");
    }

    #[test]
    fn limits_are_bounded() {
        assert!(check_timeout(Duration::from_millis(500)).is_err());
        assert!(check_timeout(Duration::from_secs(301)).is_err());
        assert!(check_timeout(DEFAULT_TIMEOUT).is_ok());
        assert!(check_cache(Duration::ZERO).is_ok());
        assert!(check_cache(MAX_CACHE + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn the_cache_keeps_and_expires() {
        let cmd = sh("unique-to-the-cache-test");
        let ring = Path::new("/cache-test/ring.json");
        assert!(cached(&cmd, Some(ring)).is_none());
        remember(
            &cmd,
            Some(ring),
            &Zeroizing::new([1u8; 32]),
            Duration::from_secs(60),
        );
        assert_eq!(*cached(&cmd, Some(ring)).unwrap(), [1u8; 32]);
        // Another keyring is another entry.
        assert!(cached(&cmd, Some(Path::new("/other"))).is_none());
        // Replaced, and `0s` forgets.
        remember(
            &cmd,
            Some(ring),
            &Zeroizing::new([2u8; 32]),
            Duration::from_secs(60),
        );
        assert_eq!(*cached(&cmd, Some(ring)).unwrap(), [2u8; 32]);
        remember(&cmd, Some(ring), &Zeroizing::new([3u8; 32]), Duration::ZERO);
        assert!(cached(&cmd, Some(ring)).is_none());
        remember(
            &cmd,
            Some(ring),
            &Zeroizing::new([4u8; 32]),
            Duration::from_millis(1),
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(cached(&cmd, Some(ring)).is_none());
    }
}
