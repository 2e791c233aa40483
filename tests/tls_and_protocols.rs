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

    // The refusal is counted.
    let (_, metrics) = proxy.admin_get("/metrics").await;
    let failures = metric(&metrics, "fieldseal_tls_handshake_failures_total").unwrap();
    assert!(failures >= 1.0, "{metrics}");
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
