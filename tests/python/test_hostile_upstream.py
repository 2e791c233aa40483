"""A hostile upstream in front of the real fieldseal binary.

One proxy (`workers: 1`, so every request shares one upstream pool, `max_body_bytes: 65536`)
fronts a `ScriptedUpstream` that answers each case with hand-written raw bytes: wrong content
types, broken JSON, broken HTTP framing, content codings (good, unsupported, corrupt, bombs),
slow drips, resets, 1xx, bodyless statuses with bodies anyway, odd JSON (duplicates, escapes,
deep nesting, bad UTF-8, BOM, huge numbers).

Each case is fetched over TLS with a raw HTTP/1.1 socket, so the assertions see the exact bytes
the client receives: the case's secret (`SECRET-<case>-…`, and its hex/base64/decompressed
forms) never appears unless the route is documented to pass the body untouched, and the outcome
(status, `error.code`, framing and entity headers) is the one of README's failure matrix. After
every case the same pooled upstream must still answer a pass-through request exactly (no
desynchronised connection reused) and the proxy must still be running. A subset runs over
HTTP/2 (httpx) too.
"""
from __future__ import annotations

import base64
import gzip
import json
import re
import socket
import ssl
import subprocess
import zlib
from dataclasses import dataclass, field
from typing import Callable

import brotli
import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import Proxy
from raw_http import dechunk, parse_head
from scripted_upstream import CLOSE, RESET, Script, ScriptedUpstream, chunked, response

LIMIT = 65536

CONFIG = """workers: 1
keys:
  keyring: "{keyring}"
limits:
  max_body_bytes: {limit}
timeouts:
  upstream_response: 3s
routes:
  - name: sealed
    match: {{ path: "/sealed/**" }}
    response:
      encrypt: ["$.ssn", "$..password"]
  - name: lenient
    match: {{ path: "/lenient/**" }}
    response:
      encrypt: ["$.ssn"]
      on_non_json: pass
  - name: pass
    match: {{ path: "/pass/**" }}
"""

TOKEN = re.compile(rb'"fs1\.([A-Za-z0-9_-]{1,32})\.([A-Za-z0-9_-]+)"')
SANITY = b'{"ok":"sanity"}'
JSON_CT = "application/json"


# --------------------------------------------------------------------------------------------
# Environment: keyring, upstream, proxy.


@dataclass
class Env:
    upstream: ScriptedUpstream
    proxy: Proxy
    secret: bytes
    ctx: ssl.SSLContext
    h2ctx: ssl.SSLContext


@pytest.fixture(scope="module")
def env(pki, fieldseal_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    keyring = d / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True,
                   capture_output=True)
    secret = base64.b64decode(json.loads(keyring.read_text())["keys"][0]["secret"])
    upstream = ScriptedUpstream()
    upstream.set("/pass/sanity", Script([response(200, {"Content-Type": JSON_CT}, SANITY)]))
    # Answered with `Connection: close`: the proxy's pool is left with no idle connection.
    upstream.set("/pass/sanity-close", Script([response(200, {"Content-Type": JSON_CT, "Connection": "close"},
                                                        SANITY)], end=CLOSE))
    proxy = Proxy(fieldseal_bin, pki, upstream.port, d, CONFIG.format(keyring=keyring, limit=LIMIT))
    ctx = pki.context()
    ctx.set_alpn_protocols(["http/1.1"])
    yield Env(upstream, proxy, secret, ctx, pki.context())
    proxy.stop()
    upstream.close()


# --------------------------------------------------------------------------------------------
# A raw HTTP/1.1-over-TLS client: every byte the client receives.


@dataclass
class Resp:
    raw: bytes                       # everything received on the connection
    status: int
    headers: list[tuple[str, str]]   # names lower-cased, in order
    body: bytes                      # after de-chunking
    extra: bytes = b""               # bytes after the framed body (must be none)
    complete: bool = True            # the framing's end was seen (CL reached / last chunk)
    interim: list[int] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        vals = self.all(name)
        return vals[0] if vals else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    def json(self):
        return json.loads(self.body)


def fetch(env: Env, path: str, method: str = "GET") -> Resp:
    """One request on a fresh TLS connection (`Connection: close`); reads to EOF."""
    with socket.create_connection(("127.0.0.1", env.proxy.listen), timeout=20) as tcp:
        with env.ctx.wrap_socket(tcp, server_hostname="localhost") as s:
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
                      "Accept-Encoding: gzip, deflate, br, zstd\r\nConnection: close\r\n\r\n"
                      .encode())
            raw = b""
            while True:
                try:
                    data = s.recv(65536)
                except (ssl.SSLError, ConnectionResetError):
                    break
                if not data:
                    break
                raw += data
    if b"\r\n\r\n" not in raw:
        return Resp(raw, 0, [], b"", complete=False)
    rest, interim = raw, []
    while True:
        status, headers, rest = parse_head(rest)
        if status >= 200 or not rest.startswith(b"HTTP/"):
            break
        interim.append(status)
    r = Resp(raw, status, headers, b"", interim=interim)
    if method == "HEAD" or status in (204, 304):
        r.extra = rest
    elif "chunked" in (r.get("transfer-encoding") or ""):
        r.body, r.extra, r.complete = dechunk(rest)
    elif r.get("content-length") is not None:
        # Tolerant of a list (`48, 48`) so a proxy that passed one on is judged, not crashed on.
        values = {v.strip() for v in r.get("content-length").split(",")}
        n = int(values.pop()) if len(values) == 1 else -1
        r.body, r.extra, r.complete = (rest[:n], rest[n:], len(rest) >= n) if n >= 0 else (rest, b"", False)
    else:
        r.body = rest
    return r


