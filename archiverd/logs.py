"""structlog, configured once at the entry point.

JSON lines when stderr is not a terminal (journald, containers), colored console otherwise.
Context such as ``container_id`` and ``segment`` is bound with `structlog.contextvars`.

Repeated lines are rate-limited in one place (`Repeats`): a structlog call that passes
``repeat_key=...`` (the hot retry loops: EMFILE, ENOSPC, a journal that cannot commit) is
written at most once per `REPEAT_INTERVAL_SECONDS` per event and key, the next one carrying
``repeated=N`` (how many were held back). The library loggers that can flood (``asyncio``'s
accept errors, ``aiohttp.server``'s one traceback per malformed request) go through
`RepeatFilter`: one line, no traceback, the same limit.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]


def configure_logging(
    level: LogLevel = "info", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Route structlog (and stdlib logging from libraries) to `stream` (default stderr)."""
    out = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            drop_repeats,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Library loggers (botocore, aiohttp) only speak up for warnings, in the same format.
    handler = _LibraryHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _LibraryHandler)]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in FLOODING_LOGGERS:
        library = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in library.filters):
            library.addFilter(RepeatFilter())


class _LibraryHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root logger's handler set by `configure_logging` (replaced when it runs again)."""


REPEAT_INTERVAL_SECONDS = 60.0
FLOODING_LOGGERS = ("asyncio", "aiohttp.server", "aiohttp.web")


class Repeats:
    """Let one line per key through every `interval` seconds and count the ones held back."""

    def __init__(
        self,
        interval: float = REPEAT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._seen: dict[Hashable, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def allow(self, key: Hashable) -> int | None:
        """None: hold this one back. Otherwise write it, noting how many were held back."""
        now = self._clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self.interval:
                self._seen[key] = (last[0], last[1] + 1)
                return None
            if len(self._seen) > 10_000:  # keys are few; never let them grow without bound
                self._seen.clear()
            self._seen[key] = (now, 0)
            return last[1] if last is not None else 0


REPEATS = Repeats()
"""The process's limiter (worker threads log too, hence its lock)."""


def error_kind(exc: BaseException) -> str:
    """A `repeat_key` for an error: its type and errno (or SQLite error code), not its text
    (which names paths and would make every line unique)."""
    code = getattr(exc, "errno", None) or getattr(exc, "sqlite_errorname", None)
    return f"{type(exc).__name__}:{code}" if code else type(exc).__name__


def drop_repeats(
    logger: Any, method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """structlog processor: rate-limit events that carry ``repeat_key`` (see the module)."""
    key = event_dict.pop("repeat_key", None)
    if key is None:
        return event_dict
    held = REPEATS.allow((event_dict.get("event"), key))
    if held is None:
        raise structlog.DropEvent
    if held:
        event_dict["repeated"] = held
    return event_dict


class RepeatFilter(logging.Filter):
    """stdlib filter: one line per logger and message per interval, without traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        held = REPEATS.allow((record.name, str(record.msg)))
        if held is None:
            return False
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f": {record.exc_info[1]!r}"
        if held:
            text += f" ({held} more like it in the last {REPEATS.interval:.0f}s)"
        record.msg, record.args = text, ()
        record.exc_info = record.exc_text = None
        return True


# C0 and C1 controls, DEL, and the invisible or reordering format characters (zero-width,
# bidi overrides and isolates) that can make a terminal show something else than the bytes.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """`text` safe for a terminal: each control character becomes a visible ``\\xNN`` or
    ``\\uNNNN`` escape, so ESC/OSC sequences from bucket metadata or keys never reach it.

    Use it for every human-facing line built from bucket data (``--json`` escapes already).
    """

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        if keep_newlines and char == "\n":
            return char
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROL.sub(escape, text)
