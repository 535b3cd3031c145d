"""Record boundaries: Docker partial records, CRI P/F lines, plain lines, bad input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiverd.formats.records import CriScanner, DockerScanner, PlainScanner, Scanner
from archiverd.formats.timestamps import parse_datetime as parse_time
from tests.sources.helpers import cri_line, docker_record


def _feed(scanner: Scanner, data: bytes, sizes: list[int]) -> None:
    pos = 0
    for size in [*sizes, len(data)]:
        scanner.feed(data[pos : pos + max(size, 1)])
        pos += max(size, 1)
        if pos >= len(data):
            break
    scanner.feed(data[pos:])


def _docker_stream(parts: list[tuple[str, bool]]) -> tuple[bytes, list[int]]:
    """Records for (text, closes_line) parts and the offsets where a line closes."""
    out, closes = b"", []
    for n, (text, newline) in enumerate(parts):
        logged = text + ("\n" if newline else "")
        out += docker_record(logged, n=n)
        if logged.endswith("\n"):
            closes.append(len(out))
    return out, closes


texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(st.tuples(texts, st.booleans()), min_size=1, max_size=30),
    sizes=st.lists(st.integers(1, 300), max_size=40),
)
@pytest.mark.slow
def test_docker_boundaries_only_after_closed_lines(
    parts: list[tuple[str, bool]], sizes: list[int]
) -> None:
    """Whatever the chunking, a Docker boundary is only ever the end of a line-closing record."""
    data, closes = _docker_stream(parts)
    bad: list[str] = []
    scanner = DockerScanner(0, max_line_bytes=1 << 20, on_bad=bad.append)
    seen = set()
    pos = 0
    for size in [*sizes, len(data)]:
        scanner.feed(data[pos : pos + size])
        pos += size
        seen.add(scanner.boundary)
    seen.discard(0)
    assert seen <= set(closes)
    assert scanner.boundary == (closes[-1] if closes else 0)
    cut = scanner.cut()
    assert cut.lines == len(closes)
    assert bad == []


def test_docker_partial_16k_records_are_never_cut() -> None:
    """A 40 KiB line split by dockerd into 16 KiB partial records has no boundary inside."""
    long = "x" * 40_000
    chunks = [long[i : i + 16384] for i in range(0, len(long), 16384)]
    data = docker_record("before\n") + b"".join(
        docker_record(c + ("\n" if i == len(chunks) - 1 else ""), n=i + 1)
        for i, c in enumerate(chunks)
    )
    first_end = len(docker_record("before\n"))
    scanner = DockerScanner(0, max_line_bytes=1 << 20, on_bad=lambda r: None)
    boundaries = []
    for i in range(0, len(data), 1000):
        scanner.feed(data[i : i + 1000])
        boundaries.append(scanner.boundary)
    assert set(boundaries) == {first_end, len(data)}
    cut = scanner.cut()
    assert (cut.end, cut.lines) == (len(data), 2)


def test_docker_timestamps_and_escaped_backslash_n() -> None:
    """first/last come from the records' time; a literal backslash-n does not close a line."""
    data = docker_record("ends with backslash-n \\n", n=1) + docker_record("real\n", n=2)
    scanner = DockerScanner(0, max_line_bytes=1 << 20, on_bad=lambda r: None)
    scanner.feed(data[:10])
    assert scanner.boundary == 0
    scanner.feed(data[10:])
    cut = scanner.cut()
    assert cut.lines == 1
    assert cut.first_ts is not None
    assert cut.first_ts.microsecond == 1
    assert cut.last_ts is not None
    assert cut.last_ts.microsecond == 2


def test_malformed_json_and_binary_are_counted_and_kept() -> None:
    """A malformed or binary line is a bad_input count, closes at its newline, loses nothing."""
    bad: list[str] = []
    data = (
        docker_record("ok\n")
        + b'{"log":"trunc\n'
        + b"\x00\xff\xfe binary\n"
        + docker_record("ok\n")
    )
    scanner = DockerScanner(0, max_line_bytes=1 << 20, on_bad=bad.append)
    scanner.feed(data)
    cut = scanner.cut()
    assert bad == ["malformed_json", "binary"]
    assert (cut.end, cut.lines) == (len(data), 4)


def test_docker_other_key_order_parses() -> None:
    """A valid record in another key order is read with json, not flagged."""
    line = json.dumps({"time": "2026-01-02T03:04:05.5Z", "stream": "stderr", "log": "x\n"})
    bad: list[str] = []
    scanner = DockerScanner(0, max_line_bytes=1 << 20, on_bad=bad.append)
    scanner.feed(line.encode() + b"\n")
    cut = scanner.cut()
    assert bad == []
    assert cut.lines == 1
    assert cut.first_ts is not None


def test_cri_partial_lines_are_never_cut() -> None:
    """CRI P lines have no boundary; the F line that ends them does."""
    data = cri_line("a", tag="F") + cri_line("b1", tag="P") + cri_line("b2", tag="P")
    scanner = CriScanner(0, max_line_bytes=1 << 20, on_bad=lambda r: None)
    scanner.feed(data)
    assert scanner.boundary == len(cri_line("a"))
    tail = cri_line("b3", tag="F")
    scanner.feed(tail)
    assert scanner.boundary == len(data) + len(tail)
    assert scanner.cut().lines == 2


def test_long_docker_line_split_at_record_boundary_docker_made() -> None:
    """A logical line longer than max_line_bytes may be cut after a partial record only."""
    bad: list[str] = []
    records = [docker_record("y" * 600, n=i) for i in range(5)]
    scanner = DockerScanner(0, max_line_bytes=1024, on_bad=bad.append)
    scanner.feed(b"".join(records))
    ends = {sum(len(r) for r in records[: i + 1]) for i in range(5)}
    assert scanner.boundary in ends
    assert bad == ["long_line"]


