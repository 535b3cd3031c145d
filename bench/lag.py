"""Archive lag over several simulated hours: how long a byte waits before it is in the bucket.

    .venv/bin/python bench/lag.py [--hours 4] [--top-rate 2000] [--max-segment-age 1500]

Drives the real `Collector`, `Uploader`, `UploadSchedule` and `UploadLoop` (file:// bucket,
SQLite journal, spool, pack) with a simulated clock: 60 fake docker containers write json-file
records at rates from one line an hour to ``--top-rate`` lines a second, in 10 s steps; the
upload loop sleeps on the simulated clock, so every scheduled pass (``*:00,*:30`` plus the
host's splay) runs exactly when it would, seals what is due, then uploads.

Ground truth, not the metric: each batch of records is remembered with the time it was
written, each uploaded segment with the time its pass ran; a record's lag is the difference.
Prints the maximum and p99 lag, objects per container per day for each rate, and the maximum
``archiverd_archive_lag_seconds`` as sampled before each upload, next to the configured bound
(max_segment_age + longest upload interval + splay). Exits 1 if the lag exceeds the bound or
a byte was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import math
import random
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from archiverd.collect.collector import Collector
from archiverd.config import (
    RotationSettings,
    ScheduleSettings,
    Settings,
    SourceSettings,
    StateSettings,
)
from archiverd.destinations.filesystem import FileDestination
from archiverd.journal.db import Journal
from archiverd.logs import configure_logging
from archiverd.metrics import Metrics
from archiverd.pack import Keyring
from archiverd.upload.lag import archive_lag, lag_bound, oldest_unarchived
from archiverd.upload.schedule import UploadLoop, UploadSchedule
from archiverd.upload.uploader import Uploader

START = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
STEP = timedelta(seconds=10)
HOST = "bench-host"
# (lines per second, containers)
RATES = [
    (1 / 3600, 10),
    (1 / 600, 10),
    (1 / 60, 10),
    (1 / 10, 10),
    (1.0, 8),
    (10.0, 6),
    (100.0, 5),
    (None, 1),  # --top-rate
]


class SimClock:
    """Simulated time: `now()` for the uploader and loop, callable for the collector.

    `advance_to` moves time and returns once the upload loop is asleep again, having seen
    the new time (so a pass that became due has run to its end).
    """

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._tick = asyncio.Event()
        self._generation = 0
        self._asleep_at = -1
        self._asleep = asyncio.Event()

    def now(self) -> datetime:
        return self._now

    def __call__(self) -> datetime:
        return self._now

    async def sleep_until(self, when: datetime, wake: asyncio.Event | None = None) -> bool:
        while True:
            if wake is not None and wake.is_set():
                return True
            if self._now >= when:
                return False
            tick = self._tick
            self._asleep_at = self._generation
            self._asleep.set()
            waits = [asyncio.ensure_future(tick.wait())]
            if wake is not None:
                waits.append(asyncio.ensure_future(wake.wait()))
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()

    async def advance_to(self, when: datetime) -> None:
        self._now = when
        self._generation += 1
        self._tick.set()
        self._tick = asyncio.Event()
        while self._asleep_at != self._generation:
            self._asleep.clear()
            await self._asleep.wait()


@dataclass
class Writer:
    """One container: its log, its rate, and when each batch of records was written."""

    cid: str
    rate: float
    log: Path
    phase: float
    written: int = 0
    lines: int = 0
    ends: list[int] = field(default_factory=list)  # batch end offsets
    times: list[datetime] = field(default_factory=list)  # batch write times

    def record(self, at: datetime) -> bytes:
        ts = at.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
        text = f"{self.cid[:8]} a line of about sixty bytes of application output ok\\n"
        return f'{{"log":"{text}","stream":"stdout","time":"{ts}"}}\n'.encode()

    def step(self, t0: float, t1: float) -> None:
        """Write the lines due in (t0, t1] seconds since START, stamped with their first."""
        due = math.floor(t1 * self.rate + self.phase) - math.floor(t0 * self.rate + self.phase)
        if due <= 0:
            return
        first = (math.floor(t0 * self.rate + self.phase) + 1 - self.phase) / self.rate
        at = START + timedelta(seconds=max(t0, first))
        data = self.record(at) * due
        with self.log.open("ab") as out:
            out.write(data)
        self.written += len(data)
        self.lines += due
        self.ends.append(self.written)
        self.times.append(at)

    def oldest_in(self, start: int) -> datetime:
        """Write time of the batch holding stream offset `start`."""
        return self.times[bisect.bisect_right(self.ends, start)]


def container_dir(root: Path, cid: str) -> Path:
    folder = root / cid
    folder.mkdir(parents=True)
    doc = {
        "ID": cid,
        "Name": f"/w{cid[:6]}",
        "Config": {"Image": "bench", "Labels": {}},
        "State": {"Running": True, "Restarting": False},
    }
    (folder / "config.v2.json").write_text(json.dumps(doc))
    return folder / f"{cid}-json.log"


def percentile(pairs: list[tuple[float, int]], q: float) -> float:
    """The q-quantile of values weighted by counts."""
    pairs.sort()
    total = sum(n for _, n in pairs)
    seen = 0
    for value, n in pairs:
        seen += n
        if seen >= q * total:
            return value
    return pairs[-1][0] if pairs else 0.0


async def simulate(args: argparse.Namespace, tmp: Path) -> int:
    root = tmp / "containers"
    rng = random.Random(7)
    writers: list[Writer] = []
    for rate, count in RATES:
        for _ in range(count):
            cid = f"{rng.getrandbits(256):064x}"
            lines_per_s = rate if rate is not None else args.top_rate
            writers.append(Writer(cid, lines_per_s, container_dir(root, cid), phase=rng.random()))
    by_id = {w.cid: w for w in writers}
    settings = Settings(
        host=HOST,
        sources=(SourceSettings(kind="docker", path=root),),
        destination={"url": (tmp / "bucket").as_uri()},
        rotation=RotationSettings(max_segment_age_seconds=args.max_segment_age),
        schedule=ScheduleSettings(upload_at=args.upload_at, splay_seconds=args.splay),
        state=StateSettings(dir=tmp / "state"),
    )
    bound = lag_bound(settings)
    assert bound is not None, "--max-segment-age 0 has no bound to compare with"
    clock = SimClock(START)
    metrics = Metrics()
    journal = Journal.open(settings.state.dir)
    keyring = Keyring.from_raw_keys(bytes(range(32)))
    collector = Collector(settings, journal, keyring, metrics, host=HOST, clock=clock, watch=False)
    destination = FileDestination(settings.destination_url)
    uploader = Uploader(destination, journal, metrics, settings=settings, clock=clock, host=HOST)
    schedule = UploadSchedule(settings.schedule, HOST)
    sampled: list[float] = []
    passes: list[datetime] = []

    async def seal_then_sample() -> int:
        sealed = await collector.seal_due()
        oldest = await asyncio.to_thread(oldest_unarchived, journal, collector)
        sampled.append(archive_lag(clock.now(), oldest))
        passes.append(clock.now())
        return sealed

    loop = UploadLoop(
        uploader, schedule, clock, metrics, settings=settings.schedule, before_pass=seal_then_sample
    )
    stop, flush = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(loop.run(stop, flush))
    await clock.advance_to(START)
    seen: set[int] = set()
    lags: list[tuple[float, int]] = []  # (lag seconds, records)
    objects: dict[str, int] = defaultdict(int)
    worst_by_id: dict[str, float] = defaultdict(float)
    started = time.monotonic()
    end = START + timedelta(hours=args.hours)
    now = START
    while now < end:
        t0 = (now - START).total_seconds()
        now += STEP
        for writer in writers:
            writer.step(t0, (now - START).total_seconds())
        await clock.advance_to(now)
        new = journal._query(
            "SELECT id, json_extract(description, '$.container_id'), start_offset, end_offset "
            "FROM segments WHERE state = 'uploaded'"
        )
        for seg_id, cid, start, stop_offset in new:
            if seg_id in seen:
                continue
            seen.add(seg_id)
            writer = by_id[cid]
            objects[cid] += 1
            record_len = len(writer.record(START))
            # every batch overlapping [start, stop): its lag, weighted by its records there
            index = bisect.bisect_right(writer.ends, start)
            offset = start
            while offset < stop_offset:
                batch_end = writer.ends[index]
                take = min(batch_end, stop_offset) - offset
                lag = (passes[-1] - writer.times[index]).total_seconds()
                lags.append((lag, take // record_len))
                worst_by_id[cid] = max(worst_by_id[cid], lag)
                offset += take
                index += 1
    stop.set()
    await task
    wall = time.monotonic() - started

    # what is not in the bucket at the end: its age so far counts too
    uploaded_to: dict[str, int] = defaultdict(int)
    for cid, last in journal._query(
        "SELECT json_extract(description, '$.container_id'), MAX(end_offset) FROM segments "
        "WHERE state = 'uploaded' GROUP BY 1"
    ):
        uploaded_to[cid] = last
    waiting = [
        (end - w.oldest_in(uploaded_to[w.cid])).total_seconds()
        for w in writers
        if uploaded_to[w.cid] < w.written
    ]
    lost = [w.cid[:12] for w in writers if uploaded_to[w.cid] > w.written]
    await collector.aclose()
    await destination.close()
    journal.close()

    worst = max(lag for lag, _ in lags)
    p99 = percentile(lags, 0.99)
    days = args.hours / 24
    total_bytes = sum(w.written for w in writers)
    print(f"simulated {args.hours} h, {len(writers)} containers, {total_bytes / 1e6:.0f} MB "
          f"written, {len(passes)} upload passes, {wall:.1f} s wall")  # fmt: skip
    print(f"schedule {args.upload_at!r} splay {schedule.splay.seconds}s of {args.splay}s, "
          f"max_segment_age {args.max_segment_age}s")  # fmt: skip
    print(f"configured bound (max_segment_age + interval + splay): {bound.total_seconds():.0f} s")
    print(f"archive lag, every record uploaded: max {worst:.0f} s, p99 {p99:.0f} s "
          f"(ratio max/bound {worst / bound.total_seconds():.2f})")  # fmt: skip
    print(f"not uploaded at the end: {len(waiting)} containers, oldest waiting "
          f"{max(waiting, default=0):.0f} s")  # fmt: skip
    print(f"archiverd_archive_lag_seconds sampled before each upload: max {max(sampled):.0f} s")
    print("lines/s      containers  objects/container/day  max lag s")
    for rate, count in RATES:
        lines_per_s = rate if rate is not None else args.top_rate
        group = [w for w in writers if w.rate == lines_per_s]
        per_day = sum(objects[w.cid] for w in group) / len(group) / days
        group_worst = max(worst_by_id[w.cid] for w in group)
        print(f"{lines_per_s:<12.4g} {count:<11d} {per_day:<22.1f} {group_worst:.0f}")
    ok = worst <= bound.total_seconds() and max(waiting, default=0) <= bound.total_seconds()
    if lost:
        print(f"LOST or duplicated bytes in: {lost}")
    print("lag within the bound" if ok and not lost else "LAG EXCEEDS THE BOUND")
    return 0 if ok and not lost else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=4.0)
    parser.add_argument("--top-rate", type=float, default=2000.0, help="lines/s of the busiest")
    parser.add_argument("--max-segment-age", type=int, default=1500)
    parser.add_argument("--upload-at", default="*:00,*:30")
    parser.add_argument("--splay", type=int, default=300)
    args = parser.parse_args()
    configure_logging("warning", "console")
    with (
        tempfile.TemporaryDirectory(prefix="archiverd-lag-") as tmp,
        contextlib.suppress(KeyboardInterrupt),
    ):
        return asyncio.run(simulate(args, Path(tmp)))
    return 130


if __name__ == "__main__":
    sys.exit(main())
