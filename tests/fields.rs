//! Field rules through the real binary: responses sealed (and redacted/masked), requests
//! opened before the app sees them, bad tokens refused before the app is called, and the
//! fail-closed matrix for responses that cannot be sealed.

mod common;

use common::*;
use fieldseal::crypto::{token, Keyring};
use serde_json::json;

const SECRET: &str = "123-45-6789";

fn rules(keyring: &std::path::Path) -> String {
    format!(
        r#"keys:
  keyring: "{}"
limits:
  max_body_bytes: 4096
routes:
  - name: user
    match: {{ path: "/user" }}
    response:
      encrypt: ["$.ssn", "$.age", {{ path: "$.cards[*].number", context: "card" }}]
      mask: [{{ path: "$.phone", keep_last: 4 }}]
  - name: echo
    match: {{ path: "/echo", methods: [POST, PUT] }}
    request:
      decrypt: ["$.ssn", {{ path: "$.cards[*].number", context: "card" }}]
  - name: strict
    match: {{ path: "/strict/**" }}
    request:
      decrypt: ["$.ssn"]
      require_encrypted: true
  - name: sealed
    match: {{ path: "/{{kind}}" }}
    response:
      encrypt: ["$.ssn"]
"#,
        keyring.display()
    )
}

struct Setup {
    _pki: Pki,
    _up: TestUpstream,
    proxy: ProxyProcess,
    ring: Keyring,
    cfg: std::sync::Arc<rustls::ClientConfig>,
}

async fn setup() -> Setup {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let keyring = pki.path("keyring.json");
    make_keyring(&keyring);
    let proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, &rules(&keyring)));
    let ring = Keyring::load(&keyring, &fieldseal::crypto::KekSource::none())
        .unwrap()
        .0;
    let cfg = client_config(&pki, &ClientOptions::h2());
    Setup {
        _pki: pki,
        _up: up,
        proxy,
        ring,
        cfg,
    }
}

#[tokio::test]
async fn responses_leave_with_fields_sealed_and_requests_reach_the_app_opened() {
    let s = setup().await;
    let resp = get(s.proxy.listen, s.cfg.clone(), "/user", true).await;
    assert_eq!(resp.status(), 200);
    let len: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = read_body(resp).await;
    assert_eq!(
        bytes.len(),
        len,
        "Content-Length matches the rewritten body"
    );
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains(SECRET) && !text.contains("4111111111110366"),
        "{text}"
    );
    assert_eq!(doc["name"], "Ada");
    assert_eq!(doc["phone"], "************0958");
    assert_eq!(
        token::open(&s.ring, "ssn", doc["ssn"].as_str().unwrap()).unwrap(),
        SECRET
    );
    assert_eq!(
        token::open(&s.ring, "age", doc["age"].as_str().unwrap()).unwrap(),
        36
    );
    assert_eq!(
        token::open(&s.ring, "card", doc["cards"][0]["number"].as_str().unwrap()).unwrap(),
        "4111111111110366"
    );

    // The client sends the tokens back; the app receives plaintext.
    let body_json = json!({"ssn": doc["ssn"], "cards": doc["cards"], "note": "kept"}).to_string();
    let req = request("PUT", "/echo", true)
        .header("content-type", "application/json")
        .body(body(body_json))
        .unwrap();
    let resp = send_once(s.proxy.listen, s.cfg.clone(), req).await;
    assert_eq!(resp.status(), 200);
    let echo = read_json(resp).await;
    let received: serde_json::Value = serde_json::from_str(echo["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        received,
        json!({"ssn": SECRET, "cards": [{"number": "4111111111110366"}], "note": "kept"})
    );
    assert_eq!(
        echo["headers"]["content-length"][0],
        received.to_string().len().to_string()
    );

    // Metrics and the audit line (no values in either).
    s.proxy
        .wait_metric(
            r#"fieldseal_fields_total{route="user",action="sealed",kid="k1"}"#,
            3.0,
        )
        .await;
    s.proxy
        .wait_metric(
            r#"fieldseal_fields_total{route="echo",action="opened",kid="k1"}"#,
            2.0,
        )
        .await;
    let audit = s
        .proxy
        .wait_log(|l| l.contains("fieldseal::audit") && l.contains("\"route\":\"echo\""));
    assert!(audit.contains("$['ssn']:opened:k1"), "{audit}");
    assert!(!s.proxy.logs().join("\n").contains(SECRET));
}

