"""How the daemon is put together: the defaults that depend on the machine."""

from __future__ import annotations

import pytest

from archiverd.collect.collector import DEFAULT_WORKERS, pack_workers
from archiverd.formats import records
from archiverd.service.wiring import worker_processes


@pytest.mark.parametrize("setting", [0, 1, 3])
@pytest.mark.parametrize("compiled", [True, False])
def test_a_set_worker_count_is_kept(setting: int, compiled: bool) -> None:
    """`worker_processes` set in the config is what runs, compiled scanner or not."""
    assert worker_processes(setting, cpus=4, compiled=compiled) == setting


def test_no_worker_processes_by_default_where_the_scanner_is_compiled() -> None:
    """Unset: the daemon's threads scan and pack where the scanner is compiled (it releases
    the GIL), or on one core; one process per core where the scanner runs in Python."""
    assert worker_processes(None, cpus=4, compiled=True) == 0
    assert worker_processes(None, cpus=1, compiled=False) == 0
    assert worker_processes(None, cpus=4, compiled=False) == pack_workers(DEFAULT_WORKERS) >= 2


def test_this_install_runs_the_compiled_scanners() -> None:
    """Both scanners count in their compiled pass here (so the daemon runs no processes)."""
    assert records.COMPILED
