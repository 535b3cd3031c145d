"""Packing in worker processes, so independent segments are packed on every core.

Threads are not enough here (measured on 2 cores, issue 14): the record scanner's
``bytes.count`` holds the GIL, and a packing thread beside it ran ~1.3x, where the same two
jobs in two processes ran 2x. So the daemon packs a segment in a worker process:

- forked from a forkserver that preloaded only this module, never from the threaded daemon;
- reading the daemon's own held fds, passed over a Unix socket (SCM_RIGHTS, with
  `multiprocessing.reduction.DupFd`), with the same `RangeReader` as in the daemon, so a
  rotated, renamed or deleted file is read exactly as it would be there;
- writing the object body into a pipe that the daemon copies into the spool's temp file, so
  writing, fsync and disk-full handling stay the spool's;
- given only the object's data key (`ObjectKey`, drawn and wrapped in the daemon), over the
  pool's pipe: never the master key, never in a process argument.

A pool that cannot start (no ``/dev/shm``, a seccomp filter) or a worker that dies is no
failure: the segment is packed on the calling thread instead, and the pool is not used again.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import select
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.reduction import DupFd
from typing import Any, BinaryIO

import structlog

from archiverd.collect.files import OpenFile, RangeReader, Span, as_binary
from archiverd.pack.stream import ObjectKey, PackResult, pack_with_key

log = structlog.get_logger("archiverd.collect.packpool")

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


class PackPool:
    """Packs segments in up to `workers` processes; see the module docstring."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.broken = False
        """The pool failed once; every segment is packed on its calling thread since."""
        self._executor: ProcessPoolExecutor | None = None
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
                future = executor.submit(
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
            return future.result()
        except BrokenProcessPool as exc:
            self._give_up(exc)
            dst.seek(0)
            dst.truncate()
            return None
        finally:
            os.close(read_end)

    def worker_pids(self) -> list[int]:
        """The live workers' pids (for tests and diagnostics)."""
        executor = self._executor
        processes = getattr(executor, "_processes", None) or {}
        return [p.pid for p in processes.values() if p.pid is not None]

    def close(self) -> None:
        """Stop the workers (a segment being packed finishes first)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _running(self) -> ProcessPoolExecutor | None:
        with self._lock:
            if self.broken:
                return None
            if self._executor is None:
                try:
                    context = multiprocessing.get_context("forkserver")
                    context.set_forkserver_preload([__name__])
                    self._executor = ProcessPoolExecutor(self.workers, mp_context=context)
                except (OSError, ValueError, ImportError) as exc:
                    self._give_up_locked(exc)
                    return None
            return self._executor

    def _give_up(self, exc: BaseException) -> None:
        with self._lock:
            self._give_up_locked(exc)

    def _give_up_locked(self, exc: BaseException) -> None:
        if not self.broken:
            log.warning(
                "packing in worker processes failed; packing on threads from now on",
                error=str(exc) or type(exc).__name__,
            )
        self.broken = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


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
