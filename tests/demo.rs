//! `fieldseal demo` (the README's first command) works with no files: it prints where it
//! listens, and a real client gets the demo record through TLS 1.3 with the security headers.
//! The demo is no decryption oracle: whatever token or JWE a client sends to whichever demo
//! route, what the proxy opened never comes back in plaintext.

mod common;

use base64::Engine;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// The demo record's sealed values, and a value a test HPKE-encrypts itself.
const SSN: &str = "123-45-6789";
const PASSWORD: &str = "correct horse battery staple";
const CARD: &str = "4111111111110366";
const JWE_SSN: &str = "987-65-4321";
const PLAINTEXTS: [&str; 4] = [SSN, PASSWORD, CARD, JWE_SSN];

/// A running `fieldseal demo`, killed on drop.
struct Demo {
    child: Child,
    addr: std::net::SocketAddr,
    banner: Vec<String>,
    config: PathBuf,
}

impl Demo {
    fn start() -> Self {
        let mut child = Command::new(bin())
            .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .env("FIELDSEAL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut proxy_url = None;
        let mut banner = Vec::new();
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
            if let Some(rest) = line.trim().strip_prefix("proxy") {
                proxy_url = rest.split_whitespace().next().map(str::to_string);
            }
            let done = line.contains("/metrics");
            banner.push(line);
            if done {
                break;
            }
        }
        let Some(url) = proxy_url else {
            let _ = child.kill();
            panic!("no proxy address in the banner:\n{}", banner.join("\n"));
        };
        let addr = url.trim_start_matches("https://").parse().unwrap();
        let config = banner
            .iter()
            .find_map(|l| l.trim().strip_prefix("config "))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no config path in the banner:\n{}", banner.join("\n")));
        Self {
            child,
            addr,
            banner,
            config,
        }
    }

    fn keyring(&self) -> String {
        self.config
            .with_file_name("keyring.json")
            .to_str()
            .unwrap()
            .to_string()
    }

    /// Opens `token` with the demo's keyring (`fieldseal open`), as JSON.
    fn open(&self, context: &str, token: &str) -> Value {
        let (code, out, err) = run_cli(
            &[
                "open",
                "--keyring",
                &self.keyring(),
                "--context",
                context,
                token,
            ],
            &[],
        );
        assert_eq!(code, 0, "open {token}: {err}");
        serde_json::from_str(out.trim()).unwrap()
    }

    /// `plaintext` (a string) HPKE-encrypted (compact JWE) to the demo's published X25519 key.
    fn jwe(&self, plaintext: &[u8]) -> String {
        self.jwe_with(plaintext, "")
    }

    /// `plaintext` HPKE-encrypted (`HPKE-10`) to the demo's post-quantum X-Wing key.
    fn pq_jwe(&self, plaintext: &[u8]) -> String {
        self.jwe_to("xwing.pem", plaintext, "")
    }

    /// Any JSON value HPKE-encrypted with `cty: json` (opens to that value, `null` included).
    fn jwe_json(&self, value: &Value) -> String {
        self.jwe_with(value.to_string().as_bytes(), r#","cty":"json""#)
    }

    fn jwe_with(&self, plaintext: &[u8], extra_header: &str) -> String {
        self.jwe_to("x25519.pem", plaintext, extra_header)
    }

    /// A compact HPKE JWE to the key in `key_file`, under the suite its JWK publishes.
    fn jwe_to(&self, key_file: &str, plaintext: &[u8], extra_header: &str) -> String {
        let key = fieldseal::crypto::hpke::load(&self.config.with_file_name(key_file)).unwrap();
        let suite = key.kem().published_suite();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(format!(
            r#"{{"alg":"{}","kid":"{}"{extra_header}}}"#,
            suite.alg(),
            key.kid()
        ));
        let (enc, ct) = key.seal(suite, b"", header.as_bytes(), plaintext).unwrap();
        [
            header,
            b64.encode(enc),
            String::new(),
            b64.encode(ct),
            String::new(),
        ]
        .join(".")
    }

    /// One request with a JSON body; (status, headers as text, body).
    async fn send(
        &self,
        method: &str,
        path: &str,
        h2: bool,
        json: &Value,
    ) -> (u16, String, String) {
        let req = request(method, path, h2)
            .header("content-type", "application/json")
            .body(body(json.to_string()))
            .unwrap();
        let resp = send_once(self.addr, insecure_client(h2), req).await;
        let status = resp.status().as_u16();
        let headers = format!("{:?}", resp.headers());
        let bytes = read_body(resp).await;
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    async fn get_user(&self) -> Value {
        read_json(get(self.addr, insecure_client(true), "/api/users/1", true).await).await
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_token(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.starts_with("fs1.k1."))
}

/// Every string in a JSON document (escapes decoded), member names included.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| {
            out.push(k.clone());
            strings(x, out)
        }),
        _ => {}
    }
}

