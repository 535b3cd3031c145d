"""The inotify watcher asks the kernel only for events that can mean new log data."""

from __future__ import annotations

import threading
from pathlib import Path

from watchdog.observers.inotify_c import InotifyConstants

from archiverd.collect.watch import Watcher


def test_own_reads_queue_no_inotify_events(tmp_path: Path) -> None:
    """Opens and read-only closes are not requested from inotify, so the collector's own
    reads of 10,000 logs cannot overflow the kernel's event queue (each overflow makes
    watchdog walk the whole tree again); writes, creations, moves and deletions still are."""
    seen: list[list[str]] = []
    changed = threading.Event()

    def callback(index: int, paths: list[str]) -> None:
        seen.append(paths)
        changed.set()

    watcher = Watcher(callback)
    assert watcher.watch(0, tmp_path)
    try:
        [emitter] = watcher._observer.emitters
        mask = emitter.get_event_mask_from_filter()
        assert not mask & InotifyConstants.IN_OPEN
        assert not mask & InotifyConstants.IN_CLOSE_NOWRITE
        for wanted in ("IN_MODIFY", "IN_CREATE", "IN_DELETE", "IN_MOVE", "IN_CLOSE_WRITE"):
            assert mask & getattr(InotifyConstants, wanted), wanted
        log = tmp_path / "a-json.log"
        log.write_bytes(b"x\n")
        assert changed.wait(10)
        assert any(str(log) in paths for paths in seen)
    finally:
        watcher.close()
