"""Log records inside a restored segment: Docker json-file, CRI, or plain lines.

A *message* is what the application wrote as one line. Docker splits lines longer than
16 KiB into several JSON records (all but the last without a trailing newline in ``log``);
CRI marks the pieces ``P`` and the last ``F``. `iter_messages` joins the pieces so ``--grep``
sees the whole line, while keeping the original record bytes for the default output.

Timestamps (nanoseconds since the epoch) order the cross-container merge of ``get --out -``;
records without one (plain files) take the timestamp of the record before them. Records
are read by `archiverd.formats` exactly as the sealer read them.
"""

from __future__ import annotations

import heapq
import itertools
import operator
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from archiverd.formats.records import line_text, read_line
from archiverd.formats.timestamps import TimeCache


class Message:
    """One application line: its original record bytes, its time, and (lazily) its text."""

    __slots__ = ("_text", "_times", "parts", "ts_ns")

    def __init__(self, parts: list[bytes], ts_ns: int | None, times: TimeCache) -> None:
        self.parts = parts
        """The record line(s) exactly as archived, newlines included."""
        self.ts_ns = ts_ns
        """The first valid time among its records (ns since the epoch), or None."""
        self._times = times
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
            self._text = b"".join(line_text(line, self._times) for line in self.parts)
        return self._text


def iter_messages(lines: Iterable[bytes]) -> Iterator[Message]:
    """Group raw lines (each ending in ``\\n`` except maybe the last) into messages, as
    `archiverd.formats.records.read_line` reads them (the sealer's reading)."""
    times = TimeCache()
    parts: list[bytes] = []
    ts: int | None = None
    for line in lines:
        closes, line_ts = read_line(line, times)
        if ts is None:
            ts = line_ts
        parts.append(line)
        if closes:
            yield Message(parts, ts, times)
            parts, ts = [], None
    if parts:
        yield Message(parts, ts, times)


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


def stream_records(
    paths: Sequence[Path], start_ns: int, order: int = 0
) -> Iterator[tuple[int, int, bytes]]:
    """`stream_messages` without `Message` objects: ``(time key, order, raw bytes)``.

    Same keys and grouping as `stream_messages` (so the same output); for the plain merge,
    where text is never needed. A one-record message (the norm) is yielded as its line.
    """
    last = start_ns
    times = TimeCache()
    for path in paths:
        parts: list[bytes] = []
        first: int | None = None
        with path.open("rb", buffering=_READ_BYTES) as handle:
            for line in handle:
                closes, ts = read_line(line, times)
                if closes and not parts:
                    if ts is not None and ts > last:
                        last = ts
                    yield last, order, line
                    continue
                if first is None:
                    first = ts
                parts.append(line)
                if closes:
                    if first is not None and first > last:
                        last = first
                    yield last, order, b"".join(parts)
                    parts, first = [], None
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
