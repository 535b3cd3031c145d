"""Worker processes for the collector's two CPU-bound jobs: scanning backlogs for record
boundaries, and packing sealed segments, so both run on every core.

Threads were not enough here (measured on 2 cores, issue 14): the record scanner's Python
``bytes.count`` passes held the GIL, and a packing thread beside it ran ~1.3x, where the same
two jobs in two processes ran 2x. The scanner's compiled pass (`archiverd/formats/_scan.c`)
now releases the GIL and costs a tenth of packing, so processes matter mostly for packing
segments side by side, and where the scanner was not built. The daemon hands both jobs to a
`WorkerPool`:

- its processes are forked from a forkserver that preloaded only this module, never from the
  threaded daemon;
- they read the daemon's own held fds, passed over a Unix socket (SCM_RIGHTS, with
  `multiprocessing.reduction.DupFd`), so a rotated, renamed or deleted file is read exactly
  as it is in the daemon;
- `scan` feeds a stream's `Scanner` (pickled, without its callback) the bytes of one file
  range, in the chunks the daemon would read, and returns it with the bad input it met; the
  daemon reports that and carries on from the scanner's new position;
- `pack` writes the object body into a pipe that the daemon copies into the spool's temp
  file, so writing, fsync and disk-full handling stay the spool's. The worker gets only the
  object's data key (`ObjectKey`, drawn and wrapped in the daemon), over the pool's pipe:
  never the master key, never in a process argument.

A pool that cannot start (no ``/dev/shm``, a seccomp filter) or a worker that dies is no
failure: the job is done on the calling thread instead, and the pool is not used again.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import select
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.reduction import DupFd
from typing import Any, BinaryIO, TypeVar

import structlog

from archiverd.collect.files import OpenFile, RangeReader, Span, as_binary
from archiverd.formats.records import Scanner
from archiverd.lifeline import end_with
from archiverd.pack.stream import ObjectKey, PackResult, pack_with_key, tune_allocator

log = structlog.get_logger("archiverd.collect.workers")

T = TypeVar("T")

_PIPE_BYTES = 1 << 20
_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class _SpanFd:
    """A `Span` as it travels to a worker: its fd (a `DupFd`) and where it sits."""

    fd: Any  # multiprocessing.reduction.DupFd: detach() gives the worker its own fd
    path: str
    gz: bool
    base: int
    length: int


@dataclass(frozen=True)
class Scanned:
    """What `WorkerPool.scan` did: the scanner after the range, and what it read."""

    scanner: Scanner
    bytes_read: int
    """Fewer than asked when the file turned out shorter (truncated meanwhile)."""
    bad: list[str]
    """Bad-input reasons met, in order, for the daemon to report."""
    last: bytes
    """The last bytes read (up to the `last_bytes` asked for)."""


class WorkerPool:
    """Scans and packs in up to `workers` processes; see the module docstring."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.broken = False
        """The pool failed once; every segment is packed on its calling thread since."""
        self.jobs = {"scan": 0, "pack": 0}
        """Jobs done in a worker, by kind."""
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False
        self._lock = threading.Lock()

    def pack(
        self,
        spans: Sequence[Span],
        start: int,
        end: int,
        dst: BinaryIO,
        key: ObjectKey,
        *,
        level: int,
    ) -> PackResult | None:
        """Pack stream bytes [start, end) of `spans` into `dst` in a worker process.

        Returns None, with `dst` left empty, when no worker can (the caller packs on its own
        thread). Raises what packing on the thread raises: `SourceError` (or OSError) for
        the source, OSError from `dst`.
        """
        executor = self._running()
        if executor is None:
            return None
        read_end, write_end = os.pipe()
        try:
            with contextlib.suppress(OSError):  # fewer, larger copies; the default works too
                fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
            try:
                future = _submit(
                    executor,
                    _pack_in_worker,
                    [_span_fd(span) for span in spans],
                    start,
                    end,
                    DupFd(write_end),
                    key,
                    level,
                )
            finally:
                os.close(write_end)  # the worker holds the only write end now
            _copy(read_end, dst, future)
            result = future.result()
            self._count("pack")
            return result
        except BrokenProcessPool as exc:
            self._give_up(exc)
            dst.seek(0)
            dst.truncate()
            return None
        finally:
            os.close(read_end)

    def scan(
        self, file: OpenFile, offset: int, n: int, scanner: Scanner, *, chunk: int, last_bytes: int
    ) -> Scanned | None:
        """Feed `scanner` bytes [offset, offset + n) of `file` in a worker, in reads of
        `chunk` from `offset` (as the daemon's tail reads). None when no worker can."""
        executor = self._running()
        if executor is None:
            return None
        try:
            job = _submit(
                executor, _scan_in_worker, DupFd(file.fd), offset, n, scanner, chunk, last_bytes
            )
            scanned = job.result()
            self._count("scan")
            return scanned
        except BrokenProcessPool as exc:
            self._give_up(exc)
            return None

    def warm_up(self) -> None:
        """Start the workers in the background now, so the first job does not wait for the
        forkserver to start and import the packer (a few hundred ms)."""
        threading.Thread(target=self._warm, name="archiverd-workers-start", daemon=True).start()

    def _warm(self) -> None:
        executor = self._running()
        if executor is None:
            return
        try:
            for job in [_submit(executor, os.getpid) for _ in range(self.workers)]:
                job.result()
        except Exception as exc:  # any failure to start means threads (quiet once closed)
            self._give_up(exc)
            return
        log.info("worker processes started", processes=self.workers)

    def worker_pids(self) -> list[int]:
        """The live workers' pids (for tests and diagnostics)."""
        executor = self._executor
        processes = getattr(executor, "_processes", None) or {}
        return [p.pid for p in processes.values() if p.pid is not None]

    def close(self) -> None:
        """Stop the workers (a segment being packed finishes first)."""
        with self._lock:
            executor, self._executor = self._executor, None
            self._closed = True
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _running(self) -> ProcessPoolExecutor | None:
        with self._lock:
            if self.broken or self._closed:
                return None
            if self._executor is None:
                try:
                    context = multiprocessing.get_context("forkserver")
                    context.set_forkserver_preload([__name__])
                    self._executor = ProcessPoolExecutor(
                        self.workers,
                        mp_context=context,
                        initializer=_start_worker,
                        initargs=(os.getpid(),),
                    )
                except (OSError, ValueError, ImportError) as exc:
                    self._give_up_locked(exc)
                    return None
            return self._executor

    def _count(self, kind: str) -> None:
        with self._lock:
            self.jobs[kind] += 1

    def _give_up(self, exc: BaseException) -> None:
        with self._lock:
            self._give_up_locked(exc)

    def _give_up_locked(self, exc: BaseException) -> None:
        if not self.broken and not self._closed:
            log.warning(
                "packing in worker processes failed; packing on threads from now on",
                error=str(exc) or type(exc).__name__,
            )
        self.broken = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def _submit(executor: ProcessPoolExecutor, fn: Callable[..., T], *args: Any) -> Future[T]:
    """`executor.submit`, with a worker that could not be started (the pool spawns them on
    submit: a seccomp filter, no /dev/shm, a pool closed meanwhile) raised as the pool's
    own failure, `BrokenProcessPool`."""
    try:
        return executor.submit(fn, *args)
    except (OSError, RuntimeError) as exc:
        raise BrokenProcessPool(f"cannot start a worker: {exc}") from exc


