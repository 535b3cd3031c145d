"""`archiverd run` killed with SIGKILL again and again, as a process, while containers of a
real dockerd write and rotate and while flushes upload to SeaweedFS: once it is left to run
and stopped, `verify` finds the archive complete and `get` gives each container every line,
once, in order."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import servers
from tests.dockerd import DockerDaemon
from tests.service.test_daemon_process import archiverd, archiverd_env, spawn_run

pytestmark = [
    pytest.mark.docker,
    pytest.mark.s3,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning"),
]

LINES = 30_000
CONTAINERS = 4
KILLS = 6
"""At least; more while the containers still write."""
PAD = "k" * 50


@pytest.fixture
def seaweedfs(tmp_path: Path) -> Iterator[servers.S3Server]:
    server = servers.start_seaweedfs(tmp_path / "seaweedfs")
    try:
        yield server
    finally:
        servers.stop(server)


def _writer(tag: str) -> str:
    """`LINES` numbered lines in bursts of 500, a tenth of a second apart (several seconds)."""
    burst = f"awk -v s=$i 'BEGIN{{for(j=s;j<s+500;j++) printf \"{tag} %d {PAD}\\n\", j}}'"
    return f"i=0; while [ $i -lt {LINES} ]; do {burst}; i=$((i+500)); usleep 100000; done"


def _line_numbers(restored: str) -> list[int]:
    return [int(json.loads(record)["log"].split()[1]) for record in restored.splitlines()]


def _archiving(
    tmp_path: Path,
    dockerd: DockerDaemon,
    seaweedfs: servers.S3Server,
    *,
    source: str = "",
    sections: str = "",
) -> tuple[Path, dict[str, str], Path]:
    """A daemon's config archiving `dockerd`'s containers into a new bucket of `seaweedfs`
    (`source`: more keys of the source, `sections`: more TOML), uploading only when flushed
    and on shutdown; its environment; its log file."""
    bucket = seaweedfs.make_bucket()
    config = tmp_path / "archiverd.toml"
    config.write_text(
        f'host = "kill9"\n[[sources]]\nkind = "docker"\npath = "{dockerd.containers_dir}"\n'
        f"{source}"
        f'[destination]\nurl = "s3://{bucket}/a/"\nendpoint_url = "{seaweedfs.endpoint_url}"\n'
        'addressing_style = "path"\n'
        f"{sections}"
        '[schedule]\nupload_at = "03:00"\n'
    )
    return config, archiverd_env(tmp_path, **seaweedfs.env()), tmp_path / "daemon.log"


def _stop_once_exited(
    daemon: subprocess.Popen[bytes], dockerd: DockerDaemon, cids: list[str], log: Path
) -> None:
    """Once every container exited 0 and a pass saw it: SIGTERM (the upload on shutdown),
    and the daemon must exit 0."""
    for cid in cids:
        assert dockerd.wait(cid) == 0
    time.sleep(3)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=120) == 0, log.read_text()[-3000:]


def _assert_complete(config: Path, env: dict[str, str], cids: list[str], lines: int) -> None:
    """`verify` says complete, and `get` gives each container lines 0 to `lines` - 1, once,
    in order."""
    verified = archiverd("verify", "--config", str(config), env=env)
    assert verified.returncode == 0, verified.stdout[-2000:] + verified.stderr[-2000:]
    assert "verified: complete" in verified.stdout
    for cid in cids:
        restored = archiverd(
            "get", "--config", str(config), "--container", cid, "--out", "-", env=env
        )
        assert restored.returncode == 0, restored.stderr[-2000:]
        assert _line_numbers(restored.stdout) == list(range(lines)), cid


def test_sigkill_at_random_points_loses_and_repeats_nothing(
    dockerd: DockerDaemon, seaweedfs: servers.S3Server, tmp_path: Path
) -> None:
    """Killed every 0.2-0.9 s (at least `KILLS` times, and until the containers exit), often
    just after SIGUSR1 started an upload, restarted at once (so sometimes killed before it
    finished starting): 4 containers writing 30,000 lines through max-size=100k rotations
    (plain and compress=true) that a large max-file keeps, segments of 200 kB, a versioned
    bucket."""
    rng = random.Random(20261202)
    config, env, log = _archiving(
        tmp_path,
        dockerd,
        seaweedfs,
        source="rescan_seconds = 2\n",
        sections="[rotation]\nmax_segment_bytes = 200000\n",
    )
    daemon = spawn_run(config, env, log)
    try:
        time.sleep(1)
        cids = [
            dockerd.run_container(
                _writer(f"c{n}"),
                name=f"archiverd-kill9-{n}",
                log_opts=["max-size=100k", "max-file=1000", f"compress={str(n % 2 == 1).lower()}"],
            )
            for n in range(CONTAINERS)
        ]
        kills = 0
        deadline = time.monotonic() + 240
        while kills < KILLS or any(dockerd.inspect(cid)["State"]["Running"] for cid in cids):
            assert time.monotonic() < deadline, "the containers are still running after 4 min"
            time.sleep(rng.uniform(0.2, 0.9))
            if rng.random() < 0.6:
                daemon.send_signal(signal.SIGUSR1)  # an upload pass, then killed during it
                time.sleep(rng.uniform(0.0, 0.6))
            daemon.kill()
            daemon.wait()
            kills += 1
            time.sleep(rng.uniform(0.0, 0.5))
            daemon = spawn_run(config, env, log)
        _stop_once_exited(daemon, dockerd, cids, log)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()

    _assert_complete(config, env, cids, LINES)


def test_sigkill_after_dockerd_deleted_read_files_loses_nothing(
    dockerd: DockerDaemon, seaweedfs: servers.S3Server, tmp_path: Path
) -> None:
    """A container writes a burst through max-size=100k max-file=3 rotations (plain and
    compress=true), so dockerd deletes files archiverd has read while it runs, and pauses;
    archiverd is killed in the pause and started again at once, and the container writes a
    second burst and exits: every line of both bursts is archived, and `verify` says complete.
    (The read bytes of the deleted files were in no segment yet and lived only in the killed
    process's fds: the restarted daemon waited for the deleted files, then recorded their
    bytes lost.)"""
    half = 6_000  # lines a burst: about 0.8 MB over 3-4 s, 8 rotations, 5 files deleted
    burst = (
        f"i=$s; while [ $i -lt $((s+{half})) ]; do "
        f"awk -v s=$i 'BEGIN{{for(j=s;j<s+100;j++) printf \"b %d {PAD}\\n\", j}}'; "
        "i=$((i+100)); usleep 50000; done"
    )
    writer = f"s=0; {burst}; sleep 10; s={half}; {burst}"
    config, env, log = _archiving(tmp_path, dockerd, seaweedfs)
    daemon = spawn_run(config, env, log)
    try:
        time.sleep(1)
        cids = [
            dockerd.run_container(
                writer,
                name=f"archiverd-kill9-deleted-{compress}",
                log_opts=["max-size=100k", "max-file=3", f"compress={compress}"],
            )
            for compress in ("false", "true")
        ]
        time.sleep(7)  # the first burst is written, rotated and read: the pause has begun
        daemon.kill()
        daemon.wait()
        daemon = spawn_run(config, env, log)
        _stop_once_exited(daemon, dockerd, cids, log)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()

    _assert_complete(config, env, cids, 2 * half)
