"""Benchmark archiverd's upload throughput against `aws s3 cp`, same files, same server, one run.

    .venv/bin/python bench/upload.py [--large 6] [--large-mib 24] [--small 32] [--small-kib 512]

Starts a private SeaweedFS (`weed mini`) on loopback, writes random files (several large ones
that go multipart and many small ones that go as one PutObject each), then uploads them

1. with archiverd's `Uploader` + `S3Destination` (conditional PUT with SHA-256,
   multipart with per-part SHA-256, journal marks in memory), default settings;
2. with `/usr/bin/aws s3 cp --recursive` of the same directory to another prefix;

and prints MiB/s of each and the ratio archiverd / aws. Both clients run against the same
server in the same run; each is run twice and the better time kept (the first warms caches).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry

from archiverd.config import DestinationSettings, Settings
from archiverd.destinations.s3 import S3Destination
from archiverd.logs import configure_logging
from archiverd.metrics import Metrics
from archiverd.upload.uploader import Uploader
from tests import servers
from tests.upload.helpers import MemoryQueue, Segment, make_segment

MIB = 1024 * 1024


def _aws() -> str:
    found = "/usr/bin/aws" if os.path.exists("/usr/bin/aws") else shutil.which("aws")
    if found is None:
        sys.exit("bench/upload.py needs the aws CLI (apt-get install awscli)")
    return found


async def _archiverd(
    server: servers.S3Server, bucket: str, segments: list[Segment], prefix: str
) -> tuple[float, int]:
    total = sum(s.packed_bytes for s in segments)
    config = DestinationSettings(
        url=f"s3://{bucket}/{prefix}", endpoint_url=server.endpoint_url, region=server.region,
        addressing_style="path", access_key_id=server.access_key,
        secret_access_key=server.secret_key,
    )  # fmt: skip
    async with S3Destination(config.url, config) as dest:
        uploader = Uploader(dest, MemoryQueue(segments), Metrics(CollectorRegistry()),
                            settings=Settings())  # fmt: skip
        started = time.perf_counter()
        summary = await uploader.upload_pending()
        elapsed = time.perf_counter() - started
    if summary.failed or summary.uploaded != len(segments):
        sys.exit(f"archiverd upload failed: {summary}")
    return elapsed, total


def _aws_cp(server: servers.S3Server, bucket: str, source: Path, prefix: str) -> float:
    env = {**os.environ, **server.env(), "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}  # fmt: skip
    started = time.perf_counter()
    subprocess.run(
        [_aws(), "--endpoint-url", server.endpoint_url, "s3", "cp", "--recursive", "--quiet",
         str(source), f"s3://{bucket}/{prefix}"],
        env=env, check=True,
    )  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=6)
    parser.add_argument("--large-mib", type=int, default=24)
    parser.add_argument("--small", type=int, default=32)
    parser.add_argument("--small-kib", type=int, default=512)
    args = parser.parse_args()
    configure_logging("warning")
    sizes = [args.large_mib * MIB] * args.large + [args.small_kib * 1024] * args.small
    with tempfile.TemporaryDirectory(prefix="archiverd-bench-") as tmp:
        root = Path(tmp)
        server = servers.start_seaweedfs(root / "weed")
        try:
            bucket = server.make_bucket()
            ours: list[float] = []
            theirs: list[float] = []
            total = 0
            for round_ in range(2):
                spool, copy = root / f"spool{round_}", root / f"copy{round_}"
                segments = [make_segment(spool, n, size=size) for n, size in enumerate(sizes)]
                # aws gets a copy of the same bytes (archiverd deletes its spool files).
                shutil.copytree(spool, copy)
                theirs.append(_aws_cp(server, bucket, copy, f"aws{round_}/"))
                elapsed, total = asyncio.run(_archiverd(server, bucket, segments, f"ad{round_}/"))
                ours.append(elapsed)
        finally:
            servers.stop(server)
    mib = total / MIB
    best_ours, best_theirs = min(ours), min(theirs)
    print(f"files: {args.large} x {args.large_mib} MiB + {args.small} x {args.small_kib} KiB "
          f"= {mib:.0f} MiB, SeaweedFS on loopback")  # fmt: skip
    print(f"archiverd Uploader : {mib / best_ours:8.1f} MiB/s  (seconds {ours})")
    print(f"aws s3 cp          : {mib / best_theirs:8.1f} MiB/s  (seconds {theirs})")
    print(f"ratio archiverd/aws: {best_theirs / best_ours:8.2f}")


if __name__ == "__main__":
    main()