def fetch_h2(env: Env, path: str, method: str = "GET") -> Resp:
    with httpx.Client(http2=True, verify=env.h2ctx, timeout=20) as c:
        r = c.request(method, env.proxy.url(path), headers={"accept-encoding": "identity"})
    assert r.http_version == "HTTP/2"
    headers = [(k.decode().lower(), v.decode("latin-1")) for k, v in r.headers.raw]
    raw = b"".join(k + b": " + v + b"\r\n" for k, v in r.headers.raw) + b"\r\n" + r.content
    return Resp(raw, r.status_code, headers, r.content)


# --------------------------------------------------------------------------------------------
# Leak detection: the secret, and its hex, base64 and decompressed forms.


def _decoded_forms(data: bytes, depth: int = 0) -> list[bytes]:
    forms = [data]
    if depth > 2 or not data:
        return forms
    for wbits in (31, 15, -15):  # gzip (multi-member handled by loop), zlib, raw deflate
        try:
            d = zlib.decompressobj(wbits)
            out = d.decompress(data, 1 << 23)
            forms += _decoded_forms(out, depth + 1)
        except zlib.error:
            pass
    try:
        forms += _decoded_forms(brotli.decompress(data), depth + 1)
    except brotli.error:
        pass
    return forms


def _encodings(needle: bytes) -> list[bytes]:
    out = [needle, needle.hex().encode(), needle.hex().upper().encode()]
    for k in range(3):  # every base64 alignment: the groups fully inside the needle
        seg = needle[k:k + 3 * ((len(needle) - k) // 3)]
        out += [base64.b64encode(seg), base64.urlsafe_b64encode(seg)]
    return out


def leaks(data: bytes, needle: bytes) -> bool:
    """Whether `needle` is in `data` plainly, as hex or base64, or in a decompression of it."""
    encs = _encodings(needle)
    return any(e in form for form in _decoded_forms(data) for e in encs)


# --------------------------------------------------------------------------------------------
# Expectations.


def py_open_raw(secret: bytes, context: str, kid: bytes, payload: bytes) -> bytes:
    raw = base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4))
    return AESGCM(secret).decrypt(raw[:12], raw[12:], b"fs1." + kid + b"." + context.encode())


def doc(*parts) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """A body from literal byte strings and `(value_bytes, context)` selected values: returns the
    body, the expected body with every selected value as `"T"`, and `[(context, value)]`."""
    body, skeleton, opened = b"", b"", []
    for p in parts:
        if isinstance(p, tuple):
            body += p[0]
            skeleton += b'"T"'
            opened.append((p[1], p[0]))
        else:
            body += p
            skeleton += p
    return body, skeleton, opened


def expect_sealed(skeleton: bytes, opened: list[tuple[str, bytes]], status: int = 200,
                  gone: tuple[str, ...] = (), kept: tuple[tuple[str, str], ...] = (),
                  streamed: bool = False):
    """The byte-level engine's output: the body exactly as sent except each selected value,
    which is an `fs1` token opening (with the member's name as context) to that value.
    `streamed`: sealed as it streams (above the buffering threshold), so without a length."""
    def check(env: Env, r: Resp):
        assert r.status == status, r.raw[:400]
        assert r.complete and r.extra == b""
        if streamed:
            assert r.get("content-length") is None
        else:
            assert r.get("content-length") == str(len(r.body))
            assert r.get("transfer-encoding") is None
        assert r.get("content-encoding") is None
        tokens = TOKEN.findall(r.body)
        assert TOKEN.sub(b'"T"', r.body) == skeleton
        assert len(tokens) == len(opened)
        for (kid, payload), (context, value) in zip(tokens, opened):
            plain = py_open_raw(env.secret, context, kid, payload)
            # The sealed plaintext is the value's JSON (exactly its bytes when it has no escapes).
            assert json.loads(plain) == json.loads(value)
            if b"\\" not in value:
                assert plain == value
        for name in gone:
            assert r.get(name) is None, name
        for name, value in kept:
            assert r.get(name) == value, name
    return check


def expect_aborted():
    """Sealed as it streams, then the app's document turned invalid: the head went out, the
    body stops short (no terminating chunk; the connection closes)."""
    def check(env: Env, r: Resp):
        assert r.status == 200, r.raw[:400]
        assert not r.complete, r.raw[-200:]
        assert r.get("content-length") is None
    return check


def expect_error(status: int, code: str, reason: str | None = None):
    """fieldseal's own error JSON (contract §6) instead of the app's body."""
    def check(env: Env, r: Resp):
        assert r.status == status, r.raw[:400]
        assert r.complete and r.extra == b""
        assert r.get("content-type") == "application/json"
        assert r.get("content-length") == str(len(r.body))
        assert r.get("content-encoding") is None and r.get("etag") is None
        assert r.get("strict-transport-security")
        err = r.json()["error"]
        assert err["code"] == code
        assert err["request_id"] == r.get("x-request-id")
        if reason:
            assert f"({reason})" in err["message"]
    return check


def not_encryptable(reason: str | None = None):
    return expect_error(502, "response_not_encryptable", reason)


PROTOCOL_ERROR = expect_error(502, "upstream_protocol_error")


