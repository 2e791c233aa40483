//! Security headers, hop-by-hop stripping, forwarding headers, request ids, access log.

mod common;

use common::*;

const HEADER_CONFIG: &str = r#"headers:
  content-security-policy: "default-src 'self'"
  x-frame-options: ""
  permissions-policy: "camera=()"
routes:
  - name: hop
    match: { path: "/hop", methods: [GET] }
    headers:
      cache-control: "no-store"
      referrer-policy: ""
  - name: echo
    match: { path: "/echo" }
"#;

#[tokio::test]
async fn security_headers_are_added_overridden_and_removed() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, HEADER_CONFIG));
    let cfg = client_config(&pki, &ClientOptions::h2());

    // Route `hop`: global + route overrides; upstream sends Server, X-Powered-By, its own CSP
    // and X-Frame-Options.
    let resp = get(proxy.listen, cfg.clone(), "/hop", true).await;
    let h = resp.headers().clone();
    assert_eq!(
        h["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    assert_eq!(
        h["content-security-policy"], "default-src 'self'",
        "global override replaces the app's CSP"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["permissions-policy"], "camera=()");
    assert_eq!(h["cache-control"], "no-store", "route header added");
    assert!(
        !h.contains_key("referrer-policy"),
        "route removed the default"
    );
    assert_eq!(
        h["x-frame-options"], "SAMEORIGIN",
        "removed from the policy: the app's own value passes"
    );
    assert!(!h.contains_key("server"));
    assert!(!h.contains_key("x-powered-by"));
    assert_eq!(h["x-app-header"], "kept");

    // An unmatched path gets the global policy only.
    let resp = get(proxy.listen, cfg.clone(), "/nothing-here", true).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["referrer-policy"], "no-referrer");
    assert!(!resp.headers().contains_key("cache-control"));
}

#[tokio::test]
async fn proxy_errors_carry_security_headers_too() {
    let pki = Pki::new();
    // Nothing listens on the upstream port.
    let dead = unused_addr();
    let proxy = ProxyProcess::start(&config_yaml(&pki, dead, ""));
    let resp = send_once(
        proxy.listen,
        client_config(&pki, &ClientOptions::h1()),
        request("GET", "/x", false).body(body("")).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 502);
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    assert_eq!(resp.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, ""));
    let cfg = client_config(&pki, &ClientOptions::h1());

    let req = request("POST", "/echo", false)
        .header("connection", "keep-alive, X-Secret-Hop")
        .header("x-secret-hop", "must-not-arrive")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("proxy-connection", "keep-alive")
        .header("x-end-to-end", "arrives")
        .body(body("{}"))
        .unwrap();
    let echo = read_json(send_once(proxy.listen, cfg.clone(), req).await).await;
    let seen = echo["headers"].as_object().unwrap();
    for name in [
        "x-secret-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            !seen.contains_key(name),
            "{name} reached the upstream: {seen:?}"
        );
    }
    if let Some(conn) = seen.get("connection") {
        // hyper's client may add its own `connection: keep-alive`; never the client's list.
        assert!(
            !conn
                .to_string()
                .to_ascii_lowercase()
                .contains("x-secret-hop"),
            "{conn}"
        );
    }
    assert_eq!(seen["x-end-to-end"][0], "arrives");

    let resp = get(proxy.listen, cfg, "/hop", false).await;
    let h = resp.headers();
    assert!(!h.contains_key("x-upstream-hop"), "{h:?}");
    assert!(!h.contains_key("keep-alive"));
    assert!(h
        .get("connection")
        .is_none_or(|v| !v.to_str().unwrap().contains("X-Upstream-Hop")));
}

/// Client-sent forwarding headers: the header families an app behind ProxyFix or uvicorn
/// `--proxy-headers` trusts.
fn spoofed(req: http::request::Builder) -> http::request::Builder {
    req.header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "spoofed.example")
        .header("x-forwarded-port", "80")
        .header("x-forwarded-prefix", "/admin")
        .header("x-real-ip", "203.0.113.9")
        .header(
            "forwarded",
            "for=203.0.113.9;host=spoofed.example;proto=http",
        )
}

