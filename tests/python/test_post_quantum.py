"""Post-quantum client encryption and files (issue 19; docs/client-encryption.md, docs/files.md),
checked with independent implementations:

- the JOSE `HPKE-10` suite (X-Wing = MLKEM768-X25519, SHAKE256, AES-256-GCM) of
  draft-skokan-jose-hpke-pq-pqt: the draft's own test vector (made with the authors' JavaScript
  HPKE) goes through the proxy, and values sealed by pq_helpers (Python `cryptography`
  primitives, itself checked here against `cryptography`'s HPKE and that vector) reach real
  Flask and FastAPI apps opened, with the key published in the JWKS beside the classical ones;
- envelopes whose session key is wrapped with nothing but `cryptography`'s stock
  `hpke.Suite.encrypt`, to the X-Wing key and to the X25519 key;
- age's `mlkem768x25519` file recipients: files fieldseal seals open with `cryptography`'s HPKE
  and an independent age implementation (age_helpers), and files made that way open with
  fieldseal."""
import base64
import hashlib
import json
import os
import subprocess
import time
import uuid

import pytest
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import pq_helpers as pq
from age_helpers import bech32_decode, bech32_encode, b64, open_age, seal_age, unb64
from conftest import Proxy, https_client as client
from jose_helpers import b64url, flip, unb64url

SSN = "123-45-6789"
FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "jose-hpke-pq")
WRAP_INFO = b"fieldseal-envelope-session-key/v1"

CONFIG = """keys:
  keyring: "{keyring}"
  hpke_private_key: ["{x25519}", "{xwing}", "{vector}"]
routes:
  - name: user
    match: {{ path: "/api/users/{{id}}", methods: [GET, PUT] }}
    request:
      decrypt: ["$.ssn", "$.quote"]
  - name: fresh
    match: {{ path: "/api/echo", methods: [POST] }}
    request:
      decrypt: ["$.ssn"]
      max_age: 300
  - name: secure
    match: {{ path: "/api/secure/**", methods: [POST] }}
    envelope: true
"""


def fixture(name: str) -> str:
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read().strip()


def vector_jwk() -> dict:
    return json.loads(fixture("HPKE-10.jwk.json"))


def write_private(path, pem: bytes):
    path.write_bytes(pem)
    path.chmod(0o600)


