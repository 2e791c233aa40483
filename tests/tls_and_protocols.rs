//! TLS 1.3 only, ALPN h2 and http/1.1, mTLS, against the real binary.

mod common;

use common::*;

#[tokio::test]
async fn tls13_is_accepted_and_tls12_refused() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, ""));

    let tls13 = tls_connect(proxy.listen, client_config(&pki, &ClientOptions::h1()))
        .await
        .unwrap();
    assert_eq!(
        tls13.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    drop(tls13);

    let opts = ClientOptions {
        versions: vec![&rustls::version::TLS12],
        ..ClientOptions::h1()
    };
    let err = tls_connect(proxy.listen, client_config(&pki, &opts))
        .await
        .err();
    assert!(err.is_some(), "a TLS 1.2-only client must be refused");

    // The refusal is counted (by the worker, asynchronously: poll briefly).
    proxy
        .wait_metric("fieldseal_tls_handshake_failures_total", 1.0)
        .await;
}

#[tokio::test]
async fn h2_and_http11_both_reach_the_upstream_with_request_intact() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, ""));

    for (opts, expect_h2) in [(ClientOptions::h2(), true), (ClientOptions::h1(), false)] {
        let mut conn = HttpConn::open(proxy.listen, client_config(&pki, &opts))
            .await
            .unwrap();
        assert_eq!(conn.is_h2(), expect_h2);
        // Two requests on one connection: keep-alive / multiplexing work.
        for i in 0..2 {
            let req = request("PATCH", &format!("/echo?a=1&b=%20x&i={i}"), expect_h2)
                .header("x-custom", "v1")
                .header("content-type", "application/json")
                .body(body(r#"{"k":"v"}"#))
                .unwrap();
            let resp = conn.send(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let expected_version = if expect_h2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            };
            assert_eq!(resp.version(), expected_version);
            let echo = read_json(resp).await;
            assert_eq!(echo["method"], "PATCH");
            assert_eq!(echo["path"], "/echo");
            assert_eq!(
                echo["target"],
                format!("/echo?a=1&b=%20x&i={i}"),
                "the upstream must get the origin form"
            );
            assert_eq!(echo["query"], format!("a=1&b=%20x&i={i}"));
            assert_eq!(echo["body"], r#"{"k":"v"}"#);
            assert_eq!(
                echo["version"], "HTTP/1.1",
                "the upstream always speaks HTTP/1.1"
            );
            assert_eq!(echo["headers"]["x-custom"][0], "v1");
            assert_eq!(
                echo["headers"]["host"][0], "localhost",
                "Host set from :authority for h2"
            );
        }
    }
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_configured_ca() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let extra = format!("  client_ca: \"{}\"\n", pki.path("client-ca.pem").display());
    // `extra` continues the `tls:` block.
    let yaml = config_yaml(&pki, up.addr, "").trim_end().to_string() + "\n" + &extra;
    let proxy = ProxyProcess::start(&yaml);

    // Without a certificate: TLS 1.3 client auth fails on the first exchange.
    let no_cert = async {
        let mut conn =
            HttpConn::open(proxy.listen, client_config(&pki, &ClientOptions::h1())).await?;
        let req = request("GET", "/echo", false).body(body("")).unwrap();
        conn.send(req).await.map_err(std::io::Error::other)
    }
    .await;
    assert!(
        no_cert.is_err(),
        "a client without a certificate must not get a response"
    );

    // A certificate from another CA is refused too.
    let stranger = {
        let other = Pki::new();
        let opts = ClientOptions {
            client_cert: Some((other.client_cert_pem.clone(), other.client_key_pem.clone())),
            ..ClientOptions::h1()
        };
        async {
            let mut conn = HttpConn::open(proxy.listen, client_config(&pki, &opts)).await?;
            let req = request("GET", "/echo", false).body(body("")).unwrap();
            conn.send(req).await.map_err(std::io::Error::other)
        }
        .await
    };
    assert!(
        stranger.is_err(),
        "a certificate from an unknown CA must be refused"
    );

    let opts = ClientOptions {
        client_cert: Some((pki.client_cert_pem.clone(), pki.client_key_pem.clone())),
        ..ClientOptions::h2()
    };
    let req = request("GET", "/echo", true).body(body("")).unwrap();
    let resp = send_once(proxy.listen, client_config(&pki, &opts), req).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn stalled_handshakes_are_cut_off_and_counted() {
    use tokio::io::AsyncReadExt;
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let proxy = ProxyProcess::start(&config_yaml(
        &pki,
        up.addr,
        "timeouts:\n  tls_handshake: 300ms\n",
    ));
    // Connect and say nothing: the proxy must close the connection after the timeout.
    let mut tcp = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("the proxy kept a silent connection open")
        .unwrap_or(0);
    assert_eq!(n, 0, "expected EOF");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    proxy
        .wait_metric("fieldseal_tls_handshake_failures_total", 1.0)
        .await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let proxy = ProxyProcess::start(&config_yaml(
        &pki,
        up.addr,
        "limits:\n  max_connections: 1\n",
    ));
    let cfg = client_config(&pki, &ClientOptions::h2());
    let mut first = HttpConn::open(proxy.listen, cfg.clone()).await.unwrap();
    let resp = first
        .send(request("GET", "/echo", true).body(body("")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    read_body(resp).await;
    // The second connection is closed before its handshake completes.
    assert!(tls_connect(proxy.listen, cfg.clone()).await.is_err());
    proxy
        .wait_metric("fieldseal_rejected_connections_total", 1.0)
        .await;
    // Once the first connection closes, a new one is accepted.
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if let Ok(mut conn) = HttpConn::open(proxy.listen, cfg.clone()).await {
            if let Ok(resp) = conn
                .send(request("GET", "/echo", true).body(body("")).unwrap())
                .await
            {
                assert_eq!(resp.status(), 200);
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the freed slot was never reused"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Key exchange: a client preferring the post-quantum hybrid `X25519MLKEM768` (as current
/// browsers, Go and OpenSSL 3.5 do) gets it, so recorded traffic stays closed to a future
/// quantum computer; a client offering only X25519 or P-256 still connects, classically. The
/// server follows the client's order (rustls), so what decides is that the hybrid is there.
#[tokio::test]
async fn post_quantum_key_exchange_is_preferred_and_classical_still_works() {
    use rustls::crypto::aws_lc_rs::kx_group;
    use rustls::pki_types::pem::PemObject;
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, ""));
    let with_groups = |groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>| {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = rustls::crypto::CryptoProvider {
            kx_groups: groups,
            ..rustls::crypto::aws_lc_rs::default_provider()
        };
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        std::sync::Arc::new(config)
    };
    for (offered, expected) in [
        // A client that prefers a classical group gets it.
        (
            vec![kx_group::X25519, kx_group::X25519MLKEM768],
            rustls::NamedGroup::X25519,
        ),
        (
            vec![kx_group::X25519MLKEM768, kx_group::X25519],
            rustls::NamedGroup::X25519MLKEM768,
        ),
        (vec![kx_group::X25519], rustls::NamedGroup::X25519),
        (vec![kx_group::SECP256R1], rustls::NamedGroup::secp256r1),
    ] {
        let tls = tls_connect(proxy.listen, with_groups(offered.clone()))
            .await
            .unwrap();
        let group = tls
            .get_ref()
            .1
            .negotiated_key_exchange_group()
            .unwrap()
            .name();
        assert_eq!(group, expected, "offered {offered:?}");
    }
}
