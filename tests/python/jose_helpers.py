"""Small JOSE helpers shared by the client-encryption tests: unpadded base64url both ways, and
one flipped bit in a segment of a compact value (to tamper with it)."""
import base64


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
