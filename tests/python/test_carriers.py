"""Carriers beyond JSON bodies (issue 15 §2): tokens opened in urlencoded and multipart form
fields, query parameters and named headers; response headers sealed, redacted and masked —
in front of real Flask (werkzeug) and FastAPI (Starlette + python-multipart) apps that echo
what they parsed (tests/apps/carriers_*.py).

The invariant every test checks, for each shape an attacker could send: the app never parses
a value under a sealed name that was not opened from a token. Either the proxy refuses the
request (and the app's hit counter does not move) or every value the app parsed under that
name is the plaintext of a token. Tokens are made and opened here with Python
`cryptography`, not by fieldseal.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwk

from jose_helpers import rsa_jwe

from conftest import APPS, Proxy, free_port, wait_port
from test_field_policy import py_open, py_seal

SSN = "078-05-1120"

CONFIG = """keys:
  keyring: "{keyring}"
  rsa_private_key: "{rsa}"
limits:
  max_encrypted_values: 2
fields:
  - {{ select: "query:member", action: encrypt }}
routes:
  - name: profile
    match: {{ path: "/api/profile", methods: [POST] }}
    request:
      decrypt: ["form:ssn", {{ path: "form:card", type: string }}]
      require_encrypted: true
  - name: search
    match: {{ path: "/api/search", methods: [GET] }}
    request:
      decrypt: [{{ path: "query:ssn", type: [string, number] }}]
      require_encrypted: true
  - name: account
    match: {{ path: "/api/account/**" }}
    request:
      decrypt: [{{ path: "header:X-Account", context: account }}]
      require_encrypted: true
    response:
      encrypt: [{{ path: "header:X-Account-Number", context: account }}]
      redact: ["header:X-Internal-Debug"]
      mask: [{{ path: "header:X-Card", keep_last: 4 }}]
