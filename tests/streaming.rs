//! Bodies of routes without transforms stream: large uploads and downloads pass through with
//! the proxy's memory bounded, over HTTP/2 and HTTP/1.1; WebSocket upgrades pass through.

mod common;

use common::*;
use http_body_util::BodyExt;

/// Bytes streamed each way. 1 GiB by default (the figure); override with
/// `FIELDSEAL_TEST_STREAM_MIB` on slow machines.
fn stream_len() -> u64 {
    std::env::var("FIELDSEAL_TEST_STREAM_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024u64)
        * 1024
        * 1024
}

/// Peak RSS growth allowed while streaming. Buffering even 1/8 of the body would exceed it;
/// flow-control windows and socket buffers fit comfortably.
const MAX_GROWTH_KIB: u64 = 48 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_with_bounded_memory() {
    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let proxy = ProxyProcess::start(&config_yaml(
        &pki,
        up.addr,
        "routes:\n  - name: files\n    match: { path: \"/**\" }\n",
    ));
    // Warm up (pools, TLS session state), then take the baseline.
    for opts in [ClientOptions::h2(), ClientOptions::h1()] {
        let resp = send_once(
            proxy.listen,
            client_config(&pki, &opts),
            request("GET", "/download?bytes=1048576", opts.alpn[0] == b"h2")
                .body(body(""))
                .unwrap(),
        )
        .await;
        assert_eq!(drain_count(resp.into_body()).await, 1 << 20);
    }
    let baseline = proxy.rss_kib();
    let len = stream_len();

    for opts in [ClientOptions::h2(), ClientOptions::h1()] {
        let h2 = opts.alpn[0] == b"h2";
        let cfg = client_config(&pki, &opts);

        let resp = send_once(
            proxy.listen,
            cfg.clone(),
            request("GET", &format!("/download?bytes={len}"), h2)
                .body(body(""))
                .unwrap(),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(drain_count(resp.into_body()).await, len, "download h2={h2}");

        let upload = RepeatBody::new(len).boxed_unsync();
        let resp = send_once(
            proxy.listen,
            cfg,
            request("POST", "/upload", h2).body(upload).unwrap(),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let echo = read_json(resp).await;
        assert_eq!(echo["received"], len, "upload h2={h2}");
    }

    let peak = proxy.peak_rss_kib();
    assert!(
        peak < baseline + MAX_GROWTH_KIB,
        "peak RSS {peak} KiB grew more than {MAX_GROWTH_KIB} KiB over the baseline {baseline} KiB while streaming {} MiB",
        len >> 20
    );
    eprintln!(
        "streamed {} MiB each way x2 protocols; RSS baseline {baseline} KiB, peak {peak} KiB",
        len >> 20
    );
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let pki = Pki::new();
    let up = TestUpstream::start().await;
    let proxy = ProxyProcess::start(&config_yaml(&pki, up.addr, ""));
    let tls = tls_connect(proxy.listen, client_config(&pki, &ClientOptions::h1()))
        .await
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("wss://localhost/ws", tls)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    assert!(resp.headers().contains_key("strict-transport-security"));
    for msg in ["hello", "through the proxy"] {
        ws.send(Message::text(msg)).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(msg));
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.close(None).await.unwrap();
}
