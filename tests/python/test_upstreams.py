"""fieldseal in front of real, unmodified FastAPI and Flask apps, driven by httpx over HTTP/2
and HTTP/1.1 — each test runs once per app."""
import hashlib
import os
import ssl

import httpx
import pytest
from conftest import https_client as client

SECURITY_HEADERS = {
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def direct(app, path):
    return httpx.get(f"http://127.0.0.1:{app.port}{path}", timeout=10)


@pytest.mark.parametrize("http2", [True, False])
def test_json_response_arrives_unchanged_with_security_headers(proxy, app, pki, http2):
    with client(pki, http2) as c:
        r = c.get(proxy.url("/api/users/7"))
    assert r.status_code == 200
    assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    assert r.json() == direct(app, "/api/users/7").json()
    for name, value in SECURITY_HEADERS.items():
        assert r.headers[name] == value
    assert r.headers["cache-control"] == "no-store"  # route header
    # uvicorn sends `server: uvicorn`, werkzeug `Server: Werkzeug/...`: both removed.
    assert "server" in direct(app, "/api/users/7").headers
    assert "server" not in r.headers
    assert len(r.headers["x-request-id"]) == 36


@pytest.mark.parametrize("http2", [True, False])
def test_post_json_query_and_forwarding_headers_reach_the_app(proxy, pki, http2):
    with client(pki, http2) as c:
        r = c.post(proxy.url("/api/echo?x=1&y=two%20words"), json={"name": "Ada", "n": [1, 2]},
                   headers={"x-request-id": f"py-{http2}", "x-custom": "kept"})
    assert r.status_code == 200
    doc = r.json()
    assert doc["json"] == {"name": "Ada", "n": [1, 2]}
    assert doc["query"] == "x=1&y=two%20words"
    assert doc["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert doc["headers"]["x-forwarded-proto"] == "https"
    assert doc["headers"]["x-forwarded-host"] == f"localhost:{proxy.listen}"
    assert doc["headers"]["host"] == f"localhost:{proxy.listen}"
    assert doc["headers"]["x-request-id"] == f"py-{http2}"
    assert doc["headers"]["x-custom"] == "kept"
    assert r.headers["x-request-id"] == f"py-{http2}"


def test_streamed_upload_and_download_are_byte_exact(proxy, pki):
    payload = os.urandom(1 << 20) * 24  # 24 MiB

    def chunks():
        for i in range(0, len(payload), 256 * 1024):
            yield payload[i:i + 256 * 1024]

    with client(pki, http2=True) as c:
        r = c.post(proxy.url("/api/upload"), content=chunks(),
                   headers={"content-type": "application/octet-stream"})
        assert r.status_code == 200
        assert r.json() == {"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}

        digest, length = hashlib.sha256(), 0
        with c.stream("GET", proxy.url("/api/download?mib=32")) as s:
            assert s.status_code == 200
            for chunk in s.iter_bytes():
                digest.update(chunk)
                length += len(chunk)
    expected = hashlib.sha256(bytes(range(256)) * 4096 * 32).hexdigest()
    assert (length, digest.hexdigest()) == (32 << 20, expected)


def test_app_errors_pass_through_with_headers(proxy, pki):
    with client(pki) as c:
        r = c.get(proxy.url("/api/error"))
    assert r.status_code == 500
    assert r.json() == {"detail": "app failure"}
    assert r.headers["strict-transport-security"] == SECURITY_HEADERS["strict-transport-security"]


def test_tls12_is_refused(proxy, pki):
    ctx = pki.context(maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(httpx.ConnectError):
        httpx.get(proxy.url("/api/users/1"), verify=ctx, timeout=5)
    with httpx.Client(verify=pki.context(minimum_version=ssl.TLSVersion.TLSv1_3), timeout=5) as c:
        assert c.get(proxy.url("/api/users/1")).status_code == 200


@pytest.mark.parametrize("kind", ["rsa-pkcs1", "ec-sec1", "rsa-pkcs8"])
def test_key_formats_rsa_pkcs1_ec_sec1_pkcs8(kind, pki, fieldseal_bin, tmp_path):
    """Keys written by Python `cryptography` in each PEM format the proxy must accept."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    from conftest import Proxy, start_app

    key = rsa.generate_private_key(65537, 2048) if kind.startswith("rsa") else ec.generate_private_key(ec.SECP384R1())
    fmt = serialization.PrivateFormat.PKCS8 if kind.endswith("pkcs8") else serialization.PrivateFormat.TraditionalOpenSSL
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    expected_header = {"rsa-pkcs1": b"BEGIN RSA PRIVATE KEY", "ec-sec1": b"BEGIN EC PRIVATE KEY",
                       "rsa-pkcs8": b"BEGIN PRIVATE KEY"}[kind]
    assert expected_header in pem
    (tmp_path / "k.pem").write_bytes(pem)
    (tmp_path / "k.pem").chmod(0o600)
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    class OnePki:
        cert, key = tmp_path / "c.pem", tmp_path / "k.pem"

    app = start_app("fastapi")
    proxy = Proxy(fieldseal_bin, OnePki, app.port, tmp_path)
    try:
        ctx = ssl.create_default_context(cafile=str(tmp_path / "c.pem"))
        with httpx.Client(http2=True, verify=ctx, timeout=10) as c:
            r = c.get(proxy.url("/api/users/3"))
        assert r.status_code == 200 and r.json()["id"] == 3
    finally:
        proxy.stop()
        app.proc.terminate()
        app.proc.wait(timeout=10)