"""


@pytest.fixture(scope="module", params=["flask", "fastapi"])
def app(request):
    port = free_port()
    if request.param == "fastapi":
        cmd = [sys.executable, "-m", "uvicorn", "carriers_fastapi:app", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    else:
        cmd = [sys.executable, "-m", "flask", "--app", "carriers_flask", "run", "--host",
               "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=APPS, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_port(port, proc, request.param)
    yield request.param, port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def proxy(app, pki, fieldseal_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("carriers")
    keyring = d / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True,
                   capture_output=True)
    key = json.loads(keyring.read_text())["keys"][0]
    rsa_key = rsa.generate_private_key(65537, 2048)
    rsa_path = d / "rsa.pem"
    rsa_path.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    rsa_path.chmod(0o600)
    p = Proxy(fieldseal_bin, pki, app[1], d, CONFIG.format(keyring=keyring, rsa=rsa_path))
    p.secret, p.kid = base64.b64decode(key["secret"]), key["id"]
    yield p
    p.stop()


@pytest.fixture
def client(pki):
    with httpx.Client(http2=True, verify=pki.context(), timeout=30) as c:
        yield c


def seal(proxy, context, value):
    return py_seal(proxy.secret, proxy.kid, context, value)


def hits(app) -> int:
    return httpx.get(f"http://127.0.0.1:{app[1]}/__hits").json()["count"]


def refused(client, app, code, reason=None, **request):
    """Sends `request`; asserts the proxy answered 4xx `code` and the app saw nothing."""
    before = hits(app)
    r = client.request(**request)
    assert r.status_code in (400, 413, 415), (r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] == code, err
    if reason:
        assert reason in err["message"], err
    assert hits(app) == before, "a refused request reached the app"
    return err


# --- form fields --------------------------------------------------------------------------

def test_urlencoded_form_fields_open(proxy, app, client):
    token = seal(proxy, "ssn", SSN)
    card = seal(proxy, "card", "4111 1111 1111 1111")
    r = client.post(proxy.url("/api/profile"), data={"ssn": token, "card": card, "note": "a&b=c"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fields"]["ssn"] == [SSN]
    assert body["fields"]["card"] == ["4111 1111 1111 1111"]
    assert body["fields"]["note"] == ["a&b=c"], "other fields pass byte for byte"
    assert body["ssn"] == SSN


def test_multipart_form_fields_and_uploads_open(proxy, app, client):
    token = seal(proxy, "ssn", SSN)
    r = client.post(proxy.url("/api/profile"), data={"ssn": token, "note": "hi"},
                    files={"doc": ("a.txt", b"--not-a-boundary\r\nline 2\r\n", "text/plain")})
    assert r.status_code == 200, r.text
    fields = r.json()["fields"]
    assert fields["ssn"] == [SSN]
    assert fields["note"] == ["hi"]
    assert fields["file:doc"] == ["--not-a-boundary\r\nline 2\r\n"], "uploads pass untouched"


def test_plaintext_and_foreign_tokens_are_refused(proxy, app, client):
    url = proxy.url("/api/profile")
    refused(client, app, "field_rejected", "form:ssn", method="POST", url=url, data={"ssn": SSN})
    refused(client, app, "field_rejected", "plaintext_not_allowed", method="POST", url=url,
            files={"ssn": (None, SSN)})
    # A token sealed for another field does not open here (context binding).
    refused(client, app, "field_rejected", "authentication_failed", method="POST", url=url,
            data={"ssn": seal(proxy, "card", SSN)})
    # A token that opens to an object cannot be a form value.
    refused(client, app, "field_rejected", "unexpected_type", method="POST", url=url,
            data={"ssn": seal(proxy, "ssn", {"$ne": None})})
    # `card` declares `type: string`.
    refused(client, app, "field_rejected", "unexpected_type", method="POST", url=url,
            data={"card": seal(proxy, "card", 4111)})


@pytest.mark.parametrize("body", [
    "ssn={tok}&ssn={plain}",            # Starlette's `Form()` takes the last, werkzeug the first
    "ssn={plain}&ssn={tok}",
    "ss%6E={plain}",                    # the name percent-encoded
    "note=1&ssn={plain}&x=2",
    "ssn={tok}%20",                     # a token with a trailing space is not a token
])
def test_urlencoded_spellings_of_a_sealed_name(proxy, app, client, body):
    content = body.format(tok=seal(proxy, "ssn", SSN), plain=SSN.replace("-", "%2D"))
    refused(client, app, "field_rejected", "form:ssn", method="POST", url=proxy.url("/api/profile"),
            content=content, headers={"content-type": "application/x-www-form-urlencoded"})


def test_opened_values_cannot_forge_form_structure(proxy, app, client):
    forged = "x&admin=true"
    r = client.post(proxy.url("/api/profile"), data={"ssn": seal(proxy, "ssn", forged)})
    assert r.status_code == 200
    assert r.json()["fields"] == {"ssn": [forged]}
    # In a multipart part, an opened value holding the boundary would end the part.
    boundary = "b0und4ry"
    forged = f"x\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"admin\"\r\n\r\ntrue"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"ssn\"\r\n\r\n"
            f"{seal(proxy, 'ssn', forged)}\r\n--{boundary}--\r\n")
    refused(client, app, "field_rejected", "invalid_value", method="POST",
            url=proxy.url("/api/profile"), content=body,
            headers={"content-type": f"multipart/form-data; boundary={boundary}"})


def multipart_shapes(tok: str, plain: str) -> dict[str, tuple[str, bytes]]:
    """Multipart bodies two parsers could read differently, each hiding a plaintext `ssn`
    beside (or instead of) a token: (content type, body)."""
    b = "XyZ"
    ct = f"multipart/form-data; boundary={b}"
    part = lambda disp, value, extra="": (  # noqa: E731
        f"--{b}\r\nContent-Disposition: {disp}\r\n{extra}\r\n{value}\r\n")
    end = f"--{b}--\r\n"
    return {
        "bare LF delimiters": (ct, (part('form-data; name="ssn"', tok) +
                                    f"--{b}\nContent-Disposition: form-data; name=\"ssn\"\n\n{plain}\n" + end).encode()),
        "all bare LF": (ct, f"--{b}\nContent-Disposition: form-data; name=\"ssn\"\n\n{plain}\n--{b}--\n".encode()),
        "RFC 2231 name*": (ct, (part("form-data; name*=UTF-8''ssn", plain) + end).encode()),
        "name and name*": (ct, (part("form-data; name=\"note\"; name*=UTF-8''ssn", plain) + end).encode()),
        "two names": (ct, (part('form-data; name="note"; name="ssn"', plain) + end).encode()),
        "quoted escape": (ct, (part('form-data; name="ss\\n"', plain) + end).encode()),
        "Content-Transfer-Encoding": (ct, (part('form-data; name="ssn"', base64.b64encode(plain.encode()).decode(),
                                                "Content-Transfer-Encoding: base64\r\n") + end).encode()),
        "preamble part": (ct, (f"\r\n--{b}\r\nContent-Disposition: form-data; name=\"ssn\"\r\n\r\n{plain}\r\n"
                               + end).encode()),
        "preamble text": (ct, ("junk\r\n" + part('form-data; name="ssn"', plain) + end).encode()),
        "epilogue part": (ct, (part('form-data; name="note"', "x") + end +
                               part('form-data; name="ssn"', plain) + end).encode()),
        "two dispositions": (ct, (part('form-data; name="note"', plain,
                                       'Content-Disposition: form-data; name="ssn"\r\n') + end).encode()),
        "folded disposition": (ct, (f"--{b}\r\nContent-Disposition: form-data;\r\n name=\"ssn\"\r\n\r\n{plain}\r\n"
                                    + end).encode()),
        "uppercase NAME": (ct, (part('form-data; NAME="ssn"', plain) + end).encode()),
        "unquoted name": (ct, (part("form-data; name=ssn", plain) + end).encode()),
        "no closing delimiter": (ct, part('form-data; name="ssn"', plain).encode()),
        "boundary quoted in header": (f'multipart/form-data; boundary="{b}"',
                                      (part('form-data; name="ssn"', plain) + end).encode()),
        "two boundary params": (f"multipart/form-data; boundary=AAA; boundary={b}",
                                (part('form-data; name="ssn"', plain) + end).encode()),
        "boundary case": (f"multipart/form-data; BOUNDARY={b}",
                          (part('form-data; name="ssn"', plain) + end).encode()),
        "type case": (f"Multipart/Form-Data; boundary={b}",
                      (part('form-data; name="ssn"', plain) + end).encode()),
        "file part named ssn": (ct, (part('form-data; name="ssn"; filename="a.txt"', plain,
                                          "Content-Type: text/plain\r\n") + end).encode()),
        "transport padding": (ct, (f"--{b} \r\nContent-Disposition: form-data; name=\"ssn\"\r\n\r\n{plain}\r\n"
                                   + end).encode()),
    }


@pytest.mark.parametrize("shape", list(multipart_shapes("t", "p")))
def test_multipart_shapes_never_deliver_a_plaintext_ssn(proxy, app, client, shape):
    """Each shape is sent through the proxy: it is refused, or every `ssn` the real app parsed
    is the plaintext of a token (the tokens here hold "opened", the plaintext is the SSN)."""
    tok = seal(proxy, "ssn", "opened")
    content_type, body = multipart_shapes(tok, SSN)[shape]
    before = hits(app)
    r = client.post(proxy.url("/api/profile"), content=body, headers={"content-type": content_type})
    if r.status_code == 200:
        doc = r.json()
        values = [v for k, vs in doc["fields"].items() if k in ("ssn", "file:ssn") for v in vs]
        assert SSN not in json.dumps(doc), (shape, doc)
        assert all(v == "opened" for v in values), (shape, doc)
    else:
        assert r.status_code in (400, 415), (shape, r.status_code, r.text)
        assert r.json()["error"]["code"] in ("ambiguous_request", "field_rejected"), r.text
        assert hits(app) == before, f"{shape}: refused but the app saw it"


def test_well_formed_variants_are_read_like_the_apps(proxy, app, client):
    """The strict reader still takes what real clients send: quoted boundaries, unquoted and
    upper-case parameter names, file parts."""
    tok = seal(proxy, "ssn", SSN)
    for shape in ("boundary quoted in header", "unquoted name", "uppercase NAME", "type case",
                  "boundary case"):
        content_type, body = multipart_shapes(tok, tok)[shape]
        r = client.post(proxy.url("/api/profile"), content=body,
                        headers={"content-type": content_type})
        assert r.status_code == 200, (shape, r.text)
        assert r.json()["fields"].get("ssn") == [SSN], (shape, r.json())


def test_form_rules_also_hold_in_the_query_string(proxy, app, client):
    """Flask's `request.values` merges the query string (first) and the form: a plaintext
    `?ssn=` beside a sealed form field would be what such a handler reads."""
    token = seal(proxy, "ssn", SSN)
    refused(client, app, "field_rejected", "query:ssn", method="POST",
            url=proxy.url("/api/profile") + "?ssn=111-22-3333", data={"ssn": token})
    r = client.post(proxy.url("/api/profile") + "?ssn=" + token, data={"ssn": token})
    assert r.status_code == 200, r.text
    if app[0] == "flask":
        assert r.json()["values_ssn"] == SSN
    # Sent to the app directly, the query string is what `request.values` reads first.
    if app[0] == "flask":
        direct = httpx.post(f"http://127.0.0.1:{app[1]}/api/profile?ssn=111-22-3333",
                            data={"ssn": "opened"}).json()
        assert direct["values_ssn"] == "111-22-3333"


def test_route_with_form_rules_refuses_other_bodies(proxy, app, client):
    refused(client, app, "unsupported_media_type", method="POST", url=proxy.url("/api/profile"),
            json={"ssn": SSN})
    refused(client, app, "unsupported_media_type", method="POST", url=proxy.url("/api/profile"),
            content=f"ssn={SSN}", headers={"content-type": "text/plain"})


# --- query parameters ---------------------------------------------------------------------

def test_query_parameters_open(proxy, app, client):
    token = seal(proxy, "ssn", SSN)
    r = client.get(proxy.url("/api/search"), params={"ssn": token, "q": "a b&c"})
    assert r.status_code == 200, r.text
    assert r.json()["fields"] == {"ssn": [SSN], "q": ["a b&c"]}
    assert r.json()["ssn"] == SSN
    r = client.get(proxy.url("/api/search"), params={"ssn": seal(proxy, "ssn", 123456789)})
    assert r.json()["fields"]["ssn"] == ["123456789"], "numbers travel as their JSON text"


@pytest.mark.parametrize("query", [
    "ssn={plain}",
    "ssn={tok}&ssn={plain}",
    "ssn={plain}&ssn={tok}",
    "ss%6E={plain}",
    "%73%73%6e={plain}",
    "q=1&ssn={plain}",
    "ssn={tok}+",
])
def test_query_spellings_of_a_sealed_name(proxy, app, client, query):
    q = query.format(tok=seal(proxy, "ssn", SSN), plain=SSN)
    refused(client, app, "field_rejected", "query:ssn", method="GET",
            url=proxy.url("/api/search") + "?" + q)


def test_query_values_that_are_not_scalars_or_forge_pairs(proxy, app, client):
    refused(client, app, "field_rejected", "unexpected_type", method="GET",
            url=proxy.url("/api/search"), params={"ssn": seal(proxy, "ssn", {"$gt": ""})})
    forged = "1&admin=1#x"
    r = client.get(proxy.url("/api/search"), params={"ssn": seal(proxy, "ssn", forged)})
    assert r.json()["fields"] == {"ssn": [forged]}


def test_the_field_policy_opens_a_query_parameter_on_every_route(proxy, app, client):
    # `query:member` is in the top-level `fields` list: opened on a route that never lists it.
    token = seal(proxy, "member", "m-42")
    r = client.get(proxy.url("/api/search"), params={"member": token, "ssn": seal(proxy, "ssn", SSN)})
    assert r.json()["fields"]["member"] == ["m-42"]


# --- headers ------------------------------------------------------------------------------

def test_request_headers_open(proxy, app, client):
    token = seal(proxy, "account", "acct-7")
    r = client.get(proxy.url("/api/account"), headers={"X-Account": token})
    assert r.status_code == 200, r.text
    assert r.json()["fields"]["x-account"] == ["acct-7"]


@pytest.mark.parametrize("headers", [
    [("X-Account", "acct-7")],
    [("X-Account", "{tok}"), ("X-Account", "acct-7")],
    [("x-ACCOUNT", "acct-7")],
    [("X-Account", "{tok}, acct-7")],
])
def test_header_spellings_of_a_sealed_name(proxy, app, client, headers):
    tok = seal(proxy, "account", "acct-7")
    hs = [(k, v.format(tok=tok)) for k, v in headers]
    refused(client, app, "field_rejected", "header:x-account", method="GET",
            url=proxy.url("/api/account"), headers=hs)


def test_an_underscore_spelling_never_reaches_the_app(proxy, app, client):
    # WSGI/ASGI servers read `X_Account` as `X-Account`; the proxy drops it before the app.
    r = client.get(proxy.url("/api/account"),
                   headers=[("X-Account", seal(proxy, "account", "acct-7")), ("X_Account", "forged")])
    assert r.status_code == 200
    assert r.json()["fields"]["x-account"] == ["acct-7"]


def test_opened_header_values_cannot_split_headers(proxy, app, client):
    refused(client, app, "field_rejected", "invalid_value", method="GET",
            url=proxy.url("/api/account"),
            headers={"X-Account": seal(proxy, "account", "a\r\nX-Admin: 1")})


@pytest.mark.parametrize("path,status", [("/api/account", 200), ("/api/account/missing", 404)])
def test_response_headers_are_sealed_redacted_and_masked(proxy, app, client, path, status):
    r = client.get(proxy.url(path))
    assert r.status_code == status
    sealed = r.headers["x-account-number"]
    assert sealed.startswith(f"fs1.{proxy.kid}.")
    assert py_open(proxy.secret, "account", sealed) == "4111111111111111"
    assert "x-internal-debug" not in r.headers
    assert r.headers["x-card"] == "************1111"
    assert r.headers["x-plain"] == "untouched"
    assert "4111111111111111" not in str(r.headers) and SSN not in str(r.headers)
    # The sealed header comes back as the request header it names: a round trip.
    back = client.get(proxy.url("/api/account"), headers={"X-Account": sealed})
    assert back.json()["fields"]["x-account"] == ["4111111111111111"]


def test_response_headers_are_sealed_on_head(proxy, app, client):
    r = client.head(proxy.url("/api/account"))
    assert r.status_code == 200
    assert r.headers["x-account-number"].startswith("fs1.")
    assert "x-internal-debug" not in r.headers


def test_carrier_rules_are_counted_per_selector(proxy, app, client):
    client.get(proxy.url("/api/search"), params={"ssn": seal(proxy, "ssn", SSN)})
    text = httpx.get(f"http://127.0.0.1:{proxy.admin}/metrics").text
    line = [x for x in text.splitlines()
            if x.startswith("fieldseal_selector_matches_total") and 'selector="query:ssn"' in x]
    assert line and float(line[0].rsplit(" ", 1)[1]) >= 1, line
    unused = [x for x in text.splitlines()
              if 'selector="header:X-Account-Number"' in x and 'route="account"' in x]
    assert unused, "rules are listed at 0 before they match"


def test_the_shapes_matter_to_the_real_apps(app):
    """The multipart family above is not hypothetical: sent to the app directly, most shapes
    deliver a plaintext `ssn` (and the two apps disagree on several), which is why the proxy
    refuses them rather than reading them its own way."""
    delivered = []
    for shape, (content_type, body) in multipart_shapes("TOKEN", SSN).items():
        r = httpx.post(f"http://127.0.0.1:{app[1]}/api/profile", content=body,
                       headers={"content-type": content_type})
        if r.status_code == 200 and SSN in json.dumps(r.json().get("fields")):
            delivered.append(shape)
    assert len(delivered) >= 10, delivered
    assert "bare LF delimiters" in delivered or "two dispositions" in delivered, delivered


# --- client-encrypted values (JWE, made with jwcrypto) ------------------------------------

def proxy_key(proxy, client) -> jwk.JWK:
    keys = client.get(proxy.url("/.well-known/fieldseal/jwks.json")).json()["keys"]
    return jwk.JWK(**[k for k in keys if k["kty"] == "RSA"][0])


def test_client_encrypted_values_open_in_every_carrier(proxy, app, client):
    key = proxy_key(proxy, client)
    r = client.post(proxy.url("/api/profile"), data={"ssn": rsa_jwe(key, SSN, fsc="ssn")})
    assert r.status_code == 200, r.text
    assert r.json()["fields"]["ssn"] == [SSN]
    r = client.get(proxy.url("/api/search"), params={"ssn": rsa_jwe(key, SSN)})
    assert r.json()["fields"]["ssn"] == [SSN]
    r = client.get(proxy.url("/api/account"), headers={"X-Account": rsa_jwe(key, "acct-9", fsc="account")})
    assert r.json()["fields"]["x-account"] == ["acct-9"]
    # Bound to another field (`fsc`): refused, as in a JSON body.
    refused(client, app, "field_rejected", "context_mismatch", method="POST",
            url=proxy.url("/api/profile"), data={"ssn": rsa_jwe(key, SSN, fsc="card")})


def test_one_budget_of_client_encrypted_values_covers_every_carrier(proxy, app, client):
    key = proxy_key(proxy, client)
    # limits.max_encrypted_values is 2: two in the query string and one in a header is three.
    url = proxy.url("/api/account") + "?member=" + rsa_jwe(key, "m") + "&member=" + rsa_jwe(key, "n")
    refused(client, app, "field_rejected", "too_many_encrypted_values", method="GET", url=url,
            headers={"X-Account": rsa_jwe(key, "acct-9", fsc="account")})


# --- Token formats on carriers (issue 16): the same options as on JSON members -------------------

FORMATS_CONFIG = """keys:
  keyring: "{keyring}"
