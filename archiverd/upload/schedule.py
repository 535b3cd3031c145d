"""When uploads run: wall-clock times plus a per-host splay, and the loop that runs them.

``upload_at = "*:00,*:30"`` means minute 0 and 30 of every hour; ``"02:15"`` means 02:15 every
day. Times are UTC. Each host adds the same splay to every time, a deterministic function of
its host name (SHA-256 mod ``splay_seconds``), so a fleet spreads out over the splay window
and each host's own timing is stable across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from archiverd.clock import Clock
from archiverd.config import ScheduleSettings
from archiverd.logs import error_kind
from archiverd.metrics import Metrics
from archiverd.upload.uploader import UploadSummary

log = structlog.get_logger("archiverd.upload")


def splay_for(host: str, splay_seconds: int) -> int:
    """The deterministic per-host delay, in [0, splay_seconds)."""
    if splay_seconds <= 0:
        return 0
    digest = hashlib.sha256(host.encode()).digest()
    return int.from_bytes(digest[:8], "big") % splay_seconds


class UploadSchedule:
    """Pure: the next upload time after any instant."""

    def __init__(self, settings: ScheduleSettings, host: str) -> None:
        self.times = settings.upload_times
        self.splay = timedelta(seconds=splay_for(host, settings.splay_seconds))

    def next_run(self, now: datetime) -> datetime:
        """The first scheduled time (slot + splay) strictly after `now` (aware datetime)."""
        base = now - self.splay
        best: datetime | None = None
        for at in self.times:
            if at.hour is None:
                slot = base.replace(minute=at.minute, second=0, microsecond=0)
                step = timedelta(hours=1)
            else:
                slot = base.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
                step = timedelta(days=1)
            if slot <= base:
                slot += step
            best = slot if best is None else min(best, slot)
        assert best is not None  # the settings validator guarantees one time at least
        return best + self.splay

    def longest_interval(self) -> timedelta:
        """The longest time between two consecutive upload times (splay is the same for
        every time, so it does not change the gaps)."""
        minutes = sorted(
            {
                (hour * 60 if at.hour is None else at.hour * 60) + at.minute
                for at in self.times
                for hour in (range(24) if at.hour is None else (0,))
            }
        )
        gaps = [b - a for a, b in itertools.pairwise(minutes)]
        gaps.append(minutes[0] + 24 * 60 - minutes[-1])
        return timedelta(minutes=max(gaps))


class Schedule(Protocol):
    """Anything with `next_run` (an `UploadSchedule`, or the daemon's reloadable wrapper)."""

    def next_run(self, now: datetime) -> datetime: ...


class PassRunner(Protocol):
    """The uploader, as the loop sees it."""

    async def upload_pending(self) -> UploadSummary: ...
    def oldest_pending_sealed_at(self) -> datetime | None: ...


class UploadLoop:
    """Runs upload passes at the schedule's times, and at once whenever `flush` is set.

    Each pass first awaits `before_pass` (the collector's `seal_due`: discover, seal what is
    due and pack it), so what is eligible when the pass starts goes out in that pass.

    `run` returns promptly once `stop` is set (a pass in progress is finished first; the
    daemon bounds that with its shutdown timeout). The final upload on shutdown is the
    caller's: `final_upload` (or the uploader's `upload_pending`) after `run` returned.
    """

    def __init__(
        self,
        uploader: PassRunner,
        schedule: Schedule,
        clock: Clock,
        metrics: Metrics,
        *,
        settings: ScheduleSettings,
        before_pass: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.uploader = uploader
        self.before_pass = before_pass
        self.schedule = schedule
        self.clock = clock
        self.metrics = metrics
        self.overdue_after = timedelta(seconds=settings.overdue_after_seconds)
        self.last_success: datetime | None = None
        self.last_error: str | None = None
        self.next_run_at: datetime | None = None
        self.passes = 0

    def overdue(self, now: datetime) -> bool:
        """Pending data older than `overdue_after` while uploads are not succeeding."""
        oldest = self.uploader.oldest_pending_sealed_at()
        if oldest is None or now - oldest <= self.overdue_after:
            return False
        healthy = (
            self.last_error is None
            and self.last_success is not None
            and now - self.last_success <= self.overdue_after
        )
        return not healthy

    async def run(self, stop: asyncio.Event, flush: asyncio.Event) -> None:
        """Sleep until the next scheduled time (or a flush), run a pass, repeat until `stop`."""
        while not stop.is_set():
            self.next_run_at = self.schedule.next_run(self.clock.now())
            log.debug("next upload", at=self.next_run_at.isoformat())
            wake = asyncio.Event()
            relay = asyncio.create_task(_set_when_any(wake, stop, flush))
            try:
                await self.clock.sleep_until(self.next_run_at, wake)
            finally:
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay
            if stop.is_set():
                break
            trigger = "flush" if flush.is_set() else "schedule"
            flush.clear()
            await self.run_pass(trigger)

    async def run_pass(self, trigger: str = "flush") -> None:
        """One pass, recorded in `last_success`/`last_error`; never raises an upload failure."""
        self.passes += 1
        if self.before_pass is not None:
            try:
                await self.before_pass()
            except Exception:  # sealing failed: still upload what is packed
                log.exception("sealing before the upload failed; uploading what is packed")
        try:
            summary = await self.uploader.upload_pending()
        except Exception as exc:  # a journal or programming error must not end the loop
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception(
                "upload pass crashed; retrying at the next scheduled time",
                repeat_key=error_kind(exc),
            )
            return
        if summary.failed:
            # The first segment's error: /readyz shows which destination error is current.
            first = f": {summary.errors[0]}" if summary.errors else ""
            self.last_error = f"{summary.failed} segment(s) failed to upload{first}"
        else:
            self.last_error = None
            self.last_success = self.clock.now()
        log.info(
            "upload pass",
            trigger=trigger,
            uploaded=summary.uploaded,
            existing=summary.skipped_existing,
            failed=summary.failed,
            bytes=summary.bytes,
        )

    async def final_upload(self, timeout_seconds: float) -> bool:
        """The upload-on-shutdown hook: one last pass within `timeout_seconds`; True if done."""
        try:
            async with asyncio.timeout(timeout_seconds):
                await self.run_pass("shutdown")
        except TimeoutError:
            log.warning("shutdown upload cut short; the rest stays spooled for the next start")
            return False
        return self.last_error is None


async def _set_when_any(target: asyncio.Event, *events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        target.set()
    finally:
        for wait in waits:
            wait.cancel()
