"""watchdog (inotify) events, reduced to "these paths of source N changed".

The callback runs on watchdog's observer thread; the collector bridges it into asyncio with
``loop.call_soon_threadsafe``. Opens and read-only closes are not watched (and dropped if
they come): archiverd's own reads would otherwise wake it up again and, with thousands of
logs, overflow inotify's queue.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

log = structlog.get_logger("archiverd.collect.watch")

Callback = Callable[[int, list[str]], None]
_IGNORED = {"opened", "closed_no_write"}
_WANTED = [
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
]
"""Every event but opens and read-only closes, which are not even asked of inotify: with
thousands of logs the collector's own reads would overflow the kernel's queue, and watchdog
answers each overflow by walking the whole tree again."""


class _Handler(FileSystemEventHandler):
    def __init__(self, index: int, callback: Callback) -> None:
        self._index = index
        self._callback = callback

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _IGNORED:
            return
        paths = [os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")]
        self._callback(self._index, paths)


class Watcher:
    """Recursive watches on each source root, started lazily (a root may appear later)."""

    def __init__(self, callback: Callback) -> None:
        self._callback = callback
        self._observer: Any = Observer()
        self._watched: set[int] = set()
        self._lock = threading.Lock()
        self._started = False

    def watch(self, index: int, root: Path) -> bool:
        """Watch `root` for source `index` if not yet watched; False if it does not exist."""
        with self._lock:
            if index in self._watched:
                return True
            if not root.is_dir():
                return False
            try:
                self._observer.schedule(
                    _Handler(index, self._callback), str(root), recursive=True, event_filter=_WANTED
                )
            except OSError as exc:
                # e.g. inotify watch limit: the periodic rescan still finds everything.
                log.warning("cannot watch; relying on rescans", root=str(root), error=str(exc))
                return False
            self._watched.add(index)
            if not self._started:
                self._observer.start()
                self._started = True
            return True

    def close(self) -> None:
        """Stop the observer thread."""
        with self._lock:
            if self._started:
                self._observer.stop()
                self._observer.join(timeout=10)
