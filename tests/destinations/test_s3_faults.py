"""Faults between archiverd and SeaweedFS, injected by tests/faultproxy.py: every segment
still ends up in the bucket exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from prometheus_client import CollectorRegistry

from archiverd.config import DestinationSettings, Settings
from archiverd.destinations.s3 import S3Destination
from archiverd.errors import RetryableDestinationError, reason_of
from archiverd.formats.layout import object_key
from archiverd.metrics import Metrics
from archiverd.upload.uploader import Uploader
from tests.destinations.s3util import MIB, incomplete_uploads, s3_destination, versions_of
from tests.fakeclock import FakeClock
from tests.faultproxy import Fault, FaultProxy
from tests.servers import S3Server
from tests.upload.helpers import BASE, MemoryQueue, Segment, make_segment

pytestmark = [pytest.mark.s3, pytest.mark.slow]


@pytest.fixture
async def proxy(seaweedfs: S3Server) -> AsyncIterator[FaultProxy]:
    upstream = urlparse(seaweedfs.endpoint_url)
    assert upstream.hostname is not None
    assert upstream.port is not None
    async with FaultProxy(upstream.hostname, upstream.port) as running:
        yield running


def _through(proxy: FaultProxy, server: S3Server, bucket: str, **settings: Any) -> S3Destination:
    return s3_destination(server, bucket, endpoint_url=proxy.endpoint_url, **settings)


def _uploader(dest: S3Destination, queue: MemoryQueue, attempts: int = 8) -> Uploader:
    return Uploader(
        dest, queue, Metrics(CollectorRegistry()),
        settings=Settings(destination=DestinationSettings(max_attempts=attempts)),
        clock=FakeClock(BASE, auto_advance=True), host="host-a",
    )  # fmt: skip


def _failures(uploader: Uploader, reason: str) -> float:
    value = uploader.metrics.registry.get_sample_value(
        "archiverd_upload_failures_total", {"reason": reason}
    )
    return value or 0.0


def _assert_exactly_once(
    server: S3Server, bucket: str, segments: list[Segment], queue: MemoryQueue
) -> None:
    versions = versions_of(server, bucket, "arch/")
    keys = [v["Key"] for v in versions]
    assert sorted(keys) == sorted(object_key("arch/", s.description) for s in segments)
    by_key = {v["Key"]: v["VersionId"] for v in versions}
    for segment in segments:
        key, version_id, _sha = queue.uploaded[segment.segment_id]
        assert by_key[key] == version_id
        assert not segment.spool_path.exists()


async def test_throttling_and_server_error_bursts(
    seaweedfs: S3Server, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Bursts of 503 SlowDown and 500 on PUT are retried; each segment is stored once."""
    bucket = seaweedfs.make_bucket()
    segments = [make_segment(tmp_path / "spool", seq) for seq in (1, 2, 3)]
    queue = MemoryQueue(list(segments))
    proxy.add(Fault("status", "PUT", times=3, status=503))
    proxy.add(Fault("status", "PUT", times=2, status=500))
    async with _through(proxy, seaweedfs, bucket) as dest:
        uploader = _uploader(dest, queue)
        summary = await uploader.upload_pending()
    assert (summary.uploaded, summary.failed) == (3, 0)
    assert _failures(uploader, "throttled") == 3
    assert _failures(uploader, "server_error") == 2
    assert [f.times for f in proxy.faults] == [0, 0]
    _assert_exactly_once(seaweedfs, bucket, segments, queue)


