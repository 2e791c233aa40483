"""Shared pieces of the two "boundary" apps (boundary_flask.py, boundary_fastapi.py): the
record, its representations, validators and digests computed over the plaintext, hand-rolled
conditional and range handling (for the routes where the framework has none), content codings,
HTML error pages, and the request log the tests read.

Both apps are deliberately *obliging*: they honour every header family a client might use to
make an app answer something other than the one whole JSON representation the proxy seals
(byte ranges, conditional requests, method and URL overrides, forwarding headers, content
negotiation, `Prefer`). The request log records, for every request that reached the app, what
arrived (method, target, headers, body) and what the app made of it after its middlewares
(method, path, endpoint, client address, scheme, host).

Log: JSON lines appended to the file named by `BOUNDARY_LOG`, each written *before* the response
head is sent, so a test that has read a response can read the entry of its request.
"""
from __future__ import annotations

import base64
import csv
import datetime
import gzip
import hashlib
import html
import io
import json
import os
import tempfile
import threading
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import parse_qsl

try:  # the test venv has it (requirements.txt); an app without it just never sends br
    import brotli
except ImportError:  # pragma: no cover
    brotli = None

RECORD = {
    "id": 7,
    "name": "Ada Lovelace",
    "ssn": "123-45-6789",
    "card": 4111111111111111,
    "note": "Prefers the analytical engine; call after five.",
}
MOVED_ID = 8          # answers a redirect (HTML body) to the record
LAST_MODIFIED = datetime.datetime(2026, 11, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
LAST_MODIFIED_HTTP = format_datetime(LAST_MODIFIED, usegmt=True)

# Headers that make the app route by another method (its method-override middleware).
METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
# Headers that make the app route by another path (IIS / Symfony style URL rewriting).
URL_OVERRIDE_HEADERS = ("x-original-url", "x-rewrite-url")
OVERRIDE_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
# Client-address headers beyond X-Forwarded-For / X-Real-IP, as chi's RealIP (True-Client-IP),
# Gin's TrustedPlatform (CF-Connecting-IP) and request-ip/Echo-style helpers read them.
CLIENT_IP_HEADERS = ("true-client-ip", "x-client-ip", "cf-connecting-ip", "fastly-client-ip")
# Scheme headers beyond X-Forwarded-Proto: Rack (X-Forwarded-Scheme, X-Forwarded-Ssl), Echo
# (X-Forwarded-Protocol, X-Url-Scheme, X-Forwarded-Ssl), Spring (X-Forwarded-Ssl).
SCHEME_HEADERS = ("x-forwarded-scheme", "x-url-scheme", "x-forwarded-protocol")


def record_json() -> bytes:
    return json.dumps(RECORD, separators=(",", ":")).encode()


def data_dir() -> str:
    """The directory with `record.json` (the file route's file), pretty-printed JSON with a
    fixed modification time."""
    d = os.environ.get("BOUNDARY_DATA") or tempfile.mkdtemp(prefix="boundary-data-")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "record.json")
    with open(path, "wb") as f:
        f.write(json.dumps(RECORD, indent=2).encode() + b"\n")
    ts = LAST_MODIFIED.timestamp()
    os.utime(path, (ts, ts))
    return d


# --- Representations ---------------------------------------------------------------------

OFFERS = ["application/json", "text/csv", "application/xml", "text/html", "application/vnd.api+json"]


def negotiate(accept: str | None) -> str | None:
    """The best of OFFERS for an `Accept` header (q-values, `type/*`, `*/*`); None when none is
    acceptable (406). No header: JSON."""
    if not accept or not accept.strip():
        return "application/json"
    prefs = []
    for i, item in enumerate(accept.split(",")):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        q = 1.0
        for p in parts[1:]:
            if p.lower().startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if media:
            prefs.append((media, q, i))
    best, best_key = None, None
    for offer_index, offer in enumerate(OFFERS):
        otype = offer.split("/")[0]
        for media, q, i in prefs:
            specificity = 2 if media == offer else 1 if media == otype + "/*" else 0 if media == "*/*" else -1
            if specificity < 0 or q <= 0:
                continue
            key = (q, specificity, -offer_index)
            if best_key is None or key > best_key:
                best, best_key = offer, key
    return best


