#!/usr/bin/env python3
"""Send a whole JSON body to fieldseal as an envelope, post-quantum by default, and read the
sealed answer.

The body is encrypted under a fresh AES-256-GCM session key; the session key is wrapped to
one of the proxy's published keys with nothing but Python `cryptography`'s own HPKE (≥ 47):
the post-quantum X-Wing key (ML-KEM-768 + X25519, JWK `alg` HPKE-10) unless `--kem x25519`.
The envelope carries `iat` and a random `jti`, bound into its AAD, which `max_age` routes
require. The app behind the proxy receives the plaintext JSON; its answer comes back sealed
under the same session key, and is opened here.

    pip install cryptography httpx
    python send_envelope.py https://localhost:8443 /api/secure/transfer \\
        --cafile ca.pem --body '{"amount": 42, "iban": "DE89 3704 0044 0532 0130 00"}'

Prints the app's answer (opened) on stdout and `HTTP <status>` on stderr; exits 0 for a 2xx
answer, 1 otherwise.
"""
import argparse
import base64
import json
import os
import ssl
import sys
import time
import uuid

import httpx
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

JWKS_PATH = "/.well-known/fieldseal/jwks.json"
WRAP_INFO = b"fieldseal-envelope-session-key/v1"
REQUEST_AAD = b"fieldseal-envelope-request"
RESPONSE_AAD = b"fieldseal-envelope-response"
MLKEM768_PUBLIC = 1184  # bytes of the ML-KEM-768 half of an X-Wing public key

# The HPKE suite each published key's `alg` names (docs/client-encryption.md).
SUITES = {
    "HPKE-10": hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.SHAKE256, hpke.AEAD.AES_256_GCM),
    "HPKE-X25519-A256GCM": hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
}


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fetch_key(client: httpx.Client, base_url: str, kem: str):
    """(kid, suite, public key) of the proxy's first key of the chosen kind (current first)."""
    r = client.get(base_url + JWKS_PATH)
    r.raise_for_status()
    for k in r.json()["keys"]:
        if kem == "xwing" and k.get("kty") == "AKP" and k.get("alg") == "HPKE-10":
            pub = unb64url(k["pub"])
            public = hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(pub[:MLKEM768_PUBLIC]),
                x25519.X25519PublicKey.from_public_bytes(pub[MLKEM768_PUBLIC:]))
            return k["kid"], SUITES["HPKE-10"], public
        if kem == "x25519" and k.get("kty") == "OKP" and k.get("crv") == "X25519":
            public = x25519.X25519PublicKey.from_public_bytes(unb64url(k["x"]))
            return k["kid"], SUITES["HPKE-X25519-A256GCM"], public
    raise SystemExit(f"{base_url}{JWKS_PATH} has no {kem} key")


def seal_request(kid, suite, public, body: bytes):
    """The envelope for `body`, and the session key its answer will be sealed under."""
    session = AESGCM.generate_key(bit_length=256)
    iat, jti = int(time.time()), str(uuid.uuid4())
    nonce = os.urandom(12)
    aad = REQUEST_AAD + f".{iat}.{jti}".encode()
    envelope = {
        "encrypted_session_key": base64.b64encode(suite.encrypt(session, public, info=WRAP_INFO)).decode(),
        "encrypted_data": base64.b64encode(nonce + AESGCM(session).encrypt(nonce, body, aad)).decode(),
        "kid": kid,
        "iat": iat,
        "jti": jti,
    }
    return envelope, session


def open_response(session: bytes, answer: dict) -> bytes:
    data = base64.b64decode(answer["encrypted_data"])
    return AESGCM(session).decrypt(data[:12], data[12:], RESPONSE_AAD)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url", help="the proxy, e.g. https://localhost:8443")
    parser.add_argument("path", help="an envelope route, e.g. /api/secure/transfer")
    parser.add_argument("--body", required=True, help="the JSON body to send")
    parser.add_argument("--kem", choices=["xwing", "x25519"], default="xwing",
                        help="which published key wraps the session key (default: post-quantum X-Wing)")
    parser.add_argument("--cafile", help="PEM file of the CA that signed the proxy's certificate")
    parser.add_argument("--insecure", action="store_true", help="do not verify the certificate (testing only)")
    parser.add_argument("--dry-run", action="store_true", help="print the envelope instead of sending it")
    args = parser.parse_args(argv)

    body = json.dumps(json.loads(args.body), separators=(",", ":")).encode()
    base_url = args.base_url.rstrip("/")
    verify = False if args.insecure else ssl.create_default_context(cafile=args.cafile)
    with httpx.Client(verify=verify, timeout=30) as client:
        envelope, session = seal_request(*fetch_key(client, base_url, args.kem), body)
        if args.dry_run:
            print(json.dumps(envelope, indent=2))
            return 0
        r = client.post(base_url + args.path, json=envelope)
    print(f"HTTP {r.status_code}", file=sys.stderr)
    try:
        print(open_response(session, r.json()).decode())
    except (ValueError, KeyError, TypeError):
        print(r.text)  # the proxy's own error (JSON, in the clear: it holds no value)
    return 0 if r.is_success else 1


if __name__ == "__main__":
    sys.exit(main())
