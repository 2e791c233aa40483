"""`fieldseal file seal|open` (issue 19, docs/files.md) against the reference age
implementation (Debian's `age`, Go): files sealed by fieldseal to X25519 and SSH RSA recipients
open with `age`, and files `age` seals open with fieldseal; the keyring opens what was sealed to
it and nothing else; every altered, truncated or reordered file is refused with no plaintext
left behind; a large file goes through in constant memory."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("age") is None, reason="the age tool is not installed")

from age_helpers import CHUNK, TAG, hkdf, open_age


def run(*args, ok=True, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, **kw)
    if ok:
        assert r.returncode == 0, r.stderr.decode()
    return r


@pytest.fixture(scope="module")
def keys(tmp_path_factory, fieldseal_bin):
    d = tmp_path_factory.mktemp("files")
    run("age-keygen", "-o", d / "id.txt")
    recipient = run("age-keygen", "-y", d / "id.txt").stdout.decode().strip()
    run("ssh-keygen", "-q", "-t", "rsa", "-b", "3072", "-N", "", "-f", d / "rsa")
    run(fieldseal_bin, "keys", "init", "--out", d / "keyring.json")
    run(fieldseal_bin, "keys", "init", "--out", d / "other.json")
    return d, recipient


def plaintext(d: Path, size: int, name="plain.bin") -> Path:
    p = d / name
    p.write_bytes(os.urandom(size))
    return p


def fresh(d: Path, name: str) -> Path:
    p = d / name
    if p.exists():
        p.unlink()
    return p


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
@pytest.mark.parametrize("armor", [False, True])
def test_fieldseal_seals_age_opens(keys, fieldseal_bin, size, armor):
    d, recipient = keys
    plain = plaintext(d, size)
    sealed = fresh(d, "a.age")
    run(fieldseal_bin, "file", "seal", "--in", plain, "--out", sealed, "--to", recipient,
        *(["--armor"] if armor else []))
    assert sealed.stat().st_mode & 0o777 == 0o600
    out = run("age", "-d", "-i", d / "id.txt", sealed).stdout
    assert out == plain.read_bytes()


@pytest.mark.parametrize("armor", [False, True])
def test_age_seals_fieldseal_opens(keys, fieldseal_bin, armor):
    d, recipient = keys
    plain = plaintext(d, 2 * CHUNK + 5)
    sealed = fresh(d, "b.age")
    run("age", "-r", recipient, *(["-a"] if armor else []), "-o", sealed, plain)
    opened = fresh(d, "b.out")
    run(fieldseal_bin, "file", "open", "--in", sealed, "--out", opened, "--identity", d / "id.txt")
    assert opened.read_bytes() == plain.read_bytes()
    assert opened.stat().st_mode & 0o777 == 0o600


def test_ssh_rsa_both_ways(keys, fieldseal_bin):
    d, _ = keys
    pub = (d / "rsa.pub").read_text().strip()
    plain = plaintext(d, CHUNK + 3)
    sealed = fresh(d, "c.age")
    run(fieldseal_bin, "file", "seal", "--in", plain, "--out", sealed, "--to", pub)
    assert run("age", "-d", "-i", d / "rsa", sealed).stdout == plain.read_bytes()
    sealed2 = fresh(d, "c2.age")
    run("age", "-R", d / "rsa.pub", "-o", sealed2, plain)
    opened = fresh(d, "c.out")
    run(fieldseal_bin, "file", "open", "--in", sealed2, "--out", opened, "--identity", d / "rsa")
    assert opened.read_bytes() == plain.read_bytes()


def test_the_keyring_opens_its_files_and_no_other(keys, fieldseal_bin):
    d, recipient = keys
    plain = plaintext(d, 100_000)
    sealed = fresh(d, "k.age")
    # To the keyring and an age recipient at once: either opens it.
    run(fieldseal_bin, "file", "seal", "--in", plain, "--out", sealed, "--keyring", d / "keyring.json",
        "--to", recipient)
    assert b"-> fieldseal-keyring " in sealed.read_bytes()[:1000]
    opened = fresh(d, "k.out")
    run(fieldseal_bin, "file", "open", "--in", sealed, "--out", opened, "--keyring", d / "keyring.json")
    assert opened.read_bytes() == plain.read_bytes()
    assert run("age", "-d", "-i", d / "id.txt", sealed).stdout == plain.read_bytes()
    # Another keyring does not open it, and leaves no output.
    refused = fresh(d, "k2.out")
    r = run(fieldseal_bin, "file", "open", "--in", sealed, "--out", refused, "--keyring", d / "other.json",
            ok=False)
    assert r.returncode == 1, r.stderr
    assert not refused.exists()


def altered(file: bytes):
    """Every way to alter a sealed file of four chunks: (name, bytes)."""
    start = file.index(b"\n--- ")
    payload = file.index(b"\n", start + 1) + 1 + 16  # the MAC line, then the 16-byte nonce
    c = CHUNK + TAG
    chunks = [file[payload + i * c: payload + (i + 1) * c] for i in range(4)]
    yield "bit flipped in the header", file[:20] + bytes([file[20] ^ 1]) + file[21:]
    yield "bit flipped in the MAC", file[:start + 8] + bytes([file[start + 8] ^ 1]) + file[start + 9:]
    for i in (0, 2, 3):
        at = payload + i * c + 100 if i < 3 else len(file) - 3
        yield f"bit flipped in chunk {i}", file[:at] + bytes([file[at] ^ 1]) + file[at + 1:]
    yield "last chunk dropped", file[:payload + 3 * c]
    yield "cut inside the last chunk", file[:-5]
    yield "chunks 0 and 1 swapped", file[:payload] + chunks[1] + chunks[0] + b"".join(chunks[2:])
    yield "chunk 1 repeated", file[:payload] + chunks[0] + chunks[1] + chunks[1] + b"".join(chunks[3:])
    yield "data appended", file + b"x"


def test_altered_files_are_refused_without_output(keys, fieldseal_bin):
    d, recipient = keys
    plain = plaintext(d, 3 * CHUNK + 1000)
    sealed = fresh(d, "t.age")
    run(fieldseal_bin, "file", "seal", "--in", plain, "--out", sealed, "--to", recipient)
    original = sealed.read_bytes()
    for name, bad in altered(original):
        assert bad != original, name
        path = d / "t-bad.age"
        path.write_bytes(bad)
        out = fresh(d, "t.out")
        r = run(fieldseal_bin, "file", "open", "--in", path, "--out", out, "--identity", d / "id.txt",
                ok=False)
        assert r.returncode != 0, name
        assert not out.exists(), name
        assert not any(p.name.startswith(".t.out.partial") for p in d.iterdir()), name
        # The reference implementation refuses it too.
        assert run("age", "-d", "-i", d / "id.txt", path, ok=False).returncode != 0, name


def test_existing_outputs_are_never_overwritten(keys, fieldseal_bin):
    d, recipient = keys
    plain = plaintext(d, 10)
    target = d / "exists.age"
    target.write_bytes(b"keep me")
    r = run(fieldseal_bin, "file", "seal", "--in", plain, "--out", target, "--to", recipient, ok=False)
    assert r.returncode != 0 and target.read_bytes() == b"keep me"


def test_a_large_file_in_constant_memory(keys, fieldseal_bin, tmp_path):
    d, recipient = keys
    size = 32 * 2**20
    plain = tmp_path / "big.bin"
    with open(plain, "wb") as f:
        block = os.urandom(2**20)
        for _ in range(size // len(block)):
            f.write(block)
    sealed, opened = tmp_path / "big.age", tmp_path / "big.out"

    def peak_kib(*args):
        # A fresh interpreter whose only child is the command: its children's peak RSS is
        # the command's own.
        probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        return int(run(sys.executable, "-c", probe, *args).stdout)

    seal_peak = peak_kib(fieldseal_bin, "file", "seal", "--in", plain, "--out", sealed, "--to", recipient)
    open_peak = peak_kib(fieldseal_bin, "file", "open", "--in", sealed, "--out", opened,
                         "--identity", d / "id.txt")
    assert sealed.stat().st_size > size
    assert run("cmp", plain, opened).returncode == 0
    # Peak resident memory far below the file's size.
    assert seal_peak < 40 * 1024 and open_peak < 40 * 1024, (seal_peak, open_peak)


def independent_open_keyring_file(file: bytes, secret: bytes, kid: str) -> bytes:
    """The age v1 format and the `fieldseal-keyring` stanza (docs/files.md) opened with Python
    `cryptography` alone: HKDF for the wrap key, AES-256-GCM for the file key, then the header
    MAC and STREAM (age_helpers)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    def unwrap(args, raw):
        if args[0] != "fieldseal-keyring" or args[1] != kid:
            return None
        wrap = AESGCM(hkdf(secret, None, b"fieldseal file key wrap v1"))
        return wrap.decrypt(raw[:12], raw[12:], b"fieldseal-keyring/v1 " + kid.encode())

    return open_age(file, unwrap)


