"""The app fails in every way a real one does — down, closing, resetting, hanging, dripping,
dying mid-body, restarting, closing pooled keep-alive connections — and the client gets the
documented answer (502 upstream_unreachable / upstream_protocol_error, 504 upstream_timeout),
never a hang, a silently truncated body that looks complete, or a request delivered twice.
The upstream is `FaultUpstream` (raw sockets, counts every delivery)."""
import base64
import json
import os
import time

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import Proxy, free_port
from fault_upstream import (SENSITIVE, DataFrame, FaultUpstream, HeadersFrame, RawH2,
                            RstStreamFrame, describe, metric)
from raw_http import h1_read_response, tls_connect, wait_closed

KEY = os.urandom(32)
ROUTES = (
    'routes:\n'
    '  - name: sealed\n'
    '    match: { path: "/sealed/**" }\n'
    '    response:\n'
    '      encrypt: ["$.ssn"]\n'
    '  - name: pass\n'
    '    match: { path: "/pass/**" }\n'
)


@pytest.fixture(scope="module")
def keyring(tmp_path_factory):
    path = tmp_path_factory.mktemp("keyring") / "keyring.json"
    path.write_text(json.dumps({"primary": "k1", "keys": [{
        "id": "k1", "secret": base64.b64encode(KEY).decode(),
        "created_at": "2026-01-01T00:00:00Z", "state": "active"}]}))
    path.chmod(0o600)
    return path


@pytest.fixture
def make_upstream():
    started = []

    def make(**kw) -> FaultUpstream:
        u = FaultUpstream(**kw).start()
        started.append(u)
        return u

    yield make
    for u in started:
        u.stop()


@pytest.fixture
def make_proxy(pki, fieldseal_bin, tmp_path_factory, keyring):
    started = []

    def make(upstream_port: int) -> Proxy:
        p = Proxy(fieldseal_bin, pki, upstream_port, tmp_path_factory.mktemp("faults"),
                  f'keys:\n  keyring: "{keyring}"\n'
                  'timeouts:\n  upstream_connect: 1s\n  upstream_response: 1s\n' + ROUTES)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def client(pki, http2: bool) -> httpx.Client:
    # The read timeout is a hang detector: every answer here is due within ~1 s.
    return httpx.Client(http2=http2, verify=pki.context(), timeout=10)


def assert_error(r: httpx.Response, status: int, code: str):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code, err
    assert err["request_id"] == r.headers["x-request-id"]
    assert r.headers["strict-transport-security"]  # the proxy's own answers get the policy too


def errors(p: Proxy, kind: str, route: str = "pass") -> float:
    return metric(p.admin, "fieldseal_upstream_errors_total", route=route, kind=kind)


PROTOCOLS = pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])


# -- the app is not there, slams the door, or never answers ---------------------------------

@PROTOCOLS
def test_nothing_listening_is_502_upstream_unreachable(make_proxy, pki, http2):
    p = make_proxy(free_port())
    with client(pki, http2) as c:
        for i in range(3):
            r = c.get(p.url("/pass/x"))
            assert_error(r, 502, "upstream_unreachable")
            assert errors(p, "unreachable") == i + 1


@PROTOCOLS
@pytest.mark.parametrize("mode", ["close_on_accept", "reset_on_accept"])
def test_app_that_closes_or_resets_on_accept_is_502(make_upstream, make_proxy, pki, http2, mode):
    u = make_upstream(mode=mode)
    p = make_proxy(u.port)
    # Closed after accept: the app "closed the connection". Reset at once: on loopback the RST
    # can beat the connect's completion, which is then indistinguishable from a refusal.
    codes = {"upstream_protocol_error": "protocol"}
    if mode == "reset_on_accept":
        codes["upstream_unreachable"] = "unreachable"
    with client(pki, http2) as c:
        for i in range(3):
            started = time.time()
            r = c.get(p.url("/pass/x"))
            assert r.status_code == 502, r.text
            code = r.json()["error"]["code"]
            assert code in codes, code
            assert_error(r, 502, code)
            assert time.time() - started < 5
    assert sum(errors(p, kind) for kind in codes.values()) == 3
    assert u.connections <= 2 * 3, f"{u.connections} connections for 3 requests: a retry storm"


@PROTOCOLS
def test_app_that_never_answers_is_504_at_upstream_response(make_upstream, make_proxy, pki, http2):
    u = make_upstream()
    p = make_proxy(u.port)
    with client(pki, http2) as c:
        started = time.time()
        r = c.get(p.url("/pass/hang"))
        elapsed = time.time() - started
        assert_error(r, 504, "upstream_timeout")
        assert 0.9 <= elapsed < 5, f"504 after {elapsed:.2f}s (upstream_response: 1s)"
        assert errors(p, "timeout") == 1
        # The abandoned upstream connection is closed, not pooled: the next request is served.
        deadline = time.time() + 5
        while u.hanging and time.time() < deadline:
            time.sleep(0.05)
        assert u.hanging == 0, "the proxy kept the timed-out upstream connection open"
        r = c.get(p.url("/pass/ok"))
        assert r.status_code == 200 and r.json()["path"] == "/pass/ok"


