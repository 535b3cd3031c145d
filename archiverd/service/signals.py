"""Requests to the daemon (stop, reload, flush) and the OS signals that make them.

Signal handlers only record and set events: SIGTERM/SIGINT stop (a second one forces exit at
once: the journal is committed before every side effect, so that is as safe as kill -9),
SIGHUP reloads, SIGUSR1 uploads now. Installing them is optional so tests can embed the daemon.
This module is the only place handlers are installed or removed: `Requests.installed` for
the daemon's lifetime, and the first stop request drops SIGHUP/SIGUSR1 (shutdown neither
reloads nor flushes; TERM/INT stay, so a second one forces exit).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_STOPS = (signal.SIGTERM, signal.SIGINT)


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
        self._loop: asyncio.AbstractEventLoop | None = None

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
        self._remove(keep=len(_STOPS))

    async def serve_reloads(self, reload: Callable[[], None]) -> None:
        """Call `reload` once per reload request, until cancelled."""
        while True:
            await self.reload.wait()
            self.reload.clear()
            reload()

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Within the block, SIGTERM/SIGINT stop, SIGHUP reloads, SIGUSR1 flushes (this loop)."""
        self._loop = loop = asyncio.get_running_loop()
        actions: dict[signal.Signals, Callable[[], None]] = {
            signal.SIGTERM: lambda: self.request_stop("SIGTERM", signal.SIGTERM),
            signal.SIGINT: lambda: self.request_stop("SIGINT", signal.SIGINT),
            signal.SIGHUP: self.reload.set,
            signal.SIGUSR1: self.flush.set,
        }
        try:
            for signum, action in actions.items():
                loop.add_signal_handler(signum, action)
                self._installed.append(signum)
            yield
        finally:
            self._remove(keep=0)

    def _remove(self, keep: int) -> None:
        """Remove installed handlers, newest first, keeping the first `keep` (TERM and INT)."""
        while self._loop is not None and len(self._installed) > keep:
            self._loop.remove_signal_handler(self._installed.pop())
