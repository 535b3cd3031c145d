"""The scanners' bulk paths read exactly what the line-by-line reading reads, on any input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiverd.formats import cri, docker
from archiverd.formats.records import CriScanner, Cut, DockerScanner, Scanner
from tests.compiled import BOTH_WAYS, closing_line_by_line, counting

_DOCKER_TOKENS = [
    b'{"log":"',
    b'","stream":"',
    b"stdout",
    b'"time":"',
    b'","time":"',
    b"2026-11-23T08:00:01.000000001Z",
    b"2026-11-23T08:00:02Z",
    b'"}',
    b'"}\n',
    b"\n",
    b"\\n",
    b"\\",
    b"\\\\n",
    b'"',
    b",",
    b"a",
    b"{",
    b"}",
    b'{"log":"a\\n","stream":"stdout","time":"2026-11-23T08:00:01.000000001Z"}\n',
    b'{"log":"b","stream":"stderr","time":"2026-11-23T08:00:02.5Z"}\n',
]
_CRI_TOKENS = [
    b"2026-11-23T08:00:01.000000001Z",
    b"2026-11-23T08:00:02Z",
    b"2026-11-31T08:00:02Z",
    b" stdout ",
    b" stderr ",
    b"F",
    b"P",
    b" ",
    b"\n",
    b"a",
    b"2026-11-23T08:00:01.000000001Z stdout F a\n",
    b"2026-11-23T08:00:01.5Z stderr P b\n",
]


class _Reference:
    """A scanner whose bulk path is off: every line is read one by one."""

    def _fast(self, data: bytes, offset: int) -> bool:
        return False


class _SlowDocker(_Reference, DockerScanner):
    pass


class _SlowCri(_Reference, CriScanner):
    pass


def _run(cls: type[Scanner], chunks: list[bytes]) -> tuple[list[Cut], list[str], int]:
    bad: list[str] = []
    scanner = cls(0, max_line_bytes=1 << 20, on_bad=bad.append)
    cuts = []
    for chunk in chunks:
        scanner.feed(chunk)
        cuts.append(scanner.cut())
    cuts.append(scanner.cut(everything=True))
    return cuts, bad, scanner.boundary


def _chunks(tokens: list[bytes]) -> st.SearchStrategy[list[bytes]]:
    return st.lists(
        st.lists(st.sampled_from(tokens), max_size=30).map(b"".join), min_size=1, max_size=4
    )


@BOTH_WAYS
@settings(max_examples=400, deadline=None)
@given(chunks=_chunks(_DOCKER_TOKENS))
def test_docker_bulk_path_reads_as_line_by_line(how: str, chunks: list[bytes]) -> None:
    """DockerScanner's bulk path (compiled or in passes): same cuts, lines, times and bad
    input as line by line."""
    with counting(docker, "compiled_closing", how):
        assert _run(DockerScanner, chunks) == _run(_SlowDocker, chunks)


def test_the_compiled_count_is_built() -> None:
    """The install built the compiled count (setup.py; scripts/setup brings a C compiler):
    without it the daemon still works, at a fraction of its scanning speed."""
    assert docker.compiled_closing is not None, "archiverd.formats._scan is not built"


@settings(max_examples=1000, deadline=None)
@given(st.one_of(_chunks(_DOCKER_TOKENS).map(b"".join), st.just(b"")))
def test_the_compiled_count_is_the_count_of_read(data: bytes) -> None:
    """The compiled count answers only where every line is a record and then counts what
    `read` counts; it answers for every chunk either count in passes answers, alike."""
    assert docker.compiled_closing is not None
    counted = docker.compiled_closing(data)
    if counted is not None:
        assert counted == closing_line_by_line(docker.read, data)
    for passes in (docker.count_closing_usual(data), docker.count_closing(data)):
        assert passes is None or passes == counted


@BOTH_WAYS
@settings(max_examples=400, deadline=None)
@given(chunks=_chunks(_CRI_TOKENS))
def test_cri_bulk_path_reads_as_line_by_line(how: str, chunks: list[bytes]) -> None:
    """CriScanner's bulk path (compiled or not): same cuts, lines, times and bad input as
    line by line."""
    with counting(cri, "compiled_closing", how):
        assert _run(CriScanner, chunks) == _run(_SlowCri, chunks)


_CRI_EDGES = [
    # (line, whether `read` reads it as closing; None: the compiled count leaves it)
    (b"2026-11-23T08:00:01Z stdout F a", True),
    (b"2026-11-23T08:00:01Z stderr F", True),  # an empty message
    (b"2026-11-23T08:00:01.5Z stdout P a", False),
    (b"2026-11-23T08:00:01.123456789Z stdout F  two spaces", True),
    (b"2024-02-29T23:59:60Z stdout F leap day, leap second", True),
    (b"2026-11-23T08:00:01.1234567891Z stdout F ten digits", None),
    (b"2026-11-23T08:00:01z stdout F lower-case z", None),
    (b"2026-11-23t08:00:01Z stdout F lower-case t", None),
    (b"2026-11-23T09:00:01+01:00 stdout F an offset", None),
    (b"2026-02-29T08:00:01Z stdout F no such day", None),
    (b"1900-02-29T08:00:01Z stdout F no such day", None),
    (b"0000-01-01T08:00:01Z stdout F year 0", None),
    (b"2026-11-23T24:00:00Z stdout F", None),
    (b"2026-11-23T08:00:01.Z stdout F", None),
    (b"2026-11-23T08:00:01Z stdin F a", None),
    (b"2026-11-23T08:00:01Z stdout Fx", None),
    (b"2026-11-23T08:00:01Z stdout F\r", None),
    (b"2026-11-23T08:00:01Z  stdout F a", None),
]


@pytest.mark.parametrize(("line", "closes"), _CRI_EDGES)
def test_the_compiled_cri_count_reads_edge_lines_as_read(line: bytes, closes: bool | None) -> None:
    """Lines at the edges of a CRI record: the compiled count is `read`'s where it answers,
    and leaves the others to `read`."""
    assert cri.compiled_closing is not None
    good = b"2026-11-23T08:00:02.5Z stdout F b\n"
    data = good + line + b"\n" + good
    counted = cri.compiled_closing(data)
    assert counted == (None if closes is None else 2 + closes)
    if closes is not None:
        assert counted == closing_line_by_line(cri.read, data)


def _docker_record(text: str, stream: str, stamp: str, *, attrs: bool) -> bytes:
    """One json-file line as dockerd writes it (``log``, ``stream``, [``attrs``,] ``time``)."""
    record: dict[str, object] = {"log": text, "stream": stream}
    if attrs:
        record["attrs"] = {"tag": "web"}
    record["time"] = stamp
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


_VARIATIONS = [
    "partial",  # a piece of a line longer than 16 KiB
    "attrs",
    "backslash",  # text ending in backslashes, before the newline or not
    "offset",  # a time not in UTC
    "stream",  # another stream name
    "short",  # a short write (full disk), then the next record on the same line
    "zeros",  # a block of zeros left by a crash
    "newline",  # a newline inside a record
]


@st.composite
def _dockerd_lines(draw: st.DrawFn) -> bytes:
    """Lines as dockerd writes them (the usual chunk: closing records of stdout and stderr,
    UTC times), a few of them varied the ways real logs vary (`_VARIATIONS`)."""
    count = draw(st.integers(1, 10))
    varied = draw(
        st.dictionaries(st.integers(0, count - 1), st.sampled_from(_VARIATIONS), max_size=2)
    )
    lines = []
    for i in range(count):
        kind = varied.get(i)
        text = draw(st.sampled_from(["a", "b c", 'q"t', "é", "", "\\n"]))
        if kind == "backslash":
            text += "\\" * draw(st.integers(1, 4)) + draw(st.sampled_from(["", "n"]))
        stamp = draw(st.sampled_from(["2026-11-23T08:00:01.000000001Z", "2026-11-23T08:00:02Z"]))
        line = _docker_record(
            text if kind == "partial" else text + "\n",
            "stdin" if kind == "stream" else draw(st.sampled_from(["stdout", "stderr"])),
            "2026-11-23T09:00:03+01:00" if kind == "offset" else stamp,
            attrs=kind == "attrs",
        )
        if kind == "short":
            line = line[: draw(st.integers(1, len(line) - 1))]
        elif kind == "zeros":
            line = b"\x00" * draw(st.integers(1, 8)) + draw(st.sampled_from([b"", b"\n"])) + line
        elif kind == "newline":
            at = draw(st.integers(1, len(line) - 1))
            line = line[:at] + b"\n" + line[at:]
        lines.append(line)
    return b"".join(lines)


def _chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` cut into pieces of `sizes`, then the rest (no empty piece unless all is)."""
    chunks, pos = [], 0
    for size in sizes:
        chunks.append(data[pos : pos + size])
        pos += size
    chunks.append(data[pos:])
    return [c for c in chunks if c] or [b""]


