"""structlog, configured once at the entry point.

JSON lines when stderr is not a terminal (journald, containers), colored console otherwise.
Context such as ``container_id`` and ``segment`` is bound with `structlog.contextvars`.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Literal, TextIO

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
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Library loggers (botocore, aiohttp) only speak up for warnings.
    logging.basicConfig(level=logging.WARNING, stream=out, format="%(name)s: %(message)s")


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
