"""Benchmark archiverd pack/unpack against gzip -6 and zlib level 6, measured in one run.

    .venv/bin/python bench/pack.py [--size-mib 256] [--keep DIR]

Generates a Docker json-file log, then on ONE core (sched_setaffinity) measures in child
processes: archiverd pack (gzip via ISA-L + AES-256-GCM) and unpack (verify, decrypt,
gunzip), each child's peak RSS (ru_maxrss), `gzip -6`, `gzip -6 | openssl aes-256-ctr`, and
Python zlib level 6. Prints throughput (MB/s of plaintext), ratios against the baselines and
compression ratios, plus every ISA-L level so the default level is chosen by measurement.
Targets: pack >= 400 MB/s, unpack >= 600 MB/s, peak RSS < 64 MB. Rates are per CPU-second
(user+sys, pinned to one core) so other load on the machine skews them less than wall time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

MB = 1_000_000
_PATHS = ["/api/v1/orders", "/api/v1/users/me", "/api/v1/cart", "/healthz", "/metrics"]
_STATUS = [200, 200, 200, 200, 201, 204, 304, 400, 404, 500]


def _message(rng: random.Random, when: datetime) -> str:
    """One application log message: a few templates with varying fields, like real services."""
    ts = f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond // 1000:03d}Z"
    kind = rng.random()
    if kind < 0.55:
        return (
            f"{ts} INFO  [http] {rng.choice(['GET', 'GET', 'POST', 'PUT'])} "
            f"{rng.choice(_PATHS)} {rng.choice(_STATUS)} {rng.randrange(1, 900)}ms "
            f"bytes={rng.randrange(80, 40000)} request_id={rng.getrandbits(64):016x}"
        )
    if kind < 0.75:
        return (
            f"{ts} DEBUG [db] SELECT orders WHERE customer_id={rng.randrange(10**6)} "
            f"took {rng.randrange(1, 200)}ms rows={rng.randrange(50)}"
        )
    if kind < 0.85:
        return f"{ts} WARN  [cache] miss key=user:{rng.randrange(10**5)}:profile ttl=300s"
    if kind < 0.93:
        return (
            f"{ts} ERROR [payments] upstream timeout after {rng.randrange(1000, 5000)}ms, "
            f"retrying (attempt {rng.randrange(1, 5)}/5) order_id={rng.randrange(10**8)}"
        )
    frame = rng.choice(["OrderService.create", "PaymentClient.charge", "Repo.save"])
    return f"\tat com.example.shop.{frame}({frame.split('.')[0]}.java:{rng.randrange(40, 400)})"


def generate(path: Path, size: int, seed: int = 42) -> None:
    """Write `size` bytes of Docker json-file lines (templated messages, rising timestamps)."""
    rng = random.Random(seed)
    when = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    written = 0
    with path.open("wb") as out:
        while written < size:
            lines = []
            for _ in range(2000):
                when += timedelta(microseconds=rng.randrange(20, 20_000))
                stamp = f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond:06d}{rng.randrange(1000):03d}Z"
                stream = "stderr" if rng.random() < 0.1 else "stdout"
                record = {"log": _message(rng, when) + "\n", "stream": stream, "time": stamp}
                lines.append(json.dumps(record, separators=(",", ":")))
            block = ("\n".join(lines) + "\n").encode()
            out.write(block[: size - written])
            written += min(len(block), size - written)


def child(argv: list[str]) -> None:
    """Run one measured operation in this (pinned) process; print JSON to stdout."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from archiverd.pack import Keyring, pack_stream, tune_allocator, unpack_to_file

    op, src, dst, key_hex, level = argv
    if op != "unpack-glibc-defaults":  # the CLI tunes malloc at its entry point; do the same
        tune_allocator()
    keyring = Keyring.from_raw_keys(bytes.fromhex(key_hex))
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    if op == "pack":
        body_path = Path(dst + ".body")
        with open(src, "rb") as inp, body_path.open("wb") as body:
            result = pack_stream(inp, body, keyring, level=int(level))
        with open(dst + ".meta", "w") as meta:
            json.dump(result.envelope, meta)
        packed = result.packed_bytes
    else:
        with open(src + ".meta") as meta:
            envelope = json.load(meta)
        with open(src + ".body", "rb") as body:
            # `archiverd unpack` skips the plaintext SHA-256 (the tag and gzip CRC verify);
            # `archiverd get` computes it to compare with the segment's metadata.
            unpack_to_file(body, envelope, Path(dst), keyring, hash_plaintext=op == "unpack-sha")
        packed = 0
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    user = after.ru_utime - before.ru_utime
    cpu = user + after.ru_stime - before.ru_stime
    result = {"seconds": seconds, "cpu": cpu, "user": user, "packed": packed}
    print(json.dumps({**result, "rss_kib": after.ru_maxrss}))


