"""Writing `get --out -`'s output on a thread of its own.

Once every segment verified, `get --out -` gunzips (and merges) on one thread and writes on
another: a write to a file or pipe releases the GIL, and so does ISA-L's inflate, so the
kernel copies one MiB while the next is made. Measured on 2 cores (bench/restore.py, 512
MiB): the output phase, which nothing else overlaps, is most of `get --out -`'s wall time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, cast

Chunk = bytes | memoryview

BEHIND_BYTES = 4 << 20
"""How many bytes may wait for the writer (one chunk waits whatever its size)."""


class BackgroundWriter:
    """Writes chunks to `out` on its own thread, at most `BEHIND_BYTES` behind `write`.

    The first failure of a write (a reader gone, a full disk) is raised, as it was raised
    there, by the next `write` or by `close`; chunks after it are dropped, never written out
    of order. Only `write` is offered: callers flush through `close`.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._queue: queue.SimpleQueue[Chunk | None] = queue.SimpleQueue()
        self._room = threading.Condition()
        self._waiting = 0
        """Bytes queued and not yet written (or dropped)."""
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="archiverd-stdout", daemon=True)
        self._thread.start()

    def write(self, data: Chunk) -> int:
        """Queue `data` (waiting while `BEHIND_BYTES` wait); raise the writer's failure."""
        self._raise()
        size = len(data)
        if size:
            with self._room:
                self._room.wait_for(
                    lambda: not self._waiting or self._waiting + size <= BEHIND_BYTES
                )
                self._waiting += size
            self._queue.put(data)
        return size

    def close(self, *, check: bool = True) -> None:
        """Wait until everything queued is written and `out` flushed; raise the writer's
        failure unless not `check` (the caller is failing already)."""
        self._queue.put(None)
        self._thread.join()
        if check:
            self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        # After a failure it keeps taking chunks (dropping them), so `write` never waits
        # for a writer that stopped.
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._out.write(chunk)
                except BaseException as exc:  # raised in the caller's thread
                    self._error = exc
            with self._room:
                self._waiting -= len(chunk)
                self._room.notify()
        if self._error is None:
            try:
                self._out.flush()
            except BaseException as exc:
                self._error = exc


@contextmanager
def writing_behind(out: BinaryIO) -> Iterator[BinaryIO]:
    """A `BackgroundWriter` onto `out` (typed as the file it stands for), closed on exit:
    its failure raised on a normal exit, dropped when the block raised already."""
    writer = BackgroundWriter(out)
    try:
        yield cast(BinaryIO, writer)  # it has the one method its users call
    except BaseException:
        writer.close(check=False)
        raise
    writer.close()
