"""Record boundaries of the three log formats: where a segment may end, lines, timestamps.

A `Scanner` is fed the bytes of one container's log stream in order and tracks `boundary`,
the last stream offset where a segment may end:

- ``docker`` (json-file) and ``cri``: after a record that closes an application line (see
  `archiverd.formats.docker` and `archiverd.formats.cri`), never inside a run of partial
  records. Both read lines with `read_line`, the reading restore uses too, so a segment
  reads back with the lines, message ends and times it was sealed with.
- ``plain``: after any ``\\n``.

Bad input is kept, never dropped: a line that is no record closes where its ``\\n`` is
(counted as ``malformed_json``/``malformed_cri``); a logical line longer than
``max_line_bytes`` may be cut at a record boundary the writer already made (``long_line``);
a run of ``max_line_bytes`` with no ``\\n`` at all is cut there. Those two cuts are the only
ones inside an application line. Memory stays bounded by ``max_line_bytes`` plus one fed
chunk, so the rest of a line cut for having no ``\\n`` is read as a line of its own: a
segment holding both sides of such a cut may count it differently than restore, which
reads the whole line (runtimes split lines at 16 KiB, so only garbage is that long).

A segment's ``lines`` are the application lines restore reads from it (one more when it
ends inside one); its first/last times are the first/last valid record times in it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from archiverd.formats import cri, docker
from archiverd.formats.timestamps import TimeCache, from_ns

Format = Literal["docker", "cri", "plain"]
BadInput = Callable[[str], None]
"""``(reason)``: count input skipped or worked around (the one bad-input callback type:
scanners, stream files and sources report through it; whoever reports also logs why)."""


@dataclass(frozen=True)
class Cut:
    """The facts of a sealed byte range, returned by `Scanner.cut`."""

    end: int
    lines: int
    first_ts: datetime | None
    last_ts: datetime | None


_NO_RECORD = (True, None)


def read_line(line: bytes, times: TimeCache) -> tuple[bool, int | None]:
    """(closes an application line, time in ns) of one line of a log.

    A json-file or CRI record is read as its format says; any other line (plain text,
    malformed, binary) closes at its newline and has no time. Restore does not know a
    segment's format, so neither does this: a line is whichever record it parses as.
    """
    record = docker.read(line, times) if line.startswith(b"{") else cri.read(line, times)
    return _NO_RECORD if record is None else record


def line_text(line: bytes, times: TimeCache) -> bytes:
    """What the application wrote in one line (same reading as `read_line`): a record's
    ``log`` or CRI message, or the line itself."""
    text = docker.text(line) if line.startswith(b"{") else cri.text(line, times)
    return line if text is None else text


class _Stats:
    __slots__ = ("first", "last", "lines")

    def __init__(self) -> None:
        self.lines = 0
        self.first: int | None = None  # ns since the epoch
        self.last: int | None = None

    def add(self, lines: int, first: int | None, last: int | None) -> None:
        self.lines += lines
        if self.first is None:
            self.first = first
        if last is not None:
            self.last = last

    def merge(self, other: _Stats) -> None:
        """Take `other`'s counts and empty it."""
        self.add(other.lines, other.first, other.last)
        other.lines, other.first, other.last = 0, None, None


