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

import array
import bisect
import contextlib
import heapq
import io
import itertools
import operator
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, NamedTuple, cast

from isal import igzip

from archiverd.formats import docker
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


def open_segment(path: Path, buffering: int = 0) -> BinaryIO:
    """A restored segment file, to read its plaintext: gunzipped as it is read where it was
    kept as its verified gzip stream (a ``.gz`` name: `get --out -`), else as it is."""
    if path.suffix == ".gz":
        return cast(BinaryIO, igzip.open(path, "rb"))  # type: ignore[no-untyped-call]
    return path.open("rb", buffering=buffering)


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
        with open_segment(path) as handle:
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
        with open_segment(path, buffering=_READ_BYTES) as handle:
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


# Bulk merge (`get --out -` without --grep/--text): blocks of records, not one at a time.


class Block(NamedTuple):
    """Consecutive messages of one stream, keyed as `stream_records` keys them. Where the
    compiled merge was built, message i is ``data[ends[i - 1]:ends[i]]`` (the first from 0):
    no bytes object per message; elsewhere `raws` holds them, for the merge in Python. Keys
    are int64s (`array("q")`) but where one does not fit (a list then)."""

    keys: Sequence[int]
    data: bytes
    ends: array.array[int] | None
    raws: list[bytes] | None

    def messages(self, start: int, stop: int) -> list[bytes]:
        """Messages `start` to `stop` - 1, an object each."""
        if self.raws is not None:
            return self.raws[start:stop]
        cuts = [self.offset(start), *self.message_ends[start:stop]]
        return [self.data[a:b] for a, b in itertools.pairwise(cuts)]

    def joined(self, start: int, stop: int) -> bytes | memoryview:
        """Messages `start` to `stop` - 1, back to back."""
        if self.raws is not None:
            return b"".join(self.raws[start:stop])
        return memoryview(self.data)[self.offset(start) : self.message_ends[stop - 1]]

    def offset(self, index: int) -> int:
        """Where message `index` starts in `data`."""
        return self.message_ends[index - 1] if index else 0

    @property
    def messages_held(self) -> int:
        """How many messages it holds."""
        return len(self.raws) if self.raws is not None else len(self.message_ends)

    @property
    def message_ends(self) -> array.array[int]:
        """`ends`, of a block built with them (not with `raws`)."""
        assert self.ends is not None, "a block of raws has no ends"
        return self.ends


def _line_block(keys: Sequence[int], data: bytes) -> Block:
    """A block whose messages are the lines of `data`, as the merge that runs here reads
    them (see `Block`)."""
    if compiled_merge is None or compiled_line_ends is None:
        return Block(keys, b"", None, io.BytesIO(data).readlines())
    ends = array.array("q")
    ends.frombytes(compiled_line_ends(data))
    return Block(keys, data, ends, None)


def _raws_block(keys: Sequence[int], raws: list[bytes], data: bytes | None = None) -> Block:
    """A block of messages `raws` (`data`: their bytes back to back, when at hand), as the
    merge that runs here reads them (see `Block`)."""
    if compiled_merge is None:
        return Block(keys, b"", None, raws)
    ends = array.array("q", itertools.accumulate(map(len, raws)))
    return Block(keys, b"".join(raws) if data is None else data, ends, None)


_NO_BLOCK = Block([], b"", None, [])


compiled_merge: (
    Callable[[Sequence[tuple[bytes, Sequence[int], array.array[int], int, int]]], bytes] | None
)
"""`write_blocks`' merge of runs of several streams in one compiled pass (`merge_runs` of
`archiverd/formats/_scan.c`); None where it was not built: then a stable sort in Python."""
compiled_line_ends: Callable[[bytes], bytes] | None
"""Where each line of a block ends, in one compiled pass (int64 bytes); None where not built."""
try:
    from archiverd.formats._scan import line_ends as compiled_line_ends
    from archiverd.formats._scan import merge_runs as compiled_merge
except ImportError:
    compiled_line_ends = compiled_merge = None

_BLOCK_BYTES = 1 << 20
_LOG_START = b'{"log":"'
_DOCKER_TAIL = re.compile(
    rb'\\n","stream":"(?:stdout|stderr)","time":"'
    rb'(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9})Z"\}\n(?=\{"log":"|\Z)'
)
"""The end of a dockerd record that closes its line, with a UTC time to the nanosecond,
followed by the next record's start or the end of the block."""


