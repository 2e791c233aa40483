"""Post-quantum HPKE for the tests, built from Python `cryptography` primitives (ML-KEM-768,
X25519, SHA3-256, SHAKE256, AES-256-GCM) by the specifications, so that it checks fieldseal
rather than repeats it:

- X-Wing (draft-connolly-cfrg-xwing-kem; HPKE KEM `0x647a`, draft-ietf-hpke-pq): the 32-byte
  seed expands with SHAKE256 to an ML-KEM-768 seed and an X25519 key; the shared secret is
  SHA3-256(ss_M ‖ ss_X ‖ ct_X ‖ pk_X ‖ "\\./" "/^\\").
- HPKE base mode with the one-stage SHAKE256 KDF (draft-ietf-hpke-pq): one LabeledDerive gives
  the AEAD key and base nonce.

`cryptography`'s own HPKE (`hpke.Suite`) has the same KEM and KDF but no AAD parameter, which
the JOSE `HPKE-10` form needs (the AAD is the protected header); the tests check this module
against `hpke.Suite` with an empty AAD, and against the draft's test vector, before trusting it
with one."""

import hashlib

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

XWING_LABEL = b"\\./" + b"/^\\"
MLKEM_PUBLIC, MLKEM_CT = 1184, 1088
# "HPKE" ‖ KEM 0x647a (X-Wing) ‖ KDF 0x0011 (SHAKE256) ‖ AEAD 0x0002 (AES-256-GCM)
SUITE_ID = b"HPKE" + bytes.fromhex("647a" "0011" "0002")
# X-Wing with SHAKE256 and AES-256-GCM, as cryptography names them.
CRYPTOGRAPHY_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.SHAKE256, hpke.AEAD.AES_256_GCM)

# PKCS#8 of an X-Wing seed: version 0, id-XWing (1.3.6.1.4.1.62253.25722), the seed.
PKCS8_XWING_PREFIX = bytes.fromhex("3034020100300d060b2b0601040183e62d81c87a0420")


def expand(seed: bytes):
    h = hashlib.shake_256(seed).digest(96)
    return mlkem.MLKEM768PrivateKey.from_seed_bytes(h[:64]), x25519.X25519PrivateKey.from_private_bytes(h[64:])


def public_key(seed: bytes) -> bytes:
    m, x = expand(seed)
    return m.public_key().public_bytes_raw() + x.public_key().public_bytes_raw()


def private_key(seed: bytes) -> hpke.MLKEM768X25519PrivateKey:
    """The seed's key as cryptography's HPKE wants it."""
    return hpke.MLKEM768X25519PrivateKey(*expand(seed))


def cryptography_public(pk: bytes) -> hpke.MLKEM768X25519PublicKey:
    return hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(pk[:MLKEM_PUBLIC]),
        x25519.X25519PublicKey.from_public_bytes(pk[MLKEM_PUBLIC:]))


def pem(seed: bytes) -> bytes:
    import base64
    body = base64.b64encode(PKCS8_XWING_PREFIX + seed).decode()
    lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN PRIVATE KEY-----\n{lines}\n-----END PRIVATE KEY-----\n".encode()


def _combine(ss_m, ss_x, ct_x, pk_x):
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + XWING_LABEL).digest()


def encapsulate(pk: bytes):
    ss_m, ct_m = mlkem.MLKEM768PublicKey.from_public_bytes(pk[:MLKEM_PUBLIC]).encapsulate()
    eph = x25519.X25519PrivateKey.generate()
    ct_x, pk_x = eph.public_key().public_bytes_raw(), pk[MLKEM_PUBLIC:]
    ss_x = eph.exchange(x25519.X25519PublicKey.from_public_bytes(pk_x))
    return _combine(ss_m, ss_x, ct_x, pk_x), ct_m + ct_x


def decapsulate(seed: bytes, enc: bytes) -> bytes:
    m, x = expand(seed)
    ct_m, ct_x = enc[:MLKEM_CT], enc[MLKEM_CT:]
    ss_x = x.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
    return _combine(m.decapsulate(ct_m), ss_x, ct_x, x.public_key().public_bytes_raw())


def _len16(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big")


def _key_schedule(shared: bytes, info: bytes):
    """Base mode, no PSK: LabeledDerive(secrets, "secret", context, Nk + Nn + Nh)."""
    secrets = _len16(b"") + _len16(shared) + shared
    context = b"\x00" + _len16(b"") + _len16(info) + info
    n = 32 + 12 + 64
    out = hashlib.shake_256(secrets + b"HPKE-v1" + SUITE_ID + _len16(b"secret") + b"secret"
                            + n.to_bytes(2, "big") + context).digest(n)
    return out[:32], out[32:44]


def seal(pk: bytes, info: bytes, aad: bytes, plaintext: bytes):
    """HPKE-10 single-shot seal: (encapsulated key, ciphertext with tag)."""
    shared, enc = encapsulate(pk)
    key, nonce = _key_schedule(shared, info)
    return enc, AESGCM(key).encrypt(nonce, plaintext, aad)


def open_(seed: bytes, enc: bytes, info: bytes, aad: bytes, ciphertext: bytes) -> bytes:
    key, nonce = _key_schedule(decapsulate(seed, enc), info)
    return AESGCM(key).decrypt(nonce, ciphertext, aad)
