"""The audit log written by the real proxy in front of real FastAPI and Flask apps, checked
independently of fieldseal: the HMAC-SHA256 chain, and the link each segment's `chain_start`
records to the line before it, are recomputed here with only `hmac` and `hashlib`, exactly as
docs/audit.md describes them; no value, token or secret appears in the log."""
import base64
import hashlib
import hmac
import json
import subprocess

import httpx
import pytest

from conftest import Proxy

SSN = "123-45-6789"
PASSWORD = "correct horse battery staple"
CARD = "4111111111110366"

RULES = """keys:
  keyring: "{keyring}"
audit:
  sink: "{log}"
  key_file: "{key}"
routes:
  - name: user
    match: {{ path: "/api/users/{{id}}", methods: [GET, PUT] }}
    response:
      encrypt: ["$.ssn", "$.password", {{ path: "$.cards[*].number", context: "card" }}]
    request:
      decrypt: ["$.ssn", "$.password", {{ path: "$.cards[*].number", context: "card" }}]
"""

MAC_MEMBER = b',"mac":"'


def recompute(log: bytes, key: bytes) -> str:
    """Checks every line's seq and MAC, and that every segment's `chain_start` names the line
    before it (`"none"` on line 1); returns the last MAC (hex)."""
    previous, seq = bytes(32), 0
    assert log.endswith(b"\n")
    for n, line in enumerate(log[:-1].split(b"\n"), start=1):
        cut = line.rindex(MAC_MEMBER)
        assert line.endswith(b'"}') and len(line) - cut == len(MAC_MEMBER) + 64 + 2, n
        doc = json.loads(line)
        if doc["event"] == "chain_start":
            link = "none" if n == 1 else {"seq": seq, "mac": previous.hex()}
            assert doc["previous"] == link, f"line {n}: link"
            assert doc.get("reason") != "last_line_unparsable", f"line {n}: torn before"
        assert doc["seq"] == seq + 1, f"line {n}: seq"
        expected = hmac.new(key, previous + line[:cut], hashlib.sha256).digest()
        assert hmac.compare_digest(expected.hex(), line[cut + len(MAC_MEMBER):-2].decode()), \
            f"line {n}: mac mismatch"
        previous, seq = expected, doc["seq"]
    return previous.hex()


def verify(fieldseal_bin, log, key_file):
    return subprocess.run([str(fieldseal_bin), "audit", "verify", str(log), "--key", str(key_file)],
                          capture_output=True, text=True)


