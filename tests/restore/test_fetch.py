"""fetch with injected destinations: interruption leaves nothing, identity is checked."""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from isal import isal_zlib

from archiverd.destinations.base import ObjectVersion, StoredObject
from archiverd.errors import EnvelopeMismatchError, RetryableDestinationError
from archiverd.formats.layout import SegmentDescription, object_key, parse_key
from archiverd.pack import Keyring
from archiverd.restore.fetch import FetchOptions, _gunzip, check_identity, restore_to_dir
from archiverd.restore.listing import Segment
from archiverd.restore.timespec import parse_time
from tests.restore import corpus

START = datetime(2026, 11, 1, tzinfo=UTC)
KEYRING = Keyring.from_raw_keys(b"k" * 32)


class ScriptedDestination:
    """Serves packed bodies; `interrupt` keys write half a body then hang, `flaky` fail once."""

    def __init__(self, objects: dict[str, tuple[bytes, dict[str, str]]]) -> None:
        self.url = "scripted://"
        self.prefix = ""
        self.objects = objects
        self.interrupt: set[str] = set()
        self.flaky: set[str] = set()
        self.downloads: list[str] = []
        self.hanging = asyncio.Event()

    async def download(
        self, key: str, destination: Path, version_id: str | None = None
    ) -> StoredObject:
        self.downloads.append(key)
        body, metadata = self.objects[key]
        if key in self.flaky:
            self.flaky.discard(key)
            raise RetryableDestinationError(f"GET {key}: connection reset")
        if key in self.interrupt:
            destination.write_bytes(body[: len(body) // 2])
            self.hanging.set()
            await asyncio.Event().wait()
        destination.write_bytes(body)
        return StoredObject(key, "v1", len(body), "", metadata)

    async def head(self, key: str, version_id: str | None = None) -> StoredObject | None:
        body, metadata = self.objects[key]
        return StoredObject(key, "v1", len(body), "", metadata)

    async def check(self) -> str:
        return "scripted"

    async def put_file(
        self, key: str, path: Path, metadata: Mapping[str, str], sha256_b64: str
    ) -> StoredObject:
        raise NotImplementedError

    def list_versions(self, prefix: str) -> AsyncIterator[ObjectVersion]:
        raise NotImplementedError

    def list_latest(self, prefix: str) -> AsyncIterator[ObjectVersion]:
        raise NotImplementedError

    async def close(self) -> None:
        return None


def scripted_segment(
    objects: dict[str, tuple[bytes, dict[str, str]]],
    records: corpus.Container,
    seq: int,
    first: datetime,
    *,
    container_id: str,
    container_name: str,
) -> tuple[Segment, bytes]:
    """Segment `seq` of `records`' log lines from `first`, packed and put in `objects` (a
    `ScriptedDestination`'s): its listing, and its plaintext."""
    desc = SegmentDescription(
        host="h",
        container_id=container_id,
        seq=seq,
        first_ts=first,
        last_ts=first + timedelta(minutes=5),
        start_offset=0,
        end_offset=0,
        line_count=3,
        plaintext_sha256="",
        container_name=container_name,
    )
    plain = corpus.segment_records(records, 0, seq, first, desc.last_ts)
    body, metadata = corpus.pack(plain, desc, KEYRING)
    key = object_key("", desc)
    objects[key] = (body, metadata)
    parsed = parse_key("", key)
    assert parsed is not None
    return Segment(key, parsed, "v1", len(body), first, metadata=metadata), plain


def segments(count: int) -> tuple[list[Segment], ScriptedDestination]:
    objects: dict[str, tuple[bytes, dict[str, str]]] = {}
    found = [
        scripted_segment(
            objects,
            corpus.CONTAINERS[0],
            seq,
            START + timedelta(hours=seq),
            container_id="c" * 64,
            container_name="app",
        )[0]
        for seq in range(count)
    ]
    return found, ScriptedDestination(objects)


async def test_an_interrupt_mid_download_leaves_only_complete_files(tmp_path: Path) -> None:
    """Ctrl-C (asyncio.run cancels the main task) while a body is half written: no temp dir,
    partial or body file remains; only complete, verified files."""
    segs, dest = segments(6)
    dest.interrupt.add(segs[3].key)
    out = tmp_path / "out"
    task = asyncio.create_task(
        restore_to_dir(dest, segs, KEYRING, out, FetchOptions(parallel=1), lambda n: None)
    )
    await dest.hanging.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    names = sorted(p.name for p in out.iterdir())
    assert all(not name.startswith(".") for name in names)
    assert [name[-12:] for name in names] == ["00000000.log", "00000001.log", "00000002.log"]
    for path in out.iterdir():
        assert all(json.loads(line)["log"] for line in path.read_bytes().splitlines())


async def test_transient_download_failures_are_retried(tmp_path: Path) -> None:
    """A retryable failure is retried (with the injected delays) and the restore completes."""
    segs, dest = segments(2)
    dest.flaky.add(segs[0].key)
    summary = await restore_to_dir(
        dest, segs, KEYRING, tmp_path, FetchOptions(attempts=2), lambda n: None
    )
    assert (summary.restored, summary.failures) == (2, [])
    assert dest.downloads.count(segs[0].key) == 2


async def test_retries_are_bounded(tmp_path: Path) -> None:
    """With no retries left the failure is reported for that segment and nothing is written."""
    segs, dest = segments(1)
    dest.flaky.add(segs[0].key)
    summary = await restore_to_dir(
        dest, segs, KEYRING, tmp_path / "o", FetchOptions(attempts=1), lambda n: None
    )
    assert summary.restored == 0
    assert [type(exc) for _, exc in summary.failures] == [RetryableDestinationError]
    assert list((tmp_path / "o").iterdir()) == []


def test_identity_check_rejects_metadata_of_another_segment() -> None:
    """Metadata naming another container or first-record time is EnvelopeMismatchError."""
    segs, _ = segments(2)
    meta = dict(segs[0].metadata or {})
    check_identity(segs[0], meta)
    with pytest.raises(EnvelopeMismatchError, match="describes another segment"):
        check_identity(segs[1], meta)
    with pytest.raises(EnvelopeMismatchError, match="container deadbeef"):
        check_identity(segs[0], {**meta, "archiverd-container-id": "deadbeef"})


@given(
    st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    )
)
def test_rfc3339_round_trips(moment: datetime) -> None:
    """Any UTC instant written as RFC 3339 (with Z or +00:00) parses back exactly."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_time(moment.isoformat(), now) == moment
    assert parse_time(moment.isoformat().replace("+00:00", "Z"), now) == moment


def _restored(tmp_path: Path) -> tuple[list[Path], bytes]:
    """Three segments as `get --out -` keeps them, verified gzip streams (one empty, one of
    two members, all larger than a pipe's buffer once gunzipped), and their bytes in order."""
    contents = [b"first line\n" * 10_000, b"", b"second\n" * 30_000]
    members = [[contents[0]], [b""], [contents[2][:100_000], contents[2][100_000:]]]
    paths = []
    for n, parts in enumerate(members):
        path = tmp_path / f"{n}.log.gz"
        path.write_bytes(b"".join(isal_zlib.compress(part, 1, 31) for part in parts))
        paths.append(path)
    return paths, b"".join(contents)


def test_kept_segments_go_to_a_pipe_gunzipped_whole_and_in_order(tmp_path: Path) -> None:
    """`get --out - | reader`: each kept gzip stream (every member) gunzipped, in order,
    after whatever `out` held already."""
    paths, expected = _restored(tmp_path)
    read_end, write_end = os.pipe()
    received = bytearray()
    reader = threading.Thread(target=lambda: received.extend(_drain(read_end)))
    reader.start()
    with os.fdopen(write_end, "wb") as out:
        out.write(b"held\n")  # buffered, not yet written
        _gunzip(paths, out)
    reader.join()
    assert bytes(received) == b"held\n" + expected


def test_kept_segments_are_appended_to_a_file_or_written_to_memory(tmp_path: Path) -> None:
    """`get --out - >> file` and an `out` with no descriptor: the same bytes, after what
    was there."""
    paths, expected = _restored(tmp_path)
    appended = tmp_path / "appended.out"
    appended.write_bytes(b"before\n")
    with appended.open("ab") as out:
        _gunzip(paths, out)
    assert appended.read_bytes() == b"before\n" + expected
    memory = io.BytesIO()
    _gunzip(paths, memory)
    assert memory.getvalue() == expected


def _drain(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as pipe:
        return pipe.read()


def test_a_pipe_whose_reader_left_stops_the_copy_with_broken_pipe(tmp_path: Path) -> None:
    """`get --out - | head -c 100`, the reader gone: the write meets EPIPE and the copy
    stops with BrokenPipeError, which `restore_to_stream` ends quietly on."""
    paths, _ = _restored(tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "wb") as out, pytest.raises(BrokenPipeError):
        _gunzip(paths, out)
