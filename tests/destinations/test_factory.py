"""open_destination: the URL picks the implementation; credential settings are validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiverd.config import Settings
from archiverd.destinations import open_destination
from archiverd.destinations.filesystem import FileDestination
from archiverd.destinations.s3 import S3Destination
from archiverd.errors import ConfigError


async def test_s3_url_gives_an_s3_destination(tmp_path: Path) -> None:
    """s3://bucket/prefix gives an S3Destination with the prefix normalised to end in '/'."""
    settings = Settings(destination={"url": "s3://logs/prod"}, state={"dir": tmp_path})
    dest = open_destination(settings)
    assert isinstance(dest, S3Destination)
    assert (dest.bucket, dest.prefix) == ("logs", "prod/")
    await dest.close()


def test_file_url_gives_a_file_destination(tmp_path: Path) -> None:
    """file:///dir gives a FileDestination rooted there (no prefix)."""
    settings = Settings(destination={"url": (tmp_path / "b").as_uri()}, state={"dir": tmp_path})
    dest = open_destination(settings)
    assert isinstance(dest, FileDestination)
    assert (dest.root, dest.prefix) == (tmp_path / "b", "")


def test_half_explicit_credentials_are_a_config_error(tmp_path: Path) -> None:
    """An access key without its secret is refused before anything connects."""
    settings = Settings(
        destination={"url": "s3://logs/", "access_key_id": "AKID"}, state={"dir": tmp_path}
    )
    with pytest.raises(ConfigError, match="must be set together"):
        open_destination(settings)


def test_missing_secret_file_is_a_config_error(tmp_path: Path) -> None:
    """A configured secret file that does not exist is named in the error (value never shown)."""
    settings = Settings(
        destination={
            "url": "s3://logs/",
            "access_key_id": "AKID",
            "secret_access_key_file": tmp_path / "nope",
        },
        state={"dir": tmp_path},
    )
    with pytest.raises(ConfigError, match=r"secret_access_key_file .*nope.* does not exist"):
        open_destination(settings)
