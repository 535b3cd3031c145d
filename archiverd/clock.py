"""Wall-clock time, injected so schedules and rate limits can be tested without sleeping.

`SystemClock` is the real one. Tests use `tests.fakeclock.FakeClock`, which advances only
when told to (or when a sleeper asks it to jump ahead). Retry backoff is stamina's, switched
off in tests with `stamina.set_testing`.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Timezone-aware UTC time and sleeping that an event can cut short."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep_until(self, when: datetime, wake: asyncio.Event | None = None) -> bool:
        """Sleep until `when` or until `wake` is set; return True when woken by `wake`."""
        ...


class SystemClock:
    """The real clock: `datetime.now(UTC)` and `asyncio` timers."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime, wake: asyncio.Event | None = None) -> bool:
        """Sleep until `when` (wall clock) or until `wake` is set; True when woken."""
        # Re-read the wall clock after each wait so a suspended laptop or an NTP step does
        # not leave us sleeping for a stale interval.
        while True:
            if wake is not None and wake.is_set():
                return True
            remaining = (when - self.now()).total_seconds()
            if remaining <= 0:
                return False
            step = min(remaining, 60.0)
            if wake is None:
                await asyncio.sleep(step)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=step)
