#!/usr/bin/env python3
"""Soak test: the release binary under sustained TLS load on every kind of route, with a
configuration + keyring reload every minute, watched for errors and for memory or file
descriptor growth.

    benches/load/soak.py [--duration 600] [--connections 500] [--reload-every 60]

What it runs (all on 127.0.0.1, everything generated into a temporary directory):

- `cargo build --release --bin fieldseal` (waits for the cargo lock; `--fieldseal PATH` skips it);
- nginx (Debian `nginx`, apt-get installed if missing) as the app, answering fixed JSON with
  sensitive fields, one worker;
- fieldseal with six routes: `seal` (GET, response.encrypt of 3 fields + mask + redact),
  `open` (PUT, require_encrypted request.decrypt of 3 fs1 tokens made by `fieldseal seal`), `jwe-rsa` and
  `jwe-hpke` (POST, request.decrypt of one client JWE, RSA-OAEP-256/RSA-2048 or
  HPKE-X25519-A256GCM; no `max_age`, so pre-built values are replayed), `pass` (GET, no rules:
  streamed) and `envelope` (POST, pre-built whole-body envelopes; the response is sealed);
- wrk (Debian `wrk`) over TLS 1.3 / HTTP/1.1 with `--connections` connections on 2 threads, a
  60 s request timeout, and a Lua script that rotates through the 6 kinds (4 pre-built
  variants of the JWE and envelope values), so every kind gets 1/6 of the requests.

Every `--reload-every` seconds: `fieldseal keys rotate` (a new primary key; tokens of the
old ones still open), the config file rewritten with the same content (new inode), SIGHUP;
then the script waits for `fieldseal_config_reloads_total{outcome="ok"}` to grow and checks
over TLS that the `seal` route now seals with the new primary's kid.

Every 10 s: VmRSS, open fds and threads of the proxy (/proc), and its /metrics (requests by
status, upstream errors, open connections, reloads).

Verdict (exit 1 on any failure):
- errors = wrk socket errors (connect/read/write/timeout) + wrk non-2xx + the proxy's non-2xx
  (`fieldseal_requests_total`) + `fieldseal_upstream_errors_total` + field failures + TLS
  handshake failures + rejected connections must be 0 (the proxy's counters as deltas from
  just before the load; non-2xx is counted twice, from each side: any is a failure anyway);
- every reload succeeded (metrics and log lines agree) and was verified by a probe;
- RSS: mean over the last minute <= mean over the second minute * (1 + --rss-tolerance,
  default 0.20) + 4 MiB; fds: mean over the last minute <= mean over the second minute *
  (1 + --fd-tolerance, default 0.10) + 10 (for runs under 3 minutes: second quarter vs last
  quarter);
- after the load stops and pooled upstream connections expire (upstream_idle 4 s; 10 s
  wait), open fds are back within 5 of the idle count before the load;
- the proxy is still running.

Needs the test venv (cryptography, jwcrypto, pyhpke: `scripts/test.sh` creates `.venv`); run
with any python3 and it re-executes itself under `.venv/bin/python` when the imports fail.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import http.client
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

try:
    import base64
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from jwcrypto import jwe, jwk
    from jwcrypto.common import json_encode
    from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey
except ImportError:
    venv = ROOT / ".venv" / "bin" / "python"
    if venv.exists() and Path(sys.executable).resolve() != venv.resolve() and not os.environ.get("SOAK_REEXEC"):
        os.environ["SOAK_REEXEC"] = "1"
        os.execv(str(venv), [str(venv), *sys.argv])
    sys.exit("needs cryptography, jwcrypto and pyhpke: run scripts/test.sh once (creates .venv)")

USER = {"id": 7, "name": "Ada Lovelace", "email": "ada@example.com", "ssn": "123-45-6789",
        "password": "correct horse battery staple",
        "cards": [{"number": "4111111111111111", "exp": "12/29"}],
        "phone": "+44 20 7946 0958", "internal_notes": "vip, call before shipping"}
ACK = {"ok": True}
SECURE = {"ok": True, "balance": 4200, "iban": "GB33BUKB20201555555555"}
VARIANTS = 4          # distinct pre-built JWE/envelope values per kind
SAMPLE_EVERY = 10     # seconds
MIB = 1024 * 1024


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what}: port {port} did not open")


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in (("nginx", "nginx"), ("wrk", "wrk")) if not shutil.which(tool)
               and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        log(f"installing {' '.join(missing)} with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


# ---------------------------------------------------------------- generated configurations

def nginx_conf(d: Path, port: int) -> str:
    def ret(doc) -> str:
        return "return 200 '" + json.dumps(doc, separators=(",", ":")) + "';"
    return f"""# generated by benches/load/soak.py
