"""The test helper that tells whether a process has ended (`tests.orphans.gone`)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests import orphans


@pytest.mark.parametrize("error", [ProcessLookupError, FileNotFoundError])
def test_a_process_reaped_between_the_two_looks_is_gone(
    monkeypatch: pytest.MonkeyPatch, error: type[OSError]
) -> None:
    """The signal finds the process, then its /proc entry is gone before it is read (its
    parent reaped it meanwhile): gone, not an error. (The kill -9 lifeline test failed so,
    once in CI, with ProcessLookupError from the read.)"""

    def vanished(*args: Any, **kwargs: Any) -> None:
        raise error(3, "No such process")

    monkeypatch.setattr(orphans, "open", vanished, raising=False)
    assert orphans.gone(os.getpid())


def test_a_running_process_is_not_gone() -> None:
    assert not orphans.gone(os.getpid())