/// None of the plaintexts in an answer: its headers, its bytes, or (JSON) any decoded string.
fn assert_no_plaintext(what: &str, headers: &str, body: &str) {
    let mut texts = vec![headers.to_string(), body.to_string()];
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        strings(&v, &mut texts);
    }
    for p in PLAINTEXTS {
        assert!(
            !texts.iter().any(|t| t.contains(p)),
            "{what}: the answer carries the plaintext {p:?}\n{headers}\n{body}"
        );
    }
}

#[tokio::test]
async fn demo_serves_the_demo_app_through_the_proxy() {
    let demo = Demo::start();
    let banner = &demo.banner;
    assert!(
        banner.iter().any(|l| l.contains("curl -sk --http2")),
        "{}",
        banner.join("\n")
    );
    let addr = demo.addr;

    // The demo certificate is self-signed: trust exactly what the server presents.
    let resp = get(addr, insecure_client(true), "/api/users/1", true).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert!(!resp.headers().contains_key("server"));
    let user = read_json(resp).await;
    assert_eq!(user["name"], "Ada Lovelace");
    assert!(is_token(&user["ssn"]), "{user}");
    assert_eq!(user["phone"], "************0958");

    // The round trip: the proxy opens the tokens for the app, and the app's answer — the
    // updated record — leaves sealed again, with fresh tokens that open to what the app got.
    let (status, headers, text) = demo.send("PUT", "/api/users/1", true, &user).await;
    assert_eq!(status, 200, "{text}");
    assert_no_plaintext("PUT the record back", &headers, &text);
    let updated: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(updated["name"], "Ada Lovelace", "{updated}");
    for (path, context, plain) in [
        ("/ssn", "ssn", SSN),
        ("/password", "password", PASSWORD),
        ("/cards/0/number", "card", CARD),
    ] {
        let (sent, got) = (&user.pointer(path).unwrap(), updated.pointer(path).unwrap());
        assert!(is_token(got), "{path}: {updated}");
        assert_ne!(got, *sent, "{path}: a fresh token, not the one sent");
        assert_eq!(
            demo.open(context, got.as_str().unwrap()),
            json!(plain),
            "{path}"
        );
    }

    // The demo publishes an X25519 key; a value HPKE-encrypted to it reaches the app opened,
    // and comes back as an fs1 token, not as the value.
    let jwks = read_json(
        get(
            addr,
            insecure_client(true),
            "/.well-known/fieldseal/jwks.json",
            true,
        )
        .await,
    )
    .await;
    let jwk = &jwks["keys"][0];
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str()),
        (Some("OKP"), Some("X25519"))
    );
    let key = fieldseal::crypto::hpke::load(&demo.config.with_file_name("x25519.pem")).unwrap();
    assert_eq!(jwk["kid"].as_str(), Some(key.kid()));
    let jwe = demo.jwe(JWE_SSN.as_bytes());
    let (status, headers, text) = demo
        .send("PUT", "/api/users/1", true, &json!({ "ssn": jwe }))
        .await;
    assert_eq!(status, 200, "{text}");
    assert_no_plaintext("PUT an HPKE JWE", &headers, &text);
    let updated: Value = serde_json::from_str(&text).unwrap();
    assert!(is_token(&updated["ssn"]), "{updated}");
    assert_eq!(
        demo.open("ssn", updated["ssn"].as_str().unwrap()),
        json!(JWE_SSN)
    );

    // Beside it, a post-quantum X-Wing key (`AKP`, `HPKE-10`): clients choose.
    let pq = &jwks["keys"][1];
    assert_eq!(
        (pq["kty"].as_str(), pq["alg"].as_str()),
        (Some("AKP"), Some("HPKE-10"))
    );
    let key = fieldseal::crypto::hpke::load(&demo.config.with_file_name("xwing.pem")).unwrap();
    assert_eq!(pq["kid"].as_str(), Some(key.kid()));
    let jwe = demo.pq_jwe(JWE_SSN.as_bytes());
    let (status, headers, text) = demo
        .send("PUT", "/api/users/1", true, &json!({ "ssn": jwe }))
        .await;
    assert_eq!(status, 200, "{text}");
    assert_no_plaintext("PUT an HPKE-10 JWE", &headers, &text);
    let updated: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        demo.open("ssn", updated["ssn"].as_str().unwrap()),
        json!(JWE_SSN)
    );
}