def expect_untouched(status: int, body: bytes, kept: tuple[tuple[str, str], ...] = ()):
    """The app's body forwarded byte for byte."""
    def check(env: Env, r: Resp):
        assert r.status == status
        assert r.complete and r.extra == b""
        assert r.body == body
        for name, value in kept:
            assert r.get(name) == value, name
    return check


def expect_no_body(status: int, kept: tuple[tuple[str, str], ...] = (), gone: tuple[str, ...] = ()):
    """A bodyless response (HEAD, 204, 304): no byte after the head."""
    def check(env: Env, r: Resp):
        assert r.status == status
        assert r.extra == b"" and r.body == b""
        for name, value in kept:
            assert r.get(name) == value, name
        for name in gone:
            assert r.get(name) is None, name
    return check


LAST_MODIFIED = "Wed, 21 Oct 2026 07:28:00 GMT"


# --------------------------------------------------------------------------------------------
# The cases.


@dataclass
class Case:
    name: str
    script: Script
    expect: Callable[[Env, Resp], None]
    route: str = "sealed"
    method: str = "GET"
    needles: tuple[bytes, ...] = ()   # more secrets than `SECRET-<name>` (e.g. bare digits)
    leak_expected: bool = False       # documented to pass untouched: the contrast
    xfail: str | None = None


def marker(name: str, suffix: str = "") -> bytes:
    return f"SECRET-{name}{suffix}-123-45-6789".encode()


def S(name: str, suffix: str = "") -> bytes:
    """The case's secret as a JSON string."""
    return b'"' + marker(name, suffix) + b'"'


def ok_json(body: bytes, ctype: str | None = JSON_CT, status: int = 200, headers=()) -> Script:
    h = ([("Content-Type", ctype)] if ctype else []) + list(headers)
    return Script([response(status, h, body)])


def zstd_raw_frame(data: bytes) -> bytes:
    """A valid zstd frame with one raw block (RFC 8878): the plaintext is visible inside."""
    assert len(data) < 256
    return (b"\x28\xb5\x2f\xfd" + bytes([0x20, len(data)])
            + ((len(data) << 3) | 1).to_bytes(3, "little") + data)


def deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def encoded(name: str, coding: str, encode: Callable[[bytes], bytes], headers=()) -> Case:
    body, skeleton, opened = doc(b'{"ssn":', (S(name), "ssn"), b',"n":1}')
    script = Script([response(200, [("Content-Type", JSON_CT), ("Content-Encoding", coding),
                                    ("ETag", '"strong-1"'), ("Content-MD5", "Q2hlY2sgSW50ZWdyaXR5IQ==")]
                              + list(headers), encode(body))])
    return Case(name, script, expect_sealed(skeleton, opened, gone=("etag", "content-md5")))


