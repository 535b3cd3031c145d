"""The block merge of `get --out -` writes exactly what the record-by-record merge writes."""

from __future__ import annotations

import array
import io
import itertools
import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiverd.formats import docker
from archiverd.formats.timestamps import parse_ns
from archiverd.restore import records
from archiverd.restore.records import (
    NO_INDEX_BELOW,
    Block,
    StreamIndexer,
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


def _records(blocks: list[Block]) -> list[tuple[int, bytes]]:
    """Every message of `blocks` with its key."""
    return [
        (key, raw)
        for block in blocks
        for key, raw in zip(block.keys, block.messages(0, len(block.keys)), strict=True)
    ]


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
    """Same keys per stream (read in blocks, or from an index; keyed and merged compiled or
    in Python) and same merged bytes and count, for any interleaving, any block size (blocks
    cutting lines anywhere), ties, trims and records off the bulk path."""
    with (
        counting(docker, "compiled_keys", how),
        counting(records, "compiled_merge", how),
        tempfile.TemporaryDirectory() as tmp,
    ):
        streams = _write(tmp, files)
        starts = starts[: len(streams)]
        for n, (paths, start) in enumerate(zip(streams, starts, strict=True)):
            blocks = list(stream_blocks(paths, start, block_bytes=block_bytes))
            assert all(block.keys for block in blocks)
            expected_records = [(key, raw) for key, _, raw in stream_records(paths, start, n)]
            assert _records(blocks) == expected_records
            indexes = [p.with_suffix(".idx") for p in paths]
            for path, index in zip(paths, indexes, strict=True):
                assert index_segment(path, index, block_bytes=block_bytes)
            indexed = list(stream_indexed(list(zip(paths, indexes, strict=True)), start))
            assert all(block.keys for block in indexed)
            assert _records(indexed) == expected_records
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


def _pieces(data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` cut into pieces of `sizes` (cycled), as an inflater hands it out."""
    pieces: list[bytes] = []
    at = 0
    for size in itertools.cycle(sizes):
        if at >= len(data):
            return pieces
        pieces.append(data[at : at + size])
        at += size
    raise AssertionError("unreachable")


def _stream_indexed(path: Path, sizes: list[int], block_bytes: int) -> tuple[Path, bool]:
    """`StreamIndexer` of the file at `path`, fed in pieces of `sizes`: the index and
    whether it was made."""
    index = path.with_suffix(".idx")
    indexer = StreamIndexer(index, block_bytes=block_bytes)
    for piece in _pieces(path.read_bytes(), sizes):
        indexer.feed(piece)
    return index, indexer.finish()


_ORDINARY = st.builds(
    lambda second, fraction, text, stream: (
        json.dumps(
            {"log": text + "\n", "stream": stream, "time": second + fraction + "Z"},
            separators=(",", ":"),
        ).encode()
        + b"\n"
    ),
    _SECOND.filter(lambda second: second.startswith("2026-11-23T08")),
    _FRACTION.filter(str.isdigit),
    _TEXT,
    st.sampled_from(["stdout", "stderr"]),
)


@settings(max_examples=300, deadline=None)
@given(
    segment=st.one_of(
        _FILE.map(lambda content: (content, False)),
        st.lists(_ORDINARY, max_size=30).map(lambda lines: (b"".join(lines), True)),
    ),
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=6),
    block_bytes=st.integers(1, 400),
    start=st.integers(1_795_420_799, 1_795_420_802).map(lambda s: s * 10**9),
)
def test_an_index_made_while_the_plaintext_streams_by_reads_as_parsing_does(
    segment: tuple[bytes, bool], sizes: list[int], block_bytes: int, start: int
) -> None:
    """`StreamIndexer` fed a segment's plaintext in pieces of any size, framing blocks of
    any size: where it says it made the index, `stream_indexed` reads the same keys and
    records as parsing the file; where not, no index file is left; and a segment of
    ordinary dockerd records (the common case) always gets one."""
    assert docker.compiled_keys is not None, "the compiled pass was not built"
    content, ordinary = segment
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.log"
        path.write_bytes(content)
        index, made = _stream_indexed(path, sizes, block_bytes)
        assert made == index.exists()
        assert made or not ordinary
        if made:
            assert _records(list(stream_indexed([(path, index)], start))) == [
                (key, raw) for key, _, raw in stream_records([path], start)
            ]


def test_an_abandoned_stream_index_leaves_nothing(tmp_path: Path) -> None:
    """An unpack that failed midway: what the indexer wrote so far is removed."""
    record = {"log": "x\n", "stream": "stdout", "time": "2026-11-23T08:00:00.000000001Z"}
    line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
    index = tmp_path / "x.idx"
    indexer = StreamIndexer(index, block_bytes=len(line))
    indexer.feed(line * 3)
    assert index.exists()  # a frame is written
    indexer.abandon()
    assert list(tmp_path.iterdir()) == []


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
    keys = [base + 10**9 + 2, base + 10**9 + 2, base + 3 * 10**9]
    assert _records(blocks) == list(zip(keys, [(x + "\n").encode() for x in lines], strict=True))


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


@st.composite
def _run(draw: st.DrawFn) -> tuple[list[tuple[int, bytes]], int, int]:
    """Messages of one stream in key order (keys often tied; some of several lines, some
    empty), and the start and stop of the run taken from them."""
    keys = sorted(draw(st.lists(st.integers(-3, 3), max_size=12)))
    raws = [draw(st.sampled_from([b"a\n", b"bb\n", b"c\nd\n", b"", b"e"])) for _ in keys]
    start = draw(st.integers(0, len(keys)))
    return list(zip(keys, raws, strict=True)), start, draw(st.integers(start, len(keys)))


def _compiled_run(
    messages: list[tuple[int, bytes]], start: int, stop: int
) -> tuple[bytes, array.array[int], array.array[int], int, int]:
    ends = array.array("q")
    for _, raw in messages:
        ends.append((ends[-1] if ends else 0) + len(raw))
    keys = array.array("q", [key for key, _ in messages])
    return b"".join(raw for _, raw in messages), keys, ends, start, stop


def test_the_compiled_merge_is_built() -> None:
    """The machines that run the tests have a C compiler: the merge must be compiled there."""
    assert records.compiled_merge is not None
    assert records.compiled_line_ends is not None


@settings(max_examples=1000, deadline=None)
@given(runs=st.lists(_run(), max_size=5))
def test_the_compiled_merge_is_a_stable_sort_of_the_runs(
    runs: list[tuple[list[tuple[int, bytes]], int, int]],
) -> None:
    """By key, ties in run order and then in each run's order: the runs concatenated and
    sorted stably, which is what the merge in Python does."""
    assert records.compiled_merge is not None
    concatenated = [pair for messages, start, stop in runs for pair in messages[start:stop]]
    expected = b"".join(raw for _, raw in sorted(concatenated, key=lambda pair: pair[0]))
    assert records.compiled_merge([_compiled_run(*run) for run in runs]) == expected


@pytest.mark.parametrize(
    ("run", "error"),
    [
        (
            _compiled_run([(2, b"a\n"), (1, b"b\n")], 0, 2),
            "merge_runs: run 1: its keys decrease",
        ),
        (
            _compiled_run([(1, b"a\n")], 0, 2),
            "merge_runs: run 1: its start and stop are not records of it",
        ),
        (
            _compiled_run([(1, b"a\n")], 1, 0),
            "merge_runs: run 1: its start and stop are not records of it",
        ),
        (
            (b"a\n", array.array("q", [1, 2]), array.array("q", [2, 9]), 0, 2),
            "merge_runs: run 1: its ends are out of order or past its data",
        ),
        (
            (b"a\nb\n", array.array("q", [1, 2]), array.array("q", [4, 2]), 0, 2),
            "merge_runs: run 1: its ends are out of order or past its data",
        ),
        (
            (b"a\nb\n", array.array("q", [1, 2]), array.array("q", [-5, 4]), 1, 2),
            "merge_runs: run 1: its ends are out of order or past its data",
        ),
    ],
)
def test_the_compiled_merge_refuses_a_broken_run(run: tuple[object, ...], error: str) -> None:
    """A run that breaks the merge's rules is refused by name, before a byte is copied
    (the first run, sound, is not the one named)."""
    assert records.compiled_merge is not None
    sound = _compiled_run([(0, b"x\n")], 0, 1)
    with pytest.raises(ValueError, match="^" + re.escape(error) + "$"):
        records.compiled_merge([sound, run])  # type: ignore[list-item]


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.sampled_from([b"a\n", b"\n", b"bc\n"]), max_size=8), tail=st.booleans())
def test_the_compiled_line_ends_are_where_readlines_cuts(lines: list[bytes], tail: bool) -> None:
    """Every line's end, a last one without its newline too."""
    data = b"".join(lines) + (b"z" if tail else b"")
    assert records.compiled_line_ends is not None
    ends = array.array("q")
    ends.frombytes(records.compiled_line_ends(data))
    cuts = [0, *ends]
    assert [data[a:b] for a, b in itertools.pairwise(cuts)] == io.BytesIO(data).readlines()
