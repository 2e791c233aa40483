"""The client examples against the real proxy (contract §3): the WebCrypto module in a real
headless Chromium, and the jwcrypto command-line example as a subprocess.

The browser part runs Debian's `chromium` under playwright (no downloaded browser build). The
page lives on the proxy's origin: playwright answers the requests for `/_examples/...` with the
files of `examples/clients/browser/` exactly as they are on disk (what an app serving them would
do), under a strict Content-Security-Policy, and everything else (the JWKS, the PUTs) goes over
the network to the proxy, whose certificate Chromium accepts by its SPKI pin. The code under
test is the unmodified `fieldseal-client.js`, loaded as an ES module with `import()`.

Checked: the app receives the plaintext; the browser's JWE is standard (jwcrypto opens it with
the private key; header, IV and tag sizes); iat/jti make a replay fail; tampered browser values
are 400 and the app is not called; `cty: json` values; the JWKS read cross-origin (CORS); the
demo page's form. Without chromium or playwright the browser tests skip, unless
FIELDSEAL_REQUIRE_BROWSER is set (scripts/test.sh sets it), in which case they fail.
"""
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwe, jwk

from jose_helpers import b64url, flip, unb64url
from conftest import ROOT, Proxy

BROWSER_DIR = ROOT / "examples" / "clients" / "browser"
CLI = ROOT / "examples" / "clients" / "python" / "encrypt_field.py"
CHROMIUM = Path(os.environ.get("FIELDSEAL_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EXAMPLES_PREFIX = "/_examples/"  # answered by playwright from BROWSER_DIR, never by the proxy
SSN = "123-45-6789"

CONFIG = """keys:
  keyring: "{keyring}"
  rsa_private_key: "{rsa}"
routes:
  - name: user
    match: {{ path: "/api/users/{{id}}", methods: [GET, PUT] }}
    request:
      decrypt: ["$.ssn", "$.profile"]
      max_age: 300
"""


@pytest.fixture(scope="module")
def setup(app, pki, fieldseal_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("browser")
    keyring = d / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True, capture_output=True)
    key = rsa.generate_private_key(65537, 2048)
    rsa_path = d / "rsa.pem"
    rsa_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    rsa_path.chmod(0o600)
    proxy = Proxy(fieldseal_bin, pki, app.port, d, CONFIG.format(keyring=keyring, rsa=rsa_path))
    yield {"proxy": proxy, "private": jwk.JWK.from_pyca(key), "kid": jwk.JWK.from_pyca(key.public_key()).thumbprint()}
    proxy.stop()


def puts(setup, pki) -> int:
    with httpx.Client(verify=pki.context(), timeout=30) as c:
        return c.get(setup["proxy"].url("/api/stats")).json()["puts"]


def open_jwe(setup, compact: str):
    token = jwe.JWE()
    token.deserialize(compact, key=setup["private"])
    return token.jose_header, token.payload


# ---------------------------------------------------------------- the browser

@pytest.fixture(scope="session")
def chromium(pki):
    required = bool(os.environ.get("FIELDSEAL_REQUIRE_BROWSER"))
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} not found (Debian package chromium)"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            missing = "the Python package playwright is not installed"
    if missing:
        if required:
            pytest.fail(f"FIELDSEAL_REQUIRE_BROWSER is set but {missing}")
        pytest.skip(missing)
    # Chromium accepts the proxy's certificate by its public key pin instead of ignoring TLS
    # errors: a page on any other certificate still fails.
    cert = x509.load_pem_x509_certificate(pki.cert.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                    args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={pin}"])
        yield browser
        browser.close()


def inline_script_hashes(html: str) -> list[str]:
    return ["'sha256-" + base64.b64encode(hashlib.sha256(m.encode()).digest()).decode() + "'"
            for m in re.findall(r"<script[^>]*>(.*?)</script>", html, re.S)]


@pytest.fixture(scope="module")
def browser_page(chromium, setup):
    """A page on the proxy's origin showing the demo page, the module imported as `window.fs`."""
    proxy = setup["proxy"]
    context = chromium.new_context()
    # Chromium's Local Network Access checks treat a document playwright answered as public, and
    # a public page reaching a loopback address needs the user's permission: the cross-origin
    # JWKS read below goes to 127.0.0.1. (Same-origin requests need none.)
    context.grant_permissions(["local-network-access"], origin=f"https://localhost:{proxy.listen}")
    index = (BROWSER_DIR / "index.html").read_text()
    # What a careful deployment would send: scripts and fetches from this origin only, the
    # demo's inline module allowed by its hash. The proxy's own JWKS may be read cross-origin.
    csp = (f"default-src 'self'; script-src 'self' {' '.join(inline_script_hashes(index))}; "
           f"style-src 'unsafe-inline'; connect-src 'self' https://127.0.0.1:{proxy.listen}")
    served = []

    def serve(route):
        name = route.request.url.split(EXAMPLES_PREFIX, 1)[1].split("?")[0]
        path = BROWSER_DIR / name
        if "/" in name or not path.is_file():
            route.fulfill(status=404, body="not found")
            return
        served.append(name)
        kind = {".js": "text/javascript", ".html": "text/html"}.get(path.suffix, "text/plain")
        route.fulfill(status=200, body=path.read_bytes(),
                      headers={"content-type": f"{kind}; charset=utf-8", "content-security-policy": csp})

    context.route(f"https://localhost:{proxy.listen}{EXAMPLES_PREFIX}**", serve)
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    # Console errors, less Chromium's note on each 4xx answer (the tests make those on purpose).
    page.on("console", lambda m: problems.append(m.text) if m.type == "error"
            and not m.text.startswith("Failed to load resource: the server responded") else None)
    page.goto(proxy.url(EXAMPLES_PREFIX + "index.html"))
    assert page.evaluate("() => isSecureContext && typeof crypto.subtle === 'object'")
    page.evaluate(f"async () => {{ window.fs = await import('{EXAMPLES_PREFIX}fieldseal-client.js'); }}")
    assert page.evaluate("() => Object.keys(window.fs).sort()") == [
        "JWKS_PATH", "base64url", "encryptField", "encryptFields", "fetchKeys", "pickKey"]
    yield page, problems
    assert "index.html" in served and "fieldseal-client.js" in served
    context.close()


SEND = """async ([path, body]) => {
  const r = await fetch(path, { method: "PUT", headers: { "content-type": "application/json" },
                                body: JSON.stringify(body) });
  return { status: r.status, text: await r.text() };
}"""


def send(page, path: str, body) -> tuple[int, dict]:
    answer = page.evaluate(SEND, [path, body])
    return answer["status"], json.loads(answer["text"])


def test_browser_encrypts_with_webcrypto_and_the_app_receives_plaintext(setup, pki, browser_page):
    page, problems = browser_page
    started = int(time.time())
    body = page.evaluate("""async (ssn) =>
        await fs.encryptFields("", { name: "Ada", ssn, note: "plain" }, ["$.ssn"])""", SSN)
    assert body["name"] == "Ada" and body["note"] == "plain"
    value = body["ssn"]
    assert SSN not in value and value.count(".") == 4

    # (b) A standard JWE: jwcrypto opens it with the private key; the parts have the sizes
    # RFC 7518 gives for RSA-OAEP-256 + A256GCM.
    header, payload = open_jwe(setup, value)
    assert payload == SSN.encode()
    assert header["alg"] == "RSA-OAEP-256" and header["enc"] == "A256GCM"
    assert header["kid"] == setup["kid"]
    assert "cty" not in header
    assert started - 1 <= header["iat"] <= time.time() + 1
    assert uuid.UUID(header["jti"]).version == 4
    protected, encrypted_key, iv, ciphertext, tag = value.split(".")
    assert json.loads(unb64url(protected)) == header
    assert len(unb64url(encrypted_key)) == 256 and len(unb64url(iv)) == 12
    assert len(unb64url(ciphertext)) == len(SSN) and len(unb64url(tag)) == 16

    # (a) Through the proxy, the app gets the plaintext.
    before = puts(setup, pki)
    status, answer = send(page, "/api/users/7", body)
    assert status == 200, answer
    assert answer["received"] == {"name": "Ada", "ssn": SSN, "note": "plain"}
    # The same body again is a replay (same jti within max_age): refused, the app not called.
    status, answer = send(page, "/api/users/7", body)
    assert status == 400 and "replayed" in answer["error"]["message"], answer
    assert puts(setup, pki) == before + 1
    assert not problems, problems


def test_tampered_browser_values_are_400_and_the_app_is_not_called(setup, pki, browser_page):
    page, problems = browser_page
    make = """async (ssn) => {
        const key = fs.pickKey(await fs.fetchKeys(""));
        return await fs.encryptField(key, ssn);
    }"""
    before = puts(setup, pki)
    messages = set()
    for segment in range(5):
        good = page.evaluate(make, SSN)  # a fresh jti each time: only the tampering is wrong
        if segment == 0:  # the header is the AAD: changing it after encryption is caught
            header = json.loads(unb64url(good.split(".")[0]))
            bad = ".".join([b64url(json.dumps({**header, "jti": str(uuid.uuid4())}).encode()),
                            *good.split(".")[1:]])
        else:
            bad = flip(good, segment)
        status, answer = send(page, "/api/users/7", {"ssn": bad})
        assert status == 400, (segment, answer)
        assert answer["error"]["code"] == "field_rejected"
        assert "decryption_failed" in answer["error"]["message"], answer
        assert SSN not in json.dumps(answer)
        messages.add(answer["error"]["message"])
    assert len(messages) == 1, messages  # one answer whatever part was changed
    assert puts(setup, pki) == before
    # The untouched value still goes through.
    status, answer = send(page, "/api/users/7", {"ssn": page.evaluate(make, SSN)})
    assert status == 200 and answer["received"] == {"ssn": SSN}
    assert not problems, problems


def test_json_values_from_the_browser(setup, pki, browser_page):
    page, problems = browser_page
    profile = {"tier": 2, "tags": ["a", "ü ✓"], "ok": True, "none": None, "ratio": 0.5}
    body = page.evaluate("""async ([ssn, profile]) => await fs.encryptFields(
        "", { ssn, profile, other: { profile: "untouched" } }, ["$.ssn", "$.profile", "$.profile"])""",
                         [SSN, profile])
    header, payload = open_jwe(setup, body["profile"])
    assert header["cty"] == "json" and json.loads(payload) == profile
    assert "cty" not in open_jwe(setup, body["ssn"])[0]
    status, answer = send(page, "/api/users/7", body)
    assert status == 200, answer
    assert answer["received"] == {"ssn": SSN, "profile": profile, "other": {"profile": "untouched"}}

    # `json: true` for a string and for a number; both are JSON text in the JWE.
    values = page.evaluate("""async (ssn) => {
        const key = fs.pickKey(await fs.fetchKeys(""));
        return [await fs.encryptField(key, ssn, { json: true }), await fs.encryptField(key, 42)];
    }""", SSN)
    assert [open_jwe(setup, v)[1] for v in values] == [json.dumps(SSN).encode(), b"42"]
    status, answer = send(page, "/api/users/7", {"ssn": values[0], "profile": values[1]})
    assert status == 200 and answer["received"] == {"ssn": SSN, "profile": 42}, answer

    # The JWKS is readable cross-origin (the proxy sends Access-Control-Allow-Origin: *).
    keys = page.evaluate(f"""async () => await fs.fetchKeys("https://127.0.0.1:{setup['proxy'].listen}")""")
    assert fs_rsa_kids(keys) == [setup["kid"]]
    assert not problems, problems


def fs_rsa_kids(keys) -> list[str]:
    return [k["kid"] for k in keys if k["kty"] == "RSA"]


def test_demo_page_form_encrypts_the_ssn_before_it_leaves_the_page(setup, pki, browser_page):
    page, problems = browser_page
    before = puts(setup, pki)
    done = page.evaluate("() => Number(document.body.dataset.done || 0)")
    page.fill("#ssn", SSN)
    page.fill("#name", "Grace")
    page.click("button[type=submit]")
    page.wait_for_function("(n) => Number(document.body.dataset.done || 0) > n", arg=done, timeout=10_000)
    assert page.text_content("#status") == "200", page.text_content("#result")
    assert json.loads(page.text_content("#result"))["received"] == {"name": "Grace", "ssn": SSN}
    sent = json.loads(page.text_content("#sent"))
    assert sent["name"] == "Grace" and open_jwe(setup, sent["ssn"])[1] == SSN.encode()
    assert page.input_value("#ssn") == ""
    assert puts(setup, pki) == before + 1
    assert not problems, problems


# ---------------------------------------------------------------- the Python example

def test_python_cli_example_sends_values_the_app_receives_as_plaintext(setup, pki):
    proxy = setup["proxy"]
    base = f"https://localhost:{proxy.listen}"
    run = subprocess.run(
        [sys.executable, str(CLI), base, "/api/users/9", "--cafile", str(pki.ca),
         "--body", '{"name": "Ada"}', "--field", f"ssn={SSN}", "--json", 'profile={"tier": 2, "tags": ["ü"]}'],
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["received"] == {"name": "Ada", "ssn": SSN, "profile": {"tier": 2, "tags": ["ü"]}}

    # --dry-run shows what would be sent: standard JWEs with iat and jti.
    run = subprocess.run([sys.executable, str(CLI), base, "/api/users/9", "--cafile", str(pki.ca),
                          "--dry-run", "--field", f"card.number={SSN}"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    header, payload = open_jwe(setup, json.loads(run.stdout)["card"]["number"])
    assert payload == SSN.encode() and header["kid"] == setup["kid"] and {"iat", "jti"} <= set(header)

    # Without the CA the certificate is not trusted; a non-2xx answer exits 1.
    run = subprocess.run([sys.executable, str(CLI), base, "/api/users/9", "--field", "ssn=x"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in run.stderr
    run = subprocess.run([sys.executable, str(CLI), base, "/api/nowhere", "--cafile", str(pki.ca),
                          "--field", "ssn=x"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "HTTP 404" in run.stderr, run.stderr
