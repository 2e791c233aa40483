//! The key lifecycle through the real binary: `keys init|rotate|list|retire|rewrap-keyring`,
//! wrapped keyrings (raw KEK and Argon2id passphrase) read by `seal`/`open`/`check`, and
//! `keys retire|list --admin` asking a running proxy what it still opens.
//!
//! Argon2id runs at the CLI's real costs (64 MiB, t=3: about 2.5 s per derivation in a debug
//! build), so most tests wrap with a raw KEK and only a few derive from a passphrase.

mod common;

use std::path::Path;

use base64::Engine;
use common::*;
use serde_json::json;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn doc(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Runs the CLI with `env` (`run_cli` drops inherited KEK variables).
fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    run_cli(args, env)
}

fn ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let (code, out, err) = cli(args, env);
    assert_eq!(code, 0, "{args:?}\nstdout: {out}\nstderr: {err}");
    out
}

/// The plain keyring inside a file (through `--unwrap` on a copy), as (id, state, secret).
fn keys_of(plain: &serde_json::Value) -> Vec<(String, String, String)> {
    plain["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap().to_string(),
                k["state"].as_str().unwrap().to_string(),
                k["secret"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn state_line<'a>(list: &'a str, id: &str) -> &'a str {
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("no row for {id} in:\n{list}"))
}

