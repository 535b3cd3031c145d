"""Benchmark the front half: memory while sealing a big log, CPU while watching idle ones.

    .venv/bin/python bench/seal.py [--size-gb 2] [--containers 1000] [--idle-seconds 20]
                                   [--skip-seal] [--rescan-seconds 5]

1. Writes a json-file log of --size-gb, then seals and packs it with a Collector in a child
   process (500 MB segments) and prints the child's peak RSS and throughput, next to `cat`
   and `wc -l` reading the same file (baselines measured in the same run).
2. Creates --containers idle running containers, lets a Collector (inotify + a rescan every
   --rescan-seconds; the daemon's default is 30) discover them, then prints the CPU it uses
   over --idle-seconds of idleness, its peak RSS and how long after start-up the one exited
   container among them was sealed and packed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KEY = bytes(range(32))


def _record(i: int) -> bytes:
    text = f"{i:09d} GET /api/v1/items/{i % 9973} status={200 + i % 7} {os.urandom(24).hex()}\n"
    ts = f"2026-11-23T08:{i // 600000 % 60:02d}:{i // 10000 % 60:02d}.{i % 1000000:06d}123Z"
    doc = {"log": text, "stream": "stdout", "time": ts}
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


_BLOCK: list[bytes] = []


def _block() -> bytes:
    if not _BLOCK:
        _BLOCK.append(b"".join(_record(i) for i in range(40_000)))  # ~5 MB, distinct records
    return _BLOCK[0]


def make_container(root: Path, cid: str, *, size: int, running: bool) -> Path:
    directory = root / cid
    directory.mkdir(parents=True)
    config = {
        "ID": cid,
        "Name": f"/{cid[:8]}",
        "Config": {"Image": "bench", "Labels": {}},
        "State": {"Running": running, "Restarting": False},
    }
    (directory / "config.v2.json").write_text(json.dumps(config))
    log = directory / f"{cid}-json.log"
    block = _block()
    written = 0
    with log.open("wb", buffering=16 << 20) as out:
        while written < size:
            chunk = block[: size - written]
            out.write(chunk)
            written += len(chunk)
    return log


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


async def child_seal(state: Path, root: Path) -> None:
    from archiverd.collect.collector import Collector
    from archiverd.config import RotationSettings, Settings, SourceSettings, StateSettings
    from archiverd.journal.db import Journal
    from archiverd.metrics import Metrics
    from archiverd.pack import Keyring

    settings = Settings(
        sources=(SourceSettings(kind="docker", path=root),),
        state=StateSettings(dir=state, spool_max_bytes=1 << 40),
        rotation=RotationSettings(max_segment_bytes=500_000_000),
    )
    journal = Journal.open(state)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    coll = Collector(settings, journal, Keyring.from_raw_keys(KEY), Metrics(), watch=False)
    packed = await coll.seal_all(include_open=False)
    elapsed = time.perf_counter() - start
    await coll.aclose()
    journal.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {"packed": packed, "seconds": elapsed, "rss_kib": rss, "rss_start_kib": rss_before}
        )
    )


async def child_watch(state: Path, root: Path, seconds: float, rescan: float) -> None:
    from archiverd.collect.collector import Collector
    from archiverd.config import Settings, SourceSettings, StateSettings
    from archiverd.journal.db import Journal
    from archiverd.metrics import Metrics
    from archiverd.pack import Keyring

    settings = Settings(
        sources=(SourceSettings(kind="docker", path=root, rescan_seconds=rescan),),
        state=StateSettings(dir=state),
    )
    journal = Journal.open(state)
    started = time.perf_counter()
    coll = Collector(settings, journal, Keyring.from_raw_keys(KEY), Metrics())
    stop = asyncio.Event()
    task = asyncio.create_task(coll.run(stop))
    # one exited container among the idle ones: how long until its segment is sealed+packed
    while coll.metrics.segments_packed._value.get() < 1:  # noqa: ASYNC110 - a metric
        await asyncio.sleep(0.05)
    first_seal = time.perf_counter() - started
    read = coll.metrics.source_bytes_read.labels(source=coll.sources[0].name)
    while read._value.get() < int(sys.argv[5]):  # noqa: ASYNC110 - a metric, not an event
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    before = os.times()
    await asyncio.sleep(seconds)
    after = os.times()
    stop.set()
    await task
    await coll.aclose()
    journal.close()
    cpu = (after.user - before.user) + (after.system - before.system)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"cpu_seconds": cpu, "window": seconds, "rss_kib": rss, "first_seal": first_seal}
    print(json.dumps(result))


def run_child(*args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--containers", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--skip-seal", action="store_true", help="only the watching part")
    parser.add_argument("--rescan-seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="archiverd-bench-") as tmp:
        base = Path(tmp)
        if not args.skip_seal:
            size = int(args.size_gb * 1e9)
            log = make_container(base / "big", "b" * 64, size=size, running=False)
            cat = timed(["cat", str(log)])
            wc = timed(["wc", "-l", str(log)])
            gzip1 = timed(["gzip", "-1", "-c", str(log)])
            idle_rss = run_child("--child-idle")["rss_kib"]
            sealed = run_child("--child-seal", str(base / "state1"), str(base / "big"))
            mb = size / 1e6
            print(f"sealing a {mb:.0f} MB json-file log (500 MB segments, packed + encrypted):")
            print(
                f"  collector  {sealed['seconds']:7.1f} s  {mb / sealed['seconds']:7.0f} MB/s  "
                f"peak RSS {sealed['rss_kib'] / 1024:.0f} MiB (python+imports alone: "
                f"{idle_rss / 1024:.0f} MiB)"
            )
            for name, seconds in (("cat", cat), ("wc -l", wc), ("gzip -1", gzip1)):
                print(
                    f"  {name:9}  {seconds:7.1f} s  {mb / seconds:7.0f} MB/s  "
                    f"(collector takes {sealed['seconds'] / seconds:.1f}x)"
                )
            log.unlink()
        root = base / "idle"
        for i in range(args.containers):
            make_container(root, f"{i:064x}", size=2000, running=True)
        make_container(root, "f" * 64, size=2000, running=False)  # time to first seal
        watched = run_child(
            "--child-watch",
            str(base / "state2"),
            str(root),
            str(args.idle_seconds),
            str(2000 * (args.containers + 1)),
            str(args.rescan_seconds),
        )
        share = watched["cpu_seconds"] / watched["window"] * 100
        print(
            f"watching {args.containers} idle containers (inotify + rescan every "
            f"{args.rescan_seconds:g} s):"
        )
        print(
            f"  CPU {watched['cpu_seconds']:.2f} s over {watched['window']:.0f} s = {share:.2f}% "
            f"of one core; peak RSS {watched['rss_kib'] / 1024:.0f} MiB; first segment sealed "
            f"{watched['first_seal']:.1f} s after start-up (load average "
            f"{os.getloadavg()[0]:.2f})"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-seal":
        asyncio.run(child_seal(Path(sys.argv[2]), Path(sys.argv[3])))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-watch":
        asyncio.run(
            child_watch(
                Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]), float(sys.argv[6])
            )
        )
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-idle":
        import archiverd.collect.collector  # noqa: F401

        print(json.dumps({"rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    else:
        main()
