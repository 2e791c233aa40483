//! `fieldseal init` (contract §9), the real binary: the four files with their modes, a keyring
//! the other commands read, a configuration that compiles from any working directory, fields
//! proposed from a FastAPI-shaped OpenAPI document (a file, or fetched over HTTP), and never an
//! overwritten file.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

const FILES: [&str; 4] = ["fieldseal.yaml", "keyring.json", "tls.crt", "tls.key"];

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fastapi-openapi.json")
}

fn init(out: &Path, extra: &[&str]) -> (i32, String, String) {
    init_from("http://127.0.0.1:8000", out, extra)
}

fn init_from(upstream: &str, out: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "init",
        "--upstream",
        upstream,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_cli(&args, &[])
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file in `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The written YAML as the config loader reads it (figment).
fn yaml(dir: &Path) -> Value {
    use figment::providers::{Format, Yaml};
    figment::Figment::from(Yaml::file_exact(dir.join("fieldseal.yaml")))
        .extract()
        .unwrap()
}

#[test]
fn init_writes_a_runnable_starting_point() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("new/dir");
    let (code, stdout, stderr) = init(&out, &[]);
    assert_eq!(code, 0, "{stderr}");
    for f in FILES {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert_eq!(mode(&out.join("keyring.json")), 0o600);
    assert_eq!(mode(&out.join("tls.key")), 0o600);
    assert_eq!(
        snapshot(&out).len(),
        4,
        "nothing else (no staged files) is left"
    );

    // The keyring is the `keys init` format: one active primary key of 32 bytes.
    let ring: Value =
        serde_json::from_slice(&std::fs::read(out.join("keyring.json")).unwrap()).unwrap();
    assert_eq!(ring["primary"], "k1");
    assert_eq!(ring["keys"].as_array().unwrap().len(), 1);
    assert_eq!(ring["keys"][0]["state"], "active");
    use base64::Engine;
    let secret = base64::engine::general_purpose::STANDARD
        .decode(ring["keys"][0]["secret"].as_str().unwrap())
        .unwrap();
    assert_eq!(secret.len(), 32);
    let keyring = out.join("keyring.json");
    let (code, list, stderr) = run_cli(
        &["keys", "list", "--keyring", keyring.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(list.contains("k1") && list.contains("active"), "{list}");
    let (code, token, stderr) = run_cli(
        &[
            "seal",
            "--keyring",
            keyring.to_str().unwrap(),
            "--context",
            "email",
            "\"ada@example.com\"",
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(token.starts_with("fs1.k1."), "{token}");

    assert!(std::fs::read_to_string(out.join("tls.crt"))
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));

    // Without --openapi: every section, no fields yet, no routes.
    let v = yaml(&out);
    assert_eq!(v["listen"], "127.0.0.1:8443");
    assert_eq!(v["upstream"], "http://127.0.0.1:8000");
    assert_eq!(v["admin"], "127.0.0.1:9901");
    assert_eq!(v["tls"], json!({"cert": "tls.crt", "key": "tls.key"}));
    assert_eq!(v["keys"], json!({"keyring": "keyring.json"}));
    assert_eq!(v["fields"], json!([]));
    assert_eq!(
        v["guard"],
        json!({"detect": ["ssn", "card", "email"], "mode": "observe"})
    );

    // The next steps.
    let config = out.join("fieldseal.yaml").display().to_string();
    for step in [
        format!("fieldseal check --config {config}"),
        format!("fieldseal explain --config {config} --method GET --path /"),
        format!("fieldseal run --config {config}"),
        "curl --cacert".to_string(),
    ] {
        assert!(stdout.contains(&step), "{step} not in:\n{stdout}");
    }
    assert!(stdout.contains("development only"), "{stdout}");

    // It compiles from another working directory: the file paths are relative to the config
    // file.
    let check = std::process::Command::new(bin())
        .args(["check", "--config"])
        .arg(out.join("fieldseal.yaml"))
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// `fieldseal check` passes on what `init` writes (contract §9).
#[test]
fn check_passes_on_what_init_writes() {
    let tmp = tempfile::tempdir().unwrap();
    for (dir, extra) in [
        ("plain", vec![]),
        ("openapi", vec!["--openapi", fixture().to_str().unwrap()]),
    ] {
        let out = tmp.path().join(dir);
        let (code, _, stderr) = init(&out, &extra);
        assert_eq!(code, 0, "{stderr}");
        let config = out.join("fieldseal.yaml");
        let (code, stdout, stderr) = run_cli(&["check", "--config", config.to_str().unwrap()], &[]);
        assert_eq!(code, 0, "{dir}: {stderr}");
        assert!(stdout.contains("is valid"), "{stdout}");
    }
}

#[test]
fn init_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("app");
    let (code, _, stderr) = init(&out, &[]);
    assert_eq!(code, 0, "{stderr}");
    let before = snapshot(&out);

    // A second run: refused, every file byte-identical, each one named.
    let (code, stdout, stderr) = init(&out, &["--openapi", fixture().to_str().unwrap()]);
    assert_ne!(code, 0, "{stdout}");
    for f in FILES {
        assert!(stderr.contains(f), "{f} not named in: {stderr}");
    }
    assert!(stderr.contains("never overwrites"), "{stderr}");
    assert_eq!(snapshot(&out), before);

    // One file of the four is enough to write nothing at all (a real certificate key here).
    let partial = tmp.path().join("partial");
    std::fs::create_dir(&partial).unwrap();
    write_mode(&partial.join("tls.key"), "my real key", 0o600);
    let (code, _, stderr) = init(&partial, &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("tls.key exists"), "{stderr}");
    assert!(!stderr.contains("keyring.json"), "{stderr}");
    assert_eq!(
        snapshot(&partial),
        BTreeMap::from([("tls.key".to_string(), b"my real key".to_vec())])
    );

    // A dangling symlink counts: writing through it would create its target elsewhere.
    let linked = tmp.path().join("linked");
    std::fs::create_dir(&linked).unwrap();
    let target = tmp.path().join("elsewhere.json");
    std::os::unix::fs::symlink(&target, linked.join("keyring.json")).unwrap();
    let (code, _, stderr) = init(&linked, &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("keyring.json exists"), "{stderr}");
    assert!(!target.exists());
    assert_eq!(std::fs::read_dir(&linked).unwrap().count(), 1);
}

#[test]
fn bad_input_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (
            vec!["--upstream", "https://127.0.0.1:8000"],
            "plain http:// URL",
        ),
        (
            vec!["--upstream", "http://127.0.0.1:8000/api"],
            "path or query",
        ),
        (
            vec![
                "--upstream",
                "http://127.0.0.1:8000",
                "--openapi",
                "/nonexistent/openapi.json",
            ],
            "cannot read /nonexistent/openapi.json",
        ),
        (
            vec![
                "--upstream",
                "http://127.0.0.1:8000",
                "--openapi",
                "Cargo.toml",
            ],
            "Cargo.toml: neither JSON",
        ),
    ] {
        let out = tmp.path().join("out");
        let mut full = vec!["init", "--out", out.to_str().unwrap()];
        full.extend(args.iter().copied());
        let mut cmd = std::process::Command::new(bin());
        cmd.args(&full).current_dir(env!("CARGO_MANIFEST_DIR"));
        let result = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} created {}", out.display());
    }
}

/// The fields a FastAPI app's document (tests/apps/init_fastapi.py) gets, in order.
fn expected_fields() -> Value {
    json!([
        {"select": "$..password", "action": "redact"},
        {"select": "$..ssn", "action": "encrypt"},
        {"select": "$..card_number", "action": "encrypt"},
        {"select": "$..email", "action": "encrypt"},
        {"select": "$..phone", "action": "mask", "keep_last": 4},
        {"select": "$..date_of_birth", "action": "encrypt"},
        {"select": "$.detail[*].input", "action": "redact"},
    ])
}

fn assert_fastapi_config(out: &Path, openapi_path: &str) {
    let v = yaml(out);
    assert_eq!(v["fields"], expected_fields());
    let text = std::fs::read_to_string(out.join("fieldseal.yaml")).unwrap();
    assert!(
        text.contains(
            "  # email: named like an email address, format \"email\" in Contact, UserIn, UserOut\n  - { select: \"$..email\", action: encrypt }\n"
        ),
        "{text}"
    );
    assert!(text.contains("  # card_number: named like a card number in PaymentMethod\n"));
    assert!(!text.contains("$..name"), "a harmless property is proposed");
    let routes = v["routes"].as_array().unwrap();
    let names: Vec<&str> = routes.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["openapi", "docs", "docs-oauth2-redirect", "redoc"]);
    assert_eq!(routes[0]["match"]["path"], openapi_path);
    assert_eq!(routes[0]["fields"], false);
    let csp = routes[1]["headers"]["content-security-policy"]
        .as_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self' https://cdn.jsdelivr.net"),
        "{csp}"
    );
}

#[test]
fn init_proposes_fields_from_a_fastapi_openapi_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("app");
    let (code, stdout, stderr) = init(&out, &["--openapi", fixture().to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("6 fields proposed from"), "{stdout}");
    // The example path answers with a proposed field.
    assert!(stdout.contains("--path /api/contacts"), "{stdout}");
    assert_fastapi_config(&out, "/openapi.json");
    assert_eq!(mode(&out.join("keyring.json")), 0o600);
    assert_eq!(mode(&out.join("tls.key")), 0o600);

    let config = out.join("fieldseal.yaml");
    let (code, stdout, stderr) = run_cli(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("docs GET,HEAD /docs"), "{stdout}");
}

/// Serves `body` with `status` to the requests that arrive, on loopback; returns the port.
fn serve(status: &'static str, body: Vec<u8>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    port
}

#[test]
fn init_fetches_the_document_from_the_app() {
    let port = serve("200 OK", std::fs::read(fixture()).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("app");
    let upstream = format!("http://127.0.0.1:{port}");
    let url = format!("{upstream}/api/v1/openapi.json");
    let (code, stdout, stderr) = init_from(&upstream, &out, &["--openapi", &url]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("6 fields proposed from {url}")),
        "{stdout}"
    );
    // The document's own path (the upstream's URL) is the route that opts out.
    assert_fastapi_config(&out, "/api/v1/openapi.json");

    // An app that does not serve it: an error, nothing written.
    let missing = serve("404 Not Found", b"{\"detail\":\"Not Found\"}".to_vec());
    let out = tmp.path().join("missing");
    let url = format!("http://127.0.0.1:{missing}/openapi.json");
    let (code, _, stderr) = init_from(&upstream, &out, &["--openapi", &url]);
    assert_eq!(code, 1);
    assert!(stderr.contains("answered 404"), "{stderr}");
    assert!(!out.exists());
}
