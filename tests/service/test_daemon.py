"""The daemon's lifecycle on injected fakes: start-up checks, endpoints, signals, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from archiverd.config import HttpSettings, LogSettings, ScheduleSettings, Settings
from archiverd.errors import (
    ConfigError,
    DestinationError,
    PermanentDestinationError,
    RetryableDestinationError,
    StateError,
)
from archiverd.metrics import Metrics
from archiverd.service.daemon import Daemon
from tests.service.fakes import Fakes, FixedSchedule, settings_for


def make_daemon(
    fakes: Fakes, settings: Settings, *, handle_signals: bool = False, **kwargs: object
) -> Daemon:
    return Daemon(
        settings,
        handle_signals=handle_signals,
        components=fakes.components(),
        metrics=Metrics(),
        **kwargs,  # type: ignore[arg-type]
    )


async def started(daemon: Daemon) -> asyncio.Task[int]:
    """Run `serve` in a task and return once HTTP is up."""
    task = asyncio.create_task(daemon.serve())
    while daemon.http is None or daemon.http.port == 0:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return task


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(session: aiohttp.ClientSession, daemon: Daemon, path: str) -> tuple[int, str]:
    assert daemon.http is not None
    async with session.get(f"http://127.0.0.1:{daemon.http.port}{path}") as response:
        return response.status, await response.text()


async def test_serve_answers_endpoints_and_shuts_down_in_order(
    state_dir: Path, client: aiohttp.ClientSession
) -> None:
    """A running daemon is live and ready; stop seals, drains, closes HTTP last, exits 0."""
    fakes = Fakes()
    fakes.collector.open_segments = 2
    fakes.collector.add_packed(1)
    daemon = make_daemon(fakes, settings_for(state_dir))
    task = await started(daemon)

    assert await get(client, daemon, "/healthz") == (200, '{"status": "ok"}')
    status, body = await get(client, daemon, "/readyz")
    assert (status, '"failing": {}' in body) == (200, True)
    status, body = await get(client, daemon, "/metrics")
    assert status == 200
    assert 'archiverd_build_info{version="0.1.0"} 1.0' in body
    port = daemon.http.port if daemon.http else 0

    daemon.request_stop("test")
    assert await task == 0
    assert fakes.collector.seal_calls == [True]
    assert fakes.journal.uploaded == [1, 2, 3]
    assert fakes.journal.packed == []
    assert fakes.events[-4:] == [
        "uploader.upload_pending",
        "collector.aclose",
        "destination.close",
        "journal.close",
    ]
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.get(f"http://127.0.0.1:{port}/healthz")


async def test_stop_during_an_upload_finishes_it(state_dir: Path) -> None:
    """A stop while a segment is mid-upload waits for it: nothing is left behind, exit 0."""
    fakes = Fakes()
    fakes.collector.add_packed(2)
    fakes.uploader.gate = asyncio.Event()
    daemon = make_daemon(fakes, settings_for(state_dir))
    task = await started(daemon)
    daemon.request_flush()
    await fakes.uploader.in_upload.wait()

    daemon.request_stop("test")
    await asyncio.sleep(0)
    assert not task.done()
    fakes.uploader.gate.set()
    assert await task == 0
    assert sorted(fakes.journal.uploaded) == [1, 2]
    assert fakes.journal.closed


async def test_shutdown_timeout_keeps_unsent_segments_spooled(state_dir: Path) -> None:
    """An upload still hanging at the timeout is cancelled; its segment stays pending."""
    fakes = Fakes()
    fakes.collector.add_packed(1)
    fakes.uploader.gate = asyncio.Event()  # never opened: the network hangs
    daemon = make_daemon(fakes, settings_for(state_dir, shutdown_timeout_seconds=0.2))
    task = await started(daemon)

    daemon.request_stop("test")
    assert await task == 0
    assert [s.segment_id for s in fakes.journal.packed] == [1]
    assert fakes.journal.uploaded == []
    assert fakes.journal.closed


async def test_second_stop_forces_exit(state_dir: Path) -> None:
    """A second stop while draining cancels the drain and exits 128+SIGTERM at once."""
    fakes = Fakes()
    fakes.collector.add_packed(1)
    fakes.uploader.gate = asyncio.Event()
    daemon = make_daemon(fakes, settings_for(state_dir, shutdown_timeout_seconds=300))
    task = await started(daemon)
    daemon.request_stop("first")
    await fakes.uploader.in_upload.wait()

    daemon.request_stop("second")
    assert await task == 128 + signal.SIGTERM
    assert daemon.forced
    assert [s.segment_id for s in fakes.journal.packed] == [1]
    assert fakes.journal.closed


async def test_no_upload_on_shutdown_checkpoints_instead(state_dir: Path) -> None:
    """With upload_on_shutdown off, open segments stay open and nothing is uploaded."""
    fakes = Fakes()
    fakes.collector.open_segments = 3
    fakes.collector.sealable = 1
    daemon = make_daemon(fakes, settings_for(state_dir, upload_on_shutdown=False))
    task = await started(daemon)
    daemon.request_stop("test")
    assert await task == 0
    assert fakes.collector.seal_calls == [False]
    assert len(fakes.journal.packed) == 1
    assert fakes.uploader.passes == 0


async def test_flush_uploads_now(state_dir: Path) -> None:
    """SIGUSR1 (a flush request) runs an upload pass without waiting for the schedule."""
    fakes = Fakes()
    fakes.collector.add_packed(2)
    daemon = make_daemon(fakes, settings_for(state_dir), handle_signals=True)
    task = await started(daemon)
    os.kill(os.getpid(), signal.SIGUSR1)
    await fakes.upload_loop.ran.wait()
    assert fakes.journal.uploaded == [1, 2]
    os.kill(os.getpid(), signal.SIGTERM)
    assert await task == 0


async def test_sighup_reloads_schedule_and_log_level_only(state_dir: Path) -> None:
    """SIGHUP applies the reloadable settings and keeps every other one as it was."""
    fakes = Fakes()
    settings = settings_for(state_dir)
    new = settings.model_copy(
        update={
            "log": LogSettings(level="debug"),
            "schedule": ScheduleSettings(
                upload_at="*:15", shutdown_timeout_seconds=5, overdue_after_seconds=600
            ),
            "state": settings.state.model_copy(update={"spool_max_bytes": 2 * 1024**2}),
        }
    )
    reloaded = asyncio.Event()

    def load() -> Settings:
        reloaded.set()
        return new

    daemon = make_daemon(fakes, settings, handle_signals=True, load_settings=load)
    task = await started(daemon)
    os.kill(os.getpid(), signal.SIGHUP)
    await reloaded.wait()
    while daemon.settings.schedule.upload_at != "*:15":
        await asyncio.sleep(0.01)

    assert daemon.settings.log.level == "debug"
    assert daemon.settings.schedule.shutdown_timeout_seconds == 5
    assert daemon.settings.schedule.overdue_after_seconds == 7200  # held by the uploader
    assert daemon.settings.state == settings.state
    current = daemon.parts.schedule.current
    assert isinstance(current, FixedSchedule)
    assert current.label == "*:15"
    os.kill(os.getpid(), signal.SIGTERM)
    assert await task == 0


async def test_readyz_names_each_failing_condition(
    state_dir: Path, client: aiohttp.ClientSession
) -> None:
    """Spool full, an overdue upload and a failing destination each make /readyz 503."""
    fakes = Fakes()
    daemon = make_daemon(fakes, settings_for(state_dir))
    task = await started(daemon)
    fakes.collector.spool_full = True
    fakes.upload_loop.is_overdue = True
    fakes.upload_loop.last_error = "503 SlowDown"

    status, body = await get(client, daemon, "/readyz")
    assert status == 503
    assert daemon.health is not None
    failing = (await daemon.health.readiness()).items()
    assert {name for name, why in failing if why} == {"spool", "uploads", "destination"}
    assert "spool_max_bytes" in body
    assert "503 SlowDown" in body
    daemon.request_stop("test")
    assert await task == 0


async def test_healthz_fails_when_the_heartbeat_is_stale(
    state_dir: Path, client: aiohttp.ClientSession
) -> None:
    """/healthz turns 503 when the heartbeat stops advancing (a blocked or dead loop)."""
    now = [1000.0]
    fakes = Fakes()
    daemon = make_daemon(fakes, settings_for(state_dir), monotonic=lambda: now[0])
    task = await started(daemon)
    await asyncio.sleep(0)
    assert (await get(client, daemon, "/healthz"))[0] == 200
    daemon._tasks["heartbeat"].cancel()  # the heartbeat no longer advances
    now[0] += 60
    status, body = await get(client, daemon, "/healthz")
    assert status == 503
    assert "heartbeat is 60s old" in body
    daemon.request_stop("test")
    assert await task == 0


async def test_crashed_pipeline_task_stops_the_daemon(state_dir: Path) -> None:
    """A pipeline task that dies stops the daemon with that error's exit code."""
    fakes = Fakes()
    fakes.collector.crash = StateError("journal is corrupt")
    daemon = make_daemon(fakes, settings_for(state_dir))
    assert await daemon.serve() == StateError.exit_code
    assert fakes.journal.closed