def test_plain_run_without_newline_is_cut_and_memory_bounded() -> None:
    """A 5 MiB run with no newline is cut every max_line_bytes; nothing buffered beyond that."""
    bad: list[str] = []
    scanner = PlainScanner(0, max_line_bytes=1 << 20, on_bad=bad.append)
    for _ in range(5):
        scanner.feed(b"z" * (1 << 20))
        assert scanner._carry_len <= 1 << 20
    assert scanner.boundary >= 4 << 20
    assert "long_line" in bad
    cut = scanner.cut(everything=True)
    assert cut.end == 5 << 20


def test_parse_time_nanoseconds() -> None:
    """RFC 3339 with nanoseconds and offsets parses to UTC; garbage is None."""
    ts = parse_time(b"2026-11-23T08:55:50.123456789Z")
    assert ts is not None
    assert ts.microsecond == 123456
    assert ts.utcoffset() is not None
    other = parse_time(b"2026-11-23T10:55:50+02:00")
    assert other is not None
    assert other.hour == 8
    assert parse_time(b"not a time") is None


@settings(max_examples=100, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=30).filter(lambda b: b"\n" not in b), max_size=20),
    sizes=st.lists(st.integers(1, 50), max_size=20),
)
def test_plain_cut_everything_covers_all_bytes(lines: list[bytes], sizes: list[int]) -> None:
    """Cutting everything at the end accounts for every fed byte, newline or not."""
    data = b"\n".join(lines)
    scanner = PlainScanner(7, max_line_bytes=1 << 20, on_bad=lambda r: None)
    _feed(scanner, data, sizes)
    cut = scanner.cut(everything=True)
    assert cut.end == 7 + len(data)
    assert cut.lines == data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def test_cri_line_with_a_bad_time_is_no_partial_record() -> None:
    """A P-looking CRI line whose time does not parse closes at its newline (restore reads it
    as one line), counted as malformed_cri; the sealer used to hold the boundary back."""
    bad: list[str] = []
    odd = b"2026-13-45T08:00:00Z stdout P not a record\n"
    data = cri_line("a") + odd
    scanner = CriScanner(0, max_line_bytes=1 << 20, on_bad=bad.append)
    scanner.feed(data)
    assert scanner.boundary == len(data)
    assert bad == ["malformed_cri"]
    assert scanner.cut().lines == 2


def test_deeply_nested_json_line_is_malformed_not_a_crash() -> None:
    """A line of 100 000 nested brackets is counted as malformed_json and kept."""
    bad: list[str] = []
    data = docker_record("ok\n") + b'{"log":' + b"[" * 100_000 + b"\n" + docker_record("ok\n")
    scanner = DockerScanner(0, max_line_bytes=1 << 20, on_bad=bad.append)
    scanner.feed(data)
    cut = scanner.cut()
    assert bad == ["malformed_json"]
    assert (cut.end, cut.lines) == (len(data), 3)


def test_docker_fast_path_counts_six_backslashes_before_n_as_no_newline() -> None:
    """A log ending in three escaped backslashes and an 'n' is partial, in a clean chunk too."""
    data = docker_record("x" + "\\" * 3 + "n", n=1) + docker_record("end\n", n=2)
    scanner = DockerScanner(0, max_line_bytes=1 << 20, on_bad=lambda r: None)
    scanner.feed(data)
    cut = scanner.cut()
    assert (cut.end, cut.lines) == (len(data), 1)


def test_cut_everything_counts_a_trailing_partial_record_as_a_line() -> None:
    """Sealing everything after a partial record counts it: restore reads it as a line."""
    data = docker_record("a\n", n=1) + docker_record("unfinished", n=2)
    scanner = DockerScanner(0, max_line_bytes=1 << 20, on_bad=lambda r: None)
    scanner.feed(data)
    cut = scanner.cut(everything=True)
    assert (cut.end, cut.lines) == (len(data), 2)
    assert cut.last_ts is not None
    assert cut.last_ts.microsecond == 2


def test_forced_cut_inside_a_long_line_counts_its_start_as_a_line() -> None:
    """A segment cut inside an over-long line counts that piece, as restore reads it."""
    records = [docker_record("y" * 600, n=i) for i in range(3)]
    scanner = DockerScanner(0, max_line_bytes=1024, on_bad=lambda r: None)
    for record in records:
        scanner.feed(record)
    cut = scanner.cut()
    assert cut.end == len(records[0]) + len(records[1])
    assert cut.lines == 1


def test_first_time_is_the_first_valid_time() -> None:
    """A first record with an unparseable time does not hide the next record's time."""
    odd = b'{"log":"a\\n","stream":"stdout","time":"yesterday"}\n'
    scanner = DockerScanner(0, max_line_bytes=1 << 20, on_bad=lambda r: None)
    scanner.feed(odd + docker_record("b\n", n=5))
    cut = scanner.cut()
    assert cut.lines == 2
    assert cut.first_ts is not None
    assert cut.first_ts.microsecond == 5


def test_first_ts_of_an_open_segment_is_its_first_record_time() -> None:
    """Scanner.first_ts (the archive lag's oldest byte) is the first record's time."""
    scanner = DockerScanner(0, max_line_bytes=1 << 20, on_bad=lambda reason: None)
    scanner.feed(docker_record("a\n", n=7) + docker_record("b\n", n=9))
    first = scanner.first_ts
    assert first is not None
    assert first.microsecond == 7
