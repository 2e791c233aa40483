"""Several replicas (issue 17, docs/replicas.md): fieldseal processes in front of one real
FastAPI app, sharing one real Redis (Debian's redis-server, started here on loopback with a
password) as their replay store.

Client-encrypted values are made by jwcrypto, independently of fieldseal. Checked: a value
opened by one replica is refused as replayed by every other (and by itself); what Redis holds is
keyed digests, never a `jti`; when Redis stops, `max_age` routes refuse with 503 and other routes
fall back to each replica's own memory (replays against the same replica still refused), the
gauge says so; when Redis returns, sharing resumes by itself."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwk

from conftest import Proxy, free_port, start_app, wait_port
from jose_helpers import rsa_jwe

SSN = "123-45-6789"
REDIS_PASSWORD = "replicas-test-" + uuid.uuid4().hex

# Never skipped: scripts/test.sh installs redis-server (a missing one fails here, loudly).
assert shutil.which("redis-server"), "redis-server is not installed: run scripts/test.sh, which installs it"


class Redis:
    """A real redis-server on a loopback port, no persistence, with a password."""

    def __init__(self, directory: Path):
        self.dir, self.port, self.proc = directory, free_port(), None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--requirepass", REDIS_PASSWORD, "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(self.port, self.proc, "redis-server")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def cli(self, *args) -> str:
        return subprocess.run(["redis-cli", "-p", str(self.port), "--no-auth-warning", "-a",
                               REDIS_PASSWORD, *args], capture_output=True, text=True,
                              check=True).stdout


CONFIG = """keys:
  keyring: "{keyring}"
  rsa_private_key: "{rsa}"
replay:
  store: redis
  redis:
    url: "redis://127.0.0.1:{redis_port}/0"
    password_file: "{password}"
    key_file: "{replay_key}"
    prefix: "fs-test:"
    timeout: 300ms
routes:
  - name: user
    match: {{ path: "/api/users/{{id}}", methods: [GET, PUT] }}
    request:
      decrypt: ["$.ssn"]
  - name: fresh
    match: {{ path: "/api/echo", methods: [POST] }}
    request:
      decrypt: ["$.ssn"]
      max_age: 300
"""


def write_secret(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def cluster(pki, fieldseal_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("replicas")
    app = start_app("fastapi")
    redis = Redis(d)
    keyring = d / "keyring.json"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True,
                   capture_output=True)
    key = rsa.generate_private_key(65537, 2048)
    rsa_path = write_secret(d / "rsa.pem", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    password = write_secret(d / "redis.password", REDIS_PASSWORD.encode() + b"\n")
    replay_key = write_secret(d / "replay.key", base64.b64encode(os.urandom(32)) + b"\n")
    config = CONFIG.format(keyring=keyring, rsa=rsa_path, redis_port=redis.port,
                           password=password, replay_key=replay_key)
    replicas = []
    for i in range(3):
        rd = d / f"replica{i}"
        rd.mkdir()
        replicas.append(Proxy(fieldseal_bin, pki, app.port, rd, config))
    public = jwk.JWK.from_pem(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with httpx.Client(http2=True, verify=pki.context(), timeout=30) as c:
        kid = c.get(replicas[0].url("/.well-known/fieldseal/jwks.json")).json()["keys"][0]["kid"]
    public["kid"] = kid
    yield {"replicas": replicas, "redis": redis, "key": public, "app": app}
    for r in replicas:
        r.stop()
    redis.stop()
    app.proc.terminate()
    app.proc.wait(timeout=10)


@pytest.fixture
def client(pki):
    with httpx.Client(http2=True, verify=pki.context(), timeout=30) as c:
        yield c


def metric(proxy, name: str) -> float:
    """An unlabelled metric's value."""
    for line in httpx.get(f"http://127.0.0.1:{proxy.admin}/metrics").text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name:
            return float(parts[1])
    raise AssertionError(f"{name} not in /metrics")


def replayed(r) -> bool:
    return r.status_code == 400 and "replayed" in r.json()["error"]["message"]


def test_a_value_opened_by_one_replica_is_refused_by_every_replica(cluster, client):
    a, b, c = cluster["replicas"]
    for route, path in (("user", "/api/users/7"), ("fresh", "/api/echo")):
        value = rsa_jwe(cluster["key"], SSN, iat=int(time.time()), jti=str(uuid.uuid4()))
        send = (lambda p, v: client.put(p.url(path), json={"ssn": v})) if route == "user" \
            else (lambda p, v: client.post(p.url(path), json={"ssn": v}))
        r = send(a, value)
        assert r.status_code == 200 and SSN in r.text, r.text
        for replica in (b, c, a):
            r = send(replica, value)
            assert replayed(r), (route, r.text)
            assert SSN not in r.text
    # Redis holds keyed digests under the prefix, never a jti.
    keys = cluster["redis"].cli("--scan", "--pattern", "fs-test:jti:*").split()
    assert len(keys) >= 2 and all(len(k) == len("fs-test:jti:") + 32 for k in keys), keys
    ttl = int(cluster["redis"].cli("TTL", keys[0]).strip())
    assert 300 < ttl <= 300 + 60 + 5, ttl
    assert metric(a, "fieldseal_replay_store_up") == 1


