"""Decrypt while downloading: an object's body goes from the network to a worker thread.

`stream_object` GETs one object version through a destination that streams bodies
(`BodyReader`: S3), hands its chunks to `work` running in a thread of `executor` (a
file-like ``read`` there, at most `DEPTH` chunks waiting), and returns the metadata and what
`work` returned. No ciphertext touches the disk. `work` is an unpack that releases nothing
before the GCM tag verified (`archiverd.pack`), so streaming changes when bytes are
checked, never what is released.

A short or corrupt transfer (`RetryableDestinationError` at the end of the chunks) stops
`work` (it sees `DownloadAbortedError` and removes what it wrote) and the whole object is read
again, up to `attempts` times. An error of `work` (a wrong key, a tampered body) stops the
download and is raised as is.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager
from typing import BinaryIO, Protocol, TypeVar, cast, runtime_checkable

import stamina

from archiverd.destinations.base import StoredObject
from archiverd.errors import DownloadAbortedError, RetryableDestinationError

_T = TypeVar("_T")
DEPTH = 4
"""Chunks (about 1 MiB each) waiting for the worker, per object."""


@runtime_checkable
class BodyReader(Protocol):
    """A destination that can stream an object's body (`S3Destination.reading`)."""

    def reading(
        self, key: str, version_id: str | None = None
    ) -> AbstractAsyncContextManager[tuple[StoredObject, AsyncIterator[bytes]]]:
        """The version's metadata and its body's chunks (ending in a retryable error when
        the body came short or corrupt)."""
        ...


_END = object()
_ABORT = object()


class ChunkPipe:
    """Chunks from the event loop to one worker thread, at most `depth` waiting.

    The loop side `put`s and then `close`s (or `abort`s); the thread side `read`s them like a
    file and calls `stop` when done, so a producer never waits for a worker that left.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = DEPTH) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._space = asyncio.Semaphore(depth)
        self._stopped = False
        self._ended = False

    async def put(self, chunk: bytes) -> bool:
        """Queue `chunk` (waiting for room); False when the worker stopped reading."""
        if not self.stopped:
            await self._space.acquire()
        if self.stopped:  # maybe while waiting
            return False
        self._queue.put(chunk)
        return True

    def close(self) -> None:
        """No more chunks: the worker's next `read` past them returns b""."""
        self._queue.put(_END)

    def abort(self) -> None:
        """The download failed: the worker's next `read` raises `DownloadAbortedError`."""
        self._queue.put(_ABORT)

    def read(self, size: int = -1) -> bytes:
        """In the worker: the next chunk (whatever `size`), b"" at the end."""
        if self._ended:
            return b""
        item = self._queue.get()
        self._loop.call_soon_threadsafe(self._space.release)
        if item is _ABORT:
            raise DownloadAbortedError("the download failed")
        if item is _END:
            self._ended = True
            return b""
        assert isinstance(item, bytes)
        return item

    @property
    def stopped(self) -> bool:
        """Whether the worker stopped reading."""
        return self._stopped

    def stop(self) -> None:
        """In the worker, when it is done (or failed): wake a waiting producer."""
        self._stopped = True
        self._loop.call_soon_threadsafe(self._space.release)


def download_retries(attempts: int) -> AsyncIterator[stamina.Attempt]:
    """The retry policy of every restore download: transient failures (network, a short or
    corrupt transfer) only, `attempts` in all, waits of 0.5 s then 2 s, no time bound."""
    return stamina.retry_context(
        on=RetryableDestinationError,
        attempts=attempts,
        timeout=None,
        wait_initial=0.5,
        wait_exp_base=4,
        wait_max=2.0,
        wait_jitter=0,
    )


async def stream_object(
    reader: BodyReader,
    key: str,
    version_id: str | None,
    work: Callable[[BinaryIO, Mapping[str, str]], _T],
    executor: Executor | None,
    *,
    attempts: int,
    check: Callable[[Mapping[str, str]], None] = lambda metadata: None,
) -> tuple[dict[str, str], _T]:
    """GET `key` into ``work(pipe, metadata)`` in a thread; return metadata and its result.

    `check` sees the metadata before any body byte is read (e.g. the identity check) and
    may raise to refuse the object. Retries as the module docstring says.
    """
    async for attempt in download_retries(attempts):
        with attempt:
            return await _once(reader, key, version_id, work, executor, check)
    raise AssertionError("unreachable: stamina re-raises the last failure")


async def _once(
    reader: BodyReader,
    key: str,
    version_id: str | None,
    work: Callable[[BinaryIO, Mapping[str, str]], _T],
    executor: Executor | None,
    check: Callable[[Mapping[str, str]], None],
) -> tuple[dict[str, str], _T]:
    loop = asyncio.get_running_loop()
    async with reader.reading(key, version_id) as (stored, chunks):
        metadata = dict(stored.metadata)
        check(metadata)
        pipe = ChunkPipe(loop)

        def run() -> _T:
            try:
                return work(cast(BinaryIO, pipe), metadata)  # a file to read
            finally:
                pipe.stop()

        done = loop.run_in_executor(executor, run)
        try:
            async for chunk in chunks:
                if not await pipe.put(chunk):
                    break  # the worker failed: its error is the answer
            pipe.close()
        except BaseException:
            pipe.abort()
            # Let the worker remove what it wrote before the error goes on (it raises
            # DownloadAbortedError, or its own error if it failed first: either way this one wins).
            await asyncio.wait([done])
            if not done.cancelled():
                done.exception()
            raise
    return metadata, await done
