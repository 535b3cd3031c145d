"""Log files opened as soon as the watcher sees them, before any pass looks.

dockerd's ``max-file`` (and kubelet's rotation) deletes the oldest file at each rotation, so
a writer faster than a stream's passes can create and delete a file between two looks. One
pass stalled on a journal commit is enough: under a fast writer the disk's fsync took 150 ms
here, while a container printing 15 MB/s through max-size=1m, max-file=3 deletes each file
about 130 ms after creating it. So when a stream's log file is closed after writing (dockerd
closes its live file just before it rotates it), the watcher's thread takes a consistent view
of the stream's files (`Collector`), which needs no journal and no pass, and opens the ones
nobody holds yet: an open fd keeps a file readable after it is deleted. Events reach that
thread late (tens of ms under load), so it opens what the names hold when it looks, not what
the event was about; a file is missed only if no look at all falls within its whole life.
The stream's next pass (`StreamFiles.refresh`) takes the pinned files it needs and lets go
of the rest (`settle`).

Each view also shows which file directly follows which (``.2`` then ``.1`` then the live
file, at one instant): `follows`. A pass that finds none of its files listed any more walks
from its last file through `follows` to the files it takes; where a step is not proven, a
file may have come and gone unseen, and the gap is recorded as a possible loss.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from archiverd.collect.files import OpenFile

StreamRef = tuple[str, str]
"""(source name, stream key)."""

FileKey = tuple[int, int]
"""(st_dev, st_ino): a file while it exists or is held open."""

PINS_PER_STREAM = 64
"""Files pinned for one stream at most; past it no more are opened until its pass comes."""

FOLLOWS_PER_STREAM = 256
"""Remembered "b follows a" steps per stream (the oldest are forgotten)."""


@dataclass
class _Stream:
    pinned: dict[FileKey, OpenFile] = field(default_factory=dict)
    held: frozenset[FileKey] = frozenset()
    """The files the stream's pass holds itself (not opened again here)."""
    follows: dict[FileKey, FileKey] = field(default_factory=dict)


class Pins:
    """Pinned files and proven steps per stream. `wants`, `pin` and `saw` run on the
    watcher's thread, the rest on the stream's worker; thread-safe."""

    def __init__(self, per_stream: int = PINS_PER_STREAM) -> None:
        self._per_stream = per_stream
        self._streams: dict[StreamRef, _Stream] = {}
        self._lock = threading.Lock()

    def wants(self, stream: StreamRef, key: FileKey) -> bool:
        """Whether the file `key` of `stream` is neither pinned nor held (worth opening)."""
        with self._lock:
            state = self._streams.get(stream)
            if state is None:
                return True
            return (
                key not in state.pinned
                and key not in state.held
                and len(state.pinned) < self._per_stream
            )

    def pin(self, stream: StreamRef, file: OpenFile) -> None:
        """Keep `file` open for `stream`'s next pass (closed at once if not wanted now)."""
        key = (file.dev, file.ino)
        with self._lock:
            state = self._streams.setdefault(stream, _Stream())
            taken = key not in state.pinned and key not in state.held
            if taken:
                state.pinned[key] = file
        if not taken:
            file.close()

    def saw(self, stream: StreamRef, chain: Sequence[FileKey]) -> None:
        """`chain` (oldest first, ending with the live file) existed at one instant, each
        file directly followed by the next."""
        with self._lock:
            follows = self._streams.setdefault(stream, _Stream()).follows
            for older, newer in itertools.pairwise(chain):
                follows.pop(older, None)  # re-inserted: the newest steps are kept longest
                follows[older] = newer
            if chain:
                follows.pop(chain[-1], None)  # nothing follows the live file yet
            while len(follows) > FOLLOWS_PER_STREAM:
                del follows[next(iter(follows))]

    def snapshot(self, stream: StreamRef) -> tuple[dict[FileKey, OpenFile], dict[FileKey, FileKey]]:
        """The stream's pinned files (they stay pinned until `settle`) and its steps."""
        with self._lock:
            state = self._streams.get(stream)
            if state is None:
                return {}, {}
            return dict(state.pinned), dict(state.follows)

    def settle(
        self, stream: StreamRef, held: Collection[FileKey], done: Collection[FileKey]
    ) -> None:
        """The pass now holds `held` itself; let go of those and of the pins in `done`."""
        with self._lock:
            state = self._streams.setdefault(stream, _Stream())
            state.held = frozenset(held)
            gone = [state.pinned.pop(k) for k in [*held, *done] if k in state.pinned]
        for file in gone:
            file.close()

    def discard(self, stream: StreamRef) -> None:
        """The stream is gone: let go of all its pins."""
        with self._lock:
            state = self._streams.pop(stream, None)
        for file in state.pinned.values() if state is not None else ():
            file.close()

    def close(self) -> None:
        """Let go of every pin."""
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            self.discard(stream)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(state.pinned) for state in self._streams.values())
