"""Uploader against the file:// destination (and injected faults): order, idempotency, retries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from pathlib import Path

import pytest
import stamina
from prometheus_client import CollectorRegistry
from stamina.instrumentation import RetryDetails, get_on_retry_hooks, set_on_retry_hooks

from archiverd.config import DestinationSettings, ScheduleSettings, Settings
from archiverd.destinations.base import ObjectVersion, StoredObject
from archiverd.destinations.filesystem import FileDestination
from archiverd.errors import PermanentFailure, RetryableFailure
from archiverd.formats.layout import object_key
from archiverd.metrics import Metrics
from archiverd.upload.uploader import Uploader
from tests.fakeclock import FakeClock
from tests.upload.helpers import BASE, MemoryQueue, make_segment


class FlakyDestination:
    """A FileDestination whose next calls fail as scripted (`faults` is consumed in order).

    A fault is ``("put"|"head", error)``, or ``("put-lost", error)``: the PUT is stored, then
    the error is raised as if the response never arrived.
    """

    def __init__(self, inner: FileDestination) -> None:
        self.inner = inner
        self.url = inner.url
        self.prefix = inner.prefix
        self.faults: list[tuple[str, Exception]] = []
        self.puts = 0
        self.first_put_seconds = 0.0
        """How long the first PUT takes before it fails or stores."""

    def _fault(self, op: str) -> Exception | None:
        if self.faults and self.faults[0][0] == op:
            return self.faults.pop(0)[1]
        return None

    async def check(self) -> str:
        return await self.inner.check()

    async def head(self, key: str, version_id: str | None = None) -> StoredObject | None:
        if (error := self._fault("head")) is not None:
            raise error
        return await self.inner.head(key, version_id)

    async def put_file(
        self,
        key: str,
        path: Path,
        metadata: Mapping[str, str],
        sha256_b64: str,
        *,
        resume: bool = False,
    ) -> StoredObject:
        self.puts += 1
        if self.puts == 1 and self.first_put_seconds:
            await asyncio.sleep(self.first_put_seconds)
        if (error := self._fault("put")) is not None:
            raise error
        stored = await self.inner.put_file(key, path, metadata, sha256_b64)
        if (error := self._fault("put-lost")) is not None:
            raise error
        return stored

    def list_versions(self, prefix: str) -> AsyncIterator[ObjectVersion]:
        return self.inner.list_versions(prefix)

    def list_latest(self, prefix: str) -> AsyncIterator[ObjectVersion]:
        return self.inner.list_latest(prefix)

    async def download(
        self, key: str, destination: Path, version_id: str | None = None
    ) -> StoredObject:
        return await self.inner.download(key, destination, version_id)

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(BASE + timedelta(hours=2), auto_advance=True)


def _uploader(dest: object, queue: MemoryQueue, clock: FakeClock, **schedule: int) -> Uploader:
    return Uploader(
        dest,  # type: ignore[arg-type]
        queue,
        Metrics(CollectorRegistry()),
        settings=Settings(schedule=ScheduleSettings(**schedule)),
        clock=clock,
    )


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return value or 0.0


async def _versions(dest: FileDestination) -> list[ObjectVersion]:
    return [v async for v in dest.list_versions("")]


async def test_uploads_oldest_first_and_journals_before_deleting(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Every segment lands once, oldest first; the journal is marked while the file still exists."""
    dest = FileDestination((tmp_path / "bucket").as_uri())
    segments = [make_segment(tmp_path / "spool", seq) for seq in (3, 1, 2)]
    queue = MemoryQueue(segments)
    uploader = _uploader(dest, queue, clock)
    summary = await uploader.upload_pending()
    assert (summary.uploaded, summary.skipped_existing, summary.failed) == (3, 0, 0)
    assert summary.bytes == sum(s.packed_bytes for s in segments)
    assert list(queue.uploaded) == [1, 2, 3]
    assert queue.spool_existed_at_mark == {1: True, 2: True, 3: True}
    assert not any(s.spool_path.exists() for s in segments)
    versions = await _versions(dest)
    assert sorted(v.key for v in versions) == sorted(
        object_key("", s.description) for s in segments
    )
    for segment in segments:
        key, version_id, sha = queue.uploaded[segment.segment_id]
        stored = await dest.head(key)
        assert stored is not None
        assert (stored.version_id, stored.sha256_b64) == (version_id, sha)
        assert stored.metadata["archiverd-range"] == segment.metadata["archiverd-range"]
    assert _sample(uploader.metrics, "archiverd_segments_uploaded_total") == 3


