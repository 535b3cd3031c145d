"""A stream's files: finding them again after a restart, appending the ones a rotation
created, and placing each at its offset in the stream.

Every file a stream is made of is journaled (identity, base offset, length once finished)
before it is read, so a restart finds each again by identity under any name; a journaled file
that stays missing raises `FilesMissingError` unless loss is allowed. Files wholly before every
unpacked byte are dropped from the journal and closed (`release`). Not thread-safe, like
`StreamTail`, which builds on `StreamFiles`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog

from archiverd.collect.files import (
    FP_BYTES,
    Identity,
    Opener,
    OpenFile,
    Span,
    safe_open,
)
from archiverd.config import RotationSettings
from archiverd.errors import FilesMissingError, OutsideRootError, SourceError
from archiverd.journal.db import Journal, SegmentRow
from archiverd.sources.base import Candidate, StreamInfo

log = structlog.get_logger("archiverd.collect.streamfiles")

BadInput = Callable[[str], None]


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
    """The file bookkeeping half of `StreamTail`: the attributes below are set by its
    constructor; `_cur` indexes the file being read."""

    ctx: TailContext
    stream_id: int
    info: StreamInfo
    files: list[StreamFile]
    open_segment: SegmentRow
    _cur: int
    _out_of_sight: int
    _allow_loss: bool

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

    def _reopen(self) -> None:
        """After a restart: find each journaled file again (by identity, any name)."""
        start = self.open_segment.start_offset
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
        if lost and not self._allow_loss:
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
                self._cur = index

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

    def refresh(self, info: StreamInfo) -> bool:  # noqa: C901 - rewritten in #10 (collect)
        """Take the source's current view: append files that appeared after the last known.

        Returns False when something must be looked at again later (a listing taken
        mid-rotation, a file that cannot be opened yet).
        """
        self.info = info
        if self.files:
            live = self.files[-1]
            newest = info.files[-1] if info.files else None
            if newest is None:
                return True
            if not newest.gz and _same_inode(newest.path, live.file):
                self._grow_fingerprint(live)
                return True
        opened_all = self._open_consistent(info)
        if opened_all is None:
            return False  # the directory kept changing under us: next pass
        known = [f.identity for f in self.files]
        after = 0
        for index, opened in enumerate(opened_all):
            if opened is not None and any(self._matches(opened, k) for k in known):
                after = index + 1
        floor = None
        if self.files and after == 0:
            self._out_of_sight += 1
            if self._out_of_sight < 2 and len(opened_all) > 1:
                # Likely a listing taken mid-rotation of a .1/.2 chain: look again.
                for opened in opened_all:
                    if opened is not None:
                        opened.close()
                return False
            # None of our files is visible any more (renamed away, or deleted by max-file
            # while we lagged): go on with what was written after the last one we hold.
            floor = os.fstat(self.files[-1].file.fd).st_mtime
            if len(opened_all) > 1:
                self.ctx.on_bad("vanished")
                log.warning(
                    "stream's files rotated out of sight; bytes between may be lost",
                    stream=self.info.key,
                )
        self._out_of_sight = 0
        complete = True
        new: list[OpenFile] = []
        for index, opened in enumerate(opened_all):
            if opened is None:
                complete = False
                break  # cannot open it yet: keep order, retry on the next pass
            if index < after or (floor is not None and os.fstat(opened.fd).st_mtime < floor):
                continue
            if opened.gz and not self._complete_gz(opened):
                complete = False
                break
            if opened.size() == 0:
                continue  # nothing to identify it by yet (nor to lose): add it once written
            new.append(opened)
        for opened in opened_all:
            if opened is not None and all(opened is not n for n in new):
                opened.close()
        for opened in new:
            base = self.open_segment.start_offset if not self.files else None
            self._add(opened, base)
        return complete

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

    def _grow_fingerprint(self, f: StreamFile) -> None:
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

    def release(self) -> None:
        """Close and forget files wholly before every unpacked byte (sealed or open)."""
        pending = [s.start_offset for s in self.ctx.journal.segments(self.stream_id, "sealed")]
        low = min([self.open_segment.start_offset, *pending])
        done = [
            f
            for f in self.files[: self._cur]
            if f.base is not None and f.length is not None and f.base + f.length <= low
        ]
        if not done:
            return
        self.ctx.journal.drop_files([f.row_id for f in done])
        for f in done:
            f.file.close()
        self.files = self.files[len(done) :]
        self._cur -= len(done)

    def close(self) -> None:
        """Release every fd."""
        for f in self.files:
            f.file.close()
        self.files = []


def _same_inode(path: Path, opened: OpenFile) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (opened.dev, opened.ino)
