"""`limits.max_upstream_requests`: at most that many requests are in flight to the app at once
(every worker together); a request past the bound waits for one to finish, up to
`timeouts.upstream_connect`, then gets 504 `upstream_timeout` without reaching the app. The
upstream is `FaultUpstream`, which counts the requests that hang in it at once."""
import threading
import time

import httpx
import pytest

from conftest import Proxy
from fault_upstream import FaultUpstream

BOUND = 3


@pytest.fixture(scope="module")
def upstream():
    u = FaultUpstream().start()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def proxy(upstream, pki, fieldseal_bin, tmp_path_factory):
    p = Proxy(fieldseal_bin, pki, upstream.port, tmp_path_factory.mktemp("bound"),
              f"limits:\n  max_upstream_requests: {BOUND}\ntimeouts:\n  upstream_connect: 1s\n"
              "  upstream_read: 1s\n")
    yield p
    p.stop()


def get_all(proxy, pki, paths, http2, timeout=10):
    """GETs every path at once (one connection each); returns (status or exception, seconds)."""
    results = [None] * len(paths)

    def one(i, path):
        started = time.monotonic()
        try:
            with httpx.Client(http2=http2, verify=pki.context(), timeout=timeout) as c:
                r = c.get(proxy.url(path))
            results[i] = (r.status_code, r.json(), time.monotonic() - started)
        except httpx.HTTPError as e:
            results[i] = (type(e).__name__, None, time.monotonic() - started)

    threads = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(paths)]
    for t in threads:
        t.start()
    return threads, results


@pytest.mark.parametrize("http2", [False, True])
def test_requests_past_the_bound_wait_then_fail_without_reaching_the_app(proxy, upstream, pki, http2):
    upstream.max_hanging = 0
    before = upstream.count("/hang")
    # BOUND requests hang in the app; two more arrive while they do.
    threads, results = get_all(proxy, pki, ["/hang"] * (BOUND + 2), http2, timeout=4)
    for t in threads:
        t.join()
    assert upstream.max_hanging == BOUND, f"{upstream.max_hanging} requests in the app at once"
    assert upstream.count("/hang") - before == BOUND
    refused = [r for r in results if r[0] == 504]
    assert len(refused) == 2, results
    for status, body, took in refused:
        assert body["error"]["code"] == "upstream_timeout"
        assert 0.8 < took < 3.5, took
    # The hanging ones ended with their clients (read timeouts): their turns came back.
    time.sleep(0.5)
    with httpx.Client(http2=http2, verify=pki.context(), timeout=10) as c:
        assert c.get(proxy.url("/ok")).status_code == 200


def test_a_waiting_request_goes_through_when_a_turn_frees(proxy, upstream, pki):
    upstream.max_hanging = 0
    # BOUND + 1 slow requests (600 ms each): one waits for another to finish, then passes.
    threads, results = get_all(proxy, pki, ["/slow?ms=600"] * (BOUND + 1), http2=False)
    for t in threads:
        t.join()
    assert [r[0] for r in results] == [200] * (BOUND + 1), results
    took = sorted(r[2] for r in results)
    assert took[0] < 1.1 and took[-1] >= 1.15, took


@pytest.mark.parametrize("http2", [False, True])
def test_a_pass_through_body_that_goes_quiet_is_cut_at_the_read_timeout(proxy, upstream, pki, http2):
    """No rules on this route: the body streams as the app sends it. Pieces 300 ms apart pass
    (`timeouts.upstream_read` bounds each gap, not the whole body); pieces 2.5 s apart are cut
    after the first, at about the 1 s bound, and the client sees an incomplete body."""
    with httpx.Client(http2=http2, verify=pki.context(), timeout=10) as c:
        r = c.get(proxy.url("/drip?chunks=5&ms=300"))
        assert r.status_code == 200 and r.json()["pad"][-1] == "end"
        started = time.monotonic()
        with pytest.raises(httpx.HTTPError):
            with c.stream("GET", proxy.url("/drip?chunks=5&ms=2500")) as r:
                assert r.status_code == 200
                for _ in r.iter_bytes():
                    pass
        assert time.monotonic() - started < 2.4
