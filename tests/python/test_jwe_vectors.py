"""JWE interoperability vectors (contract §3) checked with an independent implementation.

`src/crypto/rsa_keys.rs` commits a fixed RSA-2048 test key and `src/crypto/jwe.rs` two JWE
compact values made by
Python jwcrypto, so its unit test checks interoperability without Python. This file checks
those constants from the other side: jwcrypto opens them with the committed key to exactly
the values the Rust test expects, so the vectors are genuine jwcrypto output and not
something only our own code reads. `python tests/python/test_jwe_vectors.py` regenerates
them (new key, new vectors) for pasting into those files.
"""
import json
import re
from pathlib import Path

import pytest

jwcrypto = pytest.importorskip("jwcrypto")
from jwcrypto import jwe, jwk  # noqa: E402

CRYPTO = Path(__file__).resolve().parents[2] / "src" / "crypto"
JWE_RS = CRYPTO / "jwe.rs"
TEST_KEY = Path(__file__).resolve().parents[1] / "keys" / "rsa-2048-test-only.pem"


def rust_constant(source: str, name: str) -> str:
    match = re.search(rf'const {name}: &str =\s*r?"(.*?)";', source, re.S)
    assert match, f"{name} not found"
    return match.group(1)


@pytest.fixture(scope="module")
def committed():
    source = JWE_RS.read_text()
    key = jwk.JWK.from_pem(TEST_KEY.read_bytes())
    return key, rust_constant(source, "JWCRYPTO_STRING"), rust_constant(source, "JWCRYPTO_JSON")


def open_with(key, compact: str):
    token = jwe.JWE()
    token.deserialize(compact, key=key)
    return token.jose_header, token.payload


def test_string_vector_opens_with_jwcrypto(committed):
    key, string_vector, _ = committed
    header, payload = open_with(key, string_vector)
    assert header == {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "rsa1"}
    assert payload == b"123-45-6789"


def test_json_vector_opens_with_jwcrypto(committed):
    key, _, json_vector = committed
    header, payload = open_with(key, json_vector)
    assert header["cty"] == "json"
    assert header["iat"] == 1795392000
    assert header["jti"] == "b7e6c1a4-3f7e-4e55-9a53-0d5f1c7b2e90"
    assert json.loads(payload) == {"card": "4111 1111 1111 1111", "exp": [12, 2030]}


def test_jwcrypto_refuses_a_tampered_vector(committed):
    # The same tamper the Rust test expects `decryption_failed` for.
    key, string_vector, _ = committed
    parts = string_vector.split(".")
    parts[4] = ("B" if parts[4][0] != "B" else "C") + parts[4][1:]
    with pytest.raises(Exception):
        open_with(key, ".".join(parts))


def regenerate() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = jwk.JWK.from_json(jwk.JWK.from_pem(pem.encode()).export_public())

    def make(payload: str, header: dict) -> str:
        token = jwe.JWE(payload.encode(), json.dumps(header))
        token.add_recipient(public)
        return token.serialize(compact=True)

    base = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "rsa1"}
    print(pem)
    print(make("123-45-6789", base))
    print(make(
        '{"card":"4111 1111 1111 1111","exp":[12,2030]}',
        {**base, "cty": "json", "iat": 1795392000, "jti": "b7e6c1a4-3f7e-4e55-9a53-0d5f1c7b2e90"},
    ))


if __name__ == "__main__":
    regenerate()
