"""Token formats beyond fs1 (docs/tokens.md) end to end, in front of the real FastAPI and Flask
apps. Expiring tokens (`fse1`): a rule with `ttl` seals tokens that carry their expiry; sent
back in time they open and the app gets plaintext; after their expiry (made by Python
`cryptography` with a past expiry, since the suite does not wait an hour) they are refused
before the app. Searchable tokens (`fsd1`): every answer carries the same token for the same
value, which opens like any other. Tokens are opened here with `cryptography`, independently of
fieldseal."""
import base64
import json
import subprocess
import time

import httpx
import pytest

from conftest import Proxy
from test_tokens import py_open_expiring, py_open_searchable, py_seal_expiring

RULES = """keys:
  keyring: "{keyring}"
routes:
  - name: user
    match: {{ path: "/api/users/{{id}}", methods: [GET, PUT] }}
    response:
      encrypt: [{{ path: "$.ssn", searchable: true }}, {{ path: "$.password", ttl: 10m }}]
    request:
      decrypt: ["$.ssn", "$.password"]
      require_encrypted: true
"""


@pytest.fixture(scope="module")
def proxy(app, pki, fieldseal_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("expiring")
    keyring = d / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True,
                   capture_output=True)
    p = Proxy(fieldseal_bin, pki, app.port, d, RULES.format(keyring=keyring))
    p.secret = base64.b64decode(json.loads(keyring.read_text())["keys"][0]["secret"])
    yield p
    p.stop()


@pytest.fixture
def client(pki):
    with httpx.Client(http2=True, verify=pki.context(), timeout=30) as c:
        yield c


def test_a_ttl_rule_seals_expiring_tokens_that_open_in_time(proxy, app, client):
    before = int(time.time())
    doc = client.get(proxy.url("/api/users/7")).json()
    direct = httpx.get(f"http://127.0.0.1:{app.port}/api/users/7").json()
    assert doc["ssn"].startswith("fsd1.")
    assert py_open_searchable(proxy.secret, "ssn", doc["ssn"]) == direct["ssn"]
    # Searchable: the next answer (and another user's with the same SSN) has the same token;
    # the expiring password token is fresh each time.
    again = client.get(proxy.url("/api/users/8")).json()
    assert again["ssn"] == doc["ssn"] and again["password"] != doc["password"]
    assert doc["password"].startswith("fse1.")
    password, expires_at = py_open_expiring(proxy.secret, "password", doc["password"])
    assert password == direct["password"]
    assert before + 600 <= expires_at <= int(time.time()) + 600
    r = client.put(proxy.url("/api/users/7"), json=doc)
    assert r.status_code == 200, r.text
    assert r.json()["received"]["password"] == direct["password"]
    # Counted by what was done, and as a use of the key (the rotation policy counts both).
    text = httpx.get(f"http://127.0.0.1:{proxy.admin}/metrics").text
    assert 'fieldseal_fields_total{route="user",action="sealed_expiring",kid="k1"}' in text, text
    assert 'fieldseal_fields_total{route="user",action="sealed_searchable",kid="k1"}' in text, text
    sealed = [line for line in text.splitlines() if line.startswith('fieldseal_tokens_sealed_total{kid="k1"}')]
    assert sealed and float(sealed[0].rsplit(" ", 1)[1]) >= 4, sealed


def test_an_expired_token_is_refused_before_the_app(proxy, app, client):
    doc = client.get(proxy.url("/api/users/7")).json()
    doc["password"] = py_seal_expiring(proxy.secret, "k1", "password", "hunter2",
                                       int(time.time()) - 120)
    r = client.put(proxy.url("/api/users/7"), json=doc)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "field_rejected" and "expired" in err["message"], err
    assert "hunter2" not in r.text
    # An expiry moved later by the client does not authenticate.
    raw = bytearray(base64.urlsafe_b64decode(doc["password"].split(".", 2)[2] + "=="))
    raw[:8] = (int(time.time()) + 86_400).to_bytes(8, "big")
    doc["password"] = "fse1.k1." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    r = client.put(proxy.url("/api/users/7"), json=doc)
    assert r.status_code == 400 and "authentication_failed" in r.json()["error"]["message"], r.text


