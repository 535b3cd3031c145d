"""Record boundaries of the three log formats: where a segment may end, lines, timestamps.

A `Scanner` is fed the bytes of one container's log stream in order and tracks `boundary`,
the last stream offset where a segment may end:

- ``docker`` (json-file): after a JSON record whose ``log`` ends in ``\\n``. Docker splits
  lines longer than 16 KiB into partial records; a segment never ends inside one.
- ``cri``: after an ``F`` (full) line, never after a ``P`` (partial) one.
- ``plain``: after any ``\\n``.

Bad input is kept, never dropped: a malformed line closes where its ``\\n`` is (counted as
``malformed_json``); a logical line longer than ``max_line_bytes`` may be cut at a record
boundary the writer already made (``long_line``); a run of ``max_line_bytes`` with no ``\\n``
at all is cut there. Memory stays bounded by ``max_line_bytes`` plus one fed chunk.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

Format = Literal["docker", "cri", "plain"]
BadInput = Callable[[str], None]

_STREAM = b'","stream":"'
_TIME = b'"time":"'


@dataclass(frozen=True)
class Cut:
    """The facts of a sealed byte range, returned by `Scanner.cut`."""

    end: int
    lines: int
    first_ts: datetime | None
    last_ts: datetime | None


def parse_time(raw: bytes) -> datetime | None:
    """RFC 3339 (nanoseconds allowed) to an aware UTC datetime; None when unparseable."""
    try:
        text = raw.decode("ascii")
        if "." in text:  # fromisoformat takes at most 6 fraction digits on 3.11
            head, _, rest = text.partition(".")
            digits = len(rest) - len(rest.lstrip("0123456789"))
            text = f"{head}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
        parsed = datetime.fromisoformat(text)
    except (UnicodeDecodeError, ValueError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


class _Stats:
    __slots__ = ("first", "last", "lines")

    def __init__(self) -> None:
        self.lines = 0
        self.first: bytes | None = None
        self.last: bytes | None = None

    def add(self, lines: int, first: bytes | None, last: bytes | None) -> None:
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
        head, tail = data[: newline + 1], data[newline + 1 :]
        if self._carry:
            head = b"".join([*self._carry, head])
        self._carry = [tail] if tail else []
        self._carry_len = len(tail)
        self._lines(head, offset)

    def cut(self, *, everything: bool = False) -> Cut:
        """End the segment at `boundary` (or, `everything`, at `position`, e.g. on exit)."""
        if everything:
            if self._carry:  # an unterminated last line still counts
                self._open.add(1, None, None)
                self._line_start = self.position
            self._carry, self._carry_len = [], 0
            self._commit(self.position)
        cut = Cut(
            end=self.boundary,
            lines=self._closed.lines,
            first_ts=_ts(self._closed.first),
            last_ts=_ts(self._closed.last),
        )
        self._closed = _Stats()
        return cut

    @property
    def first_ts(self) -> datetime | None:
        """Timestamp of the first record fed since the last cut (None: none, or no times)."""
        first = self._closed.first if self._closed.first is not None else self._open.first
        return _ts(first)

    def _commit(self, end: int) -> None:
        self.boundary = end
        self._closed.merge(self._open)

    def _overlong(self) -> None:
        # A run with no newline at all: cut it here so memory stays bounded.
        self._bad("long_line")
        if any(b"\x00" in part for part in self._carry):
            self._bad("binary")
        self._carry, self._carry_len = [], 0
        self._open.add(0, None, None)
        self._line_start = self.position
        self._commit(self.position)

    def _bad(self, reason: str) -> None:
        self._on_bad(reason)

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


class _RecordScanner(Scanner):
    """Formats with partial records: a boundary after a record that closes a line."""

    def _lines(self, data: bytes, offset: int) -> None:
        if self._fast(data, offset):
            return
        pos = offset
        for line in data.split(b"\n")[:-1]:
            end = pos + len(line) + 1
            closed, ts = self._record(line)
            if closed:
                self._open.add(1, ts, ts)
                self._line_start = end
                self._long_reported = False
                self._commit(end)
            else:
                self._open.add(0, ts, ts)
                if end - self._line_start >= self.max_line_bytes:
                    if not self._long_reported:
                        self._bad("long_line")
                        self._long_reported = True
                    self._line_start = end
                    self._commit(end)
            pos = end

    def _fast(self, data: bytes, offset: int) -> bool:
        return False

    def _record(self, line: bytes) -> tuple[bool, bytes | None]:
        raise NotImplementedError


def escaped_newline_at_end(text: bytes) -> bool:
    """Whether JSON string bytes end in an escaped newline (``\\n`` not ``\\\\n``)."""
    if not text.endswith(b"\\n"):
        return False
    body = text[:-2]
    return (len(body) - len(body.rstrip(b"\\"))) % 2 == 0


class DockerScanner(_RecordScanner):
    """Docker json-file: ``{"log":"...","stream":"stdout",["attrs":{...},]"time":"..."}``."""

    def _fast(self, data: bytes, offset: int) -> bool:
        # Clean chunks (the norm) are counted with bytes.count instead of a Python loop.
        n = data.count(b"\n")
        if not (
            data.count(b'{"log":"') == n
            and data.count(_STREAM) == n
            and data.count(b'"}\n') == n
            and data.count(_TIME) == n
        ):
            return False
        last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
        closed_last, last_ts = self._record(data[last_start:-1])
        first_end = data.find(b"\n")
        _, first_ts = self._record(data[:first_end])
        if not closed_last or last_ts is None or first_ts is None:
            return False
        # Escaped backslashes before "n" are rare; alternate sums count odd runs exactly
        # for runs up to five long.
        closed = 0
        for run, sign in ((1, 1), (2, -1), (3, 1), (4, -1), (5, 1)):
            closed += sign * data.count(b"\\" * run + b"n" + _STREAM)
        self._open.add(closed, first_ts, last_ts)
        self._line_start = offset + len(data)
        self._long_reported = False
        self._commit(self._line_start)
        return True

    def _record(self, line: bytes) -> tuple[bool, bytes | None]:
        split = line.find(_STREAM)
        tpos = line.rfind(_TIME)
        if line.startswith(b'{"log":"') and line.endswith(b'"}') and split > 0 and tpos > split:
            return escaped_newline_at_end(line[8:split]), line[tpos + len(_TIME) : -2]
        try:  # an unusual but valid shape, e.g. other key order
            record = json.loads(line)
            text, ts = record["log"], record.get("time", "")
            if not isinstance(text, str) or not isinstance(ts, str):
                raise TypeError(type(text))
        except (ValueError, KeyError, TypeError):
            self._bad("binary" if b"\x00" in line else "malformed_json")
            return True, None  # kept as is; its newline is the only boundary we know
        return text.endswith("\n"), ts.encode("ascii", "replace")


class CriScanner(_RecordScanner):
    """CRI: ``<RFC3339Nano> <stdout|stderr> <P|F> <message>``."""

    def _record(self, line: bytes) -> tuple[bool, bytes | None]:
        parts = line.split(b" ", 3)
        if len(parts) >= 3 and parts[2][:1] in (b"P", b"F"):
            return parts[2][:1] == b"F", parts[0]
        self._bad("binary" if b"\x00" in line else "malformed_cri")
        return True, None


def _ts(raw: bytes | None) -> datetime | None:
    return None if raw is None else parse_time(raw)


def make_scanner(fmt: Format, start: int, *, max_line_bytes: int, on_bad: BadInput) -> Scanner:
    """The scanner for a stream of format `fmt` starting at stream offset `start`."""
    cls: type[Scanner] = {"docker": DockerScanner, "cri": CriScanner, "plain": PlainScanner}[fmt]
    return cls(start, max_line_bytes=max_line_bytes, on_bad=on_bad)
