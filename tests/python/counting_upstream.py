"""A tiny raw-socket HTTP/1.1 upstream that records every byte it receives.

It is the witness of `test_bad_requests.py`: a request the proxy refuses must not put a single
byte on the upstream's sockets. Counting happens here, at the upstream, not in the proxy's logs.

Every complete request (head + `Content-Length` or chunked body) is answered with a small
200 JSON document, so control requests through the proxy succeed; its `ssn` member lets a
response-rule route seal something. Connections are kept alive (the proxy pools them).
"""
import json
import socket
import threading

RESPONSE_DOC = {"ok": True, "ssn": "123-45-6789", "name": "Ada"}


class CountingUpstream:
    def __init__(self):
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self._lock = threading.Lock()
        self._log = bytearray()      # every byte received, all connections, in arrival order
        self.requests: list[bytes] = []  # every complete request (head + body) received
        self.connections = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    # -- observation ----------------------------------------------------------------------

    def mark(self) -> tuple[int, int]:
        with self._lock:
            return len(self._log), len(self.requests)

    def bytes_since(self, mark) -> bytes:
        with self._lock:
            return bytes(self._log[mark[0]:])

    def requests_since(self, mark) -> list[bytes]:
        with self._lock:
            return list(self.requests[mark[1]:])

    # -- serving --------------------------------------------------------------------------

    def _accept(self):
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        buf = b""
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                with self._lock:
                    self._log += data
                buf += data
                while True:
                    n = complete_request_length(buf)
                    if n is None:
                        break
                    request, buf = buf[:n], buf[n:]
                    with self._lock:
                        self.requests.append(request)
                    body = json.dumps({**RESPONSE_DOC, "seen": len(request)}).encode()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        except OSError:
            return
        finally:
            conn.close()

    def close(self):
        self._closed = True
        self._sock.close()


def complete_request_length(buf: bytes):
    """Length of the first complete request in `buf`, or None while it is incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("latin-1").split("\r\n")
    pos = end + 4
    length, chunked = 0, False
    for line in head[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if not chunked:
        return pos + length if len(buf) >= pos + length else None
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(buf[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            # Trailers (none expected from the proxy) end with an empty line.
            trailer_end = buf.find(b"\r\n", pos)
            while trailer_end > pos:
                pos = trailer_end + 2
                trailer_end = buf.find(b"\r\n", pos)
            if trailer_end < 0:
                return None
            return trailer_end + 2
        if len(buf) < pos + size + 2:
            return None
        pos += size + 2
