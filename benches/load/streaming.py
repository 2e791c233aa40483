#!/usr/bin/env python3
"""A large JSON export through fieldseal, sealed as it streams, beside the same bytes through a
pass-through route of the same proxy: wall time of a whole download (curl, HTTP/1.1 over TLS)
and the proxy's peak resident memory above its idle level (sampled from /proc every 20 ms),
rounds alternated (A B A B …), medians printed with the ratio.

    cargo build --release
    python3 benches/load/streaming.py [--mib 256] [--rounds 3]

The upstream is nginx serving a generated file: a JSON array of records of ~250 bytes, each
with one SSN the sealed route encrypts (`$[*].ssn`). Needs nginx, curl and openssl. Not part of
the test suite.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int):
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fieldseal", default=str(ROOT / "target" / "release" / "fieldseal"))
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    d.chmod(0o755)
    www = d / "www"
    www.mkdir()
    www.chmod(0o755)
    export = www / "export.json"
    target = args.mib << 20
    with open(export, "wb") as f:
        f.write(b"[")
        i, size = 0, 1
        while size < target:
            rec = json.dumps({"id": i, "name": "Ada Lovelace", "ssn": f"{i:09d}",
                              "note": "n" * 180}).encode()
            f.write((b"," if i else b"") + rec)
            size += len(rec) + 1
            i += 1
        f.write(b"]")
    export.chmod(0o644)
    records = i
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem")], check=True, capture_output=True)
    up = free_port()
    (d / "nginx.conf").write_text(f"""worker_processes 1; pid {d}/nginx.pid; error_log {d}/nginx.err warn; daemon off;
events {{ worker_connections 64; }}
http {{ access_log off; default_type application/json;
  client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
  server {{ listen 127.0.0.1:{up}; root {www};
    location /sealed/ {{ alias {www}/; }} location /plain/ {{ alias {www}/; }} }} }}
""")
    nginx = subprocess.Popen(["nginx", "-c", str(d / "nginx.conf"), "-p", str(d)])
    wait_port(up)
    subprocess.run([args.fieldseal, "keys", "init", "--out", str(d / "keyring.json")], check=True,
                   capture_output=True)
    port, admin = free_port(), free_port()
    (d / "fieldseal.yaml").write_text(f"""listen: "127.0.0.1:{port}"
admin: "127.0.0.1:{admin}"
upstream: "http://127.0.0.1:{up}"
tls: {{ cert: "{d / 'cert.pem'}", key: "{d / 'key.pem'}" }}
keys: {{ keyring: "{d / 'keyring.json'}" }}
timeouts: {{ upstream_response: 10m }}
routes:
  - name: sealed
    match: {{ path: "/sealed/**" }}
    response: {{ encrypt: ["$[*].ssn"] }}
  - name: plain
    match: {{ path: "/plain/**" }}
""")
    proxy = subprocess.Popen([args.fieldseal, "run", "--config", str(d / "fieldseal.yaml")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    results = {"plain": [], "sealed": []}
    for _ in range(args.rounds):
        for name in ("plain", "sealed"):
            idle = rss_kib(proxy.pid)
            peak = [idle]
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_kib(proxy.pid))
                    time.sleep(0.02)

            t = threading.Thread(target=sample)
            t.start()
            out = d / f"{name}.out"
            started = time.perf_counter()
            subprocess.run(["curl", "-sk", "--http1.1", "-o", str(out),
                            f"https://127.0.0.1:{port}/{name}/export.json"], check=True)
            wall = time.perf_counter() - started
            stop.set()
            t.join()
            got = out.stat().st_size
            if name == "sealed":
                with open(out, "rb") as f:
                    head = f.read(4096)
                assert b'"ssn": "fs1.' in head, head[:200]
            results[name].append((wall, (peak[0] - idle) / 1024, got))
            out.unlink()
    proxy.terminate()
    nginx.terminate()
    print(f"{args.mib} MiB JSON array, {records} records, one sealed field each; "
          f"{args.rounds} rounds, medians")
    for name in ("plain", "sealed"):
        walls = [w for w, _, _ in results[name]]
        rss = [r for _, r, _ in results[name]]
        print(f"  {name:<7} wall {statistics.median(walls):6.2f} s   peak RSS growth "
              f"{statistics.median(rss):6.1f} MiB   ({results[name][0][2] >> 20} MiB out)")
    ratio = statistics.median(w for w, _, _ in results["sealed"]) / \
        statistics.median(w for w, _, _ in results["plain"])
    print(f"  sealed / plain wall time: {ratio:.2f}x")


if __name__ == "__main__":
    main()
