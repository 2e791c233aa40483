//! Hot reload through the real binary: SIGHUP and watched-file swaps replace the keyring,
//! config and certificate without dropping a request; broken files keep the old state
//! serving; per-key usage and the rotation policy are visible on the admin listener.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const SECRET: &str = "123-45-6789";

fn rules(keyring: &Path, extra: &str) -> String {
    format!(
        r#"keys:
  keyring: "{}"
{extra}
routes:
  - name: user
    match: {{ path: "/user" }}
    response:
      encrypt: ["$.ssn"]
  - name: echo
    match: {{ path: "/echo", methods: [PUT] }}
    request:
      decrypt: ["$.ssn"]
"#,
        keyring.display()
    )
}

/// The kid of the `ssn` token `GET /user` returns.
async fn sealed_ssn(proxy: &ProxyProcess, cfg: &Arc<rustls::ClientConfig>) -> String {
    let resp = get(proxy.listen, cfg.clone(), "/user", false).await;
    assert_eq!(resp.status(), 200);
    let doc = read_json(resp).await;
    doc["ssn"].as_str().unwrap().to_string()
}

fn kid(token: &str) -> &str {
    token.split('.').nth(1).unwrap()
}

/// PUTs `{"ssn": token}` and returns what the app received.
async fn echo_put(conn: &mut HttpConn, token: &str) -> Result<serde_json::Value, String> {
    let req = request("PUT", "/echo", conn.is_h2())
        .header("content-type", "application/json")
        .body(body(json!({ "ssn": token }).to_string()))
        .unwrap();
    let resp = conn.send(req).await.map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("status {}", resp.status()));
    }
    let echo = read_json(resp).await;
    serde_json::from_str(echo["body"].as_str().unwrap()).map_err(|e| e.to_string())
}

async fn metric_value(proxy: &ProxyProcess, name: &str) -> f64 {
    let (_, text) = proxy.admin_get("/metrics").await;
    metric(&text, name).unwrap_or(0.0)
}

/// A way to break the files, named.
type Breakage<'a> = (&'a str, Box<dyn Fn() + 'a>);

const RELOADED: &str = r#"fieldseal_config_reloads_total{outcome="ok",trigger="signal"}"#;
const FAILED: &str = "fieldseal_config_reload_failures_total";

