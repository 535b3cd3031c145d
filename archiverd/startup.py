"""The start-up of a restore command or the daemon, without the cycle collector.

`ls`, `get` and `verify` spend their first half second loading: pydantic, botocore,
aiohttp, their settings and service models, some 100,000 objects that live until the
process exits. Meanwhile the cycle collector, triggered by allocation counts, walks them
again and again (a full collection of everything loaded so far each time it grew by a
quarter): about 50 ms of CPU, a tenth of the start-up of a `get` (bench/restore.py).
`archiverd run` loads the same way (pydantic, structlog, the pipeline's modules).

`pause()` (the executable, once it knows the command is one of those) turns collection
off; `resume()` (the command, once its modules and buckets are loaded, before its first
request or byte read; and the command line again when the command returns, whatever
happened) moves everything allocated so far into the permanent generation (`gc.freeze`:
never scanned again, and never freed, like the modules it mostly is) and turns collection
back on.
Python's thresholds stay as they are, so the per-byte phase collects as often as before
(collecting less often there cost 10-20% of the CPU of a 512 MiB restore). In-process
callers (tests) never pause: for them `resume()` does nothing.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Stop collecting cycles until `resume()` (unless collection is already off)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Freeze what was loaded since `pause()` and collect again; a no-op when not paused."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
