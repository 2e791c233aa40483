"""Field rules in front of real, unmodified FastAPI and Flask apps: responses are sealed on the
way out (checked with Python `cryptography`, independently of fieldseal), requests carry the
same tokens back and the app receives plaintext; bad tokens never reach the app; responses that
cannot be sealed never leak (fail closed)."""
import base64
import json
import subprocess

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import Proxy, https_client as client

SSN = "123-45-6789"

# 1 MiB: the decoded `/api/raw/bomb` (20 MiB, ~20 KiB gzipped) is over (a compressed answer is
# decoded whole, bounded; plain JSON above it streams: test_streaming.py).
RULES = """keys:
  keyring: "{keyring}"
limits:
  max_body_bytes: 1048576
routes:
  - name: user
    match: {{ path: "/api/users/{{id}}", methods: [GET, PUT] }}
    response:
      encrypt: ["$.ssn", "$.password", {{ path: "$.cards[*].number", context: "card" }}]
    request:
      decrypt: ["$.ssn", "$.password", {{ path: "$.cards[*].number", context: "card" }}]
  - name: raw
    match: {{ path: "/api/raw/**" }}
    response:
      encrypt: ["$.ssn"]
"""


def py_open(secret: bytes, context: str, token: str):
    prefix, kid, payload = token.split(".", 2)
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return json.loads(AESGCM(secret).decrypt(raw[:12], raw[12:], f"fs1.{kid}.{context}".encode()))


@pytest.fixture(scope="module")
def sealed(app, pki, fieldseal_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("fields")
    keyring = d / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True, capture_output=True)
    secret = base64.b64decode(json.loads(keyring.read_text())["keys"][0]["secret"])
    p = Proxy(fieldseal_bin, pki, app.port, d, RULES.format(keyring=keyring))
    yield p, secret
    p.stop()


def test_get_seals_and_put_gives_the_app_plaintext(sealed, app, pki):
    proxy, secret = sealed
    with client(pki) as c:
        r = c.get(proxy.url("/api/users/7"))
        assert r.status_code == 200 and r.http_version == "HTTP/2"
        assert SSN not in r.text and "4111111111110366" not in r.text
        doc = r.json()
        direct = httpx.get(f"http://127.0.0.1:{app.port}/api/users/7").json()
        assert py_open(secret, "ssn", doc["ssn"]) == direct["ssn"]
        assert py_open(secret, "password", doc["password"]) == direct["password"]
        assert py_open(secret, "card", doc["cards"][0]["number"]) == direct["cards"][0]["number"]
        assert doc["name"] == direct["name"]
        # The client sends the tokens back unchanged; the app sees plaintext.
        r = c.put(proxy.url("/api/users/7"), json=doc)
        assert r.status_code == 200
        assert r.json()["received"] == direct


def test_bad_tokens_never_reach_the_app(sealed, pki):
    proxy, secret = sealed
    with client(pki) as c:
        doc = c.get(proxy.url("/api/users/7")).json()
        puts_before = httpx.get(proxy.url("/api/stats"), verify=pki.context()).json()["puts"]
        cases = {
            "tampered": {**doc, "ssn": doc["ssn"][:-2] + ("A" if doc["ssn"][-2] != "A" else "B") + doc["ssn"][-1]},
            "wrong field": {**doc, "ssn": doc["password"]},
            "unknown kid": {**doc, "ssn": doc["ssn"].replace("fs1.k1.", "fs1.k7.")},
            "garbage": {**doc, "ssn": "fs1.k1.@@@"},
        }
        for name, body in cases.items():
            r = c.put(proxy.url("/api/users/7"), json=body)
            assert r.status_code == 400, name
            err = r.json()["error"]
            assert err["code"] == "field_rejected", name
            assert "$['ssn']" in err["message"], name
            assert err["request_id"] == r.headers["x-request-id"]
        assert "k7" in c.put(proxy.url("/api/users/7"), json=cases["unknown kid"]).json()["error"]["message"]
        puts_after = httpx.get(proxy.url("/api/stats"), verify=pki.context()).json()["puts"]
        assert puts_after == puts_before, "a rejected request reached the app"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_compressed_responses_are_decoded_and_sealed(sealed, app, pki, coding):
    proxy, secret = sealed
    path = f"/api/raw/{coding}"
    direct = httpx.get(f"http://127.0.0.1:{app.port}{path}")
    assert direct.headers["content-encoding"] == coding and direct.json()["ssn"] == SSN
    with client(pki) as c:
        r = c.get(proxy.url(path), headers={"accept-encoding": "gzip, deflate, br"})
    assert r.status_code == 200
    # Forwarded uncompressed: what the client received is exactly what it reads.
    assert "content-encoding" not in r.headers
    assert int(r.headers["content-length"]) == len(r.content)
    assert SSN.encode() not in r.content
    assert py_open(secret, "ssn", r.json()["ssn"]) == SSN


def test_json_sent_as_text_is_sealed(sealed, pki):
    """Contract §8 (1.1): a `text/plain` body that parses as JSON counts as JSON."""
    proxy, secret = sealed
    with client(pki) as c:
        r = c.get(proxy.url("/api/raw/text"))
    assert r.status_code == 200, r.text
    assert SSN.encode() not in r.content
    assert py_open(secret, "ssn", json.loads(r.content)["ssn"]) == SSN


@pytest.mark.parametrize("path", [
    "/api/raw/invalid",  # application/json that does not parse
    "/api/raw/zstd",     # a coding the proxy does not decode
    "/api/raw/bomb",     # gzip that decodes past max_body_bytes
    # (plain JSON over max_body_bytes, `/api/raw/big`, is sealed as it streams: test_streaming.py)
])
def test_unsealable_responses_fail_closed(sealed, pki, path):
    proxy, _ = sealed
    with client(pki) as c:
        r = c.get(proxy.url(path), headers={"accept-encoding": "gzip, deflate, br, zstd"})
    assert r.status_code == 502
    assert "content-encoding" not in r.headers
    assert SSN.encode() not in r.content
    assert r.json()["error"]["code"] == "response_not_encryptable"
    assert r.headers["strict-transport-security"]


def test_json_is_sealed_even_when_the_client_accepts_gzip(sealed, pki):
    proxy, secret = sealed
    with client(pki) as c:
        r = c.get(proxy.url("/api/raw/json"), headers={"accept-encoding": "gzip, br"})
    assert r.status_code == 200
    assert py_open(secret, "ssn", r.json()["ssn"]) == SSN
