"""The daemon: one `Daemon` owns every task of `archiverd run`, in three visible phases.

``startup()`` checks what it needs, in order, each failure an `ArchiverError` with its own exit
code: the key (`KeyMaterialError`, 77), the state dir (`StateError`, 73), the destination and
its versioning (`PermanentDestinationError`, 69; unreachable: `RetryableDestinationError`, 75,
fatal for ``--once`` only: the daemon starts anyway, spools, reports not-ready and retries).
Then it starts the collector, the upload loop, HTTP and the heartbeat, and tells systemd
``READY=1``. ``serve()`` waits on the stop event. ``shutdown()`` is bounded and ordered: stop
discovery, seal and journal, drain uploads for up to ``schedule.shutdown_timeout_seconds``
(when ``schedule.upload_on_shutdown``), cancel the rest (it stays in the spool and goes out on
the next start), close HTTP last, and log one summary line.

Signals (with ``handle_signals=True``, see `archiverd.service.signals`) only record and set events;
the ``--once`` pass and the bounded shutdown steps are in `archiverd.service.drain`. Reload (SIGHUP)
applies only what can change under a running pipeline: ``log.level``, ``log.format``,
``schedule.upload_at`` and ``schedule.splay_seconds`` (from the next planned run),
``schedule.upload_on_shutdown`` and ``schedule.shutdown_timeout_seconds``. Everything else
(sources, destination, keys, state, HTTP, the uploader's overdue limit and drain rate) is held
by running parts and needs a restart; a reload that changes it logs which settings and keeps
the old values.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import structlog

from archiverd import __version__
from archiverd.config import Settings
from archiverd.errors import ArchiverError, RetryableDestinationError
from archiverd.logs import configure_logging
from archiverd.metrics import Metrics
from archiverd.service.drain import bounded, count_pending, once_pass
from archiverd.service.health import Health
from archiverd.service.reload import merge_reloadable
from archiverd.service.signals import Requests
from archiverd.service.systemd import Notifier, watchdog_loop
from archiverd.service.wiring import (
    Built,
    Collector,
    Components,
    Journal,
    UploadLoop,
    build_components,
)
from archiverd.upload.schedule import PassRunner as Uploader
from archiverd.upload.uploader import UploadSummary

if TYPE_CHECKING:  # aiohttp is imported only when the endpoints are served (not --once)
    from archiverd.service.http import HttpServer

log = structlog.get_logger("archiverd.service.daemon")


class Daemon:
    """`archiverd run`: `serve()` (startup, wait, shutdown) or `run_once()`.

    Every pipeline part can be injected through `components` (tests pass fakes); the rest is
    built from `settings` in `startup()`. `load_settings` is what SIGHUP re-reads.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        handle_signals: bool = True,
        components: Components | None = None,
        metrics: Metrics | None = None,
        notifier: Notifier | None = None,
        load_settings: Callable[[], Settings] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.notifier = notifier if notifier is not None else Notifier()
        self.handle_signals = handle_signals
        self.exit_code = 0
        self.forced = False
        self.http: HttpServer | None = None
        self._given = components if components is not None else Components()
        self._parts: Built | None = None
        self._load_settings = load_settings
        self._monotonic = monotonic
        self.health: Health | None = None
        self._requests = Requests()
        self._collector_stop = asyncio.Event()
        self._upload_stop = asyncio.Event()
        self._aux_stop = asyncio.Event()
        self._stack = AsyncExitStack()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # -- control (signal handlers and tests) ---------------------------------------------

    def request_stop(self, reason: str = "requested", signum: int = signal.SIGTERM) -> None:
        """Begin a graceful shutdown; a second request forces exit (code 128 + `signum`)."""
        self._requests.request_stop(reason, signum)

    def request_reload(self) -> None:
        """Re-read the settings that can change safely (see the module docstring)."""
        self._requests.reload.set()

    def request_flush(self) -> None:
        """Run an upload now instead of at the next scheduled time."""
        self._requests.flush.set()

    @property
    def parts(self) -> Built:
        """The running components (after `startup`)."""
        if self._parts is None:
            raise RuntimeError("the daemon has not started")
        return self._parts

    # -- phase 1: startup ----------------------------------------------------------------

    async def startup(self, *, once: bool = False) -> None:
        """Check, build and start everything; on failure close what was opened and raise."""
        try:
            await self._startup(once)
        except BaseException:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            await self._stack.aclose()
            if self.http is not None:
                await self.http.aclose()
            raise

    async def _startup(self, once: bool) -> None:
        s = self.settings
        log.info(
            "starting",
            version=__version__,
            mode="once" if once else "daemon",
            sources=[f"{src.kind}:{src.path}" for src in s.effective_sources],
            destination=s.destination_url,
            state_dir=str(s.state.dir),
        )
        for source in s.effective_sources:
            # Not fatal (a runtime installed later creates it), but never silent: a typo
            # would archive nothing. The demo source makes its own.
            if source.kind != "demo" and not source.path.exists():
                log.warning(
                    "source path does not exist: nothing is archived from it until it appears",
                    source=source.kind,
                    path=str(source.path),
                )
        if self.handle_signals:
            self._stack.enter_context(self._requests.installed())
        parts = await build_components(s, self.metrics, self._given, self._stack)
        self._parts = parts
        self.health = health = Health(
            parts, lambda: self.settings, self.metrics, self.notifier, self._monotonic
        )
        try:
            detail = await parts.destination.check()
            log.info("destination ok", detail=detail)
        except RetryableDestinationError as exc:
            if once:
                raise
            health.destination_problem = str(exc)
            log.warning("destination unreachable; spooling until it answers", error=str(exc))
        if once:
            return
        if s.http.listen:
            from archiverd.service.http import HttpServer

            self.http = HttpServer(s.http.listen, health, self.metrics.registry)
            await self.http.start()
            log.info("http listening", host=self.http.host, port=self.http.port)
        self._spawn("collector", parts.collector.run(self._collector_stop), pipeline=True)
        uploads = parts.upload_loop.run(self._upload_stop, self._requests.flush)
        self._spawn("uploads", uploads, pipeline=True)
        self._spawn("control", self._requests.serve_reloads(self.reload))
        self.notifier.ready(status="archiving")
        self._spawn("heartbeat", health.run())
        self._spawn("watchdog", watchdog_loop(self.notifier, self._healthy, self._aux_stop))
        log.info("started")

    def _spawn(self, name: str, coro: Any, *, pipeline: bool = False) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=f"archiverd-{name}")
        self._tasks[name] = task  # strong reference until shutdown
        if pipeline:
            task.add_done_callback(lambda t: self._pipeline_ended(name, t))

    def _pipeline_ended(self, name: str, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._requests.stop.is_set():
            return
        exc = task.exception()
        log.error(
            "pipeline task ended unexpectedly; stopping so the supervisor restarts us",
            task=name,
            error=repr(exc) if exc else "returned",
        )
        self.exit_code = exc.exit_code if isinstance(exc, ArchiverError) else 1
        self.request_stop(f"{name} task ended")

    # -- phase 2: run --------------------------------------------------------------------

    async def serve(self) -> int:
        """Start, run until stopped, shut down; return the exit code."""
        await self.startup()
        await self._requests.stop.wait()
        shutdown = asyncio.create_task(self.shutdown(), name="archiverd-shutdown")
        forced = asyncio.create_task(self._requests.force.wait())
        await asyncio.wait({shutdown, forced}, return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        if not shutdown.done():
            await self._force_exit(shutdown)
        else:
            shutdown.result()
        return self.exit_code

    async def _force_exit(self, shutdown: asyncio.Task[None]) -> None:
        self.forced = True
        if not self.exit_code:
            self.exit_code = 128 + self._requests.force_signal
        shutdown.cancel()
        await asyncio.wait({shutdown}, timeout=2.0)
        tasks = [task for task in self._tasks.values() if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._stack.aclose(), timeout=2.0)
        if self.http is not None:
            await self.http.aclose()
        log.warning(
            "forced exit: remaining work cancelled; spooled segments upload on the next start",
            reason=self._requests.stop_reason,
            exit_code=self.exit_code,
        )
        if self.handle_signals:  # a real process: do not wait for threads still packing
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(self.exit_code)

    async def run_once(self, *, seal_open: bool = False) -> int:
        """Discover, seal what is sealable, pack, upload everything pending; 0 only if all went.

        A stop signal cancels the pass (what is not uploaded stays spooled) and returns 128+N.
        """
        await self.startup(once=True)
        work = asyncio.create_task(once_pass(self.parts, seal_open), name="archiverd-once")
        stopped = asyncio.create_task(self._requests.stop.wait())
        try:
            await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                work.cancel()
                await asyncio.wait({work})
                log.warning("run --once interrupted; unfinished work resumes on the next run")
                return 128 + self._requests.force_signal
            return work.result()
        finally:
            stopped.cancel()
            await self._stack.aclose()

    def reload(self) -> None:
        """Apply reloadable settings from `load_settings`; keep the old ones on any error."""
        if self._load_settings is None:
            log.warning("reload ignored: no configuration source to re-read")
            return
        try:
            new = self._load_settings()
        except ArchiverError as exc:
            log.error("reload failed; keeping the running configuration", error=str(exc))
            return
        old = self.settings
        self.settings = current = merge_reloadable(old, new)
        if current.log != old.log:
            configure_logging(current.log.level, current.log.format)
        if current.schedule != old.schedule and self._parts is not None:
            self._parts.schedule.replace(self._parts.schedule_factory(current.schedule))
        log.info("reloaded", log_level=current.log.level, upload_at=current.schedule.upload_at)

    def _healthy(self) -> bool:
        """For the watchdog: the loop is alive and, until shutdown began, the pipeline too.

        Pings continue through a shutdown (bounded by its own timeout) so that a long drain
        is not mistaken for a hang.
        """
        live = self.health is not None and self.health.liveness() is None
        if self._requests.stop.is_set():
            return live
        pipeline = [self._tasks[name] for name in ("collector", "uploads") if name in self._tasks]
        return live and all(not task.done() for task in pipeline)

    # -- phase 3: shutdown ---------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop discovery, seal, drain uploads within the timeout, close HTTP last, log once."""
        started = time.monotonic()
        schedule = self.settings.schedule
        deadline = started + schedule.shutdown_timeout_seconds
        parts = self.parts
        self.notifier.stopping("stopping: sealing and draining uploads")
        log.info(
            "stopping",
            reason=self._requests.stop_reason,
            timeout_seconds=schedule.shutdown_timeout_seconds,
        )

        sealed: int | None = None
        summary: UploadSummary | None = None
        queued = pending = -1
        try:
            self._collector_stop.set()
            await bounded(self._tasks.get("collector"), deadline, "discovery")
            sealed = await bounded(
                parts.collector.seal_all(include_open=schedule.upload_on_shutdown),
                deadline,
                "seal",
            )
            queued = await count_pending(parts)
            self._upload_stop.set()
            await bounded(self._tasks.get("uploads"), deadline, "upload loop")
            if schedule.upload_on_shutdown:
                summary = await bounded(parts.uploader.upload_pending(), deadline, "final upload")
            pending = await count_pending(parts)
        finally:
            await self._close_all()
        log.info(
            "shutdown complete",
            reason=self._requests.stop_reason,
            sealed=sealed if sealed is not None else "timed out",
            queued=queued,
            uploaded=max(0, queued - pending),
            failed=summary.failed if summary else 0,
            pending=pending,
            seconds=round(time.monotonic() - started, 3),
        )

    async def _close_all(self) -> None:
        """Stop helper tasks, close the pipeline (reverse of opening), then HTTP, last."""
        self._aux_stop.set()
        for name in ("heartbeat", "control", "watchdog"):
            task = self._tasks.get(name)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            await self._stack.aclose()  # collector, destination, journal
        finally:
            if self.http is not None:
                await self.http.aclose()


__all__ = [
    "Collector",
    "Components",
    "Daemon",
    "Journal",
    "UploadLoop",
    "Uploader",
]