def test_an_independent_implementation_opens_keyring_files(keys, fieldseal_bin):
    import base64
    import json

    d, _ = keys
    ring = json.loads((d / "keyring.json").read_text())
    key = ring["keys"][0]
    for size in (0, 5, CHUNK, 2 * CHUNK + 9):
        plain = plaintext(d, size)
        sealed = fresh(d, "i.age")
        run(fieldseal_bin, "file", "seal", "--in", plain, "--out", sealed, "--keyring", d / "keyring.json")
        opened = independent_open_keyring_file(sealed.read_bytes(), base64.b64decode(key["secret"]), key["id"])
        assert opened == plain.read_bytes(), size


def test_rewrap_after_a_rotation_keeps_the_payload(keys, fieldseal_bin, tmp_path):
    """A backup sealed to the keyring, the keyring rotated: `file rewrap --keyring` moves the
    file to the new primary (and here to an age recipient too) without re-encrypting it; with
    the old key then removed, the file still opens, and `age` opens it with the new identity."""
    import json

    d, _ = keys
    ring = tmp_path / "ring.json"
    run(fieldseal_bin, "keys", "init", "--out", ring, "--id", "old")
    plain = plaintext(tmp_path, 3 * CHUNK + 5)
    sealed = tmp_path / "backup.age"
    run(fieldseal_bin, "file", "seal", "--in", plain, "--out", sealed, "--keyring", ring)
    run(fieldseal_bin, "keys", "rotate", "--keyring", ring, "--id", "new")
    run("age-keygen", "-o", tmp_path / "ops.key")
    ops = run("age-keygen", "-y", tmp_path / "ops.key").stdout.decode().strip()
    rewrapped = tmp_path / "backup2.age"
    r = run(fieldseal_bin, "file", "rewrap", "--in", sealed, "--out", rewrapped, "--keyring", ring, "--to", ops)
    assert b"payload bytes copied unchanged" in r.stderr
    old, new = sealed.read_bytes(), rewrapped.read_bytes()
    assert b"-> fieldseal-keyring new" in new and b"-> fieldseal-keyring old" not in new
    payload = lambda f: f[f.index(b"\n", f.index(b"\n--- ") + 1) + 1:]
    assert payload(old) == payload(new)
    # The old key retired from the keyring: only the rewrapped file opens.
    doc = json.loads(ring.read_text())
    doc["keys"] = [k for k in doc["keys"] if k["id"] != "old"]
    ring.write_text(json.dumps(doc))
    for f, ok in ((rewrapped, True), (sealed, False)):
        out = fresh(tmp_path, "restored.bin")
        r = run(fieldseal_bin, "file", "open", "--in", f, "--out", out, "--keyring", ring, ok=False)
        assert (r.returncode == 0) == ok, (f, r.stderr)
        if ok:
            assert out.read_bytes() == plain.read_bytes()
    assert run("age", "-d", "-i", tmp_path / "ops.key", rewrapped).stdout == plain.read_bytes()
    # A header altered by someone without the file key is refused, not rewrapped.
    bad = tmp_path / "bad.age"
    at = new.index(b"\n---")
    bad.write_bytes(new[:at] + b"\n-> x y\n" + new[at:])
    r = run(fieldseal_bin, "file", "rewrap", "--in", bad, "--out", fresh(tmp_path, "bad2.age"),
            "--keyring", ring, ok=False)
    assert r.returncode == 1 and b"MAC" in r.stderr, r.stderr


