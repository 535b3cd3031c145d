"""The real image as a sidecar: an app container rotates log files into a shared volume, the
archiverd container (uid 10001, `directory` source) archives them; healthy, drained on stop."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy import live
from tests.deploy.test_dockerfile import _instructions
from tests.dockerd import DockerDaemon

pytestmark = [pytest.mark.slow, pytest.mark.docker]

LINES = 1500
ROTATE_EVERY = 500
STOP_TIMEOUT = 60


def write_lines(first: int, count: int) -> str:
    """busybox sh run in the app container: lines first..first+count-1 into this generation's
    file, app-<n>.log (the app rotates by starting a new file; the old ones stay)."""
    generation = first // ROTATE_EVERY
    return (
        f"i={first}; while [ $i -lt {first + count} ]; do "
        'echo "app line $i: the quick brown fox jumps over the lazy dog"'
        f" >> /logs/app-{generation}.log; "
        "i=$((i+1)); done"
    )


def expected_app_log() -> bytes:
    """Exactly the bytes the app writes, across all its rotated files."""
    return b"".join(
        f"app line {i}: the quick brown fox jumps over the lazy dog\n".encode()
        for i in range(LINES)
    )


SIDECAR_CONFIG = f"""\
[[sources]]
kind = "directory"
path = "/logs"
glob = "**/*.log"
rescan_seconds = 1.0

[destination]
url = "file:///bucket"

[schedule]
upload_at = "{live.NEVER}"
splay_seconds = 0
upload_on_shutdown = true
shutdown_timeout_seconds = 30
"""


@pytest.fixture
def names(dockerd: DockerDaemon) -> Iterator[dict[str, str]]:
    """Unique container and volume names; everything is removed afterwards."""
    suffix = secrets.token_hex(4)
    found = {"archiverd": f"sidecar-{suffix}", "app": f"app-{suffix}", "volume": f"logs-{suffix}"}
    yield found
    dockerd.docker("rm", "-f", "-v", found["archiverd"], found["app"], check=False)
    dockerd.docker("volume", "rm", "-f", found["volume"], check=False)


def _metrics(dockerd: DockerDaemon, name: str) -> str:
    """/metrics from inside the container (it has no network but its own loopback)."""
    return dockerd.docker(
        "exec", name, "python", "-c",
        "import urllib.request; print(urllib.request.urlopen("
        "'http://127.0.0.1:9464/metrics', timeout=5).read().decode())",
    )  # fmt: skip


def test_sidecar_archives_a_shared_volume_and_drains_on_stop(
    dockerd: DockerDaemon, archiverd_image: str, names: dict[str, str], tmp_path: Path
) -> None:
    """Rotated files written by another container restore byte for byte after `docker stop`."""
    key = live.keygen(tmp_path / "archive.key", owner=live.SERVICE_UID)
    bucket = tmp_path / "bucket"
    bucket.mkdir(mode=0o700)
    os.chown(bucket, live.SERVICE_UID, live.SERVICE_UID)
    config = tmp_path / "archiverd.toml"
    config.write_text(SIDECAR_CONFIG)
    dockerd.docker("volume", "create", names["volume"])

    dockerd.docker(
        "run", "--detach", "--name", names["archiverd"], "--network", "none",
        "--read-only", "--tmpfs", "/tmp", "--security-opt", "no-new-privileges",
        "--cap-drop", "ALL",
        "--volume", f"{names['volume']}:/logs:ro",
        "--volume", f"{config}:/etc/archiverd/archiverd.toml:ro",
        "--volume", f"{key}:/etc/archiverd/archive.key:ro",
        "--volume", f"{bucket}:/bucket",
        # The image's own HEALTHCHECK command, probed every second instead of every 30 s.
        "--health-interval", "1s", "--health-start-period", "60s",
        "--stop-timeout", str(STOP_TIMEOUT),
        archiverd_image,
    )  # fmt: skip
    inspected = dockerd.inspect(names["archiverd"])
    assert inspected["Config"]["User"] == f"{live.SERVICE_UID}:{live.SERVICE_UID}"
    health_cmd = next(args for word, args in _instructions() if word == "HEALTHCHECK")
    assert inspected["Config"]["Healthcheck"]["Test"] == [
        "CMD",
        *json.loads(health_cmd.split(" CMD ", 1)[1]),
    ]
    live.wait_for(
        "the sidecar turns healthy", lambda: live.health(dockerd, names["archiverd"]) == "healthy"
    )

    # The app: a long-running container writing into the shared volume, a new file every
    # ROTATE_EVERY lines. The test waits until archiverd has read each burst, so the stop
    # below is what seals and uploads.
    dockerd.docker(
        "run", "--detach", "--name", names["app"], "--network", "none",
        "--volume", f"{names['volume']}:/logs", dockerd.image,
        "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done",
    )  # fmt: skip
    expected = expected_app_log()
    for first in range(0, LINES, ROTATE_EVERY):
        dockerd.docker("exec", names["app"], "sh", "-c", write_lines(first, ROTATE_EVERY))
        written = len(b"".join(expected.splitlines(keepends=True)[: first + ROTATE_EVERY]))
        live.wait_for(
            f"archiverd read the app's first {first + ROTATE_EVERY} lines",
            lambda written=written: (
                live.metric_total(
                    _metrics(dockerd, names["archiverd"]), "archiverd_source_bytes_read_total"
                )
                >= written
            ),
        )
    dockerd.docker("stop", names["app"])
    assert list(bucket.iterdir()) == []  # nothing uploaded before the stop: the drain does it

    dockerd.docker("stop", "--time", str(STOP_TIMEOUT), names["archiverd"])
    state = live.container_state(dockerd, names["archiverd"])
    logs = live.logs(dockerd, names["archiverd"])
    assert state["ExitCode"] == 0, logs
    assert "shutdown complete" in logs

    segments = live.restore(f"file://{bucket}", key, tmp_path / "restored")
    assert segments
    assert b"".join(path.read_bytes() for path in segments) == expected
