"""Field views by caller identity (issue 15 §3): the same answer seen by its owner, by support,
by HR, by another user and by nobody, in front of a real FastAPI app that is also the token
issuer (tests/apps/identity_app.py: RSA-2048 and Ed25519 keys, JWKS, PyJWT at /login) and does
no authorization of its own.

Tokens are minted by the app (PyJWT) and, for the attacks, by PyJWT and jwcrypto here; sealed
values are opened with Python `cryptography`. Every invalid token must give the most
restrictive view (the rules' own actions) and be counted by why it was refused.
"""
from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import time

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwk, jwt as jwc_jwt

from conftest import APPS, Proxy, free_port, wait_port
from test_field_policy import py_open

SSN = "078-05-1120"

CONFIG = """keys:
  keyring: "{keyring}"
identity:
  jwt:
    {source}
    issuer: https://issuer.test
    audience: profiles-api
    algorithms: [RS256, EdDSA]
    leeway: 5s
fields:
  - select: "$..ssn"
    action: encrypt
    views:
      - {{ when: {{ subject: "{{id}}" }}, show: plain }}
      - {{ when: {{ claims: {{ role: support }} }}, show: mask, keep_last: 4 }}
  - select: "$..bio"
    action: redact
    views:
      - {{ when: {{ subject: "{{id}}" }}, show: plain }}
      - {{ when: {{ scope: "profiles:bio" }}, show: plain }}
  - select: "$..salary"
    action: redact
    views:
      - {{ when: {{ claims: {{ role: hr }}, scope: [payroll] }}, show: plain }}
  - select: "$..email"
    action: mask_email
    views:
      - {{ when: {{ authenticated: true }}, show: plain }}
guard: {{ detect: [ssn, email], mode: block }}
audit: {{ sink: "{audit}", key_file: "{audit_key}" }}
routes:
  - name: profile
    match: {{ path: "/api/profiles/{{id}}", methods: [GET] }}
  - name: profiles
    match: {{ path: "/api/profiles", methods: [GET] }}
"""


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    d = tmp_path_factory.mktemp("issuer")
    port = free_port()
    env = dict(__import__("os").environ, IDENTITY_JWKS_OUT=str(d / "jwks.json"))
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "identity_app:app", "--host",
                             "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            cwd=APPS, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(port, proc, "identity app")
    yield port, d / "jwks.json"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module", params=["jwks_url", "jwks_file"])
def proxy(request, issuer, pki, fieldseal_bin, tmp_path_factory):
    port, jwks_file = issuer
    d = tmp_path_factory.mktemp("views")
    keyring = d / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True,
                   capture_output=True)
    audit_key = d / "audit.key"
    audit_key.write_bytes(base64.b64encode(bytes(range(32))))
    audit_key.chmod(0o600)
    source = (f'jwks_url: "http://127.0.0.1:{port}/.well-known/jwks.json"'
              if request.param == "jwks_url" else f'jwks_file: "{jwks_file}"')
    p = Proxy(fieldseal_bin, pki, port, d,
              CONFIG.format(keyring=keyring, source=source, audit=d / "audit.jsonl",
                            audit_key=audit_key))
    key = json.loads(keyring.read_text())["keys"][0]
    p.secret = base64.b64decode(key["secret"])
    p.audit_path = d / "audit.jsonl"
    p.issuer_port = port
    yield p
    p.stop()


@pytest.fixture
def client(pki):
    with httpx.Client(http2=True, verify=pki.context(), timeout=30) as c:
        yield c


def login(proxy, **body) -> str:
    r = httpx.post(f"http://127.0.0.1:{proxy.issuer_port}/login", json=body)
    assert r.status_code == 200, r.text
    return r.json()["token"]


