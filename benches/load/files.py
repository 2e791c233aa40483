#!/usr/bin/env python3
"""File sealing throughput (MB/s of plaintext, one core): `fieldseal file seal|open` beside
`age` (the reference Go implementation, the same format and recipient type) and `openssl enc`
(AES-256-CTR with a PBKDF2 passphrase key: no authentication, a floor rather than a peer) on
the same file, rounds alternated, each command pinned to CPU 0 with `taskset`, CPU time
(user + sys of the child) and wall time per run; medians printed. fieldseal also seals to a
post-quantum `age1pq1…` recipient: the recipient only changes the header, so its figure should
match X25519's.

    cargo build --release
    python3 benches/load/files.py [--mib 256] [--rounds 3] [--baseline OLD/fieldseal]

The file lives in a temporary directory under /dev/shm when it exists (so the disk is not what
is measured). Needs age, age-keygen, openssl and taskset. Not part of the test suite.
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def timed(cmd) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of `cmd` on CPU 0."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(["taskset", "-c", "0", *map(str, cmd)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fieldseal", type=Path, default=ROOT / "target/release/fieldseal")
    ap.add_argument("--baseline", type=Path,
                    help="another fieldseal binary (e.g. a build of the previous commit) measured "
                         "in the same rounds: its seal and open rows, and the ratio to it")
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = Path(tempfile.mkdtemp(prefix="fieldseal-files-", dir=base))
    try:
        plain = d / "plain.bin"
        with open(plain, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(args.mib):
                f.write(block)
        subprocess.run(["age-keygen", "-o", d / "id.txt"], check=True, capture_output=True)
        recipient = subprocess.run(["age-keygen", "-y", d / "id.txt"], check=True,
                                   capture_output=True, text=True).stdout.strip()
        subprocess.run([args.fieldseal, "keys", "init", "--out", d / "keyring.json"], check=True,
                       capture_output=True)
        pq_recipient = subprocess.run([args.fieldseal, "file", "keygen", "--pq", "--out", d / "pq.txt"],
                                      check=True, capture_output=True, text=True).stdout.strip()

        def fresh(name):
            p = d / name
            if p.exists():
                p.unlink()
            return p

        def fresh_signed(name):
            fresh(name + ".sig")
            return fresh(name)

        # Sender signing keys: the SHA-512 of the sealed file is what signing costs.
        for key, extra in (("ed.pem", []), ("mldsa.pem", ["--pq"])):
            subprocess.run([args.fieldseal, "file", "keygen", "--sign", *extra, "--out", d / key],
                           check=True, capture_output=True)

        fs = args.fieldseal
        variants = {
            "fieldseal seal (X25519)": lambda: [fs, "file", "seal", "--in", plain, "--out", fresh("f.age"),
                                                "--to", recipient],
            "age -r (X25519)": lambda: ["age", "-r", recipient, "-o", fresh("a.age"), plain],
            "fieldseal seal (post-quantum)": lambda: [fs, "file", "seal", "--in", plain, "--out",
                                                     fresh("p.age"), "--to", pq_recipient],
            "fieldseal seal (keyring)": lambda: [fs, "file", "seal", "--in", plain, "--out", fresh("k.age"),
                                                 "--keyring", d / "keyring.json"],
            "fieldseal seal --sign Ed25519": lambda: [fs, "file", "seal", "--in", plain, "--out",
                                                     fresh_signed("e.age"), "--to", recipient,
                                                     "--sign", d / "ed.pem"],
            "fieldseal seal --sign ML-DSA-65": lambda: [fs, "file", "seal", "--in", plain, "--out",
                                                       fresh_signed("m.age"), "--to", recipient,
                                                       "--sign", d / "mldsa.pem"],
            "openssl enc -aes-256-ctr": lambda: ["openssl", "enc", "-aes-256-ctr", "-pbkdf2", "-pass",
                                                 "pass:bench", "-in", plain, "-out", fresh("o.enc")],
            "fieldseal open (X25519)": lambda: [fs, "file", "open", "--in", d / "f.age", "--out",
                                                fresh("f.out"), "--identity", d / "id.txt"],
            "fieldseal open (post-quantum)": lambda: [fs, "file", "open", "--in", d / "p.age", "--out",
                                                     fresh("p.out"), "--identity", d / "pq.txt"],
            "age -d (X25519)": lambda: ["age", "-d", "-i", d / "id.txt", "-o", fresh("a.out"), d / "a.age"],
            "openssl enc -d -aes-256-ctr": lambda: ["openssl", "enc", "-d", "-aes-256-ctr", "-pbkdf2", "-pass",
                                                    "pass:bench", "-in", d / "o.enc", "-out", fresh("o.out")],
        }
        if args.baseline:
            base = args.baseline
            variants["baseline seal (X25519)"] = lambda: [base, "file", "seal", "--in", plain, "--out",
                                                          fresh("b.age"), "--to", recipient]
            variants["baseline open (X25519)"] = lambda: [base, "file", "open", "--in", d / "b.age", "--out",
                                                          fresh("b.out"), "--identity", d / "id.txt"]
        results = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, cmd in variants.items():
                results[name].append(timed(cmd()))
        mb = args.mib * (1 << 20) / 1e6
        print(f"{args.mib} MiB file, {args.rounds} rounds, pinned to one CPU; medians")
        print(f"{'':30} {'wall s':>7} {'CPU s':>7} {'MB/s (CPU)':>11} {'vs age':>7}")
        cpu = {name: statistics.median(r[1] for r in runs) for name, runs in results.items()}
        for name, runs in results.items():
            wall = statistics.median(r[0] for r in runs)
            peer = "age -d (X25519)" if " open " in f" {name} " or name.startswith("age -d") else "age -r (X25519)"
            ratio = f"{cpu[peer] / cpu[name]:7.2f}" if not name.startswith("openssl") else ""
            print(f"{name:30} {wall:7.2f} {cpu[name]:7.2f} {mb / cpu[name]:11.0f} {ratio:>7}")
        if args.baseline:
            for op in ("seal", "open"):
                print(f"fieldseal {op} (X25519) / baseline: "
                      f"{cpu[f'baseline {op} (X25519)'] / cpu[f'fieldseal {op} (X25519)']:.2f}x the throughput")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
