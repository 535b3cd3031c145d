"""A private, real dockerd for end-to-end tests of the docker source.

The session fixture `dockerd` starts one dockerd with its own data-root, exec-root, pidfile,
socket and containerd namespace (nothing shared with a system Docker or with other test
sessions running at the same time), imports a tiny image made of busybox-static, and stops
everything it started at session end. Containers always run with `--network none`.

The fixture skips (printing dockerd's log tail) only when dockerd cannot start at all; set
`ARCHIVERD_REQUIRE_DOCKERD=1` to turn that skip into a failure (CI on a machine that has it).
A daemon that starts but cannot run containers is a failure, not a skip.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

IMAGE = "archiverd-test/busybox:latest"
BUSYBOX = Path("/bin/busybox")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
CLI_TIMEOUT = 120.0


class DockerdUnavailable(RuntimeError):
    """dockerd (or a tool it needs) cannot start here; the message says why."""


class DockerCommandError(RuntimeError):
    """A docker CLI command failed; carries its exit status and stderr."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        super().__init__(f"docker {' '.join(args)} exited {returncode}: {stderr.strip()}")
        self.returncode = returncode
        self.stderr = stderr


class DockerDaemon:
    """A running private dockerd and the docker CLI bound to it."""

    def __init__(
        self,
        *,
        data_root: Path,
        exec_root: Path,
        socket: Path,
        namespace: str,
        process: subprocess.Popen[bytes],
        daemon_log: Path,
        cli_config: Path,
    ) -> None:
        self.data_root = data_root
        self.exec_root = exec_root
        self.socket = socket
        self.namespace = namespace
        self.process = process
        self.daemon_log = daemon_log  # dockerd's own stdout/stderr
        self.cli_config = cli_config
        self.containers_dir = data_root / "containers"
        self.image = IMAGE

    @property
    def host(self) -> str:
        """The `-H`/`DOCKER_HOST` value of this daemon (unix://...)."""
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        """Environment for a docker CLI subprocess talking only to this daemon."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.cli_config)
        return env

    def docker(self, *args: str, check: bool = True) -> str:
        """Run the docker CLI against this daemon; return stdout (DockerCommandError on failure)."""
        done = subprocess.run(
            ["docker", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        if check and done.returncode != 0:
            raise DockerCommandError(args, done.returncode, done.stderr)
        return done.stdout

    def run_container(
        self,
        script: str,
        *,
        name: str | None = None,
        log_opts: Sequence[str] = (),
        detach: bool = True,
    ) -> str:
        """Start `sh -c script` in the busybox image; return the full container id.

        `log_opts` are json-file options as "key=value" (e.g. "max-size=1k"). With
        `detach=False` this returns only after the container exited.
        """
        args = ["create", "--network", "none", "--log-driver", "json-file"]
        if name is not None:
            args += ["--name", name]
        for opt in log_opts:
            if "=" not in opt or opt.startswith("-"):
                raise ValueError(f"log option {opt!r} must be key=value, e.g. 'max-size=1k'")
            args += ["--log-opt", opt]
        container_id = self.docker(*args, self.image, "sh", "-c", script).strip()
        self.docker("start", container_id)
        if not detach:
            self.wait(container_id)
        return container_id

    def wait(self, container_id: str) -> int:
        """Block until the container exits; return its exit code."""
        return int(self.docker("wait", container_id).strip())

    def rm(self, container_id: str) -> None:
        """`docker rm -f`: remove the container (killing it if still running)."""
        self.docker("rm", "-f", container_id)

    def inspect(self, container_id: str) -> dict[str, Any]:
        """`docker inspect` of one container."""
        found: list[dict[str, Any]] = json.loads(self.docker("inspect", container_id))
        return found[0]

    def log_path(self, container_id: str) -> Path:
        """Where dockerd's json-file driver writes this container's log."""
        return self.containers_dir / container_id / f"{container_id}-json.log"

    def config_path(self, container_id: str) -> Path:
        """This container's `config.v2.json` (rewritten by dockerd with an atomic rename)."""
        return self.containers_dir / container_id / "config.v2.json"

    def wait_stopped_on_disk(self, container_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll `config.v2.json` until it records State.Running false; return it.

        dockerd wakes `docker wait` before it checkpoints the state to disk, so the file can
        lag the exit by a moment.
        """
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                config: dict[str, Any] = json.loads(self.config_path(container_id).read_text())
                if config["State"]["Running"] is False:
                    return config
            if time.monotonic() > deadline:
                raise TimeoutError(f"{container_id}: config.v2.json still says Running")
            time.sleep(0.05)

    def container_ids(self) -> set[str]:
        """Full ids of every container of this daemon, running or not."""
        return set(self.docker("ps", "-aq", "--no-trunc").split())

    def remove_all_containers(self) -> None:
        """Remove every container of this daemon (used at session end)."""
        ids = self.docker("ps", "-aq", "--no-trunc", check=False).split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)

    @contextlib.contextmanager
    def removing_new_containers(self) -> Iterator[None]:
        """Remove (``rm -f``) every container created inside the block when it ends, however
        it ends: a test that fails half-way must not leave containers whose logs the next
        test's collector (watching the same containers directory) would find."""
        before = self.container_ids()
        try:
            yield
        finally:
            left = sorted(self.container_ids() - before)
            if left:
                self.docker("rm", "-f", *left)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no dockerd log: {exc})"


