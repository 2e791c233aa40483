"""A real, unmodified FastAPI app used as fieldseal's upstream in the integration tests."""
import asyncio
import functools
import gzip
import hashlib
import json
import zlib

import brotli

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from export_common import export_records

app = FastAPI()

USER = {
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "ssn": "123-45-6789",
    "password": "correct horse battery staple",
    "cards": [{"brand": "visa", "number": "4111111111110366"}],
}


@app.get("/api/users/{user_id}")
async def get_user(user_id: int):
    return {"id": user_id, **USER}


# Many people's records in one answer: each record names its own subject (`id`); with
# `orphan=1`, one record has none.
@app.get("/api/users")
async def list_users(orphan: int = 0):
    users = [{"id": i, **USER, "ssn": f"000-00-000{i}"} for i in (1, 2, 3)]
    if orphan:
        users.append({**USER})
    return {"owner": 99, "users": users}


PUTS = {"count": 0}


@app.put("/api/users/{user_id}")
async def put_user(user_id: int, request: Request):
    PUTS["count"] += 1
    return {"received": await request.json()}


@app.get("/api/stats")
async def stats():
    return {"puts": PUTS["count"], "secure": SECURE["count"]}


SECURE = {"count": 0}


@app.post("/api/secure/echo")
async def secure_echo(request: Request):
    # An ordinary JSON endpoint: it knows nothing of the envelope fieldseal opened for it.
    SECURE["count"] += 1
    return {"received": await request.json(), "content_type": request.headers.get("content-type")}


@app.get("/api/raw/text")
async def raw_text():
    return PlainTextResponse(json.dumps({"ssn": USER["ssn"]}))


@app.get("/api/raw/gzip")
async def raw_gzip():
    body = gzip.compress(json.dumps({"ssn": USER["ssn"]}).encode())
    return Response(body, media_type="application/json", headers={"content-encoding": "gzip"})


@app.get("/api/raw/json")
async def raw_json():
    return {"ssn": USER["ssn"], "ok": True}


def encoded(body: bytes, coding: str) -> Response:
    return Response(body, media_type="application/json", headers={"content-encoding": coding})


@app.get("/api/raw/deflate")
async def raw_deflate():
    return encoded(zlib.compress(json.dumps({"ssn": USER["ssn"]}).encode()), "deflate")


@app.get("/api/raw/br")
async def raw_br():
    return encoded(brotli.compress(json.dumps({"ssn": USER["ssn"]}).encode()), "br")


@app.get("/api/raw/zstd")
async def raw_zstd():
    # Not really zstd: the proxy must refuse the coding without trying.
    return encoded(json.dumps({"ssn": USER["ssn"]}).encode(), "zstd")


@functools.cache
def bomb() -> bytes:
    # ~20 KiB on the wire, 20 MiB of JSON decoded.
    return gzip.compress(json.dumps({"ssn": USER["ssn"], "pad": "0" * (20 << 20)}).encode())


@app.get("/api/raw/bomb")
async def raw_bomb():
    return encoded(bomb(), "gzip")


@app.get("/api/raw/invalid")
async def raw_invalid():
    return Response('{"ssn": "%s", ' % USER["ssn"], media_type="application/json")


@app.get("/api/export")
def export(n: int = 1000, broken: int = 0, huge: int = 0, stall: int = 0):
    # A plain iterator: Starlette runs it in its thread pool, so a stall does not block the loop.
    return StreamingResponse(export_records(n, broken, huge, stall), media_type="application/json")


@app.get("/api/raw/big")
async def raw_big():
    return {"ssn": USER["ssn"], "pad": "x" * (2 << 20)}


@app.post("/api/echo")
async def echo(request: Request):
    body = await request.json()
    return {
        "json": body,
        "query": str(request.url.query),
        "client": request.client.host if request.client else None,
        "headers": {k: v for k, v in request.headers.items()},
    }


@app.post("/api/upload")
async def upload(request: Request):
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.stream():
        digest.update(chunk)
        length += len(chunk)
    return {"length": length, "sha256": digest.hexdigest()}


@app.get("/api/download")
async def download(mib: int = 1):
    chunk = bytes(range(256)) * 4096  # 1 MiB

    async def gen():
        for _ in range(mib):
            yield chunk

    return StreamingResponse(gen(), media_type="application/octet-stream")


@app.get("/api/error")
async def error():
    return JSONResponse({"detail": "app failure"}, status_code=500)


@app.get("/api/slow")
async def slow(ms: int = 100):
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}
