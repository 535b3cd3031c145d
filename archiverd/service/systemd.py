"""systemd integration: ``Type=notify`` readiness, status and watchdog pings (sd_notify).

The protocol is one datagram per message, ``KEY=VALUE`` lines, sent to the AF_UNIX socket named
by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket). Without that variable every
call is a no-op, so the daemon runs the same under systemd, in a container or in a test.

Watchdog: with ``WatchdogSec=`` systemd sets ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``);
`watchdog_loop` pings at half that interval, and only while the caller's health check passes,
so a wedged loop or a dead pipeline task gets the unit restarted.

The key from ``LoadCredential=`` (``$CREDENTIALS_DIRECTORY``) is read by
`archiverd.pack.load_keyring`, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("archiverd.service.systemd")


class Notifier:
    """Sends sd_notify messages to the socket in ``$NOTIFY_SOCKET``; a no-op without one.

    Send failures are logged once and never raised: a missing supervisor must not stop the
    archive.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = self.socket_name = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if raw.startswith("@"):
            self.address = "\0" + raw[1:]  # abstract namespace socket
        elif raw.startswith("/"):
            self.address = raw
        self.watchdog_seconds = _watchdog_seconds(env)
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when a supervisor listens (``$NOTIFY_SOCKET`` set)."""
        return self.address is not None

    def notify(self, **fields: str) -> bool:
        """Send one message (``READY="1"`` becomes ``READY=1``); True if it was delivered."""
        if self.address is None or not fields:
            return False
        payload = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(payload, self.address)
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify failed", error=str(exc), socket=self.socket_name)
                self._warned = True
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """Tell systemd start-up finished (``READY=1``), with an optional status line."""
        return self.notify(READY="1", **({"STATUS": status} if status else {}))

    def stopping(self, status: str = "") -> bool:
        """Tell systemd shutdown began (``STOPPING=1``)."""
        return self.notify(STOPPING="1", **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        """Set the one-line status ``systemctl status`` shows."""
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """One keep-alive ping (``WATCHDOG=1``)."""
        return self.notify(WATCHDOG="1")


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is meant for another process (e.g. our parent shell)
    return int(usec) / 1_000_000


async def watchdog_loop(
    notifier: Notifier, healthy: Callable[[], bool], stop: asyncio.Event
) -> None:
    """Ping ``WATCHDOG=1`` every half watchdog interval while `healthy()`; return on `stop`.

    A missed ping is the point: when the health check fails, systemd's timer runs out and it
    restarts the unit. Returns at once when no watchdog is configured.
    """
    interval = notifier.watchdog_seconds
    if interval is None or not notifier.enabled:
        return
    period = interval / 2
    while not stop.is_set():
        if healthy():
            notifier.watchdog()
        else:
            log.warning("watchdog ping withheld: daemon unhealthy")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=period)
