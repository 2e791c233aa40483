#!/usr/bin/env python3
"""Load test of routes receiving client-encrypted fields: req/s through the release binary for
one `PUT` body carrying a value as plaintext, an fs1 token, a JWE under RSA-2048 / RSA-3072, an
HPKE JWE under X25519 and a post-quantum one under X-Wing (`HPKE-10`). The upstream is nginx
answering 200 without reading the JSON, so the figures are the proxy's cost. Rounds alternate
the cases (A B C … A B C …) and medians are printed.

Then, for scale, what the same opens cost an app that does them itself in Python (`cryptography`,
one core, µs per value): RSA-OAEP-256 + AES-GCM, and HPKE under X25519 and X-Wing.

    cargo build --release
    .venv/bin/python benches/load/client_values.py [--duration 8] [--rounds 3] [--connections 32]

Needs nginx and wrk, plus the test venv (jwcrypto, pyhpke, cryptography).
Not part of the test suite: the numbers are noisy on a shared 2-core machine.
"""
import argparse
import base64
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, x25519
from jwcrypto import jwe, jwk
from jwcrypto.common import json_encode
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "python"))
import pq_helpers as pq  # noqa: E402  (the tests' HPKE-10 client)
SSN = "123-45-6789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def rsa_jwe(key) -> str:
    public = jwk.JWK.from_pyca(key.public_key())
    token = jwe.JWE(SSN.encode(), protected=json_encode(
        {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": public.thumbprint()}))
    token.add_recipient(public)
    return token.serialize(compact=True)


def hpke_jwe(key) -> str:
    public = jwk.JWK.from_pyca(key.public_key())
    suite = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)
    header = b64url(json.dumps({"alg": "HPKE-X25519-A256GCM", "kid": public.thumbprint()}).encode())
    enc, sender = suite.create_sender_context(KEMKey.from_jwk(json.loads(public.export_public())), info=b"")
    return ".".join([header, b64url(enc), "", b64url(sender.seal(SSN.encode(), aad=header.encode())), ""])


def xwing_jwe(seed: bytes) -> str:
    pub = b64url(pq.public_key(seed))
    canonical = json.dumps({"alg": "HPKE-10", "kty": "AKP", "pub": pub}, separators=(",", ":"))
    import hashlib
    kid = b64url(hashlib.sha256(canonical.encode()).digest())
    header = b64url(json.dumps({"alg": "HPKE-10", "kid": kid}).encode())
    enc, ct = pq.seal(pq.public_key(seed), b"", header.encode(), SSN.encode())
    return ".".join([header, b64url(enc), "", b64url(ct), ""])


def in_app_costs(r2048, x, seed, n: int = 400) -> dict:
    """µs per open when a Python app does it itself with `cryptography`."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import hpke
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    cek, nonce = os.urandom(32), os.urandom(12)
    wrapped, sealed = r2048.public_key().encrypt(cek, oaep), AESGCM(cek).encrypt(nonce, SSN.encode(), b"h")
    x_suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    x_ct = x_suite.encrypt(SSN.encode(), x.public_key())
    w_key = pq.private_key(seed)
    w_ct = pq.CRYPTOGRAPHY_SUITE.encrypt(SSN.encode(), w_key.public_key())
    ops = {
        "RSA-OAEP-256 (2048) + AES-GCM": lambda: AESGCM(r2048.decrypt(wrapped, oaep)).decrypt(nonce, sealed, b"h"),
        "HPKE X25519": lambda: x_suite.decrypt(x_ct, x),
        "HPKE X-Wing (ML-KEM-768 + X25519)": lambda: pq.CRYPTOGRAPHY_SUITE.decrypt(w_ct, w_key),
    }
    out = {}
    for name, op in ops.items():
        op()
        start = time.perf_counter()
        for _ in range(n):
            op()
        out[name] = (time.perf_counter() - start) / n * 1e6
    return out


def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def wrk(url: str, body: Path, seconds: int, connections: int) -> float:
    """req/s of `PUT url` with `body` (HTTP/1.1 over TLS, 2 threads); every answer must be 200."""
    script = body.with_suffix(".lua")
    script.write_text(f"wrk.method = 'PUT'\nwrk.body = {json.dumps(body.read_text())}\n"
                      "wrk.headers['Content-Type'] = 'application/json'\n")
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
                         check=True, capture_output=True, text=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"non-200 responses:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fieldseal", default=str(ROOT / "target" / "release" / "fieldseal"))
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()

    d = Path(tempfile.mkdtemp(prefix="fieldseal-load-"))
    procs = []
    try:
        nginx_port = free_port()
        (d / "nginx.conf").write_text(f"""
worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; client_body_buffer_size 16k;
  server {{ listen 127.0.0.1:{nginx_port}; location / {{ return 200 '{{"ok":true}}'; }} }} }}
