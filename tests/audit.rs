//! The audit log through the real binary: `fields` lines for sealed and refused requests
//! (paths, actions, key ids — never values or tokens), a chain that `fieldseal audit verify`
//! accepts and that an independent HMAC-SHA256 recomputation agrees with, continued across a
//! restart by a new segment that names the line before it, lines cut across that boundary and
//! one edited byte reported at their line.

mod common;

use std::path::Path;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

const SECRET: &str = "123-45-6789";
const CARD: &str = "4111111111110366";

fn config(pki: &Pki, up: &TestUpstream, keyring: &Path, log: &Path, key: &Path) -> String {
    config_yaml(
        pki,
        up.addr,
        &format!(
            r#"keys:
  keyring: "{}"
audit:
  sink: "{}"
  key_file: "{}"
routes:
  - name: user
    match: {{ path: "/user" }}
    response:
      encrypt: ["$.ssn", {{ path: "$.cards[*].number", context: "card" }}]
      mask: [{{ path: "$.phone", keep_last: 4 }}]
  - name: echo
    match: {{ path: "/echo", methods: [PUT] }}
    request:
      decrypt: ["$.ssn"]
"#,
            keyring.display(),
            log.display(),
            key.display()
        ),
    )
}

fn stop(mut proxy: ProxyProcess) {
    proxy.signal("TERM");
    let code = proxy.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{}", proxy.logs().join("\n"));
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The chain recomputed from the raw bytes, from scratch: MAC = HMAC-SHA256(key, previous
/// MAC ‖ the line up to its final `,"mac":"`), 32 zero bytes before the first line; every
/// segment's `chain_start` names the line before it (`"none"` on line 1).
fn recompute_chain(log: &Path, key: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut previous = vec![0u8; 32];
    let text = std::fs::read(log).unwrap();
    assert_eq!(text.last(), Some(&b'\n'));
    let mut last = String::new();
    let mut seq = 0u64;
    for (i, line) in text[..text.len() - 1].split(|&b| b == b'\n').enumerate() {
        let line = std::str::from_utf8(line).unwrap();
        let cut = line.rfind(",\"mac\":\"").unwrap();
        assert!(line.ends_with("\"}"));
        let doc: Value = serde_json::from_str(line).unwrap();
        if doc["event"] == "chain_start" {
            let link = if i == 0 {
                json!("none")
            } else {
                json!({"seq": seq, "mac": last})
            };
            assert_eq!(doc["previous"], link, "line {}", i + 1);
        }
        assert_eq!(doc["seq"], seq + 1, "line {}", i + 1);
        let mut input = previous.clone();
        input.extend_from_slice(&line.as_bytes()[..cut]);
        let tag = hmac::sign(&key, &input);
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(&line[cut + 8..line.len() - 2], hex, "line {}", i + 1);
        previous = tag.as_ref().to_vec();
        last = hex;
        seq = doc["seq"].as_u64().unwrap();
    }
    last
}

fn verify(log: &Path, key_file: &Path) -> (i32, String, String) {
    run_cli(
        &[
            "audit",
            "verify",
            log.to_str().unwrap(),
            "--key",
            key_file.to_str().unwrap(),
        ],
        &[],
    )
}

#[tokio::test]
async fn requests_are_audited_in_a_chain_that_verifies_and_shows_edits() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let keyring = pki.path("keyring.json");
    make_keyring(&keyring);
    let key_file = pki.path("audit.key");
    let (code, out, err) = run_cli(
        &["audit", "keygen", "--out", key_file.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (code, _, err) = run_cli(
        &["audit", "keygen", "--out", key_file.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("refusing to overwrite"), "{err}");
    let key_text = std::fs::read_to_string(&key_file).unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_text.trim())
        .unwrap();
    assert_eq!(key.len(), 32);

    let log = pki.path("audit.jsonl");
    let yaml = config(&pki, &up, &keyring, &log, &key_file);
    let proxy = ProxyProcess::start(&yaml);
    let cfg = client_config(&pki, &ClientOptions::h2());

    // A response with sealed fields.
    let resp = get(proxy.listen, cfg.clone(), "/user", true).await;
    assert_eq!(resp.status(), 200);
    let doc = read_json(resp).await;
    let token = doc["ssn"].as_str().unwrap().to_string();
    assert!(token.starts_with("fs1.k1."));

    // A request carrying a tampered token: refused, the app never called.
    let mut tampered = token.clone().into_bytes();
    let i = tampered.len() - 10;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let req = request("PUT", "/echo", true)
        .header("content-type", "application/json")
        .header("x-request-id", "tampered-1")
        .body(body(json!({"ssn": tampered}).to_string()))
        .unwrap();
    let resp = send_once(proxy.listen, cfg.clone(), req).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(read_json(resp).await["error"]["code"], "field_rejected");
    proxy.wait_metric("fieldseal_audit_events_total", 2.0).await;
    stop(proxy);

    let events = lines(&log);
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], "chain_start");
    assert_eq!(events[0]["previous"], "none");
    // The startup keyring_loaded line: ids, states, dates, never secrets.
    assert_eq!(names[1], "keyring_loaded");
    assert_eq!(events[1]["reason"], "startup");
    assert_eq!(events[1]["primary"], "k1");
    assert_eq!(events[1]["keys"][0]["id"], "k1");
    assert_eq!(events[1]["keys"][0]["state"], "active");
    let rest = &events[2..];
    assert_eq!(rest.len(), 2, "{events:#?}");
    let ok = &rest[0];
    assert_eq!(ok["event"], "fields");
    assert_eq!(ok["route"], "user");
    assert_eq!(ok["outcome"], "ok");
    assert!(ok["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(ok["request_id"].as_str().unwrap().len(), 36);
    let fields = ok["fields"].as_array().unwrap();
    assert!(
        fields.contains(&json!({"path": "$['ssn']", "action": "sealed", "kid": "k1"})),
        "{fields:?}"
    );
    assert!(fields
        .contains(&json!({"path": "$['cards'][0]['number']", "action": "sealed", "kid": "k1"})));
    assert!(fields.contains(&json!({"path": "$['phone']", "action": "masked", "kid": null})));
    let rejected = &rest[1];
    assert_eq!(rejected["event"], "fields");
    assert_eq!(rejected["route"], "echo");
    assert_eq!(rejected["request_id"], "tampered-1");
    assert_eq!(rejected["outcome"], "rejected");
    assert_eq!(rejected["reason"], "authentication_failed");
    assert_eq!(rejected["field"], "$['ssn']");
    assert_eq!(rejected["kid"], "k1");

    // Never values, tokens or secrets.
    let text = std::fs::read_to_string(&log).unwrap();
    let ring: Value = serde_json::from_str(&std::fs::read_to_string(&keyring).unwrap()).unwrap();
    let mut forbidden = vec![
        SECRET.to_string(),
        CARD.to_string(),
        "+44 20 7946 0958".to_string(),
        token.clone(),
        tampered.clone(),
        token.rsplit('.').next().unwrap()[..20].to_string(),
        key_text.trim().to_string(),
    ];
    if let Some(secret) = ring["keys"][0]["secret"].as_str() {
        forbidden.push(secret.to_string());
    }
    for f in &forbidden {
        assert!(!text.contains(f.as_str()), "{f} appears in the audit log");
    }

    // The chain verifies, and agrees with an independent recomputation.
    let last_mac = recompute_chain(&log, &key);
    let (code, out, err) = verify(&log, &key_file);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        format!(
            "ok: {} lines, chain intact, last mac {last_mac}",
            events.len()
        )
    );

    // A restart continues the same chain, in a new segment that names the line before it.
    let proxy = ProxyProcess::start(&yaml);
    let resp = get(proxy.listen, cfg.clone(), "/user", true).await;
    assert_eq!(resp.status(), 200);
    read_body(resp).await;
    proxy.wait_metric("fieldseal_audit_events_total", 1.0).await;
    stop(proxy);
    let after = lines(&log);
    let added: Vec<&str> = after[events.len()..]
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["chain_start", "keyring_loaded", "fields"]);
    let start = &after[events.len()];
    assert_eq!(start["seq"], events.len() as u64 + 1);
    assert_eq!(
        start["previous"],
        json!({"seq": events.len(), "mac": last_mac})
    );
    let both_mac = recompute_chain(&log, &key);
    let (code, out, err) = verify(&log, &key_file);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        format!(
            "ok: {} lines, chain intact, last mac {both_mac}",
            after.len()
        )
    );

    // The last line before the restart removed: reported at the segment start after the gap.
    let both = std::fs::read_to_string(&log).unwrap();
    let mut cut: Vec<&str> = both.lines().collect();
    cut.remove(events.len() - 1);
    let cut_log = pki.path("cut.jsonl");
    std::fs::write(&cut_log, cut.join("\n") + "\n").unwrap();
    let (code, out, err) = verify(&cut_log, &key_file);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "error: line {}: a segment start that continues seq {}",
            events.len(),
            events.len()
        )),
        "{err}"
    );

    // One byte of one line edited: verify names that line.
    let line_no = events.iter().position(|e| e["route"] == "echo").unwrap() + 1;
    let edited = text_edit(&log, line_no, "\"route\":\"echo\"", "\"route\":\"echx\"");
    assert!(edited);
    let (code, out, err) = verify(&log, &key_file);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("error: line {line_no}: mac mismatch")),
        "{err}"
    );
}

