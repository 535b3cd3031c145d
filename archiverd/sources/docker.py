"""Docker json-file logs: ``<root>/<id>/<id>-json.log`` plus dockerd's rotations.

Rotations are ``<id>-json.log.N`` (higher N is older) and ``.N.gz`` with ``compress=true``.
While dockerd compresses ``.N`` into ``.N.gz`` both exist; the ``.gz`` is ignored until the
plain file is gone. Name, image and labels come from ``config.v2.json``, which dockerd
replaces by atomic rename (so the directory is watched, not the file). A container has exited
when ``State.Running`` is false and it is not restarting; the files stay the truth.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

from archiverd.errors import FileRefusedError, ListingError, SourceError
from archiverd.fsutil import read_small_file
from archiverd.sources.base import (
    BaseSource,
    Candidate,
    Stat,
    State,
    StreamInfo,
    rotation_index,
    stat_of,
)

CONFIG = "config.v2.json"
HOSTCONFIG = "hostconfig.json"
MAX_CONFIG_BYTES = 8 << 20
"""dockerd's config.v2.json is a few KB; anything larger is not one (read at most this)."""
SETTLED_NS = 2_000_000_000
"""A directory whose mtime is older than this can be trusted to change its mtime on the next
change: file systems stamp times at a clock tick's granularity, so a change within the tick
of an earlier look could leave the mtime as it was."""


