"""`fieldseal rsa generate` checked with independent implementations: Python `cryptography`
reads the file as an unencrypted PKCS#8 RSA key of the requested size, and jwcrypto's RFC 7638
thumbprint of it equals the kid the CLI printed (the kid the JWKS will publish)."""
import base64
import os
import re
import stat
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

jwk = pytest.importorskip("jwcrypto.jwk")


def generate(binary, path, bits):
    return subprocess.run(
        [str(binary), "rsa", "generate", "--out", str(path), "--bits", str(bits)],
        capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def generated(fieldseal_bin, tmp_path_factory):
    path = tmp_path_factory.mktemp("rsa") / "rsa.pem"
    proc = generate(fieldseal_bin, path, 2048)
    assert proc.returncode == 0, proc.stderr
    return path, proc.stdout


def test_file_is_unencrypted_pkcs8_rsa_2048_mode_0600(generated):
    path, _ = generated
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = path.read_bytes()
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    key = serialization.load_pem_private_key(data, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    assert key.public_key().public_numbers().e == 65537
    # The file's DER is exactly the canonical PKCS#8 (PrivateKeyInfo) encoding of the key.
    body = b"".join(line for line in data.splitlines() if not line.startswith(b"-----"))
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    assert base64.b64decode(body) == der

def test_printed_kid_is_the_rfc7638_thumbprint(generated):
    path, stdout = generated
    match = re.fullmatch(r"wrote (.+) \(RSA-2048, kid ([A-Za-z0-9_-]{43})\)\n", stdout)
    assert match, stdout
    assert match.group(1) == str(path)
    key = jwk.JWK.from_pem(path.read_bytes())
    assert key.thumbprint() == match.group(2)
    # The public key alone gives the same thumbprint (clients only ever see that).
    public = jwk.JWK.from_json(key.export_public())
    assert public.thumbprint() == match.group(2)


def test_refuses_1024_bits_and_overwrite(fieldseal_bin, generated, tmp_path):
    path, _ = generated
    before = path.read_bytes()
    proc = generate(fieldseal_bin, path, 2048)
    assert proc.returncode == 1 and "refusing to overwrite" in proc.stderr
    assert path.read_bytes() == before
    small = tmp_path / "small.pem"
    proc = generate(fieldseal_bin, small, 1024)
    assert proc.returncode == 1, proc.stdout
    assert not small.exists()