def test_two_replicas_opening_one_value_at_once_admit_it_once(cluster, pki):
    """The race a per-process store cannot win: the same value sent to three replicas
    concurrently, many times over. `SET NX` on the server admits exactly one each time."""
    import concurrent.futures
    replicas = cluster["replicas"]

    def send(replica, value):
        with httpx.Client(http2=False, verify=pki.context(), timeout=30) as c:
            return c.post(replica.url("/api/echo"), json={"ssn": value}).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(15):
            value = rsa_jwe(cluster["key"], SSN, iat=int(time.time()), jti=str(uuid.uuid4()))
            codes = list(pool.map(lambda r: send(r, value), replicas + replicas))
            assert sorted(codes) == [200, 400, 400, 400, 400, 400], codes


def test_without_redis_fresh_routes_refuse_and_others_fall_back_then_recover(cluster, client):
    a, b, _ = cluster["replicas"]
    redis = cluster["redis"]
    redis.stop()
    try:
        fresh = rsa_jwe(cluster["key"], SSN, iat=int(time.time()), jti=str(uuid.uuid4()))
        started = time.time()
        r = client.post(a.url("/api/echo"), json={"ssn": fresh})
        assert time.time() - started < 5
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "replay_check_unavailable" and SSN not in r.text, err
        assert metric(a, "fieldseal_replay_store_up") == 0
        # Routes without max_age: this replica's own memory decides.
        value = rsa_jwe(cluster["key"], SSN, jti=str(uuid.uuid4()))
        assert client.put(a.url("/api/users/7"), json={"ssn": value}).status_code == 200
        assert replayed(client.put(a.url("/api/users/7"), json={"ssn": value}))
        # ...which another replica cannot see until Redis returns (documented).
        assert client.put(b.url("/api/users/7"), json={"ssn": value}).status_code == 200
        text = httpx.get(f"http://127.0.0.1:{a.admin}/metrics").text
        assert 'fieldseal_replay_store_total{result="unavailable"} 1' in text, text
        assert 'fieldseal_replay_store_total{result="fallback"}' in text
    finally:
        redis.start()
    # Back: shared again, by itself (the connection is re-established on the next request).
    deadline = time.time() + 15
    while True:
        value = rsa_jwe(cluster["key"], SSN, iat=int(time.time()), jti=str(uuid.uuid4()))
        r = client.post(a.url("/api/echo"), json={"ssn": value})
        if r.status_code == 200 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 200, r.text
    assert replayed(client.post(b.url("/api/echo"), json={"ssn": value}))
    assert metric(a, "fieldseal_replay_store_up") == 1


def test_check_describes_and_validates_the_redis_store(fieldseal_bin, pki, tmp_path):
    key = write_secret(tmp_path / "replay.key", base64.b64encode(os.urandom(32)))
    base = f"""listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:9"
tls: {{ cert: "{pki.cert}", key: "{pki.key}" }}
"""
    config = tmp_path / "c.yaml"

    def check(replay: str):
        config.write_text(base + replay)
        return subprocess.run([str(fieldseal_bin), "check", "--config", str(config)],
                              capture_output=True, text=True)

    r = check(f'replay: {{ store: redis, redis: {{ url: "redis://127.0.0.1:6390/2", key_file: "{key}" }} }}\n')
    assert r.returncode == 0 and "replay store: Redis redis://127.0.0.1:6390/2 (keys fieldseal:jti:" in r.stdout, r
    for replay, expected in [
        (f'replay: {{ store: redis, redis: {{ url: "redis://:pw@127.0.0.1:6390", key_file: "{key}" }} }}',
         "replay.redis.url: must not contain credentials"),
        (f'replay: {{ store: redis, redis: {{ url: "rediss://127.0.0.1:6390", key_file: "{key}" }} }}',
         "replay.redis.url: TLS to Redis"),
        ('replay: { store: redis }', "replay.redis: `replay.store: redis` needs"),
        ('replay: { store: etcd }', "replay.store: `etcd`: must be `memory` or `redis`"),
        (f'replay: {{ redis: {{ url: "redis://127.0.0.1:6390", key_file: "{key}" }} }}',
         "replay.redis: set `replay.store: redis`"),
        (f'replay: {{ store: redis, redis: {{ url: "redis://127.0.0.1:6390", key_file: "{key}", timeout: 1h }} }}',
         "replay.redis.timeout: must be between"),
        (f'replay: {{ store: redis, redis: {{ url: "redis://127.0.0.1:6390", key_file: "{tmp_path / "none"}" }} }}',
         "replay.redis.key_file"),
    ]:
        r = check(replay + "\n")
        assert r.returncode != 0 and expected in r.stderr, (replay, r.stderr)
    short = write_secret(tmp_path / "short.key", b"c2hvcnQ=")
    r = check(f'replay: {{ store: redis, redis: {{ url: "redis://127.0.0.1:6390", key_file: "{short}" }} }}\n')
    assert r.returncode != 0 and "the replay key must be 32 bytes" in r.stderr, r.stderr