@pytest.fixture(scope="module")
def setup(app, pki, fieldseal_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("pq")
    keyring = d / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True, capture_output=True)
    x = x25519.X25519PrivateKey.generate()
    write_private(d / "x25519.pem", x.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    # The X-Wing key made by fieldseal's own command; the vector's key written by pq_helpers.
    r = subprocess.run([str(fieldseal_bin), "hpke", "generate", "--kem", "xwing", "--out", str(d / "xwing.pem")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "JWE alg HPKE-10" in r.stdout, r.stderr
    assert (d / "xwing.pem").stat().st_mode & 0o777 == 0o600
    write_private(d / "vector.pem", pq.pem(unb64url(vector_jwk()["priv"])))
    config = CONFIG.format(keyring=keyring, x25519=d / "x25519.pem", xwing=d / "xwing.pem", vector=d / "vector.pem")
    proxy = Proxy(fieldseal_bin, pki, app.port, d, config)
    yield {"proxy": proxy, "x25519": x, "dir": d}
    proxy.stop()


def published(setup, c) -> list:
    r = c.get(setup["proxy"].url("/.well-known/fieldseal/jwks.json"))
    assert r.status_code == 200, r.text
    return r.json()["keys"]


def pq_keys(setup, c) -> list:
    return [k for k in published(setup, c) if k["kty"] == "AKP"]


def hpke10_compact(jwk: dict, plaintext: bytes, alg="HPKE-10", **claims) -> str:
    """JOSE integrated encryption: HPKE AAD = the encoded protected header, empty info.
    `claims` (iat, jti) go into the protected header."""
    header = b64url(json.dumps({"alg": alg, "kid": jwk["kid"], **claims}).encode())
    enc, ct = pq.seal(unb64url(jwk["pub"]), b"", header.encode(), plaintext)
    return ".".join([header, b64url(enc), "", b64url(ct), ""])


def stats(setup, c) -> dict:
    return c.get(setup["proxy"].url("/api/stats")).json()


def test_the_test_implementation_agrees_with_cryptography_and_the_draft():
    """pq_helpers is only trusted with an AAD once it reproduces both independent references."""
    jwk = vector_jwk()
    seed = unb64url(jwk["priv"])
    assert pq.public_key(seed) == unb64url(jwk["pub"])
    # The AKP thumbprint members are alg, kty, pub (RFC 7638 with draft-ietf-cose-dilithium).
    canonical = json.dumps({"alg": jwk["alg"], "kty": "AKP", "pub": jwk["pub"]}, separators=(",", ":"))
    assert b64url(hashlib.sha256(canonical.encode()).digest()) == jwk["kid"]
    header, enc, iv, ct, tag = fixture("HPKE-10-compact.txt").split(".")
    assert iv == tag == ""
    plain = pq.open_(seed, unb64url(enc), b"", header.encode(), unb64url(ct))
    assert plain.startswith(b"You can trust us")
    # Both directions against cryptography's HPKE (which takes no AAD).
    pk = pq.public_key(seed)
    sealed = pq.CRYPTOGRAPHY_SUITE.encrypt(b"from cryptography", pq.cryptography_public(pk), info=b"ctx")
    assert pq.open_(seed, sealed[:1120], b"ctx", b"", sealed[1120:]) == b"from cryptography"
    enc, ct = pq.seal(pk, b"ctx", b"", b"to cryptography")
    assert pq.CRYPTOGRAPHY_SUITE.decrypt(enc + ct, pq.private_key(seed), info=b"ctx") == b"to cryptography"


def test_the_jwks_publishes_post_quantum_keys_beside_the_classical_one(setup, pki, fieldseal_bin):
    with client(pki) as c:
        keys = published(setup, c)
    assert [(k["kty"], k["alg"]) for k in keys] == [
        ("OKP", "HPKE-X25519-A256GCM"), ("AKP", "HPKE-10"), ("AKP", "HPKE-10")]
    for k in keys[1:]:
        assert set(k) == {"kty", "kid", "use", "alg", "pub"} and k["use"] == "enc"
        assert len(unb64url(k["pub"])) == 1216
        canonical = json.dumps({"alg": "HPKE-10", "kty": "AKP", "pub": k["pub"]}, separators=(",", ":"))
        assert b64url(hashlib.sha256(canonical.encode()).digest()) == k["kid"]
    # fieldseal's key file is the seed pq_helpers expands to the same public key.
    text = (setup["dir"] / "xwing.pem").read_text()
    raw = base64.b64decode("".join(text.splitlines()[1:-1]))
    assert raw[:len(pq.PKCS8_XWING_PREFIX)] == pq.PKCS8_XWING_PREFIX and len(raw) == 54
    assert b64url(pq.public_key(raw[-32:])) == keys[1]["pub"]
    # The draft vector's key is published exactly as the draft prints it.
    assert keys[2]["pub"] == vector_jwk()["pub"] and keys[2]["kid"] == vector_jwk()["kid"]
    # `check` names the KEM and the suite.
    out = subprocess.run([str(fieldseal_bin), "check", "--config", str(setup["dir"] / "fieldseal.yaml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("X-Wing, post-quantum (HPKE, HPKE-10) kid ") == 2


def test_the_drafts_hpke_10_vector_reaches_the_app_opened(setup, pki):
    vector = fixture("HPKE-10-compact.txt")
    with client(pki) as c:
        r = c.put(setup["proxy"].url("/api/users/7"), json={"quote": vector})
        assert r.status_code == 200, r.text
        quote = r.json()["received"]["quote"]
        assert quote.startswith("You can trust us to stick with you") and quote.endswith("We are your friends, Frodo.")


def test_hpke_10_values_open_and_every_alteration_is_refused(setup, pki):
    with client(pki) as c:
        jwk = pq_keys(setup, c)[0]
        r = c.put(setup["proxy"].url("/api/users/7"), json={"ssn": hpke10_compact(jwk, SSN.encode()), "name": "Ada"})
        assert r.status_code == 200, r.text
        assert r.json()["received"] == {"ssn": SSN, "name": "Ada"}

        before = stats(setup, c)["puts"]
        good = hpke10_compact(jwk, SSN.encode())
        header, enc, _, ct, _ = good.split(".")
        other_key = pq_keys(setup, c)[1]
        relabel = lambda h: b64url(json.dumps(h).encode())  # noqa: E731
        no_aad = pq.seal(unb64url(jwk["pub"]), b"", b"", SSN.encode())
        bad = {
            "flipped encapsulated key": flip(good, 1),
            "flipped ciphertext": flip(good, 3),
            "cut encapsulated key": ".".join([header, b64url(unb64url(enc)[:-1]), "", ct, ""]),
            "another key's kid": ".".join([relabel({"alg": "HPKE-10", "kid": other_key["kid"]}), enc, "", ct, ""]),
            "the X25519 suite named": ".".join([relabel({"alg": "HPKE-X25519-A256GCM", "kid": jwk["kid"]}), enc, "", ct, ""]),
            # The header is the AAD: a value sealed without it (as cryptography's HPKE would
            # seal it) does not open.
            "no AAD": ".".join([header, b64url(no_aad[0]), "", b64url(no_aad[1]), ""]),
        }
        for what, value in bad.items():
            r = c.put(setup["proxy"].url("/api/users/7"), json={"ssn": value})
            assert r.status_code == 400, (what, r.text)
            err = r.json()["error"]
            assert err["code"] == "field_rejected" and "decryption_failed" in err["message"], (what, err)
            assert SSN not in r.text
        assert stats(setup, c)["puts"] == before


def test_hpke_10_values_are_single_use_and_fresh_on_max_age_routes(setup, pki):
    """A captured post-quantum value is as replayable as a classical one: the same jti and iat
    rules hold whatever the suite (contract §3), and a value refused as replayed stays refused."""
    with client(pki) as c:
        jwk = pq_keys(setup, c)[0]
        url = setup["proxy"].url("/api/echo")
        now = int(time.time())
        fresh = hpke10_compact(jwk, SSN.encode(), iat=now, jti=str(uuid.uuid4()))
        r = c.post(url, json={"ssn": fresh})
        assert r.status_code == 200 and r.json()["json"] == {"ssn": SSN}, r.text
        refused = {
            "replayed": fresh,
            "stale": hpke10_compact(jwk, SSN.encode(), iat=now - 301, jti=str(uuid.uuid4())),
            "missing_jti": hpke10_compact(jwk, SSN.encode(), iat=now),
            "missing_iat": hpke10_compact(jwk, SSN.encode(), jti=str(uuid.uuid4())),
        }
        for reason, value in refused.items():
            r = c.post(url, json={"ssn": value})
            assert r.status_code == 400 and reason in r.json()["error"]["message"], (reason, r.text)
            assert SSN not in r.text
        # Replay is global: the replayed value does not open on the route without max_age either.
        r = c.put(setup["proxy"].url("/api/users/7"), json={"ssn": fresh})
        assert r.status_code == 400 and "replayed" in r.json()["error"]["message"], r.text


def envelope_with(wrapped: bytes, kid: str, session: bytes, body: bytes) -> dict:
    nonce = os.urandom(12)
    return {"encrypted_session_key": base64.b64encode(wrapped).decode(),
            "encrypted_data": base64.b64encode(nonce + AESGCM(session).encrypt(
                nonce, body, b"fieldseal-envelope-request")).decode(),
            "kid": kid}


def test_envelopes_wrap_their_session_key_with_stock_cryptography_hpke(setup, pki):
    with client(pki) as c:
        keys = published(setup, c)
        x_jwk, pq_jwk = keys[0], keys[1]
        suites = {
            "X-Wing": (hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.SHAKE256, hpke.AEAD.AES_256_GCM),
                       pq.cryptography_public(unb64url(pq_jwk["pub"])), pq_jwk["kid"]),
            "X25519": (hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
                       x25519.X25519PublicKey.from_public_bytes(unb64url(x_jwk["x"])), x_jwk["kid"]),
        }
        for name, (suite, public, kid) in suites.items():
            session = AESGCM.generate_key(bit_length=256)
            wrapped = suite.encrypt(session, public, info=WRAP_INFO)
            doc = envelope_with(wrapped, kid, session, json.dumps({"amount": 42}).encode())
            r = c.post(setup["proxy"].url("/api/secure/echo"), json=doc)
            assert r.status_code == 200, (name, r.text)
            data = base64.b64decode(r.json()["encrypted_data"])
            plain = AESGCM(session).decrypt(data[:12], data[12:], b"fieldseal-envelope-response")
            assert json.loads(plain)["received"] == {"amount": 42}, name

            before = stats(setup, c)["secure"]
            for what, bad_wrap in {
                "another info": suite.encrypt(session, public, info=b"other"),
                "flipped": bytes([wrapped[0] ^ 1]) + wrapped[1:],
                "cut": wrapped[:-1],
            }.items():
                r = c.post(setup["proxy"].url("/api/secure/echo"),
                           json=envelope_with(bad_wrap, kid, session, b"{}"))
                assert r.status_code == 400, (name, what, r.text)
                assert r.json()["error"]["code"] == "envelope_rejected"
                assert "decryption_failed" in r.json()["error"]["message"], (name, what)
            assert stats(setup, c)["secure"] == before


# Files: age's post-quantum recipient type.

AGE_INFO = b"age-encryption.org/mlkem768x25519"
AGE_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


def run(*args, ok=True):
    r = subprocess.run([str(a) for a in args], capture_output=True)
    if ok:
        assert r.returncode == 0, r.stderr.decode()
    return r


def identity_seed(path) -> bytes:
    line = next(l for l in path.read_text().splitlines() if l.startswith("AGE-SECRET-KEY-PQ-1"))
    hrp, seed = bech32_decode(line)
    assert hrp == "age-secret-key-pq-" and len(seed) == 32
    return seed


def test_keygen_writes_an_identity_whose_recipient_python_derives(fieldseal_bin, tmp_path):
    ident = tmp_path / "id.txt"
    printed = run(fieldseal_bin, "file", "keygen", "--pq", "--out", ident).stdout.decode().strip()
    assert ident.stat().st_mode & 0o777 == 0o600
    assert f"# public key: {printed}" in ident.read_text()
    hrp, pk = bech32_decode(printed)
    assert hrp == "age1pq" and pk == pq.public_key(identity_seed(ident))
    # Never overwritten.
    r = run(fieldseal_bin, "file", "keygen", "--pq", "--out", ident, ok=False)
    assert r.returncode != 0 and identity_seed(ident)


def test_fieldseal_pq_files_open_with_cryptography_hpke(fieldseal_bin, tmp_path):
    ident = tmp_path / "id.txt"
    recipient = run(fieldseal_bin, "file", "keygen", "--pq", "--out", ident).stdout.decode().strip()
    seed = identity_seed(ident)
    for size in (0, 100, 64 * 1024, 200_000):
        plain = os.urandom(size)
        (tmp_path / "plain").write_bytes(plain)
        out = tmp_path / f"sealed-{size}.age"
        run(fieldseal_bin, "file", "seal", "--in", tmp_path / "plain", "--out", out, "--to", recipient)

        def unwrap(args, body):
            if args[0] != "mlkem768x25519":
                return None
            assert len(args) == 2 and len(b64(args[1])) == 1120 and len(body) == 32
            return AGE_SUITE.decrypt(b64(args[1]) + body, pq.private_key(seed), info=AGE_INFO)

        assert open_age(out.read_bytes(), unwrap) == plain, size


def age_stanza(file_key: bytes, pk: bytes, info=AGE_INFO):
    """An `mlkem768x25519` stanza made with cryptography's stock HPKE: (args, body)."""
    wrapped = AGE_SUITE.encrypt(file_key, pq.cryptography_public(pk), info=info)
    return ["mlkem768x25519", unb64(wrapped[:1120])], wrapped[1120:]


def test_python_pq_files_open_with_fieldseal_and_alterations_do_not(fieldseal_bin, tmp_path):
    ident = tmp_path / "id.txt"
    run(fieldseal_bin, "file", "keygen", "--pq", "--out", ident)
    pk = pq.public_key(identity_seed(ident))
    plain = os.urandom(150_000)
    file_key = os.urandom(16)
    sealed = seal_age(plain, file_key, [age_stanza(file_key, pk)])
    (tmp_path / "py.age").write_bytes(sealed)
    run(fieldseal_bin, "file", "open", "--in", tmp_path / "py.age", "--out", tmp_path / "py.out", "--identity", ident)
    assert (tmp_path / "py.out").read_bytes() == plain

    # Another recipient's stanza, a wrong info, a flipped payload byte: refused, no output.
    cases = {
        "another recipient": seal_age(plain, file_key, [age_stanza(file_key, pq.public_key(os.urandom(32)))]),
        "another info": seal_age(plain, file_key, [age_stanza(file_key, pk, info=b"age-encryption.org/v1/X25519")]),
        "flipped payload": sealed[:-5] + bytes([sealed[-5] ^ 1]) + sealed[-4:],
    }
    for what, data in cases.items():
        (tmp_path / "bad.age").write_bytes(data)
        out = tmp_path / "bad.out"
        r = run(fieldseal_bin, "file", "open", "--in", tmp_path / "bad.age", "--out", out, "--identity", ident, ok=False)
        assert r.returncode != 0, what
        assert not out.exists(), what


def test_pq_and_classical_recipients_are_not_mixed(fieldseal_bin, tmp_path):
    ident = tmp_path / "id.txt"
    pq_recipient = run(fieldseal_bin, "file", "keygen", "--pq", "--out", ident).stdout.decode().strip()
    classical = run(fieldseal_bin, "file", "keygen", "--out", tmp_path / "c.txt").stdout.decode().strip()
    assert classical.startswith("age1") and not classical.startswith("age1pq1")
    (tmp_path / "plain").write_bytes(b"x")
    r = run(fieldseal_bin, "file", "seal", "--in", tmp_path / "plain", "--out", tmp_path / "m.age",
            "--to", pq_recipient, "--to", classical, ok=False)
    assert r.returncode != 0 and b"postquantum" in r.stderr
    assert not (tmp_path / "m.age").exists()
    # Two post-quantum recipients are fine; each opens.
    other = tmp_path / "id2.txt"
    pq2 = run(fieldseal_bin, "file", "keygen", "--pq", "--out", other).stdout.decode().strip()
    run(fieldseal_bin, "file", "seal", "--in", tmp_path / "plain", "--out", tmp_path / "two.age",
        "--to", pq_recipient, "--to", pq2)
    for i, who in enumerate((ident, other)):
        run(fieldseal_bin, "file", "open", "--in", tmp_path / "two.age", "--out", tmp_path / f"o{i}", "--identity", who)
        assert (tmp_path / f"o{i}").read_bytes() == b"x"
    # The keyring (a symmetric wrap, safe from a quantum computer) stands beside post-quantum
    # recipients: the backup opens with the offline PQ identity and with the proxy's keyring,
    # and the audit log names each recipient's kind. Beside a classical one it still refuses.
    keyring, akey, log = tmp_path / "keyring.json", tmp_path / "audit.key", tmp_path / "audit.log"
    run(fieldseal_bin, "keys", "init", "--out", keyring)
    run(fieldseal_bin, "audit", "keygen", "--out", akey)
    run(fieldseal_bin, "file", "seal", "--in", tmp_path / "plain", "--out", tmp_path / "k.age",
        "--to", pq_recipient, "--keyring", keyring, "--audit-log", log, "--audit-key", akey)
    for i, opener in enumerate((["--identity", ident], ["--keyring", keyring])):
        out = tmp_path / f"k{i}.out"
        run(fieldseal_bin, "file", "open", "--in", tmp_path / "k.age", "--out", out, *opener)
        assert out.read_bytes() == b"x"
    kid = json.loads(keyring.read_text())["primary"]
    event = next(json.loads(line) for line in log.read_text().splitlines() if '"event":"file"' in line)
    assert event["recipients"] == ["mlkem768x25519", f"keyring:{kid}"], event
    r = run(fieldseal_bin, "file", "seal", "--in", tmp_path / "plain", "--out", tmp_path / "k2.age",
            "--to", pq_recipient, "--to", classical, "--keyring", keyring, ok=False)
    assert r.returncode != 0 and not (tmp_path / "k2.age").exists()
    # A recipient with a broken checksum is refused before anything is written.
    broken = pq_recipient[:-1] + ("q" if pq_recipient[-1] != "q" else "p")
    r = run(fieldseal_bin, "file", "seal", "--in", tmp_path / "plain", "--out", tmp_path / "b.age", "--to", broken, ok=False)
    assert r.returncode != 0 and not (tmp_path / "b.age").exists()
    assert bech32_encode("age1pq", bech32_decode(pq_recipient)[1]) == pq_recipient


def test_ml_dsa_65_file_signatures_both_ways_with_cryptography(fieldseal_bin, tmp_path):
    """Post-quantum sender signatures (ML-DSA-65, FIPS 204, pure, empty context): the keys and
    signatures fieldseal makes are read and verified by Python `cryptography`, and a key and a
    signature `cryptography` makes are taken by fieldseal; a changed file or signature, and a
    key of another scheme, are refused with nothing written."""
    from cryptography.hazmat.primitives.asymmetric import mldsa

    ident = tmp_path / "id.txt"
    recipient = run(fieldseal_bin, "file", "keygen", "--pq", "--out", ident).stdout.decode().strip()
    key, pub = tmp_path / "sender.pem", tmp_path / "sender.pub.pem"
    pub.write_bytes(run(fieldseal_bin, "file", "keygen", "--sign", "--pq", "--out", key).stdout)
    assert key.stat().st_mode & 0o777 == 0o600
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    public = serialization.load_pem_public_key(pub.read_bytes())
    assert isinstance(private, mldsa.MLDSA65PrivateKey) and private.public_key() == public
    r = run(fieldseal_bin, "file", "keygen", "--sign", "--pq", "--out", key, ok=False)
    assert r.returncode != 0 and b"refusing to overwrite" in r.stderr

    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(70_000))
    sealed = tmp_path / "s.age"
    run(fieldseal_bin, "file", "seal", "--in", plain, "--out", sealed, "--to", recipient, "--sign", key)
    head, sig = (tmp_path / "s.age.sig").read_text().splitlines()
    fmt, scheme, kid = head.split(" ")
    assert (fmt, scheme) == ("fieldseal-signature/v1", "ml-dsa-65")
    assert kid == b64url(hashlib.sha256(public.public_bytes_raw()).digest())[:16]
    message = lambda path: b"fieldseal-signature/v1\n" + hashlib.sha512(path.read_bytes()).digest()  # noqa: E731
    public.verify(base64.b64decode(sig), message(sealed))  # raises if it does not verify

    # The other way: a key cryptography made signs through fieldseal, and a signature
    # cryptography made over another sealed file verifies and opens with fieldseal.
    py_key = mldsa.MLDSA65PrivateKey.generate()
    write_private(tmp_path / "py.pem", py_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "py.pub.pem").write_bytes(py_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    other = tmp_path / "o.age"
    run(fieldseal_bin, "file", "seal", "--in", plain, "--out", other, "--to", recipient, "--sign", tmp_path / "py.pem")
    run(fieldseal_bin, "file", "verify", "--in", other, "--key", tmp_path / "py.pub.pem")
    py_kid = (tmp_path / "o.age.sig").read_text().split()[2]
    third = tmp_path / "t.age"
    run(fieldseal_bin, "file", "seal", "--in", plain, "--out", third, "--to", recipient)
    (tmp_path / "t.age.sig").write_text(
        f"fieldseal-signature/v1 ml-dsa-65 {py_kid}\n{base64.b64encode(py_key.sign(message(third))).decode()}\n")
    out = tmp_path / "t.out"
    run(fieldseal_bin, "file", "open", "--in", third, "--out", out, "--identity", ident, "--verify", tmp_path / "py.pub.pem")
    assert out.read_bytes() == plain.read_bytes()

    # Refused, with no output: a flipped byte in the sealed file; a flipped bit in the
    # signature; the sender's Ed25519 key for an ML-DSA signature.
    flipped = tmp_path / "f.age"
    data = bytearray(sealed.read_bytes())
    data[-100] ^= 1
    flipped.write_bytes(bytes(data))
    (tmp_path / "f.age.sig").write_text((tmp_path / "s.age.sig").read_text())
    raw_sig = bytearray(base64.b64decode(sig))
    raw_sig[1000] ^= 4
    (tmp_path / "g.age").write_bytes(sealed.read_bytes())
    (tmp_path / "g.age.sig").write_text(f"{head}\n{base64.b64encode(bytes(raw_sig)).decode()}\n")
    ed_pub = tmp_path / "ed.pub.pem"
    ed_pub.write_bytes(run(fieldseal_bin, "file", "keygen", "--sign", "--out", tmp_path / "ed.pem").stdout)
    for what, file, verifier, reason in (("flipped file", flipped, pub, b"does not verify"),
                                         ("flipped signature", tmp_path / "g.age", pub, b"does not verify"),
                                         ("Ed25519 key", sealed, ed_pub, b"ml-dsa-65")):
        out = tmp_path / "bad.out"
        r = run(fieldseal_bin, "file", "open", "--in", file, "--out", out, "--identity", ident,
                "--verify", verifier, ok=False)
        assert r.returncode != 0 and reason in r.stderr, (what, r.stderr)
        assert not out.exists(), what


EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "clients", "python", "send_envelope.py")


@pytest.mark.parametrize("kem", ["xwing", "x25519"])
def test_the_envelope_client_example_round_trips(setup, pki, kem):
    """examples/clients/python/send_envelope.py, as a user runs it: the app receives the body
    in the clear, the sealed answer is opened by the client, and the envelope on the wire
    carries iat and jti and the chosen key's kid (the X-Wing key unless --kem x25519)."""
    import sys

    base = f"https://localhost:{setup['proxy'].listen}"
    common = [sys.executable, EXAMPLE, base, "/api/secure/echo", "--cafile", str(pki.ca), "--kem", kem]
    r = subprocess.run([*common, "--body", '{"amount": 42, "iban": "DE89"}'], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "HTTP 200" in r.stderr, r.stderr
    assert json.loads(r.stdout)["received"] == {"amount": 42, "iban": "DE89"}

    r = subprocess.run([*common, "--body", '{"amount": 1}', "--dry-run"], capture_output=True, text=True, timeout=60)
    envelope = json.loads(r.stdout)
    assert set(envelope) == {"encrypted_session_key", "encrypted_data", "kid", "iat", "jti"}
    with client(pki) as c:
        kinds = {k["kid"]: k["kty"] for k in published(setup, c)}
    assert kinds[envelope["kid"]] == ("AKP" if kem == "xwing" else "OKP")
    # X-Wing's encapsulated key is 1,120 bytes, X25519's 32; then the wrapped 32-byte key + tag.
    assert len(base64.b64decode(envelope["encrypted_session_key"])) == (1120 if kem == "xwing" else 32) + 48
    assert "DE89" not in r.stdout

    # An answer that is not sealed (here: a path that is no envelope route, so the app's own
    # 404) is printed as it came, and the exit code says so.
    r = subprocess.run([*common[:3], "/api/nowhere", *common[4:], "--body", "{}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "HTTP 404" in r.stderr, r.stderr


def test_a_post_quantum_envelope_is_single_use(setup, pki):
    """Replay, for envelopes wrapped to the X-Wing key: the example client's envelope (iat and
    jti bound into its AAD) opens once; the same bytes again are refused as replayed, and a
    changed jti (with the AAD it was sealed under) fails to open, without reaching the app."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("send_envelope", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    base = f"https://localhost:{setup['proxy'].listen}"
    url = setup["proxy"].url("/api/secure/echo")
    with client(pki) as c:
        envelope, session = example.seal_request(*example.fetch_key(c, base, "xwing"), b'{"amount": 7}')
        r = c.post(url, json=envelope)
        assert r.status_code == 200, r.text
        assert json.loads(example.open_response(session, r.json()))["received"] == {"amount": 7}
        before = stats(setup, c)["secure"]
        r = c.post(url, json=envelope)
        assert r.status_code == 400 and r.json()["error"]["code"] == "envelope_rejected", r.text
        assert "replayed" in r.json()["error"]["message"]
        r = c.post(url, json={**envelope, "jti": envelope["jti"] + "x"})
        assert r.status_code == 400 and "decryption_failed" in r.json()["error"]["message"], r.text
        assert stats(setup, c)["secure"] == before
