"""The field policy (contract §8) and the guard (§9) in front of a real, unmodified
RealWorld/Conduit-shaped app on Flask and on FastAPI (tests/apps/conduit_*.py) that returns the
same field, `email`, on several routes nobody listed — the leak of the onboarding trial.

Two proxies per app, with the same `fields` and no route for most of the app's paths:
- `observe`: guard in observe mode; a `/static/**` route opts out with `fields: false`; a `me`
  route masks `$.user.email`, which must win over the policy's `encrypt` on that node.
- `block`: the same policy with the guard in block mode.

Tokens are opened here with Python `cryptography` (AES-GCM, AAD `fs1.<kid>.<context>`), not by
fieldseal.
"""
from __future__ import annotations

import base64
import os
import json
import re
import subprocess
import sys
import time

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import APPS, Proxy, free_port, wait_port, https_client as client

POLICY = """keys:
  keyring: "{keyring}"
limits:
  max_body_bytes: 1048576
fields:
  - {{ select: "$..email", action: encrypt }}
  - {{ select: "$..bio", action: encrypt }}
  - {{ select: "$..phone", action: mask, keep_last: 4 }}
  - {{ select: "$..token", action: redact }}
  - {{ select: "$..emial", action: encrypt }}
guard:
  detect: [ssn, card, email]
  mode: {mode}
routes:
  - name: static
    match: {{ path: "/static/**" }}
    fields: false
  - name: me
    match: {{ path: "/api/user", methods: [GET] }}
    response:
      mask: [{{ path: "$.user.email", keep_last: 4 }}]
"""

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.[A-Za-z]{2,}")


def py_open(secret: bytes, context: str, token: str):
    _, kid, payload = token.split(".", 2)
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return json.loads(AESGCM(secret).decrypt(raw[:12], raw[12:], f"fs1.{kid}.{context}".encode()))


def py_seal(secret: bytes, kid: str, context: str, value) -> str:
    import os
    nonce = os.urandom(12)
    ct = AESGCM(secret).encrypt(nonce, json.dumps(value).encode(), f"fs1.{kid}.{context}".encode())
    return f"fs1.{kid}." + base64.urlsafe_b64encode(nonce + ct).rstrip(b"=").decode()