""")
        procs.append(subprocess.Popen(["nginx", "-c", str(d / "nginx.conf")]))
        wait_port(nginx_port)

        subprocess.run([args.fieldseal, "keys", "init", "--out", str(d / "keyring.json")], check=True,
                       capture_output=True)
        r2048, r3072, x = rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 3072), \
            x25519.X25519PrivateKey.generate()
        for name, key in (("r2048", r2048), ("r3072", r3072), ("x", x)):
            write_key(d / f"{name}.pem", key)
        seed = os.urandom(32)
        (d / "w.pem").write_bytes(pq.pem(seed))
        (d / "w.pem").chmod(0o600)
        # A self-signed certificate for the listener.
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", str(d / "tls.key"), "-out", str(d / "tls.crt"), "-days", "1",
                        "-subj", "/CN=localhost"], check=True, capture_output=True)
        (d / "tls.key").chmod(0o600)
        port = free_port()
        (d / "fieldseal.yaml").write_text(f"""listen: "127.0.0.1:{port}"
upstream: "http://127.0.0.1:{nginx_port}"
admin: "127.0.0.1:0"
tls: {{ cert: "{d}/tls.crt", key: "{d}/tls.key" }}
keys:
  keyring: "{d}/keyring.json"
  rsa_private_key: ["{d}/r2048.pem", "{d}/r3072.pem"]
  hpke_private_key: ["{d}/x.pem", "{d}/w.pem"]
routes:
  - name: fields
    match: {{ path: "/api/users/{{id}}", methods: [PUT] }}
    request: {{ decrypt: ["$.ssn"] }}
""")
        env = dict(os.environ, FIELDSEAL_LOG="warn")
        procs.append(subprocess.Popen([args.fieldseal, "run", "--config", str(d / "fieldseal.yaml")], env=env))
        wait_port(port)

        token = subprocess.run([args.fieldseal, "seal", "--keyring", str(d / "keyring.json"), "--context", "ssn",
                                json.dumps(SSN)], check=True, capture_output=True, text=True).stdout.strip()
        cases = {
            "plaintext": SSN,
            "fs1 token": token,
            "JWE RSA-2048": rsa_jwe(r2048),
            "JWE RSA-3072": rsa_jwe(r3072),
            "JWE HPKE X25519": hpke_jwe(x),
            "JWE HPKE-10 X-Wing": xwing_jwe(seed),
        }
        bodies = {}
        for name, value in cases.items():
            path = d / (re.sub(r"\W+", "_", name) + ".json")
            path.write_text(json.dumps({"id": 7, "name": "Ada", "ssn": value}))
            bodies[name] = path
        url = f"https://localhost:{port}/api/users/7"
        results = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, body in bodies.items():
                results[name].append(wrk(url, body, args.duration, args.connections))
        print(f"{'value at $.ssn':<20} {'value bytes':>11} {'median req/s':>13}  rounds")
        for name, rates in results.items():
            print(f"{name:<20} {len(cases[name]):>11} {statistics.median(rates):>13.0f}  "
                  + ", ".join(f"{r:.0f}" for r in rates))
        print("\nthe same opens in a Python app (cryptography), µs per value:")
        for name, us in in_app_costs(r2048, x, seed).items():
            print(f"  {name:<36} {us:>8.1f}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
