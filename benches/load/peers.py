#!/usr/bin/env python3
"""fieldseal beside nginx as a TLS 1.3 reverse proxy, every row of issue 18's table in one run:
HTTP/1.1 pass-through (P0) and sealing 3 fields of a 1 KiB record (P1) under `wrk`, HTTP/2
sealing under `h2load` with one and two client threads, and resident memory while `wrk` holds
1,000 keep-alive connections. Rounds alternate (fieldseal, nginx, fieldseal, nginx …) and the
ratios of medians are printed, which hold on a shared, noisy machine where absolute figures do
not, beside each proxy's own CPU time per request (utime + stime from /proc over the run divided
by the requests completed: the steadiest figure on such a machine). (`streaming.py` measures
the table's large-export row.)

    cargo build --release
    python3 benches/load/peers.py [--rounds 5] [--duration 8]

Both proxies sit in front of the same nginx static upstream serving the record, with the same
certificate, TLS 1.3 only, upstream keep-alive, and the same three security headers added
(nginx: `add_header`); nginx runs 2 worker processes, fieldseal its default (one worker thread
per CPU) with `MIMALLOC_ARENA_EAGER_COMMIT=0` as the image sets it (unless the environment says
otherwise). Every fieldseal answer is checked first: the three fields must be `fs1` tokens.
Memory is RSS of the fieldseal process and, for nginx, of its master and workers together
(RSS, which counts the workers' shared pages once each, and PSS, which splits them), sampled
every 100 ms while the 1,000 connections are loaded; the peak is printed.

Needs nginx, wrk, h2load (Debian: nginx wrk nghttp2-client) and openssl. Not part of the test
suite.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import resource
import shutil
import signal
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

# The same record, route and helpers as `cpu_per_request.py` (one definition of the P1 shape).
from cpu_per_request import RECORD, ROUTE, free_port, wait_port  # noqa: E402

PATH = "/api/users/1"


def smaps(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def cpu_seconds(pids) -> float:
    """utime + stime of `pids` together."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Peers:
    def __init__(self, args):
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="fieldseal-peers-"))
        self.dir.chmod(0o755)
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd, port, env=None) -> subprocess.Popen:
        p = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
        self.procs.append(p)
        wait_port(port)
        return p

    def nginx(self, name: str, block: str) -> list[str]:
        d = self.dir
        (d / f"{name}.conf").write_text(f"""daemon off; worker_processes 2; pid {d}/{name}.pid;
error_log {d}/{name}.err warn; events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {d}/{name}-b; proxy_temp_path {d}/{name}-p;
  fastcgi_temp_path {d}/{name}-f; uwsgi_temp_path {d}/{name}-u; scgi_temp_path {d}/{name}-s;
  keepalive_requests 1000000; {block} }}""")
        return ["nginx", "-c", str(d / f"{name}.conf"), "-p", str(d)]

    def setup(self):
        d = self.dir
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", d / "key.pem", "-out", d / "cert.pem", "-days", "2",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, capture_output=True)
        os.chmod(d / "key.pem", 0o600)
        www = d / "www" / "api" / "users"
        www.mkdir(parents=True)
        for p in (d / "www", d / "www" / "api", www):
            p.chmod(0o755)
        (www / "1").write_text(json.dumps(RECORD, separators=(",", ":")))
        (www / "1").chmod(0o644)
        self.up = free_port()
        self.start(self.nginx("upstream", f"server {{ listen 127.0.0.1:{self.up}; root {d}/www; "
                                          "default_type application/json; }"), self.up)
        self.ngx = free_port()
        self.ngx_proc = self.start(self.nginx("proxy", f"""
  upstream app {{ server 127.0.0.1:{self.up}; keepalive 64; }}
  server {{ listen 127.0.0.1:{self.ngx} ssl http2; ssl_protocols TLSv1.3;
    ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
      add_header Strict-Transport-Security "max-age=63072000; includeSubDomains" always;
      add_header Content-Security-Policy "default-src 'none'; frame-ancestors 'none'" always;
      add_header X-Content-Type-Options nosniff always; }} }}"""), self.ngx)
        keyring = d / "keyring.json"
        keyring.write_text(json.dumps({"primary": "k1", "keys": [{
            "id": "k1", "secret": base64.b64encode(bytes(range(32))).decode(),
            "created_at": "2026-11-01T00:00:00Z", "state": "active"}]}))
        os.chmod(keyring, 0o600)
        self.fs = {}
        for name, extra in (("pass", "routes: []\n"), ("seal", ROUTE)):
            port, admin = free_port(), free_port()
            cfg = d / f"{name}.yaml"
            cfg.write_text(f'listen: "127.0.0.1:{port}"\nupstream: "http://127.0.0.1:{self.up}"\n'
                           f'admin: "127.0.0.1:{admin}"\ntls: {{ cert: "{d}/cert.pem", key: "{d}/key.pem" }}\n'
                           f'keys: {{ keyring: "{keyring}" }}\nlimits: {{ max_connections: 4096 }}\n{extra}')
            p = self.start([str(self.args.fieldseal), "run", "--config", str(cfg)], port,
                           env={"MIMALLOC_ARENA_EAGER_COMMIT": "0", **os.environ, "FIELDSEAL_LOG": "warn"})
            self.fs[name] = (p, port)
        self.check()

    def check(self):
        ctx = ssl.create_default_context(cafile=str(self.dir / "cert.pem"))
        body = urllib.request.urlopen(f"https://127.0.0.1:{self.fs['seal'][1]}{PATH}", context=ctx).read()
        doc = json.loads(body)
        for value in (doc["ssn"], doc["password"], doc["cards"][0]["number"]):
            assert value.startswith("fs1."), value
        plain = json.loads(urllib.request.urlopen(f"https://127.0.0.1:{self.ngx}{PATH}", context=ctx).read())
        assert plain["ssn"] == RECORD["ssn"]

    def wrk(self, port: int, pids) -> tuple[float, float]:
        """(req/s, the proxy's CPU µs per request)."""
        before = cpu_seconds(pids())
        out = subprocess.run(["wrk", "-t1", "-c64", f"-d{self.args.duration}s",
                              f"https://127.0.0.1:{port}{PATH}"], capture_output=True, text=True,
                             check=True).stdout
        used = cpu_seconds(pids()) - before
        if "Non-2xx" in out or "Socket errors" in out:
            raise SystemExit(f"errors under load:\n{out}")
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), used / requests * 1e6

    def h2load(self, port: int, threads: int, pids) -> tuple[float, float]:
        before = cpu_seconds(pids())
        out = subprocess.run(["h2load", f"-t{threads}", "-c64", "-m10", f"-D{self.args.duration}",
                              f"https://127.0.0.1:{port}{PATH}"], capture_output=True, text=True,
                             check=True).stdout
        used = cpu_seconds(pids()) - before
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
        if not done or done.group(3) != "0" or done.group(1) != done.group(2):
            raise SystemExit(f"h2load failures:\n{out}")
        return (float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1)),
                used / int(done.group(2)) * 1e6)

    def memory_under_load(self, pids, port: int) -> tuple[int, int]:
        """Peak (RSS, PSS) in KiB of `pids()` together while wrk holds 1,000 connections."""
        peak = [0, 0]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                total = [0, 0]
                for pid in pids():
                    rss, pss = smaps(pid)
                    total[0] += rss
                    total[1] += pss
                peak[0], peak[1] = max(peak[0], total[0]), max(peak[1], total[1])
                time.sleep(0.1)

        t = threading.Thread(target=sample)
        t.start()
        try:
            out = subprocess.run(["wrk", "-t2", "-c1000", f"-d{self.args.duration}s",
                                  f"https://127.0.0.1:{port}{PATH}"], capture_output=True, text=True,
                                 check=True).stdout
        finally:
            stop.set()
            t.join()
        if "Non-2xx" in out or "Socket errors" in out:
            raise SystemExit(f"errors with 1,000 connections:\n{out}")
        return peak[0], peak[1]

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fieldseal", type=Path, default=Path(__file__).resolve().parents[2] / "target/release/fieldseal")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=8)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    peers = Peers(args)
    try:
        peers.setup()
        seal_pid, seal_port = peers.fs["seal"][0].pid, peers.fs["seal"][1]
        pass_pid, pass_port = peers.fs["pass"][0].pid, peers.fs["pass"][1]
        ngx_master = peers.ngx_proc.pid

        def ngx_pids():
            return [ngx_master, *children(ngx_master)]

        rows = [
            ("P0 pass-through, HTTP/1.1 wrk -t1 -c64", lambda: peers.wrk(pass_port, lambda: [pass_pid]),
             lambda: peers.wrk(peers.ngx, ngx_pids)),
            ("P1 sealing 3 fields, HTTP/1.1 wrk -t1 -c64", lambda: peers.wrk(seal_port, lambda: [seal_pid]),
             lambda: peers.wrk(peers.ngx, ngx_pids)),
            ("HTTP/2 sealing, h2load -t1 -c64 -m10", lambda: peers.h2load(seal_port, 1, lambda: [seal_pid]),
             lambda: peers.h2load(peers.ngx, 1, ngx_pids)),
            ("HTTP/2 sealing, h2load -t2 -c64 -m10", lambda: peers.h2load(seal_port, 2, lambda: [seal_pid]),
             lambda: peers.h2load(peers.ngx, 2, ngx_pids)),
        ]
        print(f"{'req/s (median)':46} {'fieldseal':>10} {'nginx':>10} {'ratio':>6}  "
              f"{'CPU µs/req':>10} {'nginx':>6}  rounds (ratio)")
        for name, a, b in rows:
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(a())
                theirs.append(b())
            ratios = ", ".join(f"{x[0] / y[0]:.2f}" for x, y in zip(ours, theirs))
            mo, mt = statistics.median(x[0] for x in ours), statistics.median(y[0] for y in theirs)
            co, ct = statistics.median(x[1] for x in ours), statistics.median(y[1] for y in theirs)
            print(f"{name:46} {mo:10.0f} {mt:10.0f} {mo / mt:6.2f}  {co:10.1f} {ct:6.1f}  {ratios}",
                  flush=True)
        # Memory: sealing fieldseal and the nginx proxy, each loaded in turn (the peak of a
        # run varies by several MiB with how many requests are in flight when it is sampled).
        ours, theirs = [], []
        for _ in range(min(args.rounds, 3)):
            ours.append(peers.memory_under_load(lambda: [seal_pid], seal_port))
            theirs.append(peers.memory_under_load(ngx_pids, peers.ngx))
        for i, kind in enumerate(("RSS", "PSS")):
            mo = statistics.median(x[i] for x in ours) / 1024
            mt = statistics.median(y[i] for y in theirs) / 1024
            each = ", ".join(f"{x[i] / 1024:.1f}/{y[i] / 1024:.1f}" for x, y in zip(ours, theirs))
            print(f"{'peak memory, wrk -t2 -c1000 (MiB), ' + kind:46} {mo:10.1f} {mt:10.1f} {mo / mt:6.2f}  "
                  f"{'':17}  {each}")
    finally:
        peers.stop()


if __name__ == "__main__":
    main()
