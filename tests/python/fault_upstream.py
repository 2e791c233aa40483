"""A raw HTTP/1.1 upstream that misbehaves on demand, and raw clients that can misbehave too.

`FaultUpstream` counts every connection and every request head it receives, so tests can assert
what reached (or never reached) the app. Behaviour is chosen per server (`mode`,
`close_after_response`) or by the last segment of the request path:

    .../hang                   read the request, never answer (until the peer or the test closes)
    .../slow?ms=N              answer after N ms
    .../drip?chunks=N&ms=M     JSON body, chunked, N pieces M ms apart; with `gate=1` the first
                               piece is sent, then the rest only once `upstream.gate` is set
                               (at most 5 s): proves a client saw bytes before the body ended
    .../truncate?how=reset|fin&te=cl|chunked
                               a 200 whose body stops half way: RST (SO_LINGER 0) or FIN
    anything else              200 JSON {"path", "method", "n", "body_len"} with Content-Length
"""
import json
import re
import selectors
import socket
import ssl
import struct
import threading
import time
import urllib.request
from urllib.parse import parse_qs, urlsplit

import hpack
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              RstStreamFrame, SettingsFrame)

from raw_http import tls_connect

SENSITIVE = "123-45-6789"


class FaultUpstream:
    def __init__(self, port: int = 0, mode: str = "normal", close_after_response: bool = False,
                 close_delay: float = 0.0):
        self.mode = mode  # normal | close_on_accept | reset_on_accept
        # Close each connection after its response, without `Connection: close`; with a delay,
        # whatever the proxy sends meanwhile is never read (the keep-alive race of real apps).
        self.close_after_response = close_after_response
        self.close_delay = close_delay
        self.port = port
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.connections = 0
        self.hanging = 0  # /hang requests waiting right now, and the most at once
        self.max_hanging = 0
        self.gate = threading.Event()
        self.gate_seen = None
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._listener = None
        self._thread = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "FaultUpstream":
        self._stop = threading.Event()
        lsock = socket.socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", self.port))
        lsock.listen(512)
        self.port = lsock.getsockname()[1]
        self._listener = lsock
        self._thread = threading.Thread(target=self._accept_loop, args=(lsock, self._stop), daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stops listening and closes every open connection (FIN), as a dying app would."""
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if self._listener:
            self._listener.close()
            self._listener = None
        with self.lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def restart(self):
        self.stop()
        self.start()

    # -- counters ----------------------------------------------------------------------------
    def count(self, path: str | None = None, method: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests
                       if (path is None or r["path"] == path) and (method is None or r["method"] == method))

    def bodies(self, path: str) -> list[bytes]:
        with self.lock:
            return [r["body"] for r in self.requests if r["path"] == path]

    # -- serving -----------------------------------------------------------------------------
    def _accept_loop(self, lsock, stop):
        sel = selectors.DefaultSelector()
        sel.register(lsock, selectors.EVENT_READ)
        while not stop.is_set():
            if not sel.select(0.05):
                continue
            try:
                conn, _ = lsock.accept()
            except OSError:
                continue
            with self.lock:
                self.connections += 1
            if self.mode == "close_on_accept":
                conn.close()
                continue
            if self.mode == "reset_on_accept":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            with self.lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn, stop), daemon=True).start()
        sel.close()

    def _forget(self, conn):
        with self.lock:
            self._conns.discard(conn)
        try:
            conn.close()
        except OSError:
            pass

    def _serve(self, conn, stop):
        buf = b""
        try:
            while not stop.is_set():
                head, buf = _read_until(conn, buf, b"\r\n\r\n", stop)
                if head is None:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body, buf = _read_body(conn, buf, headers, stop)
                if body is None:
                    return
                url = urlsplit(target)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                with self.lock:
                    self.requests.append({"method": method, "path": url.path, "query": query,
                                          "headers": headers, "body": body, "t": time.time()})
                    n = len(self.requests)
                if not self._respond(conn, method, url.path, query, body, n, stop):
                    return
                if self.close_after_response:
                    # No `Connection: close` was sent: the proxy pooled this connection.
                    if self.close_delay:
                        time.sleep(self.close_delay)
                    conn.shutdown(socket.SHUT_RDWR)
                    return
        except OSError:
            return
        finally:
            self._forget(conn)

    def _respond(self, conn, method, path, query, body, n, stop) -> bool:
        """Writes the response; False when the connection must end."""
        leaf = path.rstrip("/").rsplit("/", 1)[-1]
        if leaf == "hang":
            with self.lock:
                self.hanging += 1
                self.max_hanging = max(self.max_hanging, self.hanging)
            try:
                _wait_for_close(conn, stop, 3600)
            finally:
                with self.lock:
                    self.hanging -= 1
            return False
        if leaf == "slow":
            time.sleep(int(query.get("ms", "1000")) / 1000)
        if leaf == "drip":
            return self._drip(conn, query)
        if leaf == "truncate":
            doc = json.dumps({"pad": "x" * 100_000}).encode()
            part = doc[:20_000]
            if query.get("te") == "chunked":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n" + _chunk(part))
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(doc) + part)
            time.sleep(0.2)
            if query.get("how") == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                conn.shutdown(socket.SHUT_RDWR)
            return False
        doc = json.dumps({"path": path, "method": method, "n": n, "body_len": len(body)}).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                     % len(doc) + doc)
        return True

    def _drip(self, conn, query) -> bool:
        chunks = int(query.get("chunks", "5"))
        delay = int(query.get("ms", "100")) / 1000
        pieces = [b'{"ssn": "' + SENSITIVE.encode() + b'", "pad": ['] + \
                 [b'"%s",' % (b"p" * 100) for _ in range(chunks - 2)] + [b'"end"]}']
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + _chunk(pieces[0]))
        if query.get("gate") == "1":
            self.gate_seen = self.gate.wait(5)
        for piece in pieces[1:]:
            time.sleep(delay)
            conn.sendall(_chunk(piece))
        conn.sendall(b"0\r\n\r\n")
        return True


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _recv(conn, stop):
    conn.settimeout(0.2)
    while not stop.is_set():
        try:
            return conn.recv(65536)
        except socket.timeout:
            continue
    return b""


def _read_until(conn, buf, marker, stop):
    while marker not in buf:
        data = _recv(conn, stop)
        if not data:
            return None, buf
        buf += data
    i = buf.index(marker) + len(marker)
    return buf[:i], buf[i:]


def _read_body(conn, buf, headers, stop):
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            line, buf = _read_until(conn, buf, b"\r\n", stop)
            if line is None:
                return None, buf
            size = int(line.split(b";")[0].strip(), 16)
            while len(buf) < size + 2:
                data = _recv(conn, stop)
                if not data:
                    return None, buf
                buf += data
            body, buf = body + buf[:size], buf[size + 2:]
            if size == 0:
                return body, buf
    length = int(headers.get("content-length", "0"))
    while len(buf) < length:
        data = _recv(conn, stop)
        if not data:
            return None, buf
        buf += data
    return buf[:length], buf[length:]


def _wait_for_close(conn, stop, limit):
    deadline = time.time() + limit
    conn.settimeout(0.2)
    while not stop.is_set() and time.time() < deadline:
        try:
            if not conn.recv(65536):
                return
        except socket.timeout:
            continue
        except OSError:
            return


# -- clients --------------------------------------------------------------------------------

ERR = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
       5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL",
       9: "COMPRESSION_ERROR", 11: "ENHANCE_YOUR_CALM"}
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def get_request(path: str) -> list[tuple[str, str]]:
    """The pseudo-header fields of an HTTP/2 `GET path` to the proxy."""
    return [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"), (":path", path)]


class RawH2:
    """Raw HTTP/2 frames over TLS: sends what a polite client library would refuse to."""

    def __init__(self, port: int, ctx: ssl.SSLContext, timeout: float = 10):
        self.s = tls_connect(port, ctx, "h2", timeout)
        self.buf = b""
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.server_settings: dict[int, int] = {}
        self.closed = False

    def send(self, data: bytes):
        self.s.sendall(data)

    def handshake(self):
        self.send(PREFACE + SettingsFrame(0).serialize())
        for f in self.frames(5):
            if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                self.server_settings = dict(f.settings)
                self.send(SettingsFrame(0, flags=["ACK"]).serialize())
                return
        raise AssertionError("no server SETTINGS")

    def request_headers(self, sid: int, path: str, extra=(), end_stream=True) -> bytes:
        flags = ["END_HEADERS"] + (["END_STREAM"] if end_stream else [])
        return HeadersFrame(sid, self.enc.encode(get_request(path) + list(extra)), flags=flags).serialize()

    def _read(self, n, deadline):
        while len(self.buf) < n:
            self.s.settimeout(max(0.01, deadline - time.time()))
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frames(self, wait: float):
        """Yields frames until `wait` passes; yields "CLOSED" once if the peer closes."""
        deadline = time.time() + wait
        while time.time() < deadline and not self.closed:
            try:
                hdr = self._read(9, deadline)
                f, length = Frame.parse_frame_header(memoryview(hdr))
                f.parse_body(memoryview(self._read(length, deadline)))
                yield f
            except (socket.timeout, TimeoutError):
                return
            except (EOFError, ConnectionError, ssl.SSLError, OSError):
                self.closed = True
                yield "CLOSED"
                return

    def status_of(self, f) -> str | None:
        return dict(self.dec.decode(f.data)).get(":status") if isinstance(f, HeadersFrame) else None

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def describe(f) -> str:
    if f == "CLOSED":
        return "CLOSED"
    name = type(f).__name__.replace("Frame", "")
    code = getattr(f, "error_code", None)
    return f"{name}[{f.stream_id}]({ERR.get(code, code)})" if code is not None else f"{name}[{f.stream_id}]"


# -- admin ----------------------------------------------------------------------------------

def metrics(admin_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(admin_port: int, name: str, **labels) -> float:
    """The value of one series (0 when it does not exist yet)."""
    for line in metrics(admin_port).splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return 0.0


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


__all__ = ["FaultUpstream", "RawH2", "get_request", "metric", "metrics", "vm_rss_kib", "describe", "SENSITIVE", "ContinuationFrame",
           "DataFrame", "GoAwayFrame", "HeadersFrame", "RstStreamFrame", "SettingsFrame"]
