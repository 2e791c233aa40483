//! `fieldseal check`: every example config passes; problems are all reported, each with its
//! origin and key path, values redacted; environment overrides.

mod common;

use common::*;

/// Env overrides pointing the example configs' file paths at real test files.
fn example_env(pki: &Pki, yaml: &str) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "FIELDSEAL_TLS__CERT".to_string(),
            pki.cert().display().to_string(),
        ),
        (
            "FIELDSEAL_TLS__KEY".to_string(),
            pki.key().display().to_string(),
        ),
    ];
    if yaml.contains("client_ca") {
        env.push((
            "FIELDSEAL_TLS__CLIENT_CA".into(),
            pki.path("client-ca.pem").display().to_string(),
        ));
    }
    if yaml.contains("keyring") {
        let keyring = pki.path("keyring.json");
        if !keyring.exists() {
            make_keyring(&keyring);
        }
        env.push((
            "FIELDSEAL_KEYS__KEYRING".into(),
            keyring.display().to_string(),
        ));
    }
    for (key, command, file) in [
        (
            "rsa_private_key",
            ["rsa", "generate", "--bits", "2048"],
            "rsa.pem",
        ),
        (
            "hpke_private_key",
            ["hpke", "generate", "", ""],
            "x25519.pem",
        ),
    ] {
        if !yaml.contains(key) {
            continue;
        }
        let path = pki.path(file);
        if !path.exists() {
            let mut args: Vec<&str> = command.iter().copied().filter(|a| !a.is_empty()).collect();
            args.extend(["--out", path.to_str().unwrap()]);
            let (code, _, stderr) = run_cli(&args, &[]);
            assert_eq!(code, 0, "{stderr}");
        }
        env.push((
            format!("FIELDSEAL_KEYS__{}", key.to_uppercase()),
            path.display().to_string(),
        ));
    }
    env
}

#[test]
fn every_example_config_passes_check() {
    let pki = Pki::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let yaml = std::fs::read_to_string(&path).unwrap();
        let env = example_env(&pki, &yaml);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (code, stdout, stderr) = run_cli(&["check", "--config", path.to_str().unwrap()], &env);
        assert_eq!(code, 0, "{}:\n{stderr}", path.display());
        assert!(stdout.contains("is valid"), "{stdout}");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} example configs found");
}

#[test]
fn check_prints_the_compiled_routes() {
    let pki = Pki::new();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sidecar.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let env = example_env(&pki, &yaml);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (code, stdout, _) = run_cli(&["check", "--config", path.to_str().unwrap()], &env);
    assert_eq!(code, 0);
    // Numbered as errors and config keys are (`routes.0`): one numbering.
    assert!(
        stdout.contains("routes.0 users GET,PUT /api/users/{id}"),
        "{stdout}"
    );
    assert!(stdout.contains("routes.1 docs GET /docs/**"), "{stdout}");
    assert!(stdout.contains("pass-through"), "{stdout}");
    assert!(
        stdout.contains("-> upstream http://127.0.0.1:8000"),
        "{stdout}"
    );
}