@pytest.mark.parametrize(
    ("problem", "code"),
    [
        (PermanentDestinationError("versioning is not enabled"), 69),
        (RetryableDestinationError("connection refused"), 75),
    ],
)
async def test_once_fails_on_destination_problems(
    state_dir: Path, problem: DestinationError, code: int
) -> None:
    """`run --once` refuses to start on any destination problem, exit code by kind."""
    fakes = Fakes()
    fakes.destination.problem = problem
    daemon = make_daemon(fakes, settings_for(state_dir))
    with pytest.raises(type(problem)) as raised:
        await daemon.run_once()
    assert raised.value.exit_code == code
    assert fakes.journal.closed
    assert fakes.collector.seal_calls == []


async def test_daemon_refuses_unversioned_destination(state_dir: Path) -> None:
    """The daemon does not start when versioning is off, and closes what it opened."""
    fakes = Fakes()
    fakes.destination.problem = PermanentDestinationError("versioning is not enabled")
    daemon = make_daemon(fakes, settings_for(state_dir))
    with pytest.raises(PermanentDestinationError):
        await daemon.serve()
    assert fakes.journal.closed
    assert daemon.http is None


async def test_daemon_starts_while_destination_is_unreachable(
    state_dir: Path, client: aiohttp.ClientSession
) -> None:
    """An unreachable destination does not stop the daemon; /readyz says why it is not ready."""
    fakes = Fakes()
    fakes.destination.problem = RetryableDestinationError("connection refused")
    daemon = make_daemon(fakes, settings_for(state_dir))
    task = await started(daemon)
    status, body = await get(client, daemon, "/readyz")
    assert status == 503
    assert "connection refused" in body
    daemon.request_stop("test")
    assert await task == 0


