"""/readyz and the metrics report the archive lag against its limit."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import aiohttp

from tests.service.fakes import T0, Fakes, settings_for
from tests.service.test_daemon import client, get, make_daemon, started

__all__ = ["client"]  # the fixture


async def test_readyz_fails_when_the_archive_lag_passes_its_limit(
    state_dir: Path, client: aiohttp.ClientSession
) -> None:
    """Ready while the oldest unarchived byte is younger than the limit; 503 naming it after."""
    fakes = Fakes()
    daemon = make_daemon(fakes, settings_for(state_dir, max_archive_lag_seconds=3600))
    task = await started(daemon)
    registry = daemon.metrics.registry
    fakes.collector.add_packed(1)  # written at T0, not uploaded
    fakes.clock.current = T0 + timedelta(minutes=30)
    status, _ = await get(client, daemon, "/readyz")
    assert status == 200
    assert registry.get_sample_value("archiverd_archive_lag_seconds") == 1800
    assert registry.get_sample_value("archiverd_archive_lag_limit_seconds") == 3600

    fakes.clock.current = T0 + timedelta(hours=2)
    status, body = await get(client, daemon, "/readyz")
    assert status == 503
    assert "7200s old (limit 3600s" in body
    assert registry.get_sample_value("archiverd_archive_lag_seconds") == 7200
    fakes.journal.packed.clear()  # uploaded
    assert (await get(client, daemon, "/readyz"))[0] == 200
    assert registry.get_sample_value("archiverd_archive_lag_seconds") == 0
    daemon.request_stop("test")
    assert await task == 0