#[tokio::test]
async fn sighup_rotates_the_keyring_and_old_tokens_still_open() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let keyring = pki.path("keyring.json");
    write_keyring(&keyring, &[("k1", 1, "active")], "k1");
    let proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, &rules(&keyring, "")));
    let cfg = client_config(&pki, &ClientOptions::h1());
    let old = sealed_ssn(&proxy, &cfg).await;
    assert_eq!(kid(&old), "k1");

    // A connection opened before the reload stays usable after it.
    let mut conn = HttpConn::open(proxy.listen, cfg.clone()).await.unwrap();
    write_keyring(
        &keyring,
        &[("k1", 1, "decrypt_only"), ("k2", 2, "active")],
        "k2",
    );
    proxy.signal("HUP");
    proxy.wait_metric(RELOADED, 1.0).await;

    let new = sealed_ssn(&proxy, &cfg).await;
    assert_eq!(kid(&new), "k2", "responses seal with the new primary");
    for token in [&old, &new] {
        let got = echo_put(&mut conn, token).await.unwrap();
        assert_eq!(got, json!({ "ssn": SECRET }), "the app gets plaintext");
    }
    let log = proxy.wait_log(|l| l.contains("configuration reloaded"));
    assert!(log.contains("\"primary_kid\":\"k2\""), "{log}");
    assert!(log.contains("reload_ms"), "{log}");

    // Per-key usage on the admin listener, and the per-kid counters.
    let (status, keys) = proxy.admin_get("/keys").await;
    assert_eq!(status, 200);
    let keys: serde_json::Value = serde_json::from_str(&keys).unwrap();
    let by_id = |id: &str| {
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("k1")["state"], "decrypt_only");
    assert_eq!(by_id("k1")["opened_total"], 1);
    assert!(by_id("k1")["last_opened"].is_string());
    assert_eq!(by_id("k2")["state"], "active");
    assert_eq!(by_id("k2")["sealed_total"], 1);
    assert!(keys["since"].is_string());
    proxy
        .wait_metric(r#"fieldseal_tokens_opened_total{kid="k1"}"#, 1.0)
        .await;
    proxy
        .wait_metric(r#"fieldseal_tokens_sealed_total{kid="k2"}"#, 1.0)
        .await;

    // Retiring k1 (disabled) and reloading: its tokens are refused, naming the key.
    write_keyring(
        &keyring,
        &[("k1", 1, "disabled"), ("k2", 2, "active")],
        "k2",
    );
    proxy.signal("HUP");
    proxy.wait_metric(RELOADED, 2.0).await;
    let err = echo_put(&mut conn, &old).await.unwrap_err();
    assert_eq!(err, "status 400 Bad Request");
    assert!(echo_put(&mut conn, &new).await.is_ok());
}

#[tokio::test]
async fn broken_files_on_reload_keep_the_old_state_serving() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let keyring = pki.path("keyring.json");
    write_keyring(&keyring, &[("k1", 1, "active")], "k1");
    let proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, &rules(&keyring, "")));
    let cfg = client_config(&pki, &ClientOptions::h2());
    let good_config = std::fs::read_to_string(&proxy.config).unwrap();
    let good_cert = std::fs::read_to_string(pki.cert()).unwrap();

    let rotated = |path: &Path| {
        write_keyring(
            path,
            &[("k1", 1, "decrypt_only"), ("k2", 2, "active")],
            "k2",
        )
    };
    let mut breakages: Vec<Breakage<'_>> = vec![
        (
            "config that does not parse",
            Box::new(|| std::fs::write(&proxy.config, "listen: [unclosed\n").unwrap()),
        ),
        (
            "config with an unknown key",
            Box::new(|| std::fs::write(&proxy.config, format!("{good_config}bogus: 1\n")).unwrap()),
        ),
        (
            "keyring whose primary is not active",
            Box::new(|| {
                write_keyring(
                    &keyring,
                    &[("k1", 1, "active"), ("k2", 2, "decrypt_only")],
                    "k2",
                )
            }),
        ),
        (
            "keyring that is not JSON",
            Box::new(|| write_mode(&keyring, "{not json", 0o600)),
        ),
        (
            "keyring readable by others",
            Box::new(|| {
                rotated(&keyring);
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&keyring, std::fs::Permissions::from_mode(0o644)).unwrap();
            }),
        ),
        (
            "keyring writable by its group",
            Box::new(|| {
                rotated(&keyring);
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&keyring, std::fs::Permissions::from_mode(0o660)).unwrap();
            }),
        ),
        (
            "certificate that is not PEM",
            Box::new(|| std::fs::write(pki.cert(), "garbage").unwrap()),
        ),
    ];
    // Owned by another user (needs root to chown; the sandbox and CI run as root).
    if fieldseal::secret_file::effective_uid() == Some(0) {
        breakages.push((
            "keyring owned by another user",
            Box::new(|| {
                rotated(&keyring);
                std::os::unix::fs::chown(&keyring, Some(1000), None).unwrap();
            }),
        ));
    } else {
        eprintln!("skipped the foreign-owner breakage: it needs root to chown a file");
    }
    for (n, (what, breakage)) in breakages.iter().enumerate() {
        breakage();
        proxy.signal("HUP");
        proxy.wait_metric(FAILED, (n + 1) as f64).await;
        // Still serving the first state: new connections (TLS with the old certificate),
        // the old primary.
        let token = sealed_ssn(&proxy, &cfg).await;
        assert_eq!(kid(&token), "k1", "after a {what}");
        // Put everything back.
        std::fs::write(&proxy.config, &good_config).unwrap();
        std::fs::write(pki.cert(), &good_cert).unwrap();
        write_keyring(&keyring, &[("k1", 1, "active")], "k1");
    }
    assert_eq!(metric_value(&proxy, RELOADED).await, 0.0);
    let refused = proxy.wait_log(|l| l.contains("reload refused"));
    assert!(
        !refused.contains("not json"),
        "file contents never logged: {refused}"
    );

    // A good reload after all that.
    rotated(&keyring);
    proxy.signal("HUP");
    proxy.wait_metric(RELOADED, 1.0).await;
    assert_eq!(kid(&sealed_ssn(&proxy, &cfg).await), "k2");
}