async def test_unusable_state_dir_is_a_state_error(tmp_path: Path) -> None:
    """A state dir that cannot be created fails start-up with StateError (exit 73)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    fakes = Fakes()
    daemon = make_daemon(fakes, settings_for(blocker / "state"))
    with pytest.raises(StateError, match="cannot be created") as raised:
        await daemon.serve()
    assert raised.value.exit_code == 73


@pytest.mark.parametrize(
    ("fail", "expected"),
    [(False, 0), (True, DestinationError.exit_code)],
)
async def test_run_once_seals_uploads_and_reports(
    state_dir: Path, fail: bool, expected: int
) -> None:
    """`run --once --seal-open` seals open segments and uploads all; any failure is non-zero."""
    fakes = Fakes()
    fakes.collector.open_segments = 2
    fakes.collector.sealable = 1
    fakes.uploader.fail = fail
    daemon = make_daemon(fakes, settings_for(state_dir))
    assert await daemon.run_once(seal_open=True) == expected
    assert fakes.collector.seal_calls == [True]
    assert len(fakes.journal.uploaded) == (0 if fail else 3)
    assert fakes.journal.closed


async def test_run_once_fails_when_a_stream_could_not_be_processed(state_dir: Path) -> None:
    """A stream whose pass failed (an unexpected error, retried later) makes `run --once`
    exit non-zero, although everything else was sealed and uploaded."""
    fakes = Fakes()
    fakes.collector.sealable = 2
    fakes.collector.failing_streams = 1
    daemon = make_daemon(fakes, settings_for(state_dir))
    assert await daemon.run_once() == os.EX_SOFTWARE
    assert len(fakes.journal.uploaded) == 2


async def test_watchdog_withheld_when_pipeline_dies(state_dir: Path) -> None:
    """The watchdog health check fails once a pipeline task is no longer running."""
    fakes = Fakes()
    daemon = make_daemon(fakes, settings_for(state_dir))
    task = await started(daemon)
    await fakes.collector.running.wait()
    healthy: Callable[[], bool] = daemon._healthy
    assert healthy()
    daemon._tasks["collector"].cancel()
    await asyncio.sleep(0)
    assert not healthy()
    daemon.request_stop("test")
    assert await task == 0


class FakeDaemonProcess:
    """`python -m tests.service.fakes` as a real process with real signal handling."""

    def __init__(self, tmp_path: Path, upload_seconds: float, env: dict[str, str]) -> None:
        self.stderr_path = tmp_path / "daemon.log"
        self.stdout_path = tmp_path / "daemon.out"
        state = tmp_path / "state"
        state.mkdir(mode=0o700, exist_ok=True)
        with self.stderr_path.open("wb") as err, self.stdout_path.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.service.fakes", str(state), str(upload_seconds)],
                cwd=REPO,
                stdout=out,
                stderr=err,
                env={**os.environ, **env},
            )

    def wait_for(self, path: Path, needle: str) -> None:
        while needle not in path.read_text():
            if self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode}: {path.read_text()}")
            time.sleep(0.05)

    def kill(self, signum: int) -> None:
        self.process.send_signal(signum)


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sigterm_during_upload_in_a_real_process(tmp_path: Path) -> None:
    """SIGTERM mid-upload: the upload finishes, READY/STOPPING reach systemd, exit 0."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        name = f"archiverd-test-{os.getpid()}-{time.monotonic_ns()}"
        notify.bind("\0" + name)
        proc = FakeDaemonProcess(tmp_path, 1.0, {"NOTIFY_SOCKET": "@" + name})
        proc.wait_for(proc.stderr_path, '"started"')
        proc.kill(signal.SIGUSR1)
        proc.wait_for(proc.stdout_path, '"in_upload"')
        proc.kill(signal.SIGTERM)
        assert proc.process.wait(timeout=60) == 0
        notify.setblocking(False)
        messages = []
        with contextlib.suppress(BlockingIOError):
            while True:
                messages.append(notify.recv(4096).decode())
    exit_line = json.loads(proc.stdout_path.read_text().splitlines()[-1])
    assert exit_line == {"event": "exit", "uploaded": [1], "closed": True}
    assert messages[0].startswith("READY=1\n")
    assert any(m.startswith("STOPPING=1") for m in messages)
    summary = [
        json.loads(line)
        for line in proc.stderr_path.read_text().splitlines()
        if '"shutdown complete"' in line
    ]
    assert len(summary) == 1
    assert (summary[0]["reason"], summary[0]["pending"]) == ("SIGTERM", 0)


