"""The sealer's and restore's views of records agree on every input.

The sealer (`Scanner`, fed in arbitrary chunks and cut at arbitrary moments) and restore
(`iter_messages`, `stream_records`, reading each sealed segment as a file) read byte streams
mixing valid, partial, odd and malformed json-file and CRI records. For every segment: the
number of lines is the number of messages restore reads; where the sealer may end a segment
is where restore ends a message; the first/last times are restore's.

The one exception is by design: a run longer than ``max_line_bytes`` with no newline is cut
where it stands, and the sealer reads its rest as a line of its own. A segment holding both
sides of such a cut (which real runtimes never cause: they split lines at 16 KiB) is only
checked for its bytes.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from archiverd.formats.records import Cut, Format, make_scanner, read_line
from archiverd.formats.timestamps import TimeCache, to_ns
from archiverd.restore.records import iter_messages, stream_records

_STAMPS = st.one_of(
    st.builds(
        "2026-11-23T08:00:0{}.{}Z".format,
        st.integers(0, 2),
        st.sampled_from(["000000001", "5", "999999999", "12", "123456789123"]),
    ),
    st.sampled_from(
        [
            "2026-11-23T08:00:01Z",
            "2026-11-23T09:00:01.5+01:00",
            "2026-11-23t08:00:01.25z",
            "2026-11-23T07:59:60Z",
            "2026-02-29T08:00:01Z",
            "2026-11-31T08:00:01Z",
            "2026-11-23T08:00:01",
            "2026-11-23T08:00Z",
            "not-a-time",
            "",
        ]
    ),
)
_TEXT = st.one_of(
    st.text(alphabet='ab \\n"{}\t\x00é', max_size=10),
    # A run of backslashes before an "n": JSON escapes make the run twice as long.
    st.builds(
        "{}{}n".format,
        st.text(alphabet="a\\", max_size=3),
        st.sampled_from(["\\" * k for k in range(9)]),
    ),
)


_CLEAN_STAMPS = st.builds(
    "2026-11-23T08:00:0{}.{}Z".format, st.integers(0, 2), st.sampled_from(["1", "999999999"])
)


@st.composite
def _line(draw: st.DrawFn, clean: bool) -> bytes:
    """One line, without its newline: a record of either format, an odd one, or garbage; or
    (`clean`) a json-file record as dockerd writes it (the scanner's bulk path)."""
    kinds = ["docker", "attrs", "spaced", "keys", "cut", "cri", "cri-odd", "plain"]
    kind = draw(st.sampled_from(kinds[:2] if clean else kinds))
    stamp = draw(_CLEAN_STAMPS if clean else _STAMPS)
    text = draw(_TEXT)
    log = text if draw(st.booleans()) else text + "\n"
    if kind in ("docker", "attrs", "spaced", "keys", "cut"):
        record: dict[str, object] = {"log": log, "stream": "stdout"}
        if kind == "attrs":
            record["attrs"] = {"tag": text}
        record["time"] = stamp
        if kind == "keys":
            record = dict(reversed(list(record.items())))
            record["time"] = draw(st.sampled_from([stamp, 5, None]))
        separators = (", ", ": ") if kind == "spaced" else (",", ":")
        line = json.dumps(record, separators=separators, ensure_ascii=False).encode()
        return line[: draw(st.integers(1, len(line) - 1))] if kind == "cut" else line
    if kind in ("cri", "cri-odd"):
        stream, tag, space = "stdout", draw(st.sampled_from(["P", "F"])), " "
        if kind == "cri-odd":
            stream = draw(st.sampled_from(["stdout", "stderr", "stdin", ""]))
            tag = draw(st.sampled_from(["P", "F", "X", "PF", "P:x", ""]))
            space = draw(st.sampled_from([" ", ""]))
        return f"{stamp} {stream} {tag}{space}{text}".encode()
    return draw(st.binary(max_size=12)).replace(b"\n", b"")


@st.composite
def _stream(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(_line(draw(st.booleans())), max_size=14))
    data = b"".join(line + b"\n" for line in lines)
    return data[:-1] if data and draw(st.booleans()) else data


def _restore_view(segment: bytes) -> tuple[list[int], set[int], int | None, int | None]:
    """Message ends, the ends of closed messages (and 0), first and last record time
    (µs-truncated ns) as restore reads a file."""
    messages = list(iter_messages(io.BytesIO(segment)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "segment.log"
        path.write_bytes(segment)
        assert [raw for _, _, raw in stream_records([path], 0)] == [m.raw for m in messages]
    times = TimeCache()
    ends, closed, pos = [], {0}, 0
    for message in messages:
        pos += len(message.raw)
        ends.append(pos)
        last_part = message.parts[-1]
        if last_part.endswith(b"\n") and read_line(last_part, times)[0]:
            closed.add(pos)
    stamps = [read_line(p, times)[1] for m in messages for p in m.parts]
    valid = [ts // 1000 * 1000 for ts in stamps if ts is not None]
    first_message = next((m.ts_ns for m in messages if m.ts_ns is not None), None)
    assert (first_message is None) == (not valid)
    if first_message is not None:
        assert first_message // 1000 * 1000 == valid[0]
    return ends, closed, valid[0] if valid else None, valid[-1] if valid else None


def _ns(cut: Cut) -> tuple[int | None, int | None]:
    first = None if cut.first_ts is None else to_ns(cut.first_ts)
    return first, None if cut.last_ts is None else to_ns(cut.last_ts)


@settings(max_examples=400, deadline=None)
@given(
    data=_stream(),
    fmt=st.sampled_from(["docker", "cri"]),
    sizes=st.lists(st.tuples(st.integers(1, 200), st.booleans()), max_size=20),
    max_line=st.sampled_from([1 << 20, 1 << 20, 64, 300]),
)
def test_sealer_and_restore_read_the_same_records(
    data: bytes, fmt: Format, sizes: list[tuple[int, bool]], max_line: int
) -> None:
    """Per segment, whatever the chunking and cuts: lines = restore's messages, boundaries at
    restore's message ends, first/last times = restore's."""
    scanner = make_scanner(fmt, 0, max_line_bytes=max_line, on_bad=lambda reason: None)
    _, closed_ends, _, _ = _restore_view(data)
    cuts: list[Cut] = []
    overlong: set[int] = set()  # cuts inside a line with no newline yet
    pos = 0
    for size, cut_now in [*sizes, (len(data), False)]:
        scanner.feed(data[pos : pos + size])
        pos = min(pos + size, len(data))
        if scanner.boundary and data[scanner.boundary - 1] != ord("\n"):
            overlong.add(scanner.boundary)
        if max_line == 1 << 20:
            # No over-long line: the boundary is the last message end restore sees so far.
            seen = data.rfind(b"\n", 0, pos) + 1
            assert scanner.boundary == max(e for e in closed_ends if e <= seen)
        if cut_now:
            cuts.append(scanner.cut())
    cuts.append(scanner.cut(everything=True))
    start = 0
    for cut in cuts:
        ends, _, first, last = _restore_view(data[start : cut.end])
        if not any(start < at < cut.end for at in overlong):
            assert cut.lines == len(ends)
            assert _ns(cut) == (first, last)
        start = cut.end
    assert start == len(data)
