"""SIGHUP's merge: reloadable settings are taken, everything else is kept and reported."""

from __future__ import annotations

from pathlib import Path

from archiverd.config import (
    DestinationSettings,
    LogSettings,
    ScheduleSettings,
    Settings,
    StateSettings,
)
from archiverd.service.reload import merge_reloadable


def test_takes_reloadable_settings_and_keeps_the_rest(tmp_path: Path) -> None:
    """log and schedule timing change; destination, state and the drain rate do not."""
    old = Settings(state=StateSettings(dir=tmp_path))
    new = Settings(
        state=StateSettings(dir=tmp_path / "elsewhere"),
        destination=DestinationSettings(url="s3://other-bucket/"),
        log=LogSettings(level="debug", format="json"),
        schedule=ScheduleSettings(
            upload_at="02:00", splay_seconds=0, max_backlog_bytes_per_second=1000
        ),
    )
    merged = merge_reloadable(old, new)
    assert merged.log == new.log
    assert (merged.schedule.upload_at, merged.schedule.splay_seconds) == ("02:00", 0)
    assert merged.schedule.max_backlog_bytes_per_second == 0
    assert merged.state == old.state
    assert merged.destination == old.destination


def test_unchanged_settings_merge_to_equal_settings(tmp_path: Path) -> None:
    """Reloading an unchanged file changes nothing."""
    old = Settings(state=StateSettings(dir=tmp_path))
    assert merge_reloadable(old, old.model_copy()) == old