class _Seconds(dict[bytes, int | None]):
    """``YYYY-MM-DDTHH:MM:SS.`` -> that second in ns (None: not a time), each parsed once.

    A 9-digit fraction adds its value in ns to its second's (`archiverd.formats.timestamps`
    reads it so), so a record's time is its second's plus ``int(fraction)``. Holds at most
    `_SECONDS_KEPT` seconds (records a second apart would otherwise fill memory).
    """

    def __init__(self, times: TimeCache) -> None:
        super().__init__()
        self._times = times

    def __missing__(self, second: bytes) -> int | None:
        if len(self) >= _SECONDS_KEPT:
            self.clear()
        value = self[second] = self._times.parse(second + b"000000000Z")
        return value


_SECONDS_KEPT = 4096


def _docker_times(block: bytes, count: int, seconds: _Seconds) -> list[int] | None:
    """The times of `block`'s `count` lines when every one is a dockerd record closing its
    application line with a UTC nanosecond time (what `read_line` returns for each, in bulk);
    None when any line is not (then the caller reads the block line by line)."""
    if (
        not block.startswith(_LOG_START)
        or block.count(b'","stream":"') != count
        or block.count(b'\\\\n","stream":"')
    ):
        return None
    stamps = _DOCKER_TAIL.findall(block)
    if len(stamps) != count:
        return None
    # Every line ends in the tail (one match per newline), the first starts with {"log":"
    # and the tail's lookahead says the others do; the tail's ","stream":" is each line's
    # only one, and no \n before it is an escaped backslash's n: `docker.read` takes its
    # fast path on every line, closing at the tail.
    try:
        return [seconds[stamp[:20]] + int(stamp[20:]) for stamp in stamps]  # type: ignore[operator]
    except TypeError:  # a second that is no time (e.g. month 13): read line by line
        return None


def stream_blocks(
    paths: Sequence[Path], start_ns: int, *, block_bytes: int = _BLOCK_BYTES
) -> Iterator[Block]:
    """`stream_records` of one container, a block (about `block_bytes`) at a time: the same
    keys and raw bytes, in order, with no Python code per record where a block is all
    ordinary dockerd records (the common case); other blocks are read line by line."""
    last = start_ns
    for path in paths:
        reader = _Reader()
        with open_segment(path) as handle:
            for data, final in _line_blocks(handle, block_bytes):
                fast = reader.fast_keys(data, last)
                if fast is not None:
                    block = _line_block(fast, data)
                else:
                    times, raws = reader.block(data, final=final)
                    if not times:
                        continue
                    block = _raws_block(_int64s(_keys(times, last)), raws)
                last = block.keys[-1]
                yield block


NO_TIME = -(1 << 200)
"""The time of a message without one (below every time: it takes the key before it)."""


def _keys(times: list[int], last: int) -> list[int]:
    """Stream keys: each message's time, or the greatest before it if that is later."""
    keys = list(itertools.accumulate(times, max, initial=last))
    del keys[0]
    return keys


def _int64s(keys: list[int]) -> Sequence[int]:
    """`keys` as an `array("q")` (what the compiled merge takes), or as they are where one
    does not fit in 64 bits."""
    try:
        return array.array("q", keys)
    except OverflowError:
        return keys


def _line_blocks(handle: BinaryIO, block_bytes: int) -> Iterator[tuple[bytes, bool]]:
    """The file in blocks of whole lines, then ``(its last line without newline or b"",
    True)``."""
    carry = b""
    while chunk := handle.read(block_bytes):
        data = carry + chunk if carry else chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            carry = data  # no newline yet: a line longer than a block
            continue
        carry = data[cut:]
        yield data[:cut], False
    yield carry, True


