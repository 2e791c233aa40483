"""A real, unmodified Flask app used as fieldseal's upstream in the integration tests."""
import gzip
import hashlib
import json

from flask import Flask, Response, jsonify, request

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


PUTS = {"count": 0}


@app.put("/api/users/<int:user_id>")
def put_user(user_id):
    PUTS["count"] += 1
    return jsonify({"received": request.get_json()})


@app.get("/api/stats")
def stats():
    return jsonify({"puts": PUTS["count"]})


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
