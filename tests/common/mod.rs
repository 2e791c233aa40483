//! Test harness: a throwaway PKI (rcgen), a Rust upstream with edge-case endpoints, the real
//! `fieldseal` binary started on `127.0.0.1:0`, and real TLS clients (rustls + hyper, HTTP/1.1
//! and HTTP/2).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fieldseal::body::{BoxError, ProxyBody};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------
// PKI

/// A CA, a server certificate for localhost/127.0.0.1 signed by it, and a client CA + client
/// certificate for mTLS, written as PEM files into a private temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub client_ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = make_ca("fieldseal test CA");
        let mut leaf =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &ca).unwrap();

        let client_ca = make_ca("fieldseal test client CA");
        let mut client = CertificateParams::new(vec!["client.test".into()]).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "client.test");
        let client_key = KeyPair::generate().unwrap();
        let client_cert = client.signed_by(&client_key, &client_ca).unwrap();

        let pki = Self {
            dir,
            ca_pem: ca.pem(),
            client_ca_pem: client_ca.pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        };
        std::fs::write(
            pki.path("cert.pem"),
            format!("{}{}", leaf_cert.pem(), ca.pem()),
        )
        .unwrap();
        write_mode(&pki.path("key.pem"), &leaf_key.serialize_pem(), 0o600);
        std::fs::write(pki.path("client-ca.pem"), &pki.client_ca_pem).unwrap();
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cert(&self) -> PathBuf {
        self.path("cert.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.path("key.pem")
    }
}

fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

pub fn write_mode(path: &Path, contents: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

// ---------------------------------------------------------------------------------------
// The proxy under test, as a real process

pub struct ProxyProcess {
    pub child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    /// The config file the process was started with (rewrite it, then SIGHUP, to reload).
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fieldseal")
}

/// A minimal config for `pki`, proxying to `upstream`, with `extra` YAML appended.
pub fn config_yaml(pki: &Pki, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "listen: \"127.0.0.1:0\"\nupstream: \"http://{upstream}\"\nadmin: \"127.0.0.1:0\"\ntls:\n  cert: \"{}\"\n  key: \"{}\"\n{extra}",
        pki.cert().display(),
        pki.key().display()
    )
}

