"""Wrapped keyrings (docs/keys.md) checked against an independent implementation: Python
`argon2-cffi` (Argon2id) and `cryptography`'s AESGCM unwrap what `fieldseal keys init --wrap`
writes, and wrap keyrings that `fieldseal keys list` / `open` then read."""
import base64
import datetime
import json
import os
import subprocess

import pytest
from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

AAD = b"fieldseal-keyring-v1"
PASSPHRASE = "correct horse battery staple"
KEK_VARS = ("FIELDSEAL_KEYRING_PASSPHRASE", "FIELDSEAL_KEYRING_KEK",
            "FIELDSEAL_NEW_KEYRING_PASSPHRASE", "FIELDSEAL_NEW_KEYRING_KEK")


def cli(fieldseal_bin, *args, env=None):
    base = {k: v for k, v in os.environ.items() if k not in KEK_VARS}
    return subprocess.run([str(fieldseal_bin), *map(str, args)], capture_output=True, text=True,
                          env={**base, **(env or {})})


def derive(passphrase: str, w: dict) -> bytes:
    return hash_secret_raw(passphrase.encode(), base64.b64decode(w["salt"]), time_cost=w["t_cost"],
                           memory_cost=w["m_cost_kib"], parallelism=w["p_cost"], hash_len=32,
                           type=Type.ID, version=19)


def py_unwrap(doc: dict, passphrase: str | None = None, kek: bytes | None = None) -> dict:
    w = doc["wrapped"]
    assert w["version"] == 1
    key = derive(passphrase, w) if w["kdf"] == "argon2id" else kek
    plain = AESGCM(key).decrypt(base64.b64decode(w["nonce"]), base64.b64decode(w["ciphertext"]), AAD)
    return json.loads(plain)


def py_wrap(keyring: dict, passphrase: str | None = None, kek: bytes | None = None,
            m_cost_kib=65536, t_cost=3, p_cost=1) -> dict:
    nonce = os.urandom(12)
    w = {"version": 1}
    if passphrase is not None:
        w.update(kdf="argon2id", m_cost_kib=m_cost_kib, t_cost=t_cost, p_cost=p_cost,
                 salt=base64.b64encode(os.urandom(16)).decode())
        kek = derive(passphrase, w)
    else:
        w["kdf"] = "none"
    ct = AESGCM(kek).encrypt(nonce, json.dumps(keyring).encode(), AAD)
    w.update(nonce=base64.b64encode(nonce).decode(), ciphertext=base64.b64encode(ct).decode())
    return {"wrapped": w}


def py_seal(key: bytes, kid: str, context: str, value) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, json.dumps(value, separators=(",", ":")).encode(),
                                 f"fs1.{kid}.{context}".encode())
    return f"fs1.{kid}." + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()


def write_private(path, data):
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    path.chmod(0o600)


def a_keyring() -> tuple[dict, dict]:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    secrets = {"py1": os.urandom(32), "py2": os.urandom(32)}
    return {"primary": "py2", "keys": [
        {"id": "py1", "secret": base64.b64encode(secrets["py1"]).decode(), "created_at": now,
         "state": "decrypt_only"},
        {"id": "py2", "secret": base64.b64encode(secrets["py2"]).decode(), "created_at": now,
         "state": "active"}]}, secrets


def test_python_unwraps_what_keys_init_wrap_writes(fieldseal_bin, tmp_path):
    path = tmp_path / "keyring.json"
    env = {"FIELDSEAL_KEYRING_PASSPHRASE": PASSPHRASE}
    r = cli(fieldseal_bin, "keys", "init", "--out", path, "--id", "first", "--wrap", env=env)
    assert r.returncode == 0, r.stderr
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    doc = json.loads(path.read_text())
    w = doc["wrapped"]
    assert (w["kdf"], w["m_cost_kib"], w["t_cost"], w["p_cost"]) == ("argon2id", 65536, 3, 1)
    assert len(base64.b64decode(w["salt"])) == 16 and len(base64.b64decode(w["nonce"])) == 12

    keyring = py_unwrap(doc, passphrase=PASSPHRASE)
    assert keyring["primary"] == "first"
    (key,) = keyring["keys"]
    assert key["id"] == "first" and key["state"] == "active"
    secret = base64.b64decode(key["secret"])
    assert len(secret) == 32

    # The unwrapped secret is the one fieldseal seals with.
    token = py_seal(secret, "first", "ssn", "123-45-6789")
    r = cli(fieldseal_bin, "open", "--keyring", path, "--context", "ssn", token, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == "123-45-6789"

    with pytest.raises(Exception):
        py_unwrap(doc, passphrase=PASSPHRASE + "!")


def test_fieldseal_reads_keyrings_python_wrapped(fieldseal_bin, tmp_path):
    keyring, secrets = a_keyring()
    token = py_seal(secrets["py1"], "py1", "card", {"number": "4111111111110366"})

    # Passphrase, with costs other than the defaults (read from the file).
    path = tmp_path / "keyring.json"
    write_private(path, json.dumps(py_wrap(keyring, passphrase=PASSPHRASE, m_cost_kib=8192, t_cost=2)))
    pw = tmp_path / "passphrase"
    write_private(pw, PASSPHRASE + "\n")
    r = cli(fieldseal_bin, "keys", "list", "--keyring", path, "--passphrase-file", pw)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
    assert rows["py1"][1] == "decrypt_only" and rows["py2"][1] == "active" and rows["py2"][-1] == "*"
    for s in secrets.values():
        assert base64.b64encode(s).decode() not in r.stdout + r.stderr
    r = cli(fieldseal_bin, "open", "--keyring", path, "--context", "card", token,
            env={"FIELDSEAL_KEYRING_PASSPHRASE": PASSPHRASE})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"number": "4111111111110366"}

    # Wrong passphrase: one message, exit 64 (the keyring cannot be used).
    r = cli(fieldseal_bin, "keys", "list", "--keyring", path,
            env={"FIELDSEAL_KEYRING_PASSPHRASE": PASSPHRASE + "!"})
    assert r.returncode == 64
    assert f"cannot unwrap {path}: wrong passphrase/KEK, or the file was modified" in r.stderr

    # Raw KEK: kdf none; the KEK as 32 raw bytes in a file, or base64 in the environment.
    kek = os.urandom(32)
    write_private(path, json.dumps(py_wrap(keyring, kek=kek)))
    kek_file = tmp_path / "kek"
    write_private(kek_file, kek)
    r = cli(fieldseal_bin, "keys", "list", "--keyring", path, "--kek-file", kek_file)
    assert r.returncode == 0, r.stderr
    assert "py2" in r.stdout
    r = cli(fieldseal_bin, "open", "--keyring", path, "--context", "card", token,
            env={"FIELDSEAL_KEYRING_KEK": base64.b64encode(kek).decode()})
    assert r.returncode == 0, r.stderr

    # fieldseal rotates it and writes it back wrapped with the same KEK; Python still unwraps it.
    r = cli(fieldseal_bin, "keys", "rotate", "--keyring", path, "--kek-file", kek_file)
    assert r.returncode == 0, r.stderr
    assert "rotated: primary k3 (new), py2 now decrypt_only" in r.stdout
    rotated = py_unwrap(json.loads(path.read_text()), kek=kek)
    assert rotated["primary"] == "k3"
    assert [(k["id"], k["state"]) for k in rotated["keys"]] == [
        ("py1", "decrypt_only"), ("py2", "decrypt_only"), ("k3", "active")]
    assert rotated["keys"][0]["secret"] == keyring["keys"][0]["secret"]
