"""Run the real CLI entry point in-process and capture what it wrote."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from archiverd.cli import main


@dataclass(frozen=True)
class Result:
    """Exit code, stdout bytes and stderr text of one command."""

    code: int
    out: bytes
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        """stdout parsed as JSON lines."""
        return [json.loads(line) for line in self.out.decode().splitlines() if line]


def run(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> Result:
    """`archiverd <argv>` through `archiverd.cli.main`."""
    capsysbinary.readouterr()
    code = main(["--log-format", "json", *argv])
    captured = capsysbinary.readouterr()
    return Result(code, captured.out, captured.err.decode(errors="replace"))
