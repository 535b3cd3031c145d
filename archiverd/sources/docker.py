"""Docker json-file logs: ``<root>/<id>/<id>-json.log`` plus dockerd's rotations.

Rotations are ``<id>-json.log.N`` (higher N is older) and ``.N.gz`` with ``compress=true``.
While dockerd compresses ``.N`` into ``.N.gz`` both exist; the ``.gz`` is ignored until the
plain file is gone. Name, image and labels come from ``config.v2.json``, which dockerd
replaces by atomic rename (so the directory is watched, not the file). A container has exited
when ``State.Running`` is false and it is not restarting; the files stay the truth.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from archiverd.sources.base import BaseSource, Candidate, State, StreamInfo, rotation_index

CONFIG = "config.v2.json"


class DockerSource(BaseSource):
    """Containers under a dockerd ``containers`` directory."""

    kind = "docker"

    def discover(self) -> list[StreamInfo]:
        """Every container directory with a json-file log."""
        found = []
        for entry in self.entries(self.root):
            if entry.is_dir(follow_symlinks=False):
                info = self.describe(entry.name)
                if info.files:
                    found.append(info)
            elif entry.is_symlink():
                self.allowed(Path(entry.path))
        return found

    def keys(self) -> list[str]:
        """Container directories (without reading them)."""
        return [e.name for e in self.entries(self.root) if e.is_dir(follow_symlinks=False)]

    def watched_paths(self, key: str) -> list[Path]:
        """Renames/creations change the directory; appends change the live log."""
        directory = self.root / key
        return [directory, directory / f"{key}-json.log", directory / CONFIG]

    def describe(self, key: str) -> StreamInfo:
        """The container `key` (its full id) now."""
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
        files = tuple(c for _, c in sorted(ages, key=lambda item: -item[0]))
        if not names:
            return StreamInfo(key, key, "docker", "removed", ())
        config = self._config(directory / CONFIG)
        state_doc: dict[str, Any] = config.get("State") or {}
        cfg: dict[str, Any] = config.get("Config") or {}
        # A created-but-never-started container is not running either: not an exit yet.
        never_ran = str(state_doc.get("FinishedAt", "")).startswith("0001-")
        exited = (
            bool(config)
            and not state_doc.get("Running")
            and not state_doc.get("Restarting")
            and not never_ran
        )
        state: State = "exited" if exited else "running"
        labels = cfg.get("Labels") or {}
        return StreamInfo(
            key=key,
            container_id=key,
            format="docker",
            state=state,
            files=files,
            name=str(config.get("Name", "")).lstrip("/"),
            image=str(cfg.get("Image", "")),
            labels={str(k): str(v) for k, v in labels.items()},
        )

    def _config(self, path: Path) -> dict[str, Any]:
        if not self.allowed(path):
            return {}
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self.bad("malformed_config", f"{path}: {exc}")
            return {}
        return data if isinstance(data, dict) else {}

    def key_for_path(self, path: str) -> str | None:
        """Events anywhere in ``<root>/<id>/`` concern container ``<id>``."""
        try:
            rel = Path(path).relative_to(self.root)
        except ValueError:
            return None
        return rel.parts[0] if rel.parts else None
