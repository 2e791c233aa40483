//! Every bound the proxy enforces, as a named default with the reason for its value.
//!
//! Operators override most of them in the `timeouts` and `limits` config sections; the
//! constants here are what a config that says nothing gets.

use std::time::Duration;

/// A TLS handshake that has not finished by then is a stalled or hostile client: close it so
/// half-open handshakes cannot pin file descriptors.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connecting to a co-located app (a sidecar's upstream is on loopback) takes microseconds;
/// seconds mean the app is down or overloaded, and the client deserves a prompt 502/504.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time from sending the request to receiving the upstream's response head. Generous because
/// app endpoints can be slow; the body itself streams without a total deadline, but with a
/// bound on each quiet gap ([`UPSTREAM_READ_TIMEOUT`]).
pub const UPSTREAM_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest gap between two pieces of a response body once its head has arrived. An app that
/// sends a head and then drips or stalls would otherwise hold the client's connection, an
/// upstream connection and (on a sealed stream) a held value indefinitely. Same default as
/// nginx's `proxy_read_timeout`; event streams must send something more often than this.
pub const UPSTREAM_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle pooled upstream connections are closed after this. Kept below the keep-alive timeouts
/// of common Python servers (uvicorn 5 s) so the proxy, not the app, closes an idle
/// connection: otherwise a request can race the app's close and fail.
pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Idle upstream connections kept per host: enough for bursts, bounded so a spike does not
/// leave hundreds of sockets open on the app.
pub const UPSTREAM_MAX_IDLE_PER_HOST: usize = 256;

/// How long SIGTERM waits for in-flight requests. Kubernetes sends SIGKILL 30 s after SIGTERM
/// by default; finishing within 25 s leaves room for the process to exit cleanly.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// An HTTP/1.1 client must send its request head within this time (slowloris defence).
pub const CLIENT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A client connection with no request in flight for this long is closed (HTTP/2 gets a
/// GOAWAY first): abandoned keep-alive connections must not hold file descriptors and
/// connection slots forever. Longer than browsers' usual reuse gaps; nginx uses 75 s.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest request head: the HTTP/1.1 read buffer a head must fit in (hyper answers 431
/// beyond it) and the HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`. 64 KiB holds any real set of
/// cookies and tokens (nginx allows 4 × 8 KiB lines) while bounding memory per connection.
pub const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;

/// Request header fields per HTTP/1.1 request (hyper's default, named here): more is a
/// 431, not a parse of thousands of tiny fields.
pub const MAX_REQUEST_HEADERS: usize = 100;

/// HTTP/2 streams a client may open and reset before the server has accepted them, per
/// connection: past this the connection gets GOAWAY ENHANCE_YOUR_CALM. This is the defence
/// against "rapid reset" (CVE-2023-44487); 20 is the h2 crate's default, named here so it
/// cannot silently change.
pub const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// HTTP/2 streams the server may reset for a client's protocol errors before the connection
/// is closed: a client that keeps provoking resets (malformed headers, flow-control abuse)
/// costs work each time. h2's default.
pub const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// Concurrent HTTP/2 streams per client connection: matches nginx's default of 128 so one
/// connection cannot monopolise the upstream pool.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 128;

/// Open client connections at once. Each costs a socket and a few KiB of TLS and HTTP state;
/// past this the proxy refuses new connections instead of running out of file descriptors.
pub const MAX_CONNECTIONS: usize = 10_000;

/// Requests in flight to the app at once (every worker together); a request past it waits,
/// up to `timeouts.upstream_connect`, for one to finish (then 504). A Python app serves a few
/// dozen requests in parallel at most, so more connections only queue inside it, while each
/// open connection costs the proxy ~30 KiB of HTTP/1.1 state (hyper's read and write buffers
/// and its dispatch channel): without a bound, 1,000 busy clients meant ~1,000 connections to
/// the app. Long-lived answers (event streams) hold one each for their whole life, so an app
/// serving more than this many at once must raise it; upgraded connections (WebSocket) do
/// not count once switched.
pub const MAX_UPSTREAM_REQUESTS: usize = 256;

/// Client-encrypted values (JWE/HPKE) opened per request. Each costs one private-key
/// operation (RSA-3072 OAEP ≈ 1 ms): 16 bounds the work one request can demand while leaving
/// room for any real form.
pub const MAX_ENCRYPTED_VALUES: usize = 16;

/// Largest body the proxy will ever buffer (only routes with transforms buffer). 10 MiB holds
/// any realistic JSON API document while bounding memory per request.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// Longest client-supplied `X-Request-Id` that is forwarded as is; longer or non-token values
/// are replaced so log lines and upstream headers stay bounded and unforgeable.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Upper bound on configured worker threads: more threads than cores only adds switching.
pub const MAX_WORKERS: usize = 256;

/// Seals per key before rotation is due, by default. With random 96-bit nonces, the chance of
/// a nonce collision after n messages is about n²/2^97: 2^30 messages keep it below 2^-37, far
/// inside NIST SP 800-38D's 2^32 bound.
pub const DEFAULT_MAX_ENCRYPTIONS: u64 = 1 << 30;

/// The largest `keys.rotation.max_encryptions` accepted: NIST SP 800-38D's bound for random
/// nonces.
pub const MAX_ENCRYPTIONS_CEILING: u64 = 1 << 32;

/// How often watched files are checked for changes when `reload.watch` is on.
pub const RELOAD_WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// Shortest accepted `reload.interval`: each check is a few `stat` calls, but a reload
/// re-reads and re-derives keys (Argon2id for a wrapped keyring).
pub const MIN_RELOAD_WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// How often the rotation policy is re-evaluated (it also runs after every reload).
pub const ROTATION_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// A request the proxy refuses before reading its body (a wrong content type, an ambiguous
/// request) still has its body read, up to this many bytes, before the answer goes out. Over
/// HTTP/2 an answer sent while the body is still arriving is followed by a stream reset, and
/// some clients (curl 7.88) then report a framing error instead of the JSON error; a small
/// body costs nothing to read. Anything larger is not worth reading for a refusal.
pub const REFUSED_BODY_DRAIN_BYTES: usize = 64 * 1024;

/// ... and for at most this long: a client that stops sending mid-body does not hold the answer.
pub const REFUSED_BODY_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Guard log lines (`fieldseal::guard`) written per second at most, process-wide. An app that
/// leaks on every answer would otherwise write a warning per request (at 25k req/s that cost a
/// third of the throughput in the load tests); the detection counter still counts every one,
/// and the lines that are written say how many were left out before them.
pub const GUARD_LOG_LINES_PER_SECOND: u64 = 20;

/// The most detections one guard log line (and `explain`) lists for an answer.
pub const GUARD_MAX_REPORTED: usize = 32;

/// Default bound on one round trip to the shared replay store (Redis), connecting included:
/// a request carrying client-encrypted values waits at most this long for it. Redis on the
/// same network answers in well under a millisecond; this leaves room for a busy one.
pub const REPLAY_STORE_TIMEOUT: Duration = Duration::from_millis(250);
/// Shortest `replay.redis.timeout`: below it a healthy but loaded Redis would look down.
pub const MIN_REPLAY_STORE_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest `replay.redis.timeout`: every request with a client-encrypted value waits this
/// long when Redis is down, so it must stay short of clients' own timeouts.
pub const MAX_REPLAY_STORE_TIMEOUT: Duration = Duration::from_secs(5);
