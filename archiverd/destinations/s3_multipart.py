"""Multipart upload of one spool file: parts hashed up front, streamed, resumable.

Each part is read from the file twice — once to hash it (SHA-256 and MD5, in a worker
thread) and once while sending it — so memory stays at a few read buffers per part in
flight, whatever the object size. A fresh upload costs one request per part plus Create and
Complete, nothing else (the parts' ETags come from their own answers). With ``resume`` (an
attempt after a crash or a failed attempt) the incomplete upload of the same key is looked
up and resumed: parts the server already holds with the same checksum (or, when the server
lists no part checksums, the same MD5 ETag) are not sent again; other incomplete uploads of
the key are aborted, so none is leaked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from archiverd.destinations.failures import is_precondition_failed, rejects_conditional, translate
from archiverd.errors import (
    IntegrityError,
    PermanentFailure,
    RetryableDestinationError,
    UnconditionalOnly,
    translated,
)

if TYPE_CHECKING:  # types-aiobotocore-s3: a test/dev extra, only for mypy
    from types_aiobotocore_s3 import S3Client

log = structlog.get_logger("archiverd.destinations.s3")

_READ_CHUNK = 1024 * 1024


class FileSlice(io.RawIOBase):
    """A read-only, seekable view of ``length`` bytes of a file from ``offset``.

    botocore seeks it to sign the payload and aiohttp streams it; `len()` gives the size.
    """

    def __init__(self, path: Path, offset: int, length: int) -> None:
        super().__init__()
        self._file = path.open("rb")
        self._offset = offset
        self._length = length
        self._pos = 0

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + offset))
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._length - self._pos)
        if want <= 0:
            return 0
        self._file.seek(self._offset + self._pos)
        got = self._file.readinto(view[:want])
        if not got:
            raise IntegrityError("the spool file shrank while it was being uploaded")
        self._pos += got
        return got

    def close(self) -> None:
        self._file.close()
        super().close()


@dataclass(frozen=True)
class Part:
    """One planned part: where it lies in the file and what it hashes to."""

    number: int
    offset: int
    length: int
    sha256: bytes
    md5_hex: str

    @property
    def sha256_b64(self) -> str:
        return base64.b64encode(self.sha256).decode()


def plan_parts(path: Path, part_size: int) -> tuple[list[Part], str]:
    """Hash the file part by part; return the parts and the whole file's SHA-256 (base64)."""
    whole = hashlib.sha256()
    parts: list[Part] = []
    with path.open("rb") as src:
        number, offset = 1, 0
        while True:
            sha, md5, length = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
            while length < part_size:
                chunk = src.read(min(_READ_CHUNK, part_size - length))
                if not chunk:
                    break
                sha.update(chunk)
                md5.update(chunk)
                whole.update(chunk)
                length += len(chunk)
            if length == 0 and parts:
                break
            parts.append(Part(number, offset, length, sha.digest(), md5.hexdigest()))
            number, offset = number + 1, offset + length
            if length < part_size:
                break
    return parts, base64.b64encode(whole.digest()).decode()


def composite_sha256(parts: list[Part]) -> str:
    """S3's COMPOSITE checksum of a multipart object: base64(SHA-256(part digests)), no suffix."""
    return base64.b64encode(hashlib.sha256(b"".join(p.sha256 for p in parts)).digest()).decode()


@dataclass(frozen=True)
class MultipartRequest:
    """Everything one multipart upload needs."""

    bucket: str
    key: str
    path: Path
    sha256_b64: str
    part_size: int
    concurrency: int
    extra: Mapping[str, Any]
    """CreateMultipartUpload arguments: Metadata, SSE, StorageClass, ContentType."""
    if_none_match: bool
    resume: bool = False
    """Look for an incomplete upload of the key first (an earlier attempt may have left one)."""


async def upload_multipart(client: S3Client, request: MultipartRequest) -> Mapping[str, Any]:
    """Upload (or resume) `request.path` as a multipart upload; return the Complete response.

    Raises `IntegrityError` when the file does not hash to `request.sha256_b64`, and
    `PermanentFailure` (reason ``integrity``) when the server's composite checksum differs.
    """
    where = f"multipart PUT s3://{request.bucket}/{request.key}"
    parts, whole = await asyncio.to_thread(plan_parts, request.path, request.part_size)
    if whole != request.sha256_b64:
        raise IntegrityError(
            f"spool file {request.path} hashes to {whole}, not the recorded "
            f"{request.sha256_b64}: it was changed after packing; it is left in place"
        )
    upload_id, held = await _resume_or_create(client, request, where)
    etags = {n: etag for n, (_, etag) in held.items()}
    todo = [p for p in parts if held.get(p.number, ("", ""))[0] not in (p.sha256_b64, p.md5_hex)]
    if len(todo) < len(parts):
        log.info("multipart resumed", key=request.key, parts_reused=len(parts) - len(todo))
    gate = asyncio.Semaphore(request.concurrency)

    async def send(part: Part) -> None:
        async with gate:
            with (
                FileSlice(request.path, part.offset, part.length) as body,
                translated(translate, f"{where} part {part.number}"),
            ):
                response = await client.upload_part(
                    Bucket=request.bucket,
                    Key=request.key,
                    UploadId=upload_id,
                    PartNumber=part.number,
                    Body=body,
                    ContentLength=part.length,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=part.sha256_b64,
                )
            etags[part.number] = str(response.get("ETag", ""))
            echoed = response.get("ChecksumSHA256")
            if echoed and echoed != part.sha256_b64:
                raise PermanentFailure(
                    f"{where} part {part.number}: server checksum {echoed} != {part.sha256_b64}",
                    "integrity",
                )

    try:
        async with asyncio.TaskGroup() as group:
            for part in todo:
                group.create_task(send(part))
    except* Exception as group_error:
        raise _worst(group_error) from None
    return await _complete(client, request, upload_id, parts, etags, where)


