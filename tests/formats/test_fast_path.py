"""The scanners' bulk paths read exactly what the line-by-line reading reads, on any input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from archiverd.formats.records import CriScanner, Cut, DockerScanner, Scanner

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


@settings(max_examples=400, deadline=None)
@given(_chunks(_DOCKER_TOKENS))
def test_docker_bulk_path_reads_as_line_by_line(chunks: list[bytes]) -> None:
    """DockerScanner's bulk path: same cuts, lines, times and bad input as line by line."""
    assert _run(DockerScanner, chunks) == _run(_SlowDocker, chunks)


@settings(max_examples=400, deadline=None)
@given(_chunks(_CRI_TOKENS))
def test_cri_bulk_path_reads_as_line_by_line(chunks: list[bytes]) -> None:
    """CriScanner's bulk path: same cuts, lines, times and bad input as line by line."""
    assert _run(CriScanner, chunks) == _run(_SlowCri, chunks)
