"""What the FastAPI and Flask test apps share: the streamed export (tests/python/test_streaming.py)."""
import json
import time

USER_PAD = "p" * 200


def export_records(n: int, broken: int, huge: int, stall: int = 0):
    """An export streamed record by record (no Content-Length): `n` records with an SSN each;
    `broken`: the stream turns into garbage after half; `huge`: one SSN of 2 MiB; `stall`:
    after half, the stream stops for that many seconds in the middle of an SSN."""
    yield b'{"records": ['
    for i in range(n):
        if stall and i == n // 2:
            yield b',{"id": %d, "ssn": "555-55-' % i
            time.sleep(stall)
            yield b'5555"}'
            continue
        if broken and i == n // 2:
            yield b'{"ssn": "999-99-9999", oops'
            return
        ssn = "9" * (2 << 20) if huge and i == n // 2 else f"{i:09d}"
        yield (b"," if i else b"") + json.dumps({"id": i, "ssn": ssn, "pad": USER_PAD}).encode()
    yield b"]}"
