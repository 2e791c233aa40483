//! A keyring KEK printed by a command (`keys.keyring_kek_command`, `--kek-command`,
//! `FIELDSEAL_KEYRING_KEK_COMMAND`), through the real binary and real commands: a "local KMS"
//! made of `openssl` (a master key file; data keys encrypted under it with AES-256-CBC/PBKDF2,
//! standing in for KMS ciphertext blobs) and a helper script that decrypts one and prints it
//! in base64, as `aws kms decrypt … --output text` would.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The local KMS: `master.pass` (its key), `<name>.enc` (data keys encrypted under it),
/// `kms-decrypt FILE` (prints a data key in base64; appends a line to `runs` each time).
struct LocalKms {
    dir: PathBuf,
}

impl LocalKms {
    fn new(dir: &Path) -> Self {
        let kms = Self {
            dir: dir.to_path_buf(),
        };
        let master = openssl(&["rand", "-base64", "32"], b"");
        write_mode(
            &kms.path("master.pass"),
            std::str::from_utf8(&master).unwrap(),
            0o600,
        );
        let script = format!(
            r#"#!/bin/sh
# A stand-in for a KMS CLI: decrypts the data key in "$1" and prints it in base64.
echo run >> '{dir}/runs'
[ -r '{dir}/master.pass' ] || {{ echo "kms: the master key is unavailable" >&2; exit 3; }}
openssl enc -d -aes-256-cbc -pbkdf2 -pass 'file:{dir}/master.pass' -in "$1" | base64 -w0
"#,
            dir = dir.display()
        );
        write_mode(&kms.path("kms-decrypt"), &script, 0o700);
        kms
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A fresh 32-byte data key, stored encrypted as `<name>.enc`; returns it in base64 (what
    /// the test compares against, and looks for in places it must never appear).
    fn data_key(&self, name: &str) -> String {
        let raw = openssl(&["rand", "32"], b"");
        assert_eq!(raw.len(), 32);
        let master = format!("file:{}", self.path("master.pass").display());
        let out = self.path(&format!("{name}.enc"));
        openssl(
            &[
                "enc",
                "-aes-256-cbc",
                "-pbkdf2",
                "-salt",
                "-pass",
                &master,
                "-out",
                out.to_str().unwrap(),
            ],
            &raw,
        );
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw)
    }

    /// The helper with an absolute path, decrypting `<name>.enc`.
    fn argv(&self, name: &str) -> Vec<String> {
        vec![
            self.path("kms-decrypt").display().to_string(),
            self.path(&format!("{name}.enc")).display().to_string(),
        ]
    }

    fn json(&self, name: &str) -> String {
        serde_json::to_string(&self.argv(name)).unwrap()
    }

    /// The same KMS as a shell pipeline, the form docs/keys.md shows for one-liners.
    fn pipeline_json(&self, name: &str) -> String {
        serde_json::to_string(&[
            "sh",
            "-c",
            &format!(
                "openssl enc -d -aes-256-cbc -pbkdf2 -pass file:{} -in {} | base64 -w0",
                self.path("master.pass").display(),
                self.path(&format!("{name}.enc")).display()
            ),
        ])
        .unwrap()
    }

    /// How many times `kms-decrypt` ran.
    fn runs(&self) -> usize {
        std::fs::read_to_string(self.path("runs"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
}

fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let (code, out, err) = run_cli(args, env);
    assert_eq!(code, 0, "{args:?}\nstdout: {out}\nstderr: {err}");
    out
}

fn doc(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A config for `check` in `dir` naming `keyring`, with `extra` YAML under `keys:`.
fn check_config(dir: &Path, pki: &Pki, keyring: &Path, extra_keys: &str) -> PathBuf {
    let yaml = config_yaml(
        pki,
        unused_addr(),
        &format!("keys:\n  keyring: \"{}\"\n{extra_keys}", keyring.display()),
    );
    let path = dir.join("fieldseal.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn yaml_list(argv: &[String]) -> String {
    serde_json::to_string(argv).unwrap()
}

/// No process whose command line is exactly `argv` is alive (zombies have none).
fn no_process_with_cmdline(argv: &[&str]) -> bool {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .all(|entry| std::fs::read(entry.path().join("cmdline")).map_or(true, |c| c != wanted))
}

#[test]
fn a_kms_kek_wraps_and_opens_a_keyring_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let kms = LocalKms::new(dir.path());
    let kek = kms.data_key("kek");
    let kek2 = kms.data_key("kek2");
    let ring = dir.path().join("keyring.json");
    let ring_s = ring.to_str().unwrap();
    let cmd = kms.json("kek");
    let mut printed = String::new();

    let out = ok(
        &[
            "keys",
            "init",
            "--out",
            ring_s,
            "--wrap",
            "--kek-command",
            &cmd,
        ],
        &[],
    );
    assert!(
        out.contains("wrapped with the raw KEK from --kek-command (program `")
            && out.contains("kms-decrypt`, 1 argument)"),
        "{out}"
    );
    printed += &out;
    assert_eq!(doc(&ring)["wrapped"]["kdf"], "none");
    assert_eq!(kms.runs(), 1);
    // What wrapped it is the KMS's data key itself: it opens with that KEK given directly.
    printed += &ok(
        &["keys", "list", "--keyring", ring_s],
        &[("FIELDSEAL_KEYRING_KEK", &kek)],
    );

    let list = ok(
        &["keys", "list", "--keyring", ring_s, "--kek-command", &cmd],
        &[],
    );
    assert!(list.contains("k1") && list.contains("active"), "{list}");
    printed += &list;
    printed += &ok(
        &["keys", "rotate", "--keyring", ring_s, "--kek-command", &cmd],
        &[],
    );
    assert_eq!(doc(&ring)["wrapped"]["kdf"], "none");
    assert_eq!(kms.runs(), 3);

    // seal and open take the command from the environment (here the shell-pipeline form).
    let env = [("FIELDSEAL_KEYRING_KEK_COMMAND", kms.pipeline_json("kek"))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let token = ok(
        &[
            "seal",
            "--keyring",
            ring_s,
            "--context",
            "users.ssn",
            "\"123-45-6789\"",
        ],
        &env,
    );
    assert!(token.starts_with("fs1.k2."), "{token}");
    let opened = ok(
        &[
            "open",
            "--keyring",
            ring_s,
            "--context",
            "users.ssn",
            token.trim(),
        ],
        &env,
    );
    assert_eq!(opened.trim(), "\"123-45-6789\"");
    printed += &token;

    // Rewrapping under another data key: the old command, then the new one.
    let cmd2 = kms.json("kek2");
    let out = ok(
        &[
            "keys",
            "rewrap-keyring",
            "--keyring",
            ring_s,
            "--kek-command",
            &cmd,
            "--new-kek-command",
            &cmd2,
        ],
        &[],
    );
    assert!(
        out.contains("rewrapped") && out.contains("raw KEK from --new-kek-command"),
        "{out}"
    );
    printed += &out;
    printed += &ok(
        &["keys", "list", "--keyring", ring_s, "--kek-command", &cmd2],
        &[],
    );
    let (code, out, err) = run_cli(
        &["keys", "list", "--keyring", ring_s, "--kek-command", &cmd],
        &[],
    );
    assert_eq!(code, 64, "{out}{err}");
    assert!(
        err.contains("wrong passphrase/KEK, or the file was modified"),
        "{err}"
    );
    printed += &out;
    printed += &err;
    // The new KEK can also come from FIELDSEAL_NEW_KEYRING_KEK_COMMAND.
    let pipeline = kms.pipeline_json("kek");
    ok(
        &[
            "keys",
            "rewrap-keyring",
            "--keyring",
            ring_s,
            "--kek-command",
            &cmd2,
        ],
        &[("FIELDSEAL_NEW_KEYRING_KEK_COMMAND", &pipeline)],
    );
    printed += &ok(
        &["keys", "list", "--keyring", ring_s],
        &[("FIELDSEAL_KEYRING_KEK", &kek)],
    );

    for secret in [&kek, &kek2] {
        assert!(!printed.contains(secret.as_str()), "a KEK was printed");
    }
}

#[test]
fn failing_commands_are_explained_and_never_echo_the_kek() {
    let dir = tempfile::tempdir().unwrap();
    let kms = LocalKms::new(dir.path());
    let kek = kms.data_key("kek");
    let ring = dir.path().join("keyring.json");
    let ring_s = ring.to_str().unwrap();
    ok(
        &["keys", "init", "--out", ring_s, "--wrap"],
        &[("FIELDSEAL_KEYRING_KEK", &kek)],
    );
    let sh = |script: &str| serde_json::to_string(&["sh", "-c", script]).unwrap();
    let list = |command: &str, extra: &[&str]| {
        let mut args = vec![
            "keys",
            "list",
            "--keyring",
            ring_s,
            "--kek-command",
            command,
        ];
        args.extend_from_slice(extra);
        let started = Instant::now();
        let (code, out, err) = run_cli(&args, &[]);
        assert!(!out.contains(&kek) && !err.contains(&kek), "{out}{err}");
        (code, err, started.elapsed())
    };

    // The right command works (the baseline for everything below).
    let (code, err, _) = list(&kms.json("kek"), &[]);
    assert_eq!(code, 0, "{err}");

    let cases: Vec<(String, &str)> = vec![
        (
            sh("echo 'AccessDeniedException: not allowed to kms:Decrypt' >&2; exit 254"),
            "--kek-command: the KEK command `sh` exited with status 254; its stderr: \"AccessDeniedException: not allowed to kms:Decrypt\"",
        ),
        (
            sh(&format!("echo {}", &kek[..43])),
            "printed something that is not standard base64",
        ),
        (
            sh("head -c 16 /dev/urandom | base64 -w0"),
            "printed base64 of 16 bytes; a KEK is exactly 32 bytes",
        ),
        (
            sh(&format!("echo 'the KEK is {kek}'")),
            "printed something that is not standard base64",
        ),
        (
            sh(&format!("echo {kek} {kek}")),
            "printed something that is not standard base64",
        ),
        (
            sh("head -c 100000 /dev/zero | base64 -w0"),
            "printed more than 4096 bytes on stdout",
        ),
        (sh("true"), "exited 0 but printed nothing"),
        (
            sh("kill -TERM $$"),
            "the KEK command `sh` was killed by signal 15",
        ),
        (
            r#"["/nonexistent/kms-helper"]"#.to_string(),
            "cannot run the KEK command `/nonexistent/kms-helper`",
        ),
        (
            r#"["no-such-kms-helper"]"#.to_string(),
            "`no-such-kms-helper`: not found in PATH",
        ),
    ];
    for (command, needle) in &cases {
        let (code, err, _) = list(command, &[]);
        assert_eq!(code, 64, "{command}: {err}");
        assert!(err.contains(needle), "{command}: {err}");
    }

    // A valid but wrong KEK: the usual unwrap error.
    let (code, err, _) = list(&sh("head -c 32 /dev/urandom | base64 -w0"), &[]);
    assert_eq!(code, 64);
    assert!(
        err.contains("wrong passphrase/KEK, or the file was modified"),
        "{err}"
    );

    // A helper others could change is not run at all.
    let helper = dir.path().join("group-writable-helper");
    write_mode(&helper, &format!("#!/bin/sh\necho {kek}\n"), 0o770);
    let (code, err, _) = list(&serde_json::to_string(&[&helper]).unwrap(), &[]);
    assert_eq!(code, 64);
    assert!(
        err.contains("refusing to run the KEK command") && err.contains("writable by its group"),
        "{err}"
    );

    // A timeout kills the command, in about the timeout, and leaves nothing behind: the
    // program itself, and a background child of a shell (its whole process group goes).
    let (code, err, took) = list(r#"["sleep", "29.317"]"#, &["--kek-command-timeout", "1s"]);
    assert_eq!(code, 64);
    assert!(
        err.contains("the KEK command `sleep` did not finish within 1s: killed it"),
        "{err}"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(no_process_with_cmdline(&["sleep", "29.317"]));
    let (code, err, took) = list(
        &sh("sleep 29.318 & echo waiting >&2; wait"),
        &["--kek-command-timeout", "1s"],
    );
    assert_eq!(code, 64);
    assert!(
        err.contains("did not finish within 1s: killed it; its stderr: \"waiting\""),
        "{err}"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
    // The grandchild was reparented and killed; give init a moment to reap it.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !no_process_with_cmdline(&["sleep", "29.318"]) {
        assert!(Instant::now() < deadline, "the background sleep survived");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A timeout outside 1s..5m is refused by the parser.
    let (code, err, _) = list(&kms.json("kek"), &["--kek-command-timeout", "10m"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("must be between 1s and 5m"), "{err}");
    // Not JSON: refused without running anything, and without echoing it.
    let (code, err, _) = list("aws kms decrypt --ciphertext-blob fileb://x", &[]);
    assert_eq!(code, 2);
    assert!(err.contains("must be a JSON array of strings"), "{err}");
}

#[test]
fn the_command_gets_the_documented_environment() {
    let dir = tempfile::tempdir().unwrap();
    let kms = LocalKms::new(dir.path());
    let kek = kms.data_key("kek");
    let ring = dir.path().join("keyring.json");
    ok(
        &["keys", "init", "--out", ring.to_str().unwrap(), "--wrap"],
        &[("FIELDSEAL_KEYRING_KEK", &kek)],
    );
    // Prints the KEK only when the environment is as documented; says what is wrong otherwise.
    let script = format!(
        r#"fail() {{ echo "$1" >&2; exit 1; }}
[ "$FIELDSEAL_KEK_PROTOCOL" = 1 ] || fail "protocol: $FIELDSEAL_KEK_PROTOCOL"
[ "$FIELDSEAL_KEYRING" = '{ring}' ] || fail "keyring: $FIELDSEAL_KEYRING"
[ "$CLOUD_CREDENTIALS_HINT" = inherited ] || fail "not inherited"
for v in FIELDSEAL_KEYRING_KEK FIELDSEAL_KEYRING_PASSPHRASE FIELDSEAL_NEW_KEYRING_KEK FIELDSEAL_NEW_KEYRING_PASSPHRASE FIELDSEAL_RSA_KEY_PASSPHRASE; do
  eval "[ -z \"\${{$v+x}}\" ]" || fail "$v leaked"
done
[ "$(pwd)" = '{cwd}' ] || fail "cwd: $(pwd)"
if read -r line; then fail "stdin is not empty"; fi
exec '{helper}' '{enc}'"#,
        ring = ring.display(),
        cwd = dir.path().canonicalize().unwrap().display(),
        helper = kms.path("kms-decrypt").display(),
        enc = kms.path("kek.enc").display(),
    );
    let command = serde_json::to_string(&["sh", "-c", &script]).unwrap();
    // A relative --keyring: the command is told its absolute path. The fieldseal secrets in
    // this environment sit at a lower level than --kek-command (not ambiguous), and are not
    // passed on.
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir.path())
        .args(["keys", "list", "--keyring", "keyring.json", "--kek-command"])
        .arg(&command)
        .env("CLOUD_CREDENTIALS_HINT", "inherited")
        .env("FIELDSEAL_KEYRING_KEK", &kek)
        .env("FIELDSEAL_KEYRING_PASSPHRASE", "not for the command")
        .env("FIELDSEAL_NEW_KEYRING_KEK", &kek)
        .env("FIELDSEAL_NEW_KEYRING_PASSPHRASE", "not for the command")
        .env("FIELDSEAL_RSA_KEY_PASSPHRASE", "not for the command")
        .env_remove("FIELDSEAL_KEYRING_KEK_COMMAND")
        .stdin(Stdio::piped());
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("k1"), "{stdout}");
    assert_eq!(kms.runs(), 1);
}

#[test]
fn levels_ambiguity_and_configuration() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let kms = LocalKms::new(dir.path());
    let kek = kms.data_key("kek");
    let ring = dir.path().join("keyring.json");
    let ring_s = ring.to_str().unwrap();
    ok(
        &["keys", "init", "--out", ring_s, "--wrap"],
        &[("FIELDSEAL_KEYRING_KEK", &kek)],
    );
    let check = |config: &Path, env: &[(&str, &str)]| {
        let (code, out, err) = run_cli(&["check", "--config", config.to_str().unwrap()], env);
        assert!(!out.contains(&kek) && !err.contains(&kek), "{out}{err}");
        (code, out, err)
    };
    let failing = r#"["sh", "-c", "echo env command ran >&2; exit 7"]"#;
    let env_failing = [("FIELDSEAL_KEYRING_KEK_COMMAND", failing)];
    let good_pipeline = kms.pipeline_json("kek");
    let env_good = [("FIELDSEAL_KEYRING_KEK_COMMAND", good_pipeline.as_str())];

    // The configuration's command (relative program, run in the config file's directory)
    // wins over the environment's. `check` names the source, never the argv or the KEK.
    let config = check_config(
        dir.path(),
        &pki,
        &ring,
        "  keyring_kek_command: [\"./kms-decrypt\", \"kek.enc\"]\n",
    );
    let (code, out, err) = check(&config, &env_failing);
    assert_eq!(code, 0, "{out}{err}");
    let line = out.lines().find(|l| l.starts_with("keyring ")).unwrap();
    assert_eq!(
        line,
        format!(
            "keyring {ring_s}: primary k1, wrapped, opened with the raw KEK from keys.keyring_kek_command (program `./kms-decrypt`, 1 argument); timeout 10s, cache 1h"
        )
    );
    assert!(
        !out.contains("kek.enc") && !out.contains("master.pass"),
        "{out}"
    );
    assert_eq!(kms.runs(), 1);

    // Tuned timeout and cache are shown; `0s` turns the cache off.
    let config = check_config(
        dir.path(),
        &pki,
        &ring,
        "  keyring_kek_command: [\"./kms-decrypt\", \"kek.enc\"]\n  keyring_kek_command_timeout: 30s\n  keyring_kek_command_cache: 0s\n",
    );
    let (code, out, err) = check(&config, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("; timeout 30s, cache off (runs at every load)"),
        "{out}"
    );

    // Only the environment's command: used, and named.
    let bare = check_config(dir.path(), &pki, &ring, "");
    let (code, out, err) = check(&bare, &env_good);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("opened with the raw KEK from environment variable FIELDSEAL_KEYRING_KEK_COMMAND (program `sh`, 2 arguments); timeout 10s, cache 1h"),
        "{out}"
    );
    // ...and its failure is the configuration's problem, with the command's message.
    let (code, _, err) = check(&bare, &env_failing);
    assert_eq!(code, 1);
    assert!(
        err.contains("environment variable FIELDSEAL_KEYRING_KEK_COMMAND: the KEK command `sh` exited with status 7; its stderr: \"env command ran\""),
        "{err}"
    );

    // The command line: --kek-command beats the environment.
    let cmd = kms.json("kek");
    ok(
        &["keys", "list", "--keyring", ring_s, "--kek-command", &cmd],
        &env_failing,
    );
    ok(&["keys", "list", "--keyring", ring_s], &env_good);
    let (code, _, err) = run_cli(&["keys", "list", "--keyring", ring_s], &env_failing);
    assert_eq!(code, 64);
    assert!(err.contains("exited with status 7"), "{err}");

    // Two kinds at one level are ambiguous: configuration, environment, command line.
    let kek_file = dir.path().join("kek.b64");
    write_mode(&kek_file, &kek, 0o600);
    let both = check_config(
        dir.path(),
        &pki,
        &ring,
        &format!(
            "  keyring_kek_file: \"{}\"\n  keyring_kek_command: [\"./kms-decrypt\", \"kek.enc\"]\n",
            kek_file.display()
        ),
    );
    let (code, _, err) = check(&both, &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "both keys.keyring_kek_file {} and keys.keyring_kek_command are set",
            kek_file.display()
        )),
        "{err}"
    );
    let (code, _, err) = run_cli(
        &["keys", "list", "--keyring", ring_s],
        &[
            ("FIELDSEAL_KEYRING_KEK", &kek),
            ("FIELDSEAL_KEYRING_KEK_COMMAND", &good_pipeline),
        ],
    );
    assert_eq!(code, 64);
    assert!(
        err.contains("both environment variable FIELDSEAL_KEYRING_KEK and environment variable FIELDSEAL_KEYRING_KEK_COMMAND are set"),
        "{err}"
    );
    let (code, _, err) = run_cli(
        &[
            "keys",
            "list",
            "--keyring",
            ring_s,
            "--kek-command",
            &cmd,
            "--kek-file",
            kek_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("cannot be used with"), "{err}");

    // A plain keyring is refused wherever a command is supplied, before anything runs.
    let plain = dir.path().join("plain.json");
    ok(&["keys", "init", "--out", plain.to_str().unwrap()], &[]);
    let before = kms.runs();
    let plain_config = check_config(
        dir.path(),
        &pki,
        &plain,
        "  keyring_kek_command: [\"./kms-decrypt\", \"kek.enc\"]\n",
    );
    let (code, _, err) = check(&plain_config, &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is not wrapped, but keys.keyring_kek_command is set"),
        "{err}"
    );
    let (code, _, err) = run_cli(
        &["keys", "list", "--keyring", plain.to_str().unwrap()],
        &env_good,
    );
    assert_eq!(code, 64);
    assert!(
        err.contains(
            "is not wrapped, but environment variable FIELDSEAL_KEYRING_KEK_COMMAND is set"
        ),
        "{err}"
    );
    assert_eq!(kms.runs(), before);

    // Configuration mistakes.
    for (extra, needle) in [
        (
            "  keyring_kek_command: \"aws kms decrypt\"\n",
            "keys.keyring_kek_command: must be a list: the program and its arguments, run without a shell",
        ),
        ("  keyring_kek_command: []\n", "keys.keyring_kek_command: is empty"),
        (
            "  keyring_kek_command: [\"true\"]\n  keyring_kek_command_timeout: 500ms\n",
            "keys.keyring_kek_command_timeout: must be between 1s and 5m",
        ),
        (
            "  keyring_kek_command: [\"true\"]\n  keyring_kek_command_cache: 2days\n",
            "keys.keyring_kek_command_cache: must be at most 1day",
        ),
    ] {
        let config = check_config(dir.path(), &pki, &ring, extra);
        let (code, _, err) = check(&config, &[]);
        assert_eq!(code, 1, "{extra}");
        assert!(err.contains(needle), "{extra}: {err}");
    }
    // Tuning a command that is not there is worth a warning.
    let config = check_config(
        dir.path(),
        &pki,
        &ring,
        &format!(
            "  keyring_kek_file: \"{}\"\n  keyring_kek_command_cache: 5m\n",
            kek_file.display()
        ),
    );
    let (code, out, err) = check(&config, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("apply to a KEK command, but neither keys.keyring_kek_command nor FIELDSEAL_KEYRING_KEK_COMMAND is set"),
        "{out}"
    );
}

fn proxy_yaml(pki: &Pki, upstream: std::net::SocketAddr, keyring: &Path, keys: &str) -> String {
    config_yaml(
        pki,
        upstream,
        &format!(
            "keys:\n  keyring: \"{}\"\n{keys}reload:\n  watch: false\n",
            keyring.display()
        ),
    )
}

/// The `(id, state)` pairs of the proxy's `GET /keys`.
async fn proxy_keys(proxy: &ProxyProcess) -> Vec<(String, String)> {
    let (_, text) = proxy.admin_get("/keys").await;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap().to_string(),
                k["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn count_lines(proxy: &ProxyProcess, needle: &str) -> usize {
    proxy.logs().iter().filter(|l| l.contains(needle)).count()
}

/// Sends SIGHUP and waits for the `n`-th reload outcome (`configuration reloaded` or
/// `reload refused`) in the log.
fn reload(proxy: &ProxyProcess, n: usize) {
    proxy.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(15);
    while count_lines(proxy, "configuration reloaded") + count_lines(proxy, "reload refused") < n {
        assert!(
            Instant::now() < deadline,
            "no reload outcome:\n{}",
            proxy.logs().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_proxy_runs_caches_and_reloads_with_a_kms_kek() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let kms = LocalKms::new(pki.dir.path());
    let kek = kms.data_key("kek");
    let ring = pki.path("keyring.json");
    let ring_s = ring.to_str().unwrap().to_string();
    let with_kek = |k: &str| vec![("FIELDSEAL_KEYRING_KEK".to_string(), k.to_string())];
    let cli = |args: &[&str], env: &[(String, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        ok(args, &env)
    };
    cli(
        &["keys", "init", "--out", &ring_s, "--wrap"],
        &with_kek(&kek),
    );
    let yaml = proxy_yaml(
        &pki,
        up.addr,
        &ring,
        &format!("  keyring_kek_command: {}\n", yaml_list(&kms.argv("kek"))),
    );
    let proxy = ProxyProcess::start(&yaml);
    assert_eq!(proxy_keys(&proxy).await, [("k1".into(), "active".into())]);
    assert_eq!(kms.runs(), 1);
    proxy.wait_log(|l| l.contains("the KEK command printed a KEK") && l.contains("kms-decrypt"));

    // A rotation and a reload within the cache time: the cached KEK opens it, no run.
    cli(&["keys", "rotate", "--keyring", &ring_s], &with_kek(&kek));
    reload(&proxy, 1);
    assert_eq!(
        proxy_keys(&proxy).await,
        [
            ("k1".into(), "decrypt_only".into()),
            ("k2".into(), "active".into())
        ]
    );
    assert_eq!(kms.runs(), 1);

    // The KEK is rotated: the keyring rewrapped under a new data key, whose ciphertext
    // replaces the old one (same path, same argv). The cached KEK no longer opens the file:
    // the command runs again, once, and the reload succeeds.
    let kek2 = kms.data_key("kek2");
    let mut rewrap_env = with_kek(&kek);
    rewrap_env.push(("FIELDSEAL_NEW_KEYRING_KEK".into(), kek2.clone()));
    cli(
        &["keys", "rewrap-keyring", "--keyring", &ring_s],
        &rewrap_env,
    );
    cli(&["keys", "rotate", "--keyring", &ring_s], &with_kek(&kek2));
    std::fs::rename(kms.path("kek2.enc"), kms.path("kek.enc")).unwrap();
    reload(&proxy, 2);
    assert_eq!(proxy_keys(&proxy).await.len(), 3, "{:?}", proxy.logs());
    assert_eq!(kms.runs(), 2);
    assert_eq!(
        count_lines(&proxy, "the cached KEK does not open the keyring"),
        1
    );

    // The KMS becomes unavailable while the KEK rotates again: the reload is refused, the
    // loaded keyring keeps serving, and the log says why (the command's own message).
    let kek3 = kms.data_key("kek3");
    let mut rewrap_env = with_kek(&kek2);
    rewrap_env.push(("FIELDSEAL_NEW_KEYRING_KEK".into(), kek3.clone()));
    cli(
        &["keys", "rewrap-keyring", "--keyring", &ring_s],
        &rewrap_env,
    );
    cli(&["keys", "rotate", "--keyring", &ring_s], &with_kek(&kek3));
    std::fs::rename(kms.path("kek3.enc"), kms.path("kek.enc")).unwrap();
    std::fs::rename(kms.path("master.pass"), kms.path("master.away")).unwrap();
    reload(&proxy, 3);
    let refused = proxy.wait_log(|l| l.contains("reload refused"));
    assert!(
        refused.contains("keys.keyring_kek_command: the KEK command `")
            && refused.contains(
                "exited with status 3; its stderr: \\\"kms: the master key is unavailable\\\""
            ),
        "{refused}"
    );
    assert_eq!(proxy_keys(&proxy).await.len(), 3);
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert!(
        metric(&metrics, "fieldseal_config_reload_failures_total") == Some(1.0),
        "{metrics}"
    );
    // Back: the next reload runs the command and loads the new keyring.
    std::fs::rename(kms.path("master.away"), kms.path("master.pass")).unwrap();
    reload(&proxy, 4);
    assert_eq!(proxy_keys(&proxy).await.len(), 4, "{:?}", proxy.logs());

    let logs = proxy.logs().join("\n");
    for secret in [&kek, &kek2, &kek3] {
        assert!(!logs.contains(secret.as_str()), "a KEK was logged");
    }
}

#[tokio::test]
async fn with_the_cache_off_every_load_runs_the_command() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let kms = LocalKms::new(pki.dir.path());
    let kek = kms.data_key("kek");
    let ring = pki.path("keyring.json");
    ok(
        &["keys", "init", "--out", ring.to_str().unwrap(), "--wrap"],
        &[("FIELDSEAL_KEYRING_KEK", &kek)],
    );
    let yaml = proxy_yaml(
        &pki,
        up.addr,
        &ring,
        &format!(
            "  keyring_kek_command: {}\n  keyring_kek_command_cache: 0s\n",
            yaml_list(&kms.argv("kek"))
        ),
    );
    let proxy = ProxyProcess::start(&yaml);
    assert_eq!(kms.runs(), 1);
    reload(&proxy, 1);
    reload(&proxy, 2);
    assert_eq!(count_lines(&proxy, "configuration reloaded"), 2);
    assert_eq!(kms.runs(), 3);
    // The environment's command at startup, with the configuration's limits.
    drop(proxy);
    let yaml = proxy_yaml(&pki, up.addr, &ring, "  keyring_kek_command_timeout: 20s\n");
    let pipeline = kms.pipeline_json("kek");
    let proxy =
        ProxyProcess::start_with_env(&yaml, &[("FIELDSEAL_KEYRING_KEK_COMMAND", &pipeline)]);
    assert_eq!(proxy_keys(&proxy).await, [("k1".into(), "active".into())]);
}
