"""UploadSchedule (pure) and UploadLoop driven by a fake clock: no sleeping."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from archiverd.config import ScheduleSettings
from archiverd.metrics import Metrics
from archiverd.upload.schedule import UploadLoop, UploadSchedule, splay_for
from archiverd.upload.uploader import UploadSummary
from tests.fakeclock import FakeClock

T0 = datetime(2026, 11, 23, 10, 7, 12, tzinfo=UTC)
DENIED = "PUT s3://b/k: AccessDenied Access Denied: missing IAM permission: grant s3:PutObject"


def _at(upload_at: str, splay_seconds: int) -> ScheduleSettings:
    return ScheduleSettings(upload_at=upload_at, splay_seconds=splay_seconds)


def test_half_hourly_without_splay() -> None:
    """`*:00,*:30` with no splay runs at the next :00 or :30, strictly after now."""
    schedule = UploadSchedule(_at("*:00,*:30", 0), "host-a")
    assert schedule.next_run(T0) == T0.replace(minute=30, second=0)
    at_slot = T0.replace(minute=30, second=0)
    assert schedule.next_run(at_slot) == T0.replace(hour=11, minute=0, second=0)
    assert schedule.next_run(T0.replace(minute=59)) == T0.replace(hour=11, minute=0, second=0)


def test_splay_is_added_to_every_slot_and_stable() -> None:
    """Each host's splay is a fixed hash of its name below splay_seconds, added to each slot."""
    splay = splay_for("host-a", 300)
    assert 0 <= splay < 300
    assert splay == splay_for("host-a", 300)
    schedule = UploadSchedule(_at("*:00,*:30", 300), "host-a")
    first = schedule.next_run(T0)
    assert first == T0.replace(minute=30, second=0) + timedelta(seconds=splay)
    assert schedule.next_run(first) == T0.replace(hour=11, minute=0, second=0) + timedelta(
        seconds=splay
    )


def test_splay_spreads_a_fleet() -> None:
    """Different host names get different splays (a fleet does not stampede)."""
    splays = {splay_for(f"node-{i:04d}", 300) for i in range(1000)}
    assert len(splays) > 250


def test_a_run_inside_the_splay_window_is_still_due() -> None:
    """Just after :30 but before :30+splay, the :30 run has not happened yet."""
    schedule = UploadSchedule(_at("*:00,*:30", 600), "host-b")
    splay = timedelta(seconds=splay_for("host-b", 600))
    slot = T0.replace(minute=30, second=0)
    assert schedule.next_run(slot + splay / 2) == slot + splay


def test_daily_times_roll_over_midnight() -> None:
    """`HH:MM` times are daily (UTC) and roll over to the next day."""
    schedule = UploadSchedule(_at("02:15,23:50", 0), "h")
    late = datetime(2026, 12, 31, 23, 55, tzinfo=UTC)
    assert schedule.next_run(late) == datetime(2027, 1, 1, 2, 15, tzinfo=UTC)
    assert schedule.next_run(late.replace(hour=3)) == datetime(2026, 12, 31, 23, 50, tzinfo=UTC)


class _FakeUploader:
    """Counts passes; fails while `fail` is set; reports a pending segment's age."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.pass_times: list[datetime] = []
        self.fail = False
        self.pending_since: datetime | None = None

    async def upload_pending(self) -> UploadSummary:
        self.pass_times.append(self.clock.now())
        if self.fail:
            return UploadSummary(failed=1, errors=[DENIED])
        return UploadSummary(uploaded=1)

    def oldest_pending_sealed_at(self) -> datetime | None:
        return self.pending_since


@pytest.fixture
def loop_parts() -> tuple[FakeClock, _FakeUploader, UploadLoop]:
    clock = FakeClock(T0)
    uploader = _FakeUploader(clock)
    schedule = UploadSchedule(_at("*:00,*:30", 0), "h")
    loop = UploadLoop(uploader, schedule, clock, Metrics(), settings=ScheduleSettings())
    return clock, uploader, loop


async def test_loop_runs_at_each_scheduled_time(
    loop_parts: tuple[FakeClock, _FakeUploader, UploadLoop],
) -> None:
    """The loop sleeps until :30, runs a pass, then sleeps until :00 and runs again."""
    clock, uploader, loop = loop_parts
    stop, flush = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(loop.run(stop, flush))
    await clock.until_sleeping()
    assert uploader.pass_times == []
    assert loop.next_run_at == T0.replace(minute=30, second=0)
    clock.set(T0.replace(minute=30, second=0))
    await clock.until_sleeping()
    assert uploader.pass_times == [T0.replace(minute=30, second=0)]
    assert loop.next_run_at == T0.replace(hour=11, minute=0, second=0)
    clock.set(T0.replace(hour=11, minute=0, second=5))
    await clock.until_sleeping()
    assert len(uploader.pass_times) == 2
    assert loop.last_success == T0.replace(hour=11, minute=0, second=5)
    stop.set()
    await task


async def test_flush_runs_a_pass_now(
    loop_parts: tuple[FakeClock, _FakeUploader, UploadLoop],
) -> None:
    """Setting flush runs a pass at once without moving the clock, then the schedule resumes."""
    clock, uploader, loop = loop_parts
    stop, flush = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(loop.run(stop, flush))
    await clock.until_sleeping()
    flush.set()
    await asyncio.sleep(0)
    await clock.until_sleeping()
    assert uploader.pass_times == [T0]
    assert not flush.is_set()
    assert loop.next_run_at == T0.replace(minute=30, second=0)
    stop.set()
    await task
    assert len(uploader.pass_times) == 1


async def test_stop_ends_the_loop_without_a_pass(
    loop_parts: tuple[FakeClock, _FakeUploader, UploadLoop],
) -> None:
    """Stop wakes the sleeping loop, which returns without uploading (the daemon drains)."""
    clock, uploader, loop = loop_parts
    stop, flush = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(loop.run(stop, flush))
    await clock.until_sleeping()
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert uploader.pass_times == []


async def test_final_upload_hook_runs_one_pass(
    loop_parts: tuple[FakeClock, _FakeUploader, UploadLoop],
) -> None:
    """The upload-on-shutdown hook runs one pass and reports whether it succeeded."""
    _clock, uploader, loop = loop_parts
    assert await loop.final_upload(5.0) is True
    uploader.fail = True
    assert await loop.final_upload(5.0) is False
    assert len(uploader.pass_times) == 2


async def test_failures_make_old_pending_data_overdue(
    loop_parts: tuple[FakeClock, _FakeUploader, UploadLoop],
) -> None:
    """Overdue only when pending data is older than the limit and uploads are not succeeding."""
    clock, uploader, loop = loop_parts
    uploader.pending_since = T0 - timedelta(hours=3)
    assert loop.overdue(clock.now())  # never succeeded
    await loop.run_pass()
    assert loop.last_error is None
    assert not loop.overdue(clock.now())  # draining fine: old backlog is not "overdue"
    uploader.fail = True
    await loop.run_pass()
    assert loop.last_error == f"1 segment(s) failed to upload: {DENIED}"  # which error
    assert loop.overdue(clock.now())
    uploader.pending_since = T0 - timedelta(minutes=10)
    assert not loop.overdue(clock.now())
    uploader.pending_since = None
    assert not loop.overdue(clock.now())
