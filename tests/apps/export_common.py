"""What the FastAPI and Flask test apps share: the streamed export (tests/python/test_streaming.py)."""
import json

USER_PAD = "p" * 200


def export_records(n: int, broken: int, huge: int):
    """An export streamed record by record (no Content-Length): `n` records with an SSN each;
    `broken`: the stream turns into garbage after half; `huge`: one SSN of 2 MiB."""
    yield b'{"records": ['
    for i in range(n):
        if broken and i == n // 2:
            yield b'{"ssn": "999-99-9999", oops'
            return
        ssn = "9" * (2 << 20) if huge and i == n // 2 else f"{i:09d}"
        yield (b"," if i else b"") + json.dumps({"id": i, "ssn": ssn, "pad": USER_PAD}).encode()
    yield b"]}"