worker_processes 1;
worker_rlimit_nofile 8192;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/nginx-body;
  default_type application/json;
  keepalive_timeout 60s;
  server {{
    listen 127.0.0.1:{port};
    location /api/users/ {{ {ret(USER)} }}
    location /api/catalog/ {{ {ret(USER)} }}
    location /api/accounts/ {{ {ret(ACK)} }}
    location /api/payments/ {{ {ret(ACK)} }}
    location /api/secure/ {{ {ret(SECURE)} }}
    location / {{ return 404 '{{"error":"not found"}}'; }}
  }}
}}
"""


def fieldseal_conf(d: Path, port: int, admin: int, upstream: int) -> str:
    return f"""# generated by benches/load/soak.py
listen: "127.0.0.1:{port}"
upstream: "http://127.0.0.1:{upstream}"
admin: "127.0.0.1:{admin}"
tls: {{ cert: "{d}/tls.crt", key: "{d}/tls.key" }}
keys:
  keyring: "{d}/keyring.json"
  rsa_private_key: "{d}/rsa.pem"
  hpke_private_key: "{d}/x25519.pem"
routes:
  - name: seal
    match: {{ path: "/api/users/{{id}}", methods: [GET] }}
    response:
      encrypt: ["$.ssn", "$.password", {{ path: "$.cards[*].number", context: "card" }}]
      mask: [{{ path: "$.phone", keep_last: 4 }}]
      redact: ["$.internal_notes"]
  - name: open
    match: {{ path: "/api/accounts/{{id}}", methods: [PUT] }}
    request:
      decrypt: ["$.ssn", "$.password", {{ path: "$.card.number", context: "card" }}]
      require_encrypted: true
  - name: jwe-rsa
    match: {{ path: "/api/payments/rsa", methods: [POST] }}
    request: {{ decrypt: ["$.card"], require_encrypted: true }}
  - name: jwe-hpke
    match: {{ path: "/api/payments/hpke", methods: [POST] }}
    request: {{ decrypt: ["$.card"], require_encrypted: true }}
  - name: pass
    match: {{ path: "/api/catalog/{{id}}", methods: [GET] }}
  - name: envelope
    match: {{ path: "/api/secure/**", methods: [POST] }}
    envelope: true
"""


def lua_long(s: str) -> str:
    assert "]==]" not in s
    return "[==[" + s + "]==]"


def wrk_lua(requests: list) -> str:
    """A wrk script that sends `requests` ((method, path, body or None) tuples) in rotation,
    each thread starting at a different offset, and prints a JSON summary line at the end."""
    rows = []
    for method, path, body in requests:
        b = "nil" if body is None else lua_long(body)
        rows.append(f"  {{{lua_long(method)}, {lua_long(path)}, {b}}},")
    return """-- generated by benches/load/soak.py
local specs = {
""" + "\n".join(rows) + """
}
local reqs = {}
local i = 0
local threads = 0