def busybox_rootfs_tar(busybox: Path = BUSYBOX) -> bytes:
    """A tar of a minimal rootfs: /bin/busybox plus a symlink for every applet it has."""
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory, mode in (("bin", 0o755), ("tmp", 0o1777), ("etc", 0o755)):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox" or "/" in applet:
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(link)
    return buf.getvalue()


def start_dockerd(base: Path) -> DockerDaemon:
    """Start a private dockerd rooted at `base` and import the test image.

    overlay2 where the kernel and file system allow it (building an image on vfs copies the
    whole root file system for every Dockerfile instruction: minutes instead of seconds),
    else vfs. Raises DockerdUnavailable when dockerd cannot start; other failures propagate.
    """
    try:
        return _start_dockerd(base / "overlay2", "overlay2")
    except DockerdUnavailable as exc:
        print(f"dockerd with overlay2 failed, using vfs: {exc}")
        return _start_dockerd(base / "vfs", "vfs")


def _start_dockerd(base: Path, storage_driver: str) -> DockerDaemon:
    for tool in ("dockerd", "docker"):
        if shutil.which(tool) is None:
            raise DockerdUnavailable(f"{tool} is not installed (apt-get install docker.io)")
    if not BUSYBOX.exists():
        raise DockerdUnavailable(f"{BUSYBOX} is missing (apt-get install busybox-static)")
    # Unix socket paths are limited to ~108 bytes: keep the exec-root short, under /tmp.
    short = Path(tempfile.mkdtemp(prefix="dkd-", dir="/tmp"))
    data_root = base / "data"
    data_root.mkdir(parents=True)
    cli_config = base / "cli"
    cli_config.mkdir()
    config_file = base / "daemon.json"
    config_file.write_text("{}\n")  # never pick up the host's /etc/docker/daemon.json
    log_path = base / "dockerd.log"
    namespace = f"archiverd-test-{os.getpid()}-{secrets.token_hex(4)}"
    cmd = [
        "dockerd",
        "--config-file", str(config_file),
        "--data-root", str(data_root),
        "--exec-root", str(short / "x"),
        "--pidfile", str(short / "dockerd.pid"),
        "-H", f"unix://{short / 'd.sock'}",
        "--containerd-namespace", namespace,
        "--containerd-plugins-namespace", f"{namespace}-plugins",
        "--iptables=false",
        "--bridge=none",
        "--userland-proxy=false",
        f"--storage-driver={storage_driver}",
        "--log-driver", "json-file",
        "--exec-opt", "native.cgroupdriver=cgroupfs",
        "--shutdown-timeout", "2",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    daemon = DockerDaemon(
        data_root=data_root,
        exec_root=short / "x",
        socket=short / "d.sock",
        namespace=namespace,
        process=process,
        daemon_log=log_path,
        cli_config=cli_config,
    )
    atexit.register(stop_dockerd, daemon)  # a crashed session must not leak a daemon
    deadline = time.monotonic() + START_TIMEOUT
    while daemon.docker("info", "--format", "{{.ServerVersion}}", check=False).strip() == "":
        if process.poll() is not None or time.monotonic() > deadline:
            why = "exited" if process.poll() is not None else f"no answer in {START_TIMEOUT}s"
            stop_dockerd(daemon)
            raise DockerdUnavailable(f"dockerd {why}; log tail:\n{_log_tail(log_path)}")
        time.sleep(0.1)
    try:
        image_tar = base / "busybox-rootfs.tar"
        image_tar.write_bytes(busybox_rootfs_tar())
        daemon.docker("import", "--change", 'CMD ["sh"]', str(image_tar), IMAGE)
    except BaseException:
        stop_dockerd(daemon)
        raise
    return daemon


def pids_matching(*needles: str) -> list[int]:
    """Processes whose command line contains any of `needles`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(needle in cmdline for needle in needles):
            found.append(int(entry.name))
    return found


def stop_dockerd(daemon: DockerDaemon) -> None:
    """Stop the daemon cleanly (SIGTERM, wait, SIGKILL), then reap its shims and mounts."""
    process = daemon.process
    if process.poll() is None:
        daemon.remove_all_containers()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
    # Shims outlive dockerd by design (live-restore); these are only this daemon's.
    address = f"-address {daemon.exec_root}/containerd/"
    leftovers = pids_matching(address, f"-namespace {daemon.namespace} ")
    leftovers += pids_matching(f"{daemon.exec_root}/containerd/containerd.toml")
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    roots = (str(daemon.exec_root), str(daemon.data_root))
    with contextlib.suppress(OSError):
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        for target in sorted((m for m in mounts if m.startswith(roots)), reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    shutil.rmtree(daemon.exec_root.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    """A private real dockerd for the whole session (skips only if dockerd cannot start)."""
    try:
        daemon = start_dockerd(tmp_path_factory.mktemp("dockerd"))
    except DockerdUnavailable as exc:
        if os.environ.get("ARCHIVERD_REQUIRE_DOCKERD") == "1":
            pytest.fail(f"dockerd required but unavailable: {exc}")
        print(f"dockerd unavailable: {exc}")
        pytest.skip(f"dockerd cannot start here: {exc}")
    try:
        yield daemon
    finally:
        stop_dockerd(daemon)
        atexit.unregister(stop_dockerd)


@pytest.fixture(autouse=True)
def _containers_removed(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that uses `dockerd` has the containers it created removed after it, pass
    or fail (`DockerDaemon.removing_new_containers`). Containers of wider-scoped fixtures,
    set up before this one, are left to them."""
    if "dockerd" not in request.fixturenames:
        yield
        return
    daemon: DockerDaemon = request.getfixturevalue("dockerd")
    with daemon.removing_new_containers():
        yield
