"""The daemon's own lines and the libraries' (aiohttp, botocore, asyncio) share one format."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from archiverd.logs import configure_logging


@pytest.fixture(autouse=True)
def _root_handlers_restored() -> Iterator[None]:
    """`configure_logging` installs a handler on the root logger: put back what was there."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_library_line_is_json_when_the_daemon_logs_json() -> None:
    """With JSON logs, a library's warning is a JSON line like the daemon's: its logger,
    level, message and time, and its exception as text, never a bare "name: message" line
    that breaks every JSON log pipeline (aiohttp's "Error handling request" was one, see
    tests/service/test_floods.py); and it goes to the stream of the latest configuration,
    not of the first."""
    configure_logging("info", "json", stream=io.StringIO())  # an earlier configuration
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        raise ValueError("bad header")
    except ValueError:
        logging.getLogger("botocore.endpoint").warning(
            "Exception received when sending HTTP request to %s", "127.0.0.1", exc_info=True
        )
    logging.getLogger("botocore").info("below the libraries' level: not written")
    [line] = out.getvalue().splitlines()
    entry = json.loads(line)
    assert {k: entry[k] for k in ("logger", "level", "event")} == {
        "logger": "botocore.endpoint",
        "level": "warning",
        "event": "Exception received when sending HTTP request to 127.0.0.1",
    }
    assert entry["timestamp"].endswith("Z")
    assert entry["exception"].splitlines()[-1] == "ValueError: bad header"


def test_a_library_line_on_a_terminal_is_readable_text() -> None:
    """In console format a library's line names its logger and says its message."""
    out = io.StringIO()
    configure_logging("info", "console", stream=out)
    logging.getLogger("botocore.credentials").warning("no credentials found")
    [line] = out.getvalue().splitlines()
    assert "no credentials found" in line
    assert "botocore.credentials" in line
