"""Log records inside a restored segment: Docker json-file, CRI, or plain lines.

A *message* is what the application wrote as one line. Docker splits lines longer than
16 KiB into several JSON records (all but the last without a trailing newline in ``log``);
CRI marks the pieces ``P`` and the last ``F``. `iter_messages` joins the pieces so ``--grep``
sees the whole line, while keeping the original record bytes for the default output.

Timestamps (nanoseconds since the epoch) order the cross-container merge of ``get --out -``;
records without one (plain files) take the timestamp of the record before them.
"""

from __future__ import annotations

import calendar
import heapq
import itertools
import json
import operator
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from archiverd.formats.records import escaped_newline_at_end

_TS = re.compile(
    rb"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
    rb"(?:([Zz])|([+-])(\d\d):?(\d\d))$"
)
_CRI = re.compile(rb"^(\S+) (stdout|stderr) ([PF])(?: (.*))?$", re.DOTALL)


class Message:
    """One application line: its original record bytes, its time, and (lazily) its text."""

    __slots__ = ("_text", "parts", "ts_ns")

    def __init__(self, parts: list[bytes], ts_ns: int | None) -> None:
        self.parts = parts
        """The record line(s) exactly as archived, newlines included."""
        self.ts_ns = ts_ns
        self._text: bytes | None = None

    @property
    def raw(self) -> bytes:
        """The record(s) exactly as archived."""
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)

    @property
    def text(self) -> bytes:
        """What the application wrote (``log`` fields joined, the CRI message, or the line).

        Decoded only when asked (``--grep``, ``--text``): a plain merge never parses JSON.
        """
        if self._text is None:
            self._text = b"".join(_line_text(line) for line in self.parts)
        return self._text


def parse_ts_ns(value: bytes) -> int | None:
    """RFC 3339 with up to nanoseconds -> ns since the epoch; None when not a timestamp."""
    global _last_second
    head = value[:19]
    if head == _last_second[0] and value[-1:] == b"Z":
        # Same UTC second as the record before (the common case): skip the regex too.
        frac = value[20:-1]
        if len(value) == 20:
            return _last_second[1] * 1_000_000_000
        if value[19:20] == b"." and 0 < len(frac) <= 9 and frac.isdigit():
            return _last_second[1] * 1_000_000_000 + int(frac.ljust(9, b"0"))
    match = _TS.match(value)
    if match is None:
        return None
    if match[9] is None and head == _last_second[0]:
        seconds = _last_second[1]  # records come many per second; skip timegm for those
    else:
        year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
        try:
            seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
        except (ValueError, OverflowError):
            return None
        if match[9]:
            offset = int(match[10]) * 3600 + int(match[11]) * 60
            seconds -= offset if match[9] == b"+" else -offset
        else:
            _last_second = (head, seconds)
    frac = match[7] or b""
    return seconds * 1_000_000_000 + int(frac.ljust(9, b"0") or b"0")


_last_second: tuple[bytes, int] = (b"", 0)


def iter_messages(lines: Iterable[bytes]) -> Iterator[Message]:
    """Group raw lines (each ending in ``\\n`` except maybe the last) into messages."""
    parts: list[bytes] = []
    ts: int | None = None
    for line in lines:
        complete, line_ts = _classify(line)
        if not parts:
            ts = line_ts
        parts.append(line)
        if complete:
            yield Message(parts, ts)
            parts = []
    if parts:
        yield Message(parts, ts)


def _classify(line: bytes) -> tuple[bool, int | None]:
    """(ends a message, timestamp) of one raw line, without decoding JSON where possible."""
    if line.startswith(b'{"log":"'):
        # dockerd's own layout: {"log":"…","stream":"…",["attrs":{…},]"time":"…"}. Inside
        # the log string every quote is escaped, so the first '","stream":"' ends it.
        end = line.find(b'","stream":"')
        at = line.rfind(b'"time":"')
        if 0 < end < at:
            stop = line.find(b'"', at + 8)
            ts = parse_ts_ns(line[at + 8 : stop])
            if ts is not None:
                return escaped_newline_at_end(line[8:end]), ts
    if line.startswith(b"{"):
        docker = _docker(line)
        if docker is not None:
            return docker[1], docker[2]
    cri = _cri(line)
    if cri is not None:
        return cri[1], cri[2]
    return True, None


def _line_text(line: bytes) -> bytes:
    """The message text one raw line carries (same rules as `_classify`)."""
    if line.startswith(b"{"):
        docker = _docker(line)
        if docker is not None:
            return docker[0]
    cri = _cri(line)
    if cri is not None:
        return cri[0]
    return line


def _cri(line: bytes) -> tuple[bytes, bool, int] | None:
    match = _CRI.match(line)
    if match is None:
        return None
    ts = parse_ts_ns(match[1])
    if ts is None:
        return None
    body = match[4] if match[4] is not None else line[match.end(3) :]
    if match[3] == b"P":
        return body.rstrip(b"\n"), False, ts
    return body, True, ts


def _docker(line: bytes) -> tuple[bytes, bool, int | None] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    log = record.get("log")
    if not isinstance(log, str):
        return None
    when = record.get("time")
    ts = parse_ts_ns(when.encode("ascii", "replace")) if isinstance(when, str) else None
    return log.encode("utf-8", "surrogatepass"), log.endswith("\n"), ts


def stream_messages(
    paths: Sequence[Path], start_ns: int, order: int = 0
) -> Iterator[tuple[int, int, Message]]:
    """One container's messages across its segment files, in file order, as
    ``(time key, order, message)`` for `merge` (``order`` breaks ties between streams).

    The key is made non-decreasing (the max so far) so `merge` never reorders a stream's
    own records, even where a clock stepped back: per container, output order is write order.
    """
    last = start_ns
    for path in paths:
        with path.open("rb") as handle:
            for message in iter_messages(handle):
                if message.ts_ns is not None and message.ts_ns > last:
                    last = message.ts_ns
                yield last, order, message


