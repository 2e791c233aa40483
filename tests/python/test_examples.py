"""The examples in examples/flask and examples/fastapi, end to end: their real `run.sh` starts the
app and fieldseal from a copy of the example directory (so the repository stays clean), and the
tests act as a client over TLS 1.3 that trusts only the CA the script generated. Tokens are
opened independently with Python `cryptography`; what the app really stores is read from the
app's own port, bypassing the proxy."""
import base64
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import ROOT, free_port

EXAMPLES = ["flask", "fastapi"]
TOKEN = re.compile(r"^fs1\.k1\.[A-Za-z0-9_-]{30,}$")
READY = "fieldseal example ready"


def py_open(secret: bytes, context: str, token: str):
    _, kid, payload = token.split(".", 2)
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return json.loads(AESGCM(secret).decrypt(raw[:12], raw[12:], f"fs1.{kid}.{context}".encode()))


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _like_a_terminal():
    # A shell started in the background (CI, `cmd &`) ignores SIGINT, and bash cannot trap a
    # signal that was ignored on entry; a foreground job in a terminal has the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Running:
    """`run.sh` of one example, started in its own process group (like a terminal's foreground job)."""

    def __init__(self, name: str, directory: Path, fieldseal_bin: Path):
        self.name, self.dir, self.run = name, directory, directory / "run"
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        self.app_port, self.port, self.admin_port = sorted(ports)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSEAL")}
        env.update(PYTHON=sys.executable, SKIP_INSTALL="1", FIELDSEAL=str(fieldseal_bin),
                   APP_PORT=str(self.app_port), FIELDSEAL_PORT=str(self.port),
                   ADMIN_PORT=str(self.admin_port), FIELDSEAL_LOG_FORMAT="json")
        self.proc = subprocess.Popen([str(directory / "run.sh")], cwd=directory, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                     preexec_fn=_like_a_terminal)
        self.log: list[str] = []
        ready = threading.Event()

        def pump():
            for line in self.proc.stdout:
                self.log.append(line)
                if READY in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(60) or self.proc.poll() is not None or READY not in "".join(self.log):
            self.kill()
            raise RuntimeError(f"{name}/run.sh did not get ready:\n" + "".join(self.log))
        self.secret = base64.b64decode(self.keyring()["keys"][0]["secret"])
        self.tls = ssl.create_default_context(cafile=str(self.run / "ca.pem"))
        self.tls.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default; be ready for it

    def keyring(self) -> dict:
        return json.loads((self.run / "keyring.json").read_text())

    def url(self, path: str) -> str:
        return f"https://localhost:{self.port}{path}"

    def client(self) -> httpx.Client:
        return httpx.Client(http2=True, verify=self.tls, timeout=10)

    def direct(self, path: str) -> dict:
        """What the app itself holds: asked on its own port, bypassing fieldseal."""
        r = httpx.get(f"http://127.0.0.1:{self.app_port}{path}", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            pass
        try:  # anything left in the group (a child that ignored SIGTERM)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=5)


def copy_example(name: str, into: Path) -> Path:
    target = into / name
    shutil.copytree(ROOT / "examples" / name, target,
                    ignore=shutil.ignore_patterns("run", "__pycache__"))
    # run.sh sources the runner both examples share, from the directory above.
    shutil.copy2(ROOT / "examples" / "run-example.sh", into / "run-example.sh")
    return target


@pytest.fixture(scope="module", params=EXAMPLES)
def example(request, fieldseal_bin, tmp_path_factory):
    directory = copy_example(request.param, tmp_path_factory.mktemp("example"))
    running = Running(request.param, directory, fieldseal_bin)
    yield running
    running.kill()


def test_run_sh_generates_private_keys_and_a_verifiable_certificate(example):
    run = example.run
    for secret in ("keyring.json", "key.pem"):
        assert (run / secret).stat().st_mode & 0o077 == 0, secret
    assert [k["id"] for k in example.keyring()["keys"]] == ["k1"]
    # TLS 1.3 with a certificate that verifies (strictly) against the generated CA for both names.
    for host in ("localhost", "127.0.0.1"):
        with socket.create_connection(("127.0.0.1", example.port)) as raw:
            with example.tls.wrap_socket(raw, server_hostname=host) as tls:
                assert tls.version() == "TLSv1.3"


def test_get_seals_exactly_what_the_app_holds(example):
    direct = example.direct("/api/users/1")
    with example.client() as c:
        r = c.get(example.url("/api/users/1"))
    assert r.status_code == 200 and r.http_version == "HTTP/2"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["strict-transport-security"].startswith("max-age=")
    doc = r.json()
    for field in ("ssn", "password"):
        assert TOKEN.match(doc[field]), doc[field]
        assert direct[field] not in r.text
        assert py_open(example.secret, field, doc[field]) == direct[field]
    assert len(doc["cards"]) == len(direct["cards"]) >= 1
    for sealed, plain in zip(doc["cards"], direct["cards"]):
        assert TOKEN.match(sealed["number"]) and plain["number"] not in r.text
        assert py_open(example.secret, "card", sealed["number"]) == plain["number"]
        assert {**sealed, "number": None} == {**plain, "number": None}
    for field in ("id", "name", "phone"):
        assert doc[field] == direct[field]
    # The field policy: `email` is sealed on every route without a rule for it.
    assert TOKEN.match(doc["email"]) and direct["email"] not in r.text
    assert py_open(example.secret, "email", doc["email"]) == direct["email"]
    # A token is bound to its field: the SSN token does not open as a password.
    with pytest.raises(Exception):
        py_open(example.secret, "password", doc["ssn"])


def test_list_masks_phone_and_cards_and_drops_passwords(example):
    direct = example.direct("/api/users")["users"]
    with example.client() as c:
        r = c.get(example.url("/api/users"))
    assert r.status_code == 200
    users = r.json()["users"]
    assert [u["id"] for u in users] == [u["id"] for u in direct]
    for got, plain in zip(users, direct):
        assert got["password"] is None
        assert got["phone"] == "*" * (len(plain["phone"]) - 4) + plain["phone"][-4:]
        for card, plain_card in zip(got["cards"], plain["cards"]):
            n = plain_card["number"]
            assert card["number"] == "*" * (len(n) - 4) + n[-4:]
        assert py_open(example.secret, "ssn", got["ssn"]) == plain["ssn"]
        assert py_open(example.secret, "email", got["email"]) == plain["email"]
        assert got["name"] == plain["name"]
        for secret in (plain["ssn"], plain["password"], plain["phone"]):
            assert secret not in r.text


def test_put_of_the_same_body_stores_plaintext_in_the_app(example):
    before = example.direct("/api/users/2")
    with example.client() as c:
        doc = c.get(example.url("/api/users/2")).json()
        doc["name"] = "Alan M. Turing"
        r = c.put(example.url("/api/users/2"), json=doc)
    assert r.status_code == 200, r.text
    stored = example.direct("/api/users/2")
    assert stored == {**before, "name": "Alan M. Turing"}
    # The app stored the real values (never a token) and answered with them: sealed again,
    # with fresh nonces.
    back = r.json()
    assert back["name"] == "Alan M. Turing"
    assert back["ssn"] != doc["ssn"] and py_open(example.secret, "ssn", back["ssn"]) == before["ssn"]
    assert py_open(example.secret, "password", back["password"]) == before["password"]
    assert [py_open(example.secret, "card", c["number"]) for c in back["cards"]] == \
        [c["number"] for c in before["cards"]]


def tampered(token: str) -> str:
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]


