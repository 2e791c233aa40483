"""Shared data of the two "conduit" apps (conduit_flask.py, conduit_fastapi.py): a small
RealWorld/Conduit-shaped API, run unmodified behind fieldseal, that returns the same sensitive
field (`email`) on several routes, as the real third-party app of the onboarding trial did:
`/api/user`, `/api/profiles/{username}`, every `author` of `/api/articles` and of comments.

Besides the RealWorld routes, each app has the shapes the field policy (contract §8) and the
guard (§9) must handle: JSON labelled `text/plain` and JSON with no `Content-Type` at all, a
plain-text health check, an HTML page, a form endpoint, an answer carrying an undeclared SSN
and card number (for the guard), a large export (above the proxy's body limit) under `/api/`
and under `/static/` (with hand-rolled `Range` support and an `ETag`), and `/_seen`, which
returns the last request body the app received (to check what the proxy forwarded).
"""
from __future__ import annotations

import hashlib
import json

USERS = {
    "ada": {"username": "ada", "email": "ada@example.com", "bio": None, "image": None,
            "phone": "+44 20 7946 0958"},
    "bob": {"username": "bob", "email": "bob@example.org", "bio": "writes", "image": None,
            "phone": "+1 415 555 0100"},
}
CURRENT = "ada"
TOKEN = "jwt.not.real"
ARTICLES = [
    {"slug": "engines", "title": "On engines", "body": "…", "tagList": ["math"], "author": "ada"},
    {"slug": "notes", "title": "Notes", "body": "…", "tagList": [], "author": "bob"},
]
COMMENTS = {"engines": [{"id": 1, "body": "Nice", "author": "bob"}]}

# An answer nobody declared a rule for, holding what the guard's detectors look for.
BILLING = {
    "customer": "ada",
    "card_on_file": "4111 1111 1111 1111",
    "note": "verified by phone, SSN 123-45-6789",
    "invoice": 20260042,
}

# About 2 MiB: above the 1 MiB `limits.max_body_bytes` the tests configure.
EXPORT = json.dumps(
    {"users": [{"id": i, "email": f"user{i}@example.com", "pad": "x" * 200} for i in range(9000)]}
).encode()
EXPORT_ETAG = '"' + hashlib.sha256(EXPORT).hexdigest()[:16] + '"'

SEEN: dict = {"body": None, "content_type": None}


def user_doc(name: str = CURRENT) -> dict:
    u = USERS[name]
    return {"user": {"email": u["email"], "token": TOKEN, "username": u["username"],
                     "bio": u["bio"], "image": u["image"], "phone": u["phone"]}}


def profile_doc(name: str) -> dict:
    u = USERS[name]
    # The Flask RealWorld app serialises the whole user here, email included.
    return {"profile": {"username": u["username"], "email": u["email"], "bio": u["bio"],
                        "image": u["image"], "following": False}}


def author(name: str) -> dict:
    u = USERS[name]
    return {"username": u["username"], "email": u["email"], "bio": u["bio"], "image": u["image"]}


def articles_doc() -> dict:
    arts = [dict(a, author=author(a["author"])) for a in ARTICLES]
    return {"articles": arts, "articlesCount": len(arts)}


def comments_doc(slug: str) -> dict:
    return {"comments": [dict(c, author=author(c["author"])) for c in COMMENTS.get(slug, [])]}


def update_user(body: dict) -> dict:
    """PUT /api/user: store what arrived, answer the updated user (an echo)."""
    u = USERS[CURRENT]
    for key in ("email", "bio", "image", "phone"):
        if key in body.get("user", {}):
            u[key] = body["user"][key]
    return user_doc()


def wants_csv(accept: str | None) -> bool:
    """Content negotiation, as apps with an export format do: `Accept: text/csv`."""
    return bool(accept) and "text/csv" in accept


def csv_of(doc: dict) -> str:
    """One flat object (the user or the profile inside `doc`) as a CSV header and row."""
    (inner,) = doc.values()
    keys = [k for k, v in inner.items() if not isinstance(v, (dict, list))]
    return ",".join(keys) + "\n" + ",".join("" if inner[k] is None else str(inner[k]) for k in keys) + "\n"


def byte_range(header: str | None, data: bytes):
    """`bytes=a-b` → (start, end) inclusive, or None (no or unsupported range)."""
    if not header or not header.startswith("bytes="):
        return None
    first, _, last = header[6:].partition("-")
    try:
        start = int(first)
        end = int(last) if last else len(data) - 1
    except ValueError:
        return None
    return (start, min(end, len(data) - 1)) if start <= end else None
