"""`s3://bucket/prefix/`: any S3 API (AWS, SeaweedFS, MinIO, R2, ...) through aiobotocore.

Credentials come from `archiverd.credentials` (explicit keys, else botocore's default chain),
the same source KMS uses. Every write (PUT, CreateMultipartUpload) sends the headers of
`write_arguments`; `check` sends them too, creating and aborting a multipart upload, so a
denied write fails there rather than at the first upload.

Uploads are conditional (``If-None-Match: *``; a server that refuses the header gets
`UnconditionalOnly` once and never the header again, see `conditional_writes`) and
checksummed (``ChecksumAlgorithm=SHA256`` with the precomputed value, so the server rejects
a damaged body); files at or above ``multipart_threshold_bytes`` go multipart
(`s3_multipart`). botocore's own retries are off: callers retry `RetryableDestinationError`
with their own backoff, so every attempt is visible in logs and metrics.

The client is created lazily on first use; `close()` (or ``async with``) releases it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Collection, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import aiobotocore.session
from aiobotocore.config import AioConfig
from aiobotocore.httpchecksum import AioStreamingChecksumBody

from archiverd.config import DestinationSettings
from archiverd.credentials import resolve_credentials
from archiverd.destinations.base import ObjectVersion, StoredObject
from archiverd.destinations.common import body_checksum, with_body_checksum
from archiverd.destinations.failures import is_not_found, rejects_conditional, translate
from archiverd.destinations.s3_multipart import MultipartRequest, abort_uploads, upload_multipart
from archiverd.errors import (
    ConfigError,
    ObjectExistsError,
    PermanentFailure,
    RetryableFailure,
    UnconditionalOnly,
    translated,
)
from archiverd.fsutil import publish

if TYPE_CHECKING:  # types-aiobotocore-s3: a test/dev extra, only for mypy
    from types_aiobotocore_s3 import S3Client

_READ_CHUNK = 1024 * 1024


class S3Destination:
    """A versioned S3 bucket (and key prefix) as a `Destination`."""

    def __init__(
        self,
        url: str,
        settings: DestinationSettings,
        *,
        session: aiobotocore.session.AioSession | None = None,
        host: str = "",
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ConfigError(f"destination.url {url!r}: use s3://bucket/prefix/")
        prefix = parsed.path.lstrip("/")
        self.url = url
        self.bucket = parsed.netloc
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self._settings = settings
        self._credentials = resolve_credentials(settings).client_arguments()
        self._probe_prefix = f"{self.prefix}{host}/" if host else self.prefix
        self._session = session if session is not None else aiobotocore.session.get_session()
        self._stack = AsyncExitStack()
        self._client: S3Client | None = None
        self._lock = asyncio.Lock()
        self._if_none_match = True

    async def __aenter__(self) -> S3Destination:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Release the client and its connections."""
        self._client = None
        await self._stack.aclose()

    async def client(self) -> S3Client:
        """The aiobotocore S3 client, created on first use."""
        async with self._lock:
            if self._client is None:
                s = self._settings
                config = AioConfig(
                    connect_timeout=s.connect_timeout_seconds,
                    read_timeout=s.read_timeout_seconds,
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    s3={"addressing_style": s.addressing_style},
                    max_pool_connections=max(10, 2 * s.max_concurrency),
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    signature_version="s3v4",
                )
                client: S3Client = await self._stack.enter_async_context(
                    self._session.create_client(
                        "s3",
                        region_name=s.region,
                        endpoint_url=s.endpoint_url or None,
                        config=config,
                        **self._credentials,
                    )
                )
                self._client = client
            return self._client

    def _where(self, verb: str, key: str = "") -> str:
        return f"{verb} s3://{self.bucket}/{key}"

    async def check(self) -> str:
        """Reachable, (when required) versioned, and writable with the headers a real
        upload sends; a one-line description. Leaves no object behind.

        The write probe creates a multipart upload under the prefix (with `write_arguments`:
        SSE-KMS, ACL, storage class), lists it and its parts, HEADs and lists its key, then
        aborts it: every S3 action the daemon's IAM policy grants is exercised once, so a
        read-only identity, a denying bucket policy or a missing KMS right fails here.
        """
        client = await self.client()
        with translated(translate, self._where("GetBucketVersioning")):
            answer: Mapping[str, object] = await client.get_bucket_versioning(Bucket=self.bucket)
        status = str(answer.get("Status") or "never enabled")
        if status != "Enabled" and self._settings.require_versioning:
            raise PermanentFailure(
                f"bucket {self.bucket!r} has versioning {status}: enable it with `aws s3api "
                f"put-bucket-versioning --bucket {self.bucket} --versioning-configuration "
                "Status=Enabled` (or set destination.require_versioning = false)",
                "versioning",
            )
        lock = await self._check_object_lock(client)  # before the probe sends lock headers
        await self._probe_write(client)
        endpoint = self._settings.endpoint_url or f"AWS {self._settings.region}"
        return f"{self.url} reachable via {endpoint}, versioning {status}, writable{lock}"

    async def _check_object_lock(self, client: Any) -> str:
        """With ``object_lock_mode`` set, the bucket must have Object Lock enabled."""
        s = self._settings
        if not s.object_lock_mode:
            return ""
        enabled = None
        with translated(translate, self._where("GetObjectLockConfiguration")):
            try:
                answer = await client.get_object_lock_configuration(Bucket=self.bucket)
                enabled = answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
            except Exception as exc:
                if _error_code(exc) != "ObjectLockConfigurationNotFoundError":
                    raise
        if enabled != "Enabled":
            raise PermanentFailure(
                f"bucket {self.bucket!r} does not have Object Lock enabled, so the "
                f"{s.object_lock_mode} retention of destination.object_lock_mode cannot be "
                f"applied: enable it with `aws s3api put-object-lock-configuration --bucket "
                f"{self.bucket} --object-lock-configuration ObjectLockEnabled=Enabled` (the "
                "bucket must be versioned; or unset destination.object_lock_mode)",
                "object-lock",
            )
        return f", Object Lock {s.object_lock_mode} {s.object_lock_days}d"

    async def _probe_write(self, client: S3Client) -> None:
        key = f"{self._probe_prefix}.archiverd-check-{uuid.uuid4().hex}"
        try:
            await self._probe_calls(client, key)
        except RetryableFailure as exc:
            permanent = self._sse_kms_failure(exc)
            if permanent is None:
                raise
            raise permanent from exc
        except PermanentFailure as exc:
            if exc.reason != "access_denied":
                raise
            condition = await self._policy_condition(client)
            if condition:
                raise PermanentFailure(f"{exc}. {condition}", exc.reason) from exc
            raise

    def _sse_kms_failure(self, exc: RetryableFailure) -> PermanentFailure | None:
        """A server error on an SSE-KMS write means the server cannot use the key (it answered
        the calls before it): permanent, since retrying the same headers cannot fix it."""
        if exc.reason != "server_error" or not self._settings.sse_kms_key_id:
            return None
        return PermanentFailure(
            f"{exc}: the server fails writes with SSE-KMS key "
            f"{self._settings.sse_kms_key_id!r}: configure KMS on the server (or the key), "
            "or unset destination.sse_kms_key_id",
            "kms",
        )

    async def _probe_calls(self, client: S3Client, key: str) -> None:
        body = b"archiverd check\n"
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        with translated(translate, self._where("CreateMultipartUpload", key)):
            created = await client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256",
                **write_arguments(self._settings),
            )  # fmt: skip
        upload_id = str(created["UploadId"])
        try:
            with translated(translate, self._where("UploadPart", key)):
                await client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=body,
                    ChecksumAlgorithm="SHA256", ChecksumSHA256=digest,
                )  # fmt: skip
            with translated(translate, self._where("ListMultipartUploads", key)):
                await client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            with translated(translate, self._where("ListParts", key)):
                await client.list_parts(Bucket=self.bucket, Key=key, UploadId=upload_id)
            with translated(translate, self._where("ListObjectsV2", key)):
                await client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
            await self.head(key)
        finally:
            with translated(translate, self._where("AbortMultipartUpload", key)):
                await client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    async def _policy_condition(self, client: S3Client) -> str:
        """The bucket policy's write condition this configuration fails, when the policy is
        readable (``s3:GetBucketPolicy`` is optional: without it, '')."""
        try:
            answer = await client.get_bucket_policy(Bucket=self.bucket)
            policy = json.loads(str(answer.get("Policy") or "{}"))
        except Exception:  # a diagnosis only: unreadable means unknown
            return ""
        return unmet_condition(policy, write_arguments(self._settings))

    async def head(self, key: str, version_id: str | None = None) -> StoredObject | None:
        """The latest (or given) version of `key`, or None (also for a delete marker)."""
        client = await self.client()
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if not self._settings.sse_kms_key_id:
            # With SSE-KMS, ChecksumMode would also need kms:Decrypt, which a write-only
            # archiver role lacks; the body checksum in our metadata serves instead.
            args["ChecksumMode"] = "ENABLED"
        if version_id:
            args["VersionId"] = version_id
        with translated(translate, self._where("HEAD", key)):
            try:
                answer = await client.head_object(**args)
            except Exception as exc:
                if is_not_found(exc):
                    return None
                raise
        return _stored(key, answer)

    @property
    def conditional_writes(self) -> bool:
        """Whether PUTs carry ``If-None-Match: *`` (False once the server refused it)."""
        return self._if_none_match

    async def put_file(
        self,
        key: str,
        path: Path,
        metadata: Mapping[str, str],
        sha256_b64: str,
        *,
        if_none_match: bool = True,
        resume: bool = False,
    ) -> StoredObject:
        """Upload `path` under `key`; `ObjectExistsError` when a live object is there already,
        `UnconditionalOnly` when the server just refused If-None-Match (nothing was stored).

        `resume`: a multipart upload first looks for an incomplete one of the key to finish.
        """
        s = self._settings
        size = (await asyncio.to_thread(path.stat)).st_size
        extra: dict[str, Any] = {
            "Metadata": with_body_checksum(metadata, sha256_b64),
            **write_arguments(s),
        }
        conditional = if_none_match and self._if_none_match
        client = await self.client()
        try:
            with translated(translate, self._where("PUT", key)):
                if size >= s.multipart_threshold_bytes:
                    request = MultipartRequest(
                        self.bucket, key, path, sha256_b64, s.part_size_bytes,
                        s.max_concurrency, extra, conditional, resume,
                    )  # fmt: skip
                    answer = await upload_multipart(client, request)
                else:
                    answer = await self._put_single(
                        client, key, path, size, sha256_b64, extra, conditional
                    )
        except ObjectExistsError as exc:
            raise ObjectExistsError(key) from exc  # name the key, whichever call found it
        except UnconditionalOnly:
            self._if_none_match = False  # from now on a HEAD before each PUT
            raise
        except RetryableFailure as exc:
            permanent = self._sse_kms_failure(exc)
            if permanent is None:
                raise
            raise permanent from exc
        echoed = str(answer.get("ChecksumSHA256") or "")
        single = size < s.multipart_threshold_bytes  # multipart compared its composite itself
        if single and echoed and echoed != sha256_b64:
            raise PermanentFailure(
                f"PUT s3://{self.bucket}/{key}: server checksum {echoed} != {sha256_b64}",
                "integrity",
            )
        return StoredObject(
            key=key,
            version_id=str(answer.get("VersionId") or "null"),
            size=size,
            sha256_b64=sha256_b64,
            metadata=dict(extra["Metadata"]),
            etag=str(answer.get("ETag", "")).strip('"'),
        )

    async def _put_single(
        self,
        client: S3Client,
        key: str,
        path: Path,
        size: int,
        sha256_b64: str,
        extra: Mapping[str, Any],
        conditional: bool,
    ) -> Mapping[str, Any]:
        with path.open("rb") as body:
            args: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": key,
                "Body": body,
                "ContentLength": size,
                "ChecksumAlgorithm": "SHA256",
                "ChecksumSHA256": sha256_b64,
                **extra,
            }
            header: dict[str, Any] = {"IfNoneMatch": "*"} if conditional else {}
            try:
                answer: Mapping[str, Any] = await client.put_object(**args, **header)
            except Exception as exc:
                if conditional and rejects_conditional(exc):
                    # Without the header only a HEAD before each PUT prevents duplicates.
                    raise UnconditionalOnly(self._where("PUT", key)) from exc
                raise
            return answer

    async def delete(self, key: str) -> str:
        """Put a delete marker on `key` (versions stay); return the marker's version id."""
        client = await self.client()
        with translated(translate, self._where("DELETE", key)):
            answer = await client.delete_object(Bucket=self.bucket, Key=key)
        return str(answer.get("VersionId") or "null")

    async def list_versions(self, prefix: str) -> AsyncIterator[ObjectVersion]:
        """Every version and delete marker under `prefix`, key order then newest first."""
        client = await self.client()
        paginator = client.get_paginator("list_object_versions")
        with translated(translate, self._where("ListObjectVersions", prefix)):
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                entries = [_version(v, False) for v in page.get("Versions", [])]
                entries += [_version(v, True) for v in page.get("DeleteMarkers", [])]
                entries.sort(key=lambda v: (v.key, -v.last_modified.timestamp(), not v.is_latest))
                for entry in entries:
                    yield entry

    async def list_prefixes(self, prefix: str) -> AsyncIterator[str]:
        """Common prefixes one level below `prefix` (a ``Delimiter='/'`` listing)."""
        client = await self.client()
        paginator = client.get_paginator("list_objects_v2")
        with translated(translate, self._where("ListObjectsV2", prefix)):
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    yield str(common["Prefix"])

    async def list_latest(self, prefix: str) -> AsyncIterator[ObjectVersion]:
        """The latest live version of every key under `prefix`, in key order."""
        async for version in self.list_versions(prefix):
            if version.is_latest and not version.is_delete_marker:
                yield version

    async def download(
        self, key: str, destination: Path, version_id: str | None = None
    ) -> StoredObject:
        """Stream the body into a 0600 temp file beside `destination`, verify, then rename."""
        client = await self.client()
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if version_id:
            args["VersionId"] = version_id
        temp = destination.with_name(f".{destination.name}.part-{os.getpid()}")
        received = 0
        with translated(translate, self._where("GET", key)), _removed_on_error(temp):
            answer = await client.get_object(**args)
            stored = _stored(key, answer)
            digest = _own_digest(stored, answer["Body"])
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                async with answer["Body"] as body:
                    while chunk := await body.read(_READ_CHUNK):
                        out.write(chunk)
                        if digest is not None:
                            digest.update(chunk)
                        received += len(chunk)
        problem = _body_problem(stored, received, digest)
        if problem:
            temp.unlink(missing_ok=True)
            raise RetryableFailure(f"GET s3://{self.bucket}/{key}: {problem}", "truncated")
        publish(temp, destination)
        return stored

    @asynccontextmanager
    async def reading(
        self, key: str, version_id: str | None = None
    ) -> AsyncIterator[tuple[StoredObject, AsyncIterator[bytes]]]:
        """GET the latest (or given) version: its metadata, and its body as chunks of about
        1 MiB as they arrive (restore decrypts while downloading, no ciphertext on disk).

        The chunks are checked as `download` checks its file: a short or corrupt body ends
        them with `RetryableFailure` (before the last chunk), so read them all, then retry
        the whole read.
        """
        client = await self.client()
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if version_id:
            args["VersionId"] = version_id
        where = self._where("GET", key)
        with translated(translate, where):
            answer = await client.get_object(**args)
        stored = _stored(key, answer)
        async with answer["Body"] as body:
            yield stored, self._chunks(stored, body, where)

    async def _chunks(self, stored: StoredObject, body: Any, where: str) -> AsyncIterator[bytes]:
        digest, received = _own_digest(stored, body), 0
        pending: list[bytes] = []
        size = 0
        while True:
            with translated(translate, where):
                chunk = await body.read(_READ_CHUNK)
            if not chunk:
                break
            if digest is not None:
                digest.update(chunk)
            received += len(chunk)
            pending.append(chunk)
            size += len(chunk)
            if size >= _READ_CHUNK:
                yield b"".join(pending)
                pending, size = [], 0
        problem = _body_problem(stored, received, digest)
        if problem:
            raise RetryableFailure(f"{where}: {problem}", "truncated")
        if pending:
            yield b"".join(pending)

    async def recover_incomplete(self, prefix: str, keep: Collection[str]) -> int:
        """Abort incomplete multipart uploads under `prefix` except those of `keep` keys
        (those are resumed by their next `put_file`); return how many were aborted."""
        return await abort_uploads(await self.client(), self.bucket, prefix, frozenset(keep))


