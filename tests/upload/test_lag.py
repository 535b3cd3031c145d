"""The archive-lag bound, its /readyz limit, and the seal-then-upload order of each pass."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from archiverd.config import RotationSettings, ScheduleSettings, Settings
from archiverd.metrics import Metrics
from archiverd.upload.lag import archive_lag, lag_bound, lag_limit, oldest_unarchived
from archiverd.upload.schedule import UploadLoop, UploadSchedule
from tests.fakeclock import FakeClock

T0 = datetime(2026, 11, 23, 10, 7, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("upload_at", "longest"),
    [
        ("*:00,*:30", 30),
        ("*:00", 60),
        ("*:05,*:15", 50),
        ("02:15", 24 * 60),
        ("01:00,23:00", 22 * 60),
    ],
)
def test_longest_interval_between_uploads(upload_at: str, longest: int) -> None:
    """The longest gap between consecutive upload times, across midnight too."""
    schedule = UploadSchedule(ScheduleSettings(upload_at=upload_at, splay_seconds=300), "h")
    assert schedule.longest_interval() == timedelta(minutes=longest)


def test_default_bound_is_one_hour_and_readyz_allows_a_grace() -> None:
    """Defaults: 1500 s age + 1800 s interval + 300 s splay = 1 h; /readyz allows 15 min more."""
    settings = Settings()
    assert lag_bound(settings) == timedelta(hours=1)
    assert lag_limit(settings) == timedelta(hours=1, minutes=15)
    daily = Settings(schedule=ScheduleSettings(upload_at="02:15", splay_seconds=0))
    assert lag_bound(daily) == timedelta(seconds=1500) + timedelta(days=1)


def test_configured_limit_wins_and_age_off_means_no_bound() -> None:
    """An explicit max_archive_lag_seconds is used; with age sealing off there is no bound."""
    explicit = Settings(schedule=ScheduleSettings(max_archive_lag_seconds=600))
    assert lag_limit(explicit) == timedelta(seconds=600)
    off = Settings(rotation=RotationSettings(max_segment_age_seconds=0))
    assert lag_bound(off) is None
    assert lag_limit(off) is None


class _Pending:
    def __init__(self, at: datetime | None) -> None:
        self.at = at

    def oldest_unuploaded_at(self) -> datetime | None:
        return self.at

    def oldest_unsealed(self) -> datetime | None:
        return self.at


def test_lag_is_the_oldest_of_open_and_pending_bytes() -> None:
    """The lag counts from the older of the journal's pending and the collector's open bytes."""
    oldest = oldest_unarchived(_Pending(T0), _Pending(T0 + timedelta(minutes=5)))
    assert oldest == T0
    assert archive_lag(T0 + timedelta(minutes=10), oldest) == 600.0
    assert archive_lag(T0, oldest_unarchived(_Pending(None), _Pending(None))) == 0.0


class _Summary:
    uploaded = skipped_existing = failed = bytes = 0


async def test_every_pass_seals_what_is_due_before_uploading() -> None:
    """Scheduled and flushed passes await `before_pass` (sealing) and only then upload."""
    clock = FakeClock(T0)
    order: list[str] = []

    class Uploader:
        async def upload_pending(self) -> _Summary:
            order.append("upload")
            return _Summary()

    async def seal_due() -> int:
        await asyncio.sleep(0)  # sealing takes a while: the upload must wait for it
        order.append("seal")
        return 1

    schedule = UploadSchedule(ScheduleSettings(upload_at="*:00,*:30", splay_seconds=0), "h")
    loop = UploadLoop(
        Uploader(), schedule, clock, Metrics(), settings=ScheduleSettings(), before_pass=seal_due
    )
    stop, flush = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(loop.run(stop, flush))
    await clock.until_sleeping()
    flush.set()
    await clock.until_sleeping()
    clock.set(T0.replace(minute=30, second=0))
    await clock.until_sleeping()
    assert order == ["seal", "upload", "seal", "upload"]
    stop.set()
    await task


async def test_a_failing_seal_still_uploads_what_is_packed() -> None:
    """If sealing raises, the pass logs it and uploads what is already packed."""
    uploads: list[int] = []

    class Uploader:
        async def upload_pending(self) -> _Summary:
            uploads.append(1)
            return _Summary()

    async def broken() -> int:
        raise OSError("disk gone")

    schedule = UploadSchedule(ScheduleSettings(upload_at="*:00", splay_seconds=0), "h")
    loop = UploadLoop(
        Uploader(),
        schedule,
        FakeClock(T0),
        Metrics(),
        settings=ScheduleSettings(),
        before_pass=broken,
    )
    await loop.run_pass("flush")
    assert uploads == [1]
    assert loop.last_error is None
