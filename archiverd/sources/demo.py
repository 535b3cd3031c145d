"""The ``demo`` source: fake containers writing Docker json-file logs, so a first
``archiverd run`` with no configuration shows archives appear.

It is a `DockerSource` over its own ``path`` plus a writer: a long-running ``demo-web``
container that logs a request line every second, and a ``demo-job`` container (a new one on
every start) that logs a few lines and exits, which seals and packs its segment.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from archiverd.fsutil import ensure_private_dir
from archiverd.sources.docker import CONFIG, DockerSource

JOB_LINES = 20
INTERVAL_SECONDS = 1.0


def _container_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


class DemoSource(DockerSource):
    """Docker-shaped demo logs under `path`."""

    kind = "demo"
    interval_seconds = INTERVAL_SECONDS
    job_lines = JOB_LINES

    async def background(self, stop: asyncio.Event) -> None:
        """Write the demo containers' logs until `stop` is set."""
        ensure_private_dir(self.root)
        web = _container_id("demo-web")
        job = _container_id(f"demo-job-{time.time_ns()}")
        self._write_config(web, "demo-web", running=True)
        self._write_config(job, "demo-job", running=True)
        tick = 0
        while not stop.is_set():
            tick += 1
            self._write(web, f"GET /items/{tick} 200 {tick % 17}ms\n")
            if tick <= self.job_lines:
                self._write(job, f"job step {tick}/{self.job_lines} done\n")
                if tick == self.job_lines:
                    self._write_config(job, "demo-job", running=False)
            try:
                await asyncio.wait_for(stop.wait(), self.interval_seconds)
            except TimeoutError:
                continue

    def _write(self, container_id: str, text: str) -> None:
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
        line = json.dumps({"log": text, "stream": "stdout", "time": ts}, separators=(",", ":"))
        path = self.root / container_id / f"{container_id}-json.log"
        with path.open("ab") as out:
            out.write(line.encode() + b"\n")

    def _write_config(self, container_id: str, name: str, *, running: bool) -> None:
        directory = ensure_private_dir(self.root / container_id)
        doc: dict[str, Any] = {
            "ID": container_id,
            "Name": f"/{name}",
            "Config": {"Image": "archiverd/demo:latest", "Labels": {"demo": "true"}},
            "State": {"Running": running, "Restarting": False},
        }
        temp = directory / f".{CONFIG}.tmp"
        temp.write_bytes(json.dumps(doc).encode())
        os.replace(temp, directory / CONFIG)  # like dockerd: atomic rename


def demo_root(state_dir: Path) -> Path:
    """Where the embedded default demo source writes."""
    return state_dir / "demo"
