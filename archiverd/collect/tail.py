"""One stream's tail and seal state: how far it is read, where the open segment starts, and
when to seal. Which files the stream is made of is kept by the `StreamFiles` it owns
(`archiverd.collect.streamfiles`).

Offsets are positions in the stream (the concatenation of its files, oldest first), so the
segments of a container are contiguous whatever rotations happened. Only the journal's open
segment start is durable: after a restart the stream is re-read from there, which is how a
crash can neither skip nor repeat a byte. Not thread-safe: the collector runs one worker per
stream at a time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog

from archiverd.collect.files import Span
from archiverd.collect.streamfiles import RECENT_BYTES, StreamFiles, TailContext
from archiverd.errors import FilesMissingError
from archiverd.formats.layout import format_ts, stream_id
from archiverd.formats.records import Scanner, make_scanner
from archiverd.journal.db import SegmentRow
from archiverd.sources.base import StreamInfo

__all__ = ["CHUNK", "FilesMissingError", "StreamTail", "TailContext"]

log = structlog.get_logger("archiverd.collect.tail")

CHUNK = 1 << 20
BULK_BYTES = 8 << 20
"""A backlog this long in one file is scanned in a worker process (`TailContext.workers`)."""


class StreamTail:
    """Tail and seal one stream; see the module docstring. Owns the stream's `files`."""

    def __init__(
        self, ctx: TailContext, stream_id: int, info: StreamInfo, *, allow_loss: bool = False
    ) -> None:
        self.ctx = ctx
        self.stream_id = stream_id
        self.info = info
        self.at_end = False
        self.last_growth = ctx.clock()
        self._first_read: datetime | None = None  # when the open segment's first byte was read
        self.open_segment = ctx.journal.open_segment(stream_id)
        self.files = StreamFiles(ctx, stream_id, info)
        self.files.reopen(self.open_segment.start_offset, allow_loss=allow_loss)
        self.scanner = self._scanner(self.open_segment.start_offset)

    def _scanner(self, start: int) -> Scanner:
        return make_scanner(
            self.info.format,
            start,
            max_line_bytes=self.ctx.rotation.max_line_bytes,
            on_bad=self.ctx.on_bad,
        )

    # files ---------------------------------------------------------------------------

    def refresh(self, info: StreamInfo) -> bool:
        """Take the source's current view of the stream (see `StreamFiles.refresh`)."""
        self.info = info
        return self.files.refresh(info, self.open_segment.start_offset)

    def release(self) -> None:
        """Close and forget files wholly before every unpacked byte (sealed or open)."""
        pending = [s.start_offset for s in self.ctx.journal.segments(self.stream_id, "sealed")]
        self.files.release(min([self.open_segment.start_offset, *pending]))

    def spans(self) -> list[Span]:
        """The files placed in the stream, for `RangeReader`."""
        return self.files.spans()

    def close(self) -> None:
        """Release every fd."""
        self.files.close()

    # reading -------------------------------------------------------------------------

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
            if self._scan_elsewhere(room):
                continue
            data = self.files.read(self.scanner.position, CHUNK if room <= 0 else min(room, CHUNK))
            if self.files.truncated:
                self.files.truncated = False
                if may_seal and self.scanner.position > start:
                    sealed.append(self._seal(everything=True, reason="truncated"))
            if not data:
                self.at_end = True
                break
            self._took(len(data))
            self.scanner.feed(data)
        last = self._seal_after_reading(finish, seal_open, aged_before) if may_seal else None
        return sealed if last is None else [*sealed, last]

    def _seal_after_reading(
        self, finish: str | None, seal_open: bool, aged_before: datetime | None
    ) -> SegmentRow | None:
        """The seal `advance` makes once it read what there was, if any (see there)."""
        if self.at_end and finish:
            finished = self._seal_finished(finish)
            if finished is not None:
                return finished
        start = self.open_segment.start_offset
        if self.scanner.boundary <= start:
            return None
        if seal_open:
            return self._seal(everything=False, reason="once")
        if self.files.deleted_from(start):
            # Its first bytes now live only in our fd: sealed, they are packed to the spool
            # at once, where a crash cannot take them (the log driver already has).
            return self._seal(everything=False, reason="deleted")
        if aged_before is not None:
            oldest = self.oldest_at()
            if oldest is not None and oldest < aged_before:
                return self._seal(everything=False, reason="age")
        return None

    def _took(self, n: int, read_at: datetime | None = None) -> None:
        """Note `n` bytes read at the scanner's position (from `read_at`, default now),
        before it is fed them."""
        self.last_growth = self.ctx.clock()
        if self.scanner.position == self.open_segment.start_offset:
            self._first_read = read_at or self.last_growth
        self.ctx.on_read(n)

    def _scan_elsewhere(self, room: int) -> bool:
        """Scan a backlog of at least BULK_BYTES in the current file (up to `room`) in a
        worker process, as the loop of `advance` would read it; whether it did."""
        workers = self.ctx.workers
        if workers is None or room < BULK_BYTES:
            return False
        bulk = self.files.bulk(self.scanner.position, room)
        if bulk is None or bulk[2] < BULK_BYTES:
            return False
        file, offset, n = bulk
        read_at = self.ctx.clock()
        scanned = workers.scan(file, offset, n, self.scanner, chunk=CHUNK, last_bytes=RECENT_BYTES)
        if scanned is None or not scanned.bytes_read:
            return False
        self._took(scanned.bytes_read, read_at)
        self.scanner = scanned.scanner
        self.scanner.report_to(self.ctx.on_bad)
        for reason in scanned.bad:
            self.ctx.on_bad(reason)
        self.files.bulk_read(scanned.last)
        return True

    def _seal_finished(self, reason: str) -> SegmentRow | None:
        """At the end of a stream that finished: seal everything read, or, when nothing is
        left and the stream ended for good, the empty end-of-stream segment (`_seal_end`)."""
        if self.scanner.position > self.open_segment.start_offset:
            return self._seal(everything=True, reason=reason)
        return self._seal_end(reason) if self._ended(reason) else None

    def _ended(self, reason: str) -> bool:
        """The stream is over for good (not merely exited: a container can restart)."""
        return reason == "finished" and self.info.state in ("finished", "removed")

    def _seal_end(self, reason: str) -> SegmentRow | None:
        """An empty segment carrying the end-of-stream flag, when the stream ended right
        after a seal (e.g. sealed on exit, then removed), so its end is provable. Placed at
        the previous segment's last record; none for a stream that never had a segment or
        whose last segment already says it ended."""
        previous = self.ctx.journal.predecessors(self.stream_id, self.open_segment.seq)
        if not previous or previous[0].seq != self.open_segment.seq - 1:
            return None
        description = previous[0].description or {}
        if description.get("end_of_stream") or "last_ts" not in description:
            return None
        return self._seal(
            everything=True, reason=reason, empty_at=datetime.fromisoformat(description["last_ts"])
        )

    def _seal(
        self, *, everything: bool, reason: str, empty_at: datetime | None = None
    ) -> SegmentRow:
        oldest = self.oldest_at()
        cut = self.scanner.cut(everything=everything)
        now = empty_at or self.ctx.clock()
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
            "stream": stream_id(self.ctx.host, self.ctx.source_name, self.info.key),
            "end_of_stream": self._ended(reason),
            "resumes": self.ctx.journal.stream_ended(self.stream_id),
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