def get(client, proxy, path, token=None):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    r = client.get(proxy.url(path), headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def identity_count(proxy, result: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{proxy.admin}/metrics").text
    for line in text.splitlines():
        if line.startswith(f'fieldseal_identity_total{{result="{result}"}} '):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no identity series for {result}")


def assert_most_restrictive(proxy, doc):
    """The rules' own actions: what anyone without a valid token gets."""
    assert py_open(proxy.secret, "ssn", doc["ssn"]) == SSN
    assert doc["bio"] is None
    assert doc["salary"] is None
    assert doc["email"] == "a**@example.com" or doc["email"].endswith("@example.com") \
        and doc["email"] != "ada@example.com"


def test_nobody_gets_the_rules_own_actions(proxy, client):
    before = identity_count(proxy, "anonymous")
    assert_most_restrictive(proxy, get(client, proxy, "/api/profiles/1"))
    assert identity_count(proxy, "anonymous") == before + 1


def test_answers_with_views_vary_by_the_token_header(proxy, client):
    """A shared cache must not hand one caller's view to another."""
    r = client.get(proxy.url("/api/profiles/1"))
    assert "authorization" in [v.strip().lower() for v in r.headers.get("vary", "").split(",")], r.headers


@pytest.mark.parametrize("alg", ["RS256", "EdDSA"])
def test_owners_see_their_own_data(proxy, client, alg):
    token = login(proxy, user="1", alg=alg)
    doc = get(client, proxy, "/api/profiles/1", token)
    # The guard is in block mode: the owner's own SSN and email are declared, not a leak.
    assert doc["ssn"] == SSN and doc["bio"] == "bio of 1" and doc["email"] == "ada@example.com"
    assert doc["salary"] is None
    # The same caller on someone else's profile: not the owner.
    other = get(client, proxy, "/api/profiles/2", token)
    assert py_open(proxy.secret, "ssn", other["ssn"]) == SSN
    assert other["bio"] is None
    assert other["email"] == "ada@example.com", "any verified caller sees emails"


def test_roles_and_scopes_choose_views(proxy, client):
    support = get(client, proxy, "/api/profiles/2", login(proxy, user="9", role="support"))
    assert support["ssn"] == "*******1120" and support["bio"] is None
    reader = get(client, proxy, "/api/profiles/2",
                 login(proxy, user="9", scope="profiles:bio other"))
    assert reader["bio"] == "bio of 2"
    # `salary` needs the role AND the scope.
    hr_only = get(client, proxy, "/api/profiles/2", login(proxy, user="9", role="hr"))
    assert hr_only["salary"] is None
    payroll = get(client, proxy, "/api/profiles/2",
                  login(proxy, user="9", role="hr", scope="payroll"))
    assert payroll["salary"] == 123456
    assert py_open(proxy.secret, "ssn", payroll["ssn"]) == SSN


def test_lists_have_no_owner(proxy, client):
    """`subject: "{id}"` names a path parameter; a list route has none, so even the owner of
    one element gets the rule's own action there (documented)."""
    docs = get(client, proxy, "/api/profiles", login(proxy, user="1"))
    assert [d["id"] for d in docs] == ["1", "2", "3"]
    for d in docs:
        assert py_open(proxy.secret, "ssn", d["ssn"]) == SSN
        assert d["bio"] is None


def forge_hs256_with_public_key(proxy) -> str:
    """The classic key-confusion attack: HS256 keyed with the issuer's RSA public key."""
    keys = httpx.get(f"http://127.0.0.1:{proxy.issuer_port}/.well-known/jwks.json").json()["keys"]
    rsa_jwk = [k for k in keys if k["kty"] == "RSA"][0]
    pem = jwk.JWK(**rsa_jwk).export_to_pem()
    header = {"alg": "HS256", "typ": "JWT", "kid": rsa_jwk["kid"]}
    now = int(time.time())
    claims = {"iss": "https://issuer.test", "aud": "profiles-api", "sub": "1",
              "iat": now, "exp": now + 300}
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    import hmac
    sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def invalid_tokens(proxy) -> dict[str, tuple[str, str]]:
    """Tokens that must not count, each with the reason the proxy reports: (token, reason)."""
    keys = httpx.get(f"http://127.0.0.1:{proxy.issuer_port}/.well-known/jwks.json").json()["keys"]
    rsa_kid = [k for k in keys if k["kty"] == "RSA"][0]["kid"]
    good = login(proxy, user="1")
    head, body, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    now = int(time.time())
    stranger = rsa.generate_private_key(65537, 2048)
    forged_claims = dict(claims, sub="1", exp=now + 300)
    # jwcrypto, an independent implementation, signs with a key the issuer never published.
    jwc_key = jwk.JWK.generate(kty="RSA", size=2048, kid=rsa_kid)
    jwc_token = jwc_jwt.JWT(header={"alg": "RS256", "kid": rsa_kid}, claims=forged_claims)
    jwc_token.make_signed_token(jwc_key)
    swapped = base64.urlsafe_b64encode(
        json.dumps(dict(claims, sub="2")).encode()).rstrip(b"=").decode()
    return {
        "expired": (login(proxy, user="1", ttl=-60), "expired"),
        "wrong audience": (login(proxy, user="1", aud="other-api"), "wrong_audience"),
        "wrong issuer": (login(proxy, user="1", iss="https://evil.test"), "wrong_issuer"),
        "alg none": (pyjwt.encode(forged_claims, None, algorithm="none"), "algorithm_not_allowed"),
        "HS256 keyed with the public key": (forge_hs256_with_public_key(proxy), "algorithm_not_allowed"),
        "another key under the issuer's kid (PyJWT)": (
            pyjwt.encode(forged_claims, stranger, algorithm="RS256", headers={"kid": rsa_kid}),
            "bad_signature"),
        "another key under the issuer's kid (jwcrypto)": (jwc_token.serialize(), "bad_signature"),
        "payload swapped": (f"{head}.{swapped}.{sig}", "bad_signature"),
        "unknown kid": (pyjwt.encode(forged_claims, stranger, algorithm="RS256",
                                     headers={"kid": "nope"}), "unknown_key"),
        "garbage": ("not.a.jwt", "malformed"),
    }


def test_invalid_tokens_get_the_most_restrictive_view_and_are_counted(proxy, client):
    for name, (token, reason) in invalid_tokens(proxy).items():
        before = identity_count(proxy, reason)
        doc = get(client, proxy, "/api/profiles/1", token)
        assert_most_restrictive(proxy, doc)
        assert identity_count(proxy, reason) == before + 1, name


def test_a_token_in_another_scheme_or_twice_is_refused(proxy, client):
    token = login(proxy, user="1")
    for headers in ([("authorization", f"Basic {token}")],
                    [("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")]):
        r = client.get(proxy.url("/api/profiles/1"), headers=headers)
        assert_most_restrictive(proxy, r.json())


def test_decisions_are_counted_and_audited_with_a_pseudonym(proxy, client):
    token = login(proxy, user="1")
    get(client, proxy, "/api/profiles/1", token)
    text = httpx.get(f"http://127.0.0.1:{proxy.admin}/metrics").text
    shown = [line for line in text.splitlines()
             if line.startswith("fieldseal_view_decisions_total") and 'selector="$..ssn"' in line
             and 'view="views.0"' in line and 'action="shown"' in line]
    assert shown and float(shown[0].rsplit(" ", 1)[1]) >= 1, shown
    expected = hashlib.sha256(b"fieldseal/identity/subject-hash/v1\0"
                              + len(b"https://issuer.test").to_bytes(8, "big") + b"https://issuer.test"
                              + len(b"1").to_bytes(8, "big") + b"1").hexdigest()[:32]
    deadline = time.time() + 10
    line = None
    while time.time() < deadline and line is None:
        for raw in proxy.audit_path.read_text().splitlines() if proxy.audit_path.exists() else []:
            doc = json.loads(raw)
            if doc.get("event") == "fields" and doc.get("subject") == expected:
                line = doc
        time.sleep(0.1)
    assert line, "no audit line with the caller's pseudonym"
    assert line["identity"] == "verified"
    views = {f["path"]: (f["action"], f.get("view")) for f in line["fields"]}
    assert views["$['ssn']"] == ("shown", "views.0")
    assert views["$['salary']"] == ("redacted", "default")
    # Never the value, the subject or a claim.
    text = json.dumps(line)
    assert SSN not in text and "ada@example.com" not in text and '"1"' not in text
    assert token not in "".join(proxy.logs)
