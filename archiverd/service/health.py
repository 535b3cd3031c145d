"""Is the daemon alive, is it ready: what ``/healthz``, ``/readyz`` and the watchdog ask.

`Health.run` is the heartbeat task: it stamps a monotonic time every second (a blocked or
dead event loop stops stamping, which ``/healthz`` reports), and every few seconds updates
the oldest-pending-age metric and the systemd status line, and re-checks a destination that
was unreachable at start-up. Readiness is computed on request from cached facts, never by
calling the destination.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from datetime import UTC

import structlog

from archiverd.config import Settings
from archiverd.errors import DestinationError
from archiverd.metrics import Metrics
from archiverd.service.systemd import Notifier
from archiverd.service.wiring import Built
from archiverd.spool.space import low_on_space
from archiverd.upload.lag import archive_lag, lag_limit, oldest_unarchived

log = structlog.get_logger("archiverd.service.health")

HEARTBEAT_SECONDS = 1.0
STALE_AFTER_SECONDS = 15.0
HOUSEKEEPING_SECONDS = 10.0
RECHECK_DESTINATION_SECONDS = 60.0


class Health:
    """Liveness and readiness of one running daemon (what `archiverd.service.http.Probes` asks)."""

    def __init__(
        self,
        parts: Built,
        settings: Callable[[], Settings],
        metrics: Metrics,
        notifier: Notifier,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.parts = parts
        self.settings = settings
        self.metrics = metrics
        self.notifier = notifier
        self.monotonic = monotonic
        self.beat = monotonic()
        self.destination_problem: str | None = None
        """Why the destination failed its last check (None: it passed)."""

    def liveness(self) -> str | None:
        """None while the heartbeat is fresh, else how stale it is."""
        age = self.monotonic() - self.beat
        if age > STALE_AFTER_SECONDS:
            return f"event loop heartbeat is {age:.0f}s old (limit {STALE_AFTER_SECONDS:.0f}s)"
        return None

    async def readiness(self) -> dict[str, str | None]:
        """state_dir, destination, uploads, spool, lag: None when passing, else why not."""
        parts, settings = self.parts, self.settings()
        state = await asyncio.to_thread(probe_writable, settings)
        destination = self.destination_problem
        if destination is None and parts.upload_loop.last_error is not None:
            destination = f"last upload failed: {parts.upload_loop.last_error}"
        uploads = None
        if parts.upload_loop.overdue(parts.clock.now()):
            last = parts.upload_loop.last_success
            uploads = (
                f"upload overdue (last success {last.isoformat() if last else 'never'}; "
                f"limit {settings.schedule.overdue_after_seconds}s)"
            )
        spool = None
        if parts.collector.spool_full:
            disk = await asyncio.to_thread(_disk_problem, settings)
            if disk is not None or parts.collector.disk_full:
                spool = (
                    f"disk full: {disk or 'the spool could not be written (no space)'}; "
                    "sealing waits while uploads drain the spool"
                )
            else:
                spool = (
                    f"spool is at its limit (state.spool_max_bytes = "
                    f"{settings.state.spool_max_bytes}); sealing waits for uploads"
                )
        lag = None
        limit = lag_limit(settings)
        if limit is not None:
            seconds = await self._archive_lag()
            if seconds > limit.total_seconds():
                lag = (
                    f"the oldest byte not yet in the bucket is {seconds:.0f}s old (limit "
                    f"{limit.total_seconds():.0f}s, schedule.max_archive_lag_seconds)"
                )
        return {
            "state_dir": state,
            "destination": destination,
            "uploads": uploads,
            "spool": spool,
            "lag": lag,
        }

    async def _archive_lag(self) -> float:
        """Compute the archive lag now and export it."""
        parts = self.parts
        oldest = await asyncio.to_thread(oldest_unarchived, parts.journal, parts.collector)
        seconds = archive_lag(parts.clock.now(), oldest)
        self.metrics.archive_lag.set(seconds)
        limit = lag_limit(self.settings())
        self.metrics.archive_lag_limit.set(limit.total_seconds() if limit is not None else 0)
        return seconds

    async def run(self) -> None:
        """The heartbeat task: runs until cancelled."""
        next_housekeeping = 0.0
        next_recheck = self.monotonic() + RECHECK_DESTINATION_SECONDS
        while True:
            now = self.beat = self.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_SECONDS
                await self._housekeeping()
            if self.destination_problem is not None and now >= next_recheck:
                next_recheck = now + RECHECK_DESTINATION_SECONDS
                await self._recheck_destination()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _housekeeping(self) -> None:
        parts = self.parts
        oldest = await asyncio.to_thread(parts.journal.oldest_pending_sealed_at)
        age = max(0.0, (parts.clock.now() - oldest).total_seconds()) if oldest else 0.0
        self.metrics.oldest_pending_age.set(age)
        await self._archive_lag()
        last = parts.upload_loop.last_success
        self.notifier.status(
            f"archiving; oldest pending {age:.0f}s; last upload "
            + (last.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if last else "never")
        )

    async def _recheck_destination(self) -> None:
        try:
            await self.parts.destination.check()
        except DestinationError as exc:
            self.destination_problem = str(exc)
        else:
            log.info("destination reachable again")
            self.destination_problem = None


def probe_writable(settings: Settings) -> str | None:
    """None when a file can be created in the state dir, else why not."""
    path = settings.state.dir
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as exc:
        return f"state.dir {str(path)!r} is not writable ({exc.strerror})"
    return None


def _disk_problem(settings: Settings) -> str | None:
    """Why the spool's file system has no room for another body (None: it has)."""
    spool = settings.state.dir / "spool"
    try:
        return low_on_space(spool if spool.is_dir() else settings.state.dir)
    except OSError as exc:
        return f"cannot examine {spool} ({exc.strerror})"
