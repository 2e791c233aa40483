"""Raw HTTP/1.1 over TLS for the tests that must see every byte the proxy sends (leak checks,
framing, closed connections), which a client library would hide, re-frame or refuse.

One TLS connect, one head parser and one de-chunker for all of them, so a parsing fix lands
everywhere at once.
"""
import json
import socket
import ssl
import time


def tls_connect(port: int, ctx: ssl.SSLContext, alpn: str = "http/1.1", timeout: float = 10) -> ssl.SSLSocket:
    """A TLS connection to 127.0.0.1:`port` (as `localhost`) that negotiated `alpn`."""
    ctx.set_alpn_protocols([alpn])
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    assert s.selected_alpn_protocol() == alpn
    return s


def parse_head(data: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """The status, the header fields (names lower-cased, in order, repeats kept) and the bytes
    after the head. `data` must hold a complete head."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers.append((k.strip().lower().decode("latin-1"), v.strip().decode("latin-1")))
    return status, headers, rest


def dechunk(data: bytes) -> tuple[bytes, bytes, bool]:
    """A chunked body: (the payload so far, the bytes after its end, whether the last chunk and
    trailer section were seen). Raises ValueError on a chunk-size line that is not hex."""
    body = b""
    while True:
        line, sep, rest = data.partition(b"\r\n")
        if not sep:
            return body, b"", False
        size = int(line.split(b";")[0], 16)
        if size == 0:
            if rest.startswith(b"\r\n"):  # no trailer fields
                return body, rest[2:], True
            _trailers, sep, extra = rest.partition(b"\r\n\r\n")
            return body, extra, bool(sep)
        if len(rest) < size + 2:
            return body + rest[:size], b"", False
        body, data = body + rest[:size], rest[size + 2:]


def wait_closed(sock, limit: float) -> tuple[bool, bytes]:
    """Reads until the peer closes (True) or `limit` seconds pass (False); returns what came."""
    deadline = time.time() + limit
    got = b""
    while time.time() < deadline:
        sock.settimeout(max(0.01, min(0.5, deadline - time.time())))
        try:
            data = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            continue
        except (ConnectionError, ssl.SSLError, OSError):
            return True, got
        if not data:
            return True, got
        got += data
    return False, got


class H1Response:
    def __init__(self, status, headers, body, complete):
        self.status, self.headers, self.body, self.complete = status, headers, body, complete

    def json(self):
        return json.loads(self.body)


def h1_read_response(sock, timeout: float = 10) -> H1Response:
    """Reads one response and no more (the connection stays usable); `complete` says whether
    its framing (length or last chunk) was met before EOF or the timeout."""
    buf = b""
    deadline = time.time() + timeout
    eof = False

    def more():
        nonlocal buf, eof
        sock.settimeout(max(0.01, deadline - time.time()))
        try:
            data = sock.recv(65536)
        except (ConnectionError, ssl.SSLError):
            data = b""
        if not data:
            eof = True
        buf += data

    while b"\r\n\r\n" not in buf and not eof:
        more()
    if b"\r\n\r\n" not in buf:
        return H1Response(None, {}, buf, False)
    status, fields, _ = parse_head(buf)
    headers = dict(fields)
    head_len = buf.index(b"\r\n\r\n") + 4
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            body, _, complete = dechunk(buf[head_len:])
            if complete or eof:
                return H1Response(status, headers, body, complete)
            more()
    length = int(headers.get("content-length", "0"))
    while len(buf) - head_len < length and not eof:
        more()
    body = buf[head_len:head_len + length]
    return H1Response(status, headers, body, len(body) == length)
