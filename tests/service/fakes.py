"""In-memory pipeline parts for daemon tests, injected through `Components`.

`python -m tests.service.fakes STATE_DIR` runs a real `Daemon` (real signal handling, real
HTTP) on these fakes, so tests can send real signals to a real process, including the
second SIGTERM that ends the process with `os._exit`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from archiverd.config import HttpSettings, ScheduleSettings, Settings, StateSettings
from archiverd.destinations.base import ObjectVersion, StoredObject
from archiverd.errors import ArchiverError
from archiverd.service.wiring import Components, ReloadableSchedule
from archiverd.upload.schedule import Schedule
from archiverd.upload.uploader import UploadSummary

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class FakeClock:
    """A clock that only moves when told."""

    def __init__(self, now: datetime = T0) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    async def sleep_until(self, when: datetime, wake: asyncio.Event | None = None) -> bool:
        self.current = max(self.current, when)
        return wake is not None and wake.is_set()


@dataclass
class FakeSegment:
    segment_id: int
    sealed_at: datetime


class FakeJournal:
    """Packed segments in a list; `uploaded` what the uploader confirmed."""

    def __init__(self, events: list[str]) -> None:
        self.packed: list[FakeSegment] = []
        self.uploaded: list[int] = []
        self.closed = False
        self.events = events

    def oldest_pending_sealed_at(self) -> datetime | None:
        return min((s.sealed_at for s in self.packed), default=None)

    def oldest_unuploaded_at(self) -> datetime | None:
        return self.oldest_pending_sealed_at()

    def packed_segments(self, limit: int | None = None) -> list[FakeSegment]:
        return list(self.packed[:limit] if limit is not None else self.packed)

    def close(self) -> None:
        self.closed = True
        self.events.append("journal.close")


class FakeDestination:
    """`check` answers `problem` (raised) or ok; the daemon itself calls nothing else."""

    url = "fake://bucket/"
    prefix = ""

    def __init__(self, events: list[str], problem: ArchiverError | None = None) -> None:
        self.problem = problem
        self.checks = 0
        self.events = events

    async def head(self, key: str, version_id: str | None = None) -> StoredObject | None:
        raise NotImplementedError("the fake uploader does not call the destination")

    async def put_file(
        self,
        key: str,
        path: Path,
        metadata: Mapping[str, str],
        sha256_b64: str,
        *,
        resume: bool = False,
    ) -> StoredObject:
        raise NotImplementedError("the fake uploader does not call the destination")

    def list_versions(self, prefix: str) -> AsyncIterator[ObjectVersion]:
        raise NotImplementedError("the daemon does not list")

    def list_latest(self, prefix: str) -> AsyncIterator[ObjectVersion]:
        raise NotImplementedError("the daemon does not list")

    async def download(
        self, key: str, destination: Path, version_id: str | None = None
    ) -> StoredObject:
        raise NotImplementedError("the daemon does not download")

    async def check(self) -> str:
        self.checks += 1
        if self.problem is not None:
            raise self.problem
        return "fake bucket, versioned"

    async def close(self) -> None:
        self.events.append("destination.close")


class FakeCollector:
    """Waits for stop; `seal_all` turns `open_segments` into packed segments in the journal."""

    def __init__(self, journal: FakeJournal, clock: FakeClock, events: list[str]) -> None:
        self.journal = journal
        self.clock = clock
        self.events = events
        self.spool_full = False
        self.disk_full = False
        self.failures = 0
        self.failing_streams = 0
        self.open_segments = 0
        self.sealable = 0
        self.seal_calls: list[bool] = []
        self.crash: BaseException | None = None
        self.running = asyncio.Event()
        self._next_id = 1

    def add_packed(self, count: int) -> None:
        for _ in range(count):
            self.journal.packed.append(FakeSegment(self._next_id, self.clock.now()))
            self._next_id += 1

    async def run(self, stop: asyncio.Event) -> None:
        self.events.append("collector.run")
        self.running.set()
        if self.crash is not None:
            raise self.crash
        await stop.wait()
        self.events.append("collector.stopped")

    async def seal_all(self, *, include_open: bool) -> int:
        self.seal_calls.append(include_open)
        self.failures += self.failing_streams
        count = self.sealable + (self.open_segments if include_open else 0)
        self.add_packed(count)
        self.sealable = 0
        if include_open:
            self.open_segments = 0
        self.events.append(f"collector.seal_all({include_open})")
        return count

    async def seal_due(self) -> int:
        count, self.sealable = self.sealable, 0
        self.add_packed(count)
        self.events.append("collector.seal_due")
        return count

    def oldest_unsealed(self) -> datetime | None:
        return self.clock.now() if self.open_segments else None

    async def aclose(self) -> None:
        self.events.append("collector.aclose")


class FakeUploader:
    """Uploads everything packed; `gate` (when set) holds each pass mid-upload until opened."""

    def __init__(self, journal: FakeJournal, events: list[str]) -> None:
        self.journal = journal
        self.events = events
        self.gate: asyncio.Event | None = None
        self.in_upload = asyncio.Event()
        self.fail = False
        self.delay = 0.0
        self.passes = 0

    async def upload_pending(self) -> UploadSummary:
        self.passes += 1
        self.events.append("uploader.upload_pending")
        if self.fail:
            return UploadSummary(failed=len(self.journal.packed))
        uploaded = 0
        for segment in list(self.journal.packed):
            self.in_upload.set()
            if self.gate is not None:
                await self.gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)  # a slow network, for signal tests
            self.journal.packed.remove(segment)
            self.journal.uploaded.append(segment.segment_id)
            uploaded += 1
        return UploadSummary(uploaded=uploaded, bytes=100 * uploaded)


class FakeUploadLoop:
    """Runs the uploader on every flush until stopped."""

    def __init__(self, uploader: FakeUploader, clock: FakeClock) -> None:
        self.uploader = uploader
        self.clock = clock
        self.last_success: datetime | None = None
        self.last_error: str | None = None
        self.is_overdue = False
        self.runs = 0
        self.ran = asyncio.Event()

    def overdue(self, now: datetime) -> bool:
        return self.is_overdue

    async def run(self, stop: asyncio.Event, flush: asyncio.Event) -> None:
        while not stop.is_set():
            stopped = asyncio.ensure_future(stop.wait())
            flushed = asyncio.ensure_future(flush.wait())
            await asyncio.wait({stopped, flushed}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            flushed.cancel()
            if flush.is_set() and not stop.is_set():
                flush.clear()
                await self.uploader.upload_pending()
                self.last_success = self.clock.now()
                self.runs += 1
                self.ran.set()


class FixedSchedule:
    """Every `minutes` minutes; `label` tells schedules apart in reload tests."""

    def __init__(self, label: str, minutes: int = 30) -> None:
        self.label = label
        self.minutes = minutes

    def next_run(self, now: datetime) -> datetime:
        return now + timedelta(minutes=self.minutes)


def schedule_factory(schedule: ScheduleSettings) -> Schedule:
    return FixedSchedule(schedule.upload_at)


@dataclass
class Fakes:
    """One consistent set of fakes and the order in which things happened."""

    events: list[str] = field(default_factory=list)
    clock: FakeClock = field(default_factory=FakeClock)
    journal: FakeJournal = field(init=False)
    destination: FakeDestination = field(init=False)
    collector: FakeCollector = field(init=False)
    uploader: FakeUploader = field(init=False)
    upload_loop: FakeUploadLoop = field(init=False)

    def __post_init__(self) -> None:
        self.journal = FakeJournal(self.events)
        self.destination = FakeDestination(self.events)
        self.collector = FakeCollector(self.journal, self.clock, self.events)
        self.uploader = FakeUploader(self.journal, self.events)
        self.upload_loop = FakeUploadLoop(self.uploader, self.clock)

    def components(self) -> Components:
        return Components(
            keyring=object(),
            journal=self.journal,
            destination=self.destination,
            collector=self.collector,
            uploader=self.uploader,
            clock=self.clock,
            upload_loop=self.upload_loop,
            schedule=ReloadableSchedule(FixedSchedule("*:00,*:30")),
            schedule_factory=schedule_factory,
        )


def settings_for(state_dir: Path, **schedule: Any) -> Settings:
    """Settings on `state_dir` with HTTP on a free loopback port."""
    return Settings(
        state=StateSettings(dir=state_dir),
        http=HttpSettings(listen="127.0.0.1:0"),
        schedule=ScheduleSettings(**schedule),
    )


async def _main(state_dir: Path, upload_seconds: float) -> int:
    """A real daemon on fakes: one packed segment; each upload (SIGUSR1) takes a while."""
    from archiverd.service.daemon import Daemon

    fakes = Fakes()
    fakes.collector.add_packed(1)
    fakes.uploader.delay = upload_seconds
    settings = settings_for(state_dir, shutdown_timeout_seconds=120)
    daemon = Daemon(settings, components=fakes.components())

    async def report() -> None:
        await fakes.uploader.in_upload.wait()
        print(json.dumps({"event": "in_upload"}), flush=True)

    watcher = asyncio.create_task(report())
    code = await daemon.serve()
    watcher.cancel()
    done = {"event": "exit", "uploaded": fakes.journal.uploaded, "closed": fakes.journal.closed}
    print(json.dumps(done), flush=True)
    return code


if __name__ == "__main__":
    from archiverd.logs import configure_logging

    configure_logging("info", "json")
    raise SystemExit(asyncio.run(_main(Path(sys.argv[1]), float(sys.argv[2]))))