def representation(media: str, record: dict | None = None) -> bytes:
    """The record in `media`: each a faithful rendering of the plaintext values."""
    r = record if record is not None else RECORD
    if media == "text/csv":
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(list(r))
        w.writerow([r[k] for k in r])
        return out.getvalue().encode()
    if media == "application/xml":
        inner = "".join(f"<{k}>{html.escape(str(v))}</{k}>" for k, v in r.items())
        return f'<?xml version="1.0"?><record>{inner}</record>'.encode()
    if media == "text/html":
        rows = "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in r.items())
        return f"<html><body><table>{rows}</table></body></html>".encode()
    if media == "application/vnd.api+json":
        # JSON:API: the same values one level down, under data.attributes.
        attrs = {k: v for k, v in r.items() if k != "id"}
        return json.dumps({"data": {"type": "record", "id": str(r.get("id")), "attributes": attrs}},
                          separators=(",", ":")).encode()
    return json.dumps(r, separators=(",", ":")).encode()


def etag_of(body: bytes) -> str:
    return '"' + hashlib.md5(body).hexdigest() + '"'


def digest_headers(body: bytes) -> dict[str, str]:
    """Validators and digests of the plaintext representation, as an obliging app sends them."""
    sha = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return {
        "ETag": etag_of(body),
        "Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode(),
        "Digest": f"SHA-256={sha}",
        "Repr-Digest": f"sha-256=:{sha}:",
        "Content-Digest": f"sha-256=:{sha}:",
    }


# --- Conditional requests and ranges (hand-rolled, method-agnostic) -------------------------