def test_ttl_is_checked_where_it_is_written(fieldseal_bin, pki, tmp_path):
    keyring = tmp_path / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True,
                   capture_output=True)
    config = tmp_path / "fieldseal.yaml"
    config.write_text(f"""listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:9"
tls: {{ cert: "{pki.cert}", key: "{pki.key}" }}
keys: {{ keyring: "{keyring}" }}
fields:
  - {{ select: "$..cvv", action: encrypt, ttl: 1m }}
  - {{ select: "$..pin", action: redact, ttl: 1h }}
  - {{ select: "$..iban", action: encrypt, ttl: 1h, searchable: true }}
routes:
  - name: r
    match: {{ path: "/r" }}
    response: {{ redact: [{{ path: "$.a", ttl: 1h }}] }}
    request: {{ decrypt: [{{ path: "$.b", ttl: 1h }}] }}
""")
    r = subprocess.run([str(fieldseal_bin), "check", "--config", str(config)], capture_output=True,
                       text=True)
    assert r.returncode != 0
    for expected in ("fields.0.ttl: must be at least 5m", "fields.1.ttl: applies to `encrypt` only",
                     "fields.2: a token is searchable or expiring, not both",
                     "routes.0.response.redact.0.ttl: applies to `encrypt` rules only",
                     "routes.0.request.decrypt.0.ttl: applies to `encrypt` rules only"):
        assert expected in r.stderr, r.stderr


# --- fsb1: subject-bound tokens on a route that names its subject ------------------------------

SUBJECT_RULES = """keys:
  keyring: "{keyring}"
audit: {{ sink: "{audit}", key_file: "{audit_key}" }}
routes:
  - name: user
    match: {{ path: "/api/users/{{id}}", methods: [GET, PUT] }}
    subject: "{{id}}"
    response:
      encrypt: [{{ path: "$.ssn", per_subject: true }}]
    request:
      decrypt: ["$.ssn"]
"""


@pytest.fixture
def subject_proxy(app, pki, fieldseal_bin, tmp_path):
    keyring = tmp_path / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True,
                   capture_output=True)
    audit_key = tmp_path / "audit.key"
    audit_key.write_bytes(base64.b64encode(bytes(range(32))))
    audit_key.chmod(0o600)
    p = Proxy(fieldseal_bin, pki, app.port, tmp_path,
              SUBJECT_RULES.format(keyring=keyring, audit=tmp_path / "audit.jsonl", audit_key=audit_key))
    p.audit_path = tmp_path / "audit.jsonl"
    p.secret = base64.b64decode(json.loads(keyring.read_text())["keys"][0]["secret"])
    p.keyring = keyring
    yield p
    p.stop()