def test_the_audit_chain_recomputes_with_python_hmac(app, pki, fieldseal_bin, tmp_path):
    keyring = tmp_path / "keyring.json"
    key_file = tmp_path / "audit.key"
    log = tmp_path / "audit.jsonl"
    subprocess.run([str(fieldseal_bin), "keys", "init", "--out", str(keyring)], check=True, capture_output=True)
    subprocess.run([str(fieldseal_bin), "audit", "keygen", "--out", str(key_file)], check=True, capture_output=True)
    key = base64.b64decode(key_file.read_text().strip())
    assert len(key) == 32
    rules = RULES.format(keyring=keyring, log=log, key=key_file)
    proxy = Proxy(fieldseal_bin, pki, app.port, tmp_path, rules)
    try:
        with httpx.Client(http2=True, verify=pki.context(), timeout=30) as c:
            sealed = c.get(proxy.url("/api/users/7")).json()
            token = sealed["ssn"]
            assert token.startswith("fs1.k1.")
            r = c.put(proxy.url("/api/users/7"), json={"ssn": token, "password": sealed["password"]})
            assert r.status_code == 200
            tampered = token[:-10] + ("B" if token[-10] == "A" else "A") + token[-9:]
            r = c.put(proxy.url("/api/users/7"), json={"ssn": tampered}, headers={"x-request-id": "py-tampered"})
            assert r.status_code == 400
    finally:
        proxy.stop()
    assert proxy.proc.returncode == 0

    raw = log.read_bytes()
    last_mac = recompute(raw, key)
    events = [json.loads(line) for line in raw.splitlines()]
    assert events[0]["event"] == "chain_start" and events[0]["previous"] == "none"
    assert (events[1]["event"], events[1]["reason"], events[1]["primary"]) == ("keyring_loaded", "startup", "k1")
    fields = [e for e in events if e["event"] == "fields"]
    assert [e["outcome"] for e in fields] == ["ok", "ok", "rejected"]
    assert {"path": "$['ssn']", "action": "sealed", "kid": "k1"} in fields[0]["fields"]
    assert {"path": "$['password']", "action": "opened", "kid": "k1"} in fields[1]["fields"]
    assert fields[2]["request_id"] == "py-tampered"
    assert (fields[2]["reason"], fields[2]["field"], fields[2]["kid"]) == ("authentication_failed", "$['ssn']", "k1")
    assert all(e["client"].startswith("127.0.0.1:") for e in fields)

    text = raw.decode()
    secret = json.loads(keyring.read_text())["keys"][0].get("secret")
    for forbidden in [SSN, PASSWORD, CARD, token, tampered, token.split(".")[2][:20],
                      key_file.read_text().strip()] + ([secret] if secret else []):
        assert forbidden not in text

    out = verify(fieldseal_bin, log, key_file)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"ok: {len(events)} lines, chain intact, last mac {last_mac}"

    # A restart: a second segment, whose chain_start names the last line of the first.
    proxy = Proxy(fieldseal_bin, pki, app.port, tmp_path, rules)
    try:
        with httpx.Client(http2=True, verify=pki.context(), timeout=30) as c:
            assert c.get(proxy.url("/api/users/8")).status_code == 200
    finally:
        proxy.stop()
    assert proxy.proc.returncode == 0
    both = log.read_bytes()
    assert both.startswith(raw)
    added = [json.loads(line) for line in both[len(raw):].splitlines()]
    assert [e["event"] for e in added] == ["chain_start", "keyring_loaded", "fields"]
    assert added[0]["previous"] == {"seq": len(events), "mac": last_mac}
    assert added[0]["seq"] == len(events) + 1
    last_mac = recompute(both, key)
    out = verify(fieldseal_bin, log, key_file)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"ok: {len(events) + 3} lines, chain intact, last mac {last_mac}"

    # Lines cut across the boundary: both checkers name the first line after the gap.
    n = len(events)
    start = n  # 0-based index of the restart's chain_start
    cut = tmp_path / "cut.jsonl"
    for removed, at, says, checker_says in [
        ([start - 1], start, f"a segment start that continues seq {n} ", "link"),
        ([start - 2, start - 1], start - 1, f"a segment start that continues seq {n} ", "link"),
        ([start, start + 1], start + 1, f"seq {n + 3}, expected {n + 1}", "seq"),
    ]:
        lines = both.split(b"\n")
        for i in sorted(removed, reverse=True):
            del lines[i]
        cut.write_bytes(b"\n".join(lines))
        out = verify(fieldseal_bin, cut, key_file)
        assert out.returncode == 1, out.stdout
        assert f"error: line {at}: {says}" in out.stderr, out.stderr
        with pytest.raises(AssertionError, match=f"line {at}: {checker_says}"):
            recompute(cut.read_bytes(), key)
    # The whole second segment moved before the last line of the first: reordered.
    lines = both.split(b"\n")
    lines[start - 1:start - 1] = [lines.pop(start), lines.pop(start), lines.pop(start)]
    cut.write_bytes(b"\n".join(lines))
    out = verify(fieldseal_bin, cut, key_file)
    assert out.returncode == 1 and f"error: line {start}: " in out.stderr, out.stderr
    with pytest.raises(AssertionError, match=f"line {start}: link"):
        recompute(cut.read_bytes(), key)

    # One edited byte: both this recomputation and `verify` point at the line.
    lines = raw.split(b"\n")
    n = next(i for i, e in enumerate(events) if e.get("request_id") == "py-tampered")
    lines[n] = lines[n].replace(b'"outcome":"rejected"', b'"outcome":"rejectee"')
    log.write_bytes(b"\n".join(lines))
    out = verify(fieldseal_bin, log, key_file)
    assert out.returncode == 1
    assert f"error: line {n + 1}: mac mismatch" in out.stderr
    with pytest.raises(AssertionError, match=f"line {n + 1}: mac mismatch"):
        recompute(log.read_bytes(), key)


def test_the_documented_test_vector_recomputes():
    """docs/audit.md's test vector, checked with the Python sketch's construction."""
    from conftest import ROOT
    doc = (ROOT / "docs" / "audit.md").read_text()
    block = doc.split("<!-- audit-test-vector -->\n```jsonl\n", 1)[1].split("```\n<!-- /audit-test-vector -->", 1)[0]
    last = recompute(block.encode(), bytes([0x42]) * 32)
    assert f"last mac {last}" in doc
