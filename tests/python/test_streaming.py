"""Answers sealed as they stream (issue 18, docs/streaming.md), in front of the real FastAPI and
Flask apps streaming an export record by record. Above 256 KiB an answer is no longer buffered:
it goes out as it arrives, every selected value sealed (opened here with Python `cryptography`),
whatever its size — past `limits.max_body_bytes`, which used to withhold it — over HTTP/1.1 and
HTTP/2. When the app's stream turns bad half-way (invalid JSON, a value over the bound), the
answer is aborted: the client gets an incomplete body, never a selected value in plaintext, and
the failure is audited."""
import base64
import json
import subprocess
import time

import httpx
import pytest

from conftest import Proxy
from test_fields import py_open

RULES = """keys:
  keyring: "{keyring}"
limits:
  max_body_bytes: 1048576
timeouts:
  upstream_read: 1s
routes:
  - name: export
    match: {{ path: "/api/export" }}
    response:
      encrypt: ["$.records[*].ssn"]
  - name: raw
    match: {{ path: "/api/raw/**" }}
    response:
      encrypt: ["$.ssn"]
"""


@pytest.fixture(scope="module")
def streaming(app, pki, fieldseal_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("streaming")
    keyring = d / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True,
                   capture_output=True)
    secret = base64.b64decode(json.loads(keyring.read_text())["keys"][0]["secret"])
    p = Proxy(fieldseal_bin, pki, app.port, d, RULES.format(keyring=keyring))
    yield p, secret
    p.stop()


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("http2", [False, True])
def test_a_large_export_is_sealed_as_it_streams(streaming, pki, http2):
    proxy, secret = streaming
    n = 20_000  # ~5 MiB: five times limits.max_body_bytes
    with httpx.Client(http2=http2, verify=pki.context(), timeout=60) as c:
        r = c.get(proxy.url(f"/api/export?n={n}"))
    assert r.status_code == 200, r.text[:300]
    assert "content-length" not in r.headers or int(r.headers["content-length"]) == len(r.content)
    doc = r.json()
    records = doc["records"]
    assert len(records) == n
    assert b"000000017" not in r.content
    for i in (0, 1, n // 2, n - 1):
        assert records[i]["id"] == i and records[i]["pad"] == "p" * 200
        assert py_open(secret, "ssn", records[i]["ssn"]) == f"{i:09d}"
    # Every record's SSN is a token: none passed in the clear.
    assert all(rec["ssn"].startswith("fs1.") for rec in records)


def test_a_stream_is_not_held_in_memory(streaming, pki):
    """~50 MiB streamed through: the proxy's resident memory grows by far less than the body."""
    proxy, secret = streaming
    before = rss_kib(proxy.proc.pid)
    size = 0
    with httpx.Client(verify=pki.context(), timeout=120) as c:
        with c.stream("GET", proxy.url("/api/export?n=200000")) as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                size += len(chunk)
    grown = rss_kib(proxy.proc.pid) - before
    assert size > 50 * 2**20, size
    assert grown < 16 * 1024, f"RSS grew by {grown} KiB for a {size >> 20} MiB answer"


def test_the_old_buffered_limit_no_longer_withholds_json(streaming, pki):
    """`/api/raw/big` (2 MiB, one object) was a 502 above max_body_bytes: now it is sealed."""
    proxy, secret = streaming
    with httpx.Client(verify=pki.context(), timeout=60) as c:
        r = c.get(proxy.url("/api/raw/big"))
    assert r.status_code == 200
    doc = r.json()
    assert py_open(secret, "ssn", doc["ssn"]) == "123-45-6789"
    assert doc["pad"] == "x" * (2 << 20)


@pytest.mark.parametrize("http2", [False, True])
@pytest.mark.parametrize("fault", ["broken=1", "huge=1"])
def test_a_stream_that_turns_bad_is_aborted_without_plaintext(streaming, pki, http2, fault):
    proxy, _ = streaming
    got = bytearray()
    with httpx.Client(http2=http2, verify=pki.context(), timeout=60) as c:
        with pytest.raises(httpx.HTTPError):
            with c.stream("GET", proxy.url(f"/api/export?n=4000&{fault}")) as r:
                assert r.status_code == 200  # the head went out before the fault was read
                for chunk in r.iter_bytes():
                    got += chunk
    # A prefix of the export, every SSN in it sealed, and nothing of the bad record.
    assert got.startswith(b'{"records": [')
    assert b"999-99-9999" not in got and b"9" * 64 not in got
    assert b"000000001" not in got
    text = got.decode()
    assert text.count('"ssn": "fs1.') >= 100, text[:200]
    # Audited as a failure of the answer.
    reason = "invalid JSON" if fault == "broken=1" else "too large"
    assert any("a streamed answer was aborted" in line for line in proxy.logs[-200:]) \
        or any(reason in line for line in proxy.logs[-200:]), proxy.logs[-5:]


@pytest.mark.parametrize("http2", [False, True])
def test_a_stream_that_stalls_is_aborted_at_the_read_timeout(streaming, pki, http2):
    """The app stops for 6 s half-way, inside an SSN: the answer is aborted once
    `timeouts.upstream_read` (1 s here) passes with nothing read, the held half of the SSN is
    never sent, and the client is not kept waiting for the app."""
    proxy, _ = streaming
    got = bytearray()
    started = time.monotonic()
    with httpx.Client(http2=http2, verify=pki.context(), timeout=60) as c:
        with pytest.raises(httpx.HTTPError):
            with c.stream("GET", proxy.url("/api/export?n=4000&stall=6")) as r:
                assert r.status_code == 200
                for chunk in r.iter_bytes():
                    got += chunk
    waited = time.monotonic() - started
    assert waited < 4.5, f"the client waited {waited:.1f} s for a stalled app"
    assert got.startswith(b'{"records": [')
    assert b"555-55-" not in got
    assert got.decode().count('"ssn": "fs1.') >= 100


def test_a_buffered_answer_that_stalls_is_a_504_at_the_read_timeout(streaming, pki):
    """Below the streaming threshold the answer is buffered: a stall is a clean 504 once
    `timeouts.upstream_read` passes, long before `upstream_response` (60 s)."""
    proxy, _ = streaming
    started = time.monotonic()
    with httpx.Client(verify=pki.context(), timeout=60) as c:
        r = c.get(proxy.url("/api/export?n=20&stall=6"))
    waited = time.monotonic() - started
    assert r.status_code == 504, r.text[:200]
    assert r.json()["error"]["code"] == "upstream_timeout"
    assert b"555-55-" not in r.content
    assert waited < 4.5, waited