def test_a_subject_bound_token_opens_only_for_its_subject_and_not_after_erasure(
        subject_proxy, app, client, fieldseal_bin):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from test_tokens import subject_key, unb64url
    proxy = subject_proxy
    doc = client.get(proxy.url("/api/users/42")).json()
    assert doc["ssn"].startswith("fsb1.k1.")
    raw = unb64url(doc["ssn"].split(".", 2)[2])
    ssn = json.loads(AESGCM(subject_key(proxy.secret, "42")).decrypt(raw[:12], raw[12:], b"fsb1.k1.ssn"))
    assert ssn == httpx.get(f"http://127.0.0.1:{app.port}/api/users/42").json()["ssn"]
    # Back to its own subject: opened for the app.
    r = client.put(proxy.url("/api/users/42"), json={"ssn": doc["ssn"]})
    assert r.status_code == 200 and r.json()["received"]["ssn"] == ssn, r.text
    # In a request about another subject (the cross-user oracle): refused before the app.
    r = client.put(proxy.url("/api/users/43"), json={"ssn": doc["ssn"]})
    assert r.status_code == 400 and "authentication_failed" in r.json()["error"]["message"], r.text
    # The next try: a token of the same field in another format (an fs1 token some other route
    # or an old release sealed, any user's), or a searchable one. Refused: the field is per subject.
    for flags in ([], ["--searchable"]):
        other = subprocess.run([str(fieldseal_bin), "seal", "--keyring", str(proxy.keyring), "--context",
                                "ssn", *flags, '"111-22-3333"'], check=True, capture_output=True,
                               text=True).stdout.strip()
        r = client.put(proxy.url("/api/users/42"), json={"ssn": other})
        assert r.status_code == 400 and "not_subject_bound" in r.json()["error"]["message"], r.text
    # Erase subject 42 and reload: its tokens stop opening and its answers are withheld.
    subprocess.run([str(fieldseal_bin), "keys", "shred", "--keyring", str(proxy.keyring),
                    "--subject", "42"], check=True, capture_output=True)
    proxy.proc.send_signal(__import__("signal").SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline:
        r = client.put(proxy.url("/api/users/42"), json={"ssn": doc["ssn"]})
        if r.status_code == 400:
            break
        time.sleep(0.1)
    assert r.status_code == 400 and "subject_erased" in r.json()["error"]["message"], r.text
    assert client.get(proxy.url("/api/users/42")).status_code == 502
    # The erasure is in the audit log, by digest only.
    import hashlib
    digest = hashlib.sha256(b"fieldseal/shred/v1\0" + b"42").hexdigest()
    erased, deadline = [], time.time() + 10
    while not erased and time.time() < deadline:
        lines = [json.loads(x) for x in proxy.audit_path.read_text().splitlines()]
        erased = [x for x in lines if x.get("event") == "subject_erased"]
        time.sleep(0.05)
    assert erased and erased[0]["subject_sha256"] == digest, lines[-3:]
    assert '"42"' not in proxy.audit_path.read_text().replace('"seq":42', "")
    # Other subjects are untouched.
    other = client.get(proxy.url("/api/users/43")).json()
    r = client.put(proxy.url("/api/users/43"), json={"ssn": other["ssn"]})
    assert r.status_code == 200, r.text


POLICY_SUBJECT_RULES = """keys:
  keyring: "{keyring}"
fields:
  - {{ select: "$..ssn", action: encrypt, per_subject: true }}
routes:
  - name: user
    match: {{ path: "/api/users/{{id}}", methods: [GET, PUT] }}
    subject: "{{id}}"
"""


def test_the_field_policy_seals_per_subject_where_routes_name_one(app, pki, fieldseal_bin, tmp_path, client):
    """A `fields` entry with `per_subject: true`: sealed for the subject on routes that name
    one, opened only for it there; where no subject is known (a request matching no route)
    an answer holding the field is withheld, never sealed some other way."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from test_tokens import subject_key, unb64url
    keyring = tmp_path / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True,
                   capture_output=True)
    secret = base64.b64decode(json.loads(keyring.read_text())["keys"][0]["secret"])
    proxy = Proxy(fieldseal_bin, pki, app.port, tmp_path, POLICY_SUBJECT_RULES.format(keyring=keyring))
    try:
        doc = client.get(proxy.url("/api/users/42")).json()
        assert doc["ssn"].startswith("fsb1.")
        raw = unb64url(doc["ssn"].split(".", 2)[2])
        assert json.loads(AESGCM(subject_key(secret, "42")).decrypt(raw[:12], raw[12:], b"fsb1.k1.ssn"))
        assert client.put(proxy.url("/api/users/43"), json={"ssn": doc["ssn"]}).status_code == 400
        fs1 = subprocess.run([str(fieldseal_bin), "seal", "--keyring", str(keyring), "--context", "ssn",
                              '"111-22-3333"'], check=True, capture_output=True, text=True).stdout.strip()
        r = client.put(proxy.url("/api/users/42"), json={"ssn": fs1})
        assert r.status_code == 400 and "not_subject_bound" in r.json()["error"]["message"], r.text
        assert client.put(proxy.url("/api/users/42"), json={"ssn": doc["ssn"]}).status_code == 200
        r = client.get(proxy.url("/api/raw/json"))
        assert r.status_code == 502 and r.json()["error"]["code"] == "response_not_encryptable", r.text
        assert "123-45-6789" not in r.text
    finally:
        proxy.stop()
    # `check` says which routes cannot seal per subject.
    config = tmp_path / "check.yaml"
    config.write_text(f"""listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:9"
tls: {{ cert: "{pki.cert}", key: "{pki.key}" }}
keys: {{ keyring: "{keyring}" }}
fields:
  - {{ select: "$..ssn", action: encrypt, per_subject: true }}
routes:
  - name: stats
    match: {{ path: "/api/stats" }}
""")
    r = subprocess.run([str(fieldseal_bin), "check", "--config", str(config)], capture_output=True, text=True)
    assert r.returncode == 0 and "warning:" in r.stdout and "routes.0" in r.stdout \
        and "names no `subject`" in r.stdout, r.stdout


# --- fsb1 in list answers: each record's subject is a member of it ------------------------------

MEMBER_SUBJECT_RULES = """keys:
  keyring: "{keyring}"
fields:
  - {{ select: "$..ssn", action: encrypt, per_subject: true }}
routes:
  - name: users
    match: {{ path: "/api/users", methods: [GET] }}
    subject: "member:id"
  - name: user
    match: {{ path: "/api/users/{{id}}", methods: [GET, PUT] }}
    subject: "{{id}}"
"""


def _open_for(secret: bytes, kid: str, subject: str, token: str):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from test_tokens import subject_key, unb64url
    assert token.startswith(f"fsb1.{kid}."), token
    raw = unb64url(token.split(".", 2)[2])
    return json.loads(AESGCM(subject_key(secret, subject)).decrypt(raw[:12], raw[12:],
                                                                   f"fsb1.{kid}.ssn".encode()))


def test_a_list_answer_seals_each_record_for_its_own_subject(app, pki, fieldseal_bin, tmp_path, client):
    """`subject: "member:id"` on a list route: each record's SSN is sealed for that record's
    `id` (opened here with `cryptography`, and only for that id); a token taken from the list
    opens on the record's own write route and nowhere else; a record without an `id` withholds
    the whole answer; erasing one subject withholds the answers that still hold their data."""
    from cryptography.exceptions import InvalidTag
    keyring = tmp_path / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True,
                   capture_output=True)
    secret = base64.b64decode(json.loads(keyring.read_text())["keys"][0]["secret"])
    proxy = Proxy(fieldseal_bin, pki, app.port, tmp_path, MEMBER_SUBJECT_RULES.format(keyring=keyring))
    try:
        direct = httpx.get(f"http://127.0.0.1:{app.port}/api/users").json()
        doc = client.get(proxy.url("/api/users")).json()
        assert doc["owner"] == 99 and len(doc["users"]) == 3
        for mine, plain in zip(doc["users"], direct["users"]):
            subject = str(plain["id"])
            assert _open_for(secret, "k1", subject, mine["ssn"]) == plain["ssn"]
            for other in ("1", "2", "3", "99"):
                if other != subject:
                    with pytest.raises(InvalidTag):
                        _open_for(secret, "k1", other, mine["ssn"])
        # The token of record 2 goes back on record 2's route: opened for the app (whose
        # echo of it the policy seals again, for subject 2).
        token2 = doc["users"][1]["ssn"]
        r = client.put(proxy.url("/api/users/2"), json={"ssn": token2})
        assert r.status_code == 200, r.text
        assert _open_for(secret, "k1", "2", r.json()["received"]["ssn"]) == "000-00-0002"
        # On anybody else's (the cross-user oracle), including the list's owner: refused.
        for other in ("1", "3", "99"):
            r = client.put(proxy.url(f"/api/users/{other}"), json={"ssn": token2})
            assert r.status_code == 400 and "authentication_failed" in r.text, r.text
        # A record without its member: the whole answer is withheld, no SSN in it.
        r = client.get(proxy.url("/api/users?orphan=1"))
        assert r.status_code == 502 and r.json()["error"]["code"] == "response_not_encryptable", r.text
        assert "000-00-000" not in r.text and "123-45-6789" not in r.text
        rid = r.json()["error"]["request_id"]
        deadline = time.time() + 5
        while not any(rid in line and "no_subject" in line for line in proxy.logs) and time.time() < deadline:
            time.sleep(0.05)
        assert any(rid in line and "no_subject" in line and "$['users'][3]['ssn']" in line
                   for line in proxy.logs), "\n".join(line for line in proxy.logs if rid in line)
        # Erase subject 3: its token stops opening and answers still holding its data are withheld.
        subprocess.run([str(fieldseal_bin), "keys", "shred", "--keyring", str(keyring), "--subject", "3"],
                       check=True, capture_output=True)
        proxy.proc.send_signal(__import__("signal").SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline:
            r = client.get(proxy.url("/api/users"))
            if r.status_code == 502:
                break
            time.sleep(0.1)
        assert r.status_code == 502 and "000-00-000" not in r.text, r.text
        r = client.put(proxy.url("/api/users/3"), json={"ssn": doc["users"][2]["ssn"]})
        assert r.status_code == 400 and "subject_erased" in r.text, r.text
        assert client.put(proxy.url("/api/users/2"), json={"ssn": token2}).status_code == 200
    finally:
        proxy.stop()


def test_member_subjects_are_checked_where_they_are_written(fieldseal_bin, pki, tmp_path):
    keyring = tmp_path / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True,
                   capture_output=True)
    config = tmp_path / "fieldseal.yaml"
    base = f"""listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:9"
tls: {{ cert: "{pki.cert}", key: "{pki.key}" }}
keys: {{ keyring: "{keyring}" }}
routes:
"""
    # A write route whose subject would come from the client's own body: warned, never trusted.
    config.write_text(base + """  - name: users
    match: { path: "/api/users" }
    subject: "member:id"
    response: { encrypt: [{ path: "$.users[*].ssn", per_subject: true }] }
    request: { decrypt: ["$.users[*].ssn"] }
""")
    r = subprocess.run([str(fieldseal_bin), "check", "--config", str(config)], capture_output=True, text=True)
    assert r.returncode == 0 and "routes.0.subject" in r.stdout \
        and "opens no subject-bound token in requests" in r.stdout, (r.stdout, r.stderr)
    config.write_text(base + """  - name: users
    match: { path: "/api/users" }
    subject: "member:"
""")
    r = subprocess.run([str(fieldseal_bin), "check", "--config", str(config)], capture_output=True, text=True)
    assert r.returncode != 0 and "routes.0.subject" in r.stderr and "member:owner_id" in r.stderr, r.stderr


def test_rewrap_reseals_subject_bound_tokens_for_their_records(fieldseal_bin, pki, tmp_path):
    """`rewrap --subject-member id` (or `--route` of a route whose subject is a member) moves
    each record's `fsb1` token to the new primary, still bound to that record's subject; without
    a subject they are left as they are and counted; `--subject S` covers one person's dump."""
    from test_tokens import py_seal_for_subject
    keyring = tmp_path / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True,
                   capture_output=True)
    k1 = base64.b64decode(json.loads(keyring.read_text())["keys"][0]["secret"])
    records = [{"id": i, "ssn": py_seal_for_subject(k1, "k1", str(i), "ssn", f"000-00-000{i}")}
               for i in (1, 2, 3)]
    dump = "\n".join(json.dumps(r) for r in records) + "\n" + json.dumps({"users": records}) + "\n"
    subprocess.run([str(fieldseal_bin), "keys", "rotate", "--keyring", str(keyring)], check=True,
                   capture_output=True)
    ring = json.loads(keyring.read_text())
    k2 = base64.b64decode(next(k for k in ring["keys"] if k["id"] == "k2")["secret"])

    def rewrap(*flags, stdin=dump):
        return subprocess.run([str(fieldseal_bin), "rewrap", "--keyring", str(keyring), *flags],
                              input=stdin, capture_output=True, text=True)

    # No subject given: nothing can be re-sealed, and the summary says why.
    r = rewrap()
    assert r.returncode == 0 and r.stdout.splitlines() == [json.dumps(x, separators=(",", ":"))
                                                           for x in [*records, {"users": records}]]
    assert "6 subject-bound with no subject given" in r.stderr, r.stderr
    # Each record's own member.
    r = rewrap("--subject-member", "id")
    assert r.returncode == 0, r.stderr
    assert "rewrapped 6 tokens" in r.stderr and "k1: 6" in r.stderr, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    for rec in [*lines[:3], *lines[3]["users"]]:
        assert _open_for(k2, "k2", str(rec["id"]), rec["ssn"]) == f"000-00-000{rec['id']}"
    # The route's `subject: "member:id"` implies it.
    config = tmp_path / "fieldseal.yaml"
    config.write_text(MEMBER_SUBJECT_RULES.format(keyring=keyring).replace(
        "keys:", f'listen: "127.0.0.1:0"\nupstream: "http://127.0.0.1:9"\n'
                 f'tls: {{ cert: "{pki.cert}", key: "{pki.key}" }}\nkeys:', 1))
    r = rewrap("--config", str(config), "--route", "users")
    assert "rewrapped 6 tokens" in r.stderr, r.stderr
    # One person's dump: `--subject`. A token of someone else in it stops the run, naming it.
    one = json.dumps(records[1]) + "\n"
    r = rewrap("--subject", "2", stdin=one)
    assert r.returncode == 0 and "rewrapped 1 token" in r.stderr, r.stderr
    assert _open_for(k2, "k2", "2", json.loads(r.stdout)["ssn"]) == "000-00-0002"
    r = rewrap("--subject", "3", stdin=one)
    assert r.returncode != 0 and "authentication_failed" in r.stderr and "$['ssn']" in r.stderr, r.stderr
    assert "000-00-0002" not in r.stderr + r.stdout
    # An erased subject's tokens are left (they open nowhere), and counted.
    subprocess.run([str(fieldseal_bin), "keys", "shred", "--keyring", str(keyring), "--subject", "1"],
                   check=True, capture_output=True)
    r = rewrap("--subject-member", "id")
    assert r.returncode == 0 and "rewrapped 4 tokens" in r.stderr \
        and "2 of erased subjects" in r.stderr, r.stderr
