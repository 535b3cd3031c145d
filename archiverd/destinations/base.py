"""The one small interface every destination implements, and the facts it returns.

The uploader, `archiverd check`, and the restore CLI (`ls`, `get`) only ever talk to a
`Destination`; `s3.py` and `filesystem.py` implement it. Keys are full object keys
(prefix included); `metadata` is user metadata without the ``x-amz-meta-`` prefix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ObjectVersion:
    """One version of one key (or a delete marker) as listed."""

    key: str
    version_id: str
    size: int
    last_modified: datetime
    is_latest: bool
    is_delete_marker: bool = False
    etag: str = ""


@dataclass(frozen=True)
class StoredObject:
    """What HEAD (or a completed PUT) says of one object version."""

    key: str
    version_id: str
    size: int
    sha256_b64: str
    """The object's whole-body SHA-256, base64, as S3 ChecksumSHA256 reports it."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    etag: str = ""


class Destination(Protocol):
    """A versioned object store."""

    url: str
    prefix: str
    """The key prefix every archived object starts with ('' or ending in '/')."""

    async def check(self) -> str:
        """Reachable, and versioned when required; return a one-line description.

        Raises `PermanentDestinationError` (e.g. versioning not enabled) or
        `RetryableDestinationError` (unreachable).
        """
        ...

    async def head(self, key: str, version_id: str | None = None) -> StoredObject | None:
        """The latest (or given) version of `key`, or None when there is none."""
        ...

    async def put_file(
        self,
        key: str,
        path: Path,
        metadata: Mapping[str, str],
        sha256_b64: str,
        *,
        resume: bool = False,
    ) -> StoredObject:
        """Store the file at `path` under `key`, streaming, checksum-verified by the server.

        Conditional where the destination supports it (`ObjectExistsError` when a live
        object is there); `resume` says an earlier attempt may have left an incomplete
        upload of the key to finish.
        """
        ...

    def list_versions(self, prefix: str) -> AsyncIterator[ObjectVersion]:
        """Every version and delete marker under `prefix`, key order then newest first."""
        ...

    def list_prefixes(self, prefix: str) -> AsyncIterator[str]:
        """Common prefixes one level below `prefix`, ending in '/' (S3 ``Delimiter='/'``)."""
        ...

    def list_latest(self, prefix: str) -> AsyncIterator[ObjectVersion]:
        """The latest live version of every key under `prefix`, in key order."""
        ...

    async def download(
        self, key: str, destination: Path, version_id: str | None = None
    ) -> StoredObject:
        """Write the object's body to `destination` (fully, or raise); return its metadata.

        A short or corrupt body raises `RetryableDestinationError`, never returns.
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
