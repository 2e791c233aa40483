//! The admin listener's access rule through the real binary: `/keys` (key ids, seal/open counts
//! and times) is answered only to loopback peers, while `/healthz`, `/readyz` and `/metrics`
//! stay reachable from any address the kubelet or Prometheus may use.
//!
//! A non-loopback peer on a single machine: the admin listener binds the wildcard address and
//! the test connects to one of the machine's own non-loopback addresses, so the kernel uses that
//! address as the source. A machine without one cannot run that half: it says so and skips.

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};

use common::*;
use http::StatusCode;

/// A GET over plain HTTP/1.1 to `addr`: (status, body, the source address used). It carries
/// forwarding headers naming loopback: a header cannot make a remote peer local.
async fn get_from(addr: SocketAddr, path: &str) -> (StatusCode, String, SocketAddr) {
    plain_get(
        addr,
        path,
        &[
            ("x-forwarded-for", "127.0.0.1"),
            ("forwarded", "for=127.0.0.1"),
        ],
    )
    .await
}

/// One of this machine's non-loopback addresses of the family of `probe`, found the way a
/// routing lookup would (connecting a UDP socket sends nothing), else from `hostname -I`.
fn own_non_loopback(probe: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if probe.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let routed = UdpSocket::bind(bind)
        .and_then(|s| s.connect(probe).and_then(|_| s.local_addr()))
        .ok()
        .map(|a| a.ip());
    let usable = |ip: &IpAddr| {
        !ip.is_loopback()
            && !ip.is_unspecified()
            && ip.is_ipv4() == probe.is_ipv4()
            // Link-local IPv6 needs a scope id to connect to; skip it.
            && !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
    };
    if let Some(ip) = routed.filter(usable) {
        return Some(ip);
    }
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .find(usable)
}

fn start_proxy(pki: &Pki, upstream: SocketAddr, admin: &str) -> ProxyProcess {
    let dir = pki.dir.path();
    let ring = dir.join("keyring.json");
    if !ring.exists() {
        make_keyring(&ring);
    }
    let yaml = config_yaml(
        pki,
        upstream,
        &format!("keys:\n  keyring: \"{}\"\n", ring.display()),
    )
    .replace("admin: \"127.0.0.1:0\"", &format!("admin: \"{admin}\""));
    ProxyProcess::start(&yaml)
}

fn assert_refused(status: StatusCode, body: &str, from: SocketAddr) {
    assert_eq!(status, StatusCode::FORBIDDEN, "/keys from {from}: {body}");
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(v["status"], "forbidden", "{body}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("loopback"),
        "{body}"
    );
    assert!(
        !body.contains("\"keys\""),
        "no key data in the refusal: {body}"
    );
}

#[tokio::test]
async fn keys_is_refused_to_a_non_loopback_peer_and_served_on_loopback() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let proxy = start_proxy(&pki, up.addr, "0.0.0.0:0");
    let port = proxy.admin.port();

    // Loopback: the usage document.
    let lo = SocketAddr::from(([127, 0, 0, 1], port));
    let (status, body, from) = get_from(lo, "/keys").await;
    assert!(from.ip().is_loopback());
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#""id":"k1""#), "{body}");

    // Non-loopback: refused, whatever the headers claim; probes and metrics still answer.
    let Some(own) = own_non_loopback("8.8.8.8:53".parse().unwrap()) else {
        eprintln!(
            "SKIP keys_is_refused_to_a_non_loopback_peer: this machine has no non-loopback \
             IPv4 address to connect from (loopback half checked only)"
        );
        return;
    };
    let remote = SocketAddr::new(own, port);
    let (status, body, from) = get_from(remote, "/keys").await;
    assert!(
        !from.ip().is_loopback(),
        "the test needs a non-loopback source address, got {from}"
    );
    assert_refused(status, &body, from);
    // Nor does a query string.
    let (status, body, from) = get_from(remote, "/keys?format=json").await;
    assert_refused(status, &body, from);
    for path in ["/healthz", "/readyz"] {
        let (status, body, _) = get_from(remote, path).await;
        assert_eq!(status, StatusCode::OK, "{path} from {from}: {body}");
    }
    let (status, body, _) = get_from(remote, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("fieldseal_"), "{body}");

    // The CLI over a non-loopback address fails; over loopback it reads the usage.
    let ring = pki.path("keyring.json");
    let ring = ring.to_str().unwrap();
    let keys_list = |admin: SocketAddr| {
        let url = format!("http://{admin}");
        run_cli(
            &["keys", "list", "--keyring", ring, "--admin", url.as_str()],
            &[],
        )
    };
    let (code, out, err) = keys_list(remote);
    assert_ne!(code, 0, "keys list through a non-loopback address: {out}");
    assert!(err.contains("403"), "{err}");
    assert!(err.contains("loopback"), "the CLI says why: {err}");
    let (code, out, err) = keys_list(lo);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("opened_total"), "{out}");
}

/// On a dual-stack `[::]` listener an IPv4 loopback client arrives as `::ffff:127.0.0.1` and is
/// served; `::1` is served; the machine's own IPv6 (or IPv4-mapped) address is refused.
#[tokio::test]
async fn keys_on_a_dual_stack_listener() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIP keys_on_a_dual_stack_listener: no IPv6 loopback on this machine");
        return;
    }
    let proxy = start_proxy(&pki, up.addr, "[::]:0");
    let port = proxy.admin.port();

    for lo in [
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::new("::1".parse().unwrap(), port),
    ] {
        let (status, body, from) = get_from(lo, "/keys").await;
        assert_eq!(status, StatusCode::OK, "/keys from {from}: {body}");
    }

    let mut remote_checked = 0;
    for probe in ["8.8.8.8:53", "[2001:4860:4860::8888]:53"] {
        let Some(own) = own_non_loopback(probe.parse().unwrap()) else {
            eprintln!("SKIP keys_on_a_dual_stack_listener: no non-loopback address like {probe}");
            continue;
        };
        let remote = SocketAddr::new(own, port);
        let (status, body, from) = get_from(remote, "/keys").await;
        assert_refused(status, &body, from);
        let (status, _, _) = get_from(remote, "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        eprintln!("/keys refused to {from} on [::]:{port}");
        remote_checked += 1;
    }
    if remote_checked == 0 {
        eprintln!("SKIP keys_on_a_dual_stack_listener: only the loopback half ran");
    }
}
