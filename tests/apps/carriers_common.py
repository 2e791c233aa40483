"""What the carrier test apps (Flask and FastAPI, tests/apps/carriers_*.py) share: the answers
that echo what the app parsed, so a test sees exactly what reached the app, and the response
headers a route seals. The apps do no checking of their own."""
from __future__ import annotations

HITS = {"count": 0}

# Response headers of `GET /api/account`: one sealed, one redacted, one masked, one left alone.
ACCOUNT_HEADERS = {
    "X-Account-Number": "4111111111111111",
    "X-Internal-Debug": "ssn=078-05-1120",
    "X-Card": "4111111111111111",
    "X-Plain": "untouched",
}


def seen(fields: dict[str, list[str]]) -> dict:
    HITS["count"] += 1
    return {"fields": fields, "hits": HITS["count"]}