def test_bad_tokens_and_plaintext_are_rejected_before_the_app(example):
    before = example.direct("/api/users/1")
    with example.client() as c:
        doc = c.get(example.url("/api/users/1")).json()
        doc["name"] = "Mallory"  # would show up in the app if the request got through
        card = dict(doc["cards"][0])
        cases = {
            "tampered ssn": ({**doc, "ssn": tampered(doc["ssn"])}, "$['ssn']", "authentication_failed"),
            "tampered card": ({**doc, "cards": [{**card, "number": tampered(card["number"])}]},
                              "$['cards'][0]['number']", "authentication_failed"),
            "password token as ssn": ({**doc, "ssn": doc["password"]}, "$['ssn']", "authentication_failed"),
            "unknown key": ({**doc, "ssn": doc["ssn"].replace("fs1.k1.", "fs1.k9.")}, "$['ssn']", "k9"),
            "plaintext ssn": ({**doc, "ssn": "000-00-0000"}, "$['ssn']", "plaintext_not_allowed"),
            "plaintext password": ({"password": "letmein"}, "$['password']", "plaintext_not_allowed"),
        }
        for name, (body, field, reason) in cases.items():
            r = c.put(example.url("/api/users/1"), json=body)
            assert r.status_code == 400, name
            err = r.json()["error"]
            assert err["code"] == "field_rejected", name
            assert field in err["message"] and reason in err["message"], (name, err)
            assert err["request_id"] == r.headers["x-request-id"]
    assert example.direct("/api/users/1") == before


