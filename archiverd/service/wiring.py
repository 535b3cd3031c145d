"""What the daemon runs, as small Protocols, and how the real parts are built from settings.

`Daemon` only calls what these Protocols name, so tests inject fakes through `Components`
and production builds the real ones with `build_components`, in dependency order: key, state
dir, journal, destination, collector, clock, uploader, schedule, upload loop. Everything
opened is registered on the caller's `AsyncExitStack` so it closes in reverse order.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from archiverd.clock import Clock, SystemClock
from archiverd.collect.collector import DEFAULT_WORKERS, pack_workers
from archiverd.collect.collector import Collector as CollectorImpl
from archiverd.collect.workers import WorkerPool
from archiverd.config import ScheduleSettings, Settings
from archiverd.credentials import resolve_credentials
from archiverd.destinations import open_destination
from archiverd.destinations.base import Destination
from archiverd.formats import records
from archiverd.journal.db import Journal as JournalFile
from archiverd.metrics import Metrics
from archiverd.pack import load_keyring
from archiverd.sources.retire import RetireAfterUpload, Retirer
from archiverd.spool.statedir import StateLock, prepare_state_dir
from archiverd.upload.schedule import PassRunner, Schedule, UploadSchedule
from archiverd.upload.schedule import UploadLoop as UploadLoopImpl
from archiverd.upload.uploader import Uploader as UploaderImpl


class Collector(Protocol):
    """The front half: discover, tail, seal, pack into the spool."""

    spool_full: bool
    failures: int

    @property
    def disk_full(self) -> bool: ...
    async def run(self, stop: asyncio.Event) -> None: ...
    async def seal_all(self, *, include_open: bool) -> int: ...
    async def seal_due(self) -> int: ...
    def oldest_unsealed(self) -> datetime | None: ...
    async def aclose(self) -> None: ...


class UploadLoop(Protocol):
    """Runs the uploader on the schedule; `flush` triggers a run now."""

    @property
    def last_success(self) -> datetime | None: ...
    @property
    def last_error(self) -> str | None: ...
    def overdue(self, now: datetime) -> bool: ...
    async def run(self, stop: asyncio.Event, flush: asyncio.Event) -> None: ...


class Journal(Protocol):
    """The part of `archiverd.journal.db.Journal` the daemon itself calls."""

    def oldest_pending_sealed_at(self) -> datetime | None: ...
    def oldest_unuploaded_at(self) -> datetime | None: ...
    def packed_segments(self, limit: int | None = None) -> Sequence[Any]: ...
    def close(self) -> None: ...


class ReloadableSchedule:
    """A schedule whose rules SIGHUP can swap; the upload loop asks it for each next run."""

    def __init__(self, current: Schedule) -> None:
        self.current = current

    def replace(self, new: Schedule) -> None:
        """Use `new` from the next planned run on."""
        self.current = new

    def next_run(self, now: datetime) -> datetime:
        """The current rules' next run after `now`."""
        return self.current.next_run(now)


@dataclass
class Components:
    """The daemon's parts; any left None is built from settings by `build_components`."""

    keyring: Any = None
    journal: Journal | None = None
    destination: Destination | None = None
    collector: Collector | None = None
    uploader: PassRunner | None = None
    clock: Clock | None = None
    upload_loop: UploadLoop | None = None
    schedule: ReloadableSchedule | None = None
    schedule_factory: Callable[[ScheduleSettings], Schedule] | None = None


@dataclass(frozen=True)
class Built:
    """Every part present (what `Daemon.parts` returns after start-up)."""

    keyring: Any
    journal: Journal
    destination: Destination
    collector: Collector
    uploader: PassRunner
    clock: Clock
    upload_loop: UploadLoop
    schedule: ReloadableSchedule
    schedule_factory: Callable[[ScheduleSettings], Schedule]


async def build_components(
    settings: Settings,
    metrics: Metrics,
    given: Components,
    stack: AsyncExitStack,
) -> Built:
    """Fill in every part `given` lacks, in dependency order; register closes on `stack`.

    The state dir must pass `prepare_state_dir` and its lock is taken (held until `stack`
    closes) before the journal is opened."""
    parts = replace(given)
    if parts.keyring is None:
        credentials = resolve_credentials(settings.destination)
        parts.keyring = load_keyring(settings.encryption, credentials=credentials)
        # The master key must seal now (KMS: kms:Encrypt allowed), not at the first segment.
        await asyncio.to_thread(parts.keyring.wrap, os.urandom(32))
    await asyncio.to_thread(prepare_state_dir, settings.state.dir)
    lock = await asyncio.to_thread(StateLock, settings.state.dir)
    stack.callback(lock.release)
    if parts.journal is None:
        parts.journal = JournalFile.open(settings.state.dir)
    journal = parts.journal
    stack.callback(journal.close)
    if parts.destination is None:
        parts.destination = open_destination(settings)
    stack.push_async_callback(parts.destination.close)
    if parts.collector is None:
        pool = _workers_pool(settings)
        if pool is not None:
            stack.callback(pool.close)  # after the collector's close: it may still be packing
        parts.collector = CollectorImpl(
            settings,
            _real(journal),
            parts.keyring,
            metrics,
            host=settings.host_name,
            workers_pool=pool,
        )
    stack.push_async_callback(parts.collector.aclose)
    if parts.clock is None:
        parts.clock = SystemClock()
    if parts.uploader is None:
        uploader = UploaderImpl(
            parts.destination,
            _real(journal),
            metrics,
            settings=settings,
            clock=parts.clock,
            host=settings.host_name,
        )
        retirer = Retirer(settings.effective_sources, _real(journal), metrics)
        parts.uploader = RetireAfterUpload(uploader, retirer)
    factory = parts.schedule_factory or functools.partial(UploadSchedule, host=settings.host_name)
    if parts.schedule is None:
        parts.schedule = ReloadableSchedule(factory(settings.schedule))
    if parts.upload_loop is None:
        parts.upload_loop = UploadLoopImpl(
            parts.uploader,
            parts.schedule,
            parts.clock,
            metrics,
            settings=settings.schedule,
            before_pass=parts.collector.seal_due,  # SIGUSR1 too: seal what is due, then upload
        )
    return Built(
        keyring=parts.keyring,
        journal=journal,
        destination=parts.destination,
        collector=parts.collector,
        uploader=parts.uploader,
        clock=parts.clock,
        upload_loop=parts.upload_loop,
        schedule=parts.schedule,
        schedule_factory=factory,
    )


def worker_processes(setting: int | None, *, cpus: int, compiled: bool) -> int:
    """How many worker processes to scan and pack in: `setting` when set; unset, none where
    the record scanner is `compiled` (it releases the GIL, so the daemon's threads pack
    side by side: bench/daemon.py measured threads ahead on CPU, wall and memory) or on one
    core, else one per core (`pack_workers`: the Python scanner holds the GIL)."""
    if setting is not None:
        return setting
    if compiled or cpus < 2:
        return 0
    return pack_workers(DEFAULT_WORKERS)


def _workers_pool(settings: Settings) -> WorkerPool | None:
    """The pool of worker processes for scanning and packing, if any (`worker_processes`)."""
    processes = worker_processes(
        settings.worker_processes, cpus=os.cpu_count() or 1, compiled=records.COMPILED
    )
    if processes == 0:
        return None
    pool = WorkerPool(processes)
    pool.warm_up()
    return pool


def _real(journal: Journal) -> JournalFile:
    """The real journal, which the real collector and uploader need beside it."""
    if not isinstance(journal, JournalFile):
        raise TypeError("inject the collector and uploader together with a fake journal")
    return journal