class Scanner:
    """Tracks record boundaries of one stream from `start`; subclasses parse lines."""

    def __init__(self, start: int, *, max_line_bytes: int, on_bad: BadInput) -> None:
        self.position = start
        """Stream offset of the next byte to feed."""
        self.boundary = start
        """Last offset a segment may end at (>= the current segment's start)."""
        self.max_line_bytes = max_line_bytes
        self._on_bad = on_bad
        self._carry: list[bytes] = []  # an incomplete last line, bounded by max_line_bytes
        self._carry_len = 0
        self._line_start = start  # where the current logical line began
        self._long_reported = False
        self._closed = _Stats()  # up to `boundary`
        self._open = _Stats()  # between `boundary` and the last complete line
        self._inside = False  # `boundary` was forced inside an application line
        self._times = TimeCache()

    def __getstate__(self) -> dict[str, object]:
        """All but the bad-input callback: a scanner may be fed in a worker process
        (`archiverd.collect.workers`); whoever unpickles it calls `report_to`."""
        state = self.__dict__.copy()
        state["_on_bad"] = None
        return state

    def report_to(self, on_bad: BadInput) -> None:
        """Report bad input to `on_bad` from now on."""
        self._on_bad = on_bad

    def feed(self, data: bytes) -> None:
        """Consume the next bytes of the stream."""
        if not data:
            return
        offset = self.position - self._carry_len
        self.position += len(data)
        newline = data.rfind(b"\n")
        if newline < 0:
            self._carry.append(data)
            self._carry_len += len(data)
            if self._carry_len > self.max_line_bytes:
                self._overlong()
            return
        tail = data[newline + 1 :]
        if self._carry:  # one copy of the chunk, not two
            head = b"".join([*self._carry, memoryview(data)[: newline + 1]])
        else:
            head = data[: newline + 1]
        self._carry = [tail] if tail else []
        self._carry_len = len(tail)
        self._lines(head, offset)

    def cut(self, *, everything: bool = False) -> Cut:
        """End the segment at `boundary` (or, `everything`, at `position`, e.g. on exit).

        A segment ending inside an application line (`everything` with an unfinished one, or
        a forced cut of an over-long one) counts that line's start as one line, as restore
        reads it.
        """
        if everything and self.position > self.boundary:
            self._cut_carry()
        lines = self._closed.lines + (1 if self._inside else 0)
        cut = Cut(
            end=self.boundary,
            lines=lines,
            first_ts=_datetime(self._closed.first),
            last_ts=_datetime(self._closed.last),
        )
        self._closed = _Stats()
        self._inside = False
        return cut

    @property
    def first_ts(self) -> datetime | None:
        """Timestamp of the first record fed since the last cut (None: none, or no times)."""
        first = self._closed.first if self._closed.first is not None else self._open.first
        return _datetime(first)

    def _commit(self, end: int) -> None:
        """Move the boundary to `end`, the end of a line that closes an application line."""
        self.boundary = end
        self._closed.merge(self._open)
        self._inside = False

    def _force_cut(self, end: int) -> None:
        """Move the boundary to `end`, inside an application line."""
        self._line_start = end
        self._commit(end)
        self._inside = True

    def _cut_carry(self) -> None:
        """Cut at `position`, ending the segment with the incomplete last line if any."""
        if self._carry:
            ts = self._time_of(b"".join(self._carry))
            self._open.add(0, ts, ts)
            self._carry, self._carry_len = [], 0
        self._force_cut(self.position)

    def _overlong(self) -> None:
        # A run with no newline at all: cut it here so memory stays bounded.
        self._bad("long_line")
        if any(b"\x00" in part for part in self._carry):
            self._bad("binary")
        self._cut_carry()

    def _bad(self, reason: str) -> None:
        self._on_bad(reason)

    def _time_of(self, line: bytes) -> int | None:
        """The time of an incomplete last line, read as restore will read it."""
        return None

    def _lines(self, data: bytes, offset: int) -> None:
        raise NotImplementedError


class PlainScanner(Scanner):
    """Plain text: every newline is a boundary."""

    def _lines(self, data: bytes, offset: int) -> None:
        if b"\x00" in data:
            self._bad("binary")
        self._open.add(data.count(b"\n"), None, None)
        self._line_start = offset + len(data)
        self._commit(self._line_start)


_RETRY_USUAL = 64


class _RecordScanner(Scanner):
    """Formats with partial records: a boundary after a record that closes a line."""

    read: Callable[[bytes, TimeCache], tuple[bool, int | None] | None]
    """This format's reading of one record (None: the line is none)."""
    malformed: str  # the bad_input reason of a line that is no record of this format

    def _lines(self, data: bytes, offset: int) -> None:
        if self._fast(data, offset):
            return
        lines = data.split(b"\n")[:-1]
        if offset + len(data) - self._line_start < self.max_line_bytes:
            self._read(lines, offset)
            return
        pos = offset
        for line in lines:  # an over-long line may be cut after one of these records
            self._read([line], pos)
            pos += len(line) + 1
            if pos - self._line_start >= self.max_line_bytes:
                if not self._long_reported:
                    self._bad("long_line")
                    self._long_reported = True
                self._force_cut(pos)

    def _read(self, lines: list[bytes], offset: int) -> None:
        """Read whole lines starting at stream offset `offset`; commit once, after the last
        that closes an application line (the same state as committing after each)."""
        times, own = self._times, self.read
        pos, closing, commit = offset, 0, -1
        first: int | None = None  # the first time since the last boundary, in these lines
        last: int | None = None
        open_first: int | None = None  # the first time after the last closing line
        committed_first = committed_last = None
        for line in lines:
            pos += len(line) + 1
            record = own(line, times)
            if record is None:  # kept as is, read as restore reads it
                self._bad("binary" if b"\x00" in line else self.malformed)
                record = read_line(line, times)
            closes, ts = record
            if ts is not None:
                if first is None:
                    first = ts
                if open_first is None:
                    open_first = ts
                last = ts
            if closes:
                closing, commit, open_first = closing + 1, pos, None
                committed_first, committed_last = first, last
        if commit >= 0:
            self._open.add(closing, committed_first, committed_last)
            self._line_start = commit
            self._long_reported = False
            self._commit(commit)
        self._open.add(0, open_first, last if open_first is not None else None)

    def _fast(self, data: bytes, offset: int) -> bool:
        """Read `data` (whole lines starting at `offset`) in bulk if it is clean; whether
        it was."""
        return False

    _unusual = 0
    """Chunks left before the usual-chunk path is tried again (see `_usual_worth_trying`)."""

    def _usual_worth_trying(self) -> bool:
        """Whether to try this format's cheaper path for the usual chunk: a stream whose
        chunk was not usual (attrs, long lines, P records) tries again only after
        `_RETRY_USUAL` chunks, so it does not pay for a failed try on every chunk."""
        if self._unusual:
            self._unusual -= 1
            return False
        return True

    def _not_usual(self) -> None:
        self._unusual = _RETRY_USUAL

    def _take(self, end: int, closing: int, first: int | None, last: int | None) -> bool:
        """Take a clean chunk ending at `end` with a line-closing record, read in bulk."""
        if first is None or last is None:
            return False  # the first/last valid times are further in: read line by line
        self._open.add(closing, first, last)
        self._line_start = end
        self._long_reported = False
        self._commit(end)
        return True

    def _time_of(self, line: bytes) -> int | None:
        return read_line(line, self._times)[1]


