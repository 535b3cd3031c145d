"""Helpers for the live deployment tests: keys, configs, restore and waiting on containers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.dockerd import DockerDaemon

ARCHIVERD = Path(sys.executable).parent / "archiverd"
SERVICE_UID = 10001  # the image's USER
# A schedule that never fires during a test, so only a shutdown drain uploads.
NEVER = "04:17"


def keygen(path: Path, *, owner: int | None = None) -> Path:
    """A new master key at `path` (mode 0600), made by the host's `archiverd keygen`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([ARCHIVERD, "keygen", "--out", path], check=True, capture_output=True)
    if owner is not None:
        os.chown(path, owner, owner)
    return path


def wait_for(what: str, probe: Callable[[], bool], timeout: float = 120.0) -> None:
    """Poll `probe` until it is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.5)


def container_state(daemon: DockerDaemon, name: str) -> dict[str, object]:
    """`docker inspect`'s State of a container."""
    state: dict[str, object] = daemon.inspect(name)["State"]
    return state


def health(daemon: DockerDaemon, name: str) -> str:
    """The container's health status (starting, healthy, unhealthy)."""
    found = container_state(daemon, name).get("Health")
    return str(found["Status"]) if isinstance(found, dict) else "none"


def logs(daemon: DockerDaemon, name: str) -> str:
    """A container's stdout and stderr, interleaved (`docker logs`)."""
    done = subprocess.run(
        ["docker", "logs", name],
        env=daemon.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    return done.stdout


def metric_total(metrics_text: str, name: str) -> float:
    """The sum of every sample of `name` in a Prometheus text exposition."""
    total = 0.0
    for line in metrics_text.splitlines():
        if re.match(rf"{re.escape(name)}(\{{|\s)", line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def restore(destination_url: str, key: Path, out: Path, *extra: str, **env: str) -> list[Path]:
    """`archiverd get` every segment from `destination_url` into `out`; the files by seq."""
    config = out.parent / f"{out.name}.toml"
    config.write_text(f'[destination]\nurl = "{destination_url}"\n')
    done = subprocess.run(
        [ARCHIVERD, "--log-format", "json", "get", "--config", config, "--key-file", key,
         "--out", out, *extra],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return sorted(out.glob("*.log"), key=_stream_and_seq)


def _stream_and_seq(path: Path) -> tuple[str, str]:
    """`<who>_<first-ts>_<seq>.log` sorts by who, then sequence number."""
    who, _first_ts, seq = path.name.rsplit("_", 2)
    return who, seq
