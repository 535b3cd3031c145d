"""Fixtures for the restore tests: one shared archive on SeaweedFS, keys and configs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from archiverd.pack import Keyring
from tests.restore import corpus
from tests.servers import S3Server


@dataclass(frozen=True)
class Archive:
    """The shared corpus, its server, its keys and a config that reads it."""

    server: S3Server
    corpus: corpus.Corpus
    config: Path
    new_key: Path
    old_key: Path
    keyring: Keyring
    old_keyring: Keyring


@pytest.fixture(scope="session")
def archive(seaweedfs: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """Hundreds of segments across hosts, days, containers and versions, built once."""
    root = tmp_path_factory.mktemp("restore-archive")
    new_key, new_raw = corpus.write_key(root / "new.key")
    old_key, old_raw = corpus.write_key(root / "old.key")
    keyring = Keyring.from_raw_keys(new_raw)
    old_keyring = Keyring.from_raw_keys(old_raw)
    bucket = seaweedfs.make_bucket()
    built = corpus.build(
        seaweedfs.boto3_client(), bucket, (keyring, old_keyring), datetime.now(UTC)
    )
    config = corpus.write_config(
        root / "archiverd.toml",
        url=f"s3://{bucket}/{corpus.PREFIX}",
        endpoint=seaweedfs.endpoint_url,
        key_file=new_key,
        old_key_files=[old_key],
        credentials=(seaweedfs.access_key, seaweedfs.secret_key),
    )
    return Archive(seaweedfs, built, config, new_key, old_key, keyring, old_keyring)
