"""A stream's files: finding them again after a restart, appending the ones a rotation
created, and placing each at its offset in the stream.

Every file a stream is made of is journaled (identity, base offset, length once finished)
before it is read, so a restart finds each again by identity under any name; a journaled file
that stays missing raises `FilesMissingError` unless loss is allowed. Files wholly before every
unpacked byte are dropped from the journal and closed (`release`). `read` reads the stream at
a position across its files. Not thread-safe, like the `StreamTail` that owns a `StreamFiles`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from archiverd.collect.files import (
    FP_BYTES,
    Identity,
    Opener,
    OpenFile,
    Span,
    safe_open,
)
from archiverd.collect.pins import FileKey, Pins, StreamRef
from archiverd.collect.workers import WorkerPool
from archiverd.config import RotationSettings
from archiverd.errors import FilesMissingError, OutsideRootError, SourceError
from archiverd.formats.records import BadInput, Format, make_scanner
from archiverd.journal.db import FileRow, Journal
from archiverd.sources.base import Candidate, StreamInfo

log = structlog.get_logger("archiverd.collect.streamfiles")


@dataclass
class StreamFile:
    row_id: int
    file: OpenFile
    identity: Identity
    base: int | None
    length: int | None = None
    recent: bytes = b""
    """The last bytes read from it (up to `RECENT_BYTES`): a copy must hold them too."""


RECENT_BYTES = 4096


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
    describe: Callable[[str], StreamInfo]
    """The source's current view of a stream (listing again checks a snapshot)."""
    on_read: Callable[[int], None] = field(default=lambda n: None)
    on_sealed: Callable[[str], None] = field(default=lambda reason: None)
    opener: Opener = os.open
    on_lost: Callable[[str, int | None], None] = field(default=lambda reason, n: None)
    """Count a gap (reason, bytes if known); the entry itself goes to the journal."""
    workers: WorkerPool | None = None
    """Where backlogs are scanned (None: on the stream's own thread)."""
    pins: Pins | None = None
    """Live files opened as they were created (None: only what listings find)."""


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
                self._noted(f, data)
                return data
            if self.cur + 1 >= len(self.files):
                return b""
            nxt = self.files[self.cur + 1]
            f.length = offset
            nxt.base = f.base + offset
            self.ctx.journal.finish_file(f.row_id, offset, nxt.row_id)
            self.cur += 1
        return b""

    def bulk(self, position: int, most: int) -> tuple[OpenFile, int, int] | None:
        """(file, offset in it, byte count) of the next `most` stream bytes or fewer at
        `position` that `read` would return from the current file with nothing else to do:
        a plain file, not truncated, no move to the next file. None if there are none."""
        if self.cur >= len(self.files):
            return None
        f = self.files[self.cur]
        if f.base is None or f.file.gz:
            return None
        offset = position - f.base
        size = f.file.size()
        if f.length is not None:  # a file before the live one ends where it was finished
            size = min(size, f.length)
        if size <= offset:
            return None
        return f.file, offset, min(size - offset, most)

    def data_end(self) -> int | None:
        """The stream offset where the data ends now, when the file being read is the last
        one and plain (the places of rotations not yet read are not known); else None."""
        if self.cur != len(self.files) - 1:
            return None
        f = self.files[self.cur]
        if f.base is None or f.file.gz:
            return None
        return f.base + f.file.size()

    def bulk_read(self, last: bytes) -> None:
        """Note a `bulk` range as read, as `read` notes what it returns, from its `last`
        bytes (at least RECENT_BYTES of them, or all)."""
        self._noted(self.files[self.cur], last)

    def _noted(self, f: StreamFile, data: bytes) -> None:
        """Note bytes just read from `f`: its last RECENT_BYTES (a copy must hold them too),
        and its fingerprint, if still short."""
        f.recent = (f.recent + data[-RECENT_BYTES:])[-RECENT_BYTES:]
        if f.identity.fp_len < FP_BYTES:
            self.grow_fingerprint(f)

    def _truncate(self, f: StreamFile, offset: int) -> None:
        """The live file is shorter than what was read from it: truncated in place. With
        copytruncate a copy of it sits next to it; reading goes on from the copy (to its
        end, which may hold bytes not yet read), then into the truncated file. Without a
        copy the bytes read and not yet packed are gone (recorded as lost at packing)."""
        assert f.base is not None
        copy = self._find_copy(f, offset)
        fd, path = os.dup(f.file.fd), f.file.path
        if copy is not None:
            log.info(
                "log file truncated after being copied (copytruncate): reading the copy",
                path=f.file.path,
                copy=copy.path,
                read=offset,
            )
            f.file.close()
            f.file = copy
            self.ctx.journal.replace_file(f.row_id, path=copy.path, dev=copy.dev, ino=copy.ino)
            self._add(OpenFile(fd, path=path, gz=False), None)
            return
        self.ctx.on_bad("truncated")
        log.warning(
            "log file truncated in place; bytes not yet packed may be lost",
            path=f.file.path,
            read=offset,
            size=f.file.size(),
        )
        f.length = offset
        self.ctx.journal.finish_file(f.row_id, offset, None)
        self._add(OpenFile(fd, path=path, gz=False), f.base + offset)
        self.cur += 1
        self.truncated = True

    def _find_copy(self, f: StreamFile, offset: int) -> OpenFile | None:
        """A regular file next to `f` holding what was read from it: the same first bytes
        (fingerprint), at least `offset` bytes, and the last bytes read at the same place."""
        directory = Path(f.file.path).parent
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            return None
        for name in names:
            try:
                fd = safe_open(self.ctx.root, directory / name, self.ctx.opener)
            except (OSError, SourceError):
                continue  # not a regular file inside the root: not a copy we may read
            opened = OpenFile(fd, path=str(directory / name), gz=False)
            if self._holds(opened, f, offset):
                return opened
            opened.close()
        return None

    def _holds(self, opened: OpenFile, f: StreamFile, offset: int) -> bool:
        if (opened.dev, opened.ino) == (f.file.dev, f.file.ino) or opened.size() < offset:
            return False
        if f.identity.fp_len == 0 or opened.identity(f.identity.fp_len).fp != f.identity.fp:
            return False
        tail = f.recent[-min(len(f.recent), offset) :] if f.recent else b""
        return opened.read_at(offset - len(tail), len(tail)) == tail

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

    def _find(self, row: FileRow, known: Identity) -> OpenFile | None:
        """A journaled file under its old name, a name the source lists, or (renamed out of
        the source's view, e.g. ``app.log`` to ``app.log.1`` beside it) any name in its
        directory that holds the same inode."""
        listed = (Candidate(Path(row.path), row.gz), *self.info.files)
        for cand in itertools.chain(listed, _renamed(row)):  # the directory scan only if needed
            opened = self._open(cand)
            if (
                opened is not None
                and self._matches(opened, known)
                and (row.length is None or opened.size() >= row.length)
            ):
                return opened
            if opened is not None:
                opened.close()
        return None

    def reopen(self, start: int, *, allow_loss: bool) -> None:
        """After a restart: find each journaled file again (by identity, any name) and
        place reading at stream offset `start` (the open segment's).

        A file journaled while empty is forgotten instead: nothing was read from it, and its
        inode alone does not identify it (deleted while archiverd was down, its number may
        now be another file's). Whatever it became is listed after the last file read, which
        `release` keeps for this."""
        rows = self.ctx.journal.files(self.stream_id)
        unread = [row for row in rows if row.fp_len == 0]
        if unread:
            self.ctx.journal.drop_files([row.id for row in unread])
            rows = [row for row in rows if row.fp_len > 0]
        lost: list[FileRow] = []
        for row in rows:
            known = Identity(row.dev, row.ino, row.fp, row.fp_len)
            found = self._find(row, known)
            if found is None:
                lost.append(row)
                continue
            self.files.append(StreamFile(row.id, found, known, row.base, row.length))
        if lost and self.ctx.journal.stream_ended(self.stream_id):
            # The stream ended (its end mark sealed everything read): these files were its
            # last, rotated away; the name now belongs to a new file that resumes the stream.
            log.info("an ended stream resumes under the same name", stream=self.info.key)
            self.ctx.journal.drop_files([row.id for row in lost])
            self._rebase(start)
            lost = []
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
            self._lost(
                lost_entry(
                    _unread(lost, start), after=None, before=None, reason="vanished_while_down"
                )
            )
            self.ctx.journal.drop_files([row.id for row in lost])
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
        """Take the source's current view: append, in order, every file after the last one
        held (the first file of a stream with none is placed at stream offset `start`).

        The view is a consistent snapshot (listed, opened, listed again: same names, each
        still the file opened), so a rotation between listing and opening cannot hide a file.
        When none of the held files is listed any more although the source keeps its
        rotations, the files between were deleted unread: that gap is recorded as lost.
        Files deleted before this listing could show them are taken from the stream's pins
        (`archiverd.collect.pins`), and a gap is recorded only where the pins' views do not
        prove that each file directly follows the one before.
        Returns False when something must be looked at again later (the directory kept
        changing, a file that cannot be opened yet).
        """
        self.info = info
        if self._live_unchanged(info):
            self._settle()
            return True
        snapshot = self._open_consistent(info)
        if snapshot is None:
            return False  # the directory kept changing under us: next pass
        self.info, opened_all = snapshot
        if self.ctx.pins is not None and all(o is not None for o in opened_all):
            self.ctx.pins.saw(self._pin_ref(), [(o.dev, o.ino) for o in opened_all if o])
        after = self._after_known(opened_all)
        missed: list[OpenFile] = []
        if self.files and after == 0:
            if any(o is None for o in opened_all):
                _close_all(opened_all, keep=[])
                return False  # one we cannot open now may be ours: do not guess
            after = self._past_older(opened_all)
            missed, listed = self._follow(opened_all[after:])
            opened_all, after = opened_all[:after] + listed, after
        new, complete = self._new_files(opened_all, after)
        if new and not self.files and start == 0:
            self._check_first_seen(opened_all)
        _close_all(opened_all, keep=new)
        for opened in [*missed, *new]:
            self._add(opened, start if not self.files else None)
        self._settle(reconciled=True)
        return complete

    def _follow(
        self, listed: list[OpenFile | None]
    ) -> tuple[list[OpenFile], list[OpenFile | None]]:
        """None of the held files is listed any more: the files that came after the last
        one held. Returns the pinned files deleted since (oldest first; own fds) and the
        listed ones still to take (copies of those dropped). Where the steps from the last
        held file through these are not proven (`Pins`), a possible loss is recorded (for
        sources that keep their rotations; others rotate by other means)."""
        pinned, follows = (
            self.ctx.pins.snapshot(self._pin_ref()) if self.ctx.pins is not None else ({}, {})
        )
        last = self.files[-1]
        held = {(f.file.dev, f.file.ino) for f in self.files}
        listed_keys = {(o.dev, o.ino) for o in listed if o is not None}
        deleted = [
            f for k, f in pinned.items() if k not in held and k not in listed_keys and _deleted(f)
        ]
        gone = [f for f, old in zip(deleted, self._older(deleted), strict=True) if not old]
        gone = [f for f in gone if not any(self._matches(f, h.identity) for h in self.files)]
        # a compressed copy pinned beside its original (both deleted since) is read once
        gone = [
            f for f in gone if not (f.gz and any(not g.gz and _same_content(f, g) for g in gone))
        ]
        gone.sort(key=lambda f: _first_written(f, self.info.format))
        kept = [o for o in listed if o is None or not any(_same_content(o, g) for g in gone)]
        steps: list[tuple[OpenFile, OpenFile | None, bool]] = []
        previous = last.file
        for index, f in enumerate([*gone, *kept]):
            listed_step = index > len(gone) and kept[index - len(gone) - 1] is not None
            proven = listed_step or _steps_to(follows, previous, f, listed)
            steps.append((previous, f, proven))
            previous = f if f is not None else previous
        if self.info.keeps_rotations:
            for before, first_new, proven in steps:
                if not proven:
                    self._record_gap(first_new, last=before)
        taken = [_dup(f) for f in gone if f.size() > 0]
        return taken, kept

    def _pin_ref(self) -> StreamRef:
        return (self.ctx.source_name, self.info.key)

    def _settle(self, *, reconciled: bool = False) -> None:
        """Tell the pins which files this stream holds (let go of those), and once a view was
        reconciled, let go of deleted pinned files written before the newest one held, or
        copies of one held: nothing will take them. A deleted file newer than that (pinned
        while this refresh ran) waits for the next one."""
        if self.ctx.pins is None:
            return
        ref = self._pin_ref()
        pinned, _ = self.ctx.pins.snapshot(ref) if reconciled and self.files else ({}, {})
        deleted = [(k, f) for k, f in pinned.items() if _deleted(f)]
        older = self._older([f for _, f in deleted])
        done = [
            k
            for (k, f), old in zip(deleted, older, strict=True)
            if old or any(self._matches(f, h.identity) for h in self.files)
        ]
        self.ctx.pins.settle(ref, [(f.file.dev, f.file.ino) for f in self.files], done)

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
        """Index just past the last candidate that is one of our files (0: none is).

        The held files' fingerprints are grown first: a file held while empty may since have
        been filled, rotated and compressed into a copy known only by its first bytes."""
        for f in self.files:
            self.grow_fingerprint(f)
        known = [f.identity for f in self.files]
        after = 0
        for index, opened in enumerate(opened_all):
            if opened is not None and any(self._matches(opened, k) for k in known):
                after = index + 1
        return after

    def _past_older(self, opened_all: list[OpenFile | None]) -> int:
        """None of the held files is listed: the index past the candidates that are older
        than what was read (files already read and released, seen while a directory is
        being removed entry by entry; see `_older`)."""
        older = self._older([o for o in opened_all if o is not None])
        assert len(older) == len(opened_all)
        return max((index + 1 for index, old in enumerate(older) if old), default=0)

    def _older(self, files: list[OpenFile]) -> list[bool]:
        """For each of `files`, whether it was written before the last held file: last
        written before it (mtime), or, for a compressed rotation (whose mtime is that of its
        compression) or an mtime in the same clock tick, its last record older than the last
        one read. The held file's own mtime and last record are read once for all."""
        if not files:
            return []
        last = self.files[-1]
        floor = os.fstat(last.file.fd).st_mtime
        last_read = edge_ts(last.file, self.info.format, last=True)
        verdicts = []
        for opened in files:
            mtime = os.fstat(opened.fd).st_mtime
            older = mtime < floor
            if not older and (opened.gz or mtime == floor) and last_read is not None:
                end = edge_ts(opened, self.info.format, last=True)
                older = end is not None and end < last_read
            verdicts.append(older)
        return verdicts

    def _record_gap(self, first_new: OpenFile | None, last: OpenFile | None = None) -> None:
        """Files between `last` (default: the last one held) and `first_new` were deleted
        before they could be opened (rotated out faster than read, or while archiverd was
        down)."""
        entry = lost_entry(
            None,
            after=edge_ts(last or self.files[-1].file, self.info.format, last=True),
            before=edge_ts(first_new, self.info.format, last=False) if first_new else None,
            reason="rotated_unread",
        )
        self._lost(entry)

    def _check_first_seen(self, opened_all: list[OpenFile | None]) -> None:
        """A new stream whose writer already keeps as many files as it may: older ones
        were probably deleted before archiverd saw the stream (started while it was down,
        or rotating faster than discovery)."""
        limit = self.info.rotation_limit
        first = opened_all[0] if opened_all else None
        if limit is None or limit < 2 or len(opened_all) < limit or first is None:
            return
        entry = lost_entry(
            None,
            after=None,
            before=edge_ts(first, self.info.format, last=False),
            reason="rotated_before_seen",
        )
        self._lost(entry)

    def _lost(self, entry: dict[str, Any]) -> None:
        self.ctx.journal.add_lost(self.stream_id, entry)
        self.ctx.on_lost(str(entry["reason"]), entry["bytes"])
        log.error(
            "source bytes lost: files were deleted before archiverd could read them",
            stream=self.info.key,
            **entry,
        )

    def _new_files(
        self, opened_all: list[OpenFile | None], after: int
    ) -> tuple[list[OpenFile], bool]:
        """The candidates to append, in order, and whether every one could be looked at.

        An empty live file is held too (known by its inode until it has bytes): a writer may
        fill it, rotate it and delete it before the next look, and the held fd still reads
        it. An empty rotated file has nothing to read."""
        new: list[OpenFile] = []
        last = len(opened_all) - 1
        for index, opened in enumerate(opened_all[after:], start=after):
            if opened is None:
                return new, False  # cannot open it yet: keep order, retry on the next pass
            if opened.gz and not self._complete_gz(opened):
                return new, False
            if opened.size() == 0 and (index < last or opened.gz):
                continue
            new.append(opened)
        return new, True

    def _open_consistent(self, info: StreamInfo) -> tuple[StreamInfo, list[OpenFile | None]] | None:
        """Open every candidate, then list again: the same names, each still holding the
        file opened, make a snapshot (a rotation renames a chain of files; a listing taken
        before it would misorder them or miss the oldest)."""
        for _ in range(10):
            opened = [self._open(c) for c in info.files]
            again = self.ctx.describe(info.key)
            if [c.path for c in again.files] == [c.path for c in info.files] and all(
                o is None or _same_inode(c.path, o) for c, o in zip(info.files, opened, strict=True)
            ):
                return again, opened
            _close_all(opened, keep=[])
            info = again
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

    def deleted_from(self, start: int) -> bool:
        """Whether the file holding stream offset `start` was deleted (a rotation past
        max-file, a compressed copy made): its bytes from there on are kept only by this
        process's fd, and a crash would lose them."""
        for f in self.files:
            if f.base is None or (f.length is not None and f.base + f.length <= start):
                continue
            return _deleted(f.file)
        return False

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
        byte, sealed or open). The last file with bytes is kept while only empty ones follow
        it: a restart finds the stream's place after it (see `reopen`)."""
        with_bytes = [i for i, f in enumerate(self.files) if f.identity.fp_len > 0]
        keep_from = min(self.cur, with_bytes[-1]) if with_bytes else self.cur
        done = [
            f
            for f in self.files[:keep_from]
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


EDGE_BYTES = 64 * 1024
"""How much of a file's head or tail is read to find its first or last record's time."""


def lost_entry(
    n: int | None, *, after: datetime | None, before: datetime | None, reason: str
) -> dict[str, Any]:
    """One ``"lost"`` entry of a segment description."""
    return {
        "bytes": n,
        "after_ts": after.isoformat() if after else None,
        "before_ts": before.isoformat() if before else None,
        "reason": reason,
    }


def edge_ts(opened: OpenFile, fmt: Format, *, last: bool) -> datetime | None:
    """The time of the file's first (or last) complete record, when it has one."""
    try:
        if last:
            size = opened.size()
            data = opened.read_at(max(size - EDGE_BYTES, 0), EDGE_BYTES)
            end = data.rfind(b"\n")
            data = data[data.rfind(b"\n", 0, end) + 1 : end + 1] if end >= 0 else b""
        else:
            data = opened.read_at(0, EDGE_BYTES)
            data = data[: data.find(b"\n") + 1]
    except (OSError, EOFError, SourceError):
        return None
    scanner = make_scanner(fmt, 0, max_line_bytes=EDGE_BYTES, on_bad=lambda reason: None)
    scanner.feed(data)
    return scanner.cut(everything=True).first_ts


def _renamed(row: FileRow) -> Iterator[Candidate]:
    """Names in the directory of `row.path` that hold its inode now (not for gzip files,
    whose rotation makes a new inode)."""
    if row.gz:
        return
    try:
        with os.scandir(Path(row.path).parent) as entries:
            for entry in entries:
                if entry.inode() == row.ino and entry.is_file(follow_symlinks=False):
                    yield Candidate(Path(entry.path), False)
    except OSError:
        return


def _unread(rows: list[FileRow], start: int) -> int | None:
    """Bytes of the vanished files at or after stream offset `start`, when all are known."""
    total = 0
    for row in rows:
        if row.base is None or row.length is None:
            return None
        total += max(row.base + row.length - max(start, row.base), 0)
    return total


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


def _steps_to(
    follows: dict[FileKey, FileKey],
    previous: OpenFile,
    f: OpenFile | None,
    listed: list[OpenFile | None],
) -> bool:
    """Whether a view proved that `f` directly follows `previous` (a compressed copy in the
    listing stands for its original)."""
    if f is None:
        return False
    after = follows.get((previous.dev, previous.ino))
    if after is None:
        return False
    if after == (f.dev, f.ino):
        return True
    copies = [o for o in listed if o is not None and (o.dev, o.ino) == after]
    return any(_same_content(c, f) for c in copies)


def _same_content(a: OpenFile, b: OpenFile) -> bool:
    """Whether one of two files is a compressed copy of the other (same first bytes)."""
    if a.gz == b.gz:
        return (a.dev, a.ino) == (b.dev, b.ino)
    try:
        plain, packed = (b, a) if a.gz else (a, b)
        head = plain.head()
        return bool(head) and packed.head(len(head)) == head
    except (OSError, EOFError, SourceError):
        return False


def _first_written(f: OpenFile, fmt: Format) -> tuple[datetime, float]:
    """Sort key in writing order: the first record's time, then the mtime."""
    first = edge_ts(f, fmt, last=False)
    mtime = os.fstat(f.fd).st_mtime
    return (first or datetime.fromtimestamp(mtime, UTC), mtime)


def _deleted(f: OpenFile) -> bool:
    try:
        return os.fstat(f.fd).st_nlink == 0
    except OSError:
        return True


def _dup(f: OpenFile) -> OpenFile:
    """A file of its own over a pinned one (the pin closes its fd when let go)."""
    return OpenFile(os.dup(f.fd), path=f.path, gz=f.gz)
