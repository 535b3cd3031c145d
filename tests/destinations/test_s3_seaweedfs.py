"""S3Destination against a real SeaweedFS (signatures, checksums, versioning), read back with
the independent aws CLI."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from archiverd.config import Settings
from archiverd.destinations import s3
from archiverd.destinations.base import StoredObject
from archiverd.errors import (
    ObjectExistsError,
    PermanentDestinationError,
    RetryableDestinationError,
    reason_of,
)
from archiverd.formats.layout import object_key
from archiverd.metrics import Metrics
from archiverd.upload.uploader import Uploader
from tests.destinations.s3util import MIB, aws, incomplete_uploads, s3_destination, versions_of
from tests.fakeclock import FakeClock
from tests.servers import S3Server
from tests.upload.helpers import BASE, MemoryQueue, make_segment, sha256_b64

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def _body(tmp_path: Path, size: int, name: str = "body") -> tuple[Path, str]:
    path = tmp_path / name
    with path.open("wb") as out:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, MIB))
            out.write(chunk)
            remaining -= len(chunk)
    digest = hashlib.sha256(path.read_bytes()).digest()
    return path, base64.b64encode(digest).decode()


async def test_check_accepts_a_versioned_bucket(seaweedfs: S3Server) -> None:
    """check() reports a versioned bucket as reachable and Enabled."""
    bucket = seaweedfs.make_bucket()
    async with s3_destination(seaweedfs, bucket) as dest:
        assert "versioning Enabled" in await dest.check()


async def test_check_refuses_an_unversioned_bucket(seaweedfs: S3Server) -> None:
    """Without versioning, check() fails permanently with the command that fixes it."""
    bucket = seaweedfs.make_bucket(versioned=False)
    async with s3_destination(seaweedfs, bucket) as dest:
        with pytest.raises(PermanentDestinationError, match="put-bucket-versioning") as info:
            await dest.check()
    assert reason_of(info.value) == "versioning"
    async with s3_destination(seaweedfs, bucket, require_versioning=False) as dest:
        assert "versioning never enabled" in await dest.check()


async def test_check_reports_missing_bucket_and_bad_credentials(seaweedfs: S3Server) -> None:
    """NoSuchBucket and a wrong secret are permanent failures with their own reasons."""
    async with s3_destination(seaweedfs, "no-such-bucket-archiverd") as dest:
        with pytest.raises(PermanentDestinationError) as missing:
            await dest.check()
    assert reason_of(missing.value) == "no_bucket"
    bucket = seaweedfs.make_bucket()
    async with s3_destination(seaweedfs, bucket, secret_access_key="wrong-secret") as dest:
        with pytest.raises(PermanentDestinationError) as denied:
            await dest.check()
    assert reason_of(denied.value) == "access_denied"


async def test_credentials_from_files(
    seaweedfs: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """access_key_id_file / secret_access_key_file are read and win over the default chain."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-from-the-environment")
    (tmp_path / "id").write_text(seaweedfs.access_key + "\n")
    (tmp_path / "secret").write_text(seaweedfs.secret_key + "\n")
    bucket = seaweedfs.make_bucket()
    dest = s3_destination(
        seaweedfs, bucket, access_key_id=None, secret_access_key=None,
        access_key_id_file=tmp_path / "id", secret_access_key_file=tmp_path / "secret",
    )  # fmt: skip
    async with dest:
        assert "Enabled" in await dest.check()