async def test_reupload_after_crash_makes_no_second_version(
    tmp_path: Path, clock: FakeClock
) -> None:
    """An object stored before a crash (journal not marked) is found by HEAD and recorded."""
    dest = FileDestination((tmp_path / "bucket").as_uri())
    segment = make_segment(tmp_path / "spool", 1)
    key = object_key("", segment.description)
    first = await dest.put_file(
        key, segment.spool_path, segment.metadata, segment.packed_sha256_b64
    )
    queue = MemoryQueue([segment])
    summary = await _uploader(dest, queue, clock).upload_pending()
    assert (summary.uploaded, summary.skipped_existing) == (0, 1)
    assert queue.uploaded[1] == (key, first.version_id, segment.packed_sha256_b64)
    assert len(await _versions(dest)) == 1
    assert not segment.spool_path.exists()


async def test_same_plaintext_packed_twice_counts_as_existing(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A segment re-packed after a crash (new ciphertext, same plaintext) is not stored twice."""
    dest = FileDestination((tmp_path / "bucket").as_uri())
    earlier = make_segment(tmp_path / "old", 1)
    key = object_key("", earlier.description)
    await dest.put_file(key, earlier.spool_path, earlier.metadata, earlier.packed_sha256_b64)
    repacked = make_segment(tmp_path / "spool", 1)  # same description, other random body
    assert repacked.packed_sha256_b64 != earlier.packed_sha256_b64
    queue = MemoryQueue([repacked])
    summary = await _uploader(dest, queue, clock).upload_pending()
    assert summary.skipped_existing == 1
    assert queue.uploaded[1][2] == earlier.packed_sha256_b64
    assert len(await _versions(dest)) == 1


async def test_conflicting_object_keeps_the_segment_spooled(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A different object under the key fails the segment (conflict), keeps its file, goes on."""
    dest = FileDestination((tmp_path / "bucket").as_uri())
    other = make_segment(tmp_path / "old", 1, plaintext_sha256="0" * 64)
    ours = make_segment(tmp_path / "spool", 1)
    later = make_segment(tmp_path / "spool", 2)
    await dest.put_file(
        object_key("", other.description), other.spool_path, other.metadata, other.packed_sha256_b64
    )
    queue = MemoryQueue([ours, later])
    uploader = _uploader(dest, queue, clock)
    summary = await uploader.upload_pending()
    assert (summary.uploaded, summary.failed) == (1, 1)
    assert "already holds a different object" in summary.errors[0]
    assert list(queue.uploaded) == [2]
    assert ours.spool_path.exists()
    assert _sample(uploader.metrics, "archiverd_upload_failures_total", reason="conflict") == 1


async def test_retries_back_off_with_jitter(tmp_path: Path, clock: FakeClock) -> None:
    """Throttling and resets are retried with growing, jittered delays, then succeed."""
    dest = FlakyDestination(FileDestination((tmp_path / "bucket").as_uri()))
    dest.faults = [
        ("put", RetryableFailure("503 SlowDown", "throttled")),
        ("head", RetryableFailure("reset", "network")),
        ("put", RetryableFailure("500", "server_error")),
    ]
    segment = make_segment(tmp_path / "spool", 1)
    queue = MemoryQueue([segment])
    base = 0.02  # seconds: stamina really waits here (its test mode, on elsewhere, would not)
    uploader = Uploader(
        dest,  # type: ignore[arg-type]
        queue,
        Metrics(CollectorRegistry()),
        settings=Settings(destination=DestinationSettings(backoff_initial_seconds=base)),
        clock=clock,
    )
    retries: list[RetryDetails] = []
    hooks = get_on_retry_hooks()
    set_on_retry_hooks([retries.append])
    try:
        with stamina.set_testing(False):
            summary = await uploader.upload_pending()
    finally:
        set_on_retry_hooks(hooks)
    assert summary.uploaded == 1
    delays = [retry.wait_for for retry in retries]
    assert len(delays) == 3
    for attempt, delay in enumerate(delays, start=1):
        cap = base * 2 ** (attempt - 1)
        assert cap / 2 <= delay <= cap
    assert _sample(uploader.metrics, "archiverd_upload_retries_total") == 3
    assert _sample(uploader.metrics, "archiverd_upload_failures_total", reason="throttled") == 1
    assert len(await _versions(dest.inner)) == 1


async def test_lost_put_response_is_not_uploaded_twice(tmp_path: Path, clock: FakeClock) -> None:
    """A PUT that succeeded but whose response was lost is found by the retry's HEAD."""
    dest = FlakyDestination(FileDestination((tmp_path / "bucket").as_uri()))
    dest.faults = [("put-lost", RetryableFailure("connection reset", "network"))]
    segment = make_segment(tmp_path / "spool", 1)
    queue = MemoryQueue([segment])
    summary = await _uploader(dest, queue, clock).upload_pending()
    assert (summary.uploaded, summary.skipped_existing, summary.failed) == (0, 1, 0)
    assert dest.puts == 1
    versions = await _versions(dest.inner)
    assert len(versions) == 1
    assert queue.uploaded[1][1] == versions[0].version_id


async def test_exhausted_retries_stop_the_pass_and_keep_the_spool(
    tmp_path: Path, clock: FakeClock
) -> None:
    """After max_attempts the segment fails, the pass stops, and nothing leaves the spool."""
    dest = FlakyDestination(FileDestination((tmp_path / "bucket").as_uri()))
    dest.faults = [("put", RetryableFailure("503", "throttled"))] * 3
    segments = [make_segment(tmp_path / "spool", seq) for seq in (1, 2)]
    queue = MemoryQueue(segments)
    uploader = Uploader(
        dest,  # type: ignore[arg-type]
        queue,
        Metrics(CollectorRegistry()),
        settings=Settings(destination=DestinationSettings(max_attempts=3)),
        clock=clock,
    )
    summary = await uploader.upload_pending()
    assert (summary.uploaded, summary.failed) == (0, 1)
    assert queue.uploaded == {}
    assert all(s.spool_path.exists() for s in segments)
    assert dest.puts == 3
    again = await uploader.upload_pending()  # the next pass picks them up
    assert again.uploaded == 2


async def test_permanent_destination_failure_stops_the_pass(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Access denied is not retried; the pass stops and the failure is counted by reason."""
    dest = FlakyDestination(FileDestination((tmp_path / "bucket").as_uri()))
    dest.faults = [("put", PermanentFailure("403 AccessDenied", "access_denied"))]
    segments = [make_segment(tmp_path / "spool", seq) for seq in (1, 2)]
    queue = MemoryQueue(segments)
    uploader = _uploader(dest, queue, clock)
    summary = await uploader.upload_pending()
    assert (summary.uploaded, summary.failed) == (0, 1)
    assert dest.puts == 1
    assert clock.sleeps == []
    assert all(s.spool_path.exists() for s in segments)
    assert _sample(uploader.metrics, "archiverd_upload_failures_total", reason="access_denied") == 1


async def test_backlog_drains_at_the_configured_rate(tmp_path: Path, clock: FakeClock) -> None:
    """With max_backlog_bytes_per_second, the pass paces itself by the bytes sent."""
    dest = FileDestination((tmp_path / "bucket").as_uri())
    segments = [make_segment(tmp_path / "spool", seq, size=500) for seq in (1, 2, 3)]
    queue = MemoryQueue(segments)
    start = clock.now()
    summary = await _uploader(
        dest, queue, clock, max_backlog_bytes_per_second=1000
    ).upload_pending()
    assert summary.uploaded == 3
    assert [(t - start).total_seconds() for t in clock.sleeps] == [0.5, 1.0, 1.5]


async def test_oldest_pending_age_metric(tmp_path: Path, clock: FakeClock) -> None:
    """After a failed pass the oldest pending segment's age is exported."""
    dest = FlakyDestination(FileDestination((tmp_path / "bucket").as_uri()))
    dest.faults = [("put", PermanentFailure("403", "access_denied"))]
    segment = make_segment(tmp_path / "spool", 1)
    uploader = _uploader(dest, MemoryQueue([segment]), clock)
    await uploader.upload_pending()
    age = _sample(uploader.metrics, "archiverd_oldest_pending_segment_age_seconds")
    assert age == (clock.now() - segment.sealed_at).total_seconds()
    await uploader.upload_pending()
    assert _sample(uploader.metrics, "archiverd_oldest_pending_segment_age_seconds") == 0


async def test_retries_are_bounded_in_time_as_well_as_count(
    tmp_path: Path, clock: FakeClock
) -> None:
    """With attempts to spare, retrying one segment stops at retry_timeout_seconds.

    500 attempts 10 ms apart would take 5 s; the bound is 1 s. The first PUT takes 100 ms,
    as a file:// fsync on a busy CI disk can: with the bound at 50 ms, as it was, no second
    attempt came and the test failed now and then."""
    dest = FlakyDestination(FileDestination((tmp_path / "bucket").as_uri()))
    dest.first_put_seconds = 0.1
    dest.faults = [("put", RetryableFailure("503", "throttled"))] * 500
    segments = [make_segment(tmp_path / "spool", 1)]
    queue = MemoryQueue(segments)
    limits = DestinationSettings(
        max_attempts=500, retry_timeout_seconds=1.0,
        backoff_initial_seconds=0.01, backoff_max_seconds=0.01,
    )  # fmt: skip
    uploader = Uploader(
        dest,  # type: ignore[arg-type]
        queue,
        Metrics(CollectorRegistry()),
        settings=Settings(destination=limits),
        clock=clock,
    )
    with stamina.set_testing(False):  # real (tiny) waits: the time bound is what is tested
        summary = await uploader.upload_pending()
    assert (summary.uploaded, summary.failed) == (0, 1)
    assert 1 < dest.puts < 500
    assert queue.uploaded == {}
    assert segments[0].spool_path.exists()
