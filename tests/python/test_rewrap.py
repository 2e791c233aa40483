"""`fieldseal rewrap` checked against an independent fs1 implementation (Python `cryptography`):
tokens sealed in Python under an old key k1 go through `fieldseal rewrap` and open in Python
under the new primary k2 with the same contexts (the member rule, and a route's explicit
context), to the very same plaintext bytes."""
import base64
import json
import os
import subprocess

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from test_tokens import b64url, cli, py_open, py_seal, unb64url


@pytest.fixture()
def rotated(tmp_path):
    """A keyring after a rotation (contract §2): k1 decrypt_only, k2 the active primary."""
    k1, k2 = os.urandom(32), os.urandom(32)
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps({"primary": "k2", "keys": [
        {"id": "k1", "secret": base64.b64encode(k1).decode(), "created_at": "2026-11-01T00:00:00Z",
         "state": "decrypt_only"},
        {"id": "k2", "secret": base64.b64encode(k2).decode(), "created_at": "2026-11-20T00:00:00Z",
         "state": "active"},
    ]}))
    path.chmod(0o600)
    return path, k1, k2


def rewrap(fieldseal_bin, keyring, stdin: str, *extra):
    return subprocess.run([str(fieldseal_bin), "rewrap", "--keyring", str(keyring), *map(str, extra)],
                          input=stdin, capture_output=True, text=True)


def plaintext(key: bytes, context: str, token: str) -> bytes:
    """The exact plaintext bytes inside a token (py_open parses them; this keeps them raw)."""
    _, kid, payload = token.split(".", 2)
    raw = unb64url(payload)
    return AESGCM(key).decrypt(raw[:12], raw[12:], f"fs1.{kid}.{context}".encode())


VALUES = {"ssn": "123-45-6789", "age": 42, "tags": ["a", {"b": None}], "blob": {"ünï": [1.5, True]}}


def test_member_rule_tokens_reopen_under_the_new_primary(fieldseal_bin, rotated):
    path, k1, k2 = rotated
    docs = [
        {"id": 1, "ssn": py_seal(k1, "k1", "ssn", VALUES["ssn"]), "name": "Ann"},
        {"id": 2, "profile": {"age": py_seal(k1, "k1", "age", VALUES["age"])},
         "tags": [py_seal(k1, "k1", "tags", VALUES["tags"]), "plain", py_seal(k1, "k1", "tags", 7)]},
        {"rows": [[{"blob": py_seal(k1, "k1", "blob", VALUES["blob"])}]]},
        py_seal(k1, "k1", "", "a root token"),
    ]
    # JSON lines, and the third document pretty-printed over several lines.
    text = "".join(json.dumps(d) + "\n" for d in docs[:2]) + json.dumps(docs[2], indent=2) + "\n" \
        + json.dumps(docs[3]) + "\n"
    r = rewrap(fieldseal_bin, path, text)
    assert r.returncode == 0, r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(out) == 4
    sites = [
        (out[0]["ssn"], "ssn", docs[0]["ssn"]),
        (out[1]["profile"]["age"], "age", docs[1]["profile"]["age"]),
        (out[1]["tags"][0], "tags", docs[1]["tags"][0]),
        (out[1]["tags"][2], "tags", docs[1]["tags"][2]),
        (out[2]["rows"][0][0]["blob"], "blob", docs[2]["rows"][0][0]["blob"]),
        (out[3], "", docs[3]),
    ]
    for new, context, old in sites:
        assert new.startswith("fs1.k2."), new
        # The very same plaintext bytes, now under k2, bound to the same context.
        assert plaintext(k2, context, new) == plaintext(k1, context, old)
        with pytest.raises(Exception):
            plaintext(k2, context + "x", new)
        raw = unb64url(new.split(".", 2)[2])
        assert len(raw) == 12 + len(plaintext(k1, context, old)) + 16
    assert py_open(k2, "ssn", out[0]["ssn"]) == VALUES["ssn"]
    assert py_open(k2, "tags", out[1]["tags"][0]) == VALUES["tags"]
    assert out[0]["name"] == "Ann" and out[1]["tags"][1] == "plain"
    assert "rewrapped 6 tokens in 4 documents (k1: 6 → primary k2); 0 already current" in r.stderr

    # Tokens Python seals under k2 are current: checked and left as they are.
    current = json.dumps({"ssn": py_seal(k2, "k2", "ssn", "x")})
    r = rewrap(fieldseal_bin, path, current + "\n")
    assert r.returncode == 0 and r.stdout == current.replace(" ", "") + "\n"
    assert "1 already current" in r.stderr