@pytest.mark.slow
def test_second_sigterm_forces_exit_of_a_real_process(tmp_path: Path) -> None:
    """A second SIGTERM while an upload hangs ends the process at once with 128+15."""
    proc = FakeDaemonProcess(tmp_path, 3600.0, {})
    proc.wait_for(proc.stderr_path, '"started"')
    proc.kill(signal.SIGUSR1)
    proc.wait_for(proc.stdout_path, '"in_upload"')
    proc.kill(signal.SIGTERM)
    proc.wait_for(proc.stderr_path, '"stopping"')
    proc.kill(signal.SIGTERM)
    assert proc.process.wait(timeout=60) == 128 + signal.SIGTERM
    assert "forced exit" in proc.stderr_path.read_text()
    assert '"exit"' not in proc.stdout_path.read_text()


async def test_http_port_in_use_fails_startup_cleanly(state_dir: Path) -> None:
    """An unbindable http.listen is a ConfigError (78); nothing is left open or running."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        fakes = Fakes()
        settings = settings_for(state_dir).model_copy(
            update={"http": HttpSettings(listen=f"127.0.0.1:{port}")}
        )
        daemon = make_daemon(fakes, settings)
        with pytest.raises(ConfigError, match="cannot be bound") as raised:
            await daemon.serve()
    assert raised.value.exit_code == 78
    assert fakes.journal.closed
    assert "collector.run" not in fakes.events
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("archiverd-")]


async def test_reload_with_a_broken_config_keeps_running_settings(state_dir: Path) -> None:
    """A SIGHUP that reads an invalid file changes nothing and the daemon keeps running."""
    fakes = Fakes()
    settings = settings_for(state_dir)

    def load() -> Settings:
        raise ConfigError("invalid configuration: schedule.upload_at = 'never'")

    daemon = make_daemon(fakes, settings, load_settings=load)
    task = await started(daemon)
    daemon.reload()
    assert daemon.settings == settings
    assert not task.done()
    daemon.request_stop("test")
    assert await task == 0


def test_a_source_root_that_does_not_exist_is_named_at_start(tmp_path: Path) -> None:
    """A source whose path does not exist (a typo, a runtime not installed yet) archives
    nothing until it appears: `run` says so at start, once per such source, as a warning,
    and goes on. (It said nothing, even at info level: a typo archived nothing, silently.)"""
    missing = tmp_path / "no-such-dir"
    key = tmp_path / "archive.key"
    subprocess.run(
        [sys.executable, "-m", "archiverd", "keygen", "--out", str(key)],
        check=True,
        capture_output=True,
    )
    config = tmp_path / "archiverd.toml"
    config.write_text(
        f'[http]\nlisten = "127.0.0.1:0"\n[[sources]]\nkind = "directory"\npath = "{missing}"\n'
        f'[destination]\nurl = "file://{tmp_path / "bucket"}"\nrequire_versioning = false\n'
        f'[encryption]\nkey_file = "{key}"\n[state]\ndir = "{tmp_path / "state"}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "archiverd", "--log-level", "warning", "--log-format", "json",
         "run", "--config", str(config), "--once"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    said = [json.loads(line) for line in done.stderr.decode().splitlines()]
    assert [{k: e.get(k) for k in ("event", "level", "source", "path")} for e in said] == [
        {
            "event": "source path does not exist: nothing is archived from it until it appears",
            "level": "warning",
            "source": "directory",
            "path": str(missing),
        }
    ]
