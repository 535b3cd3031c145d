"""`archiverd check`'s destination check: reachable and versioned, or a clear failure."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from archiverd.config import Settings
from archiverd.errors import PermanentDestinationError
from archiverd.service.check import check_destination, run_checks
from tests.servers import S3Server

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def _settings(server: S3Server, bucket: str, tmp_path: Path) -> Settings:
    return Settings(
        destination={
            "url": f"s3://{bucket}/arch/", "endpoint_url": server.endpoint_url,
            "addressing_style": "path", "access_key_id": server.access_key,
            "secret_access_key": server.secret_key,
        },
        state={"dir": tmp_path / "state"},
    )  # fmt: skip


@pytest.mark.s3
def test_versioned_bucket_passes(seaweedfs: S3Server, tmp_path: Path) -> None:
    """A reachable, versioned bucket passes with a one-line description."""
    settings = _settings(seaweedfs, seaweedfs.make_bucket(), tmp_path)
    assert "versioning Enabled" in check_destination(settings)


@pytest.mark.s3
def test_unversioned_bucket_fails_the_check_command(seaweedfs: S3Server, tmp_path: Path) -> None:
    """run_checks prints FAIL for the destination and exits with EX_UNAVAILABLE."""
    settings = _settings(seaweedfs, seaweedfs.make_bucket(versioned=False), tmp_path)
    with pytest.raises(PermanentDestinationError, match="versioning"):
        check_destination(settings)
    out = io.StringIO()
    code = run_checks(settings, [("destination", check_destination)], out=out)
    assert code == os.EX_UNAVAILABLE
    assert out.getvalue().startswith("FAIL destination: ")


def test_file_destination_passes(tmp_path: Path) -> None:
    """The embedded file:// default is created 0700 and passes."""
    settings = Settings(state={"dir": tmp_path / "state"})
    assert "keeps every version" in check_destination(settings)
    assert (tmp_path / "state" / "bucket").stat().st_mode & 0o777 == 0o700