@BOTH_WAYS
@settings(max_examples=600, deadline=None)
@given(data=_dockerd_lines(), sizes=st.lists(st.integers(1, 400), max_size=6))
def test_docker_usual_path_reads_as_line_by_line(how: str, data: bytes, sizes: list[int]) -> None:
    """DockerScanner (compiled or in passes) on dockerd-written lines, clean or damaged as
    real logs get, chunked anywhere: same cuts, lines, times and bad input as line by line."""
    chunks = _chunked(data, sizes)
    with counting(docker, "compiled_closing", how):
        assert _run(DockerScanner, chunks) == _run(_SlowDocker, chunks)


_T = b'"time":"2026-11-23T08:00:01Z"}'
_EDGES = [
    # (line, whether `read` reads it as closing a line; None: the compiled count leaves it)
    (b'{"log":"a\\n","stream":"stdout",' + _T, True),
    (b'{"log":"\\n","stream":"stderr",' + _T, True),  # the text is the newline alone
    (b'{"log":"a","stream":"stdout",' + _T, False),  # a partial record
    (b'{"log":"","stream":"stdout",' + _T, False),
    (b'{"log":"a\\\\n","stream":"stdout",' + _T, False),  # a backslash, then "n"
    (b'{"log":"a\\\\\\n","stream":"stdout",' + _T, True),  # a backslash, a newline
    (b'{"log":"\\\\\\\\n","stream":"stdout",' + _T, False),
    (b'{"log":"a\\n","stream":"stdout","attrs":{"tag":"web"},' + _T, True),
    (b'{"log":"a\\n","stream":"stdin",' + _T, True),  # read takes any stream name
    (b'{"log":"a\\n","stream":"' + _T, True),  # the stream's value starts the time key
    # the first stream key starts at the prefix's quote: the text before it is empty
    (b'{"log":","stream":"x\\n","stream":"stdout",' + _T, False),
    (b'{"log":"a\\n","stream":"stdout","time":"Z"}', True),
    (b'{"log":"a\\n","stream":"stdout","time":"}', None),  # no closing quote
    (b'{"log":"a\\n","time":"2026-11-23T08:00:01Z","stream":"stdoutZ"}', None),
    (b'{"log":"a\\n","stream":"stdout","time":"2026-11-23T08:00:01+01:00"}', None),
    (b'{"log": "a\\n","stream":"stdout",' + _T, None),  # another layout: JSON decoding
    (b"\x00\x00", None),
]