#[test]
fn lifecycle_on_a_keyring_wrapped_with_a_raw_kek() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("keyring.json");
    let ring_s = ring.to_str().unwrap();
    let kek = B64.encode([7u8; 32]);
    let env = [("FIELDSEAL_KEYRING_KEK", kek.as_str())];

    let out = ok(&["keys", "init", "--out", ring_s, "--wrap"], &env);
    assert!(
        out.contains("wrapped with the raw KEK from environment variable FIELDSEAL_KEYRING_KEK"),
        "{out}"
    );
    assert_eq!(mode(&ring), 0o600);
    let wrapped = doc(&ring);
    assert_eq!(wrapped["wrapped"]["kdf"], "none");
    assert_eq!(wrapped["wrapped"]["version"], 1);
    assert!(wrapped["wrapped"].get("salt").is_none());

    // seal/open read it through the environment; without the KEK they say how to supply one.
    let token = ok(
        &[
            "seal",
            "--keyring",
            ring_s,
            "--context",
            "ssn",
            "\"123-45-6789\"",
        ],
        &env,
    );
    let token = token.trim();
    assert!(token.starts_with("fs1.k1."), "{token}");
    let (code, _, err) = cli(
        &["open", "--keyring", ring_s, "--context", "ssn", token],
        &[],
    );
    assert_eq!(code, 64);
    assert!(
        err.contains("is wrapped")
            && err.contains("--kek-file")
            && err.contains("FIELDSEAL_KEYRING_PASSPHRASE"),
        "{err}"
    );
    let wrong = B64.encode([8u8; 32]);
    let (code, _, err) = cli(
        &["open", "--keyring", ring_s, "--context", "ssn", token],
        &[("FIELDSEAL_KEYRING_KEK", wrong.as_str())],
    );
    assert_eq!(code, 64);
    assert!(
        err.contains(&format!(
            "cannot unwrap {ring_s}: wrong passphrase/KEK, or the file was modified"
        )),
        "{err}"
    );

    // Rotate: k2 becomes the primary, k1 decrypt_only; the file stays wrapped and 0600.
    let out = ok(&["keys", "rotate", "--keyring", ring_s], &env);
    assert!(
        out.contains("rotated: primary k2 (new), k1 now decrypt_only"),
        "{out}"
    );
    assert!(
        out.contains("kill -HUP")
            && out.contains("fieldseal rewrap")
            && out.contains("keys retire"),
        "{out}"
    );
    assert_eq!(mode(&ring), 0o600);
    let after = doc(&ring);
    assert_eq!(after["wrapped"]["kdf"], "none");
    assert_ne!(
        after["wrapped"]["nonce"], wrapped["wrapped"]["nonce"],
        "a fresh nonce"
    );

    let list = ok(&["keys", "list", "--keyring", ring_s], &env);
    assert!(state_line(&list, "k1").contains("decrypt_only"), "{list}");
    let k2 = state_line(&list, "k2");
    assert!(
        k2.contains("active") && k2.trim_end().ends_with('*') && k2.contains(" 0d"),
        "{list}"
    );
    assert!(list.lines().next().unwrap().contains("created_at"));

    // The old token still opens; new seals use k2.
    assert_eq!(
        ok(
            &["open", "--keyring", ring_s, "--context", "ssn", token],
            &env
        )
        .trim(),
        "\"123-45-6789\""
    );
    let new_token = ok(
        &["seal", "--keyring", ring_s, "--context", "age", "42"],
        &env,
    );
    assert!(new_token.starts_with("fs1.k2."), "{new_token}");

    // A second rotation with an explicit id; reusing an id is refused.
    let out = ok(
        &["keys", "rotate", "--keyring", ring_s, "--id", "k2027"],
        &env,
    );
    assert!(
        out.contains("rotated: primary k2027 (new), k2 now decrypt_only"),
        "{out}"
    );
    let (code, _, err) = cli(&["keys", "rotate", "--keyring", ring_s, "--id", "k1"], &env);
    assert_eq!(code, 1);
    assert!(err.contains("never reused"), "{err}");
    let out = ok(&["keys", "rotate", "--keyring", ring_s], &env);
    assert!(
        out.contains("rotated: primary k2028 (new), k2027 now decrypt_only"),
        "{out}"
    );

    // Retire: not the primary; not blind; --force disables it.
    let (code, _, err) = cli(&["keys", "retire", "--keyring", ring_s, "k2028"], &env);
    assert_eq!(code, 1);
    assert!(err.contains("primary"), "{err}");
    let (code, _, err) = cli(&["keys", "retire", "--keyring", ring_s, "k1"], &env);
    assert_eq!(code, 1);
    assert!(err.contains("cannot tell whether the running proxy still opens k1 tokens; pass --admin URL (each replica) or --redis URL, or --force"), "{err}");
    let (code, out, err) = cli(
        &["keys", "retire", "--keyring", ring_s, "k1", "--force"],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("retired: k1 is now disabled"), "{out}");
    assert!(err.contains("without asking a running proxy"), "{err}");
    assert_eq!(mode(&ring), 0o600);
    let list = ok(&["keys", "list", "--keyring", ring_s], &env);
    assert!(state_line(&list, "k1").contains("disabled"), "{list}");
    let (code, _, err) = cli(
        &["open", "--keyring", ring_s, "--context", "ssn", token],
        &env,
    );
    assert_eq!(code, 1);
    assert!(err.contains("key_disabled") && err.contains("k1"), "{err}");
    let out = ok(
        &["keys", "retire", "--keyring", ring_s, "k1", "--force"],
        &env,
    );
    assert!(out.contains("already disabled"), "{out}");
    let (code, _, err) = cli(
        &["keys", "retire", "--keyring", ring_s, "k9", "--force"],
        &env,
    );
    assert_eq!(code, 1);
    assert!(err.contains("no key `k9`"), "{err}");

    // Nothing printed a secret or the KEK.
    let copy = dir.path().join("plain.json");
    std::fs::copy(&ring, &copy).unwrap();
    ok(
        &[
            "keys",
            "rewrap-keyring",
            "--keyring",
            copy.to_str().unwrap(),
            "--unwrap",
        ],
        &env,
    );
    let plain = doc(&copy);
    let ids: Vec<_> = keys_of(&plain)
        .into_iter()
        .map(|(id, state, _)| (id, state))
        .collect();
    assert_eq!(
        ids,
        [
            ("k1", "disabled"),
            ("k2", "decrypt_only"),
            ("k2027", "decrypt_only"),
            ("k2028", "active")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(plain["primary"], "k2028");
    let list = ok(&["keys", "list", "--keyring", ring_s], &env);
    for (_, _, secret) in keys_of(&plain) {
        assert!(!list.contains(&secret));
    }
    assert!(!list.contains(&kek));
}

#[test]
fn rewrap_keyring_changes_the_wrapping_and_keeps_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("keyring.json");
    let ring_s = ring.to_str().unwrap();
    ok(&["keys", "init", "--out", ring_s], &[]);
    let original = keys_of(&doc(&ring));

    // Plain → raw KEK.
    let kek_a = B64.encode([1u8; 32]);
    let out = ok(
        &["keys", "rewrap-keyring", "--keyring", ring_s],
        &[("FIELDSEAL_NEW_KEYRING_KEK", kek_a.as_str())],
    );
    assert!(out.contains("(was plain)"), "{out}");
    assert_eq!(doc(&ring)["wrapped"]["kdf"], "none");
    assert_eq!(mode(&ring), 0o600);

    // No new KEK: say how to give one. A short passphrase is refused (and not echoed).
    let (code, _, err) = cli(
        &["keys", "rewrap-keyring", "--keyring", ring_s],
        &[("FIELDSEAL_KEYRING_KEK", kek_a.as_str())],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("--new-passphrase-file") && err.contains("--unwrap"),
        "{err}"
    );
    // `rewrap-keyring` to the passphrase in a new file holding `text` with `mode`.
    let rewrap_to_passphrase = |name: &str, text: &str, mode: u32| {
        let file = dir.path().join(name);
        write_mode(&file, text, mode);
        cli(
            &[
                "keys",
                "rewrap-keyring",
                "--keyring",
                ring_s,
                "--new-passphrase-file",
                file.to_str().unwrap(),
            ],
            &[("FIELDSEAL_KEYRING_KEK", kek_a.as_str())],
        )
    };
    let (code, _, err) = rewrap_to_passphrase("short", "tooshort\n", 0o600);
    assert_eq!(code, 1);
    assert!(
        err.contains("at least 12 characters") && !err.contains("tooshort"),
        "{err}"
    );
    // A passphrase file others can read is refused.
    let (code, _, err) = rewrap_to_passphrase("open-pw", "a long enough passphrase\n", 0o644);
    assert_eq!(code, 1);
    assert!(err.contains("chmod 600"), "{err}");

    // Raw KEK → passphrase (from a file; Argon2id at the CLI's costs).
    let pw = dir.path().join("pw");
    write_mode(&pw, "correct horse battery staple\n", 0o600);
    let kek_file = dir.path().join("kek");
    write_mode(&kek_file, &format!("{kek_a}\n"), 0o600);
    let out = ok(
        &[
            "keys",
            "rewrap-keyring",
            "--keyring",
            ring_s,
            "--kek-file",
            kek_file.to_str().unwrap(),
            "--new-passphrase-file",
            pw.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.contains("with the passphrase from --new-passphrase-file")
            && out.contains("was wrapped with the raw KEK from --kek-file"),
        "{out}"
    );
    let w = doc(&ring)["wrapped"].clone();
    assert_eq!(
        (
            w["kdf"].as_str(),
            w["m_cost_kib"].as_u64(),
            w["t_cost"].as_u64(),
            w["p_cost"].as_u64()
        ),
        (Some("argon2id"), Some(65536), Some(3), Some(1))
    );
    assert_eq!(B64.decode(w["salt"].as_str().unwrap()).unwrap().len(), 16);
    assert_eq!(B64.decode(w["nonce"].as_str().unwrap()).unwrap().len(), 12);

    // Passphrase → plain, loudly.
    let (code, out, err) = cli(
        &["keys", "rewrap-keyring", "--keyring", ring_s, "--unwrap"],
        &[(
            "FIELDSEAL_KEYRING_PASSPHRASE",
            "correct horse battery staple",
        )],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("WARNING") && err.contains("UNWRAPPED"),
        "{err}"
    );
    assert!(out.contains("was wrapped with the passphrase from environment variable FIELDSEAL_KEYRING_PASSPHRASE"), "{out}");
    assert_eq!(mode(&ring), 0o600);
    assert_eq!(
        keys_of(&doc(&ring)),
        original,
        "the keys inside never changed"
    );
    let out = ok(
        &["keys", "rewrap-keyring", "--keyring", ring_s, "--unwrap"],
        &[],
    );
    assert!(out.contains("already plain"), "{out}");
}

/// A config naming `keyring` (and `extra` YAML under `keys:`), for `fieldseal check`.
fn check_config(dir: &Path, pki: &Pki, keyring: &Path, extra_keys: &str) -> std::path::PathBuf {
    let yaml = config_yaml(
        pki,
        unused_addr(),
        &format!("keys:\n  keyring: \"{}\"\n{extra_keys}", keyring.display()),
    );
    let path = dir.join("fieldseal.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn wrapped_keyring_with_right_and_wrong_passphrase() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("keyring.json");
    let ring_s = ring.to_str().unwrap();
    let right = [(
        "FIELDSEAL_KEYRING_PASSPHRASE",
        "correct horse battery staple",
    )];
    let wrong = [(
        "FIELDSEAL_KEYRING_PASSPHRASE",
        "correct horse battery stapler",
    )];

    // A short passphrase cannot wrap; nothing is written.
    let (code, _, err) = cli(
        &["keys", "init", "--out", ring_s, "--wrap"],
        &[("FIELDSEAL_KEYRING_PASSPHRASE", "short")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("at least 12 characters"), "{err}");
    assert!(!ring.exists());
    let (code, _, err) = cli(&["keys", "init", "--out", ring_s, "--wrap"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no passphrase or KEK to wrap with"), "{err}");

    ok(&["keys", "init", "--out", ring_s, "--wrap"], &right);
    assert_eq!(mode(&ring), 0o600);
    assert_eq!(doc(&ring)["wrapped"]["kdf"], "argon2id");

    let config = check_config(dir.path(), &pki, &ring, "");
    let config_s = config.to_str().unwrap();
    let (code, out, err) = cli(&["check", "--config", config_s], &right);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = cli(&["check", "--config", config_s], &wrong);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "cannot unwrap {ring_s}: wrong passphrase/KEK, or the file was modified"
        )),
        "{err}"
    );
    assert!(!err.contains("stapler"), "{err}");
    let (code, _, err) = cli(&["check", "--config", config_s], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("keys.keyring_passphrase_file")
            && err.contains("keys.keyring_kek_file")
            && err.contains("FIELDSEAL_KEYRING_PASSPHRASE"),
        "{err}"
    );

    // keys.keyring_passphrase_file wins over the environment.
    let pw = dir.path().join("passphrase");
    write_mode(&pw, "correct horse battery staple\n", 0o600);
    let config = check_config(
        dir.path(),
        &pki,
        &ring,
        &format!("  keyring_passphrase_file: \"{}\"\n", pw.display()),
    );
    let (code, out, err) = cli(&["check", "--config", config.to_str().unwrap()], &wrong);
    assert_eq!(code, 0, "{out}{err}");

    // A plain keyring where the configuration expects a wrapped one is refused.
    let plain = dir.path().join("plain.json");
    ok(&["keys", "init", "--out", plain.to_str().unwrap()], &[]);
    let plain_config = check_config(
        dir.path(),
        &pki,
        &plain,
        &format!("  keyring_passphrase_file: \"{}\"\n", pw.display()),
    );
    let (code, _, err) = cli(&["check", "--config", plain_config.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is not wrapped, but keys.keyring_passphrase_file is set"),
        "{err}"
    );
    let config = check_config(
        dir.path(),
        &pki,
        &ring,
        &format!("  keyring_passphrase_file: \"{}\"\n", pw.display()),
    );

    // A modified file: one message, whatever was changed.
    let mut tampered = doc(&ring);
    tampered["wrapped"]["t_cost"] = json!(2);
    write_mode(&ring, &tampered.to_string(), 0o600);
    let (code, _, err) = cli(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("wrong passphrase/KEK, or the file was modified"),
        "{err}"
    );
    // Absurd Argon2 costs are refused before any work.
    tampered["wrapped"]["m_cost_kib"] = json!(16 * 1024 * 1024);
    write_mode(&ring, &tampered.to_string(), 0o600);
    let (code, _, err) = cli(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("m_cost_kib") && err.contains("refused"),
        "{err}"
    );
}

fn proxy_yaml(pki: &Pki, upstream: std::net::SocketAddr, keyring: &Path) -> String {
    config_yaml(
        pki,
        upstream,
        &format!(
            r#"keys:
  keyring: "{}"
routes:
  - name: echo
    match: {{ path: "/echo", methods: [POST] }}
    request:
      decrypt: ["$.ssn"]
"#,
            keyring.display()
        ),
    )
}

#[tokio::test]
async fn retire_and_list_ask_the_running_proxy() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let ring = pki.path("keyring.json");
    let ring_s = ring.to_str().unwrap().to_string();
    make_keyring(&ring);
    let token = ok(
        &[
            "seal",
            "--keyring",
            &ring_s,
            "--context",
            "ssn",
            "\"123-45-6789\"",
        ],
        &[],
    );
    // The proxy starts with k1 decrypt_only and k2 the primary.
    ok(&["keys", "rotate", "--keyring", &ring_s], &[]);
    let proxy = ProxyProcess::start(&proxy_yaml(&pki, up.addr, &ring));
    let admin = format!("http://{}/", proxy.admin);

    // It opens one k1 token.
    let cfg = client_config(&pki, &ClientOptions::h2());
    let req = request("POST", "/echo", true)
        .header("content-type", "application/json")
        .body(body(json!({"ssn": token.trim()}).to_string()))
        .unwrap();
    let resp = send_once(proxy.listen, cfg, req).await;
    assert_eq!(resp.status(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, text) = proxy.admin_get("/keys").await;
        if text.contains(r#""opened_total":1"#) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Rotate the file again: k3 primary, k2 decrypt_only (the proxy keeps its loaded keyring).
    ok(&["keys", "rotate", "--keyring", &ring_s], &[]);
    // (The CLI runs while no request is in flight: blocking this runtime is harmless.)
    let keys = |args: &[&str]| {
        let mut all = vec!["keys"];
        all.extend_from_slice(args);
        cli(&all, &[])
    };

    // list --admin: usage columns from the proxy.
    let (code, list, err) = keys(&["list", "--keyring", &ring_s, "--admin", &admin]);
    assert_eq!(code, 0, "{err}");
    assert!(
        list.lines().next().unwrap().contains("opened_total"),
        "{list}"
    );
    let k1: Vec<&str> = state_line(&list, "k1").split_whitespace().collect();
    assert_eq!(k1[1], "decrypt_only", "{list}");
    assert_eq!(k1[4], "1", "opened_total of k1: {list}");
    assert!(k1[6].starts_with("20"), "last_opened of k1: {list}");
    let k2: Vec<&str> = state_line(&list, "k2").split_whitespace().collect();
    assert_eq!(&k2[4..7], ["0", "0", "never"], "{list}");
    assert!(
        state_line(&list, "k3").contains("not loaded by the proxy"),
        "{list}"
    );
    assert!(
        list.contains(&format!("usage from {admin}: counted since")),
        "{list}"
    );

    // retire --admin: k1 was opened moments ago → refused, with the numbers.
    let (code, _, err) = keys(&[
        "retire",
        "--keyring",
        &ring_s,
        "k1",
        "--admin",
        &admin,
        "--window",
        "1h",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("refusing to retire k1")
            && err.contains("opened a token of k1")
            && err.contains("opened_total 1 since")
            && err.contains("last_opened 20")
            && err.contains("--force"),
        "{err}"
    );
    // k2 was never opened, but the proxy has not been up for a whole window (24h).
    let (code, _, err) = keys(&["retire", "--keyring", &ring_s, "k2", "--admin", &admin]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot have seen a whole window") && err.contains("last_opened never"),
        "{err}"
    );
    // A window the proxy has covered, with no open inside it: allowed.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (code, out, err) = keys(&[
        "retire",
        "--keyring",
        &ring_s,
        "k1",
        "--admin",
        &admin,
        "--window",
        "2s",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("no token of k1 opened in the last 2s (opened_total 1"),
        "{out}"
    );
    assert!(out.contains("retired: k1 is now disabled"), "{out}");

    // An admin URL nothing answers on: refused, unless forced.
    let dead = format!("http://{}", unused_addr());
    let (code, _, err) = keys(&["retire", "--keyring", &ring_s, "k2", "--admin", &dead]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect"), "{err}");
    let (code, out, err) = keys(&[
        "retire",
        "--keyring",
        &ring_s,
        "k2",
        "--admin",
        &dead,
        "--force",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("retiring k2 anyway") && out.contains("retired: k2"),
        "{out}{err}"
    );
    drop(proxy);
}

#[tokio::test]
async fn a_proxy_serves_and_reloads_a_wrapped_keyring() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let ring = pki.path("keyring.json");
    let ring_s = ring.to_str().unwrap().to_string();
    let kek_file = pki.path("kek");
    std::fs::write(&kek_file, [9u8; 32]).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&kek_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let kek_s = kek_file.to_str().unwrap().to_string();
    ok(
        &[
            "keys",
            "init",
            "--out",
            &ring_s,
            "--wrap",
            "--kek-file",
            &kek_s,
        ],
        &[],
    );
    let yaml = proxy_yaml(&pki, up.addr, &ring).replace(
        "keys:\n",
        &format!("keys:\n  keyring_kek_file: \"{kek_s}\"\n"),
    );
    let proxy = ProxyProcess::start(&yaml);
    let primary = |text: &str| -> Vec<(String, String)> {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
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
    };
    let (_, text) = proxy.admin_get("/keys").await;
    assert_eq!(primary(&text), [("k1".to_string(), "active".to_string())]);

    ok(
        &["keys", "rotate", "--keyring", &ring_s, "--kek-file", &kek_s],
        &[],
    );
    assert_eq!(doc(&ring)["wrapped"]["kdf"], "none");
    proxy.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, text) = proxy.admin_get("/keys").await;
        let keys = primary(&text);
        if keys.len() == 2 {
            assert_eq!(
                keys,
                [
                    ("k1".to_string(), "decrypt_only".to_string()),
                    ("k2".to_string(), "active".to_string())
                ]
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reload: {text}\n{}",
            proxy.logs().join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Review finding: a KEK supplied only through the environment must also stop a plain keyring
/// put in place of the wrapped one — for `check` (and so startup and reload), and for every CLI
/// command that uses the keys. `keys rewrap-keyring` (whose job is wrapping plain keyrings) and
/// `keys init` are the exceptions; without any KEK, plain keyrings work everywhere.
#[test]
fn a_kek_in_the_environment_demands_a_wrapped_keyring() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.json");
    let plain_s = plain.to_str().unwrap();
    ok(&["keys", "init", "--out", plain_s], &[]);
    let before = std::fs::read(&plain).unwrap();
    let kek = B64.encode([5u8; 32]);
    let env_kek = [("FIELDSEAL_KEYRING_KEK", kek.as_str())];
    let env_pass = [(
        "FIELDSEAL_KEYRING_PASSPHRASE",
        "correct horse battery staple",
    )];
    let refused = |err: &str, var: &str| {
        assert!(
            err.contains(&format!(
                "{plain_s} is not wrapped, but environment variable {var} is set"
            )) && err.contains("keys rewrap-keyring"),
            "{err}"
        );
        assert!(!err.contains(&kek), "never the value: {err}");
    };

    // `check` (what startup and every reload run).
    let config = check_config(dir.path(), &pki, &plain, "");
    let config_s = config.to_str().unwrap();
    assert_eq!(cli(&["check", "--config", config_s], &[]).0, 0);
    for env in [&env_kek[..], &env_pass[..]] {
        let (code, _, err) = cli(&["check", "--config", config_s], env);
        assert_eq!(code, 1);
        refused(&err, env[0].0);
        assert!(err.contains("keys.keyring"), "{err}");
    }

    // The CLI commands that use the keys: exit 64 (the keyring cannot be used), file untouched.
    let token = ok(
        &["seal", "--keyring", plain_s, "--context", "ssn", "42"],
        &[],
    );
    let token = token.trim();
    let uses: [&[&str]; 5] = [
        &["seal", "--keyring", plain_s, "--context", "ssn", "42"],
        &["open", "--keyring", plain_s, "--context", "ssn", token],
        &["keys", "list", "--keyring", plain_s],
        &["keys", "rotate", "--keyring", plain_s],
        &["keys", "retire", "--keyring", plain_s, "k1", "--force"],
    ];
    for args in uses {
        let (code, _, err) = cli(args, &env_kek);
        assert_eq!(code, 64, "{args:?}: {err}");
        refused(&err, "FIELDSEAL_KEYRING_KEK");
    }
    assert_eq!(std::fs::read(&plain).unwrap(), before, "nothing written");
    // An empty variable counts as unset.
    let out = ok(
        &["open", "--keyring", plain_s, "--context", "ssn", token],
        &[("FIELDSEAL_KEYRING_KEK", "")],
    );
    assert_eq!(out.trim(), "42");

    // `keys init` without --wrap writes a plain keyring, and says who will refuse it.
    let fresh = dir.path().join("fresh.json");
    let (code, _, err) = cli(
        &["keys", "init", "--out", fresh.to_str().unwrap()],
        &env_kek,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("environment variable FIELDSEAL_KEYRING_KEK is set but --wrap was not given"),
        "{err}"
    );
    assert!(doc(&fresh).get("wrapped").is_none());

    // `keys rewrap-keyring` wraps a plain keyring whatever the environment holds...
    let out = ok(
        &["keys", "rewrap-keyring", "--keyring", plain_s, "--unwrap"],
        &env_kek,
    );
    assert!(out.contains("already plain"), "{out}");
    let out = ok(
        &["keys", "rewrap-keyring", "--keyring", plain_s],
        &[
            ("FIELDSEAL_KEYRING_KEK", kek.as_str()),
            ("FIELDSEAL_NEW_KEYRING_KEK", kek.as_str()),
        ],
    );
    assert!(out.contains("(was plain)"), "{out}");
    // ...and then everything reads it with that KEK.
    let out = ok(
        &["open", "--keyring", plain_s, "--context", "ssn", token],
        &env_kek,
    );
    assert_eq!(out.trim(), "42");
    assert_eq!(cli(&["check", "--config", config_s], &env_kek).0, 0);

    // The flags naming the current KEK still demand a wrapped file, rewrap-keyring included.
    let kek_file = dir.path().join("kek");
    write_mode(&kek_file, &format!("{kek}\n"), 0o600);
    ok(
        &[
            "keys",
            "init",
            "--out",
            fresh.with_extension("2").to_str().unwrap(),
        ],
        &[],
    );
    let (code, _, err) = cli(
        &[
            "keys",
            "rewrap-keyring",
            "--keyring",
            fresh.with_extension("2").to_str().unwrap(),
            "--kek-file",
            kek_file.to_str().unwrap(),
            "--unwrap",
        ],
        &[],
    );
    assert_eq!(code, 64);
    assert!(
        err.contains("is not wrapped, but --kek-file is set"),
        "{err}"
    );
}

/// Review finding: secret files writable by the group or others, or owned by another user than
/// the one fieldseal runs as (root excepted), are refused wherever they are read.
#[test]
fn secret_files_writable_by_others_or_owned_by_another_user_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("keyring.json");
    let ring_s = ring.to_str().unwrap();
    ok(&["keys", "init", "--out", ring_s], &[]);
    let config = check_config(dir.path(), &pki, &ring, "");
    let config_s = config.to_str().unwrap();
    let chmod = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let list = |path: &str| cli(&["keys", "list", "--keyring", path], &[]);

    for (mode, needle) in [
        (0o660, "writable by its group (mode 0660)"),
        (0o620, "writable by its group (mode 0620)"),
        (0o602, "writable by other users (mode 0602)"),
    ] {
        chmod(&ring, mode);
        let (code, _, err) = cli(&["check", "--config", config_s], &[]);
        assert_eq!(code, 1, "{mode:o}");
        assert!(
            err.contains("keys.keyring")
                && err.contains(&format!("{ring_s} holds a secret but is {needle}")),
            "{err}"
        );
        let (code, _, err) = list(ring_s);
        assert_eq!(code, 64, "{mode:o}");
        assert!(err.contains(needle), "{err}");
    }
    // 0440 (a Kubernetes Secret with fsGroup): accepted with a warning, as before.
    chmod(&ring, 0o440);
    let (code, out, err) = cli(&["check", "--config", config_s], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("readable by its group"), "{out}");
    assert_eq!(list(ring_s).0, 0);

    // A KEK file writable by the group: refused with the flag that named it.
    chmod(&ring, 0o600);
    let kek_file = dir.path().join("kek");
    write_mode(&kek_file, &B64.encode([3u8; 32]), 0o660);
    let (code, _, err) = cli(
        &[
            "keys",
            "list",
            "--keyring",
            ring_s,
            "--kek-file",
            kek_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 64);
    assert!(
        err.contains("is not wrapped, but --kek-file is set"),
        "{err}"
    );
    let wrapped = dir.path().join("wrapped.json");
    chmod(&kek_file, 0o600);
    ok(
        &[
            "keys",
            "init",
            "--out",
            wrapped.to_str().unwrap(),
            "--wrap",
            "--kek-file",
            kek_file.to_str().unwrap(),
        ],
        &[],
    );
    chmod(&kek_file, 0o660);
    let (code, _, err) = cli(
        &[
            "keys",
            "list",
            "--keyring",
            wrapped.to_str().unwrap(),
            "--kek-file",
            kek_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 64);
    assert!(
        err.contains("--kek-file") && err.contains("writable by its group"),
        "{err}"
    );

    // Owned by another user: refused; owned by root (a Secret volume): accepted.
    if fieldseal::secret_file::effective_uid() != Some(0) {
        eprintln!("skipped the owner cases: they need root to chown a file");
        return;
    }
    std::os::unix::fs::chown(&ring, Some(1000), None).unwrap();
    let (code, _, err) = cli(&["check", "--config", config_s], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{ring_s} holds a secret but is owned by uid 1000"))
            && err.contains("(uid 0)"),
        "{err}"
    );
    assert_eq!(list(ring_s).0, 64);
    std::os::unix::fs::chown(&ring, Some(0), Some(1000)).unwrap();
    chmod(&ring, 0o440);
    assert_eq!(cli(&["check", "--config", config_s], &[]).0, 0);
    assert_eq!(list(ring_s).0, 0);
}
