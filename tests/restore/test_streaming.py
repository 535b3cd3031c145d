"""Decrypting while downloading: nothing unverified is released, failures stop both ends."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from archiverd.destinations.base import StoredObject
from archiverd.errors import PermanentFailure, RetryableFailure, TamperedError, WrongKeyError
from archiverd.pack import Keyring, pack_stream, unpack_to_file
from archiverd.restore.streaming import DEPTH, BodyReader, ChunkPipe, stream_object

KEYRING = Keyring.from_raw_keys(b"s" * 32)
CHUNK = 64 * 1024


def _packed(size: int) -> tuple[bytes, bytes, dict[str, str]]:
    """Plaintext that barely compresses (so the body is many chunks), its body, envelope."""
    plain = os.urandom(size // 2).hex().encode()
    body = io.BytesIO()
    result = pack_stream(io.BytesIO(plain), body, KEYRING)
    return plain, body.getvalue(), result.envelope


class FakeBucket:
    """One object served in `CHUNK`s; `failures` says how each attempt ends early."""

    def __init__(self, body: bytes, metadata: Mapping[str, str], failures: list[Exception]):
        self.body = body
        self.metadata = dict(metadata)
        self.failures = failures
        self.attempts = 0
        self.served = 0

    @asynccontextmanager
    async def reading(
        self, key: str, version_id: str | None = None
    ) -> AsyncIterator[tuple[StoredObject, AsyncIterator[bytes]]]:
        self.attempts += 1
        failure = self.failures.pop(0) if self.failures else None
        stored = StoredObject(key, "v1", len(self.body), "", self.metadata)
        yield stored, self._chunks(failure)

    async def _chunks(self, failure: Exception | None) -> AsyncIterator[bytes]:
        for start in range(0, len(self.body), CHUNK):
            if failure is not None and start >= len(self.body) // 2:
                raise failure
            self.served += 1
            yield self.body[start : start + CHUNK]
            await asyncio.sleep(0)


def _unpack_into(dst: Path) -> object:
    def work(pipe: ChunkPipe, metadata: Mapping[str, str]) -> str:
        return unpack_to_file(pipe, metadata, dst, KEYRING).plaintext_sha256  # type: ignore[arg-type]

    return work


def _stream(bucket: FakeBucket, dst: Path, attempts: int = 3) -> tuple[dict[str, str], str]:
    assert isinstance(bucket, BodyReader)
    return asyncio.run(
        stream_object(bucket, "k", None, _unpack_into(dst), None, attempts=attempts)  # type: ignore[arg-type]
    )


def test_a_streamed_object_is_the_plaintext(tmp_path: Path) -> None:
    """Many chunks through the pipe: the plaintext arrives whole and its hash is returned."""
    plain, body, envelope = _packed(3 << 20)
    bucket = FakeBucket(body, envelope, [])
    metadata, digest = _stream(bucket, tmp_path / "out.log")
    assert (tmp_path / "out.log").read_bytes() == plain
    assert digest == hashlib.sha256(plain).hexdigest()
    assert metadata == envelope
    assert bucket.served == -(-len(body) // CHUNK)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.log"]


def test_a_short_transfer_is_retried_and_nothing_is_kept_from_it(tmp_path: Path) -> None:
    """The body breaks off halfway (retryable): the worker's partial output is removed and
    the whole object read again."""
    plain, body, envelope = _packed(2 << 20)
    bucket = FakeBucket(body, envelope, [RetryableFailure("GET: got half", "truncated")])
    _stream(bucket, tmp_path / "out.log")
    assert bucket.attempts == 2
    assert (tmp_path / "out.log").read_bytes() == plain
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.log"]


def test_a_failed_download_stops_the_worker_and_keeps_nothing(tmp_path: Path) -> None:
    """A permanent failure mid-body: raised as is; no output, no temp file."""
    _, body, envelope = _packed(2 << 20)
    bucket = FakeBucket(body, envelope, [PermanentFailure("GET: access denied", "other")])
    with pytest.raises(PermanentFailure, match="access denied"):
        _stream(bucket, tmp_path / "out.log")
    assert bucket.attempts == 1
    assert list(tmp_path.iterdir()) == []


def test_a_tampered_streamed_body_releases_nothing(tmp_path: Path) -> None:
    """A flipped byte early in a many-chunk body: TamperedError, no plaintext file at all."""
    _, body, envelope = _packed(3 << 20)
    damaged = body[:1000] + bytes([body[1000] ^ 1]) + body[1001:]
    with pytest.raises(TamperedError):
        _stream(FakeBucket(damaged, envelope, []), tmp_path / "out.log")
    assert list(tmp_path.iterdir()) == []


def test_a_worker_that_fails_at_once_stops_the_download(tmp_path: Path) -> None:
    """A wrong key fails before the body is read: the download stops (no hang, no full
    read), nothing is written."""
    _, body, envelope = _packed(4 << 20)
    other = Keyring.from_raw_keys(b"o" * 32)
    bucket = FakeBucket(body, envelope, [])

    def work(pipe: ChunkPipe, metadata: Mapping[str, str]) -> str:
        return unpack_to_file(pipe, metadata, tmp_path / "out.log", other).plaintext_sha256  # type: ignore[arg-type]

    with pytest.raises(WrongKeyError):
        asyncio.run(stream_object(bucket, "k", None, work, None, attempts=3))
    assert bucket.served <= DEPTH + 2 < len(body) // CHUNK
    assert list(tmp_path.iterdir()) == []


def test_a_refused_identity_reads_no_body(tmp_path: Path) -> None:
    """`check` raising on the metadata: raised, and no chunk is read or written."""
    _, body, envelope = _packed(1 << 20)
    bucket = FakeBucket(body, envelope, [])

    def refuse(metadata: Mapping[str, str]) -> None:
        raise PermanentFailure("not this segment", "other")

    with pytest.raises(PermanentFailure, match="not this segment"):
        asyncio.run(
            stream_object(
                bucket,
                "k",
                None,
                _unpack_into(tmp_path / "out.log"),  # type: ignore[arg-type]
                None,
                attempts=3,
                check=refuse,
            )
        )
    assert (bucket.served, list(tmp_path.iterdir())) == (0, [])


def test_an_interrupt_mid_body_stops_the_worker_and_keeps_nothing(tmp_path: Path) -> None:
    """Cancelled (Ctrl-C) while the body still arrives: the worker is stopped before the
    cancellation goes on, and leaves no file behind."""
    _, body, envelope = _packed(2 << 20)
    started = asyncio.Event()

    class Stalling(FakeBucket):
        async def _chunks(self, failure: Exception | None) -> AsyncIterator[bytes]:
            yield self.body[:CHUNK]
            started.set()
            await asyncio.Event().wait()  # the network stalls

    async def go() -> None:
        task = asyncio.create_task(
            stream_object(
                Stalling(body, envelope, []),
                "k",
                None,
                _unpack_into(tmp_path / "out.log"),  # type: ignore[arg-type]
                None,
                attempts=1,
            )
        )
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert list(tmp_path.iterdir()) == []  # already: the worker was waited for

    asyncio.run(go())
