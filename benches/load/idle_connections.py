#!/usr/bin/env python3
"""Resident memory of fieldseal holding 1,000 idle TLS 1.3 keep-alive connections, each after
one proxied request (the sealing route of `peers.py`, same set-up): the process's RSS before and
after, and the growth per connection.

    cargo build --release
    python3 benches/load/idle_connections.py [--connections 1000]

Needs nginx and openssl. Not part of the test suite.
"""
import argparse
import importlib.util
import resource
import socket
import ssl
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("peers", HERE / "peers.py")
peers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peers)


def one_request(sock: ssl.SSLSocket) -> None:
    sock.sendall(b"GET " + peers.PATH.encode() + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head[:40]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fieldseal", type=Path, default=HERE.parents[1] / "target/release/fieldseal")
    ap.add_argument("--connections", type=int, default=1000)
    args = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    p = peers.Peers(argparse.Namespace(fieldseal=args.fieldseal, rounds=1, duration=1))
    try:
        p.setup()
        pid, port = p.fs["seal"][0].pid, p.fs["seal"][1]
        ctx = ssl.create_default_context(cafile=str(p.dir / "cert.pem"))
        time.sleep(0.5)
        before = peers.smaps(pid)[0]
        held = []
        for _ in range(args.connections):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
            one_request(s)
            held.append(s)
        time.sleep(1.0)
        after = peers.smaps(pid)[0]
        print(f"RSS idle {before / 1024:.1f} MiB; with {args.connections} idle connections "
              f"{after / 1024:.1f} MiB; {(after - before) / args.connections:.1f} KiB per connection")
    finally:
        p.stop()


if __name__ == "__main__":
    main()
