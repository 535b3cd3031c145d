"""The `dockerd` fixture runs real containers whose logs land where the docker source looks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.dockerd import (
    DockerCommandError,
    DockerDaemon,
    DockerdUnavailable,
    pids_matching,
    start_dockerd,
    stop_dockerd,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _records(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_container_lines_land_in_json_file_log(dockerd: DockerDaemon) -> None:
    """Lines a container prints appear exactly, in order, in <id>/<id>-json.log."""
    expected = [f"line {i} of the known output" for i in range(25)]
    script = 'for i in $(seq 0 24); do echo "line $i of the known output"; done; echo oops >&2'
    container_id = dockerd.run_container(script, name="known-lines", detach=False)
    try:
        log = dockerd.containers_dir / container_id / f"{container_id}-json.log"
        assert log == dockerd.log_path(container_id)
        records = _records(log)
        stdout = [r["log"] for r in records if r["stream"] == "stdout"]
        assert stdout == [f"{line}\n" for line in expected]
        assert [r["log"] for r in records if r["stream"] == "stderr"] == ["oops\n"]
        assert all(set(r) == {"log", "stream", "time"} for r in records)
        assert all(r["time"].endswith("Z") for r in records)
    finally:
        dockerd.rm(container_id)
    assert not (dockerd.containers_dir / container_id).exists()


def test_config_v2_records_exit(dockerd: DockerDaemon) -> None:
    """After exit, config.v2.json beside the log says Running false with the exit code."""
    container_id = dockerd.run_container("echo bye; exit 3", name="exits-three")
    try:
        assert dockerd.wait(container_id) == 3
        config = dockerd.wait_stopped_on_disk(container_id)
        assert config["ID"] == container_id
        assert config["Name"] == "/exits-three"
        assert config["State"]["Running"] is False
        assert config["State"]["Restarting"] is False
        assert config["State"]["ExitCode"] == 3
        assert config["Config"]["Image"] == dockerd.image
        assert config["LogPath"] == str(dockerd.log_path(container_id))
    finally:
        dockerd.rm(container_id)


def test_running_container_config_says_running(dockerd: DockerDaemon) -> None:
    """A container still running is recorded as Running true until it is removed."""
    container_id = dockerd.run_container("echo started; sleep 300")
    try:
        config = json.loads(dockerd.config_path(container_id).read_text())
        assert config["State"]["Running"] is True
    finally:
        dockerd.rm(container_id)
    assert not dockerd.config_path(container_id).exists()


def test_max_size_rotates_into_numbered_files(dockerd: DockerDaemon) -> None:
    """max-size=1k max-file=3 makes dockerd rotate to .1/.2 keeping a contiguous tail."""
    total = 400
    script = f'for i in $(seq 1 {total}); do echo "rotating line number $i"; done'
    container_id = dockerd.run_container(
        script, log_opts=["max-size=1k", "max-file=3"], detach=False
    )
    try:
        log = dockerd.log_path(container_id)
        rotated = [Path(f"{log}.{n}") for n in (2, 1)]
        assert rotated[1].exists()
        assert rotated[0].exists()
        assert not Path(f"{log}.3").exists()
        kept = [r["log"] for path in [*rotated, log] for r in _records(path)]
        first = int(kept[0].split()[-1])
        assert first > 1  # the oldest lines were rotated away
        assert kept == [f"rotating line number {i}\n" for i in range(first, total + 1)]
        for path in rotated:
            assert path.stat().st_size <= 1024 + 100  # rotation happens after the record
    finally:
        dockerd.rm(container_id)


def test_bad_log_opt_is_refused_before_docker(dockerd: DockerDaemon) -> None:
    """A log option not in key=value form is rejected and no container is created."""
    before = dockerd.docker("ps", "-aq").split()
    with pytest.raises(ValueError, match="must be key=value"):
        dockerd.run_container("true", log_opts=["--log-opt"])
    assert dockerd.docker("ps", "-aq").split() == before


def test_docker_errors_carry_stderr(dockerd: DockerDaemon) -> None:
    """A failing docker command raises with its exit status and dockerd's message."""
    with pytest.raises(DockerCommandError, match="No such container") as caught:
        dockerd.docker("container", "inspect", "no-such-container-archiverd")
    assert caught.value.returncode != 0


def test_missing_dockerd_is_reported_as_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without dockerd on PATH, start_dockerd raises DockerdUnavailable saying what to install."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DockerdUnavailable, match=r"dockerd is not installed \(apt-get"):
        start_dockerd(tmp_path / "base")
    assert not (tmp_path / "base").exists()


def test_stop_leaves_no_daemon_shim_or_mount(
    dockerd: DockerDaemon, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A second private daemon with a running container stops without leftover processes."""
    second = start_dockerd(tmp_path_factory.mktemp("second-dockerd"))
    try:
        container_id = second.run_container("sleep 300")
        assert container_id not in dockerd.docker("ps", "-q", "--no-trunc")
        assert pids_matching(f"-namespace {second.namespace} ")
    finally:
        stop_dockerd(second)
    assert second.process.returncode is not None
    assert pids_matching(f"-namespace {second.namespace} ", str(second.exec_root)) == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(second.data_root) not in mounts
    assert not second.exec_root.exists()


def _fail_half_way(dockerd: DockerDaemon, made: list[str]) -> None:
    with dockerd.removing_new_containers():
        made.append(dockerd.run_container("sleep 300"))
        made.append(dockerd.run_container("true", detach=False))
        raise AssertionError("the test failed half-way")


def test_containers_of_a_failing_block_are_removed(dockerd: DockerDaemon) -> None:
    """`removing_new_containers` (every docker test's teardown) removes the containers made
    in a block that raised, running or exited, and leaves the ones that were there before."""
    kept = dockerd.run_container("true", detach=False)
    made: list[str] = []
    with pytest.raises(AssertionError, match="half-way"):
        _fail_half_way(dockerd, made)
    assert len(made) == 2
    assert dockerd.container_ids() & {kept, *made} == {kept}
    assert not any((dockerd.containers_dir / cid).exists() for cid in made)
    dockerd.rm(kept)
