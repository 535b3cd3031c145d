"""The `archiverd` console script's entry point, importing nothing until it runs.

multiprocessing re-runs the main script in every worker process it starts (the daemon's
scanning and packing workers, restore's index workers) to recreate ``__main__``; with the
script importing only this, that costs a millisecond, not the command line's imports
(pydantic, structlog, botocore: some 0.2 s of CPU and 20 MiB per worker)."""

from __future__ import annotations

from typing import NoReturn


def run() -> NoReturn:
    """Run the command line (`archiverd.cli.run`)."""
    from archiverd.cli import run as run_cli  # deferred on purpose, see above

    run_cli()