def _start_worker(daemon_pid: int) -> None:
    """In a new worker: glibc tuning as in the daemon; SIGINT and SIGTERM ignored (Ctrl-C
    or a signal to the process group is the daemon's to handle: it stops the pool itself);
    and its end when the daemon is gone (`archiverd.lifeline`: a killed daemon never stops
    its pool)."""
    tune_allocator()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    end_with(daemon_pid)


def _span_fd(span: Span) -> _SpanFd:
    fd = DupFd(span.file.fd)
    return _SpanFd(fd, span.file.path, span.file.gz, span.base, span.length)


def _copy(read_end: int, dst: BinaryIO, future: Future[PackResult]) -> None:
    """Copy the worker's body from the pipe into `dst` until the worker closes it, or until
    the task ended without ever opening it (a worker that died before taking its fds)."""
    while True:
        ready, _, _ = select.select([read_end], [], [], _POLL_SECONDS)
        if not ready:
            if future.done():
                return
            continue
        data = os.read(read_end, _PIPE_BYTES)
        if not data:
            return
        dst.write(data)


def _scan_in_worker(
    fd: Any, offset: int, n: int, scanner: Scanner, chunk: int, last_bytes: int
) -> Scanned:
    """In a worker: feed `scanner` [offset, offset + n) of the file `fd`, stopping early at
    a short read."""
    bad: list[str] = []
    scanner.report_to(bad.append)
    own = fd.detach()
    done, last = 0, b""
    try:
        while done < n:
            data = os.pread(own, min(chunk, n - done), offset + done)
            if not data:
                break
            scanner.feed(data)
            done += len(data)
            last = (last + data[-last_bytes:])[-last_bytes:]
    finally:
        os.close(own)
    return Scanned(scanner, done, bad, last)  # pickled without `bad.append` (report_to)


def _pack_in_worker(
    spans: list[_SpanFd], start: int, end: int, sink: Any, key: ObjectKey, level: int
) -> PackResult:
    """In a worker: pack [start, end) of the daemon's files into the pipe `sink`."""
    out = open(sink.detach(), "wb")  # noqa: SIM115 (closed in the finally below)
    fds = [span.fd.detach() for span in spans]  # every one, so none waits in the sharer
    files: list[OpenFile] = []
    try:
        for fd, span in zip(fds, spans, strict=True):
            files.append(OpenFile(fd, path=span.path, gz=span.gz))
        placed = [Span(f, s.base, s.length) for f, s in zip(files, spans, strict=True)]
        return pack_with_key(as_binary(RangeReader(placed, start, end)), out, key, level=level)
    finally:
        out.close()
        for fd in fds[len(files) :]:
            os.close(fd)
        for file in files:
            file.close()
