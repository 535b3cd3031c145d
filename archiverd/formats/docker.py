"""Docker json-file records: the one reading of them, for the sealer and for restore.

dockerd writes one JSON object per line, ``{"log":"…","stream":"stdout",["attrs":{…},]
"time":"<RFC 3339>"}``, and splits an application line longer than 16 KiB into several
records: all but the last have a ``log`` that does not end in ``\\n`` (*partial*). A line is
a json-file record when it is

- in dockerd's layout: starts ``{"log":"`` and has ``","stream":"`` then a later
  ``"time":"`` whose value ends at the next quote (read with byte operations, no JSON
  decoding: inside the ``log`` string every quote is escaped, so the first
  ``","stream":"`` ends it); or
- any other JSON object (it starts with ``{``) whose ``log`` is a string: another key
  order, spaces, extra keys.

Its time is its ``time`` when that is an RFC 3339 string (`archiverd.formats.timestamps`),
else None; the record is kept either way. Anything else (truncated, binary, not an object)
is not a record. Lines may be passed with or without their trailing ``\\n``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from archiverd.formats.timestamps import TimeCache

compiled_closing: Callable[[bytes], int | None] | None
"""`count_closing` in one compiled pass over each line, exact for every line as `read` reads
it (`archiverd/formats/_scan.c`); None where it was not built (no C compiler at install):
then `count_closing_usual` and `count_closing` count in ``bytes.count`` passes."""
compiled_keys: Callable[[bytes, int], bytes | None] | None
"""Restore's merge keys of a block of usual dockerd records in one compiled pass (int64
bytes; see `archiverd/formats/_scan.c`); None where it was not built."""
try:
    from archiverd.formats._scan import docker_closing as compiled_closing
    from archiverd.formats._scan import docker_keys as compiled_keys
except ImportError:
    compiled_closing = compiled_keys = None

PREFIX = b'{"log":"'
STREAM = b'","stream":"'
TIME = b'"time":"'
_SEAM = b'Z"}\n' + PREFIX
"""Where one line of the bulk paths ends and the next starts: a UTC time (as dockerd writes
it) ends the one, so its ``time`` value closes with a quote `read` finds."""
_START = len(PREFIX)
_Z = 90


def escaped_newline_at_end(text: bytes) -> bool:
    """Whether JSON string bytes end in an escaped newline (``\\n`` not ``\\\\n``)."""
    if not text.endswith(b"\\n"):
        return False
    body = text[:-2]
    return (len(body) - len(body.rstrip(b"\\"))) % 2 == 0


def _layout(line: bytes) -> tuple[int, int, int] | None:
    """(end of ``log``, start of ``time``, its end) when `line` is in dockerd's layout."""
    if not line.startswith(PREFIX):
        return None
    end = line.find(STREAM)
    at = line.rfind(TIME) + len(TIME)
    stop = line.find(b'"', at)
    if 0 < end < at - len(TIME) and stop > 0:
        return end, at, stop
    return None


def read(line: bytes, times: TimeCache) -> tuple[bool, int | None] | None:
    """(closes an application line, time in ns) of a json-file record; None if not one."""
    # `_layout`, inline with literal constants: this is the hot path of restore.
    if line.startswith(b'{"log":"'):
        end = line.find(b'","stream":"')
        at = line.rfind(b'"time":"')
        if 0 < end < at:
            # Ends in the escape \n unless that backslash is itself escaped (92: "\\").
            closes = line.endswith(b"\\n", 8, end) and (
                line[end - 3] != 92 or escaped_newline_at_end(line[8:end])
            )
            at += 8
            # The usual time (the stream's last second, nine digits, Z), inline as well.
            if line.startswith(times.second, at) and line.startswith(b'Z"', at + 29):
                fraction = line[at + 20 : at + 29]
                if fraction.isdigit():
                    return closes, times.second_ns + int(fraction)
            stop = line.find(b'"', at)
            if stop > 0:
                return closes, times.span(line, at, stop)
    record = _decode(line)
    if record is None:
        return None
    log, when = record
    ts = times.parse(when.encode("ascii", "replace")) if isinstance(when, str) else None
    return log.endswith("\n"), ts


