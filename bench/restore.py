"""Benchmark `archiverd get` restore throughput against `aws s3 cp` + `gunzip`, in one run.

    .venv/bin/python bench/restore.py [--size-mib 128] [--segments 16] [--parallel 4]

Starts a local SeaweedFS, generates Docker json-file logs, and stores every segment twice:
packed and stored exactly as the daemon does (gzip via ISA-L + AES-256-GCM, metadata from
archiverd.formats.layout, the body's SHA-256 as its S3 checksum), and as plain `gzip -6`
of the same plaintext (the baseline: what a restore without encryption costs with AWS's
own tools). Then measures, wall clock:

  archiverd get --out DIR     list, download in parallel, verify, decrypt, gunzip, rename
  archiverd get --out -       the same, to stdout (one container: its bytes in seq order)
  archiverd get --out - (2 containers)   the same data as two containers whose segments
                              overlap in time, merged record by record in time order
  aws s3 cp --recursive + gunzip   the baseline (no verification beyond gzip's CRC)

and prints MB/s of plaintext for each, the ratio to the baseline, and the CPU seconds of
the run (user + system of the child processes: steadier than wall clock on a busy box).
Outputs are compared byte for byte so a fast wrong answer cannot win.

It also times `archiverd get` with a filter that matches nothing (interpreter and imports,
S3 client, listing: what every `get` costs before its first byte) and prints, for each
`get`, the MB/s of what is left after that fixed cost, so per-byte changes stay visible
when start-up dominates a small restore.

archiverd runs from this checkout with its bytecode compiled first, as an install has it
(a shell with PYTHONDONTWRITEBYTECODE would otherwise compile every module in every run,
some 0.05 s of each start-up), as in bench/daemon.py.
"""

from __future__ import annotations

import argparse
import base64
import compileall
import gzip
import hashlib
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archiverd.destinations.common import with_body_checksum  # noqa: E402
from archiverd.formats.layout import SegmentDescription, object_key, segment_metadata  # noqa: E402
from archiverd.pack import Keyring, pack_stream  # noqa: E402
from tests import servers  # noqa: E402

MB = 1_000_000
_WORDS = [
    "order",
    "user",
    "cart",
    "payment",
    "cache",
    "db",
    "upstream",
    "retry",
    "timeout",
    "session",
    "token",
    "shard",
]


def generate(size: int, start: datetime, rng: random.Random) -> tuple[bytes, datetime]:
    """About `size` bytes of Docker json-file records (cut at a record); and the last time."""
    out = io.BytesIO()
    when = start
    while out.tell() < size:
        when += timedelta(microseconds=rng.randrange(50, 5000))
        level = rng.choice(["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"])
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(3, 12)))
        message = (
            f"{when:%H:%M:%S.%f} {level} [{rng.choice(_WORDS)}] {words} "
            f"id={rng.getrandbits(48):012x} took={rng.randrange(1, 900)}ms\n"
        )
        stamp = f"{when:%Y-%m-%dT%H:%M:%S.%f}{rng.randrange(1000):03d}Z"
        stream = "stderr" if level == "ERROR" else "stdout"
        record = {"log": message, "stream": stream, "time": stamp}
        out.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
    return out.getvalue(), when


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


CPU: dict[str, float] = {}
"""Per contender, the least CPU seconds of a run (steadier than wall clock on a busy box)."""


def timed(name: str, argv: list[str], env: dict[str, str], **kwargs: object) -> float:
    """Run `argv`; note its CPU seconds under `name`; return its wall-clock seconds."""
    start, cpu = time.perf_counter(), children_cpu()
    subprocess.run(argv, env=env, check=True, **kwargs)  # type: ignore[call-overload]
    note_cpu(name, children_cpu() - cpu)
    return time.perf_counter() - start


