"""The real `archiverd run` as a subprocess: endpoints, systemd notify, signals, exit codes."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import S3Server, free_port

pytestmark = pytest.mark.slow  # real servers or processes: seconds each

REPO = Path(__file__).resolve().parents[2]


def write_key(path: Path) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(base64.b64encode(os.urandom(32)) + b"\n")
    return path


def archiverd_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No ARCHIVERD_* from outside; state, key and HTTP port 0 under `tmp_path`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVERD_")}
    key = tmp_path / "archive.key"
    if not key.exists():
        write_key(key)
    env.update(
        ARCHIVERD_STATE__DIR=str(tmp_path / "state"),
        ARCHIVERD_ENCRYPTION__KEY_FILE=str(key),
        ARCHIVERD_HTTP__LISTEN="127.0.0.1:0",
        ARCHIVERD_SCHEDULE__SPLAY_SECONDS="0",
    )
    env.update(extra)
    return env


def archiverd(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archiverd", "--log-format", "json", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn_run(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`archiverd run --config CONFIG` in the background, its JSON log appended to `log`."""
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "archiverd", "--log-format", "json", "run", "--config", config],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


class Running:
    """`archiverd run` in the background, its JSON log in a file."""

    def __init__(self, tmp_path: Path, env: dict[str, str], config: Path) -> None:
        self.log = tmp_path / "daemon.log"
        self.log.write_bytes(b"")  # this run's log alone
        self.process = spawn_run(config, env, self.log)
        self.port = int(str(self.wait_for("http listening")["port"]))

    def events(self) -> list[dict[str, object]]:
        found = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found

    def wait_for(self, event: str, **fields: object) -> dict[str, object]:
        """The first log entry named `event` with `fields`; fails if the process exits first."""
        while True:
            for entry in self.events():
                if entry.get("event") == event and all(
                    entry.get(k) == v for k, v in fields.items()
                ):
                    return entry
            if self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode}:\n{self.log.read_text()}")
            time.sleep(0.05)

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """An abstract-namespace datagram socket standing in for systemd."""
    name = f"archiverd-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        yield sock, "@" + name


def drain(sock: socket.socket) -> list[str]:
    messages = []
    with contextlib.suppress(BlockingIOError):
        while True:
            messages.append(sock.recv(4096).decode())
    return messages


def demo_lines(state: Path) -> list[str]:
    """Every line the demo source wrote, sorted."""
    return sorted(
        line
        for path in (state / "demo").glob("*/*-json.log")
        for line in path.read_text().splitlines()
    )


def test_real_daemon_serves_notifies_and_loses_nothing_on_sigterm(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    """Endpoints answer, READY and watchdog pings reach systemd, SIGTERM drains every line."""
    sock, address = notify_socket
    config = tmp_path / "archiverd.toml"
    config.write_text("")
    env = archiverd_env(tmp_path, NOTIFY_SOCKET=address, WATCHDOG_USEC="200000")
    daemon = Running(tmp_path, env, config)
    try:
        daemon.wait_for("started")
        status, body = daemon.get("/healthz")
        assert (status, json.loads(body)["status"]) == (200, "ok")
        status, body = daemon.get("/readyz")
        assert (status, json.loads(body)["failing"]) == (200, {})
        status, body = daemon.get("/metrics")
        assert status == 200
        assert "archiverd_watched_files" in body
        messages: list[str] = []
        while "WATCHDOG=1" not in messages:
            messages += drain(sock)
            time.sleep(0.05)
    finally:
        code = daemon.stop()
    assert code == 0
    summary = daemon.wait_for("shutdown complete")
    assert (summary["reason"], summary["pending"], summary["failed"]) == ("SIGTERM", 0, 0)
    later = drain(sock)
    assert any(m.startswith("STOPPING=1") for m in later)
    assert messages[0].startswith("READY=1")
    restored = archiverd("get", "--config", str(config), "--out", "-", env=env)
    assert restored.returncode == 0, restored.stderr
    assert sorted(restored.stdout.splitlines()) == demo_lines(tmp_path / "state")


def test_real_daemon_reloads_on_sighup_and_flushes_on_sigusr1(tmp_path: Path) -> None:
    """SIGHUP applies a new [schedule]/[log]; SIGUSR1 runs an upload pass at once."""
    config = tmp_path / "archiverd.toml"
    config.write_text('[schedule]\nupload_at = "03:00"\n')
    env = archiverd_env(tmp_path)
    daemon = Running(tmp_path, env, config)
    try:
        daemon.wait_for("started")
        config.write_text('[schedule]\nupload_at = "*:15"\n[log]\nlevel = "debug"\n')
        daemon.process.send_signal(signal.SIGHUP)
        reloaded = daemon.wait_for("reloaded")
        assert (reloaded["upload_at"], reloaded["log_level"]) == ("*:15", "debug")
        daemon.process.send_signal(signal.SIGUSR1)
        upload_pass = daemon.wait_for("upload pass", trigger="flush")
        assert upload_pass["failed"] == 0
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize(
    ("setup", "code", "message"),
    [
        ("missing_key", 77, "archive.key"),
        ("state_is_a_file", 73, "state.dir"),
        ("bad_config", 78, "schedule.upload_at"),
    ],
)
def test_startup_failures_have_distinct_exit_codes(
    tmp_path: Path, setup: str, code: int, message: str
) -> None:
    """A missing key, an unusable state dir and a bad setting each exit with their own code."""
    config = tmp_path / "archiverd.toml"
    config.write_text("")
    env = archiverd_env(tmp_path)
    if setup == "missing_key":
        (tmp_path / "archive.key").unlink()
    elif setup == "state_is_a_file":
        (tmp_path / "state").write_text("not a directory")
    else:
        config.write_text('[schedule]\nupload_at = "half past"\n')
    result = archiverd("run", "--config", str(config), env=env)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "state" / "bucket").exists()