def merge(streams: Sequence[Iterator[tuple[int, int, Message]]]) -> Iterator[tuple[int, Message]]:
    """Interleave container streams by time; ties go to the stream with the lower order.

    Keys and orders are ints, so the heap never compares messages (and needs no key function).
    """
    return map(operator.itemgetter(0, 2), heapq.merge(*streams))


def keyed(stream: Iterator[tuple[int, int, Message]]) -> Iterator[tuple[int, Message]]:
    """One stream as `write_messages` takes it (no merge needed)."""
    return map(operator.itemgetter(0, 2), stream)


def write_messages(
    messages: Iterable[tuple[int, Message]],
    out: BinaryIO,
    *,
    grep: re.Pattern[str] | None = None,
    text: bool = False,
    since_ns: int | None = None,
    until_ns: int | None = None,
) -> int:
    """Write the messages inside [since, until] matching `grep` (original bytes, or the
    text with `text`); return how many were written. Times are the stream keys."""
    count = 0
    pending: list[bytes] = []
    size = 0
    for key, message in messages:
        if (since_ns is not None and key < since_ns) or (until_ns is not None and key > until_ns):
            continue
        if grep is not None and not grep.search(
            message.text.decode("utf-8", "replace").rstrip("\n")
        ):
            continue
        chunk = message.text if text else message.raw
        pending.append(chunk)
        size += len(chunk)
        count += 1
        if size >= _WRITE_BYTES:  # one write per MiB, not per line
            out.write(b"".join(pending))
            pending, size = [], 0
    out.write(b"".join(pending))
    return count


_WRITE_BYTES = 1 << 20


def stream_records(  # noqa: C901 - rewritten with the one parser per format (formats/)
    paths: Sequence[Path], start_ns: int, order: int = 0
) -> Iterator[tuple[int, int, bytes]]:
    """`stream_messages` without `Message` objects: ``(time key, order, raw bytes)``.

    Same keys and grouping as `stream_messages` (so the same output); for the plain merge,
    where text is never needed. dockerd's usual layout with a 9-digit UTC time is read with
    byte operations and a per-second cache; every other line goes through `_classify`.
    """
    last = start_ns
    # A UTC second already parsed: its first 20 bytes ("…T08:00:00.") and its ns. The first
    # value matches no line: its 21st byte would have to be a digit of the fraction too.
    head, head_ns = b"-" * 21, 0
    for path in paths:
        parts: list[bytes] = []
        first: int | None = None
        with path.open("rb", buffering=_READ_BYTES) as handle:
            for line in handle:
                ts: int | None = None
                complete: bool | None = None
                if line.startswith(b'{"log":"'):
                    end = line.find(b'","stream":"')
                    at = line.rfind(b'"time":"')
                    if 0 < end < at:
                        if (
                            line.startswith(head, at + 8)
                            and line.startswith(b'Z"', at + 37)
                            and (frac := line[at + 28 : at + 37]).isdigit()
                        ):
                            # The same UTC second as an earlier record: only digits change.
                            ts = head_ns + int(frac)
                        else:
                            value = line[at + 8 : line.find(b'"', at + 8)]
                            frac = value[20:29]
                            # "YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ": a second worth caching.
                            shaped = (
                                len(value) == 30 and value[29] == 90 and value[19] == 46
                            ) and frac.isdigit()
                            ts = parse_ts_ns(value)
                            if ts is not None and shaped:
                                head, head_ns = value[:20], ts - int(frac)
                        if ts is not None:
                            # Ends in the escape \n unless that backslash is itself escaped.
                            complete = line.endswith(b"\\n", 8, end) and (
                                line[end - 3] != 92 or escaped_newline_at_end(line[8:end])
                            )
                if complete is None:
                    complete, ts = _classify(line)
                if complete and not parts:
                    if ts is not None and ts > last:
                        last = ts
                    yield last, order, line
                    continue
                if not parts:
                    first = ts
                parts.append(line)
                if complete:
                    if first is not None and first > last:
                        last = first
                    yield last, order, b"".join(parts)
                    parts = []
        if parts:
            if first is not None and first > last:
                last = first
            yield last, order, b"".join(parts)


def write_records(
    streams: Sequence[Iterator[tuple[int, int, bytes]]],
    out: BinaryIO,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
) -> int:
    """`write_messages(merge(...))` for raw records (no grep, no text); return the count."""
    merged: Iterator[tuple[int, int, bytes]] = (
        heapq.merge(*streams) if len(streams) != 1 else streams[0]
    )
    raws: Iterator[bytes]
    if since_ns is None and until_ns is None:
        raws = map(operator.itemgetter(2), merged)  # no per-record Python code at all
    else:
        low = since_ns if since_ns is not None else -(1 << 200)
        high = until_ns if until_ns is not None else 1 << 200
        raws = (raw for key, _, raw in merged if low <= key <= high)
    count = 0
    pending: list[bytes] = []
    size = 0
    # Joined a few records at a time (bounded memory even for huge messages), written a MiB
    # at a time.
    while batch := list(itertools.islice(raws, 64)):
        block = b"".join(batch)
        count += len(batch)
        pending.append(block)
        size += len(block)
        if size >= _WRITE_BYTES:
            out.write(b"".join(pending))
            pending, size = [], 0
    out.write(b"".join(pending))
    return count


_READ_BYTES = 1 << 20
