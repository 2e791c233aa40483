"""A real FastAPI app that is both an identity provider and the upstream behind fieldseal, for
the caller-dependent views (the `identity` module).

As an issuer it makes an RSA-2048 and an Ed25519 signing key at startup (pyca/cryptography),
publishes them at GET /.well-known/jwks.json (each with `kid`, `alg`, `use`), and signs tokens
with PyJWT at POST /login. If IDENTITY_JWKS_OUT names a file, the same JWKS is written there
at startup, so the proxy can be pointed at it with `jwks_file` as well as `jwks_url`.

As an upstream it serves profiles with sensitive fields and does NO authorization at all:
deciding who sees what is the proxy's job.

    cd tests/apps && python -m uvicorn identity_app:app --host 127.0.0.1 --port N
"""
import json
import os
import time
from typing import List, Literal, Optional, Union

import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from fastapi import FastAPI
from jwcrypto import jwk
from pydantic import BaseModel

ISSUER = "https://issuer.test"
AUDIENCE = "profiles-api"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def public_jwk(private_key, alg: str) -> dict:
    """The public half as a JWK, its `kid` the RFC 7638 thumbprint (stable for the key)."""
    key = jwk.JWK.from_pyca(private_key.public_key())
    public = key.export_public(as_dict=True)
    public.update({"kid": key.thumbprint(), "alg": alg, "use": "sig"})
    return public


SIGNERS = {
    "RS256": (RSA_KEY, public_jwk(RSA_KEY, "RS256")),
    "EdDSA": (ED_KEY, public_jwk(ED_KEY, "EdDSA")),
}
JWKS = {"keys": [public for _, public in SIGNERS.values()]}


def write_jwks_file(path: str) -> None:
    # Written whole and renamed, so a reader never sees half a file.
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(JWKS, f)
    os.replace(tmp, path)


if os.environ.get("IDENTITY_JWKS_OUT"):
    write_jwks_file(os.environ["IDENTITY_JWKS_OUT"])

app = FastAPI(title="fieldseal identity test app")


@app.get("/.well-known/jwks.json")
async def jwks():
    return JWKS


class Login(BaseModel):
    user: str
    role: str = "user"
    scope: str = ""
    alg: Literal["RS256", "EdDSA"] = "RS256"
    # Seconds until `exp`; negative makes an already expired token.
    ttl: int = 300
    aud: Optional[Union[str, List[str]]] = None
    iss: Optional[str] = None


@app.post("/login")
async def login(body: Login):
    now = int(time.time())
    private_key, public = SIGNERS[body.alg]
    claims = {
        "iss": body.iss if body.iss is not None else ISSUER,
        "aud": body.aud if body.aud is not None else AUDIENCE,
        "sub": body.user,
        "role": body.role,
        "scope": body.scope,
        "iat": now,
        "nbf": now,
        "exp": now + body.ttl,
    }
    token = jwt.encode(claims, private_key, algorithm=body.alg, headers={"kid": public["kid"]})
    return {"token": token}


def profile(profile_id: str) -> dict:
    return {
        "id": profile_id,
        "name": "Ada",
        "bio": f"bio of {profile_id}",
        "ssn": "078-05-1120",
        "email": "ada@example.com",
        "salary": 123456,
    }


@app.get("/api/profiles")
async def profiles():
    return [profile(i) for i in ("1", "2", "3")]


@app.get("/api/profiles/{profile_id}")
async def get_profile(profile_id: str):
    return profile(profile_id)