/// Review finding: with the KEK only in the environment, a plain keyring swapped in for the
/// wrapped one must not be served: the reload is refused (the old keys keep serving) and the
/// log names the file and the variable that demanded wrapping.
#[tokio::test]
async fn a_plain_keyring_swapped_in_is_refused_when_the_kek_is_in_the_environment() {
    use base64::Engine;
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let keyring = pki.path("keyring.json");
    let ring_s = keyring.to_str().unwrap().to_string();
    let kek = base64::engine::general_purpose::STANDARD.encode([6u8; 32]);
    let env = [("FIELDSEAL_KEYRING_KEK", kek.as_str())];
    let (code, _, err) = run_cli(&["keys", "init", "--out", &ring_s, "--wrap"], &env);
    assert_eq!(code, 0, "{err}");
    let proxy =
        ProxyProcess::start_with_env(&config_yaml(&pki, up.addr, &rules(&keyring, "")), &env);
    let cfg = client_config(&pki, &ClientOptions::h1());
    assert_eq!(kid(&sealed_ssn(&proxy, &cfg).await), "k1");

    // Someone who can write the file (not the KEK) puts keys of their own in place.
    write_keyring(&keyring, &[("evil", 7, "active")], "evil");
    proxy.signal("HUP");
    proxy.wait_metric(FAILED, 1.0).await;
    assert_eq!(
        kid(&sealed_ssn(&proxy, &cfg).await),
        "k1",
        "still the old keys"
    );
    let refused = proxy.wait_log(|l| l.contains("reload refused"));
    assert!(
        refused.contains(&format!(
            "{ring_s} is not wrapped, but environment variable FIELDSEAL_KEYRING_KEK is set"
        )),
        "{refused}"
    );
    assert!(!refused.contains(&kek), "never the KEK: {refused}");
    assert_eq!(metric_value(&proxy, RELOADED).await, 0.0);
}

#[tokio::test]
async fn a_kubernetes_style_symlink_swap_is_picked_up_by_the_watcher() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    // The layout kubelet gives a mounted Secret: files are symlinks through `..data`, which
    // is itself a symlink to a timestamped directory, swapped atomically on update.
    let mount = pki.path("secret");
    let v1 = mount.join("..2026_11_23_v1");
    std::fs::create_dir_all(&v1).unwrap();
    write_keyring(&v1.join("keyring.json"), &[("k1", 1, "active")], "k1");
    std::os::unix::fs::symlink("..2026_11_23_v1", mount.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/keyring.json", mount.join("keyring.json")).unwrap();
    let extra = "reload:\n  watch: true\n  interval: 200ms";
    let proxy = ProxyProcess::start(&config_yaml(
        &pki,
        up.addr,
        &rules(&mount.join("keyring.json"), extra),
    ));
    let cfg = client_config(&pki, &ClientOptions::h1());
    assert_eq!(kid(&sealed_ssn(&proxy, &cfg).await), "k1");

    let v2 = mount.join("..2026_11_23_v2");
    std::fs::create_dir_all(&v2).unwrap();
    write_keyring(
        &v2.join("keyring.json"),
        &[("k1", 1, "decrypt_only"), ("k2", 2, "active")],
        "k2",
    );
    std::os::unix::fs::symlink("..2026_11_23_v2", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();

    proxy
        .wait_metric(
            r#"fieldseal_config_reloads_total{outcome="ok",trigger="watch"}"#,
            1.0,
        )
        .await;
    assert_eq!(kid(&sealed_ssn(&proxy, &cfg).await), "k2");
    // Nothing changed since: no further reloads.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let reloads = metric_value(
        &proxy,
        r#"fieldseal_config_reloads_total{outcome="ok",trigger="watch"}"#,
    )
    .await;
    assert_eq!(reloads, 1.0);
}

