"""`file:///dir`: a directory that keeps versions like a versioned bucket (the embedded default).

Layout: ``<dir>/<key>.versions/<version-id>`` per stored version, in the single-file container
format of `archiverd.pack.container` (a header with the user metadata, then the packed body),
so ``archiverd unpack FILE`` works on any version directly. A delete marker is an empty
``<version-id>.marker`` file. Version ids are ``<unix-ns:020d>-<random>``: they sort in time
order, so the greatest name is the latest version. Every version is written to a temp file,
fsynced and renamed into place; directories are 0700 and files 0600.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

import structlog

from archiverd.destinations.base import ObjectVersion, StoredObject
from archiverd.destinations.common import SHA256_METADATA, with_body_checksum
from archiverd.errors import (
    ArchiverError,
    ConfigError,
    IntegrityError,
    ObjectExistsError,
    PermanentFailure,
    RetryableFailure,
    TamperedError,
)
from archiverd.fsutil import ensure_private_dir, publish
from archiverd.logs import printable
from archiverd.pack.container import read_header, write_header

log = structlog.get_logger("archiverd.destinations.filesystem")

SUFFIX = ".versions"
MARKER = ".marker"
_CHUNK = 1024 * 1024


class FileDestination:
    """A local directory as a versioned `Destination`. Plain object: `await close()`."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "file" or not parsed.path.startswith("/"):
            raise ConfigError(f"destination.url {url!r}: use file:///absolute/dir")
        self.url = url
        self.prefix = ""
        self.root = Path(unquote(parsed.path))
        self._lock = asyncio.Lock()

    conditional_writes = True
    """A PUT checks for a live version under the same lock that writes one."""

    async def close(self) -> None:
        """Nothing to release; present for the `Destination` protocol."""

    async def check(self) -> str:
        """The directory exists (or can be made, 0700) and is writable."""
        try:
            await asyncio.to_thread(self._check)
        except OSError as exc:
            raise PermanentFailure(
                f"destination {self.url}: directory {self.root} is not writable "
                f"({exc.strerror}): create it for the archiverd user or change destination.url",
                "access_denied",
            ) from None
        return f"{self.url} writable, keeps every version"

    def _check(self) -> None:
        ensure_private_dir(self.root)
        probe = self.root / f".check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()

    def _dir(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(part in ("", ".", "..") for part in parts):
            raise PermanentFailure(f"object key {key!r} is not a safe relative path", "other")
        return self.root.joinpath(*parts[:-1], parts[-1] + SUFFIX)

    async def head(self, key: str, version_id: str | None = None) -> StoredObject | None:
        """The latest (or given) version of `key`; None when absent or a delete marker."""
        return await asyncio.to_thread(self._head, key, version_id)

    def _head(self, key: str, version_id: str | None) -> StoredObject | None:
        folder = self._dir(key)
        if version_id is None:
            names = _version_names(folder)
            if not names or names[-1].endswith(MARKER):
                return None
            version_id = names[-1]
        path = folder / version_id
        if not path.is_file():
            return None
        try:
            with path.open("rb") as src:
                metadata, body_start = _read_meta(src)
        except IntegrityError as exc:
            raise type(exc)(f"{path}: {exc}") from None
        return StoredObject(
            key=key,
            version_id=version_id,
            size=path.stat().st_size - body_start,
            sha256_b64=metadata.get(SHA256_METADATA, ""),
            metadata=metadata,
        )

    def _makedirs(self, folder: Path) -> None:
        """Create `folder` and its parents below the root, each 0700 (mkdir's parents=True
        would leave the intermediate ones to the umask)."""
        ensure_private_dir(self.root)
        current = self.root
        for part in folder.relative_to(self.root).parts:
            current = current / part
            if not current.is_dir():
                current.mkdir(mode=0o700, exist_ok=True)

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
        """Store `path` as a new version of `key`; `ObjectExistsError` when one is live and
        `if_none_match`; `IntegrityError` when the file does not hash to `sha256_b64`.
        (`resume` changes nothing: a write here is never left half-done.)"""
        async with self._lock:
            return await asyncio.to_thread(
                self._put, key, path, metadata, sha256_b64, if_none_match
            )

    def _put(
        self,
        key: str,
        path: Path,
        metadata: Mapping[str, str],
        sha256_b64: str,
        if_none_match: bool,
    ) -> StoredObject:
        if if_none_match and self._head(key, None) is not None:
            raise ObjectExistsError(key)
        folder = self._dir(key)
        try:
            self._makedirs(folder)
        except OSError as exc:
            raise PermanentFailure(
                f"cannot create {folder}: {exc.strerror}", "access_denied"
            ) from exc
        version_id = f"{time.time_ns():020d}-{secrets.token_hex(4)}"
        temp = folder / f".{version_id}.tmp"
        meta = with_body_checksum(metadata, sha256_b64)
        digest, size = hashlib.sha256(), 0
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out, path.open("rb") as src:
                write_header(out, meta)
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            actual = base64.b64encode(digest.digest()).decode()
            if actual != sha256_b64:
                raise IntegrityError(
                    f"{path} hashes to {actual}, not the recorded {sha256_b64}: it changed "
                    "after packing; it is left in the spool"
                )
            publish(temp, folder / version_id)
        except OSError as exc:
            raise RetryableFailure(f"writing {folder}: {exc}; will retry", "other") from exc
        finally:
            temp.unlink(missing_ok=True)
        return StoredObject(
            key=key, version_id=version_id, size=size, sha256_b64=actual, metadata=meta
        )

    async def delete(self, key: str) -> str:
        """Add a delete marker to `key` (versions stay); return its version id."""
        async with self._lock:
            return await asyncio.to_thread(self._delete, key)

    def _delete(self, key: str) -> str:
        folder = self._dir(key)
        self._makedirs(folder)
        version_id = f"{time.time_ns():020d}-{secrets.token_hex(4)}"
        fd = os.open(folder / (version_id + MARKER), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        return version_id + MARKER

    async def list_versions(self, prefix: str) -> AsyncIterator[ObjectVersion]:
        """Every version and delete marker under `prefix`, key order then newest first."""
        for version in await asyncio.to_thread(self._list, prefix):
            yield version

    async def list_prefixes(self, prefix: str) -> AsyncIterator[str]:
        """Common prefixes one level below `prefix`: its sub-folders that are not objects."""
        for name in await asyncio.to_thread(self._subfolders, prefix):
            yield name

    def _subfolders(self, prefix: str) -> list[str]:
        *parents, partial = prefix.split("/")
        folder = self.root.joinpath(*parents)
        base = "".join(f"{part}/" for part in parents)
        try:
            names = sorted(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [
            f"{base}{name}/"
            for name in names
            if name.startswith(partial)
            and not name.startswith(".")
            and not name.endswith(SUFFIX)
            and (folder / name).is_dir()
        ]

    async def list_latest(self, prefix: str) -> AsyncIterator[ObjectVersion]:
        """The latest live version of every key under `prefix`, in key order."""
        for version in await asyncio.to_thread(self._list, prefix):
            if version.is_latest and not version.is_delete_marker:
                yield version

    def _list(self, prefix: str) -> list[ObjectVersion]:
        start = self.root.joinpath(*prefix.split("/")[:-1])
        found: list[ObjectVersion] = []
        for folder, dirs, _files in os.walk(start):
            dirs.sort()
            for name in [d for d in dirs if d.endswith(SUFFIX)]:
                dirs.remove(name)
                key_path = Path(folder, name[: -len(SUFFIX)]).relative_to(self.root)
                key = "/".join(key_path.parts)
                if key.startswith(prefix):
                    found.extend(self._versions(key, Path(folder, name)))
        # Two stable sorts: newest first within a key, keys in order.
        found.sort(key=lambda v: v.version_id, reverse=True)
        found.sort(key=lambda v: v.key)
        return found

    def _versions(self, key: str, folder: Path) -> list[ObjectVersion]:
        found: list[tuple[str, int, bool]] = []
        for name in _version_names(folder):
            marker = name.endswith(MARKER)
            size = 0
            if not marker:
                try:
                    with (folder / name).open("rb") as src:
                        _meta, body_start = _read_meta(src)
                    size = (folder / name).stat().st_size - body_start
                except (ArchiverError, OSError) as exc:
                    _not_ours(folder / name, f"unreadable version header: {exc}")
                    continue
            found.append((name, size, marker))
        return [
            ObjectVersion(
                key,
                name,
                size,
                datetime.fromtimestamp(int(name.split("-", 1)[0]) / 1e9, tz=UTC),
                index == len(found) - 1,
                is_delete_marker=marker,
            )
            for index, (name, size, marker) in enumerate(found)
        ]

    async def download(
        self, key: str, destination: Path, version_id: str | None = None
    ) -> StoredObject:
        """Copy the body of the latest (or given) version to `destination`, verified."""
        return await asyncio.to_thread(self._download, key, destination, version_id)

    def _download(self, key: str, destination: Path, version_id: str | None) -> StoredObject:
        stored = self._head(key, version_id)
        if stored is None:
            raise PermanentFailure(f"{self.url}: no object {key!r} (version {version_id})", "other")
        temp = destination.with_name(f".{destination.name}.part-{os.getpid()}")
        digest = hashlib.sha256()
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out, (self._dir(key) / stored.version_id).open("rb") as src:
                _read_meta(src)
                shutil.copyfileobj(src, out, _CHUNK)
            with temp.open("rb") as check:
                while chunk := check.read(_CHUNK):
                    digest.update(chunk)
            actual = base64.b64encode(digest.digest()).decode()
            if stored.sha256_b64 and actual != stored.sha256_b64:
                # A local file does not change in transit: the stored version was altered.
                raise TamperedError(
                    f"{self._dir(key) / stored.version_id}: the body hashes to {actual}, not "
                    f"the recorded {stored.sha256_b64}: the stored version was changed; "
                    "nothing from it was released"
                )
            publish(temp, destination)
        finally:
            temp.unlink(missing_ok=True)
        return stored

    async def recover_incomplete(self, prefix: str, keep: Collection[str]) -> int:
        """Remove temp files a crash left under `prefix`; return how many."""
        return await asyncio.to_thread(self._sweep, prefix)

    def _sweep(self, prefix: str) -> int:
        start = self.root.joinpath(*prefix.split("/")[:-1])
        removed = 0
        for temp in start.glob(f"**/*{SUFFIX}/.*.tmp"):
            temp.unlink(missing_ok=True)
            removed += 1
        return removed


_VERSION_NAME = re.compile(r"^[0-9]{20}-[0-9a-f]+(\.marker)?$")


def _version_names(folder: Path) -> list[str]:
    """The version files of one key, oldest first; anything else there is reported, skipped."""
    try:
        names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    except FileNotFoundError:
        return []
    for name in names:
        if not _VERSION_NAME.match(name):
            _not_ours(folder / name, "not a version file of this key")
    return [n for n in names if _VERSION_NAME.match(n)]


def _not_ours(path: Path, why: str) -> None:
    """Report a file in the bucket directory that is not an archive object (then skip it)."""
    log.warning("not an archive object; skipped", path=printable(str(path)), reason=why)


def _read_meta(src: BinaryIO) -> tuple[dict[str, str], int]:
    metadata = read_header(src)
    return metadata, src.tell()