@pytest.fixture(scope="module")
def signing(tmp_path_factory):
    d = tmp_path_factory.mktemp("signing")
    for name in ("sender", "other"):
        run("openssl", "genpkey", "-algorithm", "ed25519", "-out", d / f"{name}.pem")
        os.chmod(d / f"{name}.pem", 0o600)
        run("openssl", "pkey", "-in", d / f"{name}.pem", "-pubout", "-out", d / f"{name}.pub.pem")
    return d


def test_signed_files_verify_with_an_independent_implementation(keys, signing, fieldseal_bin, tmp_path):
    import base64
    import hashlib

    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    d, recipient = keys
    plain = plaintext(tmp_path, CHUNK + 77)
    sealed = tmp_path / "s.age"
    run(fieldseal_bin, "file", "seal", "--in", plain, "--out", sealed, "--to", recipient,
        "--sign", signing / "sender.pem")
    sig = (tmp_path / "s.age.sig").read_text().splitlines()
    assert sig[0].startswith("fieldseal-signature/v1 ed25519 ")
    public = load_pem_public_key((signing / "sender.pub.pem").read_bytes())
    message = b"fieldseal-signature/v1\n" + hashlib.sha512(sealed.read_bytes()).digest()
    public.verify(base64.b64decode(sig[1]), message)  # raises if it does not verify
    run(fieldseal_bin, "file", "verify", "--in", sealed, "--key", signing / "sender.pub.pem")
    r = run(fieldseal_bin, "file", "verify", "--in", sealed, "--key", signing / "other.pub.pem", ok=False)
    assert r.returncode == 1 and b"not by the given key" in r.stderr
    # The sealed file itself is still a plain age file.
    assert run("age", "-d", "-i", d / "id.txt", sealed).stdout == plain.read_bytes()
    out = tmp_path / "s.out"
    run(fieldseal_bin, "file", "open", "--in", sealed, "--out", out, "--identity", d / "id.txt",
        "--verify", signing / "sender.pub.pem")
    assert out.read_bytes() == plain.read_bytes()