def build_cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append

    def sealed_json(name, ctype, status=200, route="sealed"):
        body, skel, opened = doc(b'{"ssn":', (S(name), "ssn"), b',"name":"x"}')
        add(Case(name, ok_json(body, ctype, status), expect_sealed(skel, opened, status), route))

    def refused_json(name, ctype, reason=None):
        add(Case(name, ok_json(b'{"ssn":' + S(name) + b'}', ctype), not_encryptable(reason)))

    # --- Content-Type -----------------------------------------------------------------------
    refused_json("ct_text_html", "text/html; charset=utf-8", "not JSON")
    # No type, or `text/plain`: JSON if it parses (contract §8 of 1.1), refused if not.
    sealed_json("ct_missing", None)
    sealed_json("ct_text_plain", "text/plain; charset=utf-8")
    add(Case("ct_missing_not_json", ok_json(b"ssn " + S("ct_missing_not_json"), None),
             not_encryptable("not JSON")))
    refused_json("ct_text_json", "text/json", "not JSON")
    refused_json("ct_text_plain_json_suffix", "text/plain+json", "not JSON")
    sealed_json("ct_charset_latin1_ascii_body", "application/json; charset=latin1")
    add(Case("ct_charset_latin1_non_utf8_body",
             ok_json(b'{"ssn":' + S("ct_charset_latin1_non_utf8_body") + b',"name":"caf\xe9"}',
                     "application/json; charset=latin1"), not_encryptable("invalid JSON")))
    sealed_json("ct_problem_json_400", "application/problem+json", 400)
    sealed_json("ct_vnd_api_json_suffix", "application/vnd.api+json; charset=utf-8")
    sealed_json("ct_uppercase", "APPLICATION/JSON")

    # --- JSON validity ----------------------------------------------------------------------
    add(Case("invalid_json_trailing_comma", ok_json(b'{"ssn":' + S("invalid_json_trailing_comma") + b',}'),
             not_encryptable("invalid JSON")))
    add(Case("truncated_json", ok_json(b'{"ssn":' + S("truncated_json") + b',"a":[1,2'),
             not_encryptable("invalid JSON")))
    add(Case("two_json_documents", ok_json(b'{"ssn":"a"}\n{"ssn":' + S("two_json_documents") + b'}'),
             not_encryptable("invalid JSON")))
    add(Case("nan_literal", ok_json(b'{"ssn":' + S("nan_literal") + b',"x":NaN}'),
             not_encryptable("invalid JSON")))

    # --- HTTP framing -----------------------------------------------------------------------
    body = b'{"ssn":' + S("content_length_larger_then_close") + b'}'
    add(Case("content_length_larger_then_close",
             Script([response(200, [("Content-Type", JSON_CT), ("Content-Length", str(len(body) + 100))],
                              body)], end=CLOSE), PROTOCOL_ERROR))
    prefix = b'{"ssn":' + S("content_length_smaller_cuts_json") + b',"note":"'
    add(Case("content_length_smaller_cuts_json",
             Script([response(200, [("Content-Type", JSON_CT), ("Content-Length", str(len(prefix)))],
                              prefix + b'rest"}')]), not_encryptable("invalid JSON")))
    name = "content_length_smaller_smuggles_response"
    body, skel, opened = doc(b'{"ssn":', (S(name), "ssn"), b'}')
    smuggled = response(200, {"Content-Type": "text/plain"}, marker(name, "-smuggled"))
    add(Case(name, Script([response(200, {"Content-Type": JSON_CT}, body) + smuggled]),
             expect_sealed(skel, opened)))
    name = "chunked_with_trailers"
    body, skel, opened = doc(b'{"ssn":', (S(name), "ssn"), b',"user":{"password":',
                             (S(name, "-pw"), "password"), b'}}')
    add(Case(name, Script([response(200, [("Content-Type", JSON_CT), ("Transfer-Encoding", "chunked"),
                                           ("Trailer", "X-Secret")],
                                     chunked(body[:5], body[5:20], body[20:],
                                             trailers=[("X-Secret", marker(name, "-trailer").decode())]))]),
             expect_sealed(skel, opened, gone=("trailer", "x-secret"))))
    add(Case("chunked_bad_chunk_size",
             Script([response(200, [("Content-Type", JSON_CT), ("Transfer-Encoding", "chunked")],
                              chunked(b'{"ssn":' + S("chunked_bad_chunk_size"))[:-5] + b"zz\r\n}\r\n0\r\n\r\n")]),
             PROTOCOL_ERROR))
    name = "chunked_and_content_length"
    body, skel, opened = doc(b'{"ssn":', (S(name), "ssn"), b'}')
    # Contract §7 (1.1): ambiguous framing is refused, never resolved by the proxy.
    add(Case(name, Script([response(200, [("Content-Type", JSON_CT), ("Content-Length", "5"),
                                           ("Transfer-Encoding", "chunked")], chunked(body[:9], body[9:]))],
                          end=CLOSE), PROTOCOL_ERROR))
    add(Case("close_mid_chunked",
             Script([response(200, [("Content-Type", JSON_CT), ("Transfer-Encoding", "chunked")],
                              b"%x\r\n" % 60 + b'{"ssn":' + S("close_mid_chunked"))], end=CLOSE),
             PROTOCOL_ERROR))
    body = b'{"ssn":' + S("reset_mid_body") + b',"pad":"' + b"p" * 4000 + b'"}'
    add(Case("reset_mid_body",
             Script([response(200, [("Content-Type", JSON_CT), ("Content-Length", str(len(body)))],
                              body[:2000])], end=RESET), PROTOCOL_ERROR))
    # Over the limit: sealed as it streams (docs/streaming.md), whole and chunked alike.
    big, skel, opened = doc(b'{"ssn":', (S("content_length_over_limit"), "ssn"),
                            b',"pad":"' + b"p" * LIMIT + b'"}')
    add(Case("content_length_over_limit", ok_json(big), expect_sealed(skel, opened, streamed=True)))
    big, skel, opened = doc(b'{"ssn":', (S("chunked_over_limit"), "ssn"),
                            b',"pad":"' + b"p" * LIMIT + b'"}')
    add(Case("chunked_over_limit",
             Script([response(200, [("Content-Type", JSON_CT), ("Transfer-Encoding", "chunked")],
                              chunked(*[big[i:i + 8192] for i in range(0, len(big), 8192)]))]),
             expect_sealed(skel, opened, streamed=True)))
    # ...and when it turns invalid past the threshold, the answer is aborted, the secret unsent.
    bad = b'{"pad":"' + b"p" * LIMIT + b'","ssn":' + S("invalid_past_the_threshold") + b', oops}'
    add(Case("invalid_past_the_threshold", ok_json(bad), expect_aborted()))
    name = "body_exactly_at_limit"
    head, tail = b'{"ssn":' + S(name) + b',"pad":"', b'"}'
    body, skel, opened = doc(b'{"ssn":', (S(name), "ssn"),
                             b',"pad":"' + b"p" * (LIMIT - len(head) - len(tail)) + tail)
    assert len(body) == LIMIT
    add(Case(name, ok_json(body), expect_sealed(skel, opened)))
    name = "slow_drip_50ms"
    body, skel, opened = doc(b'{"a":[1,2,3],"ssn":', (S(name), "ssn"), b',"b":{"password":',
                             (S(name, "-pw"), "password"), b'}}')
    add(Case(name, Script.drip(response(200, {"Content-Type": JSON_CT}, body), 12, 0.05),
             expect_sealed(skel, opened)))
    name = "interim_100_and_103"
    body, skel, opened = doc(b'{"ssn":', (S(name), "ssn"), b'}')
    add(Case(name, Script([response(200, {"Content-Type": JSON_CT}, body)],
                          interim=[b"HTTP/1.1 100 Continue\r\n\r\n",
                                   b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"]),
             expect_sealed(skel, opened)))

    # --- Bodyless responses (pass untouched; a body sent anyway must not reach anyone) -------
    add(Case("head", Script([response(200, [("Content-Type", JSON_CT), ("Content-Length", "123")])]),
             expect_no_body(200, kept=(("content-length", "123"),)), method="HEAD"))
    body = b'{"ssn":' + S("head_with_body_anyway") + b'}'
    add(Case("head_with_body_anyway", ok_json(body), expect_no_body(200), method="HEAD"))
    add(Case("status_204", Script([response(204, [], length=False)]), expect_no_body(204)))
    add(Case("status_204_with_body_anyway",
             Script([response(204, {"Content-Type": JSON_CT, "Content-Length": "60"},
                              b'{"ssn":' + S("status_204_with_body_anyway") + b'}')]),
             expect_no_body(204)))
    # Contract §7 (1.1): no validator of the plaintext on a transformed route, 304 included.
    add(Case("status_304", Script([response(304, [("ETag", '"v1"'), ("Last-Modified", LAST_MODIFIED)],
                                            length=False)]),
             expect_no_body(304, kept=(("last-modified", LAST_MODIFIED),), gone=("etag",))))
    add(Case("status_304_with_body_anyway",
             Script([response(304, [("ETag", '"v1"'), ("Content-Type", JSON_CT), ("Content-Length", "60")],
                              b'{"ssn":' + S("status_304_with_body_anyway") + b'}')]),
             expect_no_body(304)))
    add(Case("empty_json_body", Script([response(200, {"Content-Type": JSON_CT}, b"")]),
             expect_untouched(200, b"", kept=(("content-length", "0"),))))

    # --- Content codings --------------------------------------------------------------------
    add(encoded("gzip", "gzip", gzip.compress))
    add(encoded("x_gzip", "x-gzip", gzip.compress))
    add(encoded("deflate_zlib", "deflate", zlib.compress))
    add(encoded("deflate_raw", "deflate", deflate_raw))
    add(encoded("br", "br", brotli.compress))
    add(encoded("gzip_gzip", "gzip, gzip", lambda b: gzip.compress(gzip.compress(b))))
    add(encoded("three_codings_gzip_deflate_br", "gzip, deflate, br",
                lambda b: brotli.compress(zlib.compress(gzip.compress(b)))))
    add(encoded("codings_split_over_two_headers", "gzip",
                lambda b: brotli.compress(gzip.compress(b)), headers=[("Content-Encoding", "br")]))

    def refused_coding(name, coding, encode, reason, headers=()):
        body = b'{"ssn":' + S(name) + b',"n":1}'
        add(Case(name, Script([response(200, [("Content-Type", JSON_CT), ("Content-Encoding", coding)]
                                        + list(headers), encode(body))]), not_encryptable(reason)))

    refused_coding("zstd", "zstd", zstd_raw_frame, "unsupported encoding")
    refused_coding("compress", "compress", lambda b: b, "unsupported encoding")
    refused_coding("unknown_coding", "snappy", lambda b: b, "unsupported encoding")
    refused_coding("four_codings", "gzip, gzip, gzip, gzip",
                   lambda b: gzip.compress(gzip.compress(gzip.compress(gzip.compress(b)))),
                   "unsupported encoding")
    refused_coding("identity_then_zstd", "identity, zstd", zstd_raw_frame, "unsupported encoding")

    def corrupt(b):
        g = bytearray(gzip.compress(b))
        for i in range(12, len(g) - 8, 5):
            g[i] ^= 0x55
        return bytes(g)

    refused_coding("corrupt_gzip", "gzip", corrupt, "corrupt encoding")
    refused_coding("corrupt_gzip_crc", "gzip",
                   lambda b: gzip.compress(b)[:-8] + b"\0\0\0\0" + gzip.compress(b)[-4:], "corrupt encoding")
    refused_coding("truncated_gzip", "gzip", lambda b: gzip.compress(b)[:-6], "corrupt encoding")
    refused_coding("gzip_trailing_garbage", "gzip", lambda b: gzip.compress(b) + b"GARBAGE",
                   "corrupt encoding")
    refused_coding("deflate_trailing_garbage", "deflate", lambda b: zlib.compress(b) + b"GARBAGE",
                   "corrupt encoding")
    refused_coding("br_trailing_garbage", "br", lambda b: brotli.compress(b) + b"GARBAGE",
                   "corrupt encoding")
    refused_coding("truncated_br", "br", lambda b: brotli.compress(b)[:-3], "corrupt encoding")
    refused_coding("gzip_label_on_plain_body", "gzip", lambda b: b, "corrupt encoding")

    def bomb(name):
        return b'{"ssn":' + S(name) + b',"pad":"' + b"A" * (8 << 20) + b'"}'

    add(Case("gzip_bomb", ok_json(gzip.compress(bomb("gzip_bomb"), 9), headers=[("Content-Encoding", "gzip")]),
             not_encryptable("too large")))
    add(Case("br_bomb", ok_json(brotli.compress(bomb("br_bomb")), headers=[("Content-Encoding", "br")]),
             not_encryptable("too large")))
    add(Case("gzip_in_br_bomb",
             ok_json(brotli.compress(gzip.compress(bomb("gzip_in_br_bomb"), 9)),
                     headers=[("Content-Encoding", "gzip, br")]), not_encryptable("too large")))

    # --- JSON oddities ----------------------------------------------------------------------
    name = "duplicate_keys"
    body, skel, opened = doc(b'{"ssn":', (S(name, "-A"), "ssn"), b',"ssn":', (S(name, "-B"), "ssn"), b'}')
    add(Case(name, ok_json(body), expect_sealed(skel, opened)))
    name = "escaped_member_names"
    body, skel, opened = doc(b'{"\\u0073sn":', (S(name), "ssn"), b',"u":{"pass\\u0077ord":',
                             (S(name, "-pw"), "password"), b'},"\\u0073\\u0073\\u006e2":"x"}')
    add(Case(name, ok_json(body), expect_sealed(skel, opened)))
    name = "recursive_password_everywhere"
    body, skel, opened = doc(b'[{"password":', (S(name, "-1"), "password"), b'},{"a":{"b":[{"password":',
                             (S(name, "-2"), "password"), b'}]}},{"password":', (b'{"x":[1,2]}', "password"),
                             b'}]')
    add(Case(name, ok_json(body), expect_sealed(skel, opened)))
    add(Case("deep_nesting_10000",
             ok_json(b'{"ssn":' + S("deep_nesting_10000") + b',"deep":' + b"[" * 10000 + b"]" * 10000 + b'}'),
             not_encryptable("invalid JSON")))
    add(Case("deep_nesting_secret_inside",
             ok_json(b'{"a":' + b'{"b":' * 10000 + b'{"password":' + S("deep_nesting_secret_inside") + b'}'
                     + b'}' * 10000 + b'}'), not_encryptable("invalid JSON")))
    add(Case("invalid_utf8_inside_selected",
             ok_json(b'{"ssn":"SECRET-invalid_utf8_inside_selected-\xff\xfe-123-45-6789"}'),
             not_encryptable("invalid JSON"), needles=(b"invalid_utf8_inside_selected-\xff",)))
    add(Case("invalid_utf8_outside_selected",
             ok_json(b'{"ssn":' + S("invalid_utf8_outside_selected") + b',"name":"\xc3\x28"}'),
             not_encryptable("invalid JSON")))
    add(Case("invalid_utf8_between_tokens",
             ok_json(b'{"ssn":' + S("invalid_utf8_between_tokens") + b',\xff"x":1}'),
             not_encryptable("invalid JSON")))
    add(Case("utf8_bom", ok_json(b"\xef\xbb\xbf" + b'{"ssn":' + S("utf8_bom") + b'}'),
             not_encryptable("invalid JSON")))
    # Numbers beyond f64 range are valid JSON grammar (RFC 8259 lets a parser limit the range);
    # README is silent: beside a selected value they fail closed, a selected integer is sealed
    # with its exact digits, a selected out-of-range float fails closed.
    add(Case("huge_float_beside_selected",
             ok_json(b'{"big":1e400,"ssn":' + S("huge_float_beside_selected") + b'}'),
             not_encryptable("invalid JSON")))
    add(Case("huge_integer_beside_selected",
             ok_json(b'{"ssn":' + S("huge_integer_beside_selected") + b',"int":' + b"9" * 400 + b'}'),
             not_encryptable("invalid JSON")))
    name = "tiny_and_max_floats_beside_selected"
    body, skel, opened = doc(b'{"a":-1E-400,"ssn":', (S(name), "ssn"), b',"b":1.7976931348623157e308,"c":0.1e-999}')
    add(Case(name, ok_json(body), expect_sealed(skel, opened)))
    secret_digits = b"7" + b"0123456789" * 40
    body, skel, opened = doc(b'{"ssn":', (secret_digits, "ssn"), b'}')
    add(Case("huge_integer_selected", ok_json(body), expect_sealed(skel, opened), needles=(secret_digits[:60],)))
    add(Case("huge_float_selected", ok_json(b'{"password":31415926535e400}'), not_encryptable(),
             needles=(b"31415926535",)))
    name = "escapes_in_selected_value"
    value = b'"SECRET-' + name.encode() + b'-\\u0041\\n\\"\\\\\\/\\uD83D\\uDE00\\u0000"'
    body, skel, opened = doc(b'{"ssn":', (value, "ssn"), b'}')
    add(Case(name, ok_json(body), expect_sealed(skel, opened)))
    add(Case("lone_surrogate_in_selected",
             ok_json(b'{"ssn":"SECRET-lone_surrogate_in_selected-\\ud800-123-45-6789"}'), not_encryptable()))
    add(Case("lone_surrogate_outside_selected",
             ok_json(b'{"ssn":' + S("lone_surrogate_outside_selected") + b',"n":"\\udc00"}'),
             not_encryptable("invalid JSON")))
    add(Case("control_char_in_selected",
             ok_json(b'{"ssn":"SECRET-control_char_in_selected-\x01-123-45-6789"}'), not_encryptable("invalid JSON")))

    # --- Statuses: every status's body is transformed ---------------------------------------
    sealed_json("status_500_json_sealed", JSON_CT, 500)
    # Contract §6 (1.1): an error page keeps its status; its body (which may echo anything) is
    # replaced by the error JSON.
    add(Case("status_404_html_withheld",
             ok_json(b"<h1>not found: " + marker("status_404_html_withheld") + b"</h1>", "text/html", 404),
             expect_error(404, "upstream_body_withheld")))
    add(Case("status_200_html_refused",
             ok_json(b"<h1>hello " + marker("status_200_html_refused") + b"</h1>", "text/html", 200),
             not_encryptable("not JSON")))
    # The app answers 101 to a request without `Upgrade` (the proxy strips it on rule routes),
    # then sends the JSON raw on the "switched" connection.
    add(Case("unsolicited_101_switching_protocols",
             Script([b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                     + b'{"ssn":' + S("unsolicited_101_switching_protocols") + b'}'], end=CLOSE),
             PROTOCOL_ERROR))
    add(Case("close_before_head", Script([], end=CLOSE), PROTOCOL_ERROR))
    add(Case("reset_before_head", Script([], end=RESET), PROTOCOL_ERROR))
    add(Case("half_head_then_close", Script([b"HTTP/1.1 200 OK\r\nContent-Type: applic"], end=CLOSE),
             PROTOCOL_ERROR))
    add(Case("interim_102_then_close", Script([b"HTTP/1.1 102 Processing\r\n\r\n"], end=CLOSE), PROTOCOL_ERROR))

    # --- More framing: what hyper accepts is sealed, what it refuses is a 502 ----------------
    name = "http10_body_until_close"
    body, skel, opened = doc(b'{"ssn":', (S(name), "ssn"), b'}')
    add(Case(name, Script([b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + body], end=CLOSE),
             expect_sealed(skel, opened)))
    name = "http11_no_framing_until_close"
    body, skel, opened = doc(b'{"ssn":', (S(name), "ssn"), b'}')
    add(Case(name, Script([b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + body], end=CLOSE),
             expect_sealed(skel, opened)))
    name = "bare_lf_line_endings"
    body, skel, opened = doc(b'{"ssn":', (S(name), "ssn"), b'}')
    add(Case(name, Script([b"HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Length: %d\n\n" % len(body)
                           + body]), expect_sealed(skel, opened)))
    body = b'{"ssn":' + S("conflicting_content_lengths") + b'}'
    add(Case("conflicting_content_lengths",
             Script([response(200, [("Content-Type", JSON_CT), ("Content-Length", str(len(body))),
                                    ("Content-Length", "5")], body)], end=CLOSE), PROTOCOL_ERROR))
    add(Case("obs_fold_header",
             Script([b"HTTP/1.1 200 OK\r\nContent-Type: text/html;\r\n application/json\r\nContent-Length: 60\r\n\r\n"
                     + b'{"ssn":' + S("obs_fold_header") + b'}'], end=CLOSE), PROTOCOL_ERROR))
    add(Case("too_many_headers",
             Script([response(200, [("Content-Type", JSON_CT)] + [(f"X-H{i}", "v") for i in range(150)],
                              b'{"ssn":' + S("too_many_headers") + b'}')]), PROTOCOL_ERROR))
    add(Case("two_content_types_html_first",
             Script([response(200, [("Content-Type", "text/html"), ("Content-Type", JSON_CT)],
                              b'{"ssn":' + S("two_content_types_html_first") + b'}')]), not_encryptable("not JSON")))
    add(Case("transfer_coding_gzip_chunked",
             Script([response(200, [("Content-Type", JSON_CT), ("Transfer-Encoding", "gzip, chunked")],
                              chunked(gzip.compress(b'{"ssn":' + S("transfer_coding_gzip_chunked") + b'}')))]),
             not_encryptable("invalid JSON")))
    # README: `upstream_response` bounds the head only; on a rule route the buffered body is
    # bounded by it too (silent in README) and fails closed as a 504.
    add(Case("stalled_body_after_head",
             Script([response(200, [("Content-Type", JSON_CT), ("Content-Length", "500")],
                              b'{"ssn":' + S("stalled_body_after_head"))], hold=5, end=CLOSE),
             expect_error(504, "upstream_timeout")))

    # --- Entity headers on a rewritten body -------------------------------------------------
    name = "strong_etag_and_digests_dropped"
    body, skel, opened = doc(b'{"ssn":', (S(name), "ssn"), b'}')
    add(Case(name, ok_json(body, headers=[("ETag", '"abc"'), ("Digest", "sha-256=x"), ("Content-Digest", "sha-256=:x:"),
                                          ("Repr-Digest", "sha-256=:x:"), ("Content-MD5", "x")]),
             expect_sealed(skel, opened, gone=("etag", "digest", "content-digest", "repr-digest", "content-md5"))))
    # Contract §7 (1.1): a weak ETag is computed over the plaintext too (an offline guessing
    # target), so it goes like a strong one.
    name = "weak_etag_dropped"
    body, skel, opened = doc(b'{"ssn":', (S(name), "ssn"), b'}')
    add(Case(name, ok_json(body, headers=[("ETag", 'W/"abc"')]),
             expect_sealed(skel, opened, gone=("etag",))))

    # --- Other routes: the contrast cases ---------------------------------------------------
    name = "passthrough_route_streams_secret_untouched"
    body = b'{"ssn":' + S(name) + b'}'
    add(Case(name, Script([response(200, [("Content-Type", JSON_CT), ("Transfer-Encoding", "chunked"),
                                           ("ETag", '"p1"')], chunked(body[:7], body[7:]))]),
             expect_untouched(200, body, kept=(("etag", '"p1"'),)),
             route="pass", leak_expected=True))
    name = "passthrough_route_gzip_untouched"
    gz = gzip.compress(b'{"ssn":' + S(name) + b'}')
    add(Case(name, ok_json(gz, headers=[("Content-Encoding", "gzip")]),
             expect_untouched(200, gz, kept=(("content-encoding", "gzip"), ("content-length", str(len(gz))))),
             route="pass", leak_expected=True))
    name = "on_non_json_pass_html_untouched"
    html = b"<html><p>" + marker(name) + b"</p></html>"
    add(Case(name, ok_json(html, "text/html"), expect_untouched(200, html, kept=(("content-type", "text/html"),)),
             route="lenient", leak_expected=True))
    sealed_json("on_non_json_pass_json_still_sealed", JSON_CT, route="lenient")
    # Unlabelled JSON is JSON (contract §8 of 1.1): sealed even where non-JSON passes.
    sealed_json("on_non_json_pass_missing_content_type_json_sealed", None, route="lenient")
    name = "on_non_json_pass_missing_content_type_text_untouched"
    body = b"ssn " + S(name)
    add(Case(name, ok_json(body, None), expect_untouched(200, body), route="lenient", leak_expected=True))
    add(Case("on_non_json_pass_invalid_json_refused",
             ok_json(b'{"ssn":' + S("on_non_json_pass_invalid_json_refused") + b','), not_encryptable("invalid JSON"),
             route="lenient"))
    add(Case("on_non_json_pass_zstd_json_refused",
             ok_json(zstd_raw_frame(b'{"ssn":' + S("on_non_json_pass_zstd_json_refused") + b'}'),
                     headers=[("Content-Encoding", "zstd")]), not_encryptable("unsupported encoding"),
             route="lenient"))
    return cases


_BUILT = build_cases()
CASES = {c.name: c for c in _BUILT}
assert len(CASES) == len(_BUILT), "duplicate case names"

# Run over HTTP/2 as well (no case whose client-side framing is HTTP/1.1-specific).
H2_CASES = ["ct_text_html", "gzip", "br", "deflate_raw", "zstd", "truncated_json", "reset_mid_body",
            "content_length_larger_then_close", "chunked_with_trailers", "interim_100_and_103", "gzip_bomb",
            "duplicate_keys", "escaped_member_names", "slow_drip_50ms", "status_204_with_body_anyway",
            "passthrough_route_streams_secret_untouched", "unsolicited_101_switching_protocols",
            "huge_integer_selected", "status_500_json_sealed"]


# Run again on a warm pooled upstream connection (the proxy's pool holds at most one idle
# connection here: requests are sequential). The value is the number of requests the app may
# see: README replays a bodyless GET once when a pooled connection closes before any answer
# (the keep-alive race), and never otherwise.
# How many requests the app sees for one client GET sent on a reused pooled connection. A
# connection that closes before a complete response head is the keep-alive race: the GET is
# replayed once on a new connection (RFC 9112 §9.3.1), so 2. An invalid response is an answer:
# never replayed, so 1.
POOLED_CASES = {
    "close_before_head": 2, "reset_before_head": 2,
    "interim_102_then_close": 2, "half_head_then_close": 2,
    "content_length_smaller_smuggles_response": 1, "head_with_body_anyway": 1,
    "status_204_with_body_anyway": 1, "status_304_with_body_anyway": 1, "chunked_and_content_length": 1,
    "gzip": 1, "reset_mid_body": 1, "content_length_larger_then_close": 1, "stalled_body_after_head": 1,
    "conflicting_content_lengths": 1, "obs_fold_header": 1, "too_many_headers": 1,
}


def _params(names):
    out = []
    for n in names:
        reason = CASES[n].xfail
        out.append(pytest.param(n, id=n, marks=[pytest.mark.xfail(strict=True, reason=reason)] if reason else []))
    return out


def run_case(env: Env, name: str, client, pooled: bool = False) -> None:
    case = CASES[name]
    path = f"/{case.route}/{name}/{client.__name__}{'-pooled' if pooled else ''}"
    env.upstream.set(path, case.script)
    # Precondition: a warm idle upstream connection (pooled) or none at all (fresh).
    fetch(env, "/pass/sanity" if pooled else "/pass/sanity-close")
    before = env.upstream.count(path)
    r = client(env, path, case.method)

    secret = f"SECRET-{name}".encode()
    for needle in (secret,) + case.needles:
        seen = leaks(r.raw, needle) or leaks(r.body, needle)
        if case.leak_expected:
            assert seen, "the contrast case must carry its secret through"
        else:
            assert not seen, f"plaintext {needle!r} reached the client"
    case.expect(env, r)

    got = env.upstream.received(path)[before:]
    expected = POOLED_CASES[name] if pooled else 1
    assert len(got) == expected, f"the app got {len(got)} requests for one client request"
    assert all(g.method == case.method for g in got)
    if case.route != "pass":
        assert got[0].header("accept-encoding") == "identity"

    # The shared upstream pool is still in step: a pass-through request gets exactly its answer.
    sanity = fetch(env, "/pass/sanity")
    assert sanity.status == 200 and sanity.body == SANITY and sanity.extra == b""
    assert not leaks(sanity.raw, secret)
    assert env.proxy.proc.poll() is None, "fieldseal exited"


@pytest.mark.parametrize("name", _params(CASES))
def test_http1(env, name):
    run_case(env, name, fetch)


@pytest.mark.parametrize("name", _params(POOLED_CASES))
def test_http1_pooled_upstream_connection(env, name):
    run_case(env, name, fetch, pooled=True)


@pytest.mark.parametrize("name", _params(H2_CASES))
def test_http2(env, name):
    run_case(env, name, fetch_h2)


def test_leak_detector_sees_encoded_forms():
    """The detector itself: a secret hidden by any encoding it claims to see is found."""
    s = b"SECRET-self-123-45-6789"
    for form in (s, s.hex().encode(), base64.b64encode(b"x" + s), base64.urlsafe_b64encode(b"xy" + s),
                 gzip.compress(s), zlib.compress(s), deflate_raw(s), brotli.compress(gzip.compress(s))):
        assert leaks(form, s)
    assert not leaks(b'{"ssn":"fs1.k1.AAAA"}', s)