def _worst(group: BaseExceptionGroup[Exception]) -> Exception:
    """One error for a failed batch of parts: a permanent one if any, else the first."""
    leaves: list[Exception] = []

    def collect(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                collect(inner)
        elif isinstance(error, Exception):
            leaves.append(error)

    collect(group)
    retryable = [e for e in leaves if isinstance(e, RetryableDestinationError)]
    permanent = [e for e in leaves if e not in retryable]
    return (permanent or retryable or [RuntimeError("a part upload failed")])[0]


async def _resume_or_create(
    client: S3Client, request: MultipartRequest, where: str
) -> tuple[str, dict[int, tuple[str, str]]]:
    """With `request.resume`, reuse the newest incomplete upload of the key (aborting older
    ones); otherwise, or when there is none, start one.

    Returns the upload id and, per part number already held, (its SHA-256 (base64) when the
    server lists it, else its ETag (the MD5 hex for unencrypted parts); its ETag).
    """
    with translated(translate, where):
        if not request.resume:
            created = await client.create_multipart_upload(
                Bucket=request.bucket, Key=request.key, ChecksumAlgorithm="SHA256", **request.extra
            )
            return str(created["UploadId"]), {}
        listing = await client.list_multipart_uploads(Bucket=request.bucket, Prefix=request.key)
        uploads = sorted(
            (u for u in listing.get("Uploads", []) if u["Key"] == request.key),
            key=lambda u: u["Initiated"],
        )
        for stale in uploads[:-1]:
            await client.abort_multipart_upload(
                Bucket=request.bucket, Key=request.key, UploadId=stale["UploadId"]
            )
        if uploads:
            upload_id = str(uploads[-1]["UploadId"])
            held: dict[int, tuple[str, str]] = {}
            paginator = client.get_paginator("list_parts")
            async for page in paginator.paginate(
                Bucket=request.bucket, Key=request.key, UploadId=upload_id
            ):
                for part in page.get("Parts", []):
                    etag = str(part.get("ETag", ""))
                    held[int(part["PartNumber"])] = (
                        part.get("ChecksumSHA256") or etag.strip('"'),
                        etag,
                    )
            return upload_id, held
        created = await client.create_multipart_upload(
            Bucket=request.bucket, Key=request.key, ChecksumAlgorithm="SHA256", **request.extra
        )
    return str(created["UploadId"]), {}


async def _complete(
    client: S3Client,
    request: MultipartRequest,
    upload_id: str,
    parts: list[Part],
    etags: Mapping[int, str],
    where: str,
) -> Mapping[str, Any]:
    """CompleteMultipartUpload with each part's ETag (from its UploadPart or ListParts)."""
    with translated(translate, where):
        manifest = {
            "Parts": [
                {
                    "PartNumber": p.number,
                    "ETag": etags.get(p.number, ""),
                    "ChecksumSHA256": p.sha256_b64,
                }
                for p in parts
            ]
        }
        args: dict[str, Any] = {
            "Bucket": request.bucket,
            "Key": request.key,
            "UploadId": upload_id,
            "MultipartUpload": manifest,
        }
        try:
            conditional: dict[str, Any] = {"IfNoneMatch": "*"} if request.if_none_match else {}
            response: Mapping[str, Any] = await client.complete_multipart_upload(
                **args, **conditional
            )
        except Exception as exc:
            if is_precondition_failed(exc):
                # The key exists already: this upload can never complete; do not leak it.
                with contextlib.suppress(Exception):
                    await client.abort_multipart_upload(
                        Bucket=request.bucket, Key=request.key, UploadId=upload_id
                    )
                raise
            if request.if_none_match and rejects_conditional(exc):
                # The parts stay: the caller checks with HEAD, then resumes without it.
                raise UnconditionalOnly(where) from exc
            raise
    echoed = str(response.get("ChecksumSHA256") or "")
    expected = composite_sha256(parts)
    if echoed and echoed.split("-", 1)[0] != expected:
        raise PermanentFailure(
            f"{where}: server composite checksum {echoed} != {expected}-{len(parts)}", "integrity"
        )
    return response


async def abort_uploads(client: S3Client, bucket: str, prefix: str, keep: frozenset[str]) -> int:
    """Abort every incomplete multipart upload under `prefix` whose key is not in `keep`."""
    aborted = 0
    with translated(translate, f"list/abort multipart uploads s3://{bucket}/{prefix}"):
        paginator = client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                if upload["Key"] in keep:
                    continue
                await client.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted += 1
    return aborted
