"""sd_notify against a real AF_UNIX datagram socket named by NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from archiverd.service.systemd import Notifier, watchdog_loop


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket at a short path (AF_UNIX paths are limited to 107 bytes)."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        yield sock, str(path)


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on `sock`."""
    messages = []
    with contextlib.suppress(BlockingIOError):
        while True:
            messages.append(sock.recv(4096).decode())
    return messages


def test_ready_status_and_stopping_reach_the_socket(listener: tuple[socket.socket, str]) -> None:
    """READY=1, STATUS=... and STOPPING=1 arrive as one datagram each, in order."""
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.ready(status="archiving")
    assert notifier.status("3 pending")
    assert notifier.stopping()
    assert received(sock) == ["READY=1\nSTATUS=archiving", "STATUS=3 pending", "STOPPING=1"]


def test_abstract_socket_names_start_with_at() -> None:
    """``@name`` means the abstract namespace (a leading NUL), as systemd passes it."""
    name = f"archiverd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert received(sock) == ["WATCHDOG=1"]


def test_no_notify_socket_is_a_quiet_no_op() -> None:
    """Without NOTIFY_SOCKET nothing is sent and nothing fails."""
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready()


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    """A NOTIFY_SOCKET nobody listens on makes notify return False, never raise."""
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.enabled
    assert not notifier.ready()


@pytest.mark.parametrize(
    ("env", "seconds"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_from_environment(env: dict[str, str], seconds: float | None) -> None:
    """WATCHDOG_USEC sets the interval, unless WATCHDOG_PID names another process."""
    assert Notifier(env).watchdog_seconds == seconds


async def test_watchdog_pings_only_while_healthy(listener: tuple[socket.socket, str]) -> None:
    """Each half-interval tick pings when healthy and stays silent when not."""
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000"})  # 1 ms ticks
    verdicts = [True, False, False, True, True, False]
    stop = asyncio.Event()

    def healthy() -> bool:
        verdict = verdicts.pop(0)
        if not verdicts:
            stop.set()
        return verdict

    await asyncio.wait_for(watchdog_loop(notifier, healthy, stop), timeout=60)
    assert received(sock) == ["WATCHDOG=1"] * 3


async def test_watchdog_loop_returns_without_a_watchdog(
    listener: tuple[socket.socket, str],
) -> None:
    """Without WATCHDOG_USEC the loop returns at once and sends nothing."""
    sock, path = listener
    calls: list[int] = []

    def healthy() -> bool:
        calls.append(1)
        return True

    await watchdog_loop(Notifier({"NOTIFY_SOCKET": path}), healthy, asyncio.Event())
    assert (calls, received(sock)) == ([], [])
