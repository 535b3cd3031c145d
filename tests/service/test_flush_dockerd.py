"""SIGUSR1 against a real dockerd: a container that just exited is archived by that flush."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.dockerd import DockerDaemon
from tests.service.test_daemon_process import Running, archiverd, archiverd_env

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning"),
]


def _flush_passes(daemon: Running, count: int) -> dict[str, object]:
    """The `count`-th upload pass a flush triggered (waits for it)."""
    while True:
        passes = [
            e
            for e in daemon.events()
            if e.get("event") == "upload pass" and e["trigger"] == "flush"
        ]
        if len(passes) >= count:
            return passes[count - 1]
        daemon.wait_for("started")  # fails if the daemon exited
        time.sleep(0.05)


def test_sigusr1_after_docker_run_uploads_the_exited_container(
    dockerd: DockerDaemon, tmp_path: Path
) -> None:
    """SIGUSR1 one second after `docker run` returns, or as soon as dockerd recorded the exit:
    the upload pass of that very flush holds the container's logs."""
    config = tmp_path / "archiverd.toml"
    config.write_text(
        f'[[sources]]\nkind = "docker"\npath = "{dockerd.containers_dir}"\n'
        "rescan_seconds = 3600\n\n"  # only inotify and the flush itself look
        '[schedule]\nupload_at = "03:00"\n'  # no scheduled pass during the test
    )
    env = archiverd_env(tmp_path)
    daemon = Running(tmp_path, env, config)
    names = ["archiverd-flush-1s", "archiverd-flush-now"]
    try:
        daemon.wait_for("started")
        for count, name in enumerate(names, start=1):
            script = f"for i in $(seq 1 300); do echo {name} line $i; done"
            cid = dockerd.run_container(script, name=name, detach=False)
            if count == 1:
                time.sleep(1)
            else:  # the race the flush must win: the exit is on disk, nothing sealed yet
                dockerd.wait_stopped_on_disk(cid)
            daemon.process.send_signal(signal.SIGUSR1)
            upload_pass = _flush_passes(daemon, count)
            assert upload_pass["failed"] == 0
            assert upload_pass["uploaded"] >= 1  # other tests' containers may go along
            # no other pass ran since: what is in the bucket now, that flush put there
            restored = archiverd(
                "get", "--config", str(config), "--container", cid, "--text", "--out", "-", env=env
            )
            assert restored.returncode == 0, restored.stderr
            assert restored.stdout.splitlines() == [f"{name} line {i}" for i in range(1, 301)]
    finally:
        assert daemon.stop() == 0
        for name in names:
            dockerd.docker("rm", "-f", name, check=False)
