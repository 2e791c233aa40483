"""The conduit app on FastAPI (uvicorn): see conduit_common.py. FastAPI's own errors (JSON 404,
422 validation errors that quote the input) are left as they are."""
from __future__ import annotations

import json
from typing import Optional
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, HTMLResponse, Response
from pydantic import BaseModel

import conduit_common as cc

app = FastAPI()


class UserUpdate(BaseModel):
    email: Optional[str] = None
    bio: Optional[str] = None
    image: Optional[str] = None
    phone: Optional[str] = None


class UserBody(BaseModel):
    user: UserUpdate


@app.get("/api/user")
def get_user(request: Request):
    if cc.wants_csv(request.headers.get("accept")):
        return PlainTextResponse(cc.csv_of(cc.user_doc()), media_type="text/csv")
    return cc.user_doc()


@app.put("/api/user")
async def put_user(body: UserBody, request: Request):
    cc.SEEN.update(body=(await request.body()).decode(), content_type=request.headers.get("content-type"))
    return cc.update_user(body.model_dump(exclude_unset=True))


@app.get("/api/profiles/{name}")
def profile(name: str, request: Request):
    if name not in cc.USERS:
        return JSONResponse({"errors": {"profile": ["not found"]}}, status_code=404)
    if cc.wants_csv(request.headers.get("accept")):
        return PlainTextResponse(cc.csv_of(cc.profile_doc(name)), media_type="text/csv")
    return cc.profile_doc(name)


@app.get("/api/articles")
def articles():
    return cc.articles_doc()


@app.get("/api/articles/{slug}/comments")
def comments(slug: str):
    return cc.comments_doc(slug)


@app.get("/api/tags")
def tags():
    return {"tags": ["math", "engines"]}


@app.get("/api/legacy/user")
def legacy_user():
    return PlainTextResponse(json.dumps(cc.user_doc()))


@app.get("/api/raw/user")
def raw_user():
    return Response(json.dumps(cc.user_doc()), media_type=None)


@app.post("/api/echo")
async def echo(request: Request):
    raw = await request.body()
    cc.SEEN.update(body=raw.decode(), content_type=request.headers.get("content-type"),
                   headers=sorted(request.headers.keys()))
    try:
        received = json.loads(raw)
    except ValueError:
        received = None
    return {"received": received}


@app.post("/api/forms")
async def forms(request: Request):
    raw = await request.body()
    cc.SEEN.update(body=raw.decode(), content_type=request.headers.get("content-type"))
    # Parsed here: Starlette's `request.form()` needs python-multipart, which the suite does
    # not install.
    return {"form": dict(parse_qsl(raw.decode()))}


@app.get("/api/billing")
def billing():
    return cc.BILLING


@app.get("/api/export")
def export():
    return Response(cc.EXPORT, media_type="application/json")


@app.get("/static/export.json")
def static_export(request: Request):
    rng = cc.byte_range(request.headers.get("range"), cc.EXPORT)
    headers = {"ETag": cc.EXPORT_ETAG, "Accept-Ranges": "bytes"}
    if request.headers.get("if-none-match") == cc.EXPORT_ETAG:
        return Response(status_code=304, headers=headers)
    if rng:
        start, end = rng
        headers["Content-Range"] = f"bytes {start}-{end}/{len(cc.EXPORT)}"
        return Response(cc.EXPORT[start:end + 1], status_code=206, media_type="application/json",
                        headers=headers)
    return Response(cc.EXPORT, media_type="application/json", headers=headers)


@app.get("/health")
def health():
    return PlainTextResponse("ok")


@app.get("/about")
def about():
    return HTMLResponse("<html><body>contact ada@example.com</body></html>")


@app.get("/_seen")
def seen():
    return cc.SEEN
