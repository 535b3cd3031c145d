"""The block merge of `get --out -` writes exactly what the record-by-record merge writes."""

from __future__ import annotations

import array
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiverd.formats import docker
from archiverd.formats.timestamps import parse_ns
from archiverd.restore.records import (
    NO_INDEX_BELOW,
    index_segment,
    stream_blocks,
    stream_indexed,
    stream_records,
    write_blocks,
    write_records,
)
from tests.compiled import BOTH_WAYS, counting

# Mostly dockerd records with UTC nanosecond times (the bulk path), few distinct seconds so
# ties across streams are common; and every shape that must leave it: partials, an escaped
# backslash before the n, other streams' names, odd or impossible times, a second
# ","stream":" in a line, CRI and plain lines, a missing last newline.
_SECOND = st.sampled_from(
    [
        "2026-11-23T08:00:00.",
        "2026-11-23T08:00:01.",
        "2026-11-23T08:00:02.",
        "2026-13-45T08:00:01.",
        "2026-11-23T07:59:60.",
        "1969-12-31T23:59:59.",
    ]
)
_FRACTION = st.sampled_from(["000000000", "000000001", "500000000", "999999999", "12345678x"])
_TEXT = st.text(alphabet='ab \\"', max_size=8)


@st.composite
def _record(draw: st.DrawFn) -> bytes:
    """One record; most take the bulk path, some must not."""
    stamp = draw(_SECOND) + draw(_FRACTION) + "Z"
    text = draw(_TEXT)
    kind = draw(
        st.sampled_from(
            ["docker"] * 6 + ["partial", "backslash", "other", "twice", "cri", "plain", "odd"]
        )
    )
    if kind in ("docker", "partial", "backslash", "other"):
        log = {"docker": text + "\n", "partial": text, "backslash": text + "\\n"}.get(
            kind, text + "\n"
        )
        stream = "console" if kind == "other" else draw(st.sampled_from(["stdout", "stderr"]))
        record = {"log": log, "stream": stream, "time": stamp}
        return json.dumps(record, separators=(",", ":")).encode() + b"\n"
    if kind == "twice":
        return (
            b'{"log":"' + text.encode() + b'","stream":"x\\n","stream":"stdout","time":"'
            + stamp.encode() + b'"}\n'
        )  # fmt: skip
    if kind == "cri":
        return f"{stamp} stdout {draw(st.sampled_from('PF'))} {text}\n".encode()
    if kind == "odd":
        return b'{"log":"' + text.encode() + b'\\n","stream":"stdout","time":"' + stamp.encode()
    return text.encode() + b"\n"


_FILE = st.builds(
    lambda records, cut: b"".join(records)[:-1] if cut else b"".join(records),
    st.lists(_record(), max_size=30),
    st.booleans(),
)
_WINDOW = st.one_of(
    st.none(), st.integers(1_795_420_799, 1_795_420_803).map(lambda s: s * 10**9 + 1)
)


def _write(tmp: str, files: list[list[bytes]]) -> list[list[Path]]:
    streams = []
    for n, contents in enumerate(files):
        paths = []
        for m, content in enumerate(contents):
            path = Path(tmp) / f"{n}-{m}.log"
            path.write_bytes(content)
            paths.append(path)
        streams.append(paths)
    return streams


@BOTH_WAYS
@settings(max_examples=300, deadline=None)
@given(
    files=st.lists(st.lists(_FILE, min_size=1, max_size=3), min_size=1, max_size=4),
    starts=st.lists(
        st.integers(1_795_420_799, 1_795_420_802).map(lambda s: s * 10**9), min_size=4, max_size=4
    ),
    block_bytes=st.integers(1, 400),
    since=_WINDOW,
    until=_WINDOW,
)
@pytest.mark.slow
def test_block_merge_equals_record_merge(
    how: str,
    files: list[list[bytes]],
    starts: list[int],
    block_bytes: int,
    since: int | None,
    until: int | None,
) -> None:
    """Same keys per stream (read in blocks, or from an index; keyed compiled or in Python)
    and same merged bytes and count, for any interleaving, any block size (blocks cutting
    lines anywhere), ties, trims and records off the bulk path."""
    with counting(docker, "compiled_keys", how), tempfile.TemporaryDirectory() as tmp:
        streams = _write(tmp, files)
        starts = starts[: len(streams)]
        for n, (paths, start) in enumerate(zip(streams, starts, strict=True)):
            blocks = list(stream_blocks(paths, start, block_bytes=block_bytes))
            assert all(keys for keys, _ in blocks)
            expected_records = [(key, raw) for key, _, raw in stream_records(paths, start, n)]
            assert [
                (k, r) for keys, raws in blocks for k, r in zip(keys, raws, strict=True)
            ] == expected_records
            indexes = [p.with_suffix(".idx") for p in paths]
            for path, index in zip(paths, indexes, strict=True):
                assert index_segment(path, index, block_bytes=block_bytes)
            indexed = list(stream_indexed(list(zip(paths, indexes, strict=True)), start))
            assert all(keys for keys, _ in indexed)
            assert [
                (k, r) for keys, raws in indexed for k, r in zip(keys, raws, strict=True)
            ] == expected_records
        expected = io.BytesIO()
        expected_count = write_records(
            [stream_records(p, s, n) for n, (p, s) in enumerate(zip(streams, starts, strict=True))],
            expected,
            since_ns=since,
            until_ns=until,
        )
        merged = io.BytesIO()
        count = write_blocks(
            [
                (stream_blocks(p, s, block_bytes=block_bytes), s)
                for p, s in zip(streams, starts, strict=True)
            ],
            merged,
            since_ns=since,
            until_ns=until,
        )
    assert (merged.getvalue(), count) == (expected.getvalue(), expected_count)


