#!/usr/bin/env python3
"""Encrypt JSON fields for fieldseal on the client and send them through the proxy.

Each value becomes a standard JWE compact value (RSA-OAEP-256 + A256GCM) made by jwcrypto
with the proxy's public key from its JWKS; the proxy opens it and the app behind it receives
the plaintext. The header carries `iat` and a random `jti`, which routes with `max_age` need.

    pip install jwcrypto httpx
    python encrypt_field.py https://localhost:8443 /api/users/7 \\
        --cafile ca.pem --body '{"name": "Ada"}' \\
        --field ssn=123-45-6789 --json 'profile={"tier": 2, "tags": ["a"]}'

  --field NAME=TEXT   encrypt TEXT as a string (the app receives "TEXT")
  --json NAME=JSON    encrypt a JSON value (header `cty: json`; the app receives the value)
  NAME may be dotted (`card.number`) to place the value in a nested object.

Prints the answer's body on stdout; exits 0 for a 2xx answer, 1 otherwise.
"""
import argparse
import json
import ssl
import sys
import time
import uuid

import httpx
from jwcrypto import jwe, jwk
from jwcrypto.common import json_encode

JWKS_PATH = "/.well-known/fieldseal/jwks.json"


def fetch_key(client: httpx.Client, base_url: str) -> jwk.JWK:
    """The proxy's first RSA-OAEP-256 public key (it lists its current key first)."""
    r = client.get(base_url + JWKS_PATH)
    r.raise_for_status()
    for k in r.json()["keys"]:
        if k.get("kty") == "RSA" and k.get("alg") == "RSA-OAEP-256" and k.get("use", "enc") == "enc":
            return jwk.JWK(**k)
    raise SystemExit(f"{base_url}{JWKS_PATH} has no RSA-OAEP-256 key")


def encrypt_value(key: jwk.JWK, value, as_json: bool) -> str:
    """One field value as a JWE compact string for the proxy key `key`."""
    header = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": key["kid"],
              "iat": int(time.time()), "jti": str(uuid.uuid4())}
    if as_json:
        header["cty"] = "json"
        plaintext = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        plaintext = value
    token = jwe.JWE(plaintext.encode("utf-8"), protected=json_encode(header))
    token.add_recipient(key)
    return token.serialize(compact=True)


def put_at(body: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = body
    for name in parents:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise SystemExit(f"{dotted}: {name} is not an object in the body")
    node[last] = value


def assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url", help="the proxy, e.g. https://localhost:8443")
    parser.add_argument("path", help="where to send the body, e.g. /api/users/7")
    parser.add_argument("--method", default="PUT", choices=["PUT", "POST", "PATCH"])
    parser.add_argument("--body", default="{}", help="a JSON object with the other (plain) fields")
    parser.add_argument("--field", action="append", default=[], type=assignment, metavar="NAME=TEXT",
                        help="a string value to encrypt (repeatable)")
    parser.add_argument("--json", action="append", default=[], type=assignment, metavar="NAME=JSON",
                        help="a JSON value to encrypt with cty: json (repeatable)")
    parser.add_argument("--cafile", help="PEM file of the CA that signed the proxy's certificate")
    parser.add_argument("--insecure", action="store_true", help="do not verify the certificate (testing only)")
    parser.add_argument("--dry-run", action="store_true", help="print the body instead of sending it")
    args = parser.parse_args(argv)

    body = json.loads(args.body)
    if not isinstance(body, dict):
        parser.error("--body must be a JSON object")
    if not args.field and not args.json:
        parser.error("nothing to encrypt: give --field or --json")
    base_url = args.base_url.rstrip("/")
    if args.insecure:
        verify = False
    else:
        verify = ssl.create_default_context(cafile=args.cafile)  # system CAs when no --cafile

    with httpx.Client(verify=verify, timeout=30) as client:
        key = fetch_key(client, base_url)
        for name, text in args.field:
            put_at(body, name, encrypt_value(key, text, as_json=False))
        for name, text in args.json:
            put_at(body, name, encrypt_value(key, json.loads(text), as_json=True))
        if args.dry_run:
            print(json.dumps(body, indent=2))
            return 0
        r = client.request(args.method, base_url + args.path, json=body)
    print(f"HTTP {r.status_code}", file=sys.stderr)
    print(r.text)
    return 0 if r.is_success else 1


if __name__ == "__main__":
    sys.exit(main())
