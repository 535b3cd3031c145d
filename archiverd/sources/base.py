"""The small interface every log source implements, and helpers they share.

A source maps its watched root to *streams*: one container's (or one file's) log, made of an
ordered list of files, oldest first. The collector does the reading; a source only says which
files make up each stream, what the container is called, and whether it is still running.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import structlog

from archiverd.collect.files import inside
from archiverd.config import SourceSettings
from archiverd.errors import ListingError
from archiverd.formats.records import BadInput, Format

log = structlog.get_logger("archiverd.sources")

State = Literal["running", "exited", "finished", "removed"]
"""``exited``: seal what is there, more may come (a restart); ``finished``: no more will come
(rotated away for good); ``removed``: the stream's files are gone from the directory tree."""


@dataclass(frozen=True)
class Candidate:
    """A file that belongs to a stream; `gz` files are read by decompressing."""

    path: Path
    gz: bool = False


@dataclass(frozen=True)
class StreamInfo:
    """What a source knows about one stream right now."""

    key: str
    container_id: str
    format: Format
    state: State
    files: tuple[Candidate, ...]
    """Oldest first; the last one is the live file."""
    name: str = ""
    image: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    idle_finishes: bool = False
    """With ``run --once``, a stream idle past ``idle_seconds`` counts as finished."""
    rotation_limit: int | None = None
    """How many files the writer keeps at most (docker's max-file), when known: a stream
    first seen with that many files may have lost older ones before anyone looked."""
    keeps_rotations: bool = False
    """Rotated files stay listed (docker, CRI) until the writer deletes them, so when none of
    the files a reader holds is listed any more, files between may have been deleted unread."""


class Source(Protocol):
    """One configured source."""

    settings: SourceSettings
    name: str
    """Stable name for the journal and metrics, e.g. ``docker:/var/lib/docker/containers``."""

    def discover(self) -> list[StreamInfo]:
        """Every stream present under the root now."""
        ...

    def describe(self, key: str) -> StreamInfo:
        """One stream now (state ``removed`` with no files when it is gone)."""
        ...

    def key_for_path(self, path: str) -> str | None:
        """Which stream a filesystem event on `path` concerns (None: rescan discovery)."""
        ...

    async def background(self, stop: asyncio.Event) -> None:
        """Work the source does on its own (the demo writes logs); most do nothing."""
        ...

    def keys(self) -> list[str]:
        """The keys of every stream present, cheaply."""
        ...

    def signature(self, key: str) -> object:
        """Changes whenever the stream's files or state may have changed."""
        ...


