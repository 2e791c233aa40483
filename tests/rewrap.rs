//! `fieldseal rewrap` through the real binary: tokens sealed under an old key (with
//! `fieldseal seal`) come out under the new primary and open (with `fieldseal open`) to the
//! same values under the same contexts; a token that does not open stops the run with the
//! document number and field path but never the token; a route's explicit contexts apply with
//! `--config/--route`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use common::*;
use serde_json::{json, Value};

const K1: [u8; 32] = [0x11; 32];
const K2: [u8; 32] = [0x22; 32];

fn key(id: &str, secret: &[u8; 32], state: &str) -> Value {
    json!({
        "id": id,
        "secret": base64::engine::general_purpose::STANDARD.encode(secret),
        "created_at": "2026-11-01T00:00:00Z",
        "state": state,
    })
}

/// Two keyrings (contract §2), mode 0600: `before` (k1 the active primary) and `after` a
/// rotation (k1 decrypt_only, k2 the active primary).
struct Rings {
    dir: tempfile::TempDir,
}

impl Rings {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let before = json!({"primary": "k1", "keys": [key("k1", &K1, "active")]});
        let after = json!({"primary": "k2", "keys": [
            key("k1", &K1, "decrypt_only"),
            key("k2", &K2, "active"),
        ]});
        write_mode(&dir.path().join("before.json"), &before.to_string(), 0o600);
        write_mode(&dir.path().join("after.json"), &after.to_string(), 0o600);
        Self { dir }
    }

    fn before(&self) -> PathBuf {
        self.dir.path().join("before.json")
    }

    fn after(&self) -> PathBuf {
        self.dir.path().join("after.json")
    }

    fn after_str(&self) -> String {
        self.after().display().to_string()
    }
}

