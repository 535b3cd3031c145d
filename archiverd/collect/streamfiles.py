"""A stream's files: finding them again after a restart, appending the ones a rotation
created, and placing each at its offset in the stream.

Every file a stream is made of is journaled (identity, base offset, length once finished)
before it is read, so a restart finds each again by identity under any name; a journaled file
that stays missing raises `FilesMissingError` unless loss is allowed. Files wholly before every
unpacked byte are dropped from the journal and closed (`release`). `read` reads the stream at
a position across its files. Not thread-safe, like the `StreamTail` that owns a `StreamFiles`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog

from archiverd.collect.files import (
    FP_BYTES,
    Identity,
    Opener,
    OpenFile,
    OutsideRootError,
    Span,
    safe_open,
)
from archiverd.config import RotationSettings
from archiverd.errors import SourceError
from archiverd.formats.records import BadInput
from archiverd.journal.db import Journal
from archiverd.sources.base import Candidate, StreamInfo

log = structlog.get_logger("archiverd.collect.streamfiles")


class FilesMissingError(SourceError):
    """Journaled files of a stream are not where they were; retried before declared lost."""


@dataclass
class StreamFile:
    row_id: int
    file: OpenFile
    identity: Identity
    base: int | None
    length: int | None = None


@dataclass
class TailContext:
    """What every stream of a collector shares."""

    journal: Journal
    rotation: RotationSettings
    host: str
    root: Path
    source_name: str
    clock: Callable[[], datetime]
    on_bad: BadInput
    on_read: Callable[[int], None] = field(default=lambda n: None)
    on_sealed: Callable[[str], None] = field(default=lambda reason: None)
    opener: Opener = os.open


class StreamFiles:
    """The files one stream is made of, oldest first; `cur` indexes the file being read.

    Iterating yields the `StreamFile` entries; `len()` counts the held files.
    """

    def __init__(self, ctx: TailContext, stream_id: int, info: StreamInfo) -> None:
        self.ctx = ctx
        self.stream_id = stream_id
        self.info = info
        self.files: list[StreamFile] = []
        self.cur = 0
        self.truncated = False
        """Set when `read` found the live file truncated in place; the reader clears it."""
        self._out_of_sight = 0

    def __iter__(self) -> Iterator[StreamFile]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    # reading -------------------------------------------------------------------------

    def read(self, position: int, n: int) -> bytes:
        """Up to `n` stream bytes at stream offset `position` (empty at the end of the
        data), moving on to the next file when the current one is exhausted."""
        while self.cur < len(self.files):
            f = self.files[self.cur]
            assert f.base is not None
            offset = position - f.base
            live = not f.file.gz and self.cur == len(self.files) - 1
            if live and f.file.size() < offset:
                self._truncate(f, offset)
                continue
            data = f.file.read_at(offset, n)
            if data:
                if f.identity.fp_len < FP_BYTES:
                    self.grow_fingerprint(f)
                return data
            if self.cur + 1 >= len(self.files):
                return b""
            nxt = self.files[self.cur + 1]
            f.length = offset
            nxt.base = f.base + offset
            self.ctx.journal.finish_file(f.row_id, offset, nxt.row_id)
            self.cur += 1
        return b""

    def _truncate(self, f: StreamFile, offset: int) -> None:
        assert f.base is not None
        self.ctx.on_bad("truncated")
        log.warning(
            "log file truncated in place; bytes not yet packed may be lost",
            path=f.file.path,
            read=offset,
            size=f.file.size(),
        )
        f.length = offset
        self.ctx.journal.finish_file(f.row_id, offset, None)
        fd = os.dup(f.file.fd)
        self._add(OpenFile(fd, path=f.file.path, gz=False), f.base + offset)
        self.cur += 1
        self.truncated = True

    # finding files -------------------------------------------------------------------

    def _open(self, candidate: Candidate) -> OpenFile | None:
        try:
            fd = safe_open(self.ctx.root, candidate.path, self.ctx.opener)
        except OutsideRootError:
            self.ctx.on_bad("symlink_outside_root")
            log.warning("symlink outside the root not followed", path=str(candidate.path))
            return None
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            self.ctx.on_bad("permission_denied")
            log.warning(
                "cannot open log file; will retry", path=str(candidate.path), error=str(exc)
            )
            return None
        except (OSError, SourceError) as exc:
            self.ctx.on_bad("unreadable")
            log.warning(
                "cannot open log file; will retry", path=str(candidate.path), error=str(exc)
            )
            return None
        return OpenFile(fd, path=str(candidate.path), gz=candidate.gz)

    def _matches(self, opened: OpenFile, known: Identity) -> bool:
        if not opened.gz and (opened.dev, opened.ino) != (known.dev, known.ino):
            return False
        if known.fp_len == 0:
            return not opened.gz  # an empty file can only be recognised by its inode
        try:
            return opened.identity(known.fp_len).fp == known.fp
        except SourceError:
            return False

    def reopen(self, start: int, *, allow_loss: bool) -> None:
        """After a restart: find each journaled file again (by identity, any name) and
        place reading at stream offset `start` (the open segment's)."""
        rows = self.ctx.journal.files(self.stream_id)
        lost: list[int] = []
        for row in rows:
            known = Identity(row.dev, row.ino, row.fp, row.fp_len)
            found = None
            for cand in (Candidate(Path(row.path), row.gz), *self.info.files):
                opened = self._open(cand)
                if (
                    opened is not None
                    and self._matches(opened, known)
                    and (row.length is None or opened.size() >= row.length)
                ):
                    found = opened
                    break
                if opened is not None:
                    opened.close()
            if found is None:
                lost.append(row.id)
                continue
            self.files.append(StreamFile(row.id, found, known, row.base, row.length))
        if lost and not allow_loss:
            for f in self.files:
                f.file.close()
            raise FilesMissingError(
                f"{len(lost)} journaled file(s) of {self.info.key} not found (mid-rotation?)"
            )
        if lost:
            self.ctx.on_bad("vanished")
            log.error(
                "log files vanished while archiverd was down; their unread bytes are lost",
                stream=self.info.key,
                files=len(lost),
            )
            self.ctx.journal.drop_files(lost)
            self._rebase(start)
        for index, f in enumerate(self.files):
            last = index == len(self.files) - 1
            if (
                f.base is not None
                and f.base <= start
                and (f.length is None or start < f.base + f.length or last)
            ):
                self.cur = index

    def _rebase(self, start: int) -> None:
        """After a gap, the first file not wholly before `start` continues the stream there."""
        for f in self.files:
            if (
                f.base is not None
                and f.base <= start
                and (f.length is None or start < f.base + f.length)
            ):
                return  # the open segment's file survived
        later = [
            f
            for f in self.files
            if not (f.base is not None and f.length is not None and f.base + f.length <= start)
        ]
        for index, f in enumerate(later):
            f.base = start if index == 0 else None
            self.ctx.journal.set_file_base(f.row_id, f.base)

    def _add(self, opened: OpenFile, base: int | None) -> None:
        identity = opened.identity()
        row_id = self.ctx.journal.add_file(
            self.stream_id,
            path=opened.path,
            dev=identity.dev,
            ino=identity.ino,
            fp=identity.fp,
            fp_len=identity.fp_len,
            gz=opened.gz,
            base=base,
        )
        self.files.append(StreamFile(row_id, opened, identity, base))

    def refresh(self, info: StreamInfo, start: int) -> bool:
        """Take the source's current view: append files that appeared after the last known
        (the first file of a stream with none is placed at stream offset `start`).

        Returns False when something must be looked at again later (a listing taken
        mid-rotation, a file that cannot be opened yet).
        """
        self.info = info
        if self._live_unchanged(info):
            return True
        opened_all = self._open_consistent(info)
        if opened_all is None:
            return False  # the directory kept changing under us: next pass
        after = self._after_known(opened_all)
        floor = None
        if self.files and after == 0:
            self._out_of_sight += 1
            if self._out_of_sight < 2 and len(opened_all) > 1:
                # Likely a listing taken mid-rotation of a .1/.2 chain: look again.
                _close_all(opened_all, keep=[])
                return False
            floor = self._out_of_sight_floor(len(opened_all))
        self._out_of_sight = 0
        new, complete = self._new_files(opened_all, after, floor)
        _close_all(opened_all, keep=new)
        for opened in new:
            self._add(opened, start if not self.files else None)
        return complete

    def _live_unchanged(self, info: StreamInfo) -> bool:
        """Whether the newest candidate is still the live file we hold (or there is none)."""
        if not self.files:
            return False
        newest = info.files[-1] if info.files else None
        if newest is None:
            return True
        if not newest.gz and _same_inode(newest.path, self.files[-1].file):
            self.grow_fingerprint(self.files[-1])
            return True
        return False

    def _after_known(self, opened_all: list[OpenFile | None]) -> int:
        """Index just past the last candidate that is one of our files (0: none is)."""
        known = [f.identity for f in self.files]
        after = 0
        for index, opened in enumerate(opened_all):
            if opened is not None and any(self._matches(opened, k) for k in known):
                after = index + 1
        return after

    def _out_of_sight_floor(self, candidates: int) -> float:
        """None of our files is visible any more (renamed away, or deleted by max-file
        while we lagged): go on with what was written after the last one we hold."""
        if candidates > 1:
            self.ctx.on_bad("vanished")
            log.warning(
                "stream's files rotated out of sight; bytes between may be lost",
                stream=self.info.key,
            )
        return os.fstat(self.files[-1].file.fd).st_mtime

    def _new_files(
        self, opened_all: list[OpenFile | None], after: int, floor: float | None
    ) -> tuple[list[OpenFile], bool]:
        """The candidates to append, in order, and whether every one could be looked at."""
        new: list[OpenFile] = []
        for index, opened in enumerate(opened_all):
            if opened is None:
                return new, False  # cannot open it yet: keep order, retry on the next pass
            if index < after or (floor is not None and os.fstat(opened.fd).st_mtime < floor):
                continue
            if opened.gz and not self._complete_gz(opened):
                return new, False
            if opened.size() == 0:
                continue  # nothing to identify it by yet (nor to lose): add it once written
            new.append(opened)
        return new, True

    def _open_consistent(self, info: StreamInfo) -> list[OpenFile | None] | None:
        """Open every candidate, checking afterwards that each name still holds the file
        opened (a rotation renames a chain of files; a half-seen one misorders them)."""
        for _ in range(5):
            opened = [self._open(c) for c in info.files]
            if all(
                o is None or _same_inode(c.path, o) for c, o in zip(info.files, opened, strict=True)
            ):
                return opened
            for o in opened:
                if o is not None:
                    o.close()
        return None

    def _complete_gz(self, opened: OpenFile) -> bool:
        try:
            opened.size()
        except (EOFError, OSError, SourceError):
            return False
        return True

    def grow_fingerprint(self, f: StreamFile) -> None:
        """Lengthen a file's journaled fingerprint as the file grows, up to FP_BYTES."""
        if f.identity.fp_len >= FP_BYTES or f.file.gz:
            return
        grown = f.file.identity()
        if grown.fp_len > f.identity.fp_len:
            f.identity = grown
            self.ctx.journal.update_fingerprint(f.row_id, grown.fp, grown.fp_len)

    def spans(self) -> list[Span]:
        """The files placed in the stream, for `RangeReader` (the live one open-ended)."""
        out = []
        for f in self.files:
            if f.base is not None:
                length = f.length if f.length is not None else 1 << 62
                out.append(Span(f.file, f.base, length))
        return out

    def release(self, low: int) -> None:
        """Close and forget files wholly before stream offset `low` (the first unpacked
        byte, sealed or open)."""
        done = [
            f
            for f in self.files[: self.cur]
            if f.base is not None and f.length is not None and f.base + f.length <= low
        ]
        if not done:
            return
        self.ctx.journal.drop_files([f.row_id for f in done])
        for f in done:
            f.file.close()
        self.files = self.files[len(done) :]
        self.cur -= len(done)

    def close(self) -> None:
        """Release every fd."""
        for f in self.files:
            f.file.close()
        self.files = []


def _close_all(opened_all: list[OpenFile | None], keep: list[OpenFile]) -> None:
    for opened in opened_all:
        if opened is not None and all(opened is not k for k in keep):
            opened.close()


def _same_inode(path: Path, opened: OpenFile) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (opened.dev, opened.ino)