@pytest.mark.parametrize(("line", "closes"), _EDGES)
def test_the_compiled_count_reads_edge_lines_as_read(line: bytes, closes: bool | None) -> None:
    """Lines at the edges of dockerd's layout: the compiled count is `read`'s where it
    answers, and leaves the others to `read`."""
    assert docker.compiled_closing is not None
    good = _docker_record("b\n", "stdout", "2026-11-23T08:00:02Z", attrs=False)
    data = good + line + b"\n" + good
    counted = docker.compiled_closing(data)
    assert counted == (None if closes is None else 2 + closes)
    if closes is not None:
        assert counted == closing_line_by_line(docker.read, data)


@settings(max_examples=600, deadline=None)
@given(_dockerd_lines())
def test_the_compiled_count_reads_dockerd_lines_as_read(data: bytes) -> None:
    """On dockerd-written lines, clean or damaged: the compiled count is `read`'s count, and
    it answers for every clean chunk."""
    assert docker.compiled_closing is not None
    counted = docker.compiled_closing(data)
    assert counted == closing_line_by_line(docker.read, data) or counted is None
    if docker.count_closing(data) is not None:
        assert counted == docker.count_closing(data)


@settings(max_examples=300, deadline=None)
@given(_dockerd_lines())
def test_docker_usual_count_agrees_with_the_general_count(data: bytes) -> None:
    """`count_closing_usual` answers only for chunks `count_closing` counts, and alike."""
    usual = docker.count_closing_usual(data)
    assert usual is None or usual == docker.count_closing(data)


def test_docker_usual_path_takes_clean_dockerd_chunks() -> None:
    """The usual path counts a clean dockerd chunk (stdout and stderr, trimmed times) and
    leaves one with attrs, a partial record or an escaped backslash to the general count."""
    clean = b"".join(
        _docker_record(
            f"line {i}\n", ("stdout", "stderr")[i % 2], f"2026-11-23T08:00:0{i}.5Z", attrs=False
        )
        for i in range(6)
    )
    assert docker.count_closing_usual(clean) == 6 == docker.count_closing(clean)
    stamp = "2026-11-23T08:00:01Z"
    for odd in (
        _docker_record("x\n", "stdout", stamp, attrs=True),
        _docker_record("x", "stdout", stamp, attrs=False),  # a partial record
        _docker_record("x\\\n", "stdout", stamp, attrs=False),  # a backslash, a newline
    ):
        chunk = clean + odd
        assert docker.count_closing_usual(chunk) is None
        assert docker.count_closing(chunk) == 6 + odd.count(b'\\n"')


