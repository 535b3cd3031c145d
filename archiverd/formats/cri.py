"""CRI log lines: the one reading of them, for the sealer and for restore.

containerd and CRI-O write ``<RFC 3339> <stdout|stderr> <P|F> <message>``. A line longer
than the runtime's buffer is split into pieces tagged ``P`` (partial) and a last one tagged
``F`` (full), which closes the application line. A line is a CRI record only when all of it
holds: the time parses (`archiverd.formats.timestamps`), the stream is ``stdout`` or
``stderr``, the tag is exactly ``P`` or ``F``, followed by a space (then the message) or the
end of the line (an empty message). This is kubelet's reading, minus its forward-compatible
``P:…`` tags, which no runtime writes.

One strict rule serves both sides: the sealer never cuts after a ``P`` record, and restore
joins exactly those, so a segment reads back as it was sealed. A line that only looks like
a record (a bad time, another stream, a ``P`` without its space) is not one: it is kept as
an opaque line that closes at its newline. Lines may be passed with or without their
trailing ``\\n``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

from archiverd.formats.timestamps import TimeCache, parse_ns

compiled_closing: Callable[[bytes], int | None] | None
"""How many lines of a chunk close a line, when every one is a record with a UTC time, in
one compiled pass (`archiverd/formats/_scan.c`); None where it was not built (then `bulk`
and `bulk_closing` read chunks with regular expressions)."""
try:
    from archiverd.formats._scan import cri_closing as compiled_closing
except ImportError:
    compiled_closing = None

_TAGS = {
    stream + b" " + tag + tail: tag == b"F"
    for stream in (b"stdout", b"stderr")
    for tag in (b"P", b"F")
    for tail in (b" ", b"\n", b"")
}
"""What may follow the time's space: the stream, the tag, and a space, newline or nothing;
mapped to whether the record closes a line."""


def read(line: bytes, times: TimeCache) -> tuple[bool, int] | None:
    """(closes an application line, time in ns) of a CRI record; None if not one."""
    sp = line.find(b" ")
    closes = _TAGS.get(line[sp + 1 : sp + 10])
    if closes is None:
        return None
    ts = times.span(line, 0, sp)
    return None if ts is None else (closes, ts)


def text(line: bytes, times: TimeCache) -> bytes | None:
    """The message a CRI record carries (an F message keeps its newline, a P piece has
    none); None if `line` is not a record."""
    record = read(line, times)
    if record is None:
        return None
    sp = line.find(b" ")
    body = line[sp + 10 :] if line[sp + 9 : sp + 10] == b" " else line[sp + 9 :]
    return body if record[0] else body.removesuffix(b"\n")


_UTC_RECORD = re.compile(
    rb"\n(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z) std(?:out|err) ([PF])(?= |\n)"
)
"""A line start, a record's UTC time (its validity aside), stream and tag: the usual shape."""


def bulk(data: bytes) -> tuple[list[bytes], list[bytes]] | None:
    """(time, tag) of every line of `data` (whole lines), found with one regular expression
    when every line is a CRI record with a UTC time (the norm); None when a line needs
    `read`. Same reading as `read`, line by line."""
    found = _UTC_RECORD.findall(b"\n" + data)
    if len(found) != data.count(b"\n") or not data.endswith(b"\n"):
        return None
    stamps = list(map(operator.itemgetter(0), found))
    # The shape leaves only the calendar to check: once per distinct second.
    for head in set(map(operator.itemgetter(slice(0, 19)), stamps)):
        if parse_ns(head + b"Z") is None:
            return None
    return stamps, list(map(operator.itemgetter(1), found))


_UTC_CLOSING = re.compile(
    rb"\n(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d{1,9})?Z std(?:out|err) F(?= |\n)"
)
"""A line start, a closing record's UTC time (its second captured), stream and tag."""


def bulk_closing(data: bytes) -> tuple[int, bytes, bytes] | None:
    """(lines, first time, last time) of `data` (whole lines) when every line is an ``F``
    record with a UTC time (the usual chunk), found with one regular expression capturing
    less than `bulk`; None for any other chunk. Same reading as `read`, line by line."""
    heads = _UTC_CLOSING.findall(b"\n" + data)
    n = len(heads)
    if n != data.count(b"\n") or not data.endswith(b"\n"):
        return None
    for head in set(heads):  # the shape leaves only the calendar to check
        if parse_ns(head + b"Z") is None:
            return None
    last = data.rfind(b"\n", 0, len(data) - 1) + 1
    return n, data[: data.find(b" ")], data[last : data.find(b" ", last)]