#[tokio::test]
async fn rotating_under_load_fails_no_request() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let keyring = pki.path("keyring.json");
    write_keyring(&keyring, &[("k1", 1, "active")], "k1");
    let proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, &rules(&keyring, "")));
    let cfg = client_config(&pki, &ClientOptions::h2());

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let mut clients = Vec::new();
    for i in 0..6 {
        let (cfg, stop, ok, failures, seen) = (
            cfg.clone(),
            stop.clone(),
            ok.clone(),
            failures.clone(),
            seen.clone(),
        );
        let listen = proxy.listen;
        clients.push(tokio::spawn(async move {
            // Half the clients keep one connection across every reload, half reconnect.
            let mut conn = HttpConn::open(listen, cfg.clone()).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                if i % 2 == 1 {
                    conn = HttpConn::open(listen, cfg.clone()).await.unwrap();
                }
                let req = request("GET", "/user", conn.is_h2())
                    .body(body(""))
                    .unwrap();
                let token = match conn.send(req).await {
                    Ok(resp) if resp.status() == 200 => {
                        read_json(resp).await["ssn"].as_str().unwrap().to_string()
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                seen.lock().unwrap().insert(kid(&token).to_string());
                match echo_put(&mut conn, &token).await {
                    Ok(v) if v == json!({ "ssn": SECRET }) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Three rotations, each a new primary with every earlier key kept for decryption.
    let mut keys: Vec<(String, u8)> = vec![("k1".into(), 1)];
    for n in 2..=4u8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        keys.push((format!("k{n}"), n));
        let list: Vec<(&str, u8, &str)> = keys
            .iter()
            .map(|(id, fill)| {
                let state = if *fill == n { "active" } else { "decrypt_only" };
                (id.as_str(), *fill, state)
            })
            .collect();
        write_keyring(&keyring, &list, &format!("k{n}"));
        proxy.signal("HUP");
        proxy.wait_metric(RELOADED, f64::from(n - 1)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failures) = (ok.load(Ordering::Relaxed), failures.load(Ordering::Relaxed));
    assert_eq!(failures, 0, "{ok} round trips succeeded");
    assert!(ok > 50, "only {ok} round trips");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["k1", "k2", "k3", "k4"],
        "every primary sealed in turn"
    );
}

#[tokio::test]
async fn rotation_policy_reports_a_primary_due_by_age_and_by_use() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let keyring = pki.path("keyring.json");
    write_keyring(&keyring, &[("k1", 1, "active")], "k1");
    let policy = "  rotation:\n    max_age: 1d\n    max_encryptions: 3";
    let proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, &rules(&keyring, policy)));
    let cfg = client_config(&pki, &ClientOptions::h1());
    // created_at 2026-11-01: older than a day at startup.
    proxy
        .wait_metric(r#"fieldseal_key_rotation_due{kid="k1",reason="age"}"#, 1.0)
        .await;
    assert_eq!(
        metric_value(
            &proxy,
            r#"fieldseal_key_rotation_due{kid="k1",reason="encryptions"}"#
        )
        .await,
        0.0
    );
    proxy.wait_log(|l| l.contains("due for rotation") && l.contains("\"reason\":\"age\""));
    for _ in 0..3 {
        sealed_ssn(&proxy, &cfg).await;
    }
    // The policy is re-evaluated every minute and after every reload.
    let started = Instant::now();
    proxy.signal("HUP");
    proxy.wait_metric(RELOADED, 1.0).await;
    proxy
        .wait_metric(
            r#"fieldseal_key_rotation_due{kid="k1",reason="encryptions"}"#,
            1.0,
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let (status, ready) = proxy.admin_get("/readyz").await;
    assert_eq!(
        status, 200,
        "a key due for rotation does not make the pod unready"
    );
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["primary_key"]["kid"], "k1");
    assert_eq!(ready["primary_key"]["due"], json!(["age", "encryptions"]));
    assert_eq!(ready["primary_key"]["encryptions"], 3);
}

#[tokio::test]
async fn sighup_swaps_the_certificate_for_new_handshakes_only() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let keyring = pki.path("keyring.json");
    write_keyring(&keyring, &[("k1", 1, "active")], "k1");
    let proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, &rules(&keyring, "")));
    let old_trust = client_config(&pki, &ClientOptions::h1());
    // A connection made before the swap keeps its session.
    let mut before = HttpConn::open(proxy.listen, old_trust.clone())
        .await
        .unwrap();

    // A certificate from another CA replaces the files in place.
    let other = Pki::new();
    std::fs::copy(other.cert(), pki.cert()).unwrap();
    std::fs::copy(other.key(), pki.key()).unwrap();
    proxy.signal("HUP");
    proxy.wait_metric(RELOADED, 1.0).await;

    let new_trust = client_config(&other, &ClientOptions::h1());
    assert_eq!(kid(&sealed_ssn(&proxy, &new_trust).await), "k1");
    assert!(
        tls_connect(proxy.listen, old_trust).await.is_err(),
        "new handshakes present the new certificate"
    );
    let req = request("GET", "/user", false).body(body("")).unwrap();
    assert_eq!(before.send(req).await.unwrap().status(), 200);
}