def test_docker_bulk_paths_leave_a_line_ending_at_its_time_key_to_line_by_line() -> None:
    """A line ending right after ``"time":"`` is malformed (its time has no closing quote):
    the bulk paths, which take lines ending in a UTC time only, report it as line by line."""
    good = _docker_record("a\n", "stdout", "2026-11-23T08:00:01Z", attrs=False)
    odd = b'{"log":"b\\n","stream":"stdout","time":"}\n'
    chunks = [good + odd + good]
    assert _run(DockerScanner, chunks) == _run(_SlowDocker, chunks)
    assert _run(DockerScanner, chunks)[1] == ["malformed_json"]


_CRI_VARIATIONS = [
    "partial",  # a P piece of a long line
    "offset",  # a time not in UTC
    "calendar",  # a time of a day that does not exist
    "stream",  # another stream name
    "tag",  # a tag without its space, or another tag
    "zeros",  # a block of zeros left by a crash
    "newline",  # a newline inside a line
]


@st.composite
def _cri_lines(draw: st.DrawFn) -> bytes:
    """Lines as containerd writes them (the usual chunk: ``F`` records of stdout and stderr,
    UTC times, any message, also empty), a few of them varied (`_CRI_VARIATIONS`)."""
    count = draw(st.integers(1, 10))
    varied = draw(
        st.dictionaries(st.integers(0, count - 1), st.sampled_from(_CRI_VARIATIONS), max_size=2)
    )
    lines = []
    for i in range(count):
        kind = varied.get(i)
        stamp = draw(st.sampled_from(["2026-11-23T08:00:01.000000001Z", "2026-11-23T08:00:02Z"]))
        stamp = {"offset": "2026-11-23T09:00:01+01:00", "calendar": "2026-11-31T08:00:01Z"}.get(
            kind or "", stamp
        )
        stream = "stdin" if kind == "stream" else draw(st.sampled_from(["stdout", "stderr"]))
        tag = {"partial": "P ", "tag": draw(st.sampled_from(["Fx", "PF ", "X "]))}.get(
            kind or "", "F "
        )
        text = draw(st.sampled_from(["a", "", "b c", "2026-11-23T08:00:01Z stdout F x", "é"]))
        line = f"{stamp} {stream} {tag}{text}".rstrip(" ").encode() + b"\n"
        if kind == "zeros":
            line = b"\x00" * draw(st.integers(1, 8)) + line
        elif kind == "newline":
            at = draw(st.integers(1, len(line) - 1))
            line = line[:at] + b"\n" + line[at:]
        lines.append(line)
    return b"".join(lines)


@BOTH_WAYS
@settings(max_examples=600, deadline=None)
@given(data=_cri_lines(), sizes=st.lists(st.integers(1, 300), max_size=6))
def test_cri_usual_path_reads_as_line_by_line(how: str, data: bytes, sizes: list[int]) -> None:
    """CriScanner (compiled or not) on containerd-written lines, clean or varied, chunked
    anywhere: same cuts, lines, times and bad input as line by line."""
    chunks = _chunked(data, sizes)
    with counting(cri, "compiled_closing", how):
        assert _run(CriScanner, chunks) == _run(_SlowCri, chunks)


@settings(max_examples=600, deadline=None)
@given(_cri_lines())
def test_the_compiled_cri_count_is_the_count_of_read(data: bytes) -> None:
    """On containerd-written lines, clean or varied: the compiled count is `read`'s count
    where it answers, and it answers for every chunk `bulk` reads."""
    assert cri.compiled_closing is not None
    counted = cri.compiled_closing(data)
    assert counted is None or counted == closing_line_by_line(cri.read, data)
    found = cri.bulk(data)
    if found is not None:
        assert counted == found[1].count(b"F")


def test_cri_usual_path_takes_clean_chunks_only() -> None:
    """`cri.bulk_closing` reads a chunk of F records with UTC times (lines, first and last
    time) and leaves one with a P record or a bad calendar day to `cri.bulk`."""
    clean = b"2026-11-23T08:00:01.5Z stdout F a\n2026-11-23T08:00:02Z stderr F\n"
    assert cri.bulk_closing(clean) == (2, b"2026-11-23T08:00:01.5Z", b"2026-11-23T08:00:02Z")
    assert cri.bulk_closing(clean + b"2026-11-23T08:00:03Z stdout P x\n") is None
    assert cri.bulk_closing(clean + b"2026-11-31T08:00:03Z stdout F x\n") is None
