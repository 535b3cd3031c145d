"""Benchmark `archiverd verify` throughput against `aws s3 cp` of the same objects, in one run.

    .venv/bin/python bench/verify.py [--size-mib 256] [--segments 64] [--rounds 2]

Starts a local SeaweedFS, packs Docker json-file logs into one chained stream exactly as the
daemon does (continuity metadata included), and measures, wall clock:

  archiverd verify               list, download, authenticate, decrypt, gunzip and hash every
                                 object on every core, check the chain; no plaintext written
  archiverd verify --parallel 1  the same on one worker process (to show the scaling)
  aws s3 cp --recursive          the baseline: download the same ciphertext, nothing checked

and prints MB/s of *ciphertext* (the bytes in the bucket) for each and the ratio to the
baseline. verify must exit 0 (the stream is complete) or the bench fails. It also times a
verify that matches nothing (start-up, client, listing) and prints each verify's MB/s of
*plaintext* after that fixed cost, the figure `bench/restore.py` prints for `get`.

archiverd runs from this checkout with its bytecode compiled first, as an install has it
(a shell with PYTHONDONTWRITEBYTECODE would otherwise compile every module in every run,
some 0.05 s of each start-up), as in bench/daemon.py.
"""

from __future__ import annotations

import argparse
import base64
import compileall
import hashlib
import io
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archiverd.formats.layout import (  # noqa: E402
    SegmentDescription,
    object_key,
    segment_metadata,
    stream_id,
)
from archiverd.pack import Keyring, pack_stream  # noqa: E402
from bench.restore import generate  # noqa: E402
from tests import servers  # noqa: E402

MB = 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256, help="plaintext in total")
    parser.add_argument("--segments", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="best of N per contender")
    args = parser.parse_args()
    compileall.compile_dir(ROOT / "archiverd", quiet=1)

    work = Path(tempfile.mkdtemp(prefix="archiverd-bench-verify-"))
    server = servers.start_seaweedfs(work / "seaweedfs")
    try:
        s3 = server.boto3_client()
        bucket = server.make_bucket()
        raw = os.urandom(32)
        keyring = Keyring.from_raw_keys(raw)
        key_file = work / "archive.key"
        key_file.write_text(base64.b64encode(raw).decode())
        key_file.chmod(0o600)

        rng = random.Random(11)
        when = datetime(2026, 11, 20, 8, tzinfo=UTC)
        per = args.size_mib * 1024 * 1024 // args.segments
        plain_total = packed_total = offset = 0
        prev: SegmentDescription | None = None
        stream = stream_id("bench", "docker:/bench", "be" * 32)
        for seq in range(args.segments):
            first = when
            plain, when = generate(per, first, rng)
            packed = io.BytesIO()
            result = pack_stream(io.BytesIO(plain), packed, keyring)
            desc = SegmentDescription(
                host="bench",
                container_id="be" * 32,
                seq=seq,
                first_ts=first,
                last_ts=when,
                start_offset=offset,
                end_offset=offset + len(plain),
                line_count=plain.count(b"\n"),
                plaintext_sha256=hashlib.sha256(plain).hexdigest(),
                container_name="bench",
                stream=stream,
                prev_seq=None if prev is None else prev.seq,
                prev_sha256="" if prev is None else prev.plaintext_sha256,
                end_of_stream=seq == args.segments - 1,
            )
            s3.put_object(
                Bucket=bucket,
                Key=object_key("archive/", desc),
                Body=packed.getvalue(),
                Metadata=segment_metadata(desc, result.envelope, result.key_id),
            )
            offset += len(plain)
            plain_total += len(plain)
            packed_total += result.packed_bytes
            prev = desc
        config = work / "archiverd.toml"
        config.write_text(
            f'[destination]\nurl = "s3://{bucket}/archive/"\n'
            f'endpoint_url = "{server.endpoint_url}"\naddressing_style = "path"\n'
            f'[encryption]\nkey_file = "{key_file}"\n'
        )
        env = {
            **os.environ,
            **server.env(),
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
        verify = [sys.executable, "-m", "archiverd", "--log-level", "warning", "verify"]
        verify += ["--config", str(config), "--json"]
        contenders = {
            f"archiverd verify (--parallel {os.cpu_count()})": verify,
            "archiverd verify --parallel 1": [*verify, "--parallel", "1"],
        }
        results: dict[str, float] = {}
        fixed = 1e9
        for _ in range(args.rounds):
            start = time.perf_counter()
            done = subprocess.run(
                [*verify, "--container", "no-such-container"],
                env=env,
                capture_output=True,
                check=False,
            )
            fixed = min(fixed, time.perf_counter() - start)
            assert done.returncode == 0, done.stderr.decode()
            assert b'"objects": 0' in done.stdout, done.stdout
            for name, argv in contenders.items():
                start = time.perf_counter()
                done = subprocess.run(argv, env=env, capture_output=True, check=False)
                seconds = time.perf_counter() - start
                assert done.returncode == 0, done.stderr.decode()
                assert b'"complete": 1' in done.stdout, done.stdout
                results[name] = min(results.get(name, 1e9), seconds)
            copy_dir = work / "copy"
            subprocess.run(["rm", "-rf", str(copy_dir)], check=True)
            start = time.perf_counter()
            subprocess.run(
                ["/usr/bin/aws", "s3", "cp", "--recursive", "--quiet", "--endpoint-url",
                 server.endpoint_url, f"s3://{bucket}/archive/", str(copy_dir)],
                env=env, check=True,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            copied = sum(p.stat().st_size for p in copy_dir.rglob("*") if p.is_file())
            assert copied == packed_total, "aws s3 cp: wrong size"
            results["aws s3 cp --recursive (download only)"] = min(
                results.get("aws s3 cp --recursive (download only)", 1e9), seconds
            )

        baseline = results["aws s3 cp --recursive (download only)"]
        print(
            f"verify of {packed_total / MB:.1f} MB ciphertext ({plain_total / MB:.1f} MB "
            f"plaintext) in {args.segments} objects, best of {args.rounds} "
            f"(wall clock, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})"
        )
        print(f"  {'archiverd verify matching nothing (start-up)':<40} {fixed:6.2f} s")
        for name, seconds in results.items():
            after = (
                f"  ({plain_total / MB / (seconds - fixed):6.1f} MB/s plaintext after start-up)"
                if name.startswith("archiverd") and seconds > fixed
                else ""
            )
            print(
                f"  {name:<40} {seconds:6.2f} s {packed_total / MB / seconds:7.1f} MB/s "
                f"ciphertext  ratio vs baseline {baseline / seconds:5.2f}x{after}"
            )
    finally:
        servers.stop(server)
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
