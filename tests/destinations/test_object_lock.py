"""Retention locks: every PUT carries the configured Object Lock retention, the server then
refuses to delete that version before its date, and a bucket without Object Lock is refused
by `check` and at start-up with the command that fixes it. Both moto and SeaweedFS enforce
Object Lock, so both are tested."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from archiverd.config import Settings
from archiverd.errors import ConfigError
from archiverd.service.check import check_destination, run_checks
from tests.destinations.s3util import MIB, s3_destination
from tests.servers import S3Server
from tests.service.test_daemon_process import archiverd, archiverd_env

pytestmark = [pytest.mark.s3, pytest.mark.slow]


@pytest.fixture(params=["moto", "seaweedfs"])
def server(request: pytest.FixtureRequest) -> S3Server:
    """Each server that enforces Object Lock."""
    fixture = "moto_server" if request.param == "moto" else "seaweedfs"
    found: S3Server = request.getfixturevalue(fixture)
    return found


def locked_bucket(server: S3Server) -> str:
    """A bucket created with Object Lock (and so versioning) enabled."""
    name = f"lock-{os.urandom(6).hex()}"
    server.boto3_client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def _settings(server: S3Server, bucket: str, tmp_path: Path, **lock: object) -> Settings:
    return Settings(
        destination={
            "url": f"s3://{bucket}/arch/", "endpoint_url": server.endpoint_url,
            "addressing_style": "path", "access_key_id": server.access_key,
            "secret_access_key": server.secret_key, **lock,
        },
        state={"dir": tmp_path / "state"},
    )  # fmt: skip


async def test_each_put_carries_the_retention_and_early_delete_is_refused(
    server: S3Server, tmp_path: Path
) -> None:
    """PUT with COMPLIANCE 3d: the version is locked to upload + 3 days, and deleting that
    version before then is refused by the server; the object stays."""
    await _put_locked_then_delete(server, tmp_path, 1000)


async def test_multipart_put_carries_the_retention_too(seaweedfs: S3Server, tmp_path: Path) -> None:
    """Multipart: CreateMultipartUpload carries the retention (moto ignores it there; AWS
    and SeaweedFS honour it), and the early delete is refused."""
    await _put_locked_then_delete(seaweedfs, tmp_path, 9 * MIB)


async def _put_locked_then_delete(server: S3Server, tmp_path: Path, size: int) -> None:
    bucket = locked_bucket(server)
    dest = s3_destination(server, bucket, object_lock_mode="COMPLIANCE", object_lock_days=3)
    body = os.urandom(size)
    path = tmp_path / "body"
    path.write_bytes(body)
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    before = datetime.now(UTC).replace(microsecond=0)
    stored = await dest.put_file("arch/k.log.gz.enc", path, {"archiverd-x": "1"}, digest)
    after = datetime.now(UTC)
    await dest.close()
    s3 = server.boto3_client()
    head = s3.head_object(Bucket=bucket, Key="arch/k.log.gz.enc", VersionId=stored.version_id)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    until = head["ObjectLockRetainUntilDate"]
    assert before + timedelta(days=3) <= until <= after + timedelta(days=3, seconds=1)
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key="arch/k.log.gz.enc", VersionId=stored.version_id)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    kept = s3.get_object(Bucket=bucket, Key="arch/k.log.gz.enc", VersionId=stored.version_id)
    assert kept["Body"].read() == body


def test_check_passes_on_a_locked_bucket_and_names_the_lock(
    server: S3Server, tmp_path: Path
) -> None:
    """check: a bucket with Object Lock passes and the line says mode and days."""
    settings = _settings(
        server,
        locked_bucket(server),
        tmp_path,
        object_lock_mode="GOVERNANCE",
        object_lock_days=30,
    )
    assert check_destination(settings).endswith(
        "versioning Enabled, writable, Object Lock GOVERNANCE 30d"
    )


def test_check_refuses_a_bucket_without_object_lock_with_the_fix(
    server: S3Server, tmp_path: Path
) -> None:
    """check: a versioned bucket without Object Lock fails (exit 69) with the aws command."""
    bucket = server.make_bucket()
    settings = _settings(
        server, bucket, tmp_path, object_lock_mode="COMPLIANCE", object_lock_days=1
    )
    out = io.StringIO()
    code = run_checks(settings, [("destination", check_destination)], out=out)
    assert code == os.EX_UNAVAILABLE
    assert out.getvalue().splitlines()[0] == (
        f"FAIL destination: bucket {bucket!r} does not have Object Lock enabled, so the "
        "COMPLIANCE retention of destination.object_lock_mode cannot be applied: enable it "
        f"with `aws s3api put-object-lock-configuration --bucket {bucket} "
        "--object-lock-configuration ObjectLockEnabled=Enabled` (the bucket must be "
        "versioned; or unset destination.object_lock_mode)"
    )


def test_the_daemon_refuses_to_start_on_a_bucket_without_object_lock(
    tmp_path: Path, seaweedfs: S3Server
) -> None:
    """Start-up: object_lock_mode set, bucket without Object Lock: exit 69, says how to fix."""
    bucket = seaweedfs.make_bucket()
    env = archiverd_env(
        tmp_path,
        ARCHIVERD_DESTINATION__URL=f"s3://{bucket}/logs/",
        ARCHIVERD_DESTINATION__ENDPOINT_URL=seaweedfs.endpoint_url,
        ARCHIVERD_DESTINATION__OBJECT_LOCK_MODE="COMPLIANCE",
        ARCHIVERD_DESTINATION__OBJECT_LOCK_DAYS="365",
        **seaweedfs.env(),
    )
    config = tmp_path / "archiverd.toml"
    config.write_text("")
    result = archiverd("run", "--config", str(config), "--once", env=env)
    assert result.returncode == 69, result.stderr
    assert "put-object-lock-configuration" in result.stderr


def test_lock_settings_need_each_other_and_an_s3_destination(tmp_path: Path) -> None:
    """A mode without days (or days without a mode) is a config error; so is file://."""
    with pytest.raises(ValueError, match=r"needs destination\.object_lock_days"):
        Settings(destination={"object_lock_mode": "COMPLIANCE"})
    with pytest.raises(ValueError, match=r"needs destination\.object_lock_mode"):
        Settings(destination={"object_lock_days": 5})
    from archiverd.destinations import open_destination

    settings = Settings(
        destination={"object_lock_mode": "GOVERNANCE", "object_lock_days": 5},
        state={"dir": tmp_path},
    )
    with pytest.raises(ConfigError, match="needs an s3:// destination"):
        open_destination(settings)
