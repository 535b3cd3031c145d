"""S3Destination against moto: SSE-KMS headers on single and multipart uploads."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from urllib.parse import urlparse

import aiobotocore.session
import pytest
from prometheus_client import CollectorRegistry

from archiverd.config import Settings
from archiverd.errors import PermanentDestinationError, reason_of
from archiverd.metrics import Metrics
from archiverd.upload.uploader import Uploader
from tests.destinations.s3util import MIB, aws, s3_destination, versions_of
from tests.fakeclock import FakeClock
from tests.faultproxy import Fault, FaultProxy
from tests.servers import S3Server
from tests.upload.helpers import BASE, MemoryQueue, make_segment

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def _body(tmp_path: Path, size: int) -> tuple[Path, str]:
    data = os.urandom(size)
    path = tmp_path / f"body-{size}"
    path.write_bytes(data)
    return path, base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.fixture
def kms_key(moto_server: S3Server) -> str:
    """The ARN of a fresh KMS key in moto."""
    return str(moto_server.boto3_client("kms").create_key()["KeyMetadata"]["Arn"])


@pytest.mark.parametrize("size", [200_000, 20 * MIB], ids=["put", "multipart"])
async def test_sse_kms_headers_reach_the_object(
    moto_server: S3Server, kms_key: str, tmp_path: Path, size: int
) -> None:
    """With sse_kms_key_id, the object is stored aws:kms under that key (seen by the aws CLI)."""
    bucket = moto_server.make_bucket()
    path, sha = _body(tmp_path, size)
    key = "arch/h/x.log.gz.enc"
    dest = s3_destination(moto_server, bucket, sse_kms_key_id=kms_key, storage_class="STANDARD_IA")
    async with dest:
        assert "Enabled" in await dest.check()
        stored = await dest.put_file(key, path, {"archiverd-lines": "2"}, sha)
        head = await dest.head(key)
        out = tmp_path / "back"
        await dest.download(key, out)
    assert out.read_bytes() == path.read_bytes()
    assert head is not None
    assert head.sha256_b64 == sha
    cli = aws(moto_server, "s3api", "head-object", "--bucket", bucket, "--key", key)
    assert cli["ServerSideEncryption"] == "aws:kms"
    assert cli["SSEKMSKeyId"].endswith(kms_key.rsplit("/", 1)[-1])
    assert cli["StorageClass"] == "STANDARD_IA"
    assert cli["Metadata"]["archiverd-lines"] == "2"
    assert cli["VersionId"] == stored.version_id
    assert [v["VersionId"] for v in versions_of(moto_server, bucket)] == [stored.version_id]


async def test_unversioned_moto_bucket_is_refused(moto_server: S3Server) -> None:
    """check() refuses a bucket whose versioning was never enabled."""
    bucket = moto_server.make_bucket(versioned=False)
    async with s3_destination(moto_server, bucket) as dest:
        with pytest.raises(PermanentDestinationError, match="versioning never enabled") as info:
            await dest.check()
    assert reason_of(info.value) == "versioning"


async def test_kms_denied_is_permanent_and_keeps_the_spool(
    moto_server: S3Server, kms_key: str, tmp_path: Path
) -> None:
    """A KMS refusal (injected: moto does not enforce key policy) fails fast with reason kms."""
    bucket = moto_server.make_bucket()
    segments = [make_segment(tmp_path / "spool", seq) for seq in (1, 2)]
    queue = MemoryQueue(list(segments))
    upstream = urlparse(moto_server.endpoint_url)
    assert upstream.hostname is not None
    assert upstream.port is not None
    async with FaultProxy(upstream.hostname, upstream.port) as proxy:
        proxy.add(Fault("status", "PUT", times=10, status=400, code="KMS.DisabledException",
                        message=f"{kms_key} is disabled."))  # fmt: skip
        dest = s3_destination(
            moto_server, bucket, endpoint_url=proxy.endpoint_url, sse_kms_key_id=kms_key
        )
        async with dest:
            clock = FakeClock(BASE, auto_advance=True)
            metrics = Metrics(CollectorRegistry())
            settings = Settings()
            uploader = Uploader(dest, queue, metrics, settings=settings, clock=clock, host="h")
            summary = await uploader.upload_pending()
    assert (summary.uploaded, summary.failed) == (0, 1)
    assert "sse_kms_key_id" in summary.errors[0]
    assert len(proxy.requests("PUT")) == 1  # not retried, and the pass stopped
    failures = uploader.metrics.registry.get_sample_value(
        "archiverd_upload_failures_total", {"reason": "kms"}
    )
    assert failures == 1
    assert all(s.spool_path.exists() for s in segments)
    assert queue.uploaded == {}
    assert versions_of(moto_server, bucket) == []


async def test_web_identity_credentials_from_the_default_chain(
    moto_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no explicit keys, an IRSA-style web identity token is exchanged via STS (moto)."""
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhcmNoaXZlcmQifQ.c2ln")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/archiverd")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_server.endpoint_url)
    bucket = moto_server.make_bucket()
    path, sha = _body(tmp_path, 1000)
    session = aiobotocore.session.get_session()
    dest = s3_destination(
        moto_server, bucket, access_key_id=None, secret_access_key=None, session=session
    )
    async with dest:
        await dest.put_file("arch/k", path, {}, sha)
    credentials = await session.get_credentials()
    assert credentials is not None
    assert credentials.method == "assume-role-with-web-identity"
    assert [v["Key"] for v in versions_of(moto_server, bucket)] == ["arch/k"]


async def test_canned_acl_on_single_and_multipart_puts(
    moto_server: S3Server, tmp_path: Path
) -> None:
    """destination.acl goes on every PUT and multipart create (and on check's probe)."""
    bucket = moto_server.make_bucket()
    destination = s3_destination(
        moto_server, bucket, acl="authenticated-read", multipart_threshold_bytes=5 * MIB
    )
    small, small_sha = _body(tmp_path, 1024)
    large, large_sha = _body(tmp_path, 6 * MIB)
    try:
        assert "writable" in await destination.check()
        await destination.put_file("arch/small", small, {}, small_sha)
        await destination.put_file("arch/large", large, {}, large_sha)
    finally:
        await destination.close()
    client = moto_server.boto3_client()
    for key in ("arch/small", "arch/large"):
        grants = client.get_object_acl(Bucket=bucket, Key=key)["Grants"]
        uris = {g["Grantee"].get("URI", "") for g in grants if g["Permission"] == "READ"}
        assert "http://acs.amazonaws.com/groups/global/AuthenticatedUsers" in uris, key
