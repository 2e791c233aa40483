"""An independent age v1 implementation for the file tests, written from the age specification
(c2sp.org/age) with Python `cryptography` alone: the header (stanzas, HMAC-SHA256 MAC under a
key HKDF'd from the file key), the STREAM payload (ChaCha20-Poly1305 over 64 KiB chunks, an
11-byte counter and a last-chunk flag in the nonce), and Bech32 (BIP 173) for age's key strings.

Stanza bodies are wrapped and unwrapped by the caller, so the same code checks fieldseal's
`fieldseal-keyring` stanza and age's post-quantum `mlkem768x25519` one."""

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CHUNK = 64 * 1024
TAG = 16


def hkdf(ikm: bytes, salt, info: bytes, n: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=n, salt=salt, info=info).derive(ikm)


def b64(text: str) -> bytes:
    """age's base64: standard alphabet, no padding."""
    return base64.b64decode(text + "=" * (-len(text) % 4))


def unb64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def open_age(file: bytes, unwrap) -> bytes:
    """Opens an age v1 file: `unwrap(args, body)` returns the 16-byte file key for a stanza it
    can open, else None. Checks the header MAC, then every payload chunk."""
    lines, at = [], 0
    while True:
        end = file.index(b"\n", at)
        lines.append(file[at:end].decode())
        at = end + 1
        if lines[-1].startswith("--- "):
            break
    assert lines[0] == "age-encryption.org/v1"
    file_key, i = None, 1
    while not lines[i].startswith("---"):
        args = lines[i][3:].split(" ")
        body, i = "", i + 1
        while True:
            body += lines[i]
            i += 1
            if len(lines[i - 1]) < 64:
                break
        file_key = file_key or unwrap(args, b64(body))
    assert file_key is not None, "no stanza opens"
    header = file[:file.index(b"\n--- ") + 4]
    mac = hmac.new(hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
    assert hmac.compare_digest(mac, b64(lines[-1][4:])), "header MAC"
    nonce, payload = file[at:at + 16], file[at + 16:]
    aead = ChaCha20Poly1305(hkdf(file_key, nonce, b"payload"))
    out, counter = b"", 0
    chunk = CHUNK + TAG
    for start in range(0, max(len(payload), 1), chunk):
        piece = payload[start:start + chunk]
        last = start + chunk >= len(payload)
        out += aead.decrypt(counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00"), piece, None)
        counter += 1
    return out


def seal_age(plain: bytes, file_key: bytes, stanzas) -> bytes:
    """An age v1 file of `plain` under `file_key`, with `stanzas` as (args, body) pairs."""
    header = b"age-encryption.org/v1\n"
    for args, body in stanzas:
        header += ("-> " + " ".join(args) + "\n").encode()
        text = unb64(body)
        for k in range(0, len(text) + 1, 64):  # a full last line is followed by an empty one
            header += (text[k:k + 64] + "\n").encode()
    header += b"---"
    mac = hmac.new(hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
    out = header + b" " + unb64(mac).encode() + b"\n"
    nonce = os.urandom(16)
    aead = ChaCha20Poly1305(hkdf(file_key, nonce, b"payload"))
    out += nonce
    pieces = [plain[k:k + CHUNK] for k in range(0, len(plain), CHUNK)] or [b""]
    for n, piece in enumerate(pieces):
        last = n == len(pieces) - 1
        out += aead.encrypt(n.to_bytes(11, "big") + (b"\x01" if last else b"\x00"), piece, None)
    return out


# Bech32 (BIP 173), without its 90-character limit, as age uses it.
_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _polymod(values):
    gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if ((top >> i) & 1) else 0
    return chk


def _hrp_expand(hrp):
    return [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp]


def _convert(data, frm, to, pad):
    acc, bits, out, maxv = 0, 0, [], (1 << to) - 1
    for value in data:
        acc = (acc << frm) | value
        bits += frm
        while bits >= to:
            bits -= to
            out.append((acc >> bits) & maxv)
    if pad and bits:
        out.append((acc << (to - bits)) & maxv)
    elif not pad:
        assert bits < frm and not ((acc << (to - bits)) & maxv), "bad padding"
    return out


def bech32_decode(text: str):
    """(hrp, bytes) of a Bech32 string; raises on a bad checksum."""
    text = text.lower()
    pos = text.rindex("1")
    hrp, data = text[:pos], [_CHARSET.index(c) for c in text[pos + 1:]]
    assert _polymod(_hrp_expand(hrp) + data) == 1, "bech32 checksum"
    return hrp, bytes(_convert(data[:-6], 5, 8, False))


def bech32_encode(hrp: str, data: bytes) -> str:
    values = _convert(data, 8, 5, True)
    poly = _polymod(_hrp_expand(hrp) + values + [0] * 6) ^ 1
    checksum = [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[v] for v in values + checksum)
