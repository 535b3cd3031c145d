"""Upload-time failures on a real S3 server: permanent ones are tried once, the spool keeps all."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from archiverd.config import DestinationSettings, Settings
from archiverd.metrics import Metrics
from archiverd.upload.uploader import Uploader
from tests.destinations.s3util import s3_destination
from tests.fakeclock import FakeClock
from tests.servers import S3Server
from tests.upload.helpers import BASE, MemoryQueue, make_segment

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels or None) or 0.0


async def _pass(server: S3Server, bucket: str, tmp_path: Path, **settings: str) -> tuple[
    Uploader, MemoryQueue, list[Path], str
]:  # fmt: skip
    destination = s3_destination(server, bucket, **settings)
    segments = [make_segment(tmp_path / "spool", seq) for seq in (1, 2, 3)]
    queue = MemoryQueue(segments)
    uploader = Uploader(
        destination,
        queue,
        Metrics(CollectorRegistry()),
        settings=Settings(destination=DestinationSettings(max_attempts=6)),
        clock=FakeClock(BASE + timedelta(hours=2), auto_advance=True),
    )
    try:
        summary = await uploader.upload_pending()
    finally:
        await destination.close()
    assert (summary.uploaded, summary.failed) == (0, 1)
    return uploader, queue, [s.spool_path for s in segments], summary.errors[0]


async def test_sse_kms_without_server_kms_is_tried_once(
    seaweedfs: S3Server, tmp_path: Path
) -> None:
    """A server that fails every SSE-KMS write: one attempt, reason kms, the spool keeps all."""
    bucket = seaweedfs.make_bucket()
    uploader, queue, spooled, error = await _pass(
        seaweedfs, bucket, tmp_path, sse_kms_key_id="alias/archive"
    )
    assert _sample(uploader.metrics, "archiverd_upload_retries_total") == 0
    assert _sample(uploader.metrics, "archiverd_upload_failures_total", reason="kms") == 1
    assert "destination.sse_kms_key_id" in error
    assert queue.uploaded == {}
    assert all(path.exists() for path in spooled)


async def test_bucket_policy_denial_is_tried_once(seaweedfs: S3Server, tmp_path: Path) -> None:
    """A bucket policy denying the PUT: one attempt, reason access_denied, spool intact."""
    bucket = seaweedfs.make_bucket()
    condition = {"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}
    policy = {"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyUnencrypted", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/*", "Condition": condition}]}  # fmt: skip
    seaweedfs.boto3_client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    uploader, queue, spooled, error = await _pass(seaweedfs, bucket, tmp_path)
    assert _sample(uploader.metrics, "archiverd_upload_retries_total") == 0
    assert _sample(uploader.metrics, "archiverd_upload_failures_total", reason="access_denied") == 1
    assert "s3:PutObject" in error
    assert queue.uploaded == {}
    assert all(path.exists() for path in spooled)
