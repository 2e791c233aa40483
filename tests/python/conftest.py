"""Fixtures for the Python integration tests: a test PKI made with `cryptography`, real
FastAPI (uvicorn) and Flask (werkzeug) upstreams, and the real fieldseal binary in front."""
import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from raw_http import tls_connect

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "tests" / "apps"

# A keyring passphrase/KEK exported by the developer's shell would make every plain test keyring
# an error (fieldseal refuses a plain keyring wherever one is set): the fieldseal processes the
# tests start never inherit them; tests that need one pass it explicitly.
for _kek_var in ("FIELDSEAL_KEYRING_PASSPHRASE", "FIELDSEAL_KEYRING_KEK",
                 "FIELDSEAL_KEYRING_KEK_COMMAND", "FIELDSEAL_NEW_KEYRING_PASSPHRASE",
                 "FIELDSEAL_NEW_KEYRING_KEK", "FIELDSEAL_NEW_KEYRING_KEK_COMMAND"):
    os.environ.pop(_kek_var, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not open port {port}")


def tls_socket(pki: "Pki", port: int, alpn: str, timeout: float) -> ssl.SSLSocket:
    """A raw TLS connection to the proxy that negotiated `alpn` (for hand-written HTTP/1.1
    bytes or HTTP/2 frames)."""
    return tls_connect(port, pki.context(), alpn, timeout)


class Pki:
    """A CA and a localhost server certificate signed by it."""

    def __init__(self, directory: Path):
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fieldseal pytest CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        self.ca = directory / "ca.pem"
        self.cert = directory / "cert.pem"
        self.key = directory / "key.pem"
        self.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        self.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        self.key.chmod(0o600)

    def context(self, **kw) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        for k, v in kw.items():
            setattr(ctx, k, v)
        return ctx


def https_client(pki: Pki, http2: bool = True, timeout: float = 30) -> httpx.Client:
    """An httpx client (HTTP/2 unless `http2=False`) that trusts the test CA."""
    return httpx.Client(http2=http2, verify=pki.context(), timeout=timeout)


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def fieldseal_bin() -> Path:
    path = Path(os.environ.get("FIELDSEAL_BIN", ROOT / "target" / "debug" / "fieldseal"))
    if not path.exists():
        raise RuntimeError(f"{path} not found: build it first (cargo build)")
    return path


class App:
    def __init__(self, kind: str, port: int, proc: subprocess.Popen):
        self.kind, self.port, self.proc = kind, port, proc


def start_app(kind: str) -> App:
    port = free_port()
    if kind == "fastapi":
        cmd = [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    elif kind == "flask":
        cmd = [sys.executable, "-m", "flask", "--app", "flask_app", "run", "--host", "127.0.0.1",
               "--port", str(port)]
    else:
        raise ValueError(kind)
    proc = subprocess.Popen(cmd, cwd=APPS, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_port(port, proc, kind)
    return App(kind, port, proc)


@pytest.fixture(scope="module", params=["fastapi", "flask"])
def app(request):
    a = start_app(request.param)
    yield a
    a.proc.terminate()
    a.proc.wait(timeout=10)


class Proxy:
    """`fieldseal run` with a generated config; ports read from its `fieldseal ready` log line."""

    def __init__(self, binary: Path, pki: Pki, upstream_port: int, directory: Path, extra: str = "",
                 listen_port: int = 0):
        config = directory / "fieldseal.yaml"
        config.write_text(
            f'listen: "127.0.0.1:{listen_port}"\nupstream: "http://127.0.0.1:{upstream_port}"\nadmin: "127.0.0.1:0"\n'
            f'tls:\n  cert: "{pki.cert}"\n  key: "{pki.key}"\n{extra}')
        env = dict(os.environ, FIELDSEAL_LOG_FORMAT="json", FIELDSEAL_LOG="info")
        self.proc = subprocess.Popen([str(binary), "run", "--config", str(config)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.logs: list[str] = []
        ready = threading.Event()
        self.listen = self.admin = None

        def pump():
            for line in self.proc.stderr:
                self.logs.append(line)
                if "fieldseal ready" in line:
                    doc = json.loads(line)
                    self.listen = int(doc["listen"].rsplit(":", 1)[1])
                    self.admin = int(doc["admin"].rsplit(":", 1)[1])
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(20):
            self.proc.kill()
            raise RuntimeError("fieldseal did not start:\n" + "".join(self.logs))

    def url(self, path: str) -> str:
        return f"https://localhost:{self.listen}{path}"

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def proxy(app, pki, fieldseal_bin, tmp_path_factory):
    p = Proxy(fieldseal_bin, pki, app.port, tmp_path_factory.mktemp("proxy"),
              'routes:\n  - name: user\n    match: { path: "/api/users/{id}", methods: [GET] }\n'
              '    headers: { cache-control: "no-store" }\n')
    yield p
    p.stop()
