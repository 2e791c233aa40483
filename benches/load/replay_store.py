#!/usr/bin/env python3
"""What the shared replay store costs: the same proxy and route, a JWE with a fresh `jti` in every
request, with `replay.store: memory` and with `replay.store: redis` (Debian's redis-server on
loopback), side by side. Rounds alternate the variants (A B A B …); printed per variant: the
median and p99 latency of sequential requests (one client, keep-alive: what one round trip to
Redis adds), and the proxy's CPU time per request from /proc (utime+stime over the requests
sent), then the ratios redis / memory.

    cargo build --release
    .venv/bin/python benches/load/replay_store.py [--requests 1500] [--rounds 3]

Needs redis-server (apt-get install redis-server) and the test venv (jwcrypto, httpx). The
upstream is a tiny in-process HTTP server answering 200, so the figures are the proxy's. Not part
of the test suite: latencies are noisy on a shared 2-core machine.
"""
import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from jwcrypto import jwe, jwk
from jwcrypto.common import json_encode

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


class Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # One write per answer and no Nagle: otherwise delayed ACKs add ~40 ms per request.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_PUT(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: 2\r\n\r\n{}")

    def log_message(self, *args):
        pass


def secret(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def cert(d: Path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = __import__("datetime").datetime.now(__import__("datetime").timezone.utc)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now)
         .not_valid_after(now + __import__("datetime").timedelta(days=1))
         .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
         .sign(key, hashes.SHA256()))
    (d / "cert.pem").write_bytes(c.public_bytes(serialization.Encoding.PEM))
    secret(d / "key.pem", key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fieldseal", default=str(ROOT / "target" / "release" / "fieldseal"))
    ap.add_argument("--requests", type=int, default=1500, help="per variant and round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="replay-bench-"))
    cert(d)
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(d)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(redis_port)
    subprocess.run([args.fieldseal, "keys", "init", "--out", str(d / "keyring.json")], check=True,
                   capture_output=True)
    key = rsa.generate_private_key(65537, 2048)
    secret(d / "rsa.pem", key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    secret(d / "replay.key", base64.b64encode(os.urandom(32)))
    variants = {
        "memory": "",
        "redis": f'replay:\n  store: redis\n  redis: {{ url: "redis://127.0.0.1:{redis_port}/0", '
                 f'key_file: "{d / "replay.key"}" }}\n',
    }
    procs, ports = {}, {}
    for name, extra in variants.items():
        port, admin = free_port(), free_port()
        cfg = d / f"{name}.yaml"
        cfg.write_text(f"""listen: "127.0.0.1:{port}"
admin: "127.0.0.1:{admin}"
upstream: "http://127.0.0.1:{upstream.server_port}"
tls: {{ cert: "{d / 'cert.pem'}", key: "{d / 'key.pem'}" }}
keys: {{ keyring: "{d / 'keyring.json'}", rsa_private_key: "{d / 'rsa.pem'}" }}
routes:
  - name: put
    match: {{ path: "/x", methods: [PUT] }}
    request: {{ decrypt: ["$.ssn"] }}
{extra}""")
        procs[name] = subprocess.Popen([args.fieldseal, "run", "--config", str(cfg)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        ports[name] = port
    public = jwk.JWK.from_pem(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    kid = httpx.get(f"https://localhost:{ports['memory']}/.well-known/fieldseal/jwks.json",
                    verify=False).json()["keys"][0]["kid"]
    total = args.requests * args.rounds * len(variants)
    print(f"making {total} JWEs (RSA-OAEP-256, a fresh jti each) ...", file=sys.stderr)
    header = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": kid}
    bodies = []
    for _ in range(total):
        token = jwe.JWE(b'"123-45-6789"', protected=json_encode({**header, "jti": str(uuid.uuid4())}))
        token.add_recipient(public)
        bodies.append(json.dumps({"ssn": token.serialize(compact=True)}).encode())
    latencies = {name: [] for name in variants}
    cpu = {name: [0.0, 0] for name in variants}
    clients = {name: httpx.Client(verify=False, timeout=10) for name in variants}
    for name in variants:  # warm up each connection
        clients[name].put(f"https://localhost:{ports[name]}/x", content=b'{"ssn":"plain"}',
                          headers={"content-type": "application/json"})
    it = iter(bodies)
    for _ in range(args.rounds):
        for name in variants:
            url = f"https://localhost:{ports[name]}/x"
            before = cpu_seconds(procs[name].pid)
            for _ in range(args.requests):
                body = next(it)
                t = time.perf_counter()
                r = clients[name].put(url, content=body, headers={"content-type": "application/json"})
                latencies[name].append(time.perf_counter() - t)
                assert r.status_code == 200, (name, r.status_code, r.text)
            cpu[name][0] += cpu_seconds(procs[name].pid) - before
            cpu[name][1] += args.requests
    print(f"{'store':<8} {'median ms':>10} {'p99 ms':>8} {'proxy CPU µs/req':>17}")
    summary = {}
    for name in variants:
        lat = sorted(latencies[name])
        median, p99 = statistics.median(lat) * 1e3, lat[int(len(lat) * 0.99)] * 1e3
        per = cpu[name][0] / cpu[name][1] * 1e6
        summary[name] = (median, p99, per)
        print(f"{name:<8} {median:>10.3f} {p99:>8.3f} {per:>17.1f}")
    m, r = summary["memory"], summary["redis"]
    print(f"redis / memory: median {r[0] / m[0]:.2f}x (+{r[0] - m[0]:.3f} ms), p99 {r[1] / m[1]:.2f}x, "
          f"CPU {r[2] / m[2]:.2f}x (+{r[2] - m[2]:.1f} µs)")
    for p in procs.values():
        p.terminate()
    redis.terminate()
    upstream.shutdown()


if __name__ == "__main__":
    main()