def test_unversioned_bucket_is_refused(tmp_path: Path, seaweedfs: S3Server) -> None:
    """The daemon will not start on a bucket without versioning (exit 69) and says so."""
    bucket = seaweedfs.make_bucket(versioned=False)
    env = archiverd_env(
        tmp_path,
        ARCHIVERD_DESTINATION__URL=f"s3://{bucket}/logs/",
        ARCHIVERD_DESTINATION__ENDPOINT_URL=seaweedfs.endpoint_url,
        **seaweedfs.env(),
    )
    config = tmp_path / "archiverd.toml"
    config.write_text("")
    result = archiverd("run", "--config", str(config), env=env)
    assert result.returncode == 69, result.stderr
    assert "versioning" in result.stderr.lower()


def test_once_with_unreachable_destination_exits_75(tmp_path: Path) -> None:
    """`run --once` against an S3 endpoint nobody listens on fails as retryable (75)."""
    env = archiverd_env(
        tmp_path,
        ARCHIVERD_DESTINATION__URL="s3://nowhere/logs/",
        ARCHIVERD_DESTINATION__ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        ARCHIVERD_DESTINATION__MAX_ATTEMPTS="1",
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="y",
    )
    config = tmp_path / "archiverd.toml"
    config.write_text("")
    result = archiverd("run", "--config", str(config), "--once", env=env)
    assert result.returncode == 75, result.stderr


def test_once_seal_open_uploads_to_s3_and_restores(tmp_path: Path, seaweedfs: S3Server) -> None:
    """`run --once --seal-open` packs a log directory into a real S3 bucket; `get` returns it."""
    bucket = seaweedfs.make_bucket()
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = [f"2026-11-23T09:00:0{i}Z line {i}" for i in range(5)]
    (logs / "app.log").write_text("".join(line + "\n" for line in lines))
    config = tmp_path / "archiverd.toml"
    config.write_text(f'[[sources]]\nkind = "directory"\npath = "{logs}"\nglob = "*.log"\n')
    env = archiverd_env(
        tmp_path,
        ARCHIVERD_DESTINATION__URL=f"s3://{bucket}/logs/",
        ARCHIVERD_DESTINATION__ENDPOINT_URL=seaweedfs.endpoint_url,
        **seaweedfs.env(),
    )
    once = archiverd("run", "--config", str(config), "--once", "--seal-open", env=env)
    assert once.returncode == 0, once.stderr
    versions = seaweedfs.boto3_client().list_object_versions(Bucket=bucket).get("Versions", [])
    assert len(versions) == 1
    restored = archiverd("get", "--config", str(config), "--out", "-", env=env)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.splitlines() == lines


def test_key_from_systemd_credentials_directory(tmp_path: Path) -> None:
    """With LoadCredential=, the key is found in $CREDENTIALS_DIRECTORY under key_file's name."""
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    write_key(credentials / "archive.key")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("one line\n")
    config = tmp_path / "archiverd.toml"
    config.write_text(f'[[sources]]\nkind = "directory"\npath = "{logs}"\nglob = "*.log"\n')
    env = archiverd_env(
        tmp_path,
        ARCHIVERD_ENCRYPTION__KEY_FILE="/nonexistent/archiverd/archive.key",
        CREDENTIALS_DIRECTORY=str(credentials),
    )
    once = archiverd("run", "--config", str(config), "--once", "--seal-open", env=env)
    assert once.returncode == 0, once.stderr
    restored = archiverd("get", "--config", str(config), "--out", "-", env=env)
    assert (restored.returncode, restored.stdout) == (0, "one line\n")
    without = {k: v for k, v in env.items() if k != "CREDENTIALS_DIRECTORY"}
    assert archiverd("run", "--config", str(config), "--once", env=without).returncode == 77
