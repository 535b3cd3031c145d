"""Floods the daemon must shrug off: idle HTTP connections under a low fd limit, malformed
requests, repeated errors in hot retry loops (issue 11, item 7)."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog

from tests.service.test_daemon_process import REPO, archiverd, archiverd_env

LINES = [f"2026-11-23T09:00:{i:02d}Z line {i}" for i in range(40)]


def low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))


@pytest.mark.slow
def test_idle_connections_and_malformed_requests_under_ulimit_128(tmp_path: Path) -> None:
    """150 idle connections and 80 malformed requests against a daemon limited to 128 fds:
    no "Too many open files", no traceback, at most a line or two about them, every line
    JSON (aiohttp's was "aiohttp.server: ..."); the daemon stays healthy, exits 0 on SIGTERM
    and every line is restored."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("".join(line + "\n" for line in LINES))
    config = tmp_path / "archiverd.toml"
    config.write_text(f'[[sources]]\nkind = "directory"\npath = "{logs}"\nglob = "*.log"\n')
    env = archiverd_env(tmp_path)
    log_file = tmp_path / "daemon.log"
    with log_file.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "archiverd", "--log-format", "json", "run", "--config",
             str(config)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=low_fd_limit,
        )  # fmt: skip
    clients: list[socket.socket] = []
    try:
        port = 0
        while not port:
            assert process.poll() is None, log_file.read_text()
            for line in log_file.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("event") == "http listening":
                        port = int(entry["port"])
            time.sleep(0.05)
        _malformed(port)  # served: aiohttp logs one line about them
        for _ in range(150):
            clients.append(socket.create_connection(("127.0.0.1", port)))
        _malformed(port)  # with every fd taken
        time.sleep(3)
        assert process.poll() is None, log_file.read_text()
    finally:
        for client in clients:
            client.close()
    time.sleep(1)
    process.terminate()
    assert process.wait(timeout=120) == 0, log_file.read_text()
    text = log_file.read_text()
    assert "Too many open files" not in text, [x for x in text.splitlines() if "open files" in x]
    assert "Traceback" not in text
    flood = [line for line in text.splitlines() if "Error handling request" in line]
    assert len(flood) <= 1
    assert [line for line in text.splitlines() if not _json(line)] == []  # aiohttp's too
    restored = archiverd("get", "--config", str(config), "--out", "-", env=env)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.splitlines() == LINES


def test_repeated_errors_are_written_once_per_interval(capsys: pytest.CaptureFixture[str]) -> None:
    """A hot loop logging the same error (with `repeat_key`) 10,000 times writes one line;
    after the interval the next carries how many were held back; other keys are not held."""
    from archiverd.logs import REPEAT_INTERVAL_SECONDS, Repeats, configure_logging, error_kind

    now = [0.0]
    configure_logging("info", "json")
    limiter = Repeats(clock=lambda: now[0])
    from archiverd import logs

    original, logs.REPEATS = logs.REPEATS, limiter
    try:
        log = structlog.get_logger("test")
        error = OSError(24, "Too many open files")
        for _ in range(10_000):
            log.error("cannot open; will retry", error=str(error), repeat_key=error_kind(error))
        log.error("something else", repeat_key="other")
        now[0] += REPEAT_INTERVAL_SECONDS
        log.error("cannot open; will retry", error=str(error), repeat_key=error_kind(error))
    finally:
        logs.REPEATS = original
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["event"], e.get("repeated")) for e in lines] == [
        ("cannot open; will retry", None),
        ("something else", None),
        ("cannot open; will retry", 9_999),
    ]


def _json(line: str) -> bool:
    """Whether `line` is one JSON object."""
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _malformed(port: int) -> None:
    """40 malformed requests: half with a bad header line, half with one past aiohttp's
    8190 bytes."""
    for header in (b"Bad Header", b"X-Long: " + b"a" * 9000) * 20:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as bad:
            bad.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
            with contextlib.suppress(OSError):
                bad.recv(4096)