#[tokio::test]
async fn bad_tokens_are_refused_before_the_app_is_called() {
    let s = setup().await;
    let sealed_as_password = token::seal(s.ring.primary(), "password", &json!(SECRET)).unwrap();
    let cases = [
        (
            json!({"ssn": sealed_as_password}),
            400,
            "authentication_failed",
        ),
        (
            json!({"ssn": "fs1.k9.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
            400,
            "unknown_key (key k9)",
        ),
        (json!({"ssn": "fs1.k1.not*base64"}), 400, "bad_encoding"),
    ];
    for (doc, status, reason) in cases {
        let req = request("POST", "/echo", true)
            .header("content-type", "application/json")
            .body(body(doc.to_string()))
            .unwrap();
        let resp = send_once(s.proxy.listen, s.cfg.clone(), req).await;
        assert_eq!(resp.status(), status);
        let err = read_json(resp).await;
        assert_eq!(err["error"]["code"], "field_rejected");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("$['ssn']") && message.contains(reason),
            "{message}"
        );
    }
    let plain = |path: &str, ct: &'static str, text: String| {
        request("POST", path, true)
            .header("content-type", ct)
            .body(body(text))
            .unwrap()
    };
    for (req, status, code) in [
        (
            plain(
                "/strict/x",
                "application/json",
                json!({"ssn": SECRET}).to_string(),
            ),
            400,
            "field_rejected",
        ),
        (
            plain("/echo", "text/plain", "ssn=1".into()),
            415,
            "unsupported_media_type",
        ),
        (
            plain("/echo", "application/json", "{\"ssn\": ".into()),
            400,
            "invalid_json",
        ),
        (
            plain(
                "/echo",
                "application/json",
                format!("{}{}", "[".repeat(200), "]".repeat(200)),
            ),
            400,
            "invalid_json",
        ),
        (
            plain(
                "/echo",
                "application/json",
                format!("{{\"pad\": \"{}\"}}", "x".repeat(5000)),
            ),
            413,
            "body_too_large",
        ),
    ] {
        let resp = send_once(s.proxy.listen, s.cfg.clone(), req).await;
        assert_eq!(resp.status(), status, "{code}");
        assert_eq!(read_json(resp).await["error"]["code"], code);
    }
    // None of these reached the app: it counted no request body at all.
    let (_, metrics) = s.proxy.admin_get("/metrics").await;
    assert!(
        !metrics.contains(r#"route="echo",method="POST",status="200""#),
        "{metrics}"
    );
}

#[tokio::test]
async fn responses_that_cannot_be_sealed_fail_closed() {
    let s = setup().await;
    // Each with the reason the error message names (where it is the decoder's).
    let failing = [
        ("/prose", ""),
        ("/badjson", ""),
        ("/gzip-corrupt", "(corrupt encoding)"),
        ("/zstd", "(unsupported encoding)"),
        ("/bomb", "(too large)"),
    ];
    for (path, reason) in failing {
        let resp = get(s.proxy.listen, s.cfg.clone(), path, true).await;
        assert_eq!(resp.status(), 502, "{path}");
        assert!(resp.headers().contains_key("strict-transport-security"));
        let bytes = read_body(resp).await;
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(SECRET), "{path} leaked: {text}");
        let err: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(err["error"]["code"], "response_not_encryptable", "{path}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{path}: {message}");
    }
    // Bodiless answers pass; a small body under the limit is sealed and loses its strong ETag.
    assert_eq!(
        get(s.proxy.listen, s.cfg.clone(), "/nocontent", true)
            .await
            .status(),
        204
    );
    let resp = get(s.proxy.listen, s.cfg.clone(), "/big?bytes=10", true).await;
    assert_eq!(resp.status(), 200);
    let doc = read_json(resp).await;
    assert!(doc["ssn"].as_str().unwrap().starts_with("fs1.k1."));
    // Over the limit, plain JSON is sealed as it streams (docs/streaming.md): no length, every
    // byte but the sealed value as the app sent it.
    let resp = get(s.proxy.listen, s.cfg.clone(), "/big?bytes=8000", true).await;
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("content-length"));
    let bytes = read_body(resp).await;
    assert!(!String::from_utf8_lossy(&bytes).contains(SECRET));
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        token::open(&s.ring, "ssn", doc["ssn"].as_str().unwrap()).unwrap(),
        serde_json::json!("123-45-6789")
    );
    // JSON labelled `text/plain` is JSON (contract §8): sealed, not refused.
    let resp = get(s.proxy.listen, s.cfg.clone(), "/text", true).await;
    assert_eq!(resp.status(), 200);
    let bytes = read_body(resp).await;
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        token::open(&s.ring, "ssn", doc["ssn"].as_str().unwrap()).unwrap(),
        serde_json::json!("123-45-6789")
    );
    s.proxy
        .wait_metric(
            r#"fieldseal_field_failures_total{route="sealed",reason="response_not_encryptable"}"#,
            failing.len() as f64,
        )
        .await;
}

#[tokio::test]
async fn compressed_responses_are_decoded_sealed_and_sent_uncompressed() {
    let s = setup().await;
    let req = request("GET", "/gzip", true)
        .header("accept-encoding", "gzip, br")
        .body(body(""))
        .unwrap();
    let resp = send_once(s.proxy.listen, s.cfg.clone(), req).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert!(!h.contains_key("content-encoding"), "{h:?}");
    // The strong ETag and the digest described the compressed plaintext.
    assert!(
        !h.contains_key("etag") && !h.contains_key("content-digest"),
        "{h:?}"
    );
    let len: usize = h["content-length"].to_str().unwrap().parse().unwrap();
    let bytes = read_body(resp).await;
    assert_eq!(bytes.len(), len);
    assert!(!String::from_utf8_lossy(&bytes).contains(SECRET));
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        token::open(&s.ring, "ssn", doc["ssn"].as_str().unwrap()).unwrap(),
        SECRET
    );
}
