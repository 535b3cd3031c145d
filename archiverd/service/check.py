"""`archiverd check`: validate everything `run` needs, print one line per check.

Each check is a small function returning a detail string or raising `ArchiverError`;
the command exits 0 only when all pass, else with the exit code of the first failure.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from archiverd.config import Settings
from archiverd.errors import ArchiverError, ConfigError, StateError, given_up
from archiverd.spool.statedir import StateLock, prepare_state_dir

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
    """The state dir passes `run`'s rules (`archiverd.spool.statedir`) and no daemon holds it."""
    detail = prepare_state_dir(settings.state.dir)
    StateLock(settings.state.dir).release()
    return detail


def check_journal(settings: Settings) -> str:
    """The journal opens exactly as `run` opens it (schema migrated) and passes quick_check."""
    from archiverd.journal.db import Journal

    journal = Journal.open(settings.state.dir)
    try:
        problem = journal.integrity_problem()
    finally:
        journal.close()
    if problem is not None:
        raise StateError(
            f"the journal {journal.path} is damaged ({problem}): move the state dir aside and "
            "start afresh (the spool files are kept and uploaded), or restore it from a backup"
        )
    return f"{journal.path} opens, integrity ok"


def check_http(settings: Settings) -> str:
    """``http.listen`` can be bound now (nothing else holds the port)."""
    if not settings.http.listen:
        return "disabled (http.listen is empty)"
    from archiverd.service.http import parse_listen

    host, port = parse_listen(settings.http.listen)
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
        family, kind, proto, _name, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        raise ConfigError(
            f"http.listen = {settings.http.listen!r} cannot be bound "
            f"({exc.strerror or exc}): pick a free port or set http.listen = '' to disable HTTP"
        ) from None
    return f"{settings.http.listen} can be bound"


def check_master_key(settings: Settings) -> str:
    """The master key loads and seals (raw key file mode 0600; KMS Encrypt allowed)."""
    from archiverd.credentials import resolve_credentials
    from archiverd.pack.keyring import check_master_key as check_key

    return check_key(settings.encryption, resolve_credentials(settings.destination))


def default_checks() -> list[tuple[str, Check]]:
    """The checks `archiverd check` runs, in order."""
    checks: list[tuple[str, Check]] = [("config", check_config), ("state dir", check_state_dir)]
    checks.append(("journal", check_journal))
    checks.append(("master key", check_master_key))
    checks.append(("http", check_http))
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
            results.append(CheckResult(name, False, given_up(str(exc)), exc.exit_code))
    for result in results:
        mark = "ok  " if result.ok else "FAIL"
        print(f"{mark} {result.name}: {result.detail}", file=stream)
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} of {len(results)} checks passed", file=stream, flush=True)
    return failed[0].exit_code if failed else os.EX_OK