class _Reader:
    """The messages of one segment file and their times, a block of lines at a time."""

    def __init__(self) -> None:
        self.times = TimeCache()
        self.seconds = _Seconds(self.times)
        self.parts: list[bytes] = []  # a message still open (its closing record not read)
        self.first: int | None = None

    def block(self, data: bytes, *, final: bool) -> tuple[list[int], list[bytes]]:
        """Times (`NO_TIME` for none) and raws of the messages `data` closes (all of them
        when `final`: the file ends there and so does any open message, as `stream_records`
        reads it). A message's time is the first valid time among its records."""
        fast = self.fast_times(data)
        lines = io.BytesIO(data).readlines() if data else []
        if fast is not None:
            return fast, lines
        times: list[int] = []
        raws: list[bytes] = []
        for line in lines:
            closes, ts = read_line(line, self.times)
            if self.first is None:
                self.first = ts
            self.parts.append(line)
            if closes:
                times.append(self._close(raws))
        if final and self.parts:
            times.append(self._close(raws))
        return times, raws

    def fast_keys(self, data: bytes, floor: int) -> array.array[int] | None:
        """The keys of `data`'s lines (`_keys` of `fast_times`, from `floor`) in one compiled
        pass when every line is an ordinary dockerd record whose time fits in int64 ns;
        None otherwise, or where the compiled pass was not built."""
        if docker.compiled_keys is None or self.parts or not data.endswith(b"\n"):
            return None
        if floor >= 1 << 63:
            return None
        raw = docker.compiled_keys(data, max(floor, NO_INDEX_BELOW))  # times are above it
        if raw is None:
            return None
        keys = array.array("q")
        keys.frombytes(raw)
        return keys

    def fast_times(self, data: bytes) -> list[int] | None:
        """The times of `data`'s lines when no message is open and every line is an ordinary
        dockerd record (then each line is one message); None otherwise."""
        if self.parts or not data.endswith(b"\n"):
            return None
        return _docker_times(data, data.count(b"\n"), self.seconds)

    def _close(self, raws: list[bytes]) -> int:
        raws.append(self.parts[0] if len(self.parts) == 1 else b"".join(self.parts))
        first = self.first
        self.parts, self.first = [], None
        return NO_TIME if first is None else first


NO_INDEX_BELOW = -(1 << 63)
"""`stream_indexed` needs a stream's start above this (its index stores "no time" as it)."""


def index_segment(path: Path, index: Path, *, block_bytes: int = _BLOCK_BYTES) -> bool:
    """Write to `index` the time and byte length of every message of the segment file at
    `path` (what `stream_blocks` reads), so that reading it for a merge later costs no
    parsing (`stream_indexed`); restore does this in worker processes while other
    segments still download. False (and no index) when a time does not fit in 64 bits.

    Frames of int64s: a count n, the frame's bytes, 1 if every message is one line (then
    no lengths follow), n keys, and else n lengths. A message's key is the greatest time of
    the segment up to it (the minimum when none has one yet), so the reader only raises the
    keys below the stream's key before the segment: the running maximum is taken here, off
    the merge's thread.
    """
    low = NO_INDEX_BELOW
    top = low
    reader = _Reader()
    with _new_index(index) as out, open_segment(path) as handle:
        for data, final in _line_blocks(handle, block_bytes):
            lengths: array.array[int] | None = None
            stored = reader.fast_keys(data, top)  # in int64 and raised already
            if stored is not None:
                _write_frame(out, stored, len(data))
                top = stored[-1]
                continue
            times = reader.fast_times(data)
            try:
                if times is not None:
                    size = len(data)
                    if min(times) <= low:  # the stored "no time"
                        raise OverflowError
                else:
                    times, raws = reader.block(data, final=final)
                    if not times:
                        continue
                    lengths = array.array("q", map(len, raws))
                    size = sum(lengths)
                    real = [t for t in times if t != NO_TIME]
                    if real and min(real) <= low:
                        raise OverflowError
                    times = [low if t == NO_TIME else t for t in times]
                stored = _running_max(times, top)
                top = stored[-1]
            except OverflowError:
                out.close()
                index.unlink()
                return False
            _write_frame(out, stored, size, lengths)
    return True


