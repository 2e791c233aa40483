"""fs1 tokens (contract §1) and the keyring (§2) checked against an independent implementation:
Python `cryptography`'s AESGCM opens what `fieldseal seal` makes and makes what `fieldseal open`
opens, byte for byte per the contract."""
import base64
import json
import os
import subprocess

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VECTOR_KEY = bytes(range(32))
VECTOR_NONCE = bytes(range(12))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def py_seal(key: bytes, kid: str, context: str, value, nonce: bytes | None = None) -> str:
    nonce = nonce or os.urandom(12)
    plaintext = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    sealed = AESGCM(key).encrypt(nonce, plaintext, f"fs1.{kid}.{context}".encode())
    return f"fs1.{kid}.{b64url(nonce + sealed)}"


def py_open(key: bytes, context: str, token: str):
    prefix, kid, payload = token.split(".", 2)
    assert prefix == "fs1"
    raw = unb64url(payload)
    plaintext = AESGCM(key).decrypt(raw[:12], raw[12:], f"fs1.{kid}.{context}".encode())
    return json.loads(plaintext)


def test_contract_vectors_with_an_independent_implementation():
    assert py_seal(VECTOR_KEY, "k1", "ssn", "123-45-6789", VECTOR_NONCE) == \
        "fs1.k1.AAECAwQFBgcICQoLZTPkKOjR9za7dq-ykx8A-Aa_3auBzhqAiXYp9yI"
    assert py_seal(VECTOR_KEY, "k1", "age", 42, VECTOR_NONCE) == "fs1.k1.AAECAwQFBgcICQoLczA4rdYfC_5aNxtjfrqyzTyv"


@pytest.fixture()
def keyring(fieldseal_bin, tmp_path):
    path = tmp_path / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(path)], check=True, capture_output=True)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    doc = json.loads(path.read_text())
    assert doc["primary"] == "k1" and doc["keys"][0]["state"] == "active"
    return path, base64.b64decode(doc["keys"][0]["secret"])


def cli(fieldseal_bin, *args, stdin=None):
    return subprocess.run([str(fieldseal_bin), *map(str, args)], input=stdin, capture_output=True, text=True)


VALUES = ["123-45-6789", "", "ünïcødé ✓", 42, -1.5, 0, True, False, None, {"a": [1, {"b": "c"}]}, [], [1, "two"]]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_python_opens_what_fieldseal_seals(fieldseal_bin, keyring, value):
    path, secret = keyring
    r = cli(fieldseal_bin, "seal", "--keyring", path, "--context", "ssn", json.dumps(value))
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("fs1.k1.")
    assert py_open(secret, "ssn", token) == value
    # Bound to its context: the same token does not open as another field.
    with pytest.raises(Exception):
        py_open(secret, "nickname", token)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_fieldseal_opens_what_python_seals(fieldseal_bin, keyring, value):
    path, secret = keyring
    token = py_seal(secret, "k1", "card", value)
    r = cli(fieldseal_bin, "open", "--keyring", path, "--context", "card", token)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == value
    # From stdin too.
    r = cli(fieldseal_bin, "open", "--keyring", path, "--context", "card", "-", stdin=token + "\n")
    assert json.loads(r.stdout) == value


def test_bad_tokens_are_refused_with_a_reason(fieldseal_bin, keyring):
    path, secret = keyring
    good = py_seal(secret, "k1", "ssn", "123-45-6789")
    raw = bytearray(unb64url(good.split(".", 2)[2]))
    raw[-1] ^= 1
    cases = {
        "tampered": (f"fs1.k1.{b64url(bytes(raw))}", "authentication_failed"),
        "wrong context": (py_seal(secret, "k1", "password", "x"), "authentication_failed"),
        "other key": (py_seal(os.urandom(32), "k1", "ssn", "x"), "authentication_failed"),
        "unknown kid": (py_seal(secret, "k9", "ssn", "x"), "unknown_key"),
        "garbage": ("fs1.k1.***", "bad_encoding"),
        "not a token": ("123-45-6789", "malformed_token"),
    }
    for name, (token, reason) in cases.items():
        r = cli(fieldseal_bin, "open", "--keyring", path, "--context", "ssn", token)
        assert r.returncode == 1, name
        assert reason in r.stderr, (name, r.stderr)
        assert "123-45-6789" not in r.stderr + r.stdout, name
    assert "k9" in cli(fieldseal_bin, "open", "--keyring", path, "--context", "ssn", cases["unknown kid"][0]).stderr


