"""A SeaweedFS killed (SIGKILL) in the middle of a multipart upload and restarted on the same
ports and data: the segment ends up stored exactly once, resumed, with nothing leaked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from prometheus_client import CollectorRegistry

from archiverd.config import DestinationSettings, Settings
from archiverd.metrics import Metrics
from archiverd.upload.uploader import Uploader
from tests import servers
from tests.destinations.s3util import MIB, incomplete_uploads, s3_destination, versions_of
from tests.fakeclock import FakeClock
from tests.faultproxy import Fault, FaultProxy
from tests.upload.helpers import BASE, MemoryQueue, make_segment

pytestmark = [pytest.mark.s3, pytest.mark.slow]


@pytest.fixture
def private_weed(tmp_path: Path) -> Iterator[tuple[list[servers.S3Server], Path]]:
    """A SeaweedFS of this test's own (the shared one must not be killed); list holds the
    current incarnation so the test can replace it after a restart."""
    data = tmp_path / "weed"
    current = [servers.start_seaweedfs(data)]
    yield current, data
    servers.stop(current[0])


def _uploader(server: servers.S3Server, bucket: str, proxy: FaultProxy, queue: MemoryQueue,
              attempts: int) -> tuple[Uploader, object]:  # fmt: skip
    dest = s3_destination(server, bucket, endpoint_url=proxy.endpoint_url, max_concurrency=1)
    uploader = Uploader(
        dest, queue, Metrics(CollectorRegistry()),
        settings=Settings(destination=DestinationSettings(max_attempts=attempts)),
        clock=FakeClock(BASE, auto_advance=True), host="host-a",
    )  # fmt: skip
    return uploader, dest


async def test_server_killed_mid_multipart_then_restarted(
    private_weed: tuple[list[servers.S3Server], Path], tmp_path: Path
) -> None:
    """Part 1 lands, the server dies; after its restart a new process resumes the upload."""
    current, data = private_weed
    server = current[0]
    bucket = server.make_bucket()
    segment = make_segment(tmp_path / "spool", 1, size=24 * MIB)
    queue = MemoryQueue([segment])
    upstream = urlparse(server.endpoint_url)
    assert upstream.hostname is not None
    assert upstream.port is not None
    async with FaultProxy(upstream.hostname, upstream.port) as proxy:
        proxy.add(Fault("hook", "PUT", target="partNumber=1", hook=lambda: servers.kill(server)))
        first, dest = _uploader(server, bucket, proxy, queue, attempts=2)
        summary = await first.upload_pending()
        await dest.close()  # type: ignore[attr-defined]
        assert (summary.uploaded, summary.failed) == (0, 1)
        assert segment.spool_path.exists()
        assert queue.uploaded == {}

        current[0] = servers.restart_seaweedfs(server, data)
        second, dest = _uploader(current[0], bucket, proxy, queue, attempts=8)
        summary = await second.upload_pending()
        await dest.close()  # type: ignore[attr-defined]
    assert (summary.uploaded + summary.skipped_existing, summary.failed) == (1, 0)
    assert proxy.faults[0].times == 0  # the server really was killed after part 1
    assert (
        len(proxy.requests("PUT", "partNumber=1")) == 1
    )  # the part stored before the crash was reused, not sent again
    versions = versions_of(current[0], bucket, "arch/")
    assert len(versions) == 1
    assert queue.uploaded[1][1] == versions[0]["VersionId"]
    assert incomplete_uploads(current[0], bucket) == []
    assert not segment.spool_path.exists()