def start_conduit(kind: str):
    port = free_port()
    if kind == "fastapi":
        cmd = [sys.executable, "-m", "uvicorn", "conduit_fastapi:app", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    else:
        cmd = [sys.executable, "-m", "flask", "--app", "conduit_flask", "run", "--host",
               "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=APPS, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_port(port, proc, kind)
    return proc, (kind, port)


@pytest.fixture(scope="module", params=["flask", "fastapi"])
def conduit(request):
    proc, app = start_conduit(request.param)
    yield app
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def conduit_fastapi():
    """The FastAPI app alone: the walk-through reads its /openapi.json."""
    proc, app = start_conduit("fastapi")
    yield app
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def proxies(conduit, pki, fieldseal_bin, tmp_path_factory):
    _, port = conduit
    d = tmp_path_factory.mktemp("policy")
    keyring = d / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True,
                   capture_output=True)
    key = json.loads(keyring.read_text())["keys"][0]
    secret = base64.b64decode(key["secret"])
    started = {}
    for mode in ("observe", "block"):
        sub = d / mode
        sub.mkdir()
        started[mode] = Proxy(fieldseal_bin, pki, port, sub,
                              POLICY.format(keyring=keyring, mode=mode))
    yield started, secret, key["id"]
    for p in started.values():
        p.stop()


def direct(conduit, path):
    return httpx.get(f"http://127.0.0.1:{conduit[1]}{path}")


def metric(proxy, pki, name_and_labels: str) -> float | None:
    text = httpx.get(f"http://127.0.0.1:{proxy.admin}/metrics").text
    for line in text.splitlines():
        if line.startswith(name_and_labels + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def emails_in(doc, out=None):
    """Every value of an `email` member, anywhere."""
    out = [] if out is None else out
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "email":
                out.append(v)
            else:
                emails_in(v, out)
    elif isinstance(doc, list):
        for v in doc:
            emails_in(v, out)
    return out


UNLISTED = ["/api/profiles/ada", "/api/profiles/bob", "/api/articles",
            "/api/articles/engines/comments", "/api/legacy/user", "/api/raw/user"]


@pytest.mark.parametrize("path", UNLISTED)
def test_a_declared_field_is_sealed_on_every_route_nobody_listed(proxies, conduit, pki, path):
    started, secret, _ = proxies
    plain = direct(conduit, path)
    plain_doc = json.loads(plain.content)
    expected = emails_in(plain_doc)
    assert expected, f"the app should return an email on {path}"
    with client(pki) as c:
        r = c.get(started["observe"].url(path))
    assert r.status_code == 200, r.text
    assert not EMAIL.search(r.text), f"{path} leaked an email: {r.text}"
    doc = json.loads(r.content)
    got = emails_in(doc)
    assert [py_open(secret, "email", t) for t in got] == expected
    # The label the app chose stays: `text/plain` JSON and unlabelled JSON count as JSON.
    assert r.headers.get("content-type") == plain.headers.get("content-type")


def test_policy_masks_redacts_and_leaves_null_alone(proxies, conduit, pki):
    started, secret, _ = proxies
    with client(pki) as c:
        doc = c.get(started["observe"].url("/api/raw/user")).json()["user"]
        bob = c.get(started["observe"].url("/api/profiles/bob")).json()["profile"]
    assert doc["phone"] == "************0958"
    assert doc["token"] is None  # redacted
    assert doc["bio"] is None and doc["image"] is None  # null stays null (contract §7)
    assert py_open(secret, "bio", bob["bio"]) == "writes"


def test_a_route_rule_wins_over_the_policy_on_its_node(proxies, pki):
    started, _, _ = proxies
    with client(pki) as c:
        user = c.get(started["observe"].url("/api/user")).json()["user"]
    # `me` masks $.user.email; the policy's encrypt does not touch that node.
    assert user["email"] == "***********.com"
    # The policy still applies to the nodes the route does not select.
    assert user["phone"] == "************0958" and user["token"] is None


def test_tokens_are_opened_in_requests_on_every_route(proxies, conduit, pki):
    started, secret, kid = proxies
    proxy = started["observe"]
    with client(pki) as c:
        token = c.get(proxy.url("/api/profiles/bob")).json()["profile"]["email"]
        for headers in ({"content-type": "application/json"}, {"content-type": "text/plain"}, {}):
            body = json.dumps({"note": {"email": token}, "n": 1})
            r = c.post(proxy.url("/api/echo"), content=body, headers=headers)
            assert r.status_code == 200, (headers, r.text)
            seen = direct(conduit, "/_seen").json()
            assert json.loads(seen["body"]) == {"note": {"email": "bob@example.org"}, "n": 1}, headers
            # The app's echo of the opened value is sealed again on the way out.
            assert not EMAIL.search(r.text)
            assert py_open(secret, "email", r.json()["received"]["note"]["email"]) == "bob@example.org"
        # An update through a route nobody listed: the app stores plaintext; the answer is the
        # `me` route's (it covers its path for every method), so its mask applies.
        fresh = py_seal(secret, kid, "email", "ada@example.net")
        r = c.put(proxy.url("/api/user"), json={"user": {"email": fresh}})
        assert r.status_code == 200, r.text
        assert json.loads(direct(conduit, "/_seen").json()["body"]) == {"user": {"email": "ada@example.net"}}
        assert r.json()["user"]["email"] == "***********.net"
        r = c.put(proxy.url("/api/user"), json={"user": {"email": py_seal(secret, kid, "email", "ada@example.com")}})
        assert r.status_code == 200
        # A tampered token never reaches the app.
        before = direct(conduit, "/_seen").json()["body"]
        r = c.post(proxy.url("/api/echo"), json={"email": token[:-4] + "AAAA"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "field_rejected"
        assert direct(conduit, "/_seen").json()["body"] == before


def test_other_request_bodies_pass_untouched(proxies, conduit, pki):
    started, _, _ = proxies
    with client(pki) as c:
        r = c.post(started["observe"].url("/api/forms"), data={"email": "x@example.com", "a": "1"})
        assert r.status_code == 200, r.text  # not a 415: the policy alone refuses nothing
        assert direct(conduit, "/_seen").json()["body"] == "email=x%40example.com&a=1"
        # A text body that is not JSON passes as it was sent.
        r = c.post(started["observe"].url("/api/echo"), content=b"just text",
                   headers={"content-type": "text/plain"})
        assert r.status_code == 200
        assert direct(conduit, "/_seen").json()["body"] == "just text"


def test_non_json_answers_stream_untouched_and_keep_their_status(proxies, conduit, pki):
    started, _, _ = proxies
    with client(pki) as c:
        for path in ("/health", "/about", "/no/such/page"):
            plain = direct(conduit, path)
            r = c.get(started["observe"].url(path))
            assert r.status_code == plain.status_code, path
            if "json" not in plain.headers.get("content-type", ""):
                assert r.content == plain.content, path
        # A method the app does not allow: its own status, not a 502.
        r = c.delete(started["observe"].url("/api/tags"))
        assert r.status_code == 405


def test_the_seal_boundary_applies_to_every_route_but_the_opted_out(proxies, conduit, pki):
    started, _, _ = proxies
    proxy = started["observe"]
    with client(pki) as c:
        c.post(proxy.url("/api/echo"), json={"a": 1},
               headers={"range": "bytes=0-3", "if-none-match": '"x"', "if-match": '"y"'})
        seen = direct(conduit, "/_seen").json()["headers"]
        for name in ("range", "if-none-match", "if-match"):
            assert name not in seen
        # `fields: false`: the static export keeps its validator and serves ranges.
        whole = c.get(proxy.url("/static/export.json"))
        assert whole.status_code == 200 and whole.headers.get("etag")
        part = c.get(proxy.url("/static/export.json"), headers={"range": "bytes=0-9"})
        assert part.status_code == 206 and part.content == whole.content[:10]


def test_json_above_the_body_limit_fails_closed_unless_opted_out(proxies, pki):
    started, _, _ = proxies
    with client(pki) as c:
        r = c.get(started["observe"].url("/api/export"))
        assert r.status_code == 502
        assert r.json()["error"]["code"] == "response_not_encryptable"
        assert "too large" in r.json()["error"]["message"]
        assert not EMAIL.search(r.text)
        r = c.get(started["observe"].url("/static/export.json"))
        assert r.status_code == 200 and len(r.content) > 1_048_576


def test_guard_observe_counts_and_logs_paths_never_values(proxies, pki):
    started, _, _ = proxies
    proxy = started["observe"]
    ssn = 'fieldseal_guard_detections_total{route="unmatched",detector="ssn"}'
    card = 'fieldseal_guard_detections_total{route="unmatched",detector="card"}'
    email = 'fieldseal_guard_detections_total{route="unmatched",detector="email"}'
    before = {m: metric(proxy, pki, m) or 0 for m in (ssn, card, email)}
    with client(pki) as c:
        r = c.get(proxy.url("/api/billing"), headers={"x-request-id": "guard-observe-1"})
        assert r.status_code == 200 and "123-45-6789" in r.text  # observe lets it out
        # Sealed and masked values are what protection looks like: no detection.
        for path in UNLISTED:
            c.get(proxy.url(path))
    deadline = time.time() + 5
    while time.time() < deadline and (metric(proxy, pki, ssn) or 0) < before[ssn] + 1:
        time.sleep(0.05)
    assert metric(proxy, pki, ssn) == before[ssn] + 1
    assert metric(proxy, pki, card) == before[card] + 1
    assert (metric(proxy, pki, email) or 0) == before[email]
    line = next(l for l in proxy.logs if "guard-observe-1" in l and "fieldseal::guard" in l)
    assert "$['note']:ssn" in line and "$['card_on_file']:card" in line, line
    assert "123-45-6789" not in line and "4111" not in line


def test_guard_block_withholds_the_answer(proxies, pki):
    started, _, _ = proxies
    with client(pki) as c:
        r = c.get(started["block"].url("/api/billing"))
        assert r.status_code == 502
        assert r.json()["error"]["code"] == "sensitive_data_detected"
        assert "123-45-6789" not in r.text and "4111" not in r.text
        # Answers whose sensitive fields the policy sealed or masked pass the guard.
        for path in UNLISTED + ["/api/user", "/api/tags"]:
            assert c.get(started["block"].url(path)).status_code == 200, path
        # The opted-out route is still guarded: its plaintext emails are withheld.
        assert c.get(started["block"].url("/static/export.json")).status_code == 502


def test_a_selector_that_never_matches_is_visible(proxies, pki):
    started, _, _ = proxies
    proxy = started["observe"]
    with client(pki) as c:
        c.get(proxy.url("/api/articles"))
    good = metric(proxy, pki, 'fieldseal_selector_matches_total{route="unmatched",selector="$..email"}')
    typo = metric(proxy, pki, 'fieldseal_selector_matches_total{route="unmatched",selector="$..emial"}')
    assert good and good >= 2
    assert typo == 0.0


def test_a_validation_error_quoting_an_opened_value_keeps_its_status_and_seals_it(proxies, pki):
    """FastAPI's 422 quotes the input (`"input": {"email": ...}`), the Flask app's too: the
    value the proxy opened on the way in must not come back in the clear in the error."""
    started, secret, kid = proxies
    token = py_seal(secret, kid, "email", "eve@example.com")
    with client(pki) as c:
        r = c.put(started["observe"].url("/api/user"), json={"usr": {"email": token}})
    assert r.status_code == 422, r.text
    assert "eve@example.com" not in r.text
    sealed = emails_in(r.json())
    assert sealed and all(py_open(secret, "email", t) == "eve@example.com" for t in sealed)


def test_the_onboarding_walkthrough_runs_as_written(conduit_fastapi, fieldseal_bin, tmp_path):
    """docs/onboarding.md, "Walk-through": `init` from the app's OpenAPI document → `check` →
    `explain` → `run`, on the Conduit app. Its OpenAPI document only shows `email` in the
    update body; the proposed policy seals it on every route that returns it anyway."""
    conduit = conduit_fastapi
    _, port = conduit
    out = tmp_path / "fieldseal"
    run = lambda *args, **kw: subprocess.run([str(fieldseal_bin), *args], capture_output=True,
                                             text=True, timeout=60, **kw)
    r = run("init", "--upstream", f"http://127.0.0.1:{port}", "--openapi",
            f"http://127.0.0.1:{port}/openapi.json", "--out", str(out))
    assert r.returncode == 0, r.stderr
    config = (out / "fieldseal.yaml").read_text()
    assert '{ select: "$..email", action: encrypt }' in config
    assert '{ select: "$..phone", action: mask, keep_last: 4 }' in config
    r = run("check", "--config", str(out / "fieldseal.yaml"))
    assert r.returncode == 0, r.stderr
    assert "fields.0 encrypt $..email" in r.stdout
    sample = tmp_path / "articles.json"
    sample.write_bytes(direct(conduit, "/api/articles").content)
    r = run("explain", "--config", str(out / "fieldseal.yaml"), "--method", "GET", "--path",
            "/api/articles", "--body", str(sample))
    assert r.returncode == 0, r.stderr
    assert "no route matches" in r.stdout
    assert "encrypt [fields] $..email -> $['articles'][0]['author']['email']" in r.stdout
    assert "bob@example.org" not in r.stdout.split("the client receives")[1]
    # `run`, with the addresses moved to free ports from the environment (as in the guide).
    env = dict(os.environ, FIELDSEAL_LISTEN="127.0.0.1:0", FIELDSEAL_ADMIN="127.0.0.1:0",
               FIELDSEAL_LOG_FORMAT="json")
    proc = subprocess.Popen([str(fieldseal_bin), "run", "--config", str(out / "fieldseal.yaml")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(next(l for l in proc.stderr if "fieldseal ready" in l))
        listen = int(ready["listen"].rsplit(":", 1)[1])
        admin = int(ready["admin"].rsplit(":", 1)[1])
        ctx = __import__("ssl").create_default_context(cafile=str(out / "tls.crt"))
        with httpx.Client(verify=ctx, timeout=30) as c:
            r = c.get(f"https://localhost:{listen}/api/articles")
            assert r.status_code == 200 and not EMAIL.search(r.text), r.text
            r = c.get(f"https://localhost:{listen}/api/billing")
            assert r.status_code == 200  # observe
            r = c.get(f"https://localhost:{listen}/openapi.json")
            assert r.content == direct(conduit, "/openapi.json").content
        deadline = time.time() + 5
        seen = ""
        while time.time() < deadline and 'detector="ssn"' not in seen:
            seen = httpx.get(f"http://127.0.0.1:{admin}/metrics").text
            time.sleep(0.05)
        assert 'fieldseal_guard_detections_total{route="unmatched",detector="ssn"} 1' in seen
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_another_representation_on_a_route_with_its_own_rules_fails_closed(proxies, conduit, pki):
    """Content negotiation (`Accept: text/csv`), the family of headers that change what the app
    returns: on a path whose route has rules of its own, a non-JSON answer is refused."""
    started, _, _ = proxies
    assert "ada@example.com" in direct_csv(conduit, "/api/user")
    with client(pki) as c:
        r = c.get(started["observe"].url("/api/user"), headers={"accept": "text/csv"})
    assert r.status_code == 502 and r.json()["error"]["code"] == "response_not_encryptable"
    assert not EMAIL.search(r.text)


@pytest.mark.xfail(strict=True, reason="contract §8: under the field policy alone non-JSON bodies "
                   "stream untouched, and the guard reads JSON only: an app that honours "
                   "`Accept: text/csv` returns the email in CSV (SECURITY.md, open finding)")
def test_another_representation_under_the_policy_alone_does_not_leak(proxies, conduit, pki):
    started, _, _ = proxies
    assert "bob@example.org" in direct_csv(conduit, "/api/profiles/bob")
    with client(pki) as c:
        r = c.get(started["observe"].url("/api/profiles/bob"), headers={"accept": "text/csv"})
    assert not EMAIL.search(r.text), r.text


def direct_csv(conduit, path):
    return httpx.get(f"http://127.0.0.1:{conduit[1]}{path}", headers={"accept": "text/csv"}).text