def test_keyring_permissions_and_validation(fieldseal_bin, keyring, tmp_path):
    path, _ = keyring
    path.chmod(0o644)
    r = cli(fieldseal_bin, "keys", "list", "--keyring", path)
    assert r.returncode == 64 and "chmod 600" in r.stderr
    for mode, who in ((0o660, "its group"), (0o620, "its group"), (0o602, "other users")):
        path.chmod(mode)  # writable by someone else: they could replace the keys
        r = cli(fieldseal_bin, "keys", "list", "--keyring", path)
        assert r.returncode == 64 and f"writable by {who} (mode {mode:04o})" in r.stderr, r.stderr
    path.chmod(0o440)  # Kubernetes fsGroup mounts: accepted with a warning
    r = cli(fieldseal_bin, "keys", "list", "--keyring", path)
    assert r.returncode == 0 and "readable by its group" in r.stderr
    assert "k1" in r.stdout and "active" in r.stdout
    secret = json.loads(path.read_text())["keys"][0]["secret"]
    assert secret not in r.stdout + r.stderr
    if os.geteuid() == 0:  # chown needs root
        os.chown(path, 1000, -1)  # another user's file: refused whatever its mode
        r2 = cli(fieldseal_bin, "keys", "list", "--keyring", path)
        assert r2.returncode == 64 and "owned by uid 1000" in r2.stderr, r2.stderr
        os.chown(path, 0, 1000)  # root-owned, group fsGroup (a Secret volume): accepted
        assert cli(fieldseal_bin, "keys", "list", "--keyring", path).returncode == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"primary": "k1", "keys": [
        {"id": "k1", "secret": base64.b64encode(b"short").decode(), "created_at": "2026-11-01T00:00:00Z",
         "state": "active"}]}))
    bad.chmod(0o600)
    r = cli(fieldseal_bin, "keys", "list", "--keyring", bad)
    assert r.returncode == 64 and "must be 32 bytes" in r.stderr
    assert cli(fieldseal_bin, "keys", "init", "--out", path).returncode == 1  # never overwrites


# --- fse1: expiring tokens (docs/tokens.md) ---------------------------------------------------

def py_seal_expiring(key: bytes, kid: str, context: str, value, expires_at: int,
                     nonce: bytes | None = None) -> str:
    nonce = nonce or os.urandom(12)
    exp = expires_at.to_bytes(8, "big")
    plaintext = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    aad = f"fse1.{kid}.{context}".encode() + b"\0" + exp
    return f"fse1.{kid}.{b64url(exp + nonce + AESGCM(key).encrypt(nonce, plaintext, aad))}"


def py_open_expiring(key: bytes, context: str, token: str):
    prefix, kid, payload = token.split(".", 2)
    assert prefix == "fse1"
    raw = unb64url(payload)
    exp, nonce, sealed = raw[:8], raw[8:20], raw[20:]
    plaintext = AESGCM(key).decrypt(nonce, sealed, f"fse1.{kid}.{context}".encode() + b"\0" + exp)
    return json.loads(plaintext), int.from_bytes(exp, "big")


def test_expiring_vectors_with_an_independent_implementation():
    # docs/tokens.md: key 00..1f, nonce 00..0b.
    assert py_seal_expiring(VECTOR_KEY, "k1", "cvv", "123", 1_900_000_000, VECTOR_NONCE) == \
        "fse1.k1.AAAAAHE_swAAAQIDBAUGBwgJCgtlM-Qo55xBIXYYAP4fR2vf2Gn_9J0"
    assert py_seal_expiring(VECTOR_KEY, "k1", "ssn", "123-45-6789", 1_900_000_000, VECTOR_NONCE) == \
        "fse1.k1.AAAAAHE_swAAAQIDBAUGBwgJCgtlM-Qo6NH3Nrt2r7KTsE2LyJm0ubHKqbP8MNyzHQ"
    assert py_seal_expiring(VECTOR_KEY, "k1", "age", 42, 1_767_225_600, VECTOR_NONCE) == \
        "fse1.k1.AAAAAGlVuQAAAQIDBAUGBwgJCgtzMAC3Q5W8paM9PJT2qCVrhGY"