def test_rsa_pss_signatures_both_ways_with_an_independent_implementation(keys, signing, fieldseal_bin, tmp_path):
    """RSA-PSS (SHA-512, MGF1-SHA-512, 64-byte salt) for senders whose keys are RSA: fieldseal's
    signature verifies with Python `cryptography`, and one `cryptography` makes verifies with
    fieldseal; Ed25519 and RSA are not confused."""
    import base64
    import hashlib

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64)
    run("openssl", "genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:3072", "-out", tmp_path / "rsa.pem")
    os.chmod(tmp_path / "rsa.pem", 0o600)
    run("openssl", "pkey", "-in", tmp_path / "rsa.pem", "-pubout", "-out", tmp_path / "rsa.pub.pem")
    d, recipient = keys
    plain = plaintext(tmp_path, 3 * CHUNK + 5)
    sealed = tmp_path / "r.age"
    run(fieldseal_bin, "file", "seal", "--in", plain, "--out", sealed, "--to", recipient, "--sign", tmp_path / "rsa.pem")
    head, sig = (tmp_path / "r.age.sig").read_text().splitlines()
    assert head.startswith("fieldseal-signature/v1 rsa-pss-sha512 ")
    message = b"fieldseal-signature/v1\n" + hashlib.sha512(sealed.read_bytes()).digest()
    public = load_pem_public_key((tmp_path / "rsa.pub.pem").read_bytes())
    public.verify(base64.b64decode(sig), message, pss, hashes.SHA512())  # raises if it does not verify

    # The other way: cryptography signs another sealed file; fieldseal verifies and opens it.
    other = tmp_path / "o.age"
    run(fieldseal_bin, "file", "seal", "--in", plain, "--out", other, "--to", recipient)
    private = load_pem_private_key((tmp_path / "rsa.pem").read_bytes(), None)
    py_sig = private.sign(b"fieldseal-signature/v1\n" + hashlib.sha512(other.read_bytes()).digest(), pss,
                          hashes.SHA512())
    (tmp_path / "o.age.sig").write_text(f"{head}\n{base64.b64encode(py_sig).decode()}\n")
    run(fieldseal_bin, "file", "verify", "--in", other, "--key", tmp_path / "rsa.pub.pem")
    out = tmp_path / "o.out"
    run(fieldseal_bin, "file", "open", "--in", other, "--out", out, "--identity", d / "id.txt",
        "--verify", tmp_path / "rsa.pub.pem")
    assert out.read_bytes() == plain.read_bytes()

    # PKCS#1 v1.5 is not PSS; an Ed25519 key does not verify an RSA signature.
    v15 = private.sign(b"fieldseal-signature/v1\n" + hashlib.sha512(other.read_bytes()).digest(),
                       padding.PKCS1v15(), hashes.SHA512())
    (tmp_path / "o.age.sig").write_text(f"{head}\n{base64.b64encode(v15).decode()}\n")
    r = run(fieldseal_bin, "file", "verify", "--in", other, "--key", tmp_path / "rsa.pub.pem", ok=False)
    assert r.returncode == 1 and b"does not verify" in r.stderr
    r = run(fieldseal_bin, "file", "verify", "--in", sealed, "--key", signing / "sender.pub.pem", ok=False)
    assert r.returncode == 1 and b"rsa-pss-sha512" in r.stderr