#[test]
fn check_reports_every_problem_with_file_and_key_path() {
    let pki = Pki::new();
    let config = pki.path("broken.yaml");
    let yaml = format!(
        r#"listen: "127.0.0.1:8443"
upstream: "http://127.0.0.1:8000"
tls:
  cert: "{missing}"
  key: "{key}"
unknown_top: 1
workers: 0
limits:
  max_body_bytes: "hunter2-not-a-number"
routes:
  - name: a
    match: {{ path: "/api/{{id", methods: [GET] }}
  - name: b
    match: {{ path: "/ok" }}
    response:
      encrypt: ["$.cards[", "$.fine"]
  - name: c
    match: {{ path: "/c" }}
    respnse: {{}}
  - name: d
    match: {{ path: "/d" }}
    request:
      decrypt: ["$.x.*", {{ path: "$.ok[*]", context: ok }}, {{ path: "$.t", type: [str] }}]
  - name: e
    match: {{ path: "/e/{{id" }}
    response:
      mask: [{{ path: "$.phone" }}]
  - name: f
    match: {{ path: "/f" }}
    response:
      mask: ["$.phone"]
  - name: g
    match: {{ path: "/api/users?id=1" }}
trusted_proxies: ["10.0.0.0/8", "not-a-network", "::1"]
fields:
  - {{ select: "$..ssn", action: encrypt }}
  - {{ select: "$..phone", action: mask }}
  - {{ select: "$..notes", action: redact, context: x }}
  - {{ select: "$.items.*", action: encrypt }}
  - {{ select: "$..email", action: hash }}
  - {{ select: "$..ok", action: encrypt, context: ok }}
  - {{ select: "$..mail", action: mask_email }}
  - {{ select: "$..dob", action: year }}
guard:
  detect: [ssn, iban]
  mode: shout
"#,
        missing = pki.path("missing-cert.pem").display(),
        key = pki.key().display()
    );
    std::fs::write(&config, yaml).unwrap();
    let (code, stdout, stderr) = run_cli(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{stdout}");
    let file = config.display().to_string();
    let expect = [
        ("unknown_top", "unknown key"),
        ("workers", "at least 1"),
        ("tls.cert", "missing-cert.pem"),
        ("limits.max_body_bytes", "expected"),
        ("routes.0.match.path", "bad path template"),
        ("routes.1.response.encrypt.0", "invalid JSONPath"),
        ("routes.2.respnse", "unknown key"),
        ("routes.1", "keys.keyring"),
        ("trusted_proxies.1", "not an IP network"),
        ("routes.3.request.decrypt.0", "chosen by the client"),
        ("routes.3.request.decrypt.2.type", "unknown type `str`"),
        // Issue 14: one round reports the broken mask *and* the broken path behind it...
        (
            "routes.4.response.mask.0",
            "missing required key `keep_last`",
        ),
        ("routes.4.match.path", "bad path template"),
        // ...in the configuration's words, never an internal type name...
        (
            "routes.5.response.mask.0",
            "expected a mapping `{ path, keep_last }`",
        ),
        // ...and a query string in a path (which could never match) is an error.
        ("routes.6.match.path", "query strings"),
        // The field policy and the guard, in the same round (contract §8, §9).
        ("fields.0", "keys.keyring"),
        ("fields.1.keep_last", "`mask` needs `keep_last`"),
        ("fields.2.context", "applies to `encrypt` only"),
        ("fields.3.select", "chosen by the client"),
        (
            "fields.4.action",
            "expected one of: encrypt, redact, mask, mask_email, year",
        ),
        ("guard.mode", "expected one of: observe, block"),
    ];
    for (key, what) in expect {
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("{file}: {key}: ")))
            .unwrap_or_else(|| panic!("no problem reported for {key}:\n{stderr}"));
        assert!(line.contains(what), "{line}");
    }
    // An explicit context makes a wildcard selector acceptable; valid networks pass.
    for fine in [
        "routes.3.request.decrypt.1:",
        "fields.5.select",
        "fields.6",
        "fields.7",
        "trusted_proxies.0",
        "trusted_proxies.2",
    ] {
        assert!(!stderr.contains(fine), "{fine} reported:\n{stderr}");
    }
    assert!(
        !stderr.contains("hunter2"),
        "a config value was echoed:\n{stderr}"
    );
    assert!(!stderr.contains("Raw"), "an internal type name:\n{stderr}");
    assert!(stderr.contains("problem(s)"), "{stderr}");
}

