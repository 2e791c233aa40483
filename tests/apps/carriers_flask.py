"""Flask (werkzeug) app for the carrier tests: form fields (`request.form`, `request.files`),
query parameters (`request.args`) and headers (`request.headers`), each echoed as parsed."""
from __future__ import annotations

from flask import Flask, jsonify, request

import carriers_common as cc

app = Flask(__name__)


# `/<uid>` aliases: the same handlers on routes that name a data subject (subject-bound tokens).
@app.post("/api/profile")
@app.post("/api/profile/<uid>")
def profile(uid=None):
    fields = {k: request.form.getlist(k) for k in request.form.keys()}
    for name, f in request.files.items(multi=True):
        fields.setdefault("file:" + name, []).append(f.read().decode("utf-8", "replace"))
    # What typical handlers read: the first value (werkzeug's MultiDict), or `request.values`,
    # which merges the query string (first) and the form.
    return jsonify(cc.seen(fields) | {"ssn": request.form.get("ssn"),
                                      "values_ssn": request.values.get("ssn")})


@app.get("/api/search")
def search():
    fields = {k: request.args.getlist(k) for k in request.args.keys()}
    return jsonify(cc.seen(fields) | {"ssn": request.args.get("ssn")})


@app.route("/api/account", methods=["GET", "HEAD"])
@app.route("/api/account/<uid>", methods=["GET", "HEAD"])
def account(uid=None):
    values = request.headers.getlist("X-Account")
    resp = jsonify(cc.seen({"x-account": values}))
    resp.headers.update(cc.ACCOUNT_HEADERS)
    return resp


@app.get("/api/account/missing")
def account_missing():
    resp = jsonify({"error": "no such account"})
    resp.headers.update(cc.ACCOUNT_HEADERS)
    return resp, 404


@app.get("/__hits")
def hits():
    return jsonify(cc.HITS)