def test_open_verify_refuses_before_writing_anything(keys, signing, fieldseal_bin, tmp_path):
    d, recipient = keys
    plain = plaintext(tmp_path, 2 * CHUNK)
    sealed = tmp_path / "v.age"
    run(fieldseal_bin, "file", "seal", "--in", plain, "--out", sealed, "--to", recipient,
        "--sign", signing / "sender.pem")
    good = sealed.read_bytes()
    unsigned = tmp_path / "u.age"
    run(fieldseal_bin, "file", "seal", "--in", plain, "--out", unsigned, "--to", recipient)
    # A file re-sealed by a recipient for the same recipients (age allows it) is not the
    # sender's: its signature does not verify.
    resealed = tmp_path / "r.age"
    run("age", "-r", recipient, "-o", resealed, plain)
    (tmp_path / "r.age.sig").write_bytes((tmp_path / "v.age.sig").read_bytes())
    cases = {
        "payload bit flipped": (sealed, good[:-40] + bytes([good[-40] ^ 1]) + good[-39:], "does not verify"),
        "resealed by a recipient": (resealed, None, "does not verify"),
        "no signature": (unsigned, None, "signature"),
        "another sender's key": (sealed, good, "not by the given key"),
    }
    for name, (path, content, why) in cases.items():
        if content is not None:
            path.write_bytes(content)
        out = fresh(tmp_path, "v.out")
        key = "other.pub.pem" if name == "another sender's key" else "sender.pub.pem"
        r = run(fieldseal_bin, "file", "open", "--in", path, "--out", out, "--identity", d / "id.txt",
                "--verify", signing / key, ok=False)
        assert r.returncode != 0, name
        assert why.encode() in r.stderr, (name, r.stderr)
        assert not out.exists(), name
        assert not any(p.name.startswith(".v.out.partial") for p in tmp_path.iterdir()), name


