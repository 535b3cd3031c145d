"""Shared helpers for the deployment-file tests: the repository root and external linters."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str, install_hint: str) -> str:
    """Path of `name` (the test venv first, then PATH); skip with the reason if absent."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed ({install_hint}; scripts/setup --test installs it)")
    return found
