"""Kubernetes (CRI) logs: ``<root>/<ns>_<pod>_<uid>/<container>/<n>.log``.

kubelet rotates ``<n>.log`` to ``<n>.log.<timestamp>`` and may gzip older rotations to
``<n>.log.<timestamp>.gz`` (written as ``<n>.log.<timestamp>.tmp`` first, which is never
read, then renamed). A stream is one container restart ``n``; it is finished when
``<n+1>.log`` appears, removed when its files are gone, and (``run --once``) idle-finished
after ``idle_seconds`` without writes.
"""

from __future__ import annotations

import re
from pathlib import Path

from archiverd.errors import ListingError
from archiverd.sources.base import BaseSource, Candidate, State, StreamInfo

_TMP = ".tmp"
_LOG = re.compile(r"^(?P<n>\d+)\.log(?:\.(?P<ts>[^/]+?))?(?P<gz>\.gz)?$")


class CriSource(BaseSource):
    """Pods under kubelet's ``/var/log/pods``."""

    kind = "cri"

    def discover(self) -> list[StreamInfo]:
        """Every container restart with log files."""
        found = []
        for pod in self.listed(self.root):
            if not pod.is_dir(follow_symlinks=False):
                continue
            for container in self.listed(Path(pod.path)):
                if not container.is_dir(follow_symlinks=False):
                    continue
                try:
                    numbers = {n for n, _, _ in self._logs(Path(container.path))}
                    found += [
                        self.describe(f"{pod.name}/{container.name}/{n}") for n in sorted(numbers)
                    ]
                except ListingError:
                    continue  # reported; the next rescan looks again
        return found

    def _logs(self, directory: Path) -> list[tuple[int, str, Candidate]]:
        out = []
        for entry in self.entries(directory, stable=True):
            match = _LOG.match(entry.name)
            if match is None or entry.name.endswith(_TMP) or not self.allowed(Path(entry.path)):
                continue  # `.tmp`: kubelet's gzip of a rotation, before its rename to .gz
            gz = bool(match["gz"]) and match["ts"] is not None
            ts = match["ts"] or ("" if not match["gz"] else None)
            if ts is None:
                continue
            out.append((int(match["n"]), ts, Candidate(Path(entry.path), gz)))
        return out

    def watched_paths(self, key: str) -> list[Path]:
        """The container directory (rotations, restarts) and the live log."""
        pod_dir, container, number = key.split("/")
        directory = self.root / pod_dir / container
        return [directory, directory / f"{number}.log"]

    def describe(self, key: str) -> StreamInfo:
        """The restart ``<pod dir>/<container>/<n>`` now."""
        pod_dir, container, number = key.split("/")
        n = int(number)
        logs = self._logs(self.root / pod_dir / container)
        files = _files_of(logs, n)
        state: State = "running"
        if not files:
            state = "removed"
        elif any(m > n for m, _, _ in logs):
            state = "finished"
        namespace, _, rest = pod_dir.partition("_")
        pod, _, uid = rest.rpartition("_")
        return StreamInfo(
            key=key,
            container_id=f"{uid or pod_dir}-{container}-{n}",
            format="cri",
            state=state,
            files=files,
            name=f"{namespace}/{pod}/{container}",
            labels={
                "io.kubernetes.pod.namespace": namespace,
                "io.kubernetes.pod.name": pod,
                "io.kubernetes.pod.uid": uid,
                "io.kubernetes.container.name": container,
                "io.kubernetes.container.restart": str(n),
            },
            idle_finishes=True,
            keeps_rotations=True,
        )

    def rotating_files(self, path: str) -> tuple[str, tuple[Candidate, ...]] | None:
        """For a log file of a restart (live or rotated): its key and its files."""
        key = self.key_for_path(path)
        if key is None:
            return None
        pod_dir, container, number = key.split("/")
        return key, _files_of(self._logs(self.root / pod_dir / container), int(number))

    def key_for_path(self, path: str) -> str | None:
        """``<pod>/<container>/<n>.log*`` concerns restart n of that container."""
        try:
            rel = Path(path).relative_to(self.root)
        except ValueError:
            return None
        if len(rel.parts) != 3:
            return None
        match = _LOG.match(rel.parts[2])
        return f"{rel.parts[0]}/{rel.parts[1]}/{match['n']}" if match else None


def _files_of(logs: list[tuple[int, str, Candidate]], n: int) -> tuple[Candidate, ...]:
    """Restart `n`'s files among a container's `logs`, oldest first."""
    mine = [(ts, c) for m, ts, c in logs if m == n]
    plain_ts = {ts for ts, c in mine if not c.gz}
    # While kubelet compresses a rotation both forms exist: read the plain one.
    rotated = sorted((ts, c) for ts, c in mine if ts and not (c.gz and ts in plain_ts))
    live = [c for ts, c in mine if not ts]
    return tuple(c for _, c in rotated) + tuple(live)
