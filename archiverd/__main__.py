"""`python -m archiverd` is the `archiverd` command."""

from __future__ import annotations

from archiverd.cli import run

run()
