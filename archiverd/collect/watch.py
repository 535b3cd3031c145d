"""watchdog (inotify) events, reduced to "these paths of source N changed" (and "this file
of source N was just closed after writing", for `archiverd.collect.pins`).

The callbacks run on watchdog's observer thread; the collector bridges them into asyncio with
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
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

log = structlog.get_logger("archiverd.collect.watch")

MOVE_PAIRING_SECONDS = 0.01
"""How long watchdog holds a rename's first half to pair it with its second (its default is
0.5 s). Its queue holds every later event behind that first half for as long, and a
rotation renames: under a fast rotation the stream's passes (and so its reads) came up to
half a second late, longer than dockerd keeps a file at max-size=1m, max-file=3 and 15 MB/s.
Both halves come from one read of the inotify fd; one that does not pair in time is
reported as a deletion and a creation, which mark the same stream here."""
InotifyMoveEventGrouper.delay = MOVE_PAIRING_SECONDS

Callback = Callable[[int, list[str]], None]
Seen = Callable[[int, str], None]
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


class _ClosedHandler(FileSystemEventHandler):
    """Files closed after writing (a writer about to rotate), for `Seen`."""

    def __init__(self, index: int, seen: Seen) -> None:
        self._index = index
        self._seen = seen

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileClosedEvent):
            self._seen(self._index, os.fsdecode(event.src_path))


class Watcher:
    """Recursive watches on each source root, started lazily (a root may appear later).

    `callback` gets the paths of every event; `seen` (optional) the path of each file
    closed after writing (dockerd closes its live file just before it rotates it), from
    watches of their own that ask for nothing else. Their events then never wait behind
    watchdog's pairing of renames: it holds every event behind a rename's first half for up
    to 0.5 s, longer than a fast rotation keeps a file (see `archiverd.collect.pins`).
    Without those watches (the watch limit) `seen` is not called."""

    def __init__(self, callback: Callback, seen: Seen | None = None) -> None:
        self._callback = callback
        self._seen = seen
        self._file_observer: Any = Observer() if seen is not None else None
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
            if self._file_observer is not None and self._seen is not None:
                try:
                    self._file_observer.schedule(
                        _ClosedHandler(index, self._seen),
                        str(root),
                        recursive=True,
                        event_filter=[FileClosedEvent],
                    )
                except OSError as exc:
                    log.warning(
                        "cannot watch files as they rotate; a fast rotation may lose files",
                        root=str(root),
                        error=str(exc),
                    )
            self._watched.add(index)
            if not self._started:
                self._observer.start()
                if self._file_observer is not None:
                    self._file_observer.start()
                self._started = True
            return True

    def close(self) -> None:
        """Stop the observer thread."""
        with self._lock:
            if self._started:
                for observer in (self._observer, self._file_observer):
                    if observer is not None:
                        observer.stop()
                for observer in (self._observer, self._file_observer):
                    if observer is not None:
                        observer.join(timeout=10)
