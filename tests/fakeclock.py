"""A `Clock` for tests: time moves only when the test (or an auto-advancing sleep) moves it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta


class FakeClock:
    """`archiverd.clock.Clock` under the test's control.

    With ``auto_advance`` every sleep jumps the clock to its wake-up time at once (backoff
    and rate-limit tests). Without it, sleepers block until `advance`/`set` reaches their time
    or their wake event is set (schedule tests); `until_sleeping` waits for a sleeper.
    """

    def __init__(self, start: datetime, *, auto_advance: bool = False) -> None:
        self._now = start
        self.auto_advance = auto_advance
        self.sleeps: list[datetime] = []
        self.sleeping = 0
        self._seen = 0
        self._tick: asyncio.Event | None = None
        self._arrived: asyncio.Event | None = None

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        """Move time to `when` and wake the sleepers that are due."""
        self._now = when
        if self._tick is not None:
            self._tick.set()
            self._tick = None

    def advance(self, delta: timedelta) -> None:
        self.set(self._now + delta)

    async def until_sleeping(self) -> None:
        """Return once someone started a new sleep (since the last return) and is blocked."""
        for _ in range(10_000):
            if len(self.sleeps) > self._seen and self.sleeping >= 1:
                self._seen = len(self.sleeps)
                return
            await asyncio.sleep(0)
        raise AssertionError("nobody went to sleep")

    async def sleep_until(self, when: datetime, wake: asyncio.Event | None = None) -> bool:
        self.sleeps.append(when)
        if self.auto_advance:
            if wake is not None and wake.is_set():
                return True
            self._now = max(self._now, when)
            return False
        while True:
            if wake is not None and wake.is_set():
                return True
            if self._now >= when:
                return False
            if self._tick is None:
                self._tick = asyncio.Event()
            waits = [asyncio.ensure_future(self._tick.wait())]
            if wake is not None:
                waits.append(asyncio.ensure_future(wake.wait()))
            self.sleeping += 1
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.sleeping -= 1
                for wait in waits:
                    wait.cancel()
