"""A real FastAPI app (Starlette, run by uvicorn with `--proxy-headers --forwarded-allow-ips '*'`),
the FastAPI twin of boundary_flask.py: the same routes and the same obliging behaviour, with the
Starlette equivalents (FileResponse's own Range/If-Range handling, ASGI middlewares for the
overrides). See boundary_flask.py for the route list and boundary_common.py for the shared parts.

Also served by hypercorn (BOUNDARY_SERVER=hypercorn, with hypercorn's ProxyFixMiddleware in
legacy mode instead of uvicorn's flags): hypercorn answers `Upgrade: h2c` with a 101 and then
speaks HTTP/2 on the connection, which is what a proxy tunnelling upgrades must not allow.

ASGI stack, outermost first (uvicorn's ProxyHeadersMiddleware wraps all of it):
  RequestLog       records each request as it arrived and as the app understood it
  MethodOverride   X-HTTP-Method-Override / X-HTTP-Method / X-Method-Override, `_method` in the
                   query (any case), in a urlencoded or in a JSON POST body
  UrlOverride      X-Original-URL / X-Rewrite-URL replace the path
  ApacheCompat     `Request-Range` read as `Range`
  Prefix           X-Script-Name or X-Forwarded-Prefix become the ASGI `root_path`, which
                   Starlette's router strips from the path before matching (a routing change)
  ClientFacts      client address and scheme from the headers chi, Echo, Rack, Spring read
  FastAPI
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from urllib.parse import unquote, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

import boundary_common as bc

DATA = bc.data_dir()
LOG = bc.RequestLog()
api = FastAPI()
WRITES: dict[str, dict] = {}
ZONES = {"public", "internal"}


# --- Middlewares -----------------------------------------------------------------------------

async def _read_body(receive) -> bytes:
    body, more = b"", True
    while more:
        msg = await receive()
        if msg["type"] != "http.request":
            break
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    return body


def _replaying(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _headers(scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        name = k.decode("latin-1").lower()
        out[name] = (out[name] + "," if name in out else "") + v.decode("latin-1")
    return out


def _route_path(scope) -> str:
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):
        if path == root:
            return ""
        if path[len(root)] == "/":
            return path[len(root):]
    return path


class RequestLog:
    def __init__(self, asgi):
        self.asgi = asgi

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.asgi(scope, receive, send)
        body = await _read_body(receive)
        target = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        raw = {"method": scope["method"], "target": target,
               "headers": sorted([k.decode("latin-1").lower(), v.decode("latin-1")] for k, v in scope["headers"]),
               "body": bc.body_text(body)}

        async def logged_send(msg):
            if msg["type"] == "http.response.start":
                endpoint = scope.get("endpoint")
                LOG.write({
                    "app": "fastapi", "status": msg["status"], "raw": raw,
                    "effective": {
                        "method": scope["method"], "path": _route_path(scope),
                        "query": scope.get("query_string", b"").decode("latin-1"),
                        "root": scope.get("root_path", ""),
                        "client": (scope.get("client") or [None])[0], "scheme": scope.get("scheme"),
                        "host": _headers(scope).get("host"),
                        "endpoint": getattr(endpoint, "__name__", None),
                    },
                })
            await send(msg)

        await self.asgi(scope, _replaying(body, receive), logged_send)


class MethodOverride:
    def __init__(self, asgi):
        self.asgi = asgi

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = _headers(scope)
            method = next((headers[h] for h in bc.METHOD_OVERRIDE_HEADERS if h in headers), None)
            if method is None:
                method = bc.method_from_query(scope.get("query_string", b"").decode("latin-1"))
            ctype = headers.get("content-type", "")
            if method is None and scope["method"] == "POST" and (
                    ctype.startswith("application/x-www-form-urlencoded") or ctype.startswith("application/json")):
                body = await _read_body(receive)
                receive = _replaying(body, receive)
                method = (bc.method_from_json(body) if ctype.startswith("application/json")
                          else bc.method_from_form(body))
            method = (method or "").strip().upper()
            if method in bc.OVERRIDE_METHODS:
                scope["method"] = method
        await self.asgi(scope, receive, send)


class UrlOverride:
    def __init__(self, asgi):
        self.asgi = asgi

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = _headers(scope)
            for name in bc.URL_OVERRIDE_HEADERS:
                value = headers.get(name)
                if value:
                    parts = urlsplit(value)
                    scope["path"] = unquote(parts.path)
                    scope["raw_path"] = parts.path.encode("latin-1")
                    scope["query_string"] = parts.query.encode("latin-1")
                    break
        await self.asgi(scope, receive, send)


class Prefix:
    def __init__(self, asgi):
        self.asgi = asgi

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = _headers(scope)
            prefix = headers.get("x-script-name") or headers.get("x-forwarded-prefix")
            if prefix:
                scope["root_path"] = prefix.rstrip("/")
        await self.asgi(scope, receive, send)


class ApacheCompat:
    """`Request-Range` is read as `Range`, as Apache httpd does."""

    def __init__(self, asgi):
        self.asgi = asgi

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            names = {k.lower() for k, _ in scope["headers"]}
            if b"request-range" in names and b"range" not in names:
                value = next(v for k, v in scope["headers"] if k.lower() == b"request-range")
                scope["headers"] = list(scope["headers"]) + [(b"range", value)]
        await self.asgi(scope, receive, send)


class ClientFacts:
    """Client address and scheme from the headers other frameworks read (boundary_common)."""

    def __init__(self, asgi):
        self.asgi = asgi

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            client, scheme = bc.client_facts(_headers(scope))
            if client:
                scope["client"] = (client, 0)
            if scheme:
                scope["scheme"] = scheme
        await self.asgi(scope, receive, send)


app = RequestLog(MethodOverride(UrlOverride(ApacheCompat(Prefix(ClientFacts(api))))))
if os.environ.get("BOUNDARY_SERVER") == "hypercorn":
    # hypercorn has no --proxy-headers flag: its ProxyFixMiddleware is the documented way.
    from hypercorn.middleware import ProxyFixMiddleware

    app = ProxyFixMiddleware(app, mode="legacy", trusted_hops=1)


# --- Routes --------------------------------------------------------------------------------

def lower_headers(request: Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


def html(body: bytes, status: int, headers=None) -> Response:
    return HTMLResponse(body, status_code=status, headers=headers)


def _record(request: Request, rid: str, prefix: str) -> Response:
    path = request.url.path
    if request.query_params.get("fail"):
        return html(bc.debug_page(path), 500)
    if rid == str(bc.MOVED_ID):
        location = f"{prefix}/records/{bc.RECORD['id']}"
        return html(bc.moved_page(location), 301, {"Location": location})
    if rid != str(bc.RECORD["id"]):
        return html(bc.not_found_page(path), 404)
    headers = lower_headers(request)
    media = bc.negotiate(headers.get("accept"))
    if media is None:
        return html(bc.not_acceptable_page(headers.get("accept", "")), 406)
    body = bc.representation(media)
    digests = bc.digest_headers(body)
    etag = digests["ETag"]
    common = {"ETag": etag, "Last-Modified": bc.LAST_MODIFIED_HTTP, "Accept-Ranges": "bytes",
              "Vary": "Accept, Accept-Encoding"}
    status = bc.conditional_status(request.method, headers, etag)
    if status == 304:
        return Response(status_code=304, headers=common)
    if status == 412:
        return html(b"<html><body>Precondition Failed</body></html>", 412)
    ranged = bc.range_response(headers, body, media, etag)
    if ranged is not None:
        status, extra, part = ranged
        return Response(part, status_code=status, headers={**common, **extra})
    data, coding = bc.encode_for(headers.get("accept-encoding"), body)
    out = {**digests, **common}
    if coding:
        out["Content-Encoding"] = coding
        out["Content-Digest"] = "sha-256=:%s:" % base64.b64encode(hashlib.sha256(data).digest()).decode()
    return Response(data, status_code=200, headers=out, media_type=media)


@api.api_route("/api/records/{rid}", methods=["GET", "HEAD"])
async def record(request: Request, rid: str):
    return _record(request, rid, "/api")


@api.api_route("/api/{zone}/records/{rid}", methods=["GET", "HEAD"])
async def zone_record(request: Request, zone: str, rid: str):
    if zone not in ZONES:
        return html(bc.not_found_page(request.url.path), 404)
    return _record(request, rid, f"/api/{zone}")


def _file(request: Request, name: str) -> Response:
    if name != "record.json":
        return html(bc.not_found_page(request.url.path), 404)
    path = os.path.join(DATA, name)
    st = os.stat(path)
    # Starlette's FileResponse ETag: md5 of "mtime-size".
    etag = '"' + hashlib.md5(f"{st.st_mtime}-{st.st_size}".encode()).hexdigest() + '"'
    status = bc.conditional_status(request.method, lower_headers(request), etag)
    if status == 304:
        return Response(status_code=304, headers={"ETag": etag, "Last-Modified": bc.LAST_MODIFIED_HTTP})
    if status == 412:
        return html(b"<html><body>Precondition Failed</body></html>", 412)
    with open(path, "rb") as f:
        data = f.read()
    extra = {"Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode(),
             "Repr-Digest": "sha-256=:%s:" % base64.b64encode(hashlib.sha256(data).digest()).decode()}
    # FileResponse honours Range and If-Range itself (206, multipart/byteranges, 416).
    return FileResponse(path, media_type="application/json", headers=extra)


@api.api_route("/api/files/{name}", methods=["GET", "HEAD"])
async def file(request: Request, name: str):
    return _file(request, name)


@api.api_route("/api/{zone}/files/{name}", methods=["GET", "HEAD"])
async def zone_file(request: Request, zone: str, name: str):
    if zone not in ZONES:
        return html(bc.not_found_page(request.url.path), 404)
    return _file(request, name)


async def _write(request: Request, rid: str) -> Response:
    try:
        doc = json.loads(await request.body())
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return Response(json.dumps({"error": "expected a JSON object"}), 400, media_type="application/json")
    stored = {**bc.RECORD, **doc, "id": rid}
    WRITES[rid] = stored
    if bc.wants_representation(request.headers.get("prefer")):
        return Response(json.dumps(stored, separators=(",", ":")), 200, media_type="application/json",
                        headers={"Preference-Applied": "return=representation"})
    return Response(status_code=204)


@api.api_route("/api/records/{rid}", methods=["PUT", "POST"])
async def write(request: Request, rid: str):
    return await _write(request, rid)


@api.api_route("/api/{zone}/records/{rid}", methods=["PUT", "POST"])
async def zone_write(request: Request, zone: str, rid: str):
    if zone not in ZONES:
        return html(bc.not_found_page(request.url.path), 404)
    return await _write(request, rid)


async def _secure(request: Request) -> Response:
    try:
        doc = json.loads(await request.body())
    except ValueError:
        doc = None
    headers = lower_headers(request)
    media = bc.negotiate(headers.get("accept"))
    if media is None:
        return html(bc.not_acceptable_page(headers.get("accept", "")), 406)
    if media == "application/json":
        body = json.dumps({"record": bc.RECORD, "received": doc}, separators=(",", ":")).encode()
    else:
        body = bc.representation(media)
    digests = bc.digest_headers(body)
    status = bc.conditional_status(request.method, headers, digests["ETag"])
    if status is not None:
        return Response(b"", status_code=status, headers={"ETag": digests["ETag"]})
    ranged = bc.range_response(headers, body, media, digests["ETag"])
    if ranged is not None:
        status, extra, part = ranged
        return Response(part, status_code=status, headers={**extra, "ETag": digests["ETag"]})
    return Response(body, 200, media_type=media,
                    headers={**digests, "Last-Modified": bc.LAST_MODIFIED_HTTP, "Accept-Ranges": "bytes"})


@api.post("/api/secure/record")
async def secure(request: Request):
    return await _secure(request)


@api.post("/api/public/secure/record")
async def public_secure(request: Request):
    return await _secure(request)


@api.exception_handler(StarletteHTTPException)
async def http_error(request: Request, exc: StarletteHTTPException):
    page = bc.not_found_page(request.url.path)
    if exc.status_code != 404:
        page = page.replace(b"Not Found", str(exc.detail).encode())
    return html(page, exc.status_code)