async def test_default_credential_chain(
    seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no explicit keys, credentials come from the AWS default chain (here: env)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    bucket = seaweedfs.make_bucket()
    async with s3_destination(seaweedfs, bucket, access_key_id=None, secret_access_key=None) as d:
        assert "Enabled" in await d.check()


async def test_small_put_is_one_version_with_metadata(seaweedfs: S3Server, tmp_path: Path) -> None:
    """PutObject stores one version; the aws CLI sees its VersionId, metadata and SHA-256."""
    bucket = seaweedfs.make_bucket()
    path, sha = _body(tmp_path, 100_000)
    key = "arch/h/2026/11/23/c/x.log.gz.enc"
    async with s3_destination(seaweedfs, bucket) as dest:
        stored = await dest.put_file(key, path, {"archiverd-lines": "7"}, sha)
        head = await dest.head(key)
        with pytest.raises(ObjectExistsError):
            await dest.put_file(key, path, {"archiverd-lines": "7"}, sha)
        out = tmp_path / "back"
        await dest.download(key, out)
    assert out.read_bytes() == path.read_bytes()
    assert head is not None
    assert head.version_id == stored.version_id
    assert head.sha256_b64 == sha
    versions = versions_of(seaweedfs, bucket, "arch/")
    assert [(v["Key"], v["VersionId"]) for v in versions] == [(key, stored.version_id)]
    cli = aws(seaweedfs, "s3api", "head-object", "--bucket", bucket, "--key", key,
              "--checksum-mode", "ENABLED")  # fmt: skip
    assert cli["Metadata"]["archiverd-lines"] == "7"
    assert cli["Metadata"]["archiverd-sha256"] == sha
    assert cli["ChecksumSHA256"] == sha
    assert cli["VersionId"] == stored.version_id


async def test_server_rejects_a_body_that_does_not_match(
    seaweedfs: S3Server, tmp_path: Path
) -> None:
    """A wrong ChecksumSHA256 is refused by the server (retryable) and stores nothing."""
    bucket = seaweedfs.make_bucket()
    path, _sha = _body(tmp_path, 5000)
    async with s3_destination(seaweedfs, bucket) as dest:
        with pytest.raises(RetryableDestinationError) as info:
            await dest.put_file("arch/k", path, {}, sha256_b64(b"something else"))
    assert reason_of(info.value) == "truncated"
    assert versions_of(seaweedfs, bucket) == []


async def test_multipart_upload_with_part_checksums(seaweedfs: S3Server, tmp_path: Path) -> None:
    """A 20 MiB file goes up in three 8 MiB-max parts with SHA-256s; one version, no leftovers."""
    bucket = seaweedfs.make_bucket()
    path, sha = _body(tmp_path, 20 * MIB)
    key = "arch/h/2026/11/23/c/big.log.gz.enc"
    async with s3_destination(seaweedfs, bucket, max_concurrency=2) as dest:
        stored = await dest.put_file(key, path, {"archiverd-lines": "1"}, sha)
        head = await dest.head(key)
        out = tmp_path / "back"
        await dest.download(key, out)
    assert head is not None
    assert head.sha256_b64 == sha
    assert head.size == 20 * MIB
    assert hashlib.sha256(out.read_bytes()).digest() == base64.b64decode(sha)
    cli = aws(seaweedfs, "s3api", "head-object", "--bucket", bucket, "--key", key,
              "--checksum-mode", "ENABLED")  # fmt: skip
    assert cli["ChecksumSHA256"].endswith("-3")
    assert cli["Metadata"]["archiverd-sha256"] == sha
    assert cli["VersionId"] == stored.version_id
    assert [v["VersionId"] for v in versions_of(seaweedfs, bucket)] == [stored.version_id]
    assert incomplete_uploads(seaweedfs, bucket) == []


async def test_recover_aborts_orphans_and_keeps_pending(seaweedfs: S3Server) -> None:
    """Start-up recovery aborts our incomplete uploads except those a pending segment resumes."""
    bucket = seaweedfs.make_bucket()
    client = seaweedfs.boto3_client()
    for key in ("arch/h/orphan", "arch/h/pending", "arch/other-host/theirs"):
        client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")
    async with s3_destination(seaweedfs, bucket) as dest:
        aborted = await dest.recover_incomplete("arch/h/", {"arch/h/pending"})
    assert aborted == 1
    left = sorted(u["Key"] for u in incomplete_uploads(seaweedfs, bucket))
    assert left == ["arch/h/pending", "arch/other-host/theirs"]


async def test_uploader_end_to_end(seaweedfs: S3Server, tmp_path: Path) -> None:
    """The Uploader puts small and multipart segments once each; a second pass adds nothing."""
    bucket = seaweedfs.make_bucket()
    spool = tmp_path / "spool"
    segments = [
        make_segment(spool, 1),
        make_segment(spool, 2, size=17 * MIB),
        make_segment(spool, 3),
    ]
    queue = MemoryQueue(list(segments))
    clock = FakeClock(BASE, auto_advance=True)
    async with s3_destination(seaweedfs, bucket) as dest:
        uploader = Uploader(dest, queue, Metrics(CollectorRegistry()), settings=Settings(),
                            clock=clock, host="host-a")  # fmt: skip
        summary = await uploader.upload_pending()
        again = await uploader.upload_pending()
    assert (summary.uploaded, summary.failed) == (3, 0)
    assert (again.uploaded, again.skipped_existing) == (0, 0)
    versions = versions_of(seaweedfs, bucket, "arch/")
    by_key = {v["Key"]: v["VersionId"] for v in versions}
    assert len(versions) == 3
    for segment in segments:
        key = object_key("arch/", segment.description)
        assert queue.uploaded[segment.segment_id][:2] == (key, by_key[key])
        cli = aws(seaweedfs, "s3api", "head-object", "--bucket", bucket, "--key", key)
        assert cli["Metadata"]["archiverd-plaintext-sha256"] == segment.description.plaintext_sha256
        assert not segment.spool_path.exists()


async def test_multipart_put_on_an_existing_key_leaves_no_upload(
    seaweedfs: S3Server, tmp_path: Path
) -> None:
    """A second multipart PUT of a live key fails with ObjectExistsError and leaks nothing."""
    bucket = seaweedfs.make_bucket()
    path, sha = _body(tmp_path, 17 * MIB)
    key = "arch/h/2026/11/23/c/twice.log.gz.enc"
    async with s3_destination(seaweedfs, bucket) as dest:
        await dest.put_file(key, path, {}, sha)
        with pytest.raises(ObjectExistsError):
            await dest.put_file(key, path, {}, sha)
    assert len(versions_of(seaweedfs, bucket)) == 1
    assert incomplete_uploads(seaweedfs, bucket) == []


async def test_list_prefixes_is_a_delimiter_listing(seaweedfs: S3Server) -> None:
    """list_prefixes returns the host folders under the prefix, one level deep."""
    bucket = seaweedfs.make_bucket()
    client = seaweedfs.boto3_client()
    for key in ("arch/host-a/2026/x", "arch/host-b/2026/y", "arch/host-b/z", "other/q"):
        client.put_object(Bucket=bucket, Key=key, Body=b"1")
    destination = s3_destination(seaweedfs, bucket, "arch/")
    try:
        found = [p async for p in destination.list_prefixes("arch/")]
    finally:
        await destination.close()
    assert found == ["arch/host-a/", "arch/host-b/"]


async def test_reading_streams_a_version_in_chunks(seaweedfs: S3Server, tmp_path: Path) -> None:
    """reading() gives the latest (or the named) version's metadata and its whole body in
    chunks of about 1 MiB, as download() would write it."""
    bucket = seaweedfs.make_bucket()
    first, first_sha = _body(tmp_path, 3 * MIB + 123, "first")
    second, _ = _body(tmp_path, 2 * MIB + 7, "second")
    key = "arch/h/2026/11/23/c/stream.log.gz.enc"
    async with s3_destination(seaweedfs, bucket) as dest:
        stored = await dest.put_file(key, first, {"archiverd-lines": "1"}, first_sha)
        client = await dest.client()
        await client.put_object(Bucket=bucket, Key=key, Body=second.read_bytes())
        async with dest.reading(key) as (latest, chunks):
            latest_chunks = [chunk async for chunk in chunks]
        async with dest.reading(key, stored.version_id) as (older, chunks):
            older_chunks = [chunk async for chunk in chunks]
    assert b"".join(latest_chunks) == second.read_bytes()
    assert (b"".join(older_chunks), older.version_id) == (first.read_bytes(), stored.version_id)
    assert older.metadata["archiverd-lines"] == "1"
    assert latest.version_id != stored.version_id
    assert len(older_chunks) >= 3
    assert all(len(chunk) < 2 * MIB for chunk in older_chunks)


async def test_reading_ends_a_corrupt_transfer_with_a_retryable_error(seaweedfs: S3Server) -> None:
    """A body that does not hash to its stored SHA-256 (or comes short) ends the chunks with
    RetryableDestinationError, before its last chunk is handed out."""

    class Body:
        def __init__(self, data: bytes) -> None:
            self.data = data

        async def read(self, size: int) -> bytes:
            chunk, self.data = self.data[:size], self.data[size:]
            return chunk

    data = os.urandom(MIB + 10)
    good = base64.b64encode(hashlib.sha256(data).digest()).decode()
    async with s3_destination(seaweedfs, seaweedfs.make_bucket()) as dest:
        for size, sha in ((len(data), base64.b64encode(b"x" * 32).decode()), (len(data) + 5, good)):
            seen: list[bytes] = []

            async def collect(stored: StoredObject, seen: list[bytes] = seen) -> None:
                async for chunk in dest._chunks(stored, Body(data), "GET s3://b/k"):
                    seen.append(chunk)

            with pytest.raises(RetryableDestinationError):
                await collect(StoredObject("k", "v", size, sha))
            assert seen == [data[:MIB]]  # the last (short) chunk is never handed out
        stored = StoredObject("k", "v", len(data), good)
        assert b"".join([c async for c in dest._chunks(stored, Body(data), "GET")]) == data


async def test_a_get_hashes_its_body_only_where_nothing_else_checks_it(
    seaweedfs: S3Server, tmp_path: Path
) -> None:
    """A single-part upload comes back as a body botocore checks against the server's
    whole-object SHA-256 (ChecksumMode ENABLED): no second SHA-256 of it on the event loop.
    A multipart upload's composite checksum leaves the check to ours, against the metadata;
    a body with no whole-body value to compare with is not hashed at all."""
    bucket = seaweedfs.make_bucket()
    small, small_sha = _body(tmp_path, MIB, "small")
    big, big_sha = _body(tmp_path, 20 * MIB, "big")
    async with s3_destination(seaweedfs, bucket, max_concurrency=2) as dest:
        await dest.put_file("arch/small", small, {}, small_sha)
        await dest.put_file("arch/big", big, {}, big_sha)
        client = await dest.client()
        hashed = {}
        for key, path in (("arch/small", small), ("arch/big", big)):
            async with dest.reading(key) as (stored, chunks):
                assert b"".join([c async for c in chunks]) == path.read_bytes()
            answer = await client.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
            async with answer["Body"] as body:
                digest = s3._own_digest(s3._stored(key, answer), body)
                hashed[key] = (stored.sha256_b64, digest is not None)
    assert hashed == {"arch/small": (small_sha, False), "arch/big": (big_sha, True)}
    assert s3._own_digest(StoredObject("k", "v", 1, ""), object()) is None