fields:
  - {{ select: "form:ssn", action: encrypt, per_subject: true }}
  - {{ select: "query:ssn", action: encrypt, searchable: true }}
  - {{ select: "header:X-Account", action: encrypt, per_subject: true, context: account }}
routes:
  - name: profile
    match: {{ path: "/api/profile/{{id}}", methods: [POST] }}
    subject: "{{id}}"
  - name: account
    match: {{ path: "/api/account/{{id}}" }}
    subject: "{{id}}"
    response:
      encrypt:
        - {{ path: "header:X-Account-Number", context: account, per_subject: true }}
        - {{ path: "header:X-Card", ttl: 1h }}
"""


@pytest.fixture(scope="module")
def formats_proxy(app, pki, fieldseal_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("carrier-formats")
    keyring = d / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True,
                   capture_output=True)
    key = json.loads(keyring.read_text())["keys"][0]
    p = Proxy(fieldseal_bin, pki, app[1], d, FORMATS_CONFIG.format(keyring=keyring))
    p.secret, p.kid = base64.b64decode(key["secret"]), key["id"]
    yield p
    p.stop()


def test_response_headers_take_every_token_format(formats_proxy, client):
    """A sealed response header is subject-bound or expiring as the rule says, checked by
    opening it with `cryptography`: the account number opens for the path's subject only."""
    import time
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from test_tokens import py_open_expiring, subject_key, unb64url
    p = formats_proxy
    before = int(time.time())
    r = client.get(p.url("/api/account/7"))
    assert r.status_code == 200, r.text
    number = r.headers["x-account-number"]
    assert number.startswith(f"fsb1.{p.kid}."), number
    raw = unb64url(number.split(".", 2)[2])
    aad = f"fsb1.{p.kid}.account".encode()
    assert json.loads(AESGCM(subject_key(p.secret, "7")).decrypt(raw[:12], raw[12:], aad)) \
        == "4111111111111111"
    with pytest.raises(InvalidTag):
        AESGCM(subject_key(p.secret, "8")).decrypt(raw[:12], raw[12:], aad)
    card, expires_at = py_open_expiring(p.secret, "x-card", r.headers["x-card"])
    assert card == "4111111111111111" and before + 3600 <= expires_at <= int(time.time()) + 3600


