"""Draining the pipeline: the ``run --once`` pass and shutdown's deadline-bounded steps.

The `Daemon` decides when to drain; these functions do one pass over its running parts and
report counts. Anything not uploaded stays spooled and goes out on the next start.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import structlog

from archiverd.errors import ArchiverError, DestinationError, StateError
from archiverd.service.wiring import Built

log = structlog.get_logger("archiverd.service.drain")


async def once_pass(parts: Built, seal_open: bool) -> int:
    """Seal what is sealable, upload everything pending; `EX_OK` only if nothing is left and
    no stream failed to be read or packed (`EX_SOFTWARE` then: the log says which)."""
    failures_before = parts.collector.failures
    sealed = await parts.collector.seal_all(include_open=seal_open)
    failed_streams = parts.collector.failures - failures_before
    summary = await parts.uploader.upload_pending()
    pending = await count_pending(parts)
    lost = summary.lost
    ok = summary.failed == 0 and pending == 0 and lost == 0 and failed_streams == 0
    log.info(
        "run --once complete" if ok else "run --once incomplete",
        sealed=sealed,
        uploaded=summary.uploaded,
        skipped_existing=summary.skipped_existing,
        failed=summary.failed,
        lost=lost,
        bytes=summary.bytes,
        pending=pending,
        failed_streams=failed_streams,
    )
    if summary.failed or pending:
        return DestinationError.exit_code
    if failed_streams:
        return os.EX_SOFTWARE
    if lost:
        # Everything else went out; the state dir lost data behind archiverd's back.
        return StateError.exit_code
    return os.EX_OK


async def bounded(work: Any, deadline: float, what: str) -> Any:
    """Await a task or coroutine until `deadline` (monotonic); past it cancel, return None.

    Failures are logged, not raised: shutdown must reach the journal close and HTTP close.
    """
    if work is None:
        return None
    task = work if isinstance(work, asyncio.Future) else asyncio.ensure_future(work)
    if task.done() and (task.cancelled() or task.exception() is not None):
        return None  # a pipeline task that already ended; its end was logged then
    try:
        return await asyncio.wait_for(task, timeout=max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        log.warning(f"{what} cancelled at the shutdown timeout; it resumes on the next start")
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # we are being cancelled (forced exit), not just `task`
    except Exception as exc:
        log.error(
            f"{what} failed during shutdown; it resumes on the next start",
            error=str(exc) if isinstance(exc, ArchiverError) else repr(exc),
        )
    return None


async def count_pending(parts: Built) -> int:
    """Packed segments not yet uploaded (the journal may block briefly: off the loop)."""
    return len(await asyncio.to_thread(parts.journal.packed_segments))
