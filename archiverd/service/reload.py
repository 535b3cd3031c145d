"""SIGHUP: which settings a running daemon may take from a re-read configuration.

Only settings that are read where they are used (never captured by a running part) reload:
``log.level``, ``log.format``, ``schedule.upload_at`` and ``schedule.splay_seconds`` (the
upload loop asks the schedule anew for each run), ``schedule.upload_on_shutdown`` and
``schedule.shutdown_timeout_seconds`` (read at shutdown). Everything else is held by the
collector, uploader, destination or HTTP server and needs a restart.
"""

from __future__ import annotations

from typing import Any

import structlog

from archiverd.config import Settings

log = structlog.get_logger("archiverd.service.reload")

RELOADABLE: dict[str, tuple[str, ...]] = {
    "log": ("level", "format"),
    "schedule": ("upload_at", "splay_seconds", "upload_on_shutdown", "shutdown_timeout_seconds"),
}


def merge_reloadable(old: Settings, new: Settings) -> Settings:
    """`old` with the reloadable settings of `new`; logs every other change it ignored."""
    ignored: list[str] = []
    updates: dict[str, Any] = {}
    for section in Settings.model_fields:
        before, after = getattr(old, section), getattr(new, section)
        if before == after:
            continue
        allowed = RELOADABLE.get(section)
        if allowed is None:
            ignored.append(section)
            continue
        changed = [k for k in type(after).model_fields if getattr(after, k) != getattr(before, k)]
        ignored += [f"{section}.{k}" for k in changed if k not in allowed]
        taken = {k: getattr(after, k) for k in changed if k in allowed}
        updates[section] = before.model_copy(update=taken)
    if ignored:
        log.warning("reload: these settings change only on restart", settings=ignored)
    return old.model_copy(update=updates)