/// `fieldseal seal` under `keyring`.
fn seal(keyring: &Path, context: &str, value: &Value) -> String {
    let (code, out, err) = run_cli(
        &[
            "seal",
            "--keyring",
            keyring.to_str().unwrap(),
            "--context",
            context,
            &value.to_string(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    out.trim().to_string()
}

/// `fieldseal open` under `keyring`.
fn open(keyring: &Path, context: &str, token: &str) -> Value {
    let (code, out, err) = run_cli(
        &[
            "open",
            "--keyring",
            keyring.to_str().unwrap(),
            "--context",
            context,
            token,
        ],
        &[],
    );
    assert_eq!(code, 0, "{context}: {err}");
    serde_json::from_str(&out).unwrap()
}

/// `fieldseal rewrap ARGS` with `stdin`: (exit code, stdout, stderr).
fn rewrap(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(bin())
        .arg("rewrap")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let text = stdin.to_string();
    // Written from a thread: a large input must not deadlock against a full stdout pipe.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The token at `pointer` of the output document: under k2, and opening with `context` (by
/// `fieldseal open` with the rotated keyring) to `expected`.
fn assert_rewrapped(rings: &Rings, doc: &Value, pointer: &str, context: &str, expected: &Value) {
    let token = doc
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {doc}"));
    assert!(token.starts_with("fs1.k2."), "{pointer}: {token}");
    assert_eq!(&open(&rings.after(), context, token), expected, "{pointer}");
}

#[test]
fn json_lines_and_a_pretty_document_come_out_under_the_new_primary() {
    let rings = Rings::new();
    let b = rings.before();
    let ssn = json!("123-45-6789");
    let card = json!("4111 1111 1111 1111");
    let age = json!(42);
    let t_ssn = seal(&b, "ssn", &ssn);
    let t_card = seal(&b, "number", &card);
    let t_age = seal(&b, "age", &age);
    let t_root = seal(&b, "", &json!({"whole": [1, 2]}));
    assert!(t_ssn.starts_with("fs1.k1."));

    // Two JSON lines, a pretty document over several lines, a bare root token.
    let input = format!(
        "{{\"id\": 1, \"ssn\": \"{t_ssn}\", \"note\": \"plain\"}}\n\
         {{\"id\": 2, \"cards\": [{{\"number\": \"{t_card}\"}}, {{\"number\": \"{t_card}\"}}]}}\n\
         {{\n  \"id\": 3,\n  \"profile\": {{\n    \"age\": \"{t_age}\",\n    \"amount\": 1.50e3\n  }}\n}}\n\
         \"{t_root}\"\n"
    );
    let (code, out, err) = rewrap(&["--keyring", &rings.after_str()], &input);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let docs: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_rewrapped(&rings, &docs[0], "/ssn", "ssn", &ssn);
    assert_eq!(docs[0]["note"], "plain");
    assert_rewrapped(&rings, &docs[1], "/cards/0/number", "number", &card);
    assert_rewrapped(&rings, &docs[1], "/cards/1/number", "number", &card);
    assert_ne!(docs[1]["cards"][0], docs[1]["cards"][1], "fresh nonces");
    assert_rewrapped(&rings, &docs[2], "/profile/age", "age", &age);
    assert_rewrapped(&rings, &docs[3], "", "", &json!({"whole": [1, 2]}));
    // Compact, member order and number spelling kept.
    assert!(
        lines[2].starts_with("{\"id\":3,\"profile\":{\"age\":\"fs1.k2.")
            && lines[2].ends_with("\",\"amount\":1.50e3}}"),
        "{}",
        lines[2]
    );
    assert!(
        err.contains("rewrapped 5 tokens in 4 documents (k1: 5 → primary k2); 0 already current"),
        "{err}"
    );

    // Run again on the output: everything is current, the output is unchanged.
    let (code, again, err) = rewrap(&["--keyring", &rings.after_str()], &out);
    assert_eq!(code, 0, "{err}");
    assert_eq!(again, out);
    assert!(
        err.contains("rewrapped 0 tokens in 4 documents (→ primary k2); 5 already current"),
        "{err}"
    );
    // --all re-seals them with fresh nonces.
    let (code, fresh, err) = rewrap(&["--keyring", &rings.after_str(), "--all"], &out);
    assert_eq!(code, 0, "{err}");
    assert_ne!(fresh, out);
    let doc: Value = serde_json::from_str(fresh.lines().next().unwrap()).unwrap();
    assert_rewrapped(&rings, &doc, "/ssn", "ssn", &ssn);
    assert!(err.contains("(k2: 5 → primary k2)"), "{err}");
}

#[test]
fn a_token_that_does_not_open_stops_the_run_and_is_never_printed() {
    let rings = Rings::new();
    let good = seal(&rings.before(), "ssn", &json!("123-45-6789"));
    let mut tampered = good.clone().into_bytes();
    let at = tampered.len() - 3;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let input = format!(
        "{{\"ssn\": \"{good}\"}}\n{{\"user\": {{\"ssn\": \"{tampered}\"}}}}\n{{\"ssn\": \"{good}\"}}\n"
    );
    let (code, out, err) = rewrap(&["--keyring", &rings.after_str()], &input);
    assert_eq!(code, 1, "{err}");
    // The document before it was written; nothing after it.
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("{\"ssn\":\"fs1.k2."), "{out}");
    assert!(
        err.contains("error: document 2, field $['user']['ssn']: authentication_failed (key `k1`)"),
        "{err}"
    );
    let payload = |t: &str| t.rsplit('.').next().unwrap().to_string();
    for secret in [payload(&good), payload(&tampered), "123-45-6789".into()] {
        assert!(!err.contains(&secret), "{err}");
    }

    // A token sealed for another field (here: a different context) fails the same way.
    let other = seal(&rings.before(), "password", &json!("hunter2"));
    let (code, _, err) = rewrap(
        &["--keyring", &rings.after_str()],
        &format!("[{{\"nickname\": \"{other}\"}}]"),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("document 1, field $[0]['nickname']: authentication_failed (key `k1`)"),
        "{err}"
    );
    assert!(!err.contains("hunter2") && !err.contains(&payload(&other)));

    // Unknown key.
    let (code, _, err) = rewrap(
        &["--keyring", &rings.after_str()],
        "{\"a\": \"fs1.k9.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("document 1, field $['a']: unknown_key (key `k9`)"),
        "{err}"
    );
}

#[test]
fn input_that_is_not_json_names_the_document_and_position() {
    let rings = Rings::new();
    let (code, out, err) = rewrap(
        &["--keyring", &rings.after_str()],
        "{\"a\": 1}\n{\"password\": \"hunter2\",\n oops}\n",
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(out, "{\"a\":1}\n");
    assert!(err.contains("document 2 is not JSON"), "{err}");
    assert!(err.contains("line 3 column 2"), "{err}");
    assert!(!err.contains("hunter2") && !err.contains("oops"), "{err}");
}

#[test]
fn unusable_keyrings_and_routes_are_startup_errors() {
    let rings = Rings::new();
    let missing = rings.dir.path().join("missing.json");
    let (code, _, err) = rewrap(&["--keyring", missing.to_str().unwrap()], "");
    assert_eq!(code, 64, "{err}");
    let exposed = rings.dir.path().join("exposed.json");
    write_mode(
        &exposed,
        &std::fs::read_to_string(rings.after()).unwrap(),
        0o644,
    );
    let (code, _, err) = rewrap(&["--keyring", exposed.to_str().unwrap()], "");
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    // --route needs --config and the other way round.
    let (code, _, _) = rewrap(&["--keyring", &rings.after_str(), "--route", "x"], "");
    assert_eq!(code, 2);
}

fn route_config(pki: &Pki, keyring: &Path) -> PathBuf {
    let extra = format!(
        r#"keys:
  keyring: "{}"
routes:
  - name: user
    match: {{ path: "/api/users/{{id}}", methods: [GET, PUT] }}
    response:
      encrypt: ["$.ssn", {{ path: "$.cards[*].number", context: "card" }}]
    request:
      decrypt: ["$.ssn", {{ path: "$.cards[*].number", context: "card" }}]
  - name: docs
    match: {{ path: "/docs/**" }}
"#,
        keyring.display()
    );
    let path = pki.path("fieldseal.yaml");
    std::fs::write(&path, config_yaml(pki, unused_addr(), &extra)).unwrap();
    path
}

#[test]
fn a_routes_explicit_contexts_apply_with_config_and_route() {
    let rings = Rings::new();
    let pki = Pki::new();
    let config = route_config(&pki, &rings.after());
    let config = config.to_str().unwrap();
    let number = json!("4111 1111 1111 1111");
    let ssn = json!("123-45-6789");
    let t_card = seal(&rings.before(), "card", &number);
    let t_ssn = seal(&rings.before(), "ssn", &ssn);
    let t_other = seal(&rings.before(), "number", &number);
    let input = format!(
        "{{\"ssn\": \"{t_ssn}\", \"cards\": [{{\"number\": \"{t_card}\"}}, {{\"number\": \"{t_card}\"}}], \"other\": {{\"number\": \"{t_other}\"}}}}\n"
    );
    let (code, out, err) = rewrap(
        &[
            "--keyring",
            &rings.after_str(),
            "--config",
            config,
            "--route",
            "user",
        ],
        &input,
    );
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(out.trim()).unwrap();
    assert_rewrapped(&rings, &doc, "/cards/0/number", "card", &number);
    assert_rewrapped(&rings, &doc, "/cards/1/number", "card", &number);
    // Outside the route's selectors the member rule still applies.
    assert_rewrapped(&rings, &doc, "/other/number", "number", &number);
    assert_rewrapped(&rings, &doc, "/ssn", "ssn", &ssn);

    // Without the route, the card tokens are opened as `number` and fail.
    let (code, out, err) = rewrap(&["--keyring", &rings.after_str()], &input);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(
        err.contains("document 1, field $['cards'][0]['number']: authentication_failed (key `k1`)"),
        "{err}"
    );

    // An unknown route is a startup error that lists the routes there are.
    let (code, _, err) = rewrap(
        &[
            "--keyring",
            &rings.after_str(),
            "--config",
            config,
            "--route",
            "nope",
        ],
        &input,
    );
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("no route named `nope` (routes: user, docs)"),
        "{err}"
    );
    // A route without explicit contexts works and says so.
    let (code, _, err) = rewrap(
        &[
            "--keyring",
            &rings.after_str(),
            "--config",
            config,
            "--route",
            "docs",
        ],
        &format!("{{\"ssn\": \"{t_ssn}\"}}"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("sets no explicit `context`"), "{err}");
    // A broken configuration is a startup error.
    let broken = pki.path("broken.yaml");
    std::fs::write(&broken, "listen: [\n").unwrap();
    let (code, _, err) = rewrap(
        &[
            "--keyring",
            &rings.after_str(),
            "--config",
            broken.to_str().unwrap(),
            "--route",
            "user",
        ],
        "",
    );
    assert_eq!(code, 64, "{err}");
}

#[test]
fn a_large_stream_is_rewrapped_line_by_line() {
    let rings = Rings::new();
    let tokens: Vec<String> = (0..5)
        .map(|i| seal(&rings.before(), "ssn", &json!(format!("ssn-{i}"))))
        .collect();
    let mut input = String::new();
    for i in 0..20_000 {
        input.push_str(&format!(
            "{{\"row\": {i}, \"ssn\": \"{}\", \"pad\": \"{}\"}}\n",
            tokens[i % 5],
            "x".repeat(100)
        ));
    }
    let (code, out, err) = rewrap(&["--keyring", &rings.after_str()], &input);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 20_000);
    let last: Value = serde_json::from_str(lines[19_999]).unwrap();
    assert_eq!(last["row"], 19_999);
    assert_rewrapped(&rings, &last, "/ssn", "ssn", &json!("ssn-4"));
    assert!(
        err.contains("rewrapped 20000 tokens in 20000 documents (k1: 20000 → primary k2)"),
        "{err}"
    );
}