def retain_until(days: int, now: datetime | None = None) -> datetime:
    """The retain-until date of an object uploaded `now` and kept `days` days."""
    return (now or datetime.now(UTC)) + timedelta(days=days)


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


_CONDITION_HEADERS = {
    "s3:x-amz-server-side-encryption": ("ServerSideEncryption", "destination.sse_kms_key_id"),
    "s3:x-amz-server-side-encryption-aws-kms-key-id": (
        "SSEKMSKeyId",
        "destination.sse_kms_key_id",
    ),
    "s3:x-amz-acl": ("ACL", "destination.acl"),
    "s3:x-amz-storage-class": ("StorageClass", "destination.storage_class"),
}


def unmet_condition(policy: Mapping[str, Any], args: Mapping[str, Any]) -> str:
    """The first Deny statement on s3:PutObject whose header condition `args` (the write
    headers we send) trips, as a sentence naming the header, the value and the setting."""
    statements = policy.get("Statement") or []
    for statement in statements if isinstance(statements, list) else [statements]:
        actions = statement.get("Action") or []
        actions = [actions] if isinstance(actions, str) else actions
        if statement.get("Effect") != "Deny" or not any(
            a in ("s3:PutObject", "s3:*", "*") for a in actions
        ):
            continue
        for operator, tests in (statement.get("Condition") or {}).items():
            for name, wanted in tests.items():
                header, setting = _CONDITION_HEADERS.get(name.lower(), ("", ""))
                if not header:
                    continue
                values = [wanted] if isinstance(wanted, str) else list(wanted)
                sent = args.get(header)
                trips = (
                    (operator == "StringNotEquals" and sent not in values)
                    or (operator == "StringEquals" and sent in values)
                    or (operator == "Null" and (sent is None) == ("true" in values))
                )
                if trips:
                    sid = statement.get("Sid", "")
                    return (
                        f"The bucket policy statement {sid!r} denies s3:PutObject unless "
                        f"{name} is {' or '.join(values) if operator != 'Null' else 'set'} "
                        f"(we send {sent or 'none'}): set {setting}"
                    )
    return ""


