"""The Collector: the front half of the pipeline (discover, tail, seal, pack into the spool).

The event loop only dispatches. Filesystem events arrive from watchdog's inotify thread via
``loop.call_soon_threadsafe`` and mark streams dirty; a periodic rescan (``rescan_seconds``)
catches anything missed. Each dirty stream is processed on a worker thread (at most
``workers`` at once, one worker per stream at a time): refresh its files, read and seal, then
pack every sealed segment into the spool and commit it as packed (packing jobs of different
streams run on every core, see `pack_workers`: in worker processes when the collector is
given a `WorkerPool`, `archiverd.collect.workers`).

The collector owns the objects it calls: a `DirtyStreams` (event bridging and rescans,
`archiverd.collect.dirty`), a `SpoolFeeder` (packing and the spool's back-pressure: no new
segment is sealed while `spool_full`; sealed data is never dropped,
`archiverd.collect.packing`) and one `StreamTail` per stream.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import structlog

from archiverd.collect.dirty import DirtyStreams, Key
from archiverd.collect.files import Opener, OpenFile, safe_open
from archiverd.collect.packing import SpoolFeeder
from archiverd.collect.pins import FileKey, Pins, StreamRef
from archiverd.collect.tail import FilesMissingError, StreamTail, TailContext
from archiverd.collect.watch import Watcher
from archiverd.collect.workers import WorkerPool
from archiverd.config import Settings
from archiverd.errors import ListingError, SourceError
from archiverd.journal.db import Journal
from archiverd.logs import error_kind
from archiverd.metrics import Metrics
from archiverd.pack import Keyring
from archiverd.sources import BaseSource, StreamInfo, make_source
from archiverd.sources.base import Candidate
from archiverd.spool.store import Spool

log = structlog.get_logger("archiverd.collect.collector")

REOPEN_ATTEMPTS = 5
"""Passes a journaled file may be missing (e.g. mid-rotation) before its bytes count as lost."""
REOPEN_GRACE = timedelta(seconds=10)
"""And how long at least: passes come as often as writes mark the stream (many a second),
while a writer rotating a long chain of files can keep one out of sight for longer than
a few of them."""
REOPEN_RETRY_SECONDS = 0.5
"""Meanwhile the running collector looks for it again this often (that stream alone)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Pass(NamedTuple):
    """A requested pass over every stream (`seal_all`, `seal_due`), unlike the watch loop's:
    its packing is awaited, then one ``final`` pass releases files and notices removals."""

    phase: str  # "once", then "final"
    seal_open: bool
    idle_finishes: bool = True
    """cri/directory files idle for ``idle_seconds`` count as finished (``run --once``)."""
    aged_before: datetime | None = None
    """Seal open segments whose oldest byte is older (``max_segment_age_seconds``)."""


DEFAULT_WORKERS = 2
"""Streams read and sealed at once (each on a thread)."""

MAX_PACK_WORKERS = 8
"""Packing jobs at once are bounded by this (each holds a few MiB: a read chunk, ISA-L's and
the spool file's buffers) as well as by the cores."""


def pack_workers(workers: int) -> int:
    """How many segments are packed at once: one per core, at least `workers`, at most
    `MAX_PACK_WORKERS` (the size of a `WorkerPool` too)."""
    return max(workers, min(os.cpu_count() or 1, MAX_PACK_WORKERS))


