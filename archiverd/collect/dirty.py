"""Bridging filesystem events and periodic rescans to the `Collector`'s dirty set.

Watchdog's inotify thread reports paths (`_on_event`); they are mapped to stream keys and
marked dirty, waking the event loop with ``loop.call_soon_threadsafe``. A path no stream owns
asks for a rescan. A rescan (`_discover`) lists every source's streams plus those the journal
still holds; with ``changed_only`` it skips streams whose cheap signature has not moved.
"""

from __future__ import annotations

import asyncio
import threading

import structlog

from archiverd.journal.db import Journal
from archiverd.logs import error_kind
from archiverd.sources import BaseSource

log = structlog.get_logger("archiverd.collect.dirty")

Key = tuple[int, str]  # (source index, stream key)


class DirtyStreams:
    """Which streams need a worker pass; the attributes below are set by the `Collector`'s
    constructor. `_on_event` runs on watchdog's thread, `_discover` on a worker thread."""

    sources: list[BaseSource]
    journal: Journal
    _signatures: dict[Key, object]
    _busy: set[Key]
    _dirty: set[Key]
    _rescan_wanted: bool
    _lock: threading.Lock
    _wake: asyncio.Event | None
    _loop: asyncio.AbstractEventLoop | None

    def _on_event(self, index: int, paths: list[str]) -> None:
        """Called on watchdog's thread."""
        source = self.sources[index]
        keys = {source.key_for_path(p) for p in paths if p}
        with self._lock:
            was_idle = not self._dirty and not self._rescan_wanted
            for key in keys:
                if key is None:
                    self._rescan_wanted = True
                else:
                    self._dirty.add((index, key))
        if was_idle and self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _mark(self, key: Key) -> None:
        with self._lock:
            self._dirty.add(key)

    def _take_dirty(self) -> list[Key]:
        with self._lock:
            ready = [k for k in self._dirty if k not in self._busy]
            self._dirty.difference_update(ready)
        return ready

    def _discover(self, changed_only: bool = False) -> set[Key]:
        """Stream keys present or journaled; `changed_only`: only those whose cheap
        signature (stats of their files) moved since the last rescan, so watching many idle
        containers costs a few stats each."""
        keys: set[Key] = set()
        for index, source in enumerate(self.sources):
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
            journaled = {key for _, key in self.journal.active_streams(source.name)}
            for key in set(found) | journaled:
                if changed_only:
                    signature = source.signature(key)
                    if self._signatures.get((index, key)) == signature:
                        continue
                    self._signatures[(index, key)] = signature
                keys.add((index, key))
        return keys
