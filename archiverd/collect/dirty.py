"""Which streams need a worker pass: filesystem events and periodic rescans, bridged to the
`Collector`'s event loop.

Watchdog's inotify thread reports paths (`on_event`); they are mapped to stream keys and
marked dirty, waking the event loop with ``loop.call_soon_threadsafe``. A path no stream owns
asks for a rescan. A rescan (`discover`) lists every source's streams plus those the journal
still holds; with ``changed_only`` it skips streams whose cheap signature has not moved.

Streams are handed out in the order they became dirty, and a stream seen for the first time
that has already stopped (an exited container, `BaseSource.stopped`) goes first: at start-up
among thousands of idle containers, the exited ones are sealed within seconds rather than
after every idle log has been opened.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import structlog

from archiverd.journal.db import Journal
from archiverd.logs import error_kind
from archiverd.sources import BaseSource

log = structlog.get_logger("archiverd.collect.dirty")

Key = tuple[int, str]  # (source index, stream key)


class DirtyStreams:
    """The dirty set, owned by the `Collector`. `on_event` runs on watchdog's thread,
    `discover` on a worker thread, the rest on the event loop."""

    def __init__(self, sources: Sequence[BaseSource], journal: Journal) -> None:
        self._sources = sources
        self._journal = journal
        self._signatures: dict[Key, object] = {}
        self._dirty: dict[Key, None] = {}
        """Insertion-ordered: `take` hands keys out in the order they became dirty."""
        self._seen: dict[int, set[str]] = {}
        """Per source, the keys discovered so far (a stream seen for the first time may go
        first, see `discover`)."""
        self._journaled: dict[int, tuple[tuple[int, int], set[str]]] = {}
        """Per source, the journal's active stream keys and the journal version they are of."""
        self._lock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.rescan_wanted = True

    def attach(self, loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
        """Wake `wake` on `loop` when a stream becomes dirty."""
        self._loop = loop
        self._wake = wake

    def on_event(self, index: int, paths: list[str]) -> None:
        """Called on watchdog's thread."""
        source = self._sources[index]
        keys = {source.key_for_path(p) for p in paths if p}
        with self._lock:
            was_idle = not self._dirty and not self.rescan_wanted
            for key in keys:
                if key is None:
                    self.rescan_wanted = True
                else:
                    self._dirty[(index, key)] = None
        if was_idle and self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def mark(self, key: Key) -> None:
        """`key` needs a pass."""
        with self._lock:
            self._dirty[key] = None

    def mark_later(self, key: Key, seconds: float) -> None:
        """`key` needs a pass in `seconds` (any thread; the loop is woken then). Without an
        attached, open loop (``--once``) nothing is scheduled: the caller's next pass looks."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return

        def due() -> None:
            self.mark(key)
            wake.set()

        loop.call_soon_threadsafe(loop.call_later, seconds, due)

    def take(self, busy: set[Key]) -> list[Key]:
        """The dirty keys not in `busy`, now no longer dirty."""
        with self._lock:
            ready = [k for k in self._dirty if k not in busy]
            for key in ready:
                del self._dirty[key]
        return ready

    def forget(self, key: Key) -> None:
        """Look at `key` again on the next rescan even if its signature has not moved."""
        self._signatures.pop(key, None)

    def discover(self, changed_only: bool = False) -> list[Key]:
        """Stream keys present or journaled, streams seen for the first time that have
        stopped first; `changed_only`: only those whose cheap signature (stats of their
        files) moved since the last rescan, so watching many idle containers costs a few
        stats each."""
        first: list[Key] = []
        keys: list[Key] = []
        for index, source in enumerate(self._sources):
            try:
                found = source.keys()
            except OSError as exc:
                log.warning(
                    "discovery failed; will retry",
                    source=source.name,
                    error=str(exc),
                    repeat_key=error_kind(exc),
                )
                continue
            present = set(found) | self._journaled_keys(index, source)
            seen = self._seen.setdefault(index, set())
            for key in present:
                if changed_only:
                    signature = source.signature(key)
                    if self._signatures.get((index, key)) == signature:
                        continue
                    self._signatures[(index, key)] = signature
                if key not in seen:
                    seen.add(key)
                    if source.stopped(key):
                        first.append((index, key))
                        continue
                keys.append((index, key))
            for key in seen - present:  # neither listed nor journaled: forgotten
                seen.discard(key)
                self._signatures.pop((index, key), None)
        return first + keys

    def _journaled_keys(self, index: int, source: BaseSource) -> set[str]:
        """The source's streams the journal still holds (queried again only after the
        journal changed: an idle rescan reads no rows)."""
        version = self._journal.version()
        cached = self._journaled.get(index)
        if cached is not None and cached[0] == version:
            return cached[1]
        keys = {key for _, key in self._journal.active_streams(source.name)}
        self._journaled[index] = (version, keys)
        return keys