def test_signup_takes_plaintext_and_answers_with_tokens(example):
    new = {"name": "Grace Hopper", "email": "grace@example.com", "phone": "+1 202 555 0147",
           "ssn": "123-45-6789", "password": "COBOL-1959",
           "cards": [{"brand": "visa", "number": "4012888888881881", "exp": "01/30"}]}
    with example.client() as c:
        r = c.post(example.url("/api/users"), json=new)
        assert r.status_code == 201, r.text
        created = r.json()
        for secret in ("123-45-6789", "COBOL-1959", "4012888888881881"):
            assert secret not in r.text
        assert py_open(example.secret, "ssn", created["ssn"]) == new["ssn"]
        assert py_open(example.secret, "card", created["cards"][0]["number"]) == "4012888888881881"
        stored = example.direct(f"/api/users/{created['id']}")
        assert {k: stored[k] for k in new} == new
        # The tokens it got back work like any others.
        r = c.get(example.url(f"/api/users/{created['id']}"))
        assert py_open(example.secret, "password", r.json()["password"]) == "COBOL-1959"


def test_validation_errors_do_not_echo_opened_values(example):
    """FastAPI's 422 echoes the (already decrypted) input; the example's config nulls it."""
    with example.client() as c:
        # Missing `name`: the whole body is the failing input.
        r = c.post(example.url("/api/users"), json={"email": "e@example.com", "password": "pw-secret-1",
                                                    "ssn": "987-65-4321"})
        assert r.status_code in (400, 422), r.text
        assert "987-65-4321" not in r.text and "pw-secret-1" not in r.text
        # A card without a brand, sent as the token the client holds: the app sees the number.
        doc = c.get(example.url("/api/users/1")).json()
        number = example.direct("/api/users/1")["cards"][0]["number"]
        r = c.put(example.url("/api/users/1"), json={"cards": [{"number": doc["cards"][0]["number"]}]})
        assert r.status_code in (400, 422), r.text
        assert number not in r.text


def test_check_accepts_the_example_config(example, fieldseal_bin):
    # The repository's own file, pointed at the files run.sh generated.
    config = ROOT / "examples" / example.name / "fieldseal.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSEAL")}
    env.update(FIELDSEAL_TLS__CERT=str(example.run / "cert.pem"),
               FIELDSEAL_TLS__KEY=str(example.run / "key.pem"),
               FIELDSEAL_KEYS__KEYRING=str(example.run / "keyring.json"))
    out = subprocess.run([str(fieldseal_bin), "check", "--config", str(config)], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "is valid" in out.stdout
    for route in ("routes.0 user GET,PUT /api/users/{id}", "routes.1 signup POST /api/users",
                  "routes.2 user-list GET /api/users"):
        assert route in out.stdout, out.stdout
    assert "request.require_encrypted: true" in out.stdout
    assert "fields.0 encrypt $..email" in out.stdout and "guard: ssn, card, email" in out.stdout
    # And as the README says, from the example directory with its relative paths.
    out = subprocess.run([str(fieldseal_bin), "check", "--config", "fieldseal.yaml"], cwd=example.dir,
                         env={k: v for k, v in os.environ.items() if not k.startswith("FIELDSEAL")},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", EXAMPLES)
def test_ctrl_c_stops_both_and_a_restart_keeps_keys(name, fieldseal_bin, tmp_path):
    directory = copy_example(name, tmp_path)
    first = Running(name, directory, fieldseal_bin)
    try:
        with first.client() as c:
            doc = c.get(first.url("/api/users/1")).json()
        keyring, cert = first.keyring(), (first.run / "cert.pem").read_bytes()
        # Ctrl-C in a terminal: SIGINT to the whole foreground process group.
        os.killpg(first.proc.pid, signal.SIGINT)
        assert first.proc.wait(timeout=20) == 130, "".join(first.log)
        deadline = time.time() + 5
        while (port_open(first.app_port) or port_open(first.port)) and time.time() < deadline:
            time.sleep(0.05)
        assert not port_open(first.app_port) and not port_open(first.port)
        with pytest.raises(ProcessLookupError):  # nothing left in the group
            os.killpg(first.proc.pid, 0)
    finally:
        first.kill()

    second = Running(name, directory, fieldseal_bin)
    try:
        assert second.keyring() == keyring, "run.sh replaced the keyring"
        assert (second.run / "cert.pem").read_bytes() == cert
        # Tokens handed out before the restart still open.
        with second.client() as c:
            r = c.put(second.url("/api/users/1"), json=doc)
        assert r.status_code == 200, r.text
        assert second.direct("/api/users/1")["ssn"] == py_open(second.secret, "ssn", doc["ssn"])
    finally:
        second.kill()
