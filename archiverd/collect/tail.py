"""One stream's tail and seal state: how far it is read, where the open segment starts, and
when to seal. Which files the stream is made of is kept by `archiverd.collect.streamfiles`.

Offsets are positions in the stream (the concatenation of its files, oldest first), so the
segments of a container are contiguous whatever rotations happened. Only the journal's open
segment start is durable: after a restart the stream is re-read from there, which is how a
crash can neither skip nor repeat a byte. Not thread-safe: the collector runs one worker per
stream at a time.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import structlog

from archiverd.collect.files import FP_BYTES, OpenFile
from archiverd.collect.streamfiles import StreamFile, StreamFiles, TailContext
from archiverd.errors import FilesMissingError
from archiverd.formats.layout import format_ts
from archiverd.formats.records import Scanner, make_scanner
from archiverd.journal.db import SegmentRow
from archiverd.sources.base import StreamInfo

__all__ = ["CHUNK", "FilesMissingError", "StreamTail", "TailContext"]

log = structlog.get_logger("archiverd.collect.tail")

CHUNK = 1 << 20


class StreamTail(StreamFiles):
    """Tail and seal one stream; see the module docstring."""

    def __init__(
        self, ctx: TailContext, stream_id: int, info: StreamInfo, *, allow_loss: bool = False
    ) -> None:
        self.ctx = ctx
        self.stream_id = stream_id
        self.info = info
        self.files = []
        self._cur = 0
        self._truncated = False
        self._out_of_sight = 0
        self.at_end = False
        self.last_growth = ctx.clock()
        self._first_read: datetime | None = None  # when the open segment's first byte was read
        self.open_segment = ctx.journal.open_segment(stream_id)
        self._allow_loss = allow_loss
        self._reopen()
        self.scanner = self._scanner(self.open_segment.start_offset)

    def _scanner(self, start: int) -> Scanner:
        return make_scanner(
            self.info.format,
            start,
            max_line_bytes=self.ctx.rotation.max_line_bytes,
            on_bad=self.ctx.on_bad,
        )

    # reading -------------------------------------------------------------------------

    def _read(self, n: int) -> bytes:
        while self._cur < len(self.files):
            f = self.files[self._cur]
            assert f.base is not None
            offset = self.scanner.position - f.base
            live = not f.file.gz and self._cur == len(self.files) - 1
            if live and f.file.size() < offset:
                self._truncate(f, offset)
                continue
            data = f.file.read_at(offset, n)
            if data:
                if f.identity.fp_len < FP_BYTES:
                    self._grow_fingerprint(f)
                return data
            if self._cur + 1 >= len(self.files):
                return b""
            nxt = self.files[self._cur + 1]
            f.length = offset
            nxt.base = f.base + offset
            self.ctx.journal.finish_file(f.row_id, offset, nxt.row_id)
            self._cur += 1
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
        self._cur += 1
        self._truncated = True

    def oldest_at(self) -> datetime | None:
        """When the oldest byte read but not yet sealed was written: its record's timestamp,
        or when archiverd read it if that is earlier or there is no timestamp; None if none."""
        if self.scanner.position <= self.open_segment.start_offset:
            return None
        known = [t for t in (self.scanner.first_ts, self._first_read) if t is not None]
        return min(known, default=None)

    def advance(
        self,
        *,
        may_seal: bool,
        finish: str | None = None,
        seal_open: bool = False,
        aged_before: datetime | None = None,
    ) -> list[SegmentRow]:
        """Read what is available, sealing at `max_segment_bytes` when `may_seal`.

        At the end of the data, `finish` (a reason) seals everything read, since the stream
        ended; `seal_open` seals up to the last record boundary, and so does `aged_before`
        when the oldest byte read is older than it (`oldest_at`). Each seal is committed to
        the journal before this returns the sealed rows.
        """
        sealed: list[SegmentRow] = []
        limit = self.ctx.rotation.max_segment_bytes
        self.at_end = False
        while True:
            start = self.open_segment.start_offset
            room = start + limit - self.scanner.position
            if room <= 0 and self.scanner.boundary > start:
                if not may_seal:
                    break
                sealed.append(self._seal(everything=False, reason="size"))
                continue
            data = self._read(CHUNK if room <= 0 else min(room, CHUNK))
            if self._truncated:
                self._truncated = False
                if may_seal and self.scanner.position > start:
                    sealed.append(self._seal(everything=True, reason="truncated"))
            if not data:
                self.at_end = True
                break
            self.last_growth = self.ctx.clock()
            if self.scanner.position == self.open_segment.start_offset:
                self._first_read = self.last_growth
            self.ctx.on_read(len(data))
            self.scanner.feed(data)
        start = self.open_segment.start_offset
        if may_seal and self.at_end and finish and self.scanner.position > start:
            sealed.append(self._seal(everything=True, reason=finish))
        elif may_seal and seal_open and self.scanner.boundary > start:
            sealed.append(self._seal(everything=False, reason="once"))
        elif may_seal and aged_before is not None and self.scanner.boundary > start:
            oldest = self.oldest_at()
            if oldest is not None and oldest < aged_before:
                sealed.append(self._seal(everything=False, reason="age"))
        return sealed

    def _seal(self, *, everything: bool, reason: str) -> SegmentRow:
        oldest = self.oldest_at()
        cut = self.scanner.cut(everything=everything)
        now = self.ctx.clock()
        first = cut.first_ts or now
        last = cut.last_ts or now
        seg = self.open_segment
        description: dict[str, Any] = {
            "host": self.ctx.host,
            "container_id": self.info.container_id,
            "seq": seg.seq,
            "first_ts": first.isoformat(),
            "last_ts": max(last, first).isoformat(),
            "start_offset": seg.start_offset,
            "end_offset": cut.end,
            "line_count": cut.lines,
            "container_name": self.info.name,
            "image": self.info.image,
            "source": self.ctx.source_name,
            "labels": dict(self.info.labels),
            "oldest_at": (oldest or first).isoformat(),  # for the archive lag, until uploaded
        }
        row = self.ctx.journal.seal(seg.id, cut.end, description, reason)
        # bytes past the cut (a partial record) were read with the last chunk
        self._first_read = self.last_growth if self.scanner.position > cut.end else None
        self.ctx.on_sealed(reason)
        self.open_segment = self.ctx.journal.open_segment(self.stream_id)
        log.info(
            "segment sealed",
            container=self.info.container_id,
            seq=seg.seq,
            reason=reason,
            bytes=cut.end - seg.start_offset,
            first=format_ts(first),
        )
        return row