def _settled(st: Stat) -> bool:
    return st is not None and time.time_ns() - st[2] > SETTLED_NS


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of the regular file at `path` (no symlink followed at its last component),
    at most `limit`; `SourceError` for a symlink, FIFO, device, directory or larger file."""
    try:
        return read_small_file(path, limit, follow_symlinks=False)[0]
    except FileRefusedError as exc:
        raise SourceError(str(exc)) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SourceError("a symlink; not followed") from exc
        raise


class DockerSource(BaseSource):
    """Containers under a dockerd ``containers`` directory."""

    kind = "docker"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._root_str = str(self.root)
        self._listing: tuple[Stat, list[str]] = (None, [])
        self._paths: dict[str, tuple[str, str, str]] = {}
        self._config_seen: dict[str, tuple[Stat, Stat]] = {}
        """Per container: its directory's stat (None unless settled when taken), and
        config.v2.json's taken after it."""

    def discover(self) -> list[StreamInfo]:
        """Every container directory with a json-file log."""
        found = []
        for entry in self.listed(self.root):
            if entry.is_dir(follow_symlinks=False):
                info = self.describe(entry.name)
                if info.files:
                    found.append(info)
            elif entry.is_symlink():
                self.allowed(Path(entry.path))
        return found

    def keys(self) -> list[str]:
        """Container directories (without reading them). The root is listed again only when
        its mtime moved (a container directory created, removed or renamed) or is too recent
        to be trusted (`SETTLED_NS`)."""
        root = stat_of(self._root_str)
        seen, names = self._listing
        if root is not None and root == seen:
            return list(names)
        try:
            entries = self.entries(self.root)
        except ListingError:
            return []  # reported; the next rescan lists again
        names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
        # trusted next time only if its mtime was already settled when taken (before listing)
        self._listing = (root if _settled(root) else None, names)
        listed = set(names)
        for key in [k for k in self._paths if k not in listed]:  # containers come and go
            self._paths.pop(key, None)
            self._config_seen.pop(key, None)
        return list(names)

    def signature(self, key: str) -> object:
        """The stats of the container's directory (renames, creations, deletions: rotations,
        and dockerd replacing config.v2.json by rename) and of its live log (appends change
        no directory; inotify reports them, and this is the safety net for a missed event).
        config.v2.json is looked at again only when its directory changed or changed too
        recently to be trusted: an idle container costs two stats."""
        paths = self._paths.get(key)
        if paths is None:
            base = os.path.join(self._root_str, key)
            paths = (base, os.path.join(base, f"{key}-json.log"), os.path.join(base, CONFIG))
            self._paths[key] = paths
        directory = stat_of(paths[0])
        live = stat_of(paths[1])
        seen = self._config_seen.get(key)
        if seen is not None and directory is not None and seen[0] == directory:
            config = seen[1]
        else:
            config = stat_of(paths[2])
            # trusted next time only if the directory's mtime was settled when taken
            self._config_seen[key] = (directory if _settled(directory) else None, config)
        return (directory, live, config)

    def watched_paths(self, key: str) -> list[Path]:
        """Renames/creations change the directory; appends change the live log."""
        directory = self.root / key
        return [directory, directory / f"{key}-json.log", directory / CONFIG]

    def describe(self, key: str) -> StreamInfo:
        """The container `key` (its full id) now."""
        directory = self.root / key
        files, present = self._files(key)
        if not present:
            return StreamInfo(key, key, "docker", "removed", ())
        config = self._config(directory / CONFIG)
        cfg = self._part(config, "Config", directory)
        state: State = "exited" if self._exited(config, directory) else "running"
        labels = self._part(cfg, "Labels", directory)
        cname, image = config.get("Name"), cfg.get("Image")
        return StreamInfo(
            key=key,
            container_id=key,
            format="docker",
            state=state,
            files=files,
            name=cname.lstrip("/") if isinstance(cname, str) else "",
            image=image if isinstance(image, str) else "",
            labels={str(k): str(v) for k, v in labels.items()},
            keeps_rotations=True,
            rotation_limit=self._max_file(directory / HOSTCONFIG),
        )

    def stopped(self, key: str) -> bool:
        """Whether ``config.v2.json`` says the container has exited (one small read)."""
        directory = self.root / key
        return self._exited(self._config(directory / CONFIG), directory)

    def _exited(self, config: dict[str, Any], directory: Path) -> bool:
        state_doc = self._part(config, "State", directory)
        # A created-but-never-started container is not running either: not an exit yet.
        never_ran = str(state_doc.get("FinishedAt", "")).startswith("0001-")
        return (
            bool(config)
            and not state_doc.get("Running")
            and not state_doc.get("Restarting")
            and not never_ran
        )

    def _max_file(self, path: Path) -> int | None:
        """json-file's ``max-file`` from ``hostconfig.json`` (None when unknown)."""
        try:
            doc = json.loads(read_bounded(path, MAX_CONFIG_BYTES))
            value = doc["LogConfig"]["Config"].get("max-file", "1")
            return int(value)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def _part(self, doc: dict[str, Any], field: str, directory: Path) -> dict[str, Any]:
        """`doc[field]` when it is an object; anything else is reported and ignored."""
        value = doc.get(field)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.bad("malformed_config", f"{directory / CONFIG}: {field} is not an object")
            return {}
        return value

    def _config(self, path: Path) -> dict[str, Any]:
        """The parsed ``config.v2.json``, or {} (reported) when it is not a JSON object in a
        regular file of at most `MAX_CONFIG_BYTES`. Opened non-blocking and checked with
        fstat, so a FIFO or device in its place never blocks a thread."""
        if not self.allowed(path):
            return {}
        try:
            raw = read_bounded(path, MAX_CONFIG_BYTES)
        except FileNotFoundError:
            return {}
        except SourceError as exc:
            self.bad("malformed_config", f"{path}: {exc}")
            return {}
        except OSError as exc:
            self.unlistable(path, exc)  # EMFILE, EACCES: a later pass reads it
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            self.bad("malformed_config", f"{path}: {exc}")
            return {}
        if not isinstance(data, dict):
            self.bad("malformed_config", f"{path}: not a JSON object")
            return {}
        return data

    def rotating_files(self, path: str) -> tuple[str, tuple[Candidate, ...]] | None:
        """For a log file of container ``<id>`` (live or rotated): the id and its files."""
        key = self.key_for_path(path)
        if key is None or not os.path.basename(path).startswith(f"{key}-json.log"):
            return None
        return key, self._files(key)[0]

    def _files(self, key: str) -> tuple[tuple[Candidate, ...], bool]:
        """The container's log files, oldest first, and whether its directory has entries."""
        directory = self.root / key
        log_name = f"{key}-json.log"
        ages: list[tuple[int, Candidate]] = []
        names = {e.name: e for e in self.entries(directory, stable=True)}
        for name, entry in names.items():
            path = Path(entry.path)
            if name == log_name:
                age: tuple[int, bool] | None = (0, False)
            else:
                age = rotation_index(name, log_name)
            if age is None or not self.allowed(path):
                continue
            number, gz = age
            if gz and f"{log_name}.{number}" in names:
                continue  # dockerd is still compressing it; read the plain file
            ages.append((number, Candidate(path, gz)))
        return tuple(c for _, c in sorted(ages, key=lambda item: -item[0])), bool(names)

    def key_for_path(self, path: str) -> str | None:
        """Events anywhere in ``<root>/<id>/`` concern container ``<id>``."""
        try:
            rel = Path(path).relative_to(self.root)
        except ValueError:
            return None
        return rel.parts[0] if rel.parts else None
