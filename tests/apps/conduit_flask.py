"""The conduit app on Flask (werkzeug's server): see conduit_common.py. Flask's own error
pages (HTML 404/405) are left as they are."""
from __future__ import annotations

import json

from flask import Flask, Response, jsonify, request

import conduit_common as cc

app = Flask(__name__)


@app.get("/api/user")
def get_user():
    if cc.wants_csv(request.headers.get("Accept")):
        return Response(cc.csv_of(cc.user_doc()), mimetype="text/csv")
    return jsonify(cc.user_doc())


@app.put("/api/user")
def put_user():
    cc.SEEN.update(body=request.get_data(as_text=True), content_type=request.content_type)
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict) or "user" not in body:
        return jsonify({"errors": {"body": ["user is required"], "input": body}}), 422
    return jsonify(cc.update_user(body))


@app.get("/api/profiles/<name>")
def profile(name):
    if name not in cc.USERS:
        return jsonify({"errors": {"profile": ["not found"]}}), 404
    if cc.wants_csv(request.headers.get("Accept")):
        return Response(cc.csv_of(cc.profile_doc(name)), mimetype="text/csv")
    return jsonify(cc.profile_doc(name))


@app.get("/api/articles")
def articles():
    return jsonify(cc.articles_doc())


@app.get("/api/articles/<slug>/comments")
def comments(slug):
    return jsonify(cc.comments_doc(slug))


@app.get("/api/tags")
def tags():
    return jsonify({"tags": ["math", "engines"]})


@app.get("/api/legacy/user")
def legacy_user():
    # JSON labelled as text, as older apps and some frameworks' defaults do.
    return Response(json.dumps(cc.user_doc()), mimetype="text/plain")


@app.get("/api/raw/user")
def raw_user():
    resp = Response(json.dumps(cc.user_doc()))
    del resp.headers["Content-Type"]
    return resp


@app.post("/api/echo")
def echo():
    cc.SEEN.update(body=request.get_data(as_text=True), content_type=request.content_type,
                   headers=sorted(k.lower() for k in request.headers.keys()))
    return jsonify({"received": request.get_json(force=True, silent=True)})


@app.post("/api/forms")
def forms():
    cc.SEEN.update(body=request.get_data(as_text=True), content_type=request.content_type)
    return jsonify({"form": request.form.to_dict()})


@app.get("/api/billing")
def billing():
    return jsonify(cc.BILLING)


@app.get("/api/export")
def export():
    return Response(cc.EXPORT, mimetype="application/json")


@app.get("/static/export.json")
def static_export():
    rng = cc.byte_range(request.headers.get("Range"), cc.EXPORT)
    headers = {"ETag": cc.EXPORT_ETAG, "Accept-Ranges": "bytes"}
    if request.headers.get("If-None-Match") == cc.EXPORT_ETAG:
        return Response(status=304, headers=headers)
    if rng:
        start, end = rng
        headers["Content-Range"] = f"bytes {start}-{end}/{len(cc.EXPORT)}"
        return Response(cc.EXPORT[start:end + 1], status=206, mimetype="application/json",
                        headers=headers)
    return Response(cc.EXPORT, mimetype="application/json", headers=headers)


@app.get("/health")
def health():
    return Response("ok", mimetype="text/plain")


@app.get("/about")
def about():
    return Response("<html><body>contact ada@example.com</body></html>", mimetype="text/html")


@app.get("/_seen")
def seen():
    return jsonify(cc.SEEN)