def _etags(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


def _http_date(value: str | None):
    if not value:
        return None
    try:
        d = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if d is None:
        return None
    return d if d.tzinfo else d.replace(tzinfo=datetime.timezone.utc)


def conditional_status(method: str, headers, etag: str, last_modified=LAST_MODIFIED) -> int | None:
    """RFC 9110 §13.2.2 evaluation: 412, 304, or None (proceed). `headers.get` lower-case."""
    if_match = headers.get("if-match")
    if if_match is not None:
        tags = _etags(if_match)
        if "*" not in tags and etag not in [t for t in tags if not t.startswith("W/")]:
            return 412
    else:
        ius = _http_date(headers.get("if-unmodified-since"))
        if ius is not None and last_modified > ius:
            return 412
    inm = headers.get("if-none-match")
    if inm is not None:
        tags = [t[2:] if t.startswith("W/") else t for t in _etags(inm)]
        if "*" in tags or etag in tags:
            return 304 if method in ("GET", "HEAD") else 412
    elif method in ("GET", "HEAD"):
        ims = _http_date(headers.get("if-modified-since"))
        if ims is not None and last_modified <= ims:
            return 304
    return None


def parse_ranges(value: str, size: int) -> list[tuple[int, int]] | None:
    """`bytes=` ranges as (start, end-inclusive) clipped to `size`; None if not a byte-range
    set; [] if unsatisfiable."""
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        first, dash, last = part.partition("-")
        if not dash:
            return None
        first, last = first.strip(), last.strip()
        try:
            if first == "":
                n = int(last)
                if n <= 0:
                    continue
                out.append((max(0, size - n), size - 1))
            else:
                a = int(first)
                b = int(last) if last else size - 1
                if a > b:
                    return None
                if a >= size:
                    continue
                out.append((a, min(b, size - 1)))
        except ValueError:
            return None
    return out


def range_response(headers, body: bytes, ctype: str, etag: str):
    """(status, extra headers, body) for the request's `Range` (honouring `If-Range`), or None
    for the whole representation."""
    rng = headers.get("range")
    if rng is None:
        return None
    if_range = headers.get("if-range")
    if if_range is not None and if_range != etag and if_range != LAST_MODIFIED_HTTP:
        return None
    ranges = parse_ranges(rng, len(body))
    if ranges is None:
        return None
    if not ranges:
        return 416, {"Content-Range": f"bytes */{len(body)}"}, b""
    if len(ranges) == 1:
        a, b = ranges[0]
        return 206, {"Content-Range": f"bytes {a}-{b}/{len(body)}", "Content-Type": ctype}, body[a:b + 1]
    boundary = "BOUNDARY3d6b6a416f9b5"
    parts = b""
    for a, b in ranges:
        parts += (f"--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: bytes {a}-{b}/{len(body)}\r\n\r\n"
                  .encode() + body[a:b + 1] + b"\r\n")
    parts += f"--{boundary}--\r\n".encode()
    return 206, {"Content-Type": f"multipart/byteranges; boundary={boundary}"}, parts


# --- Content codings ---------------------------------------------------------------------

def zstd_raw_frame(data: bytes) -> bytes:
    """A valid zstd frame (RFC 8878) of raw blocks: no library needed, and the plaintext is
    visible inside, which is what a leak check must see through anyway."""
    n = len(data)
    if n < 256:
        head = b"\x28\xb5\x2f\xfd" + bytes([0x20, n])
    elif n < 65536 + 256:
        head = b"\x28\xb5\x2f\xfd" + bytes([0x60]) + (n - 256).to_bytes(2, "little")
    else:
        head = b"\x28\xb5\x2f\xfd" + bytes([0xA0]) + n.to_bytes(4, "little")
    blocks, step = b"", 1 << 17
    chunks = [data[i:i + step] for i in range(0, n, step)] or [b""]
    for i, c in enumerate(chunks):
        last = 1 if i == len(chunks) - 1 else 0
        blocks += ((len(c) << 3) | last).to_bytes(3, "little") + c
    return head + blocks


def encode_for(accept_encoding: str | None, body: bytes) -> tuple[bytes, str | None]:
    """Compresses as the client asked (first acceptable of br, zstd, gzip; `*` = gzip)."""
    if not accept_encoding:
        return body, None
    asked = {}
    for item in accept_encoding.split(","):
        parts = [p.strip() for p in item.split(";")]
        q = 1.0
        for p in parts[1:]:
            if p.lower().startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        asked[parts[0].lower()] = q
    for coding in ("br", "zstd", "gzip", "x-gzip"):
        if asked.get(coding, 0) > 0:
            break
    else:
        coding = "gzip" if asked.get("*", 0) > 0 else None
    if coding == "br" and brotli is not None:
        return brotli.compress(body), "br"
    if coding == "zstd":
        return zstd_raw_frame(body), "zstd"
    if coding in ("gzip", "x-gzip"):
        return gzip.compress(body, mtime=0), coding
    return body, None


# --- Pages -------------------------------------------------------------------------------

def not_found_page(path: str) -> bytes:
    return (f"<html><body><h1>Not Found</h1><p>No record at {html.escape(path)}</p></body></html>"
            .encode())


def moved_page(location: str) -> bytes:
    return f'<html><body>Moved to <a href="{location}">{location}</a></body></html>'.encode()


def debug_page(path: str) -> bytes:
    """A framework debug page dumping the handler's locals: the record, in plaintext."""
    return (f"<html><body><h1>Internal Server Error</h1><p>{html.escape(path)}</p>"
            f"<pre>record = {html.escape(repr(RECORD))}</pre></body></html>").encode()


def not_acceptable_page(accept: str) -> bytes:
    return (f"<html><body><h1>Not Acceptable</h1><p>{html.escape(accept)}; available: "
            f"{', '.join(OFFERS)}</p></body></html>").encode()


def wants_representation(prefer: str | None) -> bool:
    return bool(prefer) and "return=representation" in prefer.replace(" ", "").lower()


# --- Overrides -----------------------------------------------------------------------------

def method_from_query(query: str) -> str | None:
    """`_method` as a query parameter, name in any case (Rails/Laravel/Symfony style)."""
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name.strip().lower() == "_method":
            return value
    return None


def client_facts(headers: dict[str, str]) -> tuple[str | None, str | None]:
    """(client address, scheme) an obliging framework takes from the headers beyond the
    X-Forwarded-* family, or None for each it does not find."""
    client = next((headers[h].split(",")[0].strip() for h in CLIENT_IP_HEADERS if headers.get(h)), None)
    scheme = next((headers[h].strip().lower() for h in SCHEME_HEADERS if headers.get(h)), None)
    ssl = (headers.get("x-forwarded-ssl") or headers.get("front-end-https") or "").strip().lower()
    if scheme is None and ssl:
        scheme = "https" if ssl == "on" else "http"
    return client, scheme


def method_from_json(body: bytes) -> str | None:
    """`_method` as a member of a JSON object body (express method-override's documented
    custom getter reads `req.body._method` from whatever body parser ran)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    value = doc.get("_method") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


def method_from_form(body: bytes) -> str | None:
    """`_method` as a form field of a urlencoded POST body (Rack::MethodOverride, Laravel,
    Symfony `http_method_override`, Express method-override with a body getter)."""
    try:
        text = body.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover
        return None
    return method_from_query(text)


# --- The request log -----------------------------------------------------------------------

class RequestLog:
    """JSON lines, appended under a lock, flushed at once."""

    def __init__(self) -> None:
        self.path = os.environ.get("BOUNDARY_LOG") or os.path.join(tempfile.gettempdir(),
                                                                   f"boundary-{os.getpid()}.log")
        self._lock = threading.Lock()
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, entry: dict) -> None:
        line = json.dumps(entry, sort_keys=True)
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()


def body_text(body: bytes) -> str:
    return body.decode("latin-1")
