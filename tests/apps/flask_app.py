"""A real, unmodified Flask app used as fieldseal's upstream in the integration tests."""
import functools
import gzip
import hashlib
import json
import zlib

import brotli

from flask import Flask, Response, jsonify, request

from export_common import export_records

app = Flask(__name__)

USER = {
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "ssn": "123-45-6789",
    "password": "correct horse battery staple",
    "cards": [{"brand": "visa", "number": "4111111111110366"}],
}


@app.get("/api/users/<int:user_id>")
def get_user(user_id):
    return jsonify({"id": user_id, **USER})


# Many people's records in one answer: each record names its own subject (`id`); with
# `orphan=1`, one record has none.
@app.get("/api/users")
def list_users():
    users = [{"id": i, **USER, "ssn": f"000-00-000{i}"} for i in (1, 2, 3)]
    if request.args.get("orphan") == "1":
        users.append({**USER})
    return jsonify({"owner": 99, "users": users})


PUTS = {"count": 0}


@app.put("/api/users/<int:user_id>")
def put_user(user_id):
    PUTS["count"] += 1
    return jsonify({"received": request.get_json()})


@app.get("/api/stats")
def stats():
    return jsonify({"puts": PUTS["count"], "secure": SECURE["count"]})


SECURE = {"count": 0}


@app.post("/api/secure/echo")
def secure_echo():
    # An ordinary JSON endpoint: it knows nothing of the envelope fieldseal opened for it.
    SECURE["count"] += 1
    return jsonify({"received": request.get_json(), "content_type": request.headers.get("content-type")})


@app.get("/api/raw/text")
def raw_text():
    return Response(json.dumps({"ssn": USER["ssn"]}), mimetype="text/plain")


@app.get("/api/raw/gzip")
def raw_gzip():
    body = gzip.compress(json.dumps({"ssn": USER["ssn"]}).encode())
    return Response(body, mimetype="application/json", headers={"content-encoding": "gzip"})


@app.get("/api/raw/json")
def raw_json():
    return jsonify({"ssn": USER["ssn"], "ok": True})


def encoded(body: bytes, coding: str) -> Response:
    return Response(body, mimetype="application/json", headers={"content-encoding": coding})


@app.get("/api/raw/deflate")
def raw_deflate():
    return encoded(zlib.compress(json.dumps({"ssn": USER["ssn"]}).encode()), "deflate")


@app.get("/api/raw/br")
def raw_br():
    return encoded(brotli.compress(json.dumps({"ssn": USER["ssn"]}).encode()), "br")


@app.get("/api/raw/zstd")
def raw_zstd():
    # Not really zstd: the proxy must refuse the coding without trying.
    return encoded(json.dumps({"ssn": USER["ssn"]}).encode(), "zstd")


@functools.cache
def bomb() -> bytes:
    # ~20 KiB on the wire, 20 MiB of JSON decoded.
    return gzip.compress(json.dumps({"ssn": USER["ssn"], "pad": "0" * (20 << 20)}).encode())


@app.get("/api/raw/bomb")
def raw_bomb():
    return encoded(bomb(), "gzip")


@app.get("/api/raw/invalid")
def raw_invalid():
    return Response('{"ssn": "%s", ' % USER["ssn"], mimetype="application/json")


@app.get("/api/export")
def export():
    names = (("n", 1000), ("broken", 0), ("huge", 0), ("stall", 0))
    args = {k: int(request.args.get(k, d)) for k, d in names}
    return Response(export_records(**args), mimetype="application/json")


@app.get("/api/raw/big")
def raw_big():
    return jsonify({"ssn": USER["ssn"], "pad": "x" * (2 << 20)})


@app.post("/api/echo")
def echo():
    return jsonify({
        "json": request.get_json(),
        "query": request.query_string.decode(),
        "client": request.remote_addr,
        "headers": {k.lower(): v for k, v in request.headers.items()},
    })


@app.post("/api/upload")
def upload():
    digest = hashlib.sha256()
    length = 0
    stream = request.stream
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        digest.update(chunk)
        length += len(chunk)
    return jsonify({"length": length, "sha256": digest.hexdigest()})


@app.get("/api/download")
def download():
    mib = int(request.args.get("mib", "1"))
    chunk = bytes(range(256)) * 4096

    def gen():
        for _ in range(mib):
            yield chunk

    return Response(gen(), mimetype="application/octet-stream")


@app.get("/api/error")
def error():
    return jsonify({"detail": "app failure"}), 500