# -- slow and broken bodies -----------------------------------------------------------------

@PROTOCOLS
def test_slow_body_streams_through_a_pass_through_route(make_upstream, make_proxy, pki, http2):
    """The app sends its first piece, then holds the rest until the client has seen that piece:
    only a proxy that streams lets the gate open before the app's 5 s patience runs out."""
    u = make_upstream()
    p = make_proxy(u.port)
    with client(pki, http2) as c:
        with c.stream("GET", p.url("/pass/drip?gate=1&chunks=5&ms=50")) as r:
            assert r.status_code == 200
            pieces = r.iter_raw()
            first = next(pieces)
            u.gate.set()
            body = first + b"".join(pieces)
    assert u.gate_seen is True, "the client saw no body byte until the app had sent all of it"
    doc = json.loads(body)
    assert doc["ssn"] == SENSITIVE and doc["pad"][-1] == "end"  # pass-through: untouched


def open_token(token: str, context: str):
    prefix, kid, payload = token.split(".")
    assert (prefix, kid) == ("fs1", "k1"), token
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return json.loads(AESGCM(KEY).decrypt(raw[:12], raw[12:], f"fs1.{kid}.{context}".encode()))


@PROTOCOLS
def test_slow_body_on_a_rule_route_is_still_sealed(make_upstream, make_proxy, pki, http2):
    u = make_upstream()
    p = make_proxy(u.port)
    with client(pki, http2) as c:
        r = c.get(p.url("/sealed/drip?chunks=5&ms=100"))  # 0.4 s of dripping, under the 1 s deadline
    assert r.status_code == 200, r.text
    assert SENSITIVE.encode() not in r.content
    doc = r.json()
    assert doc["ssn"].startswith("fs1.k1.")
    assert open_token(doc["ssn"], "ssn") == SENSITIVE
    assert doc["pad"][-1] == "end"


@PROTOCOLS
def test_rule_route_body_slower_than_the_deadline_fails_closed(make_upstream, make_proxy, pki, http2):
    u = make_upstream()
    p = make_proxy(u.port)
    with client(pki, http2) as c:
        started = time.time()
        r = c.get(p.url("/sealed/drip?chunks=6&ms=400"))  # 2 s of body, deadline 1 s
        elapsed = time.time() - started
    assert SENSITIVE.encode() not in r.content
    assert r.status_code in (502, 504), r.text
    assert r.json()["error"]["code"] in ("upstream_timeout", "response_not_encryptable")
    assert elapsed < 5