#[tokio::test]
async fn forwarding_headers_and_request_ids() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, HEADER_CONFIG));
    let cfg = client_config(&pki, &ClientOptions::h2());

    // Contract §7: from a peer that is not a trusted proxy, every client forwarding header is
    // removed and the proxy's own stand alone.
    let req = spoofed(request("GET", "/echo", true))
        .header("x-request-id", "client-id-42")
        .body(body(""))
        .unwrap();
    let resp = send_once(proxy.listen, cfg.clone(), req).await;
    assert_eq!(resp.headers()["x-request-id"], "client-id-42");
    let echo = read_json(resp).await;
    assert_eq!(
        echo["headers"]["x-forwarded-for"],
        serde_json::json!(["127.0.0.1"])
    );
    assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https");
    assert_eq!(echo["headers"]["x-forwarded-host"][0], "localhost");
    for gone in [
        "forwarded",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
    ] {
        assert!(echo["headers"].get(gone).is_none(), "{gone}: {echo}");
    }
    assert_eq!(echo["headers"]["x-request-id"][0], "client-id-42");

    // Underscore spellings (one WSGI environ key with the hyphenated name) never reach the app.
    let req = request("DELETE", "/echo", true)
        .header("X_HTTP_Method_Override", "GET")
        .header("X_Forwarded_For", "203.0.113.9")
        .header("If_None_Match", "\"guess\"")
        .body(body(""))
        .unwrap();
    let echo = read_json(send_once(proxy.listen, cfg.clone(), req).await).await;
    let names: Vec<&String> = echo["headers"].as_object().unwrap().keys().collect();
    assert!(names.iter().all(|n| !n.contains('_')), "{names:?}");
    assert_eq!(
        echo["headers"]["x-forwarded-for"],
        serde_json::json!(["127.0.0.1"])
    );

    // From a trusted proxy (here: loopback) they are kept and the peer is appended.
    let trusting = format!("trusted_proxies: [\"127.0.0.0/8\", \"::1\"]\n{HEADER_CONFIG}");
    let trusted = ProxyProcess::start(&config_yaml(&pki, up.addr, &trusting));
    let req = spoofed(request("GET", "/echo", true))
        .body(body(""))
        .unwrap();
    let echo = read_json(send_once(trusted.listen, cfg.clone(), req).await).await;
    assert_eq!(
        echo["headers"]["x-forwarded-for"][0],
        "203.0.113.9, 127.0.0.1"
    );
    assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https");
    assert_eq!(echo["headers"]["x-forwarded-host"][0], "localhost");
    assert_eq!(echo["headers"]["x-forwarded-prefix"][0], "/admin");
    assert_eq!(echo["headers"]["x-real-ip"][0], "203.0.113.9");

    // No id (or an unusable one): a fresh UUID, the same upstream and downstream.
    let req = request("GET", "/echo", true)
        .header("x-request-id", "bad id with spaces")
        .body(body(""))
        .unwrap();
    let resp = send_once(proxy.listen, cfg.clone(), req).await;
    let returned = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(returned.len(), 36, "{returned}");
    let echo = read_json(resp).await;
    assert_eq!(echo["headers"]["x-request-id"][0], returned.as_str());
    assert_eq!(echo["headers"]["x-forwarded-for"][0], "127.0.0.1");
}

#[tokio::test]
async fn access_log_has_the_fields_and_no_secrets() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, HEADER_CONFIG));
    let cfg = client_config(&pki, &ClientOptions::h1());
    let req = request("POST", "/echo?token=query-secret-123", false)
        .header("authorization", "Bearer header-secret-456")
        .header("cookie", "session=cookie-secret-789")
        .header("x-request-id", "log-test-1")
        .body(body(r#"{"password":"body-secret-000"}"#))
        .unwrap();
    let resp = send_once(proxy.listen, cfg, req).await;
    assert_eq!(resp.status(), 200);
    let sent = read_body(resp).await.len() as u64;

    let line = proxy.wait_log(|l| l.contains("log-test-1") && l.contains("\"request\""));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["route"], "echo");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes_in"], 30);
    assert_eq!(v["bytes_out"], sent);
    assert_eq!(v["complete"], true);
    assert!(v["duration_ms"].as_f64().unwrap() > 0.0);
    let all = proxy.logs().join("\n");
    for secret in [
        "query-secret-123",
        "header-secret-456",
        "cookie-secret-789",
        "body-secret-000",
    ] {
        assert!(!all.contains(secret), "{secret} leaked into the logs");
    }

    // Metrics saw it under its route.
    let (_, metrics) = proxy.admin_get("/metrics").await;
    let count = metric(
        &metrics,
        r#"fieldseal_requests_total{route="echo",method="POST",status="200"}"#,
    );
    assert_eq!(count, Some(1.0), "{metrics}");
    assert!(metrics.contains(r#"fieldseal_request_duration_seconds_count{route="echo"} 1"#));
    // Answered by the app as it was sent: no second status in the line.
    assert!(v.get("upstream_status").is_none(), "{line}");
}

/// When the proxy answers with another status than the app's (here a 502 for a plain-text body
/// a rule must seal), the access log keeps the app's status beside it.
#[tokio::test]
async fn access_log_keeps_the_app_status_beside_the_one_sent() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let keyring = pki.path("keyring.json");
    make_keyring(&keyring);
    let config = format!(
        "{HEADER_CONFIG}  - name: text\n    match: {{ path: \"/prose\" }}\n    response: {{ encrypt: [\"$.ssn\"] }}\nkeys: {{ keyring: \"{}\" }}\n",
        keyring.display()
    );
    let proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, &config));
    let cfg = client_config(&pki, &ClientOptions::h1());
    let req = request("GET", "/prose", false)
        .header("x-request-id", "log-test-2")
        .body(body(""))
        .unwrap();
    let resp = send_once(proxy.listen, cfg, req).await;
    assert_eq!(resp.status(), 502);
    let line = proxy.wait_log(|l| l.contains("log-test-2") && l.contains("\"request\""));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["status"], 502, "{line}");
    assert_eq!(v["upstream_status"], 200, "{line}");
}