class DockerScanner(_RecordScanner):
    """Docker json-file: ``{"log":"...","stream":"stdout",["attrs":{...},]"time":"..."}``."""

    read = staticmethod(docker.read)
    malformed = "malformed_json"

    def _fast(self, data: bytes, offset: int) -> bool:
        # Clean chunks (the norm) are counted in one compiled pass, or where that was not
        # built with bytes.count instead of a Python loop: the usual ones (every record
        # closes, no attrs) in fewer passes.
        closing = None
        if docker.compiled_closing is not None:
            closing = docker.compiled_closing(data)
        else:
            closing = self._count_in_passes(data)
        if closing is None:
            return False
        first = docker.read(data[: data.find(b"\n")], self._times)
        last = docker.read(data[data.rfind(b"\n", 0, len(data) - 1) + 1 : -1], self._times)
        if first is None or last is None or not last[0]:
            return False
        return self._take(offset + len(data), closing, first[1], last[1])

    def _count_in_passes(self, data: bytes) -> int | None:
        closing = None
        if self._usual_worth_trying():
            closing = docker.count_closing_usual(data)
            if closing is None:
                self._not_usual()
        return docker.count_closing(data) if closing is None else closing


class CriScanner(_RecordScanner):
    """CRI: ``<RFC3339Nano> <stdout|stderr> <P|F> <message>``."""

    read = staticmethod(cri.read)
    malformed = "malformed_cri"

    def _fast(self, data: bytes, offset: int) -> bool:
        # Clean chunks (the norm) are counted in one compiled pass, or where that was not
        # built read with one regular expression, not line by line: the usual ones (F
        # records only) with a cheaper one.
        if cri.compiled_closing is not None:
            closing = cri.compiled_closing(data)
            if closing is None:
                return False
            ending = cri.read(data[data.rfind(b"\n", 0, len(data) - 1) + 1 : -1], self._times)
            if ending is None or not ending[0]:
                return False
            start = self._times.parse(data[: data.find(b" ")])
            return self._take(offset + len(data), closing, start, ending[1])
        if self._usual_worth_trying():
            usual = cri.bulk_closing(data)
            if usual is not None:
                lines, first_stamp, last_stamp = usual
                first, last = self._times.parse(first_stamp), self._times.parse(last_stamp)
                return self._take(offset + len(data), lines, first, last)
            self._not_usual()
        found = cri.bulk(data)
        if found is None or found[1][-1] != b"F":
            return False
        stamps, tags = found
        first, last = self._times.parse(stamps[0]), self._times.parse(stamps[-1])
        return self._take(offset + len(data), tags.count(b"F"), first, last)


COMPILED = docker.compiled_closing is not None and cri.compiled_closing is not None
"""Whether the scanners count in their compiled pass (`archiverd/formats/_scan.c`, built
where a C compiler was at install), not in Python."""


def _datetime(ns: int | None) -> datetime | None:
    return None if ns is None else from_ns(ns)


def make_scanner(fmt: Format, start: int, *, max_line_bytes: int, on_bad: BadInput) -> Scanner:
    """The scanner for a stream of format `fmt` starting at stream offset `start`."""
    cls: type[Scanner] = {"docker": DockerScanner, "cri": CriScanner, "plain": PlainScanner}[fmt]
    return cls(start, max_line_bytes=max_line_bytes, on_bad=on_bad)