/// The routes of `fieldseal check`'s listing: (name, detail lines).
fn checked_routes(listing: &str) -> Vec<(String, Vec<String>)> {
    let mut routes: Vec<(String, Vec<String>)> = Vec::new();
    for line in listing.lines() {
        let text = line.trim_start();
        let indent = line.len() - text.len();
        if indent == 2 {
            if text.starts_with("unmatched requests") {
                break;
            }
            // `routes.0 user GET,PUT /api/users/{id}`
            if let Some((n, rest)) = text.strip_prefix("routes.").and_then(|t| t.split_once(' ')) {
                if n.parse::<u32>().is_ok() {
                    let name = rest.split_whitespace().next().unwrap_or("").to_string();
                    routes.push((name, Vec::new()));
                    continue;
                }
            }
        }
        if indent > 2 {
            if let Some((_, lines)) = routes.last_mut() {
                lines.push(text.to_string());
            }
        }
    }
    routes
}

/// Send the demo's own tokens (and HPKE JWEs) back to every demo route, at the paths the demo
/// opens and at paths no response rule seals: no answer carries a plaintext.
#[tokio::test]
async fn demo_is_no_decryption_oracle() {
    let demo = Demo::start();

    // Which routes open what, as the proxy compiled the demo config: every route that opens a
    // field must seal the same selectors in its answers, and the fields opened are the ones
    // this test sends tokens for.
    let (code, listing, err) = run_cli(&["check", "--config", demo.config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let routes = checked_routes(&listing);
    assert!(routes.len() >= 2, "routes not found in:\n{listing}");
    let rule = |lines: &[String], key: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(key).map(str::trim).map(str::to_string))
    };
    let mut opening = Vec::new();
    for (name, lines) in &routes {
        if let Some(decrypt) = rule(lines, "request.decrypt:") {
            assert_eq!(
                rule(lines, "response.encrypt:").as_deref(),
                Some(decrypt.as_str()),
                "route {name} opens {decrypt} but does not seal the same:\n{listing}"
            );
            opening.push((name.clone(), decrypt));
        }
        assert!(
            rule(lines, "envelope").is_none(),
            "route {name}: envelopes are not covered by this test:\n{listing}"
        );
    }
    assert_eq!(
        opening,
        [(
            "user".to_string(),
            "$.ssn, $.password, $.cards[*].number (context card)".to_string()
        )],
        "a demo route opens fields this test does not cover:\n{listing}"
    );

    let user = demo.get_user().await;
    let (ssn, password, card) = (
        user["ssn"].clone(),
        user["password"].clone(),
        user["cards"][0]["number"].clone(),
    );
    assert!(
        is_token(&ssn) && is_token(&password) && is_token(&card),
        "{user}"
    );
    let jwe = |v: &str| Value::String(demo.jwe(v.as_bytes()));
    let bodies = [
        // The record as the GET gave it.
        user.clone(),
        // One opened field at a time, at its own path.
        json!({ "ssn": ssn }),
        json!({ "password": password }),
        json!({ "cards": [{ "number": card }] }),
        // Client-side encryption (HPKE JWE) at every path the demo opens.
        json!({
            "ssn": jwe(JWE_SSN),
            "password": jwe(JWE_SSN),
            "cards": [{ "number": jwe(JWE_SSN) }],
        }),
        // JSON-typed JWE values (`cty: json`): a `null`, a number, an object, at every path.
        json!({
            "ssn": demo.jwe_json(&Value::Null),
            "password": demo.jwe_json(&json!({ "nested": JWE_SSN })),
            "cards": [{ "number": demo.jwe_json(&json!([JWE_SSN, 9876543210u64])) }],
        }),
        // `cards` as an object: `[*]` selects member values too, in both directions.
        json!({ "cards": { "a": { "number": card }, "b": { "number": jwe(JWE_SSN) } } }),
        // Tokens where no rule opens them (they must stay tokens), and the record nested.
        json!({ "received": user, "name": ssn, "note": { "ssn": ssn }, "phone": card }),
        // Tokens under another field's context: refused.
        json!({ "ssn": card, "password": ssn, "cards": [{ "number": password }] }),
        // Not an object at the root.
        json!([user]),
        ssn.clone(),
    ];
    // Every endpoint of the demo app, through both proxy routes, path spellings the proxy
    // normalises onto the `user` route, and requests no route matches.
    let targets = [
        ("PUT", "/api/users/1"),
        ("PUT", "/api/users/1/"),
        ("PUT", "/api//users/%31"),
        ("PUT", "/api/users/1?debug=1"),
        ("GET", "/api/users/1"),
        ("POST", "/api/echo"),
        ("PUT", "/api/echo"),
        ("POST", "/api/users/1"),
        ("PATCH", "/api/users/1"),
        ("DELETE", "/api/users/1"),
        ("GET", "/api/health"),
        ("GET", "/"),
    ];
    let mut resealed = 0;
    for h2 in [true, false] {
        for (method, path) in targets {
            for body in &bodies {
                let what = format!("{method} {path} (h2 {h2}) with {body}");
                let (status, headers, text) = demo.send(method, path, h2, body).await;
                assert_no_plaintext(&what, &headers, &text);
                // The full record sent back to the update endpoint: the app got plaintext and
                // its answer is sealed again (the test is not passing because nothing opened).
                if method == "PUT" && path == "/api/users/1" && body == &user {
                    assert_eq!(status, 200, "{what}: {text}");
                    let answer: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(
                        demo.open("ssn", answer["ssn"].as_str().unwrap()),
                        json!(SSN)
                    );
                    resealed += 1;
                }
            }
        }
    }
    assert_eq!(resealed, 2);

    // Whatever type a value opens to — `null` included — the answer carries a token there, never
    // the value: the route seals every node it opens (`seal_null` on both directions).
    for value in [
        Value::Null,
        json!(9876543210u64),
        json!(true),
        json!({ "a": 1 }),
    ] {
        let sent = json!({ "ssn": demo.jwe_json(&value) });
        let (status, _, text) = demo.send("PUT", "/api/users/1", true, &sent).await;
        assert_eq!(status, 200, "{value}: {text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert!(is_token(&answer["ssn"]), "{value} came back as {answer}");
        assert_eq!(demo.open("ssn", answer["ssn"].as_str().unwrap()), value);
    }
}

/// A client that accepts any certificate (for the demo's throwaway self-signed one only).
fn insecure_client(h2: bool) -> std::sync::Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AcceptAny(std::sync::Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    std::sync::Arc::new(config)
}
