"""Plain log files matching a glob under a directory (e.g. a sidecar's shared volume).

Each matching file is a stream of plain lines. When its name comes to point at a new file
(rename-and-create rotation) the stream continues into the new file; a file deleted or
renamed away is read to its end through the held fd and then finished.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import stat
from pathlib import Path

from archiverd.errors import ListingError
from archiverd.sources.base import BaseSource, Candidate, StreamInfo


class DirectorySource(BaseSource):
    """Files under `path` matching `glob`."""

    kind = "directory"

    @property
    def removal_grace_seconds(self) -> float:  # type: ignore[override]
        """A file moved away may come back (an editor, a careless mv): two rescans."""
        return 2 * self.settings.rescan_seconds

    def discover(self) -> list[StreamInfo]:
        """Every regular file matching the glob, inside the root."""
        found = []
        for path in sorted(self.root.glob(self.settings.glob)):
            if path.is_symlink() and not self.allowed(path):
                continue
            if not path.is_file() or not self.allowed(path):
                continue
            try:
                found.append(self.describe(str(path.relative_to(self.root))))
            except ListingError:
                continue  # reported; the next rescan looks again
        return found

    def keys(self) -> list[str]:
        """Relative paths of matching regular files inside the root."""
        return [info.key for info in self.discover()]

    def watched_paths(self, key: str) -> list[Path]:
        """The file itself."""
        return [self.root / key]

    def describe(self, key: str) -> StreamInfo:
        """The file at `key` (its path relative to the root) now."""
        path = self.root / key
        exists = self._exists(path) and self.allowed(path)
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        safe = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in key)[:80]
        return StreamInfo(
            key=key,
            container_id=f"{safe}-{digest}",
            format="plain",
            state="running" if exists else "removed",
            files=(Candidate(path),) if exists else (),
            name=key,
            idle_finishes=True,
        )

    def _exists(self, path: Path) -> bool:
        """Whether `path` is a regular file (following symlinks); `ListingError` when that
        cannot be told now (EMFILE, EACCES on a parent for a moment)."""
        try:
            return stat.S_ISREG(os.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return False
            self.unlistable(path, exc)
            raise ListingError(f"cannot look at {path} now: {exc}; will retry") from exc

    def key_for_path(self, path: str) -> str | None:
        """The relative path, when it matches the glob."""
        try:
            rel = Path(path).relative_to(self.root)
        except ValueError:
            return None
        return str(rel) if self._matches(str(rel)) else None

    def _matches(self, rel: str) -> bool:
        pattern = self.settings.glob
        # fnmatch's "*" also matches "/", so "**/x" only needs its top-level form added.
        patterns = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        return any(fnmatch.fnmatchcase(rel, p) for p in patterns)