class Collector:
    """Discover, tail, seal and pack; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        keyring: Keyring,
        metrics: Metrics,
        *,
        host: str | None = None,
        clock: Callable[[], datetime] = _utcnow,
        spool: Spool | None = None,
        opener: Opener = os.open,
        sources: Iterable[BaseSource] | None = None,
        workers: int = DEFAULT_WORKERS,
        watch: bool = True,
        workers_pool: WorkerPool | None = None,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.keyring = keyring
        self.metrics = metrics
        self.host = host or socket.gethostname()
        self.clock = clock
        self.spool = spool or Spool(settings.state.dir, settings.state.spool_max_bytes)
        self.feeder = SpoolFeeder(settings, journal, keyring, metrics, self.spool, workers_pool)
        self.failures = 0
        """Stream passes and pack jobs that failed unexpectedly (retried; `run --once` fails)."""
        self.sources: list[BaseSource] = list(
            sources
            if sources is not None
            else (make_source(s, self._bad) for s in settings.effective_sources)
        )
        self.dirty = DirtyStreams(self.sources, journal)
        self.pins = Pins()
        """Live files opened as their writer creates them (`archiverd.collect.pins`)."""
        self._opener = opener
        self._workers = workers
        self._watch = watch
        self._tails: dict[Key, StreamTail] = {}
        self._held_files: dict[Key, int] = {}
        """Files each tail held after its last pass; their sum is the watched-files gauge."""
        self._held_total = 0
        self._held_lock = threading.Lock()
        self._reopen_attempts: dict[Key, tuple[int, datetime]] = {}
        """Per stream whose journaled files are not all found: the passes so far, and when
        the first one missed them."""
        self._removed_since: dict[Key, float] = {}
        self._busy: set[Key] = set()
        self._packing: set[Key] = set()
        self._pack_tasks: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._done = asyncio.Event()

    @property
    def spool_full(self) -> bool:
        """Whether the spool limit (or a full disk) stops sealing; see `SpoolFeeder`."""
        return self.feeder.spool_full

    @spool_full.setter
    def spool_full(self, value: bool) -> None:
        self.feeder.spool_full = value

    @property
    def disk_full(self) -> bool:
        """The last spool write failed for lack of disk space (not for the spool limit)."""
        return self.feeder.disk_full

    @property
    def packed_total(self) -> int:
        """Segments packed into the spool since start."""
        return self.feeder.packed_total

    # reporting -----------------------------------------------------------------------

    def _bad(self, reason: str) -> None:
        self.metrics.bad_input.labels(reason=reason).inc()

    def _lost(self, reason: str, n: int | None) -> None:
        self.metrics.source_gaps.labels(reason=reason).inc()
        self.metrics.source_lost_bytes.inc(n or 0)

    # lifecycle -----------------------------------------------------------------------

    async def _start(self) -> None:
        if self._started:
            return
        self._started = True
        await asyncio.to_thread(self.spool.recover, self.journal)
        self.feeder.update_spool_state()

    async def run(self, stop: asyncio.Event) -> None:
        """Watch, tail, seal and pack until `stop` is set."""
        await self._start()
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.dirty.attach(self._loop, self._wake)
        background = [
            asyncio.create_task(source.background(stop), name=f"source {source.name}")
            for source in self.sources
        ]
        await asyncio.sleep(0)  # a source's background may create its root first (demo)
        watcher = Watcher(self.dirty.on_event, self._seen) if self._watch else None
        unwatched = set(range(len(self.sources))) if watcher is not None else set()
        rescan_every = min(s.settings.rescan_seconds for s in self.sources) if self.sources else 30
        next_rescan = 0.0
        tasks: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                if watcher is not None and unwatched:
                    for index in list(unwatched):
                        root = self.sources[index].root
                        if await asyncio.to_thread(watcher.watch, index, root):
                            unwatched.discard(index)
                            self.dirty.rescan_wanted = True
                if time.monotonic() >= next_rescan or self.dirty.rescan_wanted:
                    self.dirty.rescan_wanted = False
                    next_rescan = time.monotonic() + rescan_every
                    for key in await asyncio.to_thread(self.dirty.discover, True):
                        self.dirty.mark(key)
                for key in self.dirty.take(self._busy):
                    task = asyncio.create_task(self._process(key, None))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                self._wake.clear()
                timeout = max(next_rescan - time.monotonic(), 0.01)
                if unwatched:  # a root that does not exist yet: look again soon
                    timeout = min(timeout, 1.0)
                waiter = asyncio.ensure_future(self._wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait(
                    {waiter, stopper}, timeout=timeout, return_when="FIRST_COMPLETED"
                )
                waiter.cancel()
                stopper.cancel()
        finally:
            if watcher is not None:
                await asyncio.to_thread(watcher.close)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await asyncio.gather(*tasks, *self._pack_tasks, return_exceptions=True)

    async def seal_all(self, *, include_open: bool) -> int:
        """Seal whatever is sealable now (exited/finished streams, idle ones with
        ``idle_finishes``, segments past ``max_segment_age_seconds``, and with
        `include_open` every stream up to its last record boundary), pack it, and return
        how many segments were packed."""
        return await self._pass(Pass("once", include_open, aged_before=self._aged_before()))

    async def seal_due(self) -> int:
        """Before an upload pass: discover, seal what is due (exited or removed streams, open
        segments past ``max_segment_age_seconds``) and pack it, so the upload that follows
        takes it. Unlike `seal_all`, an idle file is not taken as finished."""
        return await self._pass(
            Pass("once", False, idle_finishes=False, aged_before=self._aged_before())
        )

    def oldest_unsealed(self) -> datetime | None:
        """When the oldest byte read into an open segment was written (None: none)."""
        times = (tail.oldest_at() for tail in list(self._tails.values()))
        return min((t for t in times if t is not None), default=None)

    def _aged_before(self) -> datetime | None:
        age = self.settings.rotation.max_segment_age_seconds
        return self.clock() - timedelta(seconds=age) if age > 0 else None

    async def _pass(self, once: Pass) -> int:
        await self._start()
        before = self.packed_total
        keys = await asyncio.to_thread(self.dirty.discover)
        listed = set(keys)
        keys += [key for key in list(self._tails) if key not in listed]
        await self._idle()  # let run()'s workers finish before touching their streams
        await asyncio.gather(*(self._process(key, once) for key in keys))
        await self._idle()  # once, here: thousands of streams each waiting woke each other
        return self.packed_total - before

    async def aclose(self) -> None:
        """Release every held fd."""
        await self._idle()
        await asyncio.to_thread(self.feeder.close)
        for tail in self._tails.values():
            tail.close()
        self._tails.clear()
        self.pins.close()
        with self._held_lock:
            self._held_files.clear()
            self._held_total = 0
        self.metrics.watched_files.set(0)

    async def _idle(self) -> None:
        while self._busy or self._packing:
            self._done.clear()
            await self._done.wait()

    # work ----------------------------------------------------------------------------

    async def _process(self, key: Key, once: Pass | None) -> None:
        """Tail phase (refresh, read, seal), then hand sealed segments to a pack job.

        Packing runs as its own job so a stream keeps opening its new files (before dockerd's
        max-file deletes them) while earlier segments are being packed. With `once` the pack
        job is awaited.
        """
        while key in self._busy:  # the watch loop's worker has it
            if once is None:
                self.dirty.mark(key)
                return
            self._done.clear()
            await self._done.wait()
        self._busy.add(key)
        try:
            async with self._semaphore():
                sealed = await asyncio.to_thread(self._tail_work, key, once)
        except ListingError as exc:
            log.warning("stream cannot be looked at now; will retry", stream=key[1], error=str(exc))
            self.dirty.forget(key)
            sealed = False
        except Exception as exc:
            self.failures += 1
            log.exception(
                "stream processing failed; will retry", stream=key[1], repeat_key=error_kind(exc)
            )
            self.dirty.forget(key)
            sealed = False
        finally:
            self._busy.discard(key)
            self._done.set()
            if self._wake is not None:
                self._wake.set()
        if sealed and key not in self._packing:
            job = asyncio.create_task(self._pack_job(key))
            self._pack_tasks.add(job)
            job.add_done_callback(self._pack_tasks.discard)
            if once is not None:
                await job
                if once.phase != "final":  # one more pass: release files, notice removal
                    await self._process(key, once._replace(phase="final"))

    async def _pack_job(self, key: Key) -> None:
        self._packing.add(key)
        try:
            async with self._pack_semaphore():
                await asyncio.to_thread(self._pack_work, key)
        except Exception as exc:
            self.failures += 1
            log.exception("packing failed; will retry", stream=key[1], repeat_key=error_kind(exc))
        finally:
            self._packing.discard(key)
            self._done.set()
            self.dirty.mark(key)  # a tail pass releases files and notices removal
            if self._wake is not None:
                self._wake.set()

    _sem: asyncio.Semaphore | None = None
    _pack_sem: asyncio.Semaphore | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self._workers)
        return self._sem

    def _pack_semaphore(self) -> asyncio.Semaphore:
        if self._pack_sem is None:
            self._pack_sem = asyncio.Semaphore(pack_workers(self._workers))
        return self._pack_sem

    def _pack_work(self, key: Key) -> None:
        tail = self._tails.get(key)
        if tail is not None:
            self.feeder.pack_sealed(tail)

    def _tail_work(self, key: Key, once: Pass | None) -> bool:
        """Returns whether sealed segments wait for packing."""
        index, stream_key = key
        source = self.sources[index]
        info = source.describe(stream_key)
        tail = self._tails.get(key)
        if tail is None:
            tail = self._new_tail(index, source, info)
            if tail is None:
                if info.state == "removed":
                    self.pins.discard((source.name, stream_key))
                return False
        held = self._held_files.get(key, 0)
        try:
            return self._tail_pass(key, source, info, tail, once)
        finally:
            # the gauge follows this stream's change: summing every stream's files here
            # made discovering thousands of streams quadratic
            now = len(tail.files) if key in self._tails else 0
            with self._held_lock:
                if now:
                    self._held_files[key] = now
                else:
                    self._held_files.pop(key, None)
                self._held_total += now - held
                self.metrics.watched_files.set(self._held_total)

    def _tail_pass(
        self, key: Key, source: BaseSource, info: StreamInfo, tail: StreamTail, once: Pass | None
    ) -> bool:
        stream_key = key[1]
        if key not in self._packing:
            tail.release()
        complete = tail.refresh(info)
        self.feeder.update_spool_state()
        finish = self._finish_reason(source, info, once)
        if finish is not None:
            self.feeder.pack_ahead(tail)  # on another core while this pass scans
        tail.advance(
            may_seal=not self.spool_full,
            finish=finish,
            seal_open=once is not None and once.seal_open,
            aged_before=once.aged_before if once is not None else None,
        )
        pending = bool(self.journal.segments(tail.stream_id, "sealed"))
        if not complete or self.spool_full or not tail.at_end:
            self.dirty.forget(key)  # unfinished business: the next rescan retries
        if (
            self._gone_long_enough(key, source, info)
            and tail.at_end
            and not pending
            and key not in self._packing
            and tail.scanner.position == tail.open_segment.start_offset
        ):
            tail.close()
            self.journal.remove_stream(tail.stream_id)
            del self._tails[key]
            self.pins.discard((source.name, stream_key))
            self._removed_since.pop(key, None)
            log.info("stream removed and fully archived", stream=stream_key)
        return pending

    def _gone_long_enough(self, key: Key, source: BaseSource, info: StreamInfo) -> bool:
        """Removed, and for longer than the source's grace (a file moved away and back
        within it keeps its identity: it continues where it stopped)."""
        if info.state != "removed":
            self._removed_since.pop(key, None)
            return False
        since = self._removed_since.setdefault(key, time.monotonic())
        if time.monotonic() - since >= source.removal_grace_seconds:
            return True
        self.dirty.forget(key)  # look again on the next rescan although nothing changed
        return False

    def _new_tail(self, index: int, source: BaseSource, info: StreamInfo) -> StreamTail | None:
        # one lookup, not a listing of every stream: 10,000 new tails made this quadratic
        journaled = self.journal.stream_active(source.name, info.key)
        if not journaled and (info.state == "removed" or not info.files):
            return None
        if not journaled and info.files and self._held_elsewhere(source, info):
            return None  # a rotated name of a file another stream already reads
        ctx = TailContext(
            journal=self.journal,
            rotation=self.settings.rotation,
            host=self.host,
            root=source.root,
            source_name=source.name,
            clock=self.clock,
            describe=source.describe,
            on_bad=self._bad,
            on_lost=self._lost,
            on_read=self.metrics.source_bytes_read.labels(source=source.name).inc,
            on_sealed=lambda reason: self.metrics.segments_sealed.labels(reason=reason).inc(),
            opener=self._opener,
            workers=self.feeder.pool,
            pins=self.pins,
        )
        key = (index, info.key)
        stream_id = self.journal.stream_id(source.name, info.key)
        attempts, missing_since = self._reopen_attempts.get(key, (0, None))
        attempts += 1
        allow_loss = info.state == "removed" or (
            attempts >= REOPEN_ATTEMPTS
            and missing_since is not None
            and self.clock() - missing_since >= REOPEN_GRACE
        )
        try:
            tail = StreamTail(ctx, stream_id, info, allow_loss=allow_loss)
        except FilesMissingError as exc:
            # The grace runs from the first miss in any process: a daemon restarted within
            # it again and again would otherwise wait for its files forever.
            missing_since = self.journal.note_files_missing(stream_id, self.clock())
            self._reopen_attempts[key] = (attempts, missing_since)
            self.dirty.forget(key)
            log.warning(
                "cannot find journaled files yet; will retry",
                error=str(exc),
                repeat_key=("files missing", key),
            )
            # That stream alone, at a pace: a rescan at once came back at once, and rescanned
            # the whole root again and again for the whole grace.
            self.dirty.mark_later(key, REOPEN_RETRY_SECONDS)
            return None
        self._reopen_attempts.pop(key, None)
        self.journal.files_found(stream_id)
        self._tails[key] = tail
        return tail

    def _seen(self, index: int, path: str) -> None:
        """On the watcher's thread, when `path` was closed after writing: if it is a log file
        of a stream whose writer deletes its oldest files, take a view of the stream's
        files, note which follows which, and open those nobody holds
        (`archiverd.collect.pins`). Anything odd is left to the stream's pass; nothing
        raised here may stop the watcher's thread."""
        source = self.sources[index]
        try:
            view = _view(source, path)
            if view is None:
                return
            key, files = view
            ref = (source.name, key)
            self.pins.saw(ref, [k for _, k in files])
            for candidate, file_key in files:
                if self.pins.wants(ref, file_key):
                    self._pin(source, ref, candidate, file_key)
        except (OSError, SourceError):
            return
        except Exception as exc:
            log.exception("looking at rotated files failed", path=path, repeat_key=error_kind(exc))

    def _pin(self, source: BaseSource, ref: StreamRef, candidate: Candidate, key: FileKey) -> None:
        fd = safe_open(source.root, candidate.path, self._opener)
        opened = OpenFile(fd, path=str(candidate.path), gz=candidate.gz)
        if (opened.dev, opened.ino) == key:
            self.pins.pin(ref, opened)
        else:  # renamed since the view: the next look finds it
            opened.close()

    def _held_elsewhere(self, source: BaseSource, info: StreamInfo) -> bool:
        """Whether another stream of `source` holds the file `info` would start with (every
        held file is journaled before it is read; one indexed lookup, not a walk over every
        stream's files, which made discovering thousands of streams quadratic)."""
        try:
            st = os.stat(info.files[-1].path)
        except OSError:
            return False
        return self.journal.file_held(source.name, st.st_dev, st.st_ino)

    def _finish_reason(self, source: BaseSource, info: StreamInfo, once: Pass | None) -> str | None:
        if info.state == "exited":
            return "exit"
        if info.state in ("finished", "removed"):
            return "finished"
        if once is not None and once.idle_finishes and info.idle_finishes:
            idle = (self.clock() - self._last_write(info)).total_seconds()
            if idle >= source.settings.idle_seconds:
                return "finished"
        return None

    def _last_write(self, info: StreamInfo) -> datetime:
        try:
            mtime = os.stat(info.files[-1].path).st_mtime if info.files else 0.0
        except OSError:
            mtime = 0.0
        return datetime.fromtimestamp(mtime, UTC)


def _view(source: BaseSource, path: str) -> tuple[str, list[tuple[Candidate, FileKey]]] | None:
    """The stream `path` belongs to and its files, oldest first, with who they are, as at
    one instant: two looks in a row that agree (a rotation in between gives every name a
    new file). None when `path` is not a file of such a stream, or it kept rotating."""
    for _ in range(5):
        found = source.rotating_files(path)
        if found is None:
            return None
        key, candidates = found
        first = [_file_key(c.path) for c in candidates]
        again = [_file_key(c.path) for c in candidates]
        if first == again and all(k is not None for k in first):
            return key, [(c, k) for c, k in zip(candidates, first, strict=True) if k is not None]
    return None


def _file_key(path: Path) -> FileKey | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