/// Replaces `from` with `to` in line `line_no` (1-based) of the file.
fn text_edit(path: &Path, line_no: usize, from: &str, to: &str) -> bool {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let line = &mut lines[line_no - 1];
    if !line.contains(from) {
        return false;
    }
    *line = line.replacen(from, to, 1);
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    true
}

#[tokio::test]
async fn an_unusable_audit_key_stops_startup_without_printing_it() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let keyring = pki.path("keyring.json");
    make_keyring(&keyring);
    let key_file = pki.path("audit.key");
    write_mode(&key_file, "c2hvcnQ=\n", 0o600);
    let yaml = config(&pki, &up, &keyring, &pki.path("audit.jsonl"), &key_file);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fieldseal.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let (code, out, err) = run_cli(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 64, "{out}{err}");
    assert!(err.contains("audit key"), "{err}");
    assert!(!err.contains("c2hvcnQ"), "{err}");
}

#[tokio::test]
async fn a_reload_that_rotates_and_retires_keys_is_audited() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let keyring = pki.path("keyring.json");
    write_keyring(
        &keyring,
        &[("k0", 3, "decrypt_only"), ("k1", 1, "active")],
        "k1",
    );
    let key_file = pki.path("audit.key");
    write_mode(
        &key_file,
        &base64::engine::general_purpose::STANDARD.encode([0x42u8; 32]),
        0o600,
    );
    let log = pki.path("audit.jsonl");
    let proxy = ProxyProcess::start(&config(&pki, &up, &keyring, &log, &key_file));
    write_keyring(
        &keyring,
        &[
            ("k0", 3, "disabled"),
            ("k1", 1, "decrypt_only"),
            ("k2", 2, "active"),
        ],
        "k2",
    );
    proxy.signal("HUP");
    proxy.wait_log(|l| l.contains("configuration reloaded"));
    stop(proxy);

    let events = lines(&log);
    let summary: Vec<String> = events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            let o = e.as_object_mut().unwrap();
            for k in ["seq", "time", "mac", "keys"] {
                o.remove(k);
            }
            Value::Object(o.clone()).to_string()
        })
        .collect();
    assert_eq!(
        summary,
        [
            r#"{"event":"chain_start","previous":"none"}"#,
            r#"{"event":"keyring_loaded","primary":"k1","reason":"startup"}"#,
            r#"{"event":"keyring_loaded","primary":"k2","reason":"reload"}"#,
            r#"{"event":"rotation_detected","new_primary":"k2","old_primary":"k1"}"#,
            r#"{"event":"key_retired","from":"decrypt_only","kid":"k0"}"#,
            r#"{"event":"key_state_changed","from":"active","kid":"k1","to":"decrypt_only"}"#,
            r#"{"created_at":"2026-11-01T00:00:00Z","event":"key_added","kid":"k2","state":"active"}"#,
        ]
    );
    let text = std::fs::read_to_string(&log).unwrap();
    for fill in [1u8, 2, 3] {
        assert!(!text.contains(&base64::engine::general_purpose::STANDARD.encode([fill; 32])));
    }
    recompute_chain(&log, &[0x42; 32]);
}
