"""FastAPI (Starlette, python-multipart) app for the carrier tests: `Form`, `Query` and
`Header` parameters as a typical handler declares them (a single value: Starlette takes the
last of several), plus the whole parsed form, query and header lists echoed."""
from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Form, Header, Query, Request
from fastapi.responses import JSONResponse

import carriers_common as cc

app = FastAPI()


# `/{uid}` aliases: the same handlers on routes that name a data subject (subject-bound tokens).
@app.post("/api/profile")
@app.post("/api/profile/{uid}")
async def profile(request: Request, ssn: Annotated[str | None, Form()] = None):
    form = await request.form()
    fields: dict[str, list[str]] = {}
    for k, v in form.multi_items():
        if hasattr(v, "read"):
            fields.setdefault("file:" + k, []).append((await v.read()).decode("utf-8", "replace"))
        else:
            fields.setdefault(k, []).append(v)
    return cc.seen(fields) | {"ssn": ssn}


@app.get("/api/search")
async def search(request: Request, ssn: Annotated[str | None, Query()] = None):
    fields: dict[str, list[str]] = {}
    for k, v in request.query_params.multi_items():
        fields.setdefault(k, []).append(v)
    return cc.seen(fields) | {"ssn": ssn}


@app.api_route("/api/account", methods=["GET", "HEAD"])
async def account(request: Request, x_account: Annotated[str | None, Header()] = None):
    values = request.headers.getlist("x-account")
    return JSONResponse(cc.seen({"x-account": values}) | {"typed": x_account},
                        headers=cc.ACCOUNT_HEADERS)


@app.get("/api/account/missing")
async def account_missing():
    return JSONResponse({"error": "no such account"}, status_code=404, headers=cc.ACCOUNT_HEADERS)


app.add_api_route("/api/account/{uid}", account, methods=["GET", "HEAD"])


@app.get("/__hits")
async def hits():
    return cc.HITS
