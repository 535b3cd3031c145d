"""`archiverd check`: validate everything `run` needs, print one line per check.

Each check is a small function returning a detail string or raising `ArchiverError`;
the command exits 0 only when all pass, else with the exit code of the first failure.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from archiverd.config import Settings
from archiverd.errors import ArchiverError, StateError

Check = Callable[[Settings], str]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check."""

    name: str
    ok: bool
    detail: str
    exit_code: int = 0


def check_config(settings: Settings) -> str:
    """Settings already validated by `load_settings`; report what they point at."""
    kinds = ", ".join(f"{s.kind}:{s.path}" for s in settings.effective_sources)
    return f"sources {kinds}; destination {settings.destination_url}"


def check_state_dir(settings: Settings) -> str:
    """The state directory exists (or can be made) with mode 0700 and is writable."""
    path = settings.state.dir
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".check-"):
            pass
    except OSError as exc:
        raise StateError(
            f"state.dir {str(path)!r} is not writable ({exc.strerror}): "
            "create it for the archiverd user or set state.dir"
        ) from None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise StateError(
            f"state.dir {str(path)!r} has mode {mode:o}: run `chmod 700 {path}` "
            "(it holds the journal and encrypted spool)"
        )
    return f"{path} writable, mode 700"


def check_master_key(settings: Settings) -> str:
    """The master key loads and seals (raw key file mode 0600; KMS Encrypt allowed)."""
    from archiverd.credentials import resolve_credentials
    from archiverd.pack.keyring import check_master_key as check_key

    return check_key(settings.encryption, resolve_credentials(settings.destination))


def default_checks() -> list[tuple[str, Check]]:
    """The checks `archiverd check` runs, in order."""
    checks: list[tuple[str, Check]] = [("config", check_config), ("state dir", check_state_dir)]
    checks.append(("master key", check_master_key))
    checks.append(("destination", check_destination))
    return checks


def check_destination(settings: Settings) -> str:
    """The destination is reachable and (when required) versioned."""
    import asyncio

    from archiverd.destinations import open_destination

    async def probe() -> str:
        destination = open_destination(settings)
        try:
            return await destination.check()
        finally:
            await destination.close()

    return asyncio.run(probe())


def run_checks(
    settings: Settings,
    checks: list[tuple[str, Check]] | None = None,
    out: TextIO | None = None,
) -> int:
    """Run every check (none stops the others); print results; return the exit code."""
    stream = out if out is not None else sys.stdout
    results: list[CheckResult] = []
    for name, check in checks if checks is not None else default_checks():
        try:
            results.append(CheckResult(name, True, check(settings)))
        except ArchiverError as exc:
            results.append(CheckResult(name, False, str(exc), exc.exit_code))
    for result in results:
        mark = "ok  " if result.ok else "FAIL"
        print(f"{mark} {result.name}: {result.detail}", file=stream)
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} of {len(results)} checks passed", file=stream, flush=True)
    return failed[0].exit_code if failed else os.EX_OK