def _new_index(path: Path) -> BinaryIO:
    """A new (or emptied) private index file at `path`, to write frames into."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


def _write_frame(
    out: BinaryIO, keys: array.array[int], size: int, lengths: array.array[int] | None = None
) -> None:
    """One frame of an index (see `index_segment`): `keys` of the messages in `size` bytes,
    and their `lengths` unless every message is one line."""
    array.array("q", [len(keys), size, lengths is None]).tofile(out)
    keys.tofile(out)
    if lengths is not None:
        lengths.tofile(out)


class StreamIndexer:
    """`index_segment`'s index of a segment, built from its plaintext as it streams by
    (restore's unpack threads inflate it anyway), while every block of it is ordinary
    dockerd records that the compiled pass keys without the GIL: no Python per record, no
    second inflate. At the first block that is not (or where the pass was not built, or the
    index cannot be written) it stops and removes what it wrote, and `finish` says False:
    `index_segment` then indexes the file, in a worker process.

    `feed` the plaintext in order, in chunks of any size; then `finish`, or `abandon`.
    """

    def __init__(self, index: Path, *, block_bytes: int = _BLOCK_BYTES) -> None:
        self._index = index
        self._block_bytes = block_bytes
        self._reader = _Reader()
        self._carry = b""
        self._top = NO_INDEX_BELOW
        self._out: BinaryIO | None = None
        self._failed = docker.compiled_keys is None

    def feed(self, chunk: bytes) -> None:
        """The next plaintext bytes: framed once a block of whole lines is at hand."""
        if self._failed:
            return
        data = self._carry + chunk if self._carry else chunk
        cut = data.rfind(b"\n") + 1 if len(data) >= self._block_bytes else 0
        self._carry = data[cut:]
        if cut:
            self._frame(data[:cut])

    def finish(self) -> bool:
        """Frame what is left; whether the index is complete (else nothing is left of it)."""
        if self._carry:  # (a last line without newline fails: `index_segment` reads it)
            self._frame(self._carry)
        if self._failed:
            return False
        try:
            self._file().close()
        except OSError:
            self._fail()
            return False
        return True

    def abandon(self) -> None:
        """Stop, removing what was written (the unpack failed)."""
        self._fail()

    def _frame(self, data: bytes) -> None:
        if self._failed:
            return
        keys = self._reader.fast_keys(data, self._top)  # in int64 and raised already
        if keys is None:
            self._fail()
            return
        try:
            _write_frame(self._file(), keys, len(data))
        except OSError:  # no room for it: an index is never needed
            self._fail()
            return
        self._top = keys[-1]

    def _file(self) -> BinaryIO:
        if self._out is None:
            self._out = _new_index(self._index)
        return self._out

    def _fail(self) -> None:
        self._failed = True
        self._carry = b""
        if self._out is not None:
            with contextlib.suppress(OSError):
                self._out.close()
            self._out = None
            self._index.unlink(missing_ok=True)


def _running_max(times: list[int], top: int) -> array.array[int]:
    """Each of `times` raised to the greatest before it (`top` before the first), as int64s
    (OverflowError past them); the times as they are when already in order (the norm: a
    sorted check costs a fifth of the running maximum)."""
    if times[0] >= top and times == sorted(times):
        return array.array("q", times)
    stored = array.array("q", itertools.accumulate(times, max, initial=top))
    del stored[0]
    return stored


def stream_indexed(files: Sequence[tuple[Path, Path]], start_ns: int) -> Iterator[Block]:
    """`stream_blocks` of segment files indexed by `index_segment` (``(file, index)`` pairs):
    the same keys and raws, read without parsing. `start_ns` must be above
    `NO_INDEX_BELOW`."""
    last = start_ns
    for path, index in files:
        with open_segment(path) as handle, index.open("rb") as frames:
            while head := frames.read(24):
                count, size, one_line_each = array.array("q", head)
                times = array.array("q")
                times.fromfile(frames, count)
                data = handle.read(size)
                # The segment's running maximum (`index_segment`), raised to the stream's.
                keys: Sequence[int] = times
                if times[0] < last:
                    below = bisect.bisect_left(times, last)
                    keys = _int64s([last] * below + times[below:].tolist())
                last = keys[-1]
                if one_line_each:
                    block = _line_block(keys, data)
                else:
                    lengths = array.array("q")
                    lengths.fromfile(frames, count)
                    cuts = [0, *itertools.accumulate(lengths)]
                    raws = [data[a:b] for a, b in itertools.pairwise(cuts)]
                    block = _raws_block(keys, raws, data)
                if len(data) != size or block.messages_held != count:
                    raise OSError(f"{index}: the index does not match {path}")
                yield block


class _Pending:
    """One stream in `write_blocks`: the block it reads, and its first message not written."""

    __slots__ = ("block", "blocks", "bound", "done", "start")

    def __init__(self, blocks: Iterator[Block], start_ns: int) -> None:
        self.blocks = blocks
        self.block = _NO_BLOCK
        self.start = 0
        self.bound = start_ns
        """The last key read: every record still unread has a key at least this."""
        self.done = False

    @property
    def drained(self) -> bool:
        """Whether every message of its block was written."""
        return self.start == len(self.block.keys)

    def refill(self) -> None:
        """Read the next block (or learn there is none)."""
        for block in self.blocks:
            self.block, self.start = block, 0
            self.bound = block.keys[-1]
            return
        self.block, self.start = _NO_BLOCK, 0
        self.done = True

    def end_before(self, limit: tuple[int, int] | None, order: int) -> int:
        """Where this stream's (number `order`) pending records stop sorting before the
        ``(bound, order)`` `limit` of another stream (all of them when None)."""
        keys = self.block.keys
        if limit is None:
            return len(keys)
        if order < limit[1]:
            return bisect.bisect_right(keys, limit[0], self.start)
        return bisect.bisect_left(keys, limit[0], self.start)


Run = tuple[Block, int, int]
"""Messages `start` to `stop` - 1 of a block: ``(block, start, stop)``."""


def write_blocks(
    streams: Sequence[tuple[Iterator[Block], int]],
    out: BinaryIO,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
) -> int:
    """`write_records` of ``(stream_blocks(...), start_ns)`` per stream, in stream order:
    the same bytes and count, merged a window at a time.

    A stream's unread records all have keys at least its `bound` (keys never decrease), so
    each round writes every pending record that sorts (by key, then stream order) before
    every other unfinished stream's bound: a prefix of the merge. The stream with the lowest
    bound always writes all it holds, and only streams with nothing pending read more, so
    memory stays at about one block per stream. A round's runs (one per stream, each in
    key order) are merged as a stable sort of them concatenated would order them: by the
    compiled merge where it was built, else by that sort; a round of one run is its bytes
    as they are.
    """
    pending = [_Pending(blocks, start) for blocks, start in streams]
    count = 0
    low = since_ns if since_ns is not None else -(1 << 200)
    high = until_ns if until_ns is not None else 1 << 200
    trimmed = since_ns is not None or until_ns is not None
    while True:
        for stream in pending:
            if stream.drained and not stream.done:
                stream.refill()
        live = [(stream.bound, order) for order, stream in enumerate(pending) if not stream.done]
        runs: list[Run] = []
        for order, stream in enumerate(pending):
            if stream.drained:
                continue
            end = stream.end_before(
                min((bound for bound in live if bound[1] != order), default=None), order
            )
            if end > stream.start:
                runs.append((stream.block, stream.start, end))
                stream.start = end
        if not runs:
            # The stream with the lowest bound writes all it holds (see above), so a round
            # writes nothing only when every stream is finished.
            break
        if trimmed:
            runs = [run for run in (_trim(run, low, high) for run in runs) if run[1] < run[2]]
        if runs:
            count += sum(stop - start for _, start, stop in runs)
            out.write(_merged(runs))
    return count


def _trim(run: Run, low: int, high: int) -> Run:
    """The messages of `run` with keys from `low` to `high` (its keys are in order)."""
    block, start, stop = run
    return (
        block,
        bisect.bisect_left(block.keys, low, start, stop),
        bisect.bisect_right(block.keys, high, start, stop),
    )


def _merged(runs: list[Run]) -> bytes | memoryview:
    """The messages of `runs` (each in key order, in stream order) merged by key, ties in
    stream order."""
    if len(runs) == 1:
        block, start, stop = runs[0]
        return block.joined(start, stop)
    if compiled_merge is not None and all(
        block.ends is not None and isinstance(block.keys, array.array) for block, _, _ in runs
    ):
        return compiled_merge(
            [(block.data, block.keys, block.message_ends, a, b) for block, a, b in runs]
        )
    keys: list[int] = []
    raws: list[bytes] = []
    for block, start, stop in runs:
        keys += block.keys[start:stop]
        raws += block.messages(start, stop)
    # A stable sort of the runs concatenated; several runs, so at least two messages, and
    # `itemgetter` returns a tuple.
    pick = operator.itemgetter(*sorted(range(len(keys)), key=keys.__getitem__))
    return b"".join(pick(raws))
