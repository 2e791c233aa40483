#!/usr/bin/env python3
"""CPU time fieldseal spends per request, for several configurations of the same proxy, side by
side: a figure that holds on a shared, noisy machine where req/s do not (the client and the
upstream cost the same in every variant; only the proxy's own CPU is counted).

An nginx static upstream serves the 1 KiB record of ../../../shared/bench/user.json's shape
(the copy in this script, so nothing outside the repository is needed); each variant is a
fieldseal config (TLS 1.3, the same keyring) with extra YAML; `wrk -t1 -c64` loads each in
turn for `--duration` seconds, `--rounds` times (A B C A B C …), and the proxy's utime+stime
from /proc is divided by the requests wrk completed.

    cargo build --release
    python3 benches/load/cpu_per_request.py --fieldseal target/release/fieldseal --rounds 5

Needs nginx, wrk and openssl (Debian: apt-get install nginx wrk openssl).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

RECORD = {
    "id": 1042, "username": "ada.lovelace", "email": "ada@example.com", "full_name": "Ada Lovelace",
    "ssn": "123-45-6789", "password": "correct horse battery staple",
    "created_at": "2026-11-01T09:30:00Z", "roles": ["analyst", "admin"],
    "address": {"street": "12 St James's Square", "city": "London", "postcode": "SW1Y 4JH", "country": "GB"},
    "cards": [{"brand": "visa", "number": "4532015112830366", "exp": "12/28", "holder": "A LOVELACE"}],
    "preferences": {"newsletter": True, "theme": "dark", "language": "en-GB", "timezone": "Europe/London"},
    "notes": "Account opened at the St James's branch; prefers contact by email. " * 6,
    "last_login": {"at": "2026-11-22T18:04:11Z", "ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"},
}
ROUTE = """routes:
  - name: user
    match: { path: "/api/users/{id}", methods: [GET] }
    response:
      encrypt: ["$.ssn", "$.password", { path: "$.cards[*].number", context: "number" }]
"""
POLICY = """fields:
  - { select: "$..ssn", action: encrypt }
  - { select: "$..password", action: encrypt }
  - { select: "$..cards[*].number", action: encrypt, context: number }
  - { select: "$..email", action: encrypt }
"""
GUARD = """guard: { detect: [ssn, card, email], mode: observe }
"""
VARIANTS = {
    "pass-through (P0)": "routes: []\n",
    "route seals 3 (P1)": ROUTE,
    "policy seals 4, no route": POLICY + "routes: []\n",
    "policy seals 4 + guard": POLICY + GUARD + "routes: []\n",
    "route 3 + policy + guard": ROUTE + POLICY + GUARD,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fieldseal", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="fieldseal-cpu-"))
    procs = []
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", d / "key.pem", "-out", d / "cert.pem", "-days", "2",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, capture_output=True)
        os.chmod(d / "key.pem", 0o600)
        www = d / "www" / "api" / "users"
        www.mkdir(parents=True)
        (www / "1").write_text(json.dumps(RECORD, separators=(",", ":")))
        up = free_port()
        (d / "nginx.conf").write_text(f"""daemon off; worker_processes 1; pid {d}/nginx.pid;
error_log {d}/nginx.err; events {{ worker_connections 1024; }}
http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d}; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{up}; root {d}/www; default_type application/json; }} }}""")
        procs.append(subprocess.Popen(["nginx", "-c", str(d / "nginx.conf"), "-p", str(d)], start_new_session=True))
        wait_port(up)
        keyring = d / "keyring.json"
        keyring.write_text(json.dumps({"primary": "k1", "keys": [{
            "id": "k1", "secret": base64.b64encode(bytes(range(32))).decode(),
            "created_at": "2026-11-01T00:00:00Z", "state": "active"}]}))
        os.chmod(keyring, 0o600)
        started = {}
        for i, (name, extra) in enumerate(VARIANTS.items()):
            port, admin = free_port(), free_port()
            cfg = d / f"v{i}.yaml"
            cfg.write_text(f'listen: "127.0.0.1:{port}"\nupstream: "http://127.0.0.1:{up}"\n'
                           f'admin: "127.0.0.1:{admin}"\ntls: {{ cert: "{d}/cert.pem", key: "{d}/key.pem" }}\n'
                           f'keys: {{ keyring: "{keyring}" }}\n{extra}')
            p = subprocess.Popen([str(args.fieldseal), "run", "--config", str(cfg)], start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=dict(os.environ, FIELDSEAL_LOG="warn"))
            procs.append(p)
            wait_port(port)
            started[name] = (p, port)
        results = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name, (p, port) in started.items():
                before = cpu_seconds(p.pid)
                out = subprocess.run(["wrk", "-t1", "-c64", f"-d{args.duration}s",
                                      f"https://127.0.0.1:{port}/api/users/1"],
                                     capture_output=True, text=True, check=True).stdout
                used = cpu_seconds(p.pid) - before
                requests = int(re.search(r"(\d+) requests in", out).group(1))
                if "Non-2xx" in out:
                    raise SystemExit(f"{name}: non-2xx answers:\n{out}")
                results[name].append(used / requests * 1e6)
        base = statistics.median(results["pass-through (P0)"])
        print(f"{'variant':28} {'CPU µs/request (median)':>24}  {'vs P0':>6}  rounds")
        for name, values in results.items():
            m = statistics.median(values)
            print(f"{name:28} {m:24.1f}  {m / base:6.2f}  " + ", ".join(f"{v:.1f}" for v in values))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
