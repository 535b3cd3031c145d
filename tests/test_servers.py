"""The shared S3 server fixtures really serve S3."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import servers
from tests.servers import S3Server

pytestmark = pytest.mark.slow  # real servers or processes: seconds each


def test_seaweedfs_serves_versioned_buckets(seaweedfs: S3Server) -> None:
    """A bucket made by the fixture reports versioning Enabled and keeps two versions."""
    bucket = seaweedfs.make_bucket()
    client = seaweedfs.boto3_client()
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    client.put_object(Bucket=bucket, Key="k", Body=b"one")
    client.put_object(Bucket=bucket, Key="k", Body=b"two")
    versions = client.list_object_versions(Bucket=bucket)["Versions"]
    assert len(versions) == 2


def test_moto_serves_kms(moto_server: S3Server) -> None:
    """The moto fixture answers KMS, so KMS wrapping can be tested."""
    kms = moto_server.boto3_client("kms")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    assert len(data_key["Plaintext"]) == 32


def test_seaweedfs_takes_writes_in_more_buckets_than_a_session_makes(tmp_path: Path) -> None:
    """A fresh SeaweedFS accepts an object in each of 80 buckets (each bucket takes several
    volumes: with the volume count left to free disk / volume size, a session ran out of
    them and every PUT failed with InternalError)."""
    server = servers.start_seaweedfs(tmp_path)
    try:
        client = server.boto3_client()
        for n in range(80):
            client.put_object(Bucket=server.make_bucket(), Key="k", Body=b"%d" % n)
    finally:
        servers.stop(server)
