//! `fieldseal demo` (the README's first command) works with no files: it prints where it
//! listens, and a real client gets the demo record through TLS 1.3 with the security headers.

mod common;

use base64::Engine;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[tokio::test]
async fn demo_serves_the_demo_app_through_the_proxy() {
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
    let url = proxy_url
        .unwrap_or_else(|| panic!("no proxy address in the banner:\n{}", banner.join("\n")));
    assert!(
        banner.iter().any(|l| l.contains("curl -sk --http2")),
        "{}",
        banner.join("\n")
    );
    let addr: std::net::SocketAddr = url.trim_start_matches("https://").parse().unwrap();

    // The demo certificate is self-signed: trust exactly what the server presents.
    let config = insecure_client();
    let resp = get(addr, config, "/api/users/1", true).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert!(!resp.headers().contains_key("server"));
    let user = read_json(resp).await;
    assert_eq!(user["name"], "Ada Lovelace");
    assert!(
        user["ssn"].as_str().unwrap().starts_with("fs1.k1."),
        "{user}"
    );
    assert_eq!(user["phone"], "************0958");
    // The PUT route echoes what the demo app received: the plaintext, opened by the proxy.
    let put = request("PUT", "/api/users/1", true)
        .header("content-type", "application/json")
        .body(body(user.to_string()))
        .unwrap();
    let echoed = read_json(send_once(addr, insecure_client(), put).await).await;
    assert_eq!(echoed["received"]["ssn"], "123-45-6789", "{echoed}");
    assert_eq!(echoed["received"]["cards"][0]["number"], "4111111111110366");

    // The demo publishes an X25519 key; a value HPKE-encrypted to it reaches the app opened.
    let jwks = read_json(
        get(
            addr,
            insecure_client(),
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
    let demo_config = banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("config "))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("no config path in the banner:\n{}", banner.join("\n")));
    let key = fieldseal::crypto::hpke::load(&demo_config.with_file_name("x25519.pem")).unwrap();
    assert_eq!(jwk["kid"].as_str(), Some(key.kid()));
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(format!(
        r#"{{"alg":"HPKE-X25519-A256GCM","kid":"{}"}}"#,
        key.kid()
    ));
    let (enc, ct) = key
        .seal(
            fieldseal::crypto::hpke::Suite::X25519Aes256Gcm,
            header.as_bytes(),
            b"987-65-4321",
        )
        .unwrap();
    let value = [
        header,
        b64.encode(enc),
        String::new(),
        b64.encode(ct),
        String::new(),
    ]
    .join(".");
    let put = request("PUT", "/api/users/1", true)
        .header("content-type", "application/json")
        .body(body(serde_json::json!({ "ssn": value }).to_string()))
        .unwrap();
    let echoed = read_json(send_once(addr, insecure_client(), put).await).await;
    assert_eq!(echoed["received"]["ssn"], "987-65-4321", "{echoed}");
    let _ = child.kill();
    let _ = child.wait();
}

/// A client that accepts any certificate (for the demo's throwaway self-signed one only).
fn insecure_client() -> std::sync::Arc<rustls::ClientConfig> {
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
    config.alpn_protocols = vec![b"h2".to_vec()];
    std::sync::Arc::new(config)
}