impl ProxyProcess {
    /// Starts `fieldseal run` with `yaml` and waits until it reports its bound addresses.
    pub fn start(yaml: &str) -> Self {
        Self::start_with_env(yaml, &[])
    }

    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("fieldseal.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--config"])
            .arg(&config)
            .env("FIELDSEAL_LOG_FORMAT", "json")
            .env("FIELDSEAL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // A KEK the developer's shell exports would make every plain test keyring an error.
        for name in KEK_VARIABLES {
            cmd.env_remove(name);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("fieldseal starts");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("fieldseal ready") {
                        let _ = tx.send(line.clone());
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let ready = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "fieldseal did not become ready; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        let v: serde_json::Value = serde_json::from_str(&ready).unwrap();
        Self {
            child,
            listen: v["listen"].as_str().unwrap().parse().unwrap(),
            admin: v["admin"].as_str().unwrap().parse().unwrap(),
            logs,
            config,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory (VmHWM) of the proxy process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_field(self.pid(), "VmHWM:")
    }

    pub fn rss_kib(&self) -> u64 {
        status_field(self.pid(), "VmRSS:")
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit, returning its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until a log line satisfies `pred` (logs are written asynchronously).
    pub fn wait_log(&self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self.logs().into_iter().find(|l| pred(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no matching log line in:\n{}",
                self.logs().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the metric sample `name` reaches `at_least` (counters are updated by the
    /// worker threads asynchronously to what the client observes).
    pub async fn wait_metric(&self, name: &str, at_least: f64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, text) = self.admin_get("/metrics").await;
            if metric(&text, name).is_some_and(|v| v >= at_least) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never reached {at_least}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET on the admin listener (plain HTTP/1.1).
    pub async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        let (status, body, _) = plain_get(self.admin, path, &[]).await;
        (status, body)
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Writes a fresh keyring (via `fieldseal keys init`) to `path`.
pub fn make_keyring(path: &Path) {
    let (code, _, stderr) = run_cli(&["keys", "init", "--out", path.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stderr}");
}

/// A loopback address nothing listens on (bound, then released), for "upstream down" tests.
pub fn unused_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Keyring passphrase/KEK variables: never inherited by the processes tests start (any of
/// them makes a plain keyring an error).
const KEK_VARIABLES: [&str; 6] = [
    "FIELDSEAL_KEYRING_PASSPHRASE",
    "FIELDSEAL_KEYRING_KEK",
    "FIELDSEAL_KEYRING_KEK_COMMAND",
    "FIELDSEAL_NEW_KEYRING_PASSPHRASE",
    "FIELDSEAL_NEW_KEYRING_KEK",
    "FIELDSEAL_NEW_KEYRING_KEK_COMMAND",
];

/// Runs `fieldseal` with `args`, returning (exit code, stdout, stderr).
/// Keyring passphrases/KEKs the developer's shell may export are not inherited.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    for name in KEK_VARIABLES {
        cmd.env_remove(name);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------
// TLS clients

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub struct ClientOptions {
    pub alpn: Vec<Vec<u8>>,
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
    pub client_cert: Option<(String, String)>,
}

impl ClientOptions {
    pub fn h2() -> Self {
        Self {
            alpn: vec![b"h2".to_vec()],
            versions: vec![&rustls::version::TLS13],
            client_cert: None,
        }
    }

    pub fn h1() -> Self {
        Self {
            alpn: vec![b"http/1.1".to_vec()],
            ..Self::h2()
        }
    }
}

pub fn client_config(pki: &Pki, opts: &ClientOptions) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&opts.versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match &opts.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = opts.alpn.clone();
    Arc::new(config)
}

pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// An HTTP connection over TLS speaking whatever ALPN negotiated.
pub enum HttpConn {
    H1(hyper::client::conn::http1::SendRequest<ProxyBody>),
    H2(hyper::client::conn::http2::SendRequest<ProxyBody>),
}

impl HttpConn {
    pub async fn open(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Self> {
        let tls = tls_connect(addr, config).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        Ok(if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            HttpConn::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn.with_upgrades());
            HttpConn::H1(send)
        })
    }

    pub fn is_h2(&self) -> bool {
        matches!(self, HttpConn::H2(_))
    }

    pub async fn send(&mut self, req: Request<ProxyBody>) -> hyper::Result<Response<Incoming>> {
        match self {
            HttpConn::H1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            HttpConn::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }
}

/// Builds a request with the right URI form for the connection's protocol.
pub fn request(method: &str, path: &str, h2: bool) -> http::request::Builder {
    let b = Request::builder().method(method);
    if h2 {
        b.uri(format!("https://localhost{path}"))
    } else {
        b.uri(path).header("host", "localhost")
    }
}

pub fn body(bytes: impl Into<Bytes>) -> ProxyBody {
    fieldseal::body::full(bytes)
}

pub async fn read_body(resp: Response<Incoming>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

pub async fn read_json(resp: Response<Incoming>) -> serde_json::Value {
    let bytes = read_body(resp).await;
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// Opens a connection and sends one bodyless GET.
pub async fn get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    h2: bool,
) -> Response<Incoming> {
    send_once(
        addr,
        config,
        request("GET", path, h2).body(body("")).unwrap(),
    )
    .await
}

/// Opens a connection and sends one request.
pub async fn send_once(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    req: Request<ProxyBody>,
) -> Response<Incoming> {
    let mut conn = HttpConn::open(addr, config).await.unwrap();
    conn.send(req).await.unwrap()
}

// ---------------------------------------------------------------------------------------
// Bodies that stream a given number of bytes without holding them

/// Yields `remaining` bytes in 64 KiB chunks of one shared buffer.
pub struct RepeatBody {
    remaining: u64,
    chunk: Bytes,
}

impl RepeatBody {
    pub fn new(len: u64) -> Self {
        Self {
            remaining: len,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        }
    }
}

impl Body for RepeatBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// Reads a body to the end, counting bytes without keeping them.
pub async fn drain_count<B>(mut body: B) -> u64
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            n += data.len() as u64;
        }
    }
    n
}

// ---------------------------------------------------------------------------------------
// The Rust test upstream

/// An HTTP/1.1 upstream with endpoints for the proxy's edge cases:
/// `/echo` (request as JSON), `/hop` (hop-by-hop and disclosing response headers),
/// `/download?bytes=N`, `/upload` (counts bytes), `/slow?ms=N`, `/ws` (WebSocket echo).
pub struct TestUpstream {
    pub addr: SocketAddr,
    /// Requests to `/slow` that have arrived (lets tests act while one is in flight).
    pub slow_started: Arc<std::sync::atomic::AtomicUsize>,
    /// TCP connections accepted (shows whether the proxy reuses pooled connections).
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    /// TCP connections that have ended (the proxy closed them, or they failed).
    pub closed: Arc<std::sync::atomic::AtomicUsize>,
}

impl TestUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slow_started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = slow_started.clone();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = connections.clone();
        let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ended = closed.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let counter = counter.clone();
                let ended = ended.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        if req.uri().path() == "/slow" {
                            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        upstream_respond(req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades()
                        .await;
                    ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            slow_started,
            connections,
            closed,
        }
    }

    /// Waits until `n` requests to `/slow` have arrived.
    pub async fn wait_slow_started(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.slow_started.load(std::sync::atomic::Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "the slow request never reached the upstream"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.parse().ok()).flatten()
    })
}

async fn upstream_respond(
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let resp = match path.as_str() {
        "/echo" => {
            let mut headers = serde_json::Map::new();
            for (name, value) in req.headers() {
                let entry = headers
                    .entry(name.as_str().to_string())
                    .or_insert_with(|| serde_json::Value::Array(vec![]));
                entry
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::Value::String(
                        value.to_str().unwrap_or("<binary>").to_string(),
                    ));
            }
            let method = req.method().to_string();
            let target = req.uri().to_string();
            let query = req.uri().query().map(str::to_string);
            let version = format!("{:?}", req.version());
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let doc = serde_json::json!({
                "method": method, "target": target, "path": path, "query": query, "version": version,
                "headers": headers, "body": String::from_utf8_lossy(&body),
            });
            json_response(&doc)
        }
        "/hop" => {
            let mut resp = json_response(&serde_json::json!({"ok": true}));
            let h = resp.headers_mut();
            h.insert("connection", "X-Upstream-Hop".parse().unwrap());
            h.insert("x-upstream-hop", "1".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("server", "test-upstream/1.0".parse().unwrap());
            h.insert("x-powered-by", "TestStack".parse().unwrap());
            h.insert(
                "content-security-policy",
                "upstream-policy".parse().unwrap(),
            );
            h.insert("x-frame-options", "SAMEORIGIN".parse().unwrap());
            h.insert("x-app-header", "kept".parse().unwrap());
            resp
        }
        "/download" => {
            let n = query_param(&req, "bytes").unwrap_or(0);
            Response::new(RepeatBody::new(n).boxed_unsync())
        }
        "/upload" => {
            let n = drain_count(req.into_body()).await;
            json_response(&serde_json::json!({"received": n}))
        }
        "/slow" => {
            let ms = query_param(&req, "ms").unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json_response(&serde_json::json!({"slept_ms": ms}))
        }
        "/ws" => websocket_accept(&mut req),
        // Field-stage edge cases: each carries the secret `123-45-6789` at `$.ssn` or in its text.
        "/user" => json_response(&serde_json::json!({
            "id": 7, "name": "Ada", "ssn": "123-45-6789", "age": 36,
            "cards": [{"number": "4111111111110366"}], "phone": "+44 20 7946 0958"
        })),
        // JSON labelled as text: it counts as JSON (contract §8) and is sealed.
        "/text" => with_type(r#"{"ssn": "123-45-6789"}"#, "text/plain"),
        // Text that is not JSON.
        "/prose" => with_type("ssn: 123-45-6789", "text/plain"),
        "/badjson" => with_type(r#"{"ssn": "123-45-6789""#, "application/json"),
        // An app that compresses although the proxy asked for `identity`.
        "/gzip" => encoded(&gzip(br#"{"ssn": "123-45-6789"}"#), "gzip"),
        "/gzip-corrupt" => encoded(br#"{"ssn": "123-45-6789"}"#, "gzip"),
        "/zstd" => encoded(br#"{"ssn": "123-45-6789"}"#, "zstd"),
        // 1 KiB on the wire, 1 MiB decoded.
        "/bomb" => {
            let doc = format!(
                r#"{{"ssn": "123-45-6789", "pad": "{}"}}"#,
                "0".repeat(1 << 20)
            );
            encoded(&gzip(doc.as_bytes()), "gzip")
        }
        "/big" => {
            let n = query_param(&req, "bytes").unwrap_or(0) as usize;
            let doc = format!(r#"{{"ssn": "123-45-6789", "pad": "{}"}}"#, "x".repeat(n));
            json_response(&serde_json::from_str(&doc).unwrap())
        }
        "/nocontent" => {
            let mut r = Response::new(fieldseal::body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        _ => {
            let mut r = json_response(&serde_json::json!({"detail": "not found"}));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    };
    Ok(resp)
}

fn with_type(text: &'static str, content_type: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(body(text));
    resp.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    resp.headers_mut()
        .insert("etag", "\"strong-1\"".parse().unwrap());
    resp
}

/// A JSON response with a strong `ETag` and a digest, sent with `Content-Encoding: <coding>`.
fn encoded(bytes: &[u8], coding: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(body(bytes.to_vec()));
    let h = resp.headers_mut();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("content-encoding", coding.parse().unwrap());
    h.insert("etag", "\"strong-gz\"".parse().unwrap());
    h.insert("content-digest", "sha-256=:AAAA:".parse().unwrap());
    resp
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn json_response(doc: &serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(body(doc.to_string()));
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp
}

fn websocket_accept(req: &mut Request<Incoming>) -> Response<ProxyBody> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()));
    let Some(accept) = key else {
        let mut r = json_response(&serde_json::json!({"detail": "not a websocket request"}));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        use futures_util::{SinkExt, StreamExt};
        let upgraded = on_upgrade.await.unwrap();
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
                break;
            }
        }
    });
    let mut resp = Response::new(fieldseal::body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert("connection", "Upgrade".parse().unwrap());
    h.insert("sec-websocket-accept", accept.parse().unwrap());
    resp
}

/// Parses a Prometheus sample value, e.g. `fieldseal_requests_total{route="x",...}`.
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// An upstream that answers one request per connection and then closes it silently (no
/// `Connection: close`), like an app whose keep-alive timeout is shorter than the proxy's.
pub async fn start_closing_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}")
                    .await;
                // Linger a moment so the proxy pools the connection, then close it.
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    addr
}

/// A keyring (contract §2) from `(id, secret fill byte, state)`, written atomically (temp file
/// + rename, mode 0600) as `keys rotate` does, so a watching proxy never reads half a file.
pub fn write_keyring(path: &Path, keys: &[(&str, u8, &str)], primary: &str) {
    use base64::Engine;
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|(id, fill, state)| {
            serde_json::json!({
                "id": id,
                "secret": base64::engine::general_purpose::STANDARD.encode([*fill; 32]),
                "created_at": "2026-11-01T00:00:00Z",
                "state": state,
            })
        })
        .collect();
    let text = serde_json::json!({"primary": primary, "keys": keys}).to_string();
    let tmp = path.with_extension("tmp");
    write_mode(&tmp, &text, 0o600);
    std::fs::rename(&tmp, path).unwrap();
}

/// A GET over plain HTTP/1.1 to `addr` with `extra` headers, returning (status, body) and the
/// source address the kernel chose for the connection.
#[allow(dead_code)] // not every test binary uses it
pub async fn plain_get(
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, String, SocketAddr) {
    let tcp = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let local = tcp.local_addr().unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(path).header("host", "admin");
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), local)
}