def test_explicit_route_context(fieldseal_bin, rotated, pki, tmp_path):
    path, k1, k2 = rotated
    config = tmp_path / "fieldseal.yaml"
    config.write_text(
        f'listen: "127.0.0.1:0"\nupstream: "http://127.0.0.1:9"\nadmin: "127.0.0.1:0"\n'
        f'tls:\n  cert: "{pki.cert}"\n  key: "{pki.key}"\nkeys:\n  keyring: "{path}"\n'
        'routes:\n  - name: user\n    match: { path: "/api/users/{id}" }\n'
        '    response:\n      encrypt: ["$.ssn", { path: "$.cards[*].number", context: "card" }]\n')
    number = "4111 1111 1111 1111"
    doc = {"ssn": py_seal(k1, "k1", "ssn", "123-45-6789"),
           "cards": [{"number": py_seal(k1, "k1", "card", number)}, {"number": py_seal(k1, "k1", "card", "5")}],
           "other": {"number": py_seal(k1, "k1", "number", 9)}}
    r = rewrap(fieldseal_bin, path, json.dumps(doc, indent=1), "--config", config, "--route", "user")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert py_open(k2, "card", out["cards"][0]["number"]) == number
    assert py_open(k2, "card", out["cards"][1]["number"]) == "5"
    assert py_open(k2, "number", out["other"]["number"]) == 9
    assert py_open(k2, "ssn", out["ssn"]) == "123-45-6789"
    # Without the route the card tokens cannot be opened: their context is not `number`.
    r = rewrap(fieldseal_bin, path, json.dumps(doc))
    assert r.returncode == 1 and r.stdout == ""
    assert "document 1, field $['cards'][0]['number']: authentication_failed (key `k1`)" in r.stderr
    # A missing route lists the real ones.
    r = rewrap(fieldseal_bin, path, "", "--config", config, "--route", "nope")
    assert r.returncode == 64 and "(routes: user)" in r.stderr


def test_failures_name_document_and_field_never_the_token(fieldseal_bin, rotated):
    path, k1, _ = rotated
    good = py_seal(k1, "k1", "ssn", "123-45-6789")
    raw = bytearray(unb64url(good.split(".", 2)[2]))
    raw[-1] ^= 1
    tampered = f"fs1.k1.{b64url(bytes(raw))}"
    cases = {
        "tampered": (tampered, "authentication_failed", "k1"),
        "other key": (py_seal(os.urandom(32), "k1", "ssn", "x"), "authentication_failed", "k1"),
        "unknown kid": (py_seal(k1, "k9", "ssn", "x"), "unknown_key", "k9"),
        "garbage": ("fs1.k1.***", "bad_encoding", "k1"),
    }
    for name, (token, reason, kid) in cases.items():
        text = json.dumps({"ssn": good}) + "\n" + json.dumps({"users": [{"ssn": token}]}) + "\n"
        r = rewrap(fieldseal_bin, path, text)
        assert r.returncode == 1, name
        assert len(r.stdout.splitlines()) == 1, name  # the first document was written
        assert f"error: document 2, field $['users'][0]['ssn']: {reason} (key `{kid}`)" in r.stderr, \
            (name, r.stderr)
        for secret in (token.split(".", 2)[2], good.split(".", 2)[2], "123-45-6789"):
            assert secret not in r.stderr, name
    # Not JSON: document number and position, no value.
    r = rewrap(fieldseal_bin, path, '{"a": 1}\n{"password": "hunter2" oops}\n')
    assert r.returncode == 1 and "document 2 is not JSON" in r.stderr and "line 2" in r.stderr
    assert "hunter2" not in r.stderr
    # Seal and open of the CLI agree with the rewrapped output (sanity of the fixture).
    token = cli(fieldseal_bin, "seal", "--keyring", path, "--context", "ssn", '"v"').stdout.strip()
    assert token.startswith("fs1.k2.")
