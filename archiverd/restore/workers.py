"""Worker processes for restore's CPU-bound Python work (indexing segments for the merge
that their unpack threads could not index: `archiverd.restore.records.StreamIndexer`).

Threads overlap poorly with the downloads here: indexing such a segment is Python code that
holds the GIL, so next to the event loop and the unpack threads it only takes turns with
them. `Indexer` runs `index_segment` in a small pool of fresh interpreters instead (the
"spawn" start method: never a fork of this threaded process), started with the first
segment that needs one, while the others still download. A worker sees only paths in restore's
private temp dir: no key, no metadata.

An index is an optimisation, never a source of truth: a worker that dies (or a pool that
cannot start) only means that segment is parsed again by the merge, to the same bytes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor
from pathlib import Path

from archiverd.restore.jobs import index_beside, ready, worker_setup


class Indexer:
    """`index_segment` beside each restored segment file, in up to `workers` processes.

    `job` is what a worker runs on a path (`index_beside`; a module-level function, as the
    workers import it by name).
    """

    def __init__(self, workers: int, job: Callable[[Path], bool] | None = None) -> None:
        self._workers = max(1, workers)
        self._job = job if job is not None else index_beside
        self._pool: ProcessPoolExecutor | None = None
        self._broken = False

    def start(self) -> None:
        """Start the workers now, before the first `index` would."""
        self._started()

    async def index(self, path: Path) -> Path | None:
        """`path` once ``path.with_suffix(".idx")`` holds its index; None when there is none
        (a time beyond 64 bits, an I/O error, a job that raised, a worker that died): the
        merge then parses that segment itself."""
        pool = self._started()
        if pool is None:
            return None
        try:
            made = await asyncio.get_running_loop().run_in_executor(pool, self._job, path)
        except (BrokenExecutor, OSError):
            self._broken = True
            return None
        except Exception:  # whatever failed in the job, the merge parses the segment
            return None
        return path if made else None

    def close(self) -> None:
        """Stop the workers (waiting for those still writing into the temp dir)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _started(self) -> ProcessPoolExecutor | None:
        """The pool, its workers spawned (once) with Ctrl-C ignored from their first
        instruction: a terminal's SIGINT goes to the whole process group, and a worker
        still starting would print a traceback. The restore process stops them itself."""
        if self._pool is None and not self._broken:
            ignoring = threading.current_thread() is threading.main_thread()
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if ignoring else None
            try:
                self._pool = ProcessPoolExecutor(
                    self._workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=worker_setup,
                    initargs=(os.getpid(),),
                )
                for _ in range(self._workers):
                    # Each submit spawns a worker while none is idle (inheriting SIG_IGN).
                    self._pool.submit(ready)
            except (OSError, ImportError, BrokenExecutor):  # e.g. no /dev/shm for its locks
                self._broken = True
            finally:
                if ignoring:
                    signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
        return None if self._broken else self._pool
