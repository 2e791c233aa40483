"""A programmable HTTP/1.1 upstream for hostile-upstream tests.

`ScriptedUpstream` is a raw-socket server on 127.0.0.1 (one thread per connection). The answer
to each request path is a `Script`: the exact bytes to send — status line, headers and body,
written by the test, so they may be wrong on purpose — optionally preceded by 1xx interim
responses, optionally split into chunks written with a pause between them (slow drip), and
ending by keeping the connection open for the next request, closing it, or resetting it
(`SO_LINGER` 0, so the peer gets an RST rather than a FIN).

Every request received is recorded (`Received`: raw head and body) so a test can count what
reached the app. `response()` builds ordinary raw responses; anything unusual is written by hand.

    up = ScriptedUpstream()
    up.set("/x", Script([response(200, {"Content-Type": "application/json"}, b'{"a":1}')]))
    ... # point a proxy at up.port, fetch /x through it
    assert up.count("/x") == 1
    up.close()
"""
from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Union

KEEP, CLOSE, RESET = "keep", "close", "reset"


@dataclass
class Script:
    """What the upstream sends for one request.

    chunks:  byte strings written in order (their concatenation is the raw response).
    delay:   seconds to sleep before each chunk after the first (a slow drip when > 0).
    interim: raw 1xx responses written before the chunks (each with `delay` after it).
    hold:    seconds to stay silent (connection open) after the last chunk: a stalled body.
    end:     KEEP (read the next request on this connection), CLOSE (FIN) or RESET (RST).
    """

    chunks: list[bytes]
    delay: float = 0.0
    interim: list[bytes] = field(default_factory=list)
    hold: float = 0.0
    end: str = KEEP

    @classmethod
    def drip(cls, raw: bytes, size: int, delay: float, **kw) -> "Script":
        """`raw` written `size` bytes at a time, `delay` seconds apart."""
        return cls([raw[i:i + size] for i in range(0, len(raw), size)], delay=delay, **kw)


@dataclass
class Received:
    """One request as the upstream read it."""

    method: str
    target: str
    head: bytes  # request line and header lines, up to and including the blank line
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        for line in self.head.split(b"\r\n")[1:]:
            k, sep, v = line.partition(b":")
            if sep and k.strip().lower() == name.lower().encode():
                return v.strip().decode("latin-1")
        return None


Answer = Union[Script, Callable[[Received], Script]]


def response(status: int, headers: dict[str, str] | list[tuple[str, str]] | None = None,
             body: bytes = b"", reason: str | None = None, length: bool = True) -> bytes:
    """Raw `HTTP/1.1` response bytes. `Content-Length` is added (unless `length` is false or the
    headers already frame the body); headers are written exactly as given, in order."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in items}
    if length and "content-length" not in names and "transfer-encoding" not in names:
        items.append(("Content-Length", str(len(body))))
    reason = reason if reason is not None else REASONS.get(status, "Whatever")
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in items) + "\r\n"
    return head.encode("latin-1") + body


def chunked(*pieces: bytes, trailers: list[tuple[str, str]] | None = None) -> bytes:
    """A chunked body (RFC 9112 §7.1) of `pieces`, with optional trailer fields."""
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n"
    out += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in (trailers or []))
    return out + b"\r\n"


REASONS = {100: "Continue", 103: "Early Hints", 200: "OK", 204: "No Content", 304: "Not Modified",
           400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}

NOT_FOUND = Script([response(404, {"Content-Type": "application/json"}, b'{"error":"no script"}')])


class ScriptedUpstream:
    """The server. `set(path, answer)` scripts a path (the query is ignored); an answer may be a
    `Script` or a function of the `Received` request returning one. Unscripted paths get 404."""

    def __init__(self) -> None:
        self._scripts: dict[str, Answer] = {}
        self._lock = threading.Lock()
        self.requests: list[Received] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port: int = self._sock.getsockname()[1]
        self._closed = False
        self._conns: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True, name="scripted-accept").start()

    # -- test API -----------------------------------------------------------------------------

    def set(self, path: str, answer: Answer) -> None:
        with self._lock:
            self._scripts[path] = answer

    def received(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def count(self, path: str) -> int:
        return len(self.received(path))

    def close(self) -> None:
        self._closed = True
        self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.close()
            except OSError:
                pass

    # -- server -------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                req, buf = _read_request(conn, buf)
                if req is None:
                    return
                with self._lock:
                    self.requests.append(req)
                    answer = self._scripts.get(req.path, NOT_FOUND)
                script = answer(req) if callable(answer) else answer
                for raw in script.interim:
                    conn.sendall(raw)
                    if script.delay:
                        time.sleep(script.delay)
                for i, chunk in enumerate(script.chunks):
                    if i and script.delay:
                        time.sleep(script.delay)
                    conn.sendall(chunk)
                if script.hold:
                    time.sleep(script.hold)
                if script.end == RESET:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if script.end == CLOSE:
                    conn.shutdown(socket.SHUT_WR)
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()


def _recv(conn: socket.socket) -> bytes:
    return conn.recv(65536)


def _read_request(conn: socket.socket, buf: bytes) -> tuple[Received | None, bytes]:
    """Reads one request (head, then a Content-Length or chunked body). None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = _recv(conn)
        if not data:
            return None, buf
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head, buf = buf[:end], buf[end:]
    method, target = head.split(b" ", 2)[:2]
    req = Received(method.decode("latin-1"), target.decode("latin-1"), head, b"")
    te = (req.header("transfer-encoding") or "").lower()
    if "chunked" in te:
        body = b""
        while True:
            while b"\r\n" not in buf:
                data = _recv(conn)
                if not data:
                    return None, buf
                buf += data
            line, buf = buf.split(b"\r\n", 1)
            size = int(line.split(b";")[0], 16)
            while len(buf) < size + 2:
                data = _recv(conn)
                if not data:
                    return None, buf
                buf += data
            body, buf = body + buf[:size], buf[size + 2:]
            if size == 0:  # no trailers expected from the proxy: the blank line was consumed
                break
        req.body = body
    else:
        length = int(req.header("content-length") or 0)
        while len(buf) < length:
            data = _recv(conn)
            if not data:
                return None, buf
            buf += data
        req.body, buf = buf[:length], buf[length:]
    return req, buf
