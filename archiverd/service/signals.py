"""Requests to the daemon (stop, reload, flush) and the OS signals that make them.

Signal handlers only record and set events: SIGTERM/SIGINT stop (a second one forces exit at
once: the journal is committed before every side effect, so that is as safe as kill -9),
SIGHUP reloads, SIGUSR1 uploads now. Installing them is optional so tests can embed the daemon.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable


class Requests:
    """The events the `Daemon` waits on, set by signal handlers or by callers (tests)."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.force = asyncio.Event()
        self.reload = asyncio.Event()
        self.flush = asyncio.Event()
        self.stop_reason = ""
        self.force_signal: int = signal.SIGTERM
        self._installed: list[signal.Signals] = []

    def request_stop(self, reason: str, signum: int) -> None:
        """Set `stop`; a second request sets `force` too (exit code 128 + `signum`)."""
        if self.stop.is_set():
            self.stop_reason = f"{self.stop_reason}, then {reason}"
            self.force_signal = signum
            self.force.set()
            return
        self.stop_reason = reason
        self.force_signal = signum
        self.stop.set()

    async def serve_reloads(self, reload: Callable[[], None]) -> None:
        """Call `reload` once per reload request, until cancelled."""
        while True:
            await self.reload.wait()
            self.reload.clear()
            reload()

    def install(self) -> None:
        """Route SIGTERM/SIGINT to a stop, SIGHUP to `reload`, SIGUSR1 to `flush` (running loop)."""
        loop = asyncio.get_running_loop()
        actions: dict[signal.Signals, Callable[[], None]] = {
            signal.SIGTERM: lambda: self.request_stop("SIGTERM", signal.SIGTERM),
            signal.SIGINT: lambda: self.request_stop("SIGINT", signal.SIGINT),
            signal.SIGHUP: self.reload.set,
            signal.SIGUSR1: self.flush.set,
        }
        for signum, action in actions.items():
            loop.add_signal_handler(signum, action)
            self._installed.append(signum)

    def remove(self, keep: int = 0) -> None:
        """Remove installed handlers, newest first, keeping the first `keep` (2: TERM and INT)."""
        loop = asyncio.get_running_loop()
        while len(self._installed) > keep:
            loop.remove_signal_handler(self._installed.pop())