@pytest.mark.parametrize("value", VALUES[:5], ids=repr)
def test_expiring_tokens_both_ways(fieldseal_bin, keyring, value):
    import time
    path, secret = keyring
    before = int(time.time())
    r = cli(fieldseal_bin, "seal", "--keyring", path, "--context", "cvv", "--ttl", "1h", json.dumps(value))
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("fse1.k1.")
    opened, expires_at = py_open_expiring(secret, "cvv", token)
    assert opened == value
    assert before + 3600 <= expires_at <= int(time.time()) + 3600
    with pytest.raises(Exception):
        py_open_expiring(secret, "ssn", token)
    # Made by Python, opened by fieldseal: while valid, and not after.
    fresh = py_seal_expiring(secret, "k1", "cvv", value, int(time.time()) + 600)
    r = cli(fieldseal_bin, "open", "--keyring", path, "--context", "cvv", fresh)
    assert r.returncode == 0 and json.loads(r.stdout) == value, r.stderr
    stale = py_seal_expiring(secret, "k1", "cvv", value, int(time.time()) - 120)
    r = cli(fieldseal_bin, "open", "--keyring", path, "--context", "cvv", stale)
    assert r.returncode == 1 and "expired" in r.stderr, r.stderr
    # Within the 30 s skew it still opens.
    skewed = py_seal_expiring(secret, "k1", "cvv", value, int(time.time()) - 10)
    assert cli(fieldseal_bin, "open", "--keyring", path, "--context", "cvv", skewed).returncode == 0


def test_an_edited_expiry_does_not_open(fieldseal_bin, keyring):
    import time
    path, secret = keyring
    token = py_seal_expiring(secret, "k1", "cvv", "123", int(time.time()) - 3600)
    raw = bytearray(unb64url(token.split(".", 2)[2]))
    raw[:8] = (int(time.time()) + 86_400).to_bytes(8, "big")
    forged = f"fse1.k1.{b64url(bytes(raw))}"
    r = cli(fieldseal_bin, "open", "--keyring", path, "--context", "cvv", forged)
    assert r.returncode == 1 and "authentication_failed" in r.stderr, r.stderr


# --- fsd1: searchable (deterministic) tokens (docs/tokens.md) ---------------------------------

def siv_key(secret: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    return HKDF(algorithm=hashes.SHA256(), length=64, salt=None,
                info=b"fieldseal fsd1 aes-siv-512").derive(secret)


def py_seal_searchable(secret: bytes, kid: str, context: str, value) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV
    plaintext = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    sealed = AESSIV(siv_key(secret)).encrypt(plaintext, [f"fsd1.{kid}.{context}".encode()])
    return f"fsd1.{kid}.{b64url(sealed)}"


def py_open_searchable(secret: bytes, context: str, token: str):
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV
    prefix, kid, payload = token.split(".", 2)
    assert prefix == "fsd1"
    return json.loads(AESSIV(siv_key(secret)).decrypt(unb64url(payload), [f"fsd1.{kid}.{context}".encode()]))


def test_searchable_vectors_with_an_independent_implementation():
    assert siv_key(VECTOR_KEY).hex() == (
        "f4ba092ffb178676299a1109e42252e2d019d01e8b312d96efbe3945bea975c3"
        "47dec56a4bc27d732c05714986ee6b3f53bccd2be35aef576ec35188d5fcc074")
    assert py_seal_searchable(VECTOR_KEY, "k1", "ssn", "123-45-6789") == \
        "fsd1.k1.WC8lXF_GoTMd2Yu1U8p4MNm1OhoRXH8vUf8SZtQ"
    assert py_seal_searchable(VECTOR_KEY, "k1", "email", "ada@example.com") == \
        "fsd1.k1.JaoyVDkrIF0IeXY7aSBzK-ygGUDtlRNKY_Cs8BWhnfiU"
    assert py_seal_searchable(VECTOR_KEY, "k1", "age", 42) == "fsd1.k1.TyyKwYPUWxIjQTwMN9qVn2X3"


@pytest.mark.parametrize("value", VALUES[:5], ids=repr)
def test_searchable_tokens_both_ways(fieldseal_bin, keyring, value):
    path, secret = keyring
    seal = lambda: cli(fieldseal_bin, "seal", "--keyring", path, "--context", "ssn", "--searchable",  # noqa: E731
                       json.dumps(value))
    first, second = seal(), seal()
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip()
    assert token.startswith("fsd1.k1.") and second.stdout.strip() == token, "deterministic"
    assert token == py_seal_searchable(secret, "k1", "ssn", value)
    assert py_open_searchable(secret, "ssn", token) == value
    r = cli(fieldseal_bin, "open", "--keyring", path, "--context", "ssn",
            py_seal_searchable(secret, "k1", "ssn", value))
    assert r.returncode == 0 and json.loads(r.stdout) == value, r.stderr
    # Another context: another token, and this one does not open there.
    assert py_seal_searchable(secret, "k1", "tax_id", value) != token
    assert cli(fieldseal_bin, "open", "--keyring", path, "--context", "tax_id", token).returncode == 1


def test_index_finds_a_value_across_a_key_rotation(fieldseal_bin, keyring):
    path, secret = keyring
    old = cli(fieldseal_bin, "seal", "--keyring", path, "--context", "ssn", "--searchable",
              '"123-45-6789"').stdout.strip()
    assert cli(fieldseal_bin, "keys", "rotate", "--keyring", path).returncode == 0
    new = cli(fieldseal_bin, "seal", "--keyring", path, "--context", "ssn", "--searchable",
              '"123-45-6789"').stdout.strip()
    assert new.startswith("fsd1.k2.") and new != old
    lines = cli(fieldseal_bin, "index", "--keyring", path, "--context", "ssn", '"123-45-6789"').stdout
    index = dict(line.split(" ", 1) for line in lines.strip().splitlines())
    assert index == {"k1": old, "k2": new}, lines
    # Both still open; the old one under its decrypt-only key.
    for t in (old, new):
        r = cli(fieldseal_bin, "open", "--keyring", path, "--context", "ssn", t)
        assert r.returncode == 0 and json.loads(r.stdout) == "123-45-6789"


# --- fsb1: subject-bound tokens and erasure (docs/tokens.md) -----------------------------------

def subject_key(secret: bytes, subject: str) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"fieldseal fsb1 subject\0" + subject.encode()).derive(secret)