async def test_connection_resets_before_and_after_the_server_applied_the_put(
    seaweedfs: S3Server, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Resets (two in a row, so aiohttp's one silent retry cannot hide them), including ones
    after the server stored the object, never produce a second version."""
    bucket = seaweedfs.make_bucket()
    segments = [make_segment(tmp_path / "spool", seq) for seq in (1, 2)]
    queue = MemoryQueue(list(segments))
    proxy.add(Fault("reset", "PUT", times=2))
    proxy.add(Fault("reset_after", "PUT", times=3))
    async with _through(proxy, seaweedfs, bucket) as dest:
        uploader = _uploader(dest, queue)
        summary = await uploader.upload_pending()
    assert summary.failed == 0
    assert summary.uploaded + summary.skipped_existing == 2
    assert summary.skipped_existing >= 1  # a lost response was recognised by HEAD
    assert [f.times for f in proxy.faults] == [0, 0]
    assert _failures(uploader, "network") >= 1
    _assert_exactly_once(seaweedfs, bucket, segments, queue)


async def test_response_delayed_past_the_read_timeout(
    seaweedfs: S3Server, proxy: FaultProxy, tmp_path: Path
) -> None:
    """A PUT answered after the read timeout counts as a timeout; the retry finds the object."""
    bucket = seaweedfs.make_bucket()
    segments = [make_segment(tmp_path / "spool", 1)]
    queue = MemoryQueue(list(segments))
    proxy.add(Fault("delay", "PUT", times=2, seconds=2.5))
    async with _through(proxy, seaweedfs, bucket, read_timeout_seconds=1.0) as dest:
        uploader = _uploader(dest, queue)
        summary = await uploader.upload_pending()
    assert summary.failed == 0
    assert _failures(uploader, "timeout") >= 1
    _assert_exactly_once(seaweedfs, bucket, segments, queue)


async def test_truncated_download_is_an_error_then_retried(
    seaweedfs: S3Server, proxy: FaultProxy, tmp_path: Path
) -> None:
    """A GET body cut in half raises a retryable error and leaves no file; a retry succeeds."""
    bucket = seaweedfs.make_bucket()
    segment = make_segment(tmp_path / "spool", 1, size=300_000)
    key = "arch/k.log.gz.enc"
    out = tmp_path / "out"
    async with _through(proxy, seaweedfs, bucket) as dest:
        await dest.put_file(key, segment.spool_path, {}, segment.packed_sha256_b64)
        proxy.add(Fault("truncate", "GET", target=key, times=2))
        for _ in range(2):
            with pytest.raises(RetryableDestinationError) as info:
                await dest.download(key, out)
            assert reason_of(info.value) in ("truncated", "network")
            assert not out.exists()
            assert list(tmp_path.glob(".out.part-*")) == []
        await dest.download(key, out)
    assert out.read_bytes() == segment.spool_path.read_bytes()


async def test_multipart_survives_part_faults_and_a_truncated_completion(
    seaweedfs: S3Server, proxy: FaultProxy, tmp_path: Path
) -> None:
    """503s and resets on parts and a truncated CompleteMultipartUpload answer still give one
    version, resumed (no part sent twice needlessly) and no leaked upload."""
    bucket = seaweedfs.make_bucket()
    segments = [make_segment(tmp_path / "spool", 1, size=20 * MIB)]
    queue = MemoryQueue(list(segments))
    proxy.add(Fault("status", "PUT", target="partNumber=2", times=2, status=503))
    proxy.add(Fault("reset", "PUT", target="partNumber=3", times=2))
    proxy.add(Fault("truncate", "POST", target="uploadId=", times=1))
    async with _through(proxy, seaweedfs, bucket, max_concurrency=1) as dest:
        uploader = _uploader(dest, queue)
        summary = await uploader.upload_pending()
    assert summary.failed == 0
    assert [f.times for f in proxy.faults] == [0, 0, 0]
    sent = [t for (_m, t, fault) in proxy.requests("PUT", "partNumber=1") if not fault]
    assert len(sent) == 1  # part 1 was stored once and reused by every retry
    assert len(proxy.requests("POST", "uploads")) == 1  # one multipart upload, resumed
    _assert_exactly_once(seaweedfs, bucket, segments, queue)
    assert incomplete_uploads(seaweedfs, bucket) == []


async def test_resume_reuses_parts_left_by_a_previous_process(
    seaweedfs: S3Server, proxy: FaultProxy, tmp_path: Path
) -> None:
    """An incomplete upload of the key (part 1 done) by a process that died with the segment
    journaled 'uploading' is resumed: only parts 2 and 3 are sent."""
    bucket = seaweedfs.make_bucket()
    segment = replace(make_segment(tmp_path / "spool", 1, size=20 * MIB), resuming=True)
    key = object_key("arch/", segment.description)
    client = seaweedfs.boto3_client()
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")[
        "UploadId"
    ]
    with segment.spool_path.open("rb") as src:
        client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1,
                           Body=src.read(8 * MIB), ChecksumAlgorithm="SHA256")  # fmt: skip
    queue = MemoryQueue([segment])
    async with _through(proxy, seaweedfs, bucket) as dest:
        summary = await _uploader(dest, queue).upload_pending()
    assert summary.uploaded == 1
    parts = sorted(t.split("partNumber=")[1].split("&")[0] for _m, t, _f in proxy.requests("PUT"))
    assert parts == ["2", "3"]
    assert proxy.requests("POST", "uploads") == []
    _assert_exactly_once(seaweedfs, bucket, [segment], queue)
    assert incomplete_uploads(seaweedfs, bucket) == []


async def test_server_without_if_none_match_support(
    seaweedfs: S3Server, proxy: FaultProxy, tmp_path: Path
) -> None:
    """A server answering 501 to If-None-Match gets plain PUTs from then on; still one version."""
    bucket = seaweedfs.make_bucket()
    segments = [make_segment(tmp_path / "spool", seq) for seq in (1, 2)]
    queue = MemoryQueue(list(segments))
    proxy.add(Fault("status", "PUT", header="if-none-match", times=100, status=501))
    async with _through(proxy, seaweedfs, bucket) as dest:
        summary = await _uploader(dest, queue).upload_pending()
        again = await _uploader(dest, queue).upload_pending()
    assert (summary.uploaded, summary.failed) == (2, 0)
    assert again.uploaded == 0
    assert proxy.faults[0].times == 99  # refused once, then never sent again
    _assert_exactly_once(seaweedfs, bucket, segments, queue)