def tree_digest(folder: Path) -> str:
    """SHA-256 over the files' contents in name order (names differ between the two tools)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def note_cpu(name: str, seconds: float) -> None:
    CPU[name] = min(CPU.get(name, 1e9), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--segments", type=int, default=16)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="best of N per contender")
    args = parser.parse_args()
    compileall.compile_dir(ROOT / "archiverd", quiet=1)

    work = Path(tempfile.mkdtemp(prefix="archiverd-bench-restore-"))
    server = servers.start_seaweedfs(work / "seaweedfs")
    try:
        s3 = server.boto3_client()
        bucket = server.make_bucket()
        raw = os.urandom(32)
        keyring = Keyring.from_raw_keys(raw)
        key_file = work / "archive.key"
        key_file.write_text(base64.b64encode(raw).decode())
        key_file.chmod(0o600)

        rng = random.Random(7)
        pair_start = datetime(2026, 11, 20, 8, tzinfo=UTC)
        pair_end = pair_start
        per = args.size_mib * 1024 * 1024 // args.segments
        total = 0
        plain_digest = hashlib.sha256()
        all_lines: list[bytes] = []
        for index in range(args.segments):
            if index % 2 == 0:
                pair_start = pair_end
            # Segments come in pairs over the same time span: one container in "archive/"
            # (its log, in seq order), two containers in "merged/" (interleaved by time).
            first = pair_start
            plain, last = generate(per, first, rng)
            pair_end = max(pair_end, last)
            total += len(plain)
            plain_digest.update(plain)
            all_lines += plain.splitlines(keepends=True)
            packed = io.BytesIO()
            result = pack_stream(io.BytesIO(plain), packed, keyring)
            for prefix, container, seq in (
                ("archive/", "be" * 32, index + 1),
                ("merged/", ("be", "ef")[index % 2] * 32, index // 2 + 1),
            ):
                desc = SegmentDescription(
                    host="bench",
                    container_id=container,
                    seq=seq,
                    first_ts=first,
                    last_ts=last,
                    start_offset=0,
                    end_offset=len(plain),
                    line_count=plain.count(b"\n"),
                    plaintext_sha256=result.plaintext_sha256,
                    container_name="bench",
                )
                meta = segment_metadata(desc, result.envelope, result.key_id)
                body = packed.getvalue()
                sha256_b64 = base64.b64encode(hashlib.sha256(body).digest()).decode()
                # Stored as the daemon stores it (S3Destination.put_file): the body's
                # SHA-256 in its metadata and as the object's checksum, which a GET
                # with ChecksumMode returns and botocore then checks.
                s3.put_object(
                    Bucket=bucket,
                    Key=object_key(prefix, desc),
                    Body=body,
                    Metadata=with_body_checksum(meta, sha256_b64),
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=sha256_b64,
                )
            s3.put_object(
                Bucket=bucket,
                Key=f"baseline/{index + 1:08d}.log.gz",
                Body=gzip.compress(plain, compresslevel=6),
            )
        all_lines.sort()
        sorted_digest = hashlib.sha256(b"".join(all_lines)).hexdigest()
        del all_lines
        configs = {}
        for prefix in ("archive/", "merged/"):
            configs[prefix] = work / f"{prefix.strip('/')}.toml"
            configs[prefix].write_text(
                f'[destination]\nurl = "s3://{bucket}/{prefix}"\n'
                f'endpoint_url = "{server.endpoint_url}"\naddressing_style = "path"\n'
                f'[encryption]\nkey_file = "{key_file}"\n'
            )
        env = {
            **os.environ,
            **server.env(),
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

        def archiverd(prefix: str) -> list[str]:
            return [
                sys.executable,
                "-m",
                "archiverd",
                "--log-level",
                "warning",
                "get",
                "--config",
                str(configs[prefix]),
                "--parallel",
                str(args.parallel),
            ]

        results: dict[str, float] = {}
        expected = plain_digest.hexdigest()
        fixed = 1e9
        for _ in range(args.rounds):
            start = time.perf_counter()
            done = subprocess.run(
                [*archiverd("archive/"), "--container", "no-such-container", "--out", "-"],
                env=env,
                capture_output=True,
                check=False,
            )
            fixed = min(fixed, time.perf_counter() - start)
            assert done.returncode == 1, done.stderr
            assert b"no archived segment" in done.stderr, done.stderr
            out_dir = work / "ours"
            subprocess.run(["rm", "-rf", str(out_dir)], check=True)
            seconds = timed(
                "archiverd get --out DIR", [*archiverd("archive/"), "--out", str(out_dir)], env
            )
            assert tree_digest(out_dir) == expected, "archiverd get --out DIR: wrong bytes"
            results["archiverd get --out DIR"] = min(
                results.get("archiverd get --out DIR", 1e9), seconds
            )
            with (work / "merged.log").open("wb") as sink:
                seconds = timed(
                    "archiverd get --out -",
                    [*archiverd("archive/"), "--out", "-"],
                    env,
                    stdout=sink,
                )
            merged = hashlib.sha256((work / "merged.log").read_bytes()).hexdigest()
            assert merged == expected, "archiverd get --out -: wrong bytes"
            results["archiverd get --out -"] = min(
                results.get("archiverd get --out -", 1e9), seconds
            )
            name = "archiverd get --out - (2 containers, merged)"
            with (work / "merged.log").open("wb") as sink:
                seconds = timed(name, [*archiverd("merged/"), "--out", "-"], env, stdout=sink)
            lines = (work / "merged.log").read_bytes().splitlines(keepends=True)
            assert hashlib.sha256(b"".join(sorted(lines))).hexdigest() == sorted_digest
            del lines
            results[name] = min(results.get(name, 1e9), seconds)
            base_dir = work / "baseline"
            subprocess.run(["rm", "-rf", str(base_dir)], check=True)
            start, cpu = time.perf_counter(), children_cpu()
            subprocess.run(
                [
                    "/usr/bin/aws",
                    "s3",
                    "cp",
                    "--recursive",
                    "--quiet",
                    "--endpoint-url",
                    server.endpoint_url,
                    f"s3://{bucket}/baseline/",
                    str(base_dir),
                ],
                env=env,
                check=True,
            )
            subprocess.run(
                ["gunzip", *sorted(str(p) for p in base_dir.iterdir())], env=env, check=True
            )
            seconds = time.perf_counter() - start
            note_cpu("aws s3 cp + gunzip", children_cpu() - cpu)
            assert tree_digest(base_dir) == expected, "baseline: wrong bytes"
            results["aws s3 cp + gunzip"] = min(results.get("aws s3 cp + gunzip", 1e9), seconds)

        baseline = results["aws s3 cp + gunzip"]
        print(
            f"restore of {total / MB:.1f} MB plaintext in {args.segments} segments, "
            f"--parallel {args.parallel}, best of {args.rounds} "
            f"(wall clock, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})"
        )
        print(f"  {'archiverd get matching nothing (start-up)':<46} {fixed:6.2f} s")
        for name, seconds in results.items():
            after = (
                f", {total / MB / (seconds - fixed):6.1f} MB/s after start-up"
                if name.startswith("archiverd") and seconds > fixed
                else ""
            )
            print(
                f"  {name:<46} {seconds:6.2f} s {total / MB / seconds:7.1f} MB/s  "
                f"ratio vs baseline {baseline / seconds:5.2f}x  "
                f"(CPU {CPU[name]:5.2f} s, {total / MB / CPU[name]:6.1f} MB per CPU-s{after})"
            )
        if os.environ.get("BENCH_KEEP"):
            input(f"configs {configs}; env {server.env()}; press enter to stop")
    finally:
        servers.stop(server)
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