def py_seal_for_subject(secret: bytes, kid: str, subject: str, context: str, value,
                        nonce: bytes | None = None) -> str:
    nonce = nonce or os.urandom(12)
    plaintext = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    sealed = AESGCM(subject_key(secret, subject)).encrypt(nonce, plaintext, f"fsb1.{kid}.{context}".encode())
    return f"fsb1.{kid}.{b64url(nonce + sealed)}"


def test_subject_bound_vectors_with_an_independent_implementation():
    assert subject_key(VECTOR_KEY, "42").hex() == \
        "dca09889644ba510c08cdf7541cbec9620ac4eb3e4375a3f88f82e8ecb071476"
    assert py_seal_for_subject(VECTOR_KEY, "k1", "42", "ssn", "123-45-6789", VECTOR_NONCE) == \
        "fsb1.k1.AAECAwQFBgcICQoL3PyUQ4nYK8zPBaAX2uzjJmbqw1d5vKWJsA6P7RQ"


def test_subject_bound_tokens_both_ways_and_shredding(fieldseal_bin, keyring):
    path, secret = keyring
    r = cli(fieldseal_bin, "seal", "--keyring", path, "--context", "ssn", "--subject", "user-42",
            '"123-45-6789"')
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("fsb1.k1.")
    raw = unb64url(token.split(".", 2)[2])
    assert json.loads(AESGCM(subject_key(secret, "user-42")).decrypt(raw[:12], raw[12:], b"fsb1.k1.ssn")) \
        == "123-45-6789"
    made_here = py_seal_for_subject(secret, "k1", "user-42", "ssn", "123-45-6789")
    opened = cli(fieldseal_bin, "open", "--keyring", path, "--context", "ssn", "--subject", "user-42", made_here)
    assert opened.returncode == 0 and json.loads(opened.stdout) == "123-45-6789", opened.stderr
    # Another subject, or none: refused.
    other = cli(fieldseal_bin, "open", "--keyring", path, "--context", "ssn", "--subject", "user-43", token)
    assert other.returncode == 1 and "authentication_failed" in other.stderr
    none = cli(fieldseal_bin, "open", "--keyring", path, "--context", "ssn", token)
    assert none.returncode == 1 and "no_subject" in none.stderr
    # Erase user-42: the file names a digest, never the subject; the token stops opening.
    r = cli(fieldseal_bin, "keys", "shred", "--keyring", path, "--subject", "user-42")
    assert r.returncode == 0, r.stderr
    text = path.read_text()
    assert "user-42" not in text and "user-42" not in r.stdout
    import hashlib
    assert hashlib.sha256(b"fieldseal/shred/v1\0user-42").hexdigest() in text
    listed = cli(fieldseal_bin, "keys", "list", "--keyring", path)
    assert "erased subjects: 1" in listed.stdout and "user-42" not in listed.stdout, listed.stdout
    after = cli(fieldseal_bin, "open", "--keyring", path, "--context", "ssn", "--subject", "user-42", token)
    assert after.returncode == 1 and "subject_erased" in after.stderr, after.stderr
    again = cli(fieldseal_bin, "seal", "--keyring", path, "--context", "ssn", "--subject", "user-42", '"x"')
    assert again.returncode == 1 and "subject_erased" in again.stderr
    # Others are untouched.
    t43 = cli(fieldseal_bin, "seal", "--keyring", path, "--context", "ssn", "--subject", "user-43", '"x"').stdout.strip()
    assert cli(fieldseal_bin, "open", "--keyring", path, "--context", "ssn", "--subject", "user-43", t43).returncode == 0
