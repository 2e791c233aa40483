"""Small JOSE helpers shared by the client-encryption tests: unpadded base64url both ways, one
flipped bit in a segment of a compact value (to tamper with it), and an RSA JWE made by jwcrypto."""
import base64
import json

from jwcrypto import jwe, jwk
from jwcrypto.common import json_encode


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def flip(compact: str, segment: int) -> str:
    """`compact` with one bit flipped in the middle of segment `segment` (0-based)."""
    parts = compact.split(".")
    raw = bytearray(unb64url(parts[segment]))
    raw[len(raw) // 2] ^= 1
    parts[segment] = b64url(bytes(raw))
    return ".".join(parts)


def rsa_jwe(key: jwk.JWK, plaintext, **header) -> str:
    """A JWE compact value (RSA-OAEP-256 + A256GCM) as any jwcrypto user would make it; header
    members set to None are left out, so tests can drop or override any of them."""
    protected = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": key["kid"], **header}
    protected = {k: v for k, v in protected.items() if v is not None}
    payload = plaintext if isinstance(plaintext, str) else json.dumps(plaintext)
    token = jwe.JWE(payload.encode(), protected=json_encode(protected))
    token.add_recipient(key)
    return token.serialize(compact=True)
