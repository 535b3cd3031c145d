"""The shared S3 server fixtures really serve S3."""

from __future__ import annotations

import pytest

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
