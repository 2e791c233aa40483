//! `fieldseal explain`: the transcripts in docs/onboarding.md are what the command prints for
//! config/field-rules.yaml (token values aside, which differ on every run), and a dry run opens
//! a real token the way the proxy would.

mod common;

use common::*;

/// `fs1.k1.<payload>` → `fs1.k1.…`: sealed values differ on every run.
fn without_token_payloads(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("fs1.k1.") {
        out.push_str(&rest[..at + "fs1.k1.".len()]);
        rest = &rest[at + "fs1.k1.".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(rest.len());
        out.push('…');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Documents with explain transcripts.
const DOCUMENTS: [&str; 3] = [
    "docs/onboarding.md",
    "examples/fastapi/README.md",
    "examples/flask/README.md",
];

/// `(arguments, expected output)` for every `<!-- explain: ARGS -->` + ```text block of `file`.
fn documented_transcripts(file: &str) -> Vec<(Vec<String>, String)> {
    let doc = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap();
    let mut out = Vec::new();
    let mut rest = doc.as_str();
    while let Some(at) = rest.find("<!-- explain: ") {
        rest = &rest[at + "<!-- explain: ".len()..];
        let end = rest.find(" -->").unwrap();
        let args = rest[..end].split_whitespace().map(str::to_string).collect();
        let block = rest.find("```text\n").unwrap() + "```text\n".len();
        rest = &rest[block..];
        let close = rest.find("```").unwrap();
        out.push((args, rest[..close].to_string()));
        rest = &rest[close..];
    }
    out
}

fn example_env(pki: &Pki) -> Vec<(String, String)> {
    let keyring = pki.path("keyring.json");
    if !keyring.exists() {
        let (code, _, stderr) = run_cli(&["keys", "init", "--out", keyring.to_str().unwrap()], &[]);
        assert_eq!(code, 0, "{stderr}");
    }
    vec![
        (
            "FIELDSEAL_TLS__CERT".into(),
            pki.cert().display().to_string(),
        ),
        ("FIELDSEAL_TLS__KEY".into(), pki.key().display().to_string()),
        (
            "FIELDSEAL_KEYS__KEYRING".into(),
            keyring.display().to_string(),
        ),
    ]
}

#[test]
fn the_documented_transcripts_are_what_explain_prints() {
    let pki = Pki::new();
    let env = example_env(&pki);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let transcripts: Vec<_> = DOCUMENTS
        .iter()
        .flat_map(|file| {
            documented_transcripts(file)
                .into_iter()
                .map(move |t| (file, t))
        })
        .collect();
    assert!(
        transcripts.len() >= 8,
        "only {} transcripts",
        transcripts.len()
    );
    for (file, (args, expected)) in transcripts {
        let mut argv = vec!["explain"];
        if !args.iter().any(|a| a == "--config") {
            argv.extend(["--config", "config/field-rules.yaml"]);
        }
        argv.extend(args.iter().map(String::as_str));
        let (code, stdout, stderr) = run_cli(&argv, &env);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert_eq!(
            without_token_payloads(&stdout),
            expected,
            "explain {args:?} differs from {file}"
        );
    }
}

#[test]
fn a_dry_run_opens_real_tokens_and_names_the_failing_field() {
    let pki = Pki::new();
    let env = example_env(&pki);
    let keyring = pki.path("keyring.json");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (code, token, _) = run_cli(
        &[
            "seal",
            "--keyring",
            keyring.to_str().unwrap(),
            "--context",
            "ssn",
            "\"123-45-6789\"",
        ],
        &[],
    );
    assert_eq!(code, 0);
    let body = pki.path("put.json");
    std::fs::write(
        &body,
        format!(r#"{{"ssn": "{}", "password": "pw"}}"#, token.trim()),
    )
    .unwrap();
    let run = |method: &str, path: &str| {
        run_cli(
            &[
                "explain",
                "--config",
                "config/field-rules.yaml",
                "--method",
                method,
                "--path",
                path,
                "--body",
                body.to_str().unwrap(),
            ],
            &env,
        )
    };
    let (code, stdout, stderr) = run("PUT", "/api/users/7");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("$['ssn']: opened (key k1)"), "{stdout}");
    assert!(
        stdout.contains("$['password']: plaintext_passed"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            r#"the app receives:
{"ssn": "123-45-6789", "password": "pw"}"#
        ),
        "{stdout}"
    );
    // A PUT body is the client's request: by default it is not also shown "as a response"
    // (sealed again); `--direction both` asks for both readings.
    assert!(stdout.contains("as a request of the client:"), "{stdout}");
    assert!(!stdout.contains("as a response"), "{stdout}");
    let (code, both, stderr) = run_cli(
        &[
            "explain",
            "--config",
            "config/field-rules.yaml",
            "--method",
            "PUT",
            "--path",
            "/api/users/7",
            "--body",
            body.to_str().unwrap(),
            "--direction",
            "both",
        ],
        &env,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(both.contains("as a request of the client:"), "{both}");
    assert!(both.contains("as a response"), "{both}");
    // The token was sealed for `ssn`: at `password` (another context) it does not open.
    std::fs::write(&body, format!(r#"{{"password": "{}"}}"#, token.trim())).unwrap();
    let (_, stdout, _) = run("POST", "/api/signup");
    assert!(
        stdout.contains("the client gets 400 field_rejected (field $['password']: authentication_failed (key `k1`)); the app is not called"),
        "{stdout}"
    );
    // A bad config is reported like `check` does, exit 1.
    let (code, _, stderr) = run_cli(
        &["explain", "--config", "/nonexistent.yaml", "--path", "/"],
        &[],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent.yaml"), "{stderr}");
}

/// Issue 14: a misspelt selector fails open, so `explain` says when one matches nothing in the
/// sample, shows the policy's rules beside the route's (route first), and runs the guard on
/// the answer the client would get.
#[test]
fn explain_names_selectors_that_match_nothing_and_what_the_guard_finds() {
    let pki = Pki::new();
    make_keyring(&pki.path("keyring.json"));
    let config = pki.path("fieldseal.yaml");
    std::fs::write(
        &config,
        format!(
            r#"listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:8000"
tls: {{ cert: "{}", key: "{}" }}
keys: {{ keyring: keyring.json }}
fields:
  - {{ select: "$..emial", action: encrypt }}
  - {{ select: "$..phone", action: mask, keep_last: 4 }}
guard: {{ detect: [ssn, email], mode: block }}
routes:
  - name: user
    match: {{ path: "/api/users/{{id}}" }}
    response: {{ redact: ["$.user.phone"] }}
"#,
            pki.cert().display(),
            pki.key().display()
        ),
    )
    .unwrap();
    let body = pki.path("answer.json");
    std::fs::write(
        &body,
        r#"{"user": {"email": "ada@example.com", "phone": "+44 20 7946 0958"}, "friends": [{"phone": "555-0100-77"}]}"#,
    )
    .unwrap();
    let (code, out, err) = run_cli(
        &[
            "explain",
            "--config",
            config.to_str().unwrap(),
            "--method",
            "GET",
            "--path",
            "/api/users/7",
            "--body",
            body.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("encrypt [fields] $..emial: matches nothing in this sample"),
        "{out}"
    );
    let route_rule = out
        .find("redact $.user.phone -> $['user']['phone']")
        .unwrap();
    let policy_rule = out
        .find("mask (keep_last 4) [fields] $..phone -> $['friends'][0]['phone']")
        .unwrap();
    assert!(route_rule < policy_rule, "route rules first:\n{out}");
    // The policy's mask also selects the node the route redacts: it says it does not handle it.
    assert!(
        out.contains(
            "mask (keep_last 4) [fields] $..phone -> $['user']['phone'] (handled by another rule"
        ),
        "{out}"
    );
    assert!(out.contains("guard: email at $['user']['email']"), "{out}");
    assert!(
        out.contains("the client gets 502 sensitive_data_detected"),
        "{out}"
    );
    assert!(!out.contains("ada@example.com\""), "{out}");
}

/// A query string in `--path` is opened as `run` would, by the route's `query:` rules and the
/// field policy's; a plaintext where a token is required is refused with the client's error.
#[test]
fn explain_opens_query_parameters() {
    let pki = Pki::new();
    let keyring = pki.path("keyring.json");
    make_keyring(&keyring);
    let config = pki.path("fieldseal.yaml");
    std::fs::write(
        &config,
        format!(
            r#"listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:8000"
tls: {{ cert: "{}", key: "{}" }}
keys: {{ keyring: keyring.json }}
fields:
  - {{ select: "query:member", action: encrypt }}
routes:
  - name: search
    match: {{ path: "/api/search" }}
    request: {{ decrypt: ["query:ssn"], require_encrypted: true }}
"#,
            pki.cert().display(),
            pki.key().display()
        ),
    )
    .unwrap();
    let seal = |context: &str, value: &str| {
        let (code, out, err) = run_cli(
            &[
                "seal",
                "--keyring",
                keyring.to_str().unwrap(),
                "--context",
                context,
                value,
            ],
            &[],
        );
        assert_eq!(code, 0, "{err}");
        out.trim().to_string()
    };
    let (ssn, member) = (seal("ssn", "\"078-05-1120\""), seal("member", "\"m-42\""));
    let explain = |path: &str| {
        let (code, out, err) = run_cli(
            &[
                "explain",
                "--config",
                config.to_str().unwrap(),
                "--path",
                path,
            ],
            &[],
        );
        assert_eq!(code, 0, "{err}");
        out
    };
    let out = explain(&format!("/api/search?ssn={ssn}&member={member}&q=a+b"));
    assert!(out.contains("query:ssn: opened"), "{out}");
    assert!(out.contains("query:member: opened"), "{out}");
    assert!(
        out.contains("the app receives /api/search?ssn=078-05-1120&member=m-42&q=a+b"),
        "{out}"
    );
    let out = explain("/api/search?ssn=078-05-1120");
    assert!(
        out.contains("the client gets 400 field_rejected") && out.contains("plaintext_not_allowed"),
        "{out}"
    );
    // Unlisted paths get the policy's rule.
    let out = explain(&format!("/elsewhere?member={member}"));
    assert!(
        out.contains("the app receives /elsewhere?member=m-42"),
        "{out}"
    );
}

/// `--caller` shows the views a verified caller would get; without it, what a request
/// without a valid token gets (each rule's own action).
#[test]
fn explain_shows_views_for_a_caller() {
    let pki = Pki::new();
    make_keyring(&pki.path("keyring.json"));
    std::fs::write(
        pki.path("jwks.json"),
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k","alg":"EdDSA","use":"sig"}]}"#,
    )
    .unwrap();
    let config = pki.path("fieldseal.yaml");
    std::fs::write(
        &config,
        format!(
            r#"listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:8000"
tls: {{ cert: "{}", key: "{}" }}
keys: {{ keyring: keyring.json }}
identity:
  jwt: {{ jwks_file: jwks.json, issuer: "https://issuer.test", audience: api, algorithms: [EdDSA] }}
guard: {{ detect: [ssn], mode: block }}
routes:
  - name: profile
    match: {{ path: "/api/profiles/{{id}}" }}
    response:
      encrypt:
        - path: "$.ssn"
          views:
            - {{ when: {{ subject: "{{id}}" }}, show: plain }}
            - {{ when: {{ claims: {{ role: support }} }}, show: mask, keep_last: 4 }}
"#,
            pki.cert().display(),
            pki.key().display()
        ),
    )
    .unwrap();
    let body = pki.path("answer.json");
    std::fs::write(&body, r#"{"id": "42", "ssn": "078-05-1120"}"#).unwrap();
    let explain = |caller: Option<&str>| {
        let mut args = vec![
            "explain",
            "--config",
            config.to_str().unwrap(),
            "--path",
            "/api/profiles/42",
            "--body",
            body.to_str().unwrap(),
        ];
        if let Some(c) = caller {
            args.extend(["--caller", c]);
        }
        let (code, out, err) = run_cli(&args, &[]);
        assert_eq!(code, 0, "{err}");
        out
    };
    let check = run_cli(&["check", "--config", config.to_str().unwrap()], &[]).1;
    assert!(
        check.contains(
            "$.ssn (views: subject = {id} -> plain; role = \"support\" -> mask (keep_last 4))"
        ),
        "{check}"
    );
    let owner = explain(Some(r#"{"sub": "42"}"#));
    assert!(owner.contains("views for the caller `42`"), "{owner}");
    assert!(
        owner.contains("plain (views.0) $.ssn -> $['ssn']"),
        "{owner}"
    );
    // The owner's own SSN is declared: the guard does not withhold it.
    assert!(
        owner.contains("every selected field is shown to this caller"),
        "{owner}"
    );
    assert!(!owner.contains("sensitive_data_detected"), "{owner}");
    let support = explain(Some(r#"{"sub": "7", "role": "support"}"#));
    assert!(support.contains("*******1120"), "{support}");
    let nobody = explain(None);
    assert!(nobody.contains("without a valid token"), "{nobody}");
    assert!(nobody.contains("encrypt (default) $.ssn"), "{nobody}");
    assert!(!nobody.contains("078-05-1120\""), "{nobody}");
    let (code, _, err) = run_cli(
        &[
            "explain",
            "--config",
            config.to_str().unwrap(),
            "--path",
            "/x",
            "--caller",
            "[]",
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("--caller"), "{err}");
}

/// A keyring and a configuration with `routes` (YAML list items) in `pki`'s directory.
fn keyring_and_routes(pki: &Pki, routes: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let keyring = pki.path("keyring.json");
    make_keyring(&keyring);
    let config = pki.path("fieldseal.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:0\"\nupstream: \"http://127.0.0.1:8000\"\ntls: {{ cert: \"{}\", key: \"{}\" }}\nkeys: {{ keyring: keyring.json }}\nroutes:\n{routes}",
            pki.cert().display(),
            pki.key().display()
        ),
    )
    .unwrap();
    (keyring, config)
}

/// A route that names its data subject: explain seals for the subject in `--path` and opens a
/// subject-bound token only for it, as `run` does.
#[test]
fn explain_seals_and_opens_for_the_routes_subject() {
    let pki = Pki::new();
    let (keyring, config) = keyring_and_routes(
        &pki,
        r#"  - name: user
    match: { path: "/api/users/{id}", methods: [GET, PUT] }
    subject: "{id}"
    response: { encrypt: [{ path: "$.ssn", per_subject: true }] }
    request: { decrypt: ["$.ssn"] }
"#,
    );
    let answer = pki.path("answer.json");
    std::fs::write(&answer, r#"{"ssn": "078-05-1120"}"#).unwrap();
    let (code, out, err) = run_cli(
        &[
            "explain",
            "--config",
            config.to_str().unwrap(),
            "--path",
            "/api/users/42",
            "--body",
            answer.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"ssn\": \"fsb1."), "{out}");
    let (code, token, err) = run_cli(
        &[
            "seal",
            "--keyring",
            keyring.to_str().unwrap(),
            "--context",
            "ssn",
            "--subject",
            "42",
            "\"078-05-1120\"",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let request = pki.path("request.json");
    std::fs::write(&request, format!(r#"{{"ssn": "{}"}}"#, token.trim())).unwrap();
    let put = |path: &str| {
        let (code, out, err) = run_cli(
            &[
                "explain",
                "--config",
                config.to_str().unwrap(),
                "--method",
                "PUT",
                "--path",
                path,
                "--body",
                request.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(code, 0, "{err}");
        out
    };
    let own = put("/api/users/42");
    assert!(
        own.contains("078-05-1120") && own.contains("opened"),
        "{own}"
    );
    let other = put("/api/users/43");
    assert!(
        other.contains("400 field_rejected") && other.contains("authentication_failed"),
        "{other}"
    );
}

/// A list route whose subject is a member of each record: explain seals each record's value
/// for the record's own member (checked by opening each token for it), and says why an answer
/// with a record lacking it is withheld.
#[test]
fn explain_seals_each_record_for_its_member_subject() {
    let pki = Pki::new();
    let (keyring, config) = keyring_and_routes(
        &pki,
        r#"  - name: users
    match: { path: "/api/users", methods: [GET] }
    subject: "member:id"
    response: { encrypt: [{ path: "$[*].ssn", per_subject: true }] }
"#,
    );
    let explain = |body: &str| {
        let answer = pki.path("answer.json");
        std::fs::write(&answer, body).unwrap();
        let (code, out, err) = run_cli(
            &[
                "explain",
                "--config",
                config.to_str().unwrap(),
                "--path",
                "/api/users",
                "--body",
                answer.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(code, 0, "{err}");
        out
    };
    let out = explain(r#"[{"id": 7, "ssn": "078-05-1120"}, {"id": "u-8", "ssn": "219-09-9999"}]"#);
    let tokens: Vec<&str> = out.split('"').filter(|s| s.starts_with("fsb1.")).collect();
    assert_eq!(tokens.len(), 2, "{out}");
    for (token, (subject, plain)) in tokens
        .iter()
        .zip([("7", "078-05-1120"), ("u-8", "219-09-9999")])
    {
        let open = |subject: &str| {
            run_cli(
                &[
                    "open",
                    "--keyring",
                    keyring.to_str().unwrap(),
                    "--context",
                    "ssn",
                    "--subject",
                    subject,
                    token,
                ],
                &[],
            )
        };
        let (code, opened, err) = open(subject);
        assert_eq!(code, 0, "{err}");
        assert!(opened.contains(plain), "{opened}");
        let other = if subject == "7" { "u-8" } else { "7" };
        assert_ne!(open(other).0, 0);
    }
    let out = explain(r#"[{"id": 7, "ssn": "078-05-1120"}, {"ssn": "219-09-9999"}]"#);
    assert!(
        out.contains("no_subject") && !out.contains("219-09-9999"),
        "{out}"
    );
}