def test_every_file_operation_is_audited(keys, signing, fieldseal_bin, tmp_path):
    """`--audit-log/--audit-key` append a `file` event per operation to the proxy's audit
    chain (docs/audit.md), which `fieldseal audit verify` then checks; no key or plaintext in
    it."""
    import json

    d, recipient = keys
    akey, log = tmp_path / "audit.key", tmp_path / "audit.log"
    run(fieldseal_bin, "audit", "keygen", "--out", akey)
    audit = ["--audit-log", log, "--audit-key", akey]
    plain = plaintext(tmp_path, 1000)
    sealed = tmp_path / "a.age"
    run(fieldseal_bin, "file", "seal", "--in", plain, "--out", sealed, "--to", recipient,
        "--keyring", d / "keyring.json", "--sign", signing / "sender.pem", *audit)
    run(fieldseal_bin, "file", "open", "--in", sealed, "--out", tmp_path / "a.out", "--keyring",
        d / "keyring.json", "--verify", signing / "sender.pub.pem", *audit)
    run(fieldseal_bin, "file", "open", "--in", sealed, "--out", tmp_path / "b.out", "--keyring",
        d / "other.json", *audit, ok=False)
    run(fieldseal_bin, "file", "verify", "--in", sealed, "--key", signing / "sender.pub.pem", *audit)
    run(fieldseal_bin, "audit", "verify", log, "--key", akey)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    files = [e for e in events if e["event"] == "file"]
    assert [(e["op"], e["outcome"]) for e in files] == [
        ("seal", "ok"), ("open", "ok"), ("open", "refused"), ("verify", "ok")]
    kid = json.loads((d / "keyring.json").read_text())["keys"][0]["id"]
    assert files[0]["recipients"] == ["x25519", f"keyring:{kid}"]
    assert files[0]["bytes"] == 1000 and len(files[0]["sha512"]) == 128
    assert files[0]["signer"] == files[1]["signer"] == files[3]["signer"]
    assert files[3]["sha512"] == files[0]["sha512"]
    assert "no identity" in files[2]["reason"] or "does not open" in files[2]["reason"]
    text = log.read_text()
    secret = json.loads((d / "keyring.json").read_text())["keys"][0]["secret"]
    assert secret not in text and "AGE-SECRET-KEY" not in text
    # An audit log that cannot be opened stops the operation before it starts.
    r = run(fieldseal_bin, "file", "seal", "--in", plain, "--out", tmp_path / "c.age", "--to", recipient,
            "--audit-log", tmp_path / "missing-dir" / "x.log", "--audit-key", akey, ok=False)
    assert r.returncode == 64 and not (tmp_path / "c.age").exists()


# docs/files.md, "The `.sig` file": Ed25519 is deterministic, so the signature format has a
# vector any implementation reproduces.
SIG_VECTOR = ("fieldseal-signature/v1 ed25519 Vkdap1RjR0wChd9d\n"
              "JTAW7QfF/hZMhNXhbDgtxyJjVTVU7Hm8ZrmkfJ6lQqyLW28Mdnitay3Pt1NAHRAnE0BrZAaiD6osKxQWmsKcCA==\n")


def test_the_documented_signature_vector(fieldseal_bin, tmp_path):
    """Python `cryptography` makes the documented `.sig` from the documented key and file, byte
    for byte (message, key id and encoding as docs/files.md specifies them), and fieldseal
    verifies it, and refuses it for a file one byte different."""
    import base64
    import hashlib

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kid = base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).rstrip(b"=").decode()[:16]
    data = b"fieldseal signature vector\n"
    sig = key.sign(b"fieldseal-signature/v1\n" + hashlib.sha512(data).digest())
    assert f"fieldseal-signature/v1 ed25519 {kid}\n{base64.b64encode(sig).decode()}\n" == SIG_VECTOR

    (tmp_path / "file").write_bytes(data)
    (tmp_path / "file.sig").write_text(SIG_VECTOR)
    (tmp_path / "pub.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    run(fieldseal_bin, "file", "verify", "--in", tmp_path / "file", "--key", tmp_path / "pub.pem")
    (tmp_path / "file").write_bytes(data[:-1] + b"!")
    r = run(fieldseal_bin, "file", "verify", "--in", tmp_path / "file", "--key", tmp_path / "pub.pem", ok=False)
    assert r.returncode == 1 and b"does not verify" in r.stderr
