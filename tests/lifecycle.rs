//! Upstream failures (502/504 as the contract's error JSON), admin endpoints, SIGTERM drain,
//! and startup refusals (exit 64).

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn unreachable_upstream_is_a_502_with_error_json() {
    let pki = Pki::new();
    let dead = unused_addr();
    let proxy = ProxyProcess::start(&config_yaml(&pki, dead, ""));
    let req = request("GET", "/api/users/1", true)
        .header("x-request-id", "r-502")
        .body(body(""))
        .unwrap();
    let resp = send_once(proxy.listen, client_config(&pki, &ClientOptions::h2()), req).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v = read_json(resp).await;
    assert_eq!(v["error"]["code"], "upstream_unreachable");
    assert_eq!(v["error"]["request_id"], "r-502");
    assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    assert_eq!(
        v.as_object().unwrap().len(),
        1,
        "only the `error` member: {v}"
    );

    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"fieldseal_upstream_errors_total{route="unmatched",kind="unreachable"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"fieldseal_requests_total{route="unmatched",method="GET",status="502"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn slow_upstream_is_a_504_with_error_json() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let proxy = ProxyProcess::start(&config_yaml(
        &pki,
        up.addr,
        "timeouts:\n  upstream_response: 300ms\n",
    ));
    let cfg = client_config(&pki, &ClientOptions::h1());
    let started = Instant::now();
    let resp = get(proxy.listen, cfg.clone(), "/slow?ms=3000", false).await;
    assert_eq!(resp.status(), 504);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the deadline was not applied"
    );
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let v = read_json(resp).await;
    assert_eq!(v["error"]["code"], "upstream_timeout");
    assert_eq!(v["error"]["request_id"], id.as_str());

    // Within the deadline, the same endpoint works.
    let resp = get(proxy.listen, cfg, "/slow?ms=10", false).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, ""));
    let mut conn = HttpConn::open(proxy.listen, client_config(&pki, &ClientOptions::h1()))
        .await
        .unwrap();
    for _ in 0..10 {
        let resp = conn
            .send(request("GET", "/echo", false).body(body("")).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        read_body(resp).await;
    }
    // One client connection is served by one worker, whose pool reuses one upstream connection.
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_after_the_idle_timeout() {
    use std::sync::atomic::Ordering::SeqCst;
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let proxy = ProxyProcess::start(&config_yaml(
        &pki,
        up.addr,
        "timeouts:\n  upstream_idle: 200ms\n",
    ));
    let resp = get(
        proxy.listen,
        client_config(&pki, &ClientOptions::h1()),
        "/echo",
        false,
    )
    .await;
    assert_eq!(resp.status(), 200);
    read_body(resp).await;
    assert_eq!(up.connections.load(SeqCst), 1);
    // Nothing else happens: the sweeper must close the pooled connection on its own.
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.closed.load(SeqCst) < 1 {
        assert!(
            Instant::now() < deadline,
            "the idle upstream connection was never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn connections_the_app_closed_are_never_an_error() {
    let pki = Pki::new();
    let up = start_closing_upstream().await;
    let proxy = ProxyProcess::start(&config_yaml(&pki, up, ""));
    let mut conn = HttpConn::open(proxy.listen, client_config(&pki, &ClientOptions::h2()))
        .await
        .unwrap();
    for i in 0..20 {
        let resp = conn
            .send(request("GET", "/x", true).body(body("")).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(read_json(resp).await["ok"], true);
        // Vary the timing: sometimes the app has closed the pooled connection, sometimes not yet.
        tokio::time::sleep(Duration::from_millis((i % 3) * 15)).await;
    }
}

#[tokio::test]
async fn admin_endpoints_report_health_readiness_and_metrics() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, ""));
    let (status, body) = proxy.admin_get("/healthz").await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, r#"{"status":"ok"}"#)
    );
    let (status, body) = proxy.admin_get("/readyz").await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, r#"{"status":"ready"}"#)
    );
    let (status, _) = proxy.admin_get("/nope").await;
    assert_eq!(status, 404);

    // An open client connection shows in the gauge.
    let _conn = HttpConn::open(proxy.listen, client_config(&pki, &ClientOptions::h2()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, metrics) = proxy.admin_get("/metrics").await;
        if metric(&metrics, "fieldseal_open_connections") == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "open connection not counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let mut proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, ""));
    let cfg = client_config(&pki, &ClientOptions::h2());
    let listen = proxy.listen;

    let mut conn = HttpConn::open(listen, cfg.clone()).await.unwrap();
    let in_flight = tokio::spawn(async move {
        let resp = conn
            .send(
                request("GET", "/slow?ms=1500", true)
                    .body(body(""))
                    .unwrap(),
            )
            .await
            .unwrap();
        (resp.status(), read_json(resp).await)
    });
    up.wait_slow_started(1).await;
    proxy.signal("TERM");

    // Draining: not ready, and new connections are refused.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let (status, _) = proxy.admin_get("/readyz").await;
        if status == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz did not turn 503 while draining"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        tokio::net::TcpStream::connect(listen).await.is_err(),
        "the listener must be closed while draining"
    );

    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the in-flight request must complete");
    assert_eq!(body["slept_ms"], 1500);
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn startup_errors_exit_64() {
    let pki = Pki::new();
    // Bad config.
    let config = pki.path("bad.yaml");
    std::fs::write(&config, "listen: 1\n").unwrap();
    let (code, _, stderr) = run_cli(&["run", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 64, "{stderr}");
    // Port already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let yaml = config_yaml(&pki, "127.0.0.1:9".parse().unwrap(), "").replace(
        "listen: \"127.0.0.1:0\"",
        &format!("listen: \"{}\"", taken.local_addr().unwrap()),
    );
    std::fs::write(&config, yaml).unwrap();
    let (code, _, stderr) = run_cli(&["run", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("cannot listen"), "{stderr}");
}
