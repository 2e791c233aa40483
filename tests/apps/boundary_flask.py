"""A real Flask app, configured the way deployments behind a proxy are, and obliging enough to
honour every header family that can make an app answer something other than the whole JSON
representation fieldseal seals (see boundary_common.py). Upstream of tests/python/test_boundary_*.

WSGI stack, outermost first:
  RequestLog         records each request as it arrived and as the app understood it
  MethodOverride     Flask docs' "HTTP method overrides" middleware, extended to
                     X-HTTP-Method / X-Method-Override, `_method` in the query (any case),
                     in a urlencoded POST body (Rack/Laravel/Symfony style) and in a JSON
                     POST body (express method-override's documented custom getter)
  UrlOverride        X-Original-URL / X-Rewrite-URL replace the path (IIS/Symfony style)
  ApacheCompat       `Request-Range` read as `Range` (Apache httpd's pre-standard synonym)
  ProxyFix           werkzeug's, trusting one hop of X-Forwarded-For/-Proto/-Host/-Port/-Prefix
  ReverseProxied     the widely copied Flask snippet: X-Script-Name strips a prefix from the
                     path, X-Scheme sets the scheme
  ClientFacts        client address from True-Client-IP/X-Client-IP/CF-Connecting-IP/
                     Fastly-Client-IP, scheme from X-Forwarded-Scheme/-Protocol/-Ssl,
                     X-Url-Scheme, Front-End-Https (chi, Echo, Rack, Spring, Gin do)
  Flask              routes below

Routes (each under /api, /api/public and /api/internal: the proxy seals the first, passes the
other two, so the same representation exists in the clear for contrast):
  GET  /records/<id>      the record; negotiation (JSON, CSV, XML, HTML, JSON:API), strong ETag
                          + Content-MD5/Digest/Repr-Digest/Content-Digest over the plaintext,
                          Last-Modified, werkzeug `make_conditional` (If-None-Match, If-Match,
                          If-Modified-Since, Range, If-Range), gzip/br/zstd on request;
                          id 8 redirects (HTML body), other ids 404 (HTML echoing the path),
                          `?fail=1` a 500 debug page dumping the record
  GET  /files/<name>      `send_file(..., conditional=True)` of record.json (Range, If-Range,
                          ETag, Last-Modified), plus Content-MD5/Repr-Digest of the file
  PUT/POST /records/<id>  stores the JSON body; `Prefer: return=representation` echoes the
                          stored record
  POST /secure/record     (and /api/public/secure/record) echo + record; honours Range,
                          conditionals and digests by hand, whatever the method
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from urllib.parse import unquote, urlsplit

from flask import Flask, Response, redirect, request, send_file
from werkzeug.middleware.proxy_fix import ProxyFix

import boundary_common as bc

DATA = bc.data_dir()
LOG = bc.RequestLog()
app = Flask(__name__)
WRITES: dict[str, dict] = {}


# --- Middlewares -----------------------------------------------------------------------------

def _read_input(environ) -> bytes:
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):
        return stream.read()
    n = int(environ.get("CONTENT_LENGTH") or 0)
    return stream.read(n) if n > 0 else b""


def _headers(environ) -> list[list[str]]:
    out = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            out.append([key[5:].lower().replace("_", "-"), value])
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            out.append([key.lower().replace("_", "-"), value])
    return sorted(out)


class RequestLog:
    def __init__(self, wsgi):
        self.wsgi = wsgi

    def __call__(self, environ, start_response):
        body = _read_input(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["wsgi.input_terminated"] = True
        raw = {"method": environ["REQUEST_METHOD"],
               "target": environ.get("REQUEST_URI") or environ.get("RAW_URI") or environ.get("PATH_INFO"),
               "headers": _headers(environ), "body": bc.body_text(body)}

        def logged_start_response(status, headers, exc_info=None):
            LOG.write({
                "app": "flask", "status": int(status.split()[0]), "raw": raw,
                "effective": {
                    "method": environ["REQUEST_METHOD"], "path": environ.get("PATH_INFO", ""),
                    "query": environ.get("QUERY_STRING", ""), "root": environ.get("SCRIPT_NAME", ""),
                    "client": environ.get("REMOTE_ADDR"), "scheme": environ.get("wsgi.url_scheme"),
                    "host": environ.get("HTTP_HOST"), "endpoint": environ.get("boundary.endpoint"),
                },
            })
            return start_response(status, headers, exc_info)

        return self.wsgi(environ, logged_start_response)


class MethodOverride:
    """Flask's documented pattern (`HTTP_X_HTTP_METHOD_OVERRIDE`), made as obliging as the
    frameworks that copied it."""
    bodyless = {"GET", "HEAD", "OPTIONS", "DELETE"}

    def __init__(self, wsgi):
        self.wsgi = wsgi

    def __call__(self, environ, start_response):
        method = None
        for name in bc.METHOD_OVERRIDE_HEADERS:
            key = "HTTP_" + name.upper().replace("-", "_")
            if key in environ:
                method = environ[key]
                break
        if method is None:
            method = bc.method_from_query(environ.get("QUERY_STRING", ""))
        ctype = environ.get("CONTENT_TYPE") or ""
        if method is None and environ["REQUEST_METHOD"] == "POST" and (
                ctype.startswith("application/x-www-form-urlencoded") or ctype.startswith("application/json")):
            body = _read_input(environ)
            environ["wsgi.input"] = io.BytesIO(body)
            method = (bc.method_from_json(body) if ctype.startswith("application/json")
                      else bc.method_from_form(body))
        method = (method or "").strip().upper()
        if method in bc.OVERRIDE_METHODS:
            environ["REQUEST_METHOD"] = method
            if method in self.bodyless:
                environ["CONTENT_LENGTH"] = "0"
        return self.wsgi(environ, start_response)


class UrlOverride:
    def __init__(self, wsgi):
        self.wsgi = wsgi

    def __call__(self, environ, start_response):
        for name in bc.URL_OVERRIDE_HEADERS:
            value = environ.get("HTTP_" + name.upper().replace("-", "_"))
            if value:
                parts = urlsplit(value)
                environ["PATH_INFO"] = unquote(parts.path).encode().decode("latin-1")
                environ["QUERY_STRING"] = parts.query
                break
        return self.wsgi(environ, start_response)


class ReverseProxied:
    """The Flask snippet "Fixing SCRIPT_NAME/url_scheme when behind reverse proxy"."""

    def __init__(self, wsgi):
        self.wsgi = wsgi

    def __call__(self, environ, start_response):
        script_name = environ.get("HTTP_X_SCRIPT_NAME", "")
        if script_name:
            environ["SCRIPT_NAME"] = script_name
            path_info = environ["PATH_INFO"]
            if path_info.startswith(script_name):
                environ["PATH_INFO"] = path_info[len(script_name):]
        scheme = environ.get("HTTP_X_SCHEME", "")
        if scheme:
            environ["wsgi.url_scheme"] = scheme
        return self.wsgi(environ, start_response)


class ApacheCompat:
    """`Request-Range` is read as `Range`, as Apache httpd does (the pre-standard name)."""

    def __init__(self, wsgi):
        self.wsgi = wsgi

    def __call__(self, environ, start_response):
        if "HTTP_REQUEST_RANGE" in environ and "HTTP_RANGE" not in environ:
            environ["HTTP_RANGE"] = environ["HTTP_REQUEST_RANGE"]
        return self.wsgi(environ, start_response)


class ClientFacts:
    """Client address and scheme from the headers other frameworks read (boundary_common)."""

    def __init__(self, wsgi):
        self.wsgi = wsgi

    def __call__(self, environ, start_response):
        headers = {k[5:].lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
        client, scheme = bc.client_facts(headers)
        if client:
            environ["REMOTE_ADDR"] = client
        if scheme:
            environ["wsgi.url_scheme"] = scheme
        return self.wsgi(environ, start_response)


app.wsgi_app = RequestLog(MethodOverride(UrlOverride(ApacheCompat(ProxyFix(
    ReverseProxied(ClientFacts(app.wsgi_app)), x_for=1, x_proto=1, x_host=1, x_port=1, x_prefix=1)))))


@app.before_request
def note_endpoint():
    request.environ["boundary.endpoint"] = request.endpoint


# --- Routes --------------------------------------------------------------------------------

ZONES = {"public", "internal"}


def html(body: bytes, status: int, **headers) -> Response:
    return Response(body, status=status, mimetype="text/html", headers=headers)


def _record(rid: str, prefix: str):
    if request.args.get("fail"):
        return html(bc.debug_page(request.path), 500)
    if rid == str(bc.MOVED_ID):
        return redirect(f"{prefix}/records/{bc.RECORD['id']}", 301)
    if rid != str(bc.RECORD["id"]):
        return html(bc.not_found_page(request.path), 404)
    media = bc.negotiate(request.headers.get("Accept"))
    if media is None:
        return html(bc.not_acceptable_page(request.headers.get("Accept", "")), 406)
    body = bc.representation(media)
    resp = Response(body, mimetype=media)
    digests = bc.digest_headers(body)
    for name, value in digests.items():
        if name != "ETag":
            resp.headers[name] = value
    resp.set_etag(digests["ETag"].strip('"'))
    resp.last_modified = bc.LAST_MODIFIED
    resp.make_conditional(request, accept_ranges=True, complete_length=len(body))
    if resp.status_code == 200:
        data, coding = bc.encode_for(request.headers.get("Accept-Encoding"), body)
        if coding:
            resp.set_data(data)
            resp.headers["Content-Encoding"] = coding
            resp.headers["Content-Digest"] = "sha-256=:%s:" % base64.b64encode(
                hashlib.sha256(data).digest()).decode()
        resp.headers["Vary"] = "Accept, Accept-Encoding"
    return resp


@app.get("/api/records/<rid>")
def record(rid):
    return _record(rid, "/api")


@app.get("/api/<zone>/records/<rid>")
def zone_record(zone, rid):
    if zone not in ZONES:
        return html(bc.not_found_page(request.path), 404)
    return _record(rid, f"/api/{zone}")


def _file(name: str):
    if name != "record.json":
        return html(bc.not_found_page(request.path), 404)
    path = os.path.join(DATA, name)
    resp = send_file(path, mimetype="application/json", conditional=True, etag=True,
                     last_modified=bc.LAST_MODIFIED, max_age=None)
    if resp.status_code == 200:
        with open(path, "rb") as f:
            data = f.read()
        resp.headers["Content-MD5"] = base64.b64encode(hashlib.md5(data).digest()).decode()
        resp.headers["Repr-Digest"] = "sha-256=:%s:" % base64.b64encode(hashlib.sha256(data).digest()).decode()
    return resp


@app.get("/api/files/<name>")
def file(name):
    return _file(name)


@app.get("/api/<zone>/files/<name>")
def zone_file(zone, name):
    if zone not in ZONES:
        return html(bc.not_found_page(request.path), 404)
    return _file(name)


def _write(rid: str):
    doc = request.get_json(silent=True)
    if not isinstance(doc, dict):
        return Response(json.dumps({"error": "expected a JSON object"}), 400, mimetype="application/json")
    stored = {**bc.RECORD, **doc, "id": rid}
    WRITES[rid] = stored
    if bc.wants_representation(request.headers.get("Prefer")):
        return Response(json.dumps(stored, separators=(",", ":")), 200, mimetype="application/json",
                        headers={"Preference-Applied": "return=representation"})
    return Response(b"", 204)


@app.route("/api/records/<rid>", methods=["PUT", "POST"])
def write(rid):
    return _write(rid)


@app.route("/api/<zone>/records/<rid>", methods=["PUT", "POST"])
def zone_write(zone, rid):
    if zone not in ZONES:
        return html(bc.not_found_page(request.path), 404)
    return _write(rid)


def _secure():
    doc = request.get_json(silent=True)
    media = bc.negotiate(request.headers.get("Accept"))
    if media is None:
        return html(bc.not_acceptable_page(request.headers.get("Accept", "")), 406)
    if media == "application/json":
        body = json.dumps({"record": bc.RECORD, "received": doc}, separators=(",", ":")).encode()
    else:
        body = bc.representation(media)
    digests = bc.digest_headers(body)
    headers = dict(digests, **{"Last-Modified": bc.LAST_MODIFIED_HTTP, "Accept-Ranges": "bytes"})
    status = bc.conditional_status(request.method, {k.lower(): v for k, v in request.headers.items()},
                                   digests["ETag"])
    if status is not None:
        return Response(b"", status, headers={"ETag": digests["ETag"]})
    ranged = bc.range_response({k.lower(): v for k, v in request.headers.items()}, body, media,
                               digests["ETag"])
    if ranged is not None:
        status, extra, part = ranged
        return Response(part, status, headers={**extra, "ETag": digests["ETag"]})
    return Response(body, 200, mimetype=media, headers=headers)


@app.post("/api/secure/record")
def secure():
    return _secure()


@app.post("/api/public/secure/record")
def public_secure():
    return _secure()


@app.errorhandler(404)
def not_found(_e):
    return html(bc.not_found_page(request.path), 404)


@app.errorhandler(405)
def not_allowed(_e):
    return html(bc.not_found_page(request.path).replace(b"Not Found", b"Method Not Allowed"), 405)
