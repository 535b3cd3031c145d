"""`get --out -`'s writer thread: every chunk in order, and its failures raised where the
caller writes, never a hang."""

from __future__ import annotations

import io
import os
import threading

import pytest

from archiverd.restore.writer import BEHIND_BYTES, BackgroundWriter, writing_behind


def test_every_chunk_arrives_in_order_and_is_flushed_on_exit() -> None:
    """Bytes and memoryviews, many more than may wait, one larger than that alone: all of
    them, in order."""
    out = io.BytesIO()
    chunks = [bytes([n % 251]) * (n * 20_000 + 1) for n in range(100)]
    chunks.insert(50, b"big" * BEHIND_BYTES)
    with writing_behind(out) as sink:
        for n, chunk in enumerate(chunks):
            assert sink.write(memoryview(chunk) if n % 2 else chunk) == len(chunk)
        sink.write(b"")
    assert out.getvalue() == b"".join(chunks)


class _FailingAfter(io.RawIOBase):
    """A sink whose write number `n` (from 0) and later ones fail with `error`."""

    def __init__(self, n: int, error: OSError) -> None:
        self.n, self.error, self.got = n, error, bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        if self.n == 0:
            raise self.error
        self.n -= 1
        view = memoryview(data)  # type: ignore[arg-type]
        self.got += view
        return len(view)


def test_a_failed_write_is_raised_by_a_later_write_and_nothing_after_it_is_written() -> None:
    """A full disk on the third chunk: a later `write` raises that very error (however
    many chunks wait), and no chunk after the failed one reaches the sink."""
    sink = _FailingAfter(2, OSError(28, "No space left on device"))
    writer = BackgroundWriter(sink)  # type: ignore[arg-type]

    def write_many() -> None:
        for n in range(1000):  # would hang if the failed writer stopped taking chunks
            writer.write(bytes([n % 256]) * (BEHIND_BYTES // 3))

    with pytest.raises(OSError, match="No space left on device") as raised:
        write_many()
    assert raised.value is sink.error
    writer.close(check=False)
    third = BEHIND_BYTES // 3
    assert sink.got == b"\0" * third + b"\1" * third


def test_a_failure_on_the_last_chunks_is_raised_on_exit() -> None:
    """The reader of a pipe gone while the last chunks wait: leaving the block raises
    BrokenPipeError, which `get` ends quietly on."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with (
        os.fdopen(write_end, "wb", buffering=0) as out,
        pytest.raises(BrokenPipeError),
        writing_behind(out) as sink,
    ):
        sink.write(b"x" * 10)


def test_an_error_of_the_caller_wins_and_the_writer_stops() -> None:
    """The block fails (e.g. a corrupt temp file): its error goes on, not the writer's, and
    no writer thread is left behind."""
    sink = _FailingAfter(0, OSError(5, "Input/output error"))
    before = threading.active_count()

    def fail_while_writing() -> None:
        with writing_behind(sink) as out:  # type: ignore[arg-type]
            out.write(b"lost")
            raise ValueError("caller")

    with pytest.raises(ValueError, match="caller"):
        fail_while_writing()
    assert threading.active_count() == before