@pytest.mark.parametrize("carrier", ["form", "header"])
def test_subject_bound_tokens_open_in_carriers_for_their_subject_only(formats_proxy, app, client,
                                                                       carrier):
    """A `per_subject` policy entry on a form field or a header: the subject's own token opens
    for the app; the same token on another subject's route, and an `fs1` token of the same
    field (the downgrade), are refused before the app."""
    from test_tokens import py_seal_for_subject
    p = formats_proxy
    context = "ssn" if carrier == "form" else "account"
    token = py_seal_for_subject(p.secret, p.kid, "7", context, SSN)

    def send(subject, value):
        if carrier == "form":
            return client.post(p.url(f"/api/profile/{subject}"), data={"ssn": value})
        return client.get(p.url(f"/api/account/{subject}"), headers={"X-Account": value})

    r = send("7", token)
    assert r.status_code == 200, r.text
    parsed = r.json()["fields"]["ssn" if carrier == "form" else "x-account"]
    assert parsed == [SSN], r.text
    before = hits(app)
    r = send("8", token)
    assert r.status_code == 400 and "authentication_failed" in r.text, r.text
    r = send("7", py_seal(p.secret, p.kid, context, SSN))
    assert r.status_code == 400 and "not_subject_bound" in r.text, r.text
    assert hits(app) == before and SSN not in r.text


def test_searchable_tokens_open_in_the_query_string(formats_proxy, client):
    from test_tokens import py_seal_searchable
    p = formats_proxy
    token = py_seal_searchable(p.secret, p.kid, "ssn", SSN)
    assert token == py_seal_searchable(p.secret, p.kid, "ssn", SSN)
    r = client.get(p.url("/api/search"), params={"ssn": token})
    assert r.status_code == 200 and r.json()["fields"]["ssn"] == [SSN], r.text