def write_arguments(settings: DestinationSettings) -> dict[str, Any]:
    """The headers every write sends (PutObject and CreateMultipartUpload, and `check`'s
    probe): content type, SSE-KMS, canned ACL, storage class."""
    args: dict[str, Any] = {"ContentType": "application/octet-stream"}
    if settings.sse_kms_key_id:
        args.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=settings.sse_kms_key_id)
    if settings.acl:
        args["ACL"] = settings.acl
    if settings.storage_class:
        args["StorageClass"] = settings.storage_class
    if settings.object_lock_mode:
        args["ObjectLockMode"] = settings.object_lock_mode
        args["ObjectLockRetainUntilDate"] = retain_until(settings.object_lock_days)
    return args


@contextmanager
def _removed_on_error(path: Path) -> Iterator[None]:
    """Delete the partial download `path` when the block fails."""
    try:
        yield
    except Exception:
        path.unlink(missing_ok=True)
        raise


def _stored(key: str, answer: Mapping[str, Any]) -> StoredObject:
    metadata = {str(k).lower(): str(v) for k, v in (answer.get("Metadata") or {}).items()}
    etag = str(answer.get("ETag", "")).strip('"')
    multipart = "-" in etag or answer.get("ChecksumType") == "COMPOSITE"
    return StoredObject(
        key=key,
        version_id=str(answer.get("VersionId") or "null"),
        size=int(answer.get("ContentLength", 0)),
        sha256_b64=body_checksum(
            str(answer.get("ChecksumSHA256") or ""), metadata, multipart=multipart
        ),
        metadata=metadata,
        etag=etag,
    )