def run_child(op: str, src: Path, dst: Path, key: bytes, level: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", op, str(src), str(dst), key.hex(), str(level)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def timed_shell(command: str) -> tuple[float, float]:
    """(wall, CPU) seconds of a shell pipeline pinned to one core; CPU sums its processes."""
    cpu = str(min(os.sched_getaffinity(0)))
    prefix = f"taskset -c {cpu} " if shutil.which("taskset") else ""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(f"{prefix}sh -c '{command}'", shell=True, check=True)  # noqa: S602
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def zlib6(path: Path) -> tuple[float, float, int]:
    """In-process zlib level 6 (gzip wrapper), 1 MiB chunks: (wall, CPU, compressed bytes)."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    size = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    with path.open("rb") as inp:
        while chunk := inp.read(1 << 20):
            size += len(compressor.compress(chunk))
    size += len(compressor.flush())
    return time.perf_counter() - start, time.process_time() - cpu_start, size


def components(log: Path, level: int) -> None:
    """CPU cost of each stage on the first 64 MiB, so the totals can be read against them."""
    import hashlib as _hashlib

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from isal import isal_zlib

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with log.open("rb") as handle:
        data = handle.read(64 * 1024 * 1024)
    chunks = [data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)]

    def deflate() -> bytes:
        compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)
        return b"".join([*(compressor.compress(c) for c in chunks), compressor.flush()])

    packed = deflate()

    def inflate() -> None:
        inflater = isal_zlib.decompressobj(31)
        for i in range(0, len(packed), 1 << 20):
            piece = packed[i : i + (1 << 20)]
            while piece:
                inflater.decompress(piece, 1 << 20)
                piece = inflater.unconsumed_tail

    def gcm() -> None:
        encryptor = Cipher(algorithms.AES(os.urandom(32)), modes.GCM(os.urandom(12))).encryptor()
        for c in chunks:
            encryptor.update(c)

    print("\nstages alone on one core (MB/s of plaintext through each, best of 3):")
    stages = [
        ("sha256", lambda: [_hashlib.sha256(c) for c in chunks]),
        (f"isal deflate {level}", deflate),
        ("isal inflate", inflate),
        ("aes-256-gcm", gcm),
    ]
    for name, stage in stages:
        best = min(_cpu(stage) for _ in range(3))
        print(f"  {name:<20} {len(data) / best / MB:7.0f} MB/s")


def _cpu(stage: Any) -> float:
    start = time.process_time()
    stage()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--keep", type=Path, help="work directory to keep (default: temp)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="archiverd-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report(work, args.size_mib * 1024 * 1024)
    finally:
        if args.keep is None:
            shutil.rmtree(work)


def _row(name: str, size: int, wall: float, cpu: float, extra: str = "") -> None:
    print(f"  {name:<20} {size / wall / MB:7.0f} MB/s wall {size / cpu / MB:7.0f} MB/s CPU {extra}")


def report(work: Path, size: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from archiverd.config import DEFAULT_COMPRESSION_LEVEL

    log = work / "docker-json.log"
    print(f"generating {size / MB:.0f} MB Docker json-file log in {work} ...", flush=True)
    generate(log, size)
    key = os.urandom(32)
    level = DEFAULT_COMPRESSION_LEVEL
    print(f"load average before measuring: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

    print("\nISA-L levels (pack = gzip + AES-256-GCM, one core):")
    for lvl in range(4):
        run = run_child("pack", log, work / f"l{lvl}", key, lvl)
        mark = "  <- default" if lvl == level else ""
        _row(
            f"level {lvl}",
            size,
            run["seconds"],
            run["cpu"],
            f"ratio {size / run['packed']:.2f}x{mark}",
        )

    pack = run_child("pack", log, work / "obj", key, level)
    unpack = run_child("unpack", work / "obj", work / "restored.log", key, level)
    unpack_sha = run_child("unpack-sha", work / "obj", work / "restored.log", key, level)
    untuned = run_child("unpack-glibc-defaults", work / "obj", work / "restored.log", key, level)
    same = _sha256(work / "restored.log") == _sha256(log)
    gzip_wall, gzip_cpu = timed_shell(f"gzip -6 -c {log} > {work}/gz6.gz")
    gzip_size = (work / "gz6.gz").stat().st_size
    gunzip_wall, gunzip_cpu = timed_shell(f"gzip -d -c {work}/gz6.gz > {work}/gunzipped.log")
    ossl = None
    if shutil.which("openssl"):
        iv, ossl_key = "00" * 16, os.urandom(32).hex()
        ossl = timed_shell(
            f"gzip -6 -c {log} | openssl enc -aes-256-ctr -K {ossl_key} -iv {iv} > /dev/null"
        )
    zlib_wall, zlib_cpu, zlib_size = zlib6(log)

    components(log, level)
    print(f"\nplaintext {size / MB:.0f} MB, level {level}, round trip identical: {same}")
    runs = (
        ("archiverd pack", pack),
        ("archiverd unpack", unpack),
        ("unpack + sha256 (get)", unpack_sha),
        ("unpack, glibc malloc", untuned),
    )
    for name, run in runs:
        rss, user_rate = run["rss_kib"] / 1024, size / run["user"] / MB
        extra = f"peak RSS {rss:.1f} MiB, user-only {user_rate:.0f} MB/s"
        _row(name, size, run["seconds"], run["cpu"], extra)
    _row("gzip -6", size, gzip_wall, gzip_cpu)
    _row("gzip -d", size, gunzip_wall, gunzip_cpu)
    if ossl is not None:
        _row("gzip -6 | openssl", size, *ossl, "(aes-256-ctr)")
    _row("python zlib 6", size, zlib_wall, zlib_cpu)

    print("\nspeed-up (baseline CPU time / archiverd CPU time; wall in brackets):")
    baselines = [("gzip -6", gzip_wall, gzip_cpu), ("python zlib 6", zlib_wall, zlib_cpu)]
    if ossl is not None:
        baselines.insert(1, ("gzip -6 | openssl", *ossl))
    for name, wall, cpu in baselines:
        print(f"  pack vs {name:<18} {cpu / pack['cpu']:5.1f}x  ({wall / pack['seconds']:.1f}x)")
    print(
        f"  unpack vs gzip -d          {gunzip_cpu / unpack['cpu']:5.1f}x  "
        f"({gunzip_wall / unpack['seconds']:.1f}x)"
    )

    print("\ncompression ratio (plaintext / output):")
    print(f"  archiverd level {level}  {size / pack['packed']:5.2f}x")
    print(f"  gzip -6            {size / gzip_size:5.2f}x")
    print(f"  python zlib 6      {size / zlib_size:5.2f}x")
    pack_rate, unpack_rate = size / pack["cpu"] / MB, size / unpack["cpu"] / MB
    rss = max(pack["rss_kib"], unpack["rss_kib"]) * 1024
    targets = [
        ("pack >= 400 MB/s", pack_rate >= 400),
        ("unpack >= 600 MB/s", unpack_rate >= 600),
        ("peak RSS < 64 MB", rss < 64 * MB),
    ]
    verdict = ", ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in targets)
    print(f"\ntargets (per CPU-second on one core): {verdict}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
