"""The C2SP age test suite (https://github.com/C2SP/CCTV, `age/testdata`), every vector an
identity opens (X25519 and post-quantum `mlkem768x25519`; the passphrase ones are left out:
fieldseal has no scrypt identities), through `fieldseal file open`: header and stanza parsing,
the header MAC, armor, every recipient check, and STREAM (chunk boundaries, empty and full last
chunks, missing or doubled final chunks, bad tags, short chunks, trailing data).

`success` must give the payload whose SHA-256 the vector names; every failure (`no match`,
`header failure`, `HMAC failure`, `armor failure`, `payload failure`) must be refused with no
output at all, where the suite allows a partial one for payload failures."""
import hashlib
import os
import subprocess
import zlib

import pytest

CCTV = os.path.join(os.path.dirname(__file__), "..", "fixtures", "age-cctv")
VECTORS = sorted(n for n in os.listdir(CCTV) if not n.endswith(".md"))


def load(name: str):
    raw = open(os.path.join(CCTV, name), "rb").read()
    head, body = raw.split(b"\n\n", 1)
    fields = [line.split(": ", 1) for line in head.decode().splitlines()]
    meta = dict(fields)
    if meta.get("compressed") == "zlib":
        body = zlib.decompress(body)
    return meta, [v for k, v in fields if k == "identity"], body


def test_the_suite_is_all_here():
    """A vector dropped from the directory would shrink the suite silently."""
    kinds = {}
    for name in VECTORS:
        kinds[load(name)[0]["expect"]] = kinds.get(load(name)[0]["expect"], 0) + 1
    assert len(VECTORS) == 116, len(VECTORS)
    assert kinds == {"success": 24, "no match": 9, "header failure": 41, "HMAC failure": 1,
                     "armor failure": 22, "payload failure": 19}, kinds


@pytest.mark.parametrize("name", VECTORS)
def test_the_c2sp_age_vectors(name, fieldseal_bin, tmp_path):
    meta, identities, body = load(name)
    (tmp_path / "id.txt").write_text("\n".join(identities) + "\n")
    (tmp_path / "id.txt").chmod(0o600)
    (tmp_path / "in.age").write_bytes(body)
    out = tmp_path / "out"
    r = subprocess.run([str(fieldseal_bin), "file", "open", "--in", str(tmp_path / "in.age"),
                        "--out", str(out), "--identity", str(tmp_path / "id.txt")], capture_output=True)
    if meta["expect"] == "success":
        assert r.returncode == 0, r.stderr.decode()
        assert hashlib.sha256(out.read_bytes()).hexdigest() == meta["payload"]
    else:
        assert r.returncode != 0, (meta["expect"], meta.get("comment"))
        assert not out.exists()
        assert os.listdir(tmp_path) == ["id.txt", "in.age"] or sorted(os.listdir(tmp_path)) == ["id.txt", "in.age"]