class BaseSource:
    """Shared plumbing: the root, symlink policy, bad-input reporting."""

    kind = "base"
    removal_grace_seconds = 0.0
    """How long a stream must stay gone before it is forgotten (its files closed, its
    journal rows dropped). Sources whose streams may come back (a file moved away and back)
    set it; a stream that returns within it continues where it stopped."""

    def __init__(self, settings: SourceSettings, on_bad: BadInput | None = None) -> None:
        self.settings = settings
        self.root = settings.path
        self.name = f"{settings.kind}:{settings.path}"
        self._on_bad: BadInput = on_bad or (lambda reason: None)
        self._reported: set[str] = set()

    async def background(self, stop: asyncio.Event) -> None:
        """Nothing by default."""
        return

    def discover(self) -> list[StreamInfo]:
        """Every stream present under the root now."""
        raise NotImplementedError

    def describe(self, key: str) -> StreamInfo:
        """One stream now (state ``removed`` with no files when it is gone)."""
        raise NotImplementedError

    def key_for_path(self, path: str) -> str | None:
        """Which stream a filesystem event on `path` concerns (None: rescan discovery)."""
        raise NotImplementedError

    def rotating_files(self, path: str) -> tuple[str, tuple[Candidate, ...]] | None:
        """When `path` is a log file of a stream whose writer rotates by renaming and
        deletes the oldest file (docker, CRI: see `archiverd.collect.pins`): the stream's
        key and its files now, oldest first. None otherwise (default)."""
        return None

    def keys(self) -> list[str]:
        """The keys of every stream present, cheaply (default: via `discover`)."""
        return [info.key for info in self.discover()]

    def stopped(self, key: str) -> bool:
        """Cheaply, whether the stream has already stopped (an exited container), so that
        sealing it need not wait behind thousands of running streams (default: no)."""
        return False

    def signature(self, key: str) -> object:
        """Something that changes whenever the stream's files or state may have changed."""
        return _stats(self.watched_paths(key))

    def watched_paths(self, key: str) -> list[Path]:
        """The directories and files whose stats make up `signature`."""
        raise NotImplementedError

    def bad(self, reason: str, path: Path | str) -> None:
        """Report bad input once per path (a rescan would repeat it every time)."""
        marker = f"{reason}:{path}"
        if marker in self._reported:
            return
        self._reported.add(marker)
        log.warning("source input skipped", reason=reason, path=str(path), source=self.name)
        self._on_bad(reason)

    def allowed(self, path: Path) -> bool:
        """Whether `path` stays inside the root once symlinks are resolved (else reported)."""
        if inside(self.root, path):
            return True
        self.bad("symlink_outside_root", path)
        return False

    def entries(self, directory: Path, *, stable: bool = False) -> list[os.DirEntry[str]]:
        """The directory's entries, or none if it does not exist.

        `stable`: list until two listings agree, so a rotation renaming a chain of files
        (``.1`` -> ``.2`` ...) is not seen half done. Raises `ListingError` (after reporting
        it) when the directory exists but cannot be listed now (EMFILE, EACCES, ...): that
        says nothing about its streams, which must not be taken as removed.
        """
        try:
            with os.scandir(directory) as it:
                found = list(it)
            for _ in range(10):
                if not stable:
                    break
                with os.scandir(directory) as it:
                    again = list(it)
                if {e.name for e in again} == {e.name for e in found}:
                    break
                found = again
            return found
        except FileNotFoundError:
            return []
        except OSError as exc:
            self.unlistable(directory, exc)
            raise ListingError(f"cannot list {directory} now: {exc}; will retry") from exc

    def unlistable(self, path: Path, exc: OSError) -> None:
        """Report a transient failure to look at `path` (not deduplicated: it may recur)."""
        reason = "permission_denied" if isinstance(exc, PermissionError) else "unlistable"
        log.warning("cannot look at a source path now; will retry", path=str(path), error=str(exc))
        self._on_bad(reason)

    def listed(self, directory: Path) -> list[os.DirEntry[str]]:
        """`entries`, empty when the directory cannot be listed now (discovery retries)."""
        try:
            return self.entries(directory)
        except ListingError:
            return []


def rotation_index(name: str, prefix: str) -> tuple[int, bool] | None:
    """For ``<prefix>.N`` / ``<prefix>.N.gz``: (N, gz); None for other names."""
    if not name.startswith(prefix + "."):
        return None
    rest = name[len(prefix) + 1 :]
    gz = rest.endswith(".gz")
    number = rest.removesuffix(".gz")
    return (int(number), gz) if number.isdigit() else None


def oldest_first(items: Sequence[tuple[int, Candidate]]) -> list[Candidate]:
    """Sort (age, candidate) pairs, larger age first."""
    return [c for _, c in sorted(items, key=lambda item: -item[0])]


Stat = tuple[int, int, int] | None
"""(inode, size, mtime in ns) of a path, or None when it cannot be stat'ed: what a rescan
compares to notice a change."""


def stat_of(path: str | Path) -> Stat:
    """The `Stat` of `path` (following a final symlink, as reading it would)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _stats(paths: list[Path]) -> tuple[Stat, ...]:
    return tuple(stat_of(path) for path in paths)