def test_bulk_path_reads_dockerd_records_as_records_are_read() -> None:
    """A block of ordinary dockerd records (the bulk path) keys each record by its time."""
    stamps = ["2026-11-23T08:00:01.000000002Z", "2026-11-23T08:00:00.5Z"]
    stamps += ["2026-11-23T08:00:03.000000000Z"]
    lines = [
        json.dumps({"log": f"{i}\n", "stream": "stdout", "time": t}, separators=(",", ":"))
        for i, t in enumerate(stamps)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        (path,) = _write(tmp, [[("\n".join(lines) + "\n").encode()]])[0:1][0]
        blocks = list(stream_blocks([path], 0))
    base = 1_795_420_800 * 10**9
    # The second record's time is earlier: its key is the max so far (write order kept).
    assert blocks == [
        (
            [base + 10**9 + 2, base + 10**9 + 2, base + 3 * 10**9],
            [(x + "\n").encode() for x in lines],
        )
    ]


def test_an_index_is_not_written_for_times_beyond_64_bits(tmp_path: Path) -> None:
    """A record from the year 1 (before int64 ns): no index, so the merge parses the file."""
    path = tmp_path / "old.log"
    record = {"log": "x\n", "stream": "stdout", "time": "0001-01-01T00:00:00.000000001Z"}
    path.write_bytes(json.dumps(record, separators=(",", ":")).encode() + b"\n")
    assert not index_segment(path, tmp_path / "old.idx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.log"]


_DIGITS = st.text(alphabet="0123456789", min_size=2, max_size=2)


@st.composite
def _stamp(draw: st.DrawFn) -> str:
    """A time in the bulk path's shape, its fields at and past every calendar edge."""
    year = draw(
        st.sampled_from(["0000", "0001", "1677", "1678", "1900", "1970", "2000", "2024"])
        | st.sampled_from(["2026", "2100", "2261", "2262", "2263", "9999"])
    )
    month = draw(st.sampled_from(["00", "01", "02", "04", "09", "12", "13"]) | _DIGITS)
    day = draw(st.sampled_from(["00", "01", "28", "29", "30", "31", "32"]) | _DIGITS)
    hour = draw(st.sampled_from(["00", "23", "24"]) | _DIGITS)
    minute = draw(st.sampled_from(["00", "59", "60"]) | _DIGITS)
    second = draw(st.sampled_from(["00", "59", "60", "61"]) | _DIGITS)
    fraction = draw(st.sampled_from(["000000000", "999999999", "145224192", "854775807"]))
    return f"{year}-{month}-{day}T{hour}:{minute}:{second}.{fraction}Z"


@settings(max_examples=2000, deadline=None)
@given(_stamp())
def test_the_compiled_keys_read_a_time_as_the_time_parser_does(stamp: str) -> None:
    """The compiled pass reads a record's time as `parse_ns` does (calendar, leap years and
    seconds), and leaves a block to Python where it is none or past int64 ns."""
    assert docker.compiled_keys is not None
    line = json.dumps({"log": "x\n", "stream": "stdout", "time": stamp}, separators=(",", ":"))
    raw = docker.compiled_keys(line.encode() + b"\n", NO_INDEX_BELOW)
    ns = parse_ns(stamp.encode())
    if ns is None or not NO_INDEX_BELOW < ns < 1 << 63:
        assert raw is None
    else:
        assert raw is not None
        assert array.array("q", raw).tolist() == [ns]