def _version(entry: Mapping[str, Any], marker: bool) -> ObjectVersion:
    return ObjectVersion(
        key=str(entry["Key"]),
        version_id=str(entry.get("VersionId") or "null"),
        size=int(entry.get("Size", 0)),
        last_modified=entry["LastModified"],
        is_latest=bool(entry.get("IsLatest")),
        is_delete_marker=marker,
        etag=str(entry.get("ETag", "")).strip('"'),
    )


def _own_digest(stored: StoredObject, body: object) -> hashlib._Hash | None:
    """A SHA-256 to check a GET's body against `stored.sha256_b64`; None where it would be
    work for nothing: no whole-body value to compare it with, or a `body` that botocore
    already checks against a whole-object checksum the server sent (with ChecksumMode
    ENABLED it wraps such a body, and raises at its end if the bytes differ). Every
    download's bytes pass through the event loop's one thread, which is what limits a
    `get` on two cores (bench/restore.py): a second hash there costs about 8% of it."""
    if not stored.sha256_b64 or "-" in stored.sha256_b64:
        return None
    if isinstance(body, AioStreamingChecksumBody):
        return None
    return hashlib.sha256()


def _body_problem(stored: StoredObject, received: int, digest: hashlib._Hash | None) -> str:
    import base64

    if received != stored.size:
        return f"got {received} of {stored.size} bytes (truncated); retry"
    if digest is None:
        return ""
    actual = base64.b64encode(digest.digest()).decode()
    if actual != stored.sha256_b64:
        return f"body hashes to {actual}, not {stored.sha256_b64} (corrupt in transit); retry"
    return ""