def text(line: bytes) -> bytes | None:
    """The ``log`` a json-file record carries, as UTF-8; None if `line` is not a record
    (or, in dockerd's layout, its ``log`` is not a valid JSON string)."""
    layout = _layout(line)
    if layout is not None:
        try:
            log: str = json.loads(b'"' + line[_START : layout[0]] + b'"')
        except ValueError:
            return None
        return log.encode("utf-8", "surrogatepass")
    record = _decode(line)
    return None if record is None else record[0].encode("utf-8", "surrogatepass")


def _decode(line: bytes) -> tuple[str, object] | None:
    """(``log``, ``time`` as found) of a JSON object line with a string ``log``."""
    if not line.startswith(b"{"):
        return None
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None
    if not isinstance(record, dict):
        return None
    log = record.get("log")
    if not isinstance(log, str):
        return None
    return log, record.get("time")


_STDOUT_CLOSES = b"\\n" + STREAM + b'stdout",' + TIME
_STDERR_CLOSES = b"\\n" + STREAM + b'stderr",' + TIME
_ESCAPED_CLOSES = b"\\\\n" + STREAM + b"std"


def count_closing_usual(data: bytes) -> int | None:
    """`count_closing` of the usual chunk, in fewer passes; None for any other chunk
    (`count_closing` reads those).

    Usual: every line is ``{"log":"…\\n","stream":"stdout|stderr","time":"…Z"}``. Checked
    with totals as `count_closing` checks its keys: each line starts with the prefix and
    ends with a UTC time (`_SEAM`), and the chunk holds as many ``stream`` keys and
    ``\\n","stream":"std…","time":"`` as lines. So `read` finds each ``log`` end before
    that ``stream``, a time after it and a quote after the time: every record closes,
    unless its ``log`` ends in an escaped backslash and ``n`` (``\\\\n``, text not a
    newline), which leaves the chunk to `count_closing`.
    """
    n = data.count(b"\n")
    if (
        data.count(_STDOUT_CLOSES) + data.count(_STDERR_CLOSES) == n
        and data.startswith(PREFIX)
        and data.endswith(b'Z"}\n')
        and data.count(_SEAM) == n - 1
        and data.count(STREAM) == n
        and not data.count(_ESCAPED_CLOSES)
    ):
        return n
    return None


def count_closing(data: bytes) -> int | None:
    """How many records of `data` (whole lines) close an application line, counted with
    ``bytes.count`` when every line looks like dockerd's layout (the norm); None when a
    line needs `read` (another shape, malformed input, a rare escape).

    The caller still reads the first and last line with `read` (for their times, and
    because a chunk whose last record is partial must not end a segment). Exact for lines
    as dockerd writes them (one ``stream`` and one ``time`` key each); a chunk mixing a
    line with a duplicated key and one missing it could be miscounted.
    """
    n = data.count(b"\n")
    # Every line starts with the prefix and ends with 'Z"}': one pass over the newlines'
    # surroundings (an occurrence holds exactly one newline; all but the last newline, which
    # ends `data`, must have one) instead of two counts of each.
    if not (
        data.startswith(PREFIX)
        and data.endswith(b'Z"}\n')
        and data.count(_SEAM) == n - 1
        and data.count(STREAM) == n
        and data.count(TIME) == n
    ):
        return None
    closing = data.count(b"\\n" + STREAM)
    if data.count(b"\\\\n" + STREAM):
        # An escaped backslash before "n": alternate sums count the odd runs of backslashes
        # exactly up to five; longer runs are left to `read`.
        for run, sign in ((2, -1), (3, 1), (4, -1), (5, 1)):
            closing += sign * data.count(b"\\" * run + b"n" + STREAM)
        if data.count(b"\\" * 6 + b"n" + STREAM):
            return None
    return closing