@pytest.mark.parametrize("how", ["reset", "fin"])
@pytest.mark.parametrize("te", ["cl", "chunked"])
def test_app_dying_mid_body_aborts_the_http1_response(make_upstream, make_proxy, pki, how, te):
    u = make_upstream()
    p = make_proxy(u.port)
    s = tls_connect(p.listen, pki.context())
    s.sendall(f"GET /pass/truncate?how={how}&te={te} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    r = h1_read_response(s, timeout=10)
    print(f"h1 truncate {how}/{te}: status={r.status} complete={r.complete} body={len(r.body)} "
          f"framing={r.headers.get('content-length') or r.headers.get('transfer-encoding')}")
    assert r.status == 200
    assert not r.complete, (f"a truncated upstream body reached the client as a complete response "
                            f"({len(r.body)} bytes, headers {r.headers})")
    closed, _ = wait_closed(s, 5)
    s.close()
    assert closed, "the client connection stayed open after an aborted body"


@pytest.mark.parametrize("how", ["reset", "fin"])
@pytest.mark.parametrize("te", ["cl", "chunked"])
def test_app_dying_mid_body_resets_the_http2_stream(make_upstream, make_proxy, pki, how, te):
    u = make_upstream()
    p = make_proxy(u.port)
    c = RawH2(p.listen, pki.context())
    c.handshake()
    c.send(c.request_headers(1, f"/pass/truncate?how={how}&te={te}"))
    seen, status, data, ended_clean, reset = [], None, 0, False, None
    for f in c.frames(8):
        seen.append(describe(f))
        if f == "CLOSED":
            break
        if f.stream_id != 1:
            continue
        if isinstance(f, HeadersFrame):
            status = c.status_of(f)
        if isinstance(f, DataFrame):
            data += len(f.data)
        if isinstance(f, (HeadersFrame, DataFrame)) and "END_STREAM" in f.flags:
            ended_clean = True
            break
        if isinstance(f, RstStreamFrame):
            reset = f.error_code
            break
    c.close()
    print(f"h2 truncate {how}/{te}: status={status} data={data} end={seen[-3:]}")
    assert status == "200", seen[:10]
    assert not ended_clean, f"the stream ended cleanly after {data} bytes of a truncated body: {seen[-5:]}"
    assert reset is not None or "CLOSED" in seen or any(s.startswith("GoAway") for s in seen), seen[-5:]


# -- restarts and the keep-alive pool -------------------------------------------------------

def test_proxy_recovers_when_the_app_comes_back_on_the_same_port(make_upstream, make_proxy, pki):
    u = make_upstream()
    p = make_proxy(u.port)
    h1, h2 = client(pki, False), client(pki, True)
    with h1, h2:
        for c in (h1, h2):
            assert c.get(p.url("/pass/ok")).status_code == 200
        u.stop()
        for c in (h1, h2):
            assert_error(c.get(p.url("/pass/ok")), 502, "upstream_unreachable")
        u.start()  # same port
        for _ in range(5):
            for c in (h1, h2):
                r = c.get(p.url("/pass/ok"))
                assert r.status_code == 200, r.text
    assert p.proc.poll() is None


@pytest.mark.parametrize("close_delay", [0.0, 0.03], ids=["close_at_once", "close_racing"])
def test_gets_on_connections_the_app_closed_all_succeed(make_upstream, make_proxy, pki, close_delay):
    """The app closes every connection after its response without saying `Connection: close`
    (at once, or 30 ms later while the next request may be on its way): a bodyless GET is
    retried or replayed (README: upstream pool), so every one succeeds."""
    u = make_upstream(close_after_response=True, close_delay=close_delay)
    p = make_proxy(u.port)
    statuses = []
    for http2 in (False, True):
        with client(pki, http2) as c:
            for i in range(30):
                statuses.append(c.get(p.url(f"/pass/get{i}")).status_code)
                time.sleep((i % 4) * 0.012)  # straddle the app's close
    assert statuses == [200] * 60, statuses
    for i in range(30):
        assert 1 <= u.count(f"/pass/get{i}") <= 4


def test_gets_after_app_restarts_all_succeed(make_upstream, make_proxy, pki):
    u = make_upstream()
    p = make_proxy(u.port)
    for http2 in (False, True):
        with client(pki, http2) as c:
            for _ in range(5):
                assert c.get(p.url("/pass/ok")).status_code == 200
                u.restart()  # every pooled connection is now dead
                r = c.get(p.url("/pass/ok"))
                assert r.status_code == 200, r.text


@pytest.mark.parametrize("close_delay", [0.0, 0.03], ids=["close_at_once", "close_racing"])
def test_posts_on_connections_the_app_closed_are_delivered_at_most_once(make_upstream, make_proxy, pki,
                                                                         close_delay):
    """A POST on a pooled connection the app closed: success, or a clean 502 — never a hang,
    never two deliveries (README: anything but a bodyless GET/HEAD/OPTIONS is not replayed)."""
    u = make_upstream(close_after_response=True, close_delay=close_delay)
    p = make_proxy(u.port)
    outcomes = {}
    for http2 in (False, True):
        with client(pki, http2) as c:
            for i in range(30):
                body = json.dumps({"id": f"{http2}-{i}", "pad": "x" * 200}).encode()
                started = time.time()
                r = c.post(p.url("/pass/post"), content=body, headers={"content-type": "application/json"})
                assert time.time() - started < 5
                outcomes[f"{http2}-{i}"] = (r.status_code, r)
                time.sleep((i % 4) * 0.012)
    delivered = {}
    for b in u.bodies("/pass/post"):
        key = json.loads(b)["id"]
        delivered[key] = delivered.get(key, 0) + 1
    for key, (status, r) in outcomes.items():
        assert delivered.get(key, 0) <= 1, f"POST {key} delivered {delivered[key]} times"
        if status == 200:
            assert delivered.get(key) == 1 and r.json()["path"] == "/pass/post"
        else:
            assert_error(r, 502, "upstream_protocol_error")
    print(f"POST outcomes (close_delay={close_delay}):",
          {s: sum(1 for v in outcomes.values() if v[0] == s) for s in {v[0] for v in outcomes.values()}})


# -- metrics --------------------------------------------------------------------------------

def test_upstream_errors_total_counts_each_kind(make_upstream, make_proxy, pki):
    u = make_upstream(mode="close_on_accept")
    p = make_proxy(u.port)
    with client(pki, False) as c:
        assert_error(c.get(p.url("/pass/a")), 502, "upstream_protocol_error")
        assert_error(c.get(p.url("/other")), 502, "upstream_protocol_error")
        u.mode = "normal"
        assert_error(c.get(p.url("/pass/hang")), 504, "upstream_timeout")
        assert_error(c.get(p.url("/pass/hang")), 504, "upstream_timeout")
        u.stop()
        for _ in range(3):
            assert_error(c.get(p.url("/pass/a")), 502, "upstream_unreachable")
    assert errors(p, "protocol") == 1
    assert errors(p, "protocol", route="unmatched") == 1
    assert errors(p, "timeout") == 2
    assert errors(p, "unreachable") == 3
    assert metric(p.admin, "fieldseal_requests_total", route="pass", method="GET", status="502") == 4
    assert metric(p.admin, "fieldseal_requests_total", route="pass", method="GET", status="504") == 2