#[test]
fn environment_overrides_apply_and_are_named_in_errors() {
    let pki = Pki::new();
    let config = pki.path("env.yaml");
    std::fs::write(
        &config,
        config_yaml(&pki, "127.0.0.1:8000".parse().unwrap(), ""),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    // Overrides win; unrelated FIELDSEAL_* variables (Kubernetes service links) are ignored.
    let (code, stdout, stderr) = run_cli(
        &["check", "--config", config],
        &[
            ("FIELDSEAL_UPSTREAM", "http://10.9.8.7:9000"),
            ("FIELDSEAL_SERVICE_HOST", "10.0.0.1"),
            ("FIELDSEAL_PORT", "tcp://10.0.0.1:443"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("upstream http://10.9.8.7:9000"), "{stdout}");

    // A misspelt nested override is an error that names the variable.
    let (code, _, stderr) = run_cli(
        &["check", "--config", config],
        &[("FIELDSEAL_TLS__CERTT", "/x")],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("env FIELDSEAL_TLS__CERTT"), "{stderr}");

    // A bad value from the environment is attributed to it.
    let (code, _, stderr) = run_cli(
        &["check", "--config", config],
        &[("FIELDSEAL_LISTEN", "not-an-address")],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("env FIELDSEAL_LISTEN: listen: not an IP socket address"),
        "{stderr}"
    );
}

#[test]
fn secret_file_permissions_are_enforced() {
    let pki = Pki::new();
    let config = pki.path("perm.yaml");
    std::fs::write(
        &config,
        config_yaml(&pki, "127.0.0.1:8000".parse().unwrap(), ""),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    use std::os::unix::fs::PermissionsExt;
    let set =
        |mode| std::fs::set_permissions(pki.key(), std::fs::Permissions::from_mode(mode)).unwrap();

    set(0o644);
    let (code, _, stderr) = run_cli(&["check", "--config", config], &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("tls.key") && stderr.contains("chmod 600"),
        "{stderr}"
    );

    // Writable by the group (or others): whoever can write it can replace the key.
    for mode in [0o660, 0o620, 0o602] {
        set(mode);
        let (code, _, stderr) = run_cli(&["check", "--config", config], &[]);
        assert_eq!(code, 1, "{mode:o}");
        assert!(
            stderr.contains("tls.key") && stderr.contains("holds a secret but is writable by"),
            "{stderr}"
        );
    }

    // Kubernetes fsGroup mounts are 0440: accepted with a warning.
    set(0o440);
    let (code, stdout, stderr) = run_cli(&["check", "--config", config], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("warning") && stdout.contains("readable by its group"),
        "{stdout}"
    );

    // Owned by another user than the one fieldseal runs as: refused; by root: accepted.
    if fieldseal::secret_file::effective_uid() != Some(0) {
        eprintln!("skipped the owner cases: they need root to chown a file");
        return;
    }
    std::os::unix::fs::chown(pki.key(), Some(1000), None).unwrap();
    let (code, _, stderr) = run_cli(&["check", "--config", config], &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("tls.key") && stderr.contains("is owned by uid 1000"),
        "{stderr}"
    );
    std::os::unix::fs::chown(pki.key(), Some(0), Some(1000)).unwrap();
    assert_eq!(run_cli(&["check", "--config", config], &[]).0, 0);
}

#[test]
fn missing_config_file_is_reported() {
    let (code, _, stderr) = run_cli(&["check", "--config", "/nonexistent/fieldseal.yaml"], &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("/nonexistent/fieldseal.yaml: cannot read the configuration file"),
        "{stderr}"
    );
}

#[test]
fn keyring_problems_are_reported_under_keys_keyring() {
    let pki = Pki::new();
    let keyring = pki.path("keyring.json");
    write_mode(
        &keyring,
        r#"{"primary": "k2", "keys": [{"id": "k1", "secret": "AAAA", "created_at": "2026-11-01T00:00:00Z", "state": "active"}]}"#,
        0o600,
    );
    let config = pki.path("k.yaml");
    let yaml = config_yaml(
        &pki,
        "127.0.0.1:8000".parse().unwrap(),
        &format!("keys:\n  keyring: \"{}\"\n", keyring.display()),
    );
    std::fs::write(&config, yaml).unwrap();
    let (code, _, stderr) = run_cli(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("keys.keyring: key `k1`: secret must be 32 bytes"),
        "{stderr}"
    );
    assert!(
        stderr.contains("keys.keyring: primary `k2` is not a key"),
        "{stderr}"
    );
    // A valid one passes.
    std::fs::remove_file(&keyring).unwrap();
    make_keyring(&keyring);
    let (code, _, stderr) = run_cli(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn client_key_problems_are_reported_and_good_keys_are_listed() {
    let pki = Pki::new();
    let rsa = pki.path("rsa.pem");
    let x25519 = pki.path("x25519.pem");
    let (code, _, stderr) = run_cli(
        &[
            "rsa",
            "generate",
            "--bits",
            "2048",
            "--out",
            rsa.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run_cli(
        &["hpke", "generate", "--out", x25519.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let config = pki.path("client.yaml");
    let check = |keys: &str, routes: &str| {
        let yaml = config_yaml(
            &pki,
            "127.0.0.1:8000".parse().unwrap(),
            &format!("keys:\n{keys}{routes}"),
        );
        std::fs::write(&config, yaml).unwrap();
        run_cli(&["check", "--config", config.to_str().unwrap()], &[])
    };
    let (rsa_s, x_s) = (rsa.display().to_string(), x25519.display().to_string());

    // Good: both keys listed by kid, in JWKS order.
    let (code, stdout, stderr) = check(
        &format!("  rsa_private_key: [\"{rsa_s}\"]\n  hpke_private_key: \"{x_s}\"\n  public_key_path: /pk\n"),
        "routes:\n  - name: a\n    match: { path: \"/a\" }\n    request: { decrypt: [\"$.x\"], max_age: 60 }\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("client keys (JWKS at /.well-known/fieldseal/jwks.json):"),
        "{stdout}"
    );
    assert!(stdout.contains("RSA-2048 kid "), "{stdout}");
    assert!(
        stdout.contains("X25519 (HPKE, HPKE-X25519-A256GCM) kid "),
        "{stdout}"
    );
    assert!(
        stdout.contains("seed-compatible public key at /pk"),
        "{stdout}"
    );

    // The same key twice, the keys swapped, a seed path without RSA, max_age without decrypt.
    let (code, _, stderr) = check(
        &format!("  rsa_private_key: [\"{rsa_s}\", \"{rsa_s}\"]\n"),
        "",
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("configured twice"), "{stderr}");
    let (code, _, stderr) = check(
        &format!("  rsa_private_key: \"{x_s}\"\n  hpke_private_key: \"{rsa_s}\"\n"),
        "",
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("keys.rsa_private_key:") && stderr.contains("not an RSA key"),
        "{stderr}"
    );
    assert!(
        stderr.contains("keys.hpke_private_key:") && stderr.contains("not an X25519 or X-Wing key"),
        "{stderr}"
    );
    let (code, _, stderr) = check(
        &format!("  hpke_private_key: \"{x_s}\"\n  public_key_path: /pk\n"),
        "routes:\n  - name: s\n    match: { path: \"/s\" }\n    envelope: true\n  - name: m\n    match: { path: \"/m\" }\n    request: { max_age: 60 }\n",
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("keys.public_key_path: serves an RSA public key"),
        "{stderr}"
    );
    // An HPKE key is enough for envelopes (the session key is HPKE-wrapped).
    assert!(!stderr.contains("routes.0.envelope"), "{stderr}");
    assert!(stderr.contains("routes.1.request.max_age"), "{stderr}");
    let (code, _, stderr) = check(
        "",
        "routes:\n  - name: s\n    match: { path: \"/s\" }\n    envelope: true\n",
    );
    assert_eq!(code, 1);
    assert!(
        stderr
            .contains("routes.0.envelope: needs `keys.rsa_private_key` or `keys.hpke_private_key`"),
        "{stderr}"
    );

    // Key files others can read are refused, like every secret file.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rsa, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, stderr) = check(&format!("  rsa_private_key: \"{rsa_s}\"\n"), "");
    assert_eq!(code, 1);
    assert!(stderr.contains("keys.rsa_private_key"), "{stderr}");
}

/// Issue 14: the configuration snippets of the onboarding guide run as written. Each YAML
/// block is completed with the addresses and files a real setup has (the guide's first step
/// writes them) and must pass `check`; a block naming system paths (`/etc/…`) is shown for its
/// shape only and is skipped.
#[test]
fn onboarding_yaml_snippets_pass_check() {
    yaml_snippets_pass_check("docs/onboarding.md", 3);
}

#[test]
fn carrier_yaml_snippets_pass_check() {
    yaml_snippets_pass_check("docs/carriers.md", 1);
}

#[test]
fn token_format_yaml_snippets_pass_check() {
    yaml_snippets_pass_check("docs/tokens.md", 3);
}

/// Every YAML block of a guide (but those naming files under /etc/) passes `check` as written.
fn yaml_snippets_pass_check(doc: &str, at_least: usize) {
    let guide = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(doc))
        .unwrap();
    let blocks: Vec<&str> = guide
        .split("```yaml\n")
        .skip(1)
        .map(|rest| &rest[..rest.find("```").unwrap()])
        .collect();
    assert!(blocks.len() >= at_least, "{} yaml blocks", blocks.len());
    let mut checked = 0;
    for (i, block) in blocks.iter().enumerate() {
        if block.contains("/etc/") {
            continue;
        }
        let pki = Pki::new();
        make_keyring(&pki.path("keyring.json"));
        let mut config = format!(
            "listen: \"127.0.0.1:0\"\nupstream: \"http://127.0.0.1:8000\"\ntls: {{ cert: \"{}\", key: \"{}\" }}\n",
            pki.cert().display(),
            pki.key().display()
        );
        if !block.contains("keys:") {
            config.push_str("keys: { keyring: keyring.json }\n");
        }
        config.push_str(block);
        let path = pki.path("fieldseal.yaml");
        std::fs::write(&path, &config).unwrap();
        let (code, stdout, stderr) = run_cli(&["check", "--config", path.to_str().unwrap()], &[]);
        assert_eq!(code, 0, "block {i} of {doc}:\n{block}\n{stderr}");
        assert!(stdout.contains("is valid"), "{stdout}");
        checked += 1;
    }
    assert!(checked >= at_least, "only {checked} blocks checked");
}

#[test]
fn carrier_rules_are_checked_where_they_are_written() {
    let pki = Pki::new();
    make_keyring(&pki.path("keyring.json"));
    let config = pki.path("carriers.yaml");
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:8000"
tls: {{ cert: "{cert}", key: "{key}" }}
keys: {{ keyring: keyring.json }}
fields:
  - {{ select: "query:member", action: redact }}
  - {{ select: "form:x", action: encrypt, seal_null: true }}
  - {{ select: "header:x-ok", action: mask_email }}
routes:
  - name: profile
    match: {{ path: "/api/profile", methods: [POST] }}
    request:
      decrypt: ["form:", "header:cookie", "header:x_a", "cookie:a", "query:ok"]
    response:
      encrypt: ["query:ssn", "header:x-fine"]
      mask: [{{ path: "form:x", keep_last: 2 }}]
"#,
        cert = pki.cert().display(),
        key = pki.key().display()
    );
    std::fs::write(&config, yaml).unwrap();
    let (code, _, stderr) = run_cli(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    for expected in [
        "fields.0.action: a response has no form fields or query string",
        "fields.1.seal_null: applies to JSON members only",
        "routes.0.response.encrypt.0: a response has no query string",
        "routes.0.response.mask.0.path: a response has no form fields",
        "routes.0.request.decrypt.0: `form:` needs a name",
        "routes.0.request.decrypt.1: `cookie` frames, routes or bundles",
        "routes.0.request.decrypt.2: header names with `_`",
        "routes.0.request.decrypt.3: a selector is a JSONPath starting with `$`, or names a carrier",
    ] {
        assert!(stderr.contains(expected), "missing `{expected}` in:\n{stderr}");
    }
    assert!(stderr.contains("8 problem(s)"), "{stderr}");
}

#[test]
fn views_and_identity_are_checked_where_they_are_written() {
    let pki = Pki::new();
    make_keyring(&pki.path("keyring.json"));
    let config = pki.path("views.yaml");
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:8000"
tls: {{ cert: "{cert}", key: "{key}" }}
keys: {{ keyring: keyring.json }}
fields:
  - select: "$..bio"
    action: redact
    views:
      - {{ when: {{}}, show: plain }}
      - {{ when: {{ authenticated: true }}, show: mask }}
      - {{ when: {{ claims: {{ role: [a, b] }} }}, show: plain }}
      - {{ when: {{ subject: id }}, show: plain }}
  - select: "header:x-a"
    action: redact
    views: [{{ when: {{ authenticated: true }}, show: plain }}]
routes:
  - name: profile
    match: {{ path: "/api/profiles/{{id}}" }}
    response:
      encrypt: [{{ path: "$.ssn", views: [{{ when: {{ subject: "{{user}}" }}, show: plain }}] }}]
    request:
      decrypt: [{{ path: "$.ssn", views: [{{ when: {{ authenticated: true }}, show: plain }}] }}]
"#,
        cert = pki.cert().display(),
        key = pki.key().display()
    );
    std::fs::write(&config, yaml).unwrap();
    let (code, _, stderr) = run_cli(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    for expected in [
        "fields.0.views.0.when: say who sees this view",
        "fields.0.views.1.keep_last: `mask` needs `keep_last`",
        "fields.0.views.2.when.claims.role: compare a claim with a string",
        "fields.0.views.3.when.subject: name a path parameter of the route",
        "identity: rules with `views` choose by the caller's verified token",
        "routes.0.response: a view of `$.ssn` compares the subject with `{user}`",
        "routes.0.request.decrypt.0.views: views choose what a caller sees in answers",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
    // Carrier rules take no views.
    assert!(
        stderr.contains("fields.1.views: apply to JSON members only"),
        "{stderr}"
    );

    // identity problems are reported under their key, every one at once.
    let config = pki.path("identity.yaml");
    std::fs::write(
        &config,
        format!(
            r#"listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:8000"
tls: {{ cert: "{cert}", key: "{key}" }}
identity:
  jwt: {{ jwks_url: "http://example.com/jwks.json", audience: api, algorithms: [none, HS256] }}
"#,
            cert = pki.cert().display(),
            key = pki.key().display()
        ),
    )
    .unwrap();
    let (code, _, stderr) = run_cli(&["check", "--config", config.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    for expected in [
        "identity.jwt.issuer",
        "identity.jwt.algorithms",
        "identity.jwt.jwks_url",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}