-- wrk's default resolve() opens and closes a plain TCP connection to every address to test
-- it, which the proxy rightly counts as a failed TLS handshake. Use the IPv4 loopback
-- address (the proxy listens there only) without the test connection.
function wrk.resolve(host, service)
  local addrs = {}
  for _, addr in ipairs(wrk.lookup(host, service)) do
    if tostring(addr):match("^127%.") then addrs[#addrs + 1] = addr end
  end
  wrk.addrs = addrs
end

function setup(thread)
  threads = threads + 1
  thread:set("offset", threads * 7)
end

function init(args)
  for _, s in ipairs(specs) do
    local headers = {}
    if s[3] ~= nil then headers["Content-Type"] = "application/json" end
    reqs[#reqs + 1] = wrk.format(s[1], s[2], headers, s[3])
  end
  i = (offset or 0) % #reqs
end

function request()
  i = i % #reqs + 1
  return reqs[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'SOAK_WRK {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"lat_mean_us":%.1f,"lat_p50_us":%d,"lat_p99_us":%d,"lat_max_us":%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


# ---------------------------------------------------------------- client-side values

def rsa_jwe(public: "jwk.JWK", kid: str, value: str) -> str:
    token = jwe.JWE(value.encode(), protected=json_encode({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": kid}))
    token.add_recipient(public)
    return token.serialize(compact=True)


def hpke_jwe(public: "jwk.JWK", kid: str, value: str) -> str:
    suite = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)
    header = b64url(json.dumps({"alg": "HPKE-X25519-A256GCM", "kid": kid}).encode())
    enc, sender = suite.create_sender_context(KEMKey.from_jwk(json.loads(public.export_public())), info=b"")
    return ".".join([header, b64url(enc), "", b64url(sender.seal(value.encode(), aad=header.encode())), ""])


def envelope(public_key, kid: str, doc) -> tuple:
    session = AESGCM.generate_key(bit_length=256)
    wrapped = public_key.encrypt(session, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                       algorithm=hashes.SHA256(), label=None))
    nonce = os.urandom(12)
    data = nonce + AESGCM(session).encrypt(nonce, json.dumps(doc).encode(), b"fieldseal-envelope-request")
    body = {"encrypted_session_key": base64.b64encode(wrapped).decode(),
            "encrypted_data": base64.b64encode(data).decode(), "kid": kid}
    return json.dumps(body, separators=(",", ":")), session


# ---------------------------------------------------------------- observation

METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)')
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(admin: int) -> list:
    """/metrics as (name, labels dict, value) rows."""
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
    try:
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
    finally:
        c.close()
    rows = []
    for line in text.splitlines():
        m = METRIC_RE.match(line)
        if m:
            rows.append((m.group(1), dict(LABEL_RE.findall(m.group(2) or "")), float(m.group(3))))
    return rows


def msum(rows: list, name: str, **want) -> float:
    return sum(v for n, labels, v in rows if n == name and all(labels.get(k) == w for k, w in want.items()))


def proc_stats(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    field = lambda k: int(re.search(rf"^{k}:\s+(\d+)", status, re.M).group(1))
    return {"rss_kib": field("VmRSS"), "hwm_kib": field("VmHWM"), "threads": field("Threads"),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


class Probe:
    """Requests over a verified TLS connection (the cert is its own CA)."""

    def __init__(self, port: int, cafile: Path):
        self.port = port
        self.ctx = ssl.create_default_context(cafile=str(cafile))
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3

    def send(self, method: str, path: str, body: str = None) -> tuple:
        c = http.client.HTTPSConnection("localhost", self.port, context=self.ctx, timeout=60)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()


# ---------------------------------------------------------------- the run

def windows(samples: list, duration: int) -> tuple:
    """(baseline, final) sample lists: the second minute and the last minute of the load
    (second and last quarter for runs under 3 minutes)."""
    load = [s for s in samples if s["phase"] == "load"]
    if duration >= 180:
        base = [s for s in load if 60 <= s["t"] < 120]
        final = [s for s in load if s["t"] > duration - 60]
    else:
        q = duration / 4
        base = [s for s in load if q <= s["t"] < 2 * q]
        final = [s for s in load if s["t"] > duration - q]
    return base, final


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=600, help="seconds of load (default 600)")
    ap.add_argument("--connections", type=int, default=500, help="concurrent TLS connections (default 500)")
    ap.add_argument("--reload-every", type=int, default=60, help="seconds between SIGHUP reloads (default 60)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--rss-tolerance", type=float, default=0.20)
    ap.add_argument("--fd-tolerance", type=float, default=0.10)
    ap.add_argument("--fieldseal", help="use this binary instead of building target/release/fieldseal")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    args = ap.parse_args()

    ensure_tools()
    if args.fieldseal:
        binary = Path(args.fieldseal)
    else:
        log("cargo build --release --bin fieldseal (waits if another build holds the lock)")
        subprocess.run(["cargo", "build", "--release", "--bin", "fieldseal"], cwd=ROOT, check=True)
        binary = ROOT / "target" / "release" / "fieldseal"
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip()
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    wrk_version = (wrk_version.stdout + wrk_version.stderr).splitlines()[0]
    nginx_version = subprocess.run([nginx_bin(), "-v"], capture_output=True, text=True).stderr.strip()

    d = Path(tempfile.mkdtemp(prefix="fieldseal-soak-"))
    procs = {}
    try:
        return run(args, binary, d, procs, (version, wrk_version, nginx_version))
    finally:
        for name in ("wrk", "fieldseal", "nginx"):
            p = procs.get(name)
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM if name != "nginx" else signal.SIGQUIT)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if args.keep:
            log(f"kept {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)


def run(args, binary: Path, d: Path, procs: dict, versions: tuple) -> int:
    fs = lambda *a: subprocess.run([str(binary), *a], check=True, capture_output=True, text=True).stdout.strip()

    # Upstream.
    nginx_port = free_port()
    (d / "nginx-body").mkdir()
    (d / "nginx.conf").write_text(nginx_conf(d, nginx_port))
    procs["nginx"] = subprocess.Popen([nginx_bin(), "-c", str(d / "nginx.conf"), "-e", str(d / "nginx.err")])
    wait_port(nginx_port, procs["nginx"], "nginx")

    # Keys, certificate, config.
    fs("keys", "init", "--out", str(d / "keyring.json"), "--id", "k1")
    fs("rsa", "generate", "--out", str(d / "rsa.pem"), "--bits", "2048")
    fs("hpke", "generate", "--out", str(d / "x25519.pem"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(d / "tls.key"), "-out", str(d / "tls.crt"), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    (d / "tls.key").chmod(0o600)
    port, admin = free_port(), free_port()
    conf_text = fieldseal_conf(d, port, admin, nginx_port)
    conf = d / "fieldseal.yaml"
    conf.write_text(conf_text)
    fs("check", "--config", str(conf))

    # Pre-built request values.
    tokens = {ctx: fs("seal", "--keyring", str(d / "keyring.json"), "--context", ctx, json.dumps(v))
              for ctx, v in (("ssn", USER["ssn"]), ("password", USER["password"]), ("card", "4111111111111111"))}
    rsa_priv = serialization.load_pem_private_key((d / "rsa.pem").read_bytes(), None)
    x_priv = serialization.load_pem_private_key((d / "x25519.pem").read_bytes(), None)
    rsa_pub, x_pub = jwk.JWK.from_pyca(rsa_priv.public_key()), jwk.JWK.from_pyca(x_priv.public_key())
    rsa_kid, x_kid = rsa_pub.thumbprint(), x_pub.thumbprint()
    open_body = json.dumps({"id": 7, "ssn": tokens["ssn"], "password": tokens["password"],
                            "card": {"number": tokens["card"], "exp": "12/29"}}, separators=(",", ":"))
    kinds = {"seal": [], "open": [], "jwe-rsa": [], "jwe-hpke": [], "pass": [], "envelope": []}
    sessions = []
    for v in range(VARIANTS):
        kinds["seal"].append(("GET", f"/api/users/{v + 1}", None))
        kinds["open"].append(("PUT", f"/api/accounts/{v + 1}", open_body))
        kinds["jwe-rsa"].append(("POST", "/api/payments/rsa", json.dumps(
            {"amount": 42 + v, "card": rsa_jwe(rsa_pub, rsa_kid, "4111111111111111")}, separators=(",", ":"))))
        kinds["jwe-hpke"].append(("POST", "/api/payments/hpke", json.dumps(
            {"amount": 42 + v, "card": hpke_jwe(x_pub, x_kid, "4111111111111111")}, separators=(",", ":"))))
        kinds["pass"].append(("GET", f"/api/catalog/{v + 1}", None))
        body, session = envelope(rsa_priv.public_key(), rsa_kid, {"to": "GB33BUKB20201555555555", "amount": 10 + v})
        kinds["envelope"].append(("POST", "/api/secure/transfer", body))
        sessions.append(session)
    rotation = [kinds[k][v] for v in range(VARIANTS) for k in kinds]
    (d / "soak.lua").write_text(wrk_lua(rotation))

    # The proxy. Access and audit lines (one per request) are left out of the log; reloads,
    # warnings and errors stay.
    env = dict(os.environ, FIELDSEAL_LOG="info,fieldseal::access=warn,fieldseal::audit=warn",
               FIELDSEAL_LOG_FORMAT="json")
    proxy_log = open(d / "fieldseal.log", "wb")
    procs["fieldseal"] = proxy = subprocess.Popen([str(binary), "run", "--config", str(conf)],
                                                  stdout=proxy_log, stderr=subprocess.STDOUT, env=env)
    wait_port(port, proxy, "fieldseal")
    wait_port(admin, proxy, "fieldseal admin")

    # Every kind once, checked, before the load.
    probe = Probe(port, d / "tls.crt")
    for kind, reqs in kinds.items():
        method, path, body = reqs[0]
        status, answer = probe.send(method, path, body)
        if status != 200:
            raise RuntimeError(f"pre-check {kind}: {status} {answer[:300]!r}")
        doc = json.loads(answer)
        if kind == "seal":
            assert doc["ssn"].startswith("fs1.k1.") and doc["cards"][0]["number"].startswith("fs1.k1."), doc
            assert doc["internal_notes"] is None and doc["phone"].endswith("0958") and "+44" not in doc["phone"], doc
        elif kind == "pass":
            assert doc == USER, doc
        elif kind == "envelope":
            sealed = base64.b64decode(doc["encrypted_data"])
            assert json.loads(AESGCM(sessions[0]).decrypt(sealed[:12], sealed[12:],
                                                          b"fieldseal-envelope-response")) == SECURE
        else:
            assert doc == ACK, doc
    m0 = scrape(admin)
    for route, action, n in (("open", "opened", 3), ("jwe-rsa", "decrypted", 1), ("jwe-hpke", "decrypted", 1),
                             ("envelope", "envelope_opened", 1), ("seal", "sealed", 3)):
        got = msum(m0, "fieldseal_fields_total", route=route, action=action)
        if got != n:
            raise RuntimeError(f"pre-check: fieldseal_fields_total{{route={route},action={action}}} = {got}, want {n}")
    log(f"pre-check passed: 6 kinds answered 200 with the expected bodies; tmp {d}")

    idle_before = proc_stats(proxy.pid)
    samples = []

    def sample(t: float, phase: str) -> dict:
        m = scrape(admin)
        s = dict(proc_stats(proxy.pid), t=round(t), phase=phase,
                 requests=msum(m, "fieldseal_requests_total"),
                 non2xx=sum(v for n, l, v in m if n == "fieldseal_requests_total" and not l.get("status", "").startswith("2")),
                 upstream_errors=msum(m, "fieldseal_upstream_errors_total"),
                 open_conns=msum(m, "fieldseal_open_connections"),
                 reloads_ok=msum(m, "fieldseal_config_reloads_total", outcome="ok"),
                 reloads_failed=msum(m, "fieldseal_config_reloads_total", outcome="failed"))
        samples.append(s)
        return s

    s0 = sample(0, "idle")
    m_start = scrape(admin)     # error counters are counted from here (set-up probes excluded)
    log(f"idle: rss {s0['rss_kib'] / 1024:.1f} MiB, fds {s0['fds']}, threads {s0['threads']}")

    wrk_out = open(d / "wrk.out", "wb")
    url = f"https://localhost:{port}"
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--timeout", "60s",
           "--latency", "-s", str(d / "soak.lua"), url]
    log("load: " + " ".join(cmd))
    start = time.monotonic()
    procs["wrk"] = wrk = subprocess.Popen(cmd, stdout=wrk_out, stderr=subprocess.STDOUT)

    reloads = []      # (t, kid, ok, verified, reload_s, detail)
    next_sample = SAMPLE_EVERY
    next_reload = args.reload_every if args.reload_every > 0 else float("inf")
    primary_n = 1
    while wrk.poll() is None:
        now = time.monotonic() - start
        if proxy.poll() is not None:
            log(f"fieldseal exited with {proxy.returncode} during the load")
            break
        if now >= next_reload and now < args.duration - 5:
            next_reload += args.reload_every
            primary_n += 1
            kid = f"k{primary_n}"
            before = msum(scrape(admin), "fieldseal_config_reloads_total", outcome="ok")
            fs("keys", "rotate", "--keyring", str(d / "keyring.json"), "--id", kid)
            tmp = conf.with_suffix(".tmp")
            tmp.write_text(conf_text)       # same content, new inode
            os.replace(tmp, conf)
            t0 = time.monotonic()
            proxy.send_signal(signal.SIGHUP)
            ok = False
            while time.monotonic() - t0 < 30:
                m = scrape(admin)
                if msum(m, "fieldseal_config_reloads_total", outcome="ok") > before:
                    ok = True
                    break
                if msum(m, "fieldseal_config_reloads_total", outcome="failed") > 0:
                    break
                time.sleep(0.1)
            took = time.monotonic() - t0
            verified, detail = False, ""
            if ok:
                status, answer = probe.send("GET", "/api/users/7")
                token = json.loads(answer).get("ssn", "") if status == 200 else ""
                verified = token.startswith(f"fs1.{kid}.")
                detail = f"probe {status} ssn={token[:12]}…"
            reloads.append((round(now), kid, ok, verified, took, detail))
            log(f"reload {len(reloads)} at {now:.0f}s: primary {kid}, ok={ok}, verified={verified}, "
                f"seen after {took * 1000:.0f} ms, {detail}")
        if now >= next_sample:
            s = sample(now, "load")
            log(f"t={s['t']:>4}s rss {s['rss_kib'] / 1024:6.1f} MiB fds {s['fds']:>5} conns {s['open_conns']:>5.0f} "
                f"requests {s['requests']:>10.0f} non2xx {s['non2xx']:.0f} upstream_err {s['upstream_errors']:.0f}")
            next_sample += SAMPLE_EVERY
        time.sleep(0.2)
    wrk.wait()
    elapsed = time.monotonic() - start
    wrk_out.close()
    alive_after_load = proxy.poll() is None

    # Idle again: client connections are gone; pooled upstream connections expire after 4 s.
    if alive_after_load:
        time.sleep(10)
        sample(elapsed + 10, "after")
    after = samples[-1]
    proxy_alive = proxy.poll() is None

    text = (d / "wrk.out").read_text(errors="replace")
    m = re.search(r"^SOAK_WRK (\{.*\})$", text, re.M)
    w = json.loads(m.group(1)) if m else None
    final_metrics = scrape(admin) if proxy_alive else []
    proxy_log.flush()
    log_lines = (d / "fieldseal.log").read_text(errors="replace").splitlines()
    reload_lines = [l for l in log_lines if "configuration reloaded" in l]
    bad_lines = [l for l in log_lines if '"level":"ERROR"' in l or '"level":"WARN"' in l]

    # ------------------------------------------------------------ report
    print()
    print(f"fieldseal soak — {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"binary {binary} ({versions[0]}); {versions[1]}; {versions[2]}; {os.cpu_count()} CPUs; "
          f"load average at end {os.getloadavg()[0]:.2f}")
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --timeout 60s, TLS 1.3 / HTTP/1.1, "
          f"rotation over {len(rotation)} requests: {', '.join(kinds)} (1/6 each); reload every {args.reload_every}s")
    print()
    print(f"{'t(s)':>6} {'phase':>6} {'RSS MiB':>8} {'fds':>6} {'thr':>4} {'conns':>6} {'requests':>10} "
          f"{'req/s':>8} {'non2xx':>7} {'up_err':>7} {'reloads':>8}")
    prev = None
    for s in samples:
        rate = "" if prev is None or s["t"] == prev["t"] else f"{(s['requests'] - prev['requests']) / (s['t'] - prev['t']):.0f}"
        print(f"{s['t']:>6} {s['phase']:>6} {s['rss_kib'] / 1024:>8.1f} {s['fds']:>6} {s['threads']:>4} "
              f"{s['open_conns']:>6.0f} {s['requests']:>10.0f} {rate:>8} {s['non2xx']:>7.0f} "
              f"{s['upstream_errors']:>7.0f} {s['reloads_ok']:>4.0f}/{s['reloads_failed']:.0f}")
        prev = s
    print()

    failures = []
    if not alive_after_load or not proxy_alive:
        failures.append(f"fieldseal exited ({proxy.returncode})")
    if w is None:
        failures.append("wrk printed no summary")
        w = {"requests": 0, "duration_us": 1, "connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0,
             "lat_mean_us": 0, "lat_p50_us": 0, "lat_p99_us": 0, "lat_max_us": 0, "bytes": 0}
    fm = final_metrics
    per_route = {}
    for n, l, v in fm:
        if n == "fieldseal_requests_total":
            r = per_route.setdefault(l.get("route"), {})
            r[l.get("status")] = r.get(l.get("status"), 0) + v
    print("requests by route and status (proxy metrics, including the script's own probes):")
    for route, statuses in sorted(per_route.items()):
        print(f"  {route:<10} " + ", ".join(f"{st}: {v:.0f}" for st, v in sorted(statuses.items())))
    fields = {}
    for n, l, v in fm:
        if n == "fieldseal_fields_total":
            key = (l.get("route"), l.get("action"))
            fields[key] = fields.get(key, 0) + v
    print("fields by route and action: " + ", ".join(f"{r}/{a} {v:.0f}" for (r, a), v in sorted(fields.items())))
    for route, action, k in (("seal", "sealed", 3), ("seal", "masked", 1), ("seal", "redacted", 1),
                             ("open", "opened", 3), ("jwe-rsa", "decrypted", 1), ("jwe-hpke", "decrypted", 1),
                             ("envelope", "envelope_opened", 1), ("envelope", "envelope_sealed", 1)):
        n_req = sum(per_route.get(route, {}).values())
        got = fields.get((route, action), 0)
        # A request cut off when wrk stops can count on one side only.
        if abs(got - k * n_req) > k * args.connections:
            failures.append(f"{route}/{action}: {got:.0f} fields for {n_req:.0f} requests (want {k} each)")
    print()

    delta = lambda name, **want: msum(fm, name, **want) - msum(m_start, name, **want)
    secs = w["duration_us"] / 1e6
    socket_errors = w["connect"] + w["read"] + w["write"] + w["timeout"]
    non2xx = lambda rows: sum(v for n, l, v in rows
                              if n == "fieldseal_requests_total" and not l.get("status", "").startswith("2"))
    proxy_non2xx = non2xx(fm) - non2xx(m_start)
    upstream_errors = delta("fieldseal_upstream_errors_total")
    field_failures = delta("fieldseal_field_failures_total")
    handshake_failures = delta("fieldseal_tls_handshake_failures_total")
    rejected = delta("fieldseal_rejected_connections_total")
    errors = socket_errors + w["status"] + proxy_non2xx + upstream_errors + field_failures + handshake_failures + rejected
    print(f"wrk: {w['requests']} requests in {secs:.1f} s = {w['requests'] / secs:.0f} req/s, "
          f"{w['bytes'] / MIB:.0f} MiB read; latency mean {w['lat_mean_us'] / 1000:.1f} ms, "
          f"p50 {w['lat_p50_us'] / 1000:.1f} ms, p99 {w['lat_p99_us'] / 1000:.1f} ms, max {w['lat_max_us'] / 1000:.1f} ms")
    print(f"proxy: {delta('fieldseal_requests_total'):.0f} requests counted during the load (wrk's + {len(reloads)} "
          f"probes; a request cut off when wrk stops may count on one side only)")
    print(f"errors: {errors:.0f} = wrk connect {w['connect']} + read {w['read']} + write {w['write']} + "
          f"timeout {w['timeout']} + wrk non-2xx {w['status']} + proxy non-2xx {proxy_non2xx:.0f} + "
          f"upstream errors {upstream_errors:.0f} + field failures {field_failures:.0f} + "
          f"TLS handshake failures {handshake_failures:.0f} + rejected connections {rejected:.0f}")
    if errors > 0:
        failures.append(f"{errors:.0f} errors")

    ok_metric = msum(fm, "fieldseal_config_reloads_total", outcome="ok")
    failed_metric = msum(fm, "fieldseal_config_reloads_total", outcome="failed")
    verified = sum(1 for r in reloads if r[2] and r[3])
    print(f"reloads: {len(reloads)} sent; metrics ok {ok_metric:.0f} failed {failed_metric:.0f}; "
          f"log 'configuration reloaded' lines {len(reload_lines)}; verified by probe (new primary kid sealed) {verified}")
    for t, kid, ok, ver, took, detail in reloads:
        print(f"  t={t:>4}s primary {kid:<4} ok={ok} verified={ver} seen in {took * 1000:.0f} ms  {detail}")
    ms = [json.loads(l).get("reload_ms") for l in reload_lines if l.startswith("{")]
    ms = [x for x in ms if isinstance(x, (int, float))]
    if ms:
        print(f"  reload_ms (proxy log): min {min(ms):.1f}, median {statistics.median(ms):.1f}, max {max(ms):.1f}")
    if not (len(reloads) == ok_metric == len(reload_lines) == verified) or failed_metric:
        failures.append("not every reload succeeded and was verified")
    if bad_lines:
        print(f"proxy WARN/ERROR log lines: {len(bad_lines)}; first: {bad_lines[0][:300]}")

    base, final = windows(samples, args.duration)
    if base and final:
        rss_b, rss_f = statistics.mean(s["rss_kib"] for s in base) / 1024, statistics.mean(s["rss_kib"] for s in final) / 1024
        fd_b, fd_f = statistics.mean(s["fds"] for s in base), statistics.mean(s["fds"] for s in final)
        rss_lim = rss_b * (1 + args.rss_tolerance) + 4
        fd_lim = fd_b * (1 + args.fd_tolerance) + 10
        print(f"RSS: baseline window {rss_b:.1f} MiB, final window {rss_f:.1f} MiB (limit {rss_lim:.1f}); "
              f"peak (VmHWM) {max(s['hwm_kib'] for s in samples) / 1024:.1f} MiB")
        print(f"fds: baseline window {fd_b:.0f}, final window {fd_f:.0f} (limit {fd_lim:.0f}); "
              f"idle before {idle_before['fds']}, idle after {after['fds']} (limit {idle_before['fds'] + 5})")
        if rss_f > rss_lim:
            failures.append(f"RSS grew: {rss_b:.1f} → {rss_f:.1f} MiB")
        if fd_f > fd_lim:
            failures.append(f"fds grew: {fd_b:.0f} → {fd_f:.0f}")
    else:
        failures.append("too few samples for the growth check")
    if after["phase"] == "after" and after["fds"] > idle_before["fds"] + 5:
        failures.append(f"fds not released after the load: {idle_before['fds']} idle before, {after['fds']} after")
    print()
    if failures:
        print("VERDICT: FAIL — " + "; ".join(failures))
        return 1
    print("VERDICT: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
