"""Tests of a path that counts or keys records in the compiled pass (`archiverd/formats/_scan.c`)
where it was built, and in Python where it was not: both ways, in one run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType

import pytest

from archiverd.formats.timestamps import TimeCache

BOTH_WAYS = pytest.mark.parametrize("how", ["compiled", "passes"])
"""Run a test with ``how`` = ``compiled`` (as installed) and ``passes`` (in Python)."""


@contextmanager
def counting(module: ModuleType, name: str, how: str) -> Iterator[None]:
    """`module`'s compiled function `name` as installed (``compiled``) or as if no C compiler
    had built it (``passes``: None, so the Python reading runs), until the block ends."""
    built = getattr(module, name)
    setattr(module, name, built if how == "compiled" else None)
    try:
        yield
    finally:
        setattr(module, name, built)


def closing_line_by_line(
    read: Callable[[bytes, TimeCache], tuple[bool, int | None] | None], data: bytes
) -> int | None:
    """How many lines of `data` close an application line, read one by one with a format's
    `read`; None if one is no record."""
    times, closing = TimeCache(), 0
    for line in data.split(b"\n")[:-1]:
        record = read(line, times)
        if record is None:
            return None
        closing += record[0]
    return closing
